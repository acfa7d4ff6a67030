"""gdsl.nn layers against dense references that share no code with gdsl.

Each layer runs on a compiled back end (numba; Triton in its interpreter) on hypothesis graphs
(empty graphs, zero-in-degree nodes, self-loops, multi-edges, a hub, bipartite blocks) and is
compared, output and gradients to its input features and every parameter, with the same layer
computed from a (num_dst x num_src) edge-count matrix. Multi-edges count with multiplicity.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

import gdsl
import gdsl.nn as gnn
from strategies import graph_cases

F64 = torch.float64
COMPILED = ["numba"] + (["triton"] if "triton" in gdsl.available_backends()
                        and os.environ.get("TRITON_INTERPRET") == "1" else [])
EXAMPLES = {"numba": 12, "triton": 4}
IN, OUT, HEADS = 5, 3, 2


# ------------------------------------------------------------------------------------------------
# Dense building blocks
# ------------------------------------------------------------------------------------------------
class Dense:
    """A drawn graph as dense matrices: ``count[i, j]`` = edges j -> i, ``weighted`` the same
    with edge weights summed."""

    def __init__(self, case, edge_weight=None):
        self.case = case
        src = torch.as_tensor(case.src, dtype=torch.int64)
        dst = torch.as_tensor(case.dst, dtype=torch.int64)
        self.src, self.dst = src, dst
        self.count = torch.zeros(case.num_dst, case.num_src, dtype=F64)
        self.count.index_put_((dst, src), torch.ones(len(src), dtype=F64), accumulate=True)
        self.weighted = self.count
        if edge_weight is not None:
            self.weighted = torch.zeros(case.num_dst, case.num_src, dtype=F64)
            self.weighted = self.weighted.index_put((dst, src), edge_weight.reshape(-1), accumulate=True)
        self.in_deg = self.count.sum(1)
        self.out_deg = self.count.sum(0)
        self.has_in = self.in_deg > 0

    def masked(self, values: torch.Tensor, op: str) -> torch.Tensor:
        """``op`` (max) over each destination's neighbours of ``values[i, j, ...]``; 0 without any."""
        if self.count.shape[1] == 0:
            return values.new_zeros((values.shape[0], *values.shape[2:]))
        mask = (self.count > 0).view(*self.count.shape, *([1] * (values.dim() - 2)))
        out = torch.where(mask, values, torch.tensor(float("-inf"), dtype=values.dtype)).amax(1)
        return torch.where(self.has_in.view(-1, *([1] * (out.dim() - 1))), out, torch.zeros_like(out))

    def attention(self, scores: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``sum_j w_ij exp(s_ij) v_j / sum_j c_ij exp(s_ij)`` per head; scores (Nd, Ns, H),
        values (Ns, H, D). Rows without in-edges give 0."""
        if self.count.shape[1] == 0:
            return values.new_zeros((self.count.shape[0], *values.shape[1:])) + 0 * values.sum()
        mask = (self.count > 0)[:, :, None]
        shift = torch.where(mask, scores, torch.tensor(float("-inf"), dtype=scores.dtype)).amax(1, keepdim=True)
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        ex = torch.where(mask, torch.exp(scores - shift), torch.zeros_like(scores))
        den = (self.count[:, :, None] * ex).sum(1)                      # (Nd, H)
        num = torch.einsum("ijh,jhd->ihd", self.weighted[:, :, None] * ex, values)
        return num / den.clamp(min=1e-300)[:, :, None]


def _inputs(case, in_src=IN, in_dst=IN, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x_src = torch.randn(case.num_src, in_src, generator=gen, dtype=F64, requires_grad=True)
    if case.is_block:
        x_dst = torch.randn(case.num_dst, in_dst, generator=gen, dtype=F64, requires_grad=True)
        return (x_src, x_dst), [x_src, x_dst], x_src, x_dst
    return x_src, [x_src], x_src, x_src


def _randomize(module: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Non-zero values everywhere (biases and eps too), so every gradient path is exercised."""
    gen = torch.Generator().manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=F64) * 0.5)
    return module


