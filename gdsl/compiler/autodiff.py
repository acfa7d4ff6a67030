"""Reverse-mode differentiation of IR programs.

``vjp(program)`` returns the backward program: it recomputes what it needs from the forward
inputs (nothing per edge is saved, FlashAttention-style), reads the output gradients as
``load_dst['grad:<name>']`` / ``load_edge['grad:<name>']`` and what the forward kernel saved per
row: for max/min reductions the winning edge ids ``load_dst['<name>@arg']``, for softmax
reductions the log-sum-exp ``load_dst['<name>@lse']`` (and the output ``'<name>@out'``), from
which the softmax weights are recomputed per edge. Its outputs are ``"<space>:grad:<input>"``.

The space system does the bookkeeping of message passing: a contribution computed per edge to a
per-node value is summed over that node's edges with ``mailbox_sum{into=src|dst}``, so the
gradient to source features becomes a gather-reduce over the out-CSR, and a contribution to a
weight is summed over all rows with ``rows_sum``. Each op's local derivative lives with the op
(``ops.vjp_rule``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import CompileError
from .ir import Builder, Instr, Program
from .ops import MAILBOX_REDUCERS, OPS, vjp_rule


@dataclass(frozen=True)
class GradInput:
    """A differentiable input of a program: ``(space, name)`` with name ``field`` or ``#index``."""

    space: str
    name: str

    @property
    def output_name(self) -> str:
        return f"{self.space}:grad:{self.name}"


def input_of(ins: Instr) -> GradInput | None:
    if ins.op == "load_param":  # a traced weight (#index) or a node-stage value ($k)
        index = ins.attr("index")
        return GradInput("param", f"#{index}" if index is not None else ins.attr("field"))
    if ins.op in ("load_src", "load_dst", "load_edge"):
        return GradInput(ins.space, ins.attr("field"))
    return None


class _Emitter:
    """What derivative rules use to emit instructions into the backward program."""

    def __init__(self, builder: Builder, where: str | None):
        self.b = builder
        self.where = where

    def __call__(self, op: str, args: tuple[int, ...], **attrs) -> int:
        return self.b.add(op, tuple(args), attrs or None, where=self.where)

    def const(self, value) -> int:
        dtype = torch.bool if isinstance(value, bool) else torch.float64  # weak: never widens
        return self.b.add("const", (), {"value": value, "weak": True}, dtype=dtype, shape=(),
                          space="param", where=self.where)

    def is_const(self, index: int) -> bool:
        return self.b.instrs[index].op == "const"

    def shape(self, index: int) -> tuple[int, ...]:
        return self.b.instrs[index].shape

    def dtype(self, index: int) -> torch.dtype:
        return self.b.instrs[index].dtype


def _unbroadcast(em: _Emitter, value: int, shape: tuple[int, ...]) -> int:
    """Sum a contribution over the feature axes along which its argument was broadcast."""
    current = em.shape(value)
    while len(current) > len(shape):
        value = em("feature_sum", (value,), axis=0, keepdim=False)
        current = em.shape(value)
    for axis, (have, want) in enumerate(zip(current, shape)):
        if want == 1 and have != 1:
            value = em("feature_sum", (value,), axis=axis, keepdim=True)
    if em.shape(value) != tuple(shape):
        value = em("expand", (value,), shape=tuple(shape))
    return value


def _per_edge(ins: Instr) -> bool:
    return ins.space == "edge" or ins.op.startswith("mailbox_")


def _into_space(em: _Emitter, value: int, user: Instr, target: str) -> int:
    """Move a contribution from where ``user`` evaluates it to the argument's space."""
    if target == "edge":
        return value
    if _per_edge(user):
        if target in ("src", "dst"):
            return em("mailbox_sum", (value,), into=target)
        value = em("mailbox_sum", (value,), into="dst")
    if em.b.instrs[value].space != "param":
        value = em("rows_sum", (value,))
    return value


