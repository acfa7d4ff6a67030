"""Generated Triton kernels agree with the IR interpreter (``gdsl.compiler.interpret``).

The module runs the kernels under the Triton interpreter on CPU tensors (``TRITON_INTERPRET=1`` is
set here, before ``triton`` is imported, unless the environment already chose; with
``TRITON_INTERPRET=0`` and a GPU the same tests run compiled on CUDA).

Every test traces a message/reduce (or apply_edges) function, optimises and plans it, and generates
the Triton module for the fused kernel **once** (memoised per test case); hypothesis then draws
graphs (blocks, zero-in-degree rows, multi-edges, a hub node), features and a schedule
(:class:`TritonConfig`: tiny edge blocks, feature tiles and inner-reduction chunks, several rows per
program, so that tails, multi-block rows and multi-program feature tiling are all exercised), and
the kernel's outputs must equal the interpreter's on the same kernel program. Max/min also return
the winning edge per (row, feature), checked against the first edge (smallest id) attaining the
extremum. Softmax reductions (attention) also return the per-row log-sum-exp of their logits
(``<name>@lse``), checked against the interpreter's.

Float dtypes: fp32 is checked tightly against the interpreter. fp16/bf16 kernels compute in fp32
and round when storing, so they are checked tightly against the interpreter run on the same
program promoted to fp32 (what the kernel computes), and loosely against the interpreter's own
half-precision result (which rounds after every op and accumulates in half precision).
Backward kernels (``rows='src'`` over the out-CSR, from ``autodiff.vjp``) are checked the same way.
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import dataclasses  # noqa: E402
import re  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytest.importorskip("triton")

import gdsl  # noqa: E402
import gdsl.function as fn  # noqa: E402
from gdsl.compiler import interpret  # noqa: E402
from gdsl.compiler.autodiff import vjp  # noqa: E402
from gdsl.compiler.codegen.triton import TritonConfig, generate_triton  # noqa: E402
from gdsl.compiler.fusion import plan  # noqa: E402
from gdsl.compiler.ir import Program  # noqa: E402
from gdsl.compiler.passes import optimize  # noqa: E402
from gdsl.compiler.trace import FieldSpec, trace_edge_map, trace_gather_reduce  # noqa: E402
from gdsl.compiled import compiled_kernel  # noqa: E402
from gdsl.kernels.triton_runtime import TritonKernel  # noqa: E402

from oracles import MESSAGES, parse_message  # noqa: E402
from strategies import graph_cases  # noqa: E402
from kernel_cases import (Compiled, KernelMemo, csr_numpy, expected_args, field_specs, float_schema,  # noqa: E402
                          make_features, structure, with_node_stage)

# Padding lanes (masked loads read 0) may divide by zero; their results are never kept.
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETED else "cuda"
if not INTERPRETED and not torch.cuda.is_available():
    pytest.skip("TRITON_INTERPRET=0 needs a CUDA device", allow_module_level=True)

EXAMPLES = settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
HALF = (torch.float16, torch.bfloat16)
COMBOS = [(torch.float32, torch.int32), (torch.float16, torch.int64),
          (torch.float32, torch.int64), (torch.float16, torch.int32)]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12),
       torch.float16: dict(rtol=2e-3, atol=2e-3), torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2)}
CONFIGS = [
    TritonConfig(),
    TritonConfig(block_e=4, block_f=4, block_k=2, rows_per_program=3),
    TritonConfig(block_e=2, block_f=2, block_k=1, rows_per_program=2, num_warps=2),
    TritonConfig(block_e=8, block_f=16, block_k=4, max_tile=64),
]


@pytest.fixture(scope="module", autouse=True)
def _cache_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("gdsl_cache")
        mp.setenv("GDSL_CACHE_DIR", str(path))
        yield path


# ------------------------------------------------------------------------------------------------
# Helpers (shared ones in kernel_cases.py)
# ------------------------------------------------------------------------------------------------
_MEMO = KernelMemo(lambda kernel: TritonKernel(generate_triton(kernel)))
compiled, gather, edge_map = _MEMO.compiled, _MEMO.gather, _MEMO.edge_map
_specs = field_specs


def csr(case, idtype, rows: str = "dst"):
    """The in-CSR (``rows='dst'``) or out-CSR (``rows='src'``) as tensors of the index dtype."""
    return tuple(torch.as_tensor(a).to(idtype) for a in csr_numpy(case, rows))


def promote(program: Program) -> Program:
    """The program with every half-precision dtype replaced by fp32 (what the kernels compute)."""
    def fix(d):
        return torch.float32 if d in HALF else d
    instrs = tuple(dataclasses.replace(ins, dtype=fix(ins.dtype),
                                       attrs=tuple((k, fix(v) if isinstance(v, torch.dtype) else v)
                                                   for k, v in ins.attrs))
                   for ins in program.instrs)
    return Program(instrs, program.outputs)


def upcast(feats):
    return {sp: {k: (v.float() if v.dtype in HALF else v) for k, v in d.items()} for sp, d in feats.items()}


def half_tolerance(expected: torch.Tensor) -> dict:
    scale = 1.0 + float(expected.float().abs().max()) if expected.numel() else 1.0
    return dict(rtol=5e-2, atol=5e-2 * scale)


def check_kernel(kernel: TritonKernel, kprogram: Program, params, case, idtype, feats, config,
                 csr_arrays=None) -> dict[str, torch.Tensor]:
    """Run ``kernel`` (over the rows of its plan) and compare with the interpreter."""
    rows = kernel.source.rows
    g = structure(case)
    num_rows = case.num_dst if rows == "dst" else case.num_src
    indptr, indices, eids = (t.to(DEVICE) for t in (csr(case, idtype, rows) if csr_arrays is None else csr_arrays))
    dev = {sp: {k: v.to(DEVICE) for k, v in d.items()} for sp, d in feats.items()}
    out = kernel.run(indptr, indices, eids, num_rows, case.num_edges, dev,
                     [p.to(DEVICE) for p in params], config=config)
    out = {k: v.cpu() for k, v in out.items()}
    half = any(ins.dtype in HALF for ins in kprogram.instrs)
    ref = interpret.evaluate(kprogram, params, g, feats)
    ref32 = interpret.evaluate(promote(kprogram), params, g, upcast(feats)) if half else ref
    maxmin = [n for n, i in kprogram.outputs if kprogram.instrs[i].op in ("mailbox_max", "mailbox_min")]
    # a logsumexp output is its own log-sum-exp: the kernel writes no separate @lse for it
    aliased = {n + "@lse" for n, i in kprogram.outputs if kprogram.instrs[i].op == "mailbox_logsumexp"}
    assert set(out) == (set(ref) - aliased) | {n + "@arg" for n in maxmin}
    for name, expected in ref.items():
        if name.endswith("@arg") or name in aliased:
            continue
        got = out[name]
        assert got.shape == expected.shape and got.dtype == expected.dtype, name
        if expected.dtype in HALF:
            torch.testing.assert_close(got.float(), ref32[name].float(), **TOL[expected.dtype],
                                       msg=lambda m: f"{name} (vs fp32 semantics): {m}")
            torch.testing.assert_close(got.float(), expected.float(), **half_tolerance(expected),
                                       msg=lambda m: f"{name} (vs half-precision interpreter): {m}")
        else:
            tol = TOL.get(expected.dtype, dict(rtol=0, atol=0))
            torch.testing.assert_close(got, expected, **tol, msg=lambda m: f"{name}: {m}")
    row_of_edge = case.dst if rows == "dst" else case.src
    for name, index in kprogram.outputs:
        ins = kprogram.instrs[index]
        if ins.op not in ("mailbox_max", "mailbox_min"):
            continue
        edge_prog = Program((promote(kprogram) if half else kprogram).instrs, (("edge:msg", ins.args[0]),))
        msg = interpret.evaluate(edge_prog, params, g, upcast(feats) if half else feats)["edge:msg"]
        reducer = ins.op[len("mailbox_"):]
        want = expected_args(msg.numpy(), row_of_edge, num_rows, reducer)
        got = out[name + "@arg"].reshape(want.shape).numpy()
        if not half:
            np.testing.assert_array_equal(got, want, err_msg=f"{name}@arg")
            continue
        # half precision: the winner is an entry of the row whose message is the reported extremum
        np.testing.assert_array_equal(got < 0, want < 0, err_msg=f"{name}@arg (empty rows)")
        flat = msg.reshape(msg.shape[0], want.shape[1]).float()
        value = out[name].reshape(want.shape).float()
        for v, f in zip(*np.nonzero(got >= 0)):
            e = int(got[v, f])
            assert row_of_edge[e] == v, f"{name}@arg: edge {e} is not an entry of row {v}"
            tol = TOL[out[name].dtype]
            assert abs(float(flat[e, f]) - float(value[v, f])) <= tol["atol"] + tol["rtol"] * abs(float(value[v, f])), \
                f"{name}@arg: edge {e} does not attain the {reducer} of row {v}"
    return out


def run_and_check(comp: Compiled, case, idtype, feats, config=None, csr_arrays=None):
    feats = with_node_stage(comp.step, comp.params, case, feats)
    return check_kernel(comp.kernel, comp.step.kernel.program, comp.params, case, idtype, feats, config,
                        csr_arrays)


CASES = dict(case=graph_cases(max_nodes=8, max_edges=20), seed=st.integers(0, 2**31 - 1),
             kind=st.sampled_from(["int", "real"]), config=st.sampled_from(CONFIGS))


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
def test_builtin_message_with_every_reducer(name, case, seed, kind, config):
    """One kernel per message computing sum, mean, max and min of it in a single pass."""
    dtype, idtype = COMBOS[MESSAGES.index(name) % len(COMBOS)]
    schema = builtin_schema(name, dtype)
    comp = gather(("builtin", name), builtin_message(name), all_reducers, schema)
    assert [n for n, _ in comp.step.kernel.program.outputs] == ["dst:sum", "dst:mean", "dst:max",
                                                                 "dst:min"]
    nonzero = ("b",) if "_div_" in name else ()
    run_and_check(comp, case, idtype, make_features(case, schema, seed, kind, nonzero), config)


@pytest.mark.parametrize("name", MESSAGES)
@EXAMPLES
@given(**CASES)
def test_builtin_message_as_edge_map(name, case, seed, kind, config):
    dtype, idtype = COMBOS[(MESSAGES.index(name) + 1) % len(COMBOS)]
    schema = builtin_schema(name, dtype)
    if name == "copy_u":  # a gather of source rows: the node stage's output, lifted; no kernel
        traced = trace_edge_map(builtin_message(name), _specs(schema))
        assert plan(optimize(traced.program)[0]).kernels == ()
        return
    comp = edge_map(("edge", name), builtin_message(name), schema)
    assert comp.step.kernel.pattern == "edge_map"
    nonzero = ("b",) if "_div_" in name else ()
    run_and_check(comp, case, idtype, make_features(case, schema, seed, kind, nonzero), config)


@pytest.mark.parametrize("reducer", ["sum", "max"])
@EXAMPLES
@given(**CASES)
def test_single_reducer_kernels(reducer, case, seed, kind, config):
    dtype, idtype = (torch.float32, torch.int64) if reducer == "sum" else (torch.float16, torch.int32)
    schema = float_schema(dtype, src={"a": (2, 4)}, edge={"b": (2, 1)})
    comp = gather(("single", reducer), fn.u_mul_e("a", "b", "m"), getattr(fn, reducer)("m", "o"),
                  schema)
    run_and_check(comp, case, idtype, make_features(case, schema, seed, kind), config)


# ------------------------------------------------------------------------------------------------
# User-defined functions
# ------------------------------------------------------------------------------------------------
@EXAMPLES
@given(**CASES)
def test_udf_edge_weighted_sum(case, seed, kind, config):
    schema = float_schema(torch.float32, src={"h": (8,)}, edge={"w": (1,)})
    comp = gather("weighted_sum", lambda e: {"m": e.src["h"] * e.data["w"]},
                  lambda n: {"h": n.mailbox["m"].sum(1)}, schema)
    run_and_check(comp, case, torch.int32, make_features(case, schema, seed, kind), config)


W_RELU = torch.randn(6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float32)


@EXAMPLES
@given(**CASES)
def test_udf_hoisted_linear_then_max(case, seed, kind, config):
    """relu(h_src @ W) is hoisted to the node stage: the kernel loads the '$k' value."""
    schema = float_schema(torch.float32, src={"h": (6,)})
    comp = gather("relu_linear_max", lambda e: {"m": torch.relu(e.src["h"] @ W_RELU)},
                  lambda n: {"h": n.mailbox["m"].max(1).values}, schema)
    assert comp.step.node_stage is not None
    assert any(inp.name.startswith("$") for inp in comp.step.kernel.inputs)
    run_and_check(comp, case, torch.int64, make_features(case, schema, seed, kind), config)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@EXAMPLES
@given(**CASES)
def test_udf_u_dot_v(dtype, case, seed, kind, config):
    """A per-edge feature reduction (an inner tile axis) feeding mean and max."""
    comp = _u_dot_v(dtype)
    run_and_check(comp, case, torch.int64, make_features(case, comp.schema, seed, kind), config)


def _u_dot_v(dtype):
    schema = float_schema(dtype, src={"h": (8,)}, dst={"h": (8,)})
    return gather(("u_dot_v", dtype), lambda e: {"s": (e.src["h"] * e.dst["h"]).sum(-1, keepdim=True)},
                  lambda n: {"s": n.mailbox["s"].mean(1), "t": n.mailbox["s"].max(1).values}, schema)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@EXAMPLES
@given(**CASES)
def test_udf_multi_head(dtype, case, seed, kind, config):
    """(N, H, D) features times (E, H, 1) per-head edge weights, summed and maxed."""
    schema = float_schema(dtype, src={"h": (4, 8)}, edge={"a": (4, 1)})
    comp = gather(("multi_head", dtype), lambda e: {"m": e.src["h"] * e.data["a"]},
                  lambda n: {"sum": n.mailbox["m"].sum(1), "max": n.mailbox["m"].amax(1)}, schema)
    run_and_check(comp, case, torch.int32, make_features(case, schema, seed, kind), config)


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))  # ~10 s per example
@given(**CASES)
def test_udf_multi_head_u_dot_v(case, seed, kind, config):
    """Per-head dot products (E, H, 1) from (N, H, D) features, then a per-head weighted sum:
    two output widths (two feature tiles) in one kernel."""
    schema = float_schema(torch.float32, src={"h": (4, 8)}, dst={"q": (4, 8)})

    def message(e):
        score = (e.src["h"] * e.dst["q"]).sum(-1, keepdim=True)
        return {"s": score, "m": e.src["h"] * torch.sigmoid(score)}

    comp = gather("mh_dot", message, lambda n: {"s": n.mailbox["s"].max(1).values,
                                                "m": n.mailbox["m"].sum(1)}, schema)
    assert len(comp.kernel.source.tiles) == 2 and comp.kernel.source.reductions
    run_and_check(comp, case, torch.int64, make_features(case, schema, seed, kind), config)


@EXAMPLES
@given(**CASES)
def test_udf_leaky_relu_exp_where(case, seed, kind, config):
    schema = float_schema(torch.float32, src={"h": (2, 3)}, dst={"h": (2, 3)}, edge={"w": (1, 1)})

    def message(e):
        x = e.src["h"] + e.dst["h"] * e.data["w"]
        y = torch.where(x > 0, torch.exp(x * 0.5), F.leaky_relu(x, 0.25))
        return {"m": torch.sigmoid(y) - torch.tanh(x) + F.elu(x)}

    comp = gather("math", message, lambda n: {"o": n.mailbox["m"].min(1).values}, schema)
    run_and_check(comp, case, torch.int64, make_features(case, schema, seed, kind), config)


@EXAMPLES
@given(**CASES)
def test_udf_more_math(case, seed, kind, config):
    """abs, sqrt, rsqrt, log, powers (integer, half and general exponents), maximum/minimum,
    division, comparisons and casts."""
    schema = float_schema(torch.float32, src={"h": (4,)}, dst={"h": (4,)}, edge={"w": (1,)})

    def message(e):
        a, b = e.src["h"], e.dst["h"]
        pos = a.abs() + 1.0
        x = torch.sqrt(pos) + torch.rsqrt(pos) * torch.log(pos) - pos ** 1.5 + b ** 2 - pos ** -1
        y = torch.maximum(a, b) / (1.0 + torch.minimum(a, b).abs()) + (a > b).float() * e.data["w"]
        return {"m": x + y, "k": (a >= b).to(torch.int32) * (b != 0).to(torch.int32)}

    comp = gather("more_math", message,
                  lambda n: {"m": n.mailbox["m"].sum(1), "k": n.mailbox["k"].sum(1)}, schema)
    run_and_check(comp, case, torch.int32, make_features(case, schema, seed, kind), config)


@EXAMPLES
@given(**CASES)
def test_udf_feature_sum_keepdim_and_mean_max_together(case, seed, kind, config):
    schema = float_schema(torch.float32, src={"h": (3, 4)}, dst={"q": (3, 4)})

    def message(e):
        return {"s": (e.src["h"] * e.dst["q"]).sum(-1, keepdim=True)}

    comp = gather("sum_keepdim_mean_max", message,
                  lambda n: {"mean": n.mailbox["s"].mean(1), "max": n.mailbox["s"].max(1).values},
                  schema)
    assert sum(ins.op.startswith("feature_") for ins in comp.step.kernel.program.instrs) == 1
    run_and_check(comp, case, torch.int64, make_features(case, schema, seed, kind), config)


W_EDGE = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float32)
W_T = torch.randn(5, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
BIAS = torch.randn(4, generator=torch.Generator().manual_seed(4), dtype=torch.float32)


@EXAMPLES
@given(**CASES)
def test_udf_edge_space_matmul(case, seed, kind, config):
    """A weight applied to a per-edge value stays in the kernel: matmul as an inner reduction,
    both orientations (x @ W and F.linear), and a captured bias used per edge."""
    schema = float_schema(torch.float32, src={"h": (4,)}, edge={"w": (4,)})

    def message(e):
        x = e.src["h"] * e.data["w"] + BIAS
        return {"a": torch.relu(x @ W_EDGE), "b": F.linear(x, W_T)}

    comp = gather("edge_matmul", message,
                  lambda n: {"a": n.mailbox["a"].sum(1), "b": n.mailbox["b"].max(1).values}, schema)
    assert sum(ins.op == "matmul" for ins in comp.step.kernel.program.instrs) == 2
    run_and_check(comp, case, torch.int32, make_features(case, schema, seed, kind), config)


@EXAMPLES
@given(**CASES)
def test_udf_edge_map_shared_value_cat_slice_view(case, seed, kind, config):
    """Edge outputs of several widths sharing one per-edge value, cat, slices and head views."""
    schema = float_schema(torch.float32, src={"h": (8,)}, dst={"h": (8,)}, edge={"w": (1,)})

    def func(e):
        x = e.src["h"] * e.dst["h"] - e.data["w"]
        heads = x.view(-1, 2, 4)
        return {"x": x, "s": heads.sum(-1), "mx": heads.amax(-1, keepdim=True),
                "c": torch.cat([x[:, 2:5], e.data["w"], heads[:, 1, :]], -1)}

    comp = edge_map("edge_map_mix", func, schema)
    run_and_check(comp, case, torch.int64, make_features(case, schema, seed, kind), config)


@EXAMPLES
@given(**CASES)
def test_udf_general_broadcast(case, seed, kind, config):
    """(4, 1) x (1, 3) broadcasting, flattened: index arithmetic beyond the flat fast path."""
    schema = float_schema(torch.float32, src={"p": (4, 1)}, dst={"q": (1, 3)}, edge={"r": (1, 3)})

    def message(e):
        outer = e.src["p"] * e.dst["q"] + e.data["r"]
        return {"m": outer.reshape(-1, 12) * 2.0, "t": outer}

    comp = gather("broadcast", message,
                  lambda n: {"m": n.mailbox["m"].sum(1), "t": n.mailbox["t"].min(1).values}, schema)
    run_and_check(comp, case, torch.int32, make_features(case, schema, seed, kind), config)


@EXAMPLES
@given(**CASES)
def test_scalar_features_and_integer_dtypes(case, seed, kind, config):
    """Feature shape () (one number per node/edge), int32 / int64 messages, fp64."""
    schema = {"src": {"x": (torch.float64, ()), "k": (torch.int32, (3,))},
              "edge": {"y": (torch.float64, ()), "n": (torch.int64, (3,))}}

    def message(e):
        return {"f": e.src["x"] * e.data["y"] * 0.1, "k": e.src["k"] * 2 + 1, "n": e.data["n"] - e.src["k"]}

    comp = gather("scalar_int", message,
                  lambda n: {"f": n.mailbox["f"].sum(1), "k": n.mailbox["k"].sum(1),
                             "kmax": n.mailbox["k"].max(1).values, "nmean": n.mailbox["n"].mean(1)},
                  schema)
    run_and_check(comp, case, torch.int64, make_features(case, schema, seed, kind), config)


@EXAMPLES
@given(**CASES)
def test_edge_map_bool_and_integer_outputs(case, seed, kind, config):
    """Boolean (stored as uint8 bytes) and integer per-edge outputs, integer where/max."""
    schema = {"src": {"h": (torch.float32, (3,)), "k": (torch.int64, (3,))},
              "dst": {"h": (torch.float32, (3,)), "k": (torch.int64, (1,))}}

    def func(e):
        gt = e.src["h"] > e.dst["h"]
        return {"gt": gt, "k": torch.where(gt, e.src["k"], e.dst["k"] * 3),
                "mx": torch.maximum(e.src["k"], e.dst["k"]).to(torch.int32)}

    comp = edge_map("bool_int", func, schema)
    assert {o.dtype for o in comp.kernel.source.outputs} == {torch.bool, torch.int64, torch.int32}
    run_and_check(comp, case, torch.int32, make_features(case, schema, seed, kind), config)


@EXAMPLES
@given(**CASES)
def test_edge_map_feature_min_mean_expand_casts(case, seed, kind, config):
    """feature min/mean, lt/le, neg/relu, and casts that round to half precision."""
    schema = float_schema(torch.float32, src={"h": (2, 3)}, dst={"h": (2, 3)}, edge={"w": (1, 1)})

    def func(e):
        x = e.src["h"] * e.dst["h"] + e.data["w"]
        lo, avg = x.amin(-1, keepdim=True), x.mean(-1)
        y = torch.where(x < lo + 0.5, -x, torch.relu(x)) + (x <= avg.unsqueeze(-1)).float()
        return {"lo": lo, "avg": avg, "y": y,
                "half": (x * 3.3).half(), "back": (x * 3.3).half().float() - x * 3.3}

    comp = edge_map("min_mean_expand", func, schema)
    ops = {ins.op for ins in comp.step.kernel.program.instrs}
    assert {"feature_min", "feature_mean", "lt", "le", "cast"} <= ops
    run_and_check(comp, case, torch.int64, make_features(case, schema, seed, kind), config)


@EXAMPLES
@given(**CASES)
def test_in_degree_inside_a_kernel(case, seed, kind, config):
    """A hand-built kernel reading the row's in-degree (``in_degree``) per edge, and ``expand``
    (which only autodiff emits)."""
    from gdsl.compiler.fusion import KernelInput, KernelPlan
    from gdsl.compiler.ir import Builder

    b = Builder()
    h = b.add("load_src", (), {"field": "h"}, dtype=torch.float32, shape=(2,), space="src")
    w = b.add("load_edge", (), {"field": "w"}, dtype=torch.float32, shape=(1,), space="edge")
    deg = b.add("in_degree", (), {"dtype": torch.float32})
    x = b.add("div", (h, b.add("maximum", (deg, b.add("const", (), {"value": 1.0, "weak": True},
                                                            dtype=torch.float32, shape=(), space="param")))))
    y = b.add("expand", (b.add("mul", (w, deg)),), {"shape": (3, 2)})
    kprog = b.build([("dst:o", b.add("mailbox_sum", (x,))), ("edge:x", x), ("dst:y", b.add("mailbox_max", (y,)))])
    kplan = KernelPlan("gather_reduce", "dst", kprog, (KernelInput("h", "src", torch.float32, (2,)),
                                                       KernelInput("w", "edge", torch.float32, (1,))))
    kernel = TritonKernel(generate_triton(kplan))
    feats = make_features(case, {"src": {"h": (torch.float32, (2,))}, "edge": {"w": (torch.float32, (1,))}},
                          seed, kind)
    check_kernel(kernel, kprog, [], case, torch.int64, feats, config)


@pytest.mark.parametrize("dtype,idtype", [(torch.float32, torch.int32), (torch.float16, torch.int64),
                                          (torch.bfloat16, torch.int32), (torch.float64, torch.int64)])
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(**CASES)
def test_all_dtype_combinations(dtype, idtype, case, seed, kind, config):
    schema = float_schema(dtype, src={"h": (2, 4)}, dst={"h": (2, 4)}, edge={"a": (2, 1)})
    comp = gather(("combo", dtype), lambda e: {"m": (e.src["h"] - e.dst["h"]) * e.data["a"]},
                  lambda n: {"mean": n.mailbox["m"].mean(1), "min": n.mailbox["m"].min(1).values},
                  schema)
    run_and_check(comp, case, idtype, make_features(case, schema, seed, kind), config)


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=graph_cases(max_nodes=8, max_edges=20), seed=st.integers(0, 2**31 - 1),
       config=st.sampled_from(CONFIGS))
def test_relation_in_csr(case, seed, config):
    """The in-CSR of gdsl's own relation (its id dtype is chosen by size) drives the kernel."""
    schema = float_schema(torch.float32, src={"a": (2, 4)}, edge={"b": (2, 1)})
    comp = gather("relation", fn.u_mul_e("a", "b", "m"), fn.max("m", "o"), schema)
    in_csr = case.build()._rel().in_csr
    run_and_check(comp, case, None, make_features(case, schema, seed, "int"), config,
                  csr_arrays=(in_csr.indptr, in_csr.indices, in_csr.eids))


