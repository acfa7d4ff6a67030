"""Independent oracles for message passing, written with explicit Python loops over numpy arrays.

Nothing here imports gdsl or uses torch: every expected value in the message-passing tests is
computed from a ``GraphCase``'s plain ``src`` / ``dst`` arrays, one edge and one node at a time,
following DGL's documented semantics (docs/api.md, "Message passing"):

* a message on edge ``i`` reads ``u`` rows at ``src[i]``, ``v`` rows at ``dst[i]``, ``e`` rows at ``i``;
  binary operands broadcast numpy-style; ``dot`` sums the last dimension and keeps it as size 1;
* a node's messages are taken in edge-id order; a node without messages gets 0 from every reducer;
* ``max`` / ``min`` send the gradient to one winning edge per (node, feature), the smallest edge id
  on ties; ``mean`` divides by the number of messages.

Data is passed as ``{'u': array, 'v': array, 'e': array}``: ``u`` has ``num_src`` rows, ``v``
``num_dst`` rows and ``e`` ``num_edges`` rows.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np

OPS = ("add", "sub", "mul", "div", "dot")
TARGETS = ("u", "v", "e")
BINARY_MESSAGES = tuple(f"{x}_{op}_{y}" for x in TARGETS for y in TARGETS if x != y for op in OPS)
COPY_MESSAGES = ("copy_u", "copy_e")
MESSAGES = COPY_MESSAGES + BINARY_MESSAGES
REDUCERS = ("sum", "mean", "max", "min")

assert len(BINARY_MESSAGES) == 30


def parse_message(name: str) -> tuple[str, str | None, str | None]:
    """``'u_mul_e'`` -> ``('mul', 'u', 'e')``; ``'copy_u'`` -> ``('copy', 'u', None)``."""
    if name.startswith("copy_"):
        return "copy", name[5:], None
    lhs, op, rhs = name.split("_")
    assert op in OPS and lhs in TARGETS and rhs in TARGETS and lhs != rhs, name
    return op, lhs, rhs


def _rows_for(case, target: str) -> int:
    return {"u": case.num_src, "v": case.num_dst, "e": case.num_edges}[target]


def _row(case, target: str, array: np.ndarray, eid: int) -> np.ndarray:
    """The operand row that edge ``eid`` reads from ``array`` (the feature of ``target``)."""
    if target == "u":
        return array[int(case.src[eid])]
    if target == "v":
        return array[int(case.dst[eid])]
    return array[eid]


def binary(op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One edge's binary message from two feature rows (numpy broadcasting)."""
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if op == "div":
        return a / b
    if op == "dot":
        return (a * b).sum(axis=-1, keepdims=True)
    raise ValueError(op)


def message_shape(name: str, data: dict) -> tuple[int, ...]:
    """Feature shape (without the edge dimension) of the message ``name`` on ``data``."""
    op, lhs, rhs = parse_message(name)
    if op == "copy":
        return tuple(data[lhs].shape[1:])
    shape = np.broadcast_shapes(data[lhs].shape[1:], data[rhs].shape[1:])
    if op == "dot":
        shape = shape[:-1] + (1,)
    return tuple(shape)


def edge_messages(case, name: str, data: dict, eids: Iterable[int] | None = None) -> np.ndarray:
    """Messages of the built-in ``name`` on the edges ``eids`` (default: all, in id order)."""
    eids = range(case.num_edges) if eids is None else [int(e) for e in eids]
    op, lhs, rhs = parse_message(name)
    for target in (lhs, rhs):
        if target is not None:
            assert data[target].shape[0] == _rows_for(case, target), target
    rows = []
    for eid in eids:
        a = _row(case, lhs, data[lhs], eid)
        if op == "copy":
            rows.append(np.array(a, copy=True))
        else:
            rows.append(binary(op, a, _row(case, rhs, data[rhs], eid)))
    shape = message_shape(name, data)
    out = np.zeros((len(rows), *shape), dtype=np.float64)
    for i, row in enumerate(rows):
        out[i] = row
    return out


def in_edges(case, node: int, eids: Iterable[int] | None = None) -> list[int]:
    """Ids of the edges (restricted to ``eids``) that end at ``node``, in increasing order."""
    candidates = range(case.num_edges) if eids is None else sorted(int(e) for e in eids)
    return [e for e in candidates if int(case.dst[e]) == node]


def out_edges(case, nodes: Iterable[int]) -> list[int]:
    nodes = {int(n) for n in nodes}
    return [e for e in range(case.num_edges) if int(case.src[e]) in nodes]


def in_degree(case, node: int) -> int:
    return sum(1 for e in range(case.num_edges) if int(case.dst[e]) == node)


def reduce_one(reducer: str, rows: Sequence[np.ndarray]) -> np.ndarray:
    """Reduce a non-empty list of message rows (given in edge-id order)."""
    assert len(rows) > 0
    acc = np.array(rows[0], dtype=np.float64, copy=True)
    for row in rows[1:]:
        if reducer in ("sum", "mean"):
            acc = acc + row
        elif reducer == "max":
            acc = np.maximum(acc, row)
        elif reducer == "min":
            acc = np.minimum(acc, row)
        else:
            raise ValueError(reducer)
    if reducer == "mean":
        acc = acc / len(rows)
    return acc


