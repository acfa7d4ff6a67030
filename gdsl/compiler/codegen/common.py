"""What every code generator reports about the kernel it generated: its array arguments."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


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
