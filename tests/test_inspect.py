"""Kernel inspection: ``gdsl.inspect`` (steps and models), the cost estimates, ``GDSL_DUMP_DIR`` and
``python -m gdsl kernels``.

Inspecting a step compiles nothing (sources are text), so most tests are cheap; the model and dump
tests run small numba kernels (cached on disk after the first run). No Triton kernel is run.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gdsl
import gdsl.function as fn
from gdsl import cli
from gdsl.compiler.cost import estimate
from gdsl.compiler.passes import PIPELINE
from gdsl.kernels.dump import dump_kernel

N, E = 5, 8
SRC, DST = [0, 1, 2, 3, 4, 0, 2, 4], [1, 2, 3, 4, 0, 2, 4, 4]
PASS_NAMES = [name for name, _ in PIPELINE]


def _graph():
    return gdsl.graph((SRC, DST), num_nodes=N)


def _stages(text: str, ins) -> None:
    """Every stage of a step's inspection is in its text."""
    assert "-- traced IR" in text and str(ins.ir) in text
    for name in PASS_NAMES:
        assert f"after {name}:" in text
    assert "-- fusion plan (forward)" in text and "-- fusion plan (backward)" in text
    for k in ins.kernels:
        assert k.plan.describe() in text
        assert f"generated numba source: kernel {k.name}" in text
        assert f"generated triton source: kernel {k.name}" in text
        assert k.numba_source.rstrip() in text and k.triton_source.rstrip() in text
        assert "@numba.njit(parallel=True" in k.numba_source and "@triton.jit" in k.triton_source
        compile(k.numba_source, "numba_source", "exec")  # valid Python
        compile(k.triton_source, "triton_source", "exec")
        assert k.bytes > 0 and k.flops > 0
    assert "-- schedules" in text and "numba  (heuristic)" in text and "triton (heuristic)" in text


# ------------------------------------------------------------------------------------------------
# Steps: built-ins, a UDF, the fused GAT, an edge function
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("message, features", [
    (fn.copy_u("h", "m"), {"h": (N, 12)}),
    (fn.u_mul_e("h", "w", "m"), {"h": (N, 12), "w": (E, 1)}),
], ids=["copy_u", "u_mul_e"])
def test_builtin_inspection_shows_every_stage(message, features):
    g = _graph()
    ins = gdsl.inspect(g, message, fn.sum("m", "out"), **{k: torch.randn(s) for k, s in features.items()})
    text = str(ins)
    _stages(text, ins)
    assert ins.kind == "gather_reduce" and ins.steps == [ins]
    assert [name for name, _ in ins.passes] == PASS_NAMES
    assert "after hoist: (unchanged)" in text  # nothing per node to hoist in a built-in
    assert [(k.direction, k.plan.rows) for k in ins.kernels] == [("forward", "dst"), ("backward", "src")]
    forward = ins.kernels[0]
    assert {(i.space, i.name) for i in forward.plan.inputs} == \
        {("src", "h")} | ({("edge", "w")} if "w" in features else set())
    assert [name for name, _ in forward.plan.program.outputs] == ["dst:out"]
    # the heuristic schedule (nothing tuned), as the runtimes launch it: on this small graph one
    # row per program, feature tile 16 >= 12, two warps for the 16 x 16 tile
    assert ins.schedule.reason == "heuristic" and ins.schedule.backend == "numba"
    triton = forward.schedules["triton"]
    assert triton.reason == "heuristic" and "mean degree" in triton.why
    assert triton.config["ROWS"] == 1 and triton.config["BF_0"] == 16 and triton.config["BLOCK_E"] == 16
    assert triton.config["grid"] == (N, 1) and triton.config["num_warps"] == 2
    assert forward.schedules["numba"].config["parts_per_thread"] == 8
    assert "h" not in g.ndata and "out" not in g.ndata  # the graph is left as it was


def _weighted(edges):
    return {"m": edges.src["h"] * torch.sigmoid(edges.data["w"])}


def _max_reduce(nodes):
    return {"o": nodes.mailbox["m"].max(1).values}


def test_udf_inspection_shows_max_with_its_winners():
    ins = gdsl.inspect(_graph(), _weighted, _max_reduce, h=torch.randn(N, 4), w=torch.randn(E, 1))
    text = str(ins)
    _stages(text, ins)
    assert "gather_reduce (message _weighted, reduce _max_reduce)" in text
    assert [ins.op for ins in ins.ir.instrs if ins.op.startswith("mailbox_")] == ["mailbox_max"]
    forward, backward = ins.kernels
    stores = [t.what for t in forward.cost.stores]
    assert stores == ["dst:o f32[4]", "dst:o@arg i64[4]"]  # max writes its winning edges
    assert ("dst", "o@arg") in {(i.space, i.name) for i in backward.plan.inputs}


