"""The compiler front end: tracing (gdsl.compiler.trace) checked through the IR interpreter.

Every traced program is run by ``gdsl.compiler.interpret.evaluate`` and compared with the
reference executor (``g.update_all`` / ``g.apply_edges`` on a gdsl graph), which defines the
semantics: built-in messages x reducers, DGL-style UDFs (aggregators, GraphSAGE-pool, u_dot_v
scoring, multi-head broadcasting, GAT-style attention), gradients through the interpreter,
printing / fingerprints, and the errors tracing must raise (with the user's file and line).

Tests marked ``xfail(strict=True)`` pin down bugs found in the compiler: each states the
expected (correct) behaviour and turns into a failure (XPASS) once the bug is fixed, so the
marker can then be removed.
"""
from __future__ import annotations

import functools
import inspect
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gdsl
import gdsl.function as fn
from gdsl.compiler.interpret import Structure, evaluate
from gdsl.compiler.trace import FieldSpec, trace_edge_map, trace_gather_reduce

try:
    from strategies import GraphCase, features, graph_cases
except ImportError:  # collected as a package (tests/__init__.py)
    from tests.strategies import GraphCase, features, graph_cases

F64 = torch.float64
FEW = settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
SOME = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))

H, D = 2, 3  # heads, per-head width
WHERE = {"u": "src", "v": "dst", "e": "edge"}
REDUCERS = ["sum", "mean", "max", "min"]
MESSAGES = ["copy_u", "copy_e", *fn.BINARY_MESSAGES]

small_graphs = graph_cases(max_nodes=8, max_edges=20)


# ----------------------------------------------------------------------------------- helpers

def assert_close(actual, expected, **kw):
    torch.testing.assert_close(actual, expected, **kw)


@dataclass
class Env:
    """One drawn graph with features, usable by both the reference executor and the interpreter.

    ``spec`` maps 'src' / 'dst' / 'edge' to ``{field: feature shape}``. On a homogeneous graph the
    source and destination node sets are the same, so a field named on both sides is one tensor.
    """

    case: GraphCase
    spec: dict
    seed: int = 0
    requires_grad: bool = False
    feats: dict = field(default_factory=dict)  # {'src': {...}, 'dst': {...}, 'edge': {...}}

    def __post_init__(self):
        k = iter(range(10_000))
        rg = self.requires_grad
        leaf = (lambda t: t.requires_grad_(True)) if rg else (lambda t: t)
        edge = {n: leaf(features(self.case, s, "edge", self.seed + next(k)))
                for n, s in self.spec.get("edge", {}).items()}
        if self.case.is_block:
            src = {n: leaf(features(self.case, s, "src", self.seed + next(k)))
                   for n, s in self.spec.get("src", {}).items()}
            dst = {n: leaf(features(self.case, s, "dst", self.seed + next(k)))
                   for n, s in self.spec.get("dst", {}).items()}
        else:
            shapes = {**self.spec.get("src", {}), **self.spec.get("dst", {})}
            for n, s in self.spec.get("src", {}).items():
                assert shapes[n] == s, "a node field must have one shape on a homogeneous graph"
            src = {n: leaf(features(self.case, s, "src", self.seed + next(k)))
                   for n, s in shapes.items()}
            dst = src
        self.feats = {"src": src, "dst": dst, "edge": edge}

    def leaves(self) -> list[torch.Tensor]:
        seen = {}
        for space in ("src", "dst", "edge"):
            for t in self.feats[space].values():
                seen[id(t)] = t
        return list(seen.values())

    @property
    def structure(self) -> Structure:
        c = self.case
        return Structure(torch.as_tensor(c.src, dtype=c.idtype), torch.as_tensor(c.dst, dtype=c.idtype),
                         c.num_src, c.num_dst)

    def graph(self) -> gdsl.Graph:
        g = self.case.build()
        if self.case.is_block:
            g.srcdata.update(self.feats["src"])
            g.dstdata.update(self.feats["dst"])
        else:
            g.ndata.update(self.feats["src"])
        g.edata.update(self.feats["edge"])
        return g

    def in_degree(self) -> np.ndarray:
        return np.bincount(self.case.dst, minlength=self.case.num_dst)


def schema_of(spec: dict) -> dict:
    return {space: {n: FieldSpec(F64, tuple(s)) for n, s in spec.get(space, {}).items()}
            for space in ("src", "dst", "edge")}


def reference_update_all(env: Env, mfunc, rfunc, outs) -> dict[str, torch.Tensor | None]:
    g = env.graph()
    g.update_all(mfunc, rfunc)
    return {o: (g.dstdata[o] if o in g.dstdata else None) for o in outs}


def reference_apply_edges(env: Env, func, outs) -> dict[str, torch.Tensor]:
    g = env.graph()
    g.apply_edges(func)
    return {o: g.edata[o] for o in outs}


def run_program(traced, env: Env) -> dict[str, torch.Tensor]:
    """The interpreter's named outputs, without the ``<name>@arg`` winners of max/min (checked
    on their own in test_max_min_outputs_carry_the_winning_edge)."""
    out = evaluate(traced.program, traced.params, env.structure, env.feats)
    return {k: v for k, v in out.items() if "@arg" not in k}


def check_gather_reduce(env: Env, traced, mfunc, rfunc, outs, **tol) -> None:
    """interpreter(traced program) == reference executor, and zero-in-degree rows are 0."""
    got = run_program(traced, env)
    assert sorted(got) == sorted(f"dst:{o}" for o in outs)
    expected = reference_update_all(env, mfunc, rfunc, outs)
    empty = torch.as_tensor(env.in_degree() == 0)
    for o in outs:
        value = got[f"dst:{o}"]
        assert value.shape == (env.case.num_dst, *traced.program.output(f"dst:{o}").shape)
        assert value.dtype == traced.program.output(f"dst:{o}").dtype
        ref = expected[o]
        if ref is None:
            # The reference never calls a reduce UDF on a graph without edges, so it writes no
            # field at all; every node has in-degree 0 and must get 0.
            assert env.case.num_edges == 0
            ref = torch.zeros_like(value)
        assert_close(value, ref, **tol)
        assert torch.all(value[empty] == 0), "nodes without in-edges must get 0"


