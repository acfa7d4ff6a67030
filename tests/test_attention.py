"""Attention: ``gdsl.edge_softmax``, softmax reducers over the mailbox, and the fused GAT kernel.

Every compiled result is checked three ways: against the reference executor (DGL's semantics,
degree-bucketed UDFs), against a dense-adjacency masked-softmax implementation that shares no
code with gdsl, and (float64, numba) with ``torch.autograd.gradcheck``.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

import gdsl
import gdsl.function as fn
from gdsl.backend import get_executor
from strategies import graph_cases

F64 = torch.float64
COMPILED = ["numba"] + (["triton"] if "triton" in gdsl.available_backends()
                        and os.environ.get("TRITON_INTERPRET") == "1" else [])
BACKENDS = ["reference"] + COMPILED


# ------------------------------------------------------------------------------------------------
# Dense oracles: a masked softmax over the adjacency, no gather/scatter at all
# ------------------------------------------------------------------------------------------------
def dense_edge_softmax(src, dst, num_src, num_dst, logits, norm_by="dst"):
    """Softmax per edge via an (E x E) "same group" mask: edges that share the normalising node."""
    if logits.shape[0] == 0:
        return logits * 1
    group = torch.as_tensor(dst if norm_by == "dst" else src, dtype=torch.int64)
    same = group[:, None] == group[None, :]                        # E x E
    flat = logits.reshape(logits.shape[0], -1)                     # E x K
    big = torch.where(same[:, :, None], flat[None, :, :], torch.tensor(float("-inf"), dtype=flat.dtype))
    row_max = big.amax(1)                                          # E x K: max over the group
    num = torch.exp(flat - row_max)
    den = torch.where(same[:, :, None], torch.exp(flat[None, :, :] - row_max[:, None, :]), 0).sum(1)
    return (num / den).reshape(logits.shape)


def dense_gat(src, dst, num_src, num_dst, feat, el, er, edge_logits=None, slope=0.2):
    """GAT aggregation with a dense (num_dst x num_src) score matrix per head; multi-edges are
    counted by running one masked softmax per edge multiplicity class."""
    src = torch.as_tensor(src, dtype=torch.int64)
    dst = torch.as_tensor(dst, dtype=torch.int64)
    num_heads = feat.shape[1]
    out = feat.new_zeros((num_dst, *feat.shape[1:]))
    if src.numel() == 0:
        return out
    # scores[e, h] per edge, then a dense softmax over a (dst, edge) incidence matrix
    scores = F.leaky_relu(el[src] + er[dst] + (0 if edge_logits is None else edge_logits), slope)[..., 0]
    incidence = dst[None, :] == torch.arange(num_dst)[:, None]     # num_dst x E
    for h in range(num_heads):
        s = torch.where(incidence, scores[:, h][None, :], torch.tensor(float("-inf"), dtype=scores.dtype))
        alpha = torch.softmax(s, 1)
        alpha = torch.where(incidence.any(1, keepdim=True), alpha, torch.zeros_like(alpha))
        out[:, h] = alpha @ feat[src, h]
    return out


# ------------------------------------------------------------------------------------------------
# edge_softmax
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(), (3,), (3, 1)], ids=["E", "EH", "EH1"])
@settings(max_examples=10, deadline=None)
@given(case=graph_cases(max_nodes=8, max_edges=20))
def test_edge_softmax_matches_dense_softmax(backend, shape, case):
    g = case.build()
    gen = torch.Generator().manual_seed(case.num_edges)
    logits = (torch.randn((case.num_edges, *shape), generator=gen, dtype=F64) * 3).requires_grad_()
    weights = torch.randn((case.num_edges, *shape), generator=gen, dtype=F64)
    for norm_by in ("dst", "src"):
        with gdsl.use_backend(backend):
            got = gdsl.edge_softmax(g, logits, norm_by=norm_by)
        want = dense_edge_softmax(case.src, case.dst, case.num_src, case.num_dst, logits, norm_by)
        assert got.shape == logits.shape
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        if case.num_edges:
            (g_got,) = torch.autograd.grad((got * weights).sum(), logits)
            (g_want,) = torch.autograd.grad((want * weights).sum(), logits)
            torch.testing.assert_close(g_got, g_want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_edge_softmax_double_backward_gradgradcheck(backend):
    """The backward (y * (dy - sum dy * y), two compiled steps) is itself differentiable."""
    g = gdsl.graph(([0, 1, 2, 3, 0, 2], [1, 1, 2, 3, 3, 1]), num_nodes=5)
    logits = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=F64, requires_grad=True)

    def softmax(x):
        with gdsl.use_backend(backend):
            return gdsl.edge_softmax(g, x)

    assert torch.autograd.gradgradcheck(softmax, (logits,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", COMPILED)
def test_edge_softmax_is_stable_and_gives_single_edges_weight_one(backend):
    g = gdsl.graph(([0, 1, 2, 3], [1, 1, 2, 3]), num_nodes=5)   # node 0 and 4: no in-edges
    logits = torch.tensor([1000.0, 999.0, -1000.0, 5.0], dtype=F64)
    with gdsl.use_backend(backend):
        a = gdsl.edge_softmax(g, logits)
    e = torch.exp(torch.tensor(-1.0, dtype=F64))
    torch.testing.assert_close(a, torch.tensor([1 / (1 + e), e / (1 + e), 1.0, 1.0], dtype=F64))


@pytest.mark.parametrize("backend", BACKENDS)
def test_edge_softmax_on_a_subset_of_edges(backend):
    g = gdsl.graph(([0, 1, 2, 0, 3], [1, 1, 1, 2, 2]))
    logits = torch.tensor([[0.5], [1.0], [2.0], [3.0], [-1.0]], dtype=F64)
    eids = torch.tensor([0, 2, 4])
    with gdsl.use_backend(backend):
        a = gdsl.edge_softmax(g, logits[eids], eids=eids)
    want = torch.cat([torch.softmax(logits[[0, 2]], 0), torch.ones(1, 1, dtype=F64)])
    torch.testing.assert_close(a, want)


def test_edge_softmax_errors_name_the_problem():
    g = gdsl.graph(([0, 1], [1, 1]))
    with pytest.raises(gdsl.GraphError, match="norm_by"):
        gdsl.edge_softmax(g, torch.zeros(2), norm_by="both")
    with pytest.raises(gdsl.FeatureError, match="3 rows for 2 edges"):
        gdsl.edge_softmax(g, torch.zeros(3))
    with pytest.raises(gdsl.FeatureError, match="floating point"):
        gdsl.edge_softmax(g, torch.zeros(2, dtype=torch.int64))
    with pytest.raises(gdsl.GraphError, match="edge id"):
        gdsl.edge_softmax(g, torch.zeros(1), eids=[5])


# ------------------------------------------------------------------------------------------------
# GAT as one message/reduce pair: one fused kernel
# ------------------------------------------------------------------------------------------------
def gat_message(edges):
    return {"m": edges.src["ft"], "e": F.leaky_relu(edges.src["el"] + edges.dst["er"], 0.2)}


def gat_message_with_edge_features(edges):
    return {"m": edges.src["ft"],
            "e": F.leaky_relu(edges.src["el"] + edges.dst["er"] + edges.data["ee"], 0.2)}


def gat_reduce(nodes):
    alpha = torch.softmax(nodes.mailbox["e"], 1)
    return {"h": (alpha * nodes.mailbox["m"]).sum(1)}


def _gat_inputs(case, heads, dim, dtype, seed=0, edge_features=False):
    gen = torch.Generator().manual_seed(seed)
    feats = {
        "src:ft": torch.randn((case.num_src, heads, dim), generator=gen, dtype=dtype),
        "src:el": torch.randn((case.num_src, heads, 1), generator=gen, dtype=dtype) * 2,
        "dst:er": torch.randn((case.num_dst, heads, 1), generator=gen, dtype=dtype) * 2,
    }
    if edge_features:
        feats["edge:ee"] = torch.randn((case.num_edges, heads, 1), generator=gen, dtype=dtype)
    return feats


def _run_gat(backend, g, feats, message=gat_message):
    leaves = {k: v.detach().clone().requires_grad_() for k, v in feats.items()}
    with gdsl.use_backend(backend), g.local_scope():
        for key, value in leaves.items():
            space, name = key.split(":")
            {"src": g.srcdata, "dst": g.dstdata, "edge": g.edata}[space][name] = value
        g.update_all(message, gat_reduce)
        out = g.dstdata["h"]
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    grads = torch.autograd.grad((out * weight).sum(), list(leaves.values()), allow_unused=True)
    return out, dict(zip(leaves, grads))


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("heads", [1, 8])
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
@settings(max_examples=8, deadline=None)
@given(case=graph_cases(max_nodes=9, max_edges=25))
def test_fused_gat_matches_reference_and_dense(backend, heads, dtype, case):
    g = case.build()
    edge_features = case.num_edges % 2 == 1
    message = gat_message_with_edge_features if edge_features else gat_message
    feats = _gat_inputs(case, heads, 3, dtype, seed=case.num_edges, edge_features=edge_features)
    out, grads = _run_gat(backend, g, feats, message)
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == F64 else dict(rtol=2e-5, atol=2e-5)
    dense = dense_gat(case.src, case.dst, case.num_src, case.num_dst, feats["src:ft"], feats["src:el"],
                      feats["dst:er"], feats.get("edge:ee"))
    torch.testing.assert_close(out, dense, **tol)
    if case.num_edges == 0:
        return  # the reference runs no reduce UDF then (as DGL) and creates no field
    ref_out, ref_grads = _run_gat("reference", g, feats, message)
    torch.testing.assert_close(out, ref_out, **tol)
    for key in feats:
        torch.testing.assert_close(grads[key], ref_grads[key], msg=key, **tol)


@pytest.mark.parametrize("dim", [16, 32, 64])
@settings(max_examples=4, deadline=None)
@given(case=graph_cases(max_nodes=9, max_edges=25))
def test_fused_gat_wide_heads_matches_reference(dim, case):
    """2 heads of 16-64 features, float32, numba: the loop forms those widths take (opaque bounds
    for per-head feature loops and per-head dots; test_codegen_numba) give the reference's output
    and gradients."""
    g = case.build()
    feats = _gat_inputs(case, 2, dim, torch.float32, seed=case.num_edges)
    out, grads = _run_gat("numba", g, feats)
    tol = dict(rtol=2e-5, atol=2e-5)
    dense = dense_gat(case.src, case.dst, case.num_src, case.num_dst, feats["src:ft"], feats["src:el"],
                      feats["dst:er"], None)
    torch.testing.assert_close(out, dense, **tol)
    if case.num_edges == 0:
        return
    ref_out, ref_grads = _run_gat("reference", g, feats)
    for key in feats:
        torch.testing.assert_close(grads[key], ref_grads[key], msg=key, **tol)


def _step(message, reduce, field, shape):
    """The numba executor's compiled step for these functions, traced for ``field`` of ``shape``."""
    executor = get_executor("cpu", "numba")
    found = [s for steps, funcs in executor._steps.values() if len(funcs) == 2 and funcs[0] is message
             and funcs[1] is reduce for s in steps if s.reads[field].shape == shape
             and s.reads[field].dtype == F64]
    assert len(found) == 1
    return found[0]


