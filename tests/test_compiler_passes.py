"""IR passes (gdsl.compiler.passes), each tested alone.

Structure: each pass is run on a hand-built or traced program and the result is checked
instruction by instruction (what was removed, merged, folded, rewritten or materialized, and the
space of every value). Meaning: a hypothesis property runs every pass over a set of traced UDF
programs (including a GAT-style one) on random graphs and checks that the IR interpreter gives
the same outputs before and after, and that the rewritten program is still well typed (every
instruction re-infers to the dtype / shape / space it records).
"""
from __future__ import annotations

import functools
import zlib

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gdsl.function as fn
from gdsl.compiler.interpret import Structure, evaluate
from gdsl.compiler.ir import Builder, Program
from gdsl.compiler.ops import OPS, infer
from gdsl.compiler.passes import PIPELINE, constant_fold, cse, dce, hoist, optimize, simplify
from gdsl.compiler.trace import FieldSpec, Traced, trace_edge_map, trace_gather_reduce

try:
    from strategies import GraphCase, features, graph_cases
except ImportError:  # collected as a package (tests/__init__.py)
    from tests.strategies import GraphCase, features, graph_cases

F64 = torch.float64
H, D = 2, 3
PROPERTY = settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))


# ----------------------------------------------------------------------------------- helpers

def schema(src=None, dst=None, edge=None, dtype=F64) -> dict:
    return {space: {n: FieldSpec(dtype, tuple(s)) for n, s in (fields or {}).items()}
            for space, fields in (("src", src), ("dst", dst), ("edge", edge))}


NODE = schema(src={"h": (D,), "g": (D,)}, dst={"h": (D,)}, edge={"w": (1,), "wd": (D,)})


def ops_of(p: Program) -> list[str]:
    return [i.op for i in p]


def count(p: Program, op: str) -> int:
    return sum(1 for i in p if i.op == op)


def assert_well_typed(p: Program) -> None:
    """SSA order, valid outputs, and every instruction re-infers to its recorded type."""
    for i, ins in enumerate(p):
        assert all(0 <= a < i for a in ins.args), (i, ins)
        if OPS[ins.op].kind in ("load", "const"):
            continue
        dtype, shape, space = infer(ins.op, [p[a] for a in ins.args], dict(ins.attrs), None)
        assert (dtype, tuple(shape), space) == (ins.dtype, ins.shape, ins.space), (i, str(p))
    for _, index in p.outputs:
        assert 0 <= index < len(p)


def load(b: Builder, space: str, name: str, shape, dtype=F64) -> int:
    return b.add(f"load_{space}", (), {"field": name}, dtype=dtype, shape=tuple(shape), space=space)


def const(b: Builder, value) -> int:
    dtype = torch.bool if isinstance(value, bool) else torch.int64 if isinstance(value, int) else \
        torch.get_default_dtype()
    return b.add("const", (), {"value": value, "weak": True}, dtype=dtype, shape=(), space="param")


def program_features(p: Program, case: GraphCase, seed: int) -> dict:
    """Random float64 features for every field ``p`` loads; one node set on homogeneous graphs."""
    wanted = {"src": {}, "dst": {}, "edge": {}}
    for ins in p:
        if ins.op in ("load_src", "load_dst", "load_edge"):
            wanted[ins.op[len("load_"):]][ins.attr("field")] = ins.shape
    def make(where, name, shape):  # seeded by name: a program and its rewrite get equal inputs
        return features(case, shape, where, seed + zlib.crc32(f"{where}:{name}".encode()) % 10**6)

    edge = {n: make("edge", n, s) for n, s in wanted["edge"].items()}
    if case.is_block:
        src = {n: make("src", n, s) for n, s in wanted["src"].items()}
        dst = {n: make("dst", n, s) for n, s in wanted["dst"].items()}
    else:
        shapes = {**wanted["src"], **wanted["dst"]}
        src = dst = {n: make("src", n, s) for n, s in shapes.items()}
    return {"src": src, "dst": dst, "edge": edge}


def structure(case: GraphCase) -> Structure:
    return Structure(torch.as_tensor(case.src, dtype=case.idtype),
                     torch.as_tensor(case.dst, dtype=case.idtype), case.num_src, case.num_dst)


