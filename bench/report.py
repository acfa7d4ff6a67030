"""Turn the JSON written by the bench scripts (``--out``) into the markdown tables of RESULTS.md.

    python bench/report.py bench/results/kernels_100k.json [more.json ...]
    python bench/report.py bench/results/attention-<tag>.json bench/results/layers-<tag>.json
    python bench/report.py bench/results/e2e-<tag>.json bench/results/scaling-<tag>.json

The kind of each file is recognised from its content (``kind`` key where the script writes one:
kernels, attention, e2e, scaling; layer rows otherwise). ``render(data)`` returns the markdown of one
file; bench/run.py uses it for the combined report.
"""
from __future__ import annotations

import json
import sys

IMPLS = [("gdsl", "gdsl numba"), ("torch_sparse", "torch.sparse CSR"), ("gather_index_add", "gather + index_add_"),
         ("pyg", "PyG propagate"), ("dgl", "DGL 2.1")]


def _cell(row: dict, impl: str) -> str:
    value = row.get(impl, {})
    if "median_ms" not in value:
        if value.get("dry_run"):
            return "(dry run)"
        return "-" if value.get("skipped") or not value else ("OOM" if value.get("oom") else "error")
    return f"{value['median_ms']:.1f} ({value['peak_rss_growth_mb']:.0f} MB)"


def _ratio(row: dict, impl: str) -> str:
    mine, other = row.get("gdsl", {}), row.get(impl, {})
    if "median_ms" not in mine or "median_ms" not in other:
        return "-"
    return f"{other['median_ms'] / mine['median_ms']:.1f}x"


def table(rows: list[dict], device: str = "cpu") -> str:
    impls = [(k, n) for k, n in IMPLS if any(k in row for row in rows)]
    if device != "cpu":
        impls = [(k, "gdsl Triton" if k == "gdsl" else n) for k, n in impls]
    ratios = [k for k in ("torch_sparse", "gather_index_add", "pyg", "dgl") if any(k in row for row in rows)]
    names = {"torch_sparse": "torch.sparse", "gather_index_add": "gather", "pyg": "PyG", "dgl": "DGL"}
    head = ("| graph | N / E | D | work | " + " | ".join(name for _, name in impls) + " | " +
            " | ".join(f"gdsl vs {names[k]}" for k in ratios) + " |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        work = {"copy_u_sum": "copy_u+sum", "u_mul_e_sum": "u_mul_e+sum", "u_dot_v": "u_dot_v",
                "edge_softmax": "edge_softmax (E, H)"}.get(row["case"], row["case"]) + (
                    " fwd+bwd" if row["backward"] else " fwd")
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


# ---------------------------------------------------------------------------------------------
# Shared helpers of the layer, end-to-end and scaling tables
# ---------------------------------------------------------------------------------------------
PEER_NAMES = {"gdsl": "gdsl", "pyg": "PyG", "pyg_compile": "PyG compiled", "dgl": "DGL 2.1",
              "torch_sparse": "torch.sparse"}


def _status(value: dict) -> str | None:
    """The cell text of a row that has no measurement (None when it has one)."""
    if not isinstance(value, dict) or not value:
        return "-"
    if "median_ms" in value or "train_s" in value:
        return None
    if value.get("dry_run"):
        return "(dry run)"
    if value.get("skipped"):
        est = value.get("estimate_mb")
        return "skipped" + (f" (est. {est / 1024:.1f} GB)" if est is not None else "")
    if value.get("oom"):
        return "OOM"
    return "error"


def _x(num: float | None, den: float | None) -> str:
    if not num or not den:
        return "-"
    return f"{num / den:.2f}x" if num / den < 10 else f"{num / den:.0f}x"


def _present(rows: list[dict], impls, get=lambda row, impl: row.get(impl)) -> list[str]:
    return [i for i in impls if any(get(row, i) for row in rows)]


# ---------------------------------------------------------------------------------------------
# bench/layers.py
# ---------------------------------------------------------------------------------------------
LAYER_NAMES = {"gcn": "GraphConv / GCNConv", "gat": "GATConv, 8 heads", "sage": "SAGEConv (mean)"}


