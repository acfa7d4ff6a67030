"""The compiled executor: message passing through the compiler and generated kernels.

For each (message, reduce, feature schema) it traces once, optimizes, plans, and generates the
forward kernel; the backward kernels are derived by autodiff and generated on first use. A step
runs as: node stage (torch, recorded by autograd) -> fused kernel (a ``torch.autograd.Function``
whose backward runs the generated backward kernels) -> epilogue (torch).
"""
from __future__ import annotations

import importlib.util
import inspect
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import torch

from .backend import register_backend
from .compiler.autodiff import vjp
from .compiler.fusion import ENTRY_POS, KernelPlan, StepPlan, edge_handoffs, plan
from .compiler.interpret import Structure, evaluate
from .compiler.ir import Program
from .compiler.passes import dce, optimize
from .compiler.trace import FieldSpec, Traced, trace_edge_map, trace_gather_reduce
from .dsl import UserFunction, autotune_of, options_of
from .errors import BackendError, CompileError
from .frame import RowView
from .function import BuiltinFunction
from .kernels.dump import dump_kernel
from .kernels.edge_order import EntryOrderCopies
from .relation import Relation
from .scheduling import choose, kernel_key

COMPUTE_DTYPES = (torch.float32, torch.float64)


# ------------------------------------------------------------------------------------------------
# Kernels: code generation + runtime per back end
# ------------------------------------------------------------------------------------------------
class CompiledKernel:
    """A generated kernel for one KernelPlan on one back end.

    ``schedule`` (:class:`~gdsl.kernels.schedules.NumbaSchedule` or ``TritonConfig``) supplies the
    knobs that change the generated source; ``run`` takes the launch's schedule, whose
    source-changing knobs must agree."""

    def __init__(self, kernel: KernelPlan, backend: str, schedule=None, by_position: frozenset[str] = frozenset(),
                 to_position: frozenset[str] = frozenset()):
        self.plan = kernel
        self.backend = backend
        self.by_position: frozenset[str] = frozenset()  # edge fields it takes in the CSR's entry order
        self.to_position: frozenset[str] = frozenset()  # edge outputs it writes in the other CSR's
        if backend == "numba":
            from .compiler.codegen.numba import generate_numba
            from .kernels.numba_runtime import NumbaKernel
            self.source = generate_numba(kernel, schedule, by_position, to_position)
            self.by_position, self.to_position = self.source.by_position, self.source.to_position
            self.runner = NumbaKernel(self.source)
        elif backend == "triton":
            from .compiler.codegen.triton import generate_triton
            from .kernels.triton_runtime import TritonKernel
            self.source = generate_triton(kernel, schedule)
            self.runner = TritonKernel(self.source)
        else:
            raise BackendError(f"no code generator for backend {backend!r}")
        dump_kernel(self.runner.file_key, self.source.source, f"{kernel.describe()}\n\n{kernel.program}\n")

    def run(self, rel: Relation, inputs: Mapping[str, torch.Tensor],
            params: list[torch.Tensor], schedule=None) -> dict[str, torch.Tensor]:
        """Launch over ``rel``; fields in ``by_position`` must be given in the CSR's entry order."""
        csr = rel.in_csr if self.plan.rows == "dst" else rel.out_csr
        num_rows = rel.num_dst if self.plan.rows == "dst" else rel.num_src
        if self.backend == "numba":
            ends = None
            if self.source.by_edge:  # each edge's row and other endpoint, by edge id
                ends = (rel.dst, rel.src) if self.plan.rows == "dst" else (rel.src, rel.dst)
            return self.runner.run(csr.indptr, csr.indices, csr.eids, num_rows, rel.num_edges, inputs, params,
                                   schedule=schedule, edge_ends=ends)
        return self.runner.run(csr.indptr, csr.indices, csr.eids, num_rows, rel.num_edges, inputs, params,
                               config=schedule)


_KERNELS: dict[tuple, CompiledKernel] = {}


def generated_files() -> list[str]:
    """The source files of every kernel generated in this process (forward and backward)."""
    return [k.runner.path for k in _KERNELS.values()]


