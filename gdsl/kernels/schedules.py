"""Schedule objects: the knobs of one kernel launch on each back end.

The code generators and runtimes take these explicitly (no module constants), the heuristic
(:mod:`gdsl.heuristics`) and the autotuner (:mod:`gdsl.autotune`) produce them, and the tuning
store (:mod:`gdsl.kernels.tuning_store`) persists them as JSON (``to_dict`` / ``from_dict``).
The defaults, ``NumbaSchedule()`` and ``TritonConfig()``, are the schedules gdsl ran before it had
a heuristic; every knob only changes how work is split, never what is computed (up to the order
of floating-point additions where a row's edges are split).

Part of a schedule changes the generated source (numba's prefetch distance, the hub variant of
either back end): :meth:`codegen_key` names that part, and is part of the compiled-kernel key.
The rest is chosen at launch.

**Hub rows.** With ``hub_threshold`` set, rows with more than ``hub_threshold`` entries are not
walked by one thread / program: the main kernel skips them, a second generated kernel (the
*partial* kernel) walks fixed chunks of ``hub_chunk`` entries of each hub row in parallel, each
writing a partial result of its own, and :mod:`gdsl.kernels.hub` combines the partials of each
row in chunk order (sums added, max/min compared strictly so the earliest chunk wins ties,
softmax statistics merged by log-sum-exp). The split points depend only on the degrees and the
schedule, so results are deterministic.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

HUB_OFF = 2**62  # the threshold a hub-capable kernel gets when no row is split


def _check_hub(owner: str, threshold: int | None, chunk: int) -> None:
    if threshold is not None and threshold < 1:
        raise ValueError(f"{owner}.hub_threshold must be positive or None, got {threshold}")
    if chunk < 1:
        raise ValueError(f"{owner}.hub_chunk must be positive, got {chunk}")


@dataclass(frozen=True)
class NumbaSchedule:
    """How a generated numba kernel splits its work.

    - ``parts_per_thread``: the rows are cut into ``threads x parts_per_thread`` contiguous ranges
      of about equal work (edges + rows, :func:`gdsl.kernels.numba_runtime.row_splits`); the
      kernel's ``prange`` runs over the ranges. More parts balance better, fewer cost less.
    - ``prefetch_distance``: gather kernels prefetch the rows the entry that many places ahead
      reads (0 disables); ``prefetch_lines``: at most that many cache lines per row. Both change
      the generated source.
    - ``hub_threshold`` / ``hub_chunk``: split rows with more entries than the threshold into
      chunks of ``hub_chunk`` entries, processed in parallel and combined in order (see the
      module docstring); ``None`` generates the plain kernel.
    - ``edge_order``: 1 makes an edge map walk the edges in id order, in ``threads x
      parts_per_thread`` equal ranges, instead of by rows: its per-edge rows are then read and
      written in sequence and the endpoints' rows at random (0: by rows). Gather-reduce kernels
      ignore it. Changes the generated source; excludes hub rows (an edge walk has no rows).
    - ``softmax_chunk``: softmax reductions walk a row's edges this many at a time (logits of the
      chunk, one rescale, the chunk's exps as vector code, then the weighted values); 0 updates
      the running max and sums edge by edge (two scalar exps per edge). Changes the source.
    - ``accumulators``: kernels whose row reductions are all sums (or means) keep this many sets
      of a row's sums, entries alternating between them and added at the row's end, so that
      consecutive entries' adds do not form one dependent chain (1: one set, entries summed in
      order). Changes the source and the order of the additions.
    """

    parts_per_thread: int = 8
    prefetch_distance: int = 8
    prefetch_lines: int = 8
    hub_threshold: int | None = None
    hub_chunk: int = 4096
    edge_order: int = 0
    softmax_chunk: int = 32
    accumulators: int = 2

    backend = "numba"

    def __post_init__(self) -> None:
        if self.parts_per_thread < 1:
            raise ValueError(f"NumbaSchedule.parts_per_thread must be positive, got {self.parts_per_thread}")
        if self.prefetch_distance < 0 or self.prefetch_lines < 1:
            raise ValueError("NumbaSchedule: prefetch_distance must be >= 0 and prefetch_lines >= 1")
        _check_hub("NumbaSchedule", self.hub_threshold, self.hub_chunk)
        if self.softmax_chunk < 0:
            raise ValueError(f"NumbaSchedule.softmax_chunk must be >= 0, got {self.softmax_chunk}")
        if not 1 <= self.accumulators <= 8:
            raise ValueError(f"NumbaSchedule.accumulators must be in 1..8, got {self.accumulators}")
        if self.edge_order not in (0, 1):
            raise ValueError(f"NumbaSchedule.edge_order must be 0 or 1, got {self.edge_order}")
        if self.edge_order and self.hub_threshold is not None:
            raise ValueError("NumbaSchedule: edge_order=1 walks edges, not rows: hub_threshold must be None")

    @property
    def hub(self) -> bool:
        return self.hub_threshold is not None

    def codegen_key(self) -> tuple:
        """What of this schedule the generated source depends on."""
        return (self.prefetch_distance, self.prefetch_lines if self.prefetch_distance else 0, self.hub,
                self.edge_order, self.softmax_chunk, self.accumulators)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NumbaSchedule":
        return _from_dict(cls, data)

    def describe(self) -> str:
        return _describe(self)


@dataclass(frozen=True)
class TritonConfig:
    """Schedule knobs of a generated Triton kernel. Block sizes are powers of two.

    - ``block_e``: entries (edges) per block of a row; ``None`` picks 16..64 from the average
      degree (when known at launch) and the tile width;
    - ``block_f``: the widest feature tile of one program; wider outputs use more programs
      (grid axis 1), each walking the row's edges for its slice of the features;
    - ``block_k``: the widest vectorised inner reduction (feature sums, ``matmul``'s K); longer
      ones loop over chunks of this size;
    - ``rows_per_program``: CSR rows handled by one program, one after the other;
    - ``num_warps`` / ``num_stages``: passed to the launch;
    - ``max_tile``: a cap on the elements of one ``[BLOCK_E, BF, RB]`` tile (register pressure);
    - ``hub_threshold`` / ``hub_chunk``: split rows with more entries than the threshold across
      programs of ``hub_chunk`` entries each, combined in order (see the module docstring);
      ``None`` generates the plain kernel.
    """

    block_e: int | None = None
    block_f: int = 128
    block_k: int = 16
    rows_per_program: int = 1
    num_warps: int = 4
    num_stages: int | None = None
    max_tile: int = 8192
    hub_threshold: int | None = None
    hub_chunk: int = 1024

    backend = "triton"

    def __post_init__(self) -> None:
        for name in ("block_e", "block_f", "block_k"):
            value = getattr(self, name)
            if value is not None and (value < 1 or value & (value - 1)):
                raise ValueError(f"TritonConfig.{name} must be a power of two, got {value}")
        if self.rows_per_program < 1 or self.num_warps < 1 or self.max_tile < 1:
            raise ValueError("TritonConfig: rows_per_program, num_warps and max_tile must be positive")
        _check_hub("TritonConfig", self.hub_threshold, self.hub_chunk)

    @property
    def hub(self) -> bool:
        return self.hub_threshold is not None

    def codegen_key(self) -> tuple:
        """What of this schedule the generated source depends on (the rest are constexprs and
        launch options)."""
        return (self.hub,)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TritonConfig":
        return _from_dict(cls, data)

    def describe(self) -> str:
        return _describe(self)


SCHEDULES = {"numba": NumbaSchedule, "triton": TritonConfig}


def default_schedule(backend: str) -> NumbaSchedule | TritonConfig:
    """The schedule gdsl used before it had a heuristic (what ``NumbaSchedule()`` /
    ``TritonConfig()`` give)."""
    return SCHEDULES[backend]()


def schedule_from_dict(backend: str, data: dict[str, Any]) -> NumbaSchedule | TritonConfig:
    """A schedule from its JSON form; ``ValueError`` for unknown knobs or invalid values."""
    if backend not in SCHEDULES:
        raise ValueError(f"no schedules for back end {backend!r}")
    return SCHEDULES[backend].from_dict(data)


def _from_dict(cls, data: dict[str, Any]):
    if not isinstance(data, dict):
        raise ValueError(f"a {cls.__name__} is a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} knobs: {', '.join(sorted(unknown))}")
    for key, value in data.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"{cls.__name__}.{key} must be an integer or null, got {value!r}")
    return cls(**data)


def _describe(schedule) -> str:
    """The knobs that differ from the default, e.g. ``parts_per_thread=32, prefetch_distance=0``."""
    default = type(schedule)()
    diff = [f"{f.name}={getattr(schedule, f.name)}" for f in dataclasses.fields(schedule)
            if getattr(schedule, f.name) != getattr(default, f.name)]
    return ", ".join(diff) or "default"
