"""Counter-based random numbers for attention dropout: the same bits in torch, numba and Triton.

A dropout mask inside a fused kernel cannot be stored (it would be an E x H tensor) and cannot come
from a stateful generator (the backward must see the same mask). So each element's keep bit is a
hash of ``(seed, stream, edge id, flat feature index)``: the forward and the backward kernels
regenerate it, and every back end computes the same bits. The hash is a few rounds of xor-shift
and multiplication on 32-bit values held in int64 (multipliers below 2**31, so no product
overflows int64 and the arithmetic is identical in torch, numba and Triton).
"""
from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF
GOLDEN = 0x61C88647     # multipliers: odd, below 2**31
MIX1 = 0x7FEB352D
MIX2 = 0x2C1B3C6D
STREAM = 0x3C6EF372


def threshold(p: float) -> int:
    """Elements whose hash is below this are dropped: a fraction ``p`` of the 2**32 values."""
    return min(int(round(p * 2**32)), 2**32)


def mix(x):
    """The hash of a non-negative value below 2**32 (works on ints and int64 tensors)."""
    x = (x * GOLDEN) & MASK32
    x = x ^ (x >> 16)
    x = (x * MIX1) & MASK32
    x = x ^ (x >> 15)
    x = (x * MIX2) & MASK32
    return x ^ (x >> 16)


def keep_bits(seed, stream: int, edge_ids, flat_index, width: int):
    """Hash of one element: ``seed`` (int, below 2**31), ``stream`` (which dropout of a program),
    the element's edge id and flat feature index in a row of ``width`` features."""
    counter = (edge_ids * width + flat_index) & MASK32
    return mix(counter ^ mix((seed + stream * STREAM) & MASK32))


def keep_mask(seed: int, stream: int, num_edges: int, shape: tuple[int, ...], p: float,
              device=None) -> torch.Tensor:
    """The keep mask (bool, ``(num_edges, *shape)``) the kernels regenerate."""
    width = 1
    for s in shape:
        width *= s
    eids = torch.arange(num_edges, dtype=torch.int64, device=device)[:, None]
    flat = torch.arange(width, dtype=torch.int64, device=device)[None, :]
    bits = keep_bits(int(seed), stream, eids, flat, width)
    return (bits >= threshold(p)).reshape((num_edges, *shape))
