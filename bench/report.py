"""Turn the JSON written by ``bench/kernels.py --out`` (and ``bench/attention.py``) into the
markdown tables of RESULTS.md.

    python bench/report.py bench/results/kernels_100k.json [more.json ...]
    python bench/report.py bench/results/attention-<tag>.json
"""
from __future__ import annotations

import json
import sys

IMPLS = [("gdsl", "gdsl numba"), ("torch_sparse", "torch.sparse CSR"), ("gather_index_add", "gather + index_add_"),
         ("pyg", "PyG propagate"), ("dgl", "DGL 2.1")]


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
    impls = [(k, n) for k, n in IMPLS if any(k in row for row in rows)]
    ratios = [k for k in ("torch_sparse", "gather_index_add", "pyg", "dgl") if any(k in row for row in rows)]
    names = {"torch_sparse": "torch.sparse", "gather_index_add": "gather", "pyg": "PyG", "dgl": "DGL"}
    head = ("| graph | N / E | D | work | " + " | ".join(name for _, name in impls) + " | " +
            " | ".join(f"gdsl vs {names[k]}" for k in ratios) + " |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        work = row["case"].replace("_", " ").replace("copy u sum", "copy_u+sum").replace(
            "u mul e sum", "u_mul_e+sum").replace("u dot v", "u_dot_v") + (" fwd+bwd" if row["backward"] else " fwd")
        size = f"{row['nodes'] // 1000}k / {row['edges'] / 1e6:g}M"
        cells = " | ".join(_cell(row, impl) for impl, _ in impls)
        lines.append(f"| {row['graph']} | {size} | {row['dim']} | {work} | {cells} | "
                     + " | ".join(_ratio(row, k) for k in ratios) + " |")
    return "\n".join(lines)


ATTENTION_IMPLS = [("gdsl-fused", "gdsl fused"), ("gdsl-unfused", "gdsl unfused"), ("dgl", "DGL GATConv"),
                   ("pyg", "PyG GATConv")]


def _attention_cells(value: dict) -> tuple[str, str]:
    """(time, peak memory) cells of one implementation in one attention row."""
    if not value:
        return "-", "-"
    if "median_ms" in value:
        return f"{value['median_ms']:.1f}", f"{value['peak_rss_growth_mb']:.0f}"
    if value.get("skipped"):
        est = value.get("estimate_mb")
        return ("skipped" + (f" (est. {est / 1024:.1f} GiB)" if est is not None else "")), "-"
    if value.get("oom"):
        return "OOM", "-"
    return "error", "-"


def _attention_ratio(row: dict, num: str, den: str) -> str:
    a, b = row.get(num, {}), row.get(den, {})
    if "median_ms" not in a or "median_ms" not in b:
        return "-"
    return f"{a['median_ms'] / b['median_ms']:.1f}x"


def attention_tables(data: dict) -> str:
    """One table per graph: rows (H, D), time (ms) and peak memory growth (MB) per implementation,
    then (DGL and) PyG / gdsl-fused and gdsl-unfused / gdsl-fused time ratios."""
    impls = [(k, name) for k, name in ATTENTION_IMPLS if any(k in row for row in data["rows"])]
    config = data.get("config", {})
    out = []
    graphs: dict[tuple, list[dict]] = {}
    for row in data["rows"]:
        graphs.setdefault((row["graph"], row["nodes"], row["edges"]), []).append(row)
    for (name, nodes, edges), rows in graphs.items():
        out.append(f"GAT layer fwd+bwd, {config.get('graph', 'uniform')} graph {name}: N={nodes:,} E={edges:,}, "
                   f"in={rows[0].get('in_dim', config.get('in_dim'))}; time ms (median of "
                   f"{config.get('repeats', '?')}), peak RSS growth MB\n")
        with_dgl = any(k == "dgl" for k, _ in impls)
        head = ("| H | D | " + " | ".join(f"{n} ms | {n} MB" for _, n in impls) +
                (" | DGL / fused" if with_dgl else "") + " | PyG / fused | unfused / fused |")
        lines = [head, "|" + "---|" * (head.count("|") - 1)]
        for row in rows:
            cells = " | ".join(" | ".join(_attention_cells(row.get(k, {}))) for k, _ in impls)
            dgl = f" | {_attention_ratio(row, 'dgl', 'gdsl-fused')}" if with_dgl else ""
            lines.append(f"| {row['heads']} | {row['dim']} | {cells}{dgl} | {_attention_ratio(row, 'pyg', 'gdsl-fused')} | "
                         f"{_attention_ratio(row, 'gdsl-unfused', 'gdsl-fused')} |")
        out.append("\n".join(lines))
        out.append("")
    return "\n".join(out)


def main() -> None:
    for path in sys.argv[1:]:
        with open(path) as f:
            data = json.load(f)
        print(f"Machine: {data['machine']}\n")
        print(attention_tables(data) if data.get("kind") == "attention" else table(data["rows"]))
        print()


if __name__ == "__main__":
    main()
