"""Segment reductions in plain torch: the building blocks of the reference semantics.

``scatter_reduce`` reduces per-edge rows into per-node rows (0 where a node gets nothing);
``segment_softmax`` normalises per-edge logits over the edges of each node and
``segment_logsumexp`` gives each node's log-sum-exp of them. All are
differentiable with torch autograd and are used by the reference executor and the IR interpreter.
"""
from __future__ import annotations

import torch


def _expand_index(index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return index.reshape(-1, *([1] * (like.dim() - 1))).expand_as(like)


def scatter_reduce(op: str, msg: torch.Tensor, index: torch.Tensor, num_rows: int,
                   return_arg: bool = False):
    """Reduce the rows of ``msg`` into ``num_rows`` rows by ``index`` with sum, mean, max or min.

    Rows that receive nothing are 0. max/min send the gradient to a single winning row per
    (output row, feature): the first among equal values, i.e. the smallest position in ``msg``.
    With ``return_arg`` (max/min only) also return that position per (row, feature), -1 if none.
    """
    index = index.to(torch.int64)
    out_shape = (num_rows, *msg.shape[1:])
    full_index = _expand_index(index, msg)
    if op in ("sum", "mean"):
        total = msg.new_zeros(out_shape).scatter_add(0, full_index, msg)
        if op == "sum":
            return total
        count = torch.bincount(index, minlength=num_rows).clamp(min=1)
        return total / count.reshape(-1, *([1] * (msg.dim() - 1))).to(total.dtype)
    if op not in ("max", "min"):
        raise ValueError(f"unknown reducer {op!r}")
    if msg.shape[0] == 0:
        # Zeros that still belong to msg's autograd graph (as the sum path's do).
        empty = msg.new_zeros(out_shape) + msg.sum() * 0
        return (empty, torch.full(out_shape, -1, dtype=torch.int64, device=msg.device)) if return_arg else empty
    value = msg.detach()
    best = msg.new_full(out_shape, _extreme(msg.dtype, op)).scatter_reduce(
        0, full_index, value, "amax" if op == "max" else "amin")
    is_best = value == best.gather(0, full_index)
    num_edges = msg.shape[0]
    position = torch.arange(num_edges, device=msg.device).reshape(-1, *([1] * (msg.dim() - 1)))
    candidate = torch.where(is_best, position.expand_as(msg), num_edges)
    winner = torch.full(out_shape, num_edges, device=msg.device, dtype=torch.int64)
    winner = winner.scatter_reduce(0, full_index, candidate, "amin")
    picked = msg.gather(0, winner.clamp(max=num_edges - 1))
    result = torch.where(winner < num_edges, picked, torch.zeros_like(picked))
    if return_arg:
        return result, torch.where(winner < num_edges, winner, -1)
    return result


def segment_softmax(logits: torch.Tensor, index: torch.Tensor, num_rows: int) -> torch.Tensor:
    """Softmax of ``logits`` over the rows sharing an ``index`` value (max-subtracted)."""
    index = index.to(torch.int64)
    if logits.shape[0] == 0:
        return logits.clone()
    full_index = _expand_index(index, logits)
    row_max = logits.new_full((num_rows, *logits.shape[1:]), float("-inf")).scatter_reduce(
        0, full_index, logits.detach(), "amax")
    shifted = (logits - row_max.gather(0, full_index)).exp()
    denom = shifted.new_zeros((num_rows, *logits.shape[1:])).scatter_add(0, full_index, shifted)
    return shifted / denom.gather(0, full_index)


def segment_logsumexp(logits: torch.Tensor, index: torch.Tensor, num_rows: int) -> torch.Tensor:
    """``log(sum(exp(logits)))`` over the rows sharing an ``index`` value (max-subtracted); 0 for
    rows that receive nothing, as the compiled kernels write, -inf for rows whose logits are
    all -inf and NaN for rows with a NaN logit, as torch.logsumexp."""
    index = index.to(torch.int64)
    out_shape = (num_rows, *logits.shape[1:])
    if logits.shape[0] == 0:
        return logits.new_zeros(out_shape) + logits.sum() * 0
    full_index = _expand_index(index, logits)
    row_max = logits.new_full(out_shape, float("-inf")).scatter_reduce(
        0, full_index, logits.detach(), "amax")
    has = torch.isfinite(row_max)
    safe_max = torch.where(has, row_max, torch.zeros_like(row_max))
    shifted = (logits - safe_max.gather(0, full_index)).exp()
    total = shifted.new_zeros(out_shape).scatter_add(0, full_index, shifted)
    lse = safe_max + torch.where(total > 0, total, torch.ones_like(total)).log()
    # rows whose logits are all -inf get -inf (as torch.logsumexp), rows without edges 0, rows
    # with a NaN logit NaN
    has_edges = torch.bincount(index, minlength=num_rows) > 0
    has_edges = has_edges.reshape(-1, *([1] * (logits.dim() - 1)))
    empty = torch.where(has_edges, torch.full_like(lse, float("-inf")), torch.zeros_like(lse))
    return torch.where(total > 0, lse, torch.where(torch.isnan(total), total, empty))


def _extreme(dtype: torch.dtype, op: str):
    if dtype.is_floating_point:
        return float("-inf") if op == "max" else float("inf")
    info = torch.iinfo(dtype)
    return info.min if op == "max" else info.max
