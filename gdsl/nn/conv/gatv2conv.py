"""GATv2Conv: dynamic graph attention (Brody et al., 2022) on gdsl's fused attention kernel."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ... import function as fn
from ...attention import edge_softmax
from ..utils import check_zero_in_degree, expand_as_pair


class GATv2Conv(nn.Module):
    r"""``e_ij = a . leaky_relu(W_s h_j + W_d h_i)``, ``h_i' = sum_j softmax_j(e_ij) W_s h_j`` per head.

    DGL's signature and semantics; output ``(N, num_heads, out_feats)``. The scores need the sum of
    both projections on every edge; gdsl computes them, the online softmax and the weighted sum in
    one kernel per direction, so no E x H x D tensor exists in the forward or the backward
    (DGL materialises two). ``get_attention=True`` computes the attention with
    :func:`gdsl.edge_softmax` and aggregates separately, returning it too.
    """

    def __init__(self, in_feats, out_feats: int, num_heads: int, feat_drop: float = 0.0,
                 attn_drop: float = 0.0, negative_slope: float = 0.2, residual: bool = False,
                 activation: Callable | None = None, allow_zero_in_degree: bool = False,
                 bias: bool = True, share_weights: bool = False):
        super().__init__()
        self._num_heads = num_heads
        self._in_src_feats, self._in_dst_feats = expand_as_pair(in_feats)
        self._out_feats = out_feats
        self._allow_zero_in_degree = allow_zero_in_degree
        if isinstance(in_feats, tuple):
            self.fc_src = nn.Linear(self._in_src_feats, out_feats * num_heads, bias=bias)
            self.fc_dst = nn.Linear(self._in_dst_feats, out_feats * num_heads, bias=bias)
        else:
            self.fc_src = nn.Linear(self._in_src_feats, out_feats * num_heads, bias=bias)
            if share_weights:
                self.fc_dst = self.fc_src
            else:
                self.fc_dst = nn.Linear(self._in_src_feats, out_feats * num_heads, bias=bias)
        self.attn = nn.Parameter(torch.empty(1, num_heads, out_feats))
        self.feat_drop = nn.Dropout(feat_drop)
        self.attn_drop = nn.Dropout(attn_drop)
        self.negative_slope = negative_slope
        self.leaky_relu = nn.LeakyReLU(negative_slope)
        if residual:
            if self._in_dst_feats != out_feats * num_heads:
                self.res_fc = nn.Linear(self._in_dst_feats, num_heads * out_feats, bias=bias)
            else:
                self.res_fc = nn.Identity()
        else:
            self.register_buffer("res_fc", None)
        self.activation = activation
        self.share_weights = share_weights
        self.bias = bias
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-normal weights with the ReLU gain, zero biases (as DGL)."""
        gain = nn.init.calculate_gain("relu")
        nn.init.xavier_normal_(self.fc_src.weight, gain=gain)
        if self.bias:
            nn.init.constant_(self.fc_src.bias, 0)
        if not self.share_weights:
            nn.init.xavier_normal_(self.fc_dst.weight, gain=gain)
            if self.bias:
                nn.init.constant_(self.fc_dst.bias, 0)
        nn.init.xavier_normal_(self.attn, gain=gain)
        if isinstance(self.res_fc, nn.Linear):
            nn.init.xavier_normal_(self.res_fc.weight, gain=gain)
            if self.res_fc.bias is not None:
                nn.init.constant_(self.res_fc.bias, 0)

    def set_allow_zero_in_degree(self, set_value: bool) -> None:
        self._allow_zero_in_degree = set_value

    def _message(self, edges):
        e = F.leaky_relu(edges.src["el"] + edges.dst["er"], self.negative_slope)
        return {"m": edges.src["el"], "e": (e * self.attn).sum(-1, keepdim=True)}

    def _reduce(self, nodes):
        alpha = torch.softmax(nodes.mailbox["e"], 1)
        return {"ft": (self.attn_drop(alpha) * nodes.mailbox["m"]).sum(1)}

    def forward(self, graph, feat, get_attention: bool = False):
        heads, out = self._num_heads, self._out_feats
        with graph.local_scope():
            if not self._allow_zero_in_degree:
                check_zero_in_degree(graph)
            if isinstance(feat, tuple):
                h_src, h_dst = self.feat_drop(feat[0]), self.feat_drop(feat[1])
                feat_src = self.fc_src(h_src).view(-1, heads, out)
                feat_dst = self.fc_dst(h_dst).view(-1, heads, out)
            else:
                h_src = h_dst = self.feat_drop(feat)
                feat_src = self.fc_src(h_src).view(-1, heads, out)
                feat_dst = feat_src if self.share_weights else self.fc_dst(h_src).view(-1, heads, out)
                if graph.is_block:
                    num_dst = graph.number_of_dst_nodes()
                    feat_dst, h_dst = feat_dst[:num_dst], h_dst[:num_dst]
            graph.srcdata["el"] = feat_src
            graph.dstdata["er"] = feat_dst
            if get_attention:
                graph.apply_edges(fn.u_add_v("el", "er", "e"))
                e = (self.leaky_relu(graph.edata.pop("e")) * self.attn).sum(-1, keepdim=True)
                graph.edata["a"] = self.attn_drop(edge_softmax(graph, e))
                graph.update_all(fn.u_mul_e("el", "a", "m"), fn.sum("m", "ft"))
            else:
                graph.update_all(self._message, self._reduce)
            rst = graph.dstdata["ft"]
            if self.res_fc is not None:
                rst = rst + self.res_fc(h_dst).view(h_dst.shape[0], heads, out)
            if self.activation is not None:
                rst = self.activation(rst)
            if get_attention:
                return rst, graph.edata["a"]
            return rst
