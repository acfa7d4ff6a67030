"""Small numba intrinsics used by generated kernels: ``prefetch`` / ``prefetch_write``, ``opaque``
(a value LLVM cannot see), ``nonneg`` (a non-negative promise), ``stack_empty`` (stack scratch),
``dropout_keep`` and ``exp32`` (a vectorisable float32 exp); each says why below.

``prefetch(array, row, col)`` / ``prefetch_write(array, row, col)`` hint the CPU to bring the cache
line holding ``array[row, col]`` (a 2-D array) into cache (``llvm.prefetch``; a hint, it never
faults). Generated gather kernels prefetch the feature rows of the edge a few entries ahead: a
message is a short computation on a random row, so without it one row's memory latency is paid per
edge once the per-edge code is longer than the out-of-order window.
"""
from __future__ import annotations

from llvmlite import binding, ir
from numba.core import cgutils, types
from numba.extending import intrinsic


# The intrinsic's name carries its pointer type: opaque pointers from LLVM 15 on.
_PREFETCH = "llvm.prefetch.p0" if binding.llvm_version_info >= (15,) else "llvm.prefetch.p0i8"


def _prefetch_codegen(rw: int):
    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        row = context.cast(builder, args[1], signature.args[1], types.intp)
        col = context.cast(builder, args[2], signature.args[2], types.intp)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [row, col], wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, _PREFETCH)
        # (address, rw: 0 read / 1 write, locality 3: keep in all cache levels, 1: data cache)
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(rw), i32(3), i32(1)])
        return context.get_dummy_value()
    return codegen


def _check(arr, row, col):
    return (isinstance(arr, types.Array) and arr.ndim == 2 and isinstance(row, types.Integer)
            and isinstance(col, types.Integer))


@intrinsic
def prefetch(typingctx, arr, row, col):
    """Prefetch ``arr[row, col]`` for reading."""
    if not _check(arr, row, col):
        return None
    return types.void(arr, row, col), _prefetch_codegen(0)


@intrinsic
def prefetch_write(typingctx, arr, row, col):
    """Prefetch ``arr[row, col]`` for writing."""
    if not _check(arr, row, col):
        return None
    return types.void(arr, row, col), _prefetch_codegen(1)


# ------------------------------------------------------------------------------------------------
# A value the optimiser cannot see
# ------------------------------------------------------------------------------------------------
@intrinsic
def opaque(typingctx, value):
    """``value`` (an integer) returned through an empty inline-assembly statement, so that LLVM
    treats it as unknown. Generated kernels bound their 16-48-wide feature loops with it: with a
    constant trip count LLVM unrolls such a loop fully and, unable to prove that the output row and
    the gathered input rows do not overlap, leaves it scalar; with an unknown count it vectorises
    the loop behind a runtime overlap check (copy_u+sum 200k/5M D=32 forward: 46 -> 31 ms)."""
    if not isinstance(value, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        number = context.cast(builder, args[0], signature.args[0], types.int64)
        i64 = ir.IntType(64)
        return builder.asm(ir.FunctionType(i64, [i64]), "", "=r,0", [number], side_effect=False)
    return types.int64(value), codegen


@intrinsic
def nonneg(typingctx, value):
    """``value`` (an integer), with the promise to LLVM that it is not negative (``llvm.assume``).
    Generated kernels wrap the CSR offsets and node / edge ids they load with it: numba indexes
    arrays with Python's negative-index wraparound, a compare and add per index per access, which
    the promise removes (ids and offsets are checked to be in range before a kernel runs)."""
    if not isinstance(value, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        number = args[0]
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [ir.IntType(1)]),
                                            "llvm.assume")
        builder.call(fn, [builder.icmp_signed(">=", number, number.type(0))])
        return number
    return value(value), codegen


@intrinsic
def stack_empty(typingctx, size, dtype):
    """A pointer to ``size`` (a literal) uninitialised elements of ``dtype`` on the stack of the
    function that calls it; ``numba.carray(stack_empty(n, t), n)`` views it as an array.
    Generated kernels keep their per-row accumulators and scratch there: LLVM knows stack memory
    is disjoint from every array argument, so loops over it vectorise without overlap checks and
    short ones become vector registers (heap scratch from ``np.empty`` could alias the inputs)."""
    if not isinstance(size, types.IntegerLiteral) or not isinstance(dtype, (types.DType, types.NumberClass)):
        return None
    elem = dtype.dtype

    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, context.get_data_type(elem), size=size.literal_value)
    return types.CPointer(elem)(size, dtype), codegen