def check_edge_map(env: Env, traced, func, outs, **tol) -> None:
    got = run_program(traced, env)
    assert sorted(got) == sorted(f"edge:{o}" for o in outs)
    expected = reference_apply_edges(env, func, outs)
    for o in outs:
        assert got[f"edge:{o}"].shape == (env.case.num_edges, *traced.program.output(f"edge:{o}").shape)
        assert_close(got[f"edge:{o}"], expected[o], **tol)


def grads(loss: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    if not loss.requires_grad:
        return [torch.zeros_like(x) for x in inputs]
    out = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(out, inputs)]


def weighted_sum(outputs: dict, weights: dict) -> torch.Tensor:
    return sum((outputs[k] * weights[k]).sum() for k in weights)


# ------------------------------------------------------------------ built-ins: every message

ELEMENTWISE_SHAPES = [((D,), (D,)), ((H, D), (H, 1)), ((H, 1), (H, D)), ((H, D), (1,)),
                      ((D,), (H, D)), ((1,), (1,))]
DOT_SHAPES = [((D,), (D,)), ((H, D), (H, D)), ((1, D), (H, D)), ((D,), (H, D))]
COPY_SHAPES = [(D,), (H, D), (1,)]


def parse(name: str):
    if name.startswith("copy_"):
        return "copy", name[-1], None
    lhs, op, rhs = name.split("_")
    return op, lhs, rhs


def builtin_spec(name: str, shapes) -> dict:
    op, lhs, rhs = parse(name)
    spec: dict = {"src": {}, "dst": {}, "edge": {}}
    if op == "copy":
        spec[WHERE[lhs]]["a"] = shapes
        return spec
    spec[WHERE[lhs]]["a"] = shapes[0]
    spec[WHERE[rhs]]["b"] = shapes[1]
    return spec


def builtin_shapes(name: str):
    op = parse(name)[0]
    if op == "copy":
        return st.sampled_from(COPY_SHAPES)
    pairs = DOT_SHAPES if op == "dot" else ELEMENTWISE_SHAPES
    return st.sampled_from(pairs).flatmap(lambda p: st.sampled_from([p, p[::-1]]))


def builtin_message(name: str, out: str = "m"):
    op = parse(name)[0]
    return getattr(fn, name)("a", out) if op == "copy" else getattr(fn, name)("a", "b", out)


def keep_denominators_away_from_zero(env: Env, name: str) -> None:
    op, _, rhs = parse(name)
    if op == "div":
        t = env.feats[WHERE[rhs]]["b"]
        t.copy_(t.abs() + 1.0)


@pytest.mark.parametrize("name", MESSAGES)
@FEW
@given(case=small_graphs, data=st.data(), seed=st.integers(0, 2**16))
def test_builtin_update_all_matches_reference(name, case, data, seed):
    shapes = data.draw(builtin_shapes(name))
    spec = builtin_spec(name, shapes)
    env = Env(case, spec, seed)
    keep_denominators_away_from_zero(env, name)
    mfunc = builtin_message(name)
    for reducer in REDUCERS:
        rfunc = getattr(fn, reducer)("m", "o")
        traced = trace_gather_reduce(mfunc, rfunc, schema_of(spec))
        ops = [ins.op for ins in traced.program]
        assert ops[-1] == f"mailbox_{reducer}"
        assert traced.program.outputs == (("dst:o", len(ops) - 1),)
        check_gather_reduce(env, traced, mfunc, rfunc, ["o"])


@pytest.mark.parametrize("name", MESSAGES)
@FEW
@given(case=small_graphs, data=st.data(), seed=st.integers(0, 2**16))
def test_builtin_apply_edges_matches_reference(name, case, data, seed):
    shapes = data.draw(builtin_shapes(name))
    spec = builtin_spec(name, shapes)
    env = Env(case, spec, seed)
    keep_denominators_away_from_zero(env, name)
    func = builtin_message(name, out="o")
    traced = trace_edge_map(func, schema_of(spec))
    assert [name for name, _ in traced.program.outputs] == ["edge:o"]
    check_edge_map(env, traced, func, ["o"])


@pytest.mark.parametrize("reducer", ["max", "min"])
@pytest.mark.parametrize("name", ["copy_u", "u_mul_e", "e_add_v"])
@FEW
@given(case=small_graphs, seed=st.integers(0, 2**16), integer=st.booleans())
def test_max_min_outputs_carry_the_winning_edge(name, reducer, case, seed, integer):
    """``dst:o@arg``: per (row, feature) the smallest edge id whose message is the max / min,
    -1 for rows without in-edges."""
    spec = builtin_spec(name, ((H, D), (H, 1)) if name != "copy_u" else (H, D))
    env = Env(case, spec, seed)
    if integer:  # few distinct values: many ties
        for space in ("src", "dst", "edge"):
            for t in env.feats[space].values():
                t.copy_(torch.round(t).clamp(-1, 1))
    mfunc = builtin_message(name)
    traced = trace_gather_reduce(mfunc, getattr(fn, reducer)("m", "o"), schema_of(spec))
    out = evaluate(traced.program, traced.params, env.structure, env.feats)
    assert sorted(out) == ["dst:o", "dst:o@arg"]
    value, arg = out["dst:o"], out["dst:o@arg"]
    assert arg.shape == value.shape and arg.dtype == torch.int64
    msg = run_program(trace_edge_map(mfunc, schema_of(spec)), env)["edge:m"]
    for row in range(case.num_dst):
        edges = np.flatnonzero(case.dst == row)
        if len(edges) == 0:
            assert torch.all(arg[row] == -1) and torch.all(value[row] == 0)
            continue
        box = msg[torch.as_tensor(edges)]  # (deg, H, D), in edge-id order
        best = box.amax(0) if reducer == "max" else box.amin(0)
        first = (box == best).to(torch.int64).argmax(0)  # the first (smallest edge id) winner
        assert torch.equal(arg[row], torch.as_tensor(edges)[first])
        assert torch.equal(value[row], best)