def compiled_kernel(kernel: KernelPlan, backend: str, schedule=None,
                    by_position: frozenset[str] = frozenset(),
                    to_position: frozenset[str] = frozenset()) -> CompiledKernel:
    """One generated kernel per (program, backend, source-changing schedule knobs, edge fields
    read / written in entry order): identical programs share code."""
    from .kernels.schedules import default_schedule
    codegen = (schedule if schedule is not None else default_schedule(backend)).codegen_key() \
        if backend in ("numba", "triton") else ()
    if backend != "numba":
        by_position = to_position = frozenset()
    by_position, to_position = frozenset(by_position), frozenset(to_position)
    key = (kernel_key(kernel), backend, codegen, by_position, to_position)
    hit = _KERNELS.get(key)
    if hit is None:
        hit = _KERNELS[key] = CompiledKernel(kernel, backend, schedule, by_position, to_position)
    return hit


def _entry_ordered(kernel: KernelPlan, rel: Relation, inputs: Mapping[str, torch.Tensor],
                   skip: frozenset[str] = frozenset()) -> tuple[Mapping[str, torch.Tensor], frozenset[str]]:
    """Swap narrow edge inputs that are reused unchanged for their copies in the kernel's CSR
    entry order (gdsl.kernels.edge_order); returns the inputs and the fields swapped."""
    fields = [inp.name for inp in kernel.inputs if inp.space == "edge" and inp.name not in skip
              and EntryOrderCopies.eligible(inputs.get(_input_key(inp)), rel.num_edges)]
    if not fields:
        return inputs, frozenset()
    fmt = "csc" if kernel.rows == "dst" else "csr"
    if fmt not in rel.allowed:  # the CSR is rebuilt per use: nothing to keep copies with
        return inputs, frozenset()
    csr = rel.in_csr if kernel.rows == "dst" else rel.out_csr
    copies = rel._cached(f"{fmt}_entry_order", lambda: EntryOrderCopies(csr.eids), fmt)
    swapped = dict(inputs)
    done = set()
    for name in fields:
        copy = copies.lookup(inputs[f"edge:{name}"])
        if copy is not None:
            swapped[f"edge:{name}"] = copy
            done.add(name)
    return (swapped if done else inputs), frozenset(done)


# ------------------------------------------------------------------------------------------------
# Launching: the schedule from gdsl.scheduling (tuned, else the heuristic), or tuning first
# ------------------------------------------------------------------------------------------------
_TUNING: list = []  # gdsl.autotune's active sessions (the innermost tunes every launch)


def launch_kernel(kernel: KernelPlan, backend: str, rel: Relation, inputs: Mapping[str, torch.Tensor],
                  params: list[torch.Tensor], autotune: bool = False,
                  direction: str = "forward") -> dict[str, torch.Tensor]:
    """Run one kernel with its chosen schedule; when tuning is asked for (``autotune`` or inside
    ``gdsl.autotune``) and the kernel is not tuned for this graph's signature, tune it first."""
    return launch_kernel_ordered(kernel, backend, rel, inputs, params, autotune, direction)[0]