def run(p: Program, params, case: GraphCase, seed: int) -> dict[str, torch.Tensor]:
    return evaluate(p, params, structure(case), program_features(p, case, seed))


def assert_same_results(before: dict, after: dict) -> None:
    # A pass may turn a reduction into one that also saves statistics for its backward (@lse).
    after = {k: v for k, v in after.items() if not k.endswith("@lse") or k in before}
    assert sorted(before) == sorted(after)
    for name in before:
        a, b = after[name], before[name]
        assert a.shape == b.shape and a.dtype == b.dtype, name
        if name.endswith("@arg"):
            assert torch.equal(a, b), name
        else:
            torch.testing.assert_close(a, b, msg=name)


FIXED = GraphCase(src=np.array([0, 0, 2, 1, 4, 3]), dst=np.array([1, 1, 2, 3, 3, 3]), num_src=6,
                  num_dst=6, idtype=torch.int64, is_block=False)


# ------------------------------------------------------------------------ traced programs

_gen = torch.Generator().manual_seed(99)
W = torch.randn(D, 4, generator=_gen, dtype=F64)
W2 = torch.randn(D, 4, generator=_gen, dtype=F64)
W_CAT = torch.randn(2 * D, 4, generator=_gen, dtype=F64)
W_ROW = torch.randn(1, D, generator=_gen, dtype=F64)  # broadcasts over the row axis: a reshape
ATTN_VEC = torch.randn(H, D, generator=_gen, dtype=F64)
with torch.random.fork_rng():  # seeded weights without touching the global RNG of other tests
    torch.manual_seed(99)
    ATTN = nn.Sequential(nn.Linear(2 * D, 1), nn.LeakyReLU(0.2)).double()


def msg_copy(edges):
    return {"m": edges.src["h"]}


def msg_dead_and_duplicate(edges):
    w = edges.data["w"]
    unused = edges.dst["h"] * 2  # noqa: F841 (dead code on purpose)
    g = edges.src["g"]
    return {"m": edges.src["h"] * w + edges.src["h"] * w + torch.exp(g) * torch.exp(g)}


def msg_identities(edges):
    h = edges.src["h"]
    x = (h * 1 + 0 - 0) / 1 + (-(-edges.dst["h"])) ** 2
    x = x + h.view(-1, 1, D).view(-1, D) * edges.data["w"].sum(-1, keepdim=True)
    return {"m": 1 * x ** 1 + 0}


def msg_pool(edges):
    return {"m": torch.relu(edges.src["h"] @ W)}


def msg_gat(edges):
    z = torch.cat([edges.dst["h"], edges.src["h"]], 1)
    return {"m": edges.src["h"], "a": ATTN(z)}


def red_gat(nodes):
    alpha = torch.softmax(nodes.mailbox["a"], 1)
    return {"o": (alpha * nodes.mailbox["m"]).sum(1)}


def msg_gat_multihead(edges):
    zs = edges.src["hh"].view(-1, H, D)
    zd = edges.dst["hh"].view(-1, H, D)
    score = (zs * ATTN_VEC).sum(-1, keepdim=True) + (zd * ATTN_VEC).sum(-1).unsqueeze(-1)
    return {"m": zs * edges.data["a"].unsqueeze(-1), "a": F.leaky_relu(score, 0.2)}


def red_gat_multihead(nodes):
    alpha = torch.softmax(nodes.mailbox["a"], 1)
    return {"o": (alpha * nodes.mailbox["m"]).sum(1), "p": nodes.mailbox["m"].max(1).values}


def msg_hoistable(edges):
    return {"m": (edges.src["h"] @ W) * edges.data["w"] + edges.dst["h"] @ W2
            + (edges.src["g"] * edges.dst["h"] * W_ROW).sum(-1, keepdim=True)}


def red_softmax_by_hand(nodes):
    a = nodes.mailbox["a"]
    e = torch.exp(a - a.max(1, keepdim=True).values)
    alpha = e / e.sum(1, keepdim=True)
    return {"o": (alpha * nodes.mailbox["m"]).sum(1), "p": nodes.mailbox["m"].min(1).values}


def msg_where_clamp(edges):
    h = edges.src["h"]
    x = torch.where(h > edges.dst["h"], h ** 2, F.elu(edges.dst["h"]))
    return {"m": torch.clamp(x, -0.5, 2.0) + torch.sigmoid(edges.data["wd"]) * 1}


