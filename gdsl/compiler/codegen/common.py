"""What every code generator reports about the kernel it generated: its array arguments."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

import torch

from ..ir import format_instr


@dataclass(frozen=True)
class InputSpec:
    """One array argument the kernel reads: a feature (by space and field) or a weight."""

    name: str                 # the KernelInput name: field, "$<k>" (node-stage value) or "#<index>"
    space: str                # src | dst | edge | param
    dtype: torch.dtype
    shape: tuple[int, ...]
    arg_name: str             # the parameter of the generated function
    param_index: int | None = None  # for weights: the index into ``params``

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class OutputSpec:
    """One array the kernel writes, ``(num_rows or num_edges, size)``."""

    name: str                 # "<rows>:<field>", "edge:<field>" or "<rows>:<field>@arg"
    space: str                # the kernel's rows (dst | src) or edge
    dtype: torch.dtype
    size: int                 # flat feature size
    shape: tuple[int, ...]    # feature shape
    reducer: str | None       # sum | mean | max | min, None for edge outputs
    arg_name: str             # the parameter of the generated function


def sanitize(name: str) -> str:
    """A Python identifier for a field name (``$3`` -> ``_3``)."""
    text = re.sub(r"\W", "_", name)
    return text if text and not text[0].isdigit() else "_" + text


def describe(i: int, ins) -> str:
    """One IR instruction as a compact comment for generated code."""
    return re.sub(r"\s{2,}", "  ", format_instr(i, ins).strip())


def plan_inputs(kernel, fresh: Callable[[str], str]) -> tuple[list[InputSpec], dict[tuple, InputSpec]]:
    """The array arguments of a kernel, one per distinct load, in first-use order.

    Returns the specs and a map from ``(space, field)`` (``("param", index)`` for weights) to the
    spec; ``fresh`` makes each argument name unique in the generated function.
    """
    inputs: list[InputSpec] = []
    input_of: dict[tuple, InputSpec] = {}
    declared = {(inp.space, inp.name): inp for inp in kernel.inputs}
    for ins in kernel.program.instrs:
        if not ins.op.startswith("load_"):
            continue
        space = ins.op[len("load_"):]
        if ins.op == "load_param" and ins.attr("field") is None:
            index = ins.attr("index")
            key, name, arg = ("param", index), f"#{index}", f"w{index}"
        else:
            index = None
            key, name = (space, ins.attr("field")), ins.attr("field")
            arg = f"{space}_{sanitize(name)}"
        if key in input_of:
            continue
        decl = declared.get((space, name))
        shape = decl.shape if decl is not None else ins.shape
        spec = InputSpec(name, space, ins.dtype, tuple(shape), fresh(arg), index)
        inputs.append(spec)
        input_of[key] = spec
    return inputs, input_of


def argument_lines(inputs: list[InputSpec], outputs: list[OutputSpec],
                   type_name: Callable[[torch.dtype], str]) -> list[str]:
    """The "# arguments:" block of a generated module's header: one comment line per array it
    reads or writes, with the element type as the back end spells it."""
    lines = ["# arguments:"]
    for spec in inputs:
        rows = "" if spec.space == "param" else "rows, "
        lines.append(f"#   {spec.arg_name}: {spec.space} {spec.name!r} "
                     f"{type_name(spec.dtype)}[{rows}{spec.size}] (shape {list(spec.shape)})")
    for spec in outputs:
        lines.append(f"#   {spec.arg_name}: writes {spec.name} {type_name(spec.dtype)}[rows, {spec.size}]"
                     f" (shape {list(spec.shape)})")
    return lines