def test_fused_gat_is_one_kernel_forward_and_one_per_direction_backward():
    g = gdsl.graph(([0, 1, 2, 2], [1, 2, 0, 1]))
    case = type("C", (), {"num_src": 3, "num_dst": 3, "num_edges": 4})
    feats = _gat_inputs(case, 2, 4, F64)
    _run_gat("numba", g, feats)
    step = _step(gat_message, gat_reduce, ("src", "ft"), (2, 4))
    assert len(step.plan.kernels) == 1
    kernel = step.plan.kernels[0]
    ops = [ins.op for ins in kernel.program.instrs]
    assert "mailbox_softmax_sum" in ops and "mailbox_softmax" not in ops
    assert not [name for name, _ in kernel.program.outputs if name.startswith("edge:")]  # no E-sized output
    backward = step.backward_plan()
    assert [k.rows for k in backward.kernels] == ["src", "dst"]
    # The out-CSR kernel (source-side gradients) also writes the logits' gradient per edge and head
    # (E x H, no E x H x D), which the in-CSR kernel sums for the destination side without
    # re-reading the features.
    (edge_out,) = [name for name, _ in backward.kernels[0].program.outputs if name.startswith("edge:")]
    assert backward.kernels[0].program.output(edge_out).shape == (2, 1)
    assert {i.space for i in backward.kernels[1].inputs} == {"edge"}
    assert not [name for name, _ in backward.kernels[1].program.outputs if name.startswith("edge:")]


