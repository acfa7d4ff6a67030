"""Graph construction and structure queries, each checked against an independent oracle.

Oracles are numpy loops, scipy.sparse matrices and networkx graphs built from the drawn
``GraphCase`` arrays; gdsl is never used to check itself.
"""
from __future__ import annotations

from collections import Counter

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gdsl
from strategies import graph_cases

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
IDTYPES = [torch.int32, torch.int64]


# ----------------------------------------------------------------------------- helpers

def ids(t, g) -> list[int]:
    """A returned id tensor as a list, after checking that it is a 1-D tensor of g.idtype."""
    assert isinstance(t, torch.Tensor), type(t)
    assert t.dtype == g.idtype, (t.dtype, g.idtype)
    assert t.dim() == 1
    return t.tolist()


def ints(t) -> list[int]:
    """A returned integer tensor (degrees) as a list."""
    assert isinstance(t, torch.Tensor), type(t)
    assert not t.is_floating_point() and t.dtype != torch.bool
    assert t.dim() == 1
    return t.tolist()


def triples(u, v, e) -> Counter:
    return Counter(zip(u.tolist(), v.tolist(), e.tolist()))


def oracle_in_edges(case, nodes) -> Counter:
    out = Counter()
    for n in nodes:
        for e in np.nonzero(case.dst == n)[0]:
            out[(int(case.src[e]), int(n), int(e))] += 1
    return out


def oracle_out_edges(case, nodes) -> Counter:
    out = Counter()
    for n in nodes:
        for e in np.nonzero(case.src == n)[0]:
            out[(int(n), int(case.dst[e]), int(e))] += 1
    return out


def node_lists(case, side: str, max_size: int = 8):
    n = case.num_dst if side == "dst" else case.num_src
    if n == 0:
        return st.just([])
    return st.lists(st.integers(0, n - 1), max_size=max_size)


# ----------------------------------------------------------------------------- counts and ids

@SETTINGS
@given(graph_cases(blocks=None))
def test_counts_match_case(case):
    g = case.build()
    assert g.num_src_nodes() == case.num_src
    assert g.num_dst_nodes() == case.num_dst
    assert g.num_edges() == case.num_edges
    assert g.number_of_edges() == case.num_edges
    assert g.is_block == case.is_block
    if not case.is_block:
        assert g.num_nodes() == case.num_src
        assert g.number_of_nodes() == case.num_src


@SETTINGS
@given(graph_cases(blocks=None))
def test_idtype_matches_input_tensors(case):
    g = case.build()
    assert g.idtype == case.idtype


@SETTINGS
@given(graph_cases(blocks=None))
def test_srcnodes_dstnodes_are_ranges(case):
    g = case.build()
    assert ids(g.srcnodes(), g) == list(range(case.num_src))
    assert ids(g.dstnodes(), g) == list(range(case.num_dst))
    if not case.is_block:
        assert ids(g.nodes(), g) == list(range(case.num_src))


def test_homogeneous_type_names():
    g = gdsl.graph(([0, 1], [1, 2]))
    assert g.is_homogeneous
    assert not g.is_block
    assert g.ntypes == ["_N"]
    assert g.etypes == ["_E"]
    assert g.canonical_etypes == [("_N", "_E", "_N")]
    assert g.srctypes == ["_N"] and g.dsttypes == ["_N"]


# ----------------------------------------------------------------------------- degrees

@SETTINGS
@given(graph_cases(blocks=None))
def test_in_degrees_all_match_bincount(case):
    g = case.build()
    expected = np.bincount(case.dst, minlength=case.num_dst)
    assert ints(g.in_degrees()) == expected.tolist()


@SETTINGS
@given(graph_cases(blocks=None))
def test_out_degrees_all_match_bincount(case):
    g = case.build()
    expected = np.bincount(case.src, minlength=case.num_src)
    assert ints(g.out_degrees()) == expected.tolist()


@SETTINGS
@given(graph_cases(blocks=None, min_nodes=1), st.data())
def test_in_degrees_of_id_tensor_keeps_order_and_repeats(case, data):
    g = case.build()
    v = data.draw(node_lists(case, "dst"))
    expected = [int((case.dst == n).sum()) for n in v]
    assert ints(g.in_degrees(torch.tensor(v, dtype=g.idtype))) == expected
    assert ints(g.in_degrees(v)) == expected  # plain list