# ------------------------------------------------------------------------------------------------
# Attention: online-softmax reductions (mailbox_softmax_sum, mailbox_logsumexp)
# ------------------------------------------------------------------------------------------------
SOFTMAX_EXAMPLES = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
# graphs of every kind, and always some with a hub (one row of 20..60 in-edges: many edge blocks)
SOFTMAX_GRAPHS = st.one_of(graph_cases(max_nodes=8, max_edges=20),
                           graph_cases(max_nodes=6, max_edges=8, hub=True))
SOFTMAX_CASES = dict(case=SOFTMAX_GRAPHS, seed=st.integers(0, 2**31 - 1),
                     kind=st.sampled_from(["int", "real"]), config=st.sampled_from(CONFIGS))
NARROW = [TritonConfig(block_f=8), TritonConfig(block_e=4, block_f=4, rows_per_program=2),
          TritonConfig(block_e=2, block_f=16)]


def _gat_message(edges):
    return {"m": edges.src["h"], "e": F.leaky_relu(edges.src["el"] + edges.dst["er"], 0.2)}


def _gat_reduce(nodes):
    alpha = torch.softmax(nodes.mailbox["e"], 1)
    return {"o": (alpha * nodes.mailbox["m"]).sum(1)}


def _gat_schema(dtype, heads: int, dim: int):
    return float_schema(dtype, src={"h": (heads, dim), "el": (heads, 1)}, dst={"er": (heads, 1)})


