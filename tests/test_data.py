"""Tests of the shipped Planetoid datasets (Cora, CiteSeer): npz content, then gdsl graphs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from gdsl.data.planetoid import dense_features, load_planetoid_arrays

REPO_ROOT = Path(__file__).resolve().parents[1]
RAW_DIR = REPO_ROOT / ".." / "shared" / "datasets" / "planetoid"

# name: (nodes, directed edges, self-loops, features, classes, train, val, test)
EXPECTED = {
    "cora": (2708, 10556, 0, 1433, 7, 140, 500, 1000),
    "citeseer": (3327, 9228, 124, 3703, 6, 120, 500, 1000),
}
ARRAY_DTYPES = {
    "feat_indptr": np.int64,
    "feat_indices": np.int32,
    "feat_data": np.float32,
    "feat_shape": np.int64,
    "label": np.int64,
    "train_mask": np.bool_,
    "val_mask": np.bool_,
    "test_mask": np.bool_,
    "src": np.int64,
    "dst": np.int64,
    "num_nodes": np.int64,
    "num_classes": np.int64,
}
# CiteSeer test-range ids missing from ind.citeseer.test.index: zero features, label 0, no mask.
CITESEER_PADDED = [2407, 2489, 2553, 2682, 2781, 2953, 3042, 3063, 3212, 3214, 3250, 3292, 3305,
                   3306, 3309]

names = pytest.mark.parametrize("name", sorted(EXPECTED))


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def arrays(request: pytest.FixtureRequest) -> tuple[str, dict[str, np.ndarray]]:
    return request.param, load_planetoid_arrays(request.param)


def _npz_path(name: str) -> Path:
    return Path(str(resources.files("gdsl.data") / "files" / "planetoid" / f"{name}.npz"))


def _edge_keys(src: np.ndarray, dst: np.ndarray, num_nodes: int) -> np.ndarray:
    return src.astype(np.int64) * num_nodes + dst.astype(np.int64)


# ---- the npz files ----------------------------------------------------------------------------

@names
def test_every_array_loads_without_pickle(name: str) -> None:
    path = _npz_path(name)
    with zipfile.ZipFile(path) as zf:
        stored = sorted(n.removesuffix(".npy") for n in zf.namelist())
    assert stored == sorted(ARRAY_DTYPES)
    with np.load(path, allow_pickle=False) as npz:
        for key, dtype in ARRAY_DTYPES.items():
            value = npz[key]  # raises ValueError for an object array
            assert value.dtype == dtype, key
            assert value.dtype != object


def test_counts(arrays: tuple[str, dict[str, np.ndarray]]) -> None:
    name, a = arrays
    nodes, edges, loops, feats, classes, train, val, test = EXPECTED[name]
    assert int(a["num_nodes"]) == nodes
    assert int(a["num_classes"]) == classes
    assert tuple(a["feat_shape"]) == (nodes, feats)
    assert len(a["feat_indptr"]) == nodes + 1
    assert len(a["src"]) == len(a["dst"]) == edges
    assert int((a["src"] == a["dst"]).sum()) == loops
    assert len(a["label"]) == nodes
    assert [int(a[m].sum()) for m in ("train_mask", "val_mask", "test_mask")] == [train, val, test]


def test_public_split(arrays: tuple[str, dict[str, np.ndarray]]) -> None:
    name, a = arrays
    train, val, test = a["train_mask"], a["val_mask"], a["test_mask"]
    assert not (train & val).any() and not (train & test).any() and not (val & test).any()
    num_train = EXPECTED[name][5]
    assert np.array_equal(np.flatnonzero(train), np.arange(num_train))
    assert np.array_equal(np.flatnonzero(val), np.arange(num_train, num_train + 500))
    assert np.flatnonzero(test).min() >= num_train + 500
    # The public split's training set has exactly 20 nodes per class.
    counts = np.bincount(a["label"][train], minlength=int(a["num_classes"]))
    assert (counts == 20).all()


def test_labels_in_range(arrays: tuple[str, dict[str, np.ndarray]]) -> None:
    _, a = arrays
    label = a["label"]
    assert label.min() >= 0 and label.max() < int(a["num_classes"])
    assert len(np.unique(label)) == int(a["num_classes"])


def test_edges_sorted_symmetric_no_duplicates(arrays: tuple[str, dict[str, np.ndarray]]) -> None:
    _, a = arrays
    n, src, dst = int(a["num_nodes"]), a["src"], a["dst"]
    assert src.min() >= 0 and dst.min() >= 0 and src.max() < n and dst.max() < n
    keys = _edge_keys(src, dst, n)
    assert (np.diff(keys) > 0).all()  # sorted by (src, dst) and no duplicate edge
    assert np.array_equal(np.sort(_edge_keys(dst, src, n)), keys)  # every (u, v) has (v, u)


def test_features_are_binary_bag_of_words(arrays: tuple[str, dict[str, np.ndarray]]) -> None:
    _, a = arrays
    indptr, indices = a["feat_indptr"], a["feat_indices"]
    assert indptr[0] == 0 and indptr[-1] == len(indices) == len(a["feat_data"])
    assert (np.diff(indptr) >= 0).all()
    assert indices.min() >= 0 and indices.max() < a["feat_shape"][1]
    assert (a["feat_data"] == 1).all()
    raw = dense_features(a, row_normalize=False)
    assert int(raw.sum()) == len(indices)  # no duplicate (row, column) entries


def test_row_normalized_features(arrays: tuple[str, dict[str, np.ndarray]]) -> None:
    _, a = arrays
    raw = dense_features(a, row_normalize=False)
    feat = dense_features(a)
    assert feat.dtype == np.float32
    nonempty = raw.sum(axis=1) > 0
    np.testing.assert_allclose(feat[nonempty].sum(axis=1), 1.0, rtol=1e-5)
    assert (feat[~nonempty] == 0).all()
    assert np.array_equal(feat > 0, raw > 0)


def test_cora_has_no_empty_feature_rows() -> None:
    a = load_planetoid_arrays("cora")
    assert (np.diff(a["feat_indptr"]) > 0).all()


def test_citeseer_padded_test_range_nodes() -> None:
    """The 15 ids without a feature row: zero features, label 0, in no mask (GCN reference code)."""
    a = load_planetoid_arrays("citeseer")
    empty = np.flatnonzero(np.diff(a["feat_indptr"]) == 0)
    assert empty.tolist() == CITESEER_PADDED
    assert (a["label"][empty] == 0).all()
    in_a_mask = a["train_mask"] | a["val_mask"] | a["test_mask"]
    assert not in_a_mask[empty].any()
    # They lie inside the test id range, among the test nodes.
    test_ids = np.flatnonzero(a["test_mask"])
    assert test_ids.min() < empty.min() and empty.max() < test_ids.max()


@pytest.mark.parametrize("name", ["Cora", "CITESEER", "pubmed", "", "cora.npz", "../cora"])
def test_name_is_case_insensitive_and_checked(name: str) -> None:
    if name.lower() in EXPECTED:
        assert int(load_planetoid_arrays(name)["num_nodes"]) == EXPECTED[name.lower()][0]
    else:
        with pytest.raises(ValueError, match="available: cora, citeseer"):
            load_planetoid_arrays(name)


@names
def test_shipped_npz_matches_fresh_conversion(name: str, tmp_path: Path) -> None:
    if not RAW_DIR.is_dir():
        pytest.skip(f"raw Planetoid files not found at {RAW_DIR}")
    pytest.importorskip("scipy")
    script = REPO_ROOT / "scripts" / "convert_planetoid.py"
    subprocess.run([sys.executable, str(script), "--src", str(RAW_DIR), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    shipped = load_planetoid_arrays(name)
    with np.load(tmp_path / f"{name}.npz", allow_pickle=False) as fresh:
        assert sorted(fresh.files) == sorted(shipped)
        for key in fresh.files:
            assert fresh[key].dtype == shipped[key].dtype, key
            assert np.array_equal(fresh[key], shipped[key]), key


# ---- gdsl graphs and DGL-style datasets -------------------------------------------------------

@names
def test_load_planetoid_graph(name: str) -> None:
    from gdsl.data import load_planetoid

    nodes, edges, _, feats, classes, train, val, test = EXPECTED[name]
    a = load_planetoid_arrays(name)
    g = load_planetoid(name.upper())
    assert g.num_nodes() == nodes and g.num_edges() == edges
    src, dst = g.edges()
    assert np.array_equal(src.numpy(), a["src"]) and np.array_equal(dst.numpy(), a["dst"])
    feat = g.ndata["feat"]
    assert feat.shape == (nodes, feats) and feat.dtype == torch.float32
    assert np.array_equal(feat.numpy(), dense_features(a))
    label = g.ndata["label"]
    assert label.dtype == torch.int64 and int(label.max()) == classes - 1
    for mask, count in (("train_mask", train), ("val_mask", val), ("test_mask", test)):
        assert g.ndata[mask].dtype == torch.bool and int(g.ndata[mask].sum()) == count


def test_load_planetoid_without_normalization() -> None:
    from gdsl.data import load_planetoid

    feat = load_planetoid("cora", row_normalize=False).ndata["feat"]
    assert set(feat.unique().tolist()) == {0.0, 1.0}
    assert int(feat.sum()) == len(load_planetoid_arrays("cora")["feat_data"])


def test_load_planetoid_bad_name() -> None:
    from gdsl.data import load_planetoid

    with pytest.raises(ValueError, match="pubmed"):
        load_planetoid("pubmed")


@pytest.mark.parametrize("cls_name, name, classes", [("CoraGraphDataset", "cora", 7),
                                                     ("CiteseerGraphDataset", "citeseer", 6)])
def test_dataset_classes(cls_name: str, name: str, classes: int) -> None:
    import gdsl.data

    dataset = getattr(gdsl.data, cls_name)()
    assert dataset.name == name and dataset.num_classes == classes and len(dataset) == 1
    g = dataset[0]
    assert g.num_nodes() == EXPECTED[name][0] and g.num_edges() == EXPECTED[name][1]
    assert {"feat", "label", "train_mask", "val_mask", "test_mask"} <= set(g.ndata.keys())
    with pytest.raises(IndexError):
        dataset[1]


def test_dataset_transform() -> None:
    from gdsl.data import CoraGraphDataset

    seen = []
    dataset = CoraGraphDataset(transform=lambda g: seen.append(g) or "transformed")
    assert dataset[0] == "transformed" and seen[0].num_nodes() == 2708
