"""The autotuner: time a kernel's candidate schedules on the user's graph, keep the fastest.

``gdsl.autotune(g, target, ...)`` runs ``target`` once, forward and backward, with every compiled
kernel launch tuned (:func:`tune_launch`); ``autotune=True`` on ``@gdsl.message`` / ``@gdsl.reduce``
/ ``@gdsl.apply`` tunes a step's kernels the first time they run on a graph of a new signature.

Tuning one kernel on one graph (signature :mod:`gdsl.kernels.signature`):

1. the candidates (:func:`gdsl.heuristics.candidates`, or the caller's) are each compiled and run
   once (compilation included; ``warmup - 1`` more runs follow);
2. every candidate's outputs are compared with the default schedule's (``NumbaSchedule()`` /
   ``TritonConfig()``); a candidate that fails to compile or run, or disagrees, is skipped with a
   log line (logger ``gdsl.autotune``) and cannot win;
3. the correct candidates are timed in ``repeats`` interleaved rounds (each round runs every
   candidate once, in a rotating order, so that a change of machine load falls on all of them; one
   measurement repeats a fast kernel until it lasts ``MIN_MEASURE_MS``; CUDA is synchronised around
   it); a candidate's time is its median over the rounds; one whose best time is over
   ``PRUNE_FACTOR`` x the fastest is timed no more (it cannot win), which keeps tuning short;
4. the fastest correct candidate is stored on disk (:mod:`gdsl.kernels.tuning_store`, keyed by
   kernel hash, graph signature, device name and gdsl / triton / numba versions) and remembered in
   memory (:mod:`gdsl.scheduling`), so later launches, and later processes, use it without timing.

A progress bar (tqdm) shows the candidates of each kernel when tqdm is installed.
"""
from __future__ import annotations

import logging
import math
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from . import heuristics, scheduling
from .compiled import _TUNING, compiled_kernel
from .compiler.fusion import KernelPlan
from .kernels import tuning_store
from .kernels.schedules import default_schedule
from .kernels.signature import GraphSignature
from .relation import Relation

logger = logging.getLogger("gdsl.autotune")

# Process-wide counters (tests read them: a process that found a stored entry times nothing).
STATS = {"tuned_kernels": 0, "timed_candidates": 0, "cached_kernels": 0}


# ------------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------------
@dataclass
class Candidate:
    """One schedule tried on one kernel."""

    schedule: Any
    label: str                    # "default", "heuristic" or the knobs that differ from the default
    status: str = "pending"       # ok | wrong result | failed
    median_ms: float | None = None
    runs_ms: list[float] = field(default_factory=list)
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "schedule": self.schedule.to_dict(), "status": self.status,
                "median_ms": self.median_ms, "runs_ms": self.runs_ms, "detail": self.detail}


@dataclass
class KernelTuning:
    """The tuning of one kernel on one graph signature (or the stored result it reused)."""

    direction: str                # forward | backward
    kernel: KernelPlan
    backend: str
    signature: GraphSignature
    source: str                   # "tuned" (timed now) | "cached" (a stored result was used)
    schedule: Any                 # the winner
    candidates: list[Candidate] = field(default_factory=list)
    path: str | None = None       # the stored entry
    seconds: float = 0.0          # tuning time (compilation included)

    @property
    def winner(self) -> Candidate | None:
        ok = [c for c in self.candidates if c.status == "ok"]
        return min(ok, key=lambda c: c.median_ms) if ok else None

    def table(self) -> str:
        head = (f"{self.direction} kernel on {self.backend}: {self.kernel.describe()}\n"
                f"  graph: {self.signature.describe()}")
        if self.source == "cached":
            return head + f"\n  stored result reused ({self.path}): {self.schedule.describe()}"
        rows = [head, f"  tuned in {self.seconds:.2f} s; stored in {self.path or '(not stored)'}"]
        width = max([len(c.label) for c in self.candidates] + [9])
        rows.append(f"    {'candidate':<{width}}  {'median ms':>10}  status")
        best = self.winner
        default = next((c for c in self.candidates if c.label == "default"), None)
        for c in self.candidates:
            mark = "*" if c is best else " "
            ms = f"{c.median_ms:10.3f}" if c.median_ms is not None else f"{'-':>10}"
            extra = ""
            if c.status == "ok" and default is not None and default.median_ms and c.median_ms:
                extra = f"  ({default.median_ms / c.median_ms:.2f}x default)"
            detail = f" ({c.detail})" if c.detail and c.status == "ok" else f": {c.detail}" if c.detail else ""
            rows.append(f"  {mark} {c.label:<{width}}  {ms}  {c.status}{detail}{extra}")
        if best is not None:
            rows.append(f"  winner: {best.label}")
        return "\n".join(rows)


