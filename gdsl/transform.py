"""Graph transforms that return new graphs (DGL's ``dgl.reverse``, ``dgl.add_self_loop``, ...).

The input graph is never changed: each transform builds a new relation and new frames (feature
tensors are shared where they are copied unchanged, as in DGL).
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

from .base import EID, NID, as_id_tensor, check_range
from .errors import GraphError
from .frame import Frame
from .graph import Graph
from .kernels.scatter import scatter_reduce
from .relation import Relation


def _homogeneous(g: Graph, what: str) -> tuple:
    if not g.is_homogeneous:
        raise GraphError(f"{what} needs a graph with one node type and one edge type (not a block "
                         f"or a heterograph)")
    key = g.canonical_etypes[0]
    return key, g._relations[key]


def _build(g: Graph, key, src: torch.Tensor, dst: torch.Tensor, num_nodes: int,
           ndata: dict | None, edata: dict | None) -> Graph:
    rel = Relation(src.to(g.idtype), dst.to(g.idtype), num_nodes, num_nodes)
    nframe = Frame(num_nodes, g.device, "node", ndata or {})
    eframe = Frame(rel.num_edges, g.device, "edge", edata or {})
    frames = {key[0]: nframe}
    return Graph({key: rel}, frames, frames, {key: eframe}, is_block=False)


def _unique_pairs(src: torch.Tensor, dst: torch.Tensor, n: int):
    """Unique ``(src, dst)`` pairs sorted by (src, dst); ``inverse`` maps each input to its pair."""
    keys = src.to(torch.int64) * max(n, 1) + dst.to(torch.int64)
    uniq, inverse, counts = torch.unique(keys, sorted=True, return_inverse=True, return_counts=True)
    return uniq // max(n, 1), uniq % max(n, 1), inverse, counts


def reverse(g: Graph, copy_ndata: bool = True, copy_edata: bool = False, **_: Any) -> Graph:
    """Every edge ``u -> v`` becomes ``v -> u`` with the same edge id."""
    reversed_rel = {(d, e, s): r.reversed() for (s, e, d), r in g._relations.items()}
    copy = (lambda f: f.copy()) if copy_ndata else (lambda f: Frame(f.num_rows, f.device, f.kind))
    src_frames = {k: copy(f) for k, f in g._dst_frames.items()}
    dst_frames = {k: copy(f) for k, f in g._src_frames.items()} if g.is_block else src_frames
    ecopy = (lambda f: f.copy()) if copy_edata else (lambda f: Frame(f.num_rows, f.device, f.kind))
    edge_frames = {(d, e, s): ecopy(g._edge_frames[(s, e, d)]) for (s, e, d) in g._relations}
    return Graph(reversed_rel, src_frames, dst_frames, edge_frames, g.is_block)


def add_self_loop(g: Graph, edge_feat_names: Iterable[str] | None = None, fill_data: Any = 1.0,
                  etype=None) -> Graph:
    """Append one self-loop per node (after the existing edges, so old edge ids are unchanged).

    The new edges' features named in ``edge_feat_names`` (default: all) are ``fill_data``: a
    number, or ``'sum'|'mean'|'max'|'min'`` of the node's incoming edges' features; the other
    features are zero.
    """
    key, rel = _homogeneous(g, "add_self_loop")
    n = rel.num_src
    loops = torch.arange(n, device=g.device, dtype=g.idtype)
    names = set(g.edata.keys()) if edge_feat_names is None else set(edge_feat_names)
    edata = {}
    for name, value in g.edata.items():
        if name in names and isinstance(fill_data, str):
            if fill_data not in ("sum", "mean", "max", "min"):
                raise GraphError(f"add_self_loop: fill_data must be a number or one of "
                                 f"'sum', 'mean', 'max', 'min', got {fill_data!r}")
            extra = scatter_reduce(fill_data, value, rel.dst.to(torch.int64), n)
        elif name in names:
            extra = value.new_full((n, *value.shape[1:]), fill_data)
        else:
            extra = value.new_zeros((n, *value.shape[1:]))
        edata[name] = torch.cat([value, extra])
    return _build(g, key, torch.cat([rel.src, loops]), torch.cat([rel.dst, loops]), n,
                  dict(g.ndata), edata)


def remove_self_loop(g: Graph, etype=None) -> Graph:
    """Drop every edge ``v -> v``; remaining edges keep their order and features."""
    key, rel = _homogeneous(g, "remove_self_loop")
    keep = (rel.src != rel.dst).nonzero().flatten()
    return _build(g, key, rel.src[keep], rel.dst[keep], rel.num_src, dict(g.ndata),
                  {k: v[keep] for k, v in g.edata.items()})


def to_simple(g: Graph, return_counts: str | None = "count", writeback_mapping: bool = False,
              copy_ndata: bool = True, copy_edata: bool = False):
    """Merge parallel edges. Edges come out sorted by (src, dst); ``edata[return_counts]`` holds
    multiplicities; with ``copy_edata`` each merged edge takes the features of its smallest-id
    original. ``writeback_mapping`` also returns, per original edge, its new edge id."""
    key, rel = _homogeneous(g, "to_simple")
    n = rel.num_src
    src, dst, inverse, counts = _unique_pairs(rel.src, rel.dst, n)
    edata = {}
    if copy_edata:
        first = torch.full((src.numel(),), rel.num_edges, dtype=torch.int64, device=g.device)
        first = first.scatter_reduce(0, inverse, torch.arange(rel.num_edges, device=g.device), "amin")
        edata = {k: v[first] for k, v in g.edata.items()}
    if return_counts:
        edata[return_counts] = counts.to(g.idtype)
    out = _build(g, key, src, dst, n, dict(g.ndata) if copy_ndata else None, edata)
    return (out, inverse.to(g.idtype)) if writeback_mapping else out


def to_bidirected(g: Graph, copy_ndata: bool = False) -> Graph:
    """The simple graph with an edge ``u -> v`` exactly when ``g`` has ``u -> v`` or ``v -> u``."""
    key, rel = _homogeneous(g, "to_bidirected")
    src, dst, _, _ = _unique_pairs(torch.cat([rel.src, rel.dst]), torch.cat([rel.dst, rel.src]), rel.num_src)
    return _build(g, key, src, dst, rel.num_src, dict(g.ndata) if copy_ndata else None, None)


def _selection(ids: Any, upper: int, what: str, device) -> torch.Tensor:
    """Ids given as a bool mask or as integer ids, returned as int64 ids."""
    t = ids if isinstance(ids, torch.Tensor) else torch.as_tensor(ids)
    if t.dtype == torch.bool:
        if t.numel() != upper:
            raise GraphError(f"{what}: a boolean mask needs {upper} entries, got {t.numel()}")
        return t.to(device).nonzero().flatten()
    t = as_id_tensor(ids, what, device=device)
    check_range(t, upper, what)
    return t.to(torch.int64)


def node_subgraph(graph: Graph, nodes: Any, *, relabel_nodes: bool = True, store_ids: bool = True,
                  output_device=None) -> Graph:
    """The subgraph induced by ``nodes`` (ids or a bool mask): node ``i`` is ``nodes[i]``, the
    edges are those between kept nodes, in original edge-id order."""
    key, rel = _homogeneous(graph, "node_subgraph")
    keep_nodes = _selection(nodes, rel.num_src, "node_subgraph", graph.device)
    new_id = torch.full((rel.num_src,), -1, dtype=torch.int64, device=graph.device)
    new_id[keep_nodes] = torch.arange(keep_nodes.numel(), device=graph.device)
    src, dst = rel.src.to(torch.int64), rel.dst.to(torch.int64)
    keep_edges = ((new_id[src] >= 0) & (new_id[dst] >= 0)).nonzero().flatten()
    out = _subgraph(graph, key, keep_nodes, keep_edges, new_id, relabel_nodes, store_ids)
    return out.to(output_device) if output_device is not None else out


def edge_subgraph(graph: Graph, edges: Any, *, relabel_nodes: bool = True, store_ids: bool = True,
                  output_device=None, **_: Any) -> Graph:
    """The subgraph of ``edges`` (ids, in the given order, or a bool mask) and their end nodes,
    which keep their relative order (sorted by original id)."""
    key, rel = _homogeneous(graph, "edge_subgraph")
    keep_edges = _selection(edges, rel.num_edges, "edge_subgraph", graph.device)
    src, dst = rel.src.to(torch.int64), rel.dst.to(torch.int64)
    keep_nodes = torch.unique(torch.cat([src[keep_edges], dst[keep_edges]]))
    new_id = torch.full((rel.num_src,), -1, dtype=torch.int64, device=graph.device)
    new_id[keep_nodes] = torch.arange(keep_nodes.numel(), device=graph.device)
    out = _subgraph(graph, key, keep_nodes, keep_edges, new_id, relabel_nodes, store_ids)
    return out.to(output_device) if output_device is not None else out


def _subgraph(graph: Graph, key, keep_nodes, keep_edges, new_id, relabel_nodes, store_ids) -> Graph:
    rel = graph._relations[key]
    src, dst = rel.src.to(torch.int64)[keep_edges], rel.dst.to(torch.int64)[keep_edges]
    edata = {k: v[keep_edges] for k, v in graph.edata.items()}
    if store_ids:
        edata[EID] = keep_edges.to(graph.idtype)
    if not relabel_nodes:
        return _build(graph, key, src, dst, rel.num_src, dict(graph.ndata), edata)
    ndata = {k: v[keep_nodes] for k, v in graph.ndata.items()}
    if store_ids:
        ndata[NID] = keep_nodes.to(graph.idtype)
    return _build(graph, key, new_id[src], new_id[dst], keep_nodes.numel(), ndata, edata)
