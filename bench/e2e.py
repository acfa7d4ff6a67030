"""End-to-end training: 200 epochs of full-batch GCN, GAT and GraphSAGE on Cora and CiteSeer,
gdsl.nn against torch-geometric (and DGL 2.1 when its venv exists): training time and test accuracy.

    python bench/e2e.py                        # 3 models x 2 datasets x every implementation
    python bench/e2e.py --quick                # Cora only, 30 epochs, one seed
    python bench/e2e.py --models gat --datasets cora --impls gdsl,pyg --seeds 3
    python bench/e2e.py --model gcn --dataset cora --impl gdsl
                                               # one row, printed as JSON (what the driver runs)
    python bench/e2e.py --check-data           # gdsl.data.load_planetoid == this script's loader

The same model in every library, trained with the same hyperparameters and seeds
(``torch.manual_seed(seed)`` before the model is built; each library initialises its own weights):

- GCN: two graph convolutions (symmetric normalisation), hidden 16, ReLU, dropout 0.5 on the input
  and hidden features, Adam lr 0.01, weight decay 5e-4. gdsl/DGL ``GraphConv``; PyG
  ``GCNConv(add_self_loops=False)`` (the graph already has them; symmetric graph, so PyG's
  normalisation equals ``norm='both'``).
- GAT: 8 heads x 8 hidden, concatenated, ELU; one output head; feature and attention dropout 0.6
  in both layers; LeakyReLU 0.2; Adam lr 0.005, weight decay 5e-4. gdsl/DGL ``GATConv(feat_drop,
  attn_drop)``; PyG ``GATConv(dropout=0.6, add_self_loops=False)`` with ``F.dropout(0.6)`` on each
  layer's input (PyG's example; the same as DGL's ``feat_drop``).
- SAGE: two ``SAGEConv`` with the mean aggregator, hidden 16, ReLU, dropout 0.5, Adam lr 0.01,
  weight decay 5e-4 (PyG ``SAGEConv(aggr='mean')``: root weight + mean of the neighbours, as DGL's).

Data: the public Planetoid split from gdsl's bundled ``gdsl/data/files/planetoid/<name>.npz``
(gdsl rows: ``gdsl.data.load_planetoid``; PyG and DGL rows read the same file with numpy, so DGL's
venv needs no gdsl), features row-normalised, existing self-loops removed and one self-loop added to
every node (for all three models).

Per epoch: one training step (forward, loss on the training nodes, backward, Adam step), timed; then
an evaluation forward without dropout (not part of the training time). The reported test accuracy
is the one at the epoch with the best validation accuracy (ties: lower validation loss).

Reported per row (one process per (model, dataset, implementation), ``--seeds`` runs in it):
``train_s``: median over seeds of the summed training-step time of all epochs; ``first_train_s``: the
first seed's (includes one-time costs: kernel compilation or cache loading, first-call overheads);
``epoch_ms``: median training-step time over all epochs but the very first; ``wall_s``: median per
seed of the whole run, evaluation included; test accuracy mean +- std over seeds; ``memory_mb``:
peak RSS growth during training (all seeds) over the resident size after the data and the first
model were built (CPU), or ``torch.cuda.max_memory_allocated`` growth (CUDA); ``steady_memory_mb``:
the same after the very first training step (over the level reached then), i.e. without one-time
costs such as loading compiled kernels and their runtime.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench.common import RssSampler, machine, run_row, set_threads, write_json  # noqa: E402

MODELS = ("gcn", "gat", "sage")
DATASETS = ("cora", "citeseer")
IMPLS = ("gdsl", "pyg", "dgl")
DGL_PYTHON = os.environ.get("GDSL_BENCH_DGL_PYTHON", os.path.join(ROOT, ".venv-dgl", "bin", "python"))
PLANETOID_DIR = os.path.join(ROOT, "gdsl", "data", "files", "planetoid")

HPARAMS = {
    "gcn": {"hidden": 16, "dropout": 0.5, "lr": 0.01, "weight_decay": 5e-4},
    "gat": {"hidden": 8, "heads": 8, "out_heads": 1, "dropout": 0.6, "attn_drop": 0.6,
            "negative_slope": 0.2, "lr": 0.005, "weight_decay": 5e-4},
    "sage": {"hidden": 16, "aggregator": "mean", "dropout": 0.5, "lr": 0.01, "weight_decay": 5e-4},
}


# ---------------------------------------------------------------------------------------------
# Data (numpy only: usable from DGL's venv, which has no gdsl)
# ---------------------------------------------------------------------------------------------
def planetoid_numpy(name: str) -> dict:
    """The public split of ``name`` from gdsl's npz, read with numpy: features densified and
    row-normalised (rows summing to 0 stay 0), self-loops removed, then one added per node (last)."""
    with np.load(os.path.join(PLANETOID_DIR, f"{name}.npz"), allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    num_rows, num_cols = (int(n) for n in arrays["feat_shape"])
    indptr = arrays["feat_indptr"].astype(np.int64)
    feat = np.zeros((num_rows, num_cols), dtype=np.float32)
    feat[np.repeat(np.arange(num_rows), np.diff(indptr)), arrays["feat_indices"]] = arrays["feat_data"]
    row_sum = feat.sum(axis=1, keepdims=True)
    np.divide(feat, row_sum, out=feat, where=row_sum != 0)
    src, dst = arrays["src"].astype(np.int64), arrays["dst"].astype(np.int64)
    keep = src != dst
    n = int(arrays["num_nodes"])
    loops = np.arange(n, dtype=np.int64)
    src, dst = np.concatenate([src[keep], loops]), np.concatenate([dst[keep], loops])
    label = torch.from_numpy(arrays["label"].astype(np.int64))
    return {"src": torch.from_numpy(src), "dst": torch.from_numpy(dst), "num_nodes": n,
            "feat": torch.from_numpy(feat), "label": label,
            "train": torch.from_numpy(arrays["train_mask"]), "val": torch.from_numpy(arrays["val_mask"]),
            "test": torch.from_numpy(arrays["test_mask"]), "num_classes": int(label.max()) + 1}


def planetoid_gdsl(name: str) -> dict:
    """The same data through gdsl's own loader and transforms."""
    import gdsl
    g = gdsl.add_self_loop(gdsl.remove_self_loop(gdsl.data.load_planetoid(name)))
    src, dst = g.edges()
    nd = g.ndata
    return {"graph": g, "src": src, "dst": dst, "num_nodes": g.num_nodes(), "feat": nd["feat"],
            "label": nd["label"], "train": nd["train_mask"], "val": nd["val_mask"], "test": nd["test_mask"],
            "num_classes": int(nd["label"].max()) + 1}


