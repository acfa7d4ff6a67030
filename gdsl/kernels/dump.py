"""``GDSL_DUMP_DIR``: a copy of every kernel a process generates, with its IR, in one folder.

Why: the cache directory mixes every kernel ever built; a dump folder holds exactly what one run
produced (forward and backward, each back end), ready to read, diff or attach to a bug report.
The variable is read each time a kernel is generated, so it can be set at any point of a run.
"""
from __future__ import annotations

import os
import warnings

from .cache import write_atomic

ENV = "GDSL_DUMP_DIR"


def dump_dir() -> str | None:
    """The dump folder, or None when ``GDSL_DUMP_DIR`` is unset or empty."""
    path = os.environ.get(ENV, "").strip()
    return os.path.abspath(os.path.expanduser(path)) if path else None


def dump_kernel(key: str, source: str, ir: str) -> list[str]:
    """Write ``<key>.py`` (the generated module, its header has the kernel IR) and ``<key>.ir.txt``
    (the fusion plan line and the IR) to the dump folder; returns the paths written.

    A folder that cannot be written only warns: dumping must never break a training run."""
    folder = dump_dir()
    if folder is None:
        return []
    try:
        os.makedirs(folder, exist_ok=True)
        return [write_atomic(os.path.join(folder, f"{key}.py"), source),
                write_atomic(os.path.join(folder, f"{key}.ir.txt"), ir)]
    except OSError as exc:
        warnings.warn(f"gdsl: cannot write kernel {key} to {ENV}={folder}: {exc}", stacklevel=3)
        return []
