"""Frames: the feature tables of one node set or one edge set.

A frame knows its row count and device and checks every assignment against them, so a wrong
feature size is an error at the line that assigns it, not a wrong answer later.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping

import torch

from .errors import DeviceError, FeatureError


def same_device(a: torch.device, b: torch.device) -> bool:
    """Devices compare equal when type matches and indices agree (``cuda`` == ``cuda:0``)."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.index is None or b.index is None:
        current = torch.cuda.current_device() if a.type == "cuda" and torch.cuda.is_available() else 0
        return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)
    return a.index == b.index


class Frame(MutableMapping):
    """A dict of tensors that all have ``num_rows`` rows and live on ``device``.

    ``kind`` ("node", "source node", "edge", ...) only serves the error messages.
    """

    def __init__(self, num_rows: int, device: torch.device, kind: str = "node",
                 data: Mapping[str, torch.Tensor] | None = None):
        self.num_rows = int(num_rows)
        self.device = torch.device(device)
        self.kind = kind
        self._columns: dict[str, torch.Tensor] = {}
        for key, value in (data or {}).items():
            self[key] = value

    # -- dict protocol -------------------------------------------------------------------------
    def __getitem__(self, key: str) -> torch.Tensor:
        try:
            return self._columns[key]
        except KeyError:
            raise FeatureError(f"no {self.kind} feature named {key!r}; "
                               f"the {self.kind} features are {sorted(self._columns)}") from None

    def __setitem__(self, key: str, value: torch.Tensor) -> None:
        self._columns[key] = self.check(key, value)

    def __delitem__(self, key: str) -> None:
        if key not in self._columns:
            raise FeatureError(f"cannot delete {self.kind} feature {key!r}: it does not exist")
        del self._columns[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)

    def __contains__(self, key: object) -> bool:
        return key in self._columns

    def __repr__(self) -> str:
        cols = ", ".join(f"{k}: {tuple(v.shape)} {v.dtype}" for k, v in self._columns.items())
        return f"Frame({self.kind}, rows={self.num_rows}, {{{cols}}})"

    # -- checks --------------------------------------------------------------------------------
    def check(self, key: str, value: torch.Tensor) -> torch.Tensor:
        if not isinstance(key, str):
            raise FeatureError(f"{self.kind} feature names must be strings, got {key!r}")
        if not isinstance(value, torch.Tensor):
            raise FeatureError(f"{self.kind} feature {key!r} must be a torch.Tensor, "
                               f"got {type(value).__name__}")
        if value.dim() == 0:
            raise FeatureError(f"{self.kind} feature {key!r} must have a first dimension of size "
                               f"{self.num_rows}, got a 0-dimensional tensor")
        if value.shape[0] != self.num_rows:
            raise FeatureError(f"{self.kind} feature {key!r} has {value.shape[0]} rows but the graph "
                               f"has {self.num_rows} {self.kind}s (expected first dimension "
                               f"{self.num_rows}, got shape {tuple(value.shape)})")
        if not same_device(value.device, self.device):
            raise DeviceError(f"{self.kind} feature {key!r} is on {value.device} but the graph is on "
                              f"{self.device}; move one of them with .to(device)")
        return value

    # -- copies and row operations -------------------------------------------------------------
    def copy(self) -> "Frame":
        """A shallow copy: new column dict, same tensors (what ``local_scope`` needs)."""
        out = Frame(self.num_rows, self.device, self.kind)
        out._columns = dict(self._columns)
        return out

    def to(self, device: torch.device | str) -> "Frame":
        out = Frame(self.num_rows, device, self.kind)
        out._columns = {k: v.to(device) for k, v in self._columns.items()}
        return out

    def subframe(self, rows: torch.Tensor) -> "Frame":
        """A new frame of the given rows (gathered now, all columns)."""
        out = Frame(rows.numel(), self.device, self.kind)
        idx = rows.to(device=self.device, dtype=torch.int64)
        out._columns = {k: v[idx] for k, v in self._columns.items()}
        return out

    def lazy_rows(self, rows: torch.Tensor | None) -> "RowView":
        return RowView(self, rows)

    def update_rows(self, rows: torch.Tensor | None, values: Mapping[str, torch.Tensor]) -> None:
        """Write ``values`` into ``rows`` (``None``: all rows), out of place so autograd sees it.

        Rows not written keep the old column when it exists and are zero for a new column.
        """
        for key, value in values.items():
            if rows is None:
                self[key] = value
                continue
            idx = rows.to(device=self.device, dtype=torch.int64)
            if value.shape[0] != idx.numel():
                raise FeatureError(f"{self.kind} feature {key!r}: {value.shape[0]} values for "
                                   f"{idx.numel()} {self.kind}s")
            old = self._columns.get(key)
            if old is None:
                old = value.new_zeros((self.num_rows, *value.shape[1:]))
            elif old.shape[1:] != value.shape[1:] or old.dtype != value.dtype:
                raise FeatureError(
                    f"cannot update some rows of {self.kind} feature {key!r} of feature shape "
                    f"{tuple(old.shape[1:])} and dtype {old.dtype} with values of feature shape "
                    f"{tuple(value.shape[1:])} and dtype {value.dtype}; delete the feature first")
            self[key] = old.index_copy(0, idx, value)


class RowView(Mapping):
    """Read-only view of some rows of a frame, gathered on first access of each column.

    Message functions usually read one or two of many features; gathering only those keeps the
    reference executor from copying every column for every edge.
    """

    def __init__(self, frame: Frame, rows: torch.Tensor | None):
        self._frame = frame
        self._rows = None if rows is None else rows.to(device=frame.device, dtype=torch.int64)
        self._gathered: dict[str, torch.Tensor] = {}
        self.kind = frame.kind

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._gathered:
            column = self._frame[key]
            self._gathered[key] = column if self._rows is None else column[self._rows]
        return self._gathered[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._frame)

    def __len__(self) -> int:
        return len(self._frame)

    def __contains__(self, key: object) -> bool:
        return key in self._frame

    @property
    def num_rows(self) -> int:
        return self._frame.num_rows if self._rows is None else self._rows.numel()