@SETTINGS
@given(graph_cases(blocks=None, min_nodes=1), st.data())
def test_out_degrees_of_id_tensor_keeps_order_and_repeats(case, data):
    g = case.build()
    u = data.draw(node_lists(case, "src"))
    expected = [int((case.src == n).sum()) for n in u]
    assert ints(g.out_degrees(torch.tensor(u, dtype=g.idtype))) == expected


@SETTINGS
@given(graph_cases(blocks=None, min_nodes=1), st.data())
def test_degree_of_single_int_is_python_int(case, data):
    g = case.build()
    v = data.draw(st.integers(0, case.num_dst - 1))
    u = data.draw(st.integers(0, case.num_src - 1))
    d_in, d_out = g.in_degrees(v), g.out_degrees(u)
    assert isinstance(d_in, int) and not isinstance(d_in, bool)
    assert isinstance(d_out, int) and not isinstance(d_out, bool)
    assert d_in == int((case.dst == v).sum())
    assert d_out == int((case.src == u).sum())


def test_degrees_of_empty_id_list_are_empty():
    g = gdsl.graph(([0, 1], [1, 2]))
    assert tuple(g.in_degrees([]).shape) == (0,)
    assert tuple(g.out_degrees([]).shape) == (0,)


def test_hub_in_degree():
    n = 50
    g = gdsl.graph((list(range(n)) + [0, 0], [7] * n + [7, 7]), num_nodes=n)
    assert g.in_degrees(7) == n + 2
    assert g.out_degrees(0) == 3


# ----------------------------------------------------------------------------- edges

@SETTINGS
@given(graph_cases(blocks=None))
def test_edges_default_is_uv_in_eid_order(case):
    g = case.build()
    u, v = g.edges()
    assert ids(u, g) == case.src.tolist()
    assert ids(v, g) == case.dst.tolist()


@SETTINGS
@given(graph_cases(blocks=None))
def test_edges_form_eid_and_all(case):
    g = case.build()
    assert ids(g.edges(form="eid"), g) == list(range(case.num_edges))
    u, v, e = g.edges(form="all")
    assert ids(u, g) == case.src.tolist()
    assert ids(v, g) == case.dst.tolist()
    assert ids(e, g) == list(range(case.num_edges))


@SETTINGS
@given(graph_cases(blocks=None))
def test_edges_order_srcdst_sorted_and_consistent(case):
    g = case.build()
    u, v, e = g.edges(form="all", order="srcdst")
    pairs = list(zip(ids(u, g), ids(v, g)))
    expected = sorted(zip(case.src.tolist(), case.dst.tolist()))
    assert pairs == expected
    eid = ids(e, g)
    assert sorted(eid) == list(range(case.num_edges))  # a permutation
    assert [(int(case.src[i]), int(case.dst[i])) for i in eid] == pairs


def test_edges_order_srcdst_dgl_example():
    # tests/python/common/test_heterograph.py::test_edges_order in DGL
    g = gdsl.graph((np.array([0, 1, 0, 0, 2]), np.array([2, 2, 1, 1, 1])))
    src, dst = g.edges(order="srcdst")
    assert src.tolist() == [0, 0, 0, 1, 2]
    assert dst.tolist() == [1, 1, 2, 2, 1]


@SETTINGS
@given(graph_cases(blocks=None, min_nodes=1), st.data())
def test_in_edges_form_all_matches_oracle(case, data):
    g = case.build()
    v = data.draw(node_lists(case, "dst"))
    u_, v_, e_ = g.in_edges(torch.tensor(v, dtype=g.idtype), form="all")
    for t in (u_, v_, e_):
        ids(t, g)
    assert triples(u_, v_, e_) == oracle_in_edges(case, v)


@SETTINGS
@given(graph_cases(blocks=None, min_nodes=1), st.data())
def test_in_edges_forms_agree(case, data):
    g = case.build()
    v = data.draw(node_lists(case, "dst"))
    u_all, v_all, e_all = g.in_edges(v, form="all")
    u_uv, v_uv = g.in_edges(v)  # default form is 'uv'
    e_eid = g.in_edges(v, form="eid")
    assert ids(e_eid, g) == e_all.tolist()
    assert u_uv.tolist() == u_all.tolist() and v_uv.tolist() == v_all.tolist()
    # whatever the order, every returned edge id points at the returned endpoints
    assert [(int(case.src[i]), int(case.dst[i])) for i in e_all.tolist()] == \
        list(zip(u_all.tolist(), v_all.tolist()))


