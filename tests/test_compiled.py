"""The compiled executor: update_all / apply_edges / send_and_recv / pull / push through generated
kernels, against the reference executor (forward and backward), plus caching, errors, fallback."""
from __future__ import annotations

import os
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

import gdsl
import gdsl.function as fn
from gdsl.backend import get_executor
from strategies import graph_cases

F64 = torch.float64
BACKENDS = ["numba"] + (["triton"] if "triton" in gdsl.available_backends()
                        and os.environ.get("TRITON_INTERPRET") == "1" else [])


def _run(backend, case_graph, feats, call, outputs):
    """Run ``call(g)`` on backend with fresh leaf features; return outputs and their gradients."""
    g = case_graph
    leaves = {k: v.detach().clone().requires_grad_() for k, v in feats.items()}
    with gdsl.use_backend(backend), g.local_scope():
        for key, value in leaves.items():
            space, name = key.split(":")
            {"src": g.srcdata, "dst": g.dstdata, "edge": g.edata}[space][name] = value
        call(g)
        outs = [({"dst": g.dstdata, "edge": g.edata}[sp][name]) for sp, name in outputs]
    weights = [torch.linspace(-1, 1, o.numel(), dtype=F64).reshape(o.shape) for o in outs]
    loss = sum((o * w).sum() for o, w in zip(outs, weights))
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True) if loss.requires_grad else \
        [None] * len(leaves)
    return outs, dict(zip(leaves, grads))


def _compare(case, feats, call, outputs):
    g = case.build()
    ref_out, ref_grad = _run("reference", g, feats, call, outputs)
    for backend in BACKENDS:
        out, grad = _run(backend, g, feats, call, outputs)
        for a, b in zip(out, ref_out):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
        for key in feats:
            a, b = grad[key], ref_grad[key]
            if b is None or a is None:
                assert (a is None or torch.count_nonzero(a) == 0) and (b is None or torch.count_nonzero(b) == 0), key
            else:
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=key)


def _feats(case, spec, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rows = {"src": case.num_src, "dst": case.num_dst, "edge": case.num_edges}
    out = {}
    for key, shape in spec.items():
        space = key.split(":")[0]
        out[key] = torch.rand((rows[space], *shape), generator=gen, dtype=F64) + 0.5
    return out


MESSAGES = [fn.copy_u("h", "m"), fn.u_mul_e("h", "w", "m"), fn.u_add_v("h", "h", "m"),
            fn.e_sub_v("w", "h", "m"), fn.u_dot_v("h", "h", "m"), fn.copy_e("w", "m")]


@pytest.mark.parametrize("reducer", [fn.sum, fn.mean, fn.max, fn.min])
@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.name)
@settings(max_examples=8, deadline=None)
@given(case=graph_cases(max_nodes=9, max_edges=25))
def test_update_all_builtins_match_reference(message, reducer, case):
    spec = {"src:h": (2, 3), "dst:h": (2, 3), "edge:w": (2, 1) if message.name != "u_dot_v" else (2, 3)}
    if message.name == "copy_e":
        spec["edge:w"] = (2, 3)
    if message.name == "e_sub_v":
        spec["edge:w"] = (2, 3)
    feats = _feats(case, {k: v for k, v in spec.items() if k.split(":")[1] in message.fields()})
    _compare(case, feats, lambda g: g.update_all(message, reducer("m", "out")), [("dst", "out")])


W = torch.randn(3, 4, dtype=F64)


def _pool_msg(edges):
    return {"m": torch.relu(edges.src["h"] @ W) * edges.data["w"]}


def _pool_red(nodes):
    return {"out": nodes.mailbox["m"].max(1).values + nodes.mailbox["m"].mean(1)}


def _norm_red(nodes):  # post-reduction math: zero for nodes without messages
    return {"out": torch.exp(nodes.mailbox["m"].sum(1)) * nodes.data["h"] / nodes.mailbox["m"].shape[1]}


UDFS = {
    "sage_pool": (_pool_msg, _pool_red, {"src:h": (3,), "edge:w": (1,)}),
    "epilogue": (fn.u_mul_e("h", "w", "m"), _norm_red, {"src:h": (3,), "dst:h": (3,), "edge:w": (1,)}),
}


@pytest.mark.parametrize("name", sorted(UDFS))
@settings(max_examples=8, deadline=None)
@given(case=graph_cases(max_nodes=9, max_edges=25, blocks=False))
def test_update_all_udfs_match_reference(name, case):
    if case.num_edges == 0:
        return  # a reduce UDF never runs then, so the reference (as DGL) creates no output field
    mfunc, rfunc, spec = UDFS[name]
    _compare(case, _feats(case, spec), lambda g: g.update_all(mfunc, rfunc), [("dst", "out")])