def test_builtin_programs_have_the_expected_ops_and_types():
    spec = {"src": {"h": (H, D)}, "dst": {"h": (H, D)}, "edge": {"w": (H, 1)}}
    p = trace_gather_reduce(fn.u_mul_e("h", "w", "m"), fn.sum("m", "o"), schema_of(spec)).program
    assert [(i.op, i.space, i.shape) for i in p] == [
        ("load_src", "src", (H, D)), ("load_edge", "edge", (H, 1)), ("mul", "edge", (H, D)),
        ("mailbox_sum", "dst", (H, D))]
    p = trace_gather_reduce(fn.u_dot_v("h", "h", "m"), fn.max("m", "o"), schema_of(spec)).program
    assert [(i.op, i.space, i.shape) for i in p] == [
        ("load_src", "src", (H, D)), ("load_dst", "dst", (H, D)), ("mul", "edge", (H, D)),
        ("feature_sum", "edge", (H, 1)), ("mailbox_max", "dst", (H, 1))]
    assert p[3].attr("axis") == 1 and p[3].attr("keepdim") is True
    p = trace_gather_reduce(fn.copy_u("h", "m"), fn.mean("m", "o"), schema_of(spec)).program
    assert [i.op for i in p] == ["load_src", "mailbox_mean"]
    assert all(i.dtype == F64 for i in p)


# ------------------------------------------------------------------------------- DGL UDFs

_gen = torch.Generator().manual_seed(1234)
W_POOL = torch.randn(D, 5, generator=_gen, dtype=F64).requires_grad_(True)  # a captured weight
W_CAT = torch.randn(2 * D, 4, generator=_gen, dtype=F64)
ATTN_VEC = torch.randn(H, D, generator=_gen, dtype=F64).requires_grad_(True)
with torch.random.fork_rng():  # seeded weights without touching the global RNG of other tests
    torch.manual_seed(1234)
    LIN_POOL = nn.Linear(D, 5).double()
    ATTN = nn.Sequential(nn.Linear(2 * D, 1), nn.LeakyReLU(0.2)).double()

NODE_H = {"src": {"h": (D,)}, "dst": {"h": (D,)}}


def msg_copy(edges):
    return {"m": edges.src["h"]}


def red_max_values(nodes):
    return {"o": nodes.mailbox["m"].max(1).values}


def red_torch_max(nodes):
    return {"o": torch.max(nodes.mailbox["m"], 1)[0]}


def red_min_values(nodes):
    return {"o": nodes.mailbox["m"].min(dim=1).values}


def red_mean(nodes):
    return {"o": nodes.mailbox["m"].mean(1)}


def red_sum(nodes):
    return {"o": nodes.mailbox["m"].sum(1)}


def red_torch_sum_mean(nodes):
    m = nodes.mailbox["m"]
    return {"o": torch.sum(m, dim=1), "p": torch.mean(m, 1)}


def msg_weighted(edges):
    return {"m": edges.src["h"] * edges.data["w"]}


def msg_pool(edges):
    return {"m": torch.relu(edges.src["h"] @ W_POOL)}


def msg_pool_linear(edges):
    return {"m": F.relu(LIN_POOL(edges.src["h"]))}


def msg_u_dot_v(edges):
    return {"m": (edges.src["h"] * edges.dst["h"]).sum(-1, keepdim=True)}


def edge_u_dot_v(edges):
    return {"s": (edges.src["h"] * edges.dst["h"]).sum(-1, keepdim=True)}


def msg_multihead(edges):
    h = edges.src["hh"].view(-1, H, D)
    return {"m": h * edges.data["a"].unsqueeze(-1)}


def red_multihead(nodes):
    m = nodes.mailbox["m"]
    return {"o": m.sum(1), "p": m.max(1).values.flatten(1), "q": m.mean(1).sum(-1)}


def msg_gat(edges):
    z = torch.cat([edges.dst["h"], edges.src["h"]], 1)
    return {"m": edges.src["h"], "a": ATTN(z)}


def red_gat(nodes):
    alpha = torch.softmax(nodes.mailbox["a"], 1)
    return {"o": (alpha * nodes.mailbox["m"]).sum(1)}


def msg_gat_multihead(edges):
    zs = edges.src["hh"].view(-1, H, D)
    zd = edges.dst["hh"].view(-1, H, D)
    score = (zs * ATTN_VEC).sum(-1, keepdim=True) + (zd * ATTN_VEC).sum(-1, keepdim=True)
    return {"m": zs, "a": F.leaky_relu(score, 0.2)}


def red_gat_multihead(nodes):
    alpha = F.softmax(nodes.mailbox["a"], dim=1)
    return {"o": (alpha * nodes.mailbox["m"]).sum(1).reshape(-1, H * D)}


def red_softmax_by_hand(nodes):
    a = nodes.mailbox["a"]
    e = torch.exp(a - a.max(1, keepdim=True).values)
    alpha = e / e.sum(1, keepdim=True)
    return {"o": (alpha * nodes.mailbox["m"]).sum(1)}


def msg_cat_matmul(edges):
    return {"m": torch.cat([edges.src["h"], edges.dst["h"]], -1) @ W_CAT}


def msg_where(edges):
    h = edges.src["h"]
    return {"m": torch.where(h > edges.dst["h"], h, 0.5 * edges.dst["h"])}


def msg_elu(edges):
    return {"m": F.elu(edges.src["h"] - edges.data["w"])}


def red_elu_max(nodes):
    return {"o": F.elu(nodes.mailbox["m"].max(1).values)}  # elu(0) == 0: zero-degree rows stay 0


