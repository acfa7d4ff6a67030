"""Bad input to the graph and feature API raises a gdsl error that names the problem.

Each test checks the error class and that the message mentions the offending value or the kind
of problem, so that a silent wrong answer (or an unrelated crash) fails the test.
"""
from __future__ import annotations

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

RANGE = ("range", "invalid", "[0,", "exist")  # words that say "an id outside [0, n)"
NEG = ("negative", "-1", "non-negative")


def expect(fn, needles, cls=gdsl.GdslError):
    """Call ``fn``; it must raise ``cls`` and the message must contain one of ``needles``."""
    with pytest.raises(cls) as ei:
        fn()
    msg = str(ei.value).lower()
    assert any(n.lower() in msg for n in needles), f"message {msg!r} names none of {needles}"
    return ei.value


def g5(idtype=torch.int64):
    """5 nodes, 4 edges: 0->1, 1->2, 2->3, 3->3."""
    return gdsl.graph((torch.tensor([0, 1, 2, 3], dtype=idtype),
                       torch.tensor([1, 2, 3, 3], dtype=idtype)), num_nodes=5)


def test_error_hierarchy():
    for cls in (gdsl.GraphError, gdsl.FeatureError, gdsl.DeviceError, gdsl.BackendError):
        assert issubclass(cls, gdsl.GdslError)
    assert issubclass(gdsl.FeatureError, gdsl.GraphError) and issubclass(gdsl.FeatureError, KeyError)
    assert issubclass(gdsl.DeviceError, gdsl.GraphError)


# ----------------------------------------------------------------------------- construction

@pytest.mark.parametrize("idtype", IDTYPES)
def test_negative_src_id(idtype):
    expect(lambda: gdsl.graph((torch.tensor([0, -1], dtype=idtype),
                               torch.tensor([1, 2], dtype=idtype))), NEG, gdsl.GraphError)


def test_negative_dst_id_in_list():
    expect(lambda: gdsl.graph(([0, 1], [1, -3])), ("negative", "-3"), gdsl.GraphError)


def test_id_not_below_num_nodes():
    expect(lambda: gdsl.graph(([0, 7], [1, 2]), num_nodes=5), ("7",) + RANGE + ("num_nodes",),
           gdsl.GraphError)
    expect(lambda: gdsl.graph(([0, 1], [5, 2]), num_nodes=5), ("5",) + RANGE + ("num_nodes",),
           gdsl.GraphError)


def test_negative_num_nodes():
    expect(lambda: gdsl.graph(([], []), num_nodes=-1), ("num_nodes", "-1", "negative"),
           gdsl.GraphError)


def test_src_dst_length_mismatch():
    # the message must name both lengths (or say that they differ)
    for src, dst, a, b in [([0, 1, 2], [1, 2], "3", "2"),
                           (torch.tensor([0, 1, 5, 6, 7]), torch.tensor([1]), "5", "1")]:
        with pytest.raises(gdsl.GraphError) as ei:
            gdsl.graph((src, dst))
        msg = str(ei.value).lower()
        assert (a in msg and b in msg) or any(w in msg for w in ("length", "mismatch", "differ"))


@pytest.mark.parametrize("make", [
    lambda: ([0.0, 1.5], [1.0, 2.0]),
    lambda: (np.array([0.0, 1.0]), np.array([1.0, 2.0])),
    lambda: (torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0])),
])
def test_float_ids_rejected(make):
    expect(lambda: gdsl.graph(make()), ("float", "integer", "dtype", "int"), gdsl.GraphError)


def test_bool_ids_rejected():
    expect(lambda: gdsl.graph((torch.tensor([True, False]), torch.tensor([False, True]))),
           ("bool", "integer", "dtype"), gdsl.GraphError)


def test_2d_id_tensors_rejected():
    expect(lambda: gdsl.graph((torch.tensor([[0, 1]]), torch.tensor([[1, 2]]))),
           ("1-d", "1d", "dim", "shape"), gdsl.GraphError)


def test_int32_overflow_not_wrapped_at_construction():
    # 2**32 would wrap to 0 in int32: it must be an error, not a silent edge 0 -> 0
    with pytest.raises(gdsl.GdslError):
        gdsl.graph(([2**32], [0]), idtype=torch.int32)


def test_bipartite_ids_out_of_range():
    expect(lambda: gdsl.bipartite(([0, 3], [0, 1]), 3, 2), ("3",) + RANGE, gdsl.GraphError)
    expect(lambda: gdsl.bipartite(([0, 1], [0, 2]), 3, 2), ("2",) + RANGE, gdsl.GraphError)
    expect(lambda: gdsl.bipartite(([0, -1], [0, 1]), 3, 2), NEG, gdsl.GraphError)