class AutotuneResult:
    """What ``gdsl.autotune`` did: one :class:`KernelTuning` per distinct kernel launched."""

    def __init__(self, kernels: list[KernelTuning], seconds: float, backend: str | None, note: str = ""):
        self.kernels = kernels
        self.seconds = seconds
        self.backend = backend
        self.note = note

    @property
    def tuned(self) -> list[KernelTuning]:
        return [k for k in self.kernels if k.source == "tuned"]

    @property
    def cached(self) -> list[KernelTuning]:
        return [k for k in self.kernels if k.source == "cached"]

    def schedules(self) -> list[Any]:
        return [k.schedule for k in self.kernels]

    def __str__(self) -> str:
        lines = [f"gdsl.autotune: {len(self.kernels)} kernel(s) on {self.backend}: {len(self.tuned)} tuned, "
                 f"{len(self.cached)} reused from the cache; {self.seconds:.2f} s in all"]
        if self.note:
            lines.append(self.note)
        for k in self.kernels:
            lines += ["", k.table()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<gdsl.AutotuneResult {len(self.kernels)} kernel(s), {len(self.tuned)} tuned>"


# ------------------------------------------------------------------------------------------------
# A tuning session (gdsl.autotune) and the options of one
# ------------------------------------------------------------------------------------------------
@dataclass
class Options:
    candidates: Sequence[Any] | Callable | None = None   # schedules, or fn(backend, kernel, sig)
    repeats: int = 5
    warmup: int = 1
    force: bool = False       # tune even where a stored result exists
    progress: bool = True
    store: bool = True        # write the winner to disk


class Session:
    def __init__(self, options: Options):
        self.options = options
        self.results: list[KernelTuning] = []
        self.seen: set[tuple] = set()


@contextmanager
def session(options: Options) -> Iterator[Session]:
    current = Session(options)
    _TUNING.append(current)
    try:
        yield current
    finally:
        _TUNING[:] = [s for s in _TUNING if s is not current]


# ------------------------------------------------------------------------------------------------
# Tuning one launch
# ------------------------------------------------------------------------------------------------
def tune_launch(kernel: KernelPlan, backend: str, rel: Relation, inputs: Mapping[str, torch.Tensor],
                params: list[torch.Tensor], choice: scheduling.Choice, direction: str,
                current: Session | None) -> dict[str, torch.Tensor]:
    """Launch ``kernel`` on ``rel``, tuning it first unless it is tuned for this signature (or was
    tuned in this session)."""
    options = current.options if current is not None else Options()
    sig = scheduling.signature(rel, scheduling.kernel_dtype(kernel))
    ident = (scheduling.kernel_key(kernel), backend, sig.key)
    if current is not None and ident in current.seen:
        return compiled_kernel(kernel, backend, choice.schedule).run(rel, inputs, params, choice.schedule)
    if choice.reason == "autotuned" and not options.force:
        STATS["cached_kernels"] += 1
        if current is not None:
            current.seen.add(ident)
            current.results.append(KernelTuning(direction, kernel, backend, sig, "cached", choice.schedule,
                                                path=choice.path))
        return compiled_kernel(kernel, backend, choice.schedule).run(rel, inputs, params, choice.schedule)
    tuning, outputs = tune_kernel(kernel, backend, rel, inputs, params, sig, direction, options)
    if current is not None:
        current.seen.add(ident)
        current.results.append(tuning)
    return outputs


def _labels(schedules: Sequence[Any], heuristic: Any) -> list[str]:
    labels = []
    for s in schedules:
        label = "default" if s == type(s)() else s.describe()
        if s == heuristic and label != "default":
            label = f"heuristic: {label}"
        labels.append(label)
    return labels


def tune_kernel(kernel: KernelPlan, backend: str, rel: Relation, inputs: Mapping[str, torch.Tensor],
                params: list[torch.Tensor], sig: GraphSignature, direction: str = "forward",
                options: Options | None = None) -> tuple[KernelTuning, dict[str, torch.Tensor]]:
    """Time the candidates of ``kernel`` on ``rel`` with these inputs; store and remember the
    fastest correct one. Returns the tuning and the winner's outputs."""
    options = options or Options()
    started = time.perf_counter()
    heuristic_schedule, _ = heuristics.heuristic(backend, kernel, sig)
    if options.candidates is None:
        schedules = heuristics.candidates(backend, kernel, sig)
    elif callable(options.candidates):
        schedules = list(options.candidates(backend, kernel, sig))
    else:
        schedules = [s for s in options.candidates if getattr(s, "backend", None) == backend]
    default = default_schedule(backend)
    schedules = [default] + [s for s in schedules if s != default]
    candidates = [Candidate(s, label) for s, label in zip(schedules, _labels(schedules, heuristic_schedule))]
    logger.info("gdsl.autotune: tuning the %s kernel (%s) on %s: %d candidates", direction,
                kernel.describe(), sig.describe(), len(candidates))
    sync = torch.cuda.synchronize if rel.device.type == "cuda" else (lambda: None)
    reference: dict[str, torch.Tensor] | None = None
    runners: dict[int, Callable] = {}
    bar = _progress(len(candidates) * (1 + max(1, options.repeats)), f"gdsl.autotune {direction} {kernel.pattern}",
                    options.progress)
    try:
        # 1. compile and run each candidate once (plus warm-up runs); check its result
        for n, cand in enumerate(candidates):
            bar.update(1)
            try:
                runner = compiled_kernel(kernel, backend, cand.schedule)

                def run(runner=runner, schedule=cand.schedule):
                    return runner.run(rel, inputs, params, schedule)

                outputs = run()  # compilation, and the result to check
                for _ in range(max(0, options.warmup - 1)):
                    run()
            except Exception as exc:  # noqa: BLE001 - a candidate that cannot run is skipped
                if cand.label == "default":
                    raise
                cand.status, cand.detail = "failed", f"{type(exc).__name__}: {_first_line(exc)}"
                logger.warning("gdsl.autotune: skipped candidate %s: failed to compile or run (%s)",
                               cand.label, cand.detail)
                continue
            if reference is None:
                reference = {k: v.clone() for k, v in outputs.items()}
            else:
                problem = _compare(outputs, reference)
                if problem:
                    cand.status, cand.detail = "wrong result", problem
                    logger.warning("gdsl.autotune: skipped candidate %s: its result differs from the "
                                   "default schedule's (%s)", cand.label, problem)
                    continue
            cand.status = "ok"
            runners[n] = run
        # 2. time them in rounds, every candidate once per round (in a rotating order), so that
        # a load change on the machine falls on all of them rather than on one
        ok = [n for n, c in enumerate(candidates) if c.status == "ok"]
        timed = list(ok)
        inner = _inner_repeats(runners[0], sync)
        for r in range(max(1, options.repeats)):
            order = timed[r % len(timed):] + timed[:r % len(timed)]
            for n in order:
                sync()
                t0 = time.perf_counter()
                for _ in range(inner):
                    runners[n]()
                sync()
                candidates[n].runs_ms.append(round((time.perf_counter() - t0) * 1000.0 / inner, 4))
            bar.update(len(candidates))
            # a candidate far slower than the fastest (in this round and overall) cannot win: stop
            # timing it (the default always stays, as the baseline of the table)
            best = min(min(candidates[n].runs_ms) for n in timed)
            slow = [n for n in timed if n != 0 and min(candidates[n].runs_ms) > PRUNE_FACTOR * best]
            for n in slow:
                candidates[n].detail = f"stopped after {len(candidates[n].runs_ms)} round(s): over " \
                                       f"{PRUNE_FACTOR:g}x the fastest"
            timed = [n for n in timed if n not in slow]
        for n in ok:
            candidates[n].median_ms = statistics.median(candidates[n].runs_ms)
            STATS["timed_candidates"] += 1
    finally:
        bar.close()
    tuning = KernelTuning(direction, kernel, backend, sig, "tuned", None, candidates)
    winner = tuning.winner
    tuning.schedule = winner.schedule
    best_outputs = runners[candidates.index(winner)]()
    tuning.seconds = time.perf_counter() - started
    STATS["tuned_kernels"] += 1
    path = None
    if options.store:
        key = scheduling.store_key(kernel, backend, sig, rel.device)
        extra = {"candidates": [c.to_dict() for c in candidates], "tuning_seconds": round(tuning.seconds, 3),
                 "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "signature": sig.describe(),
                 "kernel": kernel.describe(), "winner": winner.label}
        try:
            path = tuning_store.save(backend, key, winner.schedule, extra)
        except OSError as exc:
            logger.warning("gdsl.autotune: could not store the tuning result: %s", exc)
    tuning.path = path
    default_ms = candidates[0].median_ms
    logger.info("gdsl.autotune: %s kernel: %s wins at %.3f ms (default %.3f ms), %d/%d candidates ok, %.2f s%s",
                direction, winner.label, winner.median_ms, default_ms or float("nan"),
                sum(c.status == "ok" for c in candidates), len(candidates), tuning.seconds,
                f"; stored in {path}" if path else "")
    why = (f"tuned on this graph's signature: {winner.label} at {winner.median_ms:.3f} ms "
           f"(default {default_ms:.3f} ms), best of {len(candidates)} candidates")
    scheduling.remember(kernel, backend, rel, scheduling.Choice(winner.schedule, "autotuned", why, path))
    return tuning, best_outputs


MIN_MEASURE_MS = 2.0  # a timed measurement runs a fast kernel several times, to at least this long
PRUNE_FACTOR = 1.5    # a candidate whose best run is slower than this x the fastest is timed no more


def _inner_repeats(run: Callable, sync: Callable) -> int:
    """How many back-to-back runs make one measurement of at least MIN_MEASURE_MS."""
    sync()
    t0 = time.perf_counter()
    run()
    sync()
    once = (time.perf_counter() - t0) * 1000.0
    return max(1, min(100, math.ceil(MIN_MEASURE_MS / max(once, 1e-3))))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


def _compare(outputs: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]) -> str:
    """'' when ``outputs`` match ``reference`` (floats within tolerance, integers exactly)."""
    if set(outputs) != set(reference):
        return f"outputs {sorted(outputs)} instead of {sorted(reference)}"
    for name, ref in reference.items():
        out = outputs[name]
        if out.shape != ref.shape or out.dtype != ref.dtype:
            return f"{name}: {tuple(out.shape)} {out.dtype} instead of {tuple(ref.shape)} {ref.dtype}"
        if not ref.is_floating_point():
            if not torch.equal(out, ref):
                return f"{name}: {(out != ref).sum().item()} entries differ"
            continue
        tol = {torch.float64: 1e-9, torch.float32: 1e-4}.get(ref.dtype, 2e-2)
        finite = ref[torch.isfinite(ref)]
        scale = max(1.0, float(finite.abs().max())) if finite.numel() else 1.0
        if not torch.allclose(out, ref, rtol=tol, atol=tol * scale, equal_nan=True):
            diff = (out.double() - ref.double()).abs()
            diff = diff[torch.isfinite(diff)]
            worst = float(diff.max()) if diff.numel() else float("nan")
            return f"{name}: max abs difference {worst:.3g} (tolerance {tol:g} x {scale:.3g})"
    return ""


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=desc, leave=False)