def _compare(backend, case, module, leaves, run_gdsl, run_dense, atol=1e-9):
    """Output and gradients (leaves + parameters) of the layer vs the dense computation."""
    g = case.build()
    with gdsl.use_backend(backend):
        out = run_gdsl(g)
    expected = run_dense()
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=atol, rtol=1e-7)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=F64)
    params = [p for p in module.parameters() if p.requires_grad]
    wrt = list(leaves) + params
    got = torch.autograd.grad((out * weight).sum(), wrt, allow_unused=True)
    want = torch.autograd.grad((expected * weight).sum(), wrt, allow_unused=True)
    for k, (a, b) in enumerate(zip(got, want)):
        a = torch.zeros_like(wrt[k]) if a is None else a
        b = torch.zeros_like(wrt[k]) if b is None else b
        torch.testing.assert_close(a, b, atol=atol, rtol=1e-7, msg=lambda m: f"gradient {k}: {m}")


def _settings(backend):
    return settings(max_examples=EXAMPLES[backend])


# ------------------------------------------------------------------------------------------------
# GraphConv
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("norm", ["both", "right", "left", "none"])
@pytest.mark.parametrize("in_out", [(IN, OUT), (OUT, IN)], ids=["project-first", "aggregate-first"])
def test_graphconv_matches_dense(backend, norm, in_out):
    @_settings(backend)
    @given(case=graph_cases())
    def check(case):
        a, b = in_out
        conv = _randomize(gnn.GraphConv(a, b, norm=norm, allow_zero_in_degree=True))
        feat, leaves, x_src, _ = _inputs(case, a, a)
        d = Dense(case)

        def dense():
            h = x_src
            if norm in ("both", "left"):
                h = h * d.out_deg.clamp(min=1).pow(-0.5 if norm == "both" else -1.0)[:, None]
            rst = d.count @ h @ conv.weight
            if norm in ("both", "right"):
                rst = rst * d.in_deg.clamp(min=1).pow(-0.5 if norm == "both" else -1.0)[:, None]
            return rst + conv.bias
        _compare(backend, case, conv, leaves, lambda g: conv(g, feat), dense)
    check()


@pytest.mark.parametrize("backend", COMPILED)
def test_graphconv_edge_weight_and_external_weight(backend):
    @_settings(backend)
    @given(case=graph_cases(blocks=False))
    def check(case):
        conv = _randomize(gnn.GraphConv(IN, OUT, weight=False, allow_zero_in_degree=True))
        feat, leaves, x_src, _ = _inputs(case)
        gen = torch.Generator().manual_seed(3)
        w = torch.rand(case.num_edges, generator=gen, dtype=F64, requires_grad=True)
        weight = torch.randn(IN, OUT, generator=gen, dtype=F64, requires_grad=True)
        d = Dense(case, w)

        def dense():
            h = x_src * d.out_deg.clamp(min=1).pow(-0.5)[:, None]
            return (d.weighted @ h @ weight) * d.in_deg.clamp(min=1).pow(-0.5)[:, None] + conv.bias
        _compare(backend, case, conv, leaves + [w, weight],
                 lambda g: conv(g, feat, weight=weight, edge_weight=w), dense)
    check()


def test_graphconv_errors_as_dgl():
    g = gdsl.graph(([0, 1], [1, 2]), num_nodes=3)  # node 0 has no in-edges
    x = torch.randn(3, IN)
    with pytest.raises(gdsl.GraphError, match="0-in-degree"):
        gnn.GraphConv(IN, OUT)(g, x)
    conv = gnn.GraphConv(IN, OUT, allow_zero_in_degree=True)
    torch.testing.assert_close(conv(g, x)[0], conv.bias)
    conv.set_allow_zero_in_degree(False)
    with pytest.raises(gdsl.DGLError):
        conv(g, x)
    with pytest.raises(gdsl.GdslError, match="Invalid norm value"):
        gnn.GraphConv(IN, OUT, norm="sym")
    with pytest.raises(gdsl.GdslError, match="External weight"):
        gnn.GraphConv(IN, OUT, allow_zero_in_degree=True)(g, x, weight=torch.randn(IN, OUT))
    with pytest.raises(gdsl.GraphError, match="edge_weight has 5 rows"):
        gnn.GraphConv(IN, OUT, allow_zero_in_degree=True)(g, x, edge_weight=torch.ones(5))


def test_graphconv_parameters_have_dgl_shapes_and_init():
    conv = gnn.GraphConv(IN, OUT)
    assert conv.weight.shape == (IN, OUT) and conv.bias.shape == (OUT,)
    assert torch.count_nonzero(conv.bias) == 0
    assert gnn.GraphConv(IN, OUT, weight=False, bias=False).weight is None
    assert set(dict(conv.named_parameters())) == {"weight", "bias"}


