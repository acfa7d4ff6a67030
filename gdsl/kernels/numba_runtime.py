"""Running generated numba kernels on CPU tensors.

A :class:`NumbaKernel` owns one generated module (:class:`~gdsl.compiler.codegen.numba.NumbaSource`).
It writes the source to the on-disk cache (:mod:`gdsl.kernels.cache`), imports it on first use
(numba then compiles on the first call for each argument type signature, or loads its own cache
next to the file), and keeps the compiled dispatcher in a process-wide dictionary keyed by the
kernel key and the source hash, so equal kernels built twice are compiled once.

``run`` converts tensors to numpy views (no copies for contiguous CPU tensors), allocates the
outputs, splits the rows into ``schedule.parts_per_thread`` parts per numba thread of about equal
work (:func:`row_splits`; the kernel's ``prange`` runs over the parts), launches, and returns torch
tensors sharing the output memory, shaped ``(rows, *feature shape)``. A hub-capable module (its
schedule has ``hub_threshold``) also launches its partial kernel over the chunks of the hub rows
and combines them (:mod:`gdsl.kernels.hub`).
"""
from __future__ import annotations

import contextlib

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..errors import BackendError, GdslError
from . import buffers
from . import hub as hub_rows
from .generated import GeneratedKernel
from .schedules import HUB_OFF, NumbaSchedule

_NP_DTYPES = {
    torch.float32: np.float32, torch.float64: np.float64, torch.int32: np.int32,
    torch.int64: np.int64, torch.bool: np.bool_,
}



def _numpy_2d(tensor: torch.Tensor, rows: int, size: int) -> np.ndarray:
    """A ``(rows, size)`` C-contiguous view of ``tensor``; a non-contiguous one (the broadcast
    gradient of ``out.sum()``, a slice) is copied into a pooled buffer: a fresh allocation would
    cost its first-touch page faults (16 ms for 51 MB here, ten times the copy)."""
    tensor = tensor.detach()
    if tensor.is_contiguous() or tensor.dtype not in _NP_DTYPES:
        return tensor.contiguous().numpy().reshape(rows, size)
    staged = buffers.empty((rows, size), _NP_DTYPES[tensor.dtype])
    torch.from_numpy(staged).view(tensor.shape).copy_(tensor)
    return staged


def row_splits(indptr: np.ndarray, num_rows: int, parts: int, hub_threshold: int | None = None
               ) -> np.ndarray:
    """Boundaries of at most ``parts`` contiguous row ranges of about equal cost, counting one
    unit per entry and per row; the kernel's ``prange`` runs over these ranges, so each thread
    gets about the same number of edges however skewed the degrees are. Rows with more than
    ``hub_threshold`` entries count as one unit (the partial kernel walks them)."""
    cost = indptr.astype(np.int64)
    if hub_threshold is not None:
        degrees = np.diff(cost)
        cost = np.concatenate([[0], np.cumsum(np.where(degrees > hub_threshold, 0, degrees))])
    cost = cost + np.arange(num_rows + 1, dtype=np.int64)
    targets = np.linspace(0, cost[-1], max(1, parts) + 1)
    splits = np.searchsorted(cost, targets, side="left")
    splits[0], splits[-1] = 0, num_rows
    return np.unique(splits).astype(np.int64)


def _cached_row_splits(indptr: Any, indptr_np: np.ndarray, num_rows: int, parts: int,
                       hub_threshold: int | None) -> np.ndarray:
    """:func:`row_splits`, remembered on the ``indptr`` tensor (a graph's CSR is built once and never
    changed in place, and computing the splits costs ~1 ms per 100k rows, as much as a small
    kernel)."""
    if not isinstance(indptr, torch.Tensor):
        return row_splits(indptr_np, num_rows, parts, hub_threshold)
    memo = getattr(indptr, "_gdsl_row_splits", None)
    if memo is None:
        memo = {}
        try:
            indptr._gdsl_row_splits = memo
        except AttributeError:  # pragma: no cover - tensors accept attributes
            pass
    key = (num_rows, parts, hub_threshold)
    splits = memo.get(key)
    if splits is None:
        splits = memo[key] = row_splits(indptr_np, num_rows, parts, hub_threshold)
    return splits


def _index_array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        if value.device.type != "cpu":
            raise BackendError(f"the numba backend runs on CPU tensors; {what} is on {value.device}")
        value = value.detach().contiguous().numpy()
    array = np.ascontiguousarray(value)
    if array.ndim != 1 or array.dtype not in (np.int32, np.int64):
        raise GdslError(f"{what} must be a 1-D int32 or int64 array, got {array.dtype} of shape "
                        f"{array.shape}")
    return array


