"""``gdsl.inspect``: everything the compiler does for a step or a model, as text and as objects.

Why: fused kernels are only trustworthy when users can see them. For a message/reduce pair, an
``apply_edges`` function, or a whole model's forward and backward, ``gdsl.inspect`` returns the
traced IR, the IR after each pass, the fusion plan (kernels, what each reads and writes, estimated
bytes and FLOPs), the schedule each back end launches with and why, and the generated numba and
Triton source, forward and backward. Nothing is compiled for a message/reduce pair or an edge
function (sources are text; Triton needs no GPU); a model is run once, forward and backward, to see
which steps it launches.
"""
from __future__ import annotations

import importlib.util
import re
import textwrap
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch

from .backend import current_backend, get_executor
from .compiled import CompiledExecutor, CompiledStep, _schema, record_steps
from .compiler.autodiff import vjp
from .compiler.cost import KernelCost, estimate
from .compiler.fusion import KernelPlan, StepPlan
from .compiler.ir import Program
from .compiler.trace import trace_edge_map, trace_gather_reduce
from .dsl import UserFunction, options_of
from .errors import FeatureError, GdslError
from .function import BuiltinFunction
from .schedule_info import ScheduleInfo, numba_schedule, triton_schedule
from .scheduling import choose

if TYPE_CHECKING:
    from .graph import Graph

BACKENDS = ("numba", "triton")
_RULE = "=" * 100


# ------------------------------------------------------------------------------------------------
# One kernel
# ------------------------------------------------------------------------------------------------
class KernelInspection:
    """One fused kernel of a step: its plan, estimated cost, schedules and generated sources."""

    def __init__(self, direction: str, index: int, plan: KernelPlan, num_rows: int, num_edges: int,
                 backend: str, rel=None):
        self.direction = direction      # "forward" | "backward"
        self.index = index              # position in its step plan
        self.plan = plan
        self.num_rows = num_rows        # CSR rows it runs over (destinations or sources)
        self.num_edges = num_edges
        self.backend = backend          # the back end that would run it
        self.rel = rel                  # the graph's relation (the schedule depends on it)

    @property
    def name(self) -> str:
        return f"{self.direction}[{self.index}]"

    @cached_property
    def cost(self) -> KernelCost:
        return estimate(self.plan, self.num_rows, self.num_edges)

    @property
    def bytes(self) -> int:
        """Estimated bytes moved (loaded + stored) by one launch."""
        return self.cost.bytes

    @property
    def flops(self) -> int:
        return self.cost.flops

    @cached_property
    def _numba(self):
        from .compiler.codegen.numba import generate_numba
        return _generate(generate_numba, self.plan)

    @cached_property
    def _triton(self):
        from .compiler.codegen.triton import generate_triton
        return _generate(generate_triton, self.plan)

    @property
    def numba_source(self) -> str:
        """The generated numba module (or a comment saying why there is none)."""
        return self._numba if isinstance(self._numba, str) else self._numba.source

    @property
    def triton_source(self) -> str:
        """The generated Triton module: text, so no GPU is needed (a note says when Triton is
        not installed here)."""
        if isinstance(self._triton, str):
            return self._triton
        if not _triton_installed():
            return ("# note: Triton is not installed in this environment; this is the source gdsl would "
                    "run on a CUDA device.\n" + self._triton.source)
        return self._triton.source

    def source(self, backend: str) -> str:
        return {"numba": self.numba_source, "triton": self.triton_source}[backend]

    @cached_property
    def schedules(self) -> dict[str, ScheduleInfo]:
        """The schedule of each back end on this graph (``reason`` says why it was chosen:
        ``heuristic`` or ``autotuned``; ``default`` when no graph is known)."""
        numba_choice = self._choice("numba")
        out = {"numba": numba_schedule(self.num_rows, *numba_choice)}
        if not isinstance(self._triton, str):
            out["triton"] = triton_schedule(self._triton, self.num_rows, self.num_edges, *self._choice("triton"))
        return out

    def _choice(self, backend: str) -> tuple:
        if self.rel is None:
            return ()
        choice = choose(self.plan, backend, self.rel)
        return choice.schedule, choice.reason, choice.why

    @property
    def schedule(self) -> ScheduleInfo:
        """The schedule on the back end that would run this kernel."""
        return self.schedules.get(self.backend) or self.schedules["numba"]

    def describe(self) -> str:
        return f"kernel {self.name}: {self.plan.describe()}\n" + _indent(self.cost.describe(), 2)

    def __repr__(self) -> str:
        return (f"<gdsl kernel {self.name}: {self.plan.pattern} over {self.plan.rows} rows, "
                f"~{self.bytes} B, ~{self.flops} FLOP>")


