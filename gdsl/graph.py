"""The one graph class: typed node sets, each with a frame, and a relation per edge type.

A homogeneous graph is the case of one node type and one edge type; a block is the case whose
source and destination node sets differ; heterographs have several types of each. All queries
and message passing go through ``_rel(etype)`` and the frames of the relation's end types, so
every graph kind shares one code path.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, MutableMapping

import numpy as np
import torch

from .base import ALL, as_id_tensor, check_range, is_all
from .errors import FeatureError, GraphError
from .frame import Frame
from .relation import FORMATS, Compressed, Relation

CanonicalEtype = tuple[str, str, str]

DEFAULT_NTYPE = "_N"
DEFAULT_ETYPE = "_E"


class Graph:
    """A graph: node sets with frames, and one :class:`Relation` per canonical edge type.

    Build graphs with :func:`gdsl.graph`, :func:`gdsl.bipartite` and friends; the constructor is
    internal. ``src_frames`` and ``dst_frames`` are the same dict unless the graph is a block.
    """

    def __init__(self, relations: dict[CanonicalEtype, Relation], src_frames: dict[str, Frame],
                 dst_frames: dict[str, Frame], edge_frames: dict[CanonicalEtype, Frame],
                 is_block: bool):
        self._relations = relations
        self._src_frames = src_frames
        self._dst_frames = dst_frames
        self._edge_frames = edge_frames
        self._is_block = is_block

    # ------------------------------------------------------------------------------------------
    # Types
    # ------------------------------------------------------------------------------------------
    @property
    def is_block(self) -> bool:
        return self._is_block

    @property
    def is_homogeneous(self) -> bool:
        return not self._is_block and len(self._src_frames) == 1 and len(self._relations) == 1

    @property
    def srctypes(self) -> list[str]:
        return list(self._src_frames)

    @property
    def dsttypes(self) -> list[str]:
        return list(self._dst_frames)

    @property
    def ntypes(self) -> list[str]:
        if self._is_block:
            return sorted(set(self._src_frames) | set(self._dst_frames))
        return list(self._src_frames)

    @property
    def canonical_etypes(self) -> list[CanonicalEtype]:
        return list(self._relations)

    @property
    def etypes(self) -> list[str]:
        return [c[1] for c in self._relations]

    def _etype(self, etype: str | CanonicalEtype | None) -> CanonicalEtype:
        if etype is None:
            if len(self._relations) != 1:
                raise GraphError(f"the graph has several edge types {self.etypes}: pass etype=")
            return next(iter(self._relations))
        if isinstance(etype, tuple):
            if etype not in self._relations:
                raise GraphError(f"no edge type {etype}; the edge types are {self.canonical_etypes}")
            return etype
        matches = [c for c in self._relations if c[1] == etype]
        if len(matches) != 1:
            problem = "no" if not matches else "an ambiguous"
            raise GraphError(f"{problem} edge type {etype!r}; the edge types are {self.canonical_etypes}")
        return matches[0]

    def _rel(self, etype: str | CanonicalEtype | None = None) -> Relation:
        return self._relations[self._etype(etype)]

    def _single_ntype(self, frames: dict[str, Frame], ntype: str | None, side: str) -> str:
        if ntype is None:
            if len(frames) != 1:
                raise GraphError(f"the graph has several {side}node types {list(frames)}: pass ntype=")
            return next(iter(frames))
        if ntype not in frames:
            raise GraphError(f"no {side}node type {ntype!r}; the {side}node types are {list(frames)}")
        return ntype

    def _node_frame(self, ntype: str | None) -> Frame:
        """The frame of a node type of a graph with a single node set per type (not a block)."""
        if self._is_block:
            raise GraphError("a block has separate source and destination node sets: use "
                             "g.srcdata / g.dstdata, g.num_src_nodes() / g.num_dst_nodes()")
        return self._src_frames[self._single_ntype(self._src_frames, ntype, "")]

    def _src_frame(self, etype=None) -> Frame:
        return self._src_frames[self._etype(etype)[0]]

    def _dst_frame(self, etype=None) -> Frame:
        return self._dst_frames[self._etype(etype)[2]]

    # ------------------------------------------------------------------------------------------
    # Sizes, device, formats
    # ------------------------------------------------------------------------------------------
    def num_nodes(self, ntype: str | None = None) -> int:
        if self._is_block and ntype is None:
            # As DGL: a block's node count is the sum over its source and destination sets.
            return sum(f.num_rows for f in self._src_frames.values()) + \
                sum(f.num_rows for f in self._dst_frames.values())
        if ntype is None and len(self._src_frames) > 1:
            return sum(f.num_rows for f in self._src_frames.values())
        return self._node_frame(ntype).num_rows

    number_of_nodes = num_nodes

    def num_src_nodes(self, ntype: str | None = None) -> int:
        if ntype is None and len(self._src_frames) > 1:
            return sum(f.num_rows for f in self._src_frames.values())
        return self._src_frames[self._single_ntype(self._src_frames, ntype, "source ")].num_rows

    def num_dst_nodes(self, ntype: str | None = None) -> int:
        if ntype is None and len(self._dst_frames) > 1:
            return sum(f.num_rows for f in self._dst_frames.values())
        return self._dst_frames[self._single_ntype(self._dst_frames, ntype, "destination ")].num_rows

    def num_edges(self, etype: str | CanonicalEtype | None = None) -> int:
        if etype is None and len(self._relations) > 1:
            return sum(r.num_edges for r in self._relations.values())
        return self._rel(etype).num_edges

    number_of_edges = num_edges

    @property
    def idtype(self) -> torch.dtype:
        return next(iter(self._relations.values())).idtype

    @property
    def device(self) -> torch.device:
        return next(iter(self._relations.values())).device

    def _map(self, rel_fn: Callable[[Relation], Relation],
             frame_fn: Callable[[Frame], Frame] = lambda f: f.copy()) -> "Graph":
        """A new graph with every relation and frame transformed (frames keep block sharing)."""
        src_frames = {k: frame_fn(f) for k, f in self._src_frames.items()}
        dst_frames = {k: frame_fn(f) for k, f in self._dst_frames.items()} if self._is_block else src_frames
        return Graph({k: rel_fn(r) for k, r in self._relations.items()}, src_frames, dst_frames,
                     {k: frame_fn(f) for k, f in self._edge_frames.items()}, self._is_block)

    def to(self, device: torch.device | str, **kwargs: Any) -> "Graph":
        """Copy the structure and every feature to ``device`` (a new graph, as in DGL)."""
        device = torch.device(device)
        return self._map(lambda r: r.to(device), lambda f: f.to(device))

    def cpu(self) -> "Graph":
        return self.to("cpu")

    def int(self) -> "Graph":
        """The same graph with int32 ids (what queries return)."""
        return self._map(lambda r: r.astype(torch.int32))

    def long(self) -> "Graph":
        """The same graph with int64 ids."""
        return self._map(lambda r: r.astype(torch.int64))

    def formats(self, formats: str | list[str] | None = None):
        """Without argument: which sparse formats exist. With one: a graph keeping only those.

        COO is always kept (it defines edge ids); the others are built on demand and cached only
        when allowed.
        """
        if formats is None:
            created, allowed = set(), set()
            for rel in self._relations.values():
                created.update(rel.created_formats())
                allowed.update(rel.allowed)
            return {"created": [f for f in FORMATS if f in created],
                    "not created": [f for f in FORMATS if f in allowed and f not in created]}
        wanted = [formats] if isinstance(formats, str) else list(formats)
        unknown = [f for f in wanted if f not in FORMATS]
        if unknown:
            raise GraphError(f"unknown sparse format(s) {unknown}; choose from {list(FORMATS)}")
        return self._map(lambda r: r.with_formats(wanted))

    def create_formats_(self) -> None:
        """Build every allowed compressed format now (e.g. before forking workers)."""
        for rel in self._relations.values():
            if "csc" in rel.allowed:
                rel.in_csr
            if "csr" in rel.allowed:
                rel.out_csr

    def __repr__(self) -> str:
        if self.is_homogeneous:
            return (f"Graph(num_nodes={self.num_nodes()}, num_edges={self.num_edges()}, "
                    f"ndata_schemes={_schemes(self.ndata)}, edata_schemes={_schemes(self.edata)})")
        if self._is_block and len(self._relations) == 1:
            return (f"Block(num_src_nodes={self.num_src_nodes()}, num_dst_nodes={self.num_dst_nodes()}, "
                    f"num_edges={self.num_edges()})")
        return (f"Graph(num_nodes={ {k: f.num_rows for k, f in self._src_frames.items()} }, "
                f"num_edges={ {k: r.num_edges for k, r in self._relations.items()} })")

    # ------------------------------------------------------------------------------------------
    # Id helpers
    # ------------------------------------------------------------------------------------------
    def _ids(self, ids: Any, upper: int, what: str) -> torch.Tensor:
        t = as_id_tensor(ids, what, device=self.device)
        check_range(t, upper, what)
        return t.to(torch.int64)

    def _out(self, t: torch.Tensor) -> torch.Tensor:
        """Ids for the user: a fresh tensor of ``idtype`` (never a cached array they could mutate)."""
        out = t.to(self.idtype)
        return out.clone() if out is t or out.data_ptr() == t.data_ptr() else out

    @staticmethod
    def _scalar(x: Any) -> bool:
        return isinstance(x, (int, np.integer)) or (isinstance(x, torch.Tensor) and x.dim() == 0)

    # ------------------------------------------------------------------------------------------
    # Node and edge listings
    # ------------------------------------------------------------------------------------------
    @property
    def nodes(self) -> "NodeView":
        return NodeView(self, "both")

    @property
    def srcnodes(self) -> "NodeView":
        return NodeView(self, "src")

    @property
    def dstnodes(self) -> "NodeView":
        return NodeView(self, "dst")

    @property
    def edges(self) -> "EdgeView":
        return EdgeView(self)

    def _all_edges(self, form: str = "uv", order: str = "eid", etype=None):
        rel = self._rel(etype)
        eid = torch.arange(rel.num_edges, device=self.device)
        src, dst = rel.src.clone(), rel.dst.clone()
        if order == "srcdst":
            eid = rel.sorted_pairs[1]
            src, dst = src[eid], dst[eid]
        elif order != "eid":
            raise GraphError(f"order must be 'eid' or 'srcdst', got {order!r}")
        return _form(form, src, dst, self._out(eid))

    def has_nodes(self, vid: Any, ntype: str | None = None):
        n = self.num_nodes(ntype)
        t = as_id_tensor(vid, "has_nodes", device=self.device)
        if t.numel() and int(t.min()) < 0:
            raise GraphError(f"has_nodes: negative id {int(t.min())}; ids must be non-negative")
        ok = t < n
        return bool(ok[0]) if self._scalar(vid) else ok

    # ------------------------------------------------------------------------------------------
    # Degrees and neighbourhoods
    # ------------------------------------------------------------------------------------------
    def in_degrees(self, v: Any = ALL, etype=None):
        rel = self._rel(etype)
        if is_all(v):
            return self._out(rel.in_degrees)
        out = rel.in_degrees[self._ids(v, rel.num_dst, "in_degrees")]
        return int(out[0]) if self._scalar(v) else self._out(out)

    def out_degrees(self, u: Any = ALL, etype=None):
        rel = self._rel(etype)
        if is_all(u):
            return self._out(rel.out_degrees)
        out = rel.out_degrees[self._ids(u, rel.num_src, "out_degrees")]
        return int(out[0]) if self._scalar(u) else self._out(out)

    def in_edges(self, v: Any, form: str = "uv", etype=None):
        """Edges into the nodes ``v``, grouped by ``v`` in the given order, by edge id within."""
        rel = self._rel(etype)
        eid = _row_entries(rel.in_csr, self._ids(v, rel.num_dst, "in_edges"))
        return _form(form, rel.src[eid], rel.dst[eid], self._out(eid))

    def out_edges(self, u: Any, form: str = "uv", etype=None):
        rel = self._rel(etype)
        eid = _row_entries(rel.out_csr, self._ids(u, rel.num_src, "out_edges"))
        return _form(form, rel.src[eid], rel.dst[eid], self._out(eid))

    def predecessors(self, v: int, etype=None) -> torch.Tensor:
        if not self._scalar(v):
            raise GraphError("predecessors takes one node id")
        return self.in_edges(v, etype=etype)[0]

    def successors(self, u: int, etype=None) -> torch.Tensor:
        if not self._scalar(u):
            raise GraphError("successors takes one node id")
        return self.out_edges(u, etype=etype)[1]

    # ------------------------------------------------------------------------------------------
    # Edge look-up
    # ------------------------------------------------------------------------------------------
    def _pair_search(self, u: Any, v: Any, what: str, etype=None):
        rel = self._rel(etype)
        ut = self._ids(u, rel.num_src, f"{what} (source)")
        vt = self._ids(v, rel.num_dst, f"{what} (destination)")
        if ut.numel() != vt.numel():
            if ut.numel() == 1:
                ut = ut.expand(vt.numel())
            elif vt.numel() == 1:
                vt = vt.expand(ut.numel())
            else:
                raise GraphError(f"{what}: u and v have different lengths ({ut.numel()} and {vt.numel()})")
        keys, order = rel.sorted_pairs
        query = ut * max(rel.num_dst, 1) + vt
        left = torch.searchsorted(keys, query, side="left")
        right = torch.searchsorted(keys, query, side="right")
        return ut, vt, left, right, order

    def has_edges_between(self, u: Any, v: Any, etype=None):
        _, _, left, right, _ = self._pair_search(u, v, "has_edges_between", etype)
        found = right > left
        return bool(found[0]) if self._scalar(u) and self._scalar(v) else found

    has_edge_between = has_edges_between

    def edge_ids(self, u: Any, v: Any, return_uv: bool = False, etype=None):
        """Ids of the edges ``u[i] -> v[i]``; the smallest id for multi-edges unless ``return_uv``."""
        ut, vt, left, right, order = self._pair_search(u, v, "edge_ids", etype)
        missing = (right == left).nonzero()
        if missing.numel() and not return_uv:
            i = int(missing[0])
            raise GraphError(f"edge_ids: there is no edge from {int(ut[i])} to {int(vt[i])}")
        if return_uv:  # every edge of every pair; pairs without an edge contribute nothing
            counts = right - left
            pair = torch.repeat_interleave(torch.arange(len(counts), device=self.device), counts)
            starts = torch.repeat_interleave(left - torch.cumsum(counts, 0) + counts, counts)
            pos = starts + torch.arange(int(counts.sum()), device=self.device)
            eid = order[pos]
            return self._out(ut[pair]), self._out(vt[pair]), self._out(eid)
        eid = order[left]
        return int(eid[0]) if self._scalar(u) and self._scalar(v) else self._out(eid)

    edge_id = edge_ids

    def find_edges(self, eid: Any, etype=None):
        rel = self._rel(etype)
        e = self._ids(eid, rel.num_edges, "find_edges")
        return rel.src[e], rel.dst[e]

    def adj(self, transpose: bool = False, ctx=None, scipy_fmt: str | None = None, etype=None):
        """The adjacency as a ``torch.sparse_coo_tensor`` (rows = sources, multi-edges summed),
        or as a scipy matrix with ``scipy_fmt='coo'|'csr'``. ``transpose=True`` puts destinations
        on the rows."""
        rel = self._rel(etype)
        rows, cols, shape = rel.src.long(), rel.dst.long(), (rel.num_src, rel.num_dst)
        if transpose:
            rows, cols, shape = cols, rows, shape[::-1]
        if scipy_fmt is not None:
            import scipy.sparse as sp
            m = sp.coo_matrix((np.ones(rel.num_edges, dtype=np.float32),
                               (rows.cpu().numpy(), cols.cpu().numpy())), shape=shape)
            if scipy_fmt == "csr":
                return m.tocsr()
            if scipy_fmt == "coo":
                return m
            raise GraphError(f"scipy_fmt must be 'coo' or 'csr', got {scipy_fmt!r}")
        values = torch.ones(rel.num_edges, device=self.device)
        return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, shape,
                                       check_invariants=False).coalesce()

    adj_external = adj

    # ------------------------------------------------------------------------------------------
    # DGL's method spellings of transforms and queries
    # ------------------------------------------------------------------------------------------
    all_edges = _all_edges

    def in_degree(self, v: int, etype=None) -> int:
        return self.in_degrees(int(v), etype=etype)

    def out_degree(self, u: int, etype=None) -> int:
        return self.out_degrees(int(u), etype=etype)

    def number_of_src_nodes(self, ntype: str | None = None) -> int:
        return self.num_src_nodes(ntype)

    def number_of_dst_nodes(self, ntype: str | None = None) -> int:
        return self.num_dst_nodes(ntype)

    def subgraph(self, nodes: Any, **kwargs: Any) -> "Graph":
        from .transform import node_subgraph
        return node_subgraph(self, nodes, **kwargs)

    def edge_subgraph(self, edges: Any, **kwargs: Any) -> "Graph":
        from .transform import edge_subgraph
        return edge_subgraph(self, edges, **kwargs)

    def reverse(self, copy_ndata: bool = True, copy_edata: bool = False) -> "Graph":
        from .transform import reverse
        return reverse(self, copy_ndata, copy_edata)

    def add_self_loop(self, **kwargs: Any) -> "Graph":
        from .transform import add_self_loop
        return add_self_loop(self, **kwargs)

    def remove_self_loop(self) -> "Graph":
        from .transform import remove_self_loop
        return remove_self_loop(self)

    def clone(self) -> "Graph":
        """A graph sharing the structure, with its own feature dicts (tensors shared, as DGL)."""
        return self._map(lambda r: r)

    def local_var(self) -> "Graph":
        return self.clone()

    # ------------------------------------------------------------------------------------------
    # Features
    # ------------------------------------------------------------------------------------------
    @property
    def ndata(self) -> MutableMapping:
        if self._is_block:
            raise GraphError("a block has separate source and destination node sets: "
                             "use g.srcdata and g.dstdata instead of g.ndata")
        return _data_view(lambda: self._src_frames)

    @property
    def srcdata(self) -> MutableMapping:
        return _data_view(lambda: self._src_frames)

    @property
    def dstdata(self) -> MutableMapping:
        return _data_view(lambda: self._dst_frames)

    @property
    def edata(self) -> MutableMapping:
        return _data_view(lambda: self._edge_frames)

    @contextmanager
    def local_scope(self) -> Iterator["Graph"]:
        """Inside the block, feature assignments and deletions are undone on exit."""
        saved = (self._src_frames, self._dst_frames, self._edge_frames)
        self._src_frames = {k: f.copy() for k, f in saved[0].items()}
        self._dst_frames = {k: f.copy() for k, f in saved[1].items()} if self._is_block else self._src_frames
        self._edge_frames = {k: f.copy() for k, f in saved[2].items()}
        try:
            yield self
        finally:
            self._src_frames, self._dst_frames, self._edge_frames = saved

    # ------------------------------------------------------------------------------------------
    # Message passing (semantics in gdsl.message_passing)
    # ------------------------------------------------------------------------------------------
    def apply_nodes(self, func: Callable, v: Any = ALL, ntype: str | None = None) -> None:
        from . import message_passing
        message_passing.apply_nodes(self, func, v, ntype)

    def apply_edges(self, func: Callable, edges: Any = ALL, etype=None) -> None:
        from . import message_passing
        message_passing.apply_edges(self, func, edges, etype)

    def update_all(self, message_func: Callable, reduce_func: Callable,
                   apply_node_func: Callable | None = None, etype=None) -> None:
        from . import message_passing
        message_passing.send_and_recv(self, ALL, message_func, reduce_func, apply_node_func, etype)

    def send_and_recv(self, edges: Any, message_func: Callable, reduce_func: Callable,
                      apply_node_func: Callable | None = None, etype=None) -> None:
        from . import message_passing
        if is_all(edges):
            raise GraphError("send_and_recv needs the edges to send along; use update_all for all edges")
        message_passing.send_and_recv(self, edges, message_func, reduce_func, apply_node_func, etype)

    def pull(self, v: Any, message_func: Callable, reduce_func: Callable,
             apply_node_func: Callable | None = None, etype=None) -> None:
        from . import message_passing
        message_passing.pull(self, v, message_func, reduce_func, apply_node_func, etype)

    def push(self, u: Any, message_func: Callable, reduce_func: Callable,
             apply_node_func: Callable | None = None, etype=None) -> None:
        from . import message_passing
        rel = self._rel(etype)
        eid = _row_entries(rel.out_csr, self._ids(u, rel.num_src, "push"))
        if eid.numel():
            message_passing.send_and_recv(self, eid, message_func, reduce_func, apply_node_func, etype)


# ----------------------------------------------------------------------------------------------
# Views
# ----------------------------------------------------------------------------------------------
class NodeView:
    """``g.nodes()`` lists node ids; ``g.nodes[ntype].data`` is that type's frame."""

    def __init__(self, graph: Graph, side: str):
        self._g = graph
        self._side = side

    def _frames(self) -> dict[str, Frame]:
        g = self._g
        if self._side == "dst":
            return g._dst_frames
        if self._side == "both" and g._is_block:
            raise GraphError("a block has separate source and destination node sets: "
                             "use g.srcnodes / g.dstnodes")
        return g._src_frames

    def __call__(self, ntype: str | None = None) -> torch.Tensor:
        frames = self._frames()
        n = frames[self._g._single_ntype(frames, ntype, "")].num_rows
        return torch.arange(n, dtype=self._g.idtype, device=self._g.device)

    def __getitem__(self, ntype: str) -> "_Space":
        frames = self._frames()
        key = self._g._single_ntype(frames, ntype, "")
        return _Space(lambda: self._frames()[key])

    def __len__(self) -> int:
        return sum(f.num_rows for f in self._frames().values())


