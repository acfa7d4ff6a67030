"""`make demo`: a 2-layer GCN on Cora, written with gdsl's DGL-style message passing.

Each layer is ``h' = D^-1/2 A D^-1/2 h W`` computed by ``update_all(fn.copy_u, fn.sum)`` between
two degree scalings (Kipf & Welling, 2017), trained on the standard public split.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import gdsl
import gdsl.function as fn


class GCNLayer(nn.Module):
    def __init__(self, in_feats: int, out_feats: int):
        super().__init__()
        self.linear = nn.Linear(in_feats, out_feats)

    def forward(self, g: gdsl.Graph, h: torch.Tensor) -> torch.Tensor:
        with g.local_scope():
            norm = g.in_degrees().float().clamp(min=1).pow(-0.5).unsqueeze(1)
            g.ndata["h"] = self.linear(h) * norm
            g.update_all(fn.copy_u("h", "m"), fn.sum("m", "h"))
            return g.ndata["h"] * norm


class GCN(nn.Module):
    def __init__(self, in_feats: int, hidden: int, classes: int, dropout: float = 0.5):
        super().__init__()
        self.layer1 = GCNLayer(in_feats, hidden)
        self.layer2 = GCNLayer(hidden, classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, g: gdsl.Graph, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.layer1(g, self.dropout(x)))
        return self.layer2(g, self.dropout(h))


def accuracy(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> float:
    return (logits[mask].argmax(1) == labels[mask]).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cora", choices=["cora", "citeseer"])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    g = gdsl.add_self_loop(gdsl.data.load_planetoid(args.dataset))
    x, y = g.ndata["feat"], g.ndata["label"]
    train, val, test = g.ndata["train_mask"], g.ndata["val_mask"], g.ndata["test_mask"]
    print(f"{args.dataset}: {g.num_nodes()} nodes, {g.num_edges()} edges (with self-loops), "
          f"{x.shape[1]} features, {int(y.max()) + 1} classes")
    print(f"message passing backend: {gdsl.current_backend(g.device)} "
          f"(available: {', '.join(gdsl.available_backends())})")

    model = GCN(x.shape[1], args.hidden, int(y.max()) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        logits = model(g, x)
        loss = F.cross_entropy(logits[train], y[train])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if epoch % 20 == 0 or epoch == 1:
            model.eval()
            with torch.no_grad():
                logits = model(g, x)
            print(f"epoch {epoch:3d}  loss {loss.item():.4f}  train {accuracy(logits, y, train):.3f}  "
                  f"val {accuracy(logits, y, val):.3f}")
    elapsed = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        logits = model(g, x)
    print(f"test accuracy {accuracy(logits, y, test):.4f}  |  {args.epochs} epochs in {elapsed:.2f} s "
          f"({1000 * elapsed / args.epochs:.1f} ms/epoch)")
    files = gdsl.generated_files()
    if files:
        print(f"\ngenerated kernels ({len(files)}, forward and backward) are in {gdsl.cache_dir()}:")
        for path in files:
            print(f"  {path}")
        print("print one with: cat <file>; the IR and plan are in each file's header")


if __name__ == "__main__":
    main()
