"""Scaling with graph size and with density: copy_u+sum and the GraphConv layer, forward + backward,
gdsl against torch.sparse, torch-geometric and (when its venv exists) DGL 2.1.

    python bench/scaling.py                    # default sweeps (~10-15 minutes on 2 cores)
    python bench/scaling.py --quick            # small sweeps, about a minute
    python bench/scaling.py --dry-run          # the rows it would run, with memory estimates
    python bench/scaling.py --work graphconv --impl gdsl --nodes 100000 --edges 1000000 --dim 32
                                               # one row, printed as JSON (what the driver runs)

Sweeps (uniform random graphs, ``torch.randint`` endpoints plus one self-loop per node, counted in
E; in = out = ``--dim`` features, default 32):

- size: N = 1e4 .. 1e6 at average in-degree 10 (E = 10 N);
- density: average in-degree 2 .. 200 at N = 1e5 (E up to 2e7).

Work, each forward + backward of a fixed random weighting of the output (w.r.t. the input features
and, for the layer, its parameters):

- ``copy_u_sum``: ``update_all(copy_u, sum)`` (gdsl, DGL); ``torch.sparse.mm`` with the CSR
  adjacency (built once); a PyG ``MessagePassing(aggr='add')``.
- ``graphconv``: ``GraphConv(norm='both')`` (gdsl, DGL; bench/layers.py's layer and weights); PyG
  ``GCNConv(add_self_loops=False)`` (normalisation recomputed every call, its default); torch.sparse:
  ``(A_norm @ x) @ W + b`` with the normalised CSR adjacency built once.

Method: each (work, graph, implementation) row in its own process; one warm-up step (compilation,
cached formats) untimed, then the median of ``--repeats`` steps (3 when the warm-up step took more
than 2 s); memory is the peak RSS growth during the timed steps (CPU) or the growth of
``torch.cuda.max_memory_allocated`` (CUDA). Rows whose predicted peak memory (inputs included, a
simple per-implementation model in ``estimate_mb``) exceeds ``--mem-budget-gb`` (default 8) are not
run and are recorded as skipped with the estimate. ``--isolation impl`` (the ``--quick`` default)
runs all rows of one implementation in one process instead, to save the start-up time.

Writes ``--out`` (default bench/results/scaling-<tag>.json), a markdown table next to it (.md) and
two matplotlib plots (``-size.png``: time and memory vs N; ``-density.png``: vs degree; log-log).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench.common import RssSampler, machine, peak_rss_mb, run_row, set_threads, time_it, write_json  # noqa: E402

WORKS = ("copy_u_sum", "graphconv")
IMPLS = ("gdsl", "torch_sparse", "pyg", "dgl")
DGL_PYTHON = os.environ.get("GDSL_BENCH_DGL_PYTHON", os.path.join(ROOT, ".venv-dgl", "bin", "python"))

SIZE_NODES = [10_000, 30_000, 100_000, 300_000, 1_000_000]
SIZE_DEGREE = 10
DENSITY_NODES = 100_000
DENSITY_DEGREES = [2, 5, 10, 20, 50, 100, 200]
QUICK_SIZE_NODES = [1_000, 10_000]
QUICK_DENSITY_NODES = 10_000
QUICK_DENSITY_DEGREES = [2, 50]


# ---------------------------------------------------------------------------------------------
# Memory model: predicted peak bytes of one row (inputs included); used to skip rows
# ---------------------------------------------------------------------------------------------
BASE_MB = 500  # interpreter, torch and the library (gdsl + numba, PyG or DGL), kernel compilation


def estimate_mb(impl: str, work: str, nodes: int, edges: int, dim: int) -> float:
    """Rough upper estimate of a row's whole-process peak memory in MB: the interpreter and
    libraries, int64 edge lists and graph formats, float32 node features and gradients, and the
    E x D tensors of the implementations that materialise messages (PyG: about 2 for copy_u+sum,
    2.7 for GCNConv). Checked against the measured peak RSS at N=1e5, E=2e6, D=32 on this machine
    (gdsl 525-620 MB, torch.sparse 600-615 MB, PyG 920 / 1130 MB; estimates 760-1200 MB)."""
    f, i = 4, 8
    dense = 8 * nodes * dim * f                     # x, grad x, output, its weighting and gradient, temps
    edge_lists = 2 * edges * i                       # src, dst as built
    if impl in ("gdsl", "dgl"):
        total = edge_lists + 6 * edges * i + dense   # in-CSR, out-CSR (with edge ids)
    elif impl == "torch_sparse":
        total = edge_lists + 10 * edges * i + dense  # COO, coalesce, CSR and its transpose in backward
    else:  # pyg: gathers E x D messages and their gradients
        messages = (2.0 if work == "copy_u_sum" else 2.7) * edges * dim * f
        total = edge_lists + 4 * edges * i + messages + dense
    return BASE_MB + total / 2**20


# ---------------------------------------------------------------------------------------------
# The work, per implementation
# ---------------------------------------------------------------------------------------------
def _torch_sparse_graphconv(src, dst, nodes, dim, w, device):
    out_deg = torch.bincount(src, minlength=nodes).clamp(min=1).float()
    in_deg = torch.bincount(dst, minlength=nodes).clamp(min=1).float()
    norm = out_deg[src].rsqrt() * in_deg[dst].rsqrt()
    adj = torch.sparse_coo_tensor(torch.stack([dst, src]), norm, (nodes, nodes)).coalesce().to_sparse_csr()
    weight = torch.nn.Parameter(w["weight"].clone().to(device))
    bias = torch.nn.Parameter(w["bias"].clone().to(device))
    module = torch.nn.ParameterList([weight, bias])
    return (lambda x: torch.sparse.mm(adj, x) @ weight + bias), module


def make(impl: str, work: str, src, dst, nodes: int, dim: int, device: torch.device):
    """(forward(x) -> (N, dim), module whose parameters get gradients or None)."""
    if work == "graphconv":
        from bench.layers import make as make_layer
        from bench.layers import weights
        w = weights("gcn", dim)
        if impl == "torch_sparse":
            return _torch_sparse_graphconv(src.to(device), dst.to(device), nodes, dim, w, device)
        return make_layer(impl, "gcn", src, dst, nodes, dim, w, device)
    from bench import kernels
    spec = argparse.Namespace(case="copy_u_sum", nodes=nodes, edges=int(src.numel()), dim=dim)
    src, dst = src.to(device), dst.to(device)
    unused_w = torch.ones(src.numel(), 1, device=device)  # bench/kernels.py's builders take an edge weight
    builder = {"gdsl": kernels._gdsl_fn, "torch_sparse": kernels._torch_sparse_fn, "pyg": kernels._pyg_fn,
               "dgl": kernels._dgl_fn}[impl]
    built = {}

    def forward(x):  # bench/kernels.py's builders close over the input features: build on first use
        if "run" not in built:
            built["run"] = builder(spec, src, dst, x, unused_w)
        return built["run"]()
    return forward, None


def run_one(args) -> dict:
    set_threads(args.threads)
    device = torch.device(args.device)
    from bench.layers import graph_edges
    src, dst = graph_edges(args.nodes, args.edges)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.nodes, args.dim, generator=gen).to(device).requires_grad_()
    out_weight = torch.randn(args.nodes, args.dim, generator=gen).to(device)
    forward, module = make(args.impl, args.work, src, dst, args.nodes, args.dim, device)
    del src, dst
    params = list(module.parameters()) if module is not None else []

    def step():
        x.grad = None
        for p in params:
            p.grad = None
        (forward(x).reshape(args.nodes, -1) * out_weight).sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    step()  # warm-up: compilation and cached formats excluded
    warmup_ms = (time.perf_counter() - start) * 1000
    repeats = args.repeats if warmup_ms < 2000 or args.repeats <= 3 else 3
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        timing = time_it(step, repeats=repeats, warmup=1)
        memory_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        with RssSampler() as memory:
            timing = time_it(step, repeats=repeats, warmup=0)
        memory_mb = memory.growth_mb
    out = {"median_ms": round(timing.median_ms, 2), "runs_ms": [round(r, 2) for r in timing.runs_ms],
           "warmup_ms": round(warmup_ms, 1), "memory_mb": round(memory_mb, 1), "repeats": repeats}
    if device.type == "cpu":  # the whole process's peak (interpreter, libraries and inputs included)
        out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def run_batch(args) -> list[dict]:
    """``--isolation impl``: several rows (JSON list in --batch) in this one process."""
    results = []
    for spec in json.loads(args.batch):
        one = argparse.Namespace(**{**vars(args), **spec})
        try:
            results.append(run_one(one))
        except Exception as exc:  # noqa: BLE001 - recorded in the row
            results.append({"error": f"{type(exc).__name__}: {exc}"[:300]})
    return results


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
def graphs(args) -> list[dict]:
    """Distinct graphs of both sweeps: {nodes, edges, degree, sweeps}."""
    if args.quick:
        size_nodes, size_degree = QUICK_SIZE_NODES, SIZE_DEGREE
        dens_nodes, degrees = QUICK_DENSITY_NODES, QUICK_DENSITY_DEGREES
    else:
        size_nodes, size_degree, dens_nodes, degrees = SIZE_NODES, SIZE_DEGREE, DENSITY_NODES, DENSITY_DEGREES
    if args.size_nodes:
        size_nodes = [int(float(v)) for v in args.size_nodes.split(",")]
    if args.degrees:
        degrees = [int(float(v)) for v in args.degrees.split(",")]
    if args.density_nodes:
        dens_nodes = int(float(args.density_nodes))
    sweeps = [s for s in (args.sweeps or "size,density").split(",") if s]
    out: dict[tuple, dict] = {}
    if "size" in sweeps:
        for n in size_nodes:
            out.setdefault((n, n * size_degree), {"nodes": n, "edges": n * size_degree, "degree": size_degree,
                                                  "sweeps": []})["sweeps"].append("size")
    if "density" in sweeps:
        for d in degrees:
            out.setdefault((dens_nodes, dens_nodes * d), {"nodes": dens_nodes, "edges": dens_nodes * d, "degree": d,
                                                          "sweeps": []})["sweeps"].append("density")
    return sorted(out.values(), key=lambda g: (g["edges"], g["nodes"]))


def default_impls(device: str) -> list[str]:
    impls = list(IMPLS)
    if not os.path.exists(DGL_PYTHON) or device != "cpu":
        impls.remove("dgl")
    return impls


def _python(impl: str) -> str:
    return DGL_PYTHON if impl == "dgl" else sys.executable


def _base_cmd(args, impl: str) -> list[str]:
    return [_python(impl), os.path.abspath(__file__), "--impl", impl, "--dim", str(args.dim), "--threads",
            str(args.threads), "--repeats", str(args.repeats), "--device", args.device]


def drive(args) -> dict:
    impls = args.impls.split(",") if args.impls else default_impls(args.device)
    works = args.works.split(",") if args.works else list(WORKS)
    budget_mb = args.mem_budget_gb * 1024
    rows = []
    for g in graphs(args):
        for work in works:
            rows.append({"work": work, **g, "dim": args.dim})
    todo: dict[str, list[tuple[dict, list[str]]]] = {impl: [] for impl in impls}
    for row in rows:
        for impl in impls:
            est = estimate_mb(impl, row["work"], row["nodes"], row["edges"], args.dim)
            if est > budget_mb:
                row[impl] = {"skipped": True, "estimate_mb": round(est)}
                continue
            row[impl] = {"estimate_mb": round(est), **({"dry_run": True} if args.dry_run else {})}
            todo[impl].append((row, ["--work", row["work"], "--nodes", str(row["nodes"]), "--edges", str(row["edges"])]))
    result = {"kind": "scaling", "machine": machine(), "threads": args.threads, "device": args.device,
              "config": {"dim": args.dim, "repeats": args.repeats, "mem_budget_gb": args.mem_budget_gb,
                         "isolation": args.isolation, "impls": impls, "works": works,
                         "graph": "uniform random + one self-loop per node"}, "rows": rows}
    if args.dry_run:
        for impl, items in todo.items():
            for row, extra in items:
                print(f"would run ({row[impl]['estimate_mb']} MB est.):", " ".join(_base_cmd(args, impl) + extra))
        for row in rows:
            for impl in impls:
                if row[impl].get("skipped"):
                    print(f"would skip {row['work']} N={row['nodes']} E={row['edges']} {impl}: "
                          f"estimate {row[impl]['estimate_mb']} MB > budget {budget_mb:.0f} MB")
    else:
        print(f"# machine: {result['machine']}", flush=True)
        if args.isolation == "impl":
            for impl, items in todo.items():
                if not items:
                    continue
                specs = [{"work": r["work"], "nodes": r["nodes"], "edges": r["edges"]} for r, _ in items]
                out = run_row(_base_cmd(args, impl) + ["--batch", json.dumps(specs)], args.row_timeout * len(items))
                for i, (row, _) in enumerate(items):
                    value = out[i] if isinstance(out, list) else out
                    row[impl] = {**row[impl], **value}
                print(f"{impl}: {len(items)} rows", flush=True)
        else:
            for row in rows:
                for impl in impls:
                    if row[impl].get("skipped"):
                        continue
                    extra = ["--work", row["work"], "--nodes", str(row["nodes"]), "--edges", str(row["edges"])]
                    row[impl] = {**row[impl], **run_row(_base_cmd(args, impl) + extra, args.row_timeout)}
                print(json.dumps(row), flush=True)
    if args.out:
        write_outputs(result, args.out, plots=not args.dry_run and not args.no_plots)
    return result


def write_outputs(result: dict, out: str, plots: bool = True) -> list[str]:
    """JSON at ``out``, markdown next to it, and (with matplotlib) the two PNG plots."""
    from bench.report import scaling_tables
    write_json(out, result)
    stem = os.path.splitext(out)[0]
    written = [out]
    with open(stem + ".md", "w") as f:
        f.write(f"Machine: {result['machine']}\n\n" + scaling_tables(result) + "\n")
    written.append(stem + ".md")
    if plots:
        try:
            written += plot(result, stem)
        except ImportError as exc:
            print(f"no plots ({exc}); pip install matplotlib", file=sys.stderr)
    return written


NAMES = {"gdsl": "gdsl", "torch_sparse": "torch.sparse", "pyg": "PyG", "dgl": "DGL 2.1"}
TITLES = {"copy_u_sum": "copy_u + sum, fwd+bwd", "graphconv": "GraphConv layer, fwd+bwd"}
COLORS = {"gdsl": "tab:blue", "torch_sparse": "tab:orange", "pyg": "tab:green", "dgl": "tab:red"}


def plot(result: dict, stem: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    impls = result["config"]["impls"]
    works = result["config"]["works"]
    written = []
    for sweep, xkey, xlabel in (("size", "nodes", "nodes N (average degree %s)"),
                                ("density", "degree", "average in-degree (N = %s)")):
        rows = [r for r in result["rows"] if sweep in r["sweeps"]]
        if not rows:
            continue
        fixed = rows[0]["degree"] if sweep == "size" else f"{rows[0]['nodes']:,}"
        fig, axes = plt.subplots(2, len(works), figsize=(5.5 * len(works), 8), squeeze=False)
        for col, work in enumerate(works):
            wrows = sorted((r for r in rows if r["work"] == work), key=lambda r: r[xkey])
            for row_idx, (key, ylabel) in enumerate((("median_ms", "time (ms)"), ("memory_mb", "peak memory growth (MB)"))):
                ax = axes[row_idx][col]
                for impl in impls:
                    pts = [(r[xkey], r[impl][key]) for r in wrows
                           if isinstance(r.get(impl), dict) and key in r[impl]]
                    if pts:
                        ax.plot(*zip(*pts), marker="o", label=NAMES.get(impl, impl), color=COLORS.get(impl))
                    skipped = [r[xkey] for r in wrows if isinstance(r.get(impl), dict) and r[impl].get("skipped")]
                    for x_skip in skipped:
                        ax.axvline(x_skip, color=COLORS.get(impl, "grey"), lw=0.8, ls=":")
                ax.set_xscale("log")
                if key == "median_ms":
                    ax.set_yscale("log")
                else:  # memory growth can be 0 MB: linear below 10 MB, logarithmic above
                    ax.set_yscale("symlog", linthresh=10)
                    ax.set_ylim(bottom=0)
                xs = sorted({r[xkey] for r in wrows})
                ax.set_xticks(xs)
                ax.set_xticklabels([f"{v:g}" if v < 1e4 else f"{v:.0e}".replace("e+0", "e") for v in xs])
                ax.minorticks_off()
                ax.set_xlabel(xlabel % fixed)
                ax.set_ylabel(ylabel)
                ax.set_title(f"{TITLES.get(work, work)}, D={result['config']['dim']}")
                ax.grid(True, which="both", alpha=0.3)
                ax.legend()
        any_skipped = any(isinstance(r.get(i), dict) and r[i].get("skipped") for r in rows for i in impls)
        fig.suptitle(f"Scaling with graph {sweep} ({result['device']}, {result['threads']} threads"
                     + ("; dotted line: row skipped, predicted over the memory budget)" if any_skipped else ")"))
        fig.tight_layout()
        path = f"{stem}-{sweep}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", choices=WORKS, help="one row (with --impl, --nodes, --edges)")
    parser.add_argument("--impl", choices=IMPLS)
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--edges", type=int)
    parser.add_argument("--batch", help=argparse.SUPPRESS)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="small sweeps, one process per implementation")
    parser.add_argument("--dry-run", action="store_true", help="list rows, estimates and skips; run nothing")
    parser.add_argument("--sweeps", help="size,density (default both)")
    parser.add_argument("--size-nodes", help="N values of the size sweep, comma-separated (1e4 notation ok)")
    parser.add_argument("--degrees", help="average degrees of the density sweep, comma-separated")
    parser.add_argument("--density-nodes", help="N of the density sweep")
    parser.add_argument("--works", help=f"comma-separated subset of {','.join(WORKS)}")
    parser.add_argument("--impls", help=f"comma-separated subset of {','.join(IMPLS)}")
    parser.add_argument("--mem-budget-gb", type=float, default=8.0, help="skip rows predicted above this")
    parser.add_argument("--isolation", choices=["row", "impl"], default=None,
                        help="one process per row (default) or per implementation (--quick default)")
    parser.add_argument("--row-timeout", type=int, default=900)
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--tag", default=None, help="results file tag (default: the device, 'quick-' if --quick)")
    parser.add_argument("--out", help="results JSON (default bench/results/scaling-<tag>.json)")
    args = parser.parse_args(argv)
    if args.isolation is None:
        args.isolation = "impl" if args.quick else "row"
    if args.impl and args.batch:
        print(json.dumps(run_batch(args)))
        return
    if args.impl and args.work:
        print(json.dumps(run_one(args)))
        return
    if args.out is None and not args.dry_run:
        tag = args.tag or (("quick-" if args.quick else "") + args.device)
        args.out = os.path.join(ROOT, "bench", "results", f"scaling-{tag}.json")
    drive(args)


if __name__ == "__main__":
    main()