def msg_exp(edges):
    return {"m": torch.exp(edges.src["h"] - edges.dst["h"])}


def msg_pow(edges):
    return {"m": edges.src["h"] ** 2 - edges.dst["h"] ** 3}


def msg_clamp(edges):
    x = edges.src["h"] * edges.data["w"]
    return {"m": torch.clamp(x, -0.5, 0.5), "n": x.clamp(min=0)}


def red_two_max(nodes):
    return {"o": nodes.mailbox["m"].max(1).values, "p": nodes.mailbox["n"].max(1).values}


def msg_index_none(edges):
    return {"m": edges.src["h"][:, None] * edges.data["a"][:, :, None]}


def msg_index_ellipsis(edges):
    return {"m": edges.src["hh"].view(-1, H, D)[..., 0], "n": edges.src["hh"].view(-1, H, D)}


def red_index_ellipsis(nodes):
    n = nodes.mailbox["n"]
    return {"o": nodes.mailbox["m"].max(1).values, "p": n[..., 0].sum(1), "q": n[:, :, -1].min(1)[0]}


def red_with_dst_data(nodes):
    return {"o": (nodes.mailbox["m"] * nodes.data["h"][:, None]).sum(1),
            "p": (nodes.mailbox["m"] * nodes.data["h"].unsqueeze(1)).max(1).values}


def msg_activations(edges):
    x = edges.src["h"] + edges.dst["h"]
    return {"m": torch.sigmoid(x) * torch.tanh(x) + F.leaky_relu(x, 0.1) - x.abs() / 2}


@dataclass(frozen=True)
class UDF:
    msg: Callable
    red: Callable
    spec: dict
    outs: tuple


W = {"edge": {"w": (1,)}}
UDFS = {
    "max_values": UDF(msg_copy, red_max_values, NODE_H, ("o",)),
    "torch_max_0": UDF(msg_copy, red_torch_max, NODE_H, ("o",)),
    "min_values": UDF(msg_copy, red_min_values, NODE_H, ("o",)),
    "mean": UDF(msg_copy, red_mean, NODE_H, ("o",)),
    "sum": UDF(msg_copy, red_sum, NODE_H, ("o",)),
    "torch_sum_mean": UDF(msg_copy, red_torch_sum_mean, NODE_H, ("o", "p")),
    "edge_weighted_sum": UDF(msg_weighted, red_sum, {**NODE_H, **W}, ("o",)),
    "sage_pool_matmul": UDF(msg_pool, red_max_values, NODE_H, ("o",)),
    "sage_pool_linear": UDF(msg_pool_linear, red_max_values, NODE_H, ("o",)),
    "u_dot_v_sum": UDF(msg_u_dot_v, red_sum, NODE_H, ("o",)),
    "multihead": UDF(msg_multihead, red_multihead,
                     {"src": {"hh": (H * D,)}, "edge": {"a": (H,)}}, ("o", "p", "q")),
    "gat": UDF(msg_gat, red_gat, NODE_H, ("o",)),
    "gat_softmax_by_hand": UDF(msg_gat, red_softmax_by_hand, NODE_H, ("o",)),
    "gat_multihead": UDF(msg_gat_multihead, red_gat_multihead,
                         {"src": {"hh": (H * D,)}, "dst": {"hh": (H * D,)}}, ("o",)),
    "cat_matmul": UDF(msg_cat_matmul, red_mean, NODE_H, ("o",)),
    "where": UDF(msg_where, red_sum, NODE_H, ("o",)),
    "elu": UDF(msg_elu, red_elu_max, {**NODE_H, **W}, ("o",)),
    "exp": UDF(msg_exp, red_mean, NODE_H, ("o",)),
    "pow": UDF(msg_pow, red_min_values, NODE_H, ("o",)),
    "clamp": UDF(msg_clamp, red_two_max, {**NODE_H, **W}, ("o", "p")),
    "index_none": UDF(msg_index_none, red_sum, {"src": {"h": (D,)}, "edge": {"a": (H,)}}, ("o",)),
    "index_ellipsis": UDF(msg_index_ellipsis, red_index_ellipsis, {"src": {"hh": (H * D,)}},
                          ("o", "p", "q")),
    "reduce_reads_dst_data": UDF(msg_copy, red_with_dst_data, NODE_H, ("o", "p")),
    "activations": UDF(msg_activations, red_mean, NODE_H, ("o",)),
}


@functools.cache
def traced_udf(name: str):
    u = UDFS[name]
    return trace_gather_reduce(u.msg, u.red, schema_of(u.spec))


@pytest.mark.parametrize("name", list(UDFS))
@FEW
@given(case=small_graphs, seed=st.integers(0, 2**16))
def test_udf_update_all_matches_reference(name, case, seed):
    u = UDFS[name]
    env = Env(case, u.spec, seed)
    with torch.no_grad():
        check_gather_reduce(env, traced_udf(name), u.msg, u.red, list(u.outs))


@SOME
@given(case=small_graphs, seed=st.integers(0, 2**16))
def test_u_dot_v_scoring_via_apply_edges(case, seed):
    traced = trace_edge_map(edge_u_dot_v, schema_of(NODE_H))
    assert [i.op for i in traced.program] == ["load_src", "load_dst", "mul", "feature_sum"]
    check_edge_map(Env(case, NODE_H, seed), traced, edge_u_dot_v, ["s"])


def edge_multi(edges):
    h = edges.src["hh"].view(-1, H, D)
    s = (h * edges.dst["hh"].view(-1, H, D)).sum(-1)  # (E, H)
    return {"s": torch.exp(s) * edges.data["a"], "t": torch.relu(edges.src["hh"] @ W_CAT[:H * D])}


