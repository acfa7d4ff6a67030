"""Generated numba kernels agree with the IR interpreter (``gdsl.compiler.interpret``).

Every test traces a message/reduce (or apply_edges) function, optimises and plans it, generates a
numba module for the fused kernel and compiles it **once** (kernels are memoised per test case,
because numba compilation, about a second per kernel, dominates the run time); hypothesis then
draws graphs (blocks, zero-in-degree rows, multi-edges, a hub node) and features, and the kernel's
outputs must equal the interpreter's on the same kernel program. Max/min also return the winning
edge per (row, feature), checked against the first edge (smallest id) that attains the extremum.

The kernels' dtypes are fixed per test case (the float dtype is part of the traced program; the
index dtype is a numba specialisation), and the cases rotate through float32/float64 x int32/int64
so that every combination is covered; ``test_all_dtype_combinations`` runs one kernel under all four.
"""
from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gdsl
import gdsl.function as fn
from gdsl.compiler import interpret
from gdsl.compiler.codegen.numba import generate_numba
from gdsl.compiler.fusion import plan
from gdsl.compiler.ir import Program
from gdsl.compiler.passes import optimize
from gdsl.compiler.trace import trace_edge_map, trace_gather_reduce
from gdsl.kernels import cache
from gdsl.kernels.numba_runtime import NumbaKernel
from gdsl.kernels.schedules import NumbaSchedule

from oracles import BINARY_MESSAGES, COPY_MESSAGES, MESSAGES, parse_message
from strategies import graph_cases
from kernel_cases import (Compiled, KernelMemo, csr_numpy, expected_args, field_specs, float_schema,
                          make_features, structure, with_node_stage)

pytest.importorskip("numba")

EXAMPLES = settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
COMBOS = [(torch.float32, torch.int32), (torch.float64, torch.int64),
          (torch.float32, torch.int64), (torch.float64, torch.int32)]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}


@pytest.fixture(scope="module", autouse=True)
def _cache_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("gdsl_cache")
        mp.setenv("GDSL_CACHE_DIR", str(path))
        yield path


# ------------------------------------------------------------------------------------------------
# Helpers (shared ones in kernel_cases.py)
# ------------------------------------------------------------------------------------------------
_MEMO = KernelMemo(lambda kernel: NumbaKernel(generate_numba(kernel)))
compiled, gather, edge_map = _MEMO.compiled, _MEMO.gather, _MEMO.edge_map
# edge maps walking the edges in id order (NumbaSchedule.edge_order=1)
_BY_EDGE = KernelMemo(lambda kernel: NumbaKernel(generate_numba(kernel, NumbaSchedule(edge_order=1))))
_specs = field_specs


def in_csr(case, idtype: torch.dtype, rows: str = "dst"):
    """The in-CSR (``rows='src'``: the out-CSR) as numpy arrays of the index dtype."""
    np_type = np.int32 if idtype == torch.int32 else np.int64
    return tuple(a.astype(np_type) for a in csr_numpy(case, rows))


def run_and_check(comp: Compiled, case, idtype, feats, csr=None) -> dict[str, torch.Tensor]:
    feats = with_node_stage(comp.step, comp.params, case, feats)
    return check_kernel(comp.step.kernel, comp.kernel, comp.params, case, idtype, feats, csr)


def check_kernel(plan_, kernel: NumbaKernel, params, case, idtype, feats, csr=None, schedule=None):
    """Run ``kernel`` (generated from ``plan_``) and compare with the interpreter on its program."""
    g = structure(case)
    rows = getattr(plan_, "rows", "dst")
    indptr, indices, eids = in_csr(case, idtype, rows) if csr is None else csr
    num_rows = case.num_dst if rows == "dst" else case.num_src
    ends = None
    if kernel.source.by_edge:  # each edge's row and other endpoint, by edge id
        np_type = indptr.dtype
        ends = tuple(np.asarray(a, dtype=np_type) for a in ((case.dst, case.src) if rows == "dst"
                                                             else (case.src, case.dst)))
    kernel_feats = feats
    if kernel.source.by_position:  # those edge fields go in the CSR's entry order
        order = torch.as_tensor(np.asarray(eids, dtype=np.int64))
        edge = dict(feats["edge"])
        edge.update({name: edge[name][order] for name in kernel.source.by_position})
        kernel_feats = {**feats, "edge": edge}
    out = kernel.run(indptr, indices, eids, num_rows, case.num_edges, kernel_feats, params, edge_ends=ends,
                     schedule=schedule)
    program = plan_.program
    ref = interpret.evaluate(program, params, g, feats)
    def named(names):  # (a log-sum-exp's own statistics are its output: the kernel has no copy)
        return {n for n in names if not n.endswith("@lse")}
    assert named(out) == named(ref) | {n + "@arg" for n, i in program.outputs
                                       if program.instrs[i].op in ("mailbox_max", "mailbox_min")}
    for name, expected in ref.items():
        if name.endswith("@lse") and name not in out:
            continue
        got = out[name]
        assert got.shape == expected.shape and got.dtype == expected.dtype, name
        tol = TOL.get(expected.dtype, dict(rtol=0, atol=0))
        torch.testing.assert_close(got, expected, **tol, equal_nan=True, msg=lambda m: f"{name}: {m}")
    for name, index in program.outputs:
        ins = program.instrs[index]
        if ins.op not in ("mailbox_max", "mailbox_min"):
            continue
        edge_prog = Program(program.instrs, (("edge:msg", ins.args[0]),))
        msg = interpret.evaluate(edge_prog, params, g, feats)["edge:msg"]
        want = expected_args(msg.numpy(), case.dst, case.num_dst, ins.op[len("mailbox_"):])
        got = out[name + "@arg"].reshape(want.shape).numpy()
        np.testing.assert_array_equal(got, want, err_msg=f"{name}@arg")
    return out


CASES = dict(case=graph_cases(max_nodes=10, max_edges=30), seed=st.integers(0, 2**31 - 1),
             kind=st.sampled_from(["int", "real"]))


# ------------------------------------------------------------------------------------------------
# Built-ins: every message with every reducer, and every message as an edge map
# ------------------------------------------------------------------------------------------------
RHS_SHAPES = [(2, 4), (1, 4), (4,)]  # same shape, broadcast over the first axis, lower rank
TARGET_SPACE = {"u": "src", "v": "dst", "e": "edge"}


def builtin_schema(name: str, dtype):
    op, lhs, rhs = parse_message(name)
    schema = {"src": {}, "dst": {}, "edge": {}}
    schema[TARGET_SPACE[lhs]]["a"] = (dtype, (2, 4))
    if rhs is not None:
        rhs_shape = RHS_SHAPES[MESSAGES.index(name) % len(RHS_SHAPES)]
        schema[TARGET_SPACE[rhs]]["b"] = (dtype, rhs_shape)
    return schema


def builtin_message(name: str):
    op, lhs, rhs = parse_message(name)
    if op == "copy":
        return getattr(fn, name)("a", "m")
    return getattr(fn, name)("a", "b", "m")


def all_reducers(nodes):
    out = {}
    for reducer in ("sum", "mean", "max", "min"):
        out.update(getattr(fn, reducer)("m", reducer)(nodes))
    return out


