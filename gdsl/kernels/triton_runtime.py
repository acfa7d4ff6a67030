"""Running generated Triton kernels.

A :class:`TritonKernel` owns one generated module (:class:`~gdsl.compiler.codegen.triton.TritonSource`).
It writes the source to the on-disk cache (:mod:`gdsl.kernels.cache`) so that Triton (which reads
the source of a jitted function from its file) and tracebacks see a real file, imports it on first
use, and keeps the jitted function in a process-wide dictionary keyed by the kernel key and the
source hash, so equal kernels built twice are imported once. Triton itself compiles on the first
launch for each signature and constexpr set and keeps its own cache.

``run`` takes CUDA tensors, or CPU tensors when Triton runs in interpreter mode
(``TRITON_INTERPRET=1`` set before ``triton`` is imported; that is how the tests run without a GPU).
It allocates the outputs, launches over ``cdiv(num_rows, rows_per_program)`` x feature-tile
programs, and returns ``(rows, *feature shape)`` tensors.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from ..errors import BackendError, GdslError
from . import hub as hub_rows
from .generated import GeneratedKernel
from .schedules import HUB_OFF


def _triton_errors() -> tuple[type, ...]:
    """Exception types Triton raises for a kernel it cannot compile (or interpret)."""
    types: list[type] = []
    try:
        from triton.compiler.errors import CompilationError
        types.append(CompilationError)
    except ImportError:  # pragma: no cover - depends on the Triton version
        pass
    from triton.runtime import errors

    for name in ("InterpreterError", "OutOfResources", "PTXASError"):
        if hasattr(errors, name):
            types.append(getattr(errors, name))
    return tuple(types)


def _is_interpreted(function: Any) -> bool:
    return type(function).__name__ == "InterpretedFunction"


def _index_tensor(value: Any, what: str, device: torch.device | None) -> torch.Tensor:
    tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    tensor = tensor.detach()
    if tensor.dim() != 1 or tensor.dtype not in (torch.int32, torch.int64):
        raise GdslError(f"{what} must be a 1-D int32 or int64 array, got {tensor.dtype} of shape "
                        f"{tuple(tensor.shape)}")
    if device is not None and tensor.device != device:
        tensor = tensor.to(device)
    return tensor.contiguous()


class TritonKernel(GeneratedKernel):
    """A generated Triton kernel, imported lazily and cached in memory and on disk."""

    backend = "triton"
    display = "Triton"

    def __init__(self, source, key: str | None = None, config=None):
        super().__init__(source, key)
        self.config = config  # None: the source's default schedule

    def arguments(self, indptr, indices, eids, num_rows: int, num_edges: int,
                  inputs: Mapping[str, Any], params: Sequence[torch.Tensor], interpreted: bool
                  ) -> tuple[list[Any], dict[str, tuple[torch.Tensor, int]]]:
        """The positional arguments of the kernel and the output buffers by name."""
        src = self.source
        num_rows, num_edges = int(num_rows), int(num_edges)
        tensors: list[tuple[str, torch.Tensor]] = []
        for spec in src.inputs:
            if spec.param_index is not None:
                if spec.param_index >= len(params):
                    raise GdslError(f"Triton kernel {src.entry}: weight #{spec.param_index} missing "
                                    f"(got {len(params)} params)")
                tensor = params[spec.param_index]
            else:
                tensor = self._lookup(inputs, spec.space, spec.name)
            if not isinstance(tensor, torch.Tensor):
                tensor = torch.as_tensor(tensor)
            tensors.append((f"{spec.space}:{spec.name}", tensor))
        devices = {t.device for _, t in tensors}
        devices |= {t.device for t in (indptr, indices, eids) if isinstance(t, torch.Tensor)}
        if len(devices) > 1:  # (numpy CSR arrays are copied to the features' device)
            raise BackendError(f"Triton kernel {src.entry}: inputs are on several devices "
                               f"({', '.join(sorted(map(str, devices)))})")
        device = devices.pop() if devices else torch.device("cpu")
        if device.type == "cpu" and not interpreted:
            raise BackendError("the Triton backend runs on CUDA tensors (CPU tensors only under the "
                               "Triton interpreter, TRITON_INTERPRET=1)")
        indptr_t = _index_tensor(indptr, "indptr", device)
        if indptr_t.shape[0] != num_rows + 1:
            raise GdslError(f"indptr has {indptr_t.shape[0]} entries for {num_rows} rows")
        args: list[Any] = [indptr_t, _index_tensor(indices, "indices", device),
                           _index_tensor(eids, "eids", device), num_rows, num_edges]
        if src.partial_entry is not None:
            args.append(HUB_OFF)  # the threshold: set by run
        for spec, (what, tensor) in zip(src.inputs, tensors):
            if tensor.dtype != spec.dtype:
                raise GdslError(f"Triton kernel {src.entry}: {what} has dtype {tensor.dtype}, the kernel "
                                f"was compiled for {spec.dtype}")
            tensor = tensor.detach()
            if spec.space == "param":
                if tensor.numel() != spec.size:
                    raise GdslError(f"Triton kernel {src.entry}: {what} has shape {tuple(tensor.shape)}, "
                                    f"expected {spec.shape}")
                flat = tensor.contiguous().reshape(spec.size)
            else:
                if tuple(tensor.shape[1:]) != spec.shape:
                    raise GdslError(f"Triton kernel {src.entry}: {what} has feature shape "
                                    f"{tuple(tensor.shape[1:])}, the kernel was compiled for {spec.shape}")
                flat = tensor.contiguous().reshape(tensor.shape[0], spec.size)
            if flat.dtype == torch.bool:
                flat = flat.view(torch.uint8)
            args.append(flat)
        outputs: dict[str, tuple[torch.Tensor, int]] = {}
        for spec in src.outputs:
            rows = num_edges if spec.space == "edge" else num_rows
            dtype = torch.uint8 if spec.dtype == torch.bool else spec.dtype
            buffer = torch.empty((rows, spec.size), dtype=dtype, device=device)
            outputs[spec.name] = (buffer, rows)
            args.append(buffer)
        return args, outputs

    def run(self, indptr, indices, eids, num_rows: int, num_edges: int,
            inputs: Mapping[str, Any], params: Sequence[torch.Tensor] = (), config=None
            ) -> dict[str, torch.Tensor]:
        """Run over a CSR (``indptr[num_rows+1]``; ``indices``: the other endpoint of each entry,
        the source node for an in-CSR, the destination for an out-CSR; ``eids``: its edge id).
        ``inputs`` maps ``name``, ``"space:name"`` or ``{space: {name: tensor}}`` to the kernel's
        feature inputs; ``params`` are the traced weights; ``config`` (a
        :class:`~gdsl.compiler.codegen.triton.TritonConfig`) overrides the kernel's schedule.

        Returns ``{output name: tensor}`` with ``(num_rows or num_edges, *feature shape)`` tensors,
        including ``"<name>@arg"`` (int64 winning edge ids, -1 for empty rows) for max/min.
        """
        function = self.compile()
        interpreted = _is_interpreted(function)
        args, outputs = self.arguments(indptr, indices, eids, num_rows, num_edges, inputs, params,
                                       interpreted)
        config = config if config is not None else self.config
        hub_capable = self.source.partial_entry is not None
        hub = config is not None and config.hub
        if hub and not hub_capable:
            raise GdslError(f"Triton kernel {self.source.entry}: a hub TritonConfig needs a hub-capable "
                            f"source (generate_triton(kernel, config) with hub_threshold set)")
        tasks = None
        if hub:
            args[5] = int(config.hub_threshold)
            tasks = hub_rows.hub_tasks(args[0], config.hub_threshold, config.hub_chunk)
        schedule = self.source.schedule(config, num_rows, num_edges)
        if int(num_rows) > 0:
            self._launch(function, self.source.entry, schedule, num_rows, args)
        if tasks is not None:
            self._run_partial(args, outputs, tasks, schedule)
        result = {}
        for spec in self.source.outputs:
            buffer, rows = outputs[spec.name]
            if spec.dtype == torch.bool:
                buffer = buffer.view(torch.bool)
            result[spec.name] = buffer.reshape((rows,) + tuple(spec.shape))
        return result

    def _launch(self, function, name: str, schedule, num_rows: int, args: list[Any]) -> None:
        launch: dict[str, Any] = dict(schedule.constexprs)
        launch["num_warps"] = schedule.num_warps
        if schedule.num_stages is not None:
            launch["num_stages"] = schedule.num_stages
        errors = _triton_errors()
        try:
            function[schedule.grid(num_rows)](*args, **launch)
        except errors as exc:
            hint = ""
            if type(exc).__name__ == "OutOfResources":
                hint = " (try a smaller TritonConfig: block_e, block_f, block_k or max_tile)"
            raise GdslError(f"Triton failed to compile the generated kernel {self.path} "
                            f"({name}): {type(exc).__name__}: {exc}{hint}") from exc

    def _run_partial(self, args: list[Any], outputs: dict[str, tuple[torch.Tensor, int]],
                     tasks: "hub_rows.HubTasks", schedule) -> None:
        """Walk the hub rows' chunks with the partial kernel, then combine them in chunk order."""
        src = self.source
        n_in = len(src.inputs)
        inputs = args[6:6 + n_in]
        itype = args[0].dtype
        partial_args: list[Any] = [args[0], args[1], args[2], tasks.task_row.to(itype),
                                   tasks.task_start.to(itype), tasks.task_end.to(itype),
                                   tasks.num_tasks, args[4]] + list(inputs)
        partials: dict[str, torch.Tensor] = {}
        for spec in src.outputs:
            buffer, _ = outputs[spec.name]
            if spec.space == "edge":  # every entry is in exactly one chunk: written in place
                partial_args.append(buffer)
                continue
            part = torch.empty((tasks.num_tasks, spec.size), dtype=buffer.dtype, device=buffer.device)
            partials[spec.name] = part
            partial_args.append(part)
        self._launch(self.compile(src.partial_entry), src.partial_entry, schedule, tasks.num_tasks,
                     partial_args)
        boolean = {spec.name for spec in src.outputs if spec.dtype == torch.bool}
        views = {name: (buffer.view(torch.bool) if name in boolean else buffer)
                 for name, (buffer, _) in outputs.items()}
        parts = {name: (part.view(torch.bool) if name in boolean else part) for name, part in partials.items()}
        hub_rows.combine(src.outputs, parts, views, tasks)
