"""Hypothesis strategies for graphs, shared by every test module.

The cases are chosen to hit the edge cases kernels get wrong: empty graphs, isolated and
zero-in-degree nodes, self-loops, multi-edges, one hub node of high in-degree, bipartite blocks
whose source and destination sets differ, and both id dtypes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import strategies as st

import gdsl


@dataclass
class GraphCase:
    """A drawn graph in plain numpy form, so that oracles never depend on gdsl."""

    src: np.ndarray  # int64, one entry per edge, in edge-id order
    dst: np.ndarray
    num_src: int
    num_dst: int
    idtype: torch.dtype
    is_block: bool

    @property
    def num_edges(self) -> int:
        return len(self.src)

    def build(self) -> gdsl.Graph:
        src = torch.as_tensor(self.src, dtype=self.idtype)
        dst = torch.as_tensor(self.dst, dtype=self.idtype)
        if self.is_block:
            return gdsl.bipartite((src, dst), self.num_src, self.num_dst)
        return gdsl.graph((src, dst), num_nodes=self.num_src)

    def __repr__(self) -> str:  # short, so that hypothesis' falsifying example is readable
        kind = "block" if self.is_block else "graph"
        return (f"GraphCase({kind}, num_src={self.num_src}, num_dst={self.num_dst}, "
                f"idtype={self.idtype}, src={self.src.tolist()}, dst={self.dst.tolist()})")


@st.composite
def graph_cases(draw, max_nodes: int = 10, max_edges: int = 30, blocks: bool | None = None,
                hub: bool | None = None, idtypes=(torch.int32, torch.int64),
                min_nodes: int = 0) -> GraphCase:
    """Draw a graph (or, with ``blocks=True``/``None``, possibly a bipartite block).

    ``hub=None`` lets hypothesis decide whether one destination gets many in-edges (20 to 60).
    """
    is_block = draw(st.booleans()) if blocks is None else blocks
    idtype = draw(st.sampled_from(list(idtypes)))
    num_src = draw(st.integers(min_nodes, max_nodes))
    num_dst = draw(st.integers(min_nodes, max_nodes)) if is_block else num_src
    pairs: list[tuple[int, int]] = []
    if num_src > 0 and num_dst > 0:
        # Edges only among a prefix of the nodes, so the rest are isolated.
        active_src = draw(st.integers(1, num_src))
        active_dst = draw(st.integers(1, num_dst))
        n = draw(st.integers(0, max_edges))
        pairs = draw(st.lists(st.tuples(st.integers(0, active_src - 1), st.integers(0, active_dst - 1)),
                              min_size=n, max_size=n))
        if not is_block and draw(st.booleans()):  # explicit self-loops
            loops = draw(st.lists(st.integers(0, num_src - 1), max_size=3))
            pairs += [(v, v) for v in loops]
        if pairs and draw(st.booleans()):  # multi-edges: repeat some edges
            repeats = draw(st.lists(st.sampled_from(pairs), min_size=1, max_size=4))
            pairs += repeats
        with_hub = draw(st.booleans()) if hub is None else hub
        if with_hub:
            hub_node = draw(st.integers(0, num_dst - 1))
            degree = draw(st.integers(20, 60))
            seed = draw(st.integers(0, 2**16))
            rng = np.random.default_rng(seed)
            pairs += [(int(u), hub_node) for u in rng.integers(0, num_src, degree)]
        order = draw(st.permutations(range(len(pairs))))
        pairs = [pairs[i] for i in order]
    src = np.array([p[0] for p in pairs], dtype=np.int64)
    dst = np.array([p[1] for p in pairs], dtype=np.int64)
    return GraphCase(src, dst, num_src, num_dst, idtype, is_block)


def features(case: GraphCase, shape: tuple[int, ...], where: str, seed: int = 0,
             dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Random features for the node set (``'src'``, ``'dst'``) or edge set (``'edge'``) of a case."""
    rows = {"src": case.num_src, "dst": case.num_dst, "edge": case.num_edges}[where]
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((rows, *shape), generator=gen, dtype=dtype)