# ------------------------------------------------------------------------------------------------
# gdsl.autotune
# ------------------------------------------------------------------------------------------------
def autotune(g, target: Any, /, *inputs: Any, etype=None, ndata: Mapping[str, torch.Tensor] | None = None,
             edata: Mapping[str, torch.Tensor] | None = None, srcdata: Mapping[str, torch.Tensor] | None = None,
             dstdata: Mapping[str, torch.Tensor] | None = None, candidates: Sequence[Any] | Callable | None = None,
             repeats: int = 5, warmup: int = 1, force: bool = False, progress: bool = True,
             store: bool = True, **example_features: torch.Tensor) -> AutotuneResult:
    """Tune the kernels ``target`` launches on ``g`` and store the fastest schedules.

    ``target`` is a ``(message, reduce)`` pair (tuned as ``g.update_all``), an edge function (as
    ``g.apply_edges``), or a model: an ``nn.Module`` or a function called as ``target(g, *inputs)``.
    Example features are placed as ``gdsl.inspect`` places them (keywords go to every frame whose
    row count matches; ``ndata=``, ``edata=``, ``srcdata=``, ``dstdata=`` explicitly). The target
    runs once, forward and a backward of the sum of its outputs (for a step, gradients flow to
    every floating feature), and every kernel launched is tuned on this graph:

    - ``candidates``: schedules to time instead of :func:`gdsl.heuristics.candidates` (each for
      the back end of its type), or ``fn(backend, kernel, signature) -> schedules``; the default
      schedule is always timed, as the reference every candidate's outputs must match;
    - ``repeats`` / ``warmup``: timed runs (the median counts) and runs before them;
    - ``force``: tune again even where a stored result exists (otherwise it is reused);
    - ``progress``: a tqdm progress bar per kernel when tqdm is installed;
    - ``store``: write the winners to the cache directory (``gdsl.cache_dir()/autotune``).

    Returns an :class:`AutotuneResult`; ``print`` it for the table of candidates and times.
    Later runs on graphs of the same signature (in this process or another) use the winners.
    """
    from .inspection import _is_step_function, _place, run_model

    options = Options(candidates, repeats, warmup, force, progress, store)
    started = time.perf_counter()
    backend = None
    with session(options) as current:
        if isinstance(target, tuple) and len(target) == 2 and all(_is_step_function(f) for f in target):
            backend = _run_step(g, target, etype, ndata, edata, srcdata, dstdata, example_features, _place)
        elif _is_step_function(target) and not isinstance(target, torch.nn.Module) and not inputs:
            backend = _run_step(g, (target,), etype, ndata, edata, srcdata, dstdata, example_features, _place)
        elif callable(target):
            run_model(g, target, inputs, etype, ndata, edata, srcdata, dstdata, example_features)
        else:
            raise TypeError(f"gdsl.autotune: expected a (message, reduce) pair, an edge function or a model, "
                            f"got {type(target).__name__}")
    backends = sorted({k.backend for k in current.results})
    backend = ", ".join(backends) if backends else backend
    note = "" if current.results else ("no compiled kernel was launched (is the back end 'reference', or does "
                                       "the target not pass messages?)")
    return AutotuneResult(current.results, time.perf_counter() - started, backend, note)