@pytest.mark.parametrize("name", MESSAGES)
@EXAMPLES
@given(**CASES)
def test_builtin_message_with_every_reducer(name, case, seed, kind):
    """One kernel per message computing sum, mean, max and min of it in a single pass."""
    dtype, idtype = COMBOS[MESSAGES.index(name) % len(COMBOS)]
    schema = builtin_schema(name, dtype)
    comp = gather(("builtin", name), builtin_message(name), all_reducers, schema)
    assert [n for n, _ in comp.step.kernel.program.outputs] == ["dst:sum", "dst:mean", "dst:max",
                                                                 "dst:min"]
    nonzero = ("b",) if "_div_" in name else ()
    run_and_check(comp, case, idtype, make_features(case, schema, seed, kind, nonzero))


@pytest.mark.parametrize("name", MESSAGES)
@EXAMPLES
@given(**CASES)
def test_builtin_message_as_edge_map(name, case, seed, kind):
    dtype, idtype = COMBOS[(MESSAGES.index(name) + 1) % len(COMBOS)]
    schema = builtin_schema(name, dtype)
    if name == "copy_u":  # a gather of source rows: the node stage's output, lifted; no kernel
        traced = trace_edge_map(builtin_message(name), _specs(schema))
        assert plan(optimize(traced.program)[0]).kernels == ()
        return
    comp = edge_map(("edge", name), builtin_message(name), schema)
    assert comp.step.kernel.pattern == "edge_map"
    nonzero = ("b",) if "_div_" in name else ()
    feats = make_features(case, schema, seed, kind, nonzero)
    run_and_check(comp, case, idtype, feats)
    by_edge = _BY_EDGE.edge_map(("edge", name), builtin_message(name), schema)
    assert by_edge.kernel.source.by_edge
    run_and_check(by_edge, case, idtype, feats)


def test_builtin_tables():
    assert len(MESSAGES) == 32 and len(BINARY_MESSAGES) == 30 and COPY_MESSAGES == ("copy_u", "copy_e")


@pytest.mark.parametrize("reducer", ["sum", "max"])
@EXAMPLES
@given(**CASES)
def test_single_reducer_kernels(reducer, case, seed, kind):
    """A kernel with one reduction (the message inlined into it), beside the 4-output ones."""
    dtype, idtype = (torch.float32, torch.int64) if reducer == "sum" else (torch.float64, torch.int32)
    schema = float_schema(dtype, src={"a": (2, 4)}, edge={"b": (2, 1)})
    comp = gather(("single", reducer), fn.u_mul_e("a", "b", "m"), getattr(fn, reducer)("m", "o"),
                  schema)
    run_and_check(comp, case, idtype, make_features(case, schema, seed, kind))


# ------------------------------------------------------------------------------------------------
# User-defined functions
# ------------------------------------------------------------------------------------------------
@EXAMPLES
@given(**CASES)
def test_udf_edge_weighted_sum(case, seed, kind):
    schema = float_schema(torch.float32, src={"h": (8,)}, edge={"w": (1,)})
    comp = gather("weighted_sum", lambda e: {"m": e.src["h"] * e.data["w"]},
                  lambda n: {"h": n.mailbox["m"].sum(1)}, schema)
    run_and_check(comp, case, torch.int32, make_features(case, schema, seed, kind))