def reduce_messages(case, msgs: np.ndarray, reducer: str, eids: Iterable[int] | None = None
                    ) -> np.ndarray:
    """Per-destination reduction of ``msgs`` (indexed by edge id) over the edges ``eids``.

    Returns ``(num_dst, *msg_shape)``; nodes without a message in ``eids`` get zeros.
    """
    eids = None if eids is None else list(eids)
    out = np.zeros((case.num_dst, *msgs.shape[1:]), dtype=np.float64)
    for node in range(case.num_dst):
        mine = in_edges(case, node, eids)
        if mine:
            out[node] = reduce_one(reducer, [msgs[e] for e in mine])
    return out


def reduce_with(case, msgs: dict, func: Callable[[int, dict], np.ndarray],
                out_shape: tuple[int, ...], eids: Iterable[int] | None = None) -> np.ndarray:
    """Generic per-node reduction: ``func(node, {k: [row, ...]})`` for nodes with messages."""
    eids = None if eids is None else list(eids)
    out = np.zeros((case.num_dst, *out_shape), dtype=np.float64)
    for node in range(case.num_dst):
        mine = in_edges(case, node, eids)
        if mine:
            out[node] = func(node, {k: [v[e] for e in mine] for k, v in msgs.items()})
    return out


def update_all(case, name: str, reducer: str, data: dict) -> np.ndarray:
    return reduce_messages(case, edge_messages(case, name, data), reducer)


def partial_update(case, name: str, reducer: str, data: dict, eids: Iterable[int],
                   receivers: Iterable[int], old: np.ndarray | None,
                   apply: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """What ``send_and_recv`` / ``pull`` / ``push`` leave in the output field.

    ``receivers`` are the nodes that are (re)computed: the reduction over ``eids`` (0 without a
    message), then ``apply`` on those rows only. Everything else keeps ``old`` (zeros if None).
    """
    eids = list(eids)
    msgs = edge_messages(case, name, data)
    reduced = reduce_messages(case, msgs, reducer, eids)
    out = np.zeros_like(reduced) if old is None else np.array(old, dtype=np.float64, copy=True)
    for node in sorted({int(n) for n in receivers}):
        out[node] = reduced[node] if apply is None else apply(reduced[node])
    return out


def touched(case, eids: Iterable[int]) -> list[int]:
    """Destination nodes of the edges ``eids`` (unique, sorted)."""
    return sorted({int(case.dst[int(e)]) for e in eids})


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------

def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` (a broadcast result) back down to ``shape`` (one row, no batch dimension)."""
    grad = np.asarray(grad, dtype=np.float64)
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    assert grad.shape == tuple(shape), (grad.shape, shape)
    return grad


def reduce_backward(case, msgs: np.ndarray, reducer: str, grad_out: np.ndarray,
                    eids: Iterable[int] | None = None) -> np.ndarray:
    """Gradient of ``sum(reduce_messages(msgs) * grad_out)`` w.r.t. ``msgs`` (indexed by edge id)."""
    eids = None if eids is None else list(eids)
    grad = np.zeros_like(msgs, dtype=np.float64)
    for node in range(case.num_dst):
        mine = in_edges(case, node, eids)
        if not mine:
            continue
        if reducer == "sum":
            for e in mine:
                grad[e] += grad_out[node]
        elif reducer == "mean":
            for e in mine:
                grad[e] += grad_out[node] / len(mine)
        elif reducer in ("max", "min"):
            for idx in np.ndindex(*msgs.shape[1:]):
                winner, best = mine[0], msgs[(mine[0], *idx)]
                for e in mine[1:]:
                    value = msgs[(e, *idx)]
                    better = value > best if reducer == "max" else value < best
                    if better:  # strict: on ties the earlier (smaller) edge id stays the winner
                        winner, best = e, value
                grad[(winner, *idx)] += grad_out[(node, *idx)]
        else:
            raise ValueError(reducer)
    return grad


def message_backward(case, name: str, data: dict, grad_msgs: np.ndarray) -> dict:
    """Gradients w.r.t. each operand of the built-in message ``name`` given ``d loss / d msg``."""
    op, lhs, rhs = parse_message(name)
    grads = {t: np.zeros_like(data[t], dtype=np.float64) for t in (lhs, rhs) if t is not None}

    def add(target, eid, g):
        row = int(case.src[eid]) if target == "u" else int(case.dst[eid]) if target == "v" else eid
        grads[target][row] += unbroadcast(g, data[target].shape[1:])

    for eid in range(case.num_edges):
        g = grad_msgs[eid]
        a = _row(case, lhs, data[lhs], eid)
        if op == "copy":
            add(lhs, eid, g)
            continue
        b = _row(case, rhs, data[rhs], eid)
        if op == "add":
            ga, gb = g, g
        elif op == "sub":
            ga, gb = g, -g
        elif op == "mul":
            ga, gb = g * b, g * a
        elif op == "div":
            ga, gb = g / b, -g * a / (b * b)
        elif op == "dot":  # g has a size-1 last dimension that broadcasts over the summed one
            ga, gb = g * b, g * a
        else:
            raise ValueError(op)
        add(lhs, eid, ga)
        add(rhs, eid, gb)
    return grads


def update_all_backward(case, name: str, reducer: str, data: dict, grad_out: np.ndarray) -> dict:
    """``d sum(update_all(...) * grad_out) / d data[t]`` for each operand ``t`` of ``name``."""
    msgs = edge_messages(case, name, data)
    return message_backward(case, name, data, reduce_backward(case, msgs, reducer, grad_out))


def softmax(x: np.ndarray, axis: int = 0) -> np.ndarray:
    x = x - x.max(axis=axis, keepdims=True)
    ex = np.exp(x)
    return ex / ex.sum(axis=axis, keepdims=True)