def edge_scores(edges):
    z = torch.cat([edges.src["h"], edges.dst["h"]], -1) @ W_CAT
    return {"s": z.sum(-1), "t": torch.exp((edges.src["h"] * edges.dst["h"]).sum(-1, keepdim=True))}


def hand_built_constants() -> Traced:
    """``(2 * 3 + h) * (8 - 4 / 2) + exp(0.0)``, summed: only a hand-built program has
    constant-only sub-expressions (Python folds them before tracing)."""
    b = Builder()
    six = b.add("mul", (const(b, 2), const(b, 3)))
    h = load(b, "src", "h", (D,))
    x = b.add("add", (six, h))
    y = b.add("sub", (const(b, 8), b.add("div", (const(b, 4), const(b, 2)))))
    z = b.add("add", (b.add("mul", (x, y)), b.add("exp", (const(b, 0.0),))))
    out = b.add("mailbox_sum", (z,))
    return Traced(b.build([("dst:o", out)]), [])


MULTI = schema(src={"hh": (H * D,)}, dst={"hh": (H * D,)}, edge={"a": (H,)})
PROGRAMS = {
    "copy_sum": lambda: trace_gather_reduce(msg_copy, fn.sum("m", "o"), NODE),
    "dead_and_duplicate": lambda: trace_gather_reduce(msg_dead_and_duplicate, fn.mean("m", "o"), NODE),
    "identities": lambda: trace_gather_reduce(msg_identities, fn.max("m", "o"), NODE),
    "sage_pool": lambda: trace_gather_reduce(msg_pool, fn.max("m", "o"), NODE),
    "gat": lambda: trace_gather_reduce(msg_gat, red_gat, NODE),
    "gat_multihead": lambda: trace_gather_reduce(msg_gat_multihead, red_gat_multihead, MULTI),
    "gat_softmax_by_hand": lambda: trace_gather_reduce(msg_gat, red_softmax_by_hand, NODE),
    "hoistable": lambda: trace_gather_reduce(msg_hoistable, fn.sum("m", "o"), NODE),
    "where_clamp": lambda: trace_gather_reduce(msg_where_clamp, fn.min("m", "o"), NODE),
    "edge_scores": lambda: trace_edge_map(edge_scores, NODE),
    "constants": hand_built_constants,
}


@functools.cache
def traced(name: str) -> Traced:
    return PROGRAMS[name]()


PASSES = {"dce": dce, "cse": cse, "constant_fold": constant_fold, "simplify": simplify,
          "hoist": hoist, "optimize": lambda p: optimize(p)[0]}


@functools.cache
def transformed(pass_name: str, prog_name: str) -> Program:
    return PASSES[pass_name](traced(prog_name).program)


# ------------------------------------------------------------------ property: same results

@pytest.mark.parametrize("prog_name", list(PROGRAMS))
@pytest.mark.parametrize("pass_name", list(PASSES))
@PROPERTY
@given(case=graph_cases(max_nodes=8, max_edges=20), seed=st.integers(0, 2**16))
def test_pass_preserves_results(pass_name, prog_name, case, seed):
    t = traced(prog_name)
    after = transformed(pass_name, prog_name)
    assert_well_typed(after)
    assert after.outputs and [n for n, _ in after.outputs] == [n for n, _ in t.program.outputs]
    with torch.no_grad():
        assert_same_results(run(t.program, t.params, case, seed), run(after, t.params, case, seed))


@pytest.mark.parametrize("prog_name", list(PROGRAMS))
def test_traced_programs_are_well_typed(prog_name):
    assert_well_typed(traced(prog_name).program)


@pytest.mark.parametrize("prog_name", list(PROGRAMS))
@pytest.mark.parametrize("pass_name", list(PASSES))
def test_passes_are_idempotent(pass_name, prog_name):
    once = transformed(pass_name, prog_name)
    assert PASSES[pass_name](once) == once


# ------------------------------------------------------------------------------------ dce

