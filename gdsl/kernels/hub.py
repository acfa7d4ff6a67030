"""Hub rows: splitting rows of very high degree across threads / programs, deterministically.

A row with more entries than a schedule's ``hub_threshold`` is cut into chunks of ``hub_chunk``
consecutive entries (fixed split points: they depend only on the row's degree and the schedule).
The main kernel skips hub rows; the *partial* kernel (generated next to it) walks one chunk per
task and writes the chunk's result to a row of its own of partial outputs; :func:`combine` then
reduces each hub row's partials **in chunk order** into the real outputs:

- ``sum``: partial sums added in chunk order (a fixed-shape reduction), ``mean``: that sum
  divided by the row's degree (the partial kernel leaves means as sums);
- ``max`` / ``min``: the extreme over chunks, the earliest chunk winning ties, with its winning
  edge id (entries are in edge-id order, so this is the smallest edge id, as without splitting);
- ``softmax_sum``: each chunk's normalised weighted sum ``o_t`` and log-sum-exp ``L_t`` merge as
  ``L = logsumexp_t L_t``, ``o = sum_t exp(L_t - L) o_t``; ``logsumexp``: ``L`` alone.

Per-edge outputs need no combining: every entry belongs to exactly one chunk. Everything here is
torch, so one implementation serves the numba (CPU) and Triton (GPU) runtimes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch


@dataclass(frozen=True)
class HubTasks:
    """The chunks of the hub rows of one CSR under one schedule.

    ``rows``: the hub rows; ``task_row`` / ``task_start`` / ``task_end``: per task (chunk), its row
    and entry range, tasks of a row consecutive and in entry order; ``task_ptr[k]:task_ptr[k+1]``:
    the tasks of hub row ``k``; ``degrees``: the hub rows' degrees."""

    rows: torch.Tensor
    task_row: torch.Tensor
    task_start: torch.Tensor
    task_end: torch.Tensor
    task_ptr: torch.Tensor
    degrees: torch.Tensor

    @property
    def num_tasks(self) -> int:
        return int(self.task_row.shape[0])

    @property
    def num_hubs(self) -> int:
        return int(self.rows.shape[0])


def hub_tasks(indptr: torch.Tensor, threshold: int, chunk: int) -> HubTasks | None:
    """The chunks of the rows of ``indptr`` with more than ``threshold`` entries (None if none)."""
    indptr = indptr.to(torch.int64)
    degrees = indptr[1:] - indptr[:-1]
    rows = torch.nonzero(degrees > threshold).flatten()
    if rows.numel() == 0:
        return None
    deg = degrees[rows]
    counts = (deg + chunk - 1) // chunk
    task_ptr = torch.zeros(rows.numel() + 1, dtype=torch.int64, device=indptr.device)
    torch.cumsum(counts, 0, out=task_ptr[1:])
    total = int(task_ptr[-1])
    owner = torch.repeat_interleave(torch.arange(rows.numel(), device=indptr.device), counts,
                                    output_size=total)
    within = torch.arange(total, device=indptr.device) - task_ptr[owner]
    start = indptr[rows][owner] + within * chunk
    end = torch.minimum(start + chunk, indptr[rows + 1][owner])
    return HubTasks(rows, rows[owner], start, end, task_ptr, deg)


def _identity(dtype: torch.dtype, kind: str) -> Any:
    if kind == "sum":
        return 0
    if dtype.is_floating_point:
        return -torch.inf if kind == "max" else torch.inf
    info = torch.iinfo(dtype)
    return info.min if kind == "max" else info.max


def _padded(partial: torch.Tensor, tasks: HubTasks, fill: Any) -> torch.Tensor:
    """``(hubs, max chunks, *features)``: each hub row's partials in chunk order, ``fill`` after."""
    counts = tasks.task_ptr[1:] - tasks.task_ptr[:-1]
    width = int(counts.max())
    slot = torch.arange(width, device=partial.device)
    index = tasks.task_ptr[:-1, None] + slot[None, :]
    valid = slot[None, :] < counts[:, None]
    gathered = partial[index.clamp(max=tasks.num_tasks - 1)]
    mask = valid.view(valid.shape + (1,) * (partial.dim() - 1))
    return torch.where(mask, gathered, torch.full((), fill, dtype=partial.dtype, device=partial.device)), mask


