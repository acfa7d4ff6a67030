"""The benchmark scripts parse, plan and write JSON / markdown with the expected keys.

No timing is asserted anywhere (timings belong to bench/RESULTS.md). The measured rows here are
tiny and run on gdsl's reference back end (no kernel compilation); torch-geometric and matplotlib
parts are skipped where those are not installed (CI's venv has neither).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

import gdsl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import e2e, gpu, kernels, report, run, scaling  # noqa: E402

HAVE_PYG = importlib.util.find_spec("torch_geometric") is not None
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
needs_pyg = pytest.mark.skipif(not HAVE_PYG, reason="torch_geometric is not installed (bench extra)")

TIMED_KEYS = {"median_ms", "runs_ms", "warmup_ms", "memory_mb", "repeats"}
E2E_KEYS = {"epochs", "seeds", "nodes", "edges", "train_s", "train_s_runs", "first_train_s", "first_epoch_ms",
            "epoch_ms", "wall_s", "test_acc", "test_acc_std", "test_acc_runs", "memory_mb", "peak_rss_mb"}


def test_suite_entry_dry_run_writes_report(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--dry-run", "--only", "e2e,layers",
                           "--results-dir", str(tmp_path), "--tag", "t"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (tmp_path / "report-t.md").read_text()
    assert f"## {run.TITLES['e2e']}" in text and f"## {run.TITLES['layers']}" in text
    assert "load average" in text and "dry run" in text
    e = json.loads((tmp_path / "e2e-t.json").read_text())
    assert e["kind"] == "e2e" and e["config"]["epochs"] == 30 and {"machine", "threads", "device"} <= set(e)
    assert {(r["model"], r["impl"]) for r in e["rows"]} >= {(m, i) for m in e2e.MODELS for i in ("gdsl", "pyg")}


def test_suite_plan_covers_every_part():
    args = argparse.Namespace(quick=False, device="cpu", threads=None, dry_run=True)
    for suite in run.SUITES:
        cmd = run.command(suite, args, "/tmp/x.json")
        assert cmd[1].endswith(f"bench/{suite}.py") and cmd[-2:] == ["--out", "/tmp/x.json"]
        assert ("--dry-run" in cmd) == (suite in run.DRY_RUN_CAPABLE)


def test_kernels_dry_run_json(tmp_path, capsys):
    out = tmp_path / "kernels.json"
    kernels.main(["--quick", "--dry-run", "--out", str(out)])
    k = json.loads(out.read_text())
    assert k["kind"] == "kernels" and {"machine", "threads", "device", "rows"} <= set(k)
    assert {r["case"] for r in k["rows"]} == set(kernels.CASES)
    assert all({"graph", "nodes", "edges", "dim", "backward", "gdsl"} <= set(r) for r in k["rows"])
    assert "would run" in capsys.readouterr().out


def test_scaling_dry_run_json(tmp_path):
    out = tmp_path / "scaling.json"
    scaling.main(["--quick", "--dry-run", "--out", str(out)])
    s = json.loads(out.read_text())
    assert s["kind"] == "scaling" and {"dim", "impls", "works", "mem_budget_gb"} <= set(s["config"])
    assert {r["work"] for r in s["rows"]} == set(scaling.WORKS)
    assert {sw for r in s["rows"] for sw in r["sweeps"]} == {"size", "density"}
    assert (tmp_path / "scaling.md").exists()


def test_e2e_data_is_gdsl_loader_data():
    assert e2e.check_data()


def _e2e_row(impl, model="gcn", epochs=1, seeds=1):
    args = argparse.Namespace(model=model, dataset="cora", impl=impl, epochs=epochs, seeds=seeds, seed=0,
                              threads=torch.get_num_threads(), device="cpu")
    return e2e.run_one(args)


def test_e2e_row_gdsl():
    with gdsl.use_backend("reference"):
        row = _e2e_row("gdsl", "gcn", epochs=2, seeds=2)
        assert E2E_KEYS <= set(row)
        assert row["epochs"] == 2 and len(row["test_acc_runs"]) == 2 and 0 <= row["test_acc"] <= 100
        assert row["edges"] == 10556 + 2708  # Cora with one self-loop per node
        for model in ("gat", "sage"):
            assert E2E_KEYS <= set(_e2e_row("gdsl", model))


@needs_pyg
def test_e2e_row_pyg_same_architecture():
    from bench.e2e import PygModel
    row = _e2e_row("pyg", "gat")
    assert E2E_KEYS <= set(row)
    # 8 heads x 8 hidden then one head: the same parameter count as gdsl's GATConv pair
    import gdsl.nn as gnn
    ours = e2e.DglStyle(gnn, "gat", 1433, 7)
    theirs = PygModel("gat", 1433, 7)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


def _scaling_args(impl, work):
    return argparse.Namespace(impl=impl, work=work, nodes=300, edges=3000, dim=8, threads=torch.get_num_threads(),
                              repeats=2, device="cpu")


def test_scaling_rows_and_outputs(tmp_path):
    impls = ["gdsl", "torch_sparse"] + (["pyg"] if HAVE_PYG else [])
    result = {"kind": "scaling", "machine": "test", "threads": 1, "device": "cpu",
              "config": {"dim": 8, "impls": impls, "works": list(scaling.WORKS)}, "rows": []}
    with gdsl.use_backend("reference"):
        for work in scaling.WORKS:
            row = {"work": work, "nodes": 300, "edges": 3000, "degree": 10, "sweeps": ["size", "density"], "dim": 8}
            for impl in impls:
                row[impl] = scaling.run_one(_scaling_args(impl, work))
                assert TIMED_KEYS <= set(row[impl])
            result["rows"].append(row)
    written = scaling.write_outputs(result, str(tmp_path / "scaling-x.json"), plots=HAVE_MPL)
    assert os.path.exists(tmp_path / "scaling-x.md")
    md = (tmp_path / "scaling-x.md").read_text()
    assert "GraphConv layer" in md and "torch.sparse / gdsl" in md
    if HAVE_MPL:
        assert {str(tmp_path / "scaling-x-size.png"), str(tmp_path / "scaling-x-density.png")} <= set(written)


def test_scaling_plan_skips_rows_over_the_budget(capsys):
    args = argparse.Namespace(impls="gdsl,pyg", works=None, mem_budget_gb=0.9, quick=False, size_nodes="1e4,1e6",
                              degrees="2", density_nodes="1e4", sweeps=None, dim=32, threads=2, repeats=5,
                              device="cpu", dry_run=True, isolation="row", out=None, row_timeout=10, no_plots=True)
    result = scaling.drive(args)
    cells = {(r["work"], r["nodes"], impl): r[impl] for r in result["rows"] for impl in ("gdsl", "pyg")}
    assert cells[("graphconv", 1_000_000, "pyg")].get("skipped")
    assert not cells[("copy_u_sum", 10_000, "gdsl")].get("skipped")
    assert "would skip" in capsys.readouterr().out


def test_edge_softmax_implementations_agree():
    spec = argparse.Namespace(case="edge_softmax", graph="uniform", nodes=200, edges=2000, dim=8, device="cpu")
    src, dst, h, w = kernels._inputs(spec)
    builders = [kernels._gdsl_fn, kernels._gather_fn] + ([kernels._pyg_fn] if HAVE_PYG else [])
    outs = []
    for build in builders:
        with gdsl.use_backend("reference"):
            outs.append(build(spec, src, dst, h, w)())
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], rtol=1e-5, atol=1e-6)


def test_report_renders_every_kind():
    cell = {"median_ms": 2.0, "runs_ms": [2.0], "memory_mb": 1.0, "peak_rss_growth_mb": 1.0}
    layers = {"rows": [{"layer": "gcn", "nodes": 1000, "edges": 10000, "dim": 8, "device": "cpu", "gdsl": cell,
                        "pyg": {**cell, "median_ms": 6.0}, "pyg_compile": {"error": "x"}}]}
    assert report.kind_of(layers) == "layers" and "3.00x" in report.render(layers)
    e2e_data = {"kind": "e2e", "config": {"epochs": 200, "seeds": 1}, "rows": [
        {"model": "gcn", "dataset": "cora", "impl": "gdsl",
         "result": {"train_s": 1.0, "first_train_s": 2.0, "epoch_ms": 5.0, "test_acc": 81.0, "test_acc_std": 0.0,
                    "test_acc_runs": [81.0], "memory_mb": 3.0}},
        {"model": "gcn", "dataset": "cora", "impl": "pyg", "result": {"error": "boom"}}]}
    text = report.render(e2e_data)
    assert "81.0" in text and "error" in text
    scaling_data = {"kind": "scaling", "config": {"dim": 8, "impls": ["gdsl", "pyg"], "works": ["copy_u_sum"]},
                    "rows": [{"work": "copy_u_sum", "nodes": 10, "edges": 100, "degree": 10, "sweeps": ["size"],
                              "gdsl": cell, "pyg": {"skipped": True, "estimate_mb": 9000}}]}
    assert "skipped" in report.render(scaling_data)
    kernels_data = {"kind": "kernels", "rows": [{"graph": "uniform", "nodes": 1000, "edges": 10000, "dim": 8,
                                                  "case": "edge_softmax", "backward": True, "gdsl": cell}]}
    assert "edge_softmax" in report.render(kernels_data)


def test_gpu_entry_point_dry_run(capsys):
    assert gpu.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    for part in gpu.PARTS:
        assert f"would run ({part})" in out
    assert "--device cuda" in out and "pyg_compile" in out


def _touch_and_unmap(mb: int, wait: float) -> None:
    """Map ``mb`` MB straight from the OS (no allocator reuse), touch every page, unmap it."""
    import mmap
    import time
    size = mb << 20
    block = mmap.mmap(-1, size)
    for offset in range(0, size, 4096):
        block[offset] = 1
    time.sleep(wait)  # the sampling thread's turn, where there is one
    block.close()


@pytest.mark.parametrize("kernel_peak", [True, False])
def test_rss_sampler_sees_a_freed_allocation_and_its_phases(monkeypatch, kernel_peak):
    """The peak of a phase counts memory mapped and unmapped inside it (whether the kernel keeps
    the high-water mark or a thread samples), and a mark starts a new phase at the current level."""
    from bench import common
    if not kernel_peak:
        monkeypatch.setattr(common, "_reset_peak_rss", lambda: False)
    elif not common._reset_peak_rss():
        pytest.skip("this kernel does not let the process reset its peak RSS")
    wait = 0 if kernel_peak else 0.05
    with common.RssSampler() as memory:
        _touch_and_unmap(40, wait)
        memory.mark()
        _touch_and_unmap(10, wait)
    assert memory._kernel_peak == kernel_peak
    assert 38 <= memory.growth_mb <= 45
    assert 9 <= memory.steady_growth_mb <= 15
