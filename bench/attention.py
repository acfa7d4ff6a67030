"""GAT layer benchmark (forward + backward): gdsl fused, gdsl unfused (DGL-style), PyG GATConv.

    python bench/attention.py --check                       # numerical agreement, N=2000/E=20000
    python bench/attention.py                               # full table: 100k/1M and 200k/5M
    python bench/attention.py --graphs small --repeats 2    # smoke run (N=5000, E=50000)
    python bench/attention.py --graphs 100k --heads 8 --dims 64 --tag mybox
    python bench/attention.py --impl pyg --nodes 100000 --edges 1000000 --heads 8 --dim 64
        # one row, printed as JSON (what the driver runs in a subprocess)

Implementations (same parameters: W (in, H*D), attn_l / attn_r (1, H, D), bias (H*D)):

- ``gdsl-fused``: ``gdsl.nn.GATConv``, the layer gdsl's users get: its message/reduce UDF pair
  (softmax over the mailbox, weighted sum) compiles to one fused forward kernel (online softmax) and
  a fused backward.
- ``gdsl-unfused``: ``gdsl.nn.GATConv`` with ``get_attention=True``, which runs DGL's sequence in
  gdsl: ``apply_edges(u_add_v)``, ``leaky_relu``, ``gdsl.edge_softmax``, ``update_all(u_mul_e, sum)``
  (the scores computed as the fused layer computes them).
- ``pyg``: ``torch_geometric.nn.GATConv(in, D, heads=H, add_self_loops=False, concat=True)``,
  which materialises E x H x D messages.

Each row is forward + backward of a fixed random weighting of the output, w.r.t. x and every
layer parameter; one warm-up step (numba compilation, cached graph formats) is not timed; the time
is the median of ``--repeats`` steps; memory is the growth of resident memory during the timed
steps (bench.common.RssSampler), each row in its own process. ``largest_tensor_mb`` is the largest
tensor storage any torch op produced in one extra untimed step (arrays allocated by numba kernels
themselves are not seen). Rows whose memory estimate exceeds ``--mem-budget-gb`` are skipped and
recorded as such; a row that runs out of memory (MemoryError, allocator failure, killed process)
is recorded as OOM. Results go to bench/results/attention-<tag>.json (tag: the host name unless
``--tag``); render them with ``python bench/report.py bench/results/attention-*.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import (LargestTensor, RssSampler, machine, set_threads, time_it,  # noqa: E402
                          uniform_graph)

IMPLS = ("gdsl-fused", "gdsl-unfused", "pyg", "dgl")
# DGL runs in its own venv (../shared/peers/dgl-venv.sh builds it); gdsl never imports DGL.
DGL_PYTHON = os.environ.get("GDSL_BENCH_DGL_PYTHON", os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), ".venv-dgl", "bin", "python"))
GRAPHS = {"small": (5_000, 50_000), "100k": (100_000, 1_000_000), "200k": (200_000, 5_000_000)}
CHECK_GRAPH = (2_000, 20_000)
NEGATIVE_SLOPE = 0.2


# ---------------------------------------------------------------------------------------------
# The GAT layer, three ways
# ---------------------------------------------------------------------------------------------
def make_params(in_dim: int, heads: int, dim: int, seed: int = 2) -> dict[str, torch.Tensor]:
    """GAT parameters in gdsl's layout; PyG's GATConv gets copies (lin.weight is W transposed)."""
    gen = torch.Generator().manual_seed(seed)
    return {"W": torch.randn(in_dim, heads * dim, generator=gen) * (2 / (in_dim + heads * dim)) ** 0.5,
            "attn_l": torch.randn(1, heads, dim, generator=gen) * 0.3,
            "attn_r": torch.randn(1, heads, dim, generator=gen) * 0.3,
            "bias": torch.randn(heads * dim, generator=gen) * 0.1}


def _gatconv_layer(make_graph, gatconv, src, dst, num_nodes, heads, dim, params, **call):
    """A GATConv with DGL's API (``gdsl.nn.GATConv`` or DGL's own) on a graph from ``make_graph``,
    called with the keywords ``call``; its first output."""
    g = make_graph((src, dst), num_nodes=num_nodes)
    g.create_formats_()
    in_dim = params["W"].shape[0]
    conv = gatconv(in_dim, dim, heads, negative_slope=NEGATIVE_SLOPE, allow_zero_in_degree=True, bias=True)
    with torch.no_grad():
        conv.fc.weight.copy_(params["W"].t())
        conv.attn_l.copy_(params["attn_l"])
        conv.attn_r.copy_(params["attn_r"])
        conv.bias.copy_(params["bias"])

    def forward(x):
        out = conv(g, x, **call)
        return (out[0] if isinstance(out, tuple) else out).reshape(-1, heads * dim)

    def grads():
        return {"W": conv.fc.weight.grad.t(), "attn_l": conv.attn_l.grad, "attn_r": conv.attn_r.grad,
                "bias": conv.bias.grad}
    return forward, list(conv.parameters()), grads


def _gdsl_fused_layer(src, dst, num_nodes, heads, dim, params):
    """gdsl.nn.GATConv, the layer users get: one fused kernel per direction."""
    import gdsl
    from gdsl.nn import GATConv
    return _gatconv_layer(gdsl.graph, GATConv, src, dst, num_nodes, heads, dim, params)


def _gdsl_unfused_layer(src, dst, num_nodes, heads, dim, params):
    """gdsl.nn.GATConv with ``get_attention=True``: it then runs DGL's sequence of built-ins
    (``apply_edges(u_add_v)``, ``leaky_relu``, ``edge_softmax``, ``update_all(u_mul_e, sum)``) and
    returns the E x H attention beside the output, as DGL does."""
    import gdsl
    from gdsl.nn import GATConv
    return _gatconv_layer(gdsl.graph, GATConv, src, dst, num_nodes, heads, dim, params, get_attention=True)


def _pyg_layer(src, dst, num_nodes, heads, dim, params):
    from torch_geometric.nn import GATConv
    in_dim = params["W"].shape[0]
    conv = GATConv(in_dim, dim, heads=heads, add_self_loops=False, concat=True)
    names = {n for n, _ in conv.named_parameters()}
    if names != {"lin.weight", "att_src", "att_dst", "bias"}:
        raise RuntimeError(f"unexpected GATConv parameters {sorted(names)}: update _pyg_layer")
    with torch.no_grad():
        conv.lin.weight.copy_(params["W"].t())
        conv.att_src.copy_(params["attn_l"])
        conv.att_dst.copy_(params["attn_r"])
        conv.bias.copy_(params["bias"])
    edge_index = torch.stack([src, dst])

    def forward(x):
        return conv(x, edge_index)

    def grads():
        return {"W": conv.lin.weight.grad.t(), "attn_l": conv.att_src.grad, "attn_r": conv.att_dst.grad,
                "bias": conv.bias.grad}
    return forward, list(conv.parameters()), grads


def _dgl_layer(src, dst, num_nodes, heads, dim, params):
    """DGL's own GATConv (built-ins + edge_softmax: several kernels, E x H intermediates)."""
    os.environ.setdefault("DGLBACKEND", "pytorch")
    import dgl
    from dgl.nn import GATConv
    return _gatconv_layer(dgl.graph, GATConv, src, dst, num_nodes, heads, dim, params)


