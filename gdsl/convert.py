"""Graph construction from edge lists, scipy matrices, PyG edge indices and networkx graphs."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import torch

from .base import as_id_tensor, check_range
from .errors import GraphError
from .frame import Frame
from .graph import DEFAULT_ETYPE, DEFAULT_NTYPE, Graph
from .relation import Relation


def _edge_tensors(data: Any, idtype: torch.dtype | None, device: Any, what: str):
    """Validate a ``(src, dst)`` pair and return id tensors of one dtype on one device."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise GraphError(f"{what}: expected a (src, dst) pair of id sequences or a scipy sparse "
                         f"matrix, got {type(data).__name__}")
    src = as_id_tensor(data[0], f"{what} src")
    dst = as_id_tensor(data[1], f"{what} dst")
    if src.numel() != dst.numel():
        raise GraphError(f"{what}: src has {src.numel()} ids but dst has {dst.numel()}; "
                         f"each edge needs one of each")
    if src.device != dst.device:
        raise GraphError(f"{what}: src is on {src.device} but dst is on {dst.device}")
    if idtype is None:
        both_int32 = src.dtype == torch.int32 and dst.dtype == torch.int32
        idtype = torch.int32 if both_int32 else torch.int64
    if idtype not in (torch.int32, torch.int64):
        raise GraphError(f"{what}: idtype must be torch.int32 or torch.int64, got {idtype}")
    device = src.device if device is None else torch.device(device)
    if idtype == torch.int32:
        for ids, end in ((src, "src"), (dst, "dst")):
            if ids.numel() and (int(ids.max()) >= 2**31 or int(ids.min()) < -2**31):
                raise GraphError(f"{what}: {end} id {int(ids.max())} does not fit in int32; use "
                                 f"idtype=torch.int64")
    return src.to(device=device, dtype=idtype), dst.to(device=device, dtype=idtype)


def _num_from(ids: torch.Tensor, given: int | None, what: str) -> int:
    n = (int(ids.max()) + 1 if ids.numel() else 0) if given is None else int(given)
    if n < 0:
        raise GraphError(f"{what}: the number of nodes must be >= 0, got {given}")
    if ids.dtype == torch.int32 and n > 2**31 - 1:
        raise GraphError(f"{what}: {n} nodes do not fit int32 ids; use idtype=torch.int64")
    return n


def _make(relations: dict, src_counts: Mapping[str, int], dst_counts: Mapping[str, int] | None,
          device: torch.device) -> Graph:
    src_frames = {t: Frame(n, device, "node" if dst_counts is None else "source node")
                  for t, n in src_counts.items()}
    dst_frames = src_frames if dst_counts is None else \
        {t: Frame(n, device, "destination node") for t, n in dst_counts.items()}
    edge_frames = {c: Frame(r.num_edges, device, "edge") for c, r in relations.items()}
    return Graph(relations, src_frames, dst_frames, edge_frames, is_block=dst_counts is not None)


def graph(data: Any, num_nodes: int | None = None, idtype: torch.dtype | None = None,
          device: Any = None, *, row_sorted: bool = False, col_sorted: bool = False) -> Graph:
    """Build a homogeneous graph from ``(src, dst)`` ids or a square scipy sparse matrix.

    Edge ``i`` goes from ``src[i]`` to ``dst[i]``. ``num_nodes`` defaults to the largest id + 1.
    ``row_sorted``/``col_sorted`` are accepted for DGL compatibility; gdsl sorts lazily anyway.
    """
    if _is_scipy(data):
        if data.shape[0] != data.shape[1]:
            raise GraphError(f"graph: a homogeneous graph needs a square matrix, got shape {data.shape}; "
                             f"use gdsl.bipartite for rectangular ones")
        coo = data.tocoo()
        data = (coo.row.astype(np.int64), coo.col.astype(np.int64))
        num_nodes = coo.shape[0] if num_nodes is None else num_nodes
    src, dst = _edge_tensors(data, idtype, device, "graph")
    n = _num_from(torch.cat([src, dst]), num_nodes, "graph")
    check_range(src, n, "graph: source node")
    check_range(dst, n, "graph: destination node")
    rel = Relation(src, dst, n, n)
    return _make({(DEFAULT_NTYPE, DEFAULT_ETYPE, DEFAULT_NTYPE): rel}, {DEFAULT_NTYPE: n}, None, src.device)


def bipartite(data: Any, num_src: int | None = None, num_dst: int | None = None,
              idtype: torch.dtype | None = None, device: Any = None) -> Graph:
    """Build a block: edges from ``num_src`` source nodes to a separate set of ``num_dst``
    destination nodes (``g.srcdata`` / ``g.dstdata``), as DGL's ``create_block``."""
    if _is_scipy(data):
        coo = data.tocoo()
        num_src = coo.shape[0] if num_src is None else num_src
        num_dst = coo.shape[1] if num_dst is None else num_dst
        data = (coo.row.astype(np.int64), coo.col.astype(np.int64))
    src, dst = _edge_tensors(data, idtype, device, "bipartite")
    ns = _num_from(src, num_src, "bipartite (sources)")
    nd = _num_from(dst, num_dst, "bipartite (destinations)")
    check_range(src, ns, "bipartite: source node")
    check_range(dst, nd, "bipartite: destination node")
    rel = Relation(src, dst, ns, nd)
    return _make({(DEFAULT_NTYPE, DEFAULT_ETYPE, DEFAULT_NTYPE): rel}, {DEFAULT_NTYPE: ns},
                 {DEFAULT_NTYPE: nd}, src.device)