# ------------------------------------------------------------------------------------------------
# Dropout bits (gdsl.kernels.random, the same arithmetic)
# ------------------------------------------------------------------------------------------------
from numba import njit  # noqa: E402

from . import random as _random  # noqa: E402
from .random import MASK32  # noqa: E402

_mix = njit(inline="always", cache=True)(_random.mix)  # the same function torch's version runs


@njit(inline="always", cache=True)
def dropout_keep(seed, stream, eid, flat, width, threshold):
    """Whether element ``flat`` of edge ``eid`` survives dropout (gdsl.kernels.random.keep_bits)."""
    counter = (eid * width + flat) & MASK32
    return _mix(counter ^ _mix((seed + stream * _random.STREAM) & MASK32)) >= threshold


# ------------------------------------------------------------------------------------------------
# A float32 exp LLVM can vectorise
# ------------------------------------------------------------------------------------------------
_EXP_LO, _EXP_HI = -87.33654, 88.72283  # exp underflows below (to 0) / overflows above
_LN2_HI, _LN2_LO = 0.693359375, -2.12194440e-4  # ln 2 = hi + lo, hi exact in a few bits
_ROUND = 12582912.0  # 1.5 * 2**23: float32 sums with it keep no fraction
_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
             5.0000001201e-1)  # Cephes' expf coefficients, highest degree first


@intrinsic
def exp32(typingctx, x):
    """``exp(x)`` for a float32 ``x``, within 1 ulp of the exact value (results that would be
    subnormal are 0; inf, -inf and NaN as expf). numba lowers ``np.exp`` on float32 to a call of
    the C library's ``expf``, which LLVM cannot vectorise: with 8 heads a softmax kernel spent most
    of its time in 8 scalar calls per edge. This emits straight-line arithmetic and selects
    instead, so a loop over heads or features becomes vector code: ``x = n ln2 + r`` (n rounded,
    ln2 split in two so that ``n ln2`` is exact, |r| <= ln2/2), ``exp(r)`` by a degree-7
    polynomial, times ``2**n`` assembled in the exponent bits (``2**128`` as ``2**127 * 2``).
    Multiply-adds are ``llvm.fmuladd`` (one fused instruction where the CPU has FMA, halving the
    polynomial's latency) and n is rounded by adding 1.5 * 2**23 instead of a floor: where a
    kernel computes one exp per edge outside any vector loop (a softmax backward), the exp's
    latency is what the edge loop waits on. GAT H=1 D=8 at 100k/1M on an AMD EPYC, kernels timed
    alternately: backward 7.1 -> 6.5 ms, forward 4.1 -> 3.7 ms (at most 0.99 ulp from the exact
    value; Estrin's form of the polynomial ran no faster and reached 1.01 ulp).
    An intrinsic rather than an inlined jitted function: it adds no numba-level inlining and
    re-typing to every kernel's compile time."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[0], signature.args[0], types.float32)
        f32, i32 = ir.FloatType(), ir.IntType(32)

        def const(number: float) -> ir.Constant:
            return ir.Constant(f32, number)

        fmuladd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f32, [f32, f32, f32]),
                                                 "llvm.fmuladd.f32")

        def fma(a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
            return builder.call(fmuladd, [a, b, c])

        below = builder.fcmp_ordered("<", value, const(_EXP_LO))
        above = builder.fcmp_ordered(">", value, const(_EXP_HI))
        clamped = builder.select(below, const(_EXP_LO), builder.select(above, const(_EXP_HI), value))
        # n = x / ln2 rounded to the nearest integer: added to 1.5 * 2**23, the fraction is rounded off
        n = builder.fsub(fma(clamped, const(1.4426950408889634), const(_ROUND)), const(_ROUND))
        r = fma(n, const(-_LN2_HI), clamped)
        r = fma(n, const(-_LN2_LO), r)
        r2 = builder.fmul(r, r)
        c = [const(coefficient) for coefficient in _EXP_POLY]
        p = c[0]
        for coefficient in c[1:]:
            p = fma(p, r, coefficient)
        y = builder.fadd(fma(p, r2, r), const(1.0))
        top = builder.fcmp_ordered(">", n, const(127.0))
        exponent = builder.fptosi(builder.select(top, const(127.0), n), i32)
        scale = builder.bitcast(builder.shl(builder.add(exponent, ir.Constant(i32, 127)), ir.Constant(i32, 23)), f32)
        y = builder.fmul(y, scale)
        y = builder.select(top, builder.fmul(y, const(2.0)), y)
        y = builder.select(below, const(0.0), y)
        y = builder.select(above, const(float("inf")), y)
        return builder.select(builder.fcmp_unordered("uno", value, value), value, y)
    return types.float32(x), codegen
