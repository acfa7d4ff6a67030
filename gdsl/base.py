"""Small shared definitions: the ALL sentinel, id-tensor parsing, reserved field names."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .errors import GraphError

ALL = slice(None)
"""Sentinel meaning "every node" / "every edge", as ``dgl.ALL``."""

NID = "_ID"
EID = "_ID"


def is_all(value: Any) -> bool:
    return isinstance(value, slice) and value == slice(None)


def as_id_tensor(ids: Any, what: str, dtype: torch.dtype | None = None,
                 device: torch.device | None = None) -> torch.Tensor:
    """Convert ids given as int, list, numpy array or tensor to a 1-D integer tensor.

    Float, boolean (unless mask handling is done by the caller) and multi-dimensional ids are
    errors: they are almost always a mistake and would otherwise be silently truncated.
    """
    if isinstance(ids, torch.Tensor):
        t = ids
    elif isinstance(ids, np.ndarray):
        t = torch.from_numpy(ids)
    elif isinstance(ids, (int, np.integer)):
        if not -2**63 <= int(ids) < 2**63:
            raise GraphError(f"{what}: id {int(ids)} is out of range")
        t = torch.tensor([int(ids)], dtype=torch.int64)
    else:
        try:
            t = torch.as_tensor(ids)
        except OverflowError as exc:
            raise GraphError(f"{what}: an id is out of range") from exc
        except (TypeError, ValueError, RuntimeError) as exc:
            raise GraphError(f"{what}: cannot interpret {type(ids).__name__} as node/edge ids") from exc
        if t.numel() == 0:
            t = t.to(torch.int64)
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise GraphError(f"{what}: ids must be integers, got dtype {t.dtype}")
    if t.dim() == 0:
        t = t.reshape(1)
    if t.dim() != 1:
        raise GraphError(f"{what}: ids must be a 1-D sequence, got shape {tuple(t.shape)}")
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    if device is not None and t.device != torch.device(device):
        t = t.to(device)
    return t


def check_range(ids: torch.Tensor, upper: int, what: str) -> None:
    """Raise a GraphError if any id is negative or >= upper."""
    if ids.numel() == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0:
        raise GraphError(f"{what}: negative id {lo} (ids must be in [0, {upper}))")
    if hi >= upper:
        raise GraphError(f"{what}: id {hi} is out of range (ids must be in [0, {upper}))")


def index_dtype(count: int) -> torch.dtype:
    """int32 when every index and offset fits, which halves the bytes kernels read."""
    return torch.int32 if count < 2**31 - 1 else torch.int64
