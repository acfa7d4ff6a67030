"""GAT (Velickovic et al., 2018) on Cora / CiteSeer with gdsl.nn.GATConv on the fused attention kernel.

Layer 1: 8 heads x 8 hidden features, concatenated, ELU; layer 2: one head (DGL's example on Cora and
CiteSeer; the paper's Cora model). Feature and attention dropout 0.6 in both layers, LeakyReLU slope
0.2, one self-loop per node, Adam lr 0.005, weight decay 5e-4, 200 epochs (the paper trains with
early stopping, patience 100: --patience 100 --epochs 1000).

Each GATConv runs its scores, edge softmax, attention dropout and weighted sum as one generated
kernel per direction (numba on CPU, Triton on CUDA).

    python examples/gat.py --dataset cora --seeds 10
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402  (examples/common.py; sets Triton up before gdsl is imported)
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import gdsl.nn as gnn  # noqa: E402


class GAT(nn.Module):
    def __init__(self, in_feats: int, hidden: int, num_classes: int, heads: int = 8, out_heads: int = 1,
                 feat_drop: float = 0.6, attn_drop: float = 0.6, negative_slope: float = 0.2):
        super().__init__()
        self.layer1 = gnn.GATConv(in_feats, hidden, heads, feat_drop=feat_drop, attn_drop=attn_drop,
                                  negative_slope=negative_slope, activation=F.elu)
        self.layer2 = gnn.GATConv(hidden * heads, num_classes, out_heads, feat_drop=feat_drop,
                                  attn_drop=attn_drop, negative_slope=negative_slope)

    def forward(self, g, x):
        h = self.layer1(g, x).flatten(1)       # (N, heads * hidden)
        return self.layer2(g, h).mean(1)       # (N, classes), averaged over the output heads


def build(args, data: common.Data) -> nn.Module:
    return GAT(data.in_feats, args.hidden, data.num_classes, args.heads, args.out_heads,
               args.dropout, args.attn_drop, args.negative_slope)


def make_parser():
    p = common.parser(__doc__.splitlines()[0], hidden=8, dropout=0.6, lr=0.005, weight_decay=5e-4)
    p.add_argument("--heads", type=int, default=8,
                   help="attention heads of the hidden layer (default: %(default)s)")
    p.add_argument("--out-heads", type=int, default=1,
                   help="attention heads of the output layer, averaged (default: %(default)s)")
    p.add_argument("--attn-drop", type=float, default=0.6, help="attention dropout (default: %(default)s)")
    p.add_argument("--negative-slope", type=float, default=0.2,
                   help="LeakyReLU slope of the attention scores (default: %(default)s)")
    return p


def main(argv: list[str] | None = None):
    return common.main(make_parser(), build, name="GAT", self_loops=True, argv=argv)


if __name__ == "__main__":
    main()
