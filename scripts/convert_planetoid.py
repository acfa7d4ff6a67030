"""Convert the raw Planetoid pickles (Cora, CiteSeer) into the ``.npz`` files shipped in gdsl.

The raw ``ind.<name>.*`` files from kimiyoung/planetoid are Python pickles, and unpickling can
execute arbitrary code, so gdsl never loads them at run time: this one-off script is the only place
they are unpickled. It applies the standard Kipf & Welling (GCN) preprocessing and writes plain
numeric arrays that load with ``np.load(path, allow_pickle=False)``.

Usage (from the repository root)::

    python scripts/convert_planetoid.py [--src ../shared/datasets/planetoid] \
        [--out gdsl/data/files/planetoid]
"""

from __future__ import annotations

import argparse
import pickle
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO_ROOT / ".." / "shared" / "datasets" / "planetoid"
DEFAULT_OUT = REPO_ROOT / "gdsl" / "data" / "files" / "planetoid"
DATASETS = ("cora", "citeseer")
NUM_VAL = 500


def _unpickle(src: Path, name: str, part: str) -> object:
    """Load one raw pickle; latin1 because the files were written by Python 2."""
    with open(src / f"ind.{name}.{part}", "rb") as f, warnings.catch_warnings():
        # The pickles name scipy's deprecated module paths (scipy.sparse.csr); harmless here.
        warnings.simplefilter("ignore", DeprecationWarning)
        return pickle.load(f, encoding="latin1")


def _read_test_index(src: Path, name: str) -> np.ndarray:
    """Test node ids in file order (the order of the rows of ``tx``/``ty``)."""
    return np.loadtxt(src / f"ind.{name}.test.index", dtype=np.int64, ndmin=1)


def _pad_test_rows(t: sp.spmatrix | np.ndarray, test_idx: np.ndarray) -> sp.spmatrix | np.ndarray:
    """Extend ``tx``/``ty`` to every id in [min, max] of the test ids, with zero rows for the gaps.

    CiteSeer has test-range ids that are missing from ``test.index`` (isolated nodes without a
    feature row); the GCN reference code gives them all-zero features and one-hot labels.
    """
    lo, hi = int(test_idx.min()), int(test_idx.max())
    if hi - lo + 1 == len(test_idx):
        return t
    rows = np.sort(test_idx) - lo
    if sp.issparse(t):
        padded = sp.lil_matrix((hi - lo + 1, t.shape[1]), dtype=t.dtype)
        padded[rows, :] = t
        return padded.tocsr()
    padded = np.zeros((hi - lo + 1, t.shape[1]), dtype=t.dtype)
    padded[rows, :] = t
    return padded


def _stack_reordered(
    all_part: sp.spmatrix | np.ndarray, test_part: sp.spmatrix | np.ndarray, test_idx: np.ndarray
) -> sp.csr_matrix | np.ndarray:
    """``vstack(all, test)``, then the test rows moved to their node ids, as GCN's load_data."""
    test_part = _pad_test_rows(test_part, test_idx)
    test_range = np.sort(test_idx)
    if sp.issparse(all_part):
        stacked = sp.vstack([all_part, test_part]).tolil()
        stacked[test_idx, :] = stacked[test_range, :]
        return stacked.tocsr()
    stacked = np.vstack([all_part, test_part])
    stacked[test_idx, :] = stacked[test_range, :]
    return stacked


def _symmetric_edges(adj: dict[int, list[int]], num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Both directions of every adjacency-list entry, deduplicated and sorted by (src, dst).

    Self-loops present in the data are kept (CiteSeer has some), matching DGL's edge counts.
    """
    pairs = np.array([(u, v) for u, nbrs in adj.items() for v in nbrs], dtype=np.int64)
    both = np.concatenate([pairs, pairs[:, ::-1]])
    both = np.unique(both, axis=0)  # lexicographic sort on (src, dst) and deduplication
    if both.min() < 0 or both.max() >= num_nodes:
        raise ValueError("adjacency list refers to node ids outside [0, num_nodes)")
    return both[:, 0].copy(), both[:, 1].copy()


def _mask(num_nodes: int, ids: np.ndarray) -> np.ndarray:
    mask = np.zeros(num_nodes, dtype=bool)
    mask[ids] = True
    return mask


def convert(src: Path, name: str) -> dict[str, np.ndarray]:
    """Build every array of ``<name>.npz`` from the raw files (public Planetoid split)."""
    y = _unpickle(src, name, "y")
    allx, ally = _unpickle(src, name, "allx"), _unpickle(src, name, "ally")
    tx, ty = _unpickle(src, name, "tx"), _unpickle(src, name, "ty")
    adj = _unpickle(src, name, "graph")
    test_idx = _read_test_index(src, name)

    features = sp.csr_matrix(_stack_reordered(allx, tx, test_idx), dtype=np.float32)
    features.sum_duplicates()
    features.sort_indices()
    onehot = _stack_reordered(ally, ty, test_idx)
    # Padded CiteSeer rows have an all-zero one-hot; argmax gives them label 0. They are in no mask.
    label = onehot.argmax(axis=1).astype(np.int64)
    num_nodes, num_classes = features.shape[0], onehot.shape[1]
    src_ids, dst_ids = _symmetric_edges(adj, num_nodes)

    num_train = len(y)
    return {
        "feat_indptr": features.indptr.astype(np.int64),
        "feat_indices": features.indices.astype(np.int32),
        "feat_data": features.data.astype(np.float32),
        "feat_shape": np.array(features.shape, dtype=np.int64),
        "label": label,
        "train_mask": _mask(num_nodes, np.arange(num_train)),
        "val_mask": _mask(num_nodes, np.arange(num_train, num_train + NUM_VAL)),
        "test_mask": _mask(num_nodes, test_idx),
        "src": src_ids,
        "dst": dst_ids,
        "num_nodes": np.array(num_nodes, dtype=np.int64),
        "num_classes": np.array(num_classes, dtype=np.int64),
    }


def _summary(name: str, arrays: dict[str, np.ndarray]) -> str:
    src, dst = arrays["src"], arrays["dst"]
    return (
        f"{name}: {int(arrays['num_nodes'])} nodes, {len(src)} edges "
        f"({int((src == dst).sum())} self-loops), {int(arrays['feat_shape'][1])} features "
        f"({len(arrays['feat_data'])} non-zeros), {int(arrays['num_classes'])} classes, split "
        f"{int(arrays['train_mask'].sum())}/{int(arrays['val_mask'].sum())}/"
        f"{int(arrays['test_mask'].sum())}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC,
                        help="folder with the raw ind.<name>.* files (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="folder for <name>.npz (default: %(default)s)")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    for name in DATASETS:
        arrays = convert(args.src, name)
        np.savez_compressed(args.out / f"{name}.npz", **arrays)
        print(_summary(name, arrays))


if __name__ == "__main__":
    main()