@contextlib.contextmanager
def _slp_vectorize():
    """LLVM's SLP vectoriser on for one compilation. numba leaves it off by default since an old
    LLVM miscompiled some code with it (numba issue 8705); generated kernels need it: loops over
    a few features or heads with constant trip counts are unrolled before the loop vectoriser
    runs, and only SLP turns the unrolled lanes back into vector code. The flag is global, so it
    is flipped under numba's own compiler lock."""
    from numba.core import config
    from numba.core.compiler_lock import global_compiler_lock
    with global_compiler_lock:
        saved = config.SLP_VECTORIZE
        config.SLP_VECTORIZE = 1
        try:
            yield
        finally:
            config.SLP_VECTORIZE = saved


def _compile_with_slp(dispatcher):
    """Make ``dispatcher`` (a generated kernel's) compile new signatures with SLP on. numba's
    dispatcher calls its ``_compile_for_args`` whenever no compiled version matches the
    arguments, so wrapping that one method covers every compilation (loads from numba's own
    cache go through it too and are unaffected)."""
    if getattr(dispatcher, "_gdsl_slp", False):
        return dispatcher
    compile_for_args = dispatcher._compile_for_args

    def compile_for_args_with_slp(*args, **kwargs):
        with _slp_vectorize():
            return compile_for_args(*args, **kwargs)
    dispatcher._compile_for_args = compile_for_args_with_slp
    dispatcher._gdsl_slp = True
    return dispatcher


