"""Feature frames: ndata / edata / srcdata / dstdata, local_scope, and feature checks."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gdsl
from strategies import features, graph_cases

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def small():
    g = gdsl.graph(([0, 1, 2, 2], [1, 2, 0, 0]))  # 3 nodes, 4 edges
    return g


# ----------------------------------------------------------------------------- dict behaviour

@SETTINGS
@given(graph_cases(blocks=False))
def test_ndata_edata_roundtrip(case):
    g = case.build()
    x = features(case, (4,), "src")
    w = features(case, (2, 3), "edge", seed=3)
    g.ndata["x"] = x
    g.edata["w"] = w
    assert torch.equal(g.ndata["x"], x)
    assert torch.equal(g.edata["w"], w)
    assert g.ndata["x"].shape == (case.num_src, 4)
    assert g.edata["w"].shape == (case.num_edges, 2, 3)


def test_assignment_overwrites():
    g = small()
    g.ndata["x"] = torch.zeros(3)
    g.ndata["x"] = torch.ones(3, 2)
    assert torch.equal(g.ndata["x"], torch.ones(3, 2))


def test_contains_len_keys_and_iteration():
    g = small()
    assert len(g.ndata) == 0 and "x" not in g.ndata
    g.ndata["x"] = torch.zeros(3)
    g.ndata["y"] = torch.zeros(3, 5)
    g.edata["w"] = torch.zeros(4)
    assert "x" in g.ndata and "y" in g.ndata and "w" not in g.ndata
    assert "w" in g.edata and "x" not in g.edata
    assert len(g.ndata) == 2 and len(g.edata) == 1
    assert set(iter(g.ndata)) == {"x", "y"}
    assert set(g.ndata.keys()) == {"x", "y"}
    assert dict(g.edata.items()).keys() == {"w"}
    assert len(list(g.ndata.values())) == 2


def test_deletion():
    g = small()
    g.ndata["x"] = torch.zeros(3)
    g.edata["w"] = torch.zeros(4)
    del g.ndata["x"]
    del g.edata["w"]
    assert "x" not in g.ndata and len(g.ndata) == 0
    assert "w" not in g.edata and len(g.edata) == 0


def test_missing_key_is_feature_error_and_key_error():
    g = small()
    with pytest.raises(gdsl.FeatureError) as ei:
        g.ndata["nope"]
    assert isinstance(ei.value, KeyError) and isinstance(ei.value, gdsl.GraphError)
    assert "nope" in str(ei.value)
    with pytest.raises(KeyError):
        g.edata["nope"]
    assert g.ndata.get("nope") is None


def test_srcdata_dstdata_alias_ndata_on_plain_graph():
    g = small()
    g.srcdata["a"] = torch.arange(3.0)
    assert torch.equal(g.ndata["a"], torch.arange(3.0))
    assert torch.equal(g.dstdata["a"], torch.arange(3.0))
    g.ndata["b"] = torch.ones(3)
    assert "b" in g.srcdata and "b" in g.dstdata


def test_features_are_not_shared_between_graphs():
    g1, g2 = small(), small()
    g1.ndata["x"] = torch.zeros(3)
    assert "x" not in g2.ndata


def test_empty_graph_accepts_zero_row_features():
    g = gdsl.graph(([], []))
    g.ndata["x"] = torch.zeros(0, 3)
    g.edata["w"] = torch.zeros(0)
    assert g.ndata["x"].shape == (0, 3) and g.edata["w"].shape == (0,)


# ----------------------------------------------------------------------------- size and device checks

def test_wrong_node_count_raises_feature_error_naming_key_and_sizes():
    g = small()
    with pytest.raises(gdsl.FeatureError) as ei:
        g.ndata["feat_xyz"] = torch.zeros(5, 2)
    msg = str(ei.value)
    assert "feat_xyz" in msg and "3" in msg and "5" in msg
    assert isinstance(ei.value, gdsl.GraphError)
    assert "feat_xyz" not in g.ndata


def test_wrong_edge_count_raises_feature_error_naming_key_and_sizes():
    g = small()
    with pytest.raises(gdsl.FeatureError) as ei:
        g.edata["wt_abc"] = torch.zeros(7)
    msg = str(ei.value)
    assert "wt_abc" in msg and "4" in msg and "7" in msg


@SETTINGS
@given(graph_cases(blocks=None), st.integers(1, 5))
def test_any_wrong_first_dim_is_rejected(case, delta):
    g = case.build()
    side = g.srcdata if case.is_block else g.ndata
    with pytest.raises(gdsl.FeatureError):
        side["x"] = torch.zeros(case.num_src + delta)
    with pytest.raises(gdsl.FeatureError):
        g.edata["w"] = torch.zeros(case.num_edges + delta, 2)


def test_scalar_tensor_feature_rejected():
    g = small()
    with pytest.raises(gdsl.GdslError):
        g.ndata["x"] = torch.tensor(1.0)


def test_other_device_raises_device_error():
    g = small()
    with pytest.raises(gdsl.DeviceError) as ei:
        g.ndata["x"] = torch.empty(3, device="meta")
    assert isinstance(ei.value, gdsl.GraphError)
    assert "x" not in g.ndata
    with pytest.raises(gdsl.DeviceError):
        g.edata["w"] = torch.empty(4, 2, device="meta")


def test_other_device_on_block_srcdata_raises_device_error():
    b = gdsl.bipartite(([0, 1], [0, 0]), 2, 1)
    with pytest.raises(gdsl.DeviceError):
        b.srcdata["x"] = torch.empty(2, device="meta")


# ----------------------------------------------------------------------------- blocks

def test_ndata_on_block_raises_graph_error():
    b = gdsl.bipartite(([0, 1, 2], [0, 0, 1]), 3, 2)
    with pytest.raises(gdsl.GraphError):
        b.ndata["x"] = torch.zeros(3)
    with pytest.raises(gdsl.GraphError):
        b.ndata


def test_ndata_on_block_with_equal_sides_still_raises():
    b = gdsl.bipartite(([0, 1], [1, 0]), 2, 2)
    with pytest.raises(gdsl.GraphError):
        b.ndata["x"] = torch.zeros(2)


@SETTINGS
@given(graph_cases(blocks=True))
def test_block_srcdata_dstdata_row_counts(case):
    b = case.build()
    s = features(case, (3,), "src")
    d = features(case, (2,), "dst")
    b.srcdata["h"] = s
    b.dstdata["h"] = d
    assert torch.equal(b.srcdata["h"], s) and torch.equal(b.dstdata["h"], d)
    assert b.srcdata["h"].shape[0] == case.num_src
    assert b.dstdata["h"].shape[0] == case.num_dst
    b.edata["e"] = features(case, (1,), "edge")
    assert b.edata["e"].shape[0] == case.num_edges


def test_block_sides_are_separate_and_sized():
    b = gdsl.bipartite(([0, 1, 2], [0, 0, 1]), 3, 2)
    b.srcdata["h"] = torch.zeros(3)
    assert "h" not in b.dstdata
    with pytest.raises(gdsl.FeatureError):
        b.dstdata["h"] = torch.zeros(3)  # dst side has 2 rows
    with pytest.raises(gdsl.FeatureError):
        b.srcdata["g"] = torch.zeros(2)


# ----------------------------------------------------------------------------- local_scope

def test_local_scope_new_keys_gone_after_exit():
    g = small()
    with g.local_scope():
        g.ndata["tmp"] = torch.ones(3)
        g.edata["tmp"] = torch.ones(4)
        assert "tmp" in g.ndata and "tmp" in g.edata
    assert "tmp" not in g.ndata and "tmp" not in g.edata


def test_local_scope_overwrite_and_delete_restored():
    g = small()
    x = torch.arange(3.0)
    g.ndata["x"] = x
    with g.local_scope():
        g.ndata["x"] = torch.zeros(3)
        assert torch.equal(g.ndata["x"], torch.zeros(3))
    assert torch.equal(g.ndata["x"], torch.arange(3.0))
    with g.local_scope():
        del g.ndata["x"]
        assert "x" not in g.ndata
    assert torch.equal(g.ndata["x"], torch.arange(3.0))


def test_local_scope_in_place_modification_kept():
    g = small()
    g.ndata["x"] = torch.zeros(3)
    with g.local_scope():
        g.ndata["x"].add_(1.0)
        g.ndata["x"][0] = 5.0
    assert g.ndata["x"].tolist() == [5.0, 1.0, 1.0]


def test_local_scope_nested():
    g = small()
    g.ndata["a"] = torch.zeros(3)
    with g.local_scope():
        g.ndata["b"] = torch.ones(3)
        with g.local_scope():
            g.ndata["c"] = torch.ones(3)
            g.ndata["b"] = torch.full((3,), 2.0)
            assert set(g.ndata.keys()) == {"a", "b", "c"}
        assert set(g.ndata.keys()) == {"a", "b"}
        assert g.ndata["b"].tolist() == [1.0, 1.0, 1.0]
    assert set(g.ndata.keys()) == {"a"}


def test_local_scope_restores_on_exception():
    g = small()
    with pytest.raises(RuntimeError):
        with g.local_scope():
            g.edata["tmp"] = torch.ones(4)
            raise RuntimeError("boom")
    assert "tmp" not in g.edata


def test_local_scope_on_block():
    b = gdsl.bipartite(([0, 1, 2], [0, 0, 1]), 3, 2)
    b.dstdata["h"] = torch.zeros(2)
    with b.local_scope():
        b.srcdata["h"] = torch.ones(3)
        b.dstdata["h"] = torch.ones(2)
    assert "h" not in b.srcdata
    assert b.dstdata["h"].tolist() == [0.0, 0.0]