def test_dce_removes_unused_loads_and_dead_code():
    p = traced("dead_and_duplicate").program
    assert p[0].op == "load_edge" and p[1].op == "load_dst"  # read, then never used
    q = dce(p)
    assert count(q, "load_edge") == 1  # w is used
    assert count(q, "load_dst") == 0  # the dead edges.dst['h'] * 2 is gone ...
    assert len(q) == len(p) - 3  # ... with its constant and its mul
    assert ops_of(q)[-1] == "mailbox_mean" and q.outputs == (("dst:o", len(q) - 1),)


def test_dce_on_a_hand_built_program_renumbers_arguments_and_outputs():
    b = Builder()
    dead_edge = load(b, "edge", "w", (1,))
    h = load(b, "src", "h", (D,))
    dead_dst = load(b, "dst", "x", (D,))
    b.add("neg", (dead_dst,))
    s = b.add("mailbox_sum", (h,))
    e = b.add("exp", (dead_edge,))  # noqa: F841 (dead)
    p = b.build([("dst:o", s)])
    q = dce(p)
    assert ops_of(q) == ["load_src", "mailbox_sum"]
    assert q[1].args == (0,) and q.outputs == (("dst:o", 1),)
    assert_same_results(run(p, [], FIXED, 1), run(q, [], FIXED, 1))


def test_dce_keeps_a_fully_live_program():
    p = traced("gat").program
    assert dce(p) == p


# ------------------------------------------------------------------------------------ cse

def test_cse_merges_duplicate_expressions():
    p = traced("dead_and_duplicate").program
    muls = [i for i, ins in enumerate(p) if ins.op == "mul"]
    exps = [i for i, ins in enumerate(p) if ins.op == "exp"]
    assert len(muls) == 4 and len(exps) == 2  # dead h*2, h*w twice, exp*exp
    q = cse(dce(p))
    assert len(q) == len(dce(p)) - 2  # one h*w and one exp(g) fewer
    assert count(q, "exp") == 1
    adds = [ins for ins in q if ins.op == "add"]
    assert adds[0].args[0] == adds[0].args[1]  # h*w + h*w
    (square,) = [ins for ins in q if ins.op == "mul" and ins.args[0] == ins.args[1]]
    assert q[square.args[0]].op == "exp"  # exp(g) * exp(g)


def test_cse_merges_equal_constants_but_not_different_ones():
    b = Builder()
    h = load(b, "src", "h", (D,))
    g = load(b, "src", "g", (D,))
    x = b.add("add", (b.add("mul", (h, const(b, 2))), b.add("mul", (g, const(b, 2)))))
    y = b.add("add", (b.add("mul", (h, const(b, 3))), b.add("mul", (h, const(b, 2)))))
    out = b.add("mailbox_sum", (b.add("sub", (x, y)),))
    p = b.build([("dst:o", out)])
    q = cse(p)
    assert count(p, "const") == 4 and count(q, "const") == 2  # one 2, one 3
    assert count(p, "mul") == 4 and count(q, "mul") == 3  # h*2 is computed once
    assert {q[i].attr("value") for i, ins in enumerate(q) if ins.op == "const"} == {2, 3}
    assert_same_results(run(p, [], FIXED, 2), run(q, [], FIXED, 2))


def test_cse_keeps_int_and_float_constants_apart():
    b = Builder()
    h = load(b, "src", "h", (D,))
    x = b.add("add", (b.add("mul", (h, const(b, 2))), b.add("mul", (h, const(b, 2.0)))))
    p = b.build([("edge:o", x)])
    assert count(cse(p), "const") == 2 and count(cse(p), "mul") == 2


def test_cse_leaves_a_program_without_duplicates_alone():
    p = traced("gat").program
    assert cse(p) == p


# -------------------------------------------------------------------------- constant_fold

def test_constant_fold_folds_constant_subexpressions():
    p = traced("constants").program
    q = constant_fold(p)
    assert ops_of(q) == ["const", "load_src", "add", "const", "mul", "const", "add", "mailbox_sum"]
    six, factor, one = (q[i] for i, ins in enumerate(q) if ins.op == "const")
    assert six.attr("value") == 6 and six.dtype == torch.int64 and six.attr("weak") is True
    assert factor.attr("value") == pytest.approx(6.0) and factor.dtype.is_floating_point
    assert one.attr("value") == pytest.approx(1.0)
    assert all(q[a].op != "const" or ins.op in ("add", "mul") for ins in q for a in ins.args)
    assert_same_results(run(p, [], FIXED, 3), run(q, [], FIXED, 3))
    h = program_features(p, FIXED, 3)["src"]["h"]
    expected = torch.zeros(6, D, dtype=F64).index_add_(
        0, torch.as_tensor(FIXED.dst), (6 + h[torch.as_tensor(FIXED.src)]) * 6.0 + 1.0)
    torch.testing.assert_close(run(q, [], FIXED, 3)["dst:o"], expected)


