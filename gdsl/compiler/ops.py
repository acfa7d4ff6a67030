"""Every IR operation, defined once: its type rule (dtype, feature shape, space) and its meaning
as a torch function on row-major tensors (what the IR interpreter runs).

Adding an op is one entry in ``OPS``. Code generators and autodiff look ops up here by name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..errors import CompileError
from .ir import Instr, join_spaces

Infer = Callable[[list[Instr], dict[str, Any]], tuple[torch.dtype, tuple[int, ...], str]]


@dataclass(frozen=True)
class OpDef:
    name: str
    kind: str  # load | const | unary | binary | ternary | compare | feature_reduce | shape | matmul |
    #            mailbox | rows | structure | materialize
    infer: Infer
    torch_fn: Callable[..., torch.Tensor] | None = None  # elementwise meaning on aligned tensors


def broadcast_shapes(a: tuple[int, ...], b: tuple[int, ...], where: str | None = None,
                     what: str = "") -> tuple[int, ...]:
    """numpy broadcasting of feature shapes (the row axis is never part of them)."""
    try:
        return tuple(torch.broadcast_shapes(a, b))
    except RuntimeError:
        raise CompileError(f"{what}feature shapes {a} and {b} do not broadcast", where=where) from None


def promote(instrs: list[Instr]) -> torch.dtype:
    """Result dtype of mixing operands; weak (Python-number) constants never widen a tensor."""
    strong = [i.dtype for i in instrs if not (i.op == "const" and i.attr("weak"))]
    if not strong:
        strong = [instrs[0].dtype]
    out = strong[0]
    for d in strong[1:]:
        out = torch.promote_types(out, d)
    if any(i.op == "const" and i.attr("weak") and i.dtype.is_floating_point for i in instrs) \
            and not out.is_floating_point and out != torch.bool:
        out = torch.get_default_dtype()
    return out


def _elementwise(instrs: list[Instr], attrs: dict) -> tuple[torch.dtype, tuple[int, ...], str]:
    shape: tuple[int, ...] = ()
    for ins in instrs:
        shape = broadcast_shapes(shape, ins.shape, attrs.get("_where"))
    return promote(instrs), shape, join_spaces(i.space for i in instrs)


def _unary_float(instrs, attrs):
    dtype, shape, space = _elementwise(instrs, attrs)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    return dtype, shape, space


def _compare(instrs, attrs):
    _, shape, space = _elementwise(instrs, attrs)
    return torch.bool, shape, space


def _where(instrs, attrs):
    _, shape, space = _elementwise(instrs, attrs)
    return promote(instrs[1:]), shape, space


def _given(instrs, attrs):  # loads and constants carry their own type
    raise CompileError("internal: loads and constants must be built with explicit types")


def _axis(shape: tuple[int, ...], axis: int) -> int:
    if not -len(shape) <= axis < len(shape):
        raise CompileError(f"feature axis {axis} is out of range for feature shape {shape}")
    return axis % len(shape)


def _feature_reduce(instrs, attrs):
    (x,) = instrs
    axis = _axis(x.shape, attrs["axis"])
    shape = list(x.shape)
    if attrs.get("keepdim"):
        shape[axis] = 1
    else:
        del shape[axis]
    dtype = x.dtype if x.dtype.is_floating_point or attrs.get("op") != "mean" else torch.get_default_dtype()
    return dtype, tuple(shape), x.space


def _reshape(instrs, attrs):
    (x,) = instrs
    new = tuple(attrs["shape"])
    if math.prod(new) != math.prod(x.shape):
        raise CompileError(f"cannot reshape feature shape {x.shape} to {new}")
    return x.dtype, new, x.space


def _cat(instrs, attrs):
    first = instrs[0]
    axis = _axis(first.shape, attrs["axis"])
    total = 0
    for ins in instrs:
        if len(ins.shape) != len(first.shape) or any(
                s != t for k, (s, t) in enumerate(zip(ins.shape, first.shape)) if k != axis):
            raise CompileError(f"torch.cat: feature shapes {[i.shape for i in instrs]} differ "
                               f"outside axis {attrs['axis']}")
        total += ins.shape[axis]
    shape = list(first.shape)
    shape[axis] = total
    return promote(instrs), tuple(shape), join_spaces(i.space for i in instrs)


def _slice(instrs, attrs):
    (x,) = instrs
    axis = _axis(x.shape, attrs["axis"])
    shape = list(x.shape)
    shape[axis] = len(range(attrs["start"], attrs["stop"]))
    return x.dtype, tuple(shape), x.space


def _matmul(instrs, attrs):
    x, w = instrs
    if w.space != "param" or len(w.shape) != 2:
        raise CompileError("matmul: the right operand must be a 2-D weight captured from the "
                           "enclosing scope (a tensor, not a graph feature)")
    k = w.shape[1] if attrs.get("transpose") else w.shape[0]
    m = w.shape[0] if attrs.get("transpose") else w.shape[1]
    if not x.shape or x.shape[-1] != k:
        raise CompileError(f"matmul: feature shape {x.shape} does not match a weight of shape {w.shape}"
                           f"{' (transposed)' if attrs.get('transpose') else ''}")
    return promote([x, w]), x.shape[:-1] + (m,), x.space


def _mailbox_reduce(instrs, attrs):
    """Reduce per-edge values into the destination rows (``into='src'``: into the source rows,
    which is how gradients reach source-node features)."""
    (x,) = instrs
    dtype = x.dtype
    if attrs.get("_op") == "mean" and not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    return dtype, x.shape, attrs.get("into", "dst")


def _expand(instrs, attrs):
    (x,) = instrs
    shape = tuple(attrs["shape"])
    if broadcast_shapes(x.shape, shape) != shape:
        raise CompileError(f"cannot expand feature shape {x.shape} to {shape}")
    return x.dtype, shape, x.space


def _pad(instrs, attrs):
    (x,) = instrs
    axis = _axis(x.shape, attrs["axis"])
    shape = list(x.shape)
    shape[axis] = attrs["size"]
    return x.dtype, tuple(shape), x.space


def _outer(instrs, attrs):
    x, g = instrs
    if x.shape[:-1] != g.shape[:-1]:
        raise CompileError(f"internal: outer of feature shapes {x.shape} and {g.shape}")
    shape = (g.shape[-1], x.shape[-1]) if attrs.get("transpose") else (x.shape[-1], g.shape[-1])
    return promote([x, g]), shape, join_spaces([x.space, g.space])


def _rows_sum(instrs, attrs):
    (x,) = instrs
    return x.dtype, x.shape, "param"


def _mailbox_softmax(instrs, attrs):
    (x,) = instrs
    return (x.dtype if x.dtype.is_floating_point else torch.get_default_dtype()), x.shape, "edge"


def _softmax_sum(instrs, attrs):
    """``sum_e softmax_e(x) * v_e`` into the destination rows: the online-softmax reducer that
    attention compiles to (passes.fuse_softmax). Softmax statistics have x's shape."""
    x, v = instrs
    shape = broadcast_shapes(x.shape, v.shape, attrs.get("_where"))
    dtype = promote([x, v])
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    return dtype, shape, "dst"


