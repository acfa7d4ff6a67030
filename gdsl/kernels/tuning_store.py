"""The on-disk store of autotuning results: one JSON file per key.

Layout: ``<cache dir>/autotune/<backend>-<hash of the key>.json``. The key is a JSON object
naming everything a tuned schedule depends on (the kernel hash, the graph signature's buckets, the
device name, the gdsl / triton / numba versions); the file holds the key again, the chosen
schedule, the table of candidates and when and how long it was tuned::

    {"format": 1, "key": {...}, "backend": "numba", "schedule": {...},
     "candidates": [{"schedule": {...}, "status": "ok", "median_ms": 1.2}, ...],
     "tuned_at": "...", "tuning_seconds": 3.4, "signature": "...", "kernel": "..."}

Files are written atomically (:func:`gdsl.kernels.cache.write_atomic`: a temporary file, then a
rename), so several processes may tune and read at once: a reader sees a whole old file, a whole
new one, or none. A file that does not parse, holds another key (stale: written by another
version under a colliding name) or an invalid schedule is ignored with a warning (the caller then
falls back to the heuristic, or tunes again).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

from . import cache
from .schedules import schedule_from_dict

FORMAT = 1
logger = logging.getLogger("gdsl.autotune")


def store_dir() -> str:
    return os.path.join(cache.cache_dir(), "autotune")


def entry_path(backend: str, key: dict[str, Any]) -> str:
    text = json.dumps(key, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:24]
    return os.path.join(store_dir(), f"{backend}-{digest}.json")


@dataclass(frozen=True)
class StoredEntry:
    path: str
    schedule: Any           # NumbaSchedule | TritonConfig
    data: dict[str, Any]    # the whole file


def _reject(path: str, why: str) -> None:
    message = f"gdsl.autotune: ignoring the tuning cache entry {path}: {why}; it will be tuned again"
    logger.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def load(backend: str, key: dict[str, Any]) -> StoredEntry | None:
    """The stored entry for ``key``, or None (missing, or ignored with a warning)."""
    path = entry_path(backend, key)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        _reject(path, f"cannot read it ({exc})")
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        _reject(path, f"not valid JSON ({exc})")
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        _reject(path, f"unknown format {data.get('format') if isinstance(data, dict) else type(data).__name__!r}")
        return None
    if data.get("key") != key or data.get("backend") != backend:
        _reject(path, "stale: it was written for another kernel, graph, device or version")
        return None
    try:
        schedule = schedule_from_dict(backend, data.get("schedule"))
    except (TypeError, ValueError) as exc:
        _reject(path, f"invalid schedule ({exc})")
        return None
    return StoredEntry(path, schedule, data)


def save(backend: str, key: dict[str, Any], schedule, extra: dict[str, Any]) -> str:
    """Store the chosen ``schedule`` for ``key`` (atomically); returns the file's path."""
    data = {"format": FORMAT, "key": key, "backend": backend, "schedule": schedule.to_dict(), **extra}
    path = entry_path(backend, key)
    cache.write_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    return path


def entries() -> list[str]:
    """Paths of every stored entry."""
    directory = store_dir()
    if not os.path.isdir(directory):
        return []
    return sorted(os.path.join(directory, name) for name in os.listdir(directory) if name.endswith(".json"))