def test_constant_fold_folds_comparisons_and_where():
    b = Builder()
    h = load(b, "src", "h", (D,))
    cond = b.add("gt", (const(b, 2), const(b, 1)))
    pick = b.add("where", (cond, const(b, 5), const(b, 7)))
    kept = b.add("where", (cond, h, b.add("neg", (h,))))
    out = b.add("add", (kept, pick))
    p = b.build([("edge:o", out)])
    q = constant_fold(p)
    consts = [ins for ins in q if ins.op == "const"]
    assert [(c.attr("value"), c.dtype) for c in consts] == [(True, torch.bool), (5, torch.int64)]
    assert count(q, "gt") == 0 and count(q, "where") == 1  # the where on h stays
    assert_same_results(run(p, [], FIXED, 4), run(q, [], FIXED, 4))


def test_constant_fold_does_not_touch_values_that_depend_on_features():
    for name in ("gat", "identities", "where_clamp"):
        p = traced(name).program
        assert constant_fold(p) == p


# ------------------------------------------------------------------------------- simplify

IDENTITIES = {
    "x*1": lambda x: x * 1, "1*x": lambda x: 1 * x, "x*1.0": lambda x: x * 1.0,
    "x+0": lambda x: x + 0, "0+x": lambda x: 0 + x, "x-0": lambda x: x - 0, "x/1": lambda x: x / 1,
    "x**1": lambda x: x ** 1, "--x": lambda x: -(-x),
    "sum keepdim of size 1": lambda x: x.sum(-1, keepdim=True),
    "view there and back": lambda x: x.view(-1, 1, 1).view(-1, 1),
}


@pytest.mark.parametrize("name", list(IDENTITIES))
def test_simplify_removes_identities(name):
    f = IDENTITIES[name]
    p = trace_gather_reduce(lambda e: {"m": f(e.data["w"])}, fn.sum("m", "o"), NODE).program
    assert len(p) > 2
    q = simplify(p)
    assert ops_of(q) == ["load_edge", "mailbox_sum"] and q[1].args == (0,)
    assert_same_results(run(p, [], FIXED, 5), run(q, [], FIXED, 5))


NOT_IDENTITIES = {
    "x*2": lambda x: x * 2, "x+1": lambda x: x + 1, "0-x": lambda x: 0 - x, "1/x": lambda x: 1 / x,
    "x**3": lambda x: x ** 3, "-x": lambda x: -x,
    "sum keepdim of size 3": lambda x: x.sum(-1, keepdim=True),
    "f64->f32->f64": lambda x: x.float().double(),
}


@pytest.mark.parametrize("name", list(NOT_IDENTITIES))
def test_simplify_keeps_what_is_not_an_identity(name):
    f = NOT_IDENTITIES[name]
    p = trace_gather_reduce(lambda e: {"m": f(e.data["wd"])}, fn.sum("m", "o"), NODE).program
    assert simplify(p) == p


def test_simplify_removes_reshape_and_cast_to_the_same_type():
    b = Builder()
    h = load(b, "src", "h", (H, D))
    r = b.add("reshape", (h,), {"shape": (H, D)})
    c = b.add("cast", (r,), {"to": F64})
    out = b.add("mailbox_sum", (c,))
    p = b.build([("dst:o", out)])
    q = simplify(p)
    assert ops_of(q) == ["load_src", "mailbox_sum"]
    assert_same_results(run(p, [], FIXED, 6), run(q, [], FIXED, 6))


def test_simplify_merges_chained_reshapes():
    p = trace_edge_map(lambda e: {"o": e.src["hh"].view(-1, H, D).view(-1, D, H)}, MULTI).program
    assert count(p, "reshape") == 2
    q = simplify(p)
    assert ops_of(q) == ["load_src", "reshape"]
    assert q[1].args == (0,) and q[1].attr("shape") == (D, H) and q[1].shape == (D, H)
    assert_same_results(run(p, [], FIXED, 7), run(q, [], FIXED, 7))


