"""Fusion: split an optimized program into a node stage, fused kernels and an epilogue.

- The **node stage** computes everything that varies per node or per weight only (hoisted,
  ``materialize``-d values): dense torch work on N rows, run by the IR interpreter.
- **Kernels** hold the per-edge work and the mailbox reductions. A *gather-reduce* kernel owns one
  row per program instance and walks that row's edges: rows are destinations (in-CSR) for
  reductions into ``dst``, sources (out-CSR) for reductions ``into='src'`` (how gradients reach
  source features). Messages never leave the kernel. An *edge map* kernel only writes per-edge
  outputs. Per-edge outputs of a program with reductions ride along in one of its kernels.
- The **epilogue** is per-node (or per-weight) math on the reduced values, e.g. ``sum / norm``.

Inside a kernel program, node-stage values appear as loads of synthetic fields ``$<index>``, so
code generators only ever see loads, per-edge math and reductions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import CompileError
from .ir import Builder, Instr, Program
from .ops import MAILBOX_REDUCERS, OPS
from .passes import dce


@dataclass(frozen=True)
class KernelInput:
    name: str     # field name, "$<index>" for node-stage values, "#<index>" for weights
    space: str    # src | dst | edge | param
    dtype: object
    shape: tuple[int, ...]


@dataclass(frozen=True)
class KernelPlan:
    """One fused kernel over the rows ``rows`` ('dst': in-CSR, 'src': out-CSR).

    ``program`` has loads, per-edge math, and outputs that are either reductions into ``rows``
    (``"<rows>:<name>"``) or per-edge values (``"edge:<name>"``)."""

    pattern: str                      # "gather_reduce" | "edge_map"
    rows: str
    program: Program
    inputs: tuple[KernelInput, ...]

    def describe(self) -> str:
        reads = ", ".join(f"{i.space}.{i.name}{list(i.shape)}" for i in self.inputs)
        writes = ", ".join(name for name, _ in self.program.outputs)
        csr = "in-CSR" if self.rows == "dst" else "out-CSR"
        return f"{self.pattern} over {csr} rows: reads {reads or 'nothing'}; writes {writes}"


@dataclass
class StepPlan:
    """A whole message-passing step: node stage -> kernels -> epilogue."""

    node_stage: Program | None
    kernels: tuple[KernelPlan, ...]
    epilogue: Program | None

    @property
    def kernel(self) -> KernelPlan | None:
        """The kernel of a forward step (which has at most one)."""
        if len(self.kernels) > 1:
            raise CompileError("internal: this step has several kernels")
        return self.kernels[0] if self.kernels else None

    def describe(self) -> str:
        lines = []
        if self.node_stage is not None:
            lines.append("node stage (torch, per node): " + ", ".join(n for n, _ in self.node_stage.outputs))
        lines += ["kernel " + k.describe() for k in self.kernels]
        if self.epilogue is not None:
            lines.append("epilogue (torch, per node): " + ", ".join(n for n, _ in self.epilogue.outputs))
        return "\n".join(lines)


def _is_reduction(ins: Instr) -> bool:
    return ins.op in MAILBOX_REDUCERS


def _classify(program: Program) -> list[str]:
    """``node``, ``kernel`` or ``post`` (epilogue) for every instruction."""
    stage: list[str] = []
    for ins in program.instrs:
        if ins.op == "mailbox_softmax":  # what passes.fuse_softmax could not turn into weights
            raise CompileError("torch.softmax over the mailbox compiles when its result weighs a sum "
                               "over the mailbox, e.g. (torch.softmax(e, 1) * m).sum(1); for other uses "
                               "compute the weights with gdsl.edge_softmax first", where=ins.where)
        after_reduction = any(stage[a] == "post" or _is_reduction(program.instrs[a]) for a in ins.args)
        if after_reduction and (ins.space == "edge" or ins.op.startswith("mailbox_")):
            raise CompileError("a per-edge value computed from a mailbox reduction (e.g. m - m.max(1)) "
                               "needs two passes over the edges; use torch.softmax over the mailbox "
                               "or gdsl.edge_softmax", where=ins.where)
        if ins.op.startswith("mailbox_") or ins.space == "edge":
            stage.append("kernel")
        elif after_reduction:
            stage.append("post")
        else:
            stage.append("node")
    return stage


def _field_name(ins: Instr, index: int) -> tuple[str, tuple]:
    if ins.op == "load_param" and ins.attr("field") is None:  # a traced weight
        return f"#{ins.attr('index')}", ins.attrs
    if ins.op.startswith("load_"):
        return ins.attr("field"), ins.attrs
    return f"${index}", (("field", f"${index}"),)


def _loads_behind(program: Program, stage: list[str], value: int) -> int:
    """Flat width of the per-edge-varying loads the kernel reads to compute ``value``."""
    seen, stack, width = set(), [value], 0
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        ins = program.instrs[i]
        if stage[i] != "kernel" or ins.op.startswith("load_"):
            if ins.space != "param":
                width += math.prod(ins.shape)
            continue
        stack.extend(ins.args)
    return width


def _share_per_edge_values(program: Program, stage: list[str], groups: dict) -> tuple[list[str], frozenset]:
    """Kernel order, and the per-edge values the first kernel stores for the second.

    A backward step reduces some per-edge values both into source rows (over the out-CSR) and into
    destination rows (over the in-CSR), e.g. the gradient of an attention logit reaches both ends
    of the edge. Recomputing such a value in the second kernel re-reads every wide input it needs
    (features of both endpoints); when the value is much narrower than those inputs, the first
    kernel (the one with the wider outputs) also writes it per edge and the second only reads it."""
    order = sorted(groups)
    if len(order) != 2:
        return order, frozenset()
    args = {rows: {program.instrs[i].args[0] for _, i in outs if _is_reduction(program.instrs[i])
                   and len(program.instrs[i].args) == 1} for rows, outs in groups.items()}
    shared = {v for v in args[order[0]] & args[order[1]]
              if stage[v] == "kernel" and program.instrs[v].space == "edge"
              and not program.instrs[v].op.startswith("load_")
              and 4 * math.prod(program.instrs[v].shape) <= _loads_behind(program, stage, v)}
    if not shared:
        return order, frozenset()

    def width(rows):
        return sum(math.prod(program.instrs[i].shape) for _, i in groups[rows])
    order.sort(key=width, reverse=True)  # the kernel with the wider outputs computes the values
    groups[order[0]].extend((f"edge:${v}", v) for v in sorted(shared))
    return order, frozenset(shared)


def _build_kernel(program: Program, stage: list[str], rows: str,
                  outputs: list[tuple[str, int]], stored: frozenset = frozenset()) -> KernelPlan:
    """A kernel computing ``outputs`` (names, program indices) with everything they need; the
    per-edge values in ``stored`` were written by an earlier kernel and are loaded."""
    builder = Builder()
    index: dict[int, int] = {}

    def operand(a: int) -> int:
        if a in index:
            return index[a]
        src = program.instrs[a]
        if src.op == "const":
            builder.instrs.append(src)
        elif a in stored:
            builder.instrs.append(Instr("load_edge", (), (("field", f"${a}"),), src.dtype, src.shape,
                                        "edge", src.where))
        elif stage[a] != "kernel" or src.op.startswith("load_"):
            name, attrs = _field_name(src, a)
            op = "load_param" if src.op == "load_param" else f"load_{src.space}"
            builder.instrs.append(Instr(op, (), attrs, src.dtype, src.shape, src.space, src.where))
        else:
            args = tuple(operand(x) for x in src.args)
            builder.instrs.append(Instr(src.op, args, src.attrs, src.dtype, src.shape, src.space, src.where))
        index[a] = len(builder.instrs) - 1
        return index[a]

    built = [(name, operand(i)) for name, i in outputs]
    kprog = dce(builder.build(built))
    has_reduction = any(_is_reduction(ins) for ins in kprog.instrs)
    inputs = [KernelInput(_field_name(ins, i)[0], ins.space, ins.dtype, ins.shape)
              for i, ins in enumerate(kprog.instrs) if ins.op.startswith("load_")]
    return KernelPlan("gather_reduce" if has_reduction else "edge_map", rows, kprog, tuple(inputs))


def plan(program: Program) -> StepPlan:
    """Split a hoisted program (see ``passes.hoist``) into node stage, kernels and epilogue."""
    stage = _classify(program)
    users = program.users()

    # -- node stage ------------------------------------------------------------------------------
    node_builder = Builder()
    node_index: dict[int, int] = {}
    node_outputs: list[tuple[str, int]] = []
    for i, ins in enumerate(program.instrs):
        if stage[i] != "node":
            continue
        node_builder.instrs.append(Instr(ins.op, tuple(node_index[a] for a in ins.args), ins.attrs,
                                         ins.dtype, ins.shape, ins.space, ins.where))
        node_index[i] = len(node_builder.instrs) - 1
        needed_later = any(stage[u] != "node" for u in users[i])
        if needed_later and OPS[ins.op].kind not in ("load", "const"):
            node_outputs.append((f"{ins.space}:${i}", node_index[i]))
    node_outputs += [(name, node_index[i]) for name, i in program.outputs if stage[i] == "node"]
    node_stage = dce(node_builder.build(node_outputs)) if node_outputs else None

    # -- kernels: one per reduction direction; edge outputs join the first ----------------------
    groups: dict[str, list[tuple[str, int]]] = {}
    for i, ins in enumerate(program.instrs):
        if _is_reduction(ins) and any(stage[u] == "post" for u in users[i]):
            groups.setdefault(ins.space, []).append((f"{ins.space}:${i}", i))
    edge_outputs = []
    for name, i in program.outputs:
        if stage[i] != "kernel":
            continue
        ins = program.instrs[i]
        if _is_reduction(ins):
            groups.setdefault(ins.space, []).append((name, i))
        else:
            edge_outputs.append((name, i))
    if edge_outputs:
        target = "dst" if "dst" in groups or not groups else next(iter(groups))
        groups.setdefault(target, []).extend(edge_outputs)
    order, stored = _share_per_edge_values(program, stage, groups)
    kernels = tuple(_build_kernel(program, stage, rows, groups[rows], stored if k else frozenset())
                    for k, rows in enumerate(order))

    # -- epilogue --------------------------------------------------------------------------------
    epi = Builder()
    epi_index: dict[int, int] = {}
    for i, ins in enumerate(program.instrs):
        if stage[i] != "post":
            continue
        for a in ins.args:
            if a in epi_index:
                continue
            src = program.instrs[a]
            if OPS[src.op].kind in ("load", "const"):
                epi.instrs.append(src)
            else:  # a kernel output or a node-stage value, both computed under the name $a
                epi.instrs.append(Instr(f"load_{src.space}", (), (("field", f"${a}"),), src.dtype,
                                        src.shape, src.space, src.where))
            epi_index[a] = len(epi.instrs) - 1
        epi.instrs.append(Instr(ins.op, tuple(epi_index[a] for a in ins.args), ins.attrs, ins.dtype,
                                ins.shape, ins.space, ins.where))
        epi_index[i] = len(epi.instrs) - 1
    epi_outputs = [(name, epi_index[i]) for name, i in program.outputs if stage[i] == "post"]
    epilogue = dce(epi.build(epi_outputs)) if epi_outputs else None
    return StepPlan(node_stage, kernels, epilogue)


# The int32 edge input of a kernel that writes handed-off values: for each entry of its own CSR,
# the position of that entry's edge in the readers' CSR.
ENTRY_POS = "@entry_pos"


def edge_handoffs(step: StepPlan) -> dict[str, str]:
    """Per-edge values that one kernel of ``step`` writes and only later gather-reduce kernels
    over the *other* compressed adjacency read: ``{field: the readers' rows}``.

    Such a value (e.g. a backward's per-edge logit gradient, written by a walk of the out-CSR and
    summed per destination over the in-CSR) can be stored in its readers' entry order: the writer
    scatters it to the position its edge has there (a write at random either way) and the readers
    load it in sequence instead of at random edge ids. Only internal values (``$<k>``) qualify:
    what a step returns or its epilogue reads stays in edge-id order."""
    epilogue_reads = set()
    if step.epilogue is not None:
        epilogue_reads = {ins.attr("field") for ins in step.epilogue.instrs if ins.op == "load_edge"}
    handoffs: dict[str, str] = {}
    for i, kernel in enumerate(step.kernels):
        for name, _ in kernel.program.outputs:
            space, _, field = name.partition(":")
            if space != "edge" or not field.startswith("$") or field in epilogue_reads:
                continue
            readers = [k for k in step.kernels[i + 1:] if any(inp.space == "edge" and inp.name == field
                                                              for inp in k.inputs)]
            rows = {k.rows for k in readers}
            if (readers and len(rows) == 1 and kernel.rows not in rows
                    and all(k.pattern == "gather_reduce" for k in readers)):
                handoffs[field] = rows.pop()
    return handoffs