def check_data() -> bool:
    """gdsl's loader and the numpy one give the same graph, features, labels and masks."""
    ok = True
    for name in DATASETS:
        a, b = planetoid_numpy(name), planetoid_gdsl(name)
        same = (a["num_nodes"] == b["num_nodes"] and a["num_classes"] == b["num_classes"]
                and all(torch.equal(a[k], b[k].to(a[k].dtype)) for k in ("src", "dst", "label", "train", "val", "test"))
                and torch.allclose(a["feat"], b["feat"]))
        print(f"{name}: {a['num_nodes']} nodes, {a['src'].numel()} edges (one self-loop per node): "
              f"{'same data' if same else 'MISMATCH'}")
        ok &= same
    return ok


# ---------------------------------------------------------------------------------------------
# Models: gdsl and DGL share the code (same module names and signatures); PyG its own
# ---------------------------------------------------------------------------------------------
class DglStyle(nn.Module):
    """GCN / GAT / SAGE from ``lib`` (gdsl.nn or dgl.nn); forward(g, x) -> logits."""

    def __init__(self, lib, model: str, in_feats: int, num_classes: int):
        super().__init__()
        hp = HPARAMS[model]
        self.model = model
        if model == "gcn":
            self.layer1 = lib.GraphConv(in_feats, hp["hidden"], activation=F.relu)
            self.layer2 = lib.GraphConv(hp["hidden"], num_classes)
        elif model == "sage":
            self.layer1 = lib.SAGEConv(in_feats, hp["hidden"], hp["aggregator"], activation=F.relu)
            self.layer2 = lib.SAGEConv(hp["hidden"], num_classes, hp["aggregator"])
        else:
            drop = {"feat_drop": hp["dropout"], "attn_drop": hp["attn_drop"], "negative_slope": hp["negative_slope"]}
            self.layer1 = lib.GATConv(in_feats, hp["hidden"], hp["heads"], activation=F.elu, **drop)
            self.layer2 = lib.GATConv(hp["hidden"] * hp["heads"], num_classes, hp["out_heads"], **drop)
        self.dropout = nn.Dropout(hp["dropout"])

    def forward(self, g, x):
        if self.model == "gat":  # feature dropout inside the layers
            return self.layer2(g, self.layer1(g, x).flatten(1)).mean(1)
        return self.layer2(g, self.dropout(self.layer1(g, self.dropout(x))))