def _ops(comp) -> list[str]:
    return [ins.op for ins in comp.step.kernel.program.instrs]


def _check_softmax(comp, case, seed, kind, config, nonzero=()):
    out = run_and_check(comp, case, case.idtype, make_features(case, comp.schema, seed, kind, nonzero), config)
    for name, index in comp.step.kernel.program.outputs:
        if comp.step.kernel.program.instrs[index].op == "mailbox_softmax_sum":
            lse = out[name + "@lse"]
            assert torch.isfinite(lse.float()).all(), name
            empty = np.bincount(case.dst, minlength=case.num_dst) == 0
            assert not lse[torch.as_tensor(empty)].any() and not out[name][torch.as_tensor(empty)].any()
    return out


@pytest.mark.parametrize("heads,dtype", [(1, torch.float32), (4, torch.float32), (4, torch.float64),
                                         (4, torch.float16)])
@SOFTMAX_EXAMPLES
@given(**SOFTMAX_CASES)
def test_softmax_sum_gat(heads, dtype, case, seed, kind, config):
    """GAT attention: per-head logits (H, 1), softmax over the in-edges, weighted sum of (H, D)
    source features, one pass with an online softmax; the per-row log-sum-exp is saved."""
    comp = gather(("gat", heads, dtype), _gat_message, _gat_reduce, _gat_schema(dtype, heads, 3))
    assert "mailbox_softmax_sum" in _ops(comp) and "mailbox_softmax" not in _ops(comp)
    src = comp.kernel.source
    assert [(o.name, o.shape, o.reducer) for o in src.outputs] == [
        ("dst:o", (heads, 3), "softmax_sum"), ("dst:o@lse", (heads, 1), "softmax_sum")]
    assert src.outputs[1].dtype == dtype
    _check_softmax(comp, case, seed, kind, config)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@SOFTMAX_EXAMPLES