def _logsumexp(instrs, attrs):
    (x,) = instrs
    return (x.dtype if x.dtype.is_floating_point else torch.get_default_dtype()), x.shape, "dst"


def _cast(instrs, attrs):
    (x,) = instrs
    return attrs["to"], x.shape, x.space


def _leaky_relu(x, negative_slope):
    return F.leaky_relu(x, negative_slope)


def _elu(x, alpha):
    return F.elu(x, alpha)


OPS: dict[str, OpDef] = {}


def _define(name: str, kind: str, infer: Infer, torch_fn=None) -> None:
    OPS[name] = OpDef(name, kind, infer, torch_fn)


for _name in ("load_src", "load_dst", "load_edge", "load_param"):
    _define(_name, "load", _given)
_define("const", "const", _given)

for _name, _fn in {"neg": torch.neg, "abs": torch.abs, "relu": torch.relu}.items():
    _define(_name, "unary", _elementwise, _fn)
for _name, _fn in {"exp": torch.exp, "log": torch.log, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
                   "sqrt": torch.sqrt, "rsqrt": torch.rsqrt}.items():
    _define(_name, "unary", _unary_float, _fn)
_define("leaky_relu", "unary", _unary_float, _leaky_relu)
_define("elu", "unary", _unary_float, _elu)
_define("cast", "unary", _cast)

