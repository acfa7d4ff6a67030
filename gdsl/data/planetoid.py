"""Cora and CiteSeer, the Planetoid citation benchmarks, shipped with gdsl.

The arrays live in ``gdsl/data/files/planetoid/<name>.npz`` (made once by ``scripts/convert_planetoid.py``
from the raw Planetoid pickles) and are read with ``allow_pickle=False``: loading a dataset never
executes code from a data file. Origin, license and preprocessing:
``gdsl/data/files/planetoid/README.md``.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

if TYPE_CHECKING:
    from gdsl import Graph

AVAILABLE = ("cora", "citeseer")


def _check_name(name: str) -> str:
    key = name.lower() if isinstance(name, str) else None
    if key not in AVAILABLE:
        raise ValueError(f"unknown Planetoid dataset {name!r}; available: {', '.join(AVAILABLE)}")
    return key


def load_planetoid_arrays(name: str) -> dict[str, np.ndarray]:
    """Every array stored for ``name`` (the npz content), read without unpickling anything."""
    resource = resources.files(__package__) / "files" / "planetoid" / f"{_check_name(name)}.npz"
    with resource.open("rb") as f, np.load(f, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def dense_features(arrays: dict[str, np.ndarray], row_normalize: bool = True) -> np.ndarray:
    """Densify the stored CSR features; optionally divide each row by its sum (as DGL does).

    Rows summing to 0 (CiteSeer's 15 padded test-range nodes) stay all zero.
    """
    num_rows, num_cols = (int(n) for n in arrays["feat_shape"])
    indptr = arrays["feat_indptr"].astype(np.int64)
    feat = np.zeros((num_rows, num_cols), dtype=np.float32)
    rows = np.repeat(np.arange(num_rows), np.diff(indptr))
    feat[rows, arrays["feat_indices"]] = arrays["feat_data"]
    if row_normalize:
        row_sum = feat.sum(axis=1, keepdims=True)
        np.divide(feat, row_sum, out=feat, where=row_sum != 0)
    return feat


def _graph_from_arrays(arrays: dict[str, np.ndarray], row_normalize: bool) -> Graph:
    """The gdsl graph with every stored node field; shared by the function and the datasets."""
    import gdsl  # lazily: gdsl/__init__ imports gdsl.data

    src, dst = torch.from_numpy(arrays["src"]), torch.from_numpy(arrays["dst"])
    g = gdsl.graph((src, dst), num_nodes=int(arrays["num_nodes"]))
    g.ndata["feat"] = torch.from_numpy(dense_features(arrays, row_normalize))
    g.ndata["label"] = torch.from_numpy(arrays["label"])
    for mask in ("train_mask", "val_mask", "test_mask"):
        g.ndata[mask] = torch.from_numpy(arrays[mask])
    return g


def load_planetoid(name: str, row_normalize: bool = True) -> Graph:
    """Cora or CiteSeer (case-insensitive) with the public split, as a gdsl graph.

    ``ndata``: ``feat`` (float32), ``label`` (int64), ``train_mask`` / ``val_mask`` / ``test_mask``
    (bool). Edges are symmetric, without duplicates; CiteSeer keeps its 124 self-loops, as DGL does.
    """
    return _graph_from_arrays(load_planetoid_arrays(name), row_normalize)


class _PlanetoidDataset:
    """DGL-style one-graph dataset, so that code written for ``dgl.data`` ports unchanged."""

    name: str

    def __init__(self, row_normalize: bool = True, transform: Callable[[Any], Any] | None = None):
        arrays = load_planetoid_arrays(self.name)
        self._graph = _graph_from_arrays(arrays, row_normalize)
        self._num_classes = int(arrays["num_classes"])
        self._transform = transform

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def __len__(self) -> int:
        return 1

    def __getitem__(self, idx: int) -> Graph:
        if idx not in (0, -1):
            raise IndexError(f"{type(self).__name__} has one graph; index {idx} is out of range")
        return self._graph if self._transform is None else self._transform(self._graph)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_graphs=1, num_classes={self.num_classes})"


class CoraGraphDataset(_PlanetoidDataset):
    """Cora: 2708 papers, 10556 directed citation edges, 1433 word features, 7 classes."""

    name = "cora"


class CiteseerGraphDataset(_PlanetoidDataset):
    """CiteSeer: 3327 papers, 9228 edges (124 self-loops), 3703 word features, 6 classes."""

    name = "citeseer"
