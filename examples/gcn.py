"""GCN (Kipf & Welling, 2017) on Cora / CiteSeer with gdsl.nn.GraphConv on compiled kernels.

Two GraphConv layers (symmetric normalization D^-1/2 (A + I) D^-1/2, one self-loop per node),
hidden 16, ReLU, dropout 0.5 on the input and hidden features, Adam lr 0.01, weight decay 5e-4,
200 epochs: the paper's and DGL's example's settings.

    python examples/gcn.py --dataset citeseer --seeds 10
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402  (examples/common.py; sets Triton up before gdsl is imported)
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import gdsl.nn as gnn  # noqa: E402


class GCN(nn.Module):
    def __init__(self, in_feats: int, hidden: int, num_classes: int, dropout: float, input_dropout: float):
        super().__init__()
        self.layer1 = gnn.GraphConv(in_feats, hidden, activation=F.relu)
        self.layer2 = gnn.GraphConv(hidden, num_classes)
        self.input_dropout = nn.Dropout(input_dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, g, x):
        h = self.layer1(g, self.input_dropout(x))
        return self.layer2(g, self.dropout(h))


def build(args, data: common.Data) -> nn.Module:
    return GCN(data.in_feats, args.hidden, data.num_classes, args.dropout,
               args.dropout if args.input_dropout is None else args.input_dropout)


def make_parser():
    p = common.parser(__doc__.splitlines()[0], hidden=16, dropout=0.5, lr=0.01, weight_decay=5e-4)
    p.add_argument("--input-dropout", type=float, default=None,
                   help="dropout on the input features (default: the --dropout value)")
    return p


def main(argv: list[str] | None = None):
    return common.main(make_parser(), build, name="GCN", self_loops=True, argv=argv)


if __name__ == "__main__":
    main()
