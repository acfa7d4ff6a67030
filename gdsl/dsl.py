"""Decorators that mark user functions for the compiler and carry per-function options.

``@gdsl.message``, ``@gdsl.reduce`` and ``@gdsl.apply`` work bare or with options::

    @gdsl.message
    def msg(edges): ...

    @gdsl.reduce(fallback="reference")
    def red(nodes): ...

Undecorated functions passed to ``update_all`` and friends are compiled the same way; the
decorator only adds options:

- ``backend``: run this function's step on ``"numba"``, ``"triton"`` or ``"reference"``;
- ``fallback="reference"``: if the function cannot be compiled, run the step on the reference
  executor (with a warning naming the reason) instead of raising ``gdsl.CompileError``;
- ``autotune=True``: the first time the step's kernels run on a graph of a new signature (sizes,
  degree histogram, dtype, device; see ``gdsl.autotune``), time their candidate schedules on it,
  keep the fastest correct one and store it in the cache directory for later runs and processes.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

FALLBACKS = (None, "reference")


class UserFunction:
    """A user's message / reduce / apply function with compiler options."""

    def __init__(self, func: Callable, kind: str, backend: str | None = None,
                 fallback: str | None = None, autotune: bool = False):
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
        self.func = func
        self.kind = kind
        self.backend = backend
        self.fallback = fallback
        self.autotune = bool(autotune)
        functools.update_wrapper(self, func)

    def __call__(self, batch: Any) -> Any:
        return self.func(batch)

    def __repr__(self) -> str:
        return f"<gdsl.{self.kind} {getattr(self.func, '__qualname__', self.func)!r}>"


def _decorator(kind: str):
    def decorate(func: Callable | None = None, *, backend: str | None = None,
                 fallback: str | None = None, autotune: bool = False):
        def wrap(f: Callable) -> UserFunction:
            return UserFunction(f, kind, backend, fallback, autotune)
        return wrap(func) if func is not None else wrap
    decorate.__name__ = kind
    decorate.__doc__ = f"Mark a {kind} function for gdsl's compiler (usable bare or with options)."
    return decorate


message = _decorator("message")
reduce = _decorator("reduce")
apply = _decorator("apply")


def options_of(*funcs: Any) -> tuple[str | None, str | None]:
    """The ``(backend, fallback)`` requested by any of the given functions."""
    backend = fallback = None
    for f in funcs:
        if isinstance(f, UserFunction):
            backend = backend or f.backend
            fallback = fallback or f.fallback
    return backend, fallback


def autotune_of(*funcs: Any) -> bool:
    """Whether any of the given functions asked for ``autotune=True``."""
    return any(isinstance(f, UserFunction) and f.autotune for f in funcs)
