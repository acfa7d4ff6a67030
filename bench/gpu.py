"""The benchmark suite on a CUDA GPU in one call of a few minutes; tables written to files.

    python bench/gpu.py                      # on a machine with CUDA; results under $OUT or bench/results/gpu
    python bench/gpu.py --out /some/dir      # results there
    python bench/gpu.py --dry-run            # the plan (every command), runs nothing; works without a GPU
    python bench/gpu.py --quick              # smaller sizes (a smoke run, about a minute)
    python bench/gpu.py --allow-cpu --quick  # no GPU: run the quick plan on the CPU (tests the pipeline)

The plan, in order of importance (a part that would start after ``--budget-s`` seconds is recorded as
not run, so the call ends in time; the device runner's limit is 10 minutes):

1. layers (bench/layers.py ``--device cuda``): GraphConv, GATConv (8 heads, the fused attention
   kernel), SAGEConv forward + backward on 100k/1M/D=64 and 1M/10M/D=64, gdsl vs PyG eager and
   PyG under ``torch.compile``;
2. kernels (bench/kernels.py ``--device cuda``): copy_u+sum (forward, forward + backward) and
   edge_softmax on (E, 8) at 1M/10M, D=64: gdsl vs torch.sparse vs PyG;
3. e2e (bench/e2e.py ``--device cuda``): 200-epoch GCN / GAT / SAGE on Cora and CiteSeer, gdsl vs PyG,
   one seed;
4. scaling (bench/scaling.py ``--device cuda``): N = 1e4 .. 1e7 at degree 10, degree 2 .. 200 at
   N = 1e6 (one process per implementation: on CUDA the peak-memory counter is reset per row).

Memory on CUDA is the growth of ``torch.cuda.max_memory_allocated`` during the timed steps; times are
synchronised medians after a warm-up (Triton compilation and torch.compile excluded). DGL is not run
(its venv is a CPU build). Writes ``<out>/<suite>-<tag>.json``, the scaling plots, and
``<out>/report-<tag>.md`` (bench/report.py), and prints the report.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PARTS = ("layers", "kernels", "e2e", "scaling")


def plan(quick: bool, device: str) -> dict[str, list[str]]:
    """Each part's arguments (the script is bench/<part>.py)."""
    if quick:
        return {
            "layers": ["--sizes", "10000:100000:32", "--impls", "gdsl,pyg", "--repeats", "3"],
            "kernels": ["--sizes", "10000:100000", "--dims", "64", "--graphs", "uniform", "--cases",
                        "copy_u_sum,edge_softmax", "--impls", "gdsl,torch_sparse,pyg", "--repeats", "3"],
            "e2e": ["--quick", "--models", "gcn,gat", "--impls", "gdsl,pyg"],
            "scaling": ["--quick", "--impls", "gdsl,torch_sparse,pyg"],
        }
    return {
        "layers": ["--sizes", "100000:1000000:64,1000000:10000000:64", "--impls", "gdsl,pyg,pyg_compile",
                   "--repeats", "10", "--row-timeout", "240"],
        "kernels": ["--sizes", "1000000:10000000", "--dims", "64", "--graphs", "uniform", "--cases",
                    "copy_u_sum,edge_softmax", "--impls", "gdsl,torch_sparse,pyg", "--repeats", "10",
                    "--row-timeout", "120"],
        "e2e": ["--impls", "gdsl,pyg", "--seeds", "1", "--row-timeout", "180"],
        "scaling": ["--impls", "gdsl,torch_sparse,pyg", "--isolation", "impl", "--size-nodes", "1e4,1e5,1e6,1e7",
                    "--density-nodes", "1e6", "--degrees", "2,10,50,200", "--mem-budget-gb", "100",
                    "--repeats", "10", "--row-timeout", "120"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "bench", "results", "gpu"),
                        help="output directory (default: $OUT if set, else bench/results/gpu)")
    parser.add_argument("--tag", help="file tag (default: gpu, or quick-gpu)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and write nothing")
    parser.add_argument("--allow-cpu", action="store_true", help="without CUDA, run the plan on the CPU")
    parser.add_argument("--budget-s", type=float, default=540, help="do not start a part after this many seconds")
    args = parser.parse_args(argv)

    import torch
    cuda = torch.cuda.is_available()
    # the plan is the GPU's; only a real run without CUDA and with --allow-cpu runs it on the CPU
    device = "cpu" if (not cuda and args.allow_cpu and not args.dry_run) else "cuda"
    parts = [p for p in PARTS if not args.only or p in args.only.split(",")]
    steps = plan(args.quick, device)
    tag = args.tag or ("quick-" if args.quick else "") + ("gpu" if device == "cuda" else "cpu-fallback")
    commands = {p: [sys.executable, os.path.join(ROOT, "bench", f"{p}.py")] + steps[p]
                + ["--device", device, "--out", os.path.join(args.out, f"{p}-{tag}.json")] for p in parts}
    if args.dry_run:
        print(f"# CUDA available: {cuda}" + ("" if cuda else " (a real run needs a GPU, or --allow-cpu)"))
        for p in parts:
            print(f"would run ({p}):", " ".join(shlex.quote(c) for c in commands[p]))
        return 0
    if not cuda and not args.allow_cpu:
        print("bench/gpu.py: no CUDA device here; use --dry-run to see the plan, or --allow-cpu --quick to run "
              "it on the CPU", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    from bench.common import machine
    from bench.report import render
    versions = {"torch": torch.__version__}
    for name in ("triton", "torch_geometric", "numba"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - reported as absent
            versions[name] = None
    gpu_name = torch.cuda.get_device_name(0) if cuda else "none (CPU fallback)"
    lines = [f"# gdsl GPU benchmark: {tag}", "", f"- date: {datetime.date.today().isoformat()}",
             f"- host: {platform.node()}", f"- GPU: {gpu_name}", f"- machine: {machine()}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v), ""]
    start = time.perf_counter()
    status = 0
    for p in parts:
        cmd = commands[p]
        out = cmd[-1]
        lines += [f"## {p}", "", f"`{' '.join(shlex.quote(c) for c in cmd).replace(ROOT + '/', '')}`", ""]
        if time.perf_counter() - start > args.budget_s:
            lines += [f"Not run: the {args.budget_s:.0f} s budget was spent.", ""]
            print(f"== {p}: not run (budget spent)", flush=True)
            continue
        print(f"== {p}", flush=True)
        t0 = time.perf_counter()
        remaining = max(30.0, args.budget_s + 50 - (t0 - start))
        try:
            proc = subprocess.run(cmd, cwd=ROOT, timeout=remaining)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
        status = status or (code != 0)
        lines.append(f"({time.perf_counter() - t0:.0f} s, exit {code})\n")
        if os.path.exists(out):
            with open(out) as f:
                lines += [render(json.load(f)), ""]
        else:
            lines += ["No results file.", ""]
    report = os.path.join(args.out, f"report-{tag}.md")
    with open(report, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    print(f"== report: {report}", flush=True)
    return 1 if status else 0


if __name__ == "__main__":
    sys.exit(main())
