"""Kernel micro-benchmarks: gdsl's generated kernels against torch and torch-geometric.

    python bench/kernels.py                 # the full table (several minutes on 2 cores)
    python bench/kernels.py --quick         # one small graph
    python bench/kernels.py --impls gdsl,torch_sparse,dgl --sizes 100000:1000000   # DGL side by side
    python bench/kernels.py --case copy_u_sum --impl gdsl --graph uniform --nodes 100000 \
        --edges 1000000 --dim 64 --backward   # one row, printed as JSON (what the driver runs)
    python bench/kernels.py --cases edge_softmax --sizes 100000:1000000   # only some cases

Cases: copy_u+sum, u_mul_e+sum (edge weight E x 1), u_dot_v (forward), and edge_softmax over each
node's in-edges on (E, 8) logits (gdsl.edge_softmax vs a scatter-max/exp/index_add_ sequence,
torch_geometric.utils.softmax and DGL's edge_softmax; run once per graph, not per --dims value).
``--device cuda`` measures on a GPU (synchronised; memory: ``torch.cuda.max_memory_allocated``).

Every row runs in its own process so that peak memory (growth of peak RSS) belongs to that row
alone. Times are medians of 5 runs after a warm-up.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import (RssSampler, machine, power_law_graph, run_row, set_threads, time_it,  # noqa: E402
                          uniform_graph, write_json)

CASES = ("copy_u_sum", "u_mul_e_sum", "u_dot_v", "edge_softmax")
SOFTMAX_HEADS = 8
IMPLS = ("gdsl", "torch_sparse", "gather_index_add", "pyg", "dgl")
# DGL runs in its own venv (../shared/peers/dgl-venv.sh builds it at .venv-dgl); gdsl never imports it.
DGL_PYTHON = os.environ.get("GDSL_BENCH_DGL_PYTHON", os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), ".venv-dgl", "bin", "python"))


def _inputs(args):
    make = uniform_graph if args.graph == "uniform" else power_law_graph
    src, dst = make(args.nodes, args.edges)
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(args.nodes, args.dim, generator=gen)
    if args.case == "edge_softmax":  # w: the (E, H) logits
        w = torch.randn(args.edges, SOFTMAX_HEADS, generator=gen)
    else:
        w = torch.rand(args.edges, 1, generator=gen)
    device = torch.device(getattr(args, "device", "cpu"))
    return src.to(device), dst.to(device), h.to(device), w.to(device)


def _gdsl_fn(args, src, dst, h, w):
    import gdsl
    import gdsl.function as fn
    g = gdsl.graph((src, dst), num_nodes=args.nodes)
    g.create_formats_()
    if args.case == "edge_softmax":
        return lambda: gdsl.edge_softmax(g, w)

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
    if args.case in ("u_dot_v", "edge_softmax"):
        return None
    def adjacency():
        values = torch.ones(args.edges, device=src.device) if args.case == "copy_u_sum" else w.view(-1)
        adj_t = torch.sparse_coo_tensor(torch.stack([dst, src]), values, (args.nodes, args.nodes))
        return adj_t.coalesce().to_sparse_csr()
    if getattr(args, "backward", False) and args.case == "u_mul_e_sum":
        # the edge weights need gradients: the CSR of the weights is part of every step
        return lambda: torch.sparse.mm(adjacency(), h)
    adj_t = adjacency()
    return lambda: torch.sparse.mm(adj_t, h)


def _scatter_softmax(logits, dst, num_nodes):
    """Softmax over each destination's in-edges with torch scatter ops (max-subtracted)."""
    index = dst.view(-1, 1).expand_as(logits)
    node_max = torch.full((num_nodes, logits.shape[1]), float("-inf"), device=logits.device,
                          dtype=logits.dtype).scatter_reduce(0, index, logits, "amax", include_self=True)
    ex = (logits - node_max[dst]).exp()
    denom = torch.zeros(num_nodes, logits.shape[1], device=logits.device, dtype=logits.dtype).index_add_(0, dst, ex)
    return ex / denom[dst]