W_RELU = torch.randn(6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@EXAMPLES
@given(**CASES)
def test_udf_hoisted_linear_then_max(case, seed, kind):
    """relu(h_src @ W) is hoisted to the node stage: the kernel loads the '$k' value."""
    schema = float_schema(torch.float64, src={"h": (6,)})
    comp = gather("relu_linear_max", lambda e: {"m": torch.relu(e.src["h"] @ W_RELU)},
                  lambda n: {"h": n.mailbox["m"].max(1).values}, schema)
    assert comp.step.node_stage is not None
    assert any(inp.name.startswith("$") for inp in comp.step.kernel.inputs)
    run_and_check(comp, case, torch.int64, make_features(case, schema, seed, kind))


@EXAMPLES
@given(**CASES)
def test_udf_u_dot_v(case, seed, kind):
    schema = float_schema(torch.float32, src={"h": (8,)}, dst={"h": (8,)})
    comp = gather("u_dot_v", lambda e: {"s": (e.src["h"] * e.dst["h"]).sum(-1, keepdim=True)},
                  lambda n: {"s": n.mailbox["s"].mean(1)}, schema)
    run_and_check(comp, case, torch.int64, make_features(case, schema, seed, kind))


@EXAMPLES
@given(**CASES)
def test_udf_multi_head(case, seed, kind):
    """(N, H, D) features times (E, H, 1) per-head edge weights, summed and maxed."""
    schema = float_schema(torch.float64, src={"h": (4, 8)}, edge={"a": (4, 1)})
    comp = gather("multi_head", lambda e: {"m": e.src["h"] * e.data["a"]},
                  lambda n: {"sum": n.mailbox["m"].sum(1), "max": n.mailbox["m"].amax(1)}, schema)
    run_and_check(comp, case, torch.int32, make_features(case, schema, seed, kind))


@EXAMPLES
@given(**CASES)
def test_udf_leaky_relu_exp_where(case, seed, kind):
    schema = float_schema(torch.float32, src={"h": (2, 3)}, dst={"h": (2, 3)}, edge={"w": (1, 1)})

    def message(e):
        x = e.src["h"] + e.dst["h"] * e.data["w"]
        y = torch.where(x > 0, torch.exp(x * 0.5), F.leaky_relu(x, 0.25))
        return {"m": torch.sigmoid(y) - torch.tanh(x) + F.elu(x)}

    comp = gather("math", message, lambda n: {"o": n.mailbox["m"].min(1).values}, schema)
    run_and_check(comp, case, torch.int64, make_features(case, schema, seed, kind))


@EXAMPLES
@given(**CASES)
def test_udf_feature_sum_keepdim_and_mean_max_together(case, seed, kind):
    schema = float_schema(torch.float64, src={"h": (3, 4)}, dst={"q": (3, 4)})

    def message(e):
        return {"s": (e.src["h"] * e.dst["q"]).sum(-1, keepdim=True)}

    comp = gather("sum_keepdim_mean_max", message,
                  lambda n: {"mean": n.mailbox["s"].mean(1), "max": n.mailbox["s"].max(1).values},
                  schema)
    assert sum(ins.op.startswith("feature_") for ins in comp.step.kernel.program.instrs) == 1
    run_and_check(comp, case, torch.int64, make_features(case, schema, seed, kind))


W_EDGE = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float32)
W_T = torch.randn(5, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
BIAS = torch.randn(4, generator=torch.Generator().manual_seed(4), dtype=torch.float32)


@EXAMPLES
@given(**CASES)
def test_udf_edge_space_matmul(case, seed, kind):
    """A weight applied to a per-edge value stays in the kernel: scratch + matmul, both
    orientations (x @ W and F.linear), and a captured bias used per edge."""
    schema = float_schema(torch.float32, src={"h": (4,)}, edge={"w": (4,)})

    def message(e):
        x = e.src["h"] * e.data["w"] + BIAS
        return {"a": torch.relu(x @ W_EDGE), "b": F.linear(x, W_T)}

    comp = gather("edge_matmul", message,
                  lambda n: {"a": n.mailbox["a"].sum(1), "b": n.mailbox["b"].max(1).values}, schema)
    assert sum(ins.op == "matmul" for ins in comp.step.kernel.program.instrs) == 2
    run_and_check(comp, case, torch.int32, make_features(case, schema, seed, kind))


@EXAMPLES
@given(**CASES)
def test_udf_edge_map_shared_value_cat_slice_view(case, seed, kind):
    """Edge outputs of several shapes sharing one per-edge value (kept in scratch), cat, slices
    and head views."""
    schema = float_schema(torch.float64, src={"h": (8,)}, dst={"h": (8,)}, edge={"w": (1,)})

    def func(e):
        x = e.src["h"] * e.dst["h"] - e.data["w"]
        heads = x.view(-1, 2, 4)
        return {"x": x, "s": heads.sum(-1), "mx": heads.amax(-1, keepdim=True),
                "c": torch.cat([x[:, 2:5], e.data["w"], heads[:, 1, :]], -1)}

    comp = edge_map("edge_map_mix", func, schema)
    feats = make_features(case, schema, seed, kind)
    run_and_check(comp, case, torch.int64, feats)
    run_and_check(_BY_EDGE.edge_map("edge_map_mix", func, schema), case, torch.int32, feats)


@EXAMPLES
@given(**CASES)
def test_udf_edge_map_softmax_step_both_walks(case, seed, kind):
    """edge_softmax's second step (exp of a logit minus its destination's log-sum-exp, 4 heads:
    exp32 in a loop), walked by rows and in edge-id order."""
    schema = float_schema(torch.float32, dst={"lse": (4,)}, edge={"x": (4,)})

    def func(e):
        return {"y": torch.exp(e.data["x"] - e.dst["lse"]), "z": torch.sigmoid(e.data["x"])}

    feats = make_features(case, schema, seed, kind)
    for memo, idtype in ((_MEMO, torch.int32), (_BY_EDGE, torch.int64)):
        comp = memo.edge_map("softmax_step", func, schema)
        assert "exp32(" in comp.kernel.source.source
        run_and_check(comp, case, idtype, feats)


# softmax reductions: edge by edge (softmax_chunk=0), in chunks of 1, 3 and the default, and with
# hub rows walked in chunks by the partial kernel
SOFTMAX_SCHEDULES = [NumbaSchedule(softmax_chunk=0), NumbaSchedule(softmax_chunk=1),
                     NumbaSchedule(softmax_chunk=3), NumbaSchedule(),
                     NumbaSchedule(softmax_chunk=2, hub_threshold=4, hub_chunk=3)]
_SOFTMAX_MEMOS = [KernelMemo(lambda kernel, s=s: NumbaKernel(generate_numba(kernel, s))) for s in SOFTMAX_SCHEDULES]


def _attention_message(e):
    return {"m": e.src["ft"] * e.data["w"], "e": F.leaky_relu(e.src["el"] + e.dst["er"] + e.data["w"], 0.2)}


def _attention_reduce(n):
    alpha = torch.softmax(n.mailbox["e"], 1)
    return {"h": (alpha * n.mailbox["m"]).sum(1), "l": torch.logsumexp(n.mailbox["e"], 1),
            "s": n.mailbox["m"].sum(1)}


def _weighted_reduce(n):
    alpha = torch.softmax(n.mailbox["e"], 1)
    return {"h": (alpha * n.mailbox["m"]).sum(1), "s": n.mailbox["m"].sum(1)}


@EXAMPLES
@given(**CASES, heads=st.sampled_from([1, 2]), masked=st.booleans(), lse=st.booleans())
def test_softmax_reductions_chunked_and_edge_by_edge(case, seed, kind, heads, masked, lse):
    """Softmax-weighted sums and log-sum-exps (1 and 2 heads, a plain sum beside them) agree with
    the interpreter whatever the chunking; ``masked``: some sources' logits are -inf (rows with
    all / some / none of their logits -inf). Two softmax reductions over 2 heads share their
    logits through per-edge scratch: those stay edge by edge."""
    schema = float_schema(torch.float64, src={"el": (heads, 1), "ft": (heads, 3)}, dst={"er": (heads, 1)},
                          edge={"w": (heads, 1)})
    feats = make_features(case, schema, seed, kind)
    if masked and case.num_src:
        feats["src"]["el"][::2] = float("-inf")
    for schedule, memo in zip(SOFTMAX_SCHEDULES, _SOFTMAX_MEMOS):
        comp = memo.gather(("attention", heads, lse), _attention_message,
                           _attention_reduce if lse else _weighted_reduce, schema)
        source = comp.kernel.source.source
        chunked = bool(schedule.softmax_chunk) and (heads == 1 or not lse)
        assert ("for jc in range(start, end, " in source) == chunked
        out = run_and_check_schedule(comp, case, feats, schedule)
        if case.num_dst and lse:  # the weighted sum's saved statistics: its logits' log-sum-exp
            torch.testing.assert_close(out["dst:h@lse"], out["dst:l"].reshape(out["dst:h@lse"].shape),
                                       equal_nan=True)


def run_and_check_schedule(comp: Compiled, case, feats, schedule) -> dict[str, torch.Tensor]:
    feats = with_node_stage(comp.step, comp.params, case, feats)
    return check_kernel(comp.step.kernel, comp.kernel, comp.params, case, torch.int64, feats, schedule=schedule)


def test_softmax_chunks_shorten_so_their_logits_fit_the_stack():
    """64 heads x 32 edges of logits would exceed the stack scratch limit: chunks of 16."""
    from strategies import GraphCase
    rng = np.random.default_rng(0)
    case = GraphCase(rng.integers(0, 6, 60), np.concatenate([np.zeros(40, np.int64), rng.integers(0, 6, 20)]),
                     6, 6, torch.int64, False)
    schema = float_schema(torch.float64, src={"el": (64, 1), "ft": (64, 3)}, dst={"er": (64, 1)},
                          edge={"w": (64, 1)})
    comp = _MEMO.gather("attention-64-heads", _attention_message, _weighted_reduce, schema)
    assert "for jc in range(start, end, 16):" in comp.kernel.source.source
    run_and_check_schedule(comp, case, make_features(case, schema, 5, "real"), NumbaSchedule())


def test_softmax_chunk_exps_are_one_branch_free_loop():
    """The chunk's exps subtract a per-logit shift (the max, 0 while it is -inf) instead of
    selecting between the exp and 0, which kept LLVM from vectorising the loop (GAT H=8 forward
    kernel 71 -> 49 ms); the values are checked by the masked cases above."""
    schema = float_schema(torch.float32, src={"el": (8, 1), "ft": (8, 3)}, dst={"er": (8, 1)},
                          edge={"w": (8, 1)})
    comp = _MEMO.gather("attention-8-heads-f32", _attention_message, _weighted_reduce, schema)
    source = comp.kernel.source.source
    exp_lines = [line.strip() for line in source.splitlines() if "= exp32(lg" in line]
    assert len(exp_lines) == 1, exp_lines
    assert re.fullmatch(r"lg\w+\[jk \* 8 \+ f\] = exp32\(lg\w+\[jk \* 8 \+ f\] - sh\w+\[f\]\)", exp_lines[0])


def test_softmax_chunks_propagate_nan_logits():
    """A NaN logit makes its row's softmax outputs NaN, as torch.softmax does, chunked or not."""
    from strategies import GraphCase
    case = GraphCase(np.array([0, 1, 2, 0, 1, 2, 3, 3]), np.array([1, 1, 1, 2, 2, 2, 2, 0]), 4, 4,
                     torch.int64, False)
    schema = float_schema(torch.float64, src={"el": (1, 1), "ft": (1, 3)}, dst={"er": (1, 1)},
                          edge={"w": (1, 1)})
    feats = make_features(case, schema, 3, "real")
    feats["edge"]["w"][4] = float("nan")  # row 2's second edge
    for schedule, memo in zip(SOFTMAX_SCHEDULES, _SOFTMAX_MEMOS):
        comp = memo.gather(("attention", 1, True), _attention_message, _attention_reduce, schema)
        full = with_node_stage(comp.step, comp.params, case, feats)
        indptr, indices, eids = in_csr(case, torch.int64)
        out = comp.kernel.run(indptr, indices, eids, 4, case.num_edges, full, comp.params, schedule=schedule)
        h = out["dst:h"].reshape(4, -1)
        assert torch.isnan(h[2]).all() and not torch.isnan(h[[0, 1]]).any(), schedule
        run_and_check_schedule(comp, case, feats, schedule)


# several accumulator sets per row (NumbaSchedule.accumulators), with hub rows too
_SPLIT_SCHEDULES = [NumbaSchedule(accumulators=1), NumbaSchedule(accumulators=3),
                    NumbaSchedule(accumulators=2, hub_threshold=4, hub_chunk=3)]
_SPLIT_MEMOS = [KernelMemo(lambda kernel, s=s: NumbaKernel(generate_numba(kernel, s))) for s in _SPLIT_SCHEDULES]


@EXAMPLES
@given(**CASES)
def test_sums_in_several_accumulator_sets(case, seed, kind):
    """Entries alternating between 1, 3 or 2 sets of a row's sums (odd and even degrees, rows of
    one entry, empty rows, hub rows in chunks) agree with the interpreter, means included; a
    kernel with a max keeps one set."""
    schema = float_schema(torch.float64, src={"h": (2, 3)}, dst={"x": (2, 3)}, edge={"w": (2, 1)})
    feats = make_features(case, schema, seed, kind)

    def message(e):
        return {"m": e.src["h"] * e.data["w"] + e.dst["x"]}

    for schedule, memo in zip(_SPLIT_SCHEDULES, _SPLIT_MEMOS):
        comp = memo.gather("split", message, lambda n: {"s": n.mailbox["m"].sum(1), "a": n.mailbox["m"].mean(1)},
                           schema)
        split = schedule.accumulators
        assert (f"for ka in range({split}):" in comp.kernel.source.source) == (split > 1)
        run_and_check_schedule(comp, case, feats, schedule)
        with_max = memo.gather("split-max", message, lambda n: {"s": n.mailbox["m"].sum(1),
                                                                "x": n.mailbox["m"].max(1).values}, schema)
        assert "for ka in range(" not in with_max.kernel.source.source
        run_and_check_schedule(with_max, case, feats, schedule)


# edge fields passed in the CSR's entry order (gdsl.kernels.edge_order), read at the entry j
_POSITIONAL_SCHEDULES = [NumbaSchedule(), NumbaSchedule(softmax_chunk=0),
                         NumbaSchedule(softmax_chunk=2, hub_threshold=4, hub_chunk=3)]
_POSITIONAL_MEMOS = [KernelMemo(lambda kernel, s=s: NumbaKernel(generate_numba(kernel, s, frozenset({"w"}))))
                     for s in _POSITIONAL_SCHEDULES]
_POSITIONAL_BY_EDGE = KernelMemo(lambda kernel: NumbaKernel(
    generate_numba(kernel, NumbaSchedule(edge_order=1), frozenset({"w"}))))


@EXAMPLES
@given(**CASES)
def test_edge_fields_read_in_entry_order(case, seed, kind):
    """A kernel given ``w`` in the CSR's entry order reads it at ``j`` (no ``eids`` lookup for it)
    and agrees with the interpreter on the edge-id order data: every reducer (max / min still
    report edge ids), a softmax reduction chunked, edge by edge and with hub rows, the backward
    over the out-CSR, and an edge map by rows; an edge map walking the edges reads it by id."""
    schema = float_schema(torch.float64, src={"h": (2, 3), "el": (2, 1)}, dst={"er": (2, 1)},
                          edge={"w": (2, 1), "x": (2, 3)})
    feats = make_features(case, schema, seed, kind)

    def message(e):
        return {"m": e.src["h"] * e.data["w"] + e.data["x"],
                "e": F.leaky_relu(e.src["el"] + e.dst["er"] + e.data["w"], 0.2)}

    def reduce(n):
        alpha = torch.softmax(n.mailbox["e"], 1)
        return {"a": (alpha * n.mailbox["m"]).sum(1), "s": n.mailbox["m"].sum(1),
                "mx": n.mailbox["m"].max(1).values, "mn": n.mailbox["m"].min(1).values,
                "me": n.mailbox["m"].mean(1)}

    for schedule, memo in zip(_POSITIONAL_SCHEDULES, _POSITIONAL_MEMOS):
        comp = memo.gather("positional", message, reduce, schema)
        source = comp.kernel.source
        assert source.by_position == {"w"} and "edge_w[j, " in source.source
        assert "in the CSR's entry order (read at j): w" in source.source
        run_and_check_schedule(comp, case, feats, schedule)
    comp = _POSITIONAL_MEMOS[0].edge_map("positional-map", lambda e: {"y": e.data["w"] * e.src["h"] + e.data["x"]},
                                         schema)
    assert comp.kernel.source.by_position == {"w"}
    run_and_check(comp, case, torch.int32, feats)
    comp = _POSITIONAL_BY_EDGE.edge_map("positional-map", lambda e: {"y": e.data["w"] * e.src["h"]}, schema)
    assert comp.kernel.source.by_position == frozenset() and "edge_w[j, " not in comp.kernel.source.source
    run_and_check(comp, case, torch.int64, feats)


@EXAMPLES
@given(**CASES)
def test_edge_fields_in_entry_order_over_the_out_csr(case, seed, kind):
    """u_mul_e's gradient to the source features walks the out-CSR: ``w`` in that CSR's order."""
    from gdsl.compiler.autodiff import vjp
    schema = float_schema(torch.float32, src={"h": (4,)}, edge={"w": (1,)})
    comp = gather("positional-forward", fn.u_mul_e("h", "w", "m"), fn.sum("m", "o"), schema)
    back = plan(optimize(vjp(comp.step.kernel.program))[0])
    kernel_plan = next(k for k in back.kernels if k.rows == "src")
    kernel = _POSITIONAL_KERNELS.setdefault("u_mul_e_sum", NumbaKernel(generate_numba(
        kernel_plan, NumbaSchedule(), frozenset({"w"}))))
    assert kernel.source.by_position == {"w"}
    feats = make_features(case, schema, seed, kind)
    feats["dst"]["grad:o"] = torch.randn(case.num_dst, 4, generator=torch.Generator().manual_seed(seed))
    feats = with_node_stage(back, comp.params, case, feats)
    check_kernel(kernel_plan, kernel, comp.params, case, torch.int32, feats)


_POSITIONAL_KERNELS: dict[str, NumbaKernel] = {}


def _gat_backward():
    """GAT's backward plan: an out-CSR kernel writing the per-edge logit gradient ``$k`` and an
    in-CSR kernel summing it per destination (``edge_handoffs``: ``{$k: 'dst'}``)."""
    from gdsl.compiler.autodiff import vjp
    from gdsl.compiler.fusion import edge_handoffs
    schema = float_schema(torch.float64, src={"el": (2, 1), "ft": (2, 3)}, dst={"er": (2, 1)})
    comp = gather("handoff-forward", lambda e: {"m": e.src["ft"], "e": F.leaky_relu(e.src["el"] + e.dst["er"], 0.2)},
                  _weighted_reduce_only, schema)
    back = plan(optimize(vjp(comp.step.kernel.program))[0])
    handoffs = edge_handoffs(back)
    if "handoff" not in _POSITIONAL_KERNELS:
        (field, rows), = handoffs.items()
        writer = next(k for k in back.kernels if k.rows != rows and f"edge:{field}" in dict(k.program.outputs))
        reader = next(k for k in back.kernels if k.rows == rows)
        hub = NumbaSchedule(hub_threshold=4, hub_chunk=3)
        _POSITIONAL_KERNELS["handoff"] = (
            (writer, NumbaKernel(generate_numba(writer, NumbaSchedule(), to_position=frozenset({field})))),
            (writer, NumbaKernel(generate_numba(writer, hub, to_position=frozenset({field})))),
            (reader, NumbaKernel(generate_numba(reader, NumbaSchedule(), by_position=frozenset({field})))))
    return comp, back, handoffs, _POSITIONAL_KERNELS["handoff"]


def _weighted_reduce_only(n):
    return {"h": (torch.softmax(n.mailbox["e"], 1) * n.mailbox["m"]).sum(1)}


@EXAMPLES
@given(**CASES)
def test_edge_values_handed_over_in_the_readers_entry_order(case, seed, kind):
    """The out-CSR kernel writes the per-edge value at its edge's in-CSR position (``eo =
    entry_pos[j]``, also from the hub chunks' partial kernel); the in-CSR kernel reads it at ``j``;
    both agree with the interpreter."""
    comp, back, handoffs, ((writer, plain), (_, hub), (reader, summing)) = _gat_backward()
    (field, rows), = handoffs.items()
    assert rows == "dst" and writer.rows == "src"
    assert plain.source.to_position == {field} and "eo = nonneg(entry_pos[j, 0])" in plain.source.source
    assert summing.source.by_position == {field}
    feats = make_features(case, comp.schema, seed, kind)
    g = structure(case)
    forward = interpret.evaluate(comp.step.kernel.program, comp.params, g, feats)
    feats["dst"]["grad:h"] = torch.randn(forward["dst:h"].shape, generator=torch.Generator().manual_seed(seed),
                                         dtype=torch.float64)
    feats["dst"]["h@lse"] = forward["dst:h@lse"]
    feats["dst"]["h@out"] = forward["dst:h"]
    feats = with_node_stage(back, comp.params, case, feats)
    ref = interpret.evaluate(writer.program, comp.params, g, feats)
    out_indptr, out_indices, out_eids = in_csr(case, torch.int64, "src")
    in_indptr, in_indices, in_eids = in_csr(case, torch.int64, "dst")
    where = np.empty(case.num_edges, np.int64)
    where[in_eids] = np.arange(case.num_edges)
    entry_pos = torch.as_tensor(where[out_eids]).to(torch.int32)
    for kernel, schedule in ((plain, NumbaSchedule()), (hub, NumbaSchedule(hub_threshold=4, hub_chunk=3))):
        inputs = {**feats, "edge": {**feats["edge"], "@entry_pos": entry_pos}}
        out = kernel.run(out_indptr, out_indices, out_eids, case.num_src, case.num_edges, inputs, comp.params,
                         schedule=schedule)
        value = out[f"edge:{field}"]
        torch.testing.assert_close(value, ref[f"edge:{field}"][torch.as_tensor(in_eids)], rtol=1e-12, atol=1e-12)
    summed = summing.run(in_indptr, in_indices, in_eids, case.num_dst, case.num_edges,
                         {**feats, "edge": {**feats["edge"], field: value}}, comp.params)
    expect = interpret.evaluate(reader.program, comp.params, g, {**feats, "edge": {**feats["edge"],
                                                                                   field: ref[f"edge:{field}"]}})
    for name, tensor in expect.items():
        torch.testing.assert_close(summed[name], tensor, rtol=1e-12, atol=1e-12)


@EXAMPLES
@given(**CASES)
def test_udf_general_broadcast(case, seed, kind):
    """(4, 1) x (1, 3) broadcasting, flattened: index arithmetic beyond the flat fast path."""
    schema = float_schema(torch.float32, src={"p": (4, 1)}, dst={"q": (1, 3)}, edge={"r": (1, 3)})

    def message(e):
        outer = e.src["p"] * e.dst["q"] + e.data["r"]
        return {"m": outer.reshape(-1, 12) * 2.0, "t": outer}

    comp = gather("broadcast", message,
                  lambda n: {"m": n.mailbox["m"].sum(1), "t": n.mailbox["t"].min(1).values}, schema)
    run_and_check(comp, case, torch.int32, make_features(case, schema, seed, kind))


@EXAMPLES
@given(**CASES)
def test_scalar_features_and_integer_dtypes(case, seed, kind):
    """Feature shape () (one number per node/edge) and int32 / int64 messages."""
    schema = {"src": {"x": (torch.float64, ()), "k": (torch.int32, (3,))},
              "edge": {"y": (torch.float64, ()), "n": (torch.int64, (3,))}}

    def message(e):
        return {"f": e.src["x"] * e.data["y"], "k": e.src["k"] * 2 + 1, "n": e.data["n"] - e.src["k"]}

    comp = gather("scalar_int", message,
                  lambda n: {"f": n.mailbox["f"].sum(1), "k": n.mailbox["k"].sum(1),
                             "kmax": n.mailbox["k"].max(1).values, "nmean": n.mailbox["n"].mean(1)},
                  schema)
    run_and_check(comp, case, torch.int64, make_features(case, schema, seed, kind))


@pytest.mark.parametrize("dtype,idtype", COMBOS)
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@given(**CASES)
def test_all_dtype_combinations(dtype, idtype, case, seed, kind):
    schema = float_schema(dtype, src={"h": (2, 4)}, dst={"h": (2, 4)}, edge={"a": (2, 1)})
    comp = gather(("combo", dtype), lambda e: {"m": (e.src["h"] - e.dst["h"]) * e.data["a"]},
                  lambda n: {"mean": n.mailbox["m"].mean(1), "min": n.mailbox["m"].min(1).values},
                  schema)
    run_and_check(comp, case, idtype, make_features(case, schema, seed, kind))


@EXAMPLES
@given(case=graph_cases(max_nodes=10, max_edges=30), seed=st.integers(0, 2**31 - 1))
def test_relation_in_csr(case, seed):
    """The in-CSR of gdsl's own relation (its id dtype is chosen by size) drives the kernel."""
    schema = float_schema(torch.float32, src={"a": (2, 4)}, edge={"b": (2, 1)})
    comp = gather("relation", fn.u_mul_e("a", "b", "m"), fn.max("m", "o"), schema)
    rel = case.build()._rel()
    csr = rel.in_csr
    run_and_check(comp, case, None, make_features(case, schema, seed, "int"),
                  csr=(csr.indptr, csr.indices, csr.eids))


# ------------------------------------------------------------------------------------------------
# Backward kernels (autodiff): reductions into source rows over the out-CSR, edge ids, outer
# products, saved max/min winners
# ------------------------------------------------------------------------------------------------
def _backward_cases():
    f64, f32 = torch.float64, torch.float32
    w_out = torch.randn(8, 3, generator=torch.Generator().manual_seed(5), dtype=f32)

    def math_message(e):
        x = e.src["h"] * e.dst["h"] + e.data["w"]
        return {"m": torch.where(x > 0, torch.exp(x * 0.5), F.leaky_relu(x, 0.25))}

    return {
        "u_mul_e_max": (fn.u_mul_e("h", "w", "m"), fn.max("m", "out"),
                        float_schema(f64, src={"h": (2, 4)}, edge={"w": (2, 1)})),
        "u_dot_v_mean": (fn.u_dot_v("h", "h", "m"), fn.mean("m", "out"),
                         float_schema(f64, src={"h": (2, 4)}, dst={"h": (2, 4)})),
        "edge_matmul_sum": (lambda e: {"m": (e.src["h"] * e.data["w"]) @ w_out},
                            lambda n: {"o": n.mailbox["m"].sum(1)},
                            float_schema(f32, src={"h": (8,)}, edge={"w": (1,)})),
        "math_min": (math_message, lambda n: {"o": n.mailbox["m"].min(1).values},
                     float_schema(f64, src={"h": (3,)}, dst={"h": (3,)}, edge={"w": (3,)})),
        # per-head loops of 16-48 features and per-head dots of 8 lanes (opaque loop bounds)
        "heads_16": (lambda e: {"m": e.src["h"] * e.data["w"],
                                "s": (e.src["h"] * e.dst["h"]).sum(-1, keepdim=True)},
                     lambda n: {"o": n.mailbox["m"].sum(1), "t": n.mailbox["s"].sum(1)},
                     float_schema(f32, src={"h": (2, 16)}, dst={"h": (2, 16)}, edge={"w": (2, 1)})),
    }


BACKWARD = _backward_cases()
_BACKWARD_COMPILED: dict[str, tuple] = {}


def _backward(name):
    if name not in _BACKWARD_COMPILED:
        from gdsl.compiler.autodiff import vjp

        message, reduce, schema = BACKWARD[name]
        comp = gather(("backward-forward", name), message, reduce, schema)
        back = plan(optimize(vjp(comp.step.kernel.program))[0])
        # edge maps among them walk the edges in id order, the others their rows
        kernels = [(k, NumbaKernel(generate_numba(k, NumbaSchedule(edge_order=1)))) for k in back.kernels]
        _BACKWARD_COMPILED[name] = (comp, back, kernels)
    return _BACKWARD_COMPILED[name]


@pytest.mark.parametrize("name", list(BACKWARD))
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(**CASES)
def test_backward_kernels(name, case, seed, kind):
    comp, back, kernels = _backward(name)
    if name == "u_mul_e_max":
        assert any(k.rows == "src" for k, _ in kernels)
    feats = with_node_stage(comp.step, comp.params, case, make_features(case, comp.schema, seed, kind))
    forward = interpret.evaluate(comp.step.kernel.program, comp.params, structure(case), feats)
    gen = torch.Generator().manual_seed(seed + 1)
    for out_name, index in comp.step.kernel.program.outputs:
        space, _, field = out_name.partition(":")
        value = forward[out_name]
        feats[space]["grad:" + field] = torch.randn(value.shape, generator=gen,
                                                    dtype=torch.float64).to(value.dtype)
        if out_name + "@arg" in forward:
            feats[space][field + "@arg"] = forward[out_name + "@arg"]
    feats = with_node_stage(back, comp.params, case, feats)
    for kernel_plan, kernel in kernels:
        check_kernel(kernel_plan, kernel, comp.params, case, torch.int64 if seed % 2 else torch.int32,
                     feats)


@pytest.mark.parametrize("name", ["heads_16"])
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(**CASES)
def test_wide_head_loops_forward(name, case, seed, kind):
    """The forward kernel of a wide per-head case (its backward: test_backward_kernels) agrees with
    the interpreter; both directions run loops to opaque bounds (the softmax-weighted sum's:
    test_attention.py::test_fused_gat_wide_heads_matches_reference)."""
    comp, back, kernels = _backward(name)
    assert "range(nf" in comp.kernel.source.source
    assert any("range(nf" in kernel.source.source for _, kernel in kernels)
    run_and_check(comp, case, torch.int64 if seed % 2 else torch.int32, make_features(case, comp.schema, seed, kind))


# ------------------------------------------------------------------------------------------------
# The generated text, the cache and errors
# ------------------------------------------------------------------------------------------------
def _u_mul_e_sum_kernel():
    schema = float_schema(torch.float32, src={"h": (16,)}, edge={"w": (1,)})
    return gather("weighted_sum_16", fn.u_mul_e("h", "w", "m"), fn.sum("m", "h"), schema)


def test_generated_source_is_readable():
    comp = _u_mul_e_sum_kernel()
    src = comp.kernel.source
    text = src.source
    program = comp.step.kernel.program
    for line in str(program).splitlines():
        assert "# " + line in text                      # the IR, printed in the header
    assert "@numba.njit(parallel=True, cache=True, fastmath=False" in text
    assert "for v in range(row_splits[p], row_splits[p + 1]):" in text
    assert text.count("def ") == 1 and f"def {src.entry}(" in text
    # one line per IR instruction in the body, the per-edge weight hoisted out of the feature loop
    weight = re.search(r"\n( +)x\d+ = edge_w\[e, 0\]  # %\d+ = load_edge\['w'\]", text)
    loop = re.search(r"\n( +)for f in range\(16\):\n", text[weight.end():])
    assert weight and loop and weight.group(1) == loop.group(1)
    # the row's sum accumulates on the stack, in two sets that entries alternate between, and goes
    # to the output row after its edges
    assert "        acc_out_h = numba.carray(stack_empty(32, np.float32), 32)\n" in text
    assert "for jj in range(start, end - 1, 2):" in text and "for ka in range(2):" in text
    assert re.search(r"\n +acc_out_h\[ka \* 16 \+ f\] \+= x\d+\n", text)
    assert "\n            for f in range(16):\n                out_h[v, f] = (acc_out_h[f] + acc_out_h[16 + f])\n" in text
    one = generate_numba(comp.step.kernel, NumbaSchedule(accumulators=1)).source
    assert "        acc_out_h = numba.carray(stack_empty(16, np.float32), 16)\n" in one
    assert re.search(r"\n +acc_out_h\[f\] \+= x\d+\n", one)
    assert "\n            for f in range(16):\n                out_h[v, f] = acc_out_h[f]\n" in one
    assert "u = nonneg(indices[j])" in text and "start = nonneg(indptr[v])" in text
    assert "opaque" not in text
    assert re.search(r"x\d+ = src_h\[u, f\]  # %\d+ = load_src\['h'\]", text)
    assert src.arg_names[:6] == ["indptr", "indices", "eids", "row_splits", "num_rows", "num_edges"]
    assert "for p in numba.prange(row_splits.shape[0] - 1):" in text
    assert [o.name for o in src.outputs] == ["dst:h"]
    assert src.outputs[0].size == 16 and src.outputs[0].reducer == "sum"
    compile(text, "<generated>", "exec")


def test_prefetch_lines():
    """Gather kernels prefetch the source / edge rows of the entry a few places ahead (the
    schedule's prefetch_distance; 0 disables it)."""
    import gdsl.compiler.codegen.numba as codegen
    from gdsl.kernels.schedules import NumbaSchedule

    kernel = _u_mul_e_sum_kernel().step.kernel
    text = codegen.generate_numba(kernel).source
    assert "if jp < nnz:" in text and "prefetch(src_h, up, 0)" in text and "prefetch(edge_w, ep, 0)" in text
    assert "jp = j + 8" in text
    text = codegen.generate_numba(kernel, NumbaSchedule(prefetch_distance=0)).source
    assert "prefetch(" not in text and "nnz" not in text
    assert "jp = j + 3" in codegen.generate_numba(kernel, NumbaSchedule(prefetch_distance=3)).source


@pytest.mark.parametrize("width, columns", [(8, [0]), (12, [0, 11]), (16, [0]), (32, [0, 16]), (40, [0, 16, 32, 39])])
def test_prefetched_columns_cover_each_line_of_a_row_once(width, columns):
    """One prefetch per cache line a float32 row can touch: a row dividing a line (32 bytes) lies
    in one line, a 48- or 160-byte row may reach into one more line than its size needs."""
    import gdsl.compiler.codegen.numba as codegen

    schema = float_schema(torch.float32, src={"h": (width,)})
    kernel = gather(f"copy_sum_{width}", fn.copy_u("h", "m"), fn.sum("m", "h"), schema).step.kernel
    text = codegen.generate_numba(kernel).source
    found = [int(c) for c in re.findall(r"prefetch\(src_h, up, (\d+)\)", text)]  # (per edge loop)
    assert found and found == columns * (len(found) // len(columns))


def test_opaque_loop_bounds_only_for_in_place_16_to_48_wide_loops():
    """Sums accumulate on the stack with constant loop bounds; max (accumulated in place in the
    output row) runs its 16-48-wide loops to an opaque bound."""
    import gdsl.compiler.codegen.numba as codegen

    def msg(edges):
        return {"m": edges.src["h"]}

    def red_sum(nodes):
        return {"o": nodes.mailbox["m"].sum(1)}

    def red_max(nodes):
        return {"o": nodes.mailbox["m"].max(1).values}

    for red, stack in ((red_sum, True), (red_max, False)):
        for width in (8, 16, 48, 64):
            opaque = not stack and 16 <= width <= 48
            schema = float_schema(torch.float32, src={"h": (width,)})
            traced = trace_gather_reduce(msg, red, field_specs(schema))
            text = codegen.generate_numba(plan(optimize(traced.program)[0]).kernel).source
            assert (f"nf{width} = opaque({width})" in text) == opaque
            assert (f"range(nf{width})" in text) == opaque and (f"range({width})" in text) != opaque
            sets = 2 * width  # two accumulator sets (NumbaSchedule.accumulators)
            assert (f"acc_out_o = numba.carray(stack_empty({sets}, np.float32), {sets})" in text) == stack


@pytest.mark.parametrize("dim", [8, 16, 32, 64])
def test_head_loops_keep_a_contiguous_inner_loop(dim):
    """Per-head loops (heads x features) run their feature loop to an opaque bound at 16-48
    features, and a per-head dot product its 8-lane steps: unrolled, LLVM vectorised the loop over
    the heads instead, gathering strided elements (GAT H=8 D=16 backward 351 -> 163 ms)."""
    import gdsl.compiler.codegen.numba as codegen

    def msg(edges):
        return {"m": edges.src["h"] * edges.data["a"],
                "s": (edges.src["h"] * edges.dst["q"]).sum(-1, keepdim=True)}

    def red(nodes):
        return {"o": nodes.mailbox["m"].sum(1), "t": nodes.mailbox["s"].sum(1)}

    schema = float_schema(torch.float32, src={"h": (8, dim)}, dst={"q": (8, dim)}, edge={"a": (8, 1)})
    traced = trace_gather_reduce(msg, red, field_specs(schema))
    text = codegen.generate_numba(plan(optimize(traced.program)[0]).kernel).source
    inner_opaque = 16 <= dim <= 48
    assert (f"for i1 in range(nf{dim}):" in text) == inner_opaque
    assert (f"for i1 in range({dim}):" in text) == (not inner_opaque)
    lanes = 8 if dim >= 16 else 4
    steps = dim // lanes
    assert (f"for r in range(nf{steps}):" in text) == (lanes == 8)
    assert (f"for r in range({steps}):" in text) == (lanes == 4)
    compile(text, "<generated>", "exec")

    # a softmax-weighted sum per head: its once-per-chunk rescale and once-per-row normalisation too
    def msg_att(edges):
        return {"m": edges.src["h"], "e": edges.src["a"] + edges.dst["b"]}

    def red_att(nodes):
        return {"o": (torch.softmax(nodes.mailbox["e"], 1) * nodes.mailbox["m"]).sum(1)}

    schema = float_schema(torch.float32, src={"h": (8, dim), "a": (8, 1)}, dst={"b": (8, 1)})
    traced = trace_gather_reduce(msg_att, red_att, field_specs(schema))
    text = codegen.generate_numba(plan(optimize(traced.program)[0]).kernel).source
    trip = f"nf{dim}" if inner_opaque else str(dim)
    assert re.search(rf"for i1 in range\({trip}\):\n +acc_out_o\[[^\]]+\] = acc_out_o\[[^\]]+\] \* scs", text)
    assert re.search(rf"for i1 in range\({trip}\):\n +out_o\[v, [^\]]+\] /= den", text)
    compile(text, "<generated>", "exec")


def test_edge_order_walk_source():
    """edge_order=1: an edge map walks edge-id ranges, reads its edge rows in sequence and
    prefetches the endpoints' rows; gather-reduce kernels are unchanged by the knob."""
    import gdsl.compiler.codegen.numba as codegen

    schema = float_schema(torch.float32, src={"h": (8,)}, dst={"q": (8,)}, edge={"w": (8,)})
    traced = trace_edge_map(lambda e: {"s": e.src["h"] * e.dst["q"] + e.data["w"]}, field_specs(schema))
    kernel = plan(optimize(traced.program)[0]).kernel
    src = codegen.generate_numba(kernel, NumbaSchedule(edge_order=1))
    text = src.source
    assert src.by_edge and src.arg_names[:5] == ["row_ids", "other_ids", "edge_splits", "num_rows", "num_edges"]
    assert "for e in range(edge_splits[p], edge_splits[p + 1]):" in text
    assert "v = nonneg(row_ids[e])" in text and "u = nonneg(other_ids[e])" in text and "eids" not in text
    assert "jp = e + 8" in text and "vp = nonneg(row_ids[jp])" in text and "prefetch(dst_q, vp, 0)" in text
    assert "prefetch(edge_w" not in text and "prefetch_write(" not in text  # edge rows: in order
    assert "edge_order=1" in text
    rows = codegen.generate_numba(kernel)
    assert not rows.by_edge and "e = nonneg(eids[j])" in rows.source and "prefetch(edge_w, ep, 0)" in rows.source
    gather_kernel = _u_mul_e_sum_kernel().step.kernel
    assert not codegen.generate_numba(gather_kernel, NumbaSchedule(edge_order=1)).by_edge
    compile(text, "<generated>", "exec")


def test_edge_order_walk_needs_edge_ends():
    schema = float_schema(torch.float32, edge={"w": (2,)})
    comp = _BY_EDGE.edge_map("needs_ends", lambda e: {"y": e.data["w"] * 2.0}, schema)
    w = torch.ones(3, 2)
    ip, ix, ei = (np.array(a) for a in ([0, 1, 3], [0, 1, 0], [1, 0, 2]))
    with pytest.raises(gdsl.GdslError, match="walks the edges in id order"):
        comp.kernel.run(ip, ix, ei, 2, 3, {"edge:w": w}, [])
    with pytest.raises(gdsl.GdslError, match="edge_ends have 2 / 2 entries for 3 edges"):
        comp.kernel.run(ip, ix, ei, 2, 3, {"edge:w": w}, [], edge_ends=(np.array([0, 1]), np.array([0, 1])))
    out = comp.kernel.run(ip, ix, ei, 2, 3, {"edge:w": w}, [], edge_ends=(np.array([1, 0, 1]), np.array([0, 1, 0])))
    torch.testing.assert_close(out["edge:y"], torch.full((3, 2), 2.0))


def test_edge_order_schedule_validation():
    with pytest.raises(ValueError, match="edge_order must be 0 or 1"):
        NumbaSchedule(edge_order=2)
    with pytest.raises(ValueError, match="hub_threshold must be None"):
        NumbaSchedule(edge_order=1, hub_threshold=10)
    assert NumbaSchedule(edge_order=1).codegen_key() != NumbaSchedule().codegen_key()


@settings(max_examples=50, deadline=None)
@given(degrees=st.lists(st.integers(0, 50), max_size=40), parts=st.integers(1, 20))
def test_row_splits_balance_edges(degrees, parts):
    from gdsl.kernels.numba_runtime import row_splits

    indptr = np.concatenate([[0], np.cumsum(degrees)]).astype(np.int32)
    splits = row_splits(indptr, len(degrees), parts)
    assert splits[0] == 0 and splits[-1] == len(degrees) and len(splits) <= parts + 1
    assert np.all(np.diff(splits) > 0) or len(degrees) == 0
    cost = np.diff(indptr[splits].astype(np.int64)) + np.diff(splits)
    total = int(indptr[-1]) + len(degrees)
    # every part stays within one row (its largest) of its fair share
    assert all(c <= total / parts + 1 + max(degrees or [0]) for c in cost)


def test_max_declares_arg_output():
    comp = gather(("single", "max"), fn.u_mul_e("a", "b", "m"), fn.max("m", "o"),
                  float_schema(torch.float64, src={"a": (2, 4)}, edge={"b": (2, 1)}))
    outs = {o.name: o for o in comp.kernel.source.outputs}
    assert outs["dst:o@arg"].dtype == torch.int64 and outs["dst:o@arg"].shape == (2, 4)
    assert outs["dst:o"].reducer == "max" and outs["dst:o"].size == 8


def test_cache_files(tmp_path, monkeypatch):
    monkeypatch.setenv("GDSL_CACHE_DIR", str(tmp_path / "sub"))
    path = cache.source_path("k/ey.1")
    assert path == os.path.join(str(tmp_path / "sub"), "k_ey_1.py") and os.path.isdir(tmp_path / "sub")
    cache.write_atomic(path, "VALUE = 1\n")
    stamp = os.stat(path).st_mtime_ns
    os.utime(path, ns=(stamp - 10**9, stamp - 10**9))
    cache.write_atomic(path, "VALUE = 1\n")           # same text: not rewritten
    assert os.stat(path).st_mtime_ns == stamp - 10**9
    assert cache.load_module("k/ey.1", path).VALUE == 1
    cache.write_atomic(path, "VALUE = 2\n")
    assert open(path).read() == "VALUE = 2\n"
    assert [p for p in os.listdir(tmp_path / "sub") if p.startswith(".tmp")] == []
    monkeypatch.delenv("GDSL_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == os.path.join(str(tmp_path / "home"), ".cache", "gdsl")


def test_kernel_file_lives_in_cache_dir(_cache_dir):
    comp = _u_mul_e_sum_kernel()
    assert os.path.dirname(comp.kernel.path) == str(_cache_dir)
    assert open(comp.kernel.path).read() == comp.kernel.source.source


def test_compile_error_names_the_file():
    comp = _u_mul_e_sum_kernel()
    broken = dataclasses.replace(comp.kernel.source,
                                 source=comp.kernel.source.source.replace("np.float32(0.0)",
                                                                          "np.float32(no_such_name)"))
    kernel = NumbaKernel(broken, key="broken")
    indptr = np.array([0, 1], np.int64)
    with pytest.raises(gdsl.GdslError, match="numba failed to compile") as info:
        kernel.run(indptr, np.zeros(1, np.int64), np.zeros(1, np.int64), 1, 1,
                   {"h": torch.zeros(1, 16), "w": torch.zeros(1, 1)}, [])
    assert kernel.path in str(info.value)


def test_input_errors():
    comp = _u_mul_e_sum_kernel()
    indptr, idx = np.array([0, 1], np.int64), np.zeros(1, np.int64)
    with pytest.raises(gdsl.GdslError, match="missing input"):
        comp.kernel.run(indptr, idx, idx, 1, 1, {"h": torch.zeros(1, 16)}, [])
    with pytest.raises(gdsl.GdslError, match="dtype"):
        comp.kernel.run(indptr, idx, idx, 1, 1, {"h": torch.zeros(1, 16, dtype=torch.float64),
                                                 "w": torch.zeros(1, 1)}, [])
    with pytest.raises(gdsl.GdslError, match="feature shape"):
        comp.kernel.run(indptr, idx, idx, 1, 1, {"h": torch.zeros(1, 8), "w": torch.zeros(1, 1)}, [])
    # inputs by "space:name" and nested by space work too; gradients are detached
    h = torch.ones(1, 16, requires_grad=True)
    out = comp.kernel.run(indptr, idx, idx, 1, 1, {"src": {"h": h}, "edge:w": torch.full((1, 1), 2.0)}, [])
    assert torch.equal(out["dst:h"], torch.full((1, 16), 2.0))
