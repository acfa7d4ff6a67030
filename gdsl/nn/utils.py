"""What every graph layer does with its inputs: split (source, destination) features and check
degrees, as DGL's layers do, so that ported models see the same behaviour and errors."""
from __future__ import annotations

from typing import Any

import torch

from ..errors import GraphError

ZERO_IN_DEGREE_MESSAGE = (
    "There are 0-in-degree nodes in the graph, output for those nodes will be invalid. This is "
    "harmful for some applications, causing silent performance regression. Adding self-loop on the "
    "input graph by calling `g = gdsl.add_self_loop(g)` will resolve the issue. Setting "
    "``allow_zero_in_degree`` to be `True` when constructing this module will suppress the check "
    "and let the code run.")


def expand_as_pair(input_: Any, graph: Any = None) -> tuple[Any, Any]:
    """``(src, dst)`` from a pair, or from one value used on both sides.

    For a block (a bipartite mini-batch graph whose destination nodes are the first source nodes,
    as DGL's samplers build them), the destination features of a single tensor are its first
    ``num_dst_nodes`` rows. For sizes (``in_feats``), an int stands for both sides.
    """
    if isinstance(input_, tuple):
        return input_
    if graph is not None and graph.is_block:
        if isinstance(input_, dict):
            return input_, {k: v[:graph.number_of_dst_nodes(k)] for k, v in input_.items()}
        return input_, input_[:graph.number_of_dst_nodes()]
    return input_, input_


def check_zero_in_degree(graph: Any) -> None:
    """DGL's check for layers whose output is meaningless on nodes without in-edges."""
    if graph.num_dst_nodes() and bool((graph.in_degrees() == 0).any()):
        raise GraphError(ZERO_IN_DEGREE_MESSAGE)


def check_rows(name: str, tensor: torch.Tensor, rows: int, what: str) -> None:
    """A clear error for a feature with the wrong number of rows (instead of a shape error deep
    inside a kernel)."""
    if tensor.shape[0] != rows:
        raise GraphError(f"{name} has {tensor.shape[0]} rows but the graph has {rows} {what}")