@settings(max_examples=8, deadline=None)
@given(case=graph_cases(max_nodes=9, max_edges=25))
def test_apply_edges_matches_reference(case):
    feats = _feats(case, {"src:h": (2, 3), "dst:h": (2, 3), "edge:w": (2, 1)})

    def call(g):
        g.apply_edges(lambda e: {"s": F.leaky_relu((e.src["h"] * e.dst["h"]).sum(-1), 0.1) * e.data["w"][..., 0]})
    _compare(case, feats, call, [("edge", "s")])


@settings(max_examples=8, deadline=None)
@given(case=graph_cases(max_nodes=9, max_edges=25, blocks=False, min_nodes=1))
def test_partial_message_passing_matches_reference(case):
    feats = _feats(case, {"src:h": (3,), "edge:w": (1,)})
    n = case.num_src

    def call(g):
        g.ndata["out"] = torch.zeros(n, 3, dtype=F64)
        if case.num_edges:
            g.send_and_recv(list(range(0, case.num_edges, 2)), fn.u_mul_e("h", "w", "m"), fn.sum("m", "out"))
        g.pull(list(range(0, n, 3)), fn.u_mul_e("h", "w", "m"), fn.max("m", "out"))
        g.push([n - 1], fn.copy_u("h", "m"), fn.mean("m", "out"))
    _compare(case, feats, call, [("dst", "out")])


def test_second_call_hits_the_cache_and_runs_compiled():
    g = gdsl.graph(([0, 1, 2, 2], [1, 2, 0, 1]))
    g.ndata["h"] = torch.randn(3, 4)
    with gdsl.use_backend("numba"):
        executor = get_executor("cpu", "numba")
        g.update_all(fn.copy_u("h", "m"), fn.sum("m", "a"))
        before = executor.trace_count
        for _ in range(3):
            g.update_all(fn.copy_u("h", "m"), fn.sum("m", "a"))  # new built-in objects, same program

        def layer(x):
            def msg(edges):  # a new function object each call, as inside a module's forward
                return {"m": edges.src["h"] * 2}
            g.update_all(msg, fn.max("m", "b"))
        layer(1)
        after_first = executor.trace_count
        layer(2)
        assert executor.trace_count == after_first == before + 1
    expected = torch.stack([g.ndata["h"][2], g.ndata["h"][0] + g.ndata["h"][2], g.ndata["h"][1]])
    torch.testing.assert_close(g.ndata["a"], expected)