def launch_kernel_ordered(kernel: KernelPlan, backend: str, rel: Relation, inputs: Mapping[str, torch.Tensor],
                          params: list[torch.Tensor], autotune: bool = False, direction: str = "forward",
                          ordered: frozenset[str] = frozenset(), to_position: frozenset[str] = frozenset()
                          ) -> tuple[dict[str, torch.Tensor], frozenset[str]]:
    """:func:`launch_kernel` inside a step of several kernels: the edge inputs ``ordered`` are
    given in the kernel's CSR entry order (``edge_handoffs``), and the edge outputs
    ``to_position`` are wanted in the other CSR's entry order. Returns the outputs and which of
    ``to_position`` were written so (none when tuning, or when the kernel walks edges by id)."""
    choice = choose(kernel, backend, rel)
    tuning = choice.reason != "forced" and (_TUNING or (autotune and choice.reason != "autotuned"))
    walks_edges = kernel.pattern == "edge_map" and getattr(choice.schedule, "edge_order", 0)
    if ordered and (tuning or backend != "numba" or walks_edges):  # (candidates read edges by id)
        inputs = {**inputs, **{f"edge:{name}": _to_edge_ids(rel, kernel.rows, inputs[f"edge:{name}"])
                               for name in ordered}}
        ordered = frozenset()
    if tuning:
        from .autotuning import tune_launch
        return tune_launch(kernel, backend, rel, inputs, params, choice, direction,
                           _TUNING[-1] if _TUNING else None), frozenset()
    if backend != "numba" or walks_edges:
        return compiled_kernel(kernel, backend, choice.schedule).run(rel, inputs, params, choice.schedule), frozenset()
    inputs, by_position = _entry_ordered(kernel, rel, inputs, skip=ordered)
    by_position |= ordered
    if to_position:
        inputs = {**inputs, f"edge:{ENTRY_POS}": _entry_positions(rel, kernel.rows)}
    compiled = compiled_kernel(kernel, backend, choice.schedule, by_position, to_position)
    if compiled.by_position != by_position:
        raise BackendError(f"internal: kernel reads {sorted(compiled.by_position)} in entry order, "
                           f"asked {sorted(by_position)}")
    return compiled.run(rel, inputs, params, choice.schedule), compiled.to_position


def _to_edge_ids(rel: Relation, rows: str, ordered: torch.Tensor) -> torch.Tensor:
    """An edge tensor in the entry order of the CSR over ``rows``, back in edge-id order."""
    eids = (rel.in_csr if rows == "dst" else rel.out_csr).eids.long()
    out = torch.empty_like(ordered)
    out[eids] = ordered
    return out


def _entry_positions(rel: Relation, rows: str) -> torch.Tensor:
    """For each entry of the CSR over ``rows``, where its edge sits in the other CSR (int32: handoffs need fewer than 2**31 edges)."""
    def build():
        own, other = (rel.in_csr, rel.out_csr) if rows == "dst" else (rel.out_csr, rel.in_csr)
        where = torch.empty(rel.num_edges, dtype=torch.int32, device=rel.device)
        where[other.eids.long()] = torch.arange(rel.num_edges, dtype=torch.int32, device=rel.device)
        return where[own.eids.long()]
    return rel._cached(f"entry_pos_{rows}", build)


# ------------------------------------------------------------------------------------------------
# Recording the steps that run (gdsl.inspect on a model); empty, it costs one test per launch
# ------------------------------------------------------------------------------------------------
_RECORDERS: list[list] = []


@contextmanager
def record_steps() -> Iterator[list]:
    """Inside the block, every compiled step launched is appended to the yielded list as
    ``("forward" | "backward", CompiledStep, Relation)``."""
    events: list = []
    _RECORDERS.append(events)
    try:
        yield events
    finally:  # by identity: nested recorders hold equal lists
        _RECORDERS[:] = [r for r in _RECORDERS if r is not events]


def _record(direction: str, step: "CompiledStep", rel: Relation) -> None:
    for events in _RECORDERS:
        events.append((direction, step, rel))


# ------------------------------------------------------------------------------------------------
# Running a planned step
# ------------------------------------------------------------------------------------------------
def _input_key(inp) -> str:
    return f"{inp.space}:{inp.name}"