def test_scipy_matrix_must_be_square():
    m = sp.coo_matrix((np.ones(2), (np.array([0, 1]), np.array([2, 0]))), shape=(2, 3))
    words = ("square", "shape", "2 x 3", "(2, 3)")
    expect(lambda: gdsl.from_scipy(m), words, gdsl.GraphError)
    expect(lambda: gdsl.graph(m), words, gdsl.GraphError)


def test_edge_index_must_be_2_by_e():
    shape_words = ("shape", "2 x", "(2,", "[2,", "rows", "dim")
    expect(lambda: gdsl.from_edge_index(torch.tensor([[0, 1], [1, 2], [2, 0]])), shape_words,
           gdsl.GraphError)
    expect(lambda: gdsl.from_edge_index(torch.tensor([0, 1, 2])), shape_words, gdsl.GraphError)
    expect(lambda: gdsl.from_edge_index(torch.tensor([[0, 4], [1, 2]]), num_nodes=3),
           ("4",) + RANGE, gdsl.GraphError)


# ----------------------------------------------------------------------------- queries: node ids

@pytest.mark.parametrize("query", ["in_degrees", "out_degrees", "in_edges", "out_edges",
                                   "predecessors", "successors"])
def test_node_query_out_of_range_int(query):
    g = g5()
    expect(lambda: getattr(g, query)(100), ("100",) + RANGE, gdsl.GraphError)


@pytest.mark.parametrize("query", ["in_degrees", "out_degrees", "in_edges", "out_edges"])
def test_node_query_out_of_range_in_tensor(query):
    g = g5()
    expect(lambda: getattr(g, query)(torch.tensor([0, 5])), ("5",) + RANGE, gdsl.GraphError)


@pytest.mark.parametrize("query", ["in_degrees", "out_degrees", "in_edges", "out_edges",
                                   "predecessors", "successors", "has_nodes"])
def test_node_query_negative(query):
    g = g5()
    expect(lambda: getattr(g, query)(-1), NEG + RANGE, gdsl.GraphError)


@pytest.mark.parametrize("query", ["in_degrees", "out_degrees", "in_edges", "find_edges"])
def test_query_float_ids_rejected(query):
    g = g5()
    expect(lambda: getattr(g, query)(torch.tensor([0.0, 1.0])),
           ("float", "integer", "dtype", "int"), gdsl.GraphError)


@pytest.mark.parametrize("query", ["in_degrees", "out_degrees", "in_edges", "find_edges"])
def test_query_2d_ids_rejected(query):
    g = g5()
    expect(lambda: getattr(g, query)(torch.tensor([[0, 1]])),
           ("1-d", "1d", "dim", "shape"), gdsl.GraphError)


def test_int32_graph_query_does_not_wrap_large_ids():
    g = g5(torch.int32)
    with pytest.raises(gdsl.GraphError):
        g.in_degrees(2**32)  # would be node 0 after an int32 cast
    with pytest.raises(gdsl.GraphError):
        g.in_degrees(torch.tensor([2**32], dtype=torch.int64))
    with pytest.raises(gdsl.GraphError):
        g.find_edges(torch.tensor([2**32 + 1], dtype=torch.int64))


@pytest.mark.parametrize("query", ["in_degrees", "out_degrees", "has_edges_between",
                                   "predecessors", "find_edges"])
def test_huge_python_int_id(query):
    g = g5()
    args = (10**20, 0) if query == "has_edges_between" else (10**20,)
    with pytest.raises(gdsl.GraphError):
        getattr(g, query)(*args)


def test_queries_on_empty_graph_reject_any_node():
    g = gdsl.graph(([], []))
    expect(lambda: g.in_degrees([0]), ("0",) + RANGE, gdsl.GraphError)
    expect(lambda: g.out_degrees([0]), ("0",) + RANGE, gdsl.GraphError)


@SETTINGS
@given(graph_cases(blocks=None), st.integers(0, 20))
def test_in_degrees_past_num_dst_always_raises(case, extra):
    g = case.build()
    bad = case.num_dst + extra
    expect(lambda: g.in_degrees(torch.tensor([bad], dtype=g.idtype)), (str(bad),) + RANGE,
           gdsl.GraphError)


@SETTINGS
@given(graph_cases(blocks=None), st.integers(0, 20))
def test_out_edges_past_num_src_always_raises(case, extra):
    g = case.build()
    bad = case.num_src + extra
    expect(lambda: g.out_edges(bad), (str(bad),) + RANGE, gdsl.GraphError)