def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def _generate(generator: Callable, plan: KernelPlan):
    try:
        return generator(plan)
    except GdslError as exc:
        return f"# unavailable: {type(exc).__name__}: {exc}\n"


# ------------------------------------------------------------------------------------------------
# One step
# ------------------------------------------------------------------------------------------------
class Inspection:
    """What the compiler does for one message-passing step (gather-reduce or edge map).

    Attributes: ``ir`` (traced program), ``passes`` (``(pass name, program)`` after each pass),
    ``program`` (optimized), ``plan`` / ``backward_plan`` (:class:`StepPlan`), ``backward_ir`` and
    ``backward_passes`` (the vjp of the forward kernel, before and after each pass), ``kernels``
    (:class:`KernelInspection`, forward then backward), ``schedule`` (the forward kernel's).
    """

    def __init__(self, step: CompiledStep, num_src: int, num_dst: int, num_edges: int, backend: str,
                 title: str = "", rel=None):
        self.step = step
        self.rel = rel
        self.kind = step.kind
        self.num_src, self.num_dst, self.num_edges = num_src, num_dst, num_edges
        self.backend = backend
        self.title = title
        self.backward_error: str | None = None
        self.backward_ran: bool | None = None  # model steps: whether autograd ran its backward

    # -- forward ---------------------------------------------------------------------------------
    @property
    def ir(self) -> Program:
        return self.step.traced.program

    @property
    def passes(self) -> list[tuple[str, Program]]:
        return list(self.step.history)

    @property
    def program(self) -> Program:
        return self.step.program

    @property
    def plan(self) -> StepPlan:
        return self.step.plan

    # -- backward --------------------------------------------------------------------------------
    @cached_property
    def _backward(self) -> tuple[Program, StepPlan, list] | None:
        """(vjp program, its plan, its pass history), None when there is no backward kernel or it
        cannot be derived (``backward_error`` says why)."""
        if self.step.kernel is None:
            return None
        try:
            program = vjp(self.step.kernel.program)
            return program, self.step.backward_plan(), list(self.step.backward_history())
        except GdslError as exc:
            self.backward_error = f"{type(exc).__name__}: {exc}"
            return None

    @property
    def backward_ir(self) -> Program | None:
        """The vjp of the forward kernel, before the passes."""
        return self._backward[0] if self._backward else None

    @property
    def backward_plan(self) -> StepPlan | None:
        return self._backward[1] if self._backward else None

    @property
    def backward_passes(self) -> list[tuple[str, Program]]:
        return self._backward[2] if self._backward else []

    # -- kernels ---------------------------------------------------------------------------------
    def _rows(self, plan: KernelPlan) -> int:
        return self.num_dst if plan.rows == "dst" else self.num_src

    @cached_property
    def kernels(self) -> list[KernelInspection]:
        out = [KernelInspection("forward", i, k, self._rows(k), self.num_edges, self.backend, self.rel)
               for i, k in enumerate(self.plan.kernels)]
        if self.backward_plan is not None:
            out += [KernelInspection("backward", i, k, self._rows(k), self.num_edges, self.backend, self.rel)
                    for i, k in enumerate(self.backward_plan.kernels)]
        return out

    @property
    def forward_kernels(self) -> list[KernelInspection]:
        return [k for k in self.kernels if k.direction == "forward"]

    @property
    def backward_kernels(self) -> list[KernelInspection]:
        return [k for k in self.kernels if k.direction == "backward"]

    @property
    def schedule(self) -> ScheduleInfo | None:
        forward = self.forward_kernels
        return forward[0].schedule if forward else None

    @property
    def steps(self) -> list["Inspection"]:
        """``[self]``, so that code can treat a step and a model alike."""
        return [self]

    # -- text ------------------------------------------------------------------------------------
    def header(self) -> str:
        sizes = (f"{self.num_src} nodes, {self.num_edges} edges" if self.num_src == self.num_dst
                 else f"{self.num_src} source nodes, {self.num_dst} destination nodes, {self.num_edges} edges")
        forward, backward = len(self.forward_kernels), len(self.backward_kernels)
        return (f"{self.title or self.kind} on {sizes}: {forward} forward kernel(s), {backward} backward "
                f"kernel(s); runs on {self.backend}")

    def __str__(self) -> str:
        parts = [_RULE, "gdsl.inspect: " + self.header(), _RULE]
        parts += _section("traced IR", str(self.ir))
        parts += _section("passes", _passes_text(self.ir, self.passes))
        parts += _section("fusion plan (forward)", _plan_text(self.plan, self.forward_kernels))
        if self.backward_ir is not None:
            parts += _section("backward IR (vjp of the forward kernel)", str(self.backward_ir))
            parts += _section("backward passes", _passes_text(self.backward_ir, self.backward_passes))
            parts += _section("fusion plan (backward)", _plan_text(self.backward_plan, self.backward_kernels))
        else:
            parts += _section("backward", self.backward_error or "no kernel, so no backward kernels")
        parts += _section("schedules", _schedules_text(self.kernels))
        for k in self.kernels:
            for backend in BACKENDS:
                parts += _section(f"generated {backend} source: kernel {k.name}", k.source(backend).rstrip())
        return "\n".join(parts)

    def print(self) -> None:
        print(str(self))

    def __repr__(self) -> str:
        return f"<gdsl.Inspection {self.header()}>"


