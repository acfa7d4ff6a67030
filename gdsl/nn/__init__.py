"""gdsl.nn: DGL's graph layers (``dgl.nn``), on gdsl's compiled message passing.

``import gdsl.nn as dglnn`` (or ``gdsl.nn.pytorch``) gives the same classes, signatures and
defaults as DGL's, so models port by changing the import.
"""
from .conv import EdgeConv, GATConv, GATv2Conv, GINConv, GraphConv, SAGEConv
from .utils import expand_as_pair

__all__ = ["GraphConv", "GATConv", "GATv2Conv", "SAGEConv", "GINConv", "EdgeConv", "expand_as_pair"]