@given(**SOFTMAX_CASES)
def test_softmax_sum_single_logit(dtype, case, seed, kind, config):
    """One logit per edge (shape (1,)) weighting (D,) values, negated and divided by a per-edge
    value (masked lanes of the divisor must not poison the sums)."""
    schema = float_schema(dtype, src={"h": (5,)}, dst={"q": (1,)}, edge={"w": (1,)})

    def message(e):
        return {"m": e.src["h"], "e": e.dst["q"] * e.src["h"][:, :1], "w": e.data["w"]}

    def reduce(n):
        return {"o": (-torch.softmax(n.mailbox["e"], 1) * n.mailbox["m"] / n.mailbox["w"]).sum(1)}

    comp = gather(("single_logit", dtype), message, reduce, schema)
    assert "mailbox_softmax_sum" in _ops(comp)
    assert comp.kernel.source.output("dst:o@lse").shape == (1,)
    _check_softmax(comp, case, seed, kind, config, nonzero=("w",))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@SOFTMAX_EXAMPLES
@given(case=SOFTMAX_GRAPHS, seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(["int", "real"]),
       config=st.sampled_from(NARROW))
def test_softmax_sum_wider_than_a_feature_tile(dtype, case, seed, kind, config):
    """A 2 x 24 output over (2, 1) logits with feature tiles of 4..16 lanes: several programs per
    row recompute the statistics of the same logit and store the same log-sum-exp."""
    comp = gather(("gat_wide", dtype), _gat_message, _gat_reduce, _gat_schema(dtype, 2, 24))
    assert comp.kernel.source.schedule(config).feature_programs > 1
    _check_softmax(comp, case, seed, kind, config)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@SOFTMAX_EXAMPLES