def _gather_fn(args, src, dst, h, w):
    if args.case == "edge_softmax":
        return lambda: _scatter_softmax(w, dst, args.nodes)

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
    if args.case == "edge_softmax":
        from torch_geometric.utils import softmax
        return lambda: softmax(w, dst, num_nodes=args.nodes)
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
    if args.case == "edge_softmax":
        from dgl.nn.functional import edge_softmax
        return lambda: edge_softmax(g, w)

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
    set_threads(args.threads)
    device = torch.device(args.device)
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
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out
    step()  # warm-up: compilation and cached formats are not part of the measurement
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        timing = time_it(step, repeats=args.repeats, warmup=1)
        growth_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        with RssSampler() as memory:
            timing = time_it(step, repeats=args.repeats, warmup=0)
        growth_mb = memory.growth_mb
    del seed
    # the key keeps its name on CUDA too (there: growth of torch.cuda.max_memory_allocated)
    return {"median_ms": round(timing.median_ms, 2), "runs_ms": [round(r, 2) for r in timing.runs_ms],
            "peak_rss_growth_mb": round(growth_mb, 1)}


def _row_args(case, impl, graph, nodes, edges, dim, backward, threads, repeats, device="cpu"):
    out = ["--case", case, "--impl", impl, "--graph", graph, "--nodes", str(nodes), "--edges", str(edges),
           "--dim", str(dim), "--threads", str(threads), "--repeats", str(repeats), "--device", device]
    return out + (["--backward"] if backward else [])


def plan(args) -> list[dict]:
    """The rows the driver runs, in order (each row: one process per implementation)."""
    sizes = [(10_000, 100_000)] if args.quick else [(100_000, 1_000_000), (200_000, 5_000_000)]
    dims = [16] if args.quick else [16, 64, 256]
    graphs = ["uniform"] if args.quick else ["uniform", "power_law"]
    if args.sizes:
        sizes = [tuple(int(x) for x in pair.split(":")) for pair in args.sizes.split(",")]
    if args.dims:
        dims = [int(d) for d in args.dims.split(",")]
    if args.graphs:
        graphs = args.graphs.split(",")
    cases = args.cases.split(",") if args.cases else list(CASES)
    rows = []
    for graph in graphs:
        for nodes, edges in sizes:
            for i, dim in enumerate(dims):
                for case in cases:
                    if case == "edge_softmax" and i:  # (E, 8) logits whatever the feature size: once per graph
                        continue
                    width = SOFTMAX_HEADS if case == "edge_softmax" else dim
                    for backward in ([False] if case == "u_dot_v" else [False, True]):
                        rows.append({"graph": graph, "nodes": nodes, "edges": edges, "dim": width, "case": case,
                                     "backward": backward})
    return rows


def default_impls(device: str = "cpu") -> list[str]:
    return [i for i in IMPLS if i != "dgl" or (os.path.exists(DGL_PYTHON) and device == "cpu")]


def drive(args) -> dict:
    impls = args.impls.split(",") if args.impls else default_impls(args.device)
    rows = []
    if not args.dry_run:
        print(f"# machine: {machine()}", flush=True)
    for line in plan(args):
        for impl in impls:
            python = DGL_PYTHON if impl == "dgl" else sys.executable
            cmd = [python, os.path.abspath(__file__)] + _row_args(
                line["case"], impl, line["graph"], line["nodes"], line["edges"], line["dim"], line["backward"],
                args.threads, args.repeats, args.device)
            if args.dry_run:
                print("would run:", " ".join(cmd))
                line[impl] = {"dry_run": True}
                continue
            line[impl] = run_row(cmd, args.row_timeout)
        rows.append(line)
        if not args.dry_run:
            print(json.dumps(line), flush=True)
    result = {"kind": "kernels", "machine": machine(), "threads": args.threads, "device": args.device,
              "rows": rows}
    if args.out:
        write_json(args.out, result)
    return result


def main(argv: list[str] | None = None) -> None:
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
    parser.add_argument("--cases", help=f"cases, comma-separated (default: {','.join(CASES)})")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the DGL venv is CPU only)")
    parser.add_argument("--dry-run", action="store_true", help="list the row commands without running them")
    parser.add_argument("--row-timeout", type=int, default=1800, help="seconds per row process")
    parser.add_argument("--impls", help=f"implementations, comma-separated (default: {','.join(IMPLS)}; "
                                         "dgl when .venv-dgl exists)")
    args = parser.parse_args(argv)
    if args.case and args.impl:
        print(json.dumps(run_one(args)))
    else:
        drive(args)


if __name__ == "__main__":
    main()