def test_closure_over_a_new_tensor_is_traced_again():
    g = gdsl.graph(([0, 1], [1, 0]))
    g.ndata["h"] = torch.ones(2, 2)
    results = []
    with gdsl.use_backend("numba"):
        for scale in (torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])):
            g.update_all(lambda e: {"m": e.src["h"] * scale}, fn.sum("m", "o"))
            results.append(g.ndata["o"][0].clone())
    torch.testing.assert_close(results[0], torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(results[1], torch.tensor([3.0, 4.0]))


def test_uncompilable_udf_raises_with_the_line():
    g = gdsl.graph(([0, 1], [1, 0]))
    g.ndata["h"] = torch.ones(2, 2)

    def first_message(nodes):
        return {"o": nodes.mailbox["m"][:, 0]}  # LINE-MARK
    with gdsl.use_backend("numba"), pytest.raises(gdsl.CompileError) as info:
        g.update_all(fn.copy_u("h", "m"), first_message)
    line = next(i for i, text in enumerate(open(__file__), 1) if "LINE-MARK" in text and "mailbox" in text)
    assert info.value.where.endswith(f"test_compiled.py:{line}")


def test_fallback_to_reference_is_explicit_and_warns():
    g = gdsl.graph(([0, 1, 2], [1, 1, 0]))
    g.ndata["h"] = torch.tensor([[1.0], [2.0], [3.0]])

    @gdsl.reduce(fallback="reference")
    def first_message(nodes):
        return {"o": nodes.mailbox["m"][:, 0]}
    with gdsl.use_backend("numba"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g.update_all(fn.copy_u("h", "m"), first_message)
    assert any("reference executor" in str(w.message) for w in caught)
    torch.testing.assert_close(g.ndata["o"], torch.tensor([[3.0], [1.0], [0.0]]))


def test_decorator_backend_option_wins():
    g = gdsl.graph(([0, 1], [1, 0]))
    g.ndata["h"] = torch.ones(2, 2)

    @gdsl.message(backend="reference")
    def msg(edges):
        return {"m": edges.src["h"], "first": edges.edges()[2].float().unsqueeze(1)}  # not compilable
    g.update_all(msg, fn.sum("m", "o"))  # runs: the function asked for the reference executor
    torch.testing.assert_close(g.ndata["o"], torch.ones(2, 2))


def test_gradcheck_float64():
    g = gdsl.graph(([0, 1, 2, 2, 0], [1, 2, 0, 1, 1]))
    h = torch.randn(3, 2, dtype=F64, requires_grad=True)
    w = torch.rand(5, 1, dtype=F64, requires_grad=True)

    def f(h, w):
        with gdsl.use_backend("numba"), g.local_scope():
            g.ndata["h"], g.edata["w"] = h, w
            g.update_all(fn.u_mul_e("h", "w", "m"), fn.mean("m", "o"))
            return g.ndata["o"]
    assert torch.autograd.gradcheck(f, (h, w))


ALL_MESSAGES = [fn.copy_u("h", "m"), fn.copy_e("w", "m")] + [
    getattr(fn, name)(*(("h" if name[0] in "uv" else "w"), ("h" if name[-1] in "uv" else "w")), "m")
    for name in fn.BINARY_MESSAGES]


def _all_reducers(nodes):
    m = nodes.mailbox["m"]
    return {"s": m.sum(1), "a": m.mean(1), "x": m.max(1).values, "n": torch.min(m, 1)[0]}


@pytest.mark.parametrize("message", ALL_MESSAGES, ids=lambda m: m.name)
@settings(max_examples=4, deadline=None)
@given(case=graph_cases(max_nodes=8, max_edges=20))
def test_every_builtin_message_with_every_reducer_forward_and_backward(message, case):
    """All 32 built-in messages x sum/mean/max/min (one kernel per message computes all four,
    exactly the IR of fn.sum/fn.mean/fn.max/fn.min), values and gradients vs the reference."""
    if case.num_edges == 0:
        return  # a reduce UDF never runs then: the reference (as DGL) writes no field
    feats = _feats(case, {"src:h": (2, 3), "dst:h": (2, 3), "edge:w": (2, 3)})
    _compare(case, feats, lambda g: g.update_all(message, _all_reducers),
             [("dst", "s"), ("dst", "a"), ("dst", "x"), ("dst", "n")])


WEIGHT = torch.randn(3, 2, dtype=F64)


def test_gradients_reach_captured_weights():
    """A weight used per edge (not hoistable) gets its gradient from the generated kernels."""
    g = gdsl.graph(([0, 1, 2, 2, 0, 3], [1, 2, 0, 1, 1, 0]))
    h = torch.rand(4, 3, dtype=F64)
    w = torch.rand(6, 1, dtype=F64)
    grads = {}
    for backend in ["reference"] + BACKENDS:
        weight = WEIGHT.clone().requires_grad_()

        def msg(edges):
            return {"m": torch.tanh((edges.src["h"] * edges.data["w"]) @ weight)}
        with gdsl.use_backend(backend), g.local_scope():
            g.ndata["h"], g.edata["w"] = h, w
            g.update_all(msg, fn.sum("m", "o"))
            out = g.ndata["o"]
        grads[backend] = torch.autograd.grad(out.pow(2).sum(), weight)[0]
    for backend in BACKENDS:
        torch.testing.assert_close(grads[backend], grads["reference"], rtol=1e-9, atol=1e-9)


def test_backward_computes_only_the_gradients_autograd_asks_for():
    """A constant edge weight gets no gradient kernel work; one that requires grad does."""
    from gdsl.backend import get_executor
    g = gdsl.graph((torch.tensor([0, 1, 2, 2]), torch.tensor([1, 2, 0, 1])), num_nodes=3)
    h = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    outputs = {}
    for w_grad in (False, True):
        w = torch.rand(4, 1, dtype=torch.float64, requires_grad=w_grad)
        with gdsl.use_backend("numba"):
            with g.local_scope():
                g.ndata["h"], g.edata["w"] = h, w
                g.update_all(fn.u_mul_e("h", "w", "m"), fn.sum("m", "o_pruning"))
                out = g.ndata["o_pruning"]
        grads = torch.autograd.grad(out.pow(2).sum(), [h, w] if w_grad else [h])
        expected = torch.zeros(3, 4, dtype=torch.float64).index_add(
            0, torch.tensor([1, 2, 0, 1]), h[[0, 1, 2, 2]] * w)
        dh = torch.zeros(3, 4, dtype=torch.float64).index_add(
            0, torch.tensor([0, 1, 2, 2]), 2 * expected[[1, 2, 0, 1]] * w)
        torch.testing.assert_close(grads[0], dh.detach())
        outputs[w_grad] = grads
    step = next(s for steps, _ in get_executor("cpu", "numba")._steps.values() for s in steps
                if any(n == "dst:o_pruning" for n, _ in s.program.outputs))
    plans = {needed: p for needed, (p, *_) in step._backward.items()}
    only_h = plans[frozenset({"src:grad:h"})]
    both = plans[frozenset({"src:grad:h", "edge:grad:w"})]
    written = lambda p: {o[0] for k in p.kernels for o in k.program.outputs}  # noqa: E731
    assert written(only_h) == {"src:grad:h"}
    assert "edge:grad:w" in written(both)
    assert outputs[True][1].shape == (4, 1) and outputs[True][1].abs().sum() > 0