def _run_step(g, funcs: tuple, etype, ndata, edata, srcdata, dstdata, example, place) -> str:
    """Run one step (update_all or apply_edges) with gradients flowing to every floating feature
    of the relation, then its backward."""
    from .backend import current_backend

    key = g._etype(etype)
    with g.local_scope(), torch.enable_grad():
        place(g, key, ndata, edata, srcdata, dstdata, example)
        leaves = []
        frames = (g._src_frames[key[0]], g._dst_frames[key[2]], g._edge_frames[key])
        for frame in {id(f): f for f in frames}.values():  # (one frame when src and dst are one set)
            for name in list(frame.keys()):
                value = frame[name]
                if isinstance(value, torch.Tensor) and value.is_floating_point():
                    leaf = value.detach().requires_grad_()
                    frame[name] = leaf
                    leaves.append(leaf)
        src_before = set(g._dst_frames[key[2]].keys())
        edge_before = set(g._edge_frames[key].keys())
        if len(funcs) == 2:
            g.update_all(funcs[0], funcs[1], etype=etype)
            frame, before = g._dst_frames[key[2]], src_before
        else:
            g.apply_edges(funcs[0], etype=etype)
            frame, before = g._edge_frames[key], edge_before
        outs = [frame[n] for n in frame.keys() if n not in before]
        outs = [t for t in outs if isinstance(t, torch.Tensor) and t.requires_grad and t.is_floating_point()]
        if outs and leaves:
            loss = sum(t.sum() for t in outs)
            torch.autograd.grad(loss, leaves, allow_unused=True)
    return current_backend(g.device)