@settings(max_examples=5, deadline=None)
@given(case=graph_cases(max_nodes=6, max_edges=12, hub=False))
def test_fused_gat_gradcheck_float64_numba(case):
    if case.num_edges == 0:
        return
    g = case.build()
    feats = _gat_inputs(case, 2, 2, F64, seed=1, edge_features=True)
    keys = list(feats)

    def layer(*tensors):
        with gdsl.use_backend("numba"), g.local_scope():
            for key, value in zip(keys, tensors):
                space, name = key.split(":")
                {"src": g.srcdata, "dst": g.dstdata, "edge": g.edata}[space][name] = value
            g.update_all(gat_message_with_edge_features, gat_reduce)
            return g.dstdata["h"]

    inputs = tuple(feats[k].clone().requires_grad_() for k in keys)
    assert torch.autograd.gradcheck(layer, inputs, eps=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# The DGL-style attention UDF of the issue: MLP(cat(h_dst, h_src)) scores, softmax over the mailbox
# ------------------------------------------------------------------------------------------------
DIM = 4
MLP = torch.nn.Sequential(torch.nn.Linear(2 * DIM, 1), torch.nn.LeakyReLU(0.2)).double()


def mlp_message(edges):
    h_src = edges.src["h"]
    h_dst = edges.dst["h"]
    alpha_hat = MLP(torch.cat([h_dst, h_src], 1))
    return {"m": h_src, "alpha_hat": alpha_hat}


def mlp_reduce(nodes):
    m = nodes.mailbox["m"]
    alpha = torch.softmax(nodes.mailbox["alpha_hat"], 1)
    return {"h_n": (m * alpha).sum(1)}


def mlp_reduce_scalar_logits(nodes):  # alpha_hat squeezed to (E,): broadcast it back by indexing
    alpha = torch.softmax(nodes.mailbox["alpha_hat"][:, :, 0], 1)
    return {"h_n": (nodes.mailbox["m"] * alpha[:, :, None]).sum(1)}


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("reducer", [mlp_reduce, mlp_reduce_scalar_logits], ids=["E1", "E"])
@settings(max_examples=8, deadline=None)
@given(case=graph_cases(max_nodes=9, max_edges=25, blocks=False))
def test_dgl_attention_udf_compiles_unchanged(backend, reducer, case):
    if case.num_edges == 0:
        return
    g = case.build()
    gen = torch.Generator().manual_seed(case.num_edges)
    h = torch.randn((case.num_src, DIM), generator=gen, dtype=F64)
    results = {}
    for name in ("reference", backend):
        leaf = h.clone().requires_grad_()
        MLP.zero_grad()
        with gdsl.use_backend(name), g.local_scope():
            g.ndata["h"] = leaf
            g.update_all(mlp_message, reducer)
            out = g.ndata["h_n"]
        (out * torch.linspace(-1, 1, out.numel(), dtype=F64).reshape(out.shape)).sum().backward()
        results[name] = (out.detach(), leaf.grad, [p.grad.clone() for p in MLP.parameters()])
    (o1, g1, w1), (o2, g2, w2) = results["reference"], results[backend]
    torch.testing.assert_close(o2, o1)
    torch.testing.assert_close(g2, g1)
    for a, b in zip(w2, w1):
        torch.testing.assert_close(a, b)


def test_dgl_attention_udf_hoists_the_linear_layer_to_the_nodes():
    g = gdsl.graph(([0, 1, 2, 2], [1, 2, 0, 1]))
    g.ndata["h"] = torch.randn(3, DIM, dtype=F64)
    with gdsl.use_backend("numba"):
        g.update_all(mlp_message, mlp_reduce)
    step = _step(mlp_message, mlp_reduce, ("src", "h"), (DIM,))
    # W @ cat(h_dst, h_src) is split into W_dst @ h_dst + W_src @ h_src, each computed per node:
    matmuls = [ins for ins in step.program.instrs if ins.op == "matmul"]
    assert len(matmuls) == 2 and {ins.space for ins in matmuls} == {"src", "dst"}
    kernel_ops = [ins.op for ins in step.plan.kernel.program.instrs]
    assert "matmul" not in kernel_ops and "mailbox_softmax_sum" in kernel_ops


# ------------------------------------------------------------------------------------------------
# Other softmax forms over the mailbox
# ------------------------------------------------------------------------------------------------
def _score_message(edges):
    return {"m": edges.src["h"], "s": (edges.src["h"] * edges.dst["h"]).sum(-1, keepdim=True)}


def _scaled_softmax_reduce(nodes):  # weights scaled and divided, plus a log-sum-exp output
    alpha = torch.softmax(nodes.mailbox["s"] / 2.0, dim=1)
    return {"o": (nodes.mailbox["m"] * alpha * 3.0 / nodes.data["h"].unsqueeze(1)).sum(1),
            "lse": torch.logsumexp(nodes.mailbox["s"], 1)}


@pytest.mark.parametrize("backend", COMPILED)
@settings(max_examples=8, deadline=None)
@given(case=graph_cases(max_nodes=9, max_edges=25, blocks=False))
def test_softmax_variants_match_reference(backend, case):
    if case.num_edges == 0:
        return
    g = case.build()
    gen = torch.Generator().manual_seed(case.num_edges)
    h = torch.rand((case.num_src, 3), generator=gen, dtype=F64) + 0.5
    results = {}
    for name in ("reference", backend):
        leaf = h.clone().requires_grad_()
        with gdsl.use_backend(name), g.local_scope():
            g.ndata["h"] = leaf
            g.update_all(_score_message, _scaled_softmax_reduce)
            outs = (g.ndata["o"], g.ndata["lse"])
        loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=F64).reshape(o.shape)).sum() for o in outs)
        (grad,) = torch.autograd.grad(loss, leaf)
        results[name] = ([o.detach() for o in outs], grad)
    for a, b in zip(results[backend][0], results["reference"][0]):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(results[backend][1], results["reference"][1])


