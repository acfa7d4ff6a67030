"""Helpers shared by the code-generator tests (test_codegen_numba.py, test_codegen_triton.py):
trace-plan-generate once per case, CSR arrays for a drawn graph, random features, and the
expected max/min winners. Each back end's test module keeps only what is its own (how it runs a
kernel and what tolerance its dtypes get)."""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch

from gdsl.compiler import interpret
from gdsl.compiler.fusion import plan
from gdsl.compiler.passes import optimize
from gdsl.compiler.trace import FieldSpec, trace_edge_map, trace_gather_reduce


@dataclasses.dataclass
class Compiled:
    params: list[torch.Tensor]
    step: object        # fusion.StepPlan
    kernel: object      # the back end's kernel runner
    schema: dict


class KernelMemo:
    """Trace, optimise, plan and generate once per key: compiling (numba) or building (Triton) a
    kernel costs far more than running it on a small graph, and hypothesis runs each case often."""

    def __init__(self, make_kernel: Callable[[object], object]):
        self._make_kernel = make_kernel  # KernelPlan -> runner
        self._compiled: dict[object, Compiled] = {}

    def compiled(self, key, trace: Callable[[], object], schema: dict) -> Compiled:
        if key not in self._compiled:
            traced = trace()
            step = plan(optimize(traced.program)[0])
            assert step.kernel is not None
            self._compiled[key] = Compiled(traced.params, step, self._make_kernel(step.kernel), schema)
        return self._compiled[key]

    def gather(self, key, message, reduce, schema) -> Compiled:
        return self.compiled(key, lambda: trace_gather_reduce(message, reduce, field_specs(schema)), schema)

    def edge_map(self, key, func, schema) -> Compiled:
        return self.compiled(key, lambda: trace_edge_map(func, field_specs(schema)), schema)


def field_specs(schema: dict) -> dict:
    """``{space: {name: (dtype, shape)}}`` as the tracer's FieldSpecs."""
    return {space: {name: FieldSpec(dtype, shape) for name, (dtype, shape) in fields.items()}
            for space, fields in schema.items()}


def float_schema(dtype, **spaces) -> dict:
    return {space: {name: (dtype, shape) for name, shape in fields.items()}
            for space, fields in spaces.items()}


def csr_numpy(case, rows: str = "dst") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The in-CSR (``rows='dst'``) or out-CSR (``rows='src'``) of a drawn graph, by a stable
    argsort of the row ids, as int64 ``indptr``, other endpoint and edge id per entry."""
    key, other, n = (case.dst, case.src, case.num_dst) if rows == "dst" else (case.src, case.dst, case.num_src)
    order = np.argsort(key, kind="stable")
    indptr = np.zeros(n + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(np.bincount(key, minlength=n))
    return indptr, other[order].astype(np.int64), order.astype(np.int64)


def structure(case) -> interpret.Structure:
    return interpret.Structure(torch.as_tensor(case.src), torch.as_tensor(case.dst), case.num_src,
                               case.num_dst)


def make_features(case, schema, seed: int, kind: str, nonzero=()) -> dict:
    """Random features: small integers (many ties, exact sums) or reals; fields in ``nonzero``
    stay away from 0 (they are divisors)."""
    gen = torch.Generator().manual_seed(seed)
    rows = {"src": case.num_src, "dst": case.num_dst, "edge": case.num_edges}
    feats: dict[str, dict[str, torch.Tensor]] = {"src": {}, "dst": {}, "edge": {}}
    for space, fields in schema.items():
        for name, (dtype, shape) in fields.items():
            size = (rows[space], *shape)
            if dtype == torch.bool:
                value = torch.randint(0, 2, size, generator=gen).bool()
            elif not dtype.is_floating_point:
                value = torch.randint(-3, 4, size, generator=gen).to(dtype)
            elif name in nonzero:
                sign = torch.randint(0, 2, size, generator=gen) * 2 - 1
                mag = (torch.randint(1, 3, size, generator=gen).double() if kind == "int"
                       else 0.5 + torch.rand(size, generator=gen, dtype=torch.float64))
                value = (sign * mag).to(dtype)
            elif kind == "int":
                value = torch.randint(-2, 3, size, generator=gen).to(dtype)
            else:
                value = torch.randn(size, generator=gen, dtype=torch.float64).to(dtype)
            feats[space][name] = value
    return feats


def with_node_stage(step, params, case, feats) -> dict:
    """``feats`` plus the node-stage values (``$k`` fields) the kernels load."""
    feats = {space: dict(fields) for space, fields in feats.items()}
    if step.node_stage is not None:
        for name, value in interpret.evaluate(step.node_stage, params, structure(case), feats).items():
            space, _, field = name.partition(":")
            feats[space][field] = value
    return feats


def expected_args(msg: np.ndarray, rows_of_edge: np.ndarray, num_rows: int, reducer: str) -> np.ndarray:
    """Per (row, feature): the smallest edge id whose message attains the row's max/min; -1 if
    the row has no entries."""
    msg = msg.reshape(msg.shape[0], int(np.prod(msg.shape[1:])))
    out = np.full((num_rows, msg.shape[1]), -1, dtype=np.int64)
    for v in range(num_rows):
        eids = np.nonzero(rows_of_edge == v)[0]
        if len(eids) == 0:
            continue
        vals = msg[eids]
        best = vals.max(0) if reducer == "max" else vals.min(0)
        out[v] = eids[np.argmax(vals == best, axis=0)]
    return out
