"""Triton code generation for fused kernels (gather-reduce and edge map).

:func:`generate_triton` turns a :class:`~gdsl.compiler.fusion.KernelPlan` into the text of a Python
module with one ``@triton.jit`` function. Every kernel has the shape of docs/design.md, section 4::

    pid_f = tl.program_id(1)                       # which feature tile of the outputs
    <per-program values: feature index vectors, masks, weights>
    for rr in range(ROWS):                         # ROWS rows of the CSR per program
        v = ...; start = indptr[v]; end = indptr[v + 1]
        <per-row values (e.g. destination features), accumulators [BLOCK_E, BF]>
        for j0 in range(start, end, BLOCK_E):      # the row's entries, a block at a time
            j = j0 + tl.arange(0, BLOCK_E); em = j < end
            nbr = indices[j]; e = eids[j]          # [BLOCK_E] neighbour ids and edge ids
            <message math on [BLOCK_E, BF] tiles, one line per IR instruction>
            <accumulate / store per-edge outputs>
        <reduce the accumulators over the edge axis, finalise (mean, max/min args), store>

Softmax reductions (``mailbox_softmax_sum``, ``mailbox_logsumexp``) are online (FlashAttention
style): per edge block the running max ``M`` and denominator ``S`` of the logits and the weighted
sum are rescaled by ``exp(M_old - M_new)``, so one pass over the row's edges suffices.

**Tiles.** Every value is a Triton tensor whose axis 0 is the edge axis (size ``BLOCK_E``, or 1
for values that do not vary per edge) and whose axis 1 runs over the flat features of the output
being computed (``BF_<g>`` lanes per program, one constexpr per output width ``g``; outputs wider
than ``BLOCK_F`` use more programs along grid axis 1). A value of feature shape ``(H, D)`` sits at
flat index ``h * D + d``; broadcasting, views (reshape, slice, expand, pad, cat) and head layouts
are resolved at generation time into integer index arithmetic on the feature index vectors, so a
per-head weight ``(H, 1)`` is read at ``f // D`` and a per-edge scalar is loaded once per edge as a
``[BLOCK_E, 1]`` column. Inner reductions (feature sums/max/min/mean, ``matmul`` with a weight,
``outer``) add one tile axis (``RB_<n>`` lanes, looping when the reduced extent is longer) and
reduce over it, so ``(h_u * h_v).sum(-1)`` is a ``[BLOCK_E, BF, RB]`` tile summed over axis 2.
Sizes are padded to powers of two; masks cover the tails, and every load is masked.

**Placement.** A sub-expression is computed at the outermost level it depends on: per program
(weights, index vectors), per row (row-node features), per edge block, or inside an inner
reduction loop; values are memoised per (instruction, index), so a message read by several
reducers is computed once.

**Numerics.** Values are computed in fp32 for fp16/bf16/fp32 inputs (fp64 stays fp64, integers in
their own type): loads upcast, accumulation is in fp32, stores round to the output dtype. An IR
``cast`` to fp16/bf16 rounds. Messages reduced by max/min are rounded to their dtype before the
comparison, so the reduced value is one of the messages.

**Semantics** (those of :mod:`gdsl.compiler.interpret`):

- ``rows == 'dst'``: rows of the in-CSR; ``indices[j]`` is the source node of entry ``j``,
  ``eids[j]`` its edge id; ``load_src`` reads row ``indices[j]``, ``load_dst`` row ``v``.
  ``rows == 'src'`` (backward kernels): rows of the out-CSR, ``indices[j]`` is the destination;
  ``load_src`` reads row ``v``, ``load_dst`` row ``indices[j]``; reductions go ``into='src'``.
- ``sum``; ``mean`` divides by the number of entries of the row; rows without entries get 0;
- ``max`` / ``min``: the winning edge id per (row, feature) is written to an int64 output
  ``<name>@arg`` (ties: the smallest edge id; -1 for empty rows);
- ``softmax_sum`` (``mailbox_softmax_sum(x, v)``, dst rows only): ``sum_e softmax(x)_e * v_e``
  over the row's entries, the softmax taken per element of x's feature shape and broadcast
  (numpy, right-aligned) against v's; every output lane keeps its own copy of the running
  statistics of its logit. It also writes ``<name>@lse`` (x's feature shape, the output dtype):
  the per-row log-sum-exp ``M + log S`` of the logits. Rows without entries get 0 in both;
- ``logsumexp`` (``mailbox_logsumexp(x)``, dst rows only): ``log sum_e exp(x_e)`` (max-subtracted,
  online as above), 0 for rows without entries; it writes only its main output (which is its own
  ``@lse``);
- per-edge outputs are written at row ``eids[j]`` of ``(num_edges, flat)`` arrays.

The source takes launch-time constexprs (``ROWS``, ``BLOCK_E``, ``BF_<g>``, ``RB_<n>``); the
schedule knobs that choose them are a :class:`TritonConfig` (see :meth:`TritonSource.schedule`).
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ...errors import CompileError
from ...kernels.schedules import TritonConfig  # noqa: F401  (re-exported: the schedule knobs)
from ..fusion import KernelPlan
from ..ir import Program
from ..ops import OPS, promote
from .common import InputSpec, OutputSpec, argument_lines, plan_inputs
from .common import describe as _describe
from .common import sanitize as _sanitize

CODEGEN_VERSION = "triton-1"

_PROG, _ROW, _EDGE = 0, 1, 2  # placement levels; inner reduction loops are 3, 4, ...

_REDUCERS = {"mailbox_sum": "sum", "mailbox_mean": "mean", "mailbox_max": "max", "mailbox_min": "min",
             "mailbox_softmax_sum": "softmax_sum", "mailbox_logsumexp": "logsumexp"}
_SOFTMAX = ("softmax_sum", "logsumexp")  # online-softmax reducers (in-CSR rows only)
_F16 = (torch.float16, torch.bfloat16)
_COMPUTE = {torch.float16: torch.float32, torch.bfloat16: torch.float32, torch.float32: torch.float32,
            torch.float64: torch.float64, torch.int32: torch.int32, torch.int64: torch.int64,
            torch.bool: torch.bool}
_TL = {torch.float16: "tl.float16", torch.bfloat16: "tl.bfloat16", torch.float32: "tl.float32",
       torch.float64: "tl.float64", torch.int32: "tl.int32", torch.int64: "tl.int64",
       torch.bool: "tl.int1"}
_STORAGE = {**_TL, torch.bool: "tl.uint8"}  # bool tensors travel as uint8
_INT64_MAX = 2**63 - 1


def _pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def _pow2_floor(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n).bit_length() - 1)


def _strides(shape: tuple[int, ...]) -> list[int]:
    out, acc = [], 1
    for s in reversed(shape):
        out.append(acc)
        acc *= s
    return out[::-1]


def _compute(dtype: torch.dtype, where: str | None = None) -> torch.dtype:
    if dtype not in _COMPUTE:
        raise CompileError(f"the Triton backend does not support dtype {dtype}", where=where)
    return _COMPUTE[dtype]


_ATOM = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*(\[[^\[\]]*\])?$|^\d+(\.\d*)?$")


def _paren(text: str) -> str:
    return text if _ATOM.match(text) else f"({text})"


# ------------------------------------------------------------------------------------------------
# Public types
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureTile:
    """The feature tile of the outputs of one flat width: constexpr ``name`` lanes per program."""

    name: str
    size: int


@dataclass(frozen=True)
class InnerReduction:
    """An inner (feature-axis) reduction over ``extent`` values, ``name`` lanes at a time, inside a
    tile whose other axes have the extents named by ``outer`` (constexpr names)."""

    name: str
    extent: int
    outer: tuple[str, ...]


@dataclass(frozen=True)
class Schedule:
    """Launch parameters of one kernel under one :class:`TritonConfig`."""

    constexprs: dict[str, int]
    feature_programs: int     # grid axis 1
    rows_per_program: int
    num_warps: int
    num_stages: int | None

    def grid(self, num_rows: int) -> tuple[int, int]:
        return (-(-int(num_rows) // self.rows_per_program), self.feature_programs)


@dataclass(frozen=True)
class TritonSource:
    """A generated module: ``source`` defines the ``@triton.jit`` function ``entry``, called with
    ``arg_names`` in order (``indptr, indices, eids, num_rows, num_edges``, then ``inputs``, then
    ``outputs``) and the constexprs of :meth:`schedule`."""

    source: str
    entry: str
    arg_names: list[str]
    inputs: list[InputSpec]
    outputs: list[OutputSpec]
    pattern: str
    rows: str
    fingerprint: str
    tiles: tuple[FeatureTile, ...]
    reductions: tuple[InnerReduction, ...]
    partial_entry: str | None = None        # hub-capable modules: the chunk kernel
    partial_arg_names: list[str] | None = None

    def output(self, name: str) -> OutputSpec:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def schedule(self, config: TritonConfig | None = None, num_rows: int | None = None,
                 num_edges: int | None = None) -> Schedule:
        """The constexprs and grid shape of a launch under ``config`` (on a CSR of ``num_rows``
        rows and ``num_edges`` entries, when known: the default edge block follows the degree)."""
        config = config or TritonConfig()
        values: dict[str, int] = {"ROWS": config.rows_per_program}
        widest = 1
        programs = 1
        for tile in self.tiles:
            lanes = min(_pow2(tile.size), config.block_f)
            values[tile.name] = lanes
            widest = max(widest, lanes)
            programs = max(programs, -(-tile.size // lanes))
        if config.block_e is not None:
            block_e = config.block_e
        else:
            block_e = min(64, max(16, _pow2_floor(4096 // widest)))
            if num_rows and num_edges is not None:
                block_e = min(block_e, max(16, _pow2(-(-int(num_edges) // int(num_rows)))))
        block_e = max(1, min(block_e, _pow2_floor(max(1, config.max_tile // widest))))
        values["BLOCK_E"] = block_e
        for red in self.reductions:
            outer = math.prod(values[name] for name in red.outer)
            cap = _pow2_floor(max(1, config.max_tile // max(1, outer)))
            values[red.name] = max(1, min(_pow2(red.extent), config.block_k, cap))
        return Schedule(values, programs, config.rows_per_program, config.num_warps, config.num_stages)


# ------------------------------------------------------------------------------------------------
# Index expressions and values
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Ix:
    """An integer index tensor into a value's flat features: its text (a name or a literal), the
    levels of everything it depends on (it is available at the deepest), the tile axes it varies
    along, and the masks under which it is in bounds (names of boolean tensors)."""

    text: str
    deps: frozenset = frozenset()
    dims: frozenset = frozenset()
    masks: frozenset = frozenset()
    const: int | None = None

    @property
    def level(self) -> int:
        return max(self.deps, default=_PROG)

    @property
    def rank(self) -> int:
        return max(self.dims) + 1 if self.dims else 0

    def key(self) -> tuple:
        return (self.text, tuple(sorted(self.masks)))


def _cix(n: int) -> _Ix:
    return _Ix(str(n), const=n)


_ZERO = _cix(0)


@dataclass(frozen=True)
class _Val:
    """A generated tensor expression of IR dtype ``dtype`` (held in its compute dtype); ``deps``
    are the levels of everything it depends on (it is computed at the deepest)."""

    text: str
    deps: frozenset
    dims: frozenset
    dtype: torch.dtype
    const: Any = None  # Python value of a constant (its literal is written per use)

    @property
    def level(self) -> int:
        return max(self.deps, default=_PROG)

    @property
    def rank(self) -> int:
        return max(self.dims) + 1 if self.dims else 0


def _lift(text: str, frm: int, to: int) -> str:
    """Append size-1 axes to a rank-``frm`` tensor (axis k stays axis k)."""
    if frm == 0 or frm >= to:
        return text
    return f"{_paren(text)}[{', '.join([':'] * frm + ['None'] * (to - frm))}]"


class _Block:
    """Lines of code at one nesting level; items are strings or nested blocks."""

    def __init__(self, header: str | None = None):
        self.header = header
        self.items: list[Any] = []

    def render(self, indent: str) -> list[str]:
        lines: list[str] = []
        if self.header is not None:
            lines.append(indent + self.header)
            indent += "    "
        for item in self.items:
            if isinstance(item, _Block):
                lines.extend(item.render(indent))
            else:
                lines.append(indent + item)
        if self.header is not None and not self.items:
            lines.append(indent + "pass")
        return lines


# ------------------------------------------------------------------------------------------------
# The generator
# ------------------------------------------------------------------------------------------------
class _Generator:
    def __init__(self, kernel: KernelPlan, hub: bool = False, partial: bool = False):
        self.kernel = kernel
        # hub: the main kernel skips rows above ``hub_threshold`` entries; partial: the kernel
        # that walks chunks ("tasks") of those rows, writing row t of partial outputs.
        self.hub = hub
        self.partial = partial
        self.orow = "t" if partial else "v"
        self.prog: Program = kernel.program
        if kernel.rows not in ("dst", "src"):
            raise CompileError(f"internal: kernel rows must be 'dst' or 'src', got {kernel.rows!r}")
        self.rows = kernel.rows
        self.names: set[str] = {"indptr", "indices", "eids", "num_rows", "num_edges", "v", "rr", "row0",
                                "pid_f", "start", "end", "deg", "j0", "j", "em", "nbr", "e", "tl", "t",
                                "hub_threshold", "task_row", "task_start", "task_end",
                                "triton", "ROWS", "BLOCK_E", "_tanh", "_pow"}
        for ins in self.prog.instrs:
            _compute(ins.dtype, ins.where)
            if ins.op not in OPS:
                raise CompileError(f"internal: unknown IR op {ins.op!r}", where=ins.where)
            if ins.op == "mailbox_softmax":  # fusion hands over softmax_sum / logsumexp instead
                raise CompileError("a bare mailbox softmax (per-edge attention weights) cannot be "
                                   "computed in one Triton kernel: only softmax-weighted sums "
                                   "(mailbox_softmax_sum) and logsumexp are; use gdsl.edge_softmax",
                                   where=ins.where)
            if ins.op == "in_degree" and self.rows != "dst":
                raise CompileError("in_degree inside a kernel over out-CSR rows is not supported",
                                   where=ins.where)
        self.prog_block = _Block()
        self.row_block = _Block()
        self.edge_block = _Block()
        self.scopes: list[_Block] = [self.prog_block, self.row_block, self.edge_block]
        self.extents: list[str] = []        # constexpr extent of each tile axis in the context
        self.memo: dict[tuple, _Val] = {}
        self.ix_names: dict[str, _Ix] = {}
        self.offsets: dict[str, tuple[_Ix, int]] = {}  # index name -> (base index, constant offset)
        self.mask_info: dict[str, tuple[frozenset, frozenset]] = {"em": (frozenset({_EDGE}), frozenset({0}))}
        self.mask_names: dict[tuple, tuple[str, frozenset, frozenset]] = {}  # (name, deps, dims)
        self.consts: dict[tuple, str] = {}
        self.tiles: list[FeatureTile] = []
        self.reductions: list[InnerReduction] = []
        self.helpers: set[str] = set()
        self.uses_nbr = self.uses_e = self.uses_deg = False
        self.counter = 0
        self.prunable: set[str] = set()    # index temporaries, dropped when nothing reads them

    # -- names and placement ---------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            name = f"{base}_{k}"
            k += 1
        self.names.add(name)
        return name

    def emit(self, level: int, line: str) -> None:
        self.scopes[level].items.append(line)

    def purge(self, level: int) -> None:
        """Forget what was placed at ``level`` or deeper (an inner loop that was closed)."""
        self.memo = {k: v for k, v in self.memo.items() if v.level < level}
        self.ix_names = {k: v for k, v in self.ix_names.items() if v.level < level}
        self.offsets = {k: v for k, v in self.offsets.items() if v[0].level < level}
        self.mask_names = {k: v for k, v in self.mask_names.items() if max(v[1], default=_PROG) < level}

    # -- index arithmetic ------------------------------------------------------------------------
    def name_ix(self, text: str, deps: frozenset, dims: frozenset, masks: frozenset) -> _Ix:
        hit = self.ix_names.get(text)
        if hit is None:
            name = self.fresh(f"i{self.counter}")
            self.counter += 1
            self.prunable.add(name)
            self.emit(max(deps, default=_PROG), f"{name} = {text}")
            hit = self.ix_names[text] = _Ix(name, deps, dims, frozenset())
        return _Ix(hit.text, hit.deps, hit.dims, masks)

    def ix_lin(self, terms: list[tuple[_Ix, int]], const: int = 0) -> _Ix:
        parts = []
        for ix, stride in terms:
            if stride == 0:
                continue
            if ix.const is not None:
                const += ix.const * stride
                continue
            parts.append((ix, stride))
        if not parts:
            return _cix(const)
        offset_of = None
        if len(parts) == 1 and parts[0][1] == 1:
            ix = parts[0][0]
            base = self.offsets.get(ix.text)
            if base is not None:  # (b + k1) + k2 = b + (k1 + k2)
                ix, const = _Ix(base[0].text, base[0].deps, base[0].dims, ix.masks), base[1] + const
                parts = [(ix, 1)]
            if const == 0:
                return ix
            offset_of = (_Ix(ix.text, ix.deps, ix.dims), const)
        dims = frozenset().union(*(ix.dims for ix, _ in parts))
        masks = frozenset().union(*(ix.masks for ix, _ in parts))
        deps = frozenset().union(*(ix.deps for ix, _ in parts))
        rank = max(dims) + 1 if dims else 0
        texts = [_lift(ix.text, ix.rank, rank) + ("" if s == 1 else f" * {s}") for ix, s in parts]
        text = " + ".join(texts)
        if const:
            text += f" + {const}" if const > 0 else f" - {-const}"
        out = self.name_ix(text, deps, dims, masks)
        if offset_of is not None:
            self.offsets.setdefault(out.text, offset_of)
        return out

    def ix_div(self, ix: _Ix, s: int) -> _Ix:
        if s == 1:
            return ix
        if ix.const is not None:
            return _cix(ix.const // s)
        return self.name_ix(f"{ix.text} // {s}", ix.deps, ix.dims, ix.masks)

    def ix_mod(self, ix: _Ix, n: int) -> _Ix:
        if ix.const is not None:
            return _cix(ix.const % n)
        return self.name_ix(f"{ix.text} % {n}", ix.deps, ix.dims, ix.masks)

    def ix_add(self, ix: _Ix, k: int) -> _Ix:
        return self.ix_lin([(ix, 1)], k)

    def ix_masked(self, ix: _Ix, extra: str | None) -> _Ix:
        if extra is None:
            return ix
        return _Ix(ix.text, ix.deps, ix.dims, ix.masks | {extra}, ix.const)

    def unflatten(self, ix: _Ix, shape: tuple[int, ...]) -> list[_Ix]:
        """The multi-index (one index per feature axis) of flat index ``ix`` into ``shape``."""
        out, outer = [], False
        for size, stride in zip(shape, _strides(shape)):
            if size == 1:
                out.append(_ZERO)
                continue
            if ix.const is not None:
                out.append(_cix((ix.const // stride) % size))
            else:
                t = self.ix_div(ix, stride)
                out.append(self.ix_mod(t, size) if outer else t)
            outer = True
        return out

    def flatten(self, comps: list[_Ix], shape: tuple[int, ...]) -> _Ix:
        return self.ix_lin(list(zip(comps, _strides(shape))))

    def broadcast_index(self, ix: _Ix, shape: tuple[int, ...], operand: tuple[int, ...]) -> _Ix:
        """Index into an operand of feature shape ``operand`` broadcast (right-aligned) to ``shape``."""
        if math.prod(operand) == 1:
            return _ZERO
        if tuple(operand) == tuple(shape):
            return ix
        multi = self.unflatten(ix, shape)
        lead = len(shape) - len(operand)
        comps = [_ZERO if size == 1 else multi[lead + k] for k, size in enumerate(operand)]
        return self.flatten(comps, operand)

    # -- masks -----------------------------------------------------------------------------------
    def condition(self, ix: _Ix, lo: int, hi: int) -> str:
        """A named boolean tensor: ``lo <= ix < hi``."""
        parts = []
        if lo > 0:
            parts.append(f"({ix.text} >= {lo})")
        parts.append(f"({ix.text} < {hi})")
        text = " & ".join(parts)
        key = ("cond", text)
        hit = self.mask_names.get(key)
        if hit is None:
            name = self.fresh(f"c{self.counter}")
            self.counter += 1
            self.prunable.add(name)
            self.emit(ix.level, f"{name} = {text}")
            self.mask_info[name] = (ix.deps, ix.dims)
            hit = self.mask_names[key] = (name, ix.deps, ix.dims)
        return hit[0]

    def mask(self, names) -> tuple[str, frozenset, frozenset] | None:
        """The conjunction of the named masks, lifted to a common rank (named when compound)."""
        names = tuple(sorted(set(names)))
        if not names:
            return None
        key = ("and",) + names
        hit = self.mask_names.get(key)
        if hit is None:
            deps = frozenset().union(*(self.mask_info[n][0] for n in names))
            dims = frozenset().union(*(self.mask_info[n][1] for n in names))
            rank = max(dims) + 1 if dims else 0
            if len(names) == 1:
                hit = (names[0], deps, dims)
            else:
                texts = []
                for n in names:
                    d = self.mask_info[n][1]
                    texts.append(_lift(n, max(d) + 1 if d else 0, rank))
                name = self.fresh(f"m{self.counter}")
                self.counter += 1
                self.emit(max(deps), f"{name} = {' & '.join(texts)}")
                self.mask_info[name] = (deps, dims)
                hit = (name, deps, dims)
            self.mask_names[key] = hit
        return hit

    # -- literals and conversions ----------------------------------------------------------------
    def literal(self, value: Any, dtype: torch.dtype) -> str:
        """A literal of compute type ``_compute(dtype)`` (fp64 constants are exact tensors)."""
        c = _compute(dtype)
        if c == torch.bool:
            return "True" if value else "False"
        if not c.is_floating_point:
            return str(int(value))
        v = float(value)
        if v != v:
            text = 'float("nan")'
        elif v in (math.inf, -math.inf):
            text = 'float("inf")' if v > 0 else 'float("-inf")'
        else:
            text = repr(v)
        exact32 = v != v or v in (math.inf, -math.inf) or v == float(torch.tensor(v, dtype=torch.float32))
        if c == torch.float64 and not exact32:  # a Python float may pass through fp32 in Triton
            key = ("f64", repr(v))
            if key not in self.consts:
                name = self.fresh(f"k{len(self.consts)}")
                self.emit(_PROG, f"{name} = tl.full((), {text}, tl.float64)")
                self.consts[key] = name
            return self.consts[key]
        return text

    def extreme(self, dtype: torch.dtype, op: str) -> str:
        """The identity of max (``op='max'``) or min over compute type ``dtype``."""
        if dtype.is_floating_point:
            return 'float("-inf")' if op == "max" else 'float("inf")'
        if dtype == torch.bool:
            return "0" if op == "max" else "1"
        info = torch.iinfo(dtype)
        return str(info.min if op == "max" else info.max)

    def text(self, val: _Val, dtype: torch.dtype | None = None, rank: int | None = None) -> str:
        """``val`` as an expression of compute type ``_compute(dtype)``, lifted to ``rank``."""
        target = val.dtype if dtype is None else dtype
        if val.const is not None:
            return self.literal(val.const, target)
        text = val.text if rank is None else _lift(val.text, val.rank, rank)
        src, dst = _compute(val.dtype), _compute(target)
        if src == dst:
            return text
        if dst == torch.bool:
            return f"({text} != 0)"
        return f"{_paren(text)}.to({_TL[dst]})"

    def bind(self, i: int | None, text: str, deps: frozenset, dims: frozenset, dtype: torch.dtype,
             base: str = "x") -> _Val:
        """Name ``text`` where its dependencies are (unless it is already a name); the value."""
        if _ATOM.match(text) and "[" not in text:
            return _Val(text, deps, dims, dtype)
        name = self.fresh(f"{base}{i}" if i is not None else f"{base}{self.counter}")
        if i is None:
            self.counter += 1
        comment = f"  # {_describe(i, self.prog.instrs[i])}" if i is not None else ""
        self.emit(max(deps, default=_PROG), f"{name} = {text}{comment}")
        return _Val(name, deps, dims, dtype)

    # -- arguments -------------------------------------------------------------------------------
    def plan_arguments(self) -> None:
        self.inputs, self.input_of = plan_inputs(self.kernel, self.fresh)

        self.outputs: list[OutputSpec] = []
        # (out, extra output (max/min @arg, softmax_sum @lse), value): the reduced (or stored)
        # value, except for softmax reducers: the reduction instruction itself
        self.sinks: list[tuple[OutputSpec, OutputSpec | None, int]] = []
        for name, i in self.prog.outputs:
            ins = self.prog.instrs[i]
            space, _, fieldname = name.partition(":")
            if space == self.rows:
                if ins.op not in _REDUCERS:
                    raise CompileError(f"internal: kernel output {name!r} is not a mailbox reduction "
                                       f"({ins.op})", where=ins.where)
                if ins.space != self.rows:
                    raise CompileError(f"internal: a reduction into {ins.space!r} in a kernel over "
                                       f"{self.rows!r} rows", where=ins.where)
                reducer = _REDUCERS[ins.op]
                if reducer in _SOFTMAX and self.rows != "dst":
                    raise CompileError(f"internal: a {ins.op} reduction in a kernel over out-CSR rows",
                                       where=ins.where)
                shape = ins.shape if reducer in _SOFTMAX else self.prog.instrs[ins.args[0]].shape
            elif space == "edge":
                if ins.op in _REDUCERS:
                    raise CompileError(f"internal: edge output {name!r} is a reduction", where=ins.where)
                reducer, shape = None, ins.shape
            else:
                raise CompileError(f"internal: kernel output {name!r} is neither {self.rows}: nor edge:")
            out = OutputSpec(name, space, ins.dtype, math.prod(shape), tuple(shape), reducer,
                             self.fresh(f"out_{_sanitize(fieldname)}"))
            self.outputs.append(out)
            arg = None
            if reducer in ("max", "min"):
                arg = OutputSpec(name + "@arg", space, torch.int64, out.size, out.shape, reducer,
                                 self.fresh(f"arg_{_sanitize(fieldname)}"))
                self.outputs.append(arg)
            elif reducer == "softmax_sum":
                lse_shape = tuple(self.prog.instrs[ins.args[0]].shape)
                arg = OutputSpec(name + "@lse", space, ins.dtype, math.prod(lse_shape), lse_shape, reducer,
                                 self.fresh(f"lse_{_sanitize(fieldname)}"))
                self.outputs.append(arg)
            value = i if reducer in _SOFTMAX or space != self.rows else ins.args[0]
            self.sinks.append((out, arg, value))

    # -- rows of the three spaces ----------------------------------------------------------------
    def row_of(self, space: str) -> tuple[str, frozenset, frozenset] | None:
        if space == "param":
            return None
        if space == self.rows:
            return "v", frozenset({_ROW}), frozenset()
        if space == "edge":
            self.uses_e = True
            return "e", frozenset({_EDGE}), frozenset({0})
        self.uses_nbr = True
        return "nbr", frozenset({_EDGE}), frozenset({0})

    # -- values ----------------------------------------------------------------------------------
    def value(self, i: int, ix: _Ix) -> _Val:
        """The value of instruction ``i`` at flat feature index ``ix`` (into its own shape)."""
        ins = self.prog.instrs[i]
        if math.prod(ins.shape) == 1:
            ix = _ZERO
        key = (i,) + ix.key()
        hit = self.memo.get(key)
        if hit is None:
            hit = self._value(i, ins, ix)
            self.memo[key] = hit
        return hit

    def _value(self, i: int, ins, ix: _Ix) -> _Val:
        op = ins.op
        kind = OPS[op].kind
        if op == "const":
            return _Val("", frozenset(), frozenset(), ins.dtype, const=ins.attr("value"))
        if kind == "load":
            return self.load(i, ins, ix)
        if op in ("reshape", "materialize"):
            return self.value(ins.args[0], ix)
        if op == "expand":
            return self.value(ins.args[0], self.broadcast_index(ix, ins.shape, self.prog.instrs[ins.args[0]].shape))
        if op == "slice":
            x = self.prog.instrs[ins.args[0]]
            axis = ins.attr("axis") % len(ins.shape)
            multi = self.unflatten(ix, ins.shape)
            multi[axis] = self.ix_add(multi[axis], ins.attr("start"))
            return self.value(ins.args[0], self.flatten(multi, x.shape))
        if op in ("pad", "cat"):
            return self.piecewise(i, ins, ix)
        if op == "edge_id":
            self.uses_e = True
            return _Val("e", frozenset({_EDGE}), frozenset({0}), torch.int64)
        if op == "dropout_mask":
            return self.dropout(i, ins, ix)
        if op == "in_degree":
            self.uses_deg = True
            deg = _Val("deg", frozenset({_ROW}), frozenset(), torch.int64)
            return deg if ins.dtype == torch.int64 else \
                self.bind(i, self.text(deg, ins.dtype), deg.deps, frozenset(), ins.dtype)
        if kind in ("unary", "binary", "compare", "ternary"):
            return self.elementwise(i, ins, ix)
        if kind == "feature_reduce":
            return self.feature_reduce(i, ins, ix)
        if op == "matmul":
            return self.matmul(i, ins, ix)
        if op == "outer":
            return self.outer(i, ins, ix)
        raise CompileError(f"the Triton backend cannot compute {op!r} inside a kernel", where=ins.where)

    def dropout(self, i: int, ins, ix: _Ix) -> _Val:
        """``1 / (1 - p)`` or 0 per element: its keep bit hashed from (seed, stream, edge id, flat
        index) exactly as gdsl.kernels.random does, so the backward regenerates the mask."""
        from ...kernels.random import MASK32, STREAM, threshold
        self.uses_e = True
        self.helpers.add("_mix")
        seed = self.value(ins.args[0], _ZERO)
        edge = _Val("e", frozenset({_EDGE}), frozenset({0}), torch.int64)
        dims = frozenset({0}) | ix.dims
        rank = max(dims) + 1
        index = str(ix.const) if ix.const is not None else _lift(ix.text, ix.rank, rank)
        counter = f"(({self.text(edge, torch.int64, rank)} * {math.prod(ins.shape)} + {index}) & {MASK32})"
        stream = f"_mix(({self.text(seed, torch.int64, 0)} + {ins.attr('stream') * STREAM}) & {MASK32})"
        p = ins.attr("p")
        scale = self.literal(0.0 if p >= 1.0 else 1.0 / (1.0 - p), ins.dtype)
        text = f"tl.where(_mix({counter} ^ {stream}) >= {threshold(p)}, {scale}, {self.literal(0.0, ins.dtype)})"
        deps = frozenset({_EDGE}) | ix.deps | seed.deps
        for name in ix.masks:
            deps |= self.mask_info[name][0]
        return self.bind(i, text, deps, dims, ins.dtype)

    def load(self, i: int, ins, ix: _Ix) -> _Val:
        space = ins.op[len("load_"):]
        if ins.op == "load_param" and ins.attr("field") is None:
            spec = self.input_of[("param", ins.attr("index"))]
        else:
            spec = self.input_of[(space, ins.attr("field"))]
        row = self.row_of(space)
        masks = set(ix.masks)
        dims = set(ix.dims)
        deps = set(ix.deps)
        if row is not None:
            rname, rdeps, rdims = row
            deps |= rdeps
            dims |= rdims
            if rdims:
                masks.add("em")
        for name in masks:
            deps |= self.mask_info[name][0]
            dims |= self.mask_info[name][1]
        dims = frozenset(dims)
        rank = max(dims) + 1 if dims else 0
        terms = []
        if row is not None:
            rtext = _lift(rname, max(rdims) + 1 if rdims else 0, rank)
            terms.append(rtext if spec.size == 1 else f"{rtext} * {spec.size}")
        if ix.const is None:
            terms.append(_lift(ix.text, ix.rank, rank))
        elif ix.const or not terms:
            terms.append(str(ix.const))
        offset = " + ".join(terms)
        mask = self.mask(masks)
        args = f"{spec.arg_name} + {_paren(offset) if len(terms) > 1 else offset}"
        if mask is not None:
            mname, _, mdims = mask
            text = f"tl.load({args}, mask={_lift(mname, max(mdims) + 1 if mdims else 0, rank)}, other=0)"
        else:
            text = f"tl.load({args})"
        if ins.dtype in _F16:
            text += ".to(tl.float32)"
        elif ins.dtype == torch.bool:
            text = f"({text} != 0)"
        return self.bind(i, text, frozenset(deps), dims, ins.dtype)

    def piecewise(self, i: int, ins, ix: _Ix) -> _Val:
        """pad (zeros outside the operand) and cat (one operand per range of an axis)."""
        axis = ins.attr("axis") % len(ins.shape)
        multi = self.unflatten(ix, ins.shape)
        c = multi[axis]
        if ins.op == "pad":
            pieces = [(ins.args[0], ins.attr("start"))]
        else:
            pieces, offset = [], 0
            for a in ins.args:
                pieces.append((a, offset))
                offset += self.prog.instrs[a].shape[axis]
        parts: list[tuple[str | None, _Val]] = []
        for a, offset in pieces:
            operand = self.prog.instrs[a]
            width = operand.shape[axis]
            if c.const is not None:
                if offset <= c.const < offset + width:
                    shifted = list(multi)
                    shifted[axis] = _cix(c.const - offset)
                    return self.value(a, self.flatten(shifted, operand.shape))
                continue
            cond = self.condition(c, offset, offset + width)
            shifted = list(multi)
            shifted[axis] = self.ix_masked(self.ix_add(c, -offset), cond)
            parts.append((cond, self.value(a, self.ix_masked(self.flatten(shifted, operand.shape), cond))))
        if not parts:  # a constant index outside every piece: pad's zeros
            return _Val("", frozenset(), frozenset(), ins.dtype, const=0)
        if ins.op == "pad":
            parts.append((None, _Val("", frozenset(), frozenset(), ins.dtype, const=0)))
        dims = frozenset().union(*(v.dims for _, v in parts), *(self.mask_info[cd][1] for cd, _ in parts if cd))
        deps = frozenset().union(*(v.deps for _, v in parts), *(self.mask_info[cd][0] for cd, _ in parts if cd))
        rank = max(dims) + 1 if dims else 0
        text = self.text(parts[-1][1], ins.dtype, rank)
        for cond, val in reversed(parts[:-1]):
            cdims = self.mask_info[cond][1]
            text = f"tl.where({_lift(cond, max(cdims) + 1 if cdims else 0, rank)}, " \
                   f"{self.text(val, ins.dtype, rank)}, {text})"
        return self.bind(i, text, deps, dims, ins.dtype)

    def operand_index(self, ins, a: int, ix: _Ix) -> _Ix:
        return self.broadcast_index(ix, ins.shape, self.prog.instrs[a].shape)

    def elementwise(self, i: int, ins, ix: _Ix) -> _Val:
        op, kind, dtype = ins.op, OPS[ins.op].kind, ins.dtype
        if kind == "compare":
            cdtype = promote([self.prog.instrs[a] for a in ins.args])
        elif op == "cast":
            cdtype = self.prog.instrs[ins.args[0]].dtype
        else:
            cdtype = dtype
        vals = [self.value(a, self.operand_index(ins, a, ix)) for a in ins.args]
        if all(v.const is not None for v in vals):
            folded = self.fold(ins, vals)
            if folded is not None:
                return _Val("", frozenset(), frozenset(), dtype, const=folded)
        dims = frozenset().union(*(v.dims for v in vals))
        deps = frozenset().union(*(v.deps for v in vals))
        rank = max(dims) + 1 if dims else 0
        want = [torch.bool if (op == "where" and k == 0) else cdtype for k in range(len(vals))]
        args = [self.text(v, w, rank) for v, w in zip(vals, want)]
        c = _compute(cdtype)
        zero, one = self.literal(0, cdtype), self.literal(1, cdtype)
        x = args[0]
        p = _paren
        if op == "neg":
            text = f"-{p(x)}"
        elif op == "abs":
            text = f"tl.abs({x})"
        elif op == "relu":
            text = f"tl.maximum({x}, {zero})"
        elif op in ("exp", "log", "sqrt"):
            text = f"tl.{op}({x})"
        elif op == "rsqrt":
            text = f"tl.rsqrt({x})" if c == torch.float32 else f"{one} / tl.sqrt({x})"
        elif op == "sigmoid":
            text = f"tl.sigmoid({x})"
        elif op == "tanh":
            self.helpers.add("_tanh")
            text = f"_tanh({x})"
        elif op == "leaky_relu":
            slope = self.literal(ins.attr("negative_slope"), cdtype)
            text = f"tl.where({p(x)} > {zero}, {x}, {p(x)} * {p(slope)})"
        elif op == "elu":
            alpha = self.literal(ins.attr("alpha"), cdtype)
            text = f"tl.where({p(x)} > {zero}, {x}, {p(alpha)} * (tl.exp({x}) - {one}))"
        elif op == "cast":
            text = self.cast_text(vals[0], dtype, rank)
        elif op in ("add", "sub", "mul", "div"):
            sym = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[op]
            text = f"{p(args[0])} {sym} {p(args[1])}"
        elif op == "pow":
            text = self.pow_text(ins, vals, args, cdtype)
        elif op in ("maximum", "minimum"):
            text = f"tl.{op}({args[0]}, {args[1]})"
        elif kind == "compare":
            sym = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "eq": "==", "ne": "!="}[op]
            text = f"{p(args[0])} {sym} {p(args[1])}"
        elif op == "where":
            text = f"tl.where({args[0]}, {args[1]}, {args[2]})"
        else:
            raise CompileError(f"the Triton backend has no rule for {op!r}", where=ins.where)
        return self.bind(i, text, deps, dims, dtype)

    @staticmethod
    def fold(ins, vals: list[_Val]) -> Any:
        """The value of an elementwise instruction of constants (as the interpreter computes it)."""
        from ..interpret import apply_instruction

        try:
            args = [torch.tensor([v.const], dtype=v.dtype) for v in vals]
            return apply_instruction(ins, args, None).to(ins.dtype).reshape(-1)[0].item()
        except Exception:  # pragma: no cover - emit the arithmetic instead
            return None

    def cast_text(self, val: _Val, to: torch.dtype, rank: int) -> str:
        if val.const is not None:
            return self.literal(torch.tensor(val.const, dtype=val.dtype).to(to).item(), to)
        text = self.text(val, to, rank)
        if to in _F16 and val.dtype != to:  # the value is rounded to half precision
            text = f"{_paren(text)}.to({_TL[to]}).to(tl.float32)"
        return text

    def pow_text(self, ins, vals: list[_Val], args: list[str], cdtype: torch.dtype) -> str:
        base, expo = args
        e = vals[1].const
        p = _paren
        one = self.literal(1, cdtype)
        if e is not None and float(e) == int(float(e)) and -2 <= float(e) <= 4:
            k = int(float(e))
            if k == 0:
                return f"tl.where({p(base)} == {p(base)}, {one}, {one})"
            prod = " * ".join([p(base)] * abs(k))
            return prod if k > 0 else f"{one} / ({prod})"
        if e is not None and float(e) == 0.5:
            return f"tl.sqrt({base})"
        if e is not None and float(e) == -0.5:
            return f"{one} / tl.sqrt({base})"
        self.helpers.add("_pow")
        return f"_pow({base}, {expo})"

    # -- inner reductions ------------------------------------------------------------------------
    def reduce(self, extent: int, kind: str, dtype: torch.dtype, body: Callable[[_Ix], _Val],
               i: int) -> _Val:
        """Reduce ``body(r)`` over ``r in range(extent)`` on a new tile axis (looping over chunks
        of ``RB`` lanes); placed at the outermost level the body depends on."""
        d = len(self.extents)
        rb = self.fresh(f"RB_{len(self.reductions)}")
        self.names.add(rb)
        self.reductions.append(InnerReduction(rb, extent, tuple(self.extents)))
        r0, r, rm, acc = (self.fresh(f"{b}{self.counter}") for b in ("r0_", "r", "rm", "acc"))
        self.counter += 1
        loop = _Block(f"for {r0} in range(0, {extent}, {rb}):")
        self.scopes.append(loop)
        loop_level = len(self.scopes) - 1
        self.extents.append(rb)
        arange = f"tl.arange(0, {rb})" + ("" if d == 0 else f"[{', '.join(['None'] * d + [':'])}]")
        loop.items.append(f"{r} = {r0} + {arange}")
        loop.items.append(f"{rm} = {r} < {extent}")
        self.mask_info[rm] = (frozenset({loop_level}), frozenset({d}))
        rix = _Ix(r, frozenset({loop_level}), frozenset({d}), frozenset({rm}))
        val = body(rix)
        c = _compute(dtype)
        red = {"sum": "sum", "mean": "sum", "max": "max", "min": "min"}[kind]
        identity = self.literal(0, dtype) if red == "sum" else self.extreme(c, red)
        dims = val.dims - {d}
        keep = max(dims) + 1 if dims else 0
        partial = f"tl.{red}(tl.where({rm}, {self.text(val, dtype, d + 1)}, {identity}), axis={d})"
        for axis in range(d - 1, keep - 1, -1):  # drop size-1 axes: the result has its own rank
            partial = f"tl.{red}({partial}, axis={axis})"
        if red == "sum":
            loop.items.append(f"{acc} = {acc} + {partial}")
        else:
            loop.items.append(f"{acc} = tl.{'maximum' if red == 'max' else 'minimum'}({acc}, {partial})")
        deps = frozenset(lv for lv in val.deps if lv < loop_level)
        level = max(deps, default=_PROG)
        self.scopes.pop()
        self.extents.pop()
        self.purge(loop_level)
        shape = ", ".join(self.extents[k] if k in dims else "1" for k in range(keep))
        ctl = _TL[c]
        init = f"tl.full([{shape}], {identity}, {ctl})" if keep else f"tl.full((), {identity}, {ctl})"
        self.emit(level, f"{acc} = {init}  # {_describe(i, self.prog.instrs[i])}")
        self.scopes[level].items.append(loop)
        if kind == "mean":
            self.emit(level, f"{acc} = {acc} / {self.literal(extent, dtype)}")
        return _Val(acc, deps, dims, dtype)

    def feature_reduce(self, i: int, ins, ix: _Ix) -> _Val:
        xi = ins.args[0]
        x = self.prog.instrs[xi]
        axis = ins.attr("axis") % len(x.shape)
        kind = ins.op[len("feature_"):]
        keep = bool(ins.attr("keepdim"))
        out = self.unflatten(ix, ins.shape)
        outer = out[:axis] + out[axis + (1 if keep else 0):]

        def at(r: _Ix) -> _Ix:
            return self.flatten(outer[:axis] + [r] + outer[axis:], x.shape)

        if x.shape[axis] == 1:
            val = self.value(xi, at(_ZERO))
            return val if val.dtype == ins.dtype else \
                self.bind(i, self.text(val, ins.dtype), val.deps, val.dims, ins.dtype)
        return self.reduce(x.shape[axis], kind, ins.dtype, lambda r: self.value(xi, at(r)), i)

    def matmul(self, i: int, ins, ix: _Ix) -> _Val:
        xi, wi = ins.args
        x, w = self.prog.instrs[xi], self.prog.instrs[wi]
        transpose = bool(ins.attr("transpose"))
        k_dim = x.shape[-1]
        m_dim = w.shape[0] if transpose else w.shape[1]
        batched = math.prod(x.shape[:-1]) > 1
        b = self.ix_div(ix, m_dim) if batched else _ZERO
        m = _ZERO if m_dim == 1 else (self.ix_mod(ix, m_dim) if batched else ix)
        dtype = ins.dtype

        def body(k: _Ix) -> _Val:
            xv = self.value(xi, self.ix_lin([(b, k_dim), (k, 1)]))
            wv = self.value(wi, self.ix_lin([(m, k_dim), (k, 1)]) if transpose
                            else self.ix_lin([(k, m_dim), (m, 1)]))
            return self.product(xv, wv, dtype)

        if k_dim == 1:
            return self.rebind(i, body(_ZERO))
        return self.reduce(k_dim, "sum", dtype, body, i)

    def outer(self, i: int, ins, ix: _Ix) -> _Val:
        xi, gi = ins.args
        x, g = self.prog.instrs[xi], self.prog.instrs[gi]
        k_dim, m_dim = x.shape[-1], g.shape[-1]
        lead = math.prod(x.shape[:-1])
        if ins.attr("transpose"):   # (M, K)
            m, k = self.unflatten(ix, (m_dim, k_dim))
        else:                       # (K, M)
            k, m = self.unflatten(ix, (k_dim, m_dim))
        dtype = ins.dtype

        def body(l: _Ix) -> _Val:
            xv = self.value(xi, self.ix_lin([(l, k_dim), (k, 1)]))
            gv = self.value(gi, self.ix_lin([(l, m_dim), (m, 1)]))
            return self.product(xv, gv, dtype)

        if lead == 1:
            return self.rebind(i, body(_ZERO))
        return self.reduce(lead, "sum", dtype, body, i)

    def product(self, a: _Val, b: _Val, dtype: torch.dtype) -> _Val:
        dims = a.dims | b.dims
        rank = max(dims) + 1 if dims else 0
        text = f"{_paren(self.text(a, dtype, rank))} * {_paren(self.text(b, dtype, rank))}"
        return self.bind(None, text, a.deps | b.deps, dims, dtype, base="p")

    def rebind(self, i: int, val: _Val) -> _Val:
        return self.bind(i, val.text, val.deps, val.dims, val.dtype) if val.const is None else val

    # -- sinks -----------------------------------------------------------------------------------
    def generate_sinks(self) -> None:
        """Per output width: the feature tile, then every output of that width."""
        self.acc_init: list[str] = []
        self.finish: list[str] = []
        groups: dict[int, list] = {}
        for sink in self.sinks:
            groups.setdefault(sink[0].size, []).append(sink)
        accs: dict[tuple, tuple] = {}
        self.softmax_stats: dict[tuple, tuple] = {}
        for size, sinks in groups.items():
            g = len(self.tiles)
            bf = self.fresh(f"BF_{g}")
            self.tiles.append(FeatureTile(bf, size))
            f1, f, fm1, fm = (self.fresh(n) for n in (f"f{g}_1", f"f{g}", f"fm{g}_1", f"fm{g}"))
            self.emit(_PROG, f"# feature tile of the {size}-wide outputs: "
                             + ", ".join(s[0].name for s in sinks))
            self.emit(_PROG, f"{f1} = pid_f * {bf} + tl.arange(0, {bf})")
            self.emit(_PROG, f"{f} = {f1}[None, :]")
            self.emit(_PROG, f"{fm1} = {f1} < {size}")
            self.emit(_PROG, f"{fm} = {f} < {size}")
            self.mask_info[fm] = (frozenset({_PROG}), frozenset({1}))
            fix = _Ix(f, frozenset({_PROG}), frozenset({1}), frozenset({fm}))
            self.extents = ["BLOCK_E", bf]
            mname = self.mask(["em", fm])[0]
            for out, arg, vi in sinks:
                msg = self.prog.instrs[vi]
                val = None if out.reducer in _SOFTMAX else self.value(vi, fix if out.size > 1 else _ZERO)
                if out.space == "edge":
                    self.uses_e = True
                    self.emit(_EDGE, f"# {out.name} = %{vi}")
                    store = self.store_text(val, out.dtype, 2)
                    self.emit(_EDGE, f"tl.store({out.arg_name} + (e[:, None] * {size} + {f}), {store}, "
                                     f"mask={mname})")
                    continue
                reducer = out.reducer
                if reducer in _SOFTMAX:
                    self.softmax_sink(out, arg, vi, size, fix, f, f1, fm, fm1, bf, mname)
                    continue
                kind = "sum" if reducer in ("sum", "mean") else reducer
                acc_dtype = msg.dtype
                c = _compute(acc_dtype)
                if c == torch.bool:
                    acc_dtype, c = torch.int32, torch.int32
                key = (vi, kind, size)
                self.emit(_EDGE, f"# {out.name} = mailbox_{reducer} %{vi}")
                if key not in accs:
                    acc = self.fresh(f"{'tot' if kind == 'sum' else 'best'}{len(accs)}")
                    ctl = _TL[c]
                    if kind == "sum":
                        self.acc_init.append(f"{acc} = tl.zeros([BLOCK_E, {bf}], {ctl})")
                        self.emit(_EDGE, f"{acc} = {acc} + tl.where({mname}, "
                                         f"{self.text(val, acc_dtype, 2)}, {self.literal(0, acc_dtype)})")
                        red = self.fresh(f"red{len(accs)}")
                        self.finish.append(f"{red} = tl.sum({acc}, axis=0)")
                        accs[key] = (red, None)
                    else:
                        best = acc
                        won = self.fresh(f"won{len(accs)}")
                        take = self.fresh(f"take{len(accs)}")
                        m = self.text(val, acc_dtype, 2)
                        if msg.dtype in _F16:  # compare the messages as they are stored
                            m = f"{_paren(m)}.to({_TL[msg.dtype]}).to(tl.float32)"
                        if not _ATOM.match(m):
                            name = self.fresh(f"msg{len(accs)}")
                            self.emit(_EDGE, f"{name} = {m}")
                            m = name
                        cmp = ">" if kind == "max" else "<"
                        self.acc_init.append(f"{best} = tl.full([BLOCK_E, {bf}], {self.extreme(c, kind)}, {ctl})")
                        self.acc_init.append(f"{won} = tl.full([BLOCK_E, {bf}], {_INT64_MAX}, tl.int64)")
                        self.emit(_EDGE, f"{take} = {mname} & (({m} {cmp} {best}) | "
                                         f"(({m} == {best}) & (e[:, None] < {won})))")
                        self.emit(_EDGE, f"{best} = tl.where({take}, {m}, {best})")
                        self.emit(_EDGE, f"{won} = tl.where({take}, e[:, None], {won})")
                        self.uses_e = True
                        red = self.fresh(f"red{len(accs)}")
                        red_arg = self.fresh(f"red{len(accs)}_arg")
                        self.finish.append(f"{red} = tl.{kind}({best}, axis=0)")
                        self.finish.append(f"{red_arg} = tl.min(tl.where({best} == {red}[None, :], {won}, "
                                           f"{_INT64_MAX}), axis=0)")
                        self.finish.append(f"{red} = tl.where(deg > 0, {red}, {self.literal(0, acc_dtype)})")
                        self.finish.append(f"{red_arg} = tl.where(deg > 0, {red_arg}, -1)")
                        self.uses_deg = True
                        accs[key] = (red, red_arg)
                red, red_arg = accs[key]
                result = _Val(red, frozenset({_ROW}), frozenset({0}), acc_dtype)
                if reducer == "mean" and not self.partial:  # partial kernels leave sums
                    self.uses_deg = True
                    c_out = _compute(out.dtype)
                    mean = f"{_paren(self.text(result, out.dtype))} / tl.maximum(deg, 1).to({_TL[c_out]})"
                    result = _Val(f"({mean})", frozenset({_ROW}), frozenset({0}), out.dtype)
                store = self.store_text(result, out.dtype, 1)
                o = self.orow
                self.finish.append(f"tl.store({out.arg_name} + ({o} * {size} + {f1}), {store}, mask={fm1})")
                if arg is not None:
                    self.finish.append(f"tl.store({arg.arg_name} + ({o} * {size} + {f1}), {red_arg}, mask={fm1})")

    def softmax_sink(self, out: OutputSpec, lse: OutputSpec | None, i: int, size: int, fix: _Ix, f: str,
                     f1: str, fm: str, fm1: str, bf: str, mname: str) -> None:
        """An online-softmax reduction (``softmax_sum`` or ``logsumexp``, instruction ``i``) into
        the ``size``-wide output ``out``: per output lane, the running max ``M`` and denominator
        ``S`` of the lane's logit (shared by the reductions of the same logits in this tile) and,
        for softmax_sum, the rescaled running sum of ``p * v``."""
        ins = self.prog.instrs[i]
        xi = ins.args[0]
        x = self.prog.instrs[xi]
        dtype = ins.dtype
        c = _compute(dtype, ins.where)
        if not c.is_floating_point:
            raise CompileError(f"internal: {ins.op} of dtype {dtype}", where=ins.where)
        ctl = _TL[c]
        zero, one = self.literal(0, dtype), self.literal(1, dtype)
        ninf = 'float("-inf")'
        xix = self.broadcast_index(fix, tuple(ins.shape), tuple(x.shape))
        what = f"%{xi}" + (f", %{ins.args[1]}" if len(ins.args) > 1 else "")
        self.emit(_EDGE, f"# {out.name} = {ins.op} {what} (online softmax)")
        key = (xi, size, xix.key())
        if key not in self.softmax_stats:
            xval = self.value(xi, xix)
            n = len(self.softmax_stats)
            run_max, denom, logit, new_max, safe, scale, p = (self.fresh(f"{b}{n}") for b in (
                "smax", "sden", "slogit", "smax_new", "smax_safe", "sscale", "sp"))
            self.acc_init.append(f"{run_max} = tl.full([{bf}], {ninf}, {ctl})")
            self.acc_init.append(f"{denom} = tl.zeros([{bf}], {ctl})")
            self.emit(_EDGE, f"{logit} = tl.where({mname}, {self.text(xval, dtype, 2)}, {ninf})")
            self.emit(_EDGE, f"{new_max} = tl.maximum({run_max}, tl.max({logit}, axis=0))")
            # no -inf - -inf: while the lane has seen no finite logit, scale and p are 0
            self.emit(_EDGE, f"{safe} = tl.where({new_max} == {ninf}, {zero}, {new_max})")
            self.emit(_EDGE, f"{scale} = tl.exp({run_max} - {safe})")
            self.emit(_EDGE, f"{p} = tl.exp({logit} - {safe}[None, :])")
            self.emit(_EDGE, f"{denom} = {denom} * {scale} + tl.sum({p}, axis=0)")
            self.emit(_EDGE, f"{run_max} = {new_max}")
            positive = self.fresh(f"spos{n}")
            lse_name = self.fresh(f"slse{n}")
            self.finish.append(f"{positive} = {denom} > 0")
            # rows with edges: M + log S (all logits -inf: -inf, as torch.logsumexp); others 0
            self.uses_deg = True
            self.finish.append(f"{lse_name} = tl.where(deg > 0, {run_max} + "
                               f"tl.log(tl.where({positive}, {denom}, {one})), {zero})")
            self.softmax_stats[key] = (scale, p, denom, positive, lse_name)
        scale, p, denom, positive, lse_name = self.softmax_stats[key]
        if ins.op == "mailbox_logsumexp":
            result = _Val(lse_name, frozenset({_ROW}), frozenset({0}), dtype)
        else:
            vi = ins.args[1]
            vval = self.value(vi, self.broadcast_index(fix, tuple(ins.shape), tuple(self.prog.instrs[vi].shape)))
            acc = self.fresh(f"sacc{self.counter}")
            self.counter += 1
            self.acc_init.append(f"{acc} = tl.zeros([{bf}], {ctl})")
            weighted = f"{p} * {_paren(self.text(vval, dtype, 2))}"
            self.emit(_EDGE, f"{acc} = {acc} * {scale} + tl.sum(tl.where({mname}, {weighted}, {zero}), axis=0)")
            # rows with edges divide (all logits -inf: 0 / 0 = NaN, as torch.softmax); others stay 0
            self.uses_deg = True
            self.finish.append(f"{acc} = {acc} / tl.where(deg > 0, {denom}, {one})")
            result = _Val(acc, frozenset({_ROW}), frozenset({0}), dtype)
        o = self.orow
        self.finish.append(f"tl.store({out.arg_name} + ({o} * {size} + {f1}), "
                           f"{self.store_text(result, out.dtype, 1)}, mask={fm1})")
        if lse is not None:  # lanes sharing a logit write the same value to the same place
            stats = _Val(lse_name, frozenset({_ROW}), frozenset({0}), dtype)
            if xix.const is not None:
                self.finish.append(f"tl.store({lse.arg_name} + ({o} * {lse.size} + {f1} * 0 + {xix.const}), "
                                   f"{self.store_text(stats, lse.dtype, 1)}, mask={fm1})")
            else:
                where = _lift(xix.text, xix.rank, 2)
                self.finish.append(f"tl.store({lse.arg_name} + ({o} * {lse.size} + {where}), "
                                   f"{self.store_text(stats, lse.dtype, 1)}[None, :], mask={fm})")

    def store_text(self, val: _Val, dtype: torch.dtype, rank: int) -> str:
        text = self.text(val, dtype, rank)
        if dtype == torch.bool:
            return f"{_paren(text)}.to(tl.uint8)"
        if dtype in _F16:
            return f"{_paren(text)}.to({_TL[dtype]})"
        return text

    # -- the whole module ------------------------------------------------------------------------
    def prune(self, root: _Block) -> None:
        """Drop the assignments of index temporaries that nothing reads (until none is left)."""
        assign = re.compile(r"^([A-Za-z_][A-Za-z_0-9]*) = ")
        word = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
        while True:
            counts: dict[str, int] = {}

            def count(block: _Block) -> None:
                if block.header:
                    for w in word.findall(block.header):
                        counts[w] = counts.get(w, 0) + 1
                for item in block.items:
                    if isinstance(item, _Block):
                        count(item)
                    else:
                        for w in word.findall(item.split("  #")[0]):
                            counts[w] = counts.get(w, 0) + 1

            count(root)
            dead = {n for n in self.prunable if counts.get(n, 0) == 1}
            if not dead:
                return

            def drop(block: _Block) -> None:
                kept = []
                for item in block.items:
                    if isinstance(item, _Block):
                        drop(item)
                    else:
                        m = assign.match(item)
                        if m and m.group(1) in dead:
                            continue
                    kept.append(item)
                block.items = kept

            drop(root)
            self.prunable -= dead

    def generate(self) -> TritonSource:
        self.plan_arguments()
        self.generate_sinks()
        prog = self.prog
        fingerprint = prog.fingerprint()
        entry = f"gdsl_{self.kernel.pattern}_{self.rows}_{fingerprint}"
        if self.partial:
            entry += "_partial"
            arg_names = ["indptr", "indices", "eids", "task_row", "task_start", "task_end", "num_rows",
                         "num_edges"]
        else:
            arg_names = ["indptr", "indices", "eids", "num_rows", "num_edges"]
            if self.hub:
                arg_names.append("hub_threshold")
        arg_names += [spec.arg_name for spec in self.inputs] + [spec.arg_name for spec in self.outputs]
        constexprs = ["ROWS", "BLOCK_E"] + [t.name for t in self.tiles] + [r.name for r in self.reductions]

        fn = _Block()
        fn.items.append("pid_f = tl.program_id(1)")
        fn.items.append("row0 = tl.program_id(0).to(tl.int64) * ROWS")
        fn.items += self.prog_block.items
        rows = _Block("for rr in range(ROWS):")
        csr = "in-CSR: one destination row" if self.rows == "dst" else "out-CSR: one source row"
        if self.partial:
            rows.items.append(f"# one chunk of a hub row ({csr}) per iteration, num_rows chunks in all "
                              f"(the last are repeated, harmlessly); reductions go to row t")
            rows.items.append("t = tl.minimum(row0 + rr, num_rows - 1)")
            rows.items.append("v = tl.load(task_row + t).to(tl.int64)")
            rows.items.append("start = tl.load(task_start + t).to(tl.int64)")
            rows.items.append("end = tl.load(task_end + t).to(tl.int64)")
            if self.uses_deg:  # the whole row's degree (chunks are never empty)
                rows.items.append("deg = tl.load(indptr + v + 1).to(tl.int64) - tl.load(indptr + v).to(tl.int64)")
        else:
            rows.items.append(f"# {csr} per iteration (the last rows are repeated, harmlessly)")
            rows.items.append("v = tl.minimum(row0 + rr, num_rows - 1)")
            rows.items.append("start = tl.load(indptr + v).to(tl.int64)")
            rows.items.append("end = tl.load(indptr + v + 1).to(tl.int64)")
            if self.hub:
                rows.items.append("# a hub row (more than hub_threshold entries): the partial kernel walks it")
                rows.items.append("end = tl.where(end - start > hub_threshold, start, end)")
            if self.uses_deg:
                rows.items.append("deg = end - start")
        rows.items += self.row_block.items
        rows.items += self.acc_init
        edges = _Block("for j0 in range(start, end, BLOCK_E):")
        edges.items.append("j = j0 + tl.arange(0, BLOCK_E)")
        edges.items.append("em = j < end")
        if self.uses_nbr:
            what = "source" if self.rows == "dst" else "destination"
            edges.items.append(f"nbr = tl.load(indices + j, mask=em, other=0).to(tl.int64)  # {what} nodes")
        if self.uses_e:
            edges.items.append("e = tl.load(eids + j, mask=em, other=0).to(tl.int64)  # edge ids")
        edges.items += self.edge_block.items
        rows.items.append(edges)
        rows.items += self.finish
        fn.items.append(rows)
        self.prune(fn)

        header = [
            f"# Generated by gdsl ({CODEGEN_VERSION}): a fused {self.kernel.pattern} kernel for Triton.",
            "# Do not edit: the file is rewritten from the IR below.",
            "#",
            f"# {self.kernel.describe()}",
            "#",
        ]
        header += ["# " + line for line in str(prog).splitlines()]
        header += ["#"] + argument_lines(self.inputs, self.outputs, _STORAGE.__getitem__)
        for tile in self.tiles:
            header.append(f"#   {tile.name}: feature lanes per program for the {tile.size}-wide outputs")
        for red in self.reductions:
            header.append(f"#   {red.name}: lanes of an inner reduction over {red.extent}")
        lines = header + ["import triton", "import triton.language as tl", ""]
        if "_tanh" in self.helpers:
            lines += ["", "@triton.jit", "def _tanh(x):",
                      "    t = tl.exp(-2.0 * tl.abs(x))",
                      "    y = (1.0 - t) / (1.0 + t)",
                      "    return tl.where(x < 0, -y, y)", ""]
        if "_mix" in self.helpers:
            lines += ["", "@triton.jit", "def _mix(x):",
                      "    # 32-bit hash in int64 (gdsl.kernels.random): the dropout keep bits",
                      "    x = (x * 1640531527) & 4294967295",
                      "    x = x ^ (x >> 16)",
                      "    x = (x * 2146121005) & 4294967295",
                      "    x = x ^ (x >> 15)",
                      "    x = (x * 739982445) & 4294967295",
                      "    return x ^ (x >> 16)", ""]
        if "_pow" in self.helpers:
            lines += ["", "@triton.jit", "def _pow(x, y):",
                      "    # x ** y with torch's conventions for negative bases and zero exponents",
                      "    r = tl.exp(y * tl.log(tl.abs(x)))",
                      "    integral = tl.floor(y) == y",
                      "    odd = integral & (tl.floor(y * 0.5) * 2.0 != y)",
                      "    r = tl.where(x < 0, tl.where(integral, tl.where(odd, -r, r), float(\"nan\")), r)",
                      "    return tl.where(y == 0, 1.0, r)", ""]
        signature = ", ".join(arg_names + [f"{name}: tl.constexpr" for name in constexprs])
        self.function_lines = ["", "@triton.jit", f"def {entry}({signature}):"] + fn.render("    ")
        lines += self.function_lines
        return TritonSource("\n".join(lines) + "\n", entry, arg_names, self.inputs, self.outputs,
                            self.kernel.pattern, self.rows, fingerprint, tuple(self.tiles),
                            tuple(self.reductions))


def generate_triton(kernel: KernelPlan, config: TritonConfig | None = None) -> TritonSource:
    """Generate the Triton module for one fused kernel (see the module docstring for its shape).

    Only ``config.hub_threshold`` changes the source (the other knobs are launch constexprs):
    when it is set the module is hub-capable: the main kernel takes ``hub_threshold`` after
    ``num_edges`` and skips rows with more entries, and ``<entry>_partial`` (arguments ``indptr,
    indices, eids, task_row, task_start, task_end, num_tasks, num_edges``, inputs, outputs) walks
    chunks of those rows, writing one partial result per chunk (gdsl.kernels.hub combines them)."""
    if kernel.pattern not in ("gather_reduce", "edge_map"):
        raise CompileError(f"the Triton backend cannot generate a {kernel.pattern!r} kernel")
    if config is None or not config.hub:
        return _Generator(kernel).generate()
    main = _Generator(kernel, hub=True).generate()
    partial_gen = _Generator(kernel, partial=True)
    partial = partial_gen.generate()
    if (partial.tiles, partial.reductions) != (main.tiles, main.reductions):  # pragma: no cover
        raise CompileError("internal: the partial Triton kernel's tiles differ from the main kernel's")
    text = main.source + "\n".join(partial_gen.function_lines) + "\n"
    return dataclasses.replace(main, source=text, partial_entry=partial.entry,
                               partial_arg_names=partial.arg_names)