def test_softmax_used_other_than_as_weights_names_the_line():
    def red(nodes):
        alpha = torch.softmax(nodes.mailbox["m"], 1)
        return {"o": alpha.max(1).values}

    g = gdsl.graph(([0, 1], [1, 1]))
    g.ndata["h"] = torch.randn(2, 3)
    with gdsl.use_backend("numba"), pytest.raises(gdsl.CompileError, match="edge_softmax") as info:
        g.update_all(fn.copy_u("h", "m"), red)
    assert "test_attention.py" in str(info.value)


# ------------------------------------------------------------------------------------------------
# Attention dropout: a counter-based mask, regenerated in backward
# ------------------------------------------------------------------------------------------------
ATTN_DROP = torch.nn.Dropout(0.4)


def dropout_reduce(nodes):
    alpha = ATTN_DROP(torch.softmax(nodes.mailbox["e"], 1))
    return {"h": (alpha * nodes.mailbox["m"]).sum(1)}


def _dropout_graph():
    gen = torch.Generator().manual_seed(0)
    n, e = 30, 200
    src, dst = torch.randint(0, n, (e,), generator=gen), torch.randint(0, n, (e,), generator=gen)
    return gdsl.graph((src, dst), num_nodes=n), src, dst


@pytest.mark.parametrize("backend", COMPILED)
def test_attention_dropout_uses_the_counter_based_mask(backend):
    from gdsl.kernels.random import keep_mask
    g, src, dst = _dropout_graph()
    case = type("C", (), {"num_src": 30, "num_dst": 30, "num_edges": 200})
    feats = _gat_inputs(case, 2, 3, F64)
    ft, el, er = feats["src:ft"], feats["src:el"], feats["dst:er"]
    ATTN_DROP.train()
    try:
        torch.manual_seed(7)
        with gdsl.use_backend(backend), g.local_scope():
            g.ndata.update({"ft": ft, "el": el, "er": er})
            g.update_all(gat_message, dropout_reduce)
            got = g.ndata["h"]
    finally:
        ATTN_DROP.eval()
    torch.manual_seed(7)
    seed = int(torch.randint(0, 2**31 - 1, (1,)))
    keep = keep_mask(seed, 0, 200, (2, 1), 0.4)
    alpha = dense_edge_softmax(src, dst, 30, 30, F.leaky_relu(el[src] + er[dst], 0.2))
    want = torch.zeros(30, 2, 3, dtype=F64).index_add_(0, dst, alpha * keep / 0.6 * ft[src])
    torch.testing.assert_close(got, want)
    assert 0.5 < keep.float().mean() < 0.7


