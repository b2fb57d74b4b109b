"""Explicit SIMD vectors for the Numba kernels: 256-bit ``<N x float>`` values.

LLVM's auto-vectoriser handles streaming loops well but cannot register-block
a matrix product: an accumulator tile kept in a Numba array lives in memory,
so every multiply-add becomes a load and a store. The intrinsics below expose
LLVM vector values to ``njit`` code (a :class:`Vec` is an SSA value that
LLVM keeps in a register), so :mod:`pacnd.engines.cpu.gemm` can hold a 4 x 3
block of vector accumulators in registers, like a BLAS micro-kernel.

Vectors are 32 bytes wide: 8 float32 or 4 float64 lanes (:func:`lanes`).
On CPUs without 256-bit registers LLVM splits them into narrower ones, so the
code stays portable; ``fmuladd`` fuses only where the CPU has FMA.

* :func:`vload` / :func:`vstore` — ``lanes`` consecutive elements of a
  contiguous array at a flat element offset (unaligned, no bounds check:
  callers guarantee the range);
* :func:`vsplat` — a scalar broadcast to every lane; :func:`vbroadcast` — an
  array element broadcast; :func:`vzeros` — zeros;
* :func:`vfma` — ``a * b + c`` (``llvm.fmuladd``); :func:`vmul`, :func:`vadd`,
  :func:`vsub`, :func:`vmax`;
* :func:`prefetch` — a hint to fetch an array element's cache line (no load,
  no fault).
"""

from llvmlite import ir
from llvmlite.binding import llvm_version_info as _llvm_version_info
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

__all__ = ["Vec", "VEC_BYTES", "lanes", "vload", "vstore", "vsplat", "vbroadcast", "vzeros",
           "vfma", "vmul", "vadd", "vsub", "vmax", "prefetch"]

#: Width of one vector in bytes (AVX2 registers).
VEC_BYTES = 32


class Vec(types.Type):
    """A SIMD vector of ``VEC_BYTES // itemsize`` lanes of a float dtype."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.width = VEC_BYTES // (dtype.bitwidth // 8)
        super().__init__(name=f"Vec({dtype}x{self.width})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        be_type = ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), fe_type.width)
        super().__init__(dmm, fe_type, be_type)


def _float(ty):
    return isinstance(ty, types.Float)


def _vec_ptr(context, builder, arrty, arr, idx, idxty, vecty):
    ary = context.make_array(arrty)(context, builder, arr)
    i = context.cast(builder, idx, idxty, types.intp)
    ptr = builder.gep(ary.data, [i])
    return builder.bitcast(ptr, ir.PointerType(context.get_value_type(vecty)))


def _splat(builder, vty, x, width):
    undef = ir.Constant(vty, ir.Undefined)
    one = builder.insert_element(undef, x, ir.Constant(ir.IntType(32), 0))
    mask = ir.Constant(ir.VectorType(ir.IntType(32), width), [0] * width)
    return builder.shuffle_vector(one, undef, mask)


@intrinsic
def vload(typingctx, arr, idx):
    """``arr.flat[idx:idx + lanes]`` as a vector (``arr`` C-contiguous)."""
    if not (isinstance(arr, types.Array) and _float(arr.dtype) and isinstance(idx, types.Integer)):
        return None
    vt = Vec(arr.dtype)

    def codegen(context, builder, sig, args):
        p = _vec_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1], vt)
        ld = builder.load(p)
        ld.align = vt.dtype.bitwidth // 8
        return ld

    return vt(arr, idx), codegen


@intrinsic
def vstore(typingctx, arr, idx, v):
    """``arr.flat[idx:idx + lanes] = v``."""
    if not (isinstance(arr, types.Array) and isinstance(v, Vec) and arr.dtype == v.dtype
            and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        p = _vec_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1], sig.args[2])
        st = builder.store(args[2], p)
        st.align = sig.args[2].dtype.bitwidth // 8
        return context.get_dummy_value()

    return types.none(arr, idx, v), codegen


@intrinsic
def vsplat(typingctx, x):
    """A vector whose lanes all equal the float scalar ``x``."""
    if not _float(x):
        return None
    vt = Vec(x)

    def codegen(context, builder, sig, args):
        return _splat(builder, context.get_value_type(vt), args[0], vt.width)

    return vt(x), codegen


@intrinsic
def vbroadcast(typingctx, arr, idx):
    """``arr.flat[idx]`` broadcast to every lane (no negative-index wrap-around)."""
    if not (isinstance(arr, types.Array) and _float(arr.dtype) and isinstance(idx, types.Integer)):
        return None
    vt = Vec(arr.dtype)

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        i = context.cast(builder, args[1], sig.args[1], types.intp)
        x = builder.load(builder.gep(ary.data, [i]))
        return _splat(builder, context.get_value_type(vt), x, vt.width)

    return vt(arr, idx), codegen


@intrinsic
def vzeros(typingctx, arr):
    """The zero vector of ``arr``'s dtype."""
    if not (isinstance(arr, types.Array) and _float(arr.dtype)):
        return None
    vt = Vec(arr.dtype)

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(vt), None)

    return vt(arr), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """``a * b + c`` lane-wise (fused where the CPU has FMA)."""
    if not (isinstance(a, Vec) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(sig.return_type)
        suffix = "v%df%d" % (sig.return_type.width, sig.return_type.dtype.bitwidth)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3),
                                            "llvm.fmuladd." + suffix)
        return builder.call(fn, list(args))

    return a(a, b, c), codegen