def create_block(data: Any, num_src_nodes: int | None = None, num_dst_nodes: int | None = None,
                 idtype: torch.dtype | None = None, device: Any = None) -> Graph:
    """DGL's name for :func:`bipartite` (homogeneous blocks)."""
    return bipartite(data, num_src_nodes, num_dst_nodes, idtype, device)


def heterograph(data_dict: Mapping[tuple[str, str, str], Any],
                num_nodes_dict: Mapping[str, int] | None = None,
                idtype: torch.dtype | None = None, device: Any = None) -> Graph:
    """A graph with several node and edge types: ``{(srctype, etype, dsttype): (src, dst)}``."""
    if not data_dict:
        raise GraphError("heterograph: data_dict must name at least one edge type")
    pairs = {}
    for key, data in data_dict.items():
        if not (isinstance(key, tuple) and len(key) == 3 and all(isinstance(k, str) for k in key)):
            raise GraphError(f"heterograph: keys must be (srctype, etype, dsttype) string triples, got {key!r}")
        pairs[key] = _edge_tensors(data, idtype, device, f"heterograph {key}")
    dtypes = {s.dtype for s, _ in pairs.values()}
    itype = idtype or (torch.int32 if dtypes == {torch.int32} else torch.int64)
    counts: dict[str, int] = dict(num_nodes_dict or {})
    ntypes = sorted({k[0] for k in pairs} | {k[2] for k in pairs} | set(counts))
    for nt in ntypes:
        if nt not in counts:
            ids = [s for k, (s, _) in pairs.items() if k[0] == nt] + [d for k, (_, d) in pairs.items() if k[2] == nt]
            counts[nt] = max((int(t.max()) + 1 for t in ids if t.numel()), default=0)
    relations = {}
    for (st, et, dt), (s, d) in sorted(pairs.items()):
        check_range(s, counts[st], f"heterograph {(st, et, dt)}: source node")
        check_range(d, counts[dt], f"heterograph {(st, et, dt)}: destination node")
        relations[(st, et, dt)] = Relation(s.to(itype), d.to(itype), counts[st], counts[dt])
    dev = next(iter(relations.values())).device
    return _make(relations, {nt: counts[nt] for nt in ntypes}, None, dev)


def from_edge_index(edge_index: Any, num_nodes: int | None = None) -> Graph:
    """Build a graph from PyG's ``2 x E`` ``edge_index`` (row 0: sources, row 1: targets)."""
    ei = torch.as_tensor(edge_index) if not isinstance(edge_index, torch.Tensor) else edge_index
    if ei.dim() != 2 or ei.shape[0] != 2:
        raise GraphError(f"from_edge_index: edge_index must have shape (2, E), got {tuple(ei.shape)}")
    return graph((ei[0], ei[1]), num_nodes=num_nodes)


def from_scipy(sp_mat: Any, eweight_name: str | None = None, idtype: torch.dtype | None = None,
               device: Any = None) -> Graph:
    """A graph with one edge per stored entry; ``eweight_name`` keeps the values as edge data."""
    coo = sp_mat.tocoo()
    g = graph(coo, idtype=idtype, device=device)
    if eweight_name is not None:
        g.edata[eweight_name] = torch.as_tensor(coo.data).to(g.device)
    return g


def from_networkx(nx_graph: Any, node_attrs: Iterable[str] | None = None,
                  edge_attrs: Iterable[str] | None = None, edge_id_attr_name: str | None = None,
                  idtype: torch.dtype | None = None, device: Any = None) -> Graph:
    """Build a graph from networkx. Nodes are relabelled 0..N-1 in ``nx_graph.nodes`` order;
    an undirected graph gives both directions of every edge (edge ``2i`` and ``2i+1``), as DGL."""
    import networkx as nx  # optional dependency, only for this converter

    if not nx_graph.is_directed():
        nx_graph = nx_graph.to_directed()  # both directions; a self-loop stays one edge
    nx_graph = nx.convert_node_labels_to_integers(nx_graph, ordering="sorted")
    multi = nx_graph.is_multigraph()
    edge_iter = nx_graph.edges(keys=True, data=True) if multi else nx_graph.edges(data=True)
    src, dst, attrs = [], [], []
    for e in edge_iter:
        src.append(e[0])
        dst.append(e[1])
        attrs.append(e[3] if multi else e[2])
    if edge_id_attr_name is not None:
        order = np.argsort([a[edge_id_attr_name] for a in attrs], kind="stable")
        src, dst, attrs = [src[i] for i in order], [dst[i] for i in order], [attrs[i] for i in order]
    index = range(nx_graph.number_of_nodes())
    g = graph((torch.tensor(src, dtype=torch.int64), torch.tensor(dst, dtype=torch.int64)),
              num_nodes=len(index), idtype=idtype, device=device)
    for name in node_attrs or ():
        values = [nx_graph.nodes[n][name] for n in index]
        g.ndata[name] = _stack(values, name, "node").to(g.device)
    for name in edge_attrs or ():
        g.edata[name] = _stack([a[name] for a in attrs], name, "edge").to(g.device)
    return g


def _stack(values: list, name: str, kind: str) -> torch.Tensor:
    try:
        if values and isinstance(values[0], torch.Tensor):
            return torch.stack(values)
        return torch.as_tensor(np.asarray(values))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise GraphError(f"from_networkx: {kind} attribute {name!r} is not a stackable number/tensor") from exc


def _is_scipy(data: Any) -> bool:
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover
        return False
    return sp.issparse(data)
