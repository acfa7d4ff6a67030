"""What examples/gcn.py, gat.py and sage.py share: arguments, data, seeds, the training loop,
model selection, progress and the final report.

Each script defines its model and calls :func:`main`. The scripts run as files
(``python examples/gcn.py``), so they put this directory on ``sys.path`` and ``import common``.

Model selection: every epoch the model is evaluated (dropout off) and the reported test accuracy is
the one at the epoch with the best validation accuracy (ties: the lower validation loss). That is
what PyG's and DGL's Planetoid examples effectively report. ``--patience N`` stops a run after N
epochs in which neither the validation accuracy nor the validation loss improved (the GAT paper's
rule, with N = 100 there); off by default: every run trains ``--epochs`` epochs.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable


def _triton_interpreter_if_needed(argv: list[str]) -> None:
    """``--backend triton`` without a GPU runs Triton's interpreter on CPU tensors, which must be
    switched on before ``triton`` is imported (that is, before the first kernel is built)."""
    wants_triton = any(a == "--backend=triton" for a in argv) or any(
        a == "--backend" and b == "triton" for a, b in zip(argv, argv[1:]))
    if not wants_triton:
        return
    import torch

    on_cpu = any(a.startswith("--device=cpu") for a in argv) or any(
        a == "--device" and b.startswith("cpu") for a, b in zip(argv, argv[1:]))
    if on_cpu or not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


_triton_interpreter_if_needed(sys.argv)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import gdsl  # noqa: E402

try:  # the progress bar is optional: without tqdm, plain lines every --log-every epochs
    from tqdm.auto import tqdm
except ImportError:
    tqdm = None

SELECTION_HELP = (
    "Reported accuracy: the test accuracy at the epoch with the best validation accuracy (ties: lower "
    "validation loss), evaluated every epoch with dropout off; this is what PyG's and DGL's Planetoid "
    "examples effectively report. --patience N stops a run once neither validation accuracy nor "
    "validation loss improved for N epochs (the GAT paper's rule, N=100); off by default. "
    "--seeds K trains K runs (seeds --seed .. --seed+K-1) and reports mean +- sample std.")


# ------------------------------------------------------------------------------------------------
# Arguments
# ------------------------------------------------------------------------------------------------
def parser(description: str, *, hidden: int, dropout: float, lr: float, weight_decay: float,
           epochs: int = 200) -> argparse.ArgumentParser:
    """The options every example has, with the script's own defaults; scripts add their own."""
    p = argparse.ArgumentParser(description=description, epilog=SELECTION_HELP)
    p.add_argument("--dataset", default="cora", choices=list(gdsl.data.planetoid.AVAILABLE),
                   help="Planetoid dataset, public split (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=epochs, help="epochs per run (default: %(default)s)")
    p.add_argument("--patience", type=int, default=0,
                   help="early stopping: stop after N epochs in which neither validation accuracy "
                        "nor validation loss improved (default: 0, off)")
    p.add_argument("--seeds", type=int, default=1,
                   help="number of runs, one seed each; mean +- std reported (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default: %(default)s)")
    p.add_argument("--hidden", type=int, default=hidden,
                   help="hidden features (per head for GAT) (default: %(default)s)")
    p.add_argument("--dropout", type=float, default=dropout, help="feature dropout (default: %(default)s)")
    p.add_argument("--lr", type=float, default=lr, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=weight_decay,
                   help="Adam weight decay (default: %(default)s)")
    p.add_argument("--backend", default=None, choices=["numba", "triton", "reference"],
                   help="message-passing back end (default: automatic, numba on CPU, Triton on CUDA; "
                        "triton on CPU runs Triton's interpreter: slow)")
    p.add_argument("--device", default=None,
                   help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--log-every", type=int, default=20,
                   help="without a progress bar: a line every N epochs, 0: only the results "
                        "(default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (plain lines)")
    return p


# ------------------------------------------------------------------------------------------------
# Data, seeds, accuracy
# ------------------------------------------------------------------------------------------------
@dataclass
class Data:
    graph: gdsl.Graph
    feat: torch.Tensor
    label: torch.Tensor
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    num_classes: int

    @property
    def in_feats(self) -> int:
        return self.feat.shape[1]


def load(name: str, device: torch.device, self_loops: bool) -> Data:
    """The dataset on ``device``; ``self_loops``: exactly one self-loop per node (DGL's examples
    remove CiteSeer's existing ones, then add one to every node)."""
    g = gdsl.data.load_planetoid(name)
    if self_loops:
        g = gdsl.add_self_loop(gdsl.remove_self_loop(g))
    g = g.to(device)
    nd = g.ndata
    return Data(g, nd["feat"], nd["label"], nd["train_mask"], nd["val_mask"], nd["test_mask"],
                int(nd["label"].max()) + 1)


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and gdsl's attention dropout (drawn from torch)
    np.random.seed(seed)


def accuracy(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> float:
    return (logits[mask].argmax(1) == labels[mask]).float().mean().item()


# ------------------------------------------------------------------------------------------------
# One run
# ------------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    seed: int
    test_acc: float         # at the selected epoch
    val_acc: float          # at the selected epoch
    best_epoch: int
    epochs_run: int
    step_times: list[float]  # seconds of each training step (forward, backward, optimizer)
    wall: float             # seconds for the whole run, evaluation included


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_run(model: torch.nn.Module, data: Data, args: argparse.Namespace, seed: int,
              device: torch.device, label: str = "") -> RunResult:
    """Train ``model`` for ``args.epochs`` epochs (or until ``args.patience``), evaluating every
    epoch; return the test accuracy of the epoch with the best validation accuracy (ties: lower
    validation loss)."""
    g, x, y = data.graph, data.feat, data.label
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    best_key, best = None, (0.0, 0.0, 0)              # key: (val acc, -val loss); (test, val, epoch)
    best_val_acc, best_val_loss, stale = -1.0, float("inf"), 0
    step_times: list[float] = []
    use_bar = tqdm is not None and not args.no_progress
    epochs = range(1, args.epochs + 1)
    bar = tqdm(epochs, desc=label or "train", leave=False, dynamic_ncols=True) if use_bar else None
    start = time.perf_counter()
    epoch = 0
    for epoch in (bar if bar is not None else epochs):
        _synchronize(device)
        t0 = time.perf_counter()
        model.train()
        logits = model(g, x)
        loss = F.cross_entropy(logits[data.train], y[data.train])
        opt.zero_grad()
        loss.backward()
        opt.step()
        _synchronize(device)
        step_times.append(time.perf_counter() - t0)

        model.eval()
        with torch.no_grad():
            logits = model(g, x)
            val_loss = F.cross_entropy(logits[data.val], y[data.val]).item()
        train_acc, val_acc = accuracy(logits, y, data.train), accuracy(logits, y, data.val)
        test_acc = accuracy(logits, y, data.test)
        key = (val_acc, -val_loss)
        if best_key is None or key > best_key:
            best_key, best = key, (test_acc, val_acc, epoch)

        if bar is not None:
            bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{val_acc:.3f}", test_at_best=f"{best[0]:.3f}",
                            refresh=False)
        elif args.log_every and (epoch % args.log_every == 0 or epoch == 1):
            print(f"{label}epoch {epoch:4d}  loss {loss.item():.4f}  train {train_acc:.3f}  "
                  f"val {val_acc:.3f} (loss {val_loss:.4f})  test at best val {best[0]:.3f}", flush=True)

        if args.patience:
            improved = False
            if val_acc > best_val_acc:
                best_val_acc, improved = val_acc, True
            if val_loss < best_val_loss:
                best_val_loss, improved = val_loss, True
            stale = 0 if improved else stale + 1
            if stale >= args.patience:
                break
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - start
    return RunResult(seed, best[0], best[1], best[2], epoch, step_times, wall)


# ------------------------------------------------------------------------------------------------
# The whole script
# ------------------------------------------------------------------------------------------------
def _short(text: str) -> str:
    """A module's extra_repr with functions by name (``relu``, not ``<function relu at 0x...>``)."""
    return re.sub(r"<function (\w+) at \w+>", r"\1", text)


def pick_device(requested: str | None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def main(p: argparse.ArgumentParser, build_model: Callable[[argparse.Namespace, Data], torch.nn.Module],
         *, name: str, self_loops: bool, argv: list[str] | None = None) -> list[RunResult]:
    """Parse ``argv``, load the data, train ``args.seeds`` models built by ``build_model`` and print
    each run's and the overall test accuracy. Returns the runs."""
    args = p.parse_args(argv)
    if args.seeds < 1 or args.epochs < 1 or args.patience < 0:
        p.error("--seeds and --epochs must be >= 1, --patience >= 0")
    device = pick_device(args.device)
    data = load(args.dataset, device, self_loops)
    g = data.graph
    backend = args.backend or gdsl.current_backend(device)
    print(f"{name} on {args.dataset}: {g.num_nodes()} nodes, {g.num_edges()} edges"
          f"{' (one self-loop per node)' if self_loops else ''}, {data.in_feats} features, "
          f"{data.num_classes} classes | device {device}, backend {backend}", flush=True)

    runs: list[RunResult] = []
    with gdsl.use_backend(backend):
        for i in range(args.seeds):
            seed = args.seed + i
            set_seed(seed)
            model = build_model(args, data).to(device)
            if i == 0:
                params = sum(t.numel() for t in model.parameters())
                layers = [f"{type(m).__name__}({_short(m.extra_repr())})" for n, m in model.named_children()
                          if n.startswith("layer")]
                print(f"model: {type(model).__name__}, {params:,} parameters: {', '.join(layers)}",
                      flush=True)
            label = f"[seed {seed}] " if args.seeds > 1 else ""
            run = train_run(model, data, args, seed, device, label)
            runs.append(run)
            stopped = f", stopped early at epoch {run.epochs_run}" if run.epochs_run < args.epochs else ""
            print(f"{label}test accuracy {100 * run.test_acc:.2f} % (best val {100 * run.val_acc:.2f} % "
                  f"at epoch {run.best_epoch}{stopped}) | {1000 * statistics.median(run.step_times):.1f} "
                  f"ms/epoch training step, {run.wall:.1f} s with evaluation", flush=True)

    if len(runs) > 1:
        accs = [100 * r.test_acc for r in runs]
        steps = [t for r in runs for t in r.step_times]
        print(f"test accuracy {statistics.mean(accs):.2f} +- {statistics.stdev(accs):.2f} % "
              f"(mean +- std over {len(runs)} seeds {runs[0].seed}..{runs[-1].seed}; min {min(accs):.2f}, "
              f"max {max(accs):.2f}) | {1000 * statistics.median(steps):.1f} ms/epoch training step "
              f"(median), {statistics.mean(r.epochs_run for r in runs):.0f} epochs per run", flush=True)
    return runs