def _run_plan(step: StepPlan, rel: Relation, features: Mapping[str, Mapping[str, torch.Tensor]],
              params: list[torch.Tensor], backend: str, kernel_runner: Callable,
              only_rows_with_messages: bool = False, handoffs: Mapping[str, str] | None = None
              ) -> dict[str, torch.Tensor]:
    """Node stage -> kernels -> epilogue. ``kernel_runner(kernel, inputs)`` runs one kernel;
    with ``handoffs`` (:func:`~gdsl.compiler.fusion.edge_handoffs`, numba),
    ``kernel_runner(kernel, inputs, ordered, to_position)`` returns ``(outputs, written)``: the
    handed-off edge values travel in their readers' CSR entry order."""
    # The relation's cached in-degrees serve in_degree (mean, m.shape[1]) without a recount.
    structure = _WithDegrees(Structure(rel.src, rel.dst, rel.num_src, rel.num_dst), rel.in_degrees)
    values: dict[str, torch.Tensor] = {}
    if step.node_stage is not None:
        values.update(evaluate(step.node_stage, params, structure, features))
    in_entry_order: set[str] = set()  # handed-off edge values stored in their readers' order
    for kernel in step.kernels:
        inputs = {}
        for inp in kernel.inputs:
            if inp.space == "param" and inp.name.startswith("#"):
                continue  # traced weights are passed as params
            key = _input_key(inp)
            inputs[key] = values[key] if key in values else features[inp.space][inp.name]
        if handoffs is None:
            values.update(kernel_runner(kernel, inputs))
            continue
        ordered = frozenset(inp.name for inp in kernel.inputs if inp.space == "edge" and inp.name in in_entry_order)
        writes = frozenset(field for field, rows in handoffs.items() if rows != kernel.rows
                           and f"edge:{field}" in dict(kernel.program.outputs))
        outputs, written = kernel_runner(kernel, inputs, ordered, writes)
        values.update(outputs)
        in_entry_order |= written
    if step.epilogue is not None:
        layered = {space: _Layered(values, space, features.get(space, {})) for space in ("src", "dst", "edge")}
        if only_rows_with_messages:
            values.update(_epilogue_on_rows_with_messages(step.epilogue, params, rel, layered))
        else:
            values.update(evaluate(step.epilogue, params, structure, layered))
    return values


def _epilogue_on_rows_with_messages(epilogue, params, rel: Relation, layered) -> dict[str, torch.Tensor]:
    """Run a reduce function's epilogue only on the nodes that received messages, as DGL calls
    the function only there: the other rows are 0 and, unlike masking afterwards, no value computed
    for them (1 / 0, log 0) can turn their zero gradients into NaN."""
    # which rows received messages: found once per graph (nonzero() waits for a GPU), and when
    # every row did (the common case) the epilogue runs on the whole tensors
    rows = rel._cached("dst_with_in_edges", lambda: (rel.in_degrees > 0).nonzero().flatten())
    if rows.numel() == rel.num_dst:
        whole = _WithDegrees(Structure(rel.src, rel.dst, rel.num_src, rel.num_dst), rel.in_degrees)
        return evaluate(epilogue, params, whole, layered)
    dst = _Rows(layered["dst"], rows)
    sub = Structure(rel.src[:0], rel.dst[:0], rel.num_src, rows.numel())
    degree = rel.in_degrees[rows]
    values = evaluate(epilogue, params, _WithDegrees(sub, degree), {**layered, "dst": dst})
    out = {}
    for name, value in values.items():
        full = value.new_zeros((rel.num_dst, *value.shape[1:]))
        out[name] = full.index_copy(0, rows, value)
    return out


class _Rows(Mapping):
    """Some rows of every field of a space."""

    def __init__(self, base: Mapping, rows: torch.Tensor):
        self._base, self._rows = base, rows

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._base[key][self._rows]

    def __iter__(self):
        return iter(self._base)

    def __len__(self):
        return len(self._base)


class _WithDegrees(Structure):
    """A structure for per-node work whose in-degrees are given rather than counted."""

    def __init__(self, structure: Structure, degrees: torch.Tensor):
        super().__init__(structure.src, structure.dst, structure.num_src, structure.num_dst)
        self.degrees = degrees


class _Layered(Mapping):
    """Fields of one space: computed ``$k`` values first, then the graph's features."""

    def __init__(self, values: Mapping[str, torch.Tensor], space: str, base: Mapping):
        self._values, self._space, self._base = values, space, base

    def __getitem__(self, key: str) -> torch.Tensor:
        full = f"{self._space}:{key}"
        return self._values[full] if full in self._values else self._base[key]

    def __iter__(self):
        return iter(self._base)

    def __len__(self):
        return len(self._base)