def _section(title: str, body: str) -> list[str]:
    return ["", f"-- {title} " + "-" * max(3, 96 - len(title)), body]


def _indent(text: str, n: int) -> str:
    return "\n".join(" " * n + line if line else line for line in text.splitlines())


def _passes_text(before: Program, history: list[tuple[str, Program]]) -> str:
    lines = []
    for name, program in history:
        if program == before:
            lines.append(f"after {name}: (unchanged)")
        else:
            lines.append(f"after {name}:")
            lines.append(str(program))
        before = program
    return "\n".join(lines)


def _schedules_text(kernels: list[KernelInspection]) -> str:
    """Each kernel's configuration per back end, then each distinct reason once."""
    if not kernels:
        return "no kernels"
    lines, reasons = [], {}
    for k in kernels:
        lines.append(f"kernel {k.name}:")
        for info in k.schedules.values():
            knobs = ", ".join(f"{key}={value}" for key, value in info.config.items())
            lines.append(f"  {info.backend:<6} ({info.reason}): {knobs}")
            reasons.setdefault((info.backend, info.reason, info.why), None)
    for backend, reason, why in reasons:
        lines.append(textwrap.fill(f"why ({backend}, {reason}): {why}", 100, subsequent_indent="  "))
    return "\n".join(lines)


def _plan_text(plan: StepPlan, kernels: list[KernelInspection]) -> str:
    lines = []
    if plan.node_stage is not None:
        lines.append("node stage (torch, dense per-node work before the kernels):")
        lines.append(_indent(str(plan.node_stage), 2))
    for k in kernels:
        lines.append(k.describe())
    if plan.epilogue is not None:
        lines.append("epilogue (torch, per-node work after the kernels):")
        lines.append(_indent(str(plan.epilogue), 2))
    return "\n".join(lines) or "nothing to run"


# ------------------------------------------------------------------------------------------------
# A model
# ------------------------------------------------------------------------------------------------
class ModelInspection:
    """The compiled steps a model launched in one forward (and backward) pass, in launch order.

    ``steps``: one :class:`Inspection` per launch (a step launched twice, e.g. two layers of the
    same width, appears twice); ``kernels``: every step's kernels; ``outputs``: what it returned.
    """

    def __init__(self, name: str, steps: list[Inspection], outputs: Any, ran_backward: bool, backend: str):
        self.name = name
        self.steps = steps
        self.outputs = outputs
        self.ran_backward = ran_backward
        self.backend = backend

    @property
    def kernels(self) -> list[KernelInspection]:
        return [k for s in self.steps for k in s.kernels]

    def summary(self) -> str:
        lines = [f"{self.name}: {len(self.steps)} compiled step(s) launched"
                 + ("" if self.ran_backward else " (no backward: the outputs need no gradient)")]
        if not self.steps:
            lines.append(f"  (message passing ran on {self.backend!r}, which has no compiled steps)")
        for i, s in enumerate(self.steps, 1):
            kernels = ", ".join(f"{k.name} {k.plan.pattern}/{k.plan.rows} ~{k.bytes} B ~{k.flops} FLOP"
                                for k in s.kernels)
            lines.append(f"  step {i}: {s.header()}")
            lines.append(f"    backward ran: {s.backward_ran}; kernels: {kernels}")
        return "\n".join(lines)

    def __str__(self) -> str:
        parts = [_RULE, "gdsl.inspect: " + self.summary(), _RULE]
        first: dict[int, int] = {}
        for i, s in enumerate(self.steps, 1):
            if id(s.step) in first:
                parts += ["", f"## step {i}: the same compiled step as step {first[id(s.step)]}"]
                continue
            first[id(s.step)] = i
            parts += ["", f"## step {i}", str(s)]
        return "\n".join(parts)

    def print(self) -> None:
        print(str(self))

    def __repr__(self) -> str:
        return f"<gdsl.ModelInspection {self.name}: {len(self.steps)} step(s)>"