# ------------------------------------------------------------------------------------------------
# GATConv and GATv2Conv
# ------------------------------------------------------------------------------------------------
def _gat_dense(conv, d, x_src, x_dst, edge_weight=None):
    fc_src = conv.fc_src if hasattr(conv, "fc_src") else conv.fc
    fc_dst = conv.fc_dst if hasattr(conv, "fc_dst") else conv.fc
    ft_src = fc_src(x_src).view(-1, HEADS, OUT)
    ft_dst = fc_dst(x_dst).view(-1, HEADS, OUT)
    el = (ft_src * conv.attn_l).sum(-1)                       # (Ns, H)
    er = (ft_dst * conv.attn_r).sum(-1)
    scores = F.leaky_relu(er[:, None, :] + el[None, :, :], conv.negative_slope)
    rst = d.attention(scores, ft_src)
    if conv.res_fc is not None:
        rst = rst + conv.res_fc(x_dst).view(-1, HEADS, OUT)
    if conv.bias is not None:
        rst = rst + conv.bias.view(HEADS, OUT)
    return rst


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("variant", ["plain", "residual", "edge-weight"])
def test_gatconv_matches_dense(backend, variant):
    @_settings(backend)
    @given(case=graph_cases())
    def check(case):
        in_feats = (IN, IN + 1) if case.is_block else IN
        conv = _randomize(gnn.GATConv(in_feats, OUT, HEADS, residual=variant == "residual",
                                      allow_zero_in_degree=True))
        feat, leaves, x_src, _ = _inputs(case, IN, IN + 1)
        x_dst = feat[1] if case.is_block else x_src
        w = None
        if variant == "edge-weight":
            w = torch.rand(case.num_edges, generator=torch.Generator().manual_seed(4), dtype=F64,
                           requires_grad=True)
            leaves = leaves + [w]
        d = Dense(case, w)
        _compare(backend, case, conv, leaves, lambda g: conv(g, feat, edge_weight=w),
                 lambda: _gat_dense(conv, d, x_src, x_dst, w))
    check()


def test_gatconv_wide_layer_folds_scores_and_matches_dense():
    """From heads x out >= 256 the scores come from x @ (W a): same results."""
    torch.manual_seed(0)
    g = gdsl.add_self_loop(gdsl.graph((torch.randint(0, 30, (90,)), torch.randint(0, 30, (90,))), num_nodes=30))
    wide = gnn.GATConv(IN, 64, 4).double()
    assert 64 * 4 >= gnn.conv.gatconv.FOLD_SCORES_FROM
    narrow_copy = gnn.GATConv(IN, 64, 4).double()
    narrow_copy.load_state_dict(wide.state_dict())
    x = torch.randn(30, IN, dtype=F64)
    out = wide(g, x)
    # the same layer through get_attention (edge_softmax path, unfolded scores)
    ref, attn = narrow_copy(g, x, get_attention=True)
    torch.testing.assert_close(out, ref)
    assert attn.shape == (g.num_edges(), 4, 1)


@pytest.mark.parametrize("backend", COMPILED)
def test_gatconv_get_attention_equals_fused_output(backend):
    @_settings(backend)
    @given(case=graph_cases(blocks=False, min_nodes=1))
    def check(case):
        conv = _randomize(gnn.GATConv(IN, OUT, HEADS, allow_zero_in_degree=True))
        g = case.build()
        x = torch.randn(case.num_src, IN, dtype=F64)
        with gdsl.use_backend(backend):
            fused = conv(g, x)
            rst, a = conv(g, x, get_attention=True)
        torch.testing.assert_close(fused, rst)
        assert a.shape == (case.num_edges, HEADS, 1)
        # attention sums to 1 over each destination with in-edges
        dst = torch.as_tensor(case.dst, dtype=torch.int64)
        sums = torch.zeros(case.num_dst, HEADS, dtype=F64).index_add(0, dst, a[:, :, 0])
        has_in = torch.bincount(dst, minlength=case.num_dst) > 0
        torch.testing.assert_close(sums[has_in], torch.ones_like(sums[has_in]))
    check()