class CompiledStep:
    """A traced message-passing step with its plans and (lazily) compiled kernels."""

    def __init__(self, traced: Traced, backend: str, kind: str):
        self.kind = kind
        self.traced = traced
        self.backend = backend
        self.program, self.history = optimize(traced.program)
        self.plan = plan(self.program)
        if len(self.plan.kernels) > 1:
            raise CompileError("internal: a forward step planned into several kernels")
        self.kernel = self.plan.kernels[0] if self.plan.kernels else None
        # needed gradients -> (plan, pass history, edge handoffs between its kernels)
        self._backward: dict[frozenset[str] | None, tuple[StepPlan, Any, dict[str, str]]] = {}
        # The features the step reads, with the type it was traced for.
        self.reads = {(ins.space, ins.attr("field")): FieldSpec(ins.dtype, ins.shape)
                      for ins in traced.program.instrs if ins.op in ("load_src", "load_dst", "load_edge")}

    @property
    def params(self) -> list[torch.Tensor]:
        return self.traced.params

    def forward_kernel(self) -> CompiledKernel:
        return compiled_kernel(self.kernel, self.backend)

    def backward_plan(self, needed: frozenset[str] | None = None) -> StepPlan:
        """The backward step computing the gradients named in ``needed`` (``"src:grad:h"``,
        ``"param:grad:#0"``, ...; None: all of them). Gradients autograd does not ask for (an edge
        weight or a degree norm that is a constant) are pruned before planning, so their kernels
        and per-edge work never run."""
        if needed not in self._backward:
            program = vjp(self.kernel.program)
            if needed is not None:
                program = dce(Program(program.instrs, tuple(o for o in program.outputs if o[0] in needed)))
            program, history = optimize(program)
            bplan = plan(program)
            self._backward[needed] = (bplan, history, edge_handoffs(bplan))
        return self._backward[needed][0]

    def backward_handoffs(self, needed: frozenset[str] | None, rel: Relation) -> dict[str, str]:
        """The edge values the backward's kernels hand over in entry order (numba, when the graph
        keeps both compressed formats: the positions come from them)."""
        self.backward_plan(needed)
        if self.backend != "numba" or not {"csr", "csc"} <= rel.allowed or rel.num_edges >= 2**31:
            return {}
        return self._backward[needed][2]

    def backward_history(self) -> list:
        """``(pass name, program)`` after each pass of the backward program (for inspection)."""
        self.backward_plan()
        return self._backward[None][1]

    def run(self, rel: Relation, features: Mapping[str, Mapping[str, torch.Tensor]],
            autotune: bool = False) -> dict[str, torch.Tensor]:
        """Run the step on ``rel``; ``autotune``: tune its kernels first on a new graph signature."""
        if _RECORDERS:
            _record("forward", self, rel)
        params = self.call_params(rel.device)
        return _run_plan(self.plan, rel, features, params, self.backend,
                         lambda kernel, inputs: _launch_forward(self, rel, inputs, params, autotune),
                         only_rows_with_messages=self.kind == "gather_reduce")

    def call_params(self, device: torch.device) -> list[torch.Tensor]:
        """The traced weights, plus a fresh seed (from torch's generator, so ``torch.manual_seed``
        makes runs repeatable) when the step has dropout; the backward reuses the call's seed."""
        params = list(self.params)
        if self.traced.seed_param is not None:
            # drawn on the device itself: no host-to-device copy inside a layer's forward
            params[self.traced.seed_param] = torch.randint(0, 2**31 - 1, (1,), dtype=torch.int64, device=device)
        return params


def _launch_forward(step: CompiledStep, rel: Relation, inputs: dict[str, torch.Tensor],
                    params: list[torch.Tensor], autotune: bool = False) -> dict[str, torch.Tensor]:
    kernel = step.kernel
    names = list(inputs)
    param_indices = [int(i.name[1:]) for i in kernel.inputs if i.space == "param" and i.name.startswith("#")]
    tensors = [inputs[n] for n in names] + [params[i] for i in param_indices]
    out_names = [name for name, _ in kernel.program.outputs]
    results = _KernelFunction.apply(step, rel, names, param_indices, out_names, autotune, *tensors)
    values = dict(zip(out_names, results[:len(out_names)]))
    values.update(zip(_extra_names(kernel), results[len(out_names):]))
    return values