@SETTINGS
@given(graph_cases(blocks=None, min_nodes=1), st.data())
def test_out_edges_form_all_matches_oracle(case, data):
    g = case.build()
    u = data.draw(node_lists(case, "src"))
    u_, v_, e_ = g.out_edges(torch.tensor(u, dtype=g.idtype), form="all")
    for t in (u_, v_, e_):
        ids(t, g)
    assert triples(u_, v_, e_) == oracle_out_edges(case, u)
    assert ids(g.out_edges(u, form="eid"), g) == e_.tolist()


@SETTINGS
@given(graph_cases(blocks=None, min_nodes=1), st.data())
def test_in_out_edges_of_single_int(case, data):
    g = case.build()
    v = data.draw(st.integers(0, case.num_dst - 1))
    u = data.draw(st.integers(0, case.num_src - 1))
    assert triples(*g.in_edges(v, form="all")) == oracle_in_edges(case, [v])
    assert triples(*g.out_edges(u, form="all")) == oracle_out_edges(case, [u])


@SETTINGS
@given(graph_cases(blocks=None, min_nodes=1), st.data())
def test_predecessors_one_entry_per_edge(case, data):
    g = case.build()
    v = data.draw(st.integers(0, case.num_dst - 1))
    expected = Counter(case.src[case.dst == v].tolist())
    assert Counter(ids(g.predecessors(v), g)) == expected


@SETTINGS
@given(graph_cases(blocks=None, min_nodes=1), st.data())
def test_successors_one_entry_per_edge(case, data):
    g = case.build()
    u = data.draw(st.integers(0, case.num_src - 1))
    expected = Counter(case.dst[case.src == u].tolist())
    assert Counter(ids(g.successors(u), g)) == expected


def test_predecessors_dgl_example_repeats_multi_edges():
    g = gdsl.graph((torch.tensor([0, 0, 1, 1]), torch.tensor([1, 1, 2, 3])))
    assert g.predecessors(1).tolist() == [0, 0]
    assert sorted(g.successors(1).tolist()) == [2, 3]


# ----------------------------------------------------------------------------- edge lookups

@SETTINGS
@given(graph_cases(blocks=None, min_nodes=1), st.data())
def test_has_edges_between_tensor(case, data):
    g = case.build()
    k = data.draw(st.integers(0, 10))
    u = data.draw(st.lists(st.integers(0, case.num_src - 1), min_size=k, max_size=k))
    v = data.draw(st.lists(st.integers(0, case.num_dst - 1), min_size=k, max_size=k))
    edge_set = set(zip(case.src.tolist(), case.dst.tolist()))
    out = g.has_edges_between(torch.tensor(u, dtype=g.idtype), torch.tensor(v, dtype=g.idtype))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bool
    assert out.tolist() == [(a, b) in edge_set for a, b in zip(u, v)]


@SETTINGS
@given(graph_cases(blocks=None, min_nodes=1), st.data())
def test_has_edges_between_scalar_is_bool(case, data):
    g = case.build()
    u = data.draw(st.integers(0, case.num_src - 1))
    v = data.draw(st.integers(0, case.num_dst - 1))
    out = g.has_edges_between(u, v)
    assert isinstance(out, bool)
    assert out == bool(np.any((case.src == u) & (case.dst == v)))


@SETTINGS
@given(graph_cases(blocks=False), st.data())
def test_has_nodes(case, data):
    g = case.build()
    q = data.draw(st.lists(st.integers(0, case.num_src + 3), max_size=8))
    out = g.has_nodes(torch.tensor(q, dtype=g.idtype))
    assert out.dtype == torch.bool
    assert out.tolist() == [x < case.num_src for x in q]
    assert g.has_nodes(case.num_src) is False


@SETTINGS
@given(graph_cases(blocks=None), st.data())
def test_edge_ids_returns_an_edge_of_each_pair(case, data):
    if case.num_edges == 0:
        return
    g = case.build()
    picks = data.draw(st.lists(st.integers(0, case.num_edges - 1), max_size=10))
    u = case.src[picks].tolist()
    v = case.dst[picks].tolist()
    out = ids(g.edge_ids(torch.tensor(u, dtype=g.idtype), torch.tensor(v, dtype=g.idtype)), g)
    assert len(out) == len(picks)
    for a, b, e in zip(u, v, out):  # for multi-edges any one of the parallel edges is right
        assert 0 <= e < case.num_edges and case.src[e] == a and case.dst[e] == b


