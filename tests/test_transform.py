"""Graph transforms (reverse, self-loops, to_simple, to_bidirected, subgraphs) against numpy oracles.

Every expected structure is computed from the drawn ``GraphCase`` arrays with numpy / plain
Python; features are random tensors whose rows are then checked to have moved with their
nodes and edges.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gdsl
from strategies import features, graph_cases

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def uv(g) -> list[tuple[int, int]]:
    u, v = g.edges()
    assert u.dtype == g.idtype and v.dtype == g.idtype
    return list(zip(u.tolist(), v.tolist()))


def with_feats(case):
    """Build the graph with node feature 'x' (N, 3) and edge feature 'w' (E, 2)."""
    g = case.build()
    g.ndata["x"] = features(case, (3,), "src", seed=1)
    g.edata["w"] = features(case, (2,), "edge", seed=2)
    return g


def case_pairs(case) -> list[tuple[int, int]]:
    return list(zip(case.src.tolist(), case.dst.tolist()))


# ----------------------------------------------------------------------------- reverse

@SETTINGS
@given(graph_cases(blocks=False))
def test_reverse_swaps_endpoints_keeping_edge_ids(case):
    g = with_feats(case)
    r = gdsl.reverse(g)
    assert r.num_nodes() == case.num_src and r.num_edges() == case.num_edges
    assert uv(r) == list(zip(case.dst.tolist(), case.src.tolist()))
    assert r.in_degrees().tolist() == np.bincount(case.src, minlength=case.num_src).tolist()


@SETTINGS
@given(graph_cases(blocks=False))
def test_reverse_default_copies_ndata_not_edata(case):
    g = with_feats(case)
    r = gdsl.reverse(g)
    assert torch.equal(r.ndata["x"], g.ndata["x"])
    assert "w" not in r.edata


@SETTINGS
@given(graph_cases(blocks=False))
def test_reverse_copy_flags(case):
    g = with_feats(case)
    r = gdsl.reverse(g, copy_ndata=False, copy_edata=True)
    assert "x" not in r.ndata
    assert torch.equal(r.edata["w"], g.edata["w"])  # edge i of r is the reverse of edge i


def test_reverse_dgl_example():
    g = gdsl.graph((torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0])))
    g.edata["h"] = torch.tensor([[3.0], [4.0], [5.0]])
    rg = gdsl.reverse(g, copy_edata=True)
    assert rg.edges()[0].tolist() == [1, 2, 0] and rg.edges()[1].tolist() == [0, 1, 2]
    assert rg.edata["h"].flatten().tolist() == [3.0, 4.0, 5.0]


# ----------------------------------------------------------------------------- add_self_loop

@SETTINGS
@given(graph_cases(blocks=False))
def test_add_self_loop_appends_one_loop_per_node(case):
    g = case.build()
    h = gdsl.add_self_loop(g)
    n = case.num_src
    assert h.num_nodes() == n and h.num_edges() == case.num_edges + n
    assert uv(h) == case_pairs(case) + [(i, i) for i in range(n)]
    assert g.num_edges() == case.num_edges  # input untouched


@SETTINGS
@given(graph_cases(blocks=False))
def test_add_self_loop_fills_edge_features(case):
    g = with_feats(case)
    g.edata["k"] = torch.arange(case.num_edges, dtype=torch.int64)
    h = gdsl.add_self_loop(g)
    e, n = case.num_edges, case.num_src
    assert torch.equal(h.edata["w"][:e], g.edata["w"])
    assert torch.equal(h.edata["w"][e:], torch.ones(n, 2, dtype=g.edata["w"].dtype))
    assert h.edata["k"].dtype == torch.int64
    assert h.edata["k"].tolist() == list(range(e)) + [1] * n
    assert torch.equal(h.ndata["x"], g.ndata["x"])


def test_add_self_loop_fill_data_and_names():
    g = gdsl.graph(([0, 1], [1, 2]))
    g.edata["a"] = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    g.edata["b"] = torch.tensor([7.0, 8.0])
    h = gdsl.add_self_loop(g, edge_feat_names=["a"], fill_data=2.5)
    assert h.edata["a"].tolist() == [[1, 1], [2, 2], [2.5, 2.5], [2.5, 2.5], [2.5, 2.5]]
    # DGL's add_edges pads features not named in edge_feat_names with zeros
    assert h.edata["b"].tolist() == [7.0, 8.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("agg", ["sum", "mean", "max", "min"])
def test_add_self_loop_fill_data_aggregates_in_edges(agg):
    # DGL: a string fill_data aggregates the features of each node's incoming edges
    g = gdsl.graph(([0, 1, 2, 0], [1, 1, 1, 2]), num_nodes=4)
    g.edata["w"] = torch.tensor([1.0, 2.0, 6.0, 5.0])
    h = gdsl.add_self_loop(g, fill_data=agg)
    in_w = {0: [], 1: [1.0, 2.0, 6.0], 2: [5.0], 3: []}
    fn = {"sum": sum, "mean": lambda x: sum(x) / len(x), "max": max, "min": min}[agg]
    expected = [fn(in_w[v]) if in_w[v] else 0.0 for v in range(4)]
    assert h.edata["w"][4:].tolist() == pytest.approx(expected)


def test_add_self_loop_keeps_existing_loops():
    g = gdsl.graph(([0, 1], [0, 0]))
    h = gdsl.add_self_loop(g)
    assert uv(h) == [(0, 0), (1, 0), (0, 0), (1, 1)]


# ----------------------------------------------------------------------------- remove_self_loop

@SETTINGS
@given(graph_cases(blocks=False))
def test_remove_self_loop_keeps_other_edges_in_order(case):
    g = with_feats(case)
    h = gdsl.remove_self_loop(g)
    keep = np.nonzero(case.src != case.dst)[0]
    assert h.num_nodes() == case.num_src
    assert uv(h) == [(int(case.src[i]), int(case.dst[i])) for i in keep]
    assert torch.equal(h.edata["w"], g.edata["w"][torch.as_tensor(keep, dtype=torch.long)])
    assert torch.equal(h.ndata["x"], g.ndata["x"])


def test_remove_then_add_self_loop_gives_one_loop_per_node():
    g = gdsl.graph(([0, 0, 1, 2, 2], [0, 0, 2, 2, 1]))
    h = gdsl.add_self_loop(gdsl.remove_self_loop(g))
    assert uv(h) == [(1, 2), (2, 1), (0, 0), (1, 1), (2, 2)]


# ----------------------------------------------------------------------------- to_simple

@SETTINGS
@given(graph_cases(blocks=False))
def test_to_simple_unique_edges_and_counts(case):
    g = case.build()
    s = gdsl.to_simple(g)
    mult = Counter(case_pairs(case))
    got = uv(s)
    assert len(got) == len(set(got)) == len(mult)
    assert s.num_nodes() == case.num_src
    assert dict(zip(got, s.edata["count"].tolist())) == dict(mult)


@SETTINGS
@given(graph_cases(blocks=False))
def test_to_simple_edges_sorted_by_src_then_dst(case):
    # DGL's COOToSimple sorts the COO (src major) before coalescing
    s = gdsl.to_simple(case.build())
    got = uv(s)
    assert got == sorted(got)


@SETTINGS
@given(graph_cases(blocks=False))
def test_to_simple_writeback_mapping(case):
    g = case.build()
    s, wm = gdsl.to_simple(g, return_counts="cnt", writeback_mapping=True)
    assert "cnt" in s.edata and "count" not in s.edata
    assert wm.shape == (case.num_edges,)
    got = uv(s)
    assert [got[i] for i in wm.tolist()] == case_pairs(case)
    assert np.bincount(wm.numpy().astype(np.int64), minlength=s.num_edges()).tolist() == \
        s.edata["cnt"].tolist()


@SETTINGS
@given(graph_cases(blocks=False))
def test_to_simple_feature_flags(case):
    g = with_feats(case)
    s = gdsl.to_simple(g, return_counts=None)
    assert torch.equal(s.ndata["x"], g.ndata["x"])  # copy_ndata=True by default
    assert "w" not in s.edata and "count" not in s.edata  # copy_edata=False by default
    s2, wm = gdsl.to_simple(g, copy_ndata=False, copy_edata=True, writeback_mapping=True)
    assert "x" not in s2.ndata
    # an arbitrary one of the parallel edges' features
    w = s2.edata["w"]
    for j in range(s2.num_edges()):
        members = [i for i, m in enumerate(wm.tolist()) if m == j]
        assert any(torch.equal(w[j], g.edata["w"][i]) for i in members)


def test_to_simple_dgl_example():
    g = gdsl.graph((torch.tensor([0, 1, 2, 1]), torch.tensor([1, 2, 0, 2])))
    g.ndata["h"] = torch.tensor([[0.0], [1.0], [2.0]])
    sg, wm = gdsl.to_simple(g, return_counts="cnt", writeback_mapping=True)
    assert uv(sg) == [(0, 1), (1, 2), (2, 0)]
    assert sg.edata["cnt"].tolist() == [1, 2, 1]
    assert wm.tolist() == [0, 1, 2, 1]
    assert sg.ndata["h"].flatten().tolist() == [0.0, 1.0, 2.0]


# ----------------------------------------------------------------------------- to_bidirected

@SETTINGS
@given(graph_cases(blocks=False))
def test_to_bidirected_is_simple_and_symmetric(case):
    g = with_feats(case)
    b = gdsl.to_bidirected(g)
    expected = set(case_pairs(case)) | {(v, u) for u, v in case_pairs(case)}
    got = uv(b)
    assert len(got) == len(set(got))  # simple
    assert set(got) == expected
    assert b.num_nodes() == case.num_src
    assert "x" not in b.ndata and "w" not in b.edata  # copy_ndata=False by default


def test_to_bidirected_copy_ndata():
    g = gdsl.graph(([0, 1, 1], [1, 2, 2]))
    g.ndata["x"] = torch.tensor([1.0, 2.0, 3.0])
    b = gdsl.to_bidirected(g, copy_ndata=True)
    assert set(uv(b)) == {(0, 1), (1, 0), (1, 2), (2, 1)} and b.num_edges() == 4
    assert b.ndata["x"].tolist() == [1.0, 2.0, 3.0]


# ----------------------------------------------------------------------------- node_subgraph

def induced(case, nodes):
    """Edge ids (original order) with both endpoints in ``nodes``, and the relabel map."""
    pos = {n: i for i, n in enumerate(nodes)}
    eids = [i for i in range(case.num_edges) if case.src[i] in pos and case.dst[i] in pos]
    return eids, pos


@SETTINGS
@given(graph_cases(blocks=False, min_nodes=1), st.data())
def test_node_subgraph_with_id_tensor(case, data):
    g = with_feats(case)
    nodes = data.draw(st.permutations(range(case.num_src)))
    nodes = nodes[: data.draw(st.integers(0, case.num_src))]
    sg = gdsl.node_subgraph(g, torch.tensor(nodes, dtype=g.idtype))
    eids, pos = induced(case, nodes)
    assert sg.num_nodes() == len(nodes) and sg.num_edges() == len(eids)
    assert sg.ndata[gdsl.NID].tolist() == nodes  # node i of sg is nodes[i]
    assert sg.edata[gdsl.EID].tolist() == eids  # induced edges in original edge-id order
    assert sg.ndata["_ID"].dtype == g.idtype and sg.edata["_ID"].dtype == g.idtype
    assert uv(sg) == [(pos[case.src[i]], pos[case.dst[i]]) for i in eids]
    idx = torch.tensor(nodes, dtype=torch.long)
    assert torch.equal(sg.ndata["x"], g.ndata["x"][idx])
    assert torch.equal(sg.edata["w"], g.edata["w"][torch.tensor(eids, dtype=torch.long)])


@SETTINGS
@given(graph_cases(blocks=False, min_nodes=1), st.data())
def test_node_subgraph_with_bool_mask(case, data):
    g = with_feats(case)
    mask = data.draw(st.lists(st.booleans(), min_size=case.num_src, max_size=case.num_src))
    nodes = [i for i, m in enumerate(mask) if m]
    sg = gdsl.node_subgraph(g, torch.tensor(mask, dtype=torch.bool))
    eids, pos = induced(case, nodes)
    assert sg.ndata["_ID"].tolist() == nodes
    assert sg.edata["_ID"].tolist() == eids
    assert uv(sg) == [(pos[case.src[i]], pos[case.dst[i]]) for i in eids]


def test_node_subgraph_dgl_example():
    g = gdsl.graph(([0, 1, 2, 3, 4], [1, 2, 3, 4, 0]))
    g.ndata["x"] = torch.arange(10).view(5, 2)
    sg = gdsl.node_subgraph(g, [0, 1, 4])
    assert uv(sg) == [(0, 1), (2, 0)]
    assert sg.ndata[gdsl.NID].tolist() == [0, 1, 4]
    assert sg.edata[gdsl.EID].tolist() == [0, 4]
    assert sg.ndata["x"].tolist() == [[0, 1], [2, 3], [8, 9]]


def test_node_subgraph_store_ids_false():
    g = gdsl.graph(([0, 1, 2], [1, 2, 0]))
    sg = gdsl.node_subgraph(g, [0, 1], store_ids=False)
    assert "_ID" not in sg.ndata and "_ID" not in sg.edata
    assert uv(sg) == [(0, 1)]


def test_node_subgraph_relabel_false_keeps_all_nodes():
    g = gdsl.graph(([0, 1, 2, 3], [1, 2, 3, 0]))
    sg = gdsl.node_subgraph(g, [1, 2, 3], relabel_nodes=False)
    assert sg.num_nodes() == 4
    assert uv(sg) == [(1, 2), (2, 3)]
    assert sg.edata["_ID"].tolist() == [1, 2]


def test_nid_eid_constants():
    assert gdsl.NID == "_ID" and gdsl.EID == "_ID"


# ----------------------------------------------------------------------------- edge_subgraph

@SETTINGS
@given(graph_cases(blocks=False), st.data())
def test_edge_subgraph_keeps_given_edge_order(case, data):
    g = with_feats(case)
    perm = data.draw(st.permutations(range(case.num_edges)))
    eids = perm[: data.draw(st.integers(0, case.num_edges))]
    sg = gdsl.edge_subgraph(g, torch.tensor(eids, dtype=g.idtype))
    assert sg.num_edges() == len(eids)
    assert sg.edata[gdsl.EID].tolist() == eids
    nid = sg.ndata[gdsl.NID]
    assert nid.dtype == g.idtype
    ends = set(case.src[eids].tolist()) | set(case.dst[eids].tolist())
    assert sorted(nid.tolist()) == sorted(ends) and sg.num_nodes() == len(ends)
    u, v = sg.edges()
    assert nid[u.long()].tolist() == case.src[eids].tolist()  # relabelled consistently
    assert nid[v.long()].tolist() == case.dst[eids].tolist()
    assert torch.equal(sg.ndata["x"], g.ndata["x"][nid.long()])
    assert torch.equal(sg.edata["w"], g.edata["w"][torch.tensor(eids, dtype=torch.long)])


@SETTINGS
@given(graph_cases(blocks=False), st.data())
def test_edge_subgraph_nodes_sorted_ascending(case, data):
    # gdsl's contract (team brief); DGL's CPU relabelling orders by first appearance instead
    g = case.build()
    perm = data.draw(st.permutations(range(case.num_edges)))
    eids = perm[: data.draw(st.integers(0, case.num_edges))]
    sg = gdsl.edge_subgraph(g, eids)
    ends = sorted(set(case.src[eids].tolist()) | set(case.dst[eids].tolist()))
    assert sg.ndata["_ID"].tolist() == ends


@SETTINGS
@given(graph_cases(blocks=False), st.data())
def test_edge_subgraph_with_bool_mask(case, data):
    g = case.build()
    mask = data.draw(st.lists(st.booleans(), min_size=case.num_edges, max_size=case.num_edges))
    eids = [i for i, m in enumerate(mask) if m]
    sg = gdsl.edge_subgraph(g, torch.tensor(mask, dtype=torch.bool))
    assert sg.edata["_ID"].tolist() == eids
    nid = sg.ndata["_ID"]
    assert [(nid[a].item(), nid[b].item()) for a, b in uv(sg)] == \
        [(int(case.src[i]), int(case.dst[i])) for i in eids]


@SETTINGS
@given(graph_cases(blocks=False), st.data())
def test_edge_subgraph_relabel_false_keeps_all_nodes(case, data):
    g = with_feats(case)
    perm = data.draw(st.permutations(range(case.num_edges)))
    eids = perm[: data.draw(st.integers(0, case.num_edges))]
    sg = gdsl.edge_subgraph(g, eids, relabel_nodes=False)
    assert sg.num_nodes() == case.num_src
    assert uv(sg) == [(int(case.src[i]), int(case.dst[i])) for i in eids]
    assert sg.edata["_ID"].tolist() == eids
    assert torch.equal(sg.ndata["x"], g.ndata["x"])


def test_edge_subgraph_relabel_false_dgl_example():
    g = gdsl.graph(([0, 1, 2, 3, 4], [1, 2, 3, 4, 0]))
    sg = gdsl.edge_subgraph(g, [0, 4], relabel_nodes=False)
    assert sg.num_nodes() == 5
    assert uv(sg) == [(0, 1), (4, 0)]


def test_edge_subgraph_store_ids_false():
    g = gdsl.graph(([0, 1, 2], [1, 2, 0]))
    sg = gdsl.edge_subgraph(g, [2], store_ids=False)
    assert "_ID" not in sg.ndata and "_ID" not in sg.edata
    assert sg.num_nodes() == 2 and sg.num_edges() == 1
