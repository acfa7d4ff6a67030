"""EdgeConv: the dynamic-graph CNN layer (Wang et al., 2019), DGL's signature and semantics."""
from __future__ import annotations

import torch
from torch import nn

from ... import function as fn
from ..utils import check_zero_in_degree, expand_as_pair


def _edge_max_message(edges):
    # theta(x_i - x_j) + phi(x_i) with theta linear: (Theta x_i + b + phi(x_i)) - Theta x_j
    return {"e": edges.dst["c"] - edges.src["t"]}


class EdgeConv(nn.Module):
    r"""``h_i' = max_{j in N(i)} Theta (x_i - x_j) + Phi x_i`` (both affine).

    Without batch norm the linear maps are applied once per node (``Theta`` is linear, so
    ``Theta (x_i - x_j) = Theta x_i - Theta x_j``) and the edge max is one compiled kernel over
    ``x_i - x_j`` terms: no E x out tensor. With ``batch_norm=True`` the batch statistics are over
    edges, so the per-edge values are built (as DGL does) and normalised before the max.
    Nodes without in-edges give 0 (an error unless ``allow_zero_in_degree=True``).
    """

    def __init__(self, in_feat: int, out_feat: int, batch_norm: bool = False, allow_zero_in_degree: bool = False):
        super().__init__()
        self.batch_norm = batch_norm
        self._allow_zero_in_degree = allow_zero_in_degree
        self.theta = nn.Linear(in_feat, out_feat)
        self.phi = nn.Linear(in_feat, out_feat)
        if batch_norm:
            self.bn = nn.BatchNorm1d(out_feat)

    def set_allow_zero_in_degree(self, set_value: bool) -> None:
        self._allow_zero_in_degree = set_value

    def forward(self, g, feat) -> torch.Tensor:
        with g.local_scope():
            if not self._allow_zero_in_degree:
                check_zero_in_degree(g)
            h_src, h_dst = expand_as_pair(feat, g)
            if not self.batch_norm:
                g.srcdata["t"] = nn.functional.linear(h_src, self.theta.weight)
                g.dstdata["c"] = self.theta(h_dst) + self.phi(h_dst)
                g.update_all(_edge_max_message, fn.max("e", "x"))
                return g.dstdata["x"]
            g.srcdata["x"] = h_src
            g.dstdata["x"] = h_dst
            g.apply_edges(fn.v_sub_u("x", "x", "theta"))
            g.edata["theta"] = self.theta(g.edata["theta"])
            g.dstdata["phi"] = self.phi(h_dst)
            g.apply_edges(fn.e_add_v("theta", "phi", "e"))
            g.edata["e"] = self.bn(g.edata["e"])
            g.update_all(fn.copy_e("e", "e"), fn.max("e", "x"))
            return g.dstdata["x"]
