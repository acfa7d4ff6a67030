"""``dgl.nn.pytorch.conv``'s path: the same layers as :mod:`gdsl.nn.conv`."""
from ..conv import EdgeConv, GATConv, GATv2Conv, GINConv, GraphConv, SAGEConv

__all__ = ["GraphConv", "GATConv", "GATv2Conv", "SAGEConv", "GINConv", "EdgeConv"]
