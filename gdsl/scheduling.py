"""Which schedule a kernel launches with on a graph, and why: tuned, else the heuristic.

:func:`choose` is called at every launch of a compiled kernel, so its answer is cached in memory
per (kernel, graph signature): after the first launch on a graph it costs one dictionary look-up
(the signature itself is cached on the relation). The first look-up per (kernel, signature) in a
process reads the autotuner's entry from disk (:mod:`gdsl.kernels.tuning_store`) when there is
one, and otherwise takes :func:`gdsl.heuristics.heuristic`.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from . import heuristics
from .compiler.fusion import KernelPlan
from .kernels import tuning_store
from .kernels.schedules import NumbaSchedule, TritonConfig
from .kernels.signature import GraphSignature, make_signature
from .relation import Relation

_DTYPE_NAMES = {torch.float16: "f16", torch.bfloat16: "bf16", torch.float32: "f32", torch.float64: "f64"}


@dataclass(frozen=True)
class Choice:
    """A kernel's schedule on one graph: ``reason`` is ``heuristic``, ``autotuned`` or ``forced``
    (:func:`use_schedule`)."""

    schedule: NumbaSchedule | TritonConfig
    reason: str
    why: str
    path: str | None = None   # the tuning entry it was read from (autotuned)


# ------------------------------------------------------------------------------------------------
# Keys
# ------------------------------------------------------------------------------------------------
# id -> (the plan, held so that ids stay unique; its key; its dtype): launches ask for both
_KERNEL_INFO: dict[int, tuple[KernelPlan, str, torch.dtype]] = {}


def _info(kernel: KernelPlan) -> tuple[KernelPlan, str, torch.dtype]:
    hit = _KERNEL_INFO.get(id(kernel))
    if hit is None or hit[0] is not kernel:
        text = f"{kernel.pattern}|{kernel.rows}|{kernel.program.fingerprint()}"
        hit = (kernel, hashlib.sha256(text.encode()).hexdigest()[:16], _kernel_dtype(kernel))
        _KERNEL_INFO[id(kernel)] = hit
    return hit


def kernel_key(kernel: KernelPlan) -> str:
    """A stable hash of a kernel plan: its program (ops, dtypes, shapes), rows and pattern
    (memoised per plan object)."""
    return _info(kernel)[1]


def kernel_dtype(kernel: KernelPlan) -> torch.dtype:
    """The floating dtype the kernel computes in (float32 when it has no float values)."""
    return _info(kernel)[2]


def _kernel_dtype(kernel: KernelPlan) -> torch.dtype:
    for _, i in kernel.program.outputs:
        dtype = kernel.program.instrs[i].dtype
        if dtype.is_floating_point:
            return dtype
    for ins in kernel.program.instrs:
        if ins.dtype.is_floating_point:
            return ins.dtype
    return torch.float32


def signature(rel: Relation, dtype: torch.dtype) -> GraphSignature:
    """The graph signature of ``rel`` for values of ``dtype`` (cached on the relation)."""
    cache = rel._cache
    key = ("gdsl:signature", dtype)
    hit = cache.get(key)
    if hit is None:
        ins, outs = rel.in_degree_stats, rel.out_degree_stats
        hit = make_signature(rel.num_src, rel.num_dst, rel.num_edges, ins.log2_histogram, outs.log2_histogram,
                             ins.max_degree, outs.max_degree, _DTYPE_NAMES.get(dtype, str(dtype)),
                             rel.device.type)
        cache[key] = hit
    return hit


_DEVICE_NAMES: dict[str, str] = {}


def device_name(backend: str, device: torch.device) -> str:
    """What a tuned schedule is specific to: the CPU model and numba's thread count, the GPU."""
    if backend == "numba":  # (the thread count can change at run time: not memoised)
        if "cpu model" not in _DEVICE_NAMES:
            _DEVICE_NAMES["cpu model"] = _cpu_model()
        return f"cpu:{_DEVICE_NAMES['cpu model']}:{heuristics.numba_threads()} threads"
    key = str(device)
    if key not in _DEVICE_NAMES:
        _DEVICE_NAMES[key] = ("cuda:" + torch.cuda.get_device_name(device) if device.type == "cuda"
                              else "triton-interpreter")
    return _DEVICE_NAMES[key]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_VERSIONS: dict[str, str] | None = None


