"""The benchmark suite in one command: kernels, fused GAT, layers, end-to-end training, scaling;
then one combined markdown report.

    python -m bench                           # the whole suite (CPU: about 40 minutes on 2 cores)
    python -m bench --quick                   # every part at its smallest (a few minutes)
    python -m bench --only e2e,scaling --tag mybox
    python -m bench --quick --dry-run         # what it would run; rows listed by the suites that can
    python -m bench --device cuda --gpu-suite # the GPU suite (bench/gpu.py)

Each suite is its own script, run here as a subprocess with ``--out <results>/<suite>-<tag>.json``
(each of those runs every measured row in its own process again):

1. ``kernels``: bench/kernels.py, copy_u+sum, u_mul_e+sum, u_dot_v, edge_softmax vs torch.sparse,
   gather + index_add_, PyG and DGL;
2. ``attention``: bench/attention.py, the fused GAT layer vs the unfused DGL-style sequence, PyG and DGL
   (CPU only: on CUDA the GAT layer is measured by ``layers``);
3. ``layers``: bench/layers.py, GraphConv / GATConv / SAGEConv forward + backward vs PyG (eager and
   torch.compile) and DGL;
4. ``e2e``: bench/e2e.py, 200-epoch training time and accuracy on Cora and CiteSeer;
5. ``scaling``: bench/scaling.py, time and memory vs graph size and density, with plots.

The report (``<results>/report-<tag>.md``) has the machine, library versions, the load average before
and after (this machine is shared: timings under load are not comparable), every suite's tables
(bench/report.py) and the command lines. ``--results-dir`` (default bench/results) and ``--tag``
(default: the device, ``quick-<device>`` with --quick) name the files.
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

SUITES = ("kernels", "attention", "layers", "e2e", "scaling")
DGL_PYTHON = os.environ.get("GDSL_BENCH_DGL_PYTHON", os.path.join(ROOT, ".venv-dgl", "bin", "python"))
TITLES = {"kernels": "Kernel micro-benchmarks", "attention": "Fused GAT layer (attention)",
          "layers": "Layers, forward + backward", "e2e": "End-to-end training on Cora and CiteSeer",
          "scaling": "Scaling with graph size and density"}
DRY_RUN_CAPABLE = ("kernels", "e2e", "scaling")


def have_dgl() -> bool:
    return os.path.exists(DGL_PYTHON)


def suite_args(suite: str, quick: bool, device: str) -> list[str]:
    """Each suite's own arguments in this run (the default sizes are chosen to keep the whole CPU
    suite to about 40 minutes on 2 cores; each script's own defaults are larger)."""
    dgl = have_dgl() and device == "cpu"
    if suite == "kernels":
        impls = "gdsl,torch_sparse,pyg" + (",dgl" if dgl else "")
        if quick:
            return ["--quick", "--impls", impls, "--dims", "16"]
        return ["--sizes", "100000:1000000,200000:5000000", "--dims", "64", "--graphs", "uniform",
                "--impls", "gdsl,torch_sparse,gather_index_add,pyg" + (",dgl" if dgl else "")]
    if suite == "attention":
        impls = "gdsl-fused,gdsl-unfused,pyg" + (",dgl" if dgl else "")
        if quick:
            return ["--graphs", "small", "--heads", "8", "--dims", "8", "--repeats", "2", "--impls", impls]
        return ["--graphs", "100k", "--heads", "1,8", "--dims", "8,64", "--impls", impls]
    if suite == "layers":
        return ["--quick"] if quick else []
    if suite == "e2e":
        return ["--quick"] if quick else []
    if suite == "scaling":
        return ["--quick"] if quick else []
    raise ValueError(suite)


def command(suite: str, args, out: str) -> list[str]:
    cmd = [sys.executable, os.path.join(ROOT, "bench", f"{suite}.py")] + suite_args(suite, args.quick, args.device)
    if suite != "attention":  # attention.py is CPU only
        cmd += ["--device", args.device]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    if args.dry_run and suite in DRY_RUN_CAPABLE:
        cmd.append("--dry-run")
    return cmd + ["--out", out]


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def versions() -> dict:
    import importlib.metadata as md
    out = {"python": platform.python_version()}
    for name in ("torch", "numba", "numpy", "triton", "torch_geometric", "matplotlib"):
        try:
            out[name] = md.version(name.replace("_", "-") if name == "torch_geometric" else name)
        except md.PackageNotFoundError:
            out[name] = None
    if have_dgl():
        try:
            out["dgl (.venv-dgl)"] = subprocess.run(
                [DGL_PYTHON, "-c", "import importlib.metadata as m; print(m.version('dgl'))"],
                capture_output=True, text=True, timeout=60).stdout.strip() or None
        except (OSError, subprocess.TimeoutExpired):
            out["dgl (.venv-dgl)"] = None
    return out


