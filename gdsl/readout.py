"""Whole-graph readouts (DGL's ``readout_nodes`` family): one row per graph of a batch.

A graph that is not a batch is one graph: the result has one row. Batched graphs (a future
``gdsl.batch``) expose ``batch_num_nodes`` / ``batch_num_edges``, and these functions reduce per
segment. Empty segments give 0, as in DGL.
"""
from __future__ import annotations

from typing import Any

import torch

from .errors import GdslError

OPS = ("sum", "mean", "max", "min")


def _segments(graph: Any, counts_name: str, total: int, key: Any) -> torch.Tensor:
    counts = getattr(graph, counts_name, None)
    if callable(counts):
        return counts(key).to(torch.int64)
    return torch.tensor([total], dtype=torch.int64)


def segment_reduce(counts: torch.Tensor, x: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce consecutive segments of ``x`` (``counts[i]`` rows each) with ``op``; 0 for empty ones."""
    if op not in OPS:
        raise GdslError(f"unknown readout op {op!r}: use one of {', '.join(OPS)}")
    counts = counts.to(x.device)
    if int(counts.sum()) != x.shape[0]:
        raise GdslError(f"the segments hold {int(counts.sum())} rows but the feature has {x.shape[0]}")
    batch = counts.numel()
    seg = torch.repeat_interleave(torch.arange(batch, device=x.device), counts)
    index = seg.view(-1, *([1] * (x.dim() - 1))).expand_as(x)
    out = x.new_zeros((batch, *x.shape[1:]))
    if op in ("sum", "mean"):
        out = out.index_add(0, seg, x)
        if op == "mean":
            out = out / counts.clamp(min=1).to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        return out
    return out.scatter_reduce(0, index, x, reduce="amax" if op == "max" else "amin", include_self=False)


def readout_nodes(graph: Any, feat: str, weight: str | None = None, op: str = "sum",
                  ntype: str | None = None) -> torch.Tensor:
    """Reduce node feature ``feat`` (times node feature ``weight`` if given) over each graph."""
    frame = graph.nodes[ntype].data if ntype is not None else graph.ndata
    x = frame[feat]
    if weight is not None:
        x = x * frame[weight]
    return segment_reduce(_segments(graph, "batch_num_nodes", x.shape[0], ntype), x, op)


def readout_edges(graph: Any, feat: str, weight: str | None = None, op: str = "sum",
                  etype: Any = None) -> torch.Tensor:
    """Reduce edge feature ``feat`` (times edge feature ``weight`` if given) over each graph."""
    frame = graph.edges[etype].data if etype is not None else graph.edata
    x = frame[feat]
    if weight is not None:
        x = x * frame[weight]
    return segment_reduce(_segments(graph, "batch_num_edges", x.shape[0], etype), x, op)


def sum_nodes(graph, feat, weight=None, ntype=None):
    return readout_nodes(graph, feat, weight, "sum", ntype)


def mean_nodes(graph, feat, weight=None, ntype=None):
    return readout_nodes(graph, feat, weight, "mean", ntype)


def max_nodes(graph, feat, weight=None, ntype=None):
    return readout_nodes(graph, feat, weight, "max", ntype)


def min_nodes(graph, feat, weight=None, ntype=None):
    return readout_nodes(graph, feat, weight, "min", ntype)


def sum_edges(graph, feat, weight=None, etype=None):
    return readout_edges(graph, feat, weight, "sum", etype)


def mean_edges(graph, feat, weight=None, etype=None):
    return readout_edges(graph, feat, weight, "mean", etype)


def max_edges(graph, feat, weight=None, etype=None):
    return readout_edges(graph, feat, weight, "max", etype)


def min_edges(graph, feat, weight=None, etype=None):
    return readout_edges(graph, feat, weight, "min", etype)


def broadcast_nodes(graph: Any, graph_feat: torch.Tensor, ntype: str | None = None) -> torch.Tensor:
    """Copy each graph's row of ``graph_feat`` (B, *) to its nodes."""
    counts = _segments(graph, "batch_num_nodes", graph.num_nodes(ntype), ntype).to(graph_feat.device)
    if graph_feat.shape[0] != counts.numel():
        raise GdslError(f"graph_feat has {graph_feat.shape[0]} rows for {counts.numel()} graphs")
    return torch.repeat_interleave(graph_feat, counts, dim=0)


def broadcast_edges(graph: Any, graph_feat: torch.Tensor, etype: Any = None) -> torch.Tensor:
    """Copy each graph's row of ``graph_feat`` (B, *) to its edges."""
    counts = _segments(graph, "batch_num_edges", graph.num_edges(etype), etype).to(graph_feat.device)
    if graph_feat.shape[0] != counts.numel():
        raise GdslError(f"graph_feat has {graph_feat.shape[0]} rows for {counts.numel()} graphs")
    return torch.repeat_interleave(graph_feat, counts, dim=0)


__all__ = ["readout_nodes", "readout_edges", "sum_nodes", "mean_nodes", "max_nodes", "min_nodes",
           "sum_edges", "mean_edges", "max_edges", "min_edges", "broadcast_nodes", "broadcast_edges",
           "segment_reduce"]