@SOME
@given(case=small_graphs, seed=st.integers(0, 2**16))
def test_edge_udf_via_apply_edges(case, seed):
    spec = {"src": {"hh": (H * D,)}, "dst": {"hh": (H * D,)}, "edge": {"a": (H,)}}
    traced = trace_edge_map(edge_multi, schema_of(spec))
    assert traced.program.output("edge:s").shape == (H,)
    assert traced.program.output("edge:t").space == "src"  # lifted to edges by the interpreter
    check_edge_map(Env(case, spec, seed), traced, edge_multi, ["s", "t"])


def test_udf_trace_captures_weights_as_params():
    traced = traced_udf("sage_pool_linear")
    assert len(traced.params) == 2
    assert traced.params[0] is LIN_POOL.weight and traced.params[1] is LIN_POOL.bias
    mm = [i for i in traced.program if i.op == "matmul"]
    assert len(mm) == 1 and mm[0].attr("transpose") is True and mm[0].space == "src"
    traced = traced_udf("sage_pool_matmul")
    assert len(traced.params) == 1 and traced.params[0] is W_POOL
    (mm,) = [i for i in traced.program if i.op == "matmul"]
    assert mm.attr("transpose") is False and mm.shape == (5,)


def test_gat_udf_program_shape():
    p = traced_udf("gat").program
    ops = [i.op for i in p]
    for op in ("cat", "matmul", "leaky_relu", "mailbox_softmax", "mailbox_sum"):
        assert op in ops
    (soft,) = [i for i in p if i.op == "mailbox_softmax"]
    assert soft.space == "edge" and soft.shape == (1,)
    (lr,) = [i for i in p if i.op == "leaky_relu"]
    assert lr.attr("negative_slope") == pytest.approx(0.2)
    assert p.output("dst:o").space == "dst" and p.output("dst:o").shape == (D,)


def test_multihead_shapes_follow_torch():
    p = traced_udf("multihead").program
    assert p.output("dst:o").shape == (H, D)
    assert p.output("dst:p").shape == (H * D,)
    assert p.output("dst:q").shape == (H,)
    reshape = [i for i in p if i.op == "reshape"]
    assert {i.attr("shape") for i in reshape} >= {(H, D), (H, 1)}


# -------------------------------------------------------------------------------- gradients

GRAD_MESSAGES = ["copy_u", "u_mul_e", "u_add_v", "e_sub_v"]


@pytest.mark.parametrize("reducer", REDUCERS)
@pytest.mark.parametrize("name", GRAD_MESSAGES)
@FEW
@given(case=small_graphs, data=st.data(), seed=st.integers(0, 2**16))
def test_builtin_gradients_match_reference(name, reducer, case, data, seed):
    spec = builtin_spec(name, data.draw(builtin_shapes(name)))
    env = Env(case, spec, seed, requires_grad=True)
    mfunc, rfunc = builtin_message(name), getattr(fn, reducer)("m", "o")
    traced = trace_gather_reduce(mfunc, rfunc, schema_of(spec))
    got = run_program(traced, env)["dst:o"]
    ref = reference_update_all(env, mfunc, rfunc, ["o"])["o"]
    gen = torch.Generator().manual_seed(seed)
    g_out = torch.randn(got.shape, generator=gen, dtype=F64)
    leaves = env.leaves()
    for a, b in zip(grads((got * g_out).sum(), leaves), grads((ref * g_out).sum(), leaves)):
        assert_close(a, b)


GRAD_UDFS = ["gat", "gat_multihead", "sage_pool_matmul", "sage_pool_linear", "max_values", "mean",
             "edge_weighted_sum", "gat_softmax_by_hand"]


def udf_weights(name: str) -> list[torch.Tensor]:
    return {"gat": list(ATTN.parameters()), "gat_softmax_by_hand": list(ATTN.parameters()),
            "gat_multihead": [ATTN_VEC], "sage_pool_matmul": [W_POOL],
            "sage_pool_linear": list(LIN_POOL.parameters())}.get(name, [])


@pytest.mark.parametrize("name", GRAD_UDFS)
@FEW
@given(case=small_graphs, seed=st.integers(0, 2**16))
def test_udf_gradients_match_reference(name, case, seed):
    u = UDFS[name]
    traced = traced_udf(name)
    env = Env(case, u.spec, seed, requires_grad=True)
    got = run_program(traced, env)
    got = {o: got[f"dst:{o}"] for o in u.outs}
    ref = reference_update_all(env, u.msg, u.red, u.outs)
    if any(v is None for v in ref.values()):
        assert case.num_edges == 0
        ref = {o: torch.zeros_like(got[o]) for o in u.outs}
    gen = torch.Generator().manual_seed(seed)
    g_out = {o: torch.randn(got[o].shape, generator=gen, dtype=F64) for o in u.outs}
    inputs = env.leaves() + udf_weights(name)
    assert all(any(p is w for p in traced.params) for w in udf_weights(name))
    for a, b in zip(grads(weighted_sum(got, g_out), inputs), grads(weighted_sum(ref, g_out), inputs)):
        assert_close(a, b)


def test_gat_gradient_reaches_every_attention_parameter():
    case = GraphCase(src=np.array([0, 1, 2, 2, 3]), dst=np.array([1, 1, 1, 3, 3]), num_src=5,
                     num_dst=5, idtype=torch.int64, is_block=False)
    env = Env(case, NODE_H, 7, requires_grad=True)
    traced = traced_udf("gat")
    out = run_program(traced, env)["dst:o"]
    weight, bias = ATTN[0].weight, ATTN[0].bias
    loss = (out * torch.arange(1.0, 1.0 + D, dtype=F64)).sum()
    gw, gb, gh = grads(loss, [weight, bias, env.feats["src"]["h"]])
    assert gw.abs().sum() > 0 and gb.abs().sum() > 0
    assert torch.all(gh[4] == 0)  # node 4 sends nothing and receives nothing
    assert torch.all(gh[:4].abs().sum(-1) > 0)


def edge_feature_max(edges):
    return {"o": edges.src["h"].max(-1).values}


