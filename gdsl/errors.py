"""The gdsl error hierarchy: every problem a user can cause has a named, catchable type."""
from __future__ import annotations


class GdslError(Exception):
    """Base class of every error gdsl raises on purpose."""


class GraphError(GdslError):
    """Bad graph structure or ids: out-of-range or negative node ids, mismatched src/dst, ..."""


class FeatureError(GraphError, KeyError):
    """A feature of the wrong size, or a field that does not exist.

    Also a ``KeyError`` so that dict-like frames behave like dicts (``in``, ``.get``).
    """

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class DeviceError(GraphError):
    """A tensor on another device than the graph it is used with."""


class BackendError(GdslError):
    """An unknown backend name, or a backend that cannot run the given work."""


class CompileError(GdslError):
    """A user function that the DSL compiler cannot compile; ``where`` is the user's "file:line"."""

    def __init__(self, message: str, where: str | None = None):
        self.message = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)