for _name, _fn in {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "maximum": torch.maximum,
                   "minimum": torch.minimum}.items():
    _define(_name, "binary", _elementwise, _fn)
_define("div", "binary", _unary_float, torch.div)
_define("pow", "binary", _elementwise, torch.pow)
for _name, _fn in {"gt": torch.gt, "ge": torch.ge, "lt": torch.lt, "le": torch.le, "eq": torch.eq,
                   "ne": torch.ne}.items():
    _define(_name, "compare", _compare, _fn)
_define("where", "ternary", _where, torch.where)

_define("feature_sum", "feature_reduce", _feature_reduce)
_define("feature_max", "feature_reduce", _feature_reduce)
_define("feature_min", "feature_reduce", _feature_reduce)
_define("feature_mean", "feature_reduce", _feature_reduce)
_define("reshape", "shape", _reshape)
_define("cat", "shape", _cat)
_define("slice", "shape", _slice)
_define("matmul", "matmul", _matmul)

for _name in ("mailbox_sum", "mailbox_max", "mailbox_min", "mailbox_mean"):
    _define(_name, "mailbox", _mailbox_reduce)
_define("mailbox_softmax", "mailbox", _mailbox_softmax)
_define("mailbox_softmax_sum", "mailbox", _softmax_sum)
_define("mailbox_logsumexp", "mailbox", _logsumexp)
_define("expand", "shape", _expand)
_define("pad", "shape", _pad)
_define("outer", "matmul", _outer)
_define("rows_sum", "rows", _rows_sum)
_define("edge_id", "structure", lambda instrs, attrs: (torch.int64, (), "edge"))
# Attention dropout: 1 / (1 - p) or 0 per element, from a hash of (seed, stream, edge id, index)
# (gdsl.kernels.random); forward and backward kernels regenerate the same mask.
_define("dropout_mask", "structure",
        lambda instrs, attrs: (attrs["dtype"], tuple(attrs["shape"]), "edge"))
_define("in_degree", "structure", lambda instrs, attrs: (attrs["dtype"], (), "dst"))
# Hoisting's boundary: the value is computed per node by the node stage, then loaded per edge.
_define("materialize", "materialize", lambda instrs, attrs: (instrs[0].dtype, instrs[0].shape, instrs[0].space))

MAILBOX_REDUCERS = ("mailbox_sum", "mailbox_max", "mailbox_min", "mailbox_mean", "mailbox_softmax_sum",
                    "mailbox_logsumexp")
# Reductions that keep online-softmax statistics; the forward kernel saves their per-row
# log-sum-exp as ``<name>@lse`` for the backward (FlashAttention-style).
SOFTMAX_REDUCERS = ("mailbox_softmax_sum", "mailbox_logsumexp")


def infer(op: str, args: list[Instr], attrs: dict[str, Any], where: str | None):
    if op not in OPS:
        raise CompileError(f"internal: unknown IR op {op!r}", where=where)
    extra = dict(attrs)
    extra["_where"] = where
    if op.startswith("mailbox_"):
        extra["_op"] = op[len("mailbox_"):]
    if OPS[op].kind == "feature_reduce":
        extra["op"] = op[len("feature_"):]
    try:
        return OPS[op].infer(args, extra)
    except CompileError as exc:
        if exc.where is None and where is not None:
            raise CompileError(exc.message, where=where) from None
        raise