def gat_message(edges):
    return {"m": edges.src["ft"], "e": F.leaky_relu(edges.src["el"] + edges.dst["er"], 0.2)}


def gat_reduce(nodes):
    alpha = torch.softmax(nodes.mailbox["e"], 1)
    return {"h": (alpha * nodes.mailbox["m"]).sum(1)}


def test_gat_inspection_shows_one_fused_forward_kernel():
    ins = gdsl.inspect(_graph(), gat_message, gat_reduce, ft=torch.randn(N, 2, 4),
                       el=torch.randn(N, 2, 1), er=torch.randn(N, 2, 1))
    text = str(ins)
    _stages(text, ins)
    programs = dict(ins.passes)
    assert programs["fuse_softmax"] != programs["cse"]  # the pass that makes it one kernel
    assert "after fuse_softmax:\n" + str(programs["fuse_softmax"]) in text
    (forward,) = ins.forward_kernels
    ops = [i.op for i in forward.plan.program.instrs]
    assert "mailbox_softmax_sum" in ops and "mailbox_softmax" not in ops
    assert not [n for n, _ in forward.plan.program.outputs if n.startswith("edge:")]  # no E x H x D
    assert [k.plan.rows for k in ins.backward_kernels] == ["src", "dst"]
    assert [t.what for t in forward.cost.stores] == ["dst:h f32[2,4]", "dst:h@lse f32[2,1]"]


def _dot(edges):
    return {"s": (edges.src["h"] * edges.dst["h"]).sum(-1)}


def test_edge_function_inspection():
    ins = gdsl.inspect(_graph(), _dot, h=torch.randn(N, 3))
    _stages(str(ins), ins)
    assert ins.kind == "edge_map"
    assert [k.plan.pattern for k in ins.forward_kernels] == ["edge_map"]
    assert sorted(k.plan.rows for k in ins.backward_kernels) == ["dst", "src"]


def test_explicit_frames_and_missing_features():
    g = _graph()
    ins = gdsl.inspect(g, fn.u_mul_e("h", "w", "m"), fn.sum("m", "out"), ndata={"h": torch.randn(N, 2)},
                       edata={"w": torch.randn(E, 2)})
    assert [t.what for t in ins.kernels[0].cost.loads][-2:] == ["src.h f32[2]", "edge.w f32[2]"]
    # a block: node features go to the side whose size they have (any name, even "g")
    block = gdsl.bipartite(([0, 1, 2], [0, 0, 1]), 3, 2)
    ins = gdsl.inspect(block, fn.u_mul_v("h", "g", "m"), fn.mean("m", "out"), h=torch.randn(3, 4),
                       g=torch.randn(2, 4))
    assert {(i.space, i.name) for i in ins.kernels[0].plan.inputs} == {("src", "h"), ("dst", "g")}
    assert [k.num_rows for k in ins.kernels] == [2, 2, 3]  # in-CSR: 2 destinations; out-CSR: 3 sources
    with pytest.raises(gdsl.FeatureError, match=r"source node feature 'h'.*example tensor"):
        gdsl.inspect(g, fn.copy_u("h", "m"), fn.sum("m", "out"))
    with pytest.raises(gdsl.FeatureError, match=r"'h' has 7 rows.*5 source nodes.*8 edges"):
        gdsl.inspect(g, fn.copy_u("h", "m"), fn.sum("m", "out"), h=torch.randn(7, 2))


def test_triton_source_without_triton_says_so(monkeypatch):
    import gdsl.inspection

    monkeypatch.setattr(gdsl.inspection, "_triton_installed", lambda: False)
    ins = gdsl.inspect(_graph(), fn.copy_u("h", "m"), fn.sum("m", "out"), h=torch.randn(N, 2))
    source = ins.kernels[0].triton_source
    assert source.startswith("# note: Triton is not installed") and "@triton.jit" in source


# ------------------------------------------------------------------------------------------------
# Cost estimates
# ------------------------------------------------------------------------------------------------
def test_cost_estimate_counts_bytes_per_row_and_per_edge():
    ins = gdsl.inspect(_graph(), fn.copy_u("h", "m"), fn.sum("m", "out"), h=torch.randn(N, 16))
    forward = ins.kernels[0]
    # indptr (rows + 1) and neighbour ids (per edge) as int64, h gathered per edge, out per row
    assert forward.cost.bytes_loaded == (N + 1) * 8 + E * 8 + E * 16 * 4
    assert forward.cost.bytes_stored == N * 16 * 4
    assert forward.flops == E * 16  # one add per message element
    assert forward.bytes == estimate(forward.plan, N, E).bytes
    for k in ins.kernels:
        small, large = estimate(k.plan, 100, 1000), estimate(k.plan, 100, 2000)
        per_edge = sum(t.width for t in small.loads + small.stores if t.per == "edge")
        assert large.bytes - small.bytes == 1000 * per_edge > 0
        assert large.flops == 2 * small.flops > 0


