"""What the numba and Triton runtimes share: a generated source file in the cache, imported once,
and the lookup of a kernel's inputs by name."""
from __future__ import annotations

import os
import threading
from typing import Any, Mapping

from ..errors import BackendError, GdslError
from . import cache

_ENTRIES: dict[tuple[str, str], Any] = {}  # (file key, function) -> the imported function (process-wide)
_LOCK = threading.Lock()


class GeneratedKernel:
    """A generated module (``source.source`` defines ``source.entry``) cached on disk and in memory.

    Subclasses set ``backend`` (a word for messages and the default key) and implement ``run``.
    """

    backend = "generated"  # in file names and keys
    display = "generated"  # in messages

    def __init__(self, source, key: str | None = None):
        self.source = source
        self.key = key if key is not None else f"{self.backend}_{source.pattern}_{source.fingerprint}"
        # The file name carries a hash of the text: a new code generator never reuses stale files.
        self.file_key = f"{self.key}_{cache.content_hash(source.source)}"
        self._path: str | None = None

    @property
    def path(self) -> str:
        """The generated file (written on first access, and again if the cache was cleared)."""
        if self._path is None or not os.path.exists(self._path):
            self._path = cache.write_source(self.file_key, self.source.source)
        return self._path

    def compile(self, name: str | None = None):
        """The entry function of the generated file, or its function ``name`` (imported once per
        process)."""
        name = name or self.source.entry
        entry = _ENTRIES.get((self.file_key, name))
        if entry is not None:
            return entry
        with _LOCK:
            entry = _ENTRIES.get((self.file_key, name))
            if entry is None:
                path = self.path
                try:
                    module = cache.load_module(self.file_key, path)
                    entry = getattr(module, name)
                except ImportError as exc:
                    if getattr(exc, "name", None) in ("numba", "triton"):
                        raise BackendError(f"the {self.display} backend needs the {exc.name!r} package") from exc
                    raise GdslError(f"cannot import the generated {self.display} kernel {path}: "
                                    f"{type(exc).__name__}: {exc}") from exc
                except Exception as exc:  # a syntax error in generated code is a gdsl bug
                    raise GdslError(f"cannot import the generated {self.display} kernel {path}: "
                                    f"{type(exc).__name__}: {exc}") from exc
                _ENTRIES[(self.file_key, name)] = entry
        return entry

    def _lookup(self, inputs: Mapping[str, Any], space: str, name: str) -> Any:
        """An input given as ``inputs[name]``, ``inputs['space:name']`` or ``inputs[space][name]``."""
        nested = inputs.get(space)
        if isinstance(nested, Mapping) and name in nested:
            return nested[name]
        for key in (f"{space}:{name}", name):
            if key in inputs and not isinstance(inputs[key], Mapping):
                return inputs[key]
        raise GdslError(f"{self.display} kernel {self.source.entry}: missing input {space}:{name} (give "
                        f"it as inputs[{name!r}], inputs['{space}:{name}'] or inputs[{space!r}][{name!r}])")
