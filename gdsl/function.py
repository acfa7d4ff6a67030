"""DGL-style built-in message and reduce functions (``import gdsl.function as fn``).

A built-in is a tiny DSL program: calling it on ``edges`` (or ``nodes``) computes exactly what a
user would write by hand, so every executor, and later the compiler, runs built-ins and user
functions through one path. The 30 binary messages are generated from a table of
(lhs target, op, rhs target), not written one by one. Executors may recognise built-ins by their
attributes (``lhs``, ``op``, ``rhs``, fields) to pick a faster equivalent.
"""
from __future__ import annotations

import abc
import sys
from typing import Callable

import torch

from .errors import FeatureError

TARGETS = {"u": "source node", "v": "destination node", "e": "edge"}


class BuiltinFunction(abc.ABC):
    """Base class of built-ins; ``name`` is DGL's (``"u_mul_e"``, ``"sum"``, ...)."""

    name: str

    def __repr__(self) -> str:
        fields = ", ".join(repr(f) for f in self.fields())
        return f"fn.{self.name}({fields})"

    @abc.abstractmethod
    def fields(self) -> tuple[str, ...]:
        """The field names the built-in reads and writes, in DGL's argument order."""

    # Built-ins are values: fn.copy_u('h', 'm') made twice is the same program, so compiled
    # kernels are found again without re-tracing.
    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and (self.name, self.fields()) == (other.name, other.fields())

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.name, self.fields()))


def _operand(edges, target: str, field: str) -> torch.Tensor:
    store = {"u": edges.src, "v": edges.dst, "e": edges.data}[target]
    return store[field]


def _align(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad the feature dimensions (not the row dimension) with leading 1s so that torch's
    broadcasting matches DGL's: feature shapes broadcast numpy-style among themselves."""
    if a.dim() < b.dim():
        a = a.reshape(a.shape[:1] + (1,) * (b.dim() - a.dim()) + a.shape[1:])
    elif b.dim() < a.dim():
        b = b.reshape(b.shape[:1] + (1,) * (a.dim() - b.dim()) + b.shape[1:])
    return a, b


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.dim() == 1 and b.dim() == 1:
        return a * b
    if a.dim() == 1 or b.dim() == 1 or a.shape[-1] != b.shape[-1]:
        raise FeatureError(f"dot needs operands whose last dimensions agree, got feature shapes "
                           f"{tuple(a.shape[1:])} and {tuple(b.shape[1:])}")
    return (a * b).sum(-1, keepdim=True)


BINARY_OPS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "div": torch.div,
    "dot": _dot,
}


class MessageFunction(BuiltinFunction):
    """A built-in message: ``out = lhs op rhs`` per edge, or a copy of one operand."""

    def __init__(self, lhs: str, op: str, rhs: str | None, lhs_field: str, rhs_field: str | None,
                 out_field: str):
        self.lhs, self.op, self.rhs = lhs, op, rhs
        self.lhs_field, self.rhs_field, self.out_field = lhs_field, rhs_field, out_field
        self.name = f"copy_{lhs}" if op == "copy" else f"{lhs}_{op}_{rhs}"

    def fields(self) -> tuple[str, ...]:
        if self.op == "copy":
            return (self.lhs_field, self.out_field)
        return (self.lhs_field, self.rhs_field, self.out_field)

    def __call__(self, edges) -> dict[str, torch.Tensor]:
        a = _operand(edges, self.lhs, self.lhs_field)
        if self.op == "copy":
            return {self.out_field: a}
        b = _operand(edges, self.rhs, self.rhs_field)
        a, b = _align(a, b)
        if self.op != "dot":
            try:
                torch.broadcast_shapes(tuple(a.shape[1:]), tuple(b.shape[1:]))
            except RuntimeError:
                raise FeatureError(f"{self!r}: feature shapes {tuple(a.shape[1:])} and "
                                   f"{tuple(b.shape[1:])} do not broadcast") from None
        return {self.out_field: BINARY_OPS[self.op](a, b)}


class ReduceFunction(BuiltinFunction):
    """A built-in reducer over the mailbox axis (axis 1): sum, mean, max or min."""

    def __init__(self, name: str, msg_field: str, out_field: str):
        self.name, self.msg_field, self.out_field = name, msg_field, out_field

    def fields(self) -> tuple[str, ...]:
        return (self.msg_field, self.out_field)

    def __call__(self, nodes) -> dict[str, torch.Tensor]:
        m = nodes.mailbox[self.msg_field]
        if self.name == "sum":
            return {self.out_field: m.sum(1)}
        if self.name == "mean":
            return {self.out_field: m.mean(1)}
        if self.name == "max":
            return {self.out_field: m.max(1).values}
        return {self.out_field: m.min(1).values}


def copy_u(u: str, out: str) -> MessageFunction:
    """Message = the source node feature ``u``."""
    return MessageFunction("u", "copy", None, u, None, out)


def copy_e(e: str, out: str) -> MessageFunction:
    """Message = the edge feature ``e``."""
    return MessageFunction("e", "copy", None, e, None, out)


# DGL's older names.
copy_src = copy_u
copy_edge = copy_e


def _make_binary(lhs: str, op: str, rhs: str) -> Callable[[str, str, str], MessageFunction]:
    def builtin(lhs_field: str, rhs_field: str, out: str) -> MessageFunction:
        return MessageFunction(lhs, op, rhs, lhs_field, rhs_field, out)
    builtin.__name__ = builtin.__qualname__ = f"{lhs}_{op}_{rhs}"
    builtin.__doc__ = (f"Message = {TARGETS[lhs]} feature ``lhs_field`` {op} {TARGETS[rhs]} feature "
                       f"``rhs_field`` (feature shapes broadcast).")
    return builtin


def _make_reducer(name: str) -> Callable[[str, str], ReduceFunction]:
    def builtin(msg: str, out: str) -> ReduceFunction:
        return ReduceFunction(name, msg, out)
    builtin.__name__ = builtin.__qualname__ = name
    builtin.__doc__ = f"Reduce the mailbox ``msg`` with {name} into node feature ``out`` (0 if empty)."
    return builtin


BINARY_MESSAGES = [f"{x}_{op}_{y}" for x in "uve" for y in "uve" if x != y for op in BINARY_OPS]
REDUCERS = ["sum", "mean", "max", "min"]

_module = sys.modules[__name__]
for _name in BINARY_MESSAGES:
    _x, _op, _y = _name.split("_")
    setattr(_module, _name, _make_binary(_x, _op, _y))
for _name in REDUCERS:
    setattr(_module, _name, _make_reducer(_name))
# DGL's spelled-out aliases, e.g. fn.src_mul_edge.
for _name in BINARY_MESSAGES:
    _x, _op, _y = _name.split("_")
    _long = {"u": "src", "v": "dst", "e": "edge"}
    setattr(_module, f"{_long[_x]}_{_op}_{_long[_y]}", getattr(_module, _name))
del _module, _name, _x, _op, _y, _long

__all__ = ["copy_u", "copy_e", "copy_src", "copy_edge", *BINARY_MESSAGES, *REDUCERS,
           "BuiltinFunction", "MessageFunction", "ReduceFunction"]