@given(**SOFTMAX_CASES)
def test_logsumexp_reducer(dtype, case, seed, kind, config):
    schema = _gat_schema(dtype, 4, 3)
    comp = gather(("logsumexp", dtype), _gat_message, lambda n: {"l": torch.logsumexp(n.mailbox["e"], 1)},
                  schema)
    assert "mailbox_logsumexp" in _ops(comp)
    assert [(o.name, o.reducer) for o in comp.kernel.source.outputs] == [("dst:l", "logsumexp")]
    _check_softmax(comp, case, seed, kind, config)


@SOFTMAX_EXAMPLES
@given(**SOFTMAX_CASES)
def test_softmax_sum_next_to_plain_reductions(case, seed, kind, config):
    """Attention, the logsumexp of the same logits (sharing its statistics), a plain sum and a
    max of the same messages in one kernel."""
    schema = _gat_schema(torch.float32, 4, 3)

    def message(e):
        out = _gat_message(e)
        out["x"] = out["e"] * 2.0
        return out

    def reduce(n):
        alpha = torch.softmax(n.mailbox["e"], 1)
        return {"o": (alpha * n.mailbox["m"]).sum(1), "s": n.mailbox["m"].sum(1),
                "mx": n.mailbox["m"].amax(1), "l": torch.logsumexp(n.mailbox["e"], 1)}

    comp = gather("softmax_mixed", message, reduce, schema)
    ops = _ops(comp)
    assert {"mailbox_softmax_sum", "mailbox_sum", "mailbox_max", "mailbox_logsumexp"} <= set(ops)
    names = [o.name for o in comp.kernel.source.outputs]
    assert names[names.index("dst:o") + 1] == "dst:o@lse" and "dst:l@lse" not in names
    _check_softmax(comp, case, seed, kind, config)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softmax_sum_empty_graphs_and_rows_without_edges(dtype):
    """Fixed cases: no nodes, nodes without edges, and a hub next to zero-in-degree rows."""
    from strategies import GraphCase

    comp = gather(("gat", 4, dtype), _gat_message, _gat_reduce, _gat_schema(dtype, 4, 3))
    hub = np.array([0, 1, 2, 3] * 10 + [4, 0], dtype=np.int64)
    cases = [GraphCase(np.zeros(0, np.int64), np.zeros(0, np.int64), 0, 0, torch.int64, False),
             GraphCase(np.zeros(0, np.int64), np.zeros(0, np.int64), 3, 3, torch.int32, False),
             GraphCase(hub, np.array([2] * 40 + [0, 5], dtype=np.int64), 5, 7, torch.int64, True)]
    for k, case in enumerate(cases):
        for config in (None, CONFIGS[1], CONFIGS[2]):
            _check_softmax(comp, case, k, "real", config)