class EdgeView:
    """``g.edges(form=, order=)`` lists edges; ``g.edges[etype].data`` is that type's frame."""

    def __init__(self, graph: Graph):
        self._g = graph

    def __call__(self, form: str = "uv", order: str = "eid", etype=None):
        return self._g._all_edges(form, order, etype)

    def __getitem__(self, etype) -> "_Space":
        key = self._g._etype(etype)
        return _Space(lambda: self._g._edge_frames[key])

    def __len__(self) -> int:
        return self._g.num_edges()


class _Space:
    def __init__(self, frame_getter: Callable[[], Frame]):
        self._get = frame_getter

    @property
    def data(self) -> MutableMapping:
        return _LiveFrame(self._get)


class _LiveFrame(MutableMapping):
    """A frame looked up on every access, so a view taken before ``local_scope`` stays right."""

    def __init__(self, getter: Callable[[], Frame]):
        self._get = getter

    def __getitem__(self, key):
        return self._get()[key]

    def __setitem__(self, key, value):
        self._get()[key] = value

    def __delitem__(self, key):
        del self._get()[key]

    def __iter__(self):
        return iter(self._get())

    def __len__(self):
        return len(self._get())

    def __contains__(self, key):
        return key in self._get()

    def __repr__(self):
        return repr(dict(self._get()))