@pytest.mark.xfail(strict=True, reason="known limitation (docs/compiler.md): x.max(dim).values over "
                   "a feature axis traces to feature_max, whose gradient splits evenly between tied "
                   "entries (as amax); torch's max(dim) sends it to one entry")
def test_feature_axis_max_gradient_on_ties_matches_torch():
    case = GraphCase(src=np.array([0, 1]), dst=np.array([1, 0]), num_src=2, num_dst=2,
                     idtype=torch.int64, is_block=False)
    env = Env(case, NODE_H, 0, requires_grad=True)
    h = env.feats["src"]["h"]
    with torch.no_grad():
        h.copy_(torch.tensor([[1.0, 1.0, 0.0], [2.0, 0.0, 2.0]], dtype=F64))
    traced = trace_edge_map(edge_feature_max, schema_of(NODE_H))
    got = run_program(traced, env)["edge:o"]
    ref = reference_apply_edges(env, edge_feature_max, ["o"])["o"]
    assert_close(got, ref)
    assert_close(grads(got.sum(), [h])[0], grads(ref.sum(), [h])[0])


# -------------------------------------------------------------------- printing, fingerprints

def test_program_prints_ops_types_and_outputs():
    spec = {"src": {"h": (H, D)}, "edge": {"w": (H, 1)}}
    p = trace_gather_reduce(fn.u_mul_e("h", "w", "m"), fn.sum("m", "o"), schema_of(spec)).program
    text = str(p)
    for piece in ("load_src['h']", "load_edge['w']", "mul %0 %1", "mailbox_sum %2", "f64[2,3]",
                  "f64[2,1]", "return {dst:o: %3}"):
        assert piece in text, (piece, text)
    lines = text.splitlines()
    assert len(lines) == len(p) + 2
    assert lines[0].startswith("{ ") and "src: h f64[2,3]" in lines[0] and "edge: w f64[2,1]" in lines[0]
    for i, ins in enumerate(p):
        assert lines[i + 1].lstrip().startswith(f"%{i} = {ins.op}")
        assert ins.space in lines[i + 1]
    assert lines[-1].strip().startswith("return {dst:")


def test_gat_program_prints_attributes():
    text = str(traced_udf("gat").program)
    for piece in ("cat{axis=0}", "matmul{transpose=True}", "leaky_relu{negative_slope=0.2}",
                  "mailbox_softmax", "load_param{index=0}", "param: #0 f64[1,6], #1 f64[1]",
                  "return {dst:o: %"):
        assert piece in text, (piece, text)
    edge_map = trace_edge_map(edge_u_dot_v, schema_of(NODE_H)).program
    assert "return {edge:s: %3} }" in str(edge_map)
    assert "feature_sum{axis=0, keepdim=True}" in str(edge_map)


def scaled(c):
    def msg(edges):
        return {"m": edges.src["h"] * c + edges.data["w"]}
    return msg


def sloped(slope):
    def msg(edges):
        return {"m": F.leaky_relu(edges.src["h"], slope)}
    return msg


def test_fingerprint_is_stable_and_sees_constants():
    schema = schema_of({**NODE_H, **W})
    def fp(m, r=fn.sum("m", "o")):
        return trace_gather_reduce(m, r, schema).program.fingerprint()
    assert fp(scaled(2.0)) == fp(scaled(2.0))
    assert fp(msg_gat, red_gat) == fp(msg_gat, red_gat)
    assert len(fp(scaled(2.0))) == 16
    assert fp(scaled(2.0)) != fp(scaled(3.0))
    assert fp(scaled(2.0)) != fp(scaled(2))  # an int constant is another program
    assert fp(sloped(0.1)) != fp(sloped(0.2))
    assert fp(msg_copy, fn.sum("m", "o")) != fp(msg_copy, fn.max("m", "o"))
    assert fp(scaled(2.0)) != fp(scaled(2.0), fn.sum("m", "x"))  # output names matter
    # The fingerprint is a structural cache key: captured weight values do not enter it.
    w1, w2 = torch.zeros(D, 5, dtype=F64), torch.ones(D, 5, dtype=F64)
    assert fp(lambda e: {"m": e.src["h"] @ w1}) == fp(lambda e: {"m": e.src["h"] @ w2})
    assert fp(lambda e: {"m": e.src["h"] @ w1}) != fp(lambda e: {"m": e.src["h"] @ w1[:, :4]})


def test_fingerprint_ignores_source_location():
    schema = schema_of({**NODE_H, **W})
    a = trace_gather_reduce(scaled(2.0), fn.sum("m", "o"), schema).program
    b = trace_gather_reduce(lambda edges: {"m": edges.src["h"] * 2.0 + edges.data["w"]},
                            fn.sum("m", "o"), schema).program
    assert [i.where for i in a] != [i.where for i in b]
    assert a.fingerprint() == b.fingerprint()


# ----------------------------------------------------------------------------------- errors

_THIS_FILE = os.path.abspath(__file__)


@functools.cache
def _lines() -> list[str]:
    with open(_THIS_FILE) as f:
        return f.read().splitlines()


def line_of(marker: str) -> int:
    """The line of this file that ends with ``# <marker>``."""
    hits = [n for n, text in enumerate(_lines(), 1) if text.rstrip().endswith(f"# <{marker}>")]
    assert len(hits) == 1, (marker, hits)
    return hits[0]


def assert_where(err: gdsl.CompileError, line: int) -> None:
    assert err.where is not None, err
    path, _, lineno = err.where.rpartition(":")
    assert os.path.abspath(path) == _THIS_FILE, err.where
    assert os.path.basename(path) == "test_compiler_trace.py"
    assert int(lineno) == line, (err.where, line)
    assert err.where in str(err)
    assert f"test_compiler_trace.py:{line}" in str(err)


def e_if(edges):
    h = edges.src["h"]
    if h.sum(-1, keepdim=True) > 0:  # <if>
        h = h * 2
    return {"m": h}


