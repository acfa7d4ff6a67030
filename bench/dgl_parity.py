"""Porting check: every gdsl.nn layer loads DGL 2.1's state dict and gives DGL's outputs.

    python bench/dgl_parity.py          # needs the DGL venv (../shared/peers/dgl-venv.sh -> .venv-dgl)

DGL runs in its own venv (gdsl never imports DGL): that process builds each layer, runs it on a
random graph (homogeneous with self-loops, and a bipartite block with pair inputs) and saves its
state dict, inputs and outputs; this process loads the state dict into the gdsl layer with
``strict=True`` (same parameter names and shapes) and compares outputs and input gradients.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DGL_PYTHON = os.environ.get("GDSL_BENCH_DGL_PYTHON", os.path.join(ROOT, ".venv-dgl", "bin", "python"))

# (name, constructor source, block?) -- the source is evaluated with `nn` bound to dgl.nn or gdsl.nn
CASES = [
    ("GraphConv both", "nn.GraphConv(6, 5)", False),
    ("GraphConv right edge_weight", "nn.GraphConv(6, 5, norm='right')", False),
    ("GraphConv block", "nn.GraphConv(6, 5, norm='both', allow_zero_in_degree=True)", True),
    ("GATConv", "nn.GATConv(6, 4, 3)", False),
    ("GATConv residual", "nn.GATConv(6, 4, 3, residual=True)", False),
    ("GATConv block", "nn.GATConv((6, 7), 4, 3, allow_zero_in_degree=True, residual=True)", True),
    ("GATv2Conv", "nn.GATv2Conv(6, 4, 3)", False),
    ("GATv2Conv shared residual", "nn.GATv2Conv(6, 4, 3, share_weights=True, residual=True)", False),
    ("GATv2Conv block", "nn.GATv2Conv((6, 7), 4, 3, allow_zero_in_degree=True)", True),
    ("SAGEConv mean", "nn.SAGEConv(6, 5, 'mean')", False),
    ("SAGEConv gcn", "nn.SAGEConv(6, 8, 'gcn')", False),
    ("SAGEConv pool", "nn.SAGEConv(6, 5, 'pool')", False),
    ("SAGEConv lstm", "nn.SAGEConv(6, 5, 'lstm')", False),
    ("SAGEConv mean block", "nn.SAGEConv((6, 7), 5, 'mean')", True),
    ("GINConv sum", "nn.GINConv(torch.nn.Linear(6, 5), 'sum', learn_eps=True, init_eps=0.1)", False),
    ("GINConv max", "nn.GINConv(torch.nn.Linear(6, 5), 'max')", False),
    ("GINConv mean", "nn.GINConv(torch.nn.Linear(6, 5), 'mean')", False),
    ("EdgeConv", "nn.EdgeConv(6, 5)", False),
    ("EdgeConv batch_norm", "nn.EdgeConv(6, 5, batch_norm=True)", False),
]

DGL_SIDE = r'''
import os, sys, torch
os.environ.setdefault("DGLBACKEND", "pytorch")
import dgl, dgl.nn as nn
cases, path = eval(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
n = 40
src = torch.randint(0, n, (160,)); dst = torch.randint(0, n, (160,))
g = dgl.add_self_loop(dgl.graph((src, dst), num_nodes=n))
bsrc = torch.randint(0, 30, (90,)); bdst = torch.randint(0, 12, (90,))
block = dgl.create_block((bsrc, bdst), num_src_nodes=30, num_dst_nodes=12)
out = {"graph": (g.edges()[0], g.edges()[1], n), "block": (bsrc, bdst, 30, 12), "cases": {}}
for name, ctor, is_block in cases:
    torch.manual_seed(1)
    layer = eval(ctor)
    with torch.no_grad():  # non-zero biases everywhere
        for p in layer.parameters():
            p.add_(torch.randn(p.shape) * 0.1)
    layer.eval()
    if is_block:
        width_dst = 6 if "gcn" in name or "GraphConv" in name else 7
        x = (torch.randn(30, 6, requires_grad=True), torch.randn(12, width_dst, requires_grad=True))
        y = layer(block, x)
        leaves = list(x)
    else:
        x = torch.randn(n, 6, requires_grad=True)
        kwargs = {"edge_weight": torch.rand(g.num_edges())} if "edge_weight" in name else {}
        y = layer(g, x, **kwargs)
        leaves = [x]
    y.pow(2).sum().backward()
    out["cases"][name] = {"state": layer.state_dict(), "x": [t.detach() for t in leaves],
                          "y": y.detach(), "grads": [t.grad for t in leaves],
                          "edge_weight": kwargs.get("edge_weight") if not is_block else None}
torch.save(out, path)
'''


def main() -> None:
    if not os.path.exists(DGL_PYTHON):
        sys.exit(f"no DGL venv at {DGL_PYTHON}: build it with ../shared/peers/dgl-venv.sh .venv-dgl")
    sys.path.insert(0, ROOT)
    import gdsl
    import gdsl.nn as nn  # noqa: F401 (used by the constructors' source)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dgl.pt")
        proc = subprocess.run([DGL_PYTHON, "-c", DGL_SIDE, repr(CASES), path], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(proc.stderr)
        ref = torch.load(path, weights_only=False)
    src, dst, n = ref["graph"]
    g = gdsl.graph((src, dst), num_nodes=n)
    bsrc, bdst, ns, nd = ref["block"]
    block = gdsl.create_block((bsrc, bdst), num_src_nodes=ns, num_dst_nodes=nd)
    failures = 0
    for name, ctor, is_block in CASES:
        case = ref["cases"][name]
        torch.manual_seed(1)
        layer = eval(ctor)  # noqa: S307 (our own table)
        layer.load_state_dict(case["state"], strict=True)
        layer.eval()
        leaves = [t.clone().requires_grad_() for t in case["x"]]
        if is_block:
            y = layer(block, tuple(leaves))
        else:
            kwargs = {"edge_weight": case["edge_weight"]} if case["edge_weight"] is not None else {}
            y = layer(g, leaves[0], **kwargs)
        y.pow(2).sum().backward()
        err = (y - case["y"]).abs().max().item()
        gerr = max(((a.grad if a.grad is not None else torch.zeros_like(a)) -
                    (b if b is not None else torch.zeros_like(a))).abs().max().item()
                   for a, b in zip(leaves, case["grads"]))
        ok = y.shape == case["y"].shape and err < 1e-4 and gerr < 1e-3
        failures += not ok
        print(f"{'ok ' if ok else 'BAD'} {name:30s} out {tuple(y.shape)} max|diff| {err:.2e}  grad {gerr:.2e}")
    print(f"{len(CASES) - failures}/{len(CASES)} layers match DGL 2.1")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
