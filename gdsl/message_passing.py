"""DGL's message-passing semantics on top of an executor's two primitives.

Executors (``gdsl.backend``) compute per-edge maps and per-destination gather-reduces; this
module decides *which* edges and nodes take part, applies ``apply_node_func``, and writes the
results back so that nodes outside the active set keep their old values (or zeros for a new
field), exactly as DGL does.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import torch

from . import reference  # noqa: F401  (registers the reference back end)
from .backend import get_executor
from .base import ALL, as_id_tensor, check_range, is_all
from .dsl import options_of
from .errors import GraphError
from .reference import check_outputs
from .udf import NodeBatch


def _edge_ids(graph, etype, edges: Any) -> torch.Tensor | None:
    """``edges`` as int64 edge ids: ALL -> None, ``(u, v)`` -> the ids of those pairs."""
    if is_all(edges):
        return None
    rel = graph._relations[etype]
    if isinstance(edges, tuple):
        if len(edges) != 2:
            raise GraphError("edges given as a tuple must be a (u, v) pair of node ids")
        eids = graph.edge_ids(edges[0], edges[1], etype=etype)
        return as_id_tensor(eids, "edges", device=rel.device).to(torch.int64)
    eids = as_id_tensor(edges, "edges", device=rel.device)
    check_range(eids, rel.num_edges, "edge id")
    return eids.to(torch.int64)


def _node_ids(graph, nodes: Any, upper: int, what: str) -> torch.Tensor:
    ids = as_id_tensor(nodes, what, device=graph.device)
    check_range(ids, upper, what)
    return ids.to(torch.int64)


def apply_nodes(graph, func: Callable, v: Any = ALL, ntype: str | None = None) -> None:
    frame = graph._node_frame(ntype)
    if is_all(v):
        nodes = None
        ids = torch.arange(frame.num_rows, device=graph.device, dtype=graph.idtype)
    else:
        nodes = _node_ids(graph, v, frame.num_rows, "apply_nodes")
        ids = nodes.to(graph.idtype)
    out = func(NodeBatch(ids, frame.lazy_rows(nodes)))
    frame.update_rows(nodes, check_outputs(func, out, ids.numel(), "apply_nodes"))


def apply_edges(graph, func: Callable, edges: Any = ALL, etype=None) -> None:
    key = graph._etype(etype)
    eids = _edge_ids(graph, key, edges)
    out = get_executor(graph.device, options_of(func)[0]).edge_map(graph, key, func, eids)
    graph._edge_frames[key].update_rows(eids, out)


def send_and_recv(graph, edges: Any, message_func: Callable, reduce_func: Callable,
                  apply_node_func: Callable | None = None, etype=None) -> None:
    """Send along ``edges`` (ALL for update_all) and update the destinations that received."""
    key = graph._etype(etype)
    eids = _edge_ids(graph, key, edges)
    if eids is None:
        _reduce_and_store(graph, key, None, message_func, reduce_func, apply_node_func, None)
        return
    if eids.numel() == 0:
        return
    eids = torch.sort(eids).values  # mailbox order is edge-id order
    active = torch.unique(graph._relations[key].dst[eids].to(torch.int64))
    _reduce_and_store(graph, key, eids, message_func, reduce_func, apply_node_func, active)


def pull(graph, v: Any, message_func: Callable, reduce_func: Callable,
         apply_node_func: Callable | None = None, etype=None) -> None:
    """Every node in ``v`` gathers from all its in-edges (0 when it has none)."""
    from .graph import _row_entries
    key = graph._etype(etype)
    rel = graph._relations[key]
    nodes = torch.unique(_node_ids(graph, v, rel.num_dst, "pull"))
    if nodes.numel() == 0:
        return
    eids = torch.sort(_row_entries(rel.in_csr, nodes)).values
    _reduce_and_store(graph, key, eids, message_func, reduce_func, apply_node_func, nodes)


def _reduce_and_store(graph, key, eids, message_func, reduce_func, apply_node_func, active) -> None:
    executor = get_executor(graph.device, options_of(message_func, reduce_func)[0])
    out = executor.gather_reduce(graph, key, message_func, reduce_func, eids)
    if active is not None:
        out = {k: v[active] for k, v in out.items()}
    dst_frame = graph._dst_frames[key[2]]
    if apply_node_func is not None:
        data = _MergedRows(out, dst_frame.lazy_rows(active))
        num = dst_frame.num_rows if active is None else active.numel()
        ids = (torch.arange(num, device=graph.device) if active is None else active).to(graph.idtype)
        out = check_outputs(apply_node_func, apply_node_func(NodeBatch(ids, data)), num, "apply_node")
    dst_frame.update_rows(active, out)


class _MergedRows(Mapping):
    """``nodes.data`` for apply_node_func: the fresh results, then the old node features."""

    def __init__(self, fresh: dict, old: Mapping):
        self._fresh, self._old = fresh, old

    def __getitem__(self, key):
        return self._fresh[key] if key in self._fresh else self._old[key]

    def __iter__(self):
        return iter({**dict.fromkeys(self._fresh), **dict.fromkeys(self._old)})

    def __len__(self):
        return len(list(iter(self)))

    def __contains__(self, key):
        return key in self._fresh or key in self._old
