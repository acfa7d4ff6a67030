"""GraphConv: the graph convolution of Kipf & Welling (2017), DGL's signature and semantics."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ... import function as fn
from ...errors import GdslError, GraphError
from ..utils import check_zero_in_degree, expand_as_pair, node_norms

NORMS = ("none", "both", "right", "left")


class GraphConv(nn.Module):
    r"""``h_i' = \sigma(b + \sum_{j \in N(i)} \frac{e_{ji}}{c_{ji}} h_j W)``.

    ``norm``: ``'both'`` divides each message by ``sqrt(out_deg(j) * in_deg(i))`` (degrees clamped
    at 1), ``'right'`` averages over in-edges, ``'left'`` divides by the source's out-degree,
    ``'none'`` sums. The product with ``W`` runs on the narrower side of the aggregation (before it
    when ``in_feats > out_feats``). The aggregation is one compiled gather-reduce kernel
    (``copy_u`` + ``sum``, or ``u_mul_e`` + ``sum`` with ``edge_weight``).

    ``forward(graph, feat, weight=None, edge_weight=None)``: ``feat`` is a tensor, or a pair
    ``(src, dst)`` for a bipartite block; ``weight`` replaces the module's own (which must then be
    built with ``weight=False``). Nodes without in-edges raise an error unless
    ``allow_zero_in_degree=True`` (their output is then the bias).
    """

    def __init__(self, in_feats: int, out_feats: int, norm: str = "both", weight: bool = True,
                 bias: bool = True, activation: Callable | None = None, allow_zero_in_degree: bool = False):
        super().__init__()
        if norm not in NORMS:
            raise GdslError('Invalid norm value. Must be either "none", "both", "right" or "left".'
                            f' But got "{norm}".')
        self._in_feats, self._out_feats = in_feats, out_feats
        self._norm = norm
        self._allow_zero_in_degree = allow_zero_in_degree
        if weight:
            self.weight = nn.Parameter(torch.empty(in_feats, out_feats))
        else:
            self.register_parameter("weight", None)
        if bias:
            self.bias = nn.Parameter(torch.empty(out_feats))
        else:
            self.register_parameter("bias", None)
        self._activation = activation
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform weight, zero bias (as DGL)."""
        if self.weight is not None:
            nn.init.xavier_uniform_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def set_allow_zero_in_degree(self, set_value: bool) -> None:
        self._allow_zero_in_degree = set_value

    def forward(self, graph, feat, weight: torch.Tensor | None = None,
                edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        with graph.local_scope():
            if not self._allow_zero_in_degree:
                check_zero_in_degree(graph)
            feat_src, feat_dst = expand_as_pair(feat, graph)
            if edge_weight is not None and edge_weight.shape[0] != graph.num_edges():
                raise GraphError(f"edge_weight has {edge_weight.shape[0]} rows but the graph has "
                                 f"{graph.num_edges()} edges")
            # DGL's order: source norm, (weight,) aggregation, destination norm; an edge weight is
            # read by the aggregation kernel (u_mul_e).
            src_scale, dst_scale = node_norms(graph, self._norm, feat_src.dtype)
            feat_src = _scale_rows(feat_src, src_scale)
            if edge_weight is None:
                message = fn.copy_u("h", "m")
            else:
                graph.edata["_edge_weight"] = edge_weight.unsqueeze(1) if edge_weight.dim() == 1 else edge_weight
                message = fn.u_mul_e("h", "_edge_weight", "m")
            if weight is not None:
                if self.weight is not None:
                    raise GdslError("External weight is provided while at the same time the module "
                                    "has defined its own weight parameter.")
            else:
                weight = self.weight
            if self._in_feats > self._out_feats:
                if weight is not None:  # multiply first: aggregate the narrower features
                    feat_src = _matmul(feat_src, weight)
                graph.srcdata["h"] = feat_src
                graph.update_all(message, fn.sum("m", "h"))
                rst = _scale_rows(graph.dstdata["h"], dst_scale)
            else:
                graph.srcdata["h"] = feat_src
                graph.update_all(message, fn.sum("m", "h"))
                rst = _scale_rows(graph.dstdata["h"], dst_scale)
                if weight is not None and rst.dim() == 2:  # the bias joins the product (addmm)
                    return self._activate(F.linear(rst, _linear_weight(weight), self.bias))
                if weight is not None:
                    rst = _matmul(rst, weight)
            if self.bias is not None:
                rst = rst + self.bias
            return self._activate(rst)

    def _activate(self, rst: torch.Tensor) -> torch.Tensor:
        return rst if self._activation is None else self._activation(rst)

    def extra_repr(self) -> str:
        text = f"in={self._in_feats}, out={self._out_feats}, normalization={self._norm}"
        if self._activation is not None:
            text += f", activation={self._activation}"
        return text


def _scale_rows(x: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """``x`` with row i multiplied by ``scale[i]`` (an (N, 1) factor), any feature shape."""
    if scale is None:
        return x
    return x * (scale if x.dim() == 2 else scale.view(-1, *([1] * (x.dim() - 1))))


def _linear_weight(weight: torch.Tensor) -> torch.Tensor:
    """The ``F.linear`` weight for a weight stored ``(in, out)`` as DGL does.

    ``F.linear(x, w)`` multiplies by ``w.t()``, and torch's matmul backward computes the gradient of
    that right operand as ``x^T g`` when it is row-major and as ``(g^T x)^T`` when it is
    column-major. With MKL on CPU the first is 4-10x slower for 2-15 output columns (100k x 64 to
    8 outputs: 17.5 ms vs 2.8 ms; Cora's 2708 x 1433 to 7: 8.9 vs 1.0 ms) and 10-30% faster from
    16 columns up (bench/RESULTS.md, "Dense products"). So narrow weights are copied to the
    ``(out, in)`` layout (a few KB) and wide ones are used as they are."""
    if 1 < weight.shape[1] < 16:
        return weight.t().contiguous()
    return weight.t()


def _matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight`` for a weight stored ``(in, out)``, with the faster weight gradient."""
    if x.dim() == 2:
        return F.linear(x, _linear_weight(weight))
    return torch.matmul(x, weight)