# ------------------------------------------------------------------------------------------------
# gdsl.inspect
# ------------------------------------------------------------------------------------------------
def inspect(g: "Graph", mfunc: Any, rfunc: Any = None, /, *args: Any, etype=None,
            ndata: Mapping[str, torch.Tensor] | None = None, edata: Mapping[str, torch.Tensor] | None = None,
            srcdata: Mapping[str, torch.Tensor] | None = None, dstdata: Mapping[str, torch.Tensor] | None = None,
            **example_features: torch.Tensor) -> Inspection | ModelInspection:
    """Show what gdsl compiles and runs.

    - ``gdsl.inspect(g, message, reduce, h=x)``: a gather-reduce step (as ``g.update_all``);
    - ``gdsl.inspect(g, edge_func, h=x)``: an edge map (as ``g.apply_edges``);
    - ``gdsl.inspect(g, module, *inputs)`` or ``gdsl.inspect(g, forward, *inputs)``: runs
      ``module(g, *inputs)``, then a backward of the sum of the outputs that need gradients, and
      inspects every compiled step launched.

    Example features (keywords) go, inside a local scope (the graph is left as it was), to every
    frame of the relation ``etype`` whose row count matches their first dimension: source nodes,
    destination nodes, edges (on a graph with as many nodes as edges, both, and the functions read
    what they read); ``ndata=``, ``edata=``, ``srcdata=``, ``dstdata=`` place features explicitly.
    Features already on the graph are used as they are.

    Returns an :class:`Inspection` (a step) or a :class:`ModelInspection` (a model); ``print`` it.
    """
    if isinstance(mfunc, torch.nn.Module) or (callable(mfunc) and not _is_step_function(mfunc)) \
            or (rfunc is not None and not _is_step_function(rfunc)) or args:
        inputs = args if rfunc is None else (rfunc, *args)
        return _inspect_model(g, mfunc, inputs, etype, ndata, edata, srcdata, dstdata, example_features)
    if not callable(mfunc):
        raise TypeError(f"gdsl.inspect: expected message/reduce functions, an edge function or a model, "
                        f"got {type(mfunc).__name__}")
    key = g._etype(etype)
    with g.local_scope():
        _place(g, key, ndata, edata, srcdata, dstdata, example_features)
        if rfunc is None:
            kind, funcs, title = "edge_map", (mfunc,), f"edge map {_name(mfunc)}"
        else:
            kind, funcs = "gather_reduce", (mfunc, rfunc)
            title = f"gather_reduce (message {_name(mfunc)}, reduce {_name(rfunc)})"
        step, backend = _step(g, key, kind, funcs)
        rel = g._relations[key]
        return Inspection(step, rel.num_src, rel.num_dst, rel.num_edges, backend, title, rel)


