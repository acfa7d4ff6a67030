"""SAGEConv: GraphSAGE (Hamilton et al., 2017), DGL's signature and semantics."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ... import function as fn
from ...backend import use_backend
from ...errors import GdslError, GraphError
from ..utils import expand_as_pair

AGGREGATORS = ("mean", "gcn", "pool", "lstm")


class SAGEConv(nn.Module):
    r"""``h_i' = W_self h_i + W_neigh aggregate_{j in N(i)} h_j (+ b)``.

    ``aggregator_type``: ``'mean'``; ``'gcn'`` (the node itself counted among its neighbours,
    ``(sum_j h_j + h_i) / (deg_i + 1)``, no self weight); ``'pool'`` (``max_j relu(W_pool h_j + b)``);
    ``'lstm'`` (an LSTM over the in-edges in edge-id order, run per degree bucket in torch: not a
    compiled kernel). ``mean`` and ``gcn`` project before aggregating when that narrows the
    features. Nodes without in-edges aggregate to 0, as in DGL.
    """

    def __init__(self, in_feats, out_feats: int, aggregator_type: str, feat_drop: float = 0.0,
                 bias: bool = True, norm: Callable | None = None, activation: Callable | None = None):
        super().__init__()
        if aggregator_type not in AGGREGATORS:
            raise KeyError(f"Invalid aggregator_type. Must be one of {set(AGGREGATORS)}. "
                           f"But got {aggregator_type!r} instead.")
        self._in_src_feats, self._in_dst_feats = expand_as_pair(in_feats)
        self._out_feats = out_feats
        self._aggre_type = aggregator_type
        self.norm = norm
        self.feat_drop = nn.Dropout(feat_drop)
        self.activation = activation
        if aggregator_type == "pool":
            self.fc_pool = nn.Linear(self._in_src_feats, self._in_src_feats)
        if aggregator_type == "lstm":
            self.lstm = nn.LSTM(self._in_src_feats, self._in_src_feats, batch_first=True)
        self.fc_neigh = nn.Linear(self._in_src_feats, out_feats, bias=False)
        # As DGL 2.x: the bias belongs to fc_self, or is a separate parameter for 'gcn' (no fc_self).
        if aggregator_type != "gcn":
            self.fc_self = nn.Linear(self._in_dst_feats, out_feats, bias=bias)
        elif bias:
            self.bias = nn.Parameter(torch.zeros(out_feats))
        else:
            self.register_buffer("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform weights with the ReLU gain; ``fc_self``'s bias keeps nn.Linear's
        initialisation (as DGL)."""
        gain = nn.init.calculate_gain("relu")
        if self._aggre_type == "pool":
            nn.init.xavier_uniform_(self.fc_pool.weight, gain=gain)
        if self._aggre_type == "lstm":
            self.lstm.reset_parameters()
        if self._aggre_type != "gcn":
            nn.init.xavier_uniform_(self.fc_self.weight, gain=gain)
        nn.init.xavier_uniform_(self.fc_neigh.weight, gain=gain)

    def forward(self, graph, feat, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        with graph.local_scope():
            if isinstance(feat, tuple):
                feat_src, feat_dst = self.feat_drop(feat[0]), self.feat_drop(feat[1])
            else:
                feat_src = feat_dst = self.feat_drop(feat)
                if graph.is_block:
                    feat_dst = feat_src[:graph.number_of_dst_nodes()]
            message = fn.copy_u("h", "m")
            if edge_weight is not None:
                if edge_weight.shape[0] != graph.num_edges():
                    raise GraphError(f"edge_weight has {edge_weight.shape[0]} rows but the graph has "
                                     f"{graph.num_edges()} edges")
                graph.edata["_edge_weight"] = edge_weight
                message = fn.u_mul_e("h", "_edge_weight", "m")
            h_self = feat_dst
            lin_before_mp = self._in_src_feats > self._out_feats
            if self._aggre_type == "mean":
                graph.srcdata["h"] = self.fc_neigh(feat_src) if lin_before_mp else feat_src
                graph.update_all(message, fn.mean("m", "neigh"))
                h_neigh = graph.dstdata["neigh"]
                if not lin_before_mp:
                    if h_neigh.dim() == 2 and h_self.dim() == 2:
                        # fc_self(h) + fc_neigh(n) as one addmm: no separate N x out sum
                        rst = torch.addmm(self.fc_self(h_self), h_neigh, self.fc_neigh.weight.t())
                        return self._finish(rst)
                    h_neigh = self.fc_neigh(h_neigh)
            elif self._aggre_type == "gcn":
                if isinstance(feat, tuple) and feat[0].shape[1:] != feat[1].shape[1:]:
                    raise GdslError(f"the 'gcn' aggregator needs source and destination features of "
                                    f"one shape; got {tuple(feat[0].shape)} and {tuple(feat[1].shape)}")
                src_h = self.fc_neigh(feat_src) if lin_before_mp else feat_src
                graph.srcdata["h"] = src_h
                if isinstance(feat, tuple):
                    dst_h = self.fc_neigh(feat_dst) if lin_before_mp else feat_dst
                else:
                    dst_h = src_h[:graph.number_of_dst_nodes()] if graph.is_block else src_h
                graph.update_all(message, fn.sum("m", "neigh"))
                degs = graph.in_degrees().to(dst_h)
                h_neigh = (graph.dstdata["neigh"] + dst_h) / (degs.unsqueeze(-1) + 1)
                if not lin_before_mp:
                    h_neigh = self.fc_neigh(h_neigh)
            elif self._aggre_type == "pool":
                graph.srcdata["h"] = F.relu(self.fc_pool(feat_src))
                graph.update_all(message, fn.max("m", "neigh"))
                h_neigh = self.fc_neigh(graph.dstdata["neigh"])
            else:
                graph.srcdata["h"] = feat_src
                h_neigh = self.fc_neigh(self._lstm_aggregate(graph, message))
            if self._aggre_type == "gcn":
                rst = h_neigh if self.bias is None else h_neigh + self.bias
            else:
                rst = self.fc_self(h_self) + h_neigh
            return self._finish(rst)

    def _finish(self, rst: torch.Tensor) -> torch.Tensor:
        if self.activation is not None:
            rst = self.activation(rst)
        if self.norm is not None:
            rst = self.norm(rst)
        return rst

    def _lstm_aggregate(self, graph, message) -> torch.Tensor:
        """The LSTM's final hidden state over each node's messages (zero initial state); 0 for
        nodes without in-edges. An LSTM is sequential over the mailbox, so this runs in torch on
        the reference executor's degree buckets."""
        def reduce_lstm(nodes):
            m = nodes.mailbox["m"]
            zeros = m.new_zeros((1, m.shape[0], self._in_src_feats))
            _, (h, _) = self.lstm(m, (zeros, zeros))
            return {"neigh": h.squeeze(0)}
        src_h = graph.srcdata["h"]
        # without edges the reduce function never runs: every node aggregates to 0
        graph.dstdata["neigh"] = src_h.new_zeros((graph.num_dst_nodes(), self._in_src_feats))
        with use_backend("reference"):
            graph.update_all(message, reduce_lstm)
        return graph.dstdata["neigh"]

    def extra_repr(self) -> str:
        return f"in={self._in_src_feats}, out={self._out_feats}, aggregator={self._aggre_type}"
