"""Schedules without tuning: a heuristic from the graph signature, and the candidates to tune.

:func:`heuristic` is what a kernel runs with when nothing was tuned for its graph: a schedule
and one line saying why. :func:`candidates` lists the schedules the autotuner times (the default
and the heuristic always among them). Both read only the kernel's shape (its widest output) and
the :class:`~gdsl.kernels.signature.GraphSignature` of the graph it runs on.
"""
from __future__ import annotations

import dataclasses
import math

from .compiler.fusion import KernelPlan
from .kernels.schedules import NumbaSchedule, TritonConfig
from .kernels.signature import GraphSignature

# numba: a row with more entries than HUB_FACTOR x a part's fair share of the work (and at least
# HUB_MIN_DEGREE) is a hub: one thread walking it alone would finish long after the others.
HUB_FACTOR = 2
HUB_MIN_DEGREE = 4096
# Triton: a row with more than TRITON_HUB_FACTOR x the mean degree (and at least
# TRITON_HUB_MIN_DEGREE entries) keeps one program busy long after the others finished.
TRITON_HUB_FACTOR = 64
TRITON_HUB_MIN_DEGREE = 4096


def _pow2(n: float) -> int:
    n = int(math.ceil(n))
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def kernel_width(kernel: KernelPlan) -> int:
    """The widest flat feature size the kernel writes (per row or per edge)."""
    return max((math.prod(kernel.program.instrs[i].shape) for _, i in kernel.program.outputs), default=1)


def numba_threads() -> int:
    import numba
    return numba.get_num_threads()


def fair_share(sig: GraphSignature, rows: str, parts: int) -> float:
    """The work (entries + rows) of one of ``parts`` equal parts of a kernel over ``rows``."""
    return (sig.num_edges + sig.rows(rows)) / max(1, parts)


# ------------------------------------------------------------------------------------------------
# The heuristic
# ------------------------------------------------------------------------------------------------
def heuristic(backend: str, kernel: KernelPlan, sig: GraphSignature):
    """``(schedule, why)`` for ``kernel`` on a graph of signature ``sig``."""
    if backend == "numba":
        return numba_heuristic(kernel, sig)
    if backend == "triton":
        return triton_heuristic(kernel, sig)
    raise ValueError(f"no schedules for back end {backend!r}")


# numba: prefetch further ahead when each entry gathers at most this many bytes at random (the
# other endpoint's rows and edge rows by id): the work per entry is then too short to cover a
# memory latency 8 entries ahead. Kernels timed alternately in one process: u_mul_e+sum D=16
# 100k/1M 4.17 -> 3.44 ms with 16 entries, copy_u+sum D=16 200k/5M 8.1-9.9 -> 7.4-8.7 ms, D=64
# 100k/1M 7.2 -> 6.5 ms; u_mul_e+sum D=64 (260 bytes) is better at 8 (12.0 vs 12.9 ms).
LONG_PREFETCH_MAX_BYTES = 256
LONG_PREFETCH_DISTANCE = 16


# numba: no prefetch when a kernel gathers from one table at random and that table fits in this
# share of the last-level cache: its rows are then cache hits, and the prefetch's index load, branch
# and instruction per entry are pure cost (copy_u+sum D=16, 100k/1M, a 6.4 MB table: kernel 1.55 ->
# 1.36 ms without; at 200k/5M, 12.8 MB, prefetching still gains 8-12%). Reading several tables per
# entry, the misses to the last-level cache add up beyond what out-of-order execution overlaps:
# GAT H=1 D=8 at 100k/1M, 3.6-4.4 MB of tables, forward 5.0 -> 4.6 ms (2 tables) and backward
# 9.3 -> 7.4 ms (4 tables) with prefetching 16 entries ahead.
PREFETCH_LLC_SHARE = 0.25
_DEFAULT_LLC_BYTES = 8 << 20