def make_layer(impl, src, dst, num_nodes, heads, dim, params):
    if impl == "pyg":
        return _pyg_layer(src, dst, num_nodes, heads, dim, params)
    if impl == "dgl":
        return _dgl_layer(src, dst, num_nodes, heads, dim, params)
    if impl == "gdsl-fused":
        return _gdsl_fused_layer(src, dst, num_nodes, heads, dim, params)
    return _gdsl_unfused_layer(src, dst, num_nodes, heads, dim, params)


def _inputs(nodes, edges, in_dim, heads, dim):
    src, dst = uniform_graph(nodes, edges)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(nodes, in_dim, generator=gen)
    out_weight = torch.randn(nodes, heads * dim, generator=gen)  # fixed random weighting of the output
    return src, dst, x, out_weight


# ---------------------------------------------------------------------------------------------
# Memory estimate (bytes, float32), to skip rows that cannot fit
# ---------------------------------------------------------------------------------------------
def estimate_bytes(impl: str, nodes: int, edges: int, in_dim: int, heads: int, dim: int) -> int:
    """Rough upper estimate of a row's total memory (inputs, graph, peak of one step)."""
    f = 4
    node_hd = nodes * heads * dim * f
    base = 3 * nodes * in_dim * f + 8 * node_hd + 6 * edges * 8  # x, grad, out weight; features; graph + CSR
    if impl == "pyg":
        # gathered x_j, alpha * x_j, their grads (E x H x D each) plus E x H logits and their
        # grads, int64 index copies. On N=5000/E=50000, H=8, D=64 PyG measured ~3.9 x E*H*D*4 bytes
        # of peak growth (400 MB), this estimate says 598 MB: conservative by ~1.5x.
        return base + 5 * edges * heads * dim * f + 16 * edges * heads * f + 4 * edges * 8
    if impl in ("gdsl-unfused", "dgl"):
        return base + 12 * edges * heads * f
    return base + 2 * edges * heads * f


