"""GINConv: the graph isomorphism network layer (Xu et al., 2019), DGL's signature."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ... import function as fn
from ...errors import GraphError
from ..utils import expand_as_pair

AGGREGATORS = ("sum", "max", "mean")


class GINConv(nn.Module):
    r"""``h_i' = f((1 + eps) h_i + aggregate_{j in N(i)} e_ji h_j)``; ``f`` is ``apply_func``.

    ``eps`` is a learned parameter with ``learn_eps=True``, else a buffer. The aggregation is one
    compiled kernel (``copy_u`` or ``u_mul_e`` with ``edge_weight``, then sum, max or mean).
    """

    def __init__(self, apply_func: Callable | None = None, aggregator_type: str = "sum",
                 init_eps: float = 0.0, learn_eps: bool = False, activation: Callable | None = None):
        super().__init__()
        if aggregator_type not in AGGREGATORS:
            raise KeyError(f"Aggregator type {aggregator_type} not recognized.")
        self.apply_func = apply_func
        self._aggregator_type = aggregator_type
        self.activation = activation
        if learn_eps:
            self.eps = nn.Parameter(torch.tensor([float(init_eps)]))
        else:
            self.register_buffer("eps", torch.tensor([float(init_eps)]))

    def forward(self, graph, feat, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        reducer = getattr(fn, self._aggregator_type)
        with graph.local_scope():
            message = fn.copy_u("h", "m")
            if edge_weight is not None:
                if edge_weight.shape[0] != graph.num_edges():
                    raise GraphError(f"edge_weight has {edge_weight.shape[0]} rows but the graph has "
                                     f"{graph.num_edges()} edges")
                graph.edata["_edge_weight"] = edge_weight
                message = fn.u_mul_e("h", "_edge_weight", "m")
            feat_src, feat_dst = expand_as_pair(feat, graph)
            graph.srcdata["h"] = feat_src
            graph.update_all(message, reducer("m", "neigh"))
            rst = (1 + self.eps) * feat_dst + graph.dstdata["neigh"]
            if self.apply_func is not None:
                rst = self.apply_func(rst)
            if self.activation is not None:
                rst = self.activation(rst)
            return rst