def layer_tables(data: dict) -> str:
    """Layer forward + backward: time (median) and memory per implementation, then peer / gdsl."""
    impls = _present(data["rows"], ("gdsl", "pyg", "pyg_compile", "dgl"))
    peers = [i for i in impls if i != "gdsl"]
    mem = "peak GPU memory growth" if data.get("device", "cpu") != "cpu" else "peak RSS growth"
    head = ("| layer | N / E | D | " + " | ".join(f"{PEER_NAMES[i]} ms ({'MB'})" for i in impls) + " | "
            + " | ".join(f"{PEER_NAMES[i]} / gdsl" for i in peers) + " |")
    lines = [f"Layer forward + backward on {data.get('device', 'cpu')}, {data.get('threads', '?')} threads: "
             f"median ms ({mem} MB in parentheses); ratios > 1 mean gdsl is faster.\n", head,
             "|" + "---|" * (head.count("|") - 1)]
    for row in data["rows"]:
        cells = []
        for impl in impls:
            value = row.get(impl, {})
            status = _status(value)
            cells.append(status if status else f"{value['median_ms']:.1f} ({value.get('memory_mb', 0):.0f})")
        mine = row.get("gdsl", {}).get("median_ms")
        ratios = [_x(row.get(p, {}).get("median_ms"), mine) for p in peers]
        lines.append(f"| {LAYER_NAMES.get(row['layer'], row['layer'])} | {_size(row['nodes'], row['edges'])} | "
                     f"{row['dim']} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def _mb(value) -> str:
    return "-" if value is None else f"{value:.0f}"


def _size(nodes: int, edges: int) -> str:
    def short(v):
        return f"{v / 1e6:g}M" if v >= 1e6 else f"{v / 1e3:g}k"
    return f"{short(nodes)} / {short(edges)}"


# ---------------------------------------------------------------------------------------------
# bench/e2e.py
# ---------------------------------------------------------------------------------------------
E2E_NAMES = {"gcn": "GCN", "gat": "GAT", "sage": "SAGE (mean)"}


def e2e_tables(data: dict) -> str:
    """200-epoch training: total training time, per-epoch step, accuracy, memory; peer / gdsl."""
    config = data.get("config", {})
    rows = data["rows"]
    impls = [i for i in ("gdsl", "pyg", "dgl") if any(r["impl"] == i for r in rows)]
    peers = [i for i in impls if i != "gdsl"]
    by_key = {(r["model"], r["dataset"], r["impl"]): r.get("result", {"dry_run": True} if r.get("dry_run") else {})
              for r in rows}
    mem = "peak GPU memory growth" if data.get("device", "cpu") != "cpu" else "peak RSS growth"
    head = ("| model | dataset | impl | train s (200 ep.) | first run s | ms / epoch | test acc % | " + mem
            + " MB | after 1st step MB | " + " | ".join(f"{PEER_NAMES[p]} / gdsl (epoch)" for p in peers) + " |")
    lines = [f"End-to-end full-batch training, {config.get('epochs', '?')} epochs, {config.get('seeds', '?')} seed(s) "
             f"per row from {config.get('first_seed', 0)}, on {data.get('device', 'cpu')}, {data.get('threads', '?')} "
             "threads. train s: median over seeds of the summed training-step time (forward, backward, Adam); "
             "first run s: the first seed's, with one-time costs (kernel compilation or cache loading); "
             "ms / epoch: median step without the very first; test accuracy at the best validation epoch, "
             "mean +- std over seeds; memory over the whole run, and after the first training step (without "
             "one-time costs such as loading compiled kernels). Ratios > 1 mean gdsl is faster.\n",
             head.replace("train s (200 ep.)", f"train s ({config.get('epochs', '?')} ep.)"),
             "|" + "---|" * (head.count("|") - 1)]
    seen = []
    for r in rows:
        key = (r["model"], r["dataset"])
        if key not in seen:
            seen.append(key)
    for model, dataset in seen:
        mine = by_key.get((model, dataset, "gdsl"), {})
        for impl in impls:
            value = by_key.get((model, dataset, impl))
            if value is None:
                continue
            status = _status(value)
            if status:
                lines.append(f"| {E2E_NAMES.get(model, model)} | {dataset} | {PEER_NAMES[impl]} | {status} | | | | | | "
                             + " | ".join("" for _ in peers) + " |")
                continue
            acc = f"{value['test_acc']:.1f}" + (f" +- {value['test_acc_std']:.1f}" if len(value.get("test_acc_runs", [])) > 1 else "")
            ratios = [(_x(value.get("epoch_ms"), mine.get("epoch_ms")) if impl == p else "") for p in peers]
            lines.append(f"| {E2E_NAMES.get(model, model)} | {dataset} | {PEER_NAMES[impl]} | {value['train_s']:.2f} | "
                         f"{value['first_train_s']:.2f} | {value['epoch_ms']:.1f} | {acc} | {value['memory_mb']:.0f} | "
                         f"{_mb(value.get('steady_memory_mb'))} | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# bench/scaling.py
# ---------------------------------------------------------------------------------------------
SCALING_TITLES = {"copy_u_sum": "copy_u + sum, forward + backward", "graphconv": "GraphConv layer, forward + backward"}


def scaling_tables(data: dict) -> str:
    """One table per (sweep, work): time (median ms) and memory per implementation, peer / gdsl."""
    config = data.get("config", {})
    impls = config.get("impls") or _present(data["rows"], ("gdsl", "torch_sparse", "pyg", "dgl"))
    peers = [i for i in impls if i != "gdsl"]
    mem = "peak GPU memory growth" if data.get("device", "cpu") != "cpu" else "peak RSS growth"
    out = []
    for sweep in ("size", "density"):
        rows = [r for r in data["rows"] if sweep in r.get("sweeps", [])]
        for work in config.get("works") or sorted({r["work"] for r in rows}):
            wrows = sorted((r for r in rows if r["work"] == work), key=lambda r: (r["nodes"], r["edges"]))
            if not wrows:
                continue
            fixed = (f"average in-degree {wrows[0]['degree']}" if sweep == "size" else f"N = {wrows[0]['nodes']:,}")
            out.append(f"Scaling with graph {sweep} ({fixed}), {SCALING_TITLES.get(work, work)}, D={config.get('dim')}, "
                       f"{data.get('device', 'cpu')}, {data.get('threads', '?')} threads: median ms ({mem} MB); "
                       "ratios > 1 mean gdsl is faster.\n")
            head = ("| N | E | degree | " + " | ".join(f"{PEER_NAMES[i]} ms (MB)" for i in impls) + " | "
                    + " | ".join(f"{PEER_NAMES[p]} / gdsl" for p in peers) + " |")
            lines = [head, "|" + "---|" * (head.count("|") - 1)]
            for r in wrows:
                cells = []
                for impl in impls:
                    value = r.get(impl, {})
                    status = _status(value)
                    cells.append(status if status else f"{value['median_ms']:.1f} ({value['memory_mb']:.0f})")
                mine = r.get("gdsl", {}).get("median_ms")
                lines.append(f"| {r['nodes']:,} | {r['edges']:,} | {r['degree']} | " + " | ".join(cells) + " | "
                             + " | ".join(_x(r.get(p, {}).get("median_ms"), mine) for p in peers) + " |")
            out.append("\n".join(lines))
            out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Any file
# ---------------------------------------------------------------------------------------------
def kind_of(data: dict) -> str:
    if data.get("kind"):
        return data["kind"]
    rows = data.get("rows") or [{}]
    return "layers" if "layer" in rows[0] else "kernels"


def render(data: dict) -> str:
    kind = kind_of(data)
    if kind == "attention":
        return attention_tables(data)
    if kind == "layers":
        return layer_tables(data)
    if kind == "e2e":
        return e2e_tables(data)
    if kind == "scaling":
        return scaling_tables(data)
    return table(data["rows"], data.get("device", "cpu"))


def main() -> None:
    for path in sys.argv[1:]:
        with open(path) as f:
            data = json.load(f)
        print(f"Machine: {data['machine']}\n")
        print(render(data))
        print()


if __name__ == "__main__":
    main()