def test_simplify_removes_double_negation():
    p = trace_edge_map(lambda e: {"o": -(-e.src["h"]) + torch.neg(torch.neg(e.dst["h"]))}, NODE).program
    assert count(p, "neg") == 4
    q = simplify(p)
    assert ops_of(q) == ["load_src", "load_dst", "add"]


@pytest.mark.parametrize("two", [2, 2.0])
def test_simplify_turns_square_into_mul(two):
    p = trace_edge_map(lambda e: {"o": (e.src["h"] - e.dst["h"]) ** two}, NODE).program
    q = simplify(p)
    assert count(q, "pow") == 0 and count(q, "const") == 0
    (mul,) = [ins for ins in q if ins.op == "mul"]
    assert mul.args[0] == mul.args[1] and q[mul.args[0]].op == "sub"
    assert_same_results(run(p, [], FIXED, 8), run(q, [], FIXED, 8))


def test_simplify_splits_linear_over_cat():
    """``cat(h_dst, h_src) @ W.T`` (nn.Linear) becomes ``h_dst @ W[:, :D].T + h_src @ W[:, D:].T``."""
    t = traced("gat")
    p = t.program
    (mm,) = [ins for ins in p if ins.op == "matmul"]
    assert p[mm.args[0]].op == "cat" and mm.attr("transpose") is True
    q = simplify(p)
    assert count(q, "cat") == 0
    matmuls = [ins for ins in q if ins.op == "matmul"]
    assert len(matmuls) == 2 and all(m.attr("transpose") is True for m in matmuls)
    assert [q[m.args[0]].op for m in matmuls] == ["load_dst", "load_src"]
    assert [m.space for m in matmuls] == ["dst", "src"]
    slices = [q[m.args[1]] for m in matmuls]
    assert all(s.op == "slice" and q[s.args[0]].op == "load_param" and q[s.args[0]].attr("index") == 0
               for s in slices)
    assert [(s.attr("axis"), s.attr("start"), s.attr("stop")) for s in slices] == [
        (1, 0, D), (1, D, 2 * D)]
    assert [s.shape for s in slices] == [(1, D), (1, D)]
    (plus,) = [i for i, ins in enumerate(q)
               if ins.op == "add" and {q[a].op for a in ins.args} == {"matmul"}]
    assert q[plus].space == "edge"
    assert_same_results(run(p, t.params, FIXED, 9), run(q, t.params, FIXED, 9))


def test_simplify_splits_plain_matmul_over_cat():
    """``cat(h_src, h_dst) @ W`` (no transpose) slices the rows of W."""
    t = traced("edge_scores")
    q = simplify(t.program)
    assert count(q, "cat") == 0
    matmuls = [ins for ins in q if ins.op == "matmul"]
    assert [m.attr("transpose") for m in matmuls] == [False, False]
    assert [(q[m.args[1]].attr("axis"), q[m.args[1]].attr("start"), q[m.args[1]].attr("stop"))
            for m in matmuls] == [(0, 0, D), (0, D, 2 * D)]
    assert [m.space for m in matmuls] == ["src", "dst"]
    assert_same_results(run(t.program, t.params, FIXED, 10), run(q, t.params, FIXED, 10))


def test_simplify_does_not_split_a_cat_along_another_axis():
    def msg(e):
        stacked = torch.cat([e.src["h"].view(-1, 1, D), e.dst["h"].view(-1, 1, D)], 1)  # (E, 2, D)
        return {"o": stacked @ W}
    p = trace_edge_map(msg, NODE).program
    q = simplify(p)
    (mm,) = [ins for ins in q if ins.op == "matmul"]
    assert q[mm.args[0]].op == "cat" and q[mm.args[0]].shape == (2, D)


def test_simplify_square_of_an_integer_keeps_types():
    p = trace_edge_map(lambda e: {"o": e.src["h"] ** 2 + 1},
                       schema(src={"h": (D,)}, dtype=torch.int64)).program
    q = simplify(p)
    assert_well_typed(q)
    assert q.output("edge:o").dtype == p.output("edge:o").dtype


# ---------------------------------------------------------------------------------- hoist

