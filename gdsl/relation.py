"""A relation: one immutable bipartite adjacency, the unit every kernel is written against.

COO (``src``, ``dst``) is the canonical form: edge ids are positions ``0..E-1``. The compressed
forms are built on first use and cached:

- in-CSR ("csc" in DGL's words): edges grouped by destination, for pull aggregation;
- out-CSR ("csr"): edges grouped by source, for push and for backward passes of pull kernels;
- degree statistics, for schedulers and autotuners.

Within a group, edges keep increasing edge-id order (a stable sort), so a node's mailbox is
ordered by edge id and every derived result is deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from .base import index_dtype
from .errors import GraphError

FORMATS = ("coo", "csr", "csc")


@dataclass(frozen=True)
class Compressed:
    """One compressed adjacency: ``indptr[num_rows + 1]``, the other endpoint and the edge id of
    each entry, rows in order and entries within a row by increasing edge id."""

    indptr: torch.Tensor
    indices: torch.Tensor
    eids: torch.Tensor

    def to(self, device: torch.device) -> "Compressed":
        return Compressed(self.indptr.to(device), self.indices.to(device), self.eids.to(device))


@dataclass(frozen=True)
class DegreeStats:
    """Summary of a degree sequence: what a scheduler needs to pick a kernel shape."""

    degrees: torch.Tensor
    max_degree: int
    mean_degree: float
    log2_histogram: tuple[int, ...]  # bucket 0: degree 0, bucket k: degree in [2^(k-1), 2^k)


def _compress(rows: torch.Tensor, cols: torch.Tensor, num_rows: int) -> Compressed:
    num_edges = rows.numel()
    itype = index_dtype(max(num_edges, num_rows) + 1)
    order = torch.argsort(rows, stable=True)
    counts = torch.bincount(rows.to(torch.int64), minlength=num_rows) if num_edges else \
        torch.zeros(num_rows, dtype=torch.int64, device=rows.device)
    indptr = torch.zeros(num_rows + 1, dtype=torch.int64, device=rows.device)
    torch.cumsum(counts, 0, out=indptr[1:])
    return Compressed(indptr.to(itype), cols[order].to(itype), order.to(itype))


def _degree_stats(degrees: torch.Tensor) -> DegreeStats:
    if degrees.numel() == 0:
        return DegreeStats(degrees, 0, 0.0, ())
    buckets = torch.where(degrees > 0, torch.floor(torch.log2(degrees.clamp(min=1).double())).long() + 1,
                          torch.zeros_like(degrees))
    hist = torch.bincount(buckets.cpu())
    return DegreeStats(degrees, int(degrees.max()), float(degrees.double().mean()), tuple(hist.tolist()))


class Relation:
    """An immutable bipartite adjacency from ``num_src`` source to ``num_dst`` destination nodes.

    Construct with already-validated id tensors (see ``gdsl.convert``); every derived form is
    computed lazily and cached. ``allowed`` names the compressed formats that may be cached; a
    format outside it is rebuilt each time it is needed (the user asked to save its memory).
    """

    __slots__ = ("num_src", "num_dst", "src", "dst", "allowed", "_cache")

    def __init__(self, src: torch.Tensor, dst: torch.Tensor, num_src: int, num_dst: int,
                 allowed: Iterable[str] = FORMATS):
        if src.shape != dst.shape or src.dim() != 1:
            raise GraphError(f"src and dst must be 1-D of equal length, got {tuple(src.shape)} "
                             f"and {tuple(dst.shape)}")
        self.src = src
        self.dst = dst
        self.num_src = int(num_src)
        self.num_dst = int(num_dst)
        self.allowed = frozenset(allowed) | {"coo"}
        self._cache: dict[str, object] = {}

    # -- basic facts -------------------------------------------------------------------------
    @property
    def num_edges(self) -> int:
        return self.src.numel()

    @property
    def idtype(self) -> torch.dtype:
        return self.src.dtype

    @property
    def device(self) -> torch.device:
        return self.src.device

    def __repr__(self) -> str:
        return (f"Relation(num_src={self.num_src}, num_dst={self.num_dst}, "
                f"num_edges={self.num_edges}, idtype={self.idtype}, device={self.device})")

    # -- cached derived forms ----------------------------------------------------------------
    def _cached(self, key: str, build, fmt: str | None = None):
        if key in self._cache:
            return self._cache[key]
        value = build()
        if fmt is None or fmt in self.allowed:
            self._cache[key] = value
        return value

    @property
    def in_csr(self) -> Compressed:
        """Edges grouped by destination: ``indptr[num_dst+1]``, source ids, edge ids."""
        return self._cached("csc", lambda: _compress(self.dst, self.src, self.num_dst), "csc")

    @property
    def out_csr(self) -> Compressed:
        """Edges grouped by source: ``indptr[num_src+1]``, destination ids, edge ids."""
        return self._cached("csr", lambda: _compress(self.src, self.dst, self.num_src), "csr")

    @property
    def in_degree_stats(self) -> DegreeStats:
        return self._cached("in_deg", lambda: _degree_stats(self._degrees(self.dst, self.num_dst)))

    @property
    def out_degree_stats(self) -> DegreeStats:
        return self._cached("out_deg", lambda: _degree_stats(self._degrees(self.src, self.num_src)))

    @property
    def in_degrees(self) -> torch.Tensor:
        return self.in_degree_stats.degrees

    @property
    def out_degrees(self) -> torch.Tensor:
        return self.out_degree_stats.degrees

    def _degrees(self, ids: torch.Tensor, n: int) -> torch.Tensor:
        if ids.numel() == 0:
            return torch.zeros(n, dtype=torch.int64, device=ids.device)
        return torch.bincount(ids.to(torch.int64), minlength=n)

    @property
    def sorted_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(keys, eids)``: ``src * num_dst + dst`` sorted (stable), for edge look-ups by pair."""
        def build():
            keys = self.src.to(torch.int64) * max(self.num_dst, 1) + self.dst.to(torch.int64)
            order = torch.argsort(keys, stable=True)
            return keys[order], order
        return self._cached("pairs", build)

    def created_formats(self) -> list[str]:
        names = {"csc": "csc", "csr": "csr"}
        return ["coo"] + [f for f in ("csr", "csc") if names[f] in self._cache]

    # -- conversions (each returns a new relation) -------------------------------------------
    def to(self, device: torch.device | str) -> "Relation":
        device = torch.device(device)
        if device == self.device:
            return self
        rel = Relation(self.src.to(device), self.dst.to(device), self.num_src, self.num_dst, self.allowed)
        for key, value in self._cache.items():
            if isinstance(value, Compressed):
                rel._cache[key] = value.to(device)
        return rel

    def astype(self, idtype: torch.dtype) -> "Relation":
        if idtype == self.idtype:
            return self
        if idtype == torch.int32 and max(self.num_src, self.num_dst, self.num_edges) >= 2**31:
            raise GraphError("graph too large for int32 ids")
        rel = Relation(self.src.to(idtype), self.dst.to(idtype), self.num_src, self.num_dst, self.allowed)
        rel._cache = {k: v for k, v in self._cache.items() if isinstance(v, Compressed)}
        return rel

    def with_formats(self, allowed: Iterable[str]) -> "Relation":
        rel = Relation(self.src, self.dst, self.num_src, self.num_dst, allowed)
        rel._cache = {k: v for k, v in self._cache.items()
                      if (k not in ("csr", "csc") or k in rel.allowed) and not isinstance(v, Relation)}
        return rel

    def reversed(self) -> "Relation":
        rel = Relation(self.dst, self.src, self.num_dst, self.num_src, self.allowed)
        swap = {"csc": "csr", "csr": "csc"}
        rel._cache = {swap[k]: v for k, v in self._cache.items() if k in swap}
        return rel