# ------------------------------------------------------------------------------------------------
# Derivatives (vector-Jacobian products), one per differentiable op.
#
# ``vjp(em, ins, args, out, g)`` returns, for each argument, the IR value of its contribution
# (before un-broadcasting and before reduction into the argument's space, which autodiff does),
# or None. ``em(op, args, **attrs)`` emits an instruction, ``em.const(x)`` a weak constant.
# ------------------------------------------------------------------------------------------------
def _zeros_like_g(em, g):
    return em("mul", (g, em.const(0.0)))


def _mask(em, cond, g):
    return em("where", (cond, g, _zeros_like_g(em, g)))


def _vjp_add(em, ins, a, out, g): return [g, g]
def _vjp_sub(em, ins, a, out, g): return [g, em("neg", (g,))]
def _vjp_mul(em, ins, a, out, g): return [em("mul", (g, a[1])), em("mul", (g, a[0]))]


def _vjp_div(em, ins, a, out, g):
    ga = em("div", (g, a[1]))
    gb = em("neg", (em("div", (em("mul", (g, out)), a[1])),))
    return [ga, gb]


def _vjp_pow(em, ins, a, out, g):
    base, expo = a
    ga = em("mul", (g, em("mul", (expo, em("pow", (base, em("sub", (expo, em.const(1.0)))))))))
    gb = em("mul", (g, em("mul", (out, em("log", (base,))))))
    return [ga, None if em.is_const(expo) else gb]


def _vjp_max_min(kind):
    def rule(em, ins, a, out, g):
        x, y = a
        first = em("gt" if kind == "max" else "lt", (x, y))
        tie = em("eq", (x, y))
        half = em("mul", (g, em.const(0.5)))
        gx = em("where", (tie, half, _mask(em, first, g)))
        gy = em("where", (tie, half, _mask(em, em("lt" if kind == "max" else "gt", (x, y)), g)))
        return [gx, gy]
    return rule


def _vjp_neg(em, ins, a, out, g): return [em("neg", (g,))]
def _vjp_exp(em, ins, a, out, g): return [em("mul", (g, out))]
def _vjp_log(em, ins, a, out, g): return [em("div", (g, a[0]))]
def _vjp_relu(em, ins, a, out, g): return [_mask(em, em("gt", (a[0], em.const(0.0))), g)]


def _vjp_abs(em, ins, a, out, g):
    pos = em("gt", (a[0], em.const(0.0)))
    neg = em("lt", (a[0], em.const(0.0)))
    return [em("where", (pos, g, em("where", (neg, em("neg", (g,)), _zeros_like_g(em, g)))))]


def _vjp_sigmoid(em, ins, a, out, g):
    return [em("mul", (g, em("mul", (out, em("sub", (em.const(1.0), out))))))]


def _vjp_tanh(em, ins, a, out, g):
    return [em("mul", (g, em("sub", (em.const(1.0), em("mul", (out, out))))))]


def _vjp_sqrt(em, ins, a, out, g):
    return [em("div", (g, em("mul", (out, em.const(2.0)))))]


def _vjp_rsqrt(em, ins, a, out, g):
    cube = em("mul", (out, em("mul", (out, out))))
    return [em("mul", (g, em("mul", (cube, em.const(-0.5)))))]


def _vjp_leaky_relu(em, ins, a, out, g):
    slope = em.const(float(ins.attr("negative_slope")))
    return [em("where", (em("gt", (a[0], em.const(0.0))), g, em("mul", (g, slope))))]


def _vjp_elu(em, ins, a, out, g):
    alpha = em.const(float(ins.attr("alpha")))
    return [em("where", (em("gt", (a[0], em.const(0.0))), g, em("mul", (g, em("add", (out, alpha))))))]