def llc_bytes() -> int:
    """The size of this machine's last-level cache (Linux sysfs; 8 MiB where it cannot be read)."""
    global _LLC_BYTES
    if _LLC_BYTES is None:
        import glob
        best = 0
        for index in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
            try:
                with open(f"{index}/level") as f:
                    level = int(f.read())
                with open(f"{index}/size") as f:
                    text = f.read().strip()
            except (OSError, ValueError):
                continue
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            try:
                size = int(text.rstrip("KMG")) * scale
            except ValueError:
                continue
            if level >= 2 and size > best:
                best = size
        _LLC_BYTES = best or _DEFAULT_LLC_BYTES
    return _LLC_BYTES


_LLC_BYTES: int | None = None


# numba: how many sets of partial sums a row's entries alternate between in kernels whose row
# reductions are all sums or means (NumbaSchedule.accumulators). Two sets break the chain of
# dependent vector adds, which pays where that chain is what limits a short row: on the Xeon of
# bench/RESULTS.md session 8 (Sapphire Rapids) copy_u+sum D=16 100k/1M ran 1.36 -> 1.12 ms with two.
# On an AMD EPYC (Zen 4, session 9) the pair loop's extra control costs more than it saves:
# copy_u+sum 100k/1M 1.25-1.39 -> 1.07-1.24 ms with one set, 200k/5M 12.2 -> 10.4 ms, u_mul_e+sum
# 100k/1M 1.80-1.94 -> 1.59-1.74 ms (kernels timed alternately in one process). The autotuner
# times the other count as a candidate.
def default_accumulators() -> int:
    """Two accumulator sets on Intel CPUs, one elsewhere (see above)."""
    global _VENDOR
    if _VENDOR is None:
        _VENDOR = ""
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("vendor_id"):
                        _VENDOR = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
    return 2 if _VENDOR == "GenuineIntel" else 1


_VENDOR: str | None = None


def sums_only(kernel: KernelPlan) -> bool:
    """Whether every row reduction of ``kernel`` is a sum or a mean (accumulator sets apply)."""
    reducers = {kernel.program.instrs[i].op for name, i in kernel.program.outputs if not name.startswith("edge:")}
    return bool(reducers) and reducers <= {"mailbox_sum", "mailbox_mean"}


def gathered_table_bytes(kernel: KernelPlan, sig: GraphSignature) -> int:
    """The bytes of the tables a kernel reads at random rows: the other endpoint's features (all
    of its nodes) and edge features by edge id."""
    total = 0
    for inp in kernel.inputs:
        if inp.space in ("param", kernel.rows):
            continue
        rows = sig.num_edges if inp.space == "edge" else sig.rows(inp.space)
        total += rows * _row_bytes(inp.shape, inp.dtype)
    return total


def _row_bytes(shape: tuple[int, ...], dtype) -> int:
    """The bytes of one row of a feature of this shape and dtype."""
    return math.prod(shape) * dtype.itemsize


def random_streams(kernel: KernelPlan) -> tuple[int, int]:
    """``(streams, bytes)``: how many inputs a kernel reads at random rows per entry (those of the
    other endpoint, and edge rows by edge id: not its own rows, not weights), and their bytes."""
    streams, size = 0, 0
    for inp in kernel.inputs:
        if inp.space in ("param", kernel.rows):
            continue
        streams += 1
        size += _row_bytes(inp.shape, inp.dtype)
    return streams, size


def edge_and_row_bytes(kernel: KernelPlan) -> tuple[int, int]:
    """``(edge bytes, row bytes)`` an edge map moves per edge: its edge-row inputs and outputs,
    and its own rows' inputs (the destinations' for an in-CSR kernel)."""
    edge = row = 0
    for inp in kernel.inputs:
        size = _row_bytes(inp.shape, inp.dtype)
        if inp.space == "edge":
            edge += size
        elif inp.space == kernel.rows:
            row += size
    for name, i in kernel.program.outputs:
        if name.startswith("edge:"):
            ins = kernel.program.instrs[i]
            edge += _row_bytes(ins.shape, ins.dtype)
    return edge, row


