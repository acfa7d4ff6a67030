"""``edge_softmax``: softmax of per-edge logits over the edges each node receives (or sends).

It is two compiled steps, each a DSL program like any user's: a gather-reduce computing every
node's log-sum-exp of its edges' logits (an online-softmax reduction: one pass, running max and
running denominator), then an edge map ``exp(logit - lse[dst])``. The backward is the softmax's
own: ``dx = y * (dy - sum over the node's edges of dy * y)``, again two compiled steps (a
gather-reduce, an edge map) reading the saved output; differentiating the two forward programs
instead would recompute the exps and leave two partial gradients for autograd to add (E x H each).
Attention written as one message/reduce pair (``torch.softmax`` over the mailbox times the
messages, summed) does not need this: it compiles to a single fused kernel.
"""
from __future__ import annotations

from typing import Any

import torch

from .backend import get_executor
from .base import ALL, as_id_tensor, check_range, is_all
from .errors import FeatureError, GraphError
from .frame import Frame
from .relation import Relation

_LOGITS, _LSE, _OUT = "_gdsl_logits", "_gdsl_lse", "_gdsl_softmax"
_GRAD, _DOT = "_gdsl_grad", "_gdsl_dot"


def _message(edges):
    return {_LOGITS: edges.data[_LOGITS]}


def _log_sum_exp(nodes):
    return {_LSE: torch.logsumexp(nodes.mailbox[_LOGITS], 1)}


def _normalise(edges):
    return {_OUT: torch.exp(edges.data[_LOGITS] - edges.dst[_LSE])}


def _grad_times_output(edges):
    return {_DOT: edges.data[_GRAD] * edges.data[_OUT]}


def _sum_dot(nodes):
    return {_DOT: nodes.mailbox[_DOT].sum(1)}


def _softmax_grad(edges):
    return {_LOGITS: edges.data[_OUT] * (edges.data[_GRAD] - edges.dst[_DOT])}


def edge_softmax(graph, logits: torch.Tensor, eids: Any = ALL, norm_by: str = "dst") -> torch.Tensor:
    """Softmax of ``logits`` over the incoming edges of every destination node (``norm_by='dst'``)
    or over the outgoing edges of every source node (``norm_by='src'``), as DGL's ``edge_softmax``.

    ``logits`` has one row per edge (``(E,)``, ``(E, H)``, ``(E, H, 1)``, ...: each trailing
    element is normalised independently); with ``eids`` only those edges take part and ``logits``
    has one row per id, in that order. The result has the shape of ``logits``. It is max-subtracted
    (stable for large logits); a node with a single edge gives it weight 1; nodes without edges
    have nothing to normalise. Differentiable.
    """
    if norm_by not in ("dst", "src"):
        raise GraphError(f"edge_softmax: norm_by must be 'dst' or 'src', got {norm_by!r}")
    if len(graph._relations) != 1:
        raise GraphError("edge_softmax on a graph with several edge types is not supported; "
                         "take the relation graph first (g[etype])")
    (etype, rel), = graph._relations.items()
    if not isinstance(logits, torch.Tensor):
        raise FeatureError(f"edge_softmax: logits must be a tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise FeatureError(f"edge_softmax: logits must be floating point, got {logits.dtype}")
    if logits.device != rel.device:
        from .errors import DeviceError
        raise DeviceError(f"edge_softmax: logits are on {logits.device}, the graph on {rel.device}")
    if not is_all(eids):
        ids = as_id_tensor(eids, "eids", device=rel.device)
        check_range(ids, rel.num_edges, "edge id")
        ids = ids.to(torch.int64)
        rel = Relation(rel.src[ids], rel.dst[ids], rel.num_src, rel.num_dst)
    if logits.dim() == 0 or logits.shape[0] != rel.num_edges:
        raise FeatureError(f"edge_softmax: logits have {logits.shape[0] if logits.dim() else 0} rows for "
                           f"{rel.num_edges} edges")
    if norm_by == "src":  # the reversed relation is kept with the graph's, its CSR and degrees too
        rel = rel._cached("reversed", rel.reversed)
    return _EdgeSoftmax.apply(rel, logits)


class _EdgeSoftmax(torch.autograd.Function):
    """Softmax over each destination's in-edges, with the softmax's backward (module docstring).
    The backward runs differentiable steps, so double backward works."""

    @staticmethod
    def forward(ctx, rel: Relation, logits: torch.Tensor) -> torch.Tensor:
        out = _normalised(rel, logits)
        ctx.rel = rel
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        out, = ctx.saved_tensors
        return None, _softmax_backward(ctx.rel, out, grad)


def _view(rel: Relation, edge_data: dict[str, torch.Tensor]):
    """A one-relation block over ``rel`` with the given edge fields (and the node frames)."""
    from .graph import Graph

    key = ("_N", "_E", "_M")
    device = rel.device
    src = Frame(rel.num_src, device, "source node")
    dst = Frame(rel.num_dst, device, "destination node")
    edges = Frame(rel.num_edges, device, "edge", edge_data)
    return Graph({key: rel}, {"_N": src}, {"_M": dst}, {key: edges}, is_block=True), key, dst


def _normalised(rel: Relation, logits: torch.Tensor) -> torch.Tensor:
    view, key, dst = _view(rel, {_LOGITS: logits})
    executor = get_executor(rel.device, None)
    lse = executor.gather_reduce(view, key, _message, _log_sum_exp, None).get(_LSE)
    if lse is None:  # no edges at all (the reference executor then creates no field)
        lse = logits.new_zeros((rel.num_dst, *logits.shape[1:]))
    dst[_LSE] = lse
    return executor.edge_map(view, key, _normalise, None)[_OUT]


def _softmax_backward(rel: Relation, out: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``out * (grad - sum over each node's edges of grad * out)``."""
    view, key, dst = _view(rel, {_OUT: out, _GRAD: grad.contiguous()})
    executor = get_executor(rel.device, None)
    dot = executor.gather_reduce(view, key, _grad_times_output, _sum_dot, None).get(_DOT)
    if dot is None:  # no edges at all
        dot = out.new_zeros((rel.num_dst, *out.shape[1:]))
    dst[_DOT] = dot
    return executor.edge_map(view, key, _softmax_grad, None)[_LOGITS]