def e_for(edges):
    total = 0
    for row in edges.src["h"]:  # <for>
        total = total + row
    return {"m": total}


def e_item(edges):
    scale = edges.data["w"].item()  # <item>
    return {"m": edges.src["h"] * scale}


def e_iadd(edges):
    h = edges.src["h"] * 2
    h += edges.dst["h"]  # <iadd>
    return {"m": h}


def e_add_(edges):
    h = edges.src["h"] * 2
    h.add_(1.0)  # <add_>
    return {"m": h}


def e_setitem(edges):
    h = edges.src["h"] * 2
    h[:, 0] = 0.0  # <setitem>
    return {"m": h}


def e_sort(edges):
    h = torch.sort(edges.src["h"], dim=-1).values  # <sort>
    return {"m": h}


def e_cumsum(edges):
    h = torch.cumsum(edges.src["h"], dim=-1)  # <cumsum>
    return {"m": h}


def e_not_dict(edges):  # <not_dict>
    return edges.src["h"] * 2


def e_not_dict_tuple(edges):  # <not_dict_tuple>
    return ("m", edges.src["h"])


def r_keeps_mailbox_axis(nodes):
    m = nodes.mailbox["m"]
    return {"o": torch.exp(m)}  # <mailbox_axis>


def r_pick_message(nodes):
    first = nodes.mailbox["m"][:, 0]  # <pick>
    return {"o": first}


def r_no_unsqueeze(nodes):
    weighted = nodes.mailbox["m"] * nodes.data["h"]  # <no_unsqueeze>
    return {"o": weighted.sum(1)}


def r_dim0(nodes):
    total = nodes.mailbox["m"].sum(0)  # <dim0>
    return {"o": total}


def e_dim0(edges):
    return {"m": edges.src["h"] - edges.src["h"].mean(0)}  # <edge_dim0>


def e_broadcast(edges):
    return {"m": edges.src["h"] * edges.data["w4"]}  # <broadcast>


def e_weight_left(edges):
    return {"m": W_POOL.t() @ edges.src["h"]}  # <weight_left>


def e_linear_mismatch(edges):
    return {"m": ATTN(edges.src["h"])}  # <linear_mismatch>


ERROR_CASES = {
    # name: (message fn, reduce fn, marker, words the message must contain)
    "if": (e_if, fn.sum("m", "o"), "if", ["control flow", "torch.where"]),
    "for": (e_for, fn.sum("m", "o"), "for", ["iterating", "for loop"]),
    "item": (e_item, fn.sum("m", "o"), "item", [".item()"]),
    "iadd": (e_iadd, fn.sum("m", "o"), "iadd", ["in-place", "+="]),
    "add_": (e_add_, fn.sum("m", "o"), "add_", ["in-place", "add_"]),
    "setitem": (e_setitem, fn.sum("m", "o"), "setitem", ["in-place", "x[...] = ..."]),
    "sort": (e_sort, fn.sum("m", "o"), "sort", ["sort", "not supported"]),
    "cumsum": (e_cumsum, fn.sum("m", "o"), "cumsum", ["cumsum", "not supported"]),
    "not_dict": (e_not_dict, fn.sum("m", "o"), "not_dict", ["e_not_dict", "dict", "Proxy"]),
    "not_dict_tuple": (e_not_dict_tuple, fn.sum("m", "o"), "not_dict_tuple", ["dict", "tuple"]),
    "pick": (msg_copy, r_pick_message, "pick", ["mailbox[:, i]"]),
    "no_unsqueeze": (msg_copy, r_no_unsqueeze, "no_unsqueeze", ["(B, 3)", "(B, deg, 3)", "unsqueeze"]),
    "dim0": (msg_copy, r_dim0, "dim0", ["dimension 0"]),
    "edge_dim0": (e_dim0, fn.sum("m", "o"), "edge_dim0", ["dimension 0"]),
    "broadcast": (e_broadcast, fn.sum("m", "o"), "broadcast", ["(3,)", "(4,)", "broadcast"]),
    "weight_left": (e_weight_left, fn.sum("m", "o"), "weight_left", ["x @ W"]),
    "linear_mismatch": (e_linear_mismatch, fn.sum("m", "o"), "linear_mismatch", ["matmul", "(3,)"]),
}
ERROR_SCHEMA = schema_of({**NODE_H, "edge": {"w": (1,), "w4": (4,)}})


@pytest.mark.parametrize("name", list(ERROR_CASES))
def test_compile_errors_name_the_construct_and_the_line(name):
    mfunc, rfunc, marker, words = ERROR_CASES[name]
    with pytest.raises(gdsl.CompileError) as info:
        trace_gather_reduce(mfunc, rfunc, ERROR_SCHEMA)
    err = info.value
    assert isinstance(err, gdsl.GdslError)
    for word in words:
        assert word in err.message, (word, err.message)
    assert_where(err, line_of(marker))


def test_non_dict_return_points_at_the_definition():
    with pytest.raises(gdsl.CompileError) as info:
        trace_gather_reduce(e_not_dict, fn.sum("m", "o"), ERROR_SCHEMA)
    assert_where(info.value, inspect.getsourcelines(e_not_dict)[1])
    with pytest.raises(gdsl.CompileError) as info:  # in a reduce function, and in apply_edges
        trace_gather_reduce(msg_copy, lambda nodes: nodes.mailbox["m"].sum(1), ERROR_SCHEMA)  # <lam>
    assert_where(info.value, line_of("lam"))
    assert "reduce function" in info.value.message
    with pytest.raises(gdsl.CompileError) as info:
        trace_edge_map(e_not_dict, ERROR_SCHEMA)
    assert_where(info.value, line_of("not_dict"))


