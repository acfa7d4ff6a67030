"""Graph signatures: what a schedule choice depends on, coarse enough to be reused.

A tuning result is stored per (kernel, graph signature, device, versions). The signature keeps
what decides which schedule is fastest and drops what does not, so that the same dataset (and one
shaped like it: a little larger, another sample of the same generator) finds the same entry:

- the sizes (source nodes, destination nodes, edges) in half-octave buckets
  (``round(2 * log2(n + 1))``: sizes within about 20% of each other mostly share a bucket);
- the in- and out-degree distributions as coarse histograms: the share of rows in each degree
  bucket ``{0}, [1, 4), [4, 16), [16, 64), ...`` (factors of four) in eighths, and the bucket of
  the largest degree (hub rows are few, so they show there rather than in the shares);
- the value dtype and the device.

It is built from plain numbers (the degree statistics a relation caches), so this module needs
nothing from the rest of gdsl.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Sequence

SHARE_STEPS = 8  # histogram shares are rounded to eighths


def size_bucket(n: int) -> int:
    """Half-octave bucket of a count: ``round(2 * log2(n + 1))``."""
    return int(round(2 * math.log2(int(n) + 1)))


def degree_bucket(degree: int) -> int:
    """Coarse degree bucket: 0 for 0, then ``[1, 4)``, ``[4, 16)``, ... (factors of four)."""
    degree = int(degree)
    return 0 if degree <= 0 else (degree.bit_length() + 1) // 2


def coarse_histogram(log2_histogram: Sequence[int]) -> tuple[int, ...]:
    """Shares (in eighths) of rows per coarse degree bucket, from a log2 histogram whose bucket 0
    counts degree 0 and bucket ``k`` degrees in ``[2^(k-1), 2^k)`` (as ``DegreeStats`` holds)."""
    counts = [int(c) for c in log2_histogram]
    total = sum(counts)
    if total == 0:
        return ()
    coarse: list[int] = []
    for k, count in enumerate(counts):
        c = 0 if k == 0 else (k + 1) // 2   # log2 buckets 1,2 -> 1; 3,4 -> 2; ...
        while len(coarse) <= c:
            coarse.append(0)
        coarse[c] += count
    shares = [int(round(SHARE_STEPS * c / total)) for c in coarse]
    while shares and shares[-1] == 0:
        shares.pop()
    return tuple(shares)


@dataclass(frozen=True)
class GraphSignature:
    """A graph's signature for schedule choices (see the module docstring). Equality and
    :attr:`key` use the buckets only; the exact counts are kept for display."""

    size_buckets: tuple[int, int, int]       # (source nodes, destination nodes, edges)
    in_histogram: tuple[int, ...]
    out_histogram: tuple[int, ...]
    max_in_bucket: int
    max_out_bucket: int
    dtype: str
    device: str
    num_src: int = field(default=0, compare=False)
    num_dst: int = field(default=0, compare=False)
    num_edges: int = field(default=0, compare=False)
    max_in_degree: int = field(default=0, compare=False)
    max_out_degree: int = field(default=0, compare=False)
    mean_in_degree: float = field(default=0.0, compare=False)
    mean_out_degree: float = field(default=0.0, compare=False)

    def buckets(self) -> dict:
        """The compared part, as JSON-able values."""
        return {"sizes": list(self.size_buckets), "in_histogram": list(self.in_histogram),
                "out_histogram": list(self.out_histogram), "max_in_bucket": self.max_in_bucket,
                "max_out_bucket": self.max_out_bucket, "dtype": self.dtype, "device": self.device}

    @property
    def key(self) -> str:
        cached = self.__dict__.get("_key")
        if cached is None:
            text = json.dumps(self.buckets(), sort_keys=True)
            cached = hashlib.sha256(text.encode()).hexdigest()[:16]
            object.__setattr__(self, "_key", cached)  # (frozen: computed once, not a field)
        return cached

    def rows(self, which: str) -> int:
        """The CSR rows of a kernel over ``which`` ('dst': in-CSR, 'src': out-CSR)."""
        return self.num_dst if which == "dst" else self.num_src

    def mean_degree(self, which: str) -> float:
        return self.mean_in_degree if which == "dst" else self.mean_out_degree

    def max_degree(self, which: str) -> int:
        return self.max_in_degree if which == "dst" else self.max_out_degree

    def describe(self) -> str:
        return (f"{self.num_src} src / {self.num_dst} dst nodes, {self.num_edges} edges, in-degree mean "
                f"{self.mean_in_degree:.1f} max {self.max_in_degree}, out-degree mean "
                f"{self.mean_out_degree:.1f} max {self.max_out_degree}, {self.dtype} on {self.device} "
                f"(key {self.key})")


def make_signature(num_src: int, num_dst: int, num_edges: int, in_log2_histogram: Sequence[int],
                   out_log2_histogram: Sequence[int], max_in_degree: int, max_out_degree: int,
                   dtype: str, device: str) -> GraphSignature:
    """A signature from a relation's sizes and degree statistics."""
    return GraphSignature(
        (size_bucket(num_src), size_bucket(num_dst), size_bucket(num_edges)),
        coarse_histogram(in_log2_histogram), coarse_histogram(out_log2_histogram),
        degree_bucket(max_in_degree), degree_bucket(max_out_degree), str(dtype), str(device),
        int(num_src), int(num_dst), int(num_edges), int(max_in_degree), int(max_out_degree),
        num_edges / num_dst if num_dst else 0.0, num_edges / num_src if num_src else 0.0)
