"""Which launch configuration a kernel gets on each back end, and why.

``gdsl.inspect`` states the schedule each kernel runs with; :mod:`gdsl.scheduling` chooses it
(``"heuristic"``: from the graph signature, :mod:`gdsl.heuristics`; ``"autotuned"``: a stored
autotuning result for this kernel and graph signature). ``"default"`` is the schedule gdsl used
before it had either (``NumbaSchedule()`` / ``TritonConfig()``), reported when no graph is known.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

REASONS = ("default", "heuristic", "autotuned", "forced")


@dataclass(frozen=True)
class ScheduleInfo:
    """The schedule of one kernel on one back end: its knobs, and why they were chosen."""

    backend: str                  # "numba" | "triton"
    reason: str                   # one of REASONS
    why: str                      # prose: where the values come from
    config: dict[str, Any] = field(default_factory=dict)  # knob -> value, as launched
    schedule: Any = None          # the NumbaSchedule / TritonConfig itself

    def describe(self) -> str:
        knobs = ", ".join(f"{k}={v}" for k, v in self.config.items())
        return f"{self.backend} ({self.reason}): {knobs}\n    {self.why}"


_NUMBA_SHAPE = ("prange over contiguous row ranges of about equal edges + rows; each walks its rows one "
                "at a time and each row's edges in edge-id order, the feature loop innermost and "
                "contiguous")


def numba_schedule(num_rows: int, schedule=None, reason: str = "default", why: str | None = None
                   ) -> ScheduleInfo:
    """numba's schedule ``schedule`` (default ``NumbaSchedule()``) on ``num_rows`` rows."""
    import numba

    from .kernels.schedules import NumbaSchedule

    schedule = schedule if schedule is not None else NumbaSchedule()
    threads = numba.get_num_threads()
    parts = max(1, min(int(num_rows), threads * schedule.parts_per_thread))
    config = {"threads": threads, "parts_per_thread": schedule.parts_per_thread, "parts": parts,
              "prefetch_distance": schedule.prefetch_distance, "prefetch_lines": schedule.prefetch_lines,
              "hub_threshold": schedule.hub_threshold}
    if schedule.hub:
        config["hub_chunk"] = schedule.hub_chunk
    if why is None:
        why = (f"the default NumbaSchedule(): {schedule.parts_per_thread} parts per thread x {threads} threads "
               f"(fewer when there are fewer rows); rows of the entry {schedule.prefetch_distance} places ahead "
               f"prefetched (at most {schedule.prefetch_lines} cache lines per row); no hub splitting")
    return ScheduleInfo("numba", reason, f"{why}. Shape: {_NUMBA_SHAPE}.", config, schedule)


def triton_schedule(source, num_rows: int, num_edges: int, config=None, reason: str = "default",
                    why: str | None = None) -> ScheduleInfo:
    """The launch of a generated Triton kernel (``TritonSource``) under ``config`` (default
    ``TritonConfig()``) on a CSR of ``num_rows`` rows and ``num_edges`` entries, as
    ``gdsl.kernels.triton_runtime`` would launch it."""
    from .kernels.schedules import TritonConfig

    config = config if config is not None else TritonConfig()
    launch = source.schedule(config, num_rows, num_edges)
    knobs: dict[str, Any] = dict(launch.constexprs)
    knobs["grid"] = launch.grid(num_rows)
    knobs["num_warps"] = launch.num_warps
    knobs["num_stages"] = launch.num_stages if launch.num_stages is not None else "triton default"
    knobs["hub_threshold"] = config.hub_threshold
    if config.hub:
        knobs["hub_chunk"] = config.hub_chunk
    if why is None:
        why = "the default TritonConfig(" + ", ".join(
            f"{f.name}={getattr(config, f.name)}" for f in dataclasses.fields(config)) + ")"
    rules = ("ROWS = rows_per_program CSR rows per program; each feature tile BF_* = the next power of two "
             "of the output width, at most block_f (wider outputs use more programs on grid axis 1); "
             "BLOCK_E = block_e, or 16..64 from the tile width and the average degree when unset, capped "
             "so a tile has at most max_tile elements; inner reductions RB_* = min(next power of two of "
             "the extent, block_k)")
    return ScheduleInfo("triton", reason, f"{why}. Launch rules: {rules}.", knobs, config)
