"""Narrow edge tensors reused unchanged are read in the CSR's entry order (gdsl.kernels.edge_order):
copied on their second use, never for a tensor seen once, and never stale."""
from __future__ import annotations

import gc

import pytest
import torch

import gdsl
import gdsl.function as fn
from gdsl import compiled
from gdsl.kernels import edge_order
from gdsl.kernels.edge_order import CAPACITY, MAX_ROW_BYTES, EntryOrderCopies, same_bits

pytest.importorskip("numba")


@pytest.fixture(autouse=True)
def _numba(tmp_path, monkeypatch):
    monkeypatch.setenv("GDSL_CACHE_DIR", str(tmp_path))
    with gdsl.use_backend("numba"):
        yield


def _graph(num_nodes=40, num_edges=300, seed=0):
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    dst = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    dst[:40] = 3  # a hub
    return gdsl.graph((src, dst), num_nodes=num_nodes), src, dst


# ------------------------------------------------------------------------------------------------
# The cache on its own
# ------------------------------------------------------------------------------------------------
def test_copied_on_the_second_sighting_in_entry_order():
    eids = torch.tensor([2, 0, 3, 1])
    copies = EntryOrderCopies(eids)
    w = torch.tensor([[10.0], [11.0], [12.0], [13.0]])
    assert copies.lookup(w) is None and len(copies) == 0
    copy = copies.lookup(w)
    assert torch.equal(copy, w[eids]) and len(copies) == 1
    assert copies.lookup(w) is copy  # made once


def test_views_of_the_same_memory_share_the_copy():
    eids = torch.tensor([1, 0, 2])
    copies = EntryOrderCopies(eids)
    w = torch.tensor([1.0, 2.0, 3.0])
    assert copies.lookup(w.view(-1, 1)) is None
    copy = copies.lookup(w.view(-1, 1))  # a new view object per call, same memory
    assert copy is not None and torch.equal(copy.flatten(), w[eids])


def test_an_in_place_change_is_never_read_stale():
    eids = torch.tensor([1, 0])
    copies = EntryOrderCopies(eids)
    w = torch.tensor([[1.0], [2.0]])
    copies.lookup(w)
    assert copies.lookup(w) is not None
    w.mul_(3)
    assert copies.lookup(w) is None  # changed: start over (seen once more)
    assert torch.equal(copies.lookup(w), torch.tensor([[6.0], [3.0]]))


def test_a_change_behind_the_version_counter_is_never_read_stale():
    """gradcheck perturbs its inputs through ``.data``, numpy views write behind torch's back."""
    eids = torch.tensor([1, 0, 2])
    copies = EntryOrderCopies(eids)
    w = torch.tensor([[1.0], [2.0], [float("nan")]])
    copies.lookup(w)
    assert copies.lookup(w) is not None
    assert copies.lookup(w) is not None  # NaN compares equal bit for bit
    w.data[0, 0] = 5.0
    assert copies.lookup(w) is None
    w.numpy()[1, 0] = 7.0
    copy = copies.lookup(w)
    w.numpy()[1, 0] = 8.0
    assert copies.lookup(w) is None
    assert torch.equal(copy[:2], torch.tensor([[7.0], [5.0]]))


def test_a_new_tensor_at_the_same_address_is_a_new_tensor():
    eids = torch.tensor([0, 1, 2, 3])
    copies = EntryOrderCopies(eids)
    storage = torch.zeros(8)
    a = storage[:4].view(4, 1)
    copies.lookup(a)
    assert copies.lookup(a) is not None
    b = torch.ones(4, 1)
    assert copies.lookup(b) is None and copies.lookup(b) is not None
    assert torch.equal(copies.lookup(b), torch.ones(4, 1))


def test_dead_tensors_and_capacity():
    copies = EntryOrderCopies(torch.arange(4), capacity=3)
    keep = [torch.rand(4, 1) for _ in range(5)]
    for w in keep:
        copies.lookup(w)
    assert len(copies._entries) == 3  # the least recently used dropped
    del keep, w
    gc.collect()
    assert len(copies._entries) == 0  # dropped with their tensors
    one = torch.rand(4, 1)
    copies.lookup(one)
    assert copies.lookup(one) is not None and len(copies) == 1
    del one
    assert len(copies._entries) == 0 and len(copies) == 0  # the copy freed at once