@SETTINGS
@given(graph_cases(blocks=None), st.data())
def test_edge_ids_single_pair_is_int(case, data):
    if case.num_edges == 0:
        return
    g = case.build()
    i = data.draw(st.integers(0, case.num_edges - 1))
    e = g.edge_ids(int(case.src[i]), int(case.dst[i]))
    assert isinstance(e, int) and not isinstance(e, bool)
    assert case.src[e] == case.src[i] and case.dst[e] == case.dst[i]


@SETTINGS
@given(graph_cases(blocks=None), st.data())
def test_edge_ids_return_uv_lists_all_parallel_edges(case, data):
    if case.num_edges == 0:
        return
    g = case.build()
    pairs = sorted({(int(case.src[i]), int(case.dst[i])) for i in
                    data.draw(st.lists(st.integers(0, case.num_edges - 1), max_size=6))})
    u = torch.tensor([p[0] for p in pairs], dtype=g.idtype)
    v = torch.tensor([p[1] for p in pairs], dtype=g.idtype)
    eu, ev, e = g.edge_ids(u, v, return_uv=True)
    for t in (eu, ev, e):
        ids(t, g)
    expected = Counter()
    for a, b in pairs:
        for i in np.nonzero((case.src == a) & (case.dst == b))[0]:
            expected[(a, b, int(i))] += 1
    assert triples(eu, ev, e) == expected


def test_edge_ids_dgl_example():
    g = gdsl.graph((torch.tensor([0, 0, 1, 1, 1]), torch.tensor([1, 0, 2, 3, 2])))
    assert g.edge_ids(0, 0) == 1
    assert g.edge_ids(torch.tensor([1, 0]), torch.tensor([3, 1])).tolist() == [3, 0]
    assert g.edge_ids(1, 2) in (2, 4)
    eu, ev, e = g.edge_ids(torch.tensor([1]), torch.tensor([2]), return_uv=True)
    assert sorted(e.tolist()) == [2, 4]
    assert eu.tolist() == [1, 1] and ev.tolist() == [2, 2]


def test_edge_ids_return_uv_skips_pairs_without_edges():
    # DGL only raises for missing pairs when return_uv=False (edge_ids_all returns what exists)
    g = gdsl.graph(([0, 1, 1], [1, 2, 2]))
    eu, ev, e = g.edge_ids(torch.tensor([1, 2]), torch.tensor([2, 0]), return_uv=True)
    assert sorted(zip(eu.tolist(), ev.tolist(), e.tolist())) == [(1, 2, 1), (1, 2, 2)]


def test_edge_ids_missing_pair_raises():
    g = gdsl.graph(([0, 1], [1, 2]))
    with pytest.raises(gdsl.GdslError):
        g.edge_ids(2, 0)
    with pytest.raises(gdsl.GdslError):
        g.edge_ids(torch.tensor([0, 2]), torch.tensor([1, 0]))


@SETTINGS
@given(graph_cases(blocks=None), st.data())
def test_find_edges(case, data):
    g = case.build()
    eid = data.draw(st.lists(st.integers(0, max(case.num_edges - 1, 0)),
                             max_size=10 if case.num_edges else 0))
    u, v = g.find_edges(torch.tensor(eid, dtype=g.idtype))
    assert ids(u, g) == case.src[eid].tolist()
    assert ids(v, g) == case.dst[eid].tolist()


def test_find_edges_empty_and_list():
    g = gdsl.graph(([0, 0, 1, 1], [1, 0, 2, 3]))
    u, v = g.find_edges([0, 2])
    assert u.tolist() == [0, 1] and v.tolist() == [1, 2]
    u, v = g.find_edges(torch.tensor([], dtype=torch.int64))
    assert u.tolist() == [] and v.tolist() == [] and u.dtype == g.idtype


# ----------------------------------------------------------------------------- returned tensors are not views of the graph

@pytest.mark.parametrize("query", ["in_degrees", "out_degrees"])
def test_mutating_returned_degrees_does_not_change_graph(query):
    g = gdsl.graph(([0, 0, 1, 1, 1], [1, 0, 2, 3, 2]))
    expected = getattr(g, query)().tolist()
    getattr(g, query)()[0] = 77  # e.g. the common `deg[deg == 0] = 1`
    assert getattr(g, query)().tolist() == expected


