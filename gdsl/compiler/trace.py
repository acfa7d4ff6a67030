"""Tracing: run the user's message / reduce / apply functions on proxy objects to record an IR.

``edges.src['h']`` and friends return :class:`Proxy` values; arithmetic, tensor methods and torch
functions on them (caught through ``__torch_function__``, so ``torch.exp``, ``F.leaky_relu`` and
``nn.Linear`` work unchanged) append IR instructions. Captured tensors (weights) become
``load_param`` inputs. Anything the IR cannot express raises :class:`gdsl.CompileError` naming the
construct and the user's file and line.

Shapes follow torch's rules exactly as the user sees them: a message value is ``(E, *feature)``, a
mailbox value ``(B, deg, *feature)`` with the mailbox on axis 1, a per-node value ``(B, *feature)``.
The row axes are symbolic (:data:`ROWS`, :data:`MAILBOX`); feature axes are concrete.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

from ..errors import CompileError, FeatureError
from .ir import Builder, Program


class _Sym:
    """A symbolic row dimension in a proxy's ``.shape`` (prints as its name).

    ``nodes.mailbox[k].shape[1]`` (the number of messages) may be used as a number in the
    computation (it becomes the node's in-degree); any other use raises a CompileError.
    """

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name

    __str__ = __repr__

    def _no_arithmetic(self, *_):
        raise CompileError(f"the {self.name} dimension is only known at run time; it cannot be used "
                           f"in Python arithmetic", where=user_location())

    __int__ = __index__ = __float__ = __add__ = __radd__ = __sub__ = __rsub__ = _no_arithmetic
    __mul__ = __rmul__ = __floordiv__ = __mod__ = __lt__ = __gt__ = __le__ = __ge__ = _no_arithmetic

    def __truediv__(self, other):
        return self._no_arithmetic()

    def __rtruediv__(self, other):
        return self._no_arithmetic()


class UnsupportedAttribute(CompileError, AttributeError):
    """A tensor attribute proxies do not have (also an AttributeError, so ``hasattr`` works)."""


ROWS = _Sym("B")
MAILBOX = _Sym("deg")

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep


def user_location() -> str | None:
    """``file:line`` of the innermost frame outside gdsl and torch: the user's code."""
    frame = sys._getframe(1)
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not (path.startswith(_PACKAGE_DIR) or path.startswith(_TORCH_DIR)):
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back
    return None


@dataclass
class FieldSpec:
    dtype: torch.dtype
    shape: tuple[int, ...]


class Tracer:
    """Owns the IR builder, the captured parameters and the memoised loads of one trace."""

    def __init__(self, schema: Mapping[str, Mapping[str, FieldSpec]]):
        self.schema = schema
        self.builder = Builder()
        self.params: list[torch.Tensor] = []
        self._param_index: dict[int, int] = {}
        self._loads: dict[tuple, int] = {}
        self.seed_param: int | None = None  # the param slot the executor fills with a fresh seed
        self.dropout_streams = 0

    # -- emission ------------------------------------------------------------------------------
    def emit(self, op: str, args: tuple[int, ...], attrs: dict | None = None, **types) -> int:
        return self.builder.add(op, args, attrs, where=user_location(), **types)

    def load(self, space: str, name: str) -> int:
        key = (space, name)
        if key not in self._loads:
            fields = self.schema.get(space, {})
            if name not in fields:
                kind = {"src": "source node", "dst": "destination node", "edge": "edge"}[space]
                raise FeatureError(f"no {kind} feature named {name!r}; the {kind} features are "
                                   f"{sorted(fields)}")
            spec = fields[name]
            self._loads[key] = self.emit(f"load_{space}", (), {"field": name}, dtype=spec.dtype,
                                         shape=tuple(spec.shape), space=space)
        return self._loads[key]

    def param(self, tensor: torch.Tensor) -> int:
        key = id(tensor)
        if key not in self._param_index:
            self.params.append(tensor)
            self._param_index[key] = len(self.params) - 1
        index = self._param_index[key]
        load_key = ("param", index)
        if load_key not in self._loads:
            self._loads[load_key] = self.emit("load_param", (), {"index": index}, dtype=tensor.dtype,
                                              shape=tuple(tensor.shape), space="param")
        return self._loads[load_key]

    def const(self, value: float | int | bool) -> int:
        # Python numbers keep full precision (float64); being weak, they never widen a tensor.
        dtype = torch.bool if isinstance(value, bool) else \
            torch.int64 if isinstance(value, int) else torch.float64
        return self.emit("const", (), {"value": value, "weak": True}, dtype=dtype, shape=(), space="param")

    def instr(self, index: int):
        return self.builder.instrs[index]


class Proxy:
    """A traced tensor. ``lead`` is 1 for ``(B, *feature)`` values, 2 for mailbox values."""

    __slots__ = ("tracer", "index", "lead")

    def __init__(self, tracer: Tracer, index: int, lead: int = 1):
        self.tracer, self.index, self.lead = tracer, index, lead

    # -- shape information ---------------------------------------------------------------------
    @property
    def _instr(self):
        return self.tracer.instr(self.index)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return self._instr.shape

    @property
    def shape(self) -> tuple:
        rows = (ROWS, MAILBOX) if self.lead == 2 else (ROWS,)
        return torch.Size(rows + self.feature_shape) if False else rows + self.feature_shape

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return self.lead + len(self.feature_shape)

    ndim = property(dim)

    @property
    def dtype(self) -> torch.dtype:
        return self._instr.dtype

    @property
    def device(self):
        return torch.device("cpu")

    def __repr__(self) -> str:
        return f"Proxy(%{self.index}, shape={self.shape}, dtype={self.dtype})"

    # -- what cannot be traced -------------------------------------------------------------------
    def __bool__(self):
        raise CompileError("Python control flow (if / while / and / or / assert) depends on a traced "
                           "value; express it with torch.where", where=user_location())

    def __iter__(self):
        raise CompileError("iterating over a traced value (a Python for loop or unpacking) cannot be "
                           "compiled; use tensor operations over whole features", where=user_location())

    def __len__(self):
        raise CompileError("len() of a traced value: its number of rows is only known at run time",
                           where=user_location())

    def _not_a_number(self, *_):
        raise CompileError("a traced value cannot become a Python number (.item(), int(), float())",
                           where=user_location())

    __int__ = __float__ = __index__ = item = tolist = numpy = _not_a_number

    def _in_place(self, *_, **__):
        raise CompileError("in-place operations on traced values (+=, add_, x[...] = ...) cannot be "
                           "compiled; write x = x + y", where=user_location())

    __setitem__ = __iadd__ = __isub__ = __imul__ = __itruediv__ = __ipow__ = _in_place
    add_ = sub_ = mul_ = div_ = copy_ = zero_ = fill_ = clamp_ = relu_ = exp_ = _in_place

    def __getattr__(self, name: str):
        raise UnsupportedAttribute(f"tensor method or attribute .{name} is not supported in compiled "
                                   f"functions", where=user_location())

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return dispatch(func, args, kwargs or {})

    # -- arithmetic ------------------------------------------------------------------------------
    def __add__(self, o): return binary("add", self, o)
    def __radd__(self, o): return binary("add", o, self)
    def __sub__(self, o): return binary("sub", self, o)
    def __rsub__(self, o): return binary("sub", o, self)
    def __mul__(self, o): return binary("mul", self, o)
    def __rmul__(self, o): return binary("mul", o, self)
    def __truediv__(self, o): return binary("div", self, o)
    def __rtruediv__(self, o): return binary("div", o, self)
    def __pow__(self, o): return binary("pow", self, o)
    def __rpow__(self, o): return binary("pow", o, self)
    def __neg__(self): return unary("neg", self)
    def __pos__(self): return self
    def __abs__(self): return unary("abs", self)
    def __gt__(self, o): return binary("gt", self, o)
    def __ge__(self, o): return binary("ge", self, o)
    def __lt__(self, o): return binary("lt", self, o)
    def __le__(self, o): return binary("le", self, o)
    def __eq__(self, o): return binary("eq", self, o)  # type: ignore[override]
    def __ne__(self, o): return binary("ne", self, o)  # type: ignore[override]
    __hash__ = object.__hash__
    def __matmul__(self, o): return matmul(self, o)
    def __rmatmul__(self, o):
        raise CompileError("weight @ feature: write the feature on the left (x @ W)", where=user_location())
    def __getitem__(self, key): return index(self, key)

    # -- tensor methods ----------------------------------------------------------------------------
    def exp(self): return unary("exp", self)
    def log(self): return unary("log", self)
    def sigmoid(self): return unary("sigmoid", self)
    def tanh(self): return unary("tanh", self)
    def relu(self): return unary("relu", self)
    def abs(self): return unary("abs", self)
    def sqrt(self): return unary("sqrt", self)
    def rsqrt(self): return unary("rsqrt", self)
    def neg(self): return unary("neg", self)
    def add(self, o): return binary("add", self, o)
    def sub(self, o): return binary("sub", self, o)
    def mul(self, o): return binary("mul", self, o)
    def div(self, o): return binary("div", self, o)
    def pow(self, o): return binary("pow", self, o)
    def maximum(self, o): return binary("maximum", self, o)
    def minimum(self, o): return binary("minimum", self, o)
    def matmul(self, o): return matmul(self, o)
    def clamp(self, min=None, max=None): return clamp(self, min, max)
    clip = clamp
    def sum(self, dim=None, keepdim=False): return reduce("sum", self, dim, keepdim)
    def mean(self, dim=None, keepdim=False): return reduce("mean", self, dim, keepdim)
    def amax(self, dim=None, keepdim=False): return reduce("max", self, dim, keepdim)
    def amin(self, dim=None, keepdim=False): return reduce("min", self, dim, keepdim)
    def max(self, dim=None, keepdim=False): return max_min("max", self, dim, keepdim)
    def min(self, dim=None, keepdim=False): return max_min("min", self, dim, keepdim)
    def softmax(self, dim): return softmax(self, dim)
    def logsumexp(self, dim, keepdim=False): return logsumexp(self, dim, keepdim)
    def view(self, *shape): return reshape(self, shape)
    def reshape(self, *shape): return reshape(self, shape)
    def flatten(self, start_dim=0, end_dim=-1): return flatten(self, start_dim, end_dim)
    def unsqueeze(self, dim): return unsqueeze(self, dim)
    def squeeze(self, dim=None): return squeeze(self, dim)
    def to(self, *args, **kwargs): return cast_to(self, *args, **kwargs)
    def float(self): return cast(self, torch.float32)
    def double(self): return cast(self, torch.float64)
    def half(self): return cast(self, torch.float16)
    def type_as(self, other): return cast(self, other.dtype)
    def contiguous(self): return self
    def clone(self): return self
    def detach(self):
        raise CompileError(".detach() inside a compiled function is not supported", where=user_location())


# ------------------------------------------------------------------------------------------------
# Operand handling
# ------------------------------------------------------------------------------------------------
def _tracer_of(*values) -> Tracer:
    for v in values:
        if isinstance(v, Proxy):
            return v.tracer
        if isinstance(v, (list, tuple)):
            for w in v:
                if isinstance(w, Proxy):
                    return w.tracer
    raise CompileError("internal: no traced operand")


def _operand(tracer: Tracer, value: Any, lead: int, rank: int) -> tuple[int, int]:
    """IR index of ``value`` as an operand next to proxies of the given ``lead`` and total rank.

    Returns ``(index, lead)``. Captured tensors and numbers become parameters and constants, with
    torch's right-aligned broadcasting mapped onto the feature axes.
    """
    if isinstance(value, Proxy):
        return value.index, value.lead
    if value is MAILBOX:  # m.shape[1]: the number of messages of each node (>= 1 where it is used)
        degree = tracer.emit("in_degree", (), {"dtype": torch.get_default_dtype()})
        return tracer.emit("maximum", (degree, tracer.const(1))), 0
    if isinstance(value, _Sym):
        raise CompileError(f"the {value.name} dimension (all rows) cannot be used as a value",
                           where=user_location())
    if isinstance(value, (bool, int, float)):
        return tracer.const(value), 0
    if isinstance(value, torch.Tensor):
        shape = tuple(value.shape)
        feature_rank = rank - lead
        if len(shape) > feature_rank:
            extra = shape[:len(shape) - feature_rank]
            if any(s != 1 for s in extra):
                raise CompileError(f"a captured tensor of shape {shape} would broadcast over the row "
                                   f"axis of a traced value of rank {rank}", where=user_location())
            index = tracer.param(value)
            index = tracer.emit("reshape", (index,), {"shape": shape[len(extra):]})
            return index, 0
        return tracer.param(value), 0
    raise CompileError(f"unsupported operand of type {type(value).__name__} in a compiled function",
                       where=user_location())


def _align_pair(a: Any, b: Any) -> tuple[Tracer, list[int], int]:
    """Bring two operands to a common layout; returns (tracer, IR indices, result lead)."""
    return _align_many([a, b])


def _align_many(values: list[Any]) -> tuple[Tracer, list[int], int]:
    tracer = _tracer_of(*values)
    proxies = [v for v in values if isinstance(v, Proxy)]
    lead = max(p.lead for p in proxies)
    rank = max(p.dim() for p in proxies)
    indices = []
    for v in values:
        if isinstance(v, Proxy):
            if v.dim() != rank and any(isinstance(w, Proxy) and w.lead == 2 for w in values) or \
                    (v.dim() != rank and v.lead == lead):
                raise CompileError(
                    f"shapes {v.shape} and {[w.shape for w in proxies if w is not v][0]} do not line "
                    f"up: torch would align a row axis with a feature axis; insert axes with "
                    f"unsqueeze / view so both have the same number of dimensions",
                    where=user_location())
            index = v.index
            if v.lead == 1 and lead == 2:
                # (B, 1, *f) next to a mailbox (B, deg, *g): the 1 broadcasts over the mailbox.
                if not v.feature_shape or v.feature_shape[0] != 1:
                    raise CompileError(
                        f"a per-node value of shape {v.shape} next to a mailbox value of shape "
                        f"{[w.shape for w in proxies if w.lead == 2][0]}: insert the mailbox axis with "
                        f"x.unsqueeze(1) or x[:, None]", where=user_location())
                index = tracer.emit("reshape", (index,), {"shape": v.feature_shape[1:]})
            indices.append(index)
        else:
            indices.append(_operand(tracer, v, lead, rank)[0])
    return tracer, indices, lead


def unary(op: str, x: Proxy, **attrs) -> Proxy:
    return Proxy(x.tracer, x.tracer.emit(op, (x.index,), attrs), x.lead)


def binary(op: str, a: Any, b: Any) -> Proxy:
    tracer, (ia, ib), lead = _align_pair(a, b)
    return Proxy(tracer, tracer.emit(op, (ia, ib)), lead)


def where_op(cond: Any, a: Any, b: Any) -> Proxy:
    tracer, idx, lead = _align_many([cond, a, b])
    return Proxy(tracer, tracer.emit("where", tuple(idx)), lead)


def clamp(x: Proxy, lo=None, hi=None) -> Proxy:
    out = x
    if lo is not None:
        out = binary("maximum", out, lo)
    if hi is not None:
        out = binary("minimum", out, hi)
    return out


def cast(x: Proxy, dtype: torch.dtype) -> Proxy:
    if dtype == x.dtype:
        return x
    return unary("cast", x, to=dtype)


def cast_to(x: Proxy, *args, **kwargs) -> Proxy:
    dtype = kwargs.get("dtype")
    for a in args:
        if isinstance(a, torch.dtype):
            dtype = a
        elif isinstance(a, Proxy):
            dtype = a.dtype
    return x if dtype is None else cast(x, dtype)


# ------------------------------------------------------------------------------------------------
# Axes
# ------------------------------------------------------------------------------------------------
def _axis(x: Proxy, dim: int) -> int | str:
    """A user dimension as a feature axis (int, counted from the first feature axis) or the
    string ``"mailbox"``. The batch axis cannot be reduced or reshaped."""
    rank = x.dim()
    if not -rank <= dim < rank:
        raise CompileError(f"dimension {dim} is out of range for a value of shape {x.shape}",
                           where=user_location())
    dim %= rank
    if dim == 0:
        raise CompileError("operations across the batch axis (dimension 0: all edges / all nodes) "
                           "cannot be compiled", where=user_location())
    if x.lead == 2 and dim == 1:
        return "mailbox"
    return dim - x.lead


def reduce(kind: str, x: Proxy, dim, keepdim: bool) -> Proxy:
    if dim is None:
        raise CompileError(f".{kind}() over all dimensions reduces across edges/nodes; give dim=",
                           where=user_location())
    dims = list(dim) if isinstance(dim, (list, tuple)) else [dim]
    out = x
    # Reduce the highest axes first so the remaining indices stay valid.
    for d in sorted((d % x.dim() for d in dims), reverse=True):
        axis = _axis(out, d)
        t = out.tracer
        if axis == "mailbox":
            idx = t.emit(f"mailbox_{kind}", (out.index,))
            if keepdim:
                shape = (1,) + t.instr(idx).shape
                idx = t.emit("reshape", (idx,), {"shape": shape})
            out = Proxy(t, idx, 1)
        else:
            out = Proxy(t, t.emit(f"feature_{kind}", (out.index,), {"axis": axis, "keepdim": bool(keepdim)}),
                        out.lead)
    return out


class _ValuesIndices(tuple):
    """What ``x.max(dim)`` returns: ``.values`` works, ``.indices`` cannot be compiled."""

    @property
    def values(self):
        return self[0]

    @property
    def indices(self):
        raise CompileError("the indices of max/min cannot be compiled; use .values", where=user_location())


def max_min(kind: str, x: Proxy, dim, keepdim: bool):
    if isinstance(dim, Proxy) or isinstance(dim, torch.Tensor):
        return binary("maximum" if kind == "max" else "minimum", x, dim)
    if dim is None:
        raise CompileError(f".{kind}() over all dimensions reduces across edges/nodes; give dim=",
                           where=user_location())
    values = reduce(kind, x, dim, keepdim)
    return _ValuesIndices((values, None))


def softmax(x: Proxy, dim: int) -> Proxy:
    axis = _axis(x, dim)
    t = x.tracer
    if axis == "mailbox":
        return Proxy(t, t.emit("mailbox_softmax", (x.index,)), 2)
    m = Proxy(t, t.emit("feature_max", (x.index,), {"axis": axis, "keepdim": True}), x.lead)
    e = unary("exp", binary("sub", x, m))
    s = Proxy(t, t.emit("feature_sum", (e.index,), {"axis": axis, "keepdim": True}), x.lead)
    return binary("div", e, s)


def logsumexp(x: Proxy, dim, keepdim: bool = False) -> Proxy:
    """``torch.logsumexp``: over the mailbox an online-softmax reduction, over a feature axis
    ``max + log(sum(exp(x - max)))``."""
    if isinstance(dim, (list, tuple)):
        if len(dim) != 1:
            raise CompileError("logsumexp over several dimensions cannot be compiled", where=user_location())
        dim = dim[0]
    axis = _axis(x, dim)
    t = x.tracer
    if axis == "mailbox":
        idx = t.emit("mailbox_logsumexp", (x.index,))
        if keepdim:
            idx = t.emit("reshape", (idx,), {"shape": (1,) + t.instr(idx).shape})
        return Proxy(t, idx, 1)
    m = Proxy(t, t.emit("feature_max", (x.index,), {"axis": axis, "keepdim": True}), x.lead)
    s = Proxy(t, t.emit("feature_sum", (unary("exp", binary("sub", x, m)).index,),
                        {"axis": axis, "keepdim": True}), x.lead)
    out = binary("add", m, unary("log", s))
    return out if keepdim else squeeze(out, dim)


def dropout(x: Proxy, p: float = 0.5, training: bool = True) -> Proxy:
    """``F.dropout`` of a per-edge value (attention dropout): ``x * mask`` with a counter-based
    mask that the backward regenerates (gdsl.kernels.random), never stored. The identity when not
    training or ``p == 0``."""
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise CompileError(f"dropout probability has to be between 0 and 1, got {p}", where=user_location())
    if not training or p == 0.0:
        return x
    t = x.tracer
    ins = t.instr(x.index)
    if ins.space != "edge":
        raise CompileError("dropout inside a compiled function applies to per-edge values (attention "
                           "dropout); apply feature dropout to node features outside the function",
                           where=user_location())
    if not ins.dtype.is_floating_point:
        raise CompileError(f"dropout of a {ins.dtype} value", where=user_location())
    if t.seed_param is None:
        t.params.append(torch.zeros(1, dtype=torch.int64))
        t.seed_param = len(t.params) - 1
    seed = t.emit("load_param", (), {"index": t.seed_param}, dtype=torch.int64, shape=(1,), space="param")
    mask = t.emit("dropout_mask", (seed,), {"p": p, "stream": t.dropout_streams, "dtype": ins.dtype,
                                            "shape": tuple(ins.shape)})
    t.dropout_streams += 1
    return Proxy(t, t.emit("mul", (x.index, mask)), x.lead)


def _feature_part(x: Proxy, shape: tuple) -> tuple[int, ...]:
    """The feature part of a user's target shape for view/reshape."""
    lead_syms = (ROWS, MAILBOX)[:x.lead]
    head = shape[:x.lead]
    ok = all(h is s or (h == -1 and not isinstance(h, _Sym) and k == 0) for k, (h, s) in
             enumerate(zip(head, lead_syms)))
    if len(shape) < x.lead or not ok:
        raise CompileError(f"view/reshape to {shape}: the leading axes must stay the row axes "
                           f"({', '.join(map(str, lead_syms))} or -1 first)", where=user_location())
    feats = [int(s) for s in shape[x.lead:]]
    if any(isinstance(s, _Sym) for s in shape[x.lead:]):
        raise CompileError(f"view/reshape to {shape}: row axes can only come first", where=user_location())
    total = math.prod(x.feature_shape)
    if feats.count(-1) > 1:
        raise CompileError(f"view/reshape to {shape}: more than one -1", where=user_location())
    if -1 in feats:
        known = math.prod(s for s in feats if s != -1)
        if known == 0 or total % known:
            raise CompileError(f"cannot view feature shape {x.feature_shape} as {shape}", where=user_location())
        feats[feats.index(-1)] = total // known
    if math.prod(feats) != total:
        raise CompileError(f"cannot view feature shape {x.feature_shape} as {shape}", where=user_location())
    return tuple(feats)


def reshape(x: Proxy, shape: tuple) -> Proxy:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
        shape = tuple(shape[0])
    feats = _feature_part(x, tuple(shape))
    if feats == x.feature_shape:
        return x
    return Proxy(x.tracer, x.tracer.emit("reshape", (x.index,), {"shape": feats}), x.lead)


def _feature_reshape(x: Proxy, feats: tuple[int, ...]) -> Proxy:
    if feats == x.feature_shape:
        return x
    return Proxy(x.tracer, x.tracer.emit("reshape", (x.index,), {"shape": tuple(feats)}), x.lead)


def unsqueeze(x: Proxy, dim: int) -> Proxy:
    rank = x.dim() + 1
    if not -rank <= dim < rank:
        raise CompileError(f"unsqueeze({dim}) is out of range for shape {x.shape}", where=user_location())
    dim %= rank
    if dim < x.lead or (x.lead == 2 and dim == 1):
        if x.lead == 1 and dim == 1:  # (B, *f) -> (B, 1, *f): ready to broadcast over a mailbox
            return _feature_reshape(x, (1,) + x.feature_shape)
        raise CompileError(f"unsqueeze({dim}) would move the row axes of shape {x.shape}",
                           where=user_location())
    feats = list(x.feature_shape)
    feats.insert(dim - x.lead, 1)
    return _feature_reshape(x, tuple(feats))


def squeeze(x: Proxy, dim=None) -> Proxy:
    feats = list(x.feature_shape)
    if dim is None:
        feats = [s for s in feats if s != 1]
    else:
        axis = _axis(x, dim)
        if axis == "mailbox":
            raise CompileError("squeeze of the mailbox axis is not supported", where=user_location())
        if feats[axis] == 1:
            del feats[axis]
    return _feature_reshape(x, tuple(feats))


def flatten(x: Proxy, start_dim: int, end_dim: int) -> Proxy:
    start = _axis(x, start_dim)
    end = _axis(x, end_dim)
    if "mailbox" in (start, end):
        raise CompileError("flatten across the mailbox axis is not supported", where=user_location())
    feats = list(x.feature_shape)
    merged = math.prod(feats[start:end + 1])
    return _feature_reshape(x, tuple(feats[:start] + [merged] + feats[end + 1:]))


def index(x: Proxy, key: Any) -> Proxy:
    """``x[:, None]``, ``x[..., None]``, ``x[:, :, 0]``, ``x[..., 1:3]``: feature-axis indexing."""
    key = key if isinstance(key, tuple) else (key,)
    if sum(k is Ellipsis for k in key) > 1:
        raise CompileError("more than one ... in an index", where=user_location())
    consumed = sum(1 for k in key if k is not None and k is not Ellipsis)
    if Ellipsis in key:
        pos = key.index(Ellipsis)
        key = key[:pos] + (slice(None),) * (x.dim() - consumed) + key[pos + 1:]
    key = key + (slice(None),) * (x.dim() - sum(1 for k in key if k is not None))
    out = x
    dim = 0  # position in the current value
    for k in key:
        if k is None:
            out = unsqueeze(out, dim)
            dim += 1
        elif isinstance(k, slice):
            if k != slice(None):
                axis = _axis(out, dim)
                if axis == "mailbox":
                    raise CompileError("slicing the mailbox axis is not supported", where=user_location())
                size = out.feature_shape[axis]
                start, stop, step = k.indices(size)
                if step != 1:
                    raise CompileError("strided slices are not supported", where=user_location())
                t = out.tracer
                out = Proxy(t, t.emit("slice", (out.index,), {"axis": axis, "start": start, "stop": stop}),
                            out.lead)
            dim += 1
        elif isinstance(k, int) and not isinstance(k, bool):
            axis = _axis(out, dim)
            if axis == "mailbox":
                raise CompileError("picking one message from the mailbox (mailbox[:, i]) cannot be "
                                   "compiled", where=user_location())
            size = out.feature_shape[axis]
            i = k % size if -size <= k < size else None
            if i is None:
                raise CompileError(f"index {k} is out of range for size {size}", where=user_location())
            t = out.tracer
            sliced = Proxy(t, t.emit("slice", (out.index,), {"axis": axis, "start": i, "stop": i + 1}), out.lead)
            feats = list(sliced.feature_shape)
            del feats[axis]
            out = _feature_reshape(sliced, tuple(feats))
        else:
            raise CompileError(f"indexing with {type(k).__name__} is not supported in compiled "
                               f"functions", where=user_location())
    return out


def matmul(x: Proxy, w: Any, transpose: bool = False) -> Proxy:
    if not isinstance(w, torch.Tensor):
        raise CompileError("x @ W needs W to be a weight tensor captured from the enclosing scope",
                           where=user_location())
    t = x.tracer
    return Proxy(t, t.emit("matmul", (x.index, t.param(w)), {"transpose": transpose}), x.lead)


def linear(x: Proxy, weight: torch.Tensor, bias: torch.Tensor | None = None) -> Proxy:
    out = matmul(x, weight, transpose=True)
    return out if bias is None else binary("add", out, bias)


def cat(values, dim: int = 0) -> Proxy:
    values = list(values)
    proxies = [v for v in values if isinstance(v, Proxy)]
    if not proxies:
        raise CompileError("internal: torch.cat without traced values")
    tracer, indices, lead = _align_many(values) if len({p.dim() for p in proxies}) == 1 else (None, None, None)
    if tracer is None:
        raise CompileError(f"torch.cat of values with different numbers of dimensions "
                           f"{[p.shape for p in proxies]}", where=user_location())
    axis = _axis(proxies[0], dim)
    if axis == "mailbox":
        raise CompileError("torch.cat along the mailbox axis is not supported", where=user_location())
    return Proxy(tracer, tracer.emit("cat", tuple(indices), {"axis": axis}), lead)


# ------------------------------------------------------------------------------------------------
# torch function dispatch
# ------------------------------------------------------------------------------------------------
def _activation(op: str):
    def handler(x, *args, **kwargs):
        kwargs.pop("inplace", None)
        if op == "leaky_relu":
            slope = args[0] if args else kwargs.get("negative_slope", 0.01)
            return unary("leaky_relu", x, negative_slope=float(slope))
        if op == "elu":
            alpha = args[0] if args else kwargs.get("alpha", 1.0)
            return unary("elu", x, alpha=float(alpha))
        return unary(op, x)
    return handler


def _torch_max_min(kind: str):
    def handler(x, dim=None, keepdim=False, **kwargs):
        if isinstance(dim, (Proxy, torch.Tensor)) or isinstance(x, torch.Tensor):
            return binary("maximum" if kind == "max" else "minimum", x, dim)
        return max_min(kind, x, kwargs.get("dim", dim), keepdim)
    return handler


def _softmax_handler(x, dim=None, *args, **kwargs):
    if dim is None:
        dim = kwargs.get("dim")
    if dim is None:
        raise CompileError("softmax needs dim=", where=user_location())
    return softmax(x, dim)


def _reduce_handler(kind):
    def handler(x, dim=None, keepdim=False, **kwargs):
        return reduce(kind, x, kwargs.get("dim", dim), keepdim)
    return handler


def _binary_handler(op):
    def handler(a, b, *args, **kwargs):
        return binary(op, a, b)
    return handler


def _reverse_binary(op):
    def handler(a, b, *args, **kwargs):
        return binary(op, b, a)
    return handler


_HANDLERS: dict[Any, Callable] = {}


def _register(funcs, handler):
    for f in funcs:
        _HANDLERS[f] = handler


for _op in ("exp", "log", "sigmoid", "tanh", "relu", "abs", "sqrt", "rsqrt", "neg"):
    _register([getattr(torch, _op), getattr(torch.Tensor, _op)], _activation(_op))
_register([F.relu, torch.relu_], _activation("relu"))
_register([F.sigmoid, F.tanh], lambda x, *a, **k: unary("sigmoid" if False else "tanh", x))
_HANDLERS[F.sigmoid] = _activation("sigmoid")
_HANDLERS[F.tanh] = _activation("tanh")
_register([F.leaky_relu], _activation("leaky_relu"))
_register([F.dropout], lambda x, p=0.5, training=True, inplace=False: dropout(x, p, training))
_register([F.elu], _activation("elu"))
for _name, _op in {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "true_divide": "div",
                   "pow": "pow", "maximum": "maximum", "minimum": "minimum", "gt": "gt", "ge": "ge",
                   "lt": "lt", "le": "le", "eq": "eq", "ne": "ne", "subtract": "sub", "multiply": "mul"}.items():
    if hasattr(torch, _name):
        _HANDLERS[getattr(torch, _name)] = _binary_handler(_op)
    if hasattr(torch.Tensor, _name):
        _HANDLERS[getattr(torch.Tensor, _name)] = _binary_handler(_op)
for _dunder, _op in {"__add__": "add", "__sub__": "sub", "__mul__": "mul", "__truediv__": "div",
                     "__pow__": "pow", "__gt__": "gt", "__ge__": "ge", "__lt__": "lt", "__le__": "le",
                     "__eq__": "eq", "__ne__": "ne"}.items():
    _HANDLERS[getattr(torch.Tensor, _dunder)] = _binary_handler(_op)
for _dunder, _op in {"__radd__": "add", "__rsub__": "sub", "__rmul__": "mul", "__rtruediv__": "div",
                     "__rpow__": "pow"}.items():
    _HANDLERS[getattr(torch.Tensor, _dunder)] = _reverse_binary(_op)
_HANDLERS[torch.Tensor.__neg__] = _activation("neg")
_register([torch.sum, torch.Tensor.sum], _reduce_handler("sum"))
_register([torch.mean, torch.Tensor.mean], _reduce_handler("mean"))
_register([torch.amax, torch.Tensor.amax], _reduce_handler("max"))
_register([torch.amin, torch.Tensor.amin], _reduce_handler("min"))
_register([torch.max, torch.Tensor.max], _torch_max_min("max"))
_register([torch.min, torch.Tensor.min], _torch_max_min("min"))
_register([torch.softmax, F.softmax, torch.Tensor.softmax], _softmax_handler)
_register([torch.logsumexp, torch.Tensor.logsumexp],
          lambda x, dim=None, keepdim=False, **k: logsumexp(x, k.get("dim", dim), keepdim))
_register([torch.where], lambda c, a=None, b=None: where_op(c, a, b))
_register([torch.clamp, torch.clip, torch.Tensor.clamp], lambda x, min=None, max=None: clamp(x, min, max))
_register([torch.cat, torch.concat], lambda tensors, dim=0, **k: cat(tensors, k.get("dim", dim)))
_register([torch.matmul, torch.mm, torch.Tensor.__matmul__, torch.Tensor.matmul],
          lambda a, b: matmul(a, b) if isinstance(a, Proxy) else Proxy.__rmatmul__(b, a))
_register([F.linear], lambda x, weight, bias=None: linear(x, weight, bias))
_register([torch.unsqueeze, torch.Tensor.unsqueeze], lambda x, dim: unsqueeze(x, dim))
_register([torch.squeeze, torch.Tensor.squeeze], lambda x, dim=None: squeeze(x, dim))
_register([torch.reshape, torch.Tensor.reshape, torch.Tensor.view], lambda x, *shape: reshape(x, shape))
_register([torch.flatten, torch.Tensor.flatten], lambda x, start_dim=0, end_dim=-1: flatten(x, start_dim, end_dim))


def dispatch(func, args, kwargs):
    handler = _HANDLERS.get(func)
    if handler is None:
        name = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
        module = getattr(func, "__module__", "") or ""
        raise CompileError(f"{module + '.' if module else ''}{name} is not supported in compiled "
                           f"message/reduce functions", where=user_location())
    return handler(*args, **kwargs)


# ------------------------------------------------------------------------------------------------
# The user-facing proxies for ``edges`` and ``nodes``
# ------------------------------------------------------------------------------------------------
class _FieldProxy(Mapping):
    def __init__(self, tracer: Tracer, space: str):
        self._tracer, self._space = tracer, space

    def __getitem__(self, key: str) -> Proxy:
        return Proxy(self._tracer, self._tracer.load(self._space, key), 1)

    def __iter__(self):
        return iter(self._tracer.schema.get(self._space, {}))

    def __len__(self):
        return len(self._tracer.schema.get(self._space, {}))

    def __setitem__(self, key, value):
        raise CompileError("assigning to edges.src/dst/data or nodes.data inside a UDF is not supported; "
                           "return the value in the output dict", where=user_location())


class EdgesProxy:
    """The ``edges`` a traced message function receives."""

    def __init__(self, tracer: Tracer):
        self.src = _FieldProxy(tracer, "src")
        self.dst = _FieldProxy(tracer, "dst")
        self.data = _FieldProxy(tracer, "edge")

    def edges(self):
        raise CompileError("edges.edges() (edge ids inside a message function) is not supported in "
                           "compiled functions", where=user_location())

    def batch_size(self):
        raise CompileError("edges.batch_size() is only known at run time", where=user_location())


class _MailboxProxy(Mapping):
    def __init__(self, tracer: Tracer, messages: Mapping[str, Proxy]):
        self._tracer, self._messages = tracer, messages

    def __getitem__(self, key: str) -> Proxy:
        if key not in self._messages:
            raise FeatureError(f"no message named {key!r} in the mailbox; the message function "
                               f"produced {sorted(self._messages)}")
        value = self._messages[key]
        return Proxy(self._tracer, value.index, 2)

    def __iter__(self):
        return iter(self._messages)

    def __len__(self):
        return len(self._messages)


class NodesProxy:
    """The ``nodes`` a traced reduce (or apply) function receives."""

    def __init__(self, tracer: Tracer, messages: Mapping[str, Proxy] | None):
        self.data = _FieldProxy(tracer, "dst")
        self._mailbox = None if messages is None else _MailboxProxy(tracer, messages)

    @property
    def mailbox(self):
        if self._mailbox is None:
            raise CompileError("nodes.mailbox only exists in reduce functions", where=user_location())
        return self._mailbox

    def nodes(self):
        raise CompileError("nodes.nodes() (node ids) is not supported in compiled functions",
                           where=user_location())

    def batch_size(self):
        raise CompileError("nodes.batch_size() is only known at run time", where=user_location())


# ------------------------------------------------------------------------------------------------
# Entry points
# ------------------------------------------------------------------------------------------------
@dataclass
class Traced:
    """A traced step: the IR program and the captured tensors its ``load_param``s index.
    ``seed_param``: the param slot of the random seed (dropout), filled anew for every call."""

    program: Program
    params: list[torch.Tensor]
    seed_param: int | None = None


def _outputs(func: Callable, result: Any, what: str) -> dict[str, Proxy]:
    name = getattr(func, "__qualname__", repr(func))
    if not isinstance(result, Mapping):
        raise CompileError(f"{what} function {name} must return a dict of values, got "
                           f"{type(result).__name__}", where=_definition_site(func))
    out = {}
    for key, value in result.items():
        if not isinstance(value, Proxy):
            raise CompileError(f"{what} function {name} returned {type(value).__name__} for {key!r}; "
                               f"outputs must be computed from the graph's features",
                               where=_definition_site(func))
        out[key] = value
    return out


def _definition_site(func: Callable) -> str | None:
    code = getattr(func, "__code__", None) or getattr(getattr(func, "__call__", None), "__code__", None)
    return f"{code.co_filename}:{code.co_firstlineno}" if code else None


def trace_edge_map(func: Callable, schema: Mapping[str, Mapping[str, FieldSpec]]) -> Traced:
    """Trace an ``apply_edges`` function: outputs ``edge:<name>``."""
    tracer = Tracer(schema)
    outs = _outputs(func, func(EdgesProxy(tracer)), "edge")
    program = tracer.builder.build((f"edge:{k}", v.index) for k, v in outs.items())
    return Traced(program, tracer.params, tracer.seed_param)


def trace_gather_reduce(message_func: Callable, reduce_func: Callable,
                        schema: Mapping[str, Mapping[str, FieldSpec]]) -> Traced:
    """Trace a message and a reduce function into one program with outputs ``dst:<name>``.

    The reduce function reads the message values directly: messages are never stored.
    """
    tracer = Tracer(schema)
    messages = _outputs(message_func, message_func(EdgesProxy(tracer)), "message")
    result = _outputs(reduce_func, reduce_func(NodesProxy(tracer, messages)), "reduce")
    outputs = []
    for key, value in result.items():
        ins = tracer.instr(value.index)
        if value.lead != 1 or ins.space == "edge":
            raise CompileError(f"reduce function output {key!r} still has the mailbox axis "
                               f"(shape {value.shape}); reduce it over dimension 1",
                               where=ins.where or _definition_site(reduce_func))
        index = value.index
        if not ins.op.startswith("mailbox_"):
            # DGL runs a reduce function only on nodes that received messages; the others get 0.
            degree = tracer.builder.add("in_degree", (), {"dtype": torch.float32}, where=ins.where)
            received = tracer.builder.add("gt", (degree, tracer.const(0)), where=ins.where)
            index = tracer.builder.add("where", (received, index, tracer.const(0)), where=ins.where)
            if tracer.instr(index).dtype != ins.dtype:
                index = tracer.builder.add("cast", (index,), {"to": ins.dtype}, where=ins.where)
        outputs.append((f"dst:{key}", index))
    program = tracer.builder.build(outputs)
    return Traced(program, tracer.params, tracer.seed_param)


def trace_node_apply(func: Callable, schema: Mapping[str, Mapping[str, FieldSpec]]) -> Traced:
    """Trace an ``apply_nodes`` function over ``nodes.data`` (space ``dst``)."""
    tracer = Tracer(schema)
    outs = _outputs(func, func(NodesProxy(tracer, None)), "apply")
    program = tracer.builder.build((f"dst:{k}", v.index) for k, v in outs.items())
    return Traced(program, tracer.params, tracer.seed_param)
