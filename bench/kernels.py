"""Kernel micro-benchmarks: gdsl's generated kernels against torch and torch-geometric.

    python bench/kernels.py                 # the full table (several minutes on 2 cores)
    python bench/kernels.py --quick         # one small graph
    python bench/kernels.py --impls gdsl,torch_sparse,dgl --sizes 100000:1000000   # DGL side by side
    python bench/kernels.py --case copy_u_sum --impl gdsl --graph uniform --nodes 100000 \
        --edges 1000000 --dim 64 --backward   # one row, printed as JSON (what the driver runs)

Every row runs in its own process so that peak memory (growth of peak RSS) belongs to that row
alone. Times are medians of 5 runs after a warm-up.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import RssSampler, machine, power_law_graph, time_it, uniform_graph  # noqa: E402

CASES = ("copy_u_sum", "u_mul_e_sum", "u_dot_v")
IMPLS = ("gdsl", "torch_sparse", "gather_index_add", "pyg", "dgl")
# DGL runs in its own venv (../shared/peers/dgl-venv.sh builds it at .venv-dgl); gdsl never imports it.
DGL_PYTHON = os.environ.get("GDSL_BENCH_DGL_PYTHON", os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), ".venv-dgl", "bin", "python"))


def _inputs(args):
    make = uniform_graph if args.graph == "uniform" else power_law_graph
    src, dst = make(args.nodes, args.edges)
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(args.nodes, args.dim, generator=gen)
    w = torch.rand(args.edges, 1, generator=gen)
    return src, dst, h, w


def _gdsl_fn(args, src, dst, h, w):
    import gdsl
    import gdsl.function as fn
    g = gdsl.graph((src, dst), num_nodes=args.nodes)
    g.create_formats_()

    def run():
        with g.local_scope():
            g.ndata["h"] = h
            if args.case == "u_dot_v":
                g.apply_edges(fn.u_dot_v("h", "h", "s"))
                return g.edata["s"]
            g.edata["w"] = w
            msg = fn.copy_u("h", "m") if args.case == "copy_u_sum" else fn.u_mul_e("h", "w", "m")
            g.update_all(msg, fn.sum("m", "out"))
            return g.ndata["out"]
    return run


def _torch_sparse_fn(args, src, dst, h, w):
    values = torch.ones(args.edges) if args.case == "copy_u_sum" else w.view(-1)
    adj_t = torch.sparse_coo_tensor(torch.stack([dst, src]), values, (args.nodes, args.nodes))
    adj_t = adj_t.coalesce().to_sparse_csr()
    if args.case == "u_dot_v":
        return None
    return lambda: torch.sparse.mm(adj_t, h)


def _gather_fn(args, src, dst, h, w):
    def run():
        if args.case == "u_dot_v":
            return (h[src] * h[dst]).sum(-1, keepdim=True)
        m = h[src] if args.case == "copy_u_sum" else h[src] * w
        return torch.zeros_like(h).index_add_(0, dst, m)
    return run


def _pyg_fn(args, src, dst, h, w):
    from torch_geometric.nn import MessagePassing

    class Conv(MessagePassing):
        def __init__(self):
            super().__init__(aggr="add")

        def forward(self, x, edge_index, weight=None):
            return self.propagate(edge_index, x=x, weight=weight)

        def message(self, x_j, weight):
            return x_j if weight is None else x_j * weight

    edge_index = torch.stack([src, dst])
    conv = Conv()
    if args.case == "u_dot_v":
        return lambda: (h[edge_index[0]] * h[edge_index[1]]).sum(-1, keepdim=True)
    weight = None if args.case == "copy_u_sum" else w
    return lambda: conv(h, edge_index, weight)


def _dgl_fn(args, src, dst, h, w):
    os.environ.setdefault("DGLBACKEND", "pytorch")
    import dgl
    import dgl.function as dfn
    g = dgl.graph((src, dst), num_nodes=args.nodes)
    g.create_formats_()

    def run():
        with g.local_scope():
            g.ndata["h"] = h
            if args.case == "u_dot_v":
                g.apply_edges(dfn.u_dot_v("h", "h", "s"))
                return g.edata["s"]
            g.edata["w"] = w
            msg = dfn.copy_u("h", "m") if args.case == "copy_u_sum" else dfn.u_mul_e("h", "w", "m")
            g.update_all(msg, dfn.sum("m", "out"))
            return g.ndata["out"]
    return run


def run_one(args) -> dict:
    torch.set_num_threads(args.threads)
    src, dst, h, w = _inputs(args)
    if args.backward:
        h.requires_grad_()
        w.requires_grad_()
    make = {"gdsl": _gdsl_fn, "torch_sparse": _torch_sparse_fn, "gather_index_add": _gather_fn,
            "pyg": _pyg_fn, "dgl": _dgl_fn}[args.impl]
    fn = make(args, src, dst, h, w)
    if fn is None:
        return {"skipped": True}
    seed = torch.randn(1)

    def step():
        out = fn()
        if args.backward:
            h.grad = None
            if w.grad is not None:
                w.grad = None
            out.sum().backward() if out.dim() else out.backward()
        return out
    step()  # warm-up: compilation and cached formats are not part of the measurement
    with RssSampler() as memory:
        timing = time_it(step, repeats=args.repeats, warmup=0)
    del seed
    return {"median_ms": round(timing.median_ms, 2), "runs_ms": [round(r, 2) for r in timing.runs_ms],
            "peak_rss_growth_mb": round(memory.growth_mb, 1)}


def _row_args(case, impl, graph, nodes, edges, dim, backward, threads, repeats):
    out = ["--case", case, "--impl", impl, "--graph", graph, "--nodes", str(nodes), "--edges", str(edges),
           "--dim", str(dim), "--threads", str(threads), "--repeats", str(repeats)]
    return out + (["--backward"] if backward else [])


def drive(args) -> None:
    sizes = [(10_000, 100_000)] if args.quick else [(100_000, 1_000_000), (200_000, 5_000_000)]
    dims = [16] if args.quick else [16, 64, 256]
    graphs = ["uniform"] if args.quick else ["uniform", "power_law"]
    if args.sizes:
        sizes = [tuple(int(x) for x in pair.split(":")) for pair in args.sizes.split(",")]
    if args.dims:
        dims = [int(d) for d in args.dims.split(",")]
    if args.graphs:
        graphs = args.graphs.split(",")
    impls = args.impls.split(",") if args.impls else [i for i in IMPLS if i != "dgl" or os.path.exists(DGL_PYTHON)]
    rows = []
    print(f"# machine: {machine()}", flush=True)
    for graph in graphs:
        for nodes, edges in sizes:
            for dim in dims:
                for case in CASES:
                    for backward in ([False] if case == "u_dot_v" else [False, True]):
                        line = {"graph": graph, "nodes": nodes, "edges": edges, "dim": dim, "case": case,
                                "backward": backward}
                        for impl in impls:
                            python = DGL_PYTHON if impl == "dgl" else sys.executable
                            cmd = [python, __file__] + _row_args(case, impl, graph, nodes, edges, dim,
                                                                         backward, args.threads, args.repeats)
                            proc = subprocess.run(cmd, capture_output=True, text=True)
                            if proc.returncode != 0:
                                line[impl] = {"error": proc.stderr.strip().splitlines()[-1:]}
                            else:
                                line[impl] = json.loads(proc.stdout.strip().splitlines()[-1])
                        rows.append(line)
                        print(json.dumps(line), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": machine(), "rows": rows}, f, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=CASES)
    parser.add_argument("--impl", choices=IMPLS)
    parser.add_argument("--graph", default="uniform", choices=["uniform", "power_law"])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--edges", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--backward", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", help="write all rows as JSON here")
    parser.add_argument("--sizes", help="nodes:edges pairs, comma-separated (default: the full table)")
    parser.add_argument("--dims", help="feature sizes, comma-separated")
    parser.add_argument("--graphs", help="uniform,power_law")
    parser.add_argument("--impls", help=f"implementations, comma-separated (default: {','.join(IMPLS)}; "
                                         "dgl when .venv-dgl exists)")
    args = parser.parse_args()
    if args.case and args.impl:
        print(json.dumps(run_one(args)))
    else:
        drive(args)


if __name__ == "__main__":
    main()