def test_attention_dropout_backward_regenerates_the_mask_gradcheck():
    g, _, _ = _dropout_graph()
    case = type("C", (), {"num_src": 30, "num_dst": 30, "num_edges": 200})
    feats = _gat_inputs(case, 2, 2, F64)

    def layer(ft, el, er):
        torch.manual_seed(3)  # the same seed on every evaluation
        with gdsl.use_backend("numba"), g.local_scope():
            g.ndata.update({"ft": ft, "el": el, "er": er})
            g.update_all(gat_message, dropout_reduce)
            return g.ndata["h"]

    ATTN_DROP.train()
    try:
        inputs = tuple(feats[k].clone().requires_grad_() for k in ("src:ft", "src:el", "dst:er"))
        assert torch.autograd.gradcheck(layer, inputs, eps=1e-6, atol=1e-7)
    finally:
        ATTN_DROP.eval()


def test_attention_dropout_is_the_identity_in_eval_mode_and_modes_retrace():
    g, _, _ = _dropout_graph()
    case = type("C", (), {"num_src": 30, "num_dst": 30, "num_edges": 200})
    feats = _gat_inputs(case, 2, 3, F64)

    def run(reduce):
        with gdsl.use_backend("numba"), g.local_scope():
            g.ndata.update({"ft": feats["src:ft"], "el": feats["src:el"], "er": feats["dst:er"]})
            g.update_all(gat_message, reduce)
            return g.ndata["h"]

    ATTN_DROP.eval()
    plain = run(gat_reduce)
    torch.testing.assert_close(run(dropout_reduce), plain)
    ATTN_DROP.train()
    try:
        assert not torch.allclose(run(dropout_reduce), plain)
    finally:
        ATTN_DROP.eval()
    torch.testing.assert_close(run(dropout_reduce), plain)