def _extra_names(kernel: KernelPlan) -> list[str]:
    """What a forward kernel writes besides its outputs, for its backward: the winning edges of
    max/min (``@arg``) and the per-row log-sum-exp of softmax-weighted sums (``@lse``)."""
    suffix = {"mailbox_max": "@arg", "mailbox_min": "@arg", "mailbox_softmax_sum": "@lse"}
    return [f"{name}{suffix[kernel.program.instrs[i].op]}" for name, i in kernel.program.outputs
            if kernel.program.instrs[i].op in suffix]


def _saved_outputs(kernel: KernelPlan) -> dict[str, str]:
    """Outputs the backward reads (output name -> the name its backward loads): a softmax
    reduction's result (``@out``; a log-sum-exp is its own ``@lse``)."""
    saved = {}
    for name, i in kernel.program.outputs:
        op = kernel.program.instrs[i].op
        if op == "mailbox_softmax_sum":
            saved[name] = f"{name}@out"
        elif op == "mailbox_logsumexp":
            saved[name] = f"{name}@lse"
    return saved


def _grad_name(key: str) -> str:
    """The backward program's output for input ``space:name``."""
    space, name = key.split(":", 1)
    return f"{space}:grad:{name}"


class _KernelFunction(torch.autograd.Function):
    """A generated forward kernel whose backward runs the generated backward kernels."""

    @staticmethod
    def forward(ctx, step: CompiledStep, rel: Relation, names, param_indices, out_names, autotune, *tensors):
        inputs = dict(zip(names, tensors))
        params = list(step.params)
        for i, t in zip(param_indices, tensors[len(names):]):
            params[i] = t
        raw = launch_kernel(step.kernel, step.backend, rel, inputs, params, autotune, "forward")
        outs = [raw[n.split(":", 1)[1]] if n.split(":", 1)[1] in raw else raw[n] for n in out_names]
        args = [raw[a.split(":", 1)[1]] if a.split(":", 1)[1] in raw else raw[a]
                for a in _extra_names(step.kernel)]
        saved_outputs = _saved_outputs(step.kernel)
        kept = [outs[k] for k, n in enumerate(out_names) if n in saved_outputs]
        ctx.step, ctx.rel, ctx.names, ctx.param_indices, ctx.out_names = step, rel, names, param_indices, out_names
        ctx.autotune = autotune
        ctx.save_for_backward(*tensors, *args, *kept)
        ctx.mark_non_differentiable(*args)
        return tuple(outs + args)

    @staticmethod
    def backward(ctx, *grads):
        step: CompiledStep = ctx.step
        if _RECORDERS:
            _record("backward", step, ctx.rel)
        saved = ctx.saved_tensors
        n_inputs = len(ctx.names) + len(ctx.param_indices)
        extra_names = _extra_names(step.kernel)
        tensors = saved[:n_inputs]
        args = saved[n_inputs:n_inputs + len(extra_names)]
        kept = saved[n_inputs + len(extra_names):]
        features: dict[str, dict[str, torch.Tensor]] = {"src": {}, "dst": {}, "edge": {}, "param": {}}
        for key, t in zip(ctx.names, tensors):
            space, name = key.split(":", 1)
            features[space][name] = t
        params = list(step.params)
        for i, t in zip(ctx.param_indices, tensors[len(ctx.names):]):
            params[i] = t
        for key, g in zip(ctx.out_names, grads):
            space, name = key.split(":", 1)
            features[space][f"grad:{name}"] = g
        for key, arg in zip(extra_names, args):
            space, name = key.split(":", 1)
            features[space][name] = arg
        saved_outputs = _saved_outputs(step.kernel)
        for key, out in zip([n for n in ctx.out_names if n in saved_outputs], kept):
            space, name = saved_outputs[key].split(":", 1)
            features[space][name] = out
        for key in ctx.out_names:  # outputs the loss did not use get zero gradients
            space, name = key.split(":", 1)
            if features[space][f"grad:{name}"] is None:
                shape = step.kernel.program.output(key).shape
                rows = ctx.rel.num_dst if space == "dst" else ctx.rel.num_edges
                features[space][f"grad:{name}"] = torch.zeros(
                    (rows, *shape), dtype=tensors[0].dtype if tensors else torch.float32,
                    device=ctx.rel.device)
        wanted = ctx.needs_input_grad[6:]
        needed = frozenset(
            [_grad_name(key) for key, want in zip(ctx.names, wanted) if want]
            + [f"param:grad:#{i}" for i, want in zip(ctx.param_indices, wanted[len(ctx.names):]) if want])
        bplan = step.backward_plan(needed)
        with torch.no_grad():
            values = _run_plan(bplan, ctx.rel, features, params, step.backend,
                               lambda kernel, inputs, ordered, writes: launch_kernel_ordered(
                                   kernel, step.backend, ctx.rel, inputs, params, ctx.autotune, "backward",
                                   ordered, writes),
                               handoffs=step.backward_handoffs(needed, ctx.rel))
        result: list[torch.Tensor | None] = [None] * 6
        for key, t in zip(ctx.names, tensors):
            space, name = key.split(":", 1)
            result.append(values.get(f"{space}:grad:{name}"))
        for i in ctx.param_indices:
            result.append(values.get(f"param:grad:#{i}"))
        return tuple(result)


