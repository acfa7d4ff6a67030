"""Layer forward + backward: gdsl.nn against torch-geometric (eager and torch.compile) and DGL.

    python bench/layers.py                       # GraphConv, GATConv, SAGEConv on 100k/1M and 200k/5M
    python bench/layers.py --quick               # one small graph
    python bench/layers.py --check               # same outputs and gradients, every implementation
    python bench/layers.py --layer gat --impl gdsl --nodes 100000 --edges 1000000 --dim 64
                                                 # one row, printed as JSON (what the driver runs)

The same layer with the same weights in every library: ``GraphConv(norm='both')`` vs PyG's
``GCNConv(add_self_loops=False)``, ``GATConv`` with 8 heads of D/8 (no self-loops added),
``SAGEConv('mean')``; in = out = D features. Graphs are uniform random (``torch.randint``) with
self-loops, so every node has an in-edge. Each row runs in its own process (peak RSS growth
belongs to it alone); times are medians of ``--repeats`` runs after a warm-up (compilation
excluded). DGL runs from its own venv (``../shared/peers/dgl-venv.sh`` -> ``.venv-dgl``).
``--device cuda`` measures on a GPU (memory: ``torch.cuda.max_memory_allocated``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import (RssSampler, machine, run_row, set_threads, time_it, uniform_graph,  # noqa: E402
                          write_json)

LAYERS = ("gcn", "gat", "sage")
IMPLS = ("gdsl", "pyg", "pyg_compile", "dgl")
HEADS = 8
DGL_PYTHON = os.environ.get("GDSL_BENCH_DGL_PYTHON", os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), ".venv-dgl", "bin", "python"))
SIZES = [(100_000, 1_000_000, 64), (200_000, 5_000_000, 32)]
QUICK = [(10_000, 100_000, 32)]


# ---------------------------------------------------------------------------------------------
# Inputs and shared weights (gdsl / DGL layout; PyG gets transposed copies)
# ---------------------------------------------------------------------------------------------
def graph_edges(nodes: int, edges: int, symmetric: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform random edges plus one self-loop per node (appended last)."""
    src, dst = uniform_graph(nodes, edges - nodes)
    if symmetric:
        src, dst = torch.cat([src, dst]), torch.cat([dst, src])
    loops = torch.arange(nodes)
    return torch.cat([src, loops]), torch.cat([dst, loops])


def weights(layer: str, dim: int, seed: int = 3) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=None):
        scale = scale if scale is not None else shape[0] ** -0.5
        return torch.randn(*shape, generator=gen) * scale
    if layer == "gcn":
        return {"weight": rand(dim, dim), "bias": rand(dim, scale=0.1)}
    if layer == "sage":
        return {"fc_self.weight": rand(dim, dim), "fc_neigh.weight": rand(dim, dim), "fc_self.bias": rand(dim, scale=0.1)}
    out = dim // HEADS
    return {"fc.weight": rand(HEADS * out, dim), "attn_l": rand(1, HEADS, out, scale=0.3),
            "attn_r": rand(1, HEADS, out, scale=0.3), "bias": rand(HEADS * out, scale=0.1)}