# ------------------------------------------------------------------------------------------------
# Attention vectors and weights captured by the UDF: their gradients come through the compiler
# ------------------------------------------------------------------------------------------------
HEADS, HDIM, IN = 2, 3, 5
W_PROJ = torch.nn.Parameter(torch.randn(IN, HEADS * HDIM, dtype=F64) * 0.5)
ATTN_L = torch.nn.Parameter(torch.randn(1, HEADS, HDIM, dtype=F64))
ATTN_R = torch.nn.Parameter(torch.randn(1, HEADS, HDIM, dtype=F64))


def captured_message(edges):
    zs = (edges.src["x"] @ W_PROJ).view(-1, HEADS, HDIM)
    zd = (edges.dst["x"] @ W_PROJ).view(-1, HEADS, HDIM)
    score = (zs * ATTN_L).sum(-1, keepdim=True) + (zd * ATTN_R).sum(-1, keepdim=True)
    return {"m": zs, "e": F.leaky_relu(score, 0.2)}


@pytest.mark.parametrize("backend", COMPILED)
@settings(max_examples=6, deadline=None)
@given(case=graph_cases(max_nodes=8, max_edges=20, blocks=False))
def test_gradients_reach_captured_weights_and_attention_vectors(backend, case):
    if case.num_edges == 0:
        return
    g = case.build()
    x = torch.randn((case.num_src, IN), generator=torch.Generator().manual_seed(case.num_edges), dtype=F64)
    results = {}
    for name in ("reference", backend):
        for p in (W_PROJ, ATTN_L, ATTN_R):
            p.grad = None
        leaf = x.clone().requires_grad_()
        with gdsl.use_backend(name), g.local_scope():
            g.ndata["x"] = leaf
            g.update_all(captured_message, gat_reduce)
            out = g.ndata["h"]
        (out * torch.linspace(-1, 1, out.numel(), dtype=F64).reshape(out.shape)).sum().backward()
        results[name] = (out.detach(), leaf.grad, [p.grad.clone() for p in (W_PROJ, ATTN_L, ATTN_R)])
    (o1, g1, w1), (o2, g2, w2) = results["reference"], results[backend]
    torch.testing.assert_close(o2, o1)
    torch.testing.assert_close(g2, g1)
    for a, b, name in zip(w2, w1, ("W", "attn_l", "attn_r")):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("backend", COMPILED)
