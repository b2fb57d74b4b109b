"""A vectorisable ``exp`` for the Numba kernels.

Numba lowers ``math.exp`` to a libm call, which LLVM cannot vectorise without
SVML; the adapting-kernel loops spend most of their time there. :func:`vexp` is
plain arithmetic (Cody-Waite range reduction, a Taylor polynomial, the power
of two assembled from its bits), so loops calling it vectorise.

Accuracy: float64 within ~2 ulp (degree-12 polynomial on ``|r| <= ln2/2``),
float32 within ~2 ulp (degree 6). Results below the smallest denormal are 0,
like libm; the argument is clamped to ``[-104, 88]`` (float32) or
``[-746, 709]`` (float64), so very large arguments saturate instead of giving
``inf`` (PAC only needs ``x <= 0``).
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

__all__ = ["vexp"]


@intrinsic
def _i64_as_f64(typingctx, i):
    if i != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def _i32_as_f32(typingctx, i):
    if not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        v = args[0]
        if signature.args[0].bitwidth > 32:
            v = builder.trunc(v, ir.IntType(32))
        elif signature.args[0].bitwidth < 32:
            v = builder.sext(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(i), codegen


def vexp(x):  # pragma: no cover - replaced by the overload inside njit code
    """``exp(x)`` (pure-Python fallback; Numba uses the overload below)."""
    return np.exp(x)


_LOG2E = 1.4426950408889634
_LN2_HI64 = 6.93147180369123816490e-01
_LN2_LO64 = 1.90821492927058770002e-10
_LN2_HI32 = np.float32(0.693145751953125)
_LN2_LO32 = np.float32(1.428606765330187e-06)


@overload(vexp, fastmath=False)
def _vexp_ov(x):
    if x == types.float32:
        lo, hi = np.float32(-104.0), np.float32(88.0)
        log2e = np.float32(_LOG2E)
        half = np.float32(0.5)
        one = np.float32(1.0)
        c2, c3, c4 = np.float32(1 / 2), np.float32(1 / 6), np.float32(1 / 24)
        c5, c6 = np.float32(1 / 120), np.float32(1 / 720)

        def impl32(x):
            x = min(max(x, lo), hi)
            nf = np.floor(x * log2e + half)
            r = (x - nf * _LN2_HI32) - nf * _LN2_LO32
            p = one + r * (one + r * (c2 + r * (c3 + r * (c4 + r * (c5 + r * c6)))))
            n = np.int32(nf)
            n1 = n >> 1
            n2 = n - n1
            s1 = _i32_as_f32((n1 + 127) << 23)
            s2 = _i32_as_f32((n2 + 127) << 23)
            return p * s1 * s2

        return impl32
    if x == types.float64:
        cs = [1.0 / float(np.prod(np.arange(1, i + 1))) for i in range(13)]
        c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12 = cs

        def impl64(x):
            x = min(max(x, -746.0), 709.0)
            nf = np.floor(x * _LOG2E + 0.5)
            r = (x - nf * _LN2_HI64) - nf * _LN2_LO64
            p = c0 + r * (c1 + r * (c2 + r * (c3 + r * (c4 + r * (c5 + r * (c6 + r * (
                c7 + r * (c8 + r * (c9 + r * (c10 + r * (c11 + r * c12)))))))))))
            n = np.int64(nf)
            n1 = n >> np.int64(1)
            n2 = n - n1
            s1 = _i64_as_f64((n1 + np.int64(1023)) << np.int64(52))
            s2 = _i64_as_f64((n2 + np.int64(1023)) << np.int64(52))
            return p * s1 * s2

        return impl64
    return None


@njit(cache=True)
def _selftest(xs, out):  # used by the tests
    for i in range(xs.shape[0]):
        out[i] = vexp(xs[i])
