"""Datasets shipped with gdsl (no downloads): the Planetoid citation graphs Cora and CiteSeer."""

from .planetoid import CiteseerGraphDataset, CoraGraphDataset, load_planetoid

__all__ = ["load_planetoid", "CoraGraphDataset", "CiteseerGraphDataset"]