def test_rows_whose_logits_are_all_minus_infinity_follow_torch(backend, dtype):
    # node 1: all in-edges masked (-inf): NaN output as torch.softmax gives, log-sum-exp 0;
    # node 2: one masked edge among finite ones gets weight 0; node 0: no in-edges, zeros.
    # (float32 takes numba's exp32 on the chunk's shifted logits.)
    g = gdsl.graph(([0, 2, 0, 1, 3], [1, 1, 2, 2, 2]), num_nodes=4)
    inf = float("inf")
    score = torch.tensor([[-inf], [-inf], [0.5], [-inf], [1.5]], dtype=dtype)

    def message(edges):
        return {"m": edges.src["h"], "e": edges.data["s"]}

    def reduce(nodes):
        alpha = torch.softmax(nodes.mailbox["e"], 1)
        return {"o": (alpha * nodes.mailbox["m"]).sum(1), "l": torch.logsumexp(nodes.mailbox["e"], 1)}

    outs = {}
    for name in ("reference", backend):
        with gdsl.use_backend(name), g.local_scope():
            g.ndata["h"] = torch.arange(8, dtype=dtype).reshape(4, 2)
            g.edata["s"] = score
            g.update_all(message, reduce)
            outs[name] = (g.ndata["o"], g.ndata["l"])
    torch.testing.assert_close(outs[backend][0], outs["reference"][0], equal_nan=True)
    torch.testing.assert_close(outs[backend][1], outs["reference"][1], equal_nan=True)
    assert torch.isnan(outs[backend][0][1]).all() and not torch.isnan(outs[backend][0][[0, 2, 3]]).any()