def test_gatconv_attention_dropout_is_seeded_and_regenerated_in_backward():
    torch.manual_seed(0)
    g = gdsl.add_self_loop(gdsl.graph((torch.randint(0, 12, (40,)), torch.randint(0, 12, (40,))), num_nodes=12))
    conv = gnn.GATConv(IN, OUT, HEADS, attn_drop=0.5).double()
    x = torch.randn(12, IN, dtype=F64, requires_grad=True)
    conv.eval()
    plain = conv(g, x)
    d = Dense(_case_of(g))
    torch.testing.assert_close(plain, _gat_dense(conv, d, x, x))
    conv.train()
    torch.manual_seed(5)
    first = conv(g, x)
    torch.manual_seed(5)
    again = conv(g, x)
    torch.manual_seed(6)
    other = conv(g, x)
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, plain) and not torch.allclose(first, other)

    def layer(inp):
        torch.manual_seed(5)  # the same mask on every call: the backward must use it too
        return conv(g, inp)
    assert torch.autograd.gradcheck(layer, (x,), eps=1e-6, atol=1e-6)


def _case_of(g):
    from strategies import GraphCase
    src, dst = g.edges()
    return GraphCase(src.numpy(), dst.numpy(), g.num_src_nodes(), g.num_dst_nodes(), g.idtype, g.is_block)


def _gatv2_dense(conv, d, x_src, x_dst):
    ft_src = conv.fc_src(x_src).view(-1, HEADS, OUT)
    ft_dst = conv.fc_dst(x_dst).view(-1, HEADS, OUT)
    pair = F.leaky_relu(ft_dst[:, None] + ft_src[None, :], conv.negative_slope)   # (Nd, Ns, H, D)
    scores = (pair * conv.attn).sum(-1)
    rst = d.attention(scores, ft_src)
    if conv.res_fc is not None:
        rst = rst + conv.res_fc(x_dst).view(-1, HEADS, OUT)
    return rst


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("variant", ["plain", "share-weights", "residual"])
def test_gatv2conv_matches_dense(backend, variant):
    @_settings(backend)
    @given(case=graph_cases(blocks=None if variant != "share-weights" else False))
    def check(case):
        in_feats = (IN, IN + 1) if case.is_block else IN
        conv = _randomize(gnn.GATv2Conv(in_feats, OUT, HEADS, residual=variant == "residual",
                                        share_weights=variant == "share-weights", allow_zero_in_degree=True))
        feat, leaves, x_src, _ = _inputs(case, IN, IN + 1)
        x_dst = feat[1] if case.is_block else x_src
        d = Dense(case)
        _compare(backend, case, conv, leaves, lambda g: conv(g, feat), lambda: _gatv2_dense(conv, d, x_src, x_dst))
    check()


def test_gatv2conv_get_attention_and_one_fused_kernel():
    torch.manual_seed(0)
    g = gdsl.add_self_loop(gdsl.graph((torch.randint(0, 12, (40,)), torch.randint(0, 12, (40,))), num_nodes=12))
    conv = gnn.GATv2Conv(IN, OUT, HEADS).double()
    x = torch.randn(12, IN, dtype=F64)
    rst, a = conv(g, x, get_attention=True)
    torch.testing.assert_close(conv(g, x), rst)
    assert a.shape == (g.num_edges(), HEADS, 1)


# ------------------------------------------------------------------------------------------------
# SAGEConv
# ------------------------------------------------------------------------------------------------
def _sage_dense(conv, d, x_src, x_dst, kind):
    if kind == "mean":
        neigh = conv.fc_neigh((d.count @ x_src) / d.in_deg.clamp(min=1)[:, None])
    elif kind == "gcn":
        neigh = conv.fc_neigh((d.count @ x_src + x_dst) / (d.in_deg[:, None] + 1))
    elif kind == "pool":
        pooled = F.relu(conv.fc_pool(x_src))
        neigh = conv.fc_neigh(d.masked(pooled[None].expand(d.count.shape[0], -1, -1), "max"))
    else:  # lstm: each node's messages in edge-id order
        rows = []
        for i in range(d.count.shape[0]):
            seq = x_src[d.src[d.dst == i]]
            if seq.shape[0] == 0:
                rows.append(x_src.new_zeros(x_src.shape[1]))
                continue
            _, (h, _) = conv.lstm(seq[None])
            rows.append(h[0, 0])
        neigh = conv.fc_neigh(torch.stack(rows) if rows else x_src.new_zeros((0, x_src.shape[1])))
    return neigh + conv.bias if kind == "gcn" else conv.fc_self(x_dst) + neigh


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("kind", ["mean", "gcn", "pool", "lstm"])
@pytest.mark.parametrize("out", [OUT, IN + 2], ids=["project-first", "aggregate-first"])
def test_sageconv_matches_dense(backend, kind, out):
    if kind == "lstm" and backend != "numba":
        pytest.skip("the LSTM aggregator runs in torch on every back end")

    @_settings(backend)
    @given(case=graph_cases(max_edges=12 if kind == "lstm" else 30, hub=False if kind == "lstm" else None))
    def check(case):
        same = kind == "gcn"
        in_feats = (IN, IN if same else IN + 1) if case.is_block else IN
        conv = _randomize(gnn.SAGEConv(in_feats, out, kind))
        feat, leaves, x_src, _ = _inputs(case, IN, IN if same else IN + 1)
        x_dst = feat[1] if case.is_block else x_src
        d = Dense(case)
        _compare(backend, case, conv, leaves, lambda g: conv(g, feat), lambda: _sage_dense(conv, d, x_src, x_dst, kind))
    check()