def test_hoist_materializes_a_source_matmul_consumed_per_edge():
    def msg(e):
        return {"m": (e.src["h"] @ W) * e.data["w"] + e.src["g"].sum(-1, keepdim=True)}
    p = trace_gather_reduce(msg, fn.sum("m", "o"), NODE).program
    assert ops_of(p) == ["load_src", "load_param", "matmul", "load_edge", "mul", "load_src",
                         "feature_sum", "add", "mailbox_sum"]
    q = hoist(p)
    # materialize goes right before the first instruction that reads the value per edge
    assert ops_of(q) == ["load_src", "load_param", "matmul", "load_edge", "materialize", "mul",
                         "load_src", "feature_sum", "materialize", "add", "mailbox_sum"]
    assert [ins.space for ins in q] == ["src", "param", "src", "edge", "src", "edge", "src", "src",
                                        "src", "edge", "dst"]
    assert q[4].args == (2,) and q[5].args == (4, 3)  # the edge mul reads the materialized matmul
    assert q[8].args == (7,) and q[9].args == (5, 8)
    assert (q[4].shape, q[4].dtype) == (q[2].shape, q[2].dtype)
    assert_same_results(run(p, [W], FIXED, 11), run(q, [W], FIXED, 11))


def test_hoist_never_materializes_plain_loads_or_constants():
    for name in PROGRAMS:
        q = hoist(traced(name).program)
        for ins in q:
            if ins.op == "materialize":
                assert OPS[q[ins.args[0]].op].kind not in ("load", "const"), name
                assert ins.space in ("src", "dst", "param"), name
    p = trace_gather_reduce(lambda e: {"m": e.src["h"] * e.dst["h"] + e.data["w"]},
                            fn.sum("m", "o"), NODE).program
    assert hoist(p) == p
    assert hoist(traced("copy_sum").program) == traced("copy_sum").program


def test_hoist_materializes_node_work_feeding_a_mailbox_reduction():
    p = traced("sage_pool").program  # relu(h @ W) is src-only; mailbox_max reads it per edge
    q = hoist(p)
    assert ops_of(q) == ["load_src", "load_param", "matmul", "relu", "materialize", "mailbox_max"]
    assert [ins.space for ins in q] == ["src", "param", "src", "src", "src", "dst"]
    assert q[4].args == (3,) and q[5].args == (4,)


def test_hoist_materializes_destination_and_parameter_work():
    q = hoist(traced("hoistable").program)
    mats = [ins for ins in q if ins.op == "materialize"]
    assert sorted((q[m.args[0]].op, m.space) for m in mats) == [
        ("matmul", "dst"), ("matmul", "src"), ("reshape", "param")]
    matmul_spaces = sorted(ins.space for ins in q if ins.op == "matmul")
    assert matmul_spaces == ["dst", "src"]


def test_hoist_after_simplify_moves_both_halves_of_the_gat_linear_to_nodes():
    t = traced("gat")
    q = hoist(simplify(t.program))
    mats = [ins for ins in q if ins.op == "materialize"]
    assert [(q[m.args[0]].op, m.space) for m in mats] == [("matmul", "dst"), ("matmul", "src")]
    users = {a for ins in q if ins.space == "edge" for a in ins.args}
    assert not any(q[u].op == "matmul" for u in users)  # no edge instruction reads a matmul directly
    assert_same_results(run(t.program, t.params, FIXED, 12), run(q, t.params, FIXED, 12))


# ------------------------------------------------------------------------------- optimize

def test_optimize_runs_the_pipeline_and_records_history():
    t = traced("gat")
    final, history = optimize(t.program)
    assert [name for name, _ in history] == ["dce", "constant_fold", "simplify", "cse", "fuse_softmax", "hoist"]
    assert [name for name, _ in history] == [name for name, _ in PIPELINE]
    assert history[-1][1] == final
    previous = t.program
    for (name, after), (_, pass_fn) in zip(history, PIPELINE):
        assert after == pass_fn(previous), name
        previous = after
    assert count(final, "cat") == 0 and count(final, "materialize") == 2
    assert_well_typed(final)
    assert "materialize" in str(final)


