"""Shared benchmark helpers: graphs, timing (median of repeats after warm-up), peak memory.

CPU memory is the growth of the process's peak RSS while a case runs; run each case in a fresh
process (``bench/run_case.py``-style) when comparing memory, as peak RSS never goes down.
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import threading
import platform
import resource
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Timing:
    median_ms: float
    runs_ms: list[float]


def uniform_graph(num_nodes: int, num_edges: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randint(0, num_nodes, (num_edges,), generator=gen),
            torch.randint(0, num_nodes, (num_edges,), generator=gen))


def power_law_graph(num_nodes: int, num_edges: int, seed: int = 0, a: float = 0.57, b: float = 0.19,
                    c: float = 0.19) -> tuple[torch.Tensor, torch.Tensor]:
    """R-MAT edges (Chakrabarti et al.): skewed in- and out-degrees, hubs included."""
    gen = torch.Generator().manual_seed(seed)
    scale = max(1, (num_nodes - 1).bit_length())
    src = torch.zeros(num_edges, dtype=torch.int64)
    dst = torch.zeros(num_edges, dtype=torch.int64)
    for level in range(scale):
        r = torch.rand(num_edges, generator=gen)
        right = ((r >= a) & (r < a + b)) | (r >= a + b + c)
        down = r >= a + b
        src |= down.long() << level
        dst |= right.long() << level
    return src % num_nodes, dst % num_nodes


def time_it(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> Timing:
    for _ in range(warmup):
        fn()
    # One full collection before the runs, none forced between them: a full collection walks
    # every Python object and evicts the caches, which doubled a 2 ms kernel's time; the
    # interpreter's own generational collections still run, as they do in a training loop.
    gc.collect()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - start) * 1000)
    return Timing(statistics.median(runs), runs)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0); False where
    that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise OSError("no VmHWM in /proc/self/status")


class RssSampler:
    """Peak resident memory of a phase of the process: the peak minus the level at start is the
    memory a case needs (compilation done beforehand is not counted).

    On Linux the kernel keeps the peak itself (VmHWM, reset through /proc/self/clear_refs), so
    nothing runs beside the measured code. Elsewhere a thread samples the RSS every millisecond;
    that thread takes a core and the GIL from the measured code on a small machine, so time the
    code without it (``time_it`` does not use it).

    ``mark()`` starts a new phase at the current level; ``steady_growth_mb`` is then the peak after
    the first mark over the level at that mark (bench/e2e.py marks after the very first training
    step, separating one-time costs such as loading compiled kernels)."""

    def __init__(self):
        self.levels = [rss_mb()]
        self.peaks = [self.levels[0]]
        self._stop = threading.Event()
        self._thread = None
        self._kernel_peak = _reset_peak_rss()

    def _run(self):
        while not self._stop.is_set():
            self._observe(rss_mb())
            time.sleep(0.001)

    def _observe(self, value: float) -> None:
        self.peaks[-1] = max(self.peaks[-1], value)

    def _close_phase(self) -> None:
        self._observe(_peak_rss_mb() if self._kernel_peak else rss_mb())

    def mark(self) -> None:
        self._close_phase()
        if self._kernel_peak:
            _reset_peak_rss()
        value = rss_mb()
        self.levels.append(value)
        self.peaks.append(value)

    def __enter__(self):
        if not self._kernel_peak:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        self._close_phase()

    @property
    def growth_mb(self) -> float:
        """Peak over the whole run above the level at the start."""
        return max(self.peaks) - self.levels[0]

    @property
    def steady_growth_mb(self) -> float | None:
        """Peak after the first mark above the level at that mark (None without a mark)."""
        return max(self.peaks[1:]) - self.levels[1] if len(self.levels) > 1 else None


def run_row(cmd: list[str], timeout: float) -> object:
    """Run one measured row in its own process (so its peak memory is its own) and return the JSON
    of its last output line, or ``{"error": ..., "oom": ...}`` when it failed or timed out."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:g} s"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return {"error": tail[0][:300], "oom": proc.returncode in (-9, 137)}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_json(path: str, result: dict) -> None:
    """Write a suite's result file, creating its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)


def machine() -> str:
    import numba
    import numpy
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, numba {numba.__version__}, numpy {numpy.__version__}, "
            f"python {platform.python_version()}")


def set_threads(threads: int) -> None:
    """Use ``threads`` threads in torch and (where it is installed) in numba's parallel kernels."""
    torch.set_num_threads(threads)
    try:
        import numba
    except ImportError:
        return
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))


class LargestTensor:
    """Records the largest tensor storage produced by any torch op while active (autograd's
    backward included); arrays allocated outside torch (e.g. by numba kernels) are not seen."""

    def __init__(self):
        self.max_bytes = 0
        self.max_desc = ""

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        owner = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in (out if isinstance(out, (tuple, list)) else (out,)):
                    if isinstance(t, torch.Tensor):
                        nbytes = t.untyped_storage().nbytes()
                        if nbytes > owner.max_bytes:
                            owner.max_bytes = nbytes
                            owner.max_desc = f"{func.__name__} {tuple(t.shape)} {str(t.dtype).replace('torch.', '')}"
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