def _binop_codegen(name):
    def codegen(context, builder, sig, args):
        return getattr(builder, name)(*args)
    return codegen


@intrinsic
def vmul(typingctx, a, b):
    """``a * b`` lane-wise."""
    if not (isinstance(a, Vec) and a == b):
        return None
    return a(a, b), _binop_codegen("fmul")


@intrinsic
def vadd(typingctx, a, b):
    """``a + b`` lane-wise."""
    if not (isinstance(a, Vec) and a == b):
        return None
    return a(a, b), _binop_codegen("fadd")


@intrinsic
def vsub(typingctx, a, b):
    """``a - b`` lane-wise."""
    if not (isinstance(a, Vec) and a == b):
        return None
    return a(a, b), _binop_codegen("fsub")


@intrinsic
def vmax(typingctx, a, b):
    """``max(a, b)`` lane-wise (``llvm.maxnum``: a NaN lane takes the other operand)."""
    if not (isinstance(a, Vec) and a == b):
        return None

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(sig.return_type)
        suffix = "v%df%d" % (sig.return_type.width, sig.return_type.dtype.bitwidth)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 2),
                                            "llvm.maxnum." + suffix)
        return builder.call(fn, list(args))

    return a(a, b), codegen


#: ``llvm.prefetch`` as LLVM >= 17 names it (opaque pointers: ``.p0``). Older LLVMs (numba
#: 0.60's llvmlite 0.43 is LLVM 14) mangle it by pointee type; there :func:`prefetch` emits
#: nothing rather than risk a misnamed intrinsic (a prefetch is only a hint).
_PREFETCH = "llvm.prefetch.p0" if _llvm_version_info[0] >= 17 else None


@intrinsic
def prefetch(typingctx, arr, idx):
    """Hint the CPU to fetch the cache line of ``arr.flat[idx]`` (``llvm.prefetch``, read,
    kept in all cache levels; nothing on LLVM < 17). Callers still pass in-bounds indices
    only."""
    if not (isinstance(arr, types.Array) and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        if _PREFETCH is None:
            return context.get_dummy_value()
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        i = context.cast(builder, args[1], sig.args[1], types.intp)
        p = builder.bitcast(builder.gep(ary.data, [i]), ir.PointerType(ir.IntType(8)))
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [p.type, i32, i32, i32]),
            _PREFETCH)
        builder.call(fn, [p, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.none(arr, idx), codegen


@intrinsic
def lanes(typingctx, arr):
    """Lanes of a vector of ``arr``'s dtype (8 for float32, 4 for float64), a
    compile-time constant."""
    if not (isinstance(arr, types.Array) and _float(arr.dtype)):
        return None
    width = Vec(arr.dtype).width

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, width)

    return types.intp(arr), codegen


@njit(cache=True)
def _selftest(a, b, c, out):  # used by the tests: out = a*b + c, one vector at a time
    n = lanes(out)
    for i in range(0, out.shape[0] - n + 1, n):
        vstore(out, i, vfma(vload(a, i), vload(b, i), vload(c, i)))
    s = vsplat(a[0])
    vstore(out, 0, vfma(s, vload(b, 0), vload(c, 0)))