@pytest.mark.parametrize("which", [0, 1])
def test_mutating_returned_edges_does_not_change_graph(which):
    # docs/api.md: the relation is immutable (DGL may hand out its COO arrays zero-copy, but
    # gdsl caches degrees/CSR derived from them, so aliasing would make them disagree)
    g = gdsl.graph(([0, 0, 1, 1, 1], [1, 0, 2, 3, 2]))
    g.edges()[which][0] = 3
    assert g.edges()[0].tolist() == [0, 0, 1, 1, 1]
    assert g.edges()[1].tolist() == [1, 0, 2, 3, 2]


# ----------------------------------------------------------------------------- adjacency

@SETTINGS
@given(graph_cases(blocks=None))
def test_adj_matches_scipy_rows_are_sources(case):
    g = case.build()
    a = g.adj()
    assert isinstance(a, torch.Tensor) and a.layout == torch.sparse_coo
    assert tuple(a.shape) == (case.num_src, case.num_dst)
    expected = sp.coo_matrix((np.ones(case.num_edges), (case.src, case.dst)),
                             shape=(case.num_src, case.num_dst)).toarray()  # duplicates summed
    np.testing.assert_array_equal(a.to_dense().double().numpy(), expected)


@SETTINGS
@given(graph_cases(blocks=None))
def test_adj_transpose_rows_are_destinations(case):
    g = case.build()
    a = g.adj(transpose=True)
    assert tuple(a.shape) == (case.num_dst, case.num_src)
    expected = sp.coo_matrix((np.ones(case.num_edges), (case.dst, case.src)),
                             shape=(case.num_dst, case.num_src)).toarray()
    np.testing.assert_array_equal(a.to_dense().double().numpy(), expected)


# ----------------------------------------------------------------------------- formats

def test_formats_fresh_graph_has_only_coo():
    g = gdsl.graph(([0, 0, 1], [2, 3, 2]))
    f = g.formats()
    assert f["created"] == ["coo"]
    assert sorted(f["created"] + f["not created"]) == ["coo", "csc", "csr"]


def test_formats_restrict_to_csc():
    g = gdsl.graph(([0, 0, 1], [2, 3, 2]))
    g.ndata["h"] = torch.ones(4, 1)
    c = g.formats("csc")
    assert set(c.formats()["created"]) <= {"coo", "csc"}
    c.in_edges(2)
    assert "csc" in c.formats()["created"]
    c.out_edges(0)
    c.successors(0)
    c.edges(order="srcdst")
    assert "csr" not in c.formats()["created"]  # derived when needed, not kept
    assert g.formats()["created"] == ["coo"]  # the original is untouched
    assert torch.equal(c.ndata["h"], torch.ones(4, 1))  # features are copied


def test_formats_status_lists_only_allowed_formats():
    # DGL: "Only allowed formats will be displayed in the status query":
    # g.formats('csc').formats() == {'created': ['csc'], 'not created': []}.
    # gdsl always keeps COO (docs/api.md), so 'coo' may appear too, but never 'csr'.
    c = gdsl.graph(([0, 0, 1], [2, 3, 2])).formats("csc")
    f = c.formats()
    assert set(f["created"]) | set(f["not created"]) <= {"coo", "csc"}


def test_formats_in_edges_creates_csc():
    g = gdsl.graph(([0, 0, 1], [2, 3, 2]))
    g.in_edges(2)
    assert "csc" in g.formats()["created"]
    g.out_edges(0)
    assert set(g.formats()["created"]) == {"coo", "csr", "csc"}
    assert g.formats()["not created"] == []


@SETTINGS
@given(graph_cases(blocks=None), st.sampled_from(["coo", "csr", "csc", ["csr", "csc"]]))
def test_formats_restricted_graph_answers_queries_right(case, fmt):
    g = case.build().formats(fmt)
    u, v = g.edges()
    assert u.tolist() == case.src.tolist() and v.tolist() == case.dst.tolist()
    assert g.in_degrees().tolist() == np.bincount(case.dst, minlength=case.num_dst).tolist()
    assert g.out_degrees().tolist() == np.bincount(case.src, minlength=case.num_src).tolist()
    if case.num_dst:
        assert triples(*g.in_edges(0, form="all")) == oracle_in_edges(case, [0])
    if case.num_src:
        assert triples(*g.out_edges(0, form="all")) == oracle_out_edges(case, [0])
    allowed = ({fmt} if isinstance(fmt, str) else set(fmt)) | {"coo"}
    assert set(g.formats()["created"]) <= allowed