def _gdsl_like(module_lib, layer: str, dim: int):
    """The layer from gdsl.nn or dgl.nn (same signatures, same parameter names)."""
    if layer == "gcn":
        return module_lib.GraphConv(dim, dim, norm="both", allow_zero_in_degree=True)
    if layer == "sage":
        return module_lib.SAGEConv(dim, dim, "mean")
    return module_lib.GATConv(dim, dim // HEADS, HEADS, allow_zero_in_degree=True)


def make_gdsl(layer, src, dst, nodes, dim, w, device):
    import gdsl
    import gdsl.nn as gnn
    g = gdsl.graph((src, dst), num_nodes=nodes).to(device)
    g.create_formats_()
    conv = _gdsl_like(gnn, layer, dim).to(device)
    conv.load_state_dict({k: v.to(device) for k, v in w.items()})
    return (lambda x: conv(g, x).reshape(nodes, -1)), conv


def make_dgl(layer, src, dst, nodes, dim, w, device):
    os.environ.setdefault("DGLBACKEND", "pytorch")
    import dgl
    import dgl.nn as dglnn
    g = dgl.graph((src, dst), num_nodes=nodes).to(device)
    g.create_formats_()
    conv = _gdsl_like(dglnn, layer, dim).to(device)
    conv.load_state_dict({k: v.to(device) for k, v in w.items()})
    return (lambda x: conv(g, x).reshape(nodes, -1)), conv


def make_pyg(layer, src, dst, nodes, dim, w, device, compiled=False):
    from torch_geometric.nn import GATConv, GCNConv, SAGEConv
    edge_index = torch.stack([src, dst]).to(device)
    if layer == "gcn":
        conv = GCNConv(dim, dim, add_self_loops=False, normalize=True)
        mapping = {"lin.weight": w["weight"].t(), "bias": w["bias"]}
    elif layer == "sage":
        conv = SAGEConv(dim, dim, aggr="mean")
        mapping = {"lin_l.weight": w["fc_neigh.weight"], "lin_l.bias": w["fc_self.bias"], "lin_r.weight": w["fc_self.weight"]}
    else:
        conv = GATConv(dim, dim // HEADS, heads=HEADS, add_self_loops=False)
        mapping = {"lin.weight": w["fc.weight"], "att_src": w["attn_l"], "att_dst": w["attn_r"], "bias": w["bias"]}
    names = {n for n, _ in conv.named_parameters()}
    if names != set(mapping):
        raise RuntimeError(f"unexpected PyG parameters {sorted(names)} for {layer}: update make_pyg")
    conv.load_state_dict({k: v.contiguous() for k, v in mapping.items()})
    conv = conv.to(device)
    run = torch.compile(conv) if compiled else conv
    return (lambda x: run(x, edge_index)), conv


def make(impl, layer, src, dst, nodes, dim, w, device):
    if impl == "gdsl":
        return make_gdsl(layer, src, dst, nodes, dim, w, device)
    if impl == "dgl":
        return make_dgl(layer, src, dst, nodes, dim, w, device)
    return make_pyg(layer, src, dst, nodes, dim, w, device, compiled=impl == "pyg_compile")


# ---------------------------------------------------------------------------------------------
# One row
# ---------------------------------------------------------------------------------------------
def run_one(args) -> dict:
    set_threads(args.threads)
    device = torch.device(args.device)
    src, dst = graph_edges(args.nodes, args.edges)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.nodes, args.dim, generator=gen).to(device).requires_grad_()
    forward, module = make(args.impl, args.layer, src, dst, args.nodes, args.dim, weights(args.layer, args.dim), device)
    out_weight = torch.randn(args.nodes, args.dim, generator=gen).to(device)
    params = list(module.parameters())

    def step():
        x.grad = None
        for p in params:
            p.grad = None
        (forward(x) * out_weight).sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    step()  # warm-up: compilation (gdsl kernels, torch.compile) and cached formats excluded
    warmup_ms = (time.perf_counter() - start) * 1000
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        timing = time_it(step, repeats=args.repeats, warmup=1)
        memory_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        with RssSampler() as memory:
            timing = time_it(step, repeats=args.repeats, warmup=0)
        memory_mb = memory.growth_mb
    return {"median_ms": round(timing.median_ms, 2), "runs_ms": [round(r, 2) for r in timing.runs_ms],
            "warmup_ms": round(warmup_ms, 1), "memory_mb": round(memory_mb, 1)}


# ---------------------------------------------------------------------------------------------
# Driver and check
# ---------------------------------------------------------------------------------------------
def _python(impl: str) -> str:
    return DGL_PYTHON if impl == "dgl" else sys.executable


def default_impls(device: str) -> list[str]:
    impls = list(IMPLS)
    if not os.path.exists(DGL_PYTHON) or device != "cpu":
        impls.remove("dgl")  # the DGL venv is a CPU build
    return impls


def drive(args) -> dict:
    sizes = QUICK if args.quick else SIZES
    if args.sizes:
        sizes = [tuple(int(v) for v in item.split(":")) for item in args.sizes.split(",")]
    layers = args.layers.split(",") if args.layers else list(LAYERS)
    impls = args.impls.split(",") if args.impls else default_impls(args.device)
    rows = []
    print(f"# machine: {machine()}", flush=True)
    for nodes, edges, dim in sizes:
        for layer in layers:
            row = {"layer": layer, "nodes": nodes, "edges": edges, "dim": dim, "device": args.device}
            for impl in impls:
                cmd = [_python(impl), os.path.abspath(__file__), "--layer", layer, "--impl", impl,
                       "--nodes", str(nodes), "--edges", str(edges), "--dim", str(dim), "--threads",
                       str(args.threads), "--repeats", str(args.repeats), "--device", args.device]
                row[impl] = run_row(cmd, args.row_timeout)
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"machine": machine(), "threads": args.threads, "device": args.device, "rows": rows}
    if args.out:
        write_json(args.out, result)
    return result