def test_cost_estimate_of_gat_backward_grows_with_edges():
    ins = gdsl.inspect(_graph(), gat_message, gat_reduce, ft=torch.randn(N, 2, 4),
                       el=torch.randn(N, 2, 1), er=torch.randn(N, 2, 1))
    for k in ins.kernels:
        a, b = estimate(k.plan, 50, 500), estimate(k.plan, 50, 5000)
        assert 0 < a.bytes < b.bytes and 0 < a.flops < b.flops


# ------------------------------------------------------------------------------------------------
# Models: every compiled step of the forward and the backward
# ------------------------------------------------------------------------------------------------
class _Layer(nn.Module):
    def __init__(self, width_in, width_out):
        super().__init__()
        self.lin = nn.Linear(width_in, width_out)

    def forward(self, g, h):
        with g.local_scope():
            g.ndata["h"] = self.lin(h)
            g.update_all(fn.copy_u("h", "m"), fn.sum("m", "h"))
            return g.ndata["h"]


class _TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1, self.layer2 = _Layer(5, 6), _Layer(6, 3)

    def forward(self, g, x):
        return self.layer2(g, torch.relu(self.layer1(g, x)))


def test_model_inspection_lists_the_steps_of_two_layers():
    g, model = _graph(), _TwoLayers()
    with gdsl.use_backend("numba"):
        ins = gdsl.inspect(g, model, torch.randn(N, 5))
    assert len(ins.steps) == 2 and ins.ran_backward
    assert [s.kind for s in ins.steps] == ["gather_reduce", "gather_reduce"]
    assert all(s.backward_ran for s in ins.steps)
    widths = [s.kernels[0].plan.inputs[0].shape for s in ins.steps]
    assert widths == [(6,), (3,)]
    assert [k.direction for k in ins.kernels] == ["forward", "backward"] * 2
    text = str(ins)
    assert "_TwoLayers: 2 compiled step(s) launched" in text
    assert "## step 1" in text and "## step 2" in text
    assert text.count("-- traced IR") == 2 and text.count("generated triton source") == 4
    assert ins.outputs.shape == (N, 3)
    assert all(p.grad is None for p in model.parameters())  # the user's model is not touched
    assert "h" not in g.ndata

    # without gradients (a plain function of the graph and inputs), no backward runs
    with gdsl.use_backend("numba"):
        plain = gdsl.inspect(g, lambda graph, x: model(graph, x).detach(), torch.randn(N, 5))
    assert len(plain.steps) == 2 and not plain.ran_backward
    assert not any(s.backward_ran for s in plain.steps)
    assert "no backward" in plain.summary()


def test_model_inspection_on_the_reference_backend_has_no_steps():
    with gdsl.use_backend("reference"):
        ins = gdsl.inspect(_graph(), _TwoLayers(), torch.randn(N, 5))
    assert ins.steps == [] and "no compiled steps" in str(ins)


# ------------------------------------------------------------------------------------------------
# GDSL_DUMP_DIR
# ------------------------------------------------------------------------------------------------
def _scaled_difference(edges):  # a program no other test compiles, so its kernels are new here
    return {"d": (edges.src["h"] - edges.dst["h"]) * 1.8125}


def test_dump_dir_receives_every_kernel_with_its_ir(monkeypatch, tmp_path):
    monkeypatch.setenv("GDSL_DUMP_DIR", str(tmp_path / "dump"))
    g = _graph()
    h = torch.randn(N, 3, requires_grad=True)
    with gdsl.use_backend("numba"), g.local_scope():
        g.ndata["h"] = h
        g.apply_edges(_scaled_difference)
        g.edata["d"].sum().backward()
    files = sorted(os.listdir(tmp_path / "dump"))
    sources = [f for f in files if f.endswith(".py")]
    assert len(sources) == 3 and len(files) == 6  # forward edge map + a backward kernel per side
    assert sorted(f[:-3] + ".ir.txt" for f in sources) == sorted(f for f in files if f.endswith(".ir.txt"))
    generated = {os.path.basename(p) for p in gdsl.generated_files()}
    assert set(sources) <= generated
    patterns = sorted(f.split("_")[1] for f in sources)
    assert patterns == ["edge", "gather", "gather"]
    for name in sources:
        text = (tmp_path / "dump" / name).read_text()
        assert text.startswith("# Generated by gdsl") and "@numba.njit" in text
        ir = (tmp_path / "dump" / (name[:-3] + ".ir.txt")).read_text()
        assert ir.split("\n")[0] in text  # the fusion plan line
        assert all(f"# {line}" in text for line in ir.split("\n\n")[1].splitlines())  # its header IR
    torch.testing.assert_close(h.grad, torch.zeros(N, 3).index_add_(
        0, torch.tensor(SRC), torch.full((E, 3), 1.8125)).index_add_(0, torch.tensor(DST), torch.full((E, 3), -1.8125)))