def _is_step_function(func: Any) -> bool:
    """A message, reduce or edge function (one argument: edges or nodes), not a model."""
    if isinstance(func, (BuiltinFunction, UserFunction)):
        return True
    if not callable(func) or isinstance(func, (torch.nn.Module, torch.Tensor)):
        return False
    import inspect as pyinspect
    try:
        params = [p for p in pyinspect.signature(func).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    except (TypeError, ValueError):
        return True
    return len(params) == 1


def _name(func: Any) -> str:
    if isinstance(func, BuiltinFunction):
        return repr(func)
    inner = func.func if isinstance(func, UserFunction) else func
    return getattr(inner, "__qualname__", None) or type(inner).__name__


def _place(g, key, ndata, edata, srcdata, dstdata, example: Mapping[str, Any]) -> None:
    for view, values in (("ndata", ndata), ("srcdata", srcdata), ("dstdata", dstdata), ("edata", edata)):
        for name, value in (values or {}).items():
            getattr(g, view)[name] = value
    if not example:
        return
    rel = g._relations[key]
    frames = [(g._src_frames[key[0]], rel.num_src), (g._dst_frames[key[2]], rel.num_dst),
              (g._edge_frames[key], rel.num_edges)]
    for name, value in example.items():
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            raise FeatureError(f"gdsl.inspect: example feature {name!r} must be a tensor with one row per "
                               f"node or edge, got {type(value).__name__}")
        targets = [frame for frame, rows in frames if rows == value.shape[0]]
        if not targets:
            raise FeatureError(f"gdsl.inspect: example feature {name!r} has {value.shape[0]} rows; the "
                               f"graph has {rel.num_src} source nodes, {rel.num_dst} destination nodes and "
                               f"{rel.num_edges} edges (use ndata=/edata=/srcdata=/dstdata= to be explicit)")
        for frame in {id(f): f for f in targets}.values():
            frame[name] = value


def _compiled_backend(g, funcs) -> str:
    name = options_of(*funcs)[0] or current_backend(g.device)
    if name in BACKENDS:
        return name
    return "triton" if g.device.type == "cuda" else "numba"


def _step(g, key, kind: str, funcs: tuple) -> tuple[CompiledStep, str]:
    """The compiled step the executor would run (its cached one when it is a compiled executor)."""
    schema = _schema(g, key)
    backend = _compiled_backend(g, funcs)
    try:
        executor = get_executor(g.device, options_of(*funcs)[0])
        if isinstance(executor, CompiledExecutor):
            return executor.step(kind, funcs, schema), executor.name
        traced = trace_gather_reduce(*funcs, schema) if kind == "gather_reduce" else trace_edge_map(funcs[0], schema)
        return CompiledStep(traced, backend, kind), backend
    except FeatureError as exc:
        found = re.match(r"no (source node|destination node|edge) feature named '([^']*)'", str(exc))
        if found is None:
            raise
        raise FeatureError(f"gdsl.inspect: the functions read the {found.group(1)} feature "
                           f"{found.group(2)!r}, which the graph does not have: give an example tensor, "
                           f"e.g. gdsl.inspect(g, ..., {found.group(2)}=torch.randn(rows, ...)), or set "
                           f"it on the graph ({exc})") from None


def run_model(g, model, inputs, etype, ndata, edata, srcdata, dstdata, example) -> tuple[Any, list, bool]:
    """Run ``model(g, *inputs)`` (features placed as ``gdsl.inspect`` places them, in a local
    scope) and a backward of the sum of its outputs that need gradients, recording every compiled
    step launched. Returns ``(outputs, events, ran_backward)`` (events as ``record_steps``)."""
    with g.local_scope():
        key = g._etype(etype) if example else None
        _place(g, key, ndata, edata, srcdata, dstdata, example)
        with record_steps() as events, torch.enable_grad():
            outputs = model(g, *inputs)
            outs = [t for t in _tensors(outputs) if t.requires_grad and t.is_floating_point()]
            if outs:
                loss = sum(t.sum() for t in outs)
                leaves = _leaves(model, inputs, example, ndata, edata, srcdata, dstdata)
                if leaves:
                    torch.autograd.grad(loss, leaves, allow_unused=True)
                else:
                    loss.backward()
    return outputs, events, bool(outs)


def _inspect_model(g, model, inputs, etype, ndata, edata, srcdata, dstdata, example) -> ModelInspection:
    name = type(model).__name__ if isinstance(model, torch.nn.Module) else _name(model)
    outputs, events, ran_backward = run_model(g, model, inputs, etype, ndata, edata, srcdata, dstdata, example)
    outs = ran_backward
    backend = current_backend(g.device)
    steps: list[Inspection] = []
    backward_runs: dict[int, int] = {}
    for direction, step, rel in events:
        if direction == "forward":
            title = f"{step.kind} step writing {', '.join(name for name, _ in step.program.outputs)}"
            steps.append(Inspection(step, rel.num_src, rel.num_dst, rel.num_edges, step.backend, title, rel))
        else:
            backward_runs[id(step)] = backward_runs.get(id(step), 0) + 1
    for s in steps:
        s.backward_ran = backward_runs.get(id(s.step), 0) > 0
    detached = _detach(outputs)
    return ModelInspection(name, steps, detached, bool(outs), backend)


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def _detach(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, Mapping):
        return {k: _detach(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_detach(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_detach(v) for v in value)
    return value


def _leaves(model, inputs, *feature_dicts) -> list[torch.Tensor]:
    """What the backward differentiates for (not accumulating ``.grad`` into the user's model)."""
    found = []
    if isinstance(model, torch.nn.Module):
        found += [p for p in model.parameters() if p.requires_grad]
    found += [t for t in _tensors(list(inputs)) if t.requires_grad]
    for values in feature_dicts:
        found += [t for t in _tensors(dict(values or {})) if t.requires_grad]
    return list({id(t): t for t in found}.values())