def check(args) -> None:
    """Every implementation gives the same output and input gradient on a small symmetric graph
    (symmetric so that PyG's in-degree normalisation equals DGL's out/in-degree one)."""
    nodes, edges, dim = 500, 4000, 16
    src, dst = graph_edges(nodes, edges, symmetric=True)
    results = {}
    for layer in args.layers.split(",") if args.layers else LAYERS:
        for impl in args.impls.split(",") if args.impls else default_impls("cpu"):
            if impl == "pyg_compile":
                continue
            code = (f"import sys, torch; sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))!r});"
                    f"from bench.layers import *; src, dst = graph_edges({nodes}, {edges}, symmetric=True);"
                    f"f, m = make({impl!r}, {layer!r}, src, dst, {nodes}, {dim}, weights({layer!r}, {dim}), 'cpu');"
                    f"x = torch.randn({nodes}, {dim}, generator=torch.Generator().manual_seed(1), dtype=torch.float32).requires_grad_();"
                    f"out = f(x); out.pow(2).sum().backward();"
                    f"print(repr([out.sum().item(), out.abs().sum().item(), x.grad.abs().sum().item()]))")
            proc = subprocess.run([_python(impl), "-c", code], capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{layer:5s} {impl:12s} ERROR {proc.stderr.strip().splitlines()[-1:]}")
                continue
            results[(layer, impl)] = eval(proc.stdout.strip().splitlines()[-1])  # noqa: S307 (our own output)
            print(f"{layer:5s} {impl:12s} out sum {results[(layer, impl)][0]:.6g}  |out| {results[(layer, impl)][1]:.6g}"
                  f"  |grad x| {results[(layer, impl)][2]:.6g}")
    bad = []
    for (layer, impl), values in results.items():
        ref = results.get((layer, "gdsl"))
        if ref and any(abs(a - b) > 1e-3 * max(1.0, abs(b)) for a, b in zip(values[1:], ref[1:])):
            bad.append(f"{layer}/{impl}")
    print("check:", "all implementations agree" if not bad else f"MISMATCH {bad}")
    if bad:
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", choices=LAYERS)
    parser.add_argument("--impl", choices=IMPLS)
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--edges", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--sizes", help="nodes:edges:dim triples, comma-separated")
    parser.add_argument("--layers", help=f"comma-separated subset of {','.join(LAYERS)}")
    parser.add_argument("--impls", help=f"comma-separated subset of {','.join(IMPLS)}")
    parser.add_argument("--row-timeout", type=int, default=900)
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()
    if args.check:
        check(args)
    elif args.layer and args.impl:
        print(json.dumps(run_one(args)))
    else:
        drive(args)


if __name__ == "__main__":
    main()