def test_sageconv_parameters_as_dgl():
    assert set(dict(gnn.SAGEConv(IN, OUT, "mean").named_parameters())) == {
        "fc_neigh.weight", "fc_self.weight", "fc_self.bias"}
    assert set(dict(gnn.SAGEConv(IN, OUT, "gcn").named_parameters())) == {"fc_neigh.weight", "bias"}
    assert set(dict(gnn.SAGEConv(IN, OUT, "pool", bias=False).named_parameters())) == {
        "fc_pool.weight", "fc_pool.bias", "fc_neigh.weight", "fc_self.weight"}


def test_sageconv_errors_as_dgl():
    with pytest.raises(KeyError, match="Invalid aggregator_type"):
        gnn.SAGEConv(IN, OUT, "median")
    g = gdsl.bipartite(([0, 1], [0, 0]), 2, 1)
    with pytest.raises(gdsl.GdslError, match="one shape"):
        gnn.SAGEConv((IN, IN + 1), OUT, "gcn")(g, (torch.randn(2, IN), torch.randn(1, IN + 1)))


# ------------------------------------------------------------------------------------------------
# GINConv, EdgeConv
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("aggregator", ["sum", "max", "mean"])
def test_ginconv_matches_dense(backend, aggregator):
    @_settings(backend)
    @given(case=graph_cases())
    def check(case):
        conv = _randomize(gnn.GINConv(torch.nn.Linear(IN, OUT), aggregator, init_eps=0.3, learn_eps=True))
        feat, leaves, x_src, x_dst = _inputs(case)
        d = Dense(case)

        def dense():
            if aggregator == "sum":
                neigh = d.count @ x_src
            elif aggregator == "mean":
                neigh = d.count @ x_src / d.in_deg.clamp(min=1)[:, None]
            else:
                neigh = d.masked(x_src[None].expand(d.count.shape[0], -1, -1), "max")
            return conv.apply_func((1 + conv.eps) * x_dst + neigh)
        _compare(backend, case, conv, leaves, lambda g: conv(g, feat), dense)
    check()


def test_ginconv_eps_is_a_buffer_unless_learned():
    assert "eps" not in dict(gnn.GINConv(None, "sum").named_parameters())
    assert "eps" in dict(gnn.GINConv(None, "sum", learn_eps=True).named_parameters())
    with pytest.raises(KeyError, match="not recognized"):
        gnn.GINConv(None, "median")


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("batch_norm", [False, True], ids=["fused", "batch-norm"])
def test_edgeconv_matches_dense(backend, batch_norm):
    @_settings(backend)
    @given(case=graph_cases(min_nodes=1))
    def check(case):
        if batch_norm and case.num_edges < 2:
            return  # batch statistics need two edges
        conv = _randomize(gnn.EdgeConv(IN, OUT, batch_norm=batch_norm, allow_zero_in_degree=True))
        feat, leaves, x_src, x_dst = _inputs(case)
        d = Dense(case)

        def dense():
            diff = x_dst[:, None, :] - x_src[None, :, :]                    # (Nd, Ns, IN)
            per_pair = conv.theta(diff) + conv.phi(x_dst)[:, None, :]
            if not batch_norm:
                return d.masked(per_pair, "max")
            per_edge = conv.bn(per_pair[d.dst, d.src])
            out = torch.full((case.num_dst, OUT), float("-inf"), dtype=F64)
            out = out.scatter_reduce(0, d.dst[:, None].expand(-1, OUT), per_edge, "amax")
            return torch.where(d.has_in[:, None], out, torch.zeros_like(out))
        _compare(backend, case, conv, leaves, lambda g: conv(g, feat), dense)
    check()