def numba_heuristic(kernel: KernelPlan, sig: GraphSignature, threads: int | None = None
                    ) -> tuple[NumbaSchedule, str]:
    threads = threads or numba_threads()
    base = NumbaSchedule()
    if kernel.pattern == "edge_map":
        # Walked by rows, an edge map reads and writes its edge rows at random (by edge id) and
        # its own rows in sequence; walked in edge-id order, the reverse. Pick the order that
        # makes the larger side sequential (edge_softmax's exp step, 8 heads, 100k/1M: 10 -> 4 ms).
        edge, row = edge_and_row_bytes(kernel)
        if edge >= row:
            schedule = dataclasses.replace(base, edge_order=1)
            return schedule, (f"an edge map moving {edge} bytes of edge rows and {row} bytes of its own "
                              f"rows per edge: the edges are walked in id order ({threads} threads x "
                              f"{base.parts_per_thread} equal ranges), the edge rows in sequence")
    if sums_only(kernel):
        base = dataclasses.replace(base, accumulators=default_accumulators())
    streams, size = random_streams(kernel)
    table = gathered_table_bytes(kernel, sig)
    cached = streams <= 1 and table <= PREFETCH_LLC_SHARE * llc_bytes()
    far = kernel.pattern == "gather_reduce" and size <= LONG_PREFETCH_MAX_BYTES
    if cached:
        base = dataclasses.replace(base, prefetch_distance=0)
    elif far:
        base = dataclasses.replace(base, prefetch_distance=LONG_PREFETCH_DISTANCE)
    parts = threads * base.parts_per_thread
    share = fair_share(sig, kernel.rows, parts)
    top = sig.max_degree(kernel.rows)
    why = (f"{base.parts_per_thread} edge-balanced parts per thread x {threads} threads (a part: ~{share:.0f} "
           f"entries + rows); "
           + (f"no prefetch (the gathered table, {table / 2**20:.1f} MiB, fits in a quarter of the "
              f"{llc_bytes() / 2**20:.0f} MiB last-level cache)" if cached else
              f"prefetch {base.prefetch_distance} entries ahead")
           + (f" ({size} bytes per entry read at random from {streams} table(s): short work per entry)"
              if far and not cached else ""))
    if top > HUB_FACTOR * share and top >= HUB_MIN_DEGREE:
        threshold = max(HUB_MIN_DEGREE // 2, int(share))
        chunk = max(1024, threshold // 2)
        schedule = dataclasses.replace(base, hub_threshold=threshold, hub_chunk=chunk)
        return schedule, (why + f"; the largest row ({top} entries) exceeds {HUB_FACTOR}x a part, so rows "
                          f"above {threshold} entries are split into chunks of {chunk} across threads")
    return base, why + f"; no hub rows (largest {top} entries <= {HUB_FACTOR}x a part or < {HUB_MIN_DEGREE})"


def triton_heuristic(kernel: KernelPlan, sig: GraphSignature) -> tuple[TritonConfig, str]:
    rows = sig.rows(kernel.rows)
    mean = sig.mean_degree(kernel.rows)
    width = kernel_width(kernel)
    lanes = _pow2(width)
    # several rows per program when rows are short: fewer programs, each with enough work
    per_program = 4 if mean < 4 else 2 if mean < 16 else 1
    if rows < 4096:  # a small grid: keep programs many, one row each
        per_program = 1
    block_e = min(128, max(16, _pow2(mean)))
    block_f = min(lanes, 256 if mean < 16 else 128)
    tile = block_e * min(lanes, block_f)
    num_warps = 2 if tile <= 2048 else 4 if tile <= 8192 else 8
    config = TritonConfig(block_e=block_e, block_f=block_f, rows_per_program=per_program, num_warps=num_warps)
    why = (f"mean degree {mean:.1f}, {rows} rows, {width}-wide outputs: {per_program} row(s) per program, "
           f"BLOCK_E {block_e} from the mean degree, feature tile up to {block_f}, {num_warps} warps for a "
           f"{tile}-element tile")
    top = sig.max_degree(kernel.rows)
    threshold = max(TRITON_HUB_MIN_DEGREE, int(TRITON_HUB_FACTOR * max(mean, 1.0)))
    if top > threshold:
        config = dataclasses.replace(config, hub_threshold=threshold, hub_chunk=1024)
        why += f"; rows above {threshold} entries (largest {top}) split across programs of 1024 entries"
    return config, why


# ------------------------------------------------------------------------------------------------
# Candidates for the autotuner
# ------------------------------------------------------------------------------------------------
def candidates(backend: str, kernel: KernelPlan, sig: GraphSignature) -> list:
    """The schedules the autotuner times for ``kernel`` on ``sig`` (default and heuristic first)."""
    if backend == "numba":
        return numba_candidates(kernel, sig)
    if backend == "triton":
        return triton_candidates(kernel, sig)
    raise ValueError(f"no schedules for back end {backend!r}")


def _unique(items: list) -> list:
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def numba_candidates(kernel: KernelPlan, sig: GraphSignature, threads: int | None = None) -> list[NumbaSchedule]:
    threads = threads or numba_threads()
    default = NumbaSchedule()
    chosen, _ = numba_heuristic(kernel, sig, threads)
    out = [default, chosen]
    for prefetch in (0, 8, 16):
        for parts in (2, 8, 32):
            out.append(NumbaSchedule(parts_per_thread=parts, prefetch_distance=prefetch))
    if any(ins.op in ("mailbox_softmax_sum", "mailbox_logsumexp") for ins in kernel.program.instrs):
        for chunk in (0, 8, 64):  # softmax reductions: edge by edge, shorter and longer chunks
            out.append(dataclasses.replace(chosen, softmax_chunk=chunk))
    if sums_only(kernel):  # sums: one chain of adds per row, or two
        out.append(dataclasses.replace(chosen, accumulators=1 if chosen.accumulators > 1 else 2))
    # hub rows: split at a part's fair share, when some row exceeds it (any size: small graphs too)
    share = fair_share(sig, kernel.rows, threads * default.parts_per_thread)
    top = sig.max_degree(kernel.rows)
    if top > HUB_FACTOR * share:
        threshold = max(1, int(share))
        for chunk in (max(1, threshold // 2), max(1, threshold // 8)):
            out.append(NumbaSchedule(hub_threshold=threshold, hub_chunk=chunk))
    return _unique(out)


def triton_candidates(kernel: KernelPlan, sig: GraphSignature) -> list[TritonConfig]:
    default = TritonConfig()
    chosen, _ = triton_heuristic(kernel, sig)
    lanes = _pow2(kernel_width(kernel))
    out = [default, chosen]
    base = dataclasses.replace(chosen, hub_threshold=None)
    for per_program in (1, 2, 4, 8):
        out.append(dataclasses.replace(base, rows_per_program=per_program))
    for block_e in (16, 32, 64, 128):
        out.append(dataclasses.replace(base, block_e=block_e))
    for block_f in (32, 64, 128, 256):
        if block_f <= max(32, lanes):
            out.append(dataclasses.replace(base, block_f=block_f))
    for num_warps in (1, 2, 4, 8):
        out.append(dataclasses.replace(base, num_warps=num_warps))
    for num_stages in (1, 2, 3):
        out.append(dataclasses.replace(base, num_stages=num_stages))
    top = sig.max_degree(kernel.rows)
    mean = max(sig.mean_degree(kernel.rows), 1.0)
    if top > 8 * mean:
        threshold = max(1, int(8 * mean))
        for chunk in (256, 1024):
            out.append(dataclasses.replace(base, hub_threshold=threshold, hub_chunk=chunk))
    return _unique(out)
