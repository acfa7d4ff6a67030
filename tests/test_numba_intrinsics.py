"""The numba intrinsics generated kernels call: the vectorisable float32 exp, the opaque bound, the
non-negative promise and stack arrays; and the SLP switch for their compilation."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

numba = pytest.importorskip("numba")

from gdsl.kernels.numba_intrinsics import exp32, opaque  # noqa: E402


@numba.njit(cache=False)
def _exp_loop(x, out):
    """exp32 in a loop to an opaque bound: the vectorised form generated kernels run."""
    n = opaque(x.shape[0])
    for i in range(n):
        out[i] = exp32(x[i])


@numba.njit(cache=False)
def _exp_scalar(x):
    return exp32(x)


def _exp(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    _exp_loop(x, out)
    return out


def _ulps(got: np.ndarray, x: np.ndarray) -> np.ndarray:
    exact = np.exp(x.astype(np.float64))
    return np.abs(got.astype(np.float64) - exact) / np.spacing(exact.astype(np.float32)).astype(np.float64)


def test_exp32_within_one_ulp_over_the_normal_range():
    x = np.linspace(-87.33, 88.72, 2_000_001, dtype=np.float32)
    got = _exp(x)
    assert got.dtype == np.float32
    assert _ulps(got, x).max() <= 1.0


@settings(max_examples=200, deadline=None)
@given(st.floats(-87.25, 88.5, width=32))
def test_exp32_scalar_matches_the_vector_loop(x):
    value = np.float32(x)
    vector = _exp(np.array([value], dtype=np.float32))[0]
    scalar = _exp_scalar(value)
    assert scalar == vector
    assert _ulps(np.array([scalar]), np.array([value]))[0] <= 1.0


def test_exp32_special_values():
    x = np.array([0.0, -0.0, 1.0, -np.inf, np.inf, np.nan, -1e30, 1e30, -87.34, -100.0, 88.73, 89.0,
                  88.72, -87.33], dtype=np.float32)
    got = _exp(x)
    assert got[0] == 1.0 and got[1] == 1.0
    assert got[2] == np.float32(np.e)
    assert got[3] == 0.0 and got[4] == np.inf and np.isnan(got[5])
    assert got[6] == 0.0 and got[7] == np.inf
    assert got[8] == 0.0 and got[9] == 0.0        # results below the normal range flush to 0
    assert got[10] == np.inf and got[11] == np.inf  # above float32's largest: inf, as expf
    assert np.isfinite(got[12]) and got[12] > 3.3e38  # just below it: finite (2**128 is split)
    assert 1.17e-38 < got[13] < 1.3e-38


def test_opaque_returns_its_value():
    @numba.njit(cache=False)
    def twice(n):
        return opaque(n) * 2

    assert twice(21) == 42


def test_nonneg_returns_its_value():
    from gdsl.kernels.numba_intrinsics import nonneg

    @numba.njit(cache=False)
    def pick(a, i):
        return a[nonneg(i)]

    a = np.arange(10.0)
    assert pick(a, 0) == 0.0 and pick(a, 7) == 7.0 and pick(a, np.int32(9)) == 9.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.bool_])
def test_stack_empty_is_a_private_writable_array(dtype):
    """A per-call stack array: values written are read back, and two arrays do not share memory."""
    from gdsl.kernels.numba_intrinsics import stack_empty

    @numba.njit(cache=False)
    def roundtrip(x):
        a = numba.carray(stack_empty(16, x.dtype), 16)
        b = numba.carray(stack_empty(16, x.dtype), 16)
        for f in range(16):
            a[f] = x[f]
            b[f] = x[15 - f]
        out = np.empty((2, 16), x.dtype)
        for f in range(16):
            out[0, f] = a[f]
            out[1, f] = b[f]
        return out

    x = (np.arange(16) % 3 == 0).astype(dtype) if dtype is np.bool_ else np.arange(16).astype(dtype) * 3
    got = roundtrip(x)
    assert np.array_equal(got[0], x) and np.array_equal(got[1], x[::-1])


def test_kernels_compile_with_slp_and_restore_the_setting():
    """Generated kernels compile with LLVM's SLP vectoriser on; numba's global setting is left as
    it was for everyone else's code."""
    from numba.core import config

    from gdsl.kernels.numba_runtime import _compile_with_slp

    seen = []

    @numba.njit(cache=False)
    def add(a, b):
        return a + b

    inner = add._compile_for_args

    def spy(*args, **kwargs):
        seen.append(config.SLP_VECTORIZE)
        return inner(*args, **kwargs)
    add._compile_for_args = spy
    before = config.SLP_VECTORIZE
    _compile_with_slp(add)
    assert _compile_with_slp(add) is add  # wrapped once
    assert add(1.5, 2.0) == 3.5 and add(2, 3) == 5  # two signatures, two compilations
    assert seen == [1, 1] and config.SLP_VECTORIZE == before