class PygModel(nn.Module):
    """The same three models with torch-geometric's layers; forward(edge_index, x) -> logits."""

    def __init__(self, model: str, in_feats: int, num_classes: int):
        super().__init__()
        from torch_geometric.nn import GATConv, GCNConv, SAGEConv
        hp = HPARAMS[model]
        self.model, self.p = model, hp["dropout"]
        if model == "gcn":
            self.layer1 = GCNConv(in_feats, hp["hidden"], add_self_loops=False)
            self.layer2 = GCNConv(hp["hidden"], num_classes, add_self_loops=False)
        elif model == "sage":
            self.layer1 = SAGEConv(in_feats, hp["hidden"], aggr=hp["aggregator"])
            self.layer2 = SAGEConv(hp["hidden"], num_classes, aggr=hp["aggregator"])
        else:
            common = {"dropout": hp["attn_drop"], "negative_slope": hp["negative_slope"], "add_self_loops": False}
            self.layer1 = GATConv(in_feats, hp["hidden"], heads=hp["heads"], **common)
            self.layer2 = GATConv(hp["hidden"] * hp["heads"], num_classes, heads=hp["out_heads"], concat=False,
                                  **common)

    def forward(self, edge_index, x):
        x = F.dropout(x, self.p, self.training)
        h = self.layer1(x, edge_index)
        h = F.elu(h) if self.model == "gat" else F.relu(h)
        return self.layer2(F.dropout(h, self.p, self.training), edge_index)


def build(impl: str, model: str, dataset: str, device: torch.device):
    """(data dict, graph argument of the model, model constructor)."""
    if impl == "gdsl":
        import gdsl.nn as gnn
        data = planetoid_gdsl(dataset)
        graph = data["graph"].to(device)
        graph.create_formats_()
        make = lambda: DglStyle(gnn, model, data["feat"].shape[1], data["num_classes"])  # noqa: E731
    elif impl == "dgl":
        os.environ.setdefault("DGLBACKEND", "pytorch")
        import dgl
        import dgl.nn as dglnn
        data = planetoid_numpy(dataset)
        graph = dgl.graph((data["src"], data["dst"]), num_nodes=data["num_nodes"]).to(device)
        graph.create_formats_()
        make = lambda: DglStyle(dglnn, model, data["feat"].shape[1], data["num_classes"])  # noqa: E731
    else:
        data = planetoid_numpy(dataset)
        graph = torch.stack([data["src"], data["dst"]]).to(device)
        make = lambda: PygModel(model, data["feat"].shape[1], data["num_classes"])  # noqa: E731
    for key in ("feat", "label", "train", "val", "test"):
        data[key] = data[key].to(device)
    return data, graph, make


# ---------------------------------------------------------------------------------------------
# One row: --seeds training runs of one (model, dataset, implementation)
# ---------------------------------------------------------------------------------------------
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _accuracy(logits, label, mask) -> float:
    return (logits[mask].argmax(1) == label[mask]).float().mean().item()


def train_once(model: nn.Module, graph, data: dict, epochs: int, lr: float, weight_decay: float, device,
               after_first_step=None) -> dict:
    x, y = data["feat"], data["label"]
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    best_key, best = None, (0.0, 0.0, 0)
    steps = []
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        _sync(device)
        t0 = time.perf_counter()
        model.train()
        loss = F.cross_entropy(model(graph, x)[data["train"]], y[data["train"]])
        opt.zero_grad()
        loss.backward()
        opt.step()
        _sync(device)
        steps.append(time.perf_counter() - t0)
        if epoch == 1 and after_first_step is not None:
            after_first_step()
        model.eval()
        with torch.no_grad():
            logits = model(graph, x)
            val_loss = F.cross_entropy(logits[data["val"]], y[data["val"]]).item()
        val_acc = _accuracy(logits, y, data["val"])
        key = (val_acc, -val_loss)
        if best_key is None or key > best_key:
            best_key, best = key, (_accuracy(logits, y, data["test"]), val_acc, epoch)
    return {"steps": steps, "wall": time.perf_counter() - start, "test_acc": best[0], "val_acc": best[1],
            "best_epoch": best[2], "final_loss": loss.item()}