# ---------------------------------------------------------------------------------------------
# One row (in its own process)
# ---------------------------------------------------------------------------------------------
def _is_oom(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, MemoryError) or "can't allocate memory" in text or "not enough memory" in text


def run_one(args) -> dict:
    set_threads(args.threads)
    src, dst, x, out_weight = _inputs(args.nodes, args.edges, args.in_dim, args.heads, args.dim)
    params = make_params(args.in_dim, args.heads, args.dim)
    forward, layer_params, _ = make_layer(args.impl, src, dst, args.nodes, args.heads, args.dim, params)
    x.requires_grad_()

    def step():
        x.grad = None
        for p in layer_params:
            p.grad = None
        out = forward(x)
        (out * out_weight).sum().backward()

    try:
        start = time.perf_counter()
        step()  # warm-up: compilation and cached formats are not part of the measurement
        warmup_ms = (time.perf_counter() - start) * 1000
        with RssSampler() as memory:
            timing = time_it(step, repeats=args.repeats, warmup=0)
        with LargestTensor() as largest:
            step()
    except Exception as exc:  # noqa: BLE001
        if _is_oom(exc):
            return {"oom": True, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
        raise
    extra = {}
    if args.impl.startswith("gdsl"):
        import gdsl
        extra["generated_kernels"] = len(gdsl.generated_files())  # forward and backward, this process
    return {**extra, "median_ms": round(timing.median_ms, 2), "runs_ms": [round(r, 2) for r in timing.runs_ms],
            "warmup_ms": round(warmup_ms, 1), "peak_rss_growth_mb": round(memory.growth_mb, 1),
            "largest_tensor_mb": round(largest.max_bytes / 2**20, 1),
            "largest_tensor": largest.max_desc}


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
def _graphs(spec: str) -> list[tuple[str, int, int]]:
    out = []
    for item in spec.split(","):
        item = item.strip()
        if item in GRAPHS:
            out.append((item, *GRAPHS[item]))
        else:
            nodes, edges = (int(v) for v in item.split(":"))
            out.append((item, nodes, edges))
    return out


def _row_cmd(args, impl, nodes, edges, heads, dim):
    python = DGL_PYTHON if impl == "dgl" else sys.executable
    return [python, os.path.abspath(__file__), "--impl", impl, "--nodes", str(nodes), "--edges", str(edges),
            "--heads", str(heads), "--dim", str(dim), "--in-dim", str(args.in_dim), "--threads", str(args.threads),
            "--repeats", str(args.repeats)]


def _run_row(args, impl, nodes, edges, heads, dim) -> dict:
    estimate = estimate_bytes(impl, nodes, edges, args.in_dim, heads, dim)
    info = {"estimate_mb": round(estimate / 2**20)}
    budget = args.mem_budget_gb * 2**30
    if estimate > budget:
        return {**info, "skipped": f"estimated {estimate / 2**30:.1f} GiB > budget {args.mem_budget_gb:g} GiB"}
    try:
        proc = subprocess.run(_row_cmd(args, impl, nodes, edges, heads, dim), capture_output=True, text=True,
                              timeout=args.row_timeout)
    except subprocess.TimeoutExpired:
        return {**info, "error": f"timeout after {args.row_timeout} s"}
    if proc.returncode in (-signal.SIGKILL, 137):
        return {**info, "oom": True, "error": "process killed (signal 9, likely out of memory)"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        sys.stderr.write(proc.stderr)
        return {**info, "error": tail[0]}
    return {**info, **json.loads(proc.stdout.strip().splitlines()[-1])}


def _default_out(args) -> str:
    tag = args.tag or socket.gethostname().split(".")[0] or "local"
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "results", f"attention-{tag}.json")


def drive(args) -> None:
    graphs = _graphs(args.graphs)
    heads_list = [int(h) for h in args.heads_list.split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    impls = args.impls.split(",")
    for impl in impls:
        if impl not in IMPLS:
            raise SystemExit(f"unknown impl {impl!r}; choose from {', '.join(IMPLS)}")
    out_path = args.out or _default_out(args)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    config = {"in_dim": args.in_dim, "threads": args.threads, "repeats": args.repeats,
              "mem_budget_gb": args.mem_budget_gb, "graph": "uniform"}
    if args.estimate:
        for name, nodes, edges in graphs:
            for heads in heads_list:
                for dim in dims:
                    cells = []
                    for impl in impls:
                        est = estimate_bytes(impl, nodes, edges, args.in_dim, heads, dim) / 2**30
                        cells.append(f"{impl} {est:.2f} GiB" + (" SKIP" if est > args.mem_budget_gb else ""))
                    print(f"{name} H={heads} D={dim}: " + ", ".join(cells))
        return
    rows = []
    print(f"# machine: {machine()}", flush=True)
    print(f"# writing {out_path}", flush=True)
    for name, nodes, edges in graphs:
        for heads in heads_list:
            for dim in dims:
                line = {"graph": name, "nodes": nodes, "edges": edges, "heads": heads, "dim": dim,
                        "in_dim": args.in_dim}
                for impl in impls:
                    line[impl] = _run_row(args, impl, nodes, edges, heads, dim)
                rows.append(line)
                print(json.dumps(line), flush=True)
                with open(out_path, "w") as f:  # after every row: a partial run keeps its results
                    json.dump({"kind": "attention", "machine": machine(), "config": config, "rows": rows}, f,
                              indent=1)
    print(f"# wrote {out_path}", flush=True)


# ---------------------------------------------------------------------------------------------
# --check: the three implementations agree (forward, and gradients) on a small graph
# ---------------------------------------------------------------------------------------------
def _check_results(impl, nodes, edges, in_dim, heads, dim) -> dict:
    """Forward output and every gradient of one implementation on the check graph."""
    src, dst, x0, out_weight = _inputs(nodes, edges, in_dim, heads, dim)
    params = make_params(in_dim, heads, dim)
    forward, _, grads = make_layer(impl, src, dst, nodes, heads, dim, params)
    x = x0.clone().requires_grad_()
    out = forward(x)
    (out * out_weight).sum().backward()
    return {"out": out.detach(), "x": x.grad, **{k: v.detach() for k, v in grads().items()}}


def check(args) -> None:
    set_threads(args.threads)
    nodes, edges = CHECK_GRAPH
    heads_list = [int(h) for h in args.heads_list.split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    failures = []
    for heads in heads_list:
        for dim in dims:
            results = {impl: _check_results(impl, nodes, edges, args.in_dim, heads, dim)
                       for impl in ("gdsl-fused", "gdsl-unfused", "pyg")}
            compared = ["gdsl-fused", "gdsl-unfused"]
            if os.path.exists(DGL_PYTHON):  # DGL runs in its venv; its results come back in a file
                with tempfile.TemporaryDirectory() as tmp:
                    path = os.path.join(tmp, "dgl.pt")
                    subprocess.run([DGL_PYTHON, os.path.abspath(__file__), "--dump-dgl", path, "--heads",
                                    str(heads), "--dim", str(dim), "--in-dim", str(args.in_dim)], check=True)
                    results["dgl"] = torch.load(path)
                compared.append("dgl")
            ref = results["pyg"]
            for impl in compared:
                for key in ("out", "x", "W", "attn_l", "attn_r", "bias"):
                    a, b = results[impl][key], ref[key]
                    err = (a - b).abs().max().item()
                    scale = b.abs().max().item()
                    ok = a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, scale))
                    status = "ok" if ok else "MISMATCH"
                    print(f"H={heads} D={dim} {impl:>12} vs pyg {key:>6}: max abs err {err:.2e} "
                          f"(max |ref| {scale:.2e}) {status}", flush=True)
                    if not ok:
                        failures.append(f"H={heads} D={dim} {impl} {key}: max abs err {err:.3e}")
    if failures:
        print("CHECK FAILED:\n  " + "\n  ".join(failures), file=sys.stderr, flush=True)
        raise SystemExit(1)
    print(f"check passed: gdsl-fused, gdsl-unfused{', dgl' if os.path.exists(DGL_PYTHON) else ''} and pyg agree (forward and gradients) on "
          f"N={nodes}, E={edges}, in={args.in_dim}, H in {heads_list}, D in {dims}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__,
                                     allow_abbrev=False)
    parser.add_argument("--check", action="store_true", help="numerical agreement on N=2000, E=20000; exit 1 if not")
    parser.add_argument("--dump-dgl", metavar="PATH", help="(in the DGL venv) save DGL's check results to PATH")
    parser.add_argument("--graphs", default="100k,200k",
                        help=f"comma-separated: {', '.join(f'{k} ({n}:{e})' for k, (n, e) in GRAPHS.items())} "
                             f"or nodes:edges (default 100k,200k)")
    parser.add_argument("--heads", dest="heads_list", default="1,8", help="H values, comma-separated (default 1,8)")
    parser.add_argument("--dims", default="8,64", help="D per head, comma-separated (default 8,64)")
    parser.add_argument("--impls", default=",".join(IMPLS), help="implementations, comma-separated")
    parser.add_argument("--in-dim", type=int, default=64, help="input feature width (default 64)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch and numba threads (default 2)")
    parser.add_argument("--mem-budget-gb", type=float, default=12.0,
                        help="skip rows whose memory estimate exceeds this (default 12)")
    parser.add_argument("--estimate", action="store_true",
                        help="print each row's memory estimate and whether it would be skipped; run nothing")
    parser.add_argument("--row-timeout", type=float, default=3600, help="seconds per row process (default 3600)")
    parser.add_argument("--tag", help="results file tag (default: host name)")
    parser.add_argument("--out", help="results path (default bench/results/attention-<tag>.json)")
    # one row (what the driver runs)
    parser.add_argument("--impl", choices=IMPLS, help="run one row (with --nodes, --edges, --heads H, --dim)")
    parser.add_argument("--nodes", type=int, default=100_000, help="with --impl")
    parser.add_argument("--edges", type=int, default=1_000_000, help="with --impl")
    parser.add_argument("--dim", type=int, default=64, help="with --impl: D per head of the one row")
    args = parser.parse_args()
    if args.impl:
        args.heads = int(args.heads_list)  # one row: --heads is a single value
        try:
            print(json.dumps(run_one(args)), flush=True)
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            if _is_oom(exc):
                print(json.dumps({"oom": True, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}), flush=True)
                return
            raise SystemExit(1)
    elif args.dump_dgl:
        nodes, edges = CHECK_GRAPH
        torch.save(_check_results("dgl", nodes, edges, args.in_dim, int(args.heads_list), args.dim), args.dump_dgl)
    elif args.check:
        check(args)
    else:
        drive(args)


if __name__ == "__main__":
    main()