def test_formats_all_three_allowed():
    g = gdsl.graph(([0, 1, 0, 2], [0, 1, 1, 0]))
    g1 = g.formats(["coo", "csr", "csc"])
    f = g1.formats()
    assert len(f["created"]) + len(f["not created"]) == 3


# ----------------------------------------------------------------------------- idtype / device

@SETTINGS
@given(graph_cases(blocks=None))
def test_int_and_long_convert_idtype(case):
    g = case.build()
    g32, g64 = g.int(), g.long()
    assert g32.idtype == torch.int32 and g64.idtype == torch.int64
    for h in (g32, g64):
        u, v, e = h.edges(form="all")
        assert ids(u, h) == case.src.tolist() and ids(v, h) == case.dst.tolist()
        assert ids(e, h) == list(range(case.num_edges))
        assert ids(h.srcnodes(), h) == list(range(case.num_src))
        assert h.num_src_nodes() == case.num_src and h.num_dst_nodes() == case.num_dst
        assert h.is_block == case.is_block
    assert g32.long().idtype == torch.int64 and g64.int().idtype == torch.int32
    assert g.idtype == case.idtype  # conversion does not mutate the original


def test_int_keeps_features():
    g = gdsl.graph(([0, 1], [1, 2]))
    g.ndata["x"] = torch.arange(3.0)
    g.edata["w"] = torch.arange(2.0)
    h = g.int()
    assert torch.equal(h.ndata["x"], torch.arange(3.0))
    assert torch.equal(h.edata["w"], torch.arange(2.0))


def test_default_idtype_is_int64_and_idtype_argument():
    assert gdsl.graph(([0, 1], [1, 2])).idtype == torch.int64
    assert gdsl.graph((np.array([0, 1]), np.array([1, 2]))).idtype == torch.int64
    assert gdsl.graph((torch.tensor([0, 1], dtype=torch.int32),
                       torch.tensor([1, 2], dtype=torch.int32))).idtype == torch.int32
    g = gdsl.graph(([0, 1], [1, 2]), idtype=torch.int32)
    assert g.idtype == torch.int32
    assert g.edges()[0].dtype == torch.int32


def test_device_and_to_cpu():
    g = gdsl.graph(([0, 1], [1, 2]))
    g.ndata["x"] = torch.ones(3, 2)
    assert g.device == torch.device("cpu")
    for h in (g.to("cpu"), g.to(torch.device("cpu")), g.cpu()):
        assert h.device == torch.device("cpu")
        assert h.edges()[0].tolist() == [0, 1] and h.edges()[1].tolist() == [1, 2]
        assert torch.equal(h.ndata["x"], torch.ones(3, 2))
    assert gdsl.graph(([0], [1]), device="cpu").device == torch.device("cpu")


# ----------------------------------------------------------------------------- construction

@pytest.mark.parametrize("kind", ["list", "numpy", "tensor64", "tensor32"])
def test_construct_from_each_input_kind(kind):
    src, dst = [0, 2, 2, 3, 3], [1, 0, 0, 3, 1]
    conv = {"list": lambda x: x, "numpy": np.array,
            "tensor64": lambda x: torch.tensor(x, dtype=torch.int64),
            "tensor32": lambda x: torch.tensor(x, dtype=torch.int32)}[kind]
    g = gdsl.graph((conv(src), conv(dst)))
    assert g.num_nodes() == 4 and g.num_edges() == 5
    u, v = g.edges()
    assert u.tolist() == src and v.tolist() == dst
    assert g.idtype == (torch.int32 if kind == "tensor32" else torch.int64)


def test_num_nodes_default_and_explicit():
    assert gdsl.graph(([0, 1], [5, 2])).num_nodes() == 6  # max(src, dst) + 1
    assert gdsl.graph(([0, 1], [5, 2]), num_nodes=10).num_nodes() == 10
    g = gdsl.graph(([], []))
    assert g.num_nodes() == 0 and g.num_edges() == 0
    g = gdsl.graph(([], []), num_nodes=4)
    assert g.num_nodes() == 4 and g.in_degrees().tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("idtype", IDTYPES)