def test_block_checks_each_side_against_its_own_size():
    b = gdsl.bipartite(([0, 1, 4], [0, 1, 1]), 5, 2)
    assert b.out_degrees(4) == 1  # valid src id
    expect(lambda: b.in_degrees(4), ("4",) + RANGE, gdsl.GraphError)  # only 2 dst nodes
    expect(lambda: b.predecessors(2), ("2",) + RANGE, gdsl.GraphError)
    expect(lambda: b.has_edges_between(4, 2), ("2",) + RANGE, gdsl.GraphError)


# ----------------------------------------------------------------------------- queries: edges

def test_has_edges_between_out_of_range():
    g = g5()
    expect(lambda: g.has_edges_between(0, 100), ("100",) + RANGE, gdsl.GraphError)
    expect(lambda: g.has_edges_between(100, 0), ("100",) + RANGE, gdsl.GraphError)
    expect(lambda: g.has_edges_between(torch.tensor([0, 1]), torch.tensor([1, 9])),
           ("9",) + RANGE, gdsl.GraphError)


def test_has_edges_between_length_mismatch():
    g = g5()
    with pytest.raises(gdsl.GraphError):
        g.has_edges_between(torch.tensor([0, 1, 2]), torch.tensor([1, 2]))


def test_edge_ids_pair_without_edge():
    g = g5()
    err = expect(lambda: g.edge_ids(2, 0), ("edge",), gdsl.GraphError)
    assert "2" in str(err) and "0" in str(err)
    expect(lambda: g.edge_ids(torch.tensor([0, 4]), torch.tensor([1, 0])), ("edge",),
           gdsl.GraphError)


def test_edge_ids_out_of_range():
    g = g5()
    expect(lambda: g.edge_ids(0, 100), ("100",) + RANGE, gdsl.GraphError)


@pytest.mark.parametrize("bad", [4, 5, 1000])
def test_find_edges_eid_too_large(bad):
    g = g5()
    expect(lambda: g.find_edges(torch.tensor([0, bad])), (str(bad),) + RANGE, gdsl.GraphError)
    expect(lambda: g.find_edges(bad), (str(bad),) + RANGE, gdsl.GraphError)


def test_find_edges_negative():
    g = g5()
    expect(lambda: g.find_edges(torch.tensor([-1])), NEG + RANGE, gdsl.GraphError)


def test_find_edges_on_empty_graph():
    g = gdsl.graph(([], []), num_nodes=3)
    expect(lambda: g.find_edges(0), ("0",) + RANGE, gdsl.GraphError)


@SETTINGS
@given(graph_cases(blocks=None), st.integers(0, 20))
def test_find_edges_past_num_edges_always_raises(case, extra):
    g = case.build()
    bad = case.num_edges + extra
    expect(lambda: g.find_edges(torch.tensor([bad], dtype=g.idtype)), (str(bad),) + RANGE,
           gdsl.GraphError)


@pytest.mark.parametrize("call", [
    lambda g: g.edges(form="bad"),
    lambda g: g.in_edges(0, form="bad"),
    lambda g: g.out_edges(0, form="bad"),
])
def test_invalid_form(call):
    expect(lambda: call(g5()), ("form", "bad"))


def test_invalid_order():
    expect(lambda: g5().edges(order="bad"), ("order", "bad"))


def test_invalid_format_name():
    expect(lambda: g5().formats("bogus"), ("bogus", "format"))


# ----------------------------------------------------------------------------- transforms

def test_node_subgraph_out_of_range():
    expect(lambda: gdsl.node_subgraph(g5(), [0, 9]), ("9",) + RANGE, gdsl.GraphError)


def test_edge_subgraph_out_of_range():
    expect(lambda: gdsl.edge_subgraph(g5(), [0, 4]), ("4",) + RANGE, gdsl.GraphError)
    expect(lambda: gdsl.edge_subgraph(g5(), [-1]), NEG + RANGE, gdsl.GraphError)


def test_add_self_loop_on_bipartite_block():
    b = gdsl.bipartite(([0, 1], [0, 0]), 3, 1)
    with pytest.raises(gdsl.GdslError):
        gdsl.add_self_loop(b)


# ----------------------------------------------------------------------------- features

def test_feature_wrong_rows_message():
    g = g5()
    expect(lambda: g.ndata.__setitem__("h_feat", torch.zeros(6, 2)), ("h_feat",), gdsl.FeatureError)
    expect(lambda: g.edata.__setitem__("e_feat", torch.zeros(3)), ("e_feat",), gdsl.FeatureError)

