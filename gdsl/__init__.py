"""gdsl: graph deep learning for PyTorch with message passing compiled to fused kernels.

The API follows DGL's, so that DGL code ports by changing the import::

    import gdsl
    import gdsl.function as fn

    g = gdsl.graph(([0, 1, 2], [1, 2, 0]))
    g.ndata["h"] = torch.randn(3, 4)
    g.update_all(fn.copy_u("h", "m"), fn.sum("m", "h_sum"))
"""
from . import function
from .backend import available_backends, current_backend, register_backend, use_backend
from .base import ALL, EID, NID
from .convert import (bipartite, create_block, from_edge_index, from_networkx, from_scipy, graph,
                      heterograph)
from .errors import BackendError, CompileError, DeviceError, FeatureError, GdslError, GraphError
from .graph import Graph
from .relation import Relation
from .transform import (add_self_loop, edge_subgraph, node_subgraph, remove_self_loop, reverse,
                        to_bidirected, to_simple)
from .udf import EdgeBatch, NodeBatch
from . import message_passing as _message_passing  # noqa: F401  (registers the reference back end)
from . import compiled as _compiled  # noqa: F401  (registers the compiled back ends)
from . import data
from .dsl import apply, message, reduce
from .compiled import generated_files
from .inspection import inspect
from .autotuning import autotune
from .kernels.schedules import NumbaSchedule, TritonConfig
from .attention import edge_softmax
from .kernels.cache import cache_dir
from .kernels.buffers import empty_cache
from .readout import (broadcast_edges, broadcast_nodes, max_edges, max_nodes, mean_edges, mean_nodes,
                      min_edges, min_nodes, readout_edges, readout_nodes, segment_reduce, sum_edges,
                      sum_nodes)
from . import nn

DGLGraph = Graph  # DGL's class name, for isinstance checks in ported code
DGLError = GdslError  # DGL's error class, for except clauses in ported code

__version__ = "0.1.0"

__all__ = [
    "ALL", "EID", "NID", "Graph", "DGLGraph", "Relation", "EdgeBatch", "NodeBatch",
    "graph", "bipartite", "create_block", "heterograph", "from_edge_index", "from_networkx",
    "from_scipy", "reverse", "add_self_loop", "remove_self_loop", "to_simple", "to_bidirected",
    "node_subgraph", "edge_subgraph", "use_backend", "available_backends", "current_backend",
    "register_backend", "GdslError", "GraphError", "FeatureError", "DeviceError", "BackendError",
    "CompileError", "function", "data", "message", "reduce", "apply",
    "generated_files", "cache_dir", "empty_cache", "edge_softmax", "inspect", "autotune", "NumbaSchedule", "TritonConfig",
    "nn", "DGLError",
    "readout_nodes", "readout_edges", "sum_nodes", "mean_nodes", "max_nodes", "min_nodes",
    "sum_edges", "mean_edges", "max_edges", "min_edges", "broadcast_nodes", "broadcast_edges",
    "segment_reduce",
]
