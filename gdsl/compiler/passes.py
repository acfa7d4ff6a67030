"""Passes: functions from Program to Program, each testable alone.

Most are rewrite rules applied by :func:`rewrite`, which rebuilds the program instruction by
instruction and lets a rule replace an instruction with other (new or existing) values.
:func:`optimize` runs the standard pipeline and records the program after every pass, which is
what ``gdsl.inspect`` shows.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from .ir import Builder, Instr, Program, rebuild
from .ops import MAILBOX_REDUCERS, OPS

# A rule sees the instruction with its arguments already renumbered into the new program and
# returns the index of the value that replaces it, or None to keep it unchanged.
Rule = Callable[[Builder, Instr], "int | None"]


def rewrite(program: Program, rule: Rule) -> Program:
    builder = Builder()
    new_index: dict[int, int] = {}
    for i, ins in enumerate(program.instrs):
        mapped = replace(ins, args=tuple(new_index[a] for a in ins.args))
        replacement = rule(builder, mapped)
        if replacement is None:
            builder.instrs.append(mapped)
            replacement = len(builder.instrs) - 1
        new_index[i] = replacement
    return builder.build((name, new_index[i]) for name, i in program.outputs)


def fixed_point(program: Program, rule: Rule, limit: int = 20) -> Program:
    for _ in range(limit):
        new = dce(rewrite(program, rule))
        if new == program:
            return new
        program = new
    return program


# ------------------------------------------------------------------------------------------------
# Clean-up passes
# ------------------------------------------------------------------------------------------------
def dce(program: Program) -> Program:
    """Dead-code elimination: keep only what the outputs depend on."""
    live = set()
    stack = [i for _, i in program.outputs]
    while stack:
        i = stack.pop()
        if i in live:
            continue
        live.add(i)
        stack.extend(program.instrs[i].args)
    return rebuild(program, sorted(live))


def cse(program: Program) -> Program:
    """Common-subexpression elimination: structurally equal instructions are computed once."""
    seen: dict[tuple, int] = {}

    def rule(builder: Builder, ins: Instr):
        key = ins.key()
        if key in seen:
            return seen[key]
        builder.instrs.append(ins)
        seen[key] = len(builder.instrs) - 1
        return seen[key]

    return dce(rewrite(program, rule))


def _const_value(b: Builder, index: int):
    ins = b.instrs[index]
    return ins.attr("value") if ins.op == "const" else None


def constant_fold(program: Program) -> Program:
    """Evaluate operations whose operands are all scalar constants."""
    def rule(b: Builder, ins: Instr):
        kind = OPS[ins.op].kind
        if kind not in ("unary", "binary", "compare", "ternary") or not ins.args:
            return None
        if any(b.instrs[a].op != "const" for a in ins.args):
            return None
        args = [torch.tensor(b.instrs[a].attr("value"), dtype=b.instrs[a].dtype) for a in ins.args]
        if ins.op == "cast":
            value = args[0].to(ins.attr("to"))
        elif ins.op == "leaky_relu":
            value = OPS[ins.op].torch_fn(args[0], ins.attr("negative_slope"))
        elif ins.op == "elu":
            value = OPS[ins.op].torch_fn(args[0], ins.attr("alpha"))
        else:
            value = OPS[ins.op].torch_fn(*args)
        weak = all(b.instrs[a].attr("weak") for a in ins.args)
        return b.add("const", (), {"value": value.item(), "weak": weak}, dtype=ins.dtype, shape=(),
                     space="param", where=ins.where)

    return dce(rewrite(program, rule))


# ------------------------------------------------------------------------------------------------
# Algebraic simplification
# ------------------------------------------------------------------------------------------------
def _same_type(b: Builder, index: int, ins: Instr) -> bool:
    other = b.instrs[index]
    return other.shape == ins.shape and other.dtype == ins.dtype and other.space == ins.space


def simplify(program: Program) -> Program:
    """Identities (x*1, x+0, reshape/cast to the same type, neg(neg x), ...) and the split of a
    linear layer over a concatenation, ``cat(a, b) @ W = a @ W_a + b @ W_b``, which lets hoisting
    move each half to its own node set."""
    def rule(b: Builder, ins: Instr):
        op, args = ins.op, ins.args
        if op in ("reshape", "cast") and _same_type(b, args[0], ins):
            return args[0]
        if op == "reshape" and b.instrs[args[0]].op == "reshape":
            inner = b.instrs[args[0]]
            return b.add("reshape", (inner.args[0],), {"shape": ins.attr("shape")}, where=ins.where)
        if op == "neg" and b.instrs[args[0]].op == "neg":
            return b.instrs[args[0]].args[0]
        if op in ("add", "sub", "mul", "div", "pow") and len(args) == 2:
            lhs, rhs = args
            identity = {"add": 0, "sub": 0, "mul": 1, "div": 1, "pow": 1}[op]
            if _const_value(b, rhs) == identity and _same_type(b, lhs, ins):
                return lhs
            if op in ("add", "mul") and _const_value(b, lhs) == identity and _same_type(b, rhs, ins):
                return rhs
            if op == "pow" and _const_value(b, rhs) == 2 and _same_type(b, lhs, ins):
                return b.add("mul", (lhs, lhs), where=ins.where)
        if op.startswith("feature_") and ins.attr("keepdim") and _same_type(b, args[0], ins):
            return args[0]
        if op == "matmul":
            return _split_matmul_over_cat(b, ins)
        return None

    return fixed_point(program, rule)


def _split_matmul_over_cat(b: Builder, ins: Instr):
    x, w = ins.args
    cat = b.instrs[x]
    if cat.op != "cat" or cat.attr("axis") % len(cat.shape) != len(cat.shape) - 1:
        return None
    transpose = bool(ins.attr("transpose"))
    weight_axis = 1 if transpose else 0  # the axis of W that multiplies x's last axis
    total = None
    offset = 0
    for part in cat.args:
        width = b.instrs[part].shape[-1]
        w_part = b.add("slice", (w,), {"axis": weight_axis, "start": offset, "stop": offset + width},
                       where=ins.where)
        term = b.add("matmul", (part, w_part), {"transpose": transpose}, where=ins.where)
        total = term if total is None else b.add("add", (total, term), where=ins.where)
        offset += width
    return total


# ------------------------------------------------------------------------------------------------
# Attention: softmax-weighted sums become one online-softmax reduction
# ------------------------------------------------------------------------------------------------
_VIEW_OPS = ("reshape", "expand")


def fuse_softmax(program: Program) -> Program:
    """``mailbox_sum(f(softmax(x)))`` with ``f`` linear in the softmax weights (products with and
    quotients by values that do not depend on them, negation, reshapes and broadcasts of the
    weights) becomes ``mailbox_softmax_sum(x', v)``: ``x'`` is x viewed as the weights were, ``v``
    the product of the other factors. Kernels compute it in one pass over a row's edges with an
    online softmax (running max, running denominator, rescaled accumulator), so the normalised
    weights never exist; the backward recomputes them from the saved per-row log-sum-exp.

    A softmax used any other way is left alone (fusion then asks for ``gdsl.edge_softmax``)."""
    mailbox_dependent: dict[int, bool] = {}

    def depends(b: Builder, i: int) -> bool:
        if i not in mailbox_dependent:
            ins = b.instrs[i]
            mailbox_dependent[i] = ins.op.startswith("mailbox_") or any(depends(b, a) for a in ins.args)
        return mailbox_dependent[i]

    def term(b: Builder, i: int):
        """(logits viewed as the weights, [(factor, 'mul'|'div')], negated) or None."""
        ins = b.instrs[i]
        if ins.op == "mailbox_softmax" and ins.attr("into", "dst") == "dst":
            return ins.args[0], [], False
        if ins.op in _VIEW_OPS:
            inner = term(b, ins.args[0])
            if inner is None:
                return None
            x, factors, negated = inner
            view = b.add(ins.op, (x,), dict(ins.attrs), where=ins.where)
            return view, factors, negated
        if ins.op == "neg":
            inner = term(b, ins.args[0])
            return None if inner is None else (inner[0], inner[1], not inner[2])
        if ins.op in ("mul", "div"):
            sides = [(0, 1), (1, 0)] if ins.op == "mul" else [(0, 1)]
            for k, other in sides:
                if depends(b, ins.args[other]):
                    continue
                inner = term(b, ins.args[k])
                if inner is not None:
                    return inner[0], inner[1] + [(ins.args[other], ins.op)], inner[2]
        return None

    def rule(b: Builder, ins: Instr) -> int | None:
        if ins.op != "mailbox_sum" or ins.attr("into", "dst") != "dst":
            return None
        found = term(b, ins.args[0])
        if found is None:
            return None
        x, factors, negated = found
        weight = None
        for factor, how in factors:
            if weight is None:
                weight = factor if how == "mul" else b.add(
                    "div", (b.add("const", (), {"value": 1.0, "weak": True}, dtype=torch.float64, shape=(),
                                  space="param"), factor), where=ins.where)
            else:
                weight = b.add(how, (weight, factor), where=ins.where)
        if weight is None:
            weight = b.add("const", (), {"value": 1.0, "weak": True}, dtype=torch.float64, shape=(),
                           space="param")
        if negated:
            weight = b.add("neg", (weight,), where=ins.where)
        out = b.add("mailbox_softmax_sum", (x, weight), where=ins.where)
        if b.instrs[out].shape != ins.shape or b.instrs[out].dtype != ins.dtype:
            # broadcasting the weights made the result wider, or promotion changed its type
            target = ins.shape
            if b.instrs[out].shape != target:
                out = b.add("expand", (out,), {"shape": target}, where=ins.where)
            if b.instrs[out].dtype != ins.dtype:
                out = b.add("cast", (out,), {"to": ins.dtype}, where=ins.where)
        return out

    return dce(rewrite(program, rule))


# ------------------------------------------------------------------------------------------------
# Hoisting
# ------------------------------------------------------------------------------------------------
def _per_edge_users(program: Program) -> dict[int, list[int]]:
    """For each value, the instructions that evaluate it once per edge: edge-space instructions
    and mailbox reductions (which read their operand along every in-edge)."""
    users: dict[int, list[int]] = {i: [] for i in range(len(program))}
    for j, ins in enumerate(program.instrs):
        if ins.space == "edge" or ins.op.startswith("mailbox_"):
            for a in ins.args:
                users[a].append(j)
    return users


def hoist(program: Program) -> Program:
    """Compute node-only work once per node instead of once per edge.

    A value in ``src``, ``dst`` or ``param`` space that is more than a load or a constant, and
    that some instruction evaluates per edge, is wrapped in ``materialize``: it is computed for
    every node (by the node stage, with dense torch operations) and the edge kernel only loads it.
    """
    per_edge = _per_edge_users(program)
    targets = {
        i for i, ins in enumerate(program.instrs)
        if ins.space in ("src", "dst", "param") and per_edge[i]
        and OPS[ins.op].kind not in ("load", "const") and ins.op != "materialize"
    }
    if not targets:
        return program
    builder = Builder()
    new_index: dict[int, int] = {}
    materialized: dict[int, int] = {}
    for i, ins in enumerate(program.instrs):
        args = []
        for a in ins.args:
            if a in targets and (ins.space == "edge" or ins.op.startswith("mailbox_")):
                if a not in materialized:
                    builder.instrs.append(Instr("materialize", (new_index[a],), (), program.instrs[a].dtype,
                                                program.instrs[a].shape, program.instrs[a].space,
                                                program.instrs[a].where))
                    materialized[a] = len(builder.instrs) - 1
                args.append(materialized[a])
            else:
                args.append(new_index[a])
        builder.instrs.append(replace(ins, args=tuple(args)))
        new_index[i] = len(builder.instrs) - 1
    return builder.build((name, new_index[i]) for name, i in program.outputs)


PIPELINE: list[tuple[str, Callable[[Program], Program]]] = [
    ("dce", dce),
    ("constant_fold", constant_fold),
    ("simplify", simplify),
    ("cse", cse),
    ("fuse_softmax", fuse_softmax),
    ("hoist", hoist),
]


def optimize(program: Program) -> tuple[Program, list[tuple[str, Program]]]:
    """Run the standard pipeline; also return ``(pass name, program after it)`` for inspection."""
    history = []
    for name, pass_fn in PIPELINE:
        program = pass_fn(program)
        history.append((name, program))
    return program, history