# ------------------------------------------------------------------------------------------------
# Backward kernels (autodiff): reductions into source rows over the out-CSR, and dst kernels
# ------------------------------------------------------------------------------------------------
D, H = 3, 2
W_BWD = torch.randn(D, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float32)
A_BWD = torch.randn(1, D, generator=torch.Generator().manual_seed(6), dtype=torch.float32)


def _msg_mixed(edges):
    x = torch.tanh(edges.src["h"]) * torch.exp(edges.data["w"]) + edges.dst["h"]
    return {"m": F.leaky_relu(x, 0.2) / (1.0 + torch.sigmoid(edges.dst["h"]))}


def _msg_weighted_matmul(edges):
    return {"m": torch.relu((edges.src["h"] * edges.data["w"]) @ W_BWD)}


def _msg_where(edges):
    a, b = edges.src["h"], edges.dst["h"]
    return {"m": torch.where(a > b, a * b, F.elu(a - b)) ** 2}


def _msg_heads(edges):
    h = edges.src["h"].view(-1, 1, D) * A_BWD
    return {"m": (h * edges.data["w"].unsqueeze(-1)).sum(-1, keepdim=True)}


def _msg_cat_slice(edges):
    x = torch.cat([edges.src["h"][:, 1:], edges.dst["h"]], -1) * edges.data["w"]
    return {"m": x[:, :3] - x[:, 2:]}


BACKWARD = {
    "copy_u_sum": (fn.copy_u("h", "m"), fn.sum("m", "o"), {"src": {"h": (D,)}}),
    "u_mul_e_sum_heads": (fn.u_mul_e("h", "w", "m"), fn.sum("m", "o"),
                          {"src": {"h": (H, D)}, "edge": {"w": (H, 1)}}),
    "u_add_v_mean": (fn.u_add_v("h", "h", "m"), fn.mean("m", "o"), {"src": {"h": (D,)}, "dst": {"h": (D,)}}),
    "u_dot_v_sum": (fn.u_dot_v("h", "h", "m"), fn.sum("m", "o"), {"src": {"h": (H, D)}, "dst": {"h": (H, D)}}),
    "e_div_u_sum": (fn.e_div_u("w", "h", "m"), fn.sum("m", "o"), {"src": {"h": (D,)}, "edge": {"w": (1,)}}),
    "u_mul_e_max": (fn.u_mul_e("h", "w", "m"), fn.max("m", "o"), {"src": {"h": (H, D)}, "edge": {"w": (H, 1)}}),
    "u_sub_v_min": (fn.u_sub_v("h", "h", "m"), fn.min("m", "o"), {"src": {"h": (D,)}, "dst": {"h": (D,)}}),
    "mixed_math_mean": (_msg_mixed, lambda n: {"o": n.mailbox["m"].mean(1)},
                        {"src": {"h": (D,)}, "dst": {"h": (D,)}, "edge": {"w": (1,)}}),
    "edge_matmul_sum": (_msg_weighted_matmul, fn.sum("m", "o"), {"src": {"h": (D,)}, "edge": {"w": (1,)}}),
    "where_pow_sum": (_msg_where, fn.sum("m", "o"), {"src": {"h": (D,)}, "dst": {"h": (D,)}}),
    "heads_sum": (_msg_heads, fn.sum("m", "o"), {"src": {"h": (D,)}, "edge": {"w": (1,)}}),
    "cat_slice_max": (_msg_cat_slice, fn.max("m", "o"),
                      {"src": {"h": (D,)}, "dst": {"h": (D,)}, "edge": {"w": (1,)}}),
}