# ------------------------------------------------------------------------------------------------
# Readout, import paths
# ------------------------------------------------------------------------------------------------
def test_readout_over_one_graph():
    g = gdsl.graph(([0, 1, 2], [1, 2, 0]))
    g.ndata["h"] = torch.tensor([[1.0, -2.0], [3.0, 4.0], [-5.0, 0.5]])
    g.ndata["w"] = torch.tensor([[2.0], [0.0], [1.0]])
    g.edata["e"] = torch.tensor([[1.0], [2.0], [6.0]])
    torch.testing.assert_close(gdsl.readout_nodes(g, "h"), torch.tensor([[-1.0, 2.5]]))
    torch.testing.assert_close(gdsl.mean_nodes(g, "h"), torch.tensor([[-1.0 / 3, 2.5 / 3]]))
    torch.testing.assert_close(gdsl.max_nodes(g, "h"), torch.tensor([[3.0, 4.0]]))
    torch.testing.assert_close(gdsl.min_nodes(g, "h"), torch.tensor([[-5.0, -2.0]]))
    torch.testing.assert_close(gdsl.sum_nodes(g, "h", weight="w"), torch.tensor([[-3.0, -3.5]]))
    torch.testing.assert_close(gdsl.mean_edges(g, "e"), torch.tensor([[3.0]]))
    torch.testing.assert_close(gdsl.broadcast_nodes(g, torch.tensor([[7.0]])), torch.full((3, 1), 7.0))
    with pytest.raises(gdsl.GdslError, match="unknown readout op"):
        gdsl.readout_nodes(g, "h", op="median")


def test_segment_reduce_empty_segments_are_zero_and_gradients_flow():
    x = torch.tensor([[1.0], [-2.0], [3.0]], requires_grad=True)
    counts = torch.tensor([2, 0, 1])
    torch.testing.assert_close(gdsl.segment_reduce(counts, x, "max"), torch.tensor([[1.0], [0.0], [3.0]]))
    torch.testing.assert_close(gdsl.segment_reduce(counts, x, "mean"), torch.tensor([[-0.5], [0.0], [3.0]]))
    gdsl.segment_reduce(counts, x, "sum").sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(3, 1))


def test_dgl_import_paths():
    from gdsl.nn.pytorch import GraphConv
    from gdsl.nn.pytorch.conv import GATConv
    assert GraphConv is gnn.GraphConv and GATConv is gnn.GATConv


# ------------------------------------------------------------------------------------------------
# Fusion: the attention layers run as one kernel per direction, with no per-edge feature tensor
# ------------------------------------------------------------------------------------------------
class _LargestTensor:
    """The largest tensor any torch op creates while active (autograd's backward included)."""

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        owner = self
        self.numel, self.what = 0, ""

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in out if isinstance(out, (tuple, list)) else (out,):
                    if isinstance(t, torch.Tensor) and t.numel() > owner.numel:
                        owner.numel, owner.what = t.numel(), f"{func} {tuple(t.shape)}"
                return out
        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)


@pytest.mark.parametrize("layer", ["gat", "gatv2"])
def test_attention_layers_are_one_kernel_and_never_build_edge_features(layer):
    torch.manual_seed(0)
    n, e, heads, out = 50, 2000, 4, 8          # E x H x D = 64000 >> N x in, N x H x D
    g = gdsl.graph((torch.randint(0, n, (e,)), torch.randint(0, n, (e,))), num_nodes=n)
    g = gdsl.add_self_loop(g)
    conv = (gnn.GATConv if layer == "gat" else gnn.GATv2Conv)(16, out, heads)
    x = torch.randn(n, 16, requires_grad=True)
    report = gdsl.inspect(g, conv, x)
    assert len(report.steps) == 1
    step = report.steps[0]
    assert len(step.forward_kernels) == 1 and step.forward_kernels[0].plan.pattern == "gather_reduce"
    with gdsl.use_backend("numba"):
        conv(g, x).sum().backward()  # compile outside the measurement
        with _LargestTensor() as forward:
            y = conv(g, x)
        with _LargestTensor() as backward:
            y.pow(2).sum().backward()
    # The forward builds no per-edge tensor at all (attention E x H, messages E x H x D); the
    # backward at most one E x H value (the logits' gradient, shared by its two kernels).
    assert forward.numel < g.num_edges() * heads, forward.what
    assert backward.numel <= g.num_edges() * heads, backward.what