# ------------------------------------------------------------------------------------------------
# The executor
# ------------------------------------------------------------------------------------------------
def _schema(graph, etype) -> dict[str, dict[str, FieldSpec]]:
    def of(frame) -> dict[str, FieldSpec]:
        return {k: FieldSpec(v.dtype, tuple(v.shape[1:])) for k, v in frame.items()}
    return {"src": of(graph._src_frames[etype[0]]), "dst": of(graph._dst_frames[etype[2]]),
            "edge": of(graph._edge_frames[etype])}


_PLAIN = (int, float, str, bool, type(None))


def _func_key(func: Any) -> Any:
    """What identifies a function's traced program.

    Built-ins compare by value. A user function is identified by its code and what its closure
    holds (plain values by value, tensors and modules by identity), so a UDF defined inside a
    module's ``forward`` (a new function object on every call) is traced once, while a closure
    over a different tensor is traced again.
    """
    if isinstance(func, BuiltinFunction):
        return func
    inner = func.func if isinstance(func, UserFunction) else func
    owner = None
    if inspect.ismethod(inner):
        owner, inner = id(inner.__self__), inner.__func__
    code = getattr(inner, "__code__", None)
    if code is None:
        return ("object", id(inner))
    cells = []
    for cell in inner.__closure__ or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            cells.append(("empty",))
            continue
        cells.append(value if isinstance(value, _PLAIN) else ("id", id(value)))
    defaults = tuple(v if isinstance(v, _PLAIN) else ("id", id(v)) for v in inner.__defaults__ or ())
    # Modules trace differently in training and evaluation (dropout): their modes are in the key.
    held = [getattr(func, "__self__", None)]
    held += [c.cell_contents for c in inner.__closure__ or () if _has_contents(c)]
    held += [inner.__globals__.get(name) for name in code.co_names]
    modes = tuple(_modes(v) for v in held if isinstance(v, torch.nn.Module))
    return (code, owner, tuple(cells), defaults, modes)


