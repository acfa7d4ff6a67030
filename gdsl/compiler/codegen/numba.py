"""numba code generation for fused kernels (gather-reduce and edge map).

:func:`generate_numba` turns a :class:`~gdsl.compiler.fusion.KernelPlan` into the text of a Python
module with one ``@numba.njit(parallel=True)`` function. The generated code has one shape for every
kernel (docs/design.md, section 4)::

    for p in numba.prange(num_parts):               # contiguous row ranges of about equal work
        <scratch arrays, allocated once per part>
        for v in range(row_splits[p], row_splits[p + 1]):   # one row of the in-CSR (out-CSR)
            <per-row values, output init>
            for j in range(indptr[v], indptr[v + 1]):       # its edges, in edge-id order
                <prefetch the rows entry j + prefetch_distance will read>
                u = indices[j]; e = eids[j]
                <materialised per-edge values: feature reductions, matmul, cat, shared values>
                for f in range(F):                  # the feature axis, innermost and contiguous
                    <message math, one line per IR instruction>
                    <reductions / edge stores>
            <finalise: mean divides by the degree>

A softmax reduction (``NumbaSchedule.softmax_chunk``) walks the row's entries in chunks instead:
a loop over the chunk computes the logits into stack scratch, the running sums are rescaled once,
a loop takes the chunk's exps (vector code), and a second loop over the chunk does the rest of the
edge's work with those weights (:meth:`_Generator.chunkable_softmax`).

Edge fields given in the CSR's entry order (``by_position``: narrow tensors reused unchanged,
:mod:`gdsl.kernels.edge_order`, and values handed over by an earlier kernel) are read at ``j``
instead of ``e``; edge outputs in ``to_position`` are written at ``eo = entry_pos[j]``, their
edge's position in the CSR a later kernel walks (:func:`gdsl.compiler.fusion.edge_handoffs`).

An edge map may instead walk the edges in id order (``NumbaSchedule.edge_order``): the per-edge
feature rows are then read and written in sequence, and the endpoints' rows at random::

    for p in numba.prange(num_parts):               # contiguous edge-id ranges
        for e in range(edge_splits[p], edge_splits[p + 1]):
            v = row_ids[e]; u = other_ids[e]
            <per-row values (now per edge), then the edge's work as above>

Rows are destinations (in-CSR, ``KernelPlan.rows == 'dst'``) or, for reductions into sources as in
backward kernels, sources (out-CSR); ``indices[j]`` is then a destination, named ``d``. The runtime
computes ``row_splits`` (:func:`gdsl.kernels.numba_runtime.row_splits`): several parts per thread,
balanced by edges + rows, so that a skewed degree distribution does not leave one thread idle.

Every feature array is 2-D ``(rows, flat features)``; a value of feature shape ``(H, D)`` sits at
flat index ``h * D + d``. Broadcasting between feature shapes (numpy-style) is resolved here, at
code-generation time, into index arithmetic per operand. Elementwise chains are evaluated inside the
loop of whatever consumes them (a reduction, a store, a feature reduction); a value is written to
per-part scratch memory only when it must be: feature reductions, ``matmul``, ``cat``, and values
read by several consumers that loop over different shapes. A sub-expression that does not depend on
the innermost loop variable is hoisted to the loop level it depends on (a per-edge scalar weight is
loaded once per edge, a per-head value once per head, a destination value once per row).

The semantics are those of :mod:`gdsl.compiler.interpret`:

- ``sum``; ``mean`` is the sum divided by the in-degree in this structure;
- ``max`` / ``min`` compare strictly, so the first entry of the row (the smallest edge id) wins
  ties, and the winning edge id per (row, feature) is written to an int64 output ``<name>@arg``;
- rows without in-edges get 0 (and ``-1`` as arg);
- each value is computed in its own dtype (float32 stays float32).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch

from ...errors import CompileError
from ...kernels.schedules import NumbaSchedule
from ..fusion import ENTRY_POS, KernelPlan
from ..ir import Program
from ..ops import OPS, promote
from .common import InputSpec, OutputSpec, argument_lines, plan_inputs
from .common import describe as _describe
from .common import sanitize as _sanitize

# In every generated file's first line, so part of its name: bump it when the generated code or an
# intrinsic it calls (gdsl.kernels.numba_intrinsics) changes, since numba's on-disk cache of a file
# does not see changes to the functions the file imports.
CODEGEN_VERSION = "numba-10"


_NP_TYPES = {
    torch.float32: "np.float32", torch.float64: "np.float64",
    torch.int32: "np.int32", torch.int64: "np.int64", torch.bool: "np.bool_",
}
_REDUCERS = {"mailbox_sum": "sum", "mailbox_mean": "mean", "mailbox_max": "max", "mailbox_min": "min",
             "mailbox_softmax_sum": "softmax_sum", "mailbox_logsumexp": "logsumexp"}
_SOFTMAX = ("softmax_sum", "logsumexp")

_ROW, _EDGE = 0, 1  # placement levels; loop k of a nest is at level _EDGE + 1 + k
_CONST = -1


# ------------------------------------------------------------------------------------------------
# Public result types
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NumbaSource:
    """A generated module: ``source`` defines ``entry``, called with ``arg_names`` in order:
    ``indptr, indices, eids, row_splits, num_rows, num_edges`` (then ``hub_threshold`` in a
    hub-capable module), then ``inputs``, then ``outputs``. An edge map walking the edges in id
    order (``by_edge``) takes ``row_ids, other_ids, edge_splits, num_rows, num_edges`` first: each
    edge's row (destination for in-CSR kernels) and other endpoint, indexed by edge id."""

    source: str
    entry: str
    arg_names: list[str]
    inputs: list[InputSpec]
    outputs: list[OutputSpec]
    pattern: str
    fingerprint: str
    partial_entry: str | None = None        # hub-capable modules: the chunk kernel
    partial_arg_names: list[str] | None = None
    by_edge: bool = False
    by_position: frozenset[str] = frozenset()  # edge fields read at the entry's position j
    to_position: frozenset[str] = frozenset()  # edge outputs written at the other CSR's position

    def output(self, name: str) -> OutputSpec:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        raise KeyError(name)


# ------------------------------------------------------------------------------------------------
# Index expressions
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Ix:
    """An integer index expression: its text, the placement level it depends on, and its value
    when it is a compile-time constant."""

    text: str
    level: int
    const: int | None = None


def _c(n: int) -> _Ix:
    return _Ix(str(n), _CONST, n)


_ATOM = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*$|^\d+$")


def _paren(text: str) -> str:
    return text if _ATOM.match(text) else f"({text})"


def _lin(terms: list[tuple[_Ix, int]]) -> _Ix:
    """``sum(term * stride)``, folding constants."""
    const, parts, level = 0, [], _CONST
    for term, stride in terms:
        if stride == 0 or term.const == 0:
            continue
        if term.const is not None:
            const += term.const * stride
            continue
        level = max(level, term.level)
        parts.append(term.text if stride == 1 else f"{_paren(term.text)} * {stride}")
    if not parts:
        return _c(const)
    if const:
        parts.append(str(const))
    return _Ix(" + ".join(parts), level)


def _offset(term: _Ix, k: int) -> _Ix:
    if k == 0:
        return term
    if term.const is not None:
        return _c(term.const + k)
    return _Ix(f"{term.text} + {k}", term.level)


def _strides(shape: tuple[int, ...]) -> list[int]:
    out, acc = [], 1
    for s in reversed(shape):
        out.append(acc)
        acc *= s
    return out[::-1]


@dataclass(frozen=True)
class _Flat:
    ix: _Ix

    def key(self):
        return ("f", self.ix.text)

    @property
    def level(self) -> int:
        return self.ix.level


@dataclass(frozen=True)
class _Multi:
    ixs: tuple[_Ix, ...]

    def key(self):
        return ("m",) + tuple(t.text for t in self.ixs)

    @property
    def level(self) -> int:
        return max((t.level for t in self.ixs), default=_CONST)


def _to_flat(index, shape: tuple[int, ...]) -> _Ix:
    if isinstance(index, _Flat):
        return index.ix
    return _lin(list(zip(index.ixs, _strides(shape))))