def _vjp_cast(em, ins, a, out, g):
    return [em("cast", (g,), to=em.dtype(a[0]))]


def _vjp_where(em, ins, a, out, g):
    cond = a[0]
    return [None, _mask(em, cond, g), em("where", (cond, _zeros_like_g(em, g), g))]


def _vjp_feature_reduce(kind):
    def rule(em, ins, a, out, g):
        x = a[0]
        shape = em.shape(x)
        axis = ins.attr("axis") % len(shape)
        kept = list(shape)
        kept[axis] = 1
        gk = em("reshape", (g,), shape=tuple(kept))
        ok = em("reshape", (out,), shape=tuple(kept))
        if kind == "sum":
            return [em("expand", (gk,), shape=shape)]
        if kind == "mean":
            return [em("expand", (em("div", (gk, em.const(float(shape[axis])))),), shape=shape)]
        hit = em("cast", (em("eq", (x, ok)),), to=em.dtype(g))
        count = em("feature_sum", (hit,), axis=axis, keepdim=True)
        return [em("mul", (em("div", (gk, count)), hit))]
    return rule


def _vjp_reshape(em, ins, a, out, g):
    return [em("reshape", (g,), shape=em.shape(a[0]))]


def _vjp_expand(em, ins, a, out, g):
    return [g]  # autodiff un-broadcasts every contribution to its argument's shape


def _vjp_slice(em, ins, a, out, g):
    size = em.shape(a[0])[ins.attr("axis") % len(em.shape(a[0]))]
    return [em("pad", (g,), axis=ins.attr("axis"), start=ins.attr("start"), size=size)]


def _vjp_pad(em, ins, a, out, g):
    width = em.shape(a[0])[ins.attr("axis") % len(em.shape(a[0]))]
    return [em("slice", (g,), axis=ins.attr("axis"), start=ins.attr("start"), stop=ins.attr("start") + width)]


def _vjp_cat(em, ins, a, out, g):
    grads, offset = [], 0
    for x in a:
        width = em.shape(x)[ins.attr("axis") % len(em.shape(x))]
        grads.append(em("slice", (g,), axis=ins.attr("axis"), start=offset, stop=offset + width))
        offset += width
    return grads


def _vjp_matmul(em, ins, a, out, g):
    x, w = a
    transpose = bool(ins.attr("transpose"))
    gx = em("matmul", (g, w), transpose=not transpose)
    gw = em("outer", (x, g), transpose=transpose)
    return [gx, gw]


def _vjp_materialize(em, ins, a, out, g): return [g]


_VJPS = {
    "add": _vjp_add, "sub": _vjp_sub, "mul": _vjp_mul, "div": _vjp_div, "pow": _vjp_pow,
    "maximum": _vjp_max_min("max"), "minimum": _vjp_max_min("min"), "neg": _vjp_neg,
    "exp": _vjp_exp, "log": _vjp_log, "relu": _vjp_relu, "abs": _vjp_abs, "sigmoid": _vjp_sigmoid,
    "tanh": _vjp_tanh, "sqrt": _vjp_sqrt, "rsqrt": _vjp_rsqrt, "leaky_relu": _vjp_leaky_relu,
    "elu": _vjp_elu, "cast": _vjp_cast, "where": _vjp_where,
    "feature_sum": _vjp_feature_reduce("sum"), "feature_mean": _vjp_feature_reduce("mean"),
    "feature_max": _vjp_feature_reduce("max"), "feature_min": _vjp_feature_reduce("min"),
    "reshape": _vjp_reshape, "expand": _vjp_expand, "slice": _vjp_slice, "pad": _vjp_pad,
    "cat": _vjp_cat, "matmul": _vjp_matmul, "materialize": _vjp_materialize,
}


def vjp_rule(op: str):
    """The derivative rule of ``op`` (None: the op has no gradient, e.g. comparisons, loads)."""
    return _VJPS.get(op)