def _has_contents(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _modes(module: torch.nn.Module) -> tuple[bool, ...]:
    return tuple(m.training for m in module.modules())


class CompiledExecutor:
    """Executor that compiles message passing to generated kernels (``numba`` or ``triton``)."""

    CACHE_SIZE = 256

    def __init__(self, backend: str):
        self.name = backend
        # key -> (step, the functions): holding the functions keeps the ids in keys unique.
        self._steps: OrderedDict[tuple, tuple[list[CompiledStep], tuple]] = OrderedDict()
        self.trace_count = 0  # how many traces this executor ran (the tests check cache hits)

    # -- compilation with caching -----------------------------------------------------------------
    def step(self, kind: str, funcs: tuple, schema) -> CompiledStep:
        """The compiled step for these functions, traced once per set of fields they read.

        The cache key is the functions; a cached step is reused when every feature it reads still
        has the same dtype and shape (features it does not read may come and go).
        """
        key = (kind, tuple(_func_key(f) for f in funcs))
        entry = self._steps.get(key)
        if entry is not None:
            self._steps.move_to_end(key)
            for step in entry[0]:
                if all(schema.get(space, {}).get(name) == spec for (space, name), spec in step.reads.items()):
                    return step
        self.trace_count += 1
        if kind == "gather_reduce":
            traced = trace_gather_reduce(funcs[0], funcs[1], schema)
        else:
            traced = trace_edge_map(funcs[0], schema)
        step = CompiledStep(traced, self.name, kind)
        steps = entry[0] if entry is not None else []
        steps.append(step)
        self._steps[key] = (steps, funcs)  # holding the functions keeps the ids in keys unique
        if len(self._steps) > self.CACHE_SIZE:
            self._steps.popitem(last=False)
        return step

    def _reference(self, what: str, exc: CompileError):
        warnings.warn(f"gdsl: running {what} on the reference executor because it cannot be "
                      f"compiled: {exc}", stacklevel=4)
        from .reference import ReferenceExecutor
        return ReferenceExecutor()

    # -- the executor protocol ----------------------------------------------------------------------
    def edge_map(self, graph, etype, func, eids):
        rel, features = _bind(graph, etype, eids)
        try:
            step = self.step("edge_map", (func,), _schema(graph, etype))
        except CompileError as exc:
            if options_of(func)[1] == "reference":
                return self._reference("the edge function", exc).edge_map(graph, etype, func, eids)
            raise
        features, restore = _compute_dtype(features)
        values = step.run(rel, features, autotune_of(func))
        return {name.split(":", 1)[1]: restore(v) for name, v in _outputs(step, values).items()}

    def gather_reduce(self, graph, etype, message_func, reduce_func, eids):
        rel, features = _bind(graph, etype, eids)
        try:
            step = self.step("gather_reduce", (message_func, reduce_func), _schema(graph, etype))
        except CompileError as exc:
            if options_of(message_func, reduce_func)[1] == "reference":
                return self._reference("the message/reduce functions", exc).gather_reduce(
                    graph, etype, message_func, reduce_func, eids)
            raise
        features, restore = _compute_dtype(features)
        values = step.run(rel, features, autotune_of(message_func, reduce_func))
        return {name.split(":", 1)[1]: restore(v) for name, v in _outputs(step, values).items()}


def _outputs(step: CompiledStep, values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: values[name] for name, _ in step.program.outputs}


def _bind(graph, etype, eids):
    """The relation the step runs over and its features (an edge subset gets its own relation)."""
    rel = graph._relations[etype]
    src_frame, dst_frame, edge_frame = graph._src_frames[etype[0]], graph._dst_frames[etype[2]], \
        graph._edge_frames[etype]
    if eids is None:
        return rel, {"src": src_frame, "dst": dst_frame, "edge": edge_frame}
    sub = Relation(rel.src[eids], rel.dst[eids], rel.num_src, rel.num_dst)
    return sub, {"src": src_frame, "dst": dst_frame, "edge": RowView(edge_frame, eids)}


def _compute_dtype(features):
    """Kernels compute in float32/float64; half-precision features are promoted (CPU)."""
    low = {torch.float16, torch.bfloat16}
    found = {v.dtype for frame in features.values() for v in frame.values() if v.dtype in low} \
        if any(len(f) for f in features.values()) else set()
    if not found:
        return features, lambda t: t
    promoted = {space: {k: (v.float() if v.dtype in low else v) for k, v in frame.items()}
                for space, frame in features.items()}
    target = found.pop()
    return promoted, lambda t: t.to(target) if t.is_floating_point() else t


def _register() -> None:
    register_backend("numba", lambda: CompiledExecutor("numba"), default_for=("cpu",))
    if importlib.util.find_spec("triton") is not None:
        # GPU tensors by default; CPU tensors too when TRITON_INTERPRET=1 (how it is tested here).
        register_backend("triton", lambda: CompiledExecutor("triton"), default_for=("cuda",))


_register()