def _saved(em: _Emitter, ins: Instr, index: int, output_names: dict[int, str], suffix: str,
           shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """A per-row value the forward kernel saved for reduction ``index`` (``@arg``, ``@lse``, ``@out``)."""
    name = output_names.get(index)
    if name is None:
        raise CompileError(f"internal: a {ins.op} reduction must be a kernel output to be differentiated "
                           f"(the forward kernel saves what its backward reads)")
    return em.b.add("load_dst", (), {"field": f"{name}{suffix}"}, dtype=dtype, shape=shape, space="dst",
                    where=em.where)


def _mailbox_vjp(em: _Emitter, ins: Instr, index: int, g: int, output_names: dict[int, str],
                 program: Program) -> list[int | None]:
    """Per-edge contributions of a mailbox reduction's gradient ``g`` (a dst-space value), one per
    argument."""
    if ins.attr("into", "dst") != "dst":
        raise CompileError("internal: differentiating a reduction into source rows")
    op = ins.op
    if op == "mailbox_sum":
        return [g]
    if op == "mailbox_mean":
        degree = em.b.add("in_degree", (), {"dtype": em.dtype(g)}, where=em.where)
        return [em("div", (g, em("maximum", (degree, em.const(1.0)))))]
    if op in ("mailbox_max", "mailbox_min"):
        arg = _saved(em, ins, index, output_names, "@arg", ins.shape, torch.int64)
        won = em("eq", (arg, em.b.add("edge_id", (), None, where=em.where)))
        return [em("where", (won, g, em("mul", (g, em.const(0.0)))))]
    if op == "mailbox_logsumexp":
        # d lse / d x_e = softmax weight of e = exp(x_e - lse[dst])
        lse = _saved(em, ins, index, output_names, "@lse", ins.shape, ins.dtype)
        return [em("mul", (g, em("exp", (em("sub", (ins.args[0], lse)),))))]
    if op == "mailbox_softmax_sum":
        # out = sum_e a_e v_e with a = softmax(x): recompute a from the saved log-sum-exp; then
        # dv_e = a_e g and dx_e = a_e (<g, v_e> - <g, out>), <.,.> summed over the axes the
        # weights were broadcast along. <g, out> is per row: no second pass over the edges.
        x, v = ins.args
        x_shape = program.instrs[x].shape
        lse = _saved(em, ins, index, output_names, "@lse", x_shape, ins.dtype)
        out = _saved(em, ins, index, output_names, "@out", ins.shape, ins.dtype)
        alpha = em("exp", (em("sub", (x, lse)),))
        dv = em("mul", (alpha, g))
        per_edge = _unbroadcast(em, em("mul", (g, v)), x_shape)
        per_row = _unbroadcast(em, em("mul", (g, out)), x_shape)
        dx = em("mul", (alpha, em("sub", (per_edge, per_row))))
        return [dx, dv]
    raise CompileError(f"differentiating {op} is not supported yet", where=ins.where)


def vjp(program: Program) -> Program:
    """The backward program of ``program`` (see the module docstring)."""
    builder = Builder()
    builder.instrs.extend(program.instrs)  # recompute the forward values the rules need
    adjoints: dict[int, list[int]] = {}
    output_names: dict[int, str] = {}
    for name, index in program.outputs:
        space, field = name.split(":", 1)
        ins = program.instrs[index]
        output_names[index] = field
        if not ins.dtype.is_floating_point:
            continue
        seed = builder.add(f"load_{space}", (), {"field": f"grad:{field}"}, dtype=ins.dtype,
                           shape=ins.shape, space=space)
        adjoints.setdefault(index, []).append(seed)

    for index in range(len(program.instrs) - 1, -1, -1):
        contributions = adjoints.get(index)
        if not contributions:
            continue
        ins = program.instrs[index]
        em = _Emitter(builder, ins.where)
        g = contributions[0]
        for extra in contributions[1:]:
            g = em("add", (g, extra))
        adjoints[index] = [g]
        if ins.op.startswith("mailbox_"):
            if ins.op not in MAILBOX_REDUCERS:
                raise CompileError(f"differentiating {ins.op} is not supported yet", where=ins.where)
            grads = _mailbox_vjp(em, ins, index, g, output_names, program)
        elif OPS[ins.op].kind in ("load", "const", "compare", "structure"):
            continue
        else:
            rule = vjp_rule(ins.op)
            if rule is None:
                raise CompileError(f"no derivative for {ins.op}", where=ins.where)
            grads = rule(em, ins, list(ins.args), index, g)
        for arg, contribution in zip(ins.args, grads):
            target = program.instrs[arg]
            if contribution is None or not target.dtype.is_floating_point:
                continue
            if target.op == "const":
                continue
            contribution = _unbroadcast(em, contribution, target.shape)
            contribution = _into_space(em, contribution, ins, target.space)
            if em.dtype(contribution) != target.dtype:
                contribution = em("cast", (contribution,), to=target.dtype)
            adjoints.setdefault(arg, []).append(contribution)

    outputs = []
    seen = set()
    for index, ins in enumerate(program.instrs):
        source = input_of(ins)
        if source is None or index not in adjoints or source in seen:
            continue
        seen.add(source)
        outputs.append((source.output_name, adjoints[index][0]))
    return builder.build(outputs)
