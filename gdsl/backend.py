"""Which executor runs message passing: a registry, a context manager and ``GDSL_BACKEND``.

Priority: the innermost ``use_backend(...)`` block, then the ``GDSL_BACKEND`` environment variable,
then the default for the features' device (the compiled back end for that device when one is
registered, otherwise the reference executor).
"""
from __future__ import annotations

import contextvars
import os
from contextlib import contextmanager
from typing import Callable, Iterator, Protocol

import torch

from .errors import BackendError


class Executor(Protocol):
    """What a back end provides: the two message-passing primitives (see ``gdsl.reference``)."""

    name: str

    def edge_map(self, graph, etype, func, eids): ...

    def gather_reduce(self, graph, etype, message_func, reduce_func, eids): ...


_REGISTRY: dict[str, Callable[[], Executor]] = {}
_INSTANCES: dict[str, Executor] = {}
_DEVICE_DEFAULTS: dict[str, str] = {}  # device type -> backend name
_SELECTED: contextvars.ContextVar[str | None] = contextvars.ContextVar("gdsl_backend", default=None)


def register_backend(name: str, factory: Callable[[], Executor],
                     default_for: tuple[str, ...] = ()) -> None:
    """Make a back end selectable by name; ``default_for`` lists device types it serves by default."""
    _REGISTRY[name] = factory
    _INSTANCES.pop(name, None)
    for device_type in default_for:
        _DEVICE_DEFAULTS[device_type] = name


def available_backends() -> list[str]:
    return sorted(_REGISTRY)


def _check(name: str, origin: str) -> str:
    if name not in _REGISTRY:
        raise BackendError(f"unknown backend {name!r} ({origin}); available: {available_backends()}")
    return name


@contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run the message passing inside the block on back end ``name`` (e.g. ``"reference"``)."""
    token = _SELECTED.set(_check(name, "use_backend"))
    try:
        yield
    finally:
        _SELECTED.reset(token)


def current_backend(device: torch.device | str = "cpu") -> str:
    """The name of the back end that message passing on ``device`` would use now."""
    chosen = _SELECTED.get()
    if chosen is not None:
        return chosen
    env = os.environ.get("GDSL_BACKEND", "").strip()
    if env and env != "auto":
        return _check(env, "GDSL_BACKEND")
    return _DEVICE_DEFAULTS.get(torch.device(device).type, "reference")


def get_executor(device: torch.device | str = "cpu", requested: str | None = None) -> Executor:
    """The executor for ``device``; ``requested`` (a function's own ``backend=`` option) wins
    over the context and the environment."""
    name = _check(requested, "backend= option") if requested else current_backend(device)
    if name not in _INSTANCES:
        _INSTANCES[name] = _REGISTRY[name]()
    return _INSTANCES[name]
