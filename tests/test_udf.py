"""User-defined message / reduce / apply functions checked against the loop oracle."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gdsl
import gdsl.function as fn

try:
    import oracles as O
    from strategies import GraphCase, features, graph_cases
except ImportError:  # collected as a package (tests/__init__.py)
    from tests import oracles as O
    from tests.strategies import GraphCase, features, graph_cases

FEW = settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))


def assert_close(actual, expected):
    expected = torch.as_tensor(np.asarray(expected), dtype=torch.float64)
    torch.testing.assert_close(actual, expected, rtol=1e-7, atol=1e-10)


def as_np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def src_store(g, case):
    return g.srcdata if case.is_block else g.ndata


def dst_store(g, case):
    return g.dstdata if case.is_block else g.ndata


def with_edges(**kw):
    return graph_cases(max_nodes=8, max_edges=20, **kw).filter(lambda c: c.num_edges > 0)


def setup(case, seed, shape=(3,)):
    """Graph with src feature 'x', dst feature 'y' and edge feature 'w' (all ``shape``)."""
    g = case.build()
    x = features(case, shape, "src", seed)
    y = features(case, shape, "dst", seed + 1)
    w = features(case, shape, "edge", seed + 2)
    src_store(g, case)["x"] = x
    dst_store(g, case)["y"] = y
    g.edata["w"] = w
    return g, as_np(x), as_np(y), as_np(w)


FIXED = GraphCase(src=np.array([0, 0, 2, 1, 4]), dst=np.array([1, 1, 2, 3, 3]), num_src=6,
                  num_dst=6, idtype=torch.int64, is_block=False)


def fixed_graph():
    g = FIXED.build()
    g.ndata["x"] = torch.arange(12, dtype=torch.float64).reshape(6, 2)
    return g


# ------------------------------------------------------------------------- reduce UDF flavours

REDUCE_UDFS = {
    "sum": (lambda mb: mb.sum(1), "sum"),
    "max_values": (lambda mb: mb.max(1).values, "max"),
    "torch_max_0": (lambda mb: torch.max(mb, 1)[0], "max"),
    "min_values": (lambda mb: mb.min(1).values, "min"),
    "mean": (lambda mb: mb.mean(1), "mean"),
}


@pytest.mark.parametrize("builtin_message", [True, False])
@pytest.mark.parametrize("flavour", sorted(REDUCE_UDFS))
@FEW
@given(case=with_edges(), seed=st.integers(0, 10**6))
def test_reduce_udf_matches_oracle(flavour, builtin_message, case, seed):
    body, reducer = REDUCE_UDFS[flavour]
    g, x, _, _ = setup(case, seed, shape=(2, 3))
    mfunc = fn.copy_u("x", "m") if builtin_message else (lambda e: {"m": e.src["x"]})
    g.update_all(mfunc, lambda n: {"out": body(n.mailbox["m"])})
    assert_close(dst_store(g, case)["out"], O.update_all(case, "copy_u", reducer, {"u": x}))


@FEW
@given(case=with_edges(), seed=st.integers(0, 10**6))
def test_message_udf_returning_several_fields(case, seed):
    g, x, _, w = setup(case, seed)
    g.update_all(lambda e: {"m1": e.src["x"] * 2, "m2": e.data["w"]},
                 lambda n: {"out": n.mailbox["m1"].sum(1) + n.mailbox["m2"].max(1).values})
    expected = (O.update_all(case, "copy_u", "sum", {"u": x * 2})
                + O.update_all(case, "copy_e", "max", {"e": w}))
    assert_close(dst_store(g, case)["out"], expected)


@FEW
@given(case=graph_cases(max_nodes=8, max_edges=20), seed=st.integers(0, 10**6))
def test_message_udf_with_builtin_reducer(case, seed):
    g, x, _, w = setup(case, seed)
    g.update_all(lambda e: {"m1": e.src["x"] * 2, "m2": e.data["w"]}, fn.max("m2", "out"))
    assert_close(dst_store(g, case)["out"], O.update_all(case, "copy_e", "max", {"e": w}))


@FEW
@given(case=with_edges(), seed=st.integers(0, 10**6))
def test_softmax_attention_reducer(case, seed):
    g, x, y, _ = setup(case, seed, shape=(2, 3))

    def message(edges):
        return {"s": (edges.src["x"] * edges.dst["y"]).sum(-1, keepdim=True), "m": edges.src["x"]}

    def reduce(nodes):
        alpha = torch.softmax(nodes.mailbox["s"], dim=1)
        return {"out": (alpha * nodes.mailbox["m"]).sum(1)}

    g.update_all(message, reduce)
    scores = O.edge_messages(case, "u_dot_v", {"u": x, "v": y})
    msgs = O.edge_messages(case, "copy_u", {"u": x})

    def attend(node, mb):
        alpha = O.softmax(np.stack(mb["s"]), axis=0)
        return (alpha * np.stack(mb["m"])).sum(axis=0)

    expected = O.reduce_with(case, {"s": scores, "m": msgs}, attend, (2, 3))
    assert_close(dst_store(g, case)["out"], expected)


# ------------------------------------------------------------------------ mailbox structure

@FEW
@given(case=with_edges(), seed=st.integers(0, 10**6))
def test_mailbox_is_in_edge_id_order(case, seed):
    g = case.build()
    g.edata["eid"] = torch.arange(case.num_edges, dtype=torch.float64).unsqueeze(1)
    calls = []

    def reduce(nodes):
        calls.append((nodes.nodes().tolist(), nodes.mailbox["m"][..., 0].tolist()))
        return {"first": nodes.mailbox["m"][:, 0], "last": nodes.mailbox["m"][:, -1]}

    g.update_all(fn.copy_e("eid", "m"), reduce)
    first = np.zeros((case.num_dst, 1))
    last = np.zeros((case.num_dst, 1))
    for node in range(case.num_dst):
        mine = O.in_edges(case, node)
        if mine:
            first[node], last[node] = mine[0], mine[-1]
    assert_close(dst_store(g, case)["first"], first)
    assert_close(dst_store(g, case)["last"], last)
    for nodes, boxes in calls:
        for node, box in zip(nodes, boxes):
            assert [int(b) for b in box] == O.in_edges(case, node)


def record_mailboxes(calls):
    def reduce(nodes):
        calls.append((nodes.nodes().tolist(), nodes.mailbox["m"][..., 0].tolist()))
        return {"first": nodes.mailbox["m"][:, 0]}
    return reduce


@FEW
@given(case=with_edges(blocks=False), draw=st.data())
def test_mailbox_order_in_send_and_recv_and_pull(case, draw):
    g = case.build()
    g.edata["eid"] = torch.arange(case.num_edges, dtype=torch.float64).unsqueeze(1)
    eids = draw.draw(st.lists(st.integers(0, case.num_edges - 1), unique=True, min_size=1))
    calls = []
    g.send_and_recv(torch.as_tensor(eids, dtype=case.idtype), fn.copy_e("eid", "m"),
                    record_mailboxes(calls))  # eids in a shuffled order
    for nodes, boxes in calls:
        for node, box in zip(nodes, boxes):
            assert [int(b) for b in box] == O.in_edges(case, node, eids)
    assert sorted(v for nodes, _ in calls for v in nodes) == O.touched(case, eids)
    pulled = draw.draw(st.lists(st.integers(0, case.num_src - 1), unique=True, min_size=1))
    calls.clear()
    g.pull(torch.as_tensor(pulled, dtype=case.idtype), fn.copy_e("eid", "m"), record_mailboxes(calls))
    for nodes, boxes in calls:
        for node, box in zip(nodes, boxes):
            assert [int(b) for b in box] == O.in_edges(case, node)
    assert sorted(v for nodes, _ in calls for v in nodes) == \
        sorted(v for v in pulled if O.in_degree(case, v))


@FEW
@given(case=with_edges(), seed=st.integers(0, 10**6))
def test_reduce_udf_never_sees_zero_degree_nodes(case, seed):
    g, x, _, _ = setup(case, seed)
    seen = []

    def reduce(nodes):
        degree = nodes.mailbox["m"].shape[1]
        assert degree > 0
        assert nodes.mailbox["m"].shape[0] == len(nodes.nodes())
        seen.extend((int(v), degree) for v in nodes.nodes().tolist())
        return {"out": nodes.mailbox["m"].sum(1) + 1}

    g.update_all(fn.copy_u("x", "m"), reduce)
    with_messages = {v: O.in_degree(case, v) for v in range(case.num_dst) if O.in_degree(case, v)}
    assert sorted(seen) == sorted(with_messages.items())  # each node once, with its in-degree
    expected = O.update_all(case, "copy_u", "sum", {"u": x})
    for v in with_messages:
        expected[v] += 1
    assert_close(dst_store(g, case)["out"], expected)  # zero-degree nodes: 0, not 1


@FEW
@given(case=with_edges(), seed=st.integers(0, 10**6))
def test_reduce_udf_reads_nodes_data(case, seed):
    g, x, y, _ = setup(case, seed)
    g.update_all(fn.copy_u("x", "m"), lambda n: {"out": n.mailbox["m"].sum(1) + n.data["y"]})
    expected = O.update_all(case, "copy_u", "sum", {"u": x})
    for v in range(case.num_dst):
        if O.in_degree(case, v):
            expected[v] += y[v]
    assert_close(dst_store(g, case)["out"], expected)


# ------------------------------------------------------------------------------ edge batches

@FEW
@given(case=graph_cases(max_nodes=8, max_edges=20), seed=st.integers(0, 10**6))
def test_message_udf_reads_src_dst_and_edge_data(case, seed):
    g, x, y, w = setup(case, seed)
    g.update_all(lambda e: {"m": e.src["x"] * e.dst["y"] + e.data["w"]}, fn.sum("m", "out"))
    msgs = np.zeros((case.num_edges, 3))
    for i in range(case.num_edges):
        msgs[i] = x[case.src[i]] * y[case.dst[i]] + w[i]
    assert_close(dst_store(g, case)["out"], O.reduce_messages(case, msgs, "sum"))


@FEW
@given(case=with_edges(), draw=st.data())
def test_edges_returns_u_v_eid(case, draw):
    g = case.build()

    def ends(edges):
        u, v, eid = edges.edges()
        assert len(u) == len(v) == len(eid) == edges.batch_size()
        return {"uve": torch.stack([u, v, eid], 1).to(torch.float64)}

    g.apply_edges(ends)
    expected = np.stack([case.src, case.dst, np.arange(case.num_edges)], 1).astype(np.float64)
    assert_close(g.edata["uve"], expected)
    subset = draw.draw(st.lists(st.integers(0, case.num_edges - 1), unique=True, min_size=1))
    g.edata["uve"] = torch.full((case.num_edges, 3), -1.0, dtype=torch.float64)
    g.apply_edges(ends, edges=torch.as_tensor(subset, dtype=case.idtype))
    expected_subset = np.full((case.num_edges, 3), -1.0)
    expected_subset[subset] = expected[subset]
    assert_close(g.edata["uve"], expected_subset)


@FEW
@given(case=with_edges())
def test_edges_inside_update_all_message_udf(case):
    g = case.build()
    seen = []

    def message(edges):
        u, v, eid = edges.edges()
        seen.extend(zip(eid.tolist(), u.tolist(), v.tolist()))
        return {"m": torch.ones(edges.batch_size(), 1, dtype=torch.float64)}

    g.update_all(message, fn.sum("m", "out"))
    assert sorted(seen) == [(i, int(case.src[i]), int(case.dst[i])) for i in range(case.num_edges)]
    degrees = np.array([[O.in_degree(case, v)] for v in range(case.num_dst)], dtype=np.float64)
    assert_close(dst_store(g, case)["out"], degrees.reshape(case.num_dst, 1))


@FEW
@given(case=with_edges(), seed=st.integers(0, 10**6))
def test_udf_outputs_with_extra_dims(case, seed):
    g = case.build()
    x = features(case, (2, 3), "src", seed)
    w = features(case, (2, 1), "edge", seed + 1)
    src_store(g, case)["x"] = x
    g.edata["w"] = w
    g.update_all(lambda e: {"m": e.src["x"] * e.data["w"]}, lambda n: {"out": n.mailbox["m"].sum(1)})
    out = dst_store(g, case)["out"]
    assert out.shape == (case.num_dst, 2, 3)
    assert_close(out, O.update_all(case, "u_mul_e", "sum", {"u": as_np(x), "e": as_np(w)}))


@FEW
@given(case=with_edges(), seed=st.integers(0, 10**6))
def test_udf_gradients_match_oracle(case, seed):
    g = case.build()
    x = features(case, (3,), "src", seed).requires_grad_(True)
    w = features(case, (1,), "edge", seed + 1).requires_grad_(True)
    src_store(g, case)["x"] = x
    g.edata["w"] = w
    g.update_all(lambda e: {"m": e.src["x"] * e.data["w"]}, lambda n: {"out": n.mailbox["m"].sum(1)})
    out = dst_store(g, case)["out"]
    grad_out = torch.randn(out.shape, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(seed))
    (out * grad_out).sum().backward()
    expected = O.update_all_backward(case, "u_mul_e", "sum", {"u": as_np(x), "e": as_np(w)},
                                     as_np(grad_out))
    assert_close(x.grad, expected["u"])
    assert_close(w.grad, expected["e"])


# --------------------------------------------------------------------- UDFs on partial updates

def test_reduce_udf_in_pull_zero_for_node_without_in_edges():
    g = fixed_graph()
    calls = []

    def reduce(nodes):
        calls.append(nodes.nodes().tolist())
        return {"out": nodes.mailbox["m"].sum(1)}

    g.pull(torch.tensor([0, 1, 3]), fn.copy_u("x", "m"), reduce)
    x = as_np(g.ndata["x"])
    expected = np.zeros((6, 2))
    expected[1] = 2 * x[0]
    expected[3] = x[1] + x[4]
    assert_close(g.ndata["out"], expected)
    assert sorted(v for call in calls for v in call) == [1, 3]


def test_reduce_udf_in_send_and_recv_sees_original_node_ids():
    g = fixed_graph()
    g.ndata["out"] = torch.full((6, 1), -1.0, dtype=torch.float64)
    g.send_and_recv(torch.tensor([3, 2]), lambda e: {"m": e.src["x"]},
                    lambda n: {"out": n.nodes().to(torch.float64).unsqueeze(1)
                               + 0 * n.mailbox["m"][:, :, :1].sum(1)})
    assert_close(g.ndata["out"], np.array([[-1.0], [-1.0], [2.0], [3.0], [-1.0], [-1.0]]))


def test_message_udf_in_send_and_recv_reads_the_right_rows():
    g = fixed_graph()
    g.edata["w"] = torch.tensor([[1.0], [10.0], [100.0], [1000.0], [10000.0]], dtype=torch.float64)
    g.send_and_recv(torch.tensor([4, 1]), lambda e: {"m": e.src["x"] * e.data["w"] + e.dst["x"]},
                    lambda n: {"out": n.mailbox["m"].sum(1)})
    x = as_np(g.ndata["x"])
    expected = np.zeros((6, 2))
    expected[1] = x[0] * 10 + x[1]
    expected[3] = x[4] * 10000 + x[3]
    assert_close(g.ndata["out"], expected)


def test_apply_node_udf_in_update_all_sees_reduced_and_original_fields():
    g = fixed_graph()
    g.update_all(fn.copy_u("x", "m"), lambda n: {"out": n.mailbox["m"].max(1).values},
                 lambda n: {"out": n.data["out"] - n.data["x"]})
    x = as_np(g.ndata["x"])
    expected = -x.copy()
    expected[1] += x[0]
    expected[2] += x[2]
    expected[3] += np.maximum(x[1], x[4])
    assert_close(g.ndata["out"], expected)


# ------------------------------------------------------------------------------------- errors

def test_unknown_field_in_reduce_udf_names_it():
    g = fixed_graph()
    with pytest.raises(gdsl.GraphError, match="nope"):
        g.update_all(fn.copy_u("x", "m"), lambda n: {"out": n.mailbox["nope"].sum(1)})
    with pytest.raises(gdsl.GraphError, match="nope"):
        g.update_all(fn.copy_u("x", "m"), lambda n: {"out": n.data["nope"]})


def test_unknown_field_in_message_udf_dst_names_it():
    g = fixed_graph()
    with pytest.raises(gdsl.GraphError, match="nope"):
        g.update_all(lambda e: {"m": e.dst["nope"]}, fn.sum("m", "out"))


def test_reduce_udf_returning_non_dict_raises():
    g = fixed_graph()
    with pytest.raises(gdsl.GdslError):
        g.update_all(fn.copy_u("x", "m"), lambda n: n.mailbox["m"].sum(1))


def test_apply_udf_returning_non_dict_raises():
    g = fixed_graph()
    with pytest.raises(gdsl.GdslError):
        g.apply_nodes(lambda n: n.data["x"])


def node_ids_as_feature(nodes):
    return {"out": nodes.nodes().to(torch.float64).unsqueeze(1)}


def test_apply_node_udf_sees_original_node_ids_in_send_and_recv_and_pull():
    g = fixed_graph()
    g.send_and_recv(torch.tensor([3, 2]), fn.copy_u("x", "m"), fn.sum("m", "out"), node_ids_as_feature)
    assert_close(g.ndata["out"], np.array([[0.0], [0.0], [2.0], [3.0], [0.0], [0.0]]))
    g.ndata["out"] = torch.full((6, 1), -1.0, dtype=torch.float64)
    g.pull(torch.tensor([5, 1]), fn.copy_u("x", "m"), fn.sum("m", "out"), node_ids_as_feature)
    assert_close(g.ndata["out"], np.array([[-1.0], [1.0], [-1.0], [-1.0], [-1.0], [5.0]]))


def test_apply_node_udf_on_block_reads_dstdata():
    b = gdsl.bipartite((torch.tensor([0, 1, 2]), torch.tensor([1, 1, 0])), 3, 2)
    b.srcdata["x"] = torch.tensor([[1.0], [2.0], [4.0]], dtype=torch.float64)
    b.dstdata["y"] = torch.tensor([[10.0], [20.0]], dtype=torch.float64)
    b.update_all(fn.copy_u("x", "m"), lambda n: {"h": n.mailbox["m"].sum(1) + n.data["y"]},
                 lambda n: {"h": n.data["h"] * n.data["y"]})
    assert_close(b.dstdata["h"], np.array([[(4.0 + 10.0) * 10.0], [(1.0 + 2.0 + 20.0) * 20.0]]))
