"""The on-disk cache of generated kernel source.

Generated modules are real files, so that tracebacks point at readable code and numba's
``cache=True`` (which keys its object-code cache on the defining file) works across processes.

The directory is ``$GDSL_CACHE_DIR`` or ``~/.cache/gdsl``, read at each call so tests and users can
redirect it at any time. Files are written atomically (a temporary file, then ``os.replace``) and
only when their content changes: rewriting a file with the same text would change its
modification time and invalidate numba's cache for it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
import tempfile
import threading
from types import ModuleType

_lock = threading.Lock()


def cache_dir() -> str:
    """The cache directory (created if missing)."""
    path = os.environ.get("GDSL_CACHE_DIR") or os.path.join("~", ".cache", "gdsl")
    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(path, exist_ok=True)
    return path


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", key)


def source_path(key: str, suffix: str = ".py") -> str:
    """The path of the cached file for ``key`` (a file name stem; unsafe characters replaced)."""
    return os.path.join(cache_dir(), _safe(key) + suffix)


def write_atomic(path: str, text: str) -> str:
    """Write ``text`` to ``path`` unless it already holds exactly that text; returns ``path``."""
    try:
        with open(path, encoding="utf-8") as fh:
            if fh.read() == text:
                return path
    except OSError:
        pass
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def write_source(key: str, text: str, suffix: str = ".py") -> str:
    """Store generated source under ``key``; returns its path."""
    return write_atomic(source_path(key, suffix), text)


def module_name(key: str) -> str:
    return "gdsl_generated_" + _safe(key)


def load_module(key: str, path: str) -> ModuleType:
    """Import the file ``path`` as module ``gdsl_generated_<key>`` (once per process and path)."""
    name = module_name(key)
    with _lock:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None) == path:
            return module
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import generated module {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return module


def content_hash(text: str, length: int = 12) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]