_BACKWARD: dict[object, tuple] = {}


def backward_kernels(name: str, dtype):
    """Forward kernel, backward step plan and its Triton kernels (memoised)."""
    key = (name, dtype)
    if key not in _BACKWARD:
        mfunc, rfunc, shapes = BACKWARD[name]
        schema = {sp: {k: FieldSpec(dtype, s) for k, s in fields.items()} for sp, fields in shapes.items()}
        traced = trace_gather_reduce(mfunc, rfunc, schema)
        forward = plan(optimize(traced.program)[0])
        backward = plan(optimize(vjp(forward.kernel.program))[0])
        kernels = [TritonKernel(generate_triton(k)) for k in backward.kernels]
        _BACKWARD[key] = (traced.params, forward, backward, kernels)
    return _BACKWARD[key]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("name", sorted(BACKWARD))
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=graph_cases(max_nodes=8, max_edges=20), seed=st.integers(0, 2**31 - 1),
       config=st.sampled_from(CONFIGS))
def test_backward_kernels(name, dtype, case, seed, config):
    """Every kernel of the backward step (``rows='src'`` over the out-CSR for gradients to source
    features, ``rows='dst'`` for the rest) agrees with the interpreter, its inputs being the
    forward inputs, the output gradients, the saved max/min winners and the node stage."""
    if dtype == torch.float16 and name not in ("u_mul_e_sum_heads", "u_dot_v_sum", "u_mul_e_max",
                                               "mixed_math_mean"):
        return
    params, forward, backward, kernels = backward_kernels(name, dtype)
    assert any(k.rows == "src" for k in backward.kernels)
    g = structure(case)
    gen = torch.Generator().manual_seed(seed)
    rows = {"src": case.num_src, "dst": case.num_dst, "edge": case.num_edges}
    feats: dict[str, dict[str, torch.Tensor]] = {sp: {} for sp in rows}
    for inp in forward.kernel.inputs:
        if inp.space in rows:  # away from 0: log / div / relu kinks
            value = torch.rand((rows[inp.space], *inp.shape), generator=gen, dtype=torch.float64) + 0.5
            feats[inp.space][inp.name] = value.to(inp.dtype)
    out = interpret.evaluate(forward.kernel.program, params, g, feats)
    for oname, value in out.items():
        space, field = oname.split(":", 1)
        if "@" in field:
            feats[space][field] = value
        else:
            feats[space][f"grad:{field}"] = torch.randn(value.shape, generator=gen).to(value.dtype)
    if backward.node_stage is not None:
        for oname, value in interpret.evaluate(backward.node_stage, params, g, feats).items():
            space, _, field = oname.partition(":")
            feats[space][field] = value
    for kplan, kernel in zip(backward.kernels, kernels):
        assert kernel.source.rows == kplan.rows
        check_kernel(kernel, kplan.program, params, case, case.idtype, feats, config)


# ------------------------------------------------------------------------------------------------
# The generated text, schedules, the cache and errors
# ------------------------------------------------------------------------------------------------
def _u_mul_e_sum_kernel():
    schema = float_schema(torch.float32, src={"h": (16,)}, edge={"w": (1,)})
    return gather("weighted_sum_16", fn.u_mul_e("h", "w", "m"), fn.sum("m", "h"), schema)


def _on(*tensors):
    return [t.to(DEVICE) for t in tensors]


def _run_u_mul_e_sum(kernel, config=None, n=5):
    indptr, ids, h, w = _on(torch.arange(n + 1), torch.arange(n), torch.randn(n, 16), torch.randn(n, 1))
    out = kernel.run(indptr, ids, ids, n, n, {"h": h, "w": w}, [], config=config)
    return {k: v.cpu() for k, v in out.items()}, (h * w).cpu()


def test_generated_source_is_readable():
    comp = _u_mul_e_sum_kernel()
    src = comp.kernel.source
    text = src.source
    program = comp.step.kernel.program
    for line in str(program).splitlines():
        assert "# " + line in text                      # the IR, printed in the header
    assert text.count("@triton.jit") == 1 and f"def {src.entry}(" in text
    assert "for j0 in range(start, end, BLOCK_E):" in text
    # a [BLOCK_E] vector of source ids, a [BLOCK_E, BF] tile of features, a [BLOCK_E, 1] weight
    assert "nbr = tl.load(indices + j, mask=em, other=0).to(tl.int64)" in text
    assert re.search(r"x\d+ = tl.load\(src_h \+ \(nbr\[:, None\] \* 16 \+ f0\), mask=m\d+, other=0\)"
                     r"  # %\d+ = load_src\['h'\]", text)
    assert re.search(r"x\d+ = tl.load\(edge_w \+ e, mask=em, other=0\)  # %\d+ = load_edge\['w'\]", text)
    assert "tl.sum(tot0, axis=0)" in text            # the edge axis is reduced once per row
    assert src.arg_names[:5] == ["indptr", "indices", "eids", "num_rows", "num_edges"]
    assert [o.name for o in src.outputs] == ["dst:h"]
    assert src.outputs[0].size == 16 and src.outputs[0].reducer == "sum"
    assert [t.size for t in src.tiles] == [16] and src.rows == "dst"
    compile(text, "<generated>", "exec")