def versions() -> dict[str, str]:
    global _VERSIONS
    if _VERSIONS is None:
        from . import __version__
        found = {"gdsl": __version__}
        for package in ("triton", "numba"):
            try:
                found[package] = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                found[package] = "none"
        _VERSIONS = found
    return dict(_VERSIONS)


def store_key(kernel: KernelPlan, backend: str, sig: GraphSignature, device: torch.device) -> dict[str, Any]:
    """The on-disk key of a tuning result."""
    from .compiler.codegen.numba import CODEGEN_VERSION as numba_codegen
    from .compiler.codegen.triton import CODEGEN_VERSION as triton_codegen
    return {"kernel": kernel_key(kernel), "backend": backend,
            "codegen": numba_codegen if backend == "numba" else triton_codegen,
            "signature": sig.buckets(), "device": device_name(backend, device), **versions()}


# ------------------------------------------------------------------------------------------------
# Choosing
# ------------------------------------------------------------------------------------------------
_CHOICES: dict[tuple, Choice] = {}
_LOCK = threading.Lock()


_FORCED: list = []  # use_schedule's schedules, innermost last


@contextmanager
def use_schedule(*schedules) -> Iterator[None]:
    """Inside the block, every kernel of a back end given a schedule here launches with it
    (reason ``"forced"``), whatever was tuned: for tests and experiments."""
    _FORCED.append({s.backend: s for s in schedules})
    try:
        yield
    finally:
        _FORCED.pop()


def choose(kernel: KernelPlan, backend: str, rel: Relation) -> Choice:
    """The schedule ``kernel`` launches with on ``rel`` (cached per kernel and signature)."""
    if _FORCED and backend in _FORCED[-1]:
        return Choice(_FORCED[-1][backend], "forced", "given by gdsl.scheduling.use_schedule")
    _, kkey, dtype = _info(kernel)
    sig = rel._cache.get(("gdsl:signature", dtype)) or signature(rel, dtype)
    key = (kkey, backend, sig.key, rel.device)
    hit = _CHOICES.get(key)
    if hit is not None:
        return hit
    with _LOCK:
        hit = _CHOICES.get(key)
        if hit is None:
            hit = _lookup(kernel, backend, sig, rel.device)
            _CHOICES[key] = hit
    return hit


def _lookup(kernel: KernelPlan, backend: str, sig: GraphSignature, device: torch.device) -> Choice:
    if os.environ.get("GDSL_AUTOTUNE_CACHE", "1") != "0":
        entry = tuning_store.load(backend, store_key(kernel, backend, sig, device))
        if entry is not None:
            tuning_store.logger.info("gdsl.autotune: using the tuned schedule in %s (%s)", entry.path,
                                     entry.schedule.describe())
            return Choice(entry.schedule, "autotuned", _tuned_why(entry), entry.path)
    schedule, why = heuristics.heuristic(backend, kernel, sig)
    return Choice(schedule, "heuristic", why)


def _tuned_why(entry) -> str:
    data = entry.data
    rows = [c for c in data.get("candidates", []) if c.get("status") == "ok"]
    times = sorted(c["median_ms"] for c in rows if isinstance(c.get("median_ms"), (int, float)))
    extra = f"; {len(rows)} candidates ok, fastest {times[0]:.3f} ms, slowest {times[-1]:.3f} ms" if times else ""
    return f"tuned on this graph's signature ({os.path.basename(entry.path)}, {data.get('tuned_at', '?')}){extra}"


def remember(kernel: KernelPlan, backend: str, rel: Relation, choice: Choice) -> None:
    """Use ``choice`` for ``kernel`` on graphs of ``rel``'s signature from now on (this process)."""
    sig = signature(rel, kernel_dtype(kernel))
    _CHOICES[(kernel_key(kernel), backend, sig.key, rel.device)] = choice


def forget() -> None:
    """Drop the in-memory choices (the next launch of each kernel looks on disk again)."""
    _CHOICES.clear()