def test_empty_graph_queries(idtype):
    g = gdsl.graph((torch.tensor([], dtype=idtype), torch.tensor([], dtype=idtype)), num_nodes=3)
    u, v, e = g.edges(form="all")
    assert u.numel() == v.numel() == e.numel() == 0 and u.dtype == idtype
    assert g.in_degrees().tolist() == [0, 0, 0]
    assert g.predecessors(1).tolist() == []
    assert g.in_edges(torch.tensor([0, 2], dtype=idtype), form="eid").tolist() == []
    assert g.has_edges_between(0, 1) is False
    assert g.adj().to_dense().sum().item() == 0


@pytest.mark.parametrize("fmt", ["coo", "csr", "csc"])
def test_construct_from_scipy_one_edge_per_stored_entry(fmt):
    rows = np.array([2, 0, 2, 1, 0])
    cols = np.array([1, 3, 1, 1, 0])  # (2, 1) stored twice
    coo = sp.coo_matrix((np.arange(1.0, 6.0), (rows, cols)), shape=(4, 4))
    mat = {"coo": coo, "csr": coo.tocsr(), "csc": coo.tocsc()}[fmt]
    if fmt != "coo":
        assert mat.nnz < 5  # scipy sums duplicates when converting; use its stored entries
    expected_coo = mat.tocoo()
    expected = Counter(zip(expected_coo.row.tolist(), expected_coo.col.tolist()))
    for g in (gdsl.graph(mat), gdsl.from_scipy(mat)):
        assert g.num_nodes() == 4 and g.num_edges() == mat.nnz
        u, v = g.edges()
        assert Counter(zip(u.tolist(), v.tolist())) == expected
        if fmt == "coo":  # edge ids follow the stored order
            assert u.tolist() == rows.tolist() and v.tolist() == cols.tolist()
        if fmt == "csr":  # stored row-major
            assert u.tolist() == sorted(u.tolist())


def test_from_scipy_keeps_explicit_zero_entries():
    m = sp.coo_matrix((np.array([0.0, 1.0]), (np.array([0, 1]), np.array([1, 2]))), shape=(3, 3))
    g = gdsl.from_scipy(m)
    assert g.num_edges() == 2


def test_from_scipy_adj_roundtrip():
    rng = np.random.default_rng(0)
    m = sp.random(7, 7, density=0.3, random_state=rng, format="csr")
    g = gdsl.from_scipy(m)
    np.testing.assert_array_equal(g.adj().to_dense().numpy() != 0, m.toarray() != 0)


@SETTINGS
@given(graph_cases(blocks=False))
def test_from_edge_index(case):
    ei = torch.stack([torch.as_tensor(case.src), torch.as_tensor(case.dst)]).to(case.idtype)
    g = gdsl.from_edge_index(ei, num_nodes=case.num_src)
    assert g.num_nodes() == case.num_src and g.num_edges() == case.num_edges
    u, v = g.edges()
    assert u.tolist() == case.src.tolist() and v.tolist() == case.dst.tolist()


def test_from_edge_index_infers_num_nodes():
    g = gdsl.from_edge_index(torch.tensor([[0, 4], [1, 2]]))
    assert g.num_nodes() == 5
    assert g.edges()[0].tolist() == [0, 4] and g.edges()[1].tolist() == [1, 2]


@SETTINGS
@given(graph_cases(blocks=False), st.data())
def test_from_networkx_multidigraph(case, data):
    nxg = nx.MultiDiGraph()
    # insertion order must not matter: DGL relabels with ordering="sorted"
    nxg.add_nodes_from(data.draw(st.permutations(range(case.num_src))))
    for i, (a, b) in enumerate(zip(case.src.tolist(), case.dst.tolist())):
        nxg.add_edge(a, b, w=float(i))
    g = gdsl.from_networkx(nxg, edge_attrs=["w"])
    assert g.num_nodes() == case.num_src and g.num_edges() == case.num_edges
    u, v = g.edges()
    w = g.edata["w"]
    got = Counter(zip(u.tolist(), v.tolist(), w.tolist()))
    assert got == Counter(zip(case.src.tolist(), case.dst.tolist(),
                              [float(i) for i in range(case.num_edges)]))


