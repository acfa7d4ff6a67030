"""Reusable output buffers for the CPU kernels.

A kernel's outputs are large (rows x features) and short-lived: a training step allocates the same
shapes again every iteration. Fresh large allocations come from the operating system as untouched
pages, and the kernel's first write to each page faults; at 100k rows x 256 float32 features that
costs more than the aggregation itself (about 60 ms of first-touch faults against a 50 ms kernel on
the 2-core machine of bench/RESULTS.md, and up to 3x that while the kernel compacts memory for huge
pages). So large output arrays are kept here and handed out again once nothing refers to them: the
tensor the kernel returned (or anything viewing its memory) holds a reference to the array, so an
array whose reference count is back to the pool's own is free. This is the CPU analogue of the
caching allocator torch uses for CUDA memory.

Buffers below :data:`MIN_BYTES` are not pooled (the C allocator already reuses small blocks). The
pool holds at most ``GDSL_BUFFER_CACHE_MB`` megabytes (default: an eighth of the machine's memory,
at most 4 GiB; ``0`` turns pooling off); :func:`empty_cache` releases every idle buffer.
"""
from __future__ import annotations

import math
import os
import sys
import threading

import numpy as np

MIN_BYTES = 1 << 20
# Arrays start on a page boundary. numpy's large arrays start 16 bytes past one (the C allocator's
# header in front of a mapped block), so every 64-byte feature row (16 float32) straddled two cache
# lines and a kernel gathering such rows at random took two misses per row: the backward of
# u_mul_e+sum at 200k/5M D=16, reading a staged gradient, ran 48 -> 100 ms.
ALIGN = 4096
_SLACK = 1.25  # an idle buffer up to 25% larger than asked for is reused (a view of its front)


def _default_cap_bytes() -> int:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        total = 8 << 30
    return min(4 << 30, total // 8)


def _cap_bytes() -> int:
    value = os.environ.get("GDSL_BUFFER_CACHE_MB")
    if value is None or value.strip() == "":
        return _default_cap_bytes()
    try:
        return max(0, int(float(value) * (1 << 20)))
    except ValueError:
        return _default_cap_bytes()


def _refcount_when_idle() -> int:
    """What :meth:`BufferPool._is_idle` sees for a buffer that only the pool holds (measured, not
    assumed: the count differs between Python versions)."""
    probe = [np.empty(1, dtype=np.uint8)]
    return BufferPool._refcount(probe, 0)


class BufferPool:
    """Byte buffers handed out as typed arrays and taken back when nothing views them any more."""

    def __init__(self, cap_bytes: int | None = None):
        self._lock = threading.Lock()
        self._buffers: list[np.ndarray] = []  # least recently handed out first
        self._cap = cap_bytes
        self.hits = 0
        self.misses = 0

    @property
    def cap_bytes(self) -> int:
        return _cap_bytes() if self._cap is None else self._cap

    @staticmethod
    def _refcount(buffers: list, i: int) -> int:
        return sys.getrefcount(buffers[i])

    def _is_idle(self, i: int) -> bool:
        return self._refcount(self._buffers, i) <= _IDLE

    @property
    def held_bytes(self) -> int:
        """Bytes of every buffer the pool tracks, idle or in use."""
        return sum(b.nbytes for b in self._buffers)

    def idle_bytes(self) -> int:
        with self._lock:
            return sum(self._buffers[i].nbytes for i in range(len(self._buffers)) if self._is_idle(i))

    def empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` and ``dtype`` (like ``np.empty``), its
        first byte on an :data:`ALIGN` boundary."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        cap = self.cap_bytes
        if nbytes < MIN_BYTES or nbytes > cap:
            return _aligned(np.empty(nbytes + ALIGN, dtype=np.uint8), nbytes).view(dtype).reshape(shape)
        with self._lock:
            buffer = self._take(nbytes)
            if buffer is None:
                self.misses += 1
                self._make_room(nbytes + ALIGN, cap)
                buffer = np.empty(nbytes + ALIGN, dtype=np.uint8)
                if self.held_bytes + buffer.nbytes <= cap:
                    self._buffers.append(buffer)
            else:
                self.hits += 1
        return _aligned(buffer, nbytes).view(dtype).reshape(shape)

    def _take(self, nbytes: int) -> np.ndarray | None:
        best = None
        for i in range(len(self._buffers)):
            size = self._buffers[i].nbytes
            if nbytes + ALIGN <= size <= nbytes * _SLACK + ALIGN and self._is_idle(i):
                if best is None or size < self._buffers[best].nbytes:
                    best = i
        if best is None:
            return None
        buffer = self._buffers.pop(best)
        self._buffers.append(buffer)  # most recently used last
        return buffer

    def _make_room(self, nbytes: int, cap: int) -> None:
        """Drop idle buffers, least recently used first, until ``nbytes`` more fit under ``cap``."""
        i = 0
        while self.held_bytes + nbytes > cap and i < len(self._buffers):
            if self._is_idle(i):
                del self._buffers[i]
            else:
                i += 1

    def clear(self) -> None:
        """Forget every buffer (those in use stay alive with their tensors)."""
        with self._lock:
            self._buffers.clear()


def _aligned(buffer: np.ndarray, nbytes: int) -> np.ndarray:
    """The ``nbytes`` of ``buffer`` (allocated with :data:`ALIGN` spare bytes) from its first
    :data:`ALIGN` boundary on."""
    offset = -buffer.ctypes.data % ALIGN
    return buffer[offset:offset + nbytes]


_IDLE = _refcount_when_idle()
POOL = BufferPool()


def empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An output array from the process-wide pool (see the module docstring)."""
    return POOL.empty(shape, dtype)


def empty_cache() -> None:
    """Release the idle CPU output buffers gdsl keeps for reuse (as ``torch.cuda.empty_cache``
    does for CUDA memory); buffers still in use are simply no longer tracked."""
    POOL.clear()
