"""``dgl.nn.pytorch``'s path: the same layers as :mod:`gdsl.nn`."""
from ..conv import EdgeConv, GATConv, GATv2Conv, GINConv, GraphConv, SAGEConv
from ..utils import expand_as_pair

__all__ = ["GraphConv", "GATConv", "GATv2Conv", "SAGEConv", "GINConv", "EdgeConv", "expand_as_pair"]
