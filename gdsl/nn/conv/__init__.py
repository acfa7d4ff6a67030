"""Graph convolution layers, each written with gdsl built-ins or UDFs so it runs on generated kernels."""
from .edgeconv import EdgeConv
from .gatconv import GATConv
from .gatv2conv import GATv2Conv
from .ginconv import GINConv
from .graphconv import GraphConv
from .sageconv import SAGEConv

__all__ = ["GraphConv", "GATConv", "GATv2Conv", "SAGEConv", "GINConv", "EdgeConv"]
