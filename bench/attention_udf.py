"""The DGL attention UDF (MLP(cat(h_dst, h_src)) scores, softmax over the mailbox), fwd+bwd.

This is the code DGL users write (../shared/peers/README.md measures DGL running it at 951 ms on
100k nodes / 1M edges, D=16, and 128 ms for the same model with built-ins + edge_softmax). gdsl
compiles it unchanged into one fused kernel; the reference executor runs it as DGL does (degree
buckets) and is timed too, as the "what a UDF costs without a compiler" row.

    python bench/attention_udf.py [--nodes 100000 --edges 1000000 --dim 16 --repeats 5]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import RssSampler, machine, set_threads, time_it  # noqa: E402

MLP: nn.Module | None = None


def msg_func(edges):
    h_src, h_dst = edges.src["h"], edges.dst["h"]
    return {"m": h_src, "alpha_hat": MLP(torch.cat([h_dst, h_src], 1))}


def reduce_func(nodes):
    alpha = torch.softmax(nodes.mailbox["alpha_hat"], 1)
    return {"h_n": (nodes.mailbox["m"] * alpha).sum(1)}


def run(backend: str, nodes: int, edges: int, dim: int, repeats: int) -> dict:
    global MLP
    import gdsl
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(0, nodes, (edges,), generator=gen)
    dst = torch.randint(0, nodes, (edges,), generator=gen)
    g = gdsl.graph((src, dst), num_nodes=nodes)
    g.create_formats_()
    torch.manual_seed(0)
    MLP = nn.Sequential(nn.Linear(2 * dim, 1), nn.LeakyReLU(0.2))
    h = torch.randn(nodes, dim, generator=gen, requires_grad=True)
    weight = torch.randn(nodes, dim, generator=gen)

    def step():
        h.grad = None
        MLP.zero_grad()
        with gdsl.use_backend(backend), g.local_scope():
            g.ndata["h"] = h
            g.update_all(msg_func, reduce_func)
            out = g.ndata["h_n"]
        (out * weight).sum().backward()

    step()
    with RssSampler() as memory:
        timing = time_it(step, repeats=repeats, warmup=0)
    return {"backend": backend, "median_ms": round(timing.median_ms, 1),
            "runs_ms": [round(r, 1) for r in timing.runs_ms], "peak_rss_growth_mb": round(memory.growth_mb, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--edges", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", default="numba,reference")
    args = parser.parse_args()
    set_threads(args.threads)
    print(f"# {machine()}")
    for backend in args.backends.split(","):
        row = run(backend, args.nodes, args.edges, args.dim, args.repeats)
        print(json.dumps({"nodes": args.nodes, "edges": args.edges, "dim": args.dim, **row}), flush=True)


if __name__ == "__main__":
    main()