class _TypedDataView(MutableMapping):
    """``g.ndata`` on a graph of several node types: values are ``{type: tensor}`` dicts."""

    def __init__(self, getter: Callable[[], Mapping[Any, Frame]]):
        self._get = getter

    def __getitem__(self, key):
        out = {t: f[key] for t, f in self._get().items() if key in f}
        if not out:
            raise FeatureError(f"no feature named {key!r} on any type")
        return out

    def __setitem__(self, key, value):
        if not isinstance(value, Mapping):
            raise FeatureError(f"the graph has several types: assign feature {key!r} as a "
                               f"dict {{type: tensor}}")
        frames = self._get()
        for t, v in value.items():
            if t not in frames:
                raise FeatureError(f"feature {key!r}: unknown type {t!r}; the types are {list(frames)}")
            frames[t][key] = v

    def __delitem__(self, key):
        found = False
        for f in self._get().values():
            if key in f:
                del f[key]
                found = True
        if not found:
            raise FeatureError(f"cannot delete feature {key!r}: no type has it")

    def __iter__(self):
        seen = {}
        for f in self._get().values():
            seen.update(dict.fromkeys(f))
        return iter(seen)

    def __len__(self):
        return len(list(iter(self)))


def _data_view(getter: Callable[[], dict]) -> MutableMapping:
    frames = getter()
    if len(frames) == 1:
        key = next(iter(frames))
        return _LiveFrame(lambda: getter()[key])
    return _TypedDataView(getter)


def _schemes(view: Mapping) -> dict:
    return {k: f"{tuple(v.shape[1:])} {v.dtype}" for k, v in view.items()}


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------
def _form(form: str, src: torch.Tensor, dst: torch.Tensor, eid: torch.Tensor):
    if form == "uv":
        return src, dst
    if form == "eid":
        return eid
    if form == "all":
        return src, dst, eid
    raise GraphError(f"form must be 'uv', 'eid' or 'all', got {form!r}")


def _row_entries(csr: Compressed, rows: torch.Tensor) -> torch.Tensor:
    """Edge ids of the given rows of a compressed adjacency, row after row (int64)."""
    indptr = csr.indptr.long()
    starts, ends = indptr[rows], indptr[rows + 1]
    counts = ends - starts
    total = int(counts.sum()) if counts.numel() else 0
    if total == 0:
        return torch.zeros(0, dtype=torch.int64, device=rows.device)
    offsets = torch.repeat_interleave(starts - (torch.cumsum(counts, 0) - counts), counts)
    pos = offsets + torch.arange(total, device=rows.device)
    return csr.eids.long()[pos]