class NumbaKernel(GeneratedKernel):
    """A generated numba kernel, compiled lazily and cached in memory and on disk."""

    backend = "numba"
    display = "numba"

    def compile(self, name: str | None = None):
        return _compile_with_slp(super().compile(name))

    def arguments(self, indptr, indices, eids, num_rows: int, num_edges: int,
                  inputs: Mapping[str, Any], params: Sequence[torch.Tensor],
                  schedule: NumbaSchedule | None = None, edge_ends: tuple | None = None
                  ) -> tuple[list[Any], dict[str, tuple[np.ndarray, int]]]:
        """The call arguments of the generated function and the output arrays by name.
        ``edge_ends``: ``(row ids, other ids)`` by edge id, for a source that walks the edges in
        id order (``source.by_edge``)."""
        src = self.source
        schedule = schedule if schedule is not None else NumbaSchedule()
        hub_capable = src.partial_entry is not None
        if schedule.hub and not hub_capable:
            raise GdslError(f"numba kernel {src.entry}: a hub schedule needs a hub-capable source "
                            f"(generate_numba(kernel, schedule) with hub_threshold set)")
        threshold = (schedule.hub_threshold or HUB_OFF) if hub_capable else None
        num_rows, num_edges = int(num_rows), int(num_edges)
        import numba

        parts = numba.get_num_threads() * schedule.parts_per_thread
        if src.by_edge:
            if edge_ends is None:
                raise GdslError(f"numba kernel {src.entry} walks the edges in id order: it needs each "
                                f"edge's endpoints (edge_ends)")
            row_ids, other_ids = (_index_array(ids, name) for ids, name in zip(edge_ends, ("row ids", "other ids")))
            if row_ids.shape[0] != num_edges or other_ids.shape[0] != num_edges:
                raise GdslError(f"edge_ends have {row_ids.shape[0]} / {other_ids.shape[0]} entries for "
                                f"{num_edges} edges")
            edge_splits = np.linspace(0, num_edges, min(parts, max(1, num_edges)) + 1).astype(np.int64)
            args: list[Any] = [row_ids, other_ids, edge_splits, num_rows, num_edges]
        else:
            indptr_np = _index_array(indptr, "indptr")
            if indptr_np.shape[0] != num_rows + 1:
                raise GdslError(f"indptr has {indptr_np.shape[0]} entries for {num_rows} rows")
            splits = _cached_row_splits(indptr, indptr_np, num_rows, parts, threshold)
            args = [indptr_np, _index_array(indices, "indices"), _index_array(eids, "eids"),
                    splits, num_rows, num_edges]
        if hub_capable:
            args.append(threshold)
        for spec in src.inputs:
            if spec.param_index is not None:
                if spec.param_index >= len(params):
                    raise GdslError(f"numba kernel {src.entry}: weight #{spec.param_index} missing "
                                    f"(got {len(params)} params)")
                tensor = params[spec.param_index]
                feature_shape = tuple(tensor.shape)
            else:
                tensor = self._lookup(inputs, spec.space, spec.name)
                feature_shape = tuple(tensor.shape[1:]) if spec.space != "param" else tuple(tensor.shape)
            if not isinstance(tensor, torch.Tensor):
                tensor = torch.as_tensor(tensor)
            what = f"{spec.space}:{spec.name}"
            if tensor.device.type != "cpu":
                raise BackendError(f"the numba backend runs on CPU tensors; {what} is on {tensor.device}")
            if tensor.dtype != spec.dtype:
                raise GdslError(f"numba kernel {src.entry}: {what} has dtype {tensor.dtype}, the kernel "
                                f"was compiled for {spec.dtype}")
            if spec.space == "param":
                if tensor.numel() != spec.size:
                    raise GdslError(f"numba kernel {src.entry}: {what} has shape {tuple(tensor.shape)}, "
                                    f"expected {spec.shape}")
                args.append(tensor.detach().contiguous().numpy().reshape(spec.size))
                continue
            if feature_shape != spec.shape:
                raise GdslError(f"numba kernel {src.entry}: {what} has feature shape {feature_shape}, "
                                f"the kernel was compiled for {spec.shape}")
            args.append(_numpy_2d(tensor, tensor.shape[0], spec.size))
        outputs: dict[str, tuple[np.ndarray, int]] = {}
        for spec in src.outputs:
            rows = num_edges if spec.space == "edge" else num_rows
            array = buffers.empty((rows, spec.size), _NP_DTYPES[spec.dtype])
            outputs[spec.name] = (array, rows)
            args.append(array)
        return args, outputs

    def run(self, indptr, indices, eids, num_rows: int, num_edges: int,
            inputs: Mapping[str, Any], params: Sequence[torch.Tensor] = (),
            schedule: NumbaSchedule | None = None, edge_ends: tuple | None = None) -> dict[str, torch.Tensor]:
        """Run over an in-CSR (``indptr[num_rows+1]``, ``indices``: source node of each entry,
        ``eids``: its edge id). ``inputs`` maps ``name``, ``"space:name"`` or ``{space: {name:
        tensor}}`` to the kernel's feature inputs; ``params`` are the traced weights.

        Returns ``{output name: tensor}`` with ``(num_rows or num_edges, *feature shape)`` tensors,
        including ``"<name>@arg"`` (int64 winning edge ids, -1 for empty rows) for max/min.
        ``schedule`` (a :class:`~gdsl.kernels.schedules.NumbaSchedule`, default ``NumbaSchedule()``)
        sets the launch knobs; its source-changing knobs must be those the source was generated
        with. ``edge_ends`` (``(row ids, other ids)`` by edge id) is needed by a source that walks
        the edges in id order.
        """
        schedule = schedule if schedule is not None else NumbaSchedule()
        args, outputs = self.arguments(indptr, indices, eids, num_rows, num_edges, inputs, params, schedule,
                                       edge_ends)
        self._call(self.source.entry, args)
        if schedule.hub:
            tasks = hub_rows.hub_tasks(torch.from_numpy(args[0]), schedule.hub_threshold, schedule.hub_chunk)
            if tasks is not None:
                self._run_partial(args, outputs, tasks)
        result = {}
        for spec in self.source.outputs:
            array, rows = outputs[spec.name]
            result[spec.name] = torch.from_numpy(array).reshape((rows,) + tuple(spec.shape))
        return result

    def _call(self, name: str, args: list[Any]) -> None:
        dispatcher = self.compile(name)
        try:
            import numba.core.errors as numba_errors
        except ImportError:  # pragma: no cover - numba is a hard dependency
            numba_errors = None
        try:
            dispatcher(*args)
        except Exception as exc:
            if numba_errors is not None and isinstance(exc, numba_errors.NumbaError):
                raise GdslError(f"numba failed to compile the generated kernel {self.path} "
                                f"({name}): {exc}") from exc
            raise

    def _run_partial(self, args: list[Any], outputs: dict[str, tuple[np.ndarray, int]],
                     tasks: "hub_rows.HubTasks") -> None:
        """Walk the hub rows' chunks with the partial kernel, then combine them in chunk order."""
        src = self.source
        n_in = len(src.inputs)
        inputs = args[7:7 + n_in]
        itype = args[0].dtype
        partial_args: list[Any] = [args[0], args[1], args[2], tasks.task_row.numpy().astype(itype),
                                   tasks.task_start.numpy().astype(itype), tasks.task_end.numpy().astype(itype),
                                   tasks.num_tasks, args[5]] + list(inputs)
        partials: dict[str, torch.Tensor] = {}
        for spec in src.outputs:
            array, _ = outputs[spec.name]
            if spec.space == "edge":  # every entry is in exactly one chunk: written in place
                partial_args.append(array)
                continue
            part = np.empty((tasks.num_tasks, spec.size), dtype=array.dtype)
            partials[spec.name] = torch.from_numpy(part)
            partial_args.append(part)
        self._call(src.partial_entry, partial_args)
        hub_rows.combine(src.outputs, partials,
                         {name: torch.from_numpy(array) for name, (array, _) in outputs.items()}, tasks)
