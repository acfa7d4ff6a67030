"""The ``edges`` and ``nodes`` arguments that user-defined functions receive (DGL's batches)."""
from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch

from .errors import FeatureError


class EdgeBatch:
    """A batch of edges: ``edges.src[k]``, ``edges.dst[k]``, ``edges.data[k]`` are per-edge rows."""

    def __init__(self, src: torch.Tensor, dst: torch.Tensor, eid: torch.Tensor,
                 src_data: Mapping, dst_data: Mapping, edge_data: Mapping):
        self._src, self._dst, self._eid = src, dst, eid
        self.src = src_data
        self.dst = dst_data
        self.data = edge_data

    def edges(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(u, v, eid)`` of the edges in this batch."""
        return self._src, self._dst, self._eid

    def batch_size(self) -> int:
        return self._eid.numel()

    def __len__(self) -> int:
        return self.batch_size()


class Mailbox(Mapping):
    """Messages of a bucket of nodes: each value is ``(nodes, degree, *feature_shape)``."""

    def __init__(self, messages: dict[str, torch.Tensor]):
        self._messages = messages

    def __getitem__(self, key: str) -> torch.Tensor:
        try:
            return self._messages[key]
        except KeyError:
            raise FeatureError(f"no message named {key!r} in the mailbox; the message function "
                               f"produced {sorted(self._messages)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._messages)

    def __len__(self) -> int:
        return len(self._messages)


class NodeBatch:
    """A batch of nodes: ``nodes.data[k]`` per node, ``nodes.mailbox[k]`` for reduce functions."""

    def __init__(self, nodes: torch.Tensor, data: Mapping, mailbox: Mapping | None = None):
        self._nodes = nodes
        self.data = data
        self._mailbox = mailbox

    @property
    def mailbox(self) -> Mapping:
        if self._mailbox is None:
            raise FeatureError("nodes.mailbox only exists in reduce functions")
        return self._mailbox

    def nodes(self) -> torch.Tensor:
        return self._nodes

    def batch_size(self) -> int:
        return self._nodes.numel()

    def __len__(self) -> int:
        return self.batch_size()
