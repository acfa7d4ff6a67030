"""Turn the JSON written by ``bench/kernels.py --out`` into the markdown tables of RESULTS.md.

    python bench/report.py bench/results/kernels_100k.json [more.json ...]
"""
from __future__ import annotations

import json
import sys

IMPLS = [("gdsl", "gdsl numba"), ("torch_sparse", "torch.sparse CSR"), ("gather_index_add", "gather + index_add_"),
         ("pyg", "PyG propagate")]


def _cell(row: dict, impl: str) -> str:
    value = row.get(impl, {})
    if "median_ms" not in value:
        return "-" if value.get("skipped") or not value else "error"
    return f"{value['median_ms']:.1f} ({value['peak_rss_growth_mb']:.0f} MB)"


def _ratio(row: dict, impl: str) -> str:
    mine, other = row.get("gdsl", {}), row.get(impl, {})
    if "median_ms" not in mine or "median_ms" not in other:
        return "-"
    return f"{other['median_ms'] / mine['median_ms']:.1f}x"


def table(rows: list[dict]) -> str:
    head = ("| graph | N / E | D | work | " + " | ".join(name for _, name in IMPLS) +
            " | gdsl vs torch.sparse | gdsl vs gather | gdsl vs PyG |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        work = row["case"].replace("_", " ").replace("copy u sum", "copy_u+sum").replace(
            "u mul e sum", "u_mul_e+sum").replace("u dot v", "u_dot_v") + (" fwd+bwd" if row["backward"] else " fwd")
        size = f"{row['nodes'] // 1000}k / {row['edges'] / 1e6:g}M"
        cells = " | ".join(_cell(row, impl) for impl, _ in IMPLS)
        lines.append(f"| {row['graph']} | {size} | {row['dim']} | {work} | {cells} | "
                     f"{_ratio(row, 'torch_sparse')} | {_ratio(row, 'gather_index_add')} | {_ratio(row, 'pyg')} |")
    return "\n".join(lines)


def main() -> None:
    for path in sys.argv[1:]:
        with open(path) as f:
            data = json.load(f)
        print(f"Machine: {data['machine']}\n")
        print(table(data["rows"]))
        print()


if __name__ == "__main__":
    main()