def run_one(args) -> dict:
    set_threads(args.threads)
    device = torch.device(args.device)
    hp = HPARAMS[args.model]
    data, graph, make = build(args.impl, args.model, args.dataset, device)
    torch.manual_seed(args.seed)
    first_model = make().to(device)
    runs = []
    cuda_marks = {}

    def cuda_mark():
        cuda_marks["first_peak"] = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        cuda_marks["level"] = torch.cuda.memory_allocated(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    sampler = RssSampler() if device.type == "cpu" else None
    if sampler is not None:
        sampler.__enter__()
    try:
        for i in range(args.seeds):
            seed = args.seed + i
            torch.manual_seed(seed)
            np.random.seed(seed)
            model = first_model if i == 0 else make().to(device)
            mark = None if i else (sampler.mark if sampler is not None else cuda_mark)
            runs.append(train_once(model, graph, data, args.epochs, hp["lr"], hp["weight_decay"], device, mark))
    finally:
        if sampler is not None:
            sampler.__exit__(None, None, None)
    if sampler is not None:
        memory_mb, steady_mb = sampler.growth_mb, sampler.steady_growth_mb
    else:
        peak = torch.cuda.max_memory_allocated(device)
        memory_mb = (max(peak, cuda_marks.get("first_peak", 0)) - base) / 2**20
        steady_mb = (peak - cuda_marks["level"]) / 2**20 if cuda_marks else None
    train_s = [sum(r["steps"]) for r in runs]
    later_steps = [t for r in runs for t in r["steps"]][1:]
    accs = [100 * r["test_acc"] for r in runs]
    return {"epochs": args.epochs, "seeds": list(range(args.seed, args.seed + args.seeds)),
            "nodes": data["num_nodes"], "edges": int(data["src"].numel()),
            "train_s": round(statistics.median(train_s), 3), "train_s_runs": [round(t, 3) for t in train_s],
            "first_train_s": round(train_s[0], 3), "first_epoch_ms": round(1000 * runs[0]["steps"][0], 1),
            "epoch_ms": round(1000 * statistics.median(later_steps), 2) if later_steps else None,
            "wall_s": round(statistics.median(r["wall"] for r in runs), 3),
            "test_acc": round(statistics.mean(accs), 2),
            "test_acc_std": round(statistics.stdev(accs), 2) if len(accs) > 1 else 0.0,
            "test_acc_runs": [round(a, 2) for a in accs],
            "val_acc_runs": [round(100 * r["val_acc"], 2) for r in runs],
            "best_epoch_runs": [r["best_epoch"] for r in runs],
            "memory_mb": round(memory_mb, 1),
            "steady_memory_mb": round(steady_mb, 1) if steady_mb is not None else None,
            "peak_rss_mb": round(_peak_rss_mb(), 1)}


def _peak_rss_mb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
def default_impls(device: str) -> list[str]:
    impls = list(IMPLS)
    if not os.path.exists(DGL_PYTHON) or device != "cpu":
        impls.remove("dgl")  # the DGL venv is a CPU build
    return impls


def plan(args) -> list[dict]:
    """The rows the driver would run, in order."""
    models = args.models.split(",") if args.models else list(MODELS)
    datasets = args.datasets.split(",") if args.datasets else (["cora"] if args.quick else list(DATASETS))
    impls = args.impls.split(",") if args.impls else default_impls(args.device)
    return [{"model": m, "dataset": d, "impl": i} for d in datasets for m in models for i in impls]


def row_command(args, row: dict) -> list[str]:
    python = DGL_PYTHON if row["impl"] == "dgl" else sys.executable
    return [python, os.path.abspath(__file__), "--model", row["model"], "--dataset", row["dataset"], "--impl",
            row["impl"], "--epochs", str(args.epochs), "--seeds", str(args.seeds), "--seed", str(args.seed),
            "--threads", str(args.threads), "--device", args.device]


def drive(args) -> dict:
    rows = plan(args)
    result = {"kind": "e2e", "machine": machine(), "threads": args.threads, "device": args.device,
              "config": {"epochs": args.epochs, "seeds": args.seeds, "first_seed": args.seed, "hparams": HPARAMS,
                         "self_loops": "removed, then one per node", "selection": "test acc at best val acc"},
              "rows": []}
    if args.dry_run:
        for row in rows:
            print("would run:", " ".join(row_command(args, row)))
            result["rows"].append(dict(row, dry_run=True))
    else:
        print(f"# machine: {result['machine']}", flush=True)
        for row in rows:
            row["result"] = run_row(row_command(args, row), args.row_timeout)
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        write_json(args.out, result)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODELS, help="one row (with --dataset, --impl)")
    parser.add_argument("--dataset", choices=DATASETS)
    parser.add_argument("--impl", choices=IMPLS)
    parser.add_argument("--models", help=f"driver: comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--datasets", help=f"driver: comma-separated subset of {','.join(DATASETS)}")
    parser.add_argument("--impls", help=f"driver: comma-separated subset of {','.join(IMPLS)} "
                                         "(default: all; dgl when .venv-dgl exists and the device is cpu)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default 200; --quick 30)")
    parser.add_argument("--seeds", type=int, default=None, help="runs per row (default 3; --quick 1)")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="Cora only, 30 epochs, one seed")
    parser.add_argument("--dry-run", action="store_true", help="list the rows (commands) without running them")
    parser.add_argument("--check-data", action="store_true", help="compare gdsl's loader with this script's")
    parser.add_argument("--row-timeout", type=int, default=1800)
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.epochs is None:
        args.epochs = 30 if args.quick else 200
    if args.seeds is None:
        args.seeds = 1 if args.quick else 3
    if args.check_data:
        sys.exit(0 if check_data() else 1)
    if args.model and args.dataset and args.impl:
        print(json.dumps(run_one(args)))
    else:
        drive(args)


if __name__ == "__main__":
    main()
