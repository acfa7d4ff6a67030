"""Which launch configuration a kernel gets on each back end, and why.

Why a module of its own: ``gdsl.inspect`` states the schedule each kernel runs with, and the
autotuner of issue 5 will choose schedules; both speak :class:`ScheduleInfo`. Today every kernel
runs with its back end's default schedule (``reason="default"``); a heuristic or a tuned choice
will report ``"heuristic"`` or ``"autotuned"`` here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

REASONS = ("default", "heuristic", "autotuned")


@dataclass(frozen=True)
class ScheduleInfo:
    """The schedule of one kernel on one back end: its knobs, and why they were chosen."""

    backend: str                  # "numba" | "triton"
    reason: str                   # one of REASONS
    why: str                      # prose: where the values come from
    config: dict[str, Any] = field(default_factory=dict)  # knob -> value, as launched

    def describe(self) -> str:
        knobs = ", ".join(f"{k}={v}" for k, v in self.config.items())
        return f"{self.backend} ({self.reason}): {knobs}\n    {self.why}"


def numba_schedule(num_rows: int) -> ScheduleInfo:
    """numba's fixed schedule (gdsl.kernels.numba_runtime, gdsl.compiler.codegen.numba)."""
    import numba

    from .compiler.codegen import numba as codegen
    from .kernels import numba_runtime

    threads = numba.get_num_threads()
    parts = max(1, min(int(num_rows), threads * numba_runtime.PARTS_PER_THREAD))
    config = {"threads": threads, "parts_per_thread": numba_runtime.PARTS_PER_THREAD,
              "parts": parts, "prefetch_distance": codegen.PREFETCH_DISTANCE,
              "prefetch_lines": codegen.PREFETCH_LINES}
    why = (f"the default: prange over contiguous row ranges of about equal edges + rows, "
           f"{numba_runtime.PARTS_PER_THREAD} per thread x {threads} threads (fewer when there are fewer "
           f"rows); each walks its rows one at a "
           f"time and each row's edges in edge-id order, the feature loop innermost and contiguous; the "
           f"rows of the entry {codegen.PREFETCH_DISTANCE} places ahead are prefetched (at most "
           f"{codegen.PREFETCH_LINES} cache lines per row). No tuning knobs yet.")
    return ScheduleInfo("numba", "default", why, config)


def triton_schedule(source, num_rows: int, num_edges: int) -> ScheduleInfo:
    """The launch of a generated Triton kernel (``TritonSource``) under the default
    ``TritonConfig()`` on a CSR of ``num_rows`` rows and ``num_edges`` entries, as
    ``gdsl.kernels.triton_runtime`` would launch it."""
    from .compiler.codegen.triton import TritonConfig

    default = TritonConfig()
    launch = source.schedule(None, num_rows, num_edges)
    config: dict[str, Any] = dict(launch.constexprs)
    config["grid"] = launch.grid(num_rows)
    config["num_warps"] = launch.num_warps
    config["num_stages"] = launch.num_stages if launch.num_stages is not None else "triton default"
    knobs = ", ".join(f"{f.name}={getattr(default, f.name)}" for f in dataclasses.fields(default))
    why = (f"the default TritonConfig({knobs}): ROWS = rows_per_program CSR rows per program; each "
           f"feature tile BF_* = the next power of two of the output width, at most block_f (wider "
           f"outputs use more programs on grid axis 1); BLOCK_E = 16..64 edges per block from the tile "
           f"width (4096 // widest tile), lowered towards the average degree (num_edges / num_rows, "
           f"rounded up to a power of two, at least 16), capped so a tile has at most max_tile elements; "
           f"inner reductions RB_* = min(next power of two of the extent, block_k). No heuristic or "
           f"autotuning yet.")
    return ScheduleInfo("triton", "default", why, config)
