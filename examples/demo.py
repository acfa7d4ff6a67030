"""`make demo`: GAT on Cora with gdsl.nn.GATConv, its attention compiled to generated kernels.

Trains the model of examples/gat.py (8 heads x 8 hidden, ELU, one output head, dropout 0.6, Adam
lr 0.005, weight decay 5e-4) for 200 epochs on the public split, prints the test accuracy at the
epoch with the best validation accuracy and the time per epoch, then where the generated numba /
Triton kernels are and how to look at them. The first run compiles each kernel (a few seconds each);
later runs of the same kernels load them from numba's cache. Options: ``python examples/demo.py
--help`` (those of examples/gat.py). The GCN, GraphSAGE and GAT examples: examples/gcn.py,
sage.py, gat.py.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402  (examples/common.py; sets Triton up before gdsl is imported)
import gat  # noqa: E402  (examples/gat.py: the model and its options)

import gdsl  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = gat.make_parser()
    p.description = __doc__.splitlines()[0]
    common.main(p, gat.build, name="GAT", self_loops=True, argv=argv)

    files = gdsl.generated_files()
    print(f"\n{len(files)} generated kernels (forward and backward) this run, in {gdsl.cache_dir()} "
          "(set GDSL_CACHE_DIR to move it):")
    for path in files:
        print(f"  {path}")
    print("print one with `cat <file>`: each starts with its IR and fusion plan as comments.")
    if hasattr(gdsl, "inspect"):
        print("the IR, passes, fusion plan, schedules and numba + Triton source of a layer, forward and "
              "backward:\n  print(gdsl.inspect(g, model.layer1, x))")


if __name__ == "__main__":
    main()
