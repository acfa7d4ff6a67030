"""The reference executor: message passing in plain torch (gather, scatter, degree bucketing).

It defines gdsl's semantics and is the oracle every compiled kernel is tested against, so it is
kept simple rather than fast. Built-in reducers use scatter operations; user reduce functions run
by degree bucketing (nodes of equal in-degree form one ``(nodes, degree, ...)`` mailbox).
Everything is differentiable with torch autograd.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch

from .backend import register_backend
from .errors import FeatureError, GdslError
from .function import ReduceFunction
from .kernels.scatter import scatter_reduce
from .udf import EdgeBatch, Mailbox, NodeBatch


def _func_name(func: Callable) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


def check_outputs(func: Callable, out, rows: int, kind: str) -> dict[str, torch.Tensor]:
    """A user function must return a dict of tensors with one row per edge / node of its batch."""
    if not isinstance(out, Mapping):
        raise GdslError(f"{kind} function {_func_name(func)} must return a dict of tensors, "
                        f"got {type(out).__name__}")
    for key, value in out.items():
        if not isinstance(value, torch.Tensor):
            raise FeatureError(f"{kind} function {_func_name(func)} returned {type(value).__name__} "
                               f"for {key!r}; expected a tensor")
        if value.dim() == 0 or value.shape[0] != rows:
            raise FeatureError(f"{kind} function {_func_name(func)} returned {key!r} with shape "
                               f"{tuple(value.shape)}; expected first dimension {rows}")
    return dict(out)


def edge_batch(graph, etype, eids: torch.Tensor | None) -> EdgeBatch:
    """The ``edges`` argument for the given edges (all when ``eids`` is None), gathered lazily."""
    rel = graph._relations[etype]
    if eids is None:
        eid = torch.arange(rel.num_edges, device=rel.device)
        src, dst = rel.src, rel.dst
    else:
        eid = eids
        src, dst = rel.src[eids], rel.dst[eids]
    src_frame = graph._src_frames[etype[0]]
    dst_frame = graph._dst_frames[etype[2]]
    edge_frame = graph._edge_frames[etype]
    return EdgeBatch(src, dst, eid.to(rel.idtype), src_frame.lazy_rows(src), dst_frame.lazy_rows(dst),
                     edge_frame.lazy_rows(eids))


class ReferenceExecutor:
    """Pure-torch back end; see the module docstring."""

    name = "reference"

    def edge_map(self, graph, etype, func: Callable, eids: torch.Tensor | None) -> dict[str, torch.Tensor]:
        batch = edge_batch(graph, etype, eids)
        return check_outputs(func, func(batch), batch.batch_size(), "edge")

    def gather_reduce(self, graph, etype, message_func: Callable, reduce_func: Callable,
                      eids: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Messages along ``eids`` (all edges when None; must be sorted), reduced per destination.

        Returns one row per destination node of the relation; rows with no message are zero.
        """
        rel = graph._relations[etype]
        messages = self.edge_map(graph, etype, message_func, eids)
        dst = (rel.dst if eids is None else rel.dst[eids]).to(torch.int64)
        if isinstance(reduce_func, ReduceFunction):
            if reduce_func.msg_field not in messages:
                raise FeatureError(f"{reduce_func!r} reduces message {reduce_func.msg_field!r} but the "
                                   f"message function produced {sorted(messages)}")
            reduced = scatter_reduce(reduce_func.name, messages[reduce_func.msg_field], dst, rel.num_dst)
            return {reduce_func.out_field: reduced}
        return bucket_reduce(graph, etype, reduce_func, messages, dst, rel.num_dst)


# ----------------------------------------------------------------------------------------------
# User reduce functions: degree bucketing
# ----------------------------------------------------------------------------------------------
def bucket_reduce(graph, etype, reduce_func: Callable, messages: dict[str, torch.Tensor],
                  dst: torch.Tensor, num_dst: int) -> dict[str, torch.Tensor]:
    """Call ``reduce_func`` once per in-degree value on the nodes of that degree.

    A node's messages are in batch order (increasing edge id). Nodes without messages are never
    passed to the function and get zeros.
    """
    device = dst.device
    degree = torch.bincount(dst, minlength=num_dst) if dst.numel() else \
        torch.zeros(num_dst, dtype=torch.int64, device=device)
    order = torch.argsort(dst, stable=True)
    indptr = torch.zeros(num_dst + 1, dtype=torch.int64, device=device)
    torch.cumsum(degree, 0, out=indptr[1:])
    dst_frame = graph._dst_frames[etype[2]]
    results: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []
    for d in torch.unique(degree[degree > 0]).tolist():
        nodes = (degree == d).nonzero().flatten()
        slots = indptr[nodes].unsqueeze(1) + torch.arange(d, device=device)  # (B, d)
        edge_pos = order[slots]
        mailbox = Mailbox({k: m[edge_pos] for k, m in messages.items()})
        batch = NodeBatch(nodes.to(graph.idtype), dst_frame.lazy_rows(nodes), mailbox)
        out = check_outputs(reduce_func, reduce_func(batch), nodes.numel(), "reduce")
        results.append((nodes, out))
    if not results:
        return {}
    keys = list(results[0][1])
    merged = {}
    all_nodes = torch.cat([nodes for nodes, _ in results])
    for key in keys:
        parts = []
        for nodes, out in results:
            if key not in out:
                raise FeatureError(f"reduce function {_func_name(reduce_func)} returned {key!r} for "
                                   f"some in-degrees but not others")
            parts.append(out[key])
        shapes = {tuple(p.shape[1:]) for p in parts}
        if len(shapes) != 1:
            raise FeatureError(f"reduce function {_func_name(reduce_func)} returned {key!r} with "
                               f"different feature shapes {sorted(shapes)} for different in-degrees")
        values = torch.cat(parts)
        merged[key] = values.new_zeros((num_dst, *values.shape[1:])).index_copy(0, all_nodes, values)
    return merged


register_backend("reference", ReferenceExecutor)