def write_report(path: str, tag: str, args, runs: list[dict], header: dict) -> str:
    from bench.report import render
    lines = [f"# gdsl benchmark report: {tag}", "",
             f"- date: {header['date']}", f"- host: {header['host']}", f"- device: {args.device}",
             f"- machine: {header['machine']}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in header["versions"].items() if v),
             f"- load average (1/5/15 min) before: {header['load_before']}, after: {header['load_after']} "
             f"({os.cpu_count()} CPUs; a load above the CPU count means other work shared the machine and "
             "the timings are not comparable)",
             f"- mode: {'quick' if args.quick else 'default'}{' (dry run: nothing measured)' if args.dry_run else ''}",
             "- method: every measured row in its own process (scaling --quick: one per implementation), "
             "median after a warm-up, memory = peak RSS growth (CPU) or torch.cuda.max_memory_allocated growth "
             "(CUDA); ratios peer / gdsl > 1 mean gdsl is faster.", ""]
    for run in runs:
        lines += [f"## {TITLES[run['suite']]}", "", f"`{run['command']}` ({run['seconds']:.0f} s, exit {run['returncode']})", ""]
        if run.get("data") is not None:
            lines += [render(run["data"]), ""]
            if run["suite"] == "scaling" and not args.dry_run:
                stem = os.path.splitext(os.path.basename(run["out"]))[0]
                lines += [f"Plots: `{stem}-size.png`, `{stem}-density.png`.", ""]
        else:
            lines += [f"No results ({run.get('error', 'no output file')}).", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every suite at its smallest")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SUITES)} (in this order)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--gpu-suite", action="store_true", help="run bench/gpu.py (the GPU plan) instead")
    parser.add_argument("--threads", type=int, default=None, help="torch / numba threads per row (scripts default 2)")
    parser.add_argument("--tag", help="results tag (default: <device>, or quick-<device>)")
    parser.add_argument("--results-dir", default=os.path.join(ROOT, "bench", "results"))
    parser.add_argument("--dry-run", action="store_true",
                        help="list what would run (kernels, e2e and scaling list their rows); measure nothing")
    args = parser.parse_args(argv)
    if args.gpu_suite:
        from bench import gpu
        gpu_argv = ["--out", args.results_dir] + (["--dry-run"] if args.dry_run else []) + (
            ["--quick"] if args.quick else []) + (["--only", args.only] if args.only else []) + (
            ["--tag", args.tag] if args.tag else [])
        return gpu.main(gpu_argv)
    suites = [s for s in SUITES if not args.only or s in args.only.split(",")]
    unknown = set(args.only.split(",")) - set(SUITES) if args.only else set()
    if unknown:
        parser.error(f"unknown suites {sorted(unknown)}; choose from {', '.join(SUITES)}")
    if args.device != "cpu" and "attention" in suites:
        print("attention: CPU only (the GAT layer is in 'layers' on CUDA); skipped", flush=True)
        suites.remove("attention")
    tag = args.tag or (("quick-" if args.quick else "") + args.device + ("-dry-run" if args.dry_run else ""))
    os.makedirs(args.results_dir, exist_ok=True)
    from bench.common import machine
    header = {"date": datetime.date.today().isoformat(), "host": platform.node(), "machine": machine(),
              "versions": versions(), "load_before": loadavg()}
    runs = []
    for suite in suites:
        out = os.path.join(args.results_dir, f"{suite}-{tag}.json")
        cmd = command(suite, args, out)
        printable = " ".join(shlex.quote(c) for c in cmd)
        print(f"== {suite}: {printable}", flush=True)
        run = {"suite": suite, "command": printable.replace(ROOT + "/", ""), "out": out}
        start = time.perf_counter()
        if args.dry_run and suite not in DRY_RUN_CAPABLE:
            run.update(returncode=0, seconds=0.0, error="dry run: not started")
        else:
            if os.path.exists(out):
                os.remove(out)  # never report a previous run's file as this one's
            proc = subprocess.run(cmd, cwd=ROOT)
            run.update(returncode=proc.returncode, seconds=time.perf_counter() - start)
            if os.path.exists(out):
                with open(out) as f:
                    run["data"] = json.load(f)
            else:
                run["error"] = f"exit status {proc.returncode}, no {os.path.basename(out)}"
        runs.append(run)
    header["load_after"] = loadavg()
    path = write_report(os.path.join(args.results_dir, f"report-{tag}.md"), tag, args, runs, header)
    print(f"== report: {path}", flush=True)
    return 0 if all(r["returncode"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