def test_optimize_cleans_up_the_identities_program():
    final, _ = optimize(traced("identities").program)
    assert count(final, "const") == 0 and count(final, "reshape") == 0 and count(final, "neg") == 0
    assert count(final, "pow") == 0 and count(final, "div") == 0
    assert count(final, "feature_sum") == 0  # sum over a size-1 axis with keepdim


def test_optimize_of_the_hand_built_constants_program():
    final, history = optimize(traced("constants").program)
    values = [ins.attr("value") for ins in final if ins.op == "const"]
    assert values == [6, pytest.approx(6.0), pytest.approx(1.0)]
    assert history[0][1] == traced("constants").program  # dce: nothing dead


# ------------------------------------------------------------------------------------------------
# fuse_softmax
# ------------------------------------------------------------------------------------------------
def test_fuse_softmax_turns_weighted_sums_into_online_softmax_reductions():
    from gdsl.compiler.passes import fuse_softmax
    t = traced("gat")
    before = [i.op for i in t.program.instrs]
    assert "mailbox_softmax" in before and "mailbox_sum" in before
    after = fuse_softmax(t.program)
    ops = [i.op for i in after.instrs]
    assert "mailbox_softmax" not in ops and "mailbox_sum" not in ops
    assert ops.count("mailbox_softmax_sum") == 1


def test_fuse_softmax_leaves_other_uses_of_the_weights():
    from gdsl.compiler.passes import fuse_softmax

    def red(nodes):
        alpha = torch.softmax(nodes.mailbox["a"], 1)
        return {"o": (alpha * alpha * nodes.mailbox["m"]).sum(1)}  # quadratic in the weights
    t = trace_gather_reduce(msg_gat, red, NODE)
    assert fuse_softmax(t.program) == dce(t.program)


# ------------------------------------------------------------------------------------------------
# The interpreter's sums of products
# ------------------------------------------------------------------------------------------------
def _dot_program(also_output_product: bool) -> Program:
    b = Builder()
    h = load(b, "src", "h", (3, 5))
    q = load(b, "dst", "q", (3, 5))
    m = b.add("mul", (h, q))
    s = b.add("feature_sum", (m,), {"axis": -1, "keepdim": True})
    outputs = [("edge:s", s)] + ([("edge:m", m)] if also_output_product else [])
    return b.build(outputs)


def test_interpreter_sums_products_as_batched_dots():
    """A product only a feature_sum reads is never materialised: the pair runs as one batched
    dot, with the values of the plain mul-then-sum (which runs when the product is also read)."""
    from gdsl.compiler.interpret import _sums_of_products
    src = torch.tensor([0, 1, 1, 2]); dst = torch.tensor([2, 0, 2, 1])
    g = Structure(src, dst, 3, 3)
    gen = torch.Generator().manual_seed(0)
    feats = {"src": {"h": torch.randn(3, 3, 5, generator=gen, dtype=F64)},
             "dst": {"q": torch.randn(3, 3, 5, generator=gen, dtype=F64)}}
    fused, plain = _dot_program(False), _dot_program(True)
    assert list(_sums_of_products(fused).items()) == [(3, 2)]
    assert _sums_of_products(plain) == {}
    expected = (feats["src"]["h"][src] * feats["dst"]["q"][dst]).sum(-1, keepdim=True)
    for p in (fused, plain):
        torch.testing.assert_close(evaluate(p, [], g, feats)["edge:s"], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("a_shape, b_shape, axis, keepdim", [
    ((4, 3, 5), (4, 3, 5), -1, True), ((4, 3, 5), (4, 3, 5), 0, False), ((4, 3, 5), (4, 1, 5), -1, True),
    ((4, 5), (4, 3, 5), -1, False), ((0, 3, 5), (0, 3, 5), -1, True), ((4, 6), (4, 6), 0, True)])
def test_sum_of_products_matches_mul_then_sum(a_shape, b_shape, axis, keepdim):
    from gdsl.compiler.interpret import _pad_rank, sum_of_products
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(a_shape, generator=gen, dtype=F64)
    b = torch.randn(b_shape, generator=gen, dtype=F64)
    rank = max(a.dim(), b.dim())
    dim = axis % (rank - 1) + 1
    expected = (_pad_rank(a, rank) * _pad_rank(b, rank)).sum(dim, keepdim=keepdim)
    got = sum_of_products(a, b, axis, keepdim)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
