"""GraphSAGE (Hamilton et al., 2017) on Cora / CiteSeer with gdsl.nn.SAGEConv, full-graph training.

Two SAGEConv layers, hidden 16, ReLU, dropout 0.5, Adam lr 0.01, weight decay 5e-4, 200 epochs, as
DGL's full-graph example; aggregator 'gcn' (each node averaged with its in-neighbours, no separate
self weight; no self-loops needed) by default, or 'mean' / 'pool' (--aggregator).

    python examples/sage.py --dataset cora --aggregator mean --seeds 10
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402  (examples/common.py; sets Triton up before gdsl is imported)
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import gdsl.nn as gnn  # noqa: E402


class SAGE(nn.Module):
    def __init__(self, in_feats: int, hidden: int, num_classes: int, aggregator: str, dropout: float):
        super().__init__()
        self.layer1 = gnn.SAGEConv(in_feats, hidden, aggregator, activation=F.relu)
        self.layer2 = gnn.SAGEConv(hidden, num_classes, aggregator)
        self.dropout = nn.Dropout(dropout)

    def forward(self, g, x):
        h = self.layer1(g, self.dropout(x))
        return self.layer2(g, self.dropout(h))


def build(args, data: common.Data) -> nn.Module:
    return SAGE(data.in_feats, args.hidden, data.num_classes, args.aggregator, args.dropout)


def make_parser():
    p = common.parser(__doc__.splitlines()[0], hidden=16, dropout=0.5, lr=0.01, weight_decay=5e-4)
    p.add_argument("--aggregator", default="gcn", choices=["gcn", "mean", "pool"],
                   help="SAGEConv aggregator_type (default: %(default)s)")
    return p


def main(argv: list[str] | None = None):
    return common.main(make_parser(), build, name="GraphSAGE", self_loops=False, argv=argv)


if __name__ == "__main__":
    main()
