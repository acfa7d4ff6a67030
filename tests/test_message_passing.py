"""Built-in message passing checked against the loop oracle in tests/oracles.py.

Covers every built-in message x reducer through ``update_all`` and ``apply_edges`` (graphs and
blocks), broadcasting, degree edge cases, partial updates (``send_and_recv``, ``pull``, ``push``,
edge / node subsets), apply functions, gradients, errors and backend selection.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import gdsl
import gdsl.function as fn

try:
    import oracles as O
    from strategies import GraphCase, features, graph_cases
except ImportError:  # collected as a package (tests/__init__.py)
    from tests import oracles as O
    from tests.strategies import GraphCase, features, graph_cases

SWEEP = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
FEW = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))

WHERE = {"u": "src", "v": "dst", "e": "edge"}
FIELDS = ("a", "b")  # lhs / rhs operand field names

ELEMENTWISE_SHAPES = [((3,), (3,)), ((2, 1), (2, 3)), ((2, 3), (1,)), ((4,), (2, 4)), ((1,), (1,))]
DOT_SHAPES = [((3,), (3,)), ((2, 3), (2, 3)), ((1, 3), (2, 3)), ((3,), (2, 3))]
COPY_SHAPES = [((3,),), ((2, 3),), ((1,),)]


# ----------------------------------------------------------------------------------- helpers

def assert_close(actual, expected):
    expected = torch.as_tensor(np.asarray(expected), dtype=torch.float64)
    torch.testing.assert_close(actual, expected, rtol=1e-7, atol=1e-10)


def as_np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def node_store(g, case, where: str):
    """Where node features of ``where`` ('src' / 'dst') live: ndata for graphs."""
    if not case.is_block:
        return g.ndata
    return g.srcdata if where == "src" else g.dstdata


def put(g, case, target: str, field: str, value: torch.Tensor):
    if target == "e":
        g.edata[field] = value
    else:
        node_store(g, case, WHERE[target])[field] = value


def ids(values, case) -> torch.Tensor:
    return torch.as_tensor(list(values), dtype=case.idtype)


def shape_strategy(name: str):
    op = O.parse_message(name)[0]
    if op == "copy":
        return st.sampled_from(COPY_SHAPES)
    pairs = DOT_SHAPES if op == "dot" else ELEMENTWISE_SHAPES
    return st.sampled_from(pairs).flatmap(lambda p: st.sampled_from([p, p[::-1]]))


def make_operands(case, name: str, shapes, seed: int, integer: bool = False) -> dict:
    """Random float64 torch operands keyed by target ('u', 'v', 'e')."""
    op, lhs, rhs = O.parse_message(name)
    data = {}
    for i, (target, shape) in enumerate(zip((lhs, rhs), shapes)):
        if target is None:
            continue
        x = features(case, shape, WHERE[target], seed=seed + i)
        if integer:  # small integers, so that max / min see many ties
            x = torch.round(x * 1.5).clamp(-2, 2)
        if op == "div" and target == rhs:  # keep denominators away from 0
            x = x.abs() + 1.0
        data[target] = x
    return data


def builtin(name: str, out: str = "m"):
    op, lhs, rhs = O.parse_message(name)
    if op == "copy":
        return getattr(fn, name)(FIELDS[0], out)
    return getattr(fn, name)(FIELDS[0], FIELDS[1], out)


def install(case, name: str, data: dict):
    """Build the graph of ``case`` and store the operands of ``name`` under 'a' / 'b'."""
    g = case.build()
    op, lhs, rhs = O.parse_message(name)
    for field, target in zip(FIELDS, (lhs, rhs)):
        if target is not None:
            put(g, case, target, field, data[target])
    return g


def np_data(data: dict) -> dict:
    return {k: as_np(v) for k, v in data.items()}


def dst_of(g, case):
    return node_store(g, case, "dst")


def with_edges(**kw):
    return graph_cases(**kw).filter(lambda c: c.num_edges > 0)


# A fixed graph: node 0 and 4 have no in-edge, node 5 is isolated, 0->1 twice (multi-edge),
# 2->2 is a self-loop, node 3 has in-degree 2.
FIXED = GraphCase(src=np.array([0, 0, 2, 1, 4]), dst=np.array([1, 1, 2, 3, 3]), num_src=6,
                  num_dst=6, idtype=torch.int64, is_block=False)
# A fixed simple graph (no multi-edges), for the (u, v) edge form.
SIMPLE = GraphCase(src=np.array([0, 1, 2, 3, 0, 4, 2]), dst=np.array([1, 2, 3, 1, 4, 2, 0]),
                   num_src=5, num_dst=5, idtype=torch.int64, is_block=False)


# ------------------------------------------------------------------ every message x reducer

@pytest.mark.parametrize("reducer", O.REDUCERS)
@pytest.mark.parametrize("name", O.MESSAGES)
@SWEEP
@given(case=graph_cases(max_nodes=8, max_edges=20), draw=st.data(), seed=st.integers(0, 10**6))
def test_update_all_builtin_matches_oracle(name, reducer, case, draw, seed):
    data = make_operands(case, name, draw.draw(shape_strategy(name)), seed)
    g = install(case, name, data)
    g.update_all(builtin(name), getattr(fn, reducer)("m", "out"))
    assert_close(dst_of(g, case)["out"], O.update_all(case, name, reducer, np_data(data)))


@pytest.mark.parametrize("name", O.MESSAGES)
@SWEEP
@given(case=graph_cases(max_nodes=8, max_edges=20), draw=st.data(), seed=st.integers(0, 10**6))
def test_apply_edges_builtin_matches_oracle(name, case, draw, seed):
    data = make_operands(case, name, draw.draw(shape_strategy(name)), seed)
    g = install(case, name, data)
    g.apply_edges(builtin(name, out="score"))
    assert_close(g.edata["score"], O.edge_messages(case, name, np_data(data)))


# ---------------------------------------------------------------------------- broadcasting

@FEW
@given(case=graph_cases(max_nodes=8, max_edges=20), seed=st.integers(0, 10**6))
def test_broadcast_edge_weight_h1_times_node_features_hd(case, seed):
    data = {"u": features(case, (2, 3), "src", seed), "e": features(case, (2, 1), "edge", seed + 1)}
    g = install(case, "u_mul_e", data)
    g.update_all(fn.u_mul_e("a", "b", "m"), fn.sum("m", "out"))
    out = dst_of(g, case)["out"]
    assert out.shape == (case.num_dst, 2, 3)
    assert_close(out, O.update_all(case, "u_mul_e", "sum", np_data(data)))


@FEW
@given(case=graph_cases(max_nodes=8, max_edges=20), seed=st.integers(0, 10**6))
def test_broadcast_node_features_d_times_scalar_edge_weight(case, seed):
    data = {"u": features(case, (4,), "src", seed), "e": features(case, (1,), "edge", seed + 1)}
    g = install(case, "u_mul_e", data)
    g.update_all(fn.u_mul_e("a", "b", "m"), fn.mean("m", "out"))
    assert_close(dst_of(g, case)["out"], O.update_all(case, "u_mul_e", "mean", np_data(data)))


@FEW
@given(case=graph_cases(max_nodes=8, max_edges=20, blocks=False), seed=st.integers(0, 10**6))
def test_u_dot_v_multihead_gives_size_one_last_dim(case, seed):
    h = features(case, (2, 3), "src", seed)
    g = case.build()
    g.ndata["h"] = h
    g.apply_edges(fn.u_dot_v("h", "h", "score"))
    assert g.edata["score"].shape == (case.num_edges, 2, 1)
    expected = O.edge_messages(case, "u_dot_v", {"u": as_np(h), "v": as_np(h)})
    assert_close(g.edata["score"], expected)


@FEW
@given(case=graph_cases(max_nodes=8, max_edges=20), seed=st.integers(0, 10**6))
def test_broadcast_both_operands_and_different_ranks(case, seed):
    data = {"e": features(case, (1, 3), "edge", seed), "v": features(case, (2, 1), "dst", seed + 1)}
    g = case.build()
    g.edata["a"] = data["e"]
    dst_of(g, case)["b"] = data["v"]
    g.apply_edges(fn.e_add_v("a", "b", "s"))
    assert g.edata["s"].shape == (case.num_edges, 2, 3)
    assert_close(g.edata["s"], O.edge_messages(case, "e_add_v", np_data(data)))
    # (N, 2, 3) * (E, 3): numpy pads the lower-rank operand on the left.
    data2 = {"u": features(case, (2, 3), "src", seed + 2), "e": features(case, (3,), "edge", seed + 3)}
    g2 = install(case, "u_mul_e", data2)
    g2.update_all(fn.u_mul_e("a", "b", "m"), fn.max("m", "out"))
    assert_close(dst_of(g2, case)["out"], O.update_all(case, "u_mul_e", "max", np_data(data2)))


# ------------------------------------------------------------------- degree edge cases

def fixed_graph_with_x(case=FIXED):
    g = case.build()
    # Strictly negative, so a max over no messages that leaked -inf / a default would show.
    x = -torch.arange(1, case.num_src * 2 + 1, dtype=torch.float64).reshape(case.num_src, 2)
    g.ndata["x"] = x
    return g, x


@pytest.mark.parametrize("reducer", O.REDUCERS)
def test_zero_in_degree_nodes_get_zero_from_every_reducer(reducer):
    g, _ = fixed_graph_with_x()
    g.update_all(fn.copy_u("x", "m"), getattr(fn, reducer)("m", "out"))
    out = g.ndata["out"]
    assert_close(out[[0, 4, 5]], np.zeros((3, 2)))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("reducer", ["max", "min", "mean"])
def test_zero_in_degree_zero_with_positive_features(reducer):
    g, x = fixed_graph_with_x()
    g.ndata["x"] = -x  # strictly positive: a min over no messages must not give +inf
    g.update_all(fn.copy_u("x", "m"), getattr(fn, reducer)("m", "out"))
    assert_close(g.ndata["out"][[0, 4, 5]], np.zeros((3, 2)))


def test_multi_edges_each_send_a_message():
    g, x = fixed_graph_with_x()
    g.update_all(fn.copy_u("x", "m"), fn.sum("m", "s"))
    g.update_all(fn.copy_u("x", "m"), fn.mean("m", "avg"))
    assert_close(g.ndata["s"][1], 2 * as_np(x[0]))
    assert_close(g.ndata["avg"][1], as_np(x[0]))
    assert_close(g.ndata["s"][3], as_np(x[1] + x[4]))
    assert_close(g.ndata["avg"][3], as_np((x[1] + x[4]) / 2))


def test_self_loop_is_an_ordinary_edge():
    g, x = fixed_graph_with_x()
    g.update_all(fn.copy_u("x", "m"), fn.sum("m", "s"))
    assert_close(g.ndata["s"][2], as_np(x[2]))
    g.apply_edges(fn.u_sub_v("x", "x", "d"))
    assert_close(g.edata["d"][2], np.zeros(2))


def test_fixed_graph_all_reducers_match_hand_values():
    g, x = fixed_graph_with_x()
    w = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]], dtype=torch.float64)
    g.edata["w"] = w
    g.update_all(fn.u_mul_e("x", "w", "m"), fn.sum("m", "s"))
    g.update_all(fn.u_mul_e("x", "w", "m"), fn.max("m", "mx"))
    assert_close(g.ndata["s"][1], as_np(x[0] * 1 + x[0] * 2))
    assert_close(g.ndata["s"][3], as_np(x[1] * 4 + x[4] * 5))
    assert_close(g.ndata["mx"][3], as_np(torch.maximum(x[1] * 4, x[4] * 5)))


# ---------------------------------------------------------------- apply_edges / apply_nodes

@FEW
@given(case=with_edges(max_nodes=8, max_edges=20), draw=st.data(), seed=st.integers(0, 10**6),
       existed=st.booleans())
def test_apply_edges_builtin_on_eid_subset(case, draw, seed, existed):
    eids = draw.draw(st.lists(st.integers(0, case.num_edges - 1), unique=True, min_size=1))
    data = make_operands(case, "u_add_e", ((3,), (3,)), seed)
    g = install(case, "u_add_e", data)
    old = features(case, (3,), "edge", seed + 7)
    if existed:
        g.edata["s"] = old
    g.apply_edges(fn.u_add_e("a", "b", "s"), edges=ids(eids, case))
    expected = as_np(old).copy() if existed else np.zeros((case.num_edges, 3))
    expected[eids] = O.edge_messages(case, "u_add_e", np_data(data), eids)
    assert_close(g.edata["s"], expected)


@FEW
@given(case=with_edges(max_nodes=8, max_edges=20), draw=st.data(), seed=st.integers(0, 10**6),
       existed=st.booleans())
def test_apply_edges_udf_on_eid_subset(case, draw, seed, existed):
    eids = draw.draw(st.lists(st.integers(0, case.num_edges - 1), unique=True, min_size=1))
    data = {"u": features(case, (2,), "src", seed), "v": features(case, (2,), "dst", seed + 1),
            "e": features(case, (2,), "edge", seed + 2)}
    g = case.build()
    node_store(g, case, "src")["x"] = data["u"]
    node_store(g, case, "dst")["y"] = data["v"]
    g.edata["w"] = data["e"]
    old = features(case, (2,), "edge", seed + 3)
    if existed:
        g.edata["s"] = old
    g.apply_edges(lambda e: {"s": e.src["x"] * e.data["w"] - e.dst["y"]}, edges=ids(eids, case))
    expected = as_np(old).copy() if existed else np.zeros((case.num_edges, 2))
    d = np_data(data)
    for i in eids:
        expected[i] = d["u"][case.src[i]] * d["e"][i] - d["v"][case.dst[i]]
    assert_close(g.edata["s"], expected)


@FEW
@given(case=graph_cases(max_nodes=8, max_edges=20), seed=st.integers(0, 10**6))
def test_apply_edges_udf_on_all_edges(case, seed):
    data = {"u": features(case, (2, 3), "src", seed), "v": features(case, (2, 3), "dst", seed + 1)}
    g = case.build()
    node_store(g, case, "src")["x"] = data["u"]
    node_store(g, case, "dst")["y"] = data["v"]
    g.apply_edges(lambda e: {"s": (e.src["x"] * e.dst["y"]).sum(-1, keepdim=True)})
    assert_close(g.edata["s"], O.edge_messages(case, "u_dot_v", np_data(data)))


@pytest.mark.parametrize("use_udf", [False, True])
@pytest.mark.parametrize("existed", [False, True])
def test_apply_edges_on_uv_pairs_updates_only_those_edges(use_udf, existed):
    case = SIMPLE
    g = case.build()
    x = features(case, (3,), "src", 1)
    g.ndata["x"] = x
    old = features(case, (3,), "edge", 2)
    if existed:
        g.edata["s"] = old
    u, v = torch.tensor([2, 0, 4]), torch.tensor([3, 4, 2])  # edges 2, 4, 5
    func = (lambda e: {"s": e.src["x"] - e.dst["x"]}) if use_udf else fn.u_sub_v("x", "x", "s")
    g.apply_edges(func, edges=(u, v))
    expected = as_np(old).copy() if existed else np.zeros((case.num_edges, 3))
    xn = as_np(x)
    for i in (2, 4, 5):
        expected[i] = xn[case.src[i]] - xn[case.dst[i]]
    assert_close(g.edata["s"], expected)


@FEW
@given(case=graph_cases(max_nodes=8, max_edges=20, blocks=False, min_nodes=1), draw=st.data(),
       seed=st.integers(0, 10**6), existed=st.booleans())
def test_apply_nodes_all_and_subset(case, draw, seed, existed):
    x = features(case, (2,), "src", seed)
    g = case.build()
    g.ndata["x"] = x
    g.apply_nodes(lambda n: {"y": n.data["x"] * 3 + 1})
    assert_close(g.ndata["y"], as_np(x) * 3 + 1)
    nodes = draw.draw(st.lists(st.integers(0, case.num_src - 1), unique=True, min_size=1))
    old = features(case, (2,), "src", seed + 1)
    if existed:
        g.ndata["z"] = old
    g.apply_nodes(lambda n: {"z": n.data["x"] - 5}, v=ids(nodes, case))
    expected = as_np(old).copy() if existed else np.zeros((case.num_src, 2))
    expected[nodes] = as_np(x)[nodes] - 5
    assert_close(g.ndata["z"], expected)


def test_apply_nodes_udf_sees_node_ids():
    g, _ = fixed_graph_with_x()
    g.apply_nodes(lambda n: {"id": n.nodes().to(torch.float64).unsqueeze(1)}, v=torch.tensor([4, 1]))
    assert_close(g.ndata["id"], np.array([[0.0], [1.0], [0.0], [0.0], [4.0], [0.0]]))


# ------------------------------------------------------------------ send_and_recv / pull / push

PARTIAL = [("copy_u", "sum"), ("u_mul_e", "max"), ("e_sub_v", "mean"), ("copy_e", "min"),
           ("u_dot_v", "sum")]


def double_plus_one(nodes):
    return {"out": nodes.data["out"] * 2 + 1}


def partial_setup(case, name, seed, existed):
    shapes = ((2,), (2,)) if O.parse_message(name)[0] != "copy" else ((2,),)
    data = make_operands(case, name, shapes, seed)
    g = install(case, name, data)
    out_dim = 1 if O.parse_message(name)[0] == "dot" else 2
    old = features(case, (out_dim,), "dst", seed + 11)
    if existed:
        dst_of(g, case)["out"] = old
    return g, np_data(data), (as_np(old) if existed else None)


@pytest.mark.parametrize("with_afunc", [False, True])
@pytest.mark.parametrize("name,reducer", PARTIAL)
@FEW
@given(case=with_edges(max_nodes=8, max_edges=20), draw=st.data(),
       seed=st.integers(0, 10**6), existed=st.booleans())
def test_send_and_recv_by_eids(name, reducer, with_afunc, case, draw, seed, existed):
    eids = draw.draw(st.lists(st.integers(0, case.num_edges - 1), unique=True, min_size=1))
    g, data, old = partial_setup(case, name, seed, existed)
    g.send_and_recv(ids(eids, case), builtin(name), getattr(fn, reducer)("m", "out"),
                    double_plus_one if with_afunc else None)
    apply = (lambda r: r * 2 + 1) if with_afunc else None
    expected = O.partial_update(case, name, reducer, data, eids, O.touched(case, eids), old, apply)
    assert_close(dst_of(g, case)["out"], expected)


@pytest.mark.parametrize("existed", [False, True])
def test_send_and_recv_by_uv_pairs(existed):
    case = SIMPLE
    g, data, old = partial_setup(case, "u_mul_e", 3, existed)
    u, v = torch.tensor([3, 0, 2]), torch.tensor([1, 4, 0])  # edges 3, 4, 6
    g.send_and_recv((u, v), fn.u_mul_e("a", "b", "m"), fn.sum("m", "out"), double_plus_one)
    expected = O.partial_update(case, "u_mul_e", "sum", data, [3, 4, 6], [1, 4, 0], old,
                                lambda r: r * 2 + 1)
    assert_close(g.ndata["out"], expected)


@pytest.mark.parametrize("with_afunc", [False, True])
@pytest.mark.parametrize("name,reducer", PARTIAL)
@FEW
@given(case=graph_cases(max_nodes=8, max_edges=20, min_nodes=1), draw=st.data(),
       seed=st.integers(0, 10**6), existed=st.booleans())
def test_pull_updates_every_node_in_v(name, reducer, with_afunc, case, draw, seed, existed):
    nodes = draw.draw(st.lists(st.integers(0, case.num_dst - 1), unique=True, min_size=1))
    g, data, old = partial_setup(case, name, seed, existed)
    g.pull(ids(nodes, case), builtin(name), getattr(fn, reducer)("m", "out"),
           double_plus_one if with_afunc else None)
    eids = [e for n in nodes for e in O.in_edges(case, n)]
    apply = (lambda r: r * 2 + 1) if with_afunc else None
    expected = O.partial_update(case, name, reducer, data, eids, nodes, old, apply)
    assert_close(dst_of(g, case)["out"], expected)


def test_pull_node_without_in_edges_gets_zero_and_afunc():
    g, x = fixed_graph_with_x()
    g.ndata["out"] = torch.full((6, 2), 7.0, dtype=torch.float64)
    g.pull(torch.tensor([0, 3]), fn.copy_u("x", "m"), fn.max("m", "out"),
           lambda n: {"out": n.data["out"] + 100})
    expected = np.full((6, 2), 7.0)
    expected[0] = 100.0
    expected[3] = as_np(torch.maximum(x[1], x[4])) + 100
    assert_close(g.ndata["out"], expected)


@pytest.mark.parametrize("with_afunc", [False, True])
@pytest.mark.parametrize("name,reducer", PARTIAL)
@FEW
@given(case=graph_cases(max_nodes=8, max_edges=20, min_nodes=1), draw=st.data(),
       seed=st.integers(0, 10**6), existed=st.booleans())
def test_push_updates_successors_only(name, reducer, with_afunc, case, draw, seed, existed):
    nodes = draw.draw(st.lists(st.integers(0, case.num_src - 1), unique=True, min_size=1))
    eids = O.out_edges(case, nodes)
    assume(eids or existed)  # DGL does nothing at all when no edge is sent along
    g, data, old = partial_setup(case, name, seed, existed)
    g.push(ids(nodes, case), builtin(name), getattr(fn, reducer)("m", "out"),
           double_plus_one if with_afunc else None)
    apply = (lambda r: r * 2 + 1) if with_afunc else None
    expected = O.partial_update(case, name, reducer, data, eids, O.touched(case, eids), old, apply)
    assert_close(dst_of(g, case)["out"], expected)


def test_partial_update_gradient_reaches_old_rows_and_operands():
    g, x = fixed_graph_with_x()
    x = x.clone().requires_grad_(True)
    old = torch.ones(6, 2, dtype=torch.float64, requires_grad=True)
    g.ndata["x"] = x
    g.ndata["out"] = old
    g.send_and_recv(torch.tensor([3, 0]), fn.copy_u("x", "m"), fn.sum("m", "out"))  # 1->3, 0->1
    (g.ndata["out"] * torch.arange(1.0, 7.0, dtype=torch.float64).unsqueeze(1)).sum().backward()
    expected_old = np.array([[1.0] * 2, [0.0] * 2, [3.0] * 2, [0.0] * 2, [5.0] * 2, [6.0] * 2])
    expected_x = np.zeros((6, 2))
    expected_x[0], expected_x[1] = 2.0, 4.0  # x0 reaches node 1 (weight 2), x1 reaches node 3
    assert_close(old.grad, expected_old)
    assert_close(x.grad, expected_x)


@FEW
@given(case=graph_cases(max_nodes=8, max_edges=20, blocks=False), seed=st.integers(0, 10**6))
def test_update_all_with_afunc_applies_to_every_node(case, seed):
    x = features(case, (3,), "src", seed)
    g = case.build()
    g.ndata["x"] = x
    g.update_all(fn.copy_u("x", "m"), fn.sum("m", "out"),
                 lambda n: {"out": n.data["out"] * 2 + n.data["x"]})
    agg = O.update_all(case, "copy_u", "sum", {"u": as_np(x)})
    assert_close(g.ndata["out"], agg * 2 + as_np(x))


# ---------------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("reducer", O.REDUCERS)
@pytest.mark.parametrize("name", ["copy_u", "copy_e", "u_mul_e"])
@FEW
@given(case=graph_cases(max_nodes=8, max_edges=20), draw=st.data(), seed=st.integers(0, 10**6),
       integer=st.booleans())
def test_gradients_match_oracle(name, reducer, case, draw, seed, integer):
    shapes = draw.draw(shape_strategy(name))
    data = make_operands(case, name, shapes, seed, integer=integer)
    leaves = {k: v.clone().requires_grad_(True) for k, v in data.items()}
    g = install(case, name, leaves)
    g.update_all(builtin(name), getattr(fn, reducer)("m", "out"))
    out = dst_of(g, case)["out"]
    grad_out = torch.randn(out.shape, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(seed))
    if out.requires_grad:
        (out * grad_out).sum().backward()
    expected = O.update_all_backward(case, name, reducer, np_data(data), as_np(grad_out))
    for target, leaf in leaves.items():
        got = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
        assert_close(got, expected[target])


@pytest.mark.parametrize("reducer,winners", [("max", [0, 1]), ("min", [2, 0])])
def test_max_min_gradient_goes_to_smallest_edge_id_on_ties(reducer, winners):
    # All three edges end at node 0; edge 0 comes from the highest source, so a CSR that sorts by
    # source would meet edge 1 before edge 0.
    g = gdsl.graph((torch.tensor([3, 0, 1]), torch.tensor([0, 0, 0])), num_nodes=4)
    w = torch.tensor([[5.0, 1.0], [5.0, 7.0], [2.0, 7.0]], dtype=torch.float64, requires_grad=True)
    g.edata["w"] = w
    g.update_all(fn.copy_e("w", "m"), getattr(fn, reducer)("m", "out"))
    g.ndata["out"][0].sum().backward()
    expected = np.zeros((3, 2))
    for feature, edge in enumerate(winners):
        expected[edge, feature] = 1.0
    assert_close(w.grad, expected)


def test_max_gradient_ties_between_sources_goes_to_smallest_edge_id():
    g = gdsl.graph((torch.tensor([2, 1, 0]), torch.tensor([3, 3, 3])), num_nodes=4)
    x = torch.tensor([[1.0], [4.0], [4.0], [0.0]], dtype=torch.float64, requires_grad=True)
    g.ndata["x"] = x
    g.update_all(fn.copy_u("x", "m"), fn.max("m", "out"))
    g.ndata["out"].sum().backward()
    assert_close(x.grad, np.array([[0.0], [0.0], [1.0], [0.0]]))  # edge 0 (from node 2) wins


def test_mean_gradient_divides_by_in_degree():
    g, x = fixed_graph_with_x()
    x = x.clone().requires_grad_(True)
    g.ndata["x"] = x
    g.update_all(fn.copy_u("x", "m"), fn.mean("m", "out"))
    g.ndata["out"].sum().backward()
    # node 0 -> 1 twice (mean over 2: 2 * 1/2), 2 -> 2, 1 -> 3 and 4 -> 3 (1/2 each)
    assert_close(x.grad, np.array([[1.0] * 2, [0.5] * 2, [1.0] * 2, [0.0] * 2, [0.5] * 2,
                                   [0.0] * 2]))


GRADCHECK = [("copy_u", "sum"), ("u_mul_e", "mean"), ("u_dot_v", "max"), ("e_div_v", "min"),
             ("v_sub_e", "sum"), ("u_add_e", "max"), ("copy_e", "mean")]
SMALL = GraphCase(src=np.array([0, 1, 1, 2, 3, 3, 4, 1]), dst=np.array([1, 2, 2, 2, 0, 4, 4, 0]),
                  num_src=6, num_dst=6, idtype=torch.int64, is_block=False)
SMALL_BLOCK = GraphCase(src=np.array([0, 1, 1, 2, 3, 4]), dst=np.array([1, 0, 0, 2, 1, 1]),
                        num_src=5, num_dst=4, idtype=torch.int32, is_block=True)


@pytest.mark.parametrize("case", [SMALL, SMALL_BLOCK], ids=["graph", "block"])
@pytest.mark.parametrize("name,reducer", GRADCHECK)
def test_gradcheck(name, reducer, case):
    op, lhs, rhs = O.parse_message(name)
    data = make_operands(case, name, ((2, 3), (2, 3)), seed=5)
    targets = [t for t in (lhs, rhs) if t is not None]
    g = case.build()

    def run(*inputs):
        with g.local_scope():
            for field, target, value in zip(FIELDS, targets, inputs):
                put(g, case, target, field, value)
            g.update_all(builtin(name), getattr(fn, reducer)("m", "out"))
            return dst_of(g, case)["out"]

    inputs = tuple(data[t].clone().requires_grad_(True) for t in targets)
    assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-5)


# ------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("mfunc", [fn.copy_u("nope", "m"), fn.u_mul_e("x", "nope", "m"),
                                   fn.u_add_v("x", "nope", "m"), fn.copy_e("nope", "m")])
def test_unknown_field_in_builtin_message_names_it(mfunc):
    g, _ = fixed_graph_with_x()
    g.edata["w"] = torch.ones(5, 2, dtype=torch.float64)
    with pytest.raises(gdsl.GraphError, match="nope"):
        g.update_all(mfunc, fn.sum("m", "out"))
    with pytest.raises(gdsl.GraphError, match="nope"):
        g.apply_edges(mfunc)


def test_reduce_of_a_message_field_that_was_not_sent_raises():
    g, _ = fixed_graph_with_x()
    with pytest.raises(gdsl.GdslError):
        g.update_all(fn.copy_u("x", "m"), fn.sum("not_m", "out"))


def test_unknown_field_in_message_udf_names_it():
    g, _ = fixed_graph_with_x()
    with pytest.raises(gdsl.GraphError, match="nope"):
        g.update_all(lambda e: {"m": e.src["nope"]}, fn.sum("m", "out"))
    with pytest.raises(gdsl.GraphError, match="nope"):
        g.apply_edges(lambda e: {"m": e.data["nope"]})


def test_message_udf_returning_non_dict_raises():
    g, _ = fixed_graph_with_x()
    with pytest.raises(gdsl.GdslError):
        g.update_all(lambda e: e.src["x"], fn.sum("m", "out"))
    with pytest.raises(gdsl.GdslError):
        g.apply_edges(lambda e: e.src["x"])


@pytest.mark.parametrize("store", ["ndata", "edata"])
def test_feature_with_wrong_first_dimension_raises(store):
    g, _ = fixed_graph_with_x()
    n = 6 if store == "ndata" else 5
    with pytest.raises(gdsl.FeatureError) as info:
        getattr(g, store)["bad"] = torch.zeros(n + 3, 2)
    message = str(info.value)
    assert "bad" in message and str(n) in message and str(n + 3) in message


def test_block_feature_with_wrong_first_dimension_raises():
    g = SMALL_BLOCK.build()
    with pytest.raises(gdsl.FeatureError, match="bad"):
        g.srcdata["bad"] = torch.zeros(SMALL_BLOCK.num_dst, 2)
    with pytest.raises(gdsl.FeatureError, match="bad"):
        g.dstdata["bad"] = torch.zeros(SMALL_BLOCK.num_src, 2)


def test_udf_output_with_wrong_first_dimension_raises():
    g, _ = fixed_graph_with_x()
    with pytest.raises(gdsl.GdslError):
        g.apply_edges(lambda e: {"s": torch.zeros(e.batch_size() + 1, 2)})
    with pytest.raises(gdsl.GdslError):
        g.apply_nodes(lambda n: {"s": torch.zeros(len(n.nodes()) + 1, 2)})


def test_error_hierarchy():
    assert issubclass(gdsl.FeatureError, gdsl.GraphError)
    assert issubclass(gdsl.FeatureError, KeyError)
    assert issubclass(gdsl.GraphError, gdsl.GdslError)
    assert issubclass(gdsl.BackendError, gdsl.GdslError)


# ----------------------------------------------------------------------------------- backends

def run_fixed_update_all():
    g, x = fixed_graph_with_x()
    g.update_all(fn.copy_u("x", "m"), fn.sum("m", "out"))
    return g.ndata["out"], O.update_all(FIXED, "copy_u", "sum", {"u": as_np(x)})


def test_reference_backend_is_available():
    assert "reference" in list(gdsl.available_backends())


def test_use_backend_reference_context_manager():
    with gdsl.use_backend("reference"):
        out, expected = run_fixed_update_all()
        assert_close(out, expected)
    out, expected = run_fixed_update_all()  # and everything still works afterwards
    assert_close(out, expected)


def test_unknown_backend_raises_backend_error_listing_available():
    with pytest.raises(gdsl.BackendError) as info:
        with gdsl.use_backend("no-such-backend"):
            run_fixed_update_all()
    assert "reference" in str(info.value)
    out, expected = run_fixed_update_all()  # a failed selection leaves things usable
    assert_close(out, expected)


def test_gdsl_backend_env_reference_is_honoured(monkeypatch):
    monkeypatch.setenv("GDSL_BACKEND", "reference")
    out, expected = run_fixed_update_all()
    assert_close(out, expected)


def test_gdsl_backend_env_reference_at_import():
    code = ("import torch, gdsl, gdsl.function as fn\n"
            "g = gdsl.graph((torch.tensor([0, 1, 1]), torch.tensor([1, 2, 2])))\n"
            "g.ndata['x'] = torch.tensor([[1.0], [2.0], [4.0]], dtype=torch.float64)\n"
            "g.update_all(fn.copy_u('x', 'm'), fn.sum('m', 'h'))\n"
            "print(g.ndata['h'].flatten().tolist())\n")
    env = dict(os.environ, GDSL_BACKEND="reference")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[0.0, 1.0, 4.0]"


# ----------------------------------------------------------- partial updates: bad ids / old fields

PARTIAL_CALLS = {
    "send_and_recv": lambda g, out: g.send_and_recv(torch.tensor([0, 3]), fn.copy_u("x", "m"),
                                                    fn.sum("m", out)),
    "pull": lambda g, out: g.pull(torch.tensor([1, 3]), fn.copy_u("x", "m"), fn.sum("m", out)),
    "push": lambda g, out: g.push(torch.tensor([0, 1]), fn.copy_u("x", "m"), fn.sum("m", out)),
    "apply_nodes": lambda g, out: g.apply_nodes(lambda n: {out: n.data["x"]}, v=torch.tensor([1, 3])),
}


@pytest.mark.parametrize("call", sorted(PARTIAL_CALLS))
def test_partial_update_into_field_of_other_feature_shape_raises(call):
    # Untouched nodes cannot keep a (6, 5) old value next to (2,)-shaped new rows: DGL raises
    # "Cannot update column of scheme ...". Silently zeroing the old rows would lose data.
    g, _ = fixed_graph_with_x()
    g.ndata["out"] = torch.full((6, 5), 7.0, dtype=torch.float64)
    with pytest.raises(gdsl.GdslError):
        PARTIAL_CALLS[call](g, "out")


def test_apply_edges_subset_into_field_of_other_feature_shape_raises():
    g, _ = fixed_graph_with_x()
    g.edata["s"] = torch.full((5, 5), 7.0, dtype=torch.float64)
    with pytest.raises(gdsl.GdslError):
        g.apply_edges(fn.copy_u("x", "s"), edges=torch.tensor([1]))


@pytest.mark.parametrize("call", sorted(PARTIAL_CALLS))
def test_partial_update_into_field_of_other_dtype_keeps_old_rows_or_raises(call):
    g, _ = fixed_graph_with_x()
    g.ndata["out"] = torch.full((6, 2), 7.0, dtype=torch.float32)
    try:
        PARTIAL_CALLS[call](g, "out")
    except gdsl.GdslError:
        return  # DGL's behaviour: scheme mismatch is an error
    untouched = {"send_and_recv": [0, 2, 4, 5], "pull": [0, 2, 4, 5], "push": [0, 2, 4, 5],
                 "apply_nodes": [0, 2, 4, 5]}[call]
    assert (g.ndata["out"][untouched] == 7.0).all()


@pytest.mark.parametrize("call", [
    lambda g: g.send_and_recv(torch.tensor([5]), fn.copy_u("x", "m"), fn.sum("m", "q")),
    lambda g: g.pull(torch.tensor([6]), fn.copy_u("x", "m"), fn.sum("m", "q")),
    lambda g: g.push(torch.tensor([-1]), fn.copy_u("x", "m"), fn.sum("m", "q")),
    lambda g: g.apply_edges(fn.copy_u("x", "q"), edges=torch.tensor([5])),
    lambda g: g.apply_nodes(lambda n: {"q": n.data["x"]}, v=torch.tensor([6])),
    lambda g: g.send_and_recv((torch.tensor([0]), torch.tensor([3])), fn.copy_u("x", "m"),
                              fn.sum("m", "q")),
], ids=["send_and_recv", "pull", "push", "apply_edges", "apply_nodes", "uv_without_edge"])
def test_partial_update_with_bad_ids_raises_graph_error(call):
    g, _ = fixed_graph_with_x()
    with pytest.raises(gdsl.GraphError):
        call(g)