def test_only_narrow_float_rows_are_eligible():
    num_edges = 10
    assert EntryOrderCopies.eligible(torch.rand(num_edges), num_edges)
    assert EntryOrderCopies.eligible(torch.rand(num_edges, MAX_ROW_BYTES // 4), num_edges)
    assert not EntryOrderCopies.eligible(torch.rand(num_edges, MAX_ROW_BYTES // 4 + 1), num_edges)
    assert not EntryOrderCopies.eligible(torch.randint(0, 3, (num_edges, 1)), num_edges)
    assert not EntryOrderCopies.eligible(torch.rand(num_edges + 1, 1), num_edges)
    assert not EntryOrderCopies.eligible(torch.rand(0, 1), 0)


# ------------------------------------------------------------------------------------------------
# Through update_all
# ------------------------------------------------------------------------------------------------
def _u_mul_e_sum(g, h, w):
    with g.local_scope():
        g.ndata["h"] = h
        g.edata["w"] = w
        g.update_all(fn.u_mul_e("h", "w", "m"), fn.sum("m", "o"))
        return g.ndata["o"]


def _reference(src, dst, h, w, num_nodes):
    return torch.zeros(num_nodes, h.shape[1], dtype=h.dtype).index_add_(0, dst, h[src] * w)


@pytest.fixture
def launches(monkeypatch):
    """``(plan, by_position, to_position)`` of every compiled kernel launched in the test."""
    seen = []
    run = compiled.CompiledKernel.run

    def recorded(self, *args, **kwargs):
        seen.append((self.plan, self.by_position, self.to_position))
        return run(self, *args, **kwargs)
    monkeypatch.setattr(compiled.CompiledKernel, "run", recorded)
    return seen


def test_update_all_reads_a_static_weight_in_entry_order(launches):
    g, src, dst = _graph()
    h, w = torch.randn(40, 16), torch.rand(300, 1)
    for _ in range(3):
        torch.testing.assert_close(_u_mul_e_sum(g, h, w), _reference(src, dst, h, w, 40))
    assert [by for _, by, _ in launches] == [frozenset(), {"w"}, {"w"}]  # by id, then in order
    kernel = next(k for k in compiled._KERNELS.values() if k.plan is launches[1][0] and k.by_position)
    source = kernel.source.source
    assert "edge_w[j, 0]" in source and "e = nonneg(eids[j])" not in source
    w.mul_(2)  # in place: the next call must see it (and reads by id again)
    torch.testing.assert_close(_u_mul_e_sum(g, h, w), _reference(src, dst, h, w, 40))
    assert launches[-1][1] == frozenset()
    other = torch.rand(300, 1)  # a new tensor: read by edge id until reused
    torch.testing.assert_close(_u_mul_e_sum(g, h, other), _reference(src, dst, h, other, 40))
    torch.testing.assert_close(_u_mul_e_sum(g, h, other), _reference(src, dst, h, other, 40))


def test_gradients_with_a_static_weight(launches):
    g, src, dst = _graph(seed=1)
    w = torch.rand(300, 1, dtype=torch.float64, requires_grad=True)
    for step in range(3):
        h = torch.randn(40, 8, dtype=torch.float64, requires_grad=True)
        out = _u_mul_e_sum(g, h, w)
        gen = torch.Generator().manual_seed(step)
        weight = torch.randn(out.shape, generator=gen, dtype=torch.float64)
        grad_h, grad_w = torch.autograd.grad((out * weight).sum(), (h, w))
        h_ref = h.detach().requires_grad_()
        w_ref = w.detach().requires_grad_()
        ref_h, ref_w = torch.autograd.grad((_reference(src, dst, h_ref, w_ref, 40) * weight).sum(), (h_ref, w_ref))
        torch.testing.assert_close(grad_h, ref_h)
        torch.testing.assert_close(grad_w, ref_w)
    # the forward over the in-CSR and the backward over the out-CSR both read w in their order
    assert {(plan.rows, by) for plan, by, _ in launches[-3:] if by} == {("dst", frozenset({"w"})),
                                                                        ("src", frozenset({"w"}))}


# ------------------------------------------------------------------------------------------------
# Edge values handed between the kernels of a backward in their readers' entry order
# ------------------------------------------------------------------------------------------------
def _gat_message(edges):
    return {"m": edges.src["ft"], "e": torch.nn.functional.leaky_relu(edges.src["el"] + edges.dst["er"], 0.2)}


def _gat_reduce(nodes):
    return {"h": (torch.softmax(nodes.mailbox["e"], 1) * nodes.mailbox["m"]).sum(1)}


def _gat_grads(g, backend, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n = g.num_nodes()
    ft = torch.randn(n, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    el = torch.randn(n, 2, 1, generator=gen, dtype=torch.float64, requires_grad=True)
    er = torch.randn(n, 2, 1, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(n, 2, 3, generator=gen, dtype=torch.float64)
    with gdsl.use_backend(backend), g.local_scope():
        g.srcdata.update({"ft": ft, "el": el})
        g.dstdata["er"] = er
        g.update_all(_gat_message, _gat_reduce)
        out = g.dstdata["h"]
        grads = torch.autograd.grad((out * weight).sum(), (ft, el, er))
    return [out.detach(), *grads]


@pytest.mark.parametrize("formats", [None, ["csc"]])
def test_gat_backward_hands_its_edge_gradient_over_in_entry_order(formats, launches):
    """The out-CSR kernel writes the per-edge logit gradient in in-CSR order and the in-CSR kernel
    sums it in sequence; with only one compressed format kept (positions not cached) it stays in
    edge-id order. Either way the gradients are the reference's."""
    g, _, _ = _graph(seed=3)
    if formats is not None:
        g = g.formats(formats)
    expected = _gat_grads(g, "reference")
    got = _gat_grads(g, "numba")
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)
    writes = [to for _, _, to in launches if to]
    reads = [by for plan, by, _ in launches if by and plan.rows == "dst"]
    if formats is None:  # written by the out-CSR kernel, read by the in-CSR kernel
        assert len(writes) == 1 and writes[0] == reads[0]
    else:
        assert not writes and not reads


def test_a_reader_sent_to_tuning_gets_its_edge_values_back_in_id_order(monkeypatch):
    """Tuning candidates read edge values by id: when the writer ran untuned (its schedule forced,
    the value handed over in entry order) and the reader is tuned, the value is put back in id
    order first."""
    import dataclasses

    from gdsl import autotuning, scheduling
    g, _, _ = _graph(seed=4)
    expected = _gat_grads(g, "reference")
    real_choose = scheduling.choose

    def choose(kernel, backend, rel):
        choice = real_choose(kernel, backend, rel)
        return dataclasses.replace(choice, reason="forced") if kernel.rows == "src" else choice
    monkeypatch.setattr(compiled, "choose", choose)
    options = autotuning.Options(candidates=[gdsl.NumbaSchedule(parts_per_thread=2)], repeats=1, warmup=0,
                                 progress=False, store=False)
    with autotuning.session(options) as current:
        got = _gat_grads(g, "numba")
    assert any(t.kernel.rows == "dst" and t.direction == "backward" for t in current.results)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("use_memcmp", [True, False])
def test_same_bits_compares_bytes(monkeypatch, use_memcmp):
    """The unchanged-check compares bytes, not values: NaN equals the same NaN, 0.0 differs from
    -0.0, any single flipped bit is found; views that are not contiguous are compared too."""
    if not use_memcmp:
        monkeypatch.setattr(edge_order, "_MEMCMP", None)
    a = torch.randn(1000, 2)
    assert same_bits(a, a.clone())
    for i in (0, 517, 1999):
        b = a.clone()
        b.view(-1).view(torch.int32)[i] ^= 1  # one low bit
        assert not same_bits(a, b)
    nan = torch.tensor([float("nan"), 0.0])
    assert same_bits(nan, nan.clone())
    assert not same_bits(torch.tensor([0.0]), torch.tensor([-0.0]))
    assert not same_bits(a, a[:999].clone()) and not same_bits(a, a.double())
    assert same_bits(a.t(), a.clone().t()) and not same_bits(a.t(), (a + 1).t())
    assert same_bits(torch.empty(0), torch.empty(0))