def combine(specs: Sequence[Any], partials: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor],
            tasks: HubTasks) -> None:
    """Write each hub row's combined result into ``outputs`` (in place).

    ``specs``: the kernel's output specs (``name``, ``space``, ``reducer``, ``shape``); ``partials``
    and ``outputs`` map names to ``(tasks or rows, flat size)`` tensors. Per-edge outputs are
    skipped (the partial kernel wrote them in place)."""
    by_name = {spec.name: spec for spec in specs}
    rows = tasks.rows
    for spec in specs:
        if spec.space == "edge" or spec.name.endswith("@arg") or spec.name.endswith("@lse"):
            continue
        reducer = spec.reducer
        part = partials[spec.name]
        out = outputs[spec.name]
        if reducer in ("sum", "mean"):
            work = part if part.dtype != torch.bool else part.to(torch.int64)
            padded, _ = _padded(work, tasks, 0)
            total = padded.sum(1)
            if reducer == "mean":
                total = total / tasks.degrees.to(total.dtype)[:, None] if total.is_floating_point() \
                    else total // tasks.degrees[:, None]
            out[rows] = total.to(out.dtype)
        elif reducer in ("max", "min"):
            arg_spec = by_name[spec.name + "@arg"]
            work = part if part.dtype != torch.bool else part.to(torch.int64)
            padded, _ = _padded(work, tasks, _identity(work.dtype, reducer))
            args, _ = _padded(partials[arg_spec.name], tasks, -1)
            best = padded.amax(1) if reducer == "max" else padded.amin(1)
            # the earliest chunk attaining the extreme (argmax returns the first maximal index)
            first = (padded == best[:, None]).to(torch.int8).argmax(1)
            out[rows] = best.to(out.dtype)
            outputs[arg_spec.name][rows] = torch.gather(args, 1, first[:, None]).squeeze(1)
        elif reducer == "softmax_sum":
            lse_spec = by_name[spec.name + "@lse"]
            _softmax_combine(part, partials[lse_spec.name], spec.shape, lse_spec.shape, tasks,
                             out, outputs[lse_spec.name])
        elif reducer == "logsumexp":
            _softmax_combine(None, part, None, spec.shape, tasks, None, out)
        else:  # pragma: no cover - the generators only emit the reducers above
            raise ValueError(f"no hub combine for reducer {reducer!r}")


def _softmax_combine(part_out, part_lse, out_shape, lse_shape, tasks: HubTasks, out, lse_out) -> None:
    lse_p, _ = _padded(part_lse, tasks, -torch.inf)          # (hubs, chunks, x size)
    total = torch.logsumexp(lse_p, dim=1)                     # (hubs, x size)
    empty = total == -torch.inf                               # every logit -inf: as unsplit, -inf / NaN
    lse_out[tasks.rows] = total.to(lse_out.dtype)
    if part_out is None:
        return
    weight = torch.exp(lse_p - torch.where(empty, 0.0, total)[:, None])   # (hubs, chunks, x size)
    out_p, mask = _padded(part_out, tasks, 0)                 # (hubs, chunks, out size)
    hubs, chunks = out_p.shape[:2]
    x_shape = tuple(lse_shape)
    pad = (1,) * (len(out_shape) - len(x_shape)) + x_shape
    w = weight.reshape((hubs, chunks) + pad)
    o = out_p.reshape((hubs, chunks) + tuple(out_shape))
    # chunks whose logits are all -inf weigh 0 (their partial output is NaN: 0 / 0)
    term = torch.where(w > 0, w * o, torch.zeros((), dtype=o.dtype, device=o.device))
    combined = term.sum(1)
    nan = torch.full((), torch.nan, dtype=o.dtype, device=o.device)
    combined = torch.where(empty.reshape((hubs,) + pad), nan, combined)
    out[tasks.rows] = combined.reshape(hubs, -1).to(out.dtype)
