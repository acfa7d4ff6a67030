"""The CPU output-buffer pool: reuse only once nothing views a buffer, caps, and kernels on it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import gdsl
import gdsl.function as fn
from gdsl.kernels import buffers
from gdsl.kernels.buffers import MIN_BYTES, BufferPool

ROWS = 4096  # 4096 x 128 float32 = 2 MiB: above the pooling threshold
WIDTH = 128


def _pool(cap_mb: float = 64) -> BufferPool:
    return BufferPool(cap_bytes=int(cap_mb * 2**20))


@pytest.mark.parametrize("nbytes", [0, 8, 1000, MIN_BYTES, 3 * MIN_BYTES + 12])
def test_arrays_start_on_a_page_boundary(nbytes):
    """Pooled or not, fresh or reused: a 64-byte feature row must not straddle two cache lines."""
    pool = _pool()
    for _ in range(3):
        a = pool.empty((nbytes // 4,), np.float32)
        assert a.nbytes == nbytes // 4 * 4
        assert a.ctypes.data % buffers.ALIGN == 0 or nbytes < 4  # (an empty array has no bytes to place)
        assert a.flags.c_contiguous and a.flags.writeable
        del a


def test_shape_dtype_and_contiguity():
    pool = _pool()
    for dtype in (np.float32, np.float64, np.int64):
        a = pool.empty((ROWS, WIDTH), dtype)
        assert a.shape == (ROWS, WIDTH) and a.dtype == dtype and a.flags.c_contiguous
        assert a.ctypes.data % 8 == 0


def test_not_reused_while_a_tensor_views_it():
    pool = _pool()
    first = torch.from_numpy(pool.empty((ROWS, WIDTH), np.float32)).reshape(ROWS, WIDTH)
    first.fill_(1.0)
    second = pool.empty((ROWS, WIDTH), np.float32)
    assert second.ctypes.data != first.data_ptr()
    second[...] = 2.0
    assert torch.all(first == 1.0)
    assert pool.hits == 0 and pool.misses == 2


def test_reused_after_the_tensor_is_gone():
    pool = _pool()
    first = torch.from_numpy(pool.empty((ROWS, WIDTH), np.float32))
    address = first.data_ptr()
    del first
    again = pool.empty((ROWS, WIDTH), np.float32)
    assert again.ctypes.data == address and pool.hits == 1


@pytest.mark.parametrize("keep", ["view", "slice", "numpy", "saved_for_backward", "numpy_base"])
def test_every_kind_of_reference_keeps_it_busy(keep):
    pool = _pool()
    array = pool.empty((ROWS, WIDTH), np.float32)
    tensor = torch.from_numpy(array)
    address = tensor.data_ptr()
    if keep == "view":
        holder = tensor.view(-1)
    elif keep == "slice":
        holder = tensor[ROWS // 2:]
    elif keep == "numpy":
        holder = tensor.numpy()
    elif keep == "numpy_base":
        holder = array[1:]
    else:
        weight = torch.ones(WIDTH, requires_grad=True)
        tensor.fill_(1.0)
        holder = tensor * weight  # mul saves ``tensor`` for the gradient to ``weight``
    del tensor, array
    other = pool.empty((ROWS, WIDTH), np.float32)
    assert other.ctypes.data != address
    del holder
    third = pool.empty((ROWS, WIDTH), np.float32)
    assert third.ctypes.data == address


def test_close_sizes_share_a_buffer_and_far_ones_do_not():
    pool = _pool()
    big = torch.from_numpy(pool.empty((ROWS, WIDTH), np.float32))
    address = big.data_ptr()
    del big
    smaller = pool.empty((ROWS - 100, WIDTH), np.float32)  # within 25%: a view of the front
    assert smaller.ctypes.data == address and smaller.shape == (ROWS - 100, WIDTH)
    del smaller
    half = pool.empty((ROWS // 2, WIDTH), np.float32)
    assert half.ctypes.data != address


def test_small_arrays_are_not_pooled():
    pool = _pool()
    rows = MIN_BYTES // (4 * WIDTH) - 1
    a = pool.empty((rows, WIDTH), np.float32)
    assert a.shape == (rows, WIDTH) and pool.held_bytes == 0


def test_cap_bounds_what_the_pool_holds():
    pool = _pool(cap_mb=5)  # room for two 2 MiB buffers
    arrays = [pool.empty((ROWS, WIDTH), np.float32) for _ in range(4)]
    assert all(a.shape == (ROWS, WIDTH) for a in arrays)
    assert pool.held_bytes <= 5 * 2**20
    del arrays
    # idle buffers make room for a new size
    other = pool.empty((ROWS * 2, WIDTH), np.float32)
    assert other.shape == (ROWS * 2, WIDTH) and pool.held_bytes <= 5 * 2**20


def test_cap_zero_disables(monkeypatch):
    monkeypatch.setenv("GDSL_BUFFER_CACHE_MB", "0")
    pool = BufferPool()
    a = pool.empty((ROWS, WIDTH), np.float32)
    del a
    pool.empty((ROWS, WIDTH), np.float32)
    assert pool.held_bytes == 0 and pool.hits == 0


def test_empty_cache_forgets_idle_buffers():
    pool = _pool()
    a = pool.empty((ROWS, WIDTH), np.float32)
    del a
    assert pool.idle_bytes() == ROWS * WIDTH * 4 + buffers.ALIGN
    pool.clear()
    assert pool.held_bytes == 0
    gdsl.empty_cache()  # the process-wide pool
    assert buffers.POOL.held_bytes == 0


def test_kernel_outputs_kept_by_the_user_are_never_overwritten():
    """update_all twice on the pooled path: a result the user holds keeps its values."""
    n, e = 5000, 40000
    gen = torch.Generator().manual_seed(0)
    src, dst = torch.randint(0, n, (e,), generator=gen), torch.randint(0, n, (e,), generator=gen)
    g = gdsl.graph((src, dst), num_nodes=n)
    h1, h2 = torch.randn(n, WIDTH, generator=gen), torch.randn(n, WIDTH, generator=gen)
    expected1 = torch.zeros(n, WIDTH).index_add_(0, dst, h1[src])
    expected2 = torch.zeros(n, WIDTH).index_add_(0, dst, h2[src])
    with gdsl.use_backend("numba"):
        g.ndata["h"] = h1
        g.update_all(fn.copy_u("h", "m"), fn.sum("m", "a"))
        kept = g.ndata["a"]
        for _ in range(3):  # later calls reuse the buffers of results nobody holds
            g.ndata["h"] = h2
            g.update_all(fn.copy_u("h", "m"), fn.sum("m", "b"))
            got = g.ndata.pop("b")
            torch.testing.assert_close(got, expected2, rtol=1e-5, atol=1e-4)
            del got
    torch.testing.assert_close(kept, expected1, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("layout", ["broadcast", "slice", "transpose"])
def test_non_contiguous_inputs_are_staged_in_pooled_buffers(layout):
    """A non-contiguous feature (the broadcast gradient of ``out.sum()``, a column slice, a
    transpose) is copied into a pooled buffer, with its values, not into a fresh allocation."""
    n, e = 5000, 40000
    gen = torch.Generator().manual_seed(1)
    src, dst = torch.randint(0, n, (e,), generator=gen), torch.randint(0, n, (e,), generator=gen)
    g = gdsl.graph((src, dst), num_nodes=n)
    if layout == "broadcast":
        h = torch.full((1, WIDTH), 0.5).expand(n, WIDTH)
    elif layout == "slice":
        h = torch.randn(n, 2 * WIDTH, generator=gen)[:, 1::2]
    else:
        h = torch.randn(WIDTH, n, generator=gen).t()
    assert not h.is_contiguous()
    expected = torch.zeros(n, WIDTH).index_add_(0, dst, h[src])
    with gdsl.use_backend("numba"):
        for _ in range(2):  # the first call may compile and fill the pool
            g.ndata["h"] = h
            g.update_all(fn.copy_u("h", "m"), fn.sum("m", "a"))
            torch.testing.assert_close(g.ndata.pop("a"), expected, rtol=1e-5, atol=1e-4)
        hits, misses = buffers.POOL.hits, buffers.POOL.misses
        g.ndata["h"] = h
        g.update_all(fn.copy_u("h", "m"), fn.sum("m", "a"))
        torch.testing.assert_close(g.ndata.pop("a"), expected, rtol=1e-5, atol=1e-4)
    assert buffers.POOL.misses == misses and buffers.POOL.hits == hits + 2  # staged input + output
