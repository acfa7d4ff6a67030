"""Estimated memory traffic and arithmetic of one fused kernel on a graph of a given size.

Why: graph kernels are memory bound, so what a kernel reads and writes per edge and per row is what
decides its speed. ``gdsl.inspect`` prints these estimates next to each kernel, and schedules can be
compared by them before anything runs.

The model counts every array access once, as the generated kernels make it (no cache reuse):

- per row: the CSR's ``indptr`` and the features of the row's own node (``dst`` for in-CSR kernels,
  ``src`` for out-CSR ones), once per row;
- per edge: the neighbour id and, when the kernel touches edge data, the edge id; the neighbour's
  features and edge features, gathered once per edge;
- weights: once;
- stores: reductions once per row (plus the ``@arg`` winners of max/min and the ``@lse`` of softmax
  sums), per-edge outputs once per edge.

FLOPs count one per element of every arithmetic IR operation (``exp`` counts as one), evaluated as
often as its space says: per edge, per row or once; views, casts and loads are free; ``matmul`` is
``2*K`` per output element; an online-softmax sum is about 4 per logit and 2 per output element.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .fusion import KernelPlan
from .ir import DTYPE_NAMES, Instr
from .ops import OPS

_FREE_KINDS = ("load", "const", "shape", "materialize")


@dataclass(frozen=True)
class Traffic:
    """One array the kernel reads or writes: ``count`` accesses (rows, edges or 1) of ``width``
    bytes each."""

    what: str      # e.g. "src.h f32[16]"
    per: str       # "row" | "edge" | "once"
    count: int
    width: int     # bytes per access

    @property
    def bytes(self) -> int:
        return self.count * self.width


@dataclass(frozen=True)
class KernelCost:
    """What one launch of a kernel moves and computes on ``num_rows`` CSR rows and ``num_edges``
    entries."""

    num_rows: int
    num_edges: int
    loads: tuple[Traffic, ...]
    stores: tuple[Traffic, ...]
    flops: int

    @property
    def bytes_loaded(self) -> int:
        return sum(t.bytes for t in self.loads)

    @property
    def bytes_stored(self) -> int:
        return sum(t.bytes for t in self.stores)

    @property
    def bytes(self) -> int:
        """Bytes moved: loaded plus stored."""
        return self.bytes_loaded + self.bytes_stored

    def describe(self) -> str:
        """One line per array and a total, for ``gdsl.inspect``."""
        lines = [f"estimated on {self.num_rows} rows, {self.num_edges} edges: "
                 f"{human_bytes(self.bytes)} moved ({human_bytes(self.bytes_loaded)} loaded, "
                 f"{human_bytes(self.bytes_stored)} stored), {human_count(self.flops)}FLOP"]
        for verb, items in (("load ", self.loads), ("store", self.stores)):
            for t in items:
                lines.append(f"  {verb} {t.what:<28} {t.width:>6} B per {t.per:<4} = {human_bytes(t.bytes)}")
        return "\n".join(lines)


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def human_count(n: int) -> str:
    """``1234567`` -> ``'1.2 M'`` (with a trailing space, so that ``+ 'FLOP'`` reads well)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} "


def _itemsize(dtype) -> int:
    import torch

    return torch.empty((), dtype=dtype).element_size()


def _type(ins: Instr) -> str:
    return f"{DTYPE_NAMES.get(ins.dtype, str(ins.dtype))}[{','.join(map(str, ins.shape))}]"


def estimate(kernel: KernelPlan, num_rows: int, num_edges: int, index_bytes: int = 8) -> KernelCost:
    """Bytes and FLOPs of ``kernel`` over ``num_rows`` CSR rows (destinations for in-CSR kernels,
    sources for out-CSR ones) and ``num_edges`` entries; ``index_bytes`` is the CSR index width
    (8 for int64, 4 for int32)."""
    rows, other = kernel.rows, ("src" if kernel.rows == "dst" else "dst")
    prog = kernel.program
    counts = {"row": int(num_rows), "edge": int(num_edges), "once": 1}

    def per(space: str) -> str:
        return "row" if space == rows else "once" if space == "param" else "edge"

    loads = [Traffic("indptr", "row", counts["row"] + 1, index_bytes)]
    uses_nbr = any(ins.op == f"load_{other}" for ins in prog.instrs)
    uses_eid = any(ins.op in ("load_edge", "edge_id", "dropout_mask") for ins in prog.instrs) or \
        any(name.startswith("edge:") for name, _ in prog.outputs)
    if uses_nbr:
        loads.append(Traffic("neighbour ids", "edge", counts["edge"], index_bytes))
    if uses_eid:
        loads.append(Traffic("edge ids", "edge", counts["edge"], index_bytes))
    seen = set()
    for ins in prog.instrs:
        if not ins.op.startswith("load_"):
            continue
        name = ins.attr("field") if ins.attr("field") is not None else f"#{ins.attr('index')}"
        key = (ins.op, name)
        if key in seen:
            continue
        seen.add(key)
        where = per(ins.space)
        width = math.prod(ins.shape) * _itemsize(ins.dtype)
        loads.append(Traffic(f"{ins.space}.{name} {_type(ins)}", where, counts[where], width))

    stores = []
    for name, i in prog.outputs:
        ins = prog.instrs[i]
        where = "edge" if name.startswith("edge:") else "row"
        size = math.prod(ins.shape)
        stores.append(Traffic(f"{name} {_type(ins)}", where, counts[where], size * _itemsize(ins.dtype)))
        if ins.op in ("mailbox_max", "mailbox_min"):
            stores.append(Traffic(f"{name}@arg i64[{','.join(map(str, ins.shape))}]", "row", counts["row"],
                                  size * 8))
        elif ins.op == "mailbox_softmax_sum":
            logits = prog.instrs[ins.args[0]]
            stores.append(Traffic(f"{name}@lse {_type(logits)}", "row", counts["row"],
                                  math.prod(logits.shape) * _itemsize(ins.dtype)))

    flops = 0
    for ins in prog.instrs:
        flops += _flops_per_evaluation(prog.instrs, ins) * counts[_evaluated_per(ins, rows)]
        if ins.op == "mailbox_mean":
            flops += math.prod(ins.shape) * counts["row"]  # the division by the degree
    return KernelCost(int(num_rows), int(num_edges), tuple(loads), tuple(stores), int(flops))


def _evaluated_per(ins: Instr, rows: str) -> str:
    if ins.op.startswith("mailbox_"):
        return "edge"  # a reduction combines one operand per entry
    if ins.space == rows:
        return "row"
    return "once" if ins.space == "param" else "edge"


def _flops_per_evaluation(instrs, ins: Instr) -> int:
    kind = OPS[ins.op].kind if ins.op in OPS else "structure"
    size = math.prod(ins.shape)
    if kind in _FREE_KINDS or ins.op == "cast":
        return 0
    if kind in ("unary", "binary", "compare", "ternary"):
        return size
    if kind in ("feature_reduce", "rows"):
        return math.prod(instrs[ins.args[0]].shape)
    if ins.op == "matmul":
        return 2 * size * instrs[ins.args[0]].shape[-1]
    if ins.op == "outer":
        return size
    if ins.op == "mailbox_softmax_sum":
        return 4 * math.prod(instrs[ins.args[0]].shape) + 2 * size
    if ins.op == "mailbox_logsumexp":
        return 3 * size
    if kind == "mailbox":
        return math.prod(instrs[ins.args[0]].shape)
    if ins.op == "dropout_mask":
        return size
    return 0