def test_from_networkx_undirected_becomes_both_directions():
    nxg = nx.Graph()
    nxg.add_nodes_from(range(4))
    nxg.add_edges_from([(0, 1), (1, 2), (3, 3)])
    g = gdsl.from_networkx(nxg)
    assert g.num_nodes() == 4
    u, v = g.edges()
    expected = Counter(list(nxg.to_directed().edges()))  # what DGL does
    assert Counter(zip(u.tolist(), v.tolist())) == expected
    assert g.num_edges() == 5  # 0-1, 1-0, 1-2, 2-1 and one self-loop 3-3


def test_from_networkx_integer_labels_keep_their_ids():
    # nodes first seen in the order 3, 1, 0, 2; DGL's convert_node_labels_to_integers(
    # ordering="sorted") keeps label k as node k
    nxg = nx.DiGraph()
    nxg.add_edge(3, 1)
    nxg.add_edge(0, 2)
    for n in nxg.nodes:
        nxg.nodes[n]["label"] = 10 * n
    g = gdsl.from_networkx(nxg, node_attrs=["label"])
    assert set(zip(*[t.tolist() for t in g.edges()])) == {(3, 1), (0, 2)}
    assert g.ndata["label"].tolist() == [0, 10, 20, 30]


def test_from_networkx_string_labels_sorted():
    nxg = nx.DiGraph()
    nxg.add_node("b", f=2.0)
    nxg.add_node("a", f=1.0)
    nxg.add_node("c", f=3.0)
    nxg.add_edge("a", "c")
    g = gdsl.from_networkx(nxg, node_attrs=["f"])
    assert g.ndata["f"].tolist() == [1.0, 2.0, 3.0]  # a, b, c
    assert g.edges()[0].tolist() == [0] and g.edges()[1].tolist() == [2]


def test_from_networkx_undirected_multigraph():
    nxg = nx.MultiGraph()
    nxg.add_edges_from([(0, 1), (0, 1), (2, 2)])
    g = gdsl.from_networkx(nxg)
    expected = Counter(list(nxg.to_directed().edges()))  # 0-1 twice each way, 2-2 once
    assert Counter(zip(*[t.tolist() for t in g.edges()])) == expected


def test_from_networkx_node_attrs_in_node_order():
    nxg = nx.DiGraph()
    for n in range(3):
        nxg.add_node(n, feat=[float(n), 2.0 * n], label=10 + n)
    nxg.add_edge(0, 2, w=0.5)
    nxg.add_edge(2, 1, w=1.5)
    g = gdsl.from_networkx(nxg, node_attrs=["feat", "label"], edge_attrs=["w"])
    assert torch.equal(g.ndata["feat"].double(), torch.tensor([[0.0, 0.0], [1.0, 2.0], [2.0, 4.0]],
                                                              dtype=torch.float64))
    assert g.ndata["label"].tolist() == [10, 11, 12]
    got = {(a, b): w for a, b, w in zip(*[t.tolist() for t in g.edges()], g.edata["w"].tolist())}
    assert got == {(0, 2): 0.5, (2, 1): 1.5}


# ----------------------------------------------------------------------------- blocks

@SETTINGS
@given(graph_cases(blocks=True))
def test_bipartite_block_structure(case):
    g = case.build()
    assert g.is_block
    assert g.num_src_nodes() == case.num_src and g.num_dst_nodes() == case.num_dst
    assert g.in_degrees().shape[0] == case.num_dst
    assert g.out_degrees().shape[0] == case.num_src
    assert g.adj().shape == (case.num_src, case.num_dst)


def test_bipartite_with_more_dst_than_src():
    g = gdsl.bipartite(([0, 0, 1], [4, 2, 4]), 2, 6)
    assert g.num_src_nodes() == 2 and g.num_dst_nodes() == 6
    assert g.in_degrees().tolist() == [0, 0, 1, 0, 2, 0]
    assert g.out_degrees().tolist() == [2, 1]
    assert sorted(g.predecessors(4).tolist()) == [0, 1]


def test_create_block_dgl_keywords():
    g = gdsl.create_block((torch.tensor([0, 1, 2]), torch.tensor([1, 0, 1])),
                          num_src_nodes=3, num_dst_nodes=2)
    assert g.is_block and g.num_src_nodes() == 3 and g.num_dst_nodes() == 2
    u, v = g.edges()
    assert u.tolist() == [0, 1, 2] and v.tolist() == [1, 0, 1]