def test_schedule_from_config():
    comp = _u_mul_e_sum_kernel()
    src = comp.kernel.source
    default = src.schedule()
    assert default.constexprs == {"ROWS": 1, "BLOCK_E": 64, "BF_0": 16}
    assert default.grid(10) == (10, 1) and default.num_warps == 4
    assert src.schedule(None, num_rows=100, num_edges=500).constexprs["BLOCK_E"] == 16  # low degree
    assert src.schedule(None, num_rows=100, num_edges=3000).constexprs["BLOCK_E"] == 32
    tiled = src.schedule(TritonConfig(block_e=8, block_f=4, rows_per_program=4, num_warps=2))
    assert tiled.constexprs == {"ROWS": 4, "BLOCK_E": 8, "BF_0": 4}
    assert tiled.grid(10) == (3, 4) and tiled.num_warps == 2
    with pytest.raises(ValueError, match="power of two"):
        TritonConfig(block_e=3)
    # inner reductions: chunk lanes capped by block_k and by the tile budget
    dot = _u_dot_v(torch.float32).kernel.source
    (red,) = dot.reductions
    assert red.extent == 8 and red.outer == ("BLOCK_E", "BF_0")
    assert dot.schedule(TritonConfig(block_k=4)).constexprs[red.name] == 4
    assert dot.schedule(TritonConfig(block_e=16, max_tile=32)).constexprs[red.name] == 2


@pytest.mark.parametrize("config", CONFIGS[:3])
def test_feature_tiles_and_rows_per_program(config):
    comp = _u_mul_e_sum_kernel()
    out, want = _run_u_mul_e_sum(comp.kernel, config, n=7)
    torch.testing.assert_close(out["dst:h"], want)


def test_kernel_file_lives_in_cache_dir(_cache_dir):
    comp = _u_mul_e_sum_kernel()
    comp.kernel.compile()
    assert os.path.dirname(comp.kernel.path) == str(_cache_dir)
    assert open(comp.kernel.path).read() == comp.kernel.source.source
    # the same plan gives the same (memoised) kernel
    assert compiled_kernel(comp.step.kernel, "triton") is compiled_kernel(comp.step.kernel, "triton")


def test_compile_error_names_the_file():
    comp = _u_mul_e_sum_kernel()
    broken = dataclasses.replace(comp.kernel.source,
                                 source=comp.kernel.source.source.replace("tl.zeros(", "tl.no_such_fn("))
    kernel = TritonKernel(broken, key="broken")
    with pytest.raises(gdsl.GdslError, match="Triton failed to compile") as info:
        _run_u_mul_e_sum(kernel)
    assert kernel.path in str(info.value)
    syntax = dataclasses.replace(comp.kernel.source, source="def (:\n")
    with pytest.raises(gdsl.GdslError, match="cannot import the generated Triton kernel"):
        TritonKernel(syntax, key="syntax").compile()


def test_input_errors():
    comp = _u_mul_e_sum_kernel()
    indptr, idx, h16, h8, w = _on(torch.tensor([0, 1]), torch.zeros(1, dtype=torch.int64),
                                  torch.zeros(1, 16), torch.zeros(1, 8), torch.zeros(1, 1))
    with pytest.raises(gdsl.GdslError, match="missing input"):
        comp.kernel.run(indptr, idx, idx, 1, 1, {"h": h16}, [])
    with pytest.raises(gdsl.GdslError, match="dtype"):
        comp.kernel.run(indptr, idx, idx, 1, 1, {"h": h16.double(), "w": w}, [])
    with pytest.raises(gdsl.GdslError, match="feature shape"):
        comp.kernel.run(indptr, idx, idx, 1, 1, {"h": h8, "w": w}, [])
    with pytest.raises(gdsl.GdslError, match="indptr has"):
        comp.kernel.run(torch.tensor([0, 1, 1], device=DEVICE), idx, idx, 1, 1, {"h": h16, "w": w}, [])
    if DEVICE != "cpu":
        with pytest.raises(gdsl.BackendError, match="several devices"):
            comp.kernel.run(indptr.cpu(), idx, idx, 1, 1, {"h": h16, "w": w}, [])
    # inputs by "space:name" and nested by space work too; gradients are detached; numpy CSR
    h = torch.ones(1, 16, device=DEVICE, requires_grad=True)
    out = comp.kernel.run(np.array([0, 1]), np.zeros(1, np.int32), np.zeros(1, np.int32), 1, 1,
                          {"src": {"h": h}, "edge:w": torch.full((1, 1), 2.0, device=DEVICE)}, [])
    assert torch.equal(out["dst:h"].cpu(), torch.full((1, 16), 2.0))


def test_empty_graph_and_rows_without_edges():
    comp = _u_mul_e_sum_kernel()
    indptr, none, h, w = _on(torch.zeros(1, dtype=torch.int64), torch.zeros(0, dtype=torch.int64),
                             torch.zeros(0, 16), torch.zeros(0, 1))
    out = comp.kernel.run(indptr, none, none, 0, 0, {"h": h, "w": w}, [])
    assert out["dst:h"].shape == (0, 16)
    indptr, h = _on(torch.zeros(4, dtype=torch.int64), torch.zeros(3, 16))
    out = comp.kernel.run(indptr, none, none, 3, 0, {"h": h, "w": w}, [])
    assert torch.equal(out["dst:h"].cpu(), torch.zeros(3, 16))


def test_bare_mailbox_softmax_raises_a_compile_error():
    """Fusion turns softmax-weighted sums into mailbox_softmax_sum; a bare per-edge softmax that
    reaches the generator anyway is refused clearly."""
    from gdsl.compiler.fusion import KernelInput, KernelPlan
    from gdsl.compiler.ir import Builder

    b = Builder()
    h = b.add("load_src", (), {"field": "h"}, dtype=torch.float32, shape=(4,), space="src")
    kprog = b.build([("edge:a", b.add("mailbox_softmax", (h,)))])
    kplan = KernelPlan("edge_map", "dst", kprog, (KernelInput("h", "src", torch.float32, (4,)),))
    with pytest.raises(gdsl.CompileError, match="softmax"):
        generate_triton(kplan)
