"""The IR: a small, typed SSA program for one message-passing step.

A program is a tuple of instructions; instruction ``i`` defines value ``%i`` from earlier values.
Each value has a dtype, a concrete feature shape (the shape after the row axis) and a **space**,
the smallest domain it varies over:

- ``param``: no row axis (captured weights, constants);
- ``src`` / ``dst``: one row per source / destination node;
- ``edge``: one row per edge (anything mixing ``src`` and ``dst``, or reading edge data).

Reductions over the mailbox map ``edge`` values to ``dst``. The space is what the passes reason
about: a ``src``-space sub-expression consumed per edge can be computed once per node (hoisting);
a ``dst``-space one is loop-invariant in a destination row.

Programs print like jaxprs::

    { src: h f32[16]; edge: w f32[1]
      %0 = load_src['h']                       src  f32[16]
      %1 = load_edge['w']                      edge f32[1]
      %2 = mul %0 %1                           edge f32[16]
      %3 = mailbox_sum %2                      dst  f32[16]
      return {h_n: %3} }
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

import torch

SPACES = ("param", "src", "dst", "edge")

DTYPE_NAMES = {
    torch.float16: "f16", torch.bfloat16: "bf16", torch.float32: "f32", torch.float64: "f64",
    torch.int32: "i32", torch.int64: "i64", torch.bool: "bool",
}


def join_spaces(spaces: Iterable[str]) -> str:
    """The space of a value computed from values in ``spaces``."""
    found = set(spaces) - {"param"}
    if not found:
        return "param"
    if len(found) == 1:
        return found.pop()
    return "edge"


@dataclass(frozen=True)
class Instr:
    """One SSA instruction. ``attrs`` is a sorted tuple of (name, value) pairs (hashable)."""

    op: str
    args: tuple[int, ...]
    attrs: tuple[tuple[str, Any], ...]
    dtype: torch.dtype
    shape: tuple[int, ...]
    space: str
    where: str | None = field(default=None, compare=False)  # user's "file:line", for errors

    def attr(self, name: str, default: Any = None) -> Any:
        for key, value in self.attrs:
            if key == name:
                return value
        return default

    def key(self) -> tuple:
        """Structural identity (ignores the source location): equal keys compute equal values."""
        return (self.op, self.args, self.attrs, self.dtype, self.shape, self.space)


@dataclass(frozen=True)
class Program:
    """Instructions in definition order plus named outputs ``(name, value index)``.

    Output names are ``"dst:<field>"`` for node results and ``"edge:<field>"`` for edge results.
    """

    instrs: tuple[Instr, ...]
    outputs: tuple[tuple[str, int], ...]

    def __len__(self) -> int:
        return len(self.instrs)

    def __getitem__(self, index: int) -> Instr:
        return self.instrs[index]

    def output(self, name: str) -> Instr:
        return self.instrs[dict(self.outputs)[name]]

    def users(self) -> dict[int, list[int]]:
        uses: dict[int, list[int]] = {i: [] for i in range(len(self.instrs))}
        for i, ins in enumerate(self.instrs):
            for a in ins.args:
                uses[a].append(i)
        return uses

    def loads(self, op: str) -> list[tuple[int, Instr]]:
        return [(i, ins) for i, ins in enumerate(self.instrs) if ins.op == op]

    def fingerprint(self) -> str:
        """A stable hash of the program's structure (the compiled-kernel cache key)."""
        text = repr([ins.key() for ins in self.instrs]) + repr(self.outputs)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def __str__(self) -> str:
        return format_program(self)


def format_type(ins: Instr) -> str:
    shape = ",".join(str(s) for s in ins.shape)
    return f"{ins.space:<5} {DTYPE_NAMES.get(ins.dtype, str(ins.dtype))}[{shape}]"


def format_instr(i: int, ins: Instr) -> str:
    attrs = ", ".join(f"{k}={_fmt_attr(v)}" for k, v in ins.attrs if k != "field")
    fieldname = ins.attr("field")
    head = ins.op + (f"[{fieldname!r}]" if fieldname is not None else "")
    if attrs:
        head += "{" + attrs + "}"
    args = " ".join(f"%{a}" for a in ins.args)
    body = f"%{i} = {head} {args}".rstrip()
    return f"  {body:<44} {format_type(ins)}"


def _fmt_attr(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if isinstance(value, str) else str(value)


def format_program(program: Program) -> str:
    inputs: dict[str, list[str]] = {}
    for ins in program.instrs:
        if ins.op.startswith("load_"):
            where = ins.op[len("load_"):]
            name = ins.attr("field") if ins.attr("field") is not None else f"#{ins.attr('index')}"
            inputs.setdefault(where, []).append(
                f"{name} {DTYPE_NAMES.get(ins.dtype, ins.dtype)}[{','.join(map(str, ins.shape))}]")
    header = "; ".join(f"{k}: {', '.join(v)}" for k, v in inputs.items())
    lines = ["{ " + header]
    lines += [format_instr(i, ins) for i, ins in enumerate(program.instrs)]
    outs = ", ".join(f"{name}: %{idx}" for name, idx in program.outputs)
    lines.append(f"  return {{{outs}}} }}")
    return "\n".join(lines)


class Builder:
    """Appends instructions and returns their indices; shape and space rules live in ``ops``."""

    def __init__(self) -> None:
        self.instrs: list[Instr] = []

    def add(self, op: str, args: tuple[int, ...], attrs: dict[str, Any] | None = None,
            dtype: torch.dtype | None = None, shape: tuple[int, ...] | None = None,
            space: str | None = None, where: str | None = None) -> int:
        from .ops import infer  # ops needs ir; import at call time keeps modules acyclic

        attrs_t = tuple(sorted((attrs or {}).items()))
        arg_instrs = [self.instrs[a] for a in args]
        if dtype is None or shape is None or space is None:
            dtype_i, shape_i, space_i = infer(op, arg_instrs, dict(attrs_t), where)
            dtype = dtype if dtype is not None else dtype_i
            shape = shape if shape is not None else shape_i
            space = space if space is not None else space_i
        self.instrs.append(Instr(op, tuple(args), attrs_t, dtype, tuple(shape), space, where))
        return len(self.instrs) - 1

    def build(self, outputs: Iterable[tuple[str, int]]) -> Program:
        return Program(tuple(self.instrs), tuple(outputs))


def rebuild(program: Program, keep: list[int], remap: dict[int, int] | None = None) -> Program:
    """A program of the instructions ``keep`` (in order), renumbered; ``remap`` redirects uses
    of removed values to kept ones before renumbering."""
    remap = dict(remap or {})

    def resolve(i: int) -> int:
        while i in remap:
            i = remap[i]
        return i

    new_index: dict[int, int] = {}
    instrs = []
    for old in keep:
        ins = program.instrs[old]
        args = tuple(new_index[resolve(a)] for a in ins.args)
        instrs.append(replace(ins, args=args))
        new_index[old] = len(instrs) - 1
    outputs = tuple((name, new_index[resolve(i)]) for name, i in program.outputs)
    return Program(tuple(instrs), outputs)