def _to_multi(index, shape: tuple[int, ...]) -> _Multi:
    if isinstance(index, _Multi):
        return index
    flat = index.ix
    terms = []
    for k, (size, stride) in enumerate(zip(shape, _strides(shape))):
        if size == 1:
            terms.append(_c(0))
        elif flat.const is not None:
            terms.append(_c((flat.const // stride) % size))
        else:
            text = _paren(flat.text)
            if stride != 1:
                text = f"{text} // {stride}"
            if k > 0:
                text = f"({text}) % {size}" if stride != 1 else f"{text} % {size}"
            terms.append(_Ix(text, flat.level))
    return _Multi(tuple(terms))


def _broadcast_index(index: _Multi, shape: tuple[int, ...], operand: tuple[int, ...]) -> _Multi:
    """Index into an operand of feature shape ``operand`` broadcast (right-aligned) to ``shape``."""
    lead = len(shape) - len(operand)
    return _Multi(tuple(_c(0) if size == 1 else index.ixs[lead + k] for k, size in enumerate(operand)))


# ------------------------------------------------------------------------------------------------
# Loop nests
# ------------------------------------------------------------------------------------------------
# Loop bounds. Row accumulators and scratch live on the stack (``_STACK_MAX``), which LLVM knows is
# disjoint from the kernel's array arguments, and kernels compile with the SLP vectoriser on
# (gdsl.kernels.numba_runtime): LLVM unrolls a loop with a short constant trip count and SLP turns
# the unrolled lanes into vector code, with the accumulators in registers (100k/1M, kernels timed
# alternately: copy_u+sum D=16 2.93 -> 2.23 ms; the 8 heads' online log-sum-exp 17.6 -> 12.1 ms,
# its exps now one 8-lane vector). A loop that accumulates in place in an output row (max / min reductions, whose
# selects with the winning edge ids did not gain from stack accumulators) runs to an opaque bound
# from 16 to 48 iterations (``nf<extent> = opaque(<extent>)``, set once per part): unrolled, LLVM
# cannot prove the output row and the gathered rows disjoint and leaves it scalar; with an unknown
# count it vectorises it behind a runtime overlap check.
_OPAQUE_MAX = 48
_IN_PLACE = 16      # loops over an output row accumulated in place: opaque from this many
_CLEAR = 1 << 30    # other loops: constant trip counts
# The innermost loop of a nest of several (heads x features) runs to an opaque bound from this many
# iterations: unrolled, it leaves LLVM the outer loop to vectorise, with gathers and scatters
# across the heads' strided elements; kept, it is one contiguous vector loop per head (GAT H=8
# D=16 100k/1M backward kernel 351 -> 163 ms). At 8 features the unrolled form is faster.
_INNER_OPAQUE_FROM = 16


def _opaque_inner(extents: list[int]) -> bool:
    """Whether the innermost of a nest of loops with these trip counts runs to an opaque bound."""
    return len(extents) > 1 and _INNER_OPAQUE_FROM <= extents[-1] <= _OPAQUE_MAX
# Per-part scratch and row accumulators up to this many elements live on the stack (alloca).
_STACK_MAX = 1024


class _Nest:
    """A chain of loops at the edge level; ``pre[k]`` / ``post[k]`` are the lines before / after
    loop ``k`` inside loop ``k - 1`` (``pre[0]``: before the outermost loop)."""

    def __init__(self, loops: list[tuple[str, int]], opaque_from: int = _CLEAR):
        self.loops = loops
        self.opaque_from = opaque_from  # loops this long or longer run to an opaque bound
        self.opaque_loops: set[int] = set()  # loops that run to an opaque bound whatever their length
        if _opaque_inner([extent for _, extent in loops]):
            self.opaque_loops.add(len(loops) - 1)
        self.pre: list[list[str]] = [[] for _ in range(len(loops) + 1)]
        self.post: list[list[str]] = [[] for _ in range(len(loops) + 1)]
        self.memo: dict[tuple, tuple[str, int]] = {}

    def var(self, k: int) -> _Ix:
        return _Ix(self.loops[k][0], _EDGE + 1 + k)

    def render(self, indent: str) -> list[str]:
        lines: list[str] = []

        def emit(k: int, pad: str) -> None:
            lines.extend(pad + line for line in self.pre[k])
            if k < len(self.loops):
                var, extent = self.loops[k]
                trip = f"nf{extent}" if k in self.opaque_loops else _trip(extent, self.opaque_from)
                lines.append(f"{pad}for {var} in range({trip}):")
                emit(k + 1, pad + "    ")
            lines.extend(pad + line for line in self.post[k])

        emit(0, indent)
        return lines


_TRIP_NAME = re.compile(r"\brange\(nf(\d+)\)")


def _trip(extent: int, opaque_from: int = _CLEAR) -> str:
    return f"nf{extent}" if opaque_from <= extent <= _OPAQUE_MAX else str(extent)


def _loops_over_output(shape: tuple[int, ...], x_shape: tuple[int, ...], indent: str
                       ) -> tuple[list[str], str, str, str]:
    """Loops over a softmax output row of ``shape`` (one per axis longer than 1), the indent of
    their body, and the body's flat index into the output and into its logits (``x_shape``,
    broadcast against ``shape``)."""
    lines, names = [], []
    looped = [k for k, n in enumerate(shape) if n > 1]
    opaque_last = _opaque_inner([shape[k] for k in looped])  # as a _Nest's
    for k, n in enumerate(shape):
        names.append(f"i{k}" if n > 1 else "0")
        if n > 1:
            opaque = opaque_last and k == looped[-1]
            lines.append(f"{indent}for i{k} in range({f'nf{n}' if opaque else n}):")
            indent += "    "
    flat = " + ".join(f"{nm} * {st}" if st != 1 else nm
                      for nm, st in zip(names, _strides(shape)) if nm != "0") or "0"
    pad = (1,) * (len(shape) - len(x_shape)) + tuple(x_shape)
    x_flat = " + ".join(f"{names[k]} * {st}" if st != 1 else names[k]
                        for k, st in zip(range(len(shape)), _strides(pad)) if pad[k] > 1) or "0"
    return lines, indent, flat, x_flat


def _nest_over(shape: tuple[int, ...], flat: bool, var: str = "f",
               opaque_from: int = _CLEAR) -> tuple[_Nest, Any]:
    """A loop nest over a feature shape and the index of its innermost body."""
    size = math.prod(shape)
    if flat:
        if size == 1:
            return _Nest([]), _Flat(_c(0))
        nest = _Nest([(var, size)], opaque_from)
        return nest, _Flat(nest.var(0))
    loops, terms = [], []
    for k, extent in enumerate(shape):
        if extent == 1:
            terms.append(None)
        else:
            terms.append(len(loops))
            loops.append((f"i{k}", extent))
    nest = _Nest(loops, opaque_from)
    return nest, _Multi(tuple(_c(0) if t is None else nest.var(t) for t in terms))


# ------------------------------------------------------------------------------------------------
# Literals and casts
# ------------------------------------------------------------------------------------------------
def _np_type(dtype: torch.dtype, where: str | None = None) -> str:
    if dtype not in _NP_TYPES:
        raise CompileError(f"the numba backend does not support dtype {dtype}", where=where)
    return _NP_TYPES[dtype]


def _literal(value: Any, dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "True" if value else "False"
    if dtype.is_floating_point:
        v = float(value)
        text = "np.nan" if v != v else ("np.inf" if v == math.inf else "-np.inf" if v == -math.inf
                                         else repr(v))
        return f"{_np_type(dtype)}({text})"
    return f"{_np_type(dtype)}({int(value)})"


def _cast(text: str, src: torch.dtype, dst: torch.dtype) -> str:
    if src == dst:
        return text
    if dst == torch.bool:
        return f"({text} != 0)"
    return f"{_np_type(dst)}({text})"


def _extreme(dtype: torch.dtype, op: str) -> str:
    """The identity of max (op='max') or min over ``dtype``."""
    if dtype.is_floating_point:
        return _literal(-math.inf if op == "max" else math.inf, dtype)
    if dtype == torch.bool:
        return "False" if op == "max" else "True"
    info = torch.iinfo(dtype)
    return _literal(info.min if op == "max" else info.max, dtype)


# ------------------------------------------------------------------------------------------------
# The generator
# ------------------------------------------------------------------------------------------------
_VIEWS = ("reshape", "slice", "expand", "materialize")
_SCRATCH_OPS = ("cat", "pad")  # besides feature reductions and matmul/outer: computed into scratch


class _Generator:
    def __init__(self, kernel: KernelPlan, schedule: NumbaSchedule, partial: bool = False,
                 by_position: frozenset[str] = frozenset(), to_position: frozenset[str] = frozenset()):
        self.kernel = kernel
        self.schedule = schedule
        # edge fields passed in the CSR's entry order (gdsl.kernels.edge_order): read at ``j``
        self.by_position = by_position
        # edge outputs written at their edge's entry in the other CSR (``eo = entry_pos[j]``), for
        # a later kernel walking that CSR to read them in sequence
        self.to_position = to_position
        # The partial kernel of a hub-capable module walks chunks ("tasks") of hub rows and
        # writes each chunk's result to row t of partial outputs (combined by gdsl.kernels.hub).
        self.partial = partial
        self.orow = "t" if partial else "v"  # the output row of a row's reductions
        # an edge map walking the edges in id order instead of by rows (module docstring)
        self.by_edge = bool(schedule.edge_order) and kernel.pattern == "edge_map" and not partial
        self.prog: Program = kernel.program
        # Rows are destinations (in-CSR) or, for reductions into sources, sources (out-CSR);
        # ``indices[j]`` is the other endpoint of entry j, named u (a source) or d (a destination).
        self.rows = getattr(kernel, "rows", "dst")
        if self.rows not in ("src", "dst"):
            raise CompileError(f"internal: kernel rows must be 'src' or 'dst', got {self.rows!r}")
        self.other = "src" if self.rows == "dst" else "dst"
        self.nbr = "u" if self.other == "src" else "d"
        self.names: set[str] = {"indptr", "indices", "eids", "num_rows", "num_edges", "v", "j", "u",
                                "d", "e", "start", "end", "first", "np", "numba", "deg", "nnz",
                                "row_splits", "p", "t", "hub_threshold", "task_row", "task_start",
                                "task_end", "num_tasks", "row_ids", "other_ids", "edge_splits", "vp",
                                "jp", "up", "dp", "ep", "prefetch", "prefetch_write", "opaque", "exp32",
                                "nonneg", "stack_empty", "jc", "nc", "jk", "eo", "eop", "jj", "ka",
                                "f", "r", "b", "m", "k", "l"} | {f"i{k}" for k in range(32)} | {f"q{k}" for k in range(32)}
        self.row_lines: list[str] = []      # per-row values (before the edge loop)
        self.alloc_lines: list[str] = []    # per-part scratch arrays
        self.uses_stack = False
        self.memo_row: dict[tuple, tuple[str, int]] = {}
        self.memo_edge: dict[tuple, tuple[str, int]] = {}
        self.uses_u = self.uses_e = self.uses_first = self.uses_eo = False
        self.random_rows: dict[str, tuple[str, torch.dtype, int, bool]] = {}  # arg -> (row, ...)
        for ins in self.prog.instrs:
            _np_type(ins.dtype, ins.where)
            if ins.op not in OPS:
                raise CompileError(f"internal: unknown IR op {ins.op!r}", where=ins.where)
            if ins.op == "mailbox_softmax":
                raise CompileError("internal: a bare mailbox softmax reached code generation (fusion "
                                   "only hands over softmax-weighted sums)", where=ins.where)

    # -- names ---------------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            name = f"{base}_{k}"
            k += 1
        self.names.add(name)
        return name

    # -- arguments -----------------------------------------------------------------------------
    def plan_arguments(self) -> None:
        self.inputs, self.input_of = plan_inputs(self.kernel, self.fresh)
        written = {name.partition(":")[2] for name, _ in self.prog.outputs if name.startswith("edge:")}
        self.to_position = frozenset() if self.by_edge else frozenset(self.to_position) & written
        if self.to_position:  # each entry's position in the other CSR, int32, in this CSR's order
            spec = InputSpec(ENTRY_POS, "edge", torch.int32, (), self.fresh("entry_pos"))
            self.inputs.append(spec)
            self.entry_pos = spec.arg_name

        self.outputs: list[OutputSpec] = []
        self.sinks: list[tuple[OutputSpec, OutputSpec | None, int]] = []  # (out, arg, value)
        # online-softmax reductions: (out, lse output or None, reduction instruction)
        self.softmax_sinks: list[tuple[OutputSpec, OutputSpec | None, int]] = []
        for name, i in self.prog.outputs:
            ins = self.prog.instrs[i]
            space, _, fieldname = name.partition(":")
            if space == self.rows:
                if ins.op not in _REDUCERS or ins.attr("into", "dst") != self.rows:
                    raise CompileError(f"internal: kernel output {name!r} is not a mailbox reduction "
                                       f"into the kernel's {self.rows} rows ({ins.op})", where=ins.where)
                reducer = _REDUCERS[ins.op]
                shape = ins.shape if reducer in _SOFTMAX else self.prog.instrs[ins.args[0]].shape
            elif space == "edge":
                reducer, shape = None, ins.shape
            else:
                raise CompileError(f"internal: kernel output {name!r} is neither {self.rows}: nor edge:")
            out = OutputSpec(name, space, ins.dtype, math.prod(shape), tuple(shape), reducer,
                             self.fresh(f"out_{_sanitize(fieldname)}"))
            self.outputs.append(out)
            if reducer in _SOFTMAX:
                if self.rows != "dst":
                    raise CompileError("internal: a softmax reduction in a kernel over source rows")
                lse = None
                if reducer == "softmax_sum":  # logsumexp's output is its own log-sum-exp
                    x_shape = self.prog.instrs[ins.args[0]].shape
                    lse = OutputSpec(name + "@lse", space, ins.dtype, math.prod(x_shape), tuple(x_shape),
                                     reducer, self.fresh(f"lse_{_sanitize(fieldname)}"))
                    self.outputs.append(lse)
                self.softmax_sinks.append((out, lse, i))
                continue
            arg = None
            if reducer in ("max", "min"):
                arg = OutputSpec(name + "@arg", space, torch.int64, out.size, out.shape, reducer,
                                 self.fresh(f"arg_{_sanitize(fieldname)}"))
                self.outputs.append(arg)
            self.sinks.append((out, arg, ins.args[0] if space == self.rows else i))

    # -- analysis: what lives in scratch memory ---------------------------------------------------
    def is_load(self, i: int) -> bool:
        return self.prog.instrs[i].op.startswith("load_")

    def kind(self, i: int) -> str:
        return OPS[self.prog.instrs[i].op].kind

    def size(self, i: int) -> int:
        return math.prod(self.prog.instrs[i].shape)

    def stored(self, i: int) -> bool:
        return self.is_load(i) or i in self.materialized

    def analyze(self) -> None:
        prog = self.prog
        self.materialized: set[int] = set()
        for i, ins in enumerate(prog.instrs):
            kind = self.kind(i)
            if kind in ("feature_reduce", "matmul") or ins.op in _SCRATCH_OPS:
                self.materialized.add(i)
            if kind == "matmul":  # matmul / outer read their operands at random: keep them stored
                self.materialized.update(a for a in ins.args if not self.is_load(a)
                                         and self.prog.instrs[a].op != "const")
        # A computed value read by consumers of different loop nests is computed once per edge
        # into scratch; one read by a single nest is evaluated inside it.
        while True:
            groups = self.sink_groups()
            roots: list[tuple[Any, list[int]]] = [(("m", i), list(prog.instrs[i].args))
                                                  for i in sorted(self.materialized)]
            roots += [(("g", shape), [value for _, _, value in sinks]) for shape, sinks in groups]
            roots += [(("s", i), list(prog.instrs[i].args)) for _, _, i in self.softmax_sinks]
            refs: dict[int, set] = {}
            for root, operands in roots:
                seen: set[int] = set()
                stack = list(operands)
                while stack:
                    a = stack.pop()
                    if a in seen or self.stored(a) or prog.instrs[a].op == "const":
                        continue
                    seen.add(a)
                    refs.setdefault(a, set()).add(root)
                    stack.extend(prog.instrs[a].args)
            new = {a for a, rs in refs.items() if len(rs) > 1 and self.size(a) > 1
                   and prog.instrs[a].op not in _VIEWS}
            if not new:
                break
            self.materialized |= new

    def sink_groups(self) -> list[tuple[tuple[int, ...], list]]:
        groups: dict[tuple[int, ...], list] = {}
        for sink in self.sinks:
            groups.setdefault(sink[0].shape, []).append(sink)
        return list(groups.items())

    def flat_ok(self, i: int, computing: bool = False) -> bool:
        """Whether value ``i`` can be read at a flat index without div/mod index arithmetic."""
        ins = self.prog.instrs[i]
        if ins.op == "const" or (not computing and self.stored(i)):
            return True
        if ins.op in ("reshape", "materialize"):
            return self.flat_ok(ins.args[0])
        if ins.op == "expand":
            operand = self.prog.instrs[ins.args[0]]
            return math.prod(operand.shape) == 1 or (operand.shape == ins.shape
                                                     and self.flat_ok(ins.args[0]))
        if self.kind(i) == "structure":
            return True
        if ins.op == "slice":
            axis = ins.attr("axis") % len(ins.shape)
            return math.prod(ins.shape[:axis]) == 1 and self.flat_ok(ins.args[0])
        return all(self.size(a) == 1 or (self.prog.instrs[a].shape == ins.shape and self.flat_ok(a))
                   for a in ins.args)

    # -- placement of temporaries ----------------------------------------------------------------
    def alloc(self, name: str, size: int, dtype: torch.dtype) -> None:
        """Per-part scratch of ``size`` elements: on the stack up to ``_STACK_MAX`` elements (LLVM
        then knows it is disjoint from the arrays the kernel reads and writes), else on the heap."""
        if size <= _STACK_MAX:
            self.uses_stack = True
            self.alloc_lines.append(f"{name} = numba.carray(stack_empty({size}, {_np_type(dtype)}), {size})")
        else:
            self.alloc_lines.append(f"{name} = np.empty({size}, {_np_type(dtype)})")

    def accumulate_in_scratch(self) -> None:
        """Sums, means and softmax reductions accumulate a row in per-part stack scratch
        (``self.acc``), copied to the output row after the row's edges: the output row, an array
        argument, might overlap the rows read per edge as far as LLVM knows, which kept the
        accumulating loops from vectorising cleanly. (max / min, with their winning edge ids,
        measured slower that way and accumulate in place.)"""
        self.acc: dict[str, str] = {}
        self.split = 1
        if self.by_edge:
            return
        row_outputs = [out for out in self.outputs if out.space == self.rows]
        for out in row_outputs:
            if (out.size <= _STACK_MAX and out.reducer in ("sum", "mean", "softmax_sum")
                    and not out.name.endswith("@lse")):
                self.acc[out.name] = self.fresh(f"acc_{out.arg_name}")
        # Several accumulator sets when every row reduction is a plain sum on the stack: entries
        # alternate between the sets, so an entry's adds do not wait for the previous entry's
        # (one chain of dependent vector adds per row bounded copy_u+sum at D=16).
        if (row_outputs and all(out.name in self.acc and out.reducer in ("sum", "mean") for out in row_outputs)
                and not self.softmax_sinks
                and sum(out.size for out in row_outputs) * self.schedule.accumulators <= _STACK_MAX):
            self.split = self.schedule.accumulators
        for out in row_outputs:
            if out.name in self.acc:
                self.alloc(self.acc[out.name], out.size * self.split, out.dtype)

    def cell(self, out: OutputSpec, flat: str) -> str:
        """Where a row reduction accumulates element ``flat`` of the current row."""
        acc = self.acc.get(out.name)
        if acc is not None and self.split > 1:  # this entry's set: ka (a constant once unrolled)
            return f"{acc}[ka * {out.size} + {_paren(flat)}]"
        return f"{acc}[{flat}]" if acc is not None else f"{out.arg_name}[{self.orow}, {flat}]"

    def memo_for(self, level: int, nest: _Nest) -> dict:
        if level <= _ROW:
            return self.memo_row
        if level == _EDGE:
            return self.memo_edge
        return nest.memo

    def place(self, level: int, line: str, nest: _Nest) -> None:
        if level <= _ROW:
            self.row_lines.append(line)
        else:
            nest.pre[level - _EDGE].append(line)

    # -- reading values --------------------------------------------------------------------------
    def row_of(self, space: str) -> tuple[str | None, int]:
        if space == self.other:
            self.uses_u = True
            return self.nbr, _EDGE
        if space == "edge":
            self.uses_e = True
            return "e", _EDGE
        if space == self.rows:
            return "v", (_EDGE if self.by_edge else _ROW)
        return None, _ROW

    def random_row(self, row: str) -> bool:
        """Whether rows indexed by ``row`` are read at random (and worth prefetching): the other
        endpoint's always; edge rows unless the kernel walks the edges in order; its own rows
        only then."""
        return row == self.nbr or (row == "e") != self.by_edge

    def access(self, i: int, flat: _Ix) -> tuple[str, int]:
        """Direct read of a stored value (an input array or scratch) at a flat index."""
        ins = self.prog.instrs[i]
        if self.is_load(i):
            space = ins.op[len("load_"):]
            if ins.op == "load_param" and ins.attr("field") is None:
                spec = self.input_of[("param", ins.attr("index"))]
            else:
                spec = self.input_of[(space, ins.attr("field"))]
            if space == "edge" and spec.name in self.by_position and not self.by_edge:
                return f"{spec.arg_name}[j, {flat.text}]", max(_EDGE, flat.level)
            row, level = self.row_of(space)
            if row is None:
                return f"{spec.arg_name}[{flat.text}]", max(level, flat.level)
            if self.random_row(row):
                self.random_rows[spec.arg_name] = (row, spec.dtype, spec.size, False)
            return f"{spec.arg_name}[{row}, {flat.text}]", max(level, flat.level)
        name = self.scratch[i]
        if self.size(i) == 1:
            return name, _EDGE
        return f"{name}[{flat.text}]", max(_EDGE, flat.level)

    def value(self, i: int, index, nest: _Nest, dtype: torch.dtype | None = None) -> tuple[str, int]:
        """Scalar expression of value ``i`` at ``index`` (of its own shape), cast to ``dtype``."""
        ins = self.prog.instrs[i]
        target = ins.dtype if dtype is None else dtype
        if ins.op == "const":
            return _literal(ins.attr("value"), target), _CONST
        if ins.op == "edge_id":
            self.uses_e = True
            return _cast("np.int64(e)", torch.int64, target), _EDGE
        if ins.op == "in_degree":
            if self.rows != "dst":
                raise CompileError("internal: in_degree inside a kernel over source rows (it should "
                                   "have been hoisted to the node stage)", where=ins.where)
            degree = "(indptr[v + 1] - indptr[v])" if self.partial else "(end - start)"
            return _cast(degree, torch.int64, target), _ROW
        if i in self.materialized:
            text, level = self.access(i, _to_flat(index, ins.shape))
            return _cast(text, ins.dtype, target), level
        if ins.op in _VIEWS:
            return self.value(ins.args[0], self.view_index(ins, index), nest, target)
        key = (i, index.key())
        level = index.level
        if self.is_load(i):
            text, level = self.access(i, _to_flat(index, ins.shape))
        else:
            text, level = self.compute(i, index, nest)
        memo = self.memo_for(level, nest)
        if key in memo:
            name = memo[key][0]
        else:
            if _ATOM.match(text) and not self.is_load(i):
                name = text
            else:
                name = self.fresh(f"x{i}")
                self.place(level, f"{name} = {text}  # {_describe(i, ins)}", nest)
            memo[key] = (name, level)
        return _cast(name, ins.dtype, target), level

    def view_index(self, ins, index):
        operand = self.prog.instrs[ins.args[0]]
        if ins.op == "materialize":
            return index
        if ins.op == "expand":
            if math.prod(operand.shape) == 1:
                return _Multi(tuple(_c(0) for _ in operand.shape))
            if isinstance(index, _Flat) and operand.shape == ins.shape:
                return index
            return _broadcast_index(_to_multi(index, ins.shape), ins.shape, operand.shape)
        if ins.op == "reshape":
            return _Flat(_to_flat(index, ins.shape))
        # slice
        axis = ins.attr("axis") % len(ins.shape)
        start = ins.attr("start")
        if isinstance(index, _Flat) and math.prod(ins.shape[:axis]) == 1:
            return _Flat(_offset(index.ix, start * _strides(operand.shape)[axis]))
        multi = _to_multi(index, ins.shape)
        ixs = list(multi.ixs)
        ixs[axis] = _offset(ixs[axis], start)
        return _Multi(tuple(ixs))

    def operand_index(self, ins, a: int, index):
        """The index of operand ``a`` of elementwise ``ins`` read at ``index``."""
        operand = self.prog.instrs[a]
        if math.prod(operand.shape) == 1:
            return _Multi(tuple(_c(0) for _ in operand.shape))
        if isinstance(index, _Flat):
            if operand.shape == ins.shape:
                return index
            index = _to_multi(index, ins.shape)
        return _broadcast_index(index, ins.shape, operand.shape)

    def compute(self, i: int, index, nest: _Nest) -> tuple[str, int]:
        """The expression computing elementwise instruction ``i`` at ``index``."""
        ins = self.prog.instrs[i]
        op, kind, dtype = ins.op, self.kind(i), ins.dtype
        if op == "dropout_mask":
            return self.dropout_text(ins, index)
        if kind not in ("unary", "binary", "compare", "ternary"):
            raise CompileError(f"internal: {op} cannot be computed inline", where=ins.where)
        if kind == "compare":
            cdtype = promote([self.prog.instrs[a] for a in ins.args])
        elif op == "where":
            cdtype = dtype
        elif op == "cast":
            cdtype = self.prog.instrs[ins.args[0]].dtype
        else:
            cdtype = dtype
        args, level = [], index.level
        for k, a in enumerate(ins.args):
            want = torch.bool if (op == "where" and k == 0) else cdtype
            text, lv = self.value(a, self.operand_index(ins, a, index), nest, want)
            args.append(text)
            level = max(level, lv)
        zero, one = _literal(0, cdtype), _literal(1, cdtype)
        x = args[0]
        if op == "neg":
            text = f"-{_paren(x)}"
        elif op == "abs":
            text = f"abs({x})"
        elif op == "relu":
            text = f"np.maximum({x}, {zero})"
        elif op == "exp":
            text = self.exp(x, cdtype)
        elif op in ("log", "tanh", "sqrt"):
            text = f"np.{op}({x})"
        elif op == "sigmoid":
            text = f"{one} / ({one} + {self.exp('-' + _paren(x), cdtype)})"
        elif op == "rsqrt":
            text = f"{one} / np.sqrt({x})"
        elif op == "leaky_relu":
            slope = _literal(ins.attr("negative_slope"), cdtype)
            text = f"{x} if {x} > {zero} else {_paren(x)} * {slope}"
        elif op == "elu":
            alpha = _literal(ins.attr("alpha"), cdtype)
            text = f"{x} if {x} > {zero} else {alpha} * np.expm1({x})"
        elif op == "cast":
            text = _cast(x, cdtype, dtype)
        elif op in ("add", "sub", "mul", "div"):
            sym = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[op]
            text = f"{_paren(args[0])} {sym} {_paren(args[1])}"
        elif op == "pow":
            text = f"np.power({args[0]}, {args[1]})"
        elif op in ("maximum", "minimum"):
            text = f"np.{op}({args[0]}, {args[1]})"
        elif kind == "compare":
            sym = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "eq": "==", "ne": "!="}[op]
            text = f"{_paren(args[0])} {sym} {_paren(args[1])}"
        elif op == "where":
            text = f"{_paren(args[1])} if {_paren(args[0])} else {_paren(args[2])}"
        else:
            raise CompileError(f"the numba backend has no rule for {op!r}", where=ins.where)
        if dtype in (torch.int32,) and kind != "compare" and op != "cast":
            text = f"np.int32({text})"  # numba widens int32 arithmetic to int64
        return text, level

    def exp(self, x: str, dtype: torch.dtype) -> str:
        """``exp(x)``: float32 through the vectorisable exp32 (numba's np.exp is a scalar libm
        call), float64 through np.exp (full precision, for gradcheck)."""
        if dtype == torch.float32:
            self.uses_exp32 = True
            return f"exp32({x})"
        return f"np.exp({x})"

    def dropout_text(self, ins, index) -> tuple[str, int]:
        """``1 / (1 - p)`` or 0: the element's keep bit hashed from (seed, stream, edge, index)."""
        from ...kernels.random import threshold
        self.uses_e = True
        self.uses_dropout = True
        seed, _ = self.access(ins.args[0], _c(0))
        flat = _to_flat(index, ins.shape)
        p = ins.attr("p")
        scale = _literal(0.0 if p >= 1.0 else 1.0 / (1.0 - p), ins.dtype)
        text = (f"{scale} if dropout_keep({seed}, {ins.attr('stream')}, np.int64(e), {flat.text}, "
                f"{math.prod(ins.shape)}, {threshold(p)}) else {_literal(0, ins.dtype)}")
        return text, max(_EDGE, flat.level)

    # -- per-edge bodies -------------------------------------------------------------------------
    def target(self, i: int, flat: _Ix) -> str:
        name = self.scratch[i]
        return name if self.size(i) == 1 else f"{name}[{flat.text}]"

    def body_elementwise(self, i: int) -> _Nest:
        ins = self.prog.instrs[i]
        nest, index = _nest_over(ins.shape, self.flat_ok(i, computing=True))
        text, level = self.compute(i, index, nest)
        flat = _to_flat(index, ins.shape)
        nest.pre[0].insert(0, f"# {_describe(i, ins)}  -> scratch")
        self.place(max(_EDGE, level, flat.level), f"{self.target(i, flat)} = {text}", nest)
        return nest

    def body_feature_reduce(self, i: int) -> _Nest:
        """A reduction over one feature axis into scratch (or a scalar).

        Long reductions keep ``lanes`` independent partial accumulators (element ``r * lanes + q``
        goes to lane ``q``), combined pairwise at the end: without fastmath a single accumulator
        is one long chain of dependent adds, while independent lanes let LLVM vectorise."""
        ins = self.prog.instrs[i]
        x = self.prog.instrs[ins.args[0]]
        axis = ins.attr("axis") % len(x.shape)
        reducer = ins.op[len("feature_"):]
        keep = bool(ins.attr("keepdim"))
        loops, outer_terms = [], []
        for k, extent in enumerate(x.shape):
            if k == axis:
                continue
            if extent == 1:
                outer_terms.append(None)
            else:
                outer_terms.append(len(loops))
                loops.append((f"i{k}", extent))
        n_outer = len(loops)
        reduce_extent = x.shape[axis]
        lanes = 8 if reduce_extent >= 16 else 4 if reduce_extent >= 8 else 1
        steps, tail = divmod(reduce_extent, lanes)
        if steps > 1:
            loops.append(("r", steps))
        nest = _Nest(loops)
        if steps > 1 and n_outer and lanes == 8:
            # Unrolled, the lane loop left LLVM an outer loop (over heads) to vectorise with
            # gathers across the heads' strided elements; to an opaque bound, its 8 lanes become
            # one contiguous vector. GAT 100k/1M backward kernel, H=8 D=64: 1009 -> 406 ms, D=32:
            # 553 -> 312, D=16: 447 -> 337; H=4 D=64: 790 -> 180. Not for 4 lanes (D=8-15: the
            # gathers won, H=8 D=8 67 vs 90 ms).
            nest.opaque_loops.add(len(loops) - 1)
        outer = [_c(0) if t is None else nest.var(t) for t in outer_terms]
        res_terms = outer[:axis] + ([_c(0)] if keep else []) + outer[axis:]
        dtype = ins.dtype
        if lanes == 1:
            accs = [self.scratch[i] if self.size(i) == 1 else self.fresh(f"acc{i}")]
        else:
            accs = [self.fresh(f"acc{i}_{q}") for q in range(lanes)]
        init = _extreme(dtype, reducer) if reducer in ("max", "min") else _literal(0, dtype)
        nest.pre[0].insert(0, f"# {_describe(i, ins)}")
        nest.pre[n_outer].extend(f"{acc} = {init}" for acc in accs)

        def update(acc: str, text: str) -> str:
            if reducer in ("sum", "mean"):
                return f"{acc} += {text}"
            return f"{acc} = np.{'maximum' if reducer == 'max' else 'minimum'}({acc}, {text})"

        def element(red: _Ix) -> str:
            terms = outer[:axis] + [red] + outer[axis:]
            return self.value(ins.args[0], _Multi(tuple(terms)), nest, dtype)[0]

        inner = _EDGE + len(loops)
        step = nest.var(n_outer) if steps > 1 else None
        for q in range(lanes):
            red = _offset(_lin([(step, lanes)]), q) if step is not None else _c(q)
            self.place(inner, update(accs[q], element(red)), nest)
        for t in range(tail):  # the last reduce_extent % lanes elements, after the loop
            nest.post[n_outer].append(update(accs[t], element(_c(steps * lanes + t))))
        combined = accs
        while len(combined) > 1:
            pairs = [combined[k:k + 2] for k in range(0, len(combined), 2)]
            if reducer in ("sum", "mean"):
                combined = [f"({a} + {b})" for a, b in pairs]
            else:
                fn_name = "np.maximum" if reducer == "max" else "np.minimum"
                combined = [f"{fn_name}({a}, {b})" for a, b in pairs]
        final = combined[0]
        if final.startswith("(") and final.endswith(")") and reducer in ("sum", "mean"):
            final = final[1:-1]
        if reducer == "mean":
            final = f"({final}) / {_literal(reduce_extent, dtype)}"
        flat = _lin(list(zip(res_terms, _strides(ins.shape))))
        target = self.scratch[i] if self.size(i) == 1 else self.target(i, flat)
        if final != target:
            nest.post[n_outer].append(f"{target} = {final}")
        return nest

    def body_matmul(self, i: int) -> _Nest:
        ins = self.prog.instrs[i]
        xi, wi = ins.args
        x = self.prog.instrs[xi]
        w = self.prog.instrs[wi]
        transpose = bool(ins.attr("transpose"))
        k_dim = x.shape[-1]
        m_dim = w.shape[0] if transpose else w.shape[1]
        batch = math.prod(x.shape[:-1])
        loops = ([("b", batch)] if batch > 1 else []) + ([("m", m_dim)] if m_dim > 1 else [])
        n_outer = len(loops)
        loops.append(("k", k_dim))
        nest = _Nest(loops)
        b = nest.var(0) if batch > 1 else _c(0)
        m = nest.var(n_outer - 1) if m_dim > 1 else _c(0)
        k = nest.var(n_outer)
        dtype = ins.dtype
        acc = self.scratch[i] if self.size(i) == 1 else self.fresh(f"acc{i}")
        nest.pre[0].insert(0, f"# {_describe(i, ins)}")
        nest.pre[n_outer].append(f"{acc} = {_literal(0, dtype)}")
        xt, _ = self.stored_value(xi, _lin([(b, k_dim), (k, 1)]))
        w_flat = _lin([(m, k_dim), (k, 1)]) if transpose else _lin([(k, m_dim), (m, 1)])
        wt, _ = self.access(wi, w_flat)
        nest.pre[n_outer + 1].append(f"{acc} += {_cast(xt, x.dtype, dtype)} * {_cast(wt, w.dtype, dtype)}")
        if self.size(i) != 1:
            nest.post[n_outer].append(f"{self.target(i, _lin([(b, m_dim), (m, 1)]))} = {acc}")
        return nest

    def body_cat(self, i: int) -> list[_Nest]:
        ins = self.prog.instrs[i]
        axis = ins.attr("axis") % len(ins.shape)
        strides = _strides(ins.shape)
        nests, offset = [], 0
        for n, a in enumerate(ins.args):
            part = self.prog.instrs[a]
            nest, index = _nest_over(part.shape, flat=False)
            if n == 0:
                nest.pre[0].insert(0, f"# {_describe(i, ins)}")
            text, level = self.value(a, index, nest, ins.dtype)
            ixs = list(index.ixs)
            ixs[axis] = _offset(ixs[axis], offset)
            flat = _lin(list(zip(ixs, strides)))
            self.place(max(_EDGE, level, flat.level), f"{self.target(i, flat)} = {text}", nest)
            nests.append(nest)
            offset += part.shape[axis]
        return nests

    def body_pad(self, i: int) -> list[_Nest]:
        ins = self.prog.instrs[i]
        axis = ins.attr("axis") % len(ins.shape)
        zero_nest, zero_index = _nest_over(ins.shape, flat=True)
        zero_nest.pre[0].append(f"# {_describe(i, ins)}")
        flat = _to_flat(zero_index, ins.shape)
        self.place(max(_EDGE, flat.level), f"{self.target(i, flat)} = {_literal(0, ins.dtype)}", zero_nest)
        part = self.prog.instrs[ins.args[0]]
        nest, index = _nest_over(part.shape, flat=False)
        text, level = self.value(ins.args[0], index, nest, ins.dtype)
        ixs = list(index.ixs)
        ixs[axis] = _offset(ixs[axis], ins.attr("start"))
        flat = _lin(list(zip(ixs, _strides(ins.shape))))
        self.place(max(_EDGE, level, flat.level), f"{self.target(i, flat)} = {text}", nest)
        return [zero_nest, nest]

    def body_outer(self, i: int) -> _Nest:
        """``out[k, m] = sum_l x[l, k] * g[l, m]`` over the leading axes l (transposed: [m, k])."""
        ins = self.prog.instrs[i]
        xi, gi = ins.args
        x, g = self.prog.instrs[xi], self.prog.instrs[gi]
        k_dim, m_dim = x.shape[-1], g.shape[-1]
        lead = math.prod(x.shape[:-1])
        loops = ([("k", k_dim)] if k_dim > 1 else []) + ([("m", m_dim)] if m_dim > 1 else [])
        n_outer = len(loops)
        if lead > 1:
            loops.append(("l", lead))
        nest = _Nest(loops)
        k = nest.var(0) if k_dim > 1 else _c(0)
        m = nest.var(n_outer - 1) if m_dim > 1 else _c(0)
        l = nest.var(n_outer) if lead > 1 else _c(0)
        dtype = ins.dtype
        acc = self.scratch[i] if self.size(i) == 1 else self.fresh(f"acc{i}")
        nest.pre[0].insert(0, f"# {_describe(i, ins)}")
        nest.pre[n_outer].append(f"{acc} = {_literal(0, dtype)}")
        xt, _ = self.stored_value(xi, _lin([(l, k_dim), (k, 1)]))
        gt, _ = self.stored_value(gi, _lin([(l, m_dim), (m, 1)]))
        self.place(_EDGE + len(loops), f"{acc} += {_cast(xt, x.dtype, dtype)} * {_cast(gt, g.dtype, dtype)}",
                   nest)
        if self.size(i) != 1:
            out = _lin([(m, k_dim), (k, 1)]) if ins.attr("transpose") else _lin([(k, m_dim), (m, 1)])
            nest.post[n_outer].append(f"{self.target(i, out)} = {acc}")
        return nest

    def stored_value(self, i: int, flat: _Ix) -> tuple[str, int]:
        """A stored value (or a constant) read directly at a flat index."""
        ins = self.prog.instrs[i]
        if ins.op == "const":
            return _literal(ins.attr("value"), ins.dtype), _CONST
        return self.access(i, flat)

    def body_sinks(self, shape: tuple[int, ...], sinks: list) -> _Nest:
        flat_ok = all(self.flat_ok(value) for _, _, value in sinks)
        in_place = any(out.space == self.rows and out.name not in self.acc for out, _, _ in sinks)
        nest, index = _nest_over(shape, flat_ok, opaque_from=_IN_PLACE if in_place else _CLEAR)
        flat = _to_flat(index, shape)
        comments = []
        for out, arg, value in sinks:
            text, level = self.value(value, index, nest, out.dtype)
            level = max(_EDGE, level, flat.level)
            if out.space == "edge":
                row = "e"
                if out.name.partition(":")[2] in self.to_position:
                    row = "eo"
                    self.uses_eo = True
                else:
                    self.uses_e = True
                if row == "eo" or self.random_row("e"):
                    self.random_rows[out.arg_name] = (row, out.dtype, out.size, True)
                comments.append(f"# {out.name} = %{value}")
                self.place(level, f"{out.arg_name}[{row}, {flat.text}] = {text}", nest)
                continue
            comments.append(f"# {out.name} = mailbox_{out.reducer} %{value}")
            cell = self.cell(out, flat.text)
            if out.reducer in ("sum", "mean"):
                self.place(level, f"{cell} += {text}", nest)
                continue
            self.uses_first = self.uses_e = True
            if not _ATOM.match(text):
                msg = self.fresh(f"m{value}")
                self.place(level, f"{msg} = {text}", nest)
                text = msg
            cur, take = self.fresh("cur"), self.fresh("take")
            cmp = ">" if out.reducer == "max" else "<"
            self.place(level, f"{cur} = {cell}", nest)
            self.place(level, f"{take} = first | ({text} {cmp} {cur})", nest)
            self.place(level, f"{cell} = {text} if {take} else {cur}", nest)
            argcell = self.cell(arg, flat.text)
            self.place(level, f"{argcell} = e if {take} else {argcell}", nest)
        nest.pre[0][:0] = comments
        return nest

    def chunkable_softmax(self) -> int:
        """The chunk length of the softmax reductions, or 0 for the per-edge online update.

        Chunked (``NumbaSchedule.softmax_chunk`` edges at a time): a first loop over the chunk
        computes the logits into stack scratch and their maximum, the running sums are rescaled
        once per chunk, one loop takes every ``exp`` (a plain map over the chunk: vector code
        however few heads there are), and a second loop over the chunk accumulates the weighted
        values. The per-edge online update instead pays two dependent scalar ``exp`` per edge and
        head. Needs logits computed from loads and elementwise math only (a per-edge value held in
        scratch is computed in the second loop, too late); chunks are shortened so that the
        logits of one fit in ``_STACK_MAX`` elements."""
        chunk = self.schedule.softmax_chunk
        if not chunk or not self.softmax_sinks or self.by_edge:
            return 0
        for _, _, i in self.softmax_sinks:
            xi = self.prog.instrs[i].args[0]
            chunk = min(chunk, _STACK_MAX // max(1, math.prod(self.prog.instrs[xi].shape)))  # stack scratch
            stack, seen = [xi], set()
            while stack:
                a = stack.pop()
                if a in seen or self.is_load(a) or self.prog.instrs[a].op == "const":
                    continue
                if a in self.materialized:
                    return 0
                seen.add(a)
                stack.extend(self.prog.instrs[a].args)
        return chunk  # (0 when one edge's logits alone exceed the stack limit)

    def softmax_axes(self, out: OutputSpec, i: int):
        """The loops of a softmax reduction: heads (axes the logits vary on) first, then the axes
        only the values have; and the logits' own shape and size."""
        x_shape = self.prog.instrs[self.prog.instrs[i].args[0]].shape
        shape = out.shape
        pad = (1,) * (len(shape) - len(x_shape)) + tuple(x_shape)
        head_axes = [k for k, n in enumerate(shape) if pad[k] > 1]
        other_axes = [k for k, n in enumerate(shape) if pad[k] == 1 and n > 1]
        loops = [(f"i{k}", shape[k]) for k in head_axes] + [(f"i{k}", shape[k]) for k in other_axes]
        return shape, x_shape, head_axes, other_axes, loops, max(1, math.prod(x_shape))

    def logits_nest(self, shape, x_shape, head_axes, loops) -> tuple[_Nest, _Multi, Any, _Ix]:
        """The nest over a softmax's heads; the output's index in it, the logits' index and flat
        index."""
        nest = _Nest(loops[:len(head_axes)])
        var = {k: nest.var(n) for n, k in enumerate(head_axes)}
        multi = _Multi(tuple(var.get(k, _c(0)) for k in range(len(shape))))
        x_index = _broadcast_index(multi, shape, x_shape)
        return nest, multi, x_index, _to_flat(x_index, x_shape)

    def softmax_state(self, i: int, nx: int, dtype: torch.dtype) -> tuple[str, str]:
        """The row's running max and denominator per logit (per-part scratch, reset per row)."""
        run_max, run_den = self.fresh(f"mx{i}"), self.fresh(f"den{i}")
        self.alloc(run_max, nx, dtype)
        self.alloc(run_den, nx, dtype)
        self.row_lines.append(f"for f in range({nx}):")
        self.row_lines.append(f"    {run_max}[f] = {_extreme(dtype, 'max')}")
        self.row_lines.append(f"    {run_den}[f] = {_literal(0, dtype)}")
        return run_max, run_den

    def chunk_logits(self, out: OutputSpec, i: int, chunk: int) -> _Nest:
        """First pass over a chunk: the logits into ``buf[jk * nx + h]`` and their chunk max;
        then (``self.between``) the rescaling of the running sums and the chunk's ``exp``."""
        ins = self.prog.instrs[i]
        shape, x_shape, head_axes, _, loops, nx = self.softmax_axes(out, i)
        dtype = out.dtype
        run_max, run_den = self.softmax_state(i, nx, dtype)
        buf, cmax, scales = self.fresh(f"lg{i}"), self.fresh(f"cm{i}"), self.fresh(f"scs{i}")
        shifts = self.fresh(f"sh{i}")
        self.alloc(buf, chunk * nx, dtype)
        self.alloc(cmax, nx, dtype)
        self.alloc(scales, nx, dtype)
        self.alloc(shifts, nx, dtype)
        nest, _, x_index, x_flat = self.logits_nest(shape, x_shape, head_axes, loops)
        what = "softmax-weighted sum" if out.reducer == "softmax_sum" else "log-sum-exp"
        nest.pre[0].insert(0, f"# {out.name} = {what} over the row's edges, {chunk} at a time: "
                              f"{_describe(i, ins)}")
        xt, _ = self.value(ins.args[0], x_index, nest, dtype)
        slot = f"{buf}[jk * {nx} + {x_flat.text}]" if nx > 1 else f"{buf}[jk]"
        level = _EDGE + len(head_axes)
        self.place(level, f"{slot} = {xt}", nest)
        self.place(level, f"{cmax}[{x_flat.text}] = np.maximum({cmax}[{x_flat.text}], {slot})", nest)
        lowest = _extreme(dtype, "max")
        self.chunk_init += [f"for f in range({nx}):", f"    {cmax}[f] = {lowest}"]
        mo, mn, lv, sc = (self.fresh(f"{b}{i}") for b in ("mo", "mn", "lv", "sc"))
        # The chunk's max joins the row's; the sums so far shrink by exp(old - new) (1 while the
        # row's logits are all -inf). Then every logit of the chunk becomes its exp, in a loop of
        # its own so that it vectorises, and adds to the denominator. The exps subtract a shift:
        # the max, or 0 while the max is -inf (the chunk's logits are then -inf too, and their
        # exps 0). A select between the exp and 0 instead kept that loop scalar (GAT H=8 D=8
        # 100k/1M forward kernel 71 -> 49 ms on a Xeon).
        self.between += [
            f"for f in range({nx}):",
            f"    {mo} = {run_max}[f]",
            f"    {mn} = np.maximum({mo}, {cmax}[f])",
            f"    {lv} = {mn} != {lowest}",
            f"    {sc} = {self.exp(f'{mo} - {mn}', dtype)}",
            f"    {sc} = {sc} if {lv} else {_literal(1, dtype)}",
            f"    {run_den}[f] = {run_den}[f] * {sc}",
            f"    {run_max}[f] = {mn}",
            f"    {scales}[f] = {sc}",
            f"    {shifts}[f] = {mn} if {lv} else {_literal(0, dtype)}",
        ]
        if out.reducer == "softmax_sum":
            self.between += self.rescale_lines(out, shape, x_shape, scales)
        cell = f"{buf}[jk * {nx} + f]" if nx > 1 else f"{buf}[jk]"
        self.between += [
            "for jk in range(nc):",
            f"    for f in range({nx}):",
            f"        {cell} = {self.exp(f'{cell} - {shifts}[f]', dtype)}",
            "for jk in range(nc):",
            f"    for f in range({nx}):",
            f"        {run_den}[f] += {cell}",
        ]
        self.chunk_of[i] = (buf, run_max, run_den)
        return nest

    def rescale_lines(self, out: OutputSpec, shape, x_shape, scales: str) -> list[str]:
        """Multiply the row's accumulated output by the scale of each element's logit."""
        lines, pad_text, flat, x_flat = _loops_over_output(shape, x_shape, "")
        cell = self.cell(out, flat)
        return lines + [f"{pad_text}{cell} = {cell} * {scales}[{x_flat}]"]

    def chunk_values(self, out: OutputSpec, lse: OutputSpec | None, i: int) -> list[_Nest]:
        """Second pass over a chunk: add each edge's weights (the exps of the first) times its
        values to the row's output."""
        buf, run_max, run_den = self.chunk_of[i]
        shape, x_shape, head_axes, other_axes, loops, nx = self.softmax_axes(out, i)
        nests: list[_Nest] = []
        if out.reducer == "softmax_sum":
            ins = self.prog.instrs[i]
            nest = _Nest(list(loops), opaque_from=_CLEAR if out.name in self.acc else _IN_PLACE)
            var = {k: nest.var(n) for n, k in enumerate(head_axes + other_axes)}
            multi = _Multi(tuple(var.get(k, _c(0)) for k in range(len(shape))))
            x_text = _to_flat(_broadcast_index(multi, shape, x_shape), x_shape).text
            weight = f"{buf}[jk * {nx} + {x_text}]" if nx > 1 else f"{buf}[jk]"
            nest.pre[0].append(f"# {out.name} += softmax weight x value: {_describe(i, ins)}")
            v_shape = self.prog.instrs[ins.args[1]].shape
            vt, vlevel = self.value(ins.args[1], _broadcast_index(multi, shape, v_shape), nest, out.dtype)
            flat = _to_flat(multi, shape)
            cell = self.cell(out, flat.text)
            self.place(max(_EDGE + len(loops), vlevel, flat.level), f"{cell} += {weight} * {_paren(vt)}", nest)
            nests.append(nest)
        self.softmax_final(out, lse, shape, x_shape, run_max, run_den)
        return nests

    def body_softmax(self, out: OutputSpec, lse: OutputSpec | None, i: int) -> list[_Nest]:
        """An online-softmax reduction: ``softmax_sum(x, v)`` or ``logsumexp(x)``.

        Per element of x's shape the row keeps a running max ``M`` and denominator ``S``
        (per-part scratch); every edge rescales ``S`` and the output row by ``exp(M_old - M_new)``
        (1 unless the max grew) and adds ``exp(x - M_new)`` (times ``v``), so each edge is read
        once and the loop over heads has no branch. The row's finalisation (see
        ``softmax_final``) divides by ``S`` and writes ``M + log S``."""
        ins = self.prog.instrs[i]
        xi = ins.args[0]
        shape, x_shape, head_axes, other_axes, loops, nx = self.softmax_axes(out, i)
        # the logits' loops (values wider than the logits get a nest of their own)
        nest, multi, x_index, x_flat = self.logits_nest(shape, x_shape, head_axes, loops)
        dtype = out.dtype
        level = _EDGE + len(head_axes)
        run_max, run_den = self.softmax_state(i, nx, dtype)
        what = "softmax-weighted sum" if out.reducer == "softmax_sum" else "log-sum-exp"
        nest.pre[0].insert(0, f"# {out.name} = {what} over the row's edges (online softmax): {_describe(i, ins)}")
        xt, _ = self.value(xi, x_index, nest, dtype)
        if not _ATOM.match(xt):
            name = self.fresh(f"lg{i}")
            self.place(level, f"{name} = {xt}", nest)
            xt = name
        m_cell, d_cell = f"{run_max}[{x_flat.text}]", f"{run_den}[{x_flat.text}]"
        old_max, new_max = self.fresh(f"mo{i}"), self.fresh(f"mn{i}")
        live, scale, weight = self.fresh(f"lv{i}"), self.fresh(f"sc{i}"), self.fresh(f"pw{i}")
        # Branch-free: every edge rescales by exp(M_old - M_new) (1 unless the max grew), so the
        # loop over heads is straight-line code LLVM can vectorise (with exp32) when it has enough
        # heads for its vector width. A row whose logits are all -inf so far keeps S = 0.
        lines = [f"{old_max} = {m_cell}",
                 f"{new_max} = np.maximum({old_max}, {xt})",
                 f"{live} = {new_max} > {_extreme(dtype, 'max')}",
                 f"{scale} = {self.exp(f'{old_max} - {new_max}', dtype)}",
                 f"{weight} = {self.exp(f'{xt} - {new_max}', dtype)}",
                 f"{scale} = {scale} if {live} else {_literal(1, dtype)}",  # (selects: the exps are
                 f"{weight} = {weight} if {live} else {_literal(0, dtype)}",  # computed either way)
                 f"{d_cell} = {d_cell} * {scale} + {weight}",
                 f"{m_cell} = {new_max}"]
        for line in lines:
            self.place(level, line, nest)
        nests = [nest]
        if out.reducer == "softmax_sum":
            vi = ins.args[1]
            v_shape = self.prog.instrs[vi].shape
            if other_axes:
                # Values wider than the logits (heads x features) are accumulated in a nest of
                # their own, so that the loop over heads above stays innermost (vector code);
                # with several heads their factors reach it through scratch.
                value_nest = _Nest(list(loops), opaque_from=_CLEAR if out.name in self.acc else _IN_PLACE)
                value_var = {k: value_nest.var(n) for n, k in enumerate(head_axes + other_axes)}
                multi = _Multi(tuple(value_var.get(k, _c(0)) for k in range(len(shape))))
                if head_axes:
                    scales, weights = self.fresh(f"scs{i}"), self.fresh(f"pws{i}")
                    self.alloc(scales, nx, dtype)
                    self.alloc(weights, nx, dtype)
                    self.place(level, f"{scales}[{x_flat.text}] = {scale}", nest)
                    self.place(level, f"{weights}[{x_flat.text}] = {weight}", nest)
                    x_text = _to_flat(_broadcast_index(multi, shape, x_shape), x_shape).text
                    scale, weight = f"{scales}[{x_text}]", f"{weights}[{x_text}]"
                nests.append(value_nest)
            vt, vlevel = self.value(vi, _broadcast_index(multi, shape, v_shape), nests[-1], dtype)
            flat = _to_flat(multi, shape)
            cell = self.cell(out, flat.text)
            self.place(max(_EDGE + len(loops), vlevel, flat.level),
                       f"{cell} = {cell} * {scale} + {weight} * {_paren(vt)}", nests[-1])
        self.softmax_final(out, lse, shape, x_shape, run_max, run_den)
        return nests

    def softmax_final(self, out: OutputSpec, lse: OutputSpec | None, shape, x_shape, run_max: str,
                      run_den: str) -> None:
        """After the edge loop: normalise by the denominator, write the log-sum-exp."""
        lines = self.final_lines
        lines.append("if end > start:")
        nx = math.prod(x_shape)
        lse_target = lse.arg_name if lse is not None else out.arg_name
        lines.append(f"    for f in range({nx}):")
        # (a row whose logits are all -inf: -inf, and a NaN output from 0 / 0, as torch gives)
        lines.append(f"        {lse_target}[{self.orow}, f] = {run_max}[f] + np.log({run_den}[f])")
        if out.reducer != "softmax_sum":
            return
        loops, pad_text, flat, x_flat = _loops_over_output(shape, x_shape, "    ")
        lines += loops
        lines.append(f"{pad_text}{out.arg_name}[{self.orow}, {flat}] /= {run_den}[{x_flat}]")

    # -- the whole module ------------------------------------------------------------------------
    def generate(self) -> "_Function":
        self.uses_prefetch = False
        self.uses_dropout = False
        self.uses_exp32 = False
        self.plan_arguments()
        self.analyze()
        self.accumulate_in_scratch()
        prog = self.prog
        self.scratch: dict[int, str] = {}
        for i in sorted(self.materialized):
            ins = prog.instrs[i]
            name = self.fresh(f"t{i}")
            self.scratch[i] = name
            if self.size(i) > 1:
                self.alloc(name, self.size(i), ins.dtype)

        # chunked softmax: the logits' pass is generated first, with its own per-edge values
        self.chunk = self.chunkable_softmax()
        self.chunk_of: dict[int, tuple] = {}
        self.chunk_init: list[str] = []
        self.between: list[str] = []
        logit_nests: list[_Nest] = []
        if self.chunk:
            logit_nests = [self.chunk_logits(out, i, self.chunk) for out, _, i in self.softmax_sinks]
            self.logits_use_u, self.logits_use_e = self.uses_u, self.uses_e
            self.uses_u = self.uses_e = False
            self.memo_edge = {}  # the second pass computes its per-edge values afresh
        nests: list[_Nest] = []
        for i in sorted(self.materialized):
            kind = self.kind(i)
            if kind == "feature_reduce":
                nests.append(self.body_feature_reduce(i))
            elif prog.instrs[i].op == "matmul":
                nests.append(self.body_matmul(i))
            elif prog.instrs[i].op == "outer":
                nests.append(self.body_outer(i))
            elif prog.instrs[i].op == "cat":
                nests.extend(self.body_cat(i))
            elif prog.instrs[i].op == "pad":
                nests.extend(self.body_pad(i))
            else:
                nests.append(self.body_elementwise(i))
        for shape, sinks in self.sink_groups():
            nests.append(self.body_sinks(shape, sinks))
        self.final_lines: list[str] = []
        for out, lse, i in self.softmax_sinks:
            nests.extend(self.chunk_values(out, lse, i) if self.chunk else self.body_softmax(out, lse, i))

        fingerprint = prog.fingerprint()
        entry = f"gdsl_{self.kernel.pattern}_{fingerprint}"
        hub = self.schedule.hub
        if self.partial:
            entry += "_partial"
            arg_names = ["indptr", "indices", "eids", "task_row", "task_start", "task_end", "num_tasks",
                         "num_edges"]
        elif self.by_edge:
            arg_names = ["row_ids", "other_ids", "edge_splits", "num_rows", "num_edges"]
        else:
            arg_names = ["indptr", "indices", "eids", "row_splits", "num_rows", "num_edges"]
            if hub:
                arg_names.append("hub_threshold")
        arg_names += [spec.arg_name for spec in self.inputs] + [spec.arg_name for spec in self.outputs]
        orow = self.orow

        body: list[str] = []
        ind0, ind1, ind2 = " " * 8, " " * 12, " " * 16
        if self.by_edge:
            body.append(f"{' ' * 4}for p in numba.prange(edge_splits.shape[0] - 1):")
            body += [ind0 + line for line in self.alloc_lines]
            body.append(f"{ind0}for e in range(edge_splits[p], edge_splits[p + 1]):")
            body += self.prefetch_lines(ind1)
            body.append(f"{ind1}v = nonneg(row_ids[e])")
            if self.uses_u:
                body.append(f"{ind1}{self.nbr} = nonneg(other_ids[e])")
            body += [ind1 + line for line in self.row_lines]
            for nest in nests:
                body += nest.render(ind1)
        elif self.partial:
            # One task per chunk of a hub row; its reductions go to row t of the partial outputs.
            ind1 = ind0
            body.append(f"{' ' * 4}for t in numba.prange(num_tasks):")
            body += [ind0 + line for line in self.alloc_lines]
            body.append(f"{ind1}v = task_row[t]")
            body.append(f"{ind1}start = nonneg(task_start[t])")
            body.append(f"{ind1}end = nonneg(task_end[t])")
            ind2 = ind1 + "    "
        else:
            # Rows come in contiguous parts of about equal work (edges + rows), several per thread:
            # a static split of rows would give one thread most edges of a skewed graph.
            body.append(f"{' ' * 4}for p in numba.prange(row_splits.shape[0] - 1):")
            body += [ind0 + line for line in self.alloc_lines]
            body.append(f"{ind0}for v in range(row_splits[p], row_splits[p + 1]):")
            body.append(f"{ind1}start = nonneg(indptr[v])")
            body.append(f"{ind1}end = nonneg(indptr[v + 1])")
            if hub:
                body.append(f"{ind1}if end - start > hub_threshold:  # a hub row: the partial kernel walks it")
                body.append(f"{ind1}    end = start")
        if not self.by_edge:
            body += [ind1 + line for line in self.row_lines]
            for out in self.outputs:
                if out.space == "edge":
                    continue
                init = "-1" if out.name.endswith("@arg") else _literal(0, out.dtype)
                if self.split > 1:
                    body += [f"{ind1}for f in range({out.size * self.split}):",
                             f"{ind1}    {self.acc[out.name]}[f] = {init}"]
                    continue
                body += self.row_loop(out, f"{self.cell(out, '{f}')} = {init}", ind1)
            if self.chunk:
                body += self.chunk_loops(ind1, logit_nests, nests)
            elif self.split > 1:
                body += self.split_loops(ind1, nests)
            else:
                body.append(f"{ind1}for j in range(start, end):")
                body += self.edge_lines(ind2, self.uses_u, self.uses_e, self.uses_first, nests, prefetch=True,
                                        uses_eo=self.uses_eo)
            for out in self.outputs:  # the row's accumulators to its output row (a mean divided)
                if out.name not in self.acc:
                    continue
                value = self.split_total(self.acc[out.name], out.size)
                if out.reducer == "mean" and not self.partial:  # partial kernels write sums
                    body.append(f"{ind1}deg = {_np_type(out.dtype)}(max(end - start, 1))")
                    value += " / deg"
                body += self.row_loop(out, f"{out.arg_name}[{orow}, {{f}}] = {value}", ind1)
            for out in self.outputs:
                if (out.reducer == "mean" and out.space != "edge" and not self.partial
                        and out.name not in self.acc):
                    body.append(f"{ind1}if end > start:")
                    body.append(f"{ind2}deg = {_np_type(out.dtype)}(end - start)")
                    body += self.row_loop(out, f"{out.arg_name}[v, {{f}}] = {out.arg_name}[v, {{f}}] / deg",
                                          ind2)
            body += [ind1 + line for line in self.final_lines]

        trips = sorted({int(n) for line in body for n in _TRIP_NAME.findall(line)})
        if trips:  # the opaque loop bounds, once per part (or hub task), before its rows
            at = next(i for i, line in enumerate(body) if "numba.prange(" in line) + 1
            body[at:at] = [f"{ind0}nf{n} = opaque({n})" for n in trips]

        imports = ["import numba", "import numpy as np", "from gdsl.kernels.numba_intrinsics import nonneg"]
        if trips:
            imports.append("from gdsl.kernels.numba_intrinsics import opaque")
        prelude = []
        if self.uses_prefetch:
            imports.append("from gdsl.kernels.numba_intrinsics import prefetch, prefetch_write")
            prelude.append("    nnz = " + ("num_edges" if self.by_edge else "indices.shape[0]"))
        if self.uses_dropout:
            imports.append("from gdsl.kernels.numba_intrinsics import dropout_keep")
        if self.uses_stack:
            imports.append("from gdsl.kernels.numba_intrinsics import stack_empty")
        if self.uses_exp32:
            imports.append("from gdsl.kernels.numba_intrinsics import exp32")
        function = [
            "@numba.njit(parallel=True, cache=True, fastmath=False, error_model='numpy')",
            f"def {entry}({', '.join(arg_names)}):",
        ] + prelude + body
        return _Function(entry, arg_names, function, imports)

    def edge_lines(self, indent: str, uses_u: bool, uses_e: bool, uses_first: bool, nests: list[_Nest],
                   prefetch: bool, uses_eo: bool = False) -> list[str]:
        """The body of a loop over a row's entries ``j``."""
        lines = self.prefetch_lines(indent) if prefetch else []
        if uses_u:
            lines.append(f"{indent}{self.nbr} = nonneg(indices[j])")
        if uses_e:
            lines.append(f"{indent}e = nonneg(eids[j])")
        if uses_eo:
            lines.append(f"{indent}eo = nonneg({self.entry_pos}[j, 0])")
        if uses_first:
            lines.append(f"{indent}first = j == start")
        for nest in nests:
            lines += nest.render(indent)
        return lines

    def split_loops(self, indent: str, nests: list[_Nest]) -> list[str]:
        """A row's entries ``split`` at a time, entry ``jj + ka`` adding into set ``ka`` (the loop
        over ``ka`` has a constant trip count: LLVM unrolls it and keeps each set in registers),
        then the last ``(end - start) % split`` entries into set 0."""
        inner, body = indent + "    ", indent + "        "
        split = self.split
        lines = [f"{indent}for jj in range(start, end - {split - 1}, {split}):",
                 f"{inner}for ka in range({split}):", f"{body}j = jj + ka"]
        lines += self.edge_lines(body, self.uses_u, self.uses_e, self.uses_first, nests, prefetch=True,
                                 uses_eo=self.uses_eo)
        lines += [f"{indent}ka = 0", f"{indent}for j in range(end - (end - start) % {split}, end):"]
        lines += self.edge_lines(inner, self.uses_u, self.uses_e, self.uses_first, nests, prefetch=True,
                                 uses_eo=self.uses_eo)
        return lines

    def split_total(self, acc: str, size: int) -> str:
        """Element ``{f}`` of a row's sum over its accumulator sets, added pairwise."""
        terms = [f"{acc}[{k * size} + {{f}}]" if k else f"{acc}[{{f}}]" for k in range(self.split)]
        while len(terms) > 1:
            terms = [f"({a} + {b})" for a, b in zip(terms[::2], terms[1::2])] + ([terms[-1]] if len(terms) % 2 else [])
        return terms[0]

    def chunk_loops(self, indent: str, logit_nests: list[_Nest], nests: list[_Nest]) -> list[str]:
        """A row's entries in chunks: logits, rescale and exps, then the weighted values."""
        inner, body = indent + "    ", indent + "        "
        lines = [f"{indent}for jc in range(start, end, {self.chunk}):",
                 f"{inner}nc = min(end - jc, {self.chunk})"]
        lines += [inner + line for line in self.chunk_init]
        lines += [f"{inner}for jk in range(nc):", f"{body}j = jc + jk"]
        lines += self.edge_lines(body, self.logits_use_u, self.logits_use_e, False, logit_nests, prefetch=True)
        lines += [inner + line for line in self.between]
        if any(any(part) for nest in nests for part in nest.pre + nest.post):
            lines += [f"{inner}for jk in range(nc):", f"{body}j = jc + jk"]
            lines += self.edge_lines(body, self.uses_u, self.uses_e, self.uses_first, nests, prefetch=False,
                                     uses_eo=self.uses_eo)
        return lines

    def positional_fields(self) -> frozenset[str]:
        """The edge fields this source reads at the entry's position (none when walking edges)."""
        if self.by_edge:
            return frozenset()
        return frozenset(spec.name for spec in self.inputs
                         if spec.space == "edge" and spec.name in self.by_position)

    def header(self, hub: bool) -> list[str]:
        prog = self.prog
        header = [
            f"# Generated by gdsl ({CODEGEN_VERSION}): a fused {self.kernel.pattern} kernel for numba.",
            "# Do not edit: the file is rewritten from the IR below.",
            "#",
            f"# {self.kernel.describe()}",
            "#",
        ]
        header += ["# " + line for line in str(prog).splitlines()]
        header += ["#", "# schedule knobs in this source: prefetch_distance="
                   f"{self.schedule.prefetch_distance}, prefetch_lines={self.schedule.prefetch_lines}"
                   + (", hub rows split (rows above hub_threshold entries are skipped here and walked "
                      "in chunks by the _partial kernel)" if hub else "")
                   + (", edge_order=1 (the edges are walked in id order, not by rows)" if self.by_edge else "")
                   + (f", softmax_chunk={self.chunk} (softmax reductions walk a row's edges that many at a "
                      "time)" if self.chunk else "")
                   + (f", accumulators={self.split} (a row's entries alternate between that many sets of sums)"
                      if self.split > 1 else "")
                   + (", edge fields in the CSR's entry order (read at j): "
                      + ", ".join(sorted(self.positional_fields())) if self.positional_fields() else "")
                   + (", edge outputs written in the other CSR's entry order (at eo = entry_pos[j]): "
                      + ", ".join(sorted(self.to_position)) if self.to_position else "")]
        header += ["#"] + argument_lines(self.inputs, self.outputs, _np_type)
        return header

    def prefetch_lines(self, indent: str) -> list[str]:
        """Prefetch the random rows (by source / edge id) of entry ``j + prefetch_distance``."""
        distance, max_lines = self.schedule.prefetch_distance, self.schedule.prefetch_lines
        if not distance or not self.random_rows:
            return []
        self.uses_prefetch = True
        inner = indent + "    "
        lines = [f"{indent}jp = {'e' if self.by_edge else 'j'} + {distance}", f"{indent}if jp < nnz:"]
        rows = {row for row, *_ in self.random_rows.values()}
        if self.nbr in rows:
            lines.append(f"{inner}{self.nbr}p = nonneg({'other_ids' if self.by_edge else 'indices'}[jp])")
        if "v" in rows:
            lines.append(f"{inner}vp = nonneg(row_ids[jp])")
        if "e" in rows:
            lines.append(f"{inner}ep = nonneg(eids[jp])")
        if "eo" in rows:
            lines.append(f"{inner}eop = nonneg({self.entry_pos}[jp, 0])")
        for arg, (row, dtype, size, write) in self.random_rows.items():
            itemsize = torch.empty((), dtype=dtype).element_size()
            step = max(1, 64 // itemsize)
            cols = list(range(0, size, step))
            row_bytes = size * itemsize
            # A row that is not a whole number of lines may reach into one more line, unless it
            # divides a line (4 to 32 bytes: arrays start line-aligned, so such rows never straddle
            # two; prefetching their last element too was a second, wasted prefetch per row).
            if row_bytes % 64 and 64 % row_bytes:
                cols.append(size - 1)
            cols = sorted(set(cols))[:max_lines]
            call = "prefetch_write" if write else "prefetch"
            lines += [f"{inner}{call}({arg}, {row}p, {c})" for c in cols]
        return lines

    def row_loop(self, out: OutputSpec, template: str, indent: str) -> list[str]:
        if out.size == 1:
            return [indent + template.format(f="0")]
        opaque_from = _CLEAR if out.name in self.acc else _IN_PLACE
        return [f"{indent}for f in range({_trip(out.size, opaque_from)}):",
                f"{indent}    " + template.format(f="f")]


@dataclass(frozen=True)
class _Function:
    entry: str
    arg_names: list[str]
    lines: list[str]
    imports: list[str]


def generate_numba(kernel: KernelPlan, schedule: NumbaSchedule | None = None,
                   by_position: frozenset[str] = frozenset(), to_position: frozenset[str] = frozenset()
                   ) -> NumbaSource:
    """Generate the numba module for one fused kernel (see the module docstring for its shape).

    ``schedule`` supplies the knobs that change the source (prefetching, the hub variant); the
    default is ``NumbaSchedule()``. A hub-capable module (``schedule.hub_threshold`` set) holds
    two functions: the main kernel, which takes ``hub_threshold`` after ``num_edges`` and skips
    rows with more entries, and ``<entry>_partial``, which walks tasks (chunks of hub rows) and
    writes one partial result per task (gdsl.kernels.hub combines them).

    ``by_position`` names edge fields whose arrays the caller passes in the CSR's entry order
    (:mod:`gdsl.kernels.edge_order`): the kernel reads them at the entry ``j``, in sequence, instead
    of at the edge id. A kernel walking the edges in id order reads every edge field at ``e`` and
    ignores it; ``NumbaSource.by_position`` says which fields the source reads by position.
    ``to_position`` names edge outputs to write at their edge's entry in the *other* CSR (the one a
    later kernel of the step walks): the kernel then takes an int32 input ``edge:@entry_pos``, in
    its own CSR's entry order (``NumbaSource.to_position``: those honoured)."""
    if kernel.pattern not in ("gather_reduce", "edge_map"):
        raise CompileError(f"the numba backend cannot generate a {kernel.pattern!r} kernel")
    schedule = schedule if schedule is not None else NumbaSchedule()
    main_gen = _Generator(kernel, schedule, by_position=frozenset(by_position), to_position=frozenset(to_position))
    main = main_gen.generate()
    functions = [main]
    if schedule.hub:  # (never with edge_order=1: NumbaSchedule rejects the pair)
        functions.append(_Generator(kernel, schedule, partial=True, by_position=main_gen.by_position,
                                    to_position=main_gen.to_position).generate())
    imports: list[str] = []
    for fn_ in functions:
        imports += [line for line in fn_.imports if line not in imports]
    lines = main_gen.header(schedule.hub) + imports
    for fn_ in functions:
        lines += ["", ""] + fn_.lines
    return NumbaSource("\n".join(lines) + "\n", main.entry, main.arg_names, main_gen.inputs,
                       main_gen.outputs, kernel.pattern, kernel.program.fingerprint(),
                       functions[1].entry if schedule.hub else None,
                       functions[1].arg_names if schedule.hub else None, main_gen.by_edge,
                       main_gen.positional_fields(), main_gen.to_position)