def test_dump_kernel_is_off_without_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("GDSL_DUMP_DIR", raising=False)
    assert dump_kernel("k", "source", "ir") == []
    monkeypatch.setenv("GDSL_DUMP_DIR", str(tmp_path))
    paths = dump_kernel("k", "source\n", "ir\n")
    assert [open(p).read() for p in paths] == ["source\n", "ir\n"]


# ------------------------------------------------------------------------------------------------
# python -m gdsl kernels
# ------------------------------------------------------------------------------------------------
def _fill_cache(monkeypatch, directory):
    """Write the sources of two kernels (as the runtime does) and a fake numba cache file."""
    from gdsl.compiler.codegen.numba import generate_numba
    from gdsl.compiler.codegen.triton import generate_triton
    from gdsl.kernels.numba_runtime import NumbaKernel
    from gdsl.kernels.triton_runtime import TritonKernel

    monkeypatch.setenv("GDSL_CACHE_DIR", str(directory))
    ins = gdsl.inspect(_graph(), fn.copy_u("h", "m"), fn.sum("m", "out"), h=torch.randn(N, 2))
    numba_kernel = NumbaKernel(generate_numba(ins.kernels[0].plan))
    triton_kernel = TritonKernel(generate_triton(ins.kernels[1].plan))
    paths = [numba_kernel.path, triton_kernel.path]
    os.makedirs(directory / "__pycache__")
    (directory / "__pycache__" / f"{numba_kernel.file_key}.gdsl_x-22.py311.nbi").write_bytes(b"x" * 1000)
    (directory / "notes.txt").write_text("not gdsl's")
    return numba_kernel, triton_kernel, paths


def test_cli_lists_shows_and_clears_the_cache(monkeypatch, tmp_path):
    numba_kernel, triton_kernel, paths = _fill_cache(monkeypatch, tmp_path)
    assert all(os.path.dirname(p) == str(tmp_path) for p in paths)

    out = io.StringIO()
    assert cli.main(["kernels"], out=out) == 0
    table = out.getvalue().splitlines()
    assert table[0].split() == ["KEY", "BACKEND", "PATTERN", "ROWS", "SIZE", "LAST", "USED"]
    rows = {line.split()[0]: line.split() for line in table[1:-1]}
    assert rows[numba_kernel.file_key][1:4] == ["numba", "gather_reduce", "in-CSR"]
    assert rows[triton_kernel.file_key][1:4] == ["triton", "gather_reduce", "out-CSR"]
    numba_size = os.path.getsize(paths[0]) + 1000  # its numba cache file counts
    assert [k.size for k in cli.cached_kernels(str(tmp_path)) if k.backend == "numba"] == [numba_size]
    assert table[-1].startswith("2 kernel(s)")

    out = io.StringIO()
    assert cli.main(["kernels", "show", numba_kernel.source.fingerprint[:6]], out=out) == 0
    shown = out.getvalue()
    assert f"key:       {numba_kernel.file_key}" in shown and numba_kernel.source.source.rstrip() in shown
    assert cli.main(["kernels", "show", "gdsl-no-such-kernel"], out=io.StringIO()) == 1

    out = io.StringIO()
    assert cli.main(["kernels", "clear"], out=out) == 0
    assert out.getvalue().startswith("removed 2 kernel(s)")
    assert os.listdir(tmp_path) == ["notes.txt"]  # only gdsl's files go, with numba's __pycache__
    out = io.StringIO()
    cli.main(["kernels"], out=out)
    assert out.getvalue().startswith("no cached kernels in")


def test_cli_entry_point_runs_as_a_module(monkeypatch, tmp_path):
    numba_kernel, _, _ = _fill_cache(monkeypatch, tmp_path)
    env = {**os.environ, "GDSL_CACHE_DIR": str(tmp_path)}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-m", "gdsl", "kernels"], env=env, cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert numba_kernel.file_key in done.stdout and "2 kernel(s)" in done.stdout
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["kernels", "--help"], out=io.StringIO())
    assert exit_info.value.code == 0
