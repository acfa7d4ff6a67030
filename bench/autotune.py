"""Autotuning benchmark (issue 5): heuristic vs autotuned vs worst candidate schedule.

    python bench/autotune.py                         # the table: 3 graphs x 2 cases, CPU (numba)
    python bench/autotune.py --graphs cora --cases copy_u_sum --rounds 3    # a smoke run
    python bench/autotune.py --graph rmat --case gat  # one row, printed as JSON (what the driver runs)

Cases (forward + backward of one message-passing step, gradients to every input feature):

- ``copy_u_sum``: ``update_all(copy_u('h'), sum)`` with 64-wide features;
- ``gat``: the fused GAT message/reduce pair (leaky_relu(el_u + er_v), softmax over the mailbox,
  weighted sum of ft_u), 4 heads x 16.

Graphs: ``uniform`` (100k nodes, 1M uniformly random edges), ``rmat`` (100k nodes, 1M R-MAT edges,
``bench.common.power_law_graph``), ``cora`` (2708 nodes, 10556 edges, gdsl.data.load_planetoid).

Each row runs in its own process with a fresh, empty ``GDSL_CACHE_DIR`` (so the autotuning time
includes compiling every candidate, as a new user would see it; ``--warm`` reuses the default
cache directory instead). It runs the step once (compilation), then ``gdsl.autotune(..., force=True,
store=False)``, which times every candidate of each kernel (forward and backward). Then the step is
timed under four schedule assignments, every kernel of the step at once:

- ``heuristic``: what runs without tuning (gdsl.heuristics);
- ``default``: ``NumbaSchedule()`` (the schedule before issue 5);
- ``autotuned``: each kernel's winner;
- ``worst``: each kernel's slowest correct candidate.

The assignments are timed in interleaved rounds (each round runs every assignment once, in a
rotating order; one measurement repeats the step until it takes at least 20 ms), so a change of
machine load falls on all of them; the median over rounds is reported. The 1-minute load average
is recorded before and after each row: on this shared 2-core machine, numbers taken at a load
above ~1.2 are noisy and are marked so in bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import machine, power_law_graph, set_threads, uniform_graph  # noqa: E402

GRAPHS = ("uniform", "rmat", "cora")
CASES = ("copy_u_sum", "gat")
ASSIGNMENTS = ("heuristic", "default", "autotuned", "worst")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def load_average() -> float:
    return os.getloadavg()[0]


def _graph(name: str, nodes: int, edges: int):
    import gdsl
    if name == "cora":
        g = gdsl.data.load_planetoid("cora")
        src, dst = g.edges()
        return gdsl.graph((src, dst), num_nodes=g.num_nodes())
    make = uniform_graph if name == "uniform" else power_law_graph
    src, dst = make(nodes, edges)
    return gdsl.graph((src, dst), num_nodes=nodes)


def gat_message(edges):
    return {"m": edges.src["ft"], "e": F.leaky_relu(edges.src["el"] + edges.dst["er"], 0.2)}


def gat_reduce(nodes):
    alpha = torch.softmax(nodes.mailbox["e"], 1)
    return {"h": (alpha * nodes.mailbox["m"]).sum(1)}


def _case(name: str, n: int):
    """(message, reduce, features, output field)."""
    import gdsl.function as fn
    gen = torch.Generator().manual_seed(1)
    if name == "copy_u_sum":
        return fn.copy_u("h", "m"), fn.sum("m", "o"), {"h": torch.randn(n, 64, generator=gen)}, "o"
    feats = {"ft": torch.randn(n, 4, 16, generator=gen), "el": torch.randn(n, 4, 1, generator=gen),
             "er": torch.randn(n, 4, 1, generator=gen)}
    return gat_message, gat_reduce, feats, "h"


def run_row(args) -> dict:
    import gdsl
    from gdsl import heuristics, scheduling
    from gdsl.kernels.schedules import default_schedule

    set_threads(args.threads)
    load_before = load_average()
    g = _graph(args.graph, args.nodes, args.edges)
    g.create_formats_()
    message, reduce, feats, out_name = _case(args.case, g.num_nodes())
    leaves = {k: v.requires_grad_() for k, v in feats.items()}
    weight = None

    def step():
        nonlocal weight
        with g.local_scope():
            for k, v in leaves.items():
                g.ndata[k] = v
            g.update_all(message, reduce)
            out = g.ndata[out_name]
        if weight is None:
            weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
        torch.autograd.grad((out * weight).sum(), list(leaves.values()))

    t0 = time.perf_counter()
    step()  # compiles the heuristic's kernels
    first_step_s = time.perf_counter() - t0
    result = gdsl.autotune(g, (message, reduce), force=True, store=False, progress=False,
                           repeats=args.tune_repeats, **{k: v.detach() for k, v in feats.items()})
    rel = g._relations[g._etype(None)]
    kernels = result.kernels
    picks = {}
    for name in ASSIGNMENTS:
        chosen = []
        for k in kernels:
            ok = [c for c in k.candidates if c.status == "ok"]
            if name == "heuristic":
                sig = scheduling.signature(rel, scheduling.kernel_dtype(k.kernel))
                schedule = heuristics.heuristic(k.backend, k.kernel, sig)[0]
            elif name == "default":
                schedule = default_schedule(k.backend)
            elif name == "autotuned":
                schedule = k.schedule
            else:
                schedule = max(ok, key=lambda c: c.median_ms).schedule
            chosen.append((k, schedule))
        picks[name] = chosen

    def use(name):
        for k, schedule in picks[name]:
            scheduling.remember(k.kernel, k.backend, rel, scheduling.Choice(schedule, name, "bench"))

    for name in ASSIGNMENTS:  # compile and warm every assignment
        use(name)
        step()
    use("heuristic")
    t0 = time.perf_counter()
    step()
    once = time.perf_counter() - t0
    inner = max(1, min(50, int(0.02 / max(once, 1e-4)) + 1))
    times: dict[str, list[float]] = {name: [] for name in ASSIGNMENTS}
    for r in range(args.rounds):
        order = list(ASSIGNMENTS[r % 4:] + ASSIGNMENTS[:r % 4])
        for name in order:
            use(name)
            t0 = time.perf_counter()
            for _ in range(inner):
                step()
            times[name].append((time.perf_counter() - t0) * 1000 / inner)
    medians = {name: round(statistics.median(v), 3) for name, v in times.items()}
    tables = []
    for k in kernels:
        tables.append({
            "direction": k.direction, "kernel": k.kernel.describe(), "tuning_seconds": round(k.seconds, 2),
            "winner": k.winner.label, "heuristic": next(s for kk, s in picks["heuristic"] if kk is k).describe(),
            "worst": next(s for kk, s in picks["worst"] if kk is k).describe(),
            "candidates": [{"label": c.label, "status": c.status, "median_ms": c.median_ms} for c in k.candidates]})
    return {"graph": args.graph, "case": args.case, "nodes": g.num_nodes(), "edges": g.num_edges(),
            "signature": kernels[0].signature.describe() if kernels else "",
            "step_ms": medians, "runs_ms": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "inner_repeats": inner, "rounds": args.rounds, "first_step_s": round(first_step_s, 2),
            "tuning_seconds": round(result.seconds, 2), "kernels": tables,
            "load_before": round(load_before, 2), "load_after": round(load_average(), 2)}


def drive(args) -> None:
    graphs = args.graphs.split(",") if args.graphs else list(GRAPHS)
    cases = args.cases.split(",") if args.cases else list(CASES)
    rows = []
    print(f"# machine: {machine()}", flush=True)
    for graph in graphs:
        for case in cases:
            cmd = [sys.executable, os.path.abspath(__file__), "--graph", graph, "--case", case,
                   "--nodes", str(args.nodes), "--edges", str(args.edges), "--threads", str(args.threads),
                   "--rounds", str(args.rounds), "--tune-repeats", str(args.tune_repeats)]
            env = dict(os.environ)
            with tempfile.TemporaryDirectory(prefix="gdsl-bench-autotune-") as tmp:
                if not args.warm:
                    env["GDSL_CACHE_DIR"] = tmp
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                row = {"graph": graph, "case": case, "error": proc.stderr.strip().splitlines()[-3:]}
            else:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("kernels", "runs_ms")}), flush=True)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump({"machine": machine(), "threads": args.threads, "rows": rows}, fh, indent=1)
    print(report(rows))


def report(rows: list[dict]) -> str:
    """A markdown table of the rows."""
    lines = ["| graph | case | heuristic | default | autotuned | worst | tuned vs heuristic | tuning time | "
             "winners (fwd / bwd) | load (before/after) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['graph']} | {row['case']} | error: {' '.join(row['error'])} |||||||| ")
            continue
        t = row["step_ms"]
        winners = " / ".join(k["winner"] for k in row["kernels"])
        lines.append(f"| {row['graph']} ({row['nodes']} / {row['edges']}) | {row['case']} | {t['heuristic']:.2f} | "
                     f"{t['default']:.2f} | {t['autotuned']:.2f} | {t['worst']:.2f} | "
                     f"{t['heuristic'] / t['autotuned']:.2f}x | {row['tuning_seconds']:.1f} s | {winners} | "
                     f"{row['load_before']:.2f} / {row['load_after']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", choices=GRAPHS)
    parser.add_argument("--case", choices=CASES)
    parser.add_argument("--graphs", help="comma-separated (default: all)")
    parser.add_argument("--cases", help="comma-separated (default: all)")
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--edges", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tune-repeats", type=int, default=5)
    parser.add_argument("--warm", action="store_true", help="reuse the default cache directory")
    parser.add_argument("--out", help="write the rows as JSON here")
    parser.add_argument("--report", help="print the markdown table of a results JSON file and exit")
    args = parser.parse_args()
    if args.report:
        with open(args.report) as fh:
            print(report(json.load(fh)["rows"]))
    elif args.graph and args.case:
        print(json.dumps(run_row(args)))
    else:
        drive(args)


if __name__ == "__main__":
    main()