def test_reduce_output_with_mailbox_axis_is_an_error():
    with pytest.raises(gdsl.CompileError) as info:
        trace_gather_reduce(msg_copy, r_keeps_mailbox_axis, ERROR_SCHEMA)
    err = info.value
    assert "mailbox axis" in err.message and "'o'" in err.message
    assert err.where is not None and os.path.abspath(err.where.rpartition(":")[0]) == _THIS_FILE


def test_reduce_output_with_mailbox_axis_names_the_offending_line():
    with pytest.raises(gdsl.CompileError) as info:
        trace_gather_reduce(msg_copy, r_keeps_mailbox_axis, ERROR_SCHEMA)
    assert_where(info.value, line_of("mailbox_axis"))


def test_errors_inside_nn_modules_point_at_the_user_line():
    """torch.nn frames are skipped: the location is the UDF line that called the module."""
    with pytest.raises(gdsl.CompileError) as info:
        trace_gather_reduce(e_linear_mismatch, fn.sum("m", "o"), ERROR_SCHEMA)
    assert "torch" not in info.value.where


@pytest.mark.parametrize("space, func, field_name", [
    ("src", lambda e: {"m": e.src["nope"]}, "nope"),
    ("dst", lambda e: {"m": e.dst["missing_dst"] * e.src["h"]}, "missing_dst"),
    ("edge", lambda e: {"m": e.src["h"] * e.data["ww"]}, "ww"),
])
def test_unknown_field_is_a_feature_error(space, func, field_name):
    with pytest.raises(gdsl.FeatureError) as info:
        trace_gather_reduce(func, fn.sum("m", "o"), ERROR_SCHEMA)
    assert repr(field_name) in str(info.value)
    assert {"src": "source", "dst": "destination", "edge": "edge"}[space] in str(info.value)
    assert isinstance(info.value, KeyError)
    with pytest.raises(gdsl.FeatureError, match=field_name):
        trace_edge_map(func, ERROR_SCHEMA)


def test_unknown_mailbox_field_is_a_feature_error():
    with pytest.raises(gdsl.FeatureError, match="'q'"):
        trace_gather_reduce(msg_copy, lambda n: {"o": n.mailbox["q"].sum(1)}, ERROR_SCHEMA)
    with pytest.raises(gdsl.FeatureError, match="'nope'"):
        trace_gather_reduce(msg_copy, fn.sum("nope", "o"), ERROR_SCHEMA)


# ------------------------------------------------------------------- bugs found (strict xfail)

# A graph where nodes 0, 2 and 4 have no in-edges.
ZERO_IN = GraphCase(src=np.array([0, 1, 2, 0]), dst=np.array([1, 1, 3, 3]), num_src=5, num_dst=5,
                    idtype=torch.int64, is_block=False)


def red_exp_of_sum(nodes):
    return {"o": torch.exp(nodes.mailbox["m"].sum(1))}


def red_sum_plus_dst(nodes):
    return {"o": nodes.mailbox["m"].sum(1) + nodes.data["h"]}


def red_clamped_max(nodes):
    return {"o": nodes.mailbox["m"].max(1).values.clamp(min=0.25)}


@pytest.mark.parametrize("red", [red_exp_of_sum, red_sum_plus_dst, red_clamped_max])
def test_post_reduction_ops_give_zero_for_zero_in_degree(red):
    env = Env(ZERO_IN, NODE_H, 3)
    traced = trace_gather_reduce(msg_copy, red, schema_of(NODE_H))
    check_gather_reduce(env, traced, msg_copy, red, ["o"])


def red_mean_by_shape(nodes):
    m = nodes.mailbox["m"]
    return {"o": m.sum(1) / m.shape[1]}


def test_mailbox_degree_from_shape_is_not_silently_minus_one():
    env = Env(ZERO_IN, NODE_H, 4)
    try:
        traced = trace_gather_reduce(msg_copy, red_mean_by_shape, schema_of(NODE_H))
    except gdsl.CompileError:
        return  # refusing the program is a correct answer too
    check_gather_reduce(env, traced, msg_copy, red_mean_by_shape, ["o"])


def edge_times_tenth(edges):
    return {"o": edges.src["h"] * 0.1 + edges.data["w"].clamp(max=0.3)}


def test_python_float_constants_keep_float64_precision():
    case = GraphCase(src=np.array([0, 1, 2]), dst=np.array([1, 2, 0]), num_src=3, num_dst=3,
                     idtype=torch.int64, is_block=False)
    spec = {**NODE_H, **W}
    env = Env(case, spec, 5)
    traced = trace_edge_map(edge_times_tenth, schema_of(spec))
    check_edge_map(env, traced, edge_times_tenth, ["o"], rtol=0, atol=1e-15)


def edge_square(edges):
    return {"o": edges.src["h"] ** 2}


def test_integer_pow_keeps_integer_dtype():
    case = GraphCase(src=np.array([0, 1]), dst=np.array([1, 0]), num_src=2, num_dst=2,
                     idtype=torch.int64, is_block=False)
    g = case.build()
    g.ndata["h"] = torch.tensor([[1, 2], [3, 4]])
    g.apply_edges(edge_square)
    traced = trace_edge_map(edge_square, {"src": {"h": FieldSpec(torch.int64, (2,))}})
    assert traced.program.output("edge:o").dtype == g.edata["o"].dtype == torch.int64


_GDSL_DIR = os.path.dirname(os.path.abspath(gdsl.__file__))


def test_error_location_in_a_user_file_whose_name_starts_like_the_package():
    fake = _GDSL_DIR + "_demo.py"  # a sibling of the package: user code, not gdsl
    source = ("def msg(edges):\n    h = edges.src['h']\n    if h.sum(-1) > 0:\n        pass\n"
              "    return {'m': h}\n")
    namespace: dict = {}
    exec(compile(source, fake, "exec"), namespace)
    with pytest.raises(gdsl.CompileError) as info:
        trace_gather_reduce(namespace["msg"], fn.sum("m", "o"), ERROR_SCHEMA)
    assert info.value.where == f"{fake}:3"
