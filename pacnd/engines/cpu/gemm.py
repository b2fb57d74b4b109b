"""Register-blocked matrix-product micro-kernels (Numba + :mod:`.simd`).

The dense PAC forward (:mod:`pacnd.engines.cpu.dense`) multiplies a group's
weight matrix ``(Cout/g, Kd)`` (``Kd = Cin/g * T_r``) by K-weighted input
columns ``(Kd, npix)``. Instead of materialising the columns of a whole tile
and handing them to BLAS, it packs them one *panel* of :func:`nr` pixels at a
time (``Kd * nr`` values, L2-resident) and runs this micro-kernel on the
panel for every block of :data:`MR` output channels: a ``MR x nr``
accumulator block (12 vector registers) stays in registers for the whole
``Kd`` loop, each step loading 3 vectors of the panel and broadcasting
``MR`` weights — the structure of a BLAS ``sgemm`` kernel, without a
column matrix in memory and with the K-weighting fused into the packing.

Layouts (flat, C order):

* packed weights ``Wp[g, ob, k, i]`` = ``W_g[ob*MR + i, k]`` (0 for the
  padding rows ``ob*MR + i >= Cout/g``), see :func:`pack_weights`;
* a panel ``Bp[k, j]`` (``j < nr``);
* the result block ``cbuf[i, j]``.

The backward (:mod:`pacnd.engines.cpu.dense_vjp`) runs the same kernel for
``G = W^T @ gout`` (weights packed transposed, the output gradient as the
panel) and :func:`micro_kernel_w` for the weight gradient, whose reduction
runs over pixels.
"""

import numpy as np
from numba import njit

from .indexing import FASTMATH
from .simd import VEC_BYTES, lanes, vadd, vbroadcast, vfma, vload, vstore, vzeros

__all__ = ["MR", "KC", "nr", "pack_rows", "pack_weights", "micro_kernel", "micro_kernel_2", "MRW",
           "NVW", "nrw", "micro_kernel_w"]

#: Output channels per micro-kernel block.
MR = 4
#: Vectors of pixels per micro-kernel block.
NR_VECS = 3
#: Rows of a panel packed and multiplied at a time: the panel block and the
#: weights it meets stay in the L1 cache.
KC = 128


def nr(dtype):
    """Pixels per panel for ``dtype`` (24 for float32, 12 for float64)."""
    return NR_VECS * VEC_BYTES // np.dtype(dtype).itemsize


def pack_rows(M):
    """``M`` (G, rows, Kd) -> flat ``[g, ob, k, i] = M[g, ob*MR + i, k]`` (0 past the rows)
    and the number of row blocks ``nob`` per ``g``."""
    G, rows, kd = M.shape
    nob = -(-rows // MR)
    P = np.zeros((G, nob * MR, kd), dtype=M.dtype)
    P[:, :rows] = M
    P = P.reshape(G, nob, MR, kd).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(P).reshape(-1), nob


def pack_weights(W3, groups, tap_ids):
    """``W3`` (Cout, Cin/g, T) restricted to ``tap_ids`` -> flat ``Wp`` (see module doc),
    columns tap-major: ``k = ti*Cin/g + c``.

    Returns ``(Wp, nob)``: ``nob`` blocks of :data:`MR` output channels per group.
    """
    cout, cin_g = W3.shape[:2]
    W = W3[:, :, tap_ids].transpose(0, 2, 1).reshape(groups, cout // groups,
                                                      len(tap_ids) * cin_g)
    return pack_rows(W)


@njit(cache=True, fastmath=FASTMATH)
def micro_kernel(Wp, wo, Bp, bo, ldb, kdim, cbuf, co, ldc, accumulate):
    """``cbuf[co + i*ldc + j] (+)= sum_k Wp[wo + k*MR + i] * Bp[bo + k*ldb + j]``
    (MR x nr); ``accumulate`` adds to the block instead of overwriting it."""
    vw = lanes(Bp)
    if accumulate:
        c00 = vload(cbuf, co)
        c01 = vload(cbuf, co + vw)
        c02 = vload(cbuf, co + 2 * vw)
        c10 = vload(cbuf, co + ldc)
        c11 = vload(cbuf, co + ldc + vw)
        c12 = vload(cbuf, co + ldc + 2 * vw)
        c20 = vload(cbuf, co + 2 * ldc)
        c21 = vload(cbuf, co + 2 * ldc + vw)
        c22 = vload(cbuf, co + 2 * ldc + 2 * vw)
        c30 = vload(cbuf, co + 3 * ldc)
        c31 = vload(cbuf, co + 3 * ldc + vw)
        c32 = vload(cbuf, co + 3 * ldc + 2 * vw)
    else:
        z = vzeros(Bp)
        c00 = c01 = c02 = c10 = c11 = c12 = c20 = c21 = c22 = c30 = c31 = c32 = z
    for k in range(kdim):
        bb = bo + k * ldb
        b0 = vload(Bp, bb)
        b1 = vload(Bp, bb + vw)
        b2 = vload(Bp, bb + 2 * vw)
        w = wo + k * MR
        a = vbroadcast(Wp, w)
        c00 = vfma(a, b0, c00)
        c01 = vfma(a, b1, c01)
        c02 = vfma(a, b2, c02)
        a = vbroadcast(Wp, w + 1)
        c10 = vfma(a, b0, c10)
        c11 = vfma(a, b1, c11)
        c12 = vfma(a, b2, c12)
        a = vbroadcast(Wp, w + 2)
        c20 = vfma(a, b0, c20)
        c21 = vfma(a, b1, c21)
        c22 = vfma(a, b2, c22)
        a = vbroadcast(Wp, w + 3)
        c30 = vfma(a, b0, c30)
        c31 = vfma(a, b1, c31)
        c32 = vfma(a, b2, c32)
    vstore(cbuf, co, c00)
    vstore(cbuf, co + vw, c01)
    vstore(cbuf, co + 2 * vw, c02)
    vstore(cbuf, co + ldc, c10)
    vstore(cbuf, co + ldc + vw, c11)
    vstore(cbuf, co + ldc + 2 * vw, c12)
    vstore(cbuf, co + 2 * ldc, c20)
    vstore(cbuf, co + 2 * ldc + vw, c21)
    vstore(cbuf, co + 2 * ldc + 2 * vw, c22)
    vstore(cbuf, co + 3 * ldc, c30)
    vstore(cbuf, co + 3 * ldc + vw, c31)
    vstore(cbuf, co + 3 * ldc + 2 * vw, c32)


@njit(cache=True, fastmath=FASTMATH)
def micro_kernel_2(Wp, wo, Bp, bo, ldb, kdim, cbuf, co, ldc, accumulate):
    """:func:`micro_kernel` for a panel of two vectors of pixels (``MR x 2*lanes``).

    For the last panel of a row segment when at most two vectors of its pixels
    are real (a 256-pixel row is ten panels and 16 pixels): a third vector of
    padding would cost a third of the panel's multiply-adds. Eight
    accumulators, as many as the multiply-add latency needs.
    """
    vw = lanes(Bp)
    if accumulate:
        c00 = vload(cbuf, co)
        c01 = vload(cbuf, co + vw)
        c10 = vload(cbuf, co + ldc)
        c11 = vload(cbuf, co + ldc + vw)
        c20 = vload(cbuf, co + 2 * ldc)
        c21 = vload(cbuf, co + 2 * ldc + vw)
        c30 = vload(cbuf, co + 3 * ldc)
        c31 = vload(cbuf, co + 3 * ldc + vw)
    else:
        z = vzeros(Bp)
        c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = z
    for k in range(kdim):
        bb = bo + k * ldb
        b0 = vload(Bp, bb)
        b1 = vload(Bp, bb + vw)
        w = wo + k * MR
        a = vbroadcast(Wp, w)
        c00 = vfma(a, b0, c00)
        c01 = vfma(a, b1, c01)
        a = vbroadcast(Wp, w + 1)
        c10 = vfma(a, b0, c10)
        c11 = vfma(a, b1, c11)
        a = vbroadcast(Wp, w + 2)
        c20 = vfma(a, b0, c20)
        c21 = vfma(a, b1, c21)
        a = vbroadcast(Wp, w + 3)
        c30 = vfma(a, b0, c30)
        c31 = vfma(a, b1, c31)
    vstore(cbuf, co, c00)
    vstore(cbuf, co + vw, c01)
    vstore(cbuf, co + ldc, c10)
    vstore(cbuf, co + ldc + vw, c11)
    vstore(cbuf, co + 2 * ldc, c20)
    vstore(cbuf, co + 2 * ldc + vw, c21)
    vstore(cbuf, co + 3 * ldc, c30)
    vstore(cbuf, co + 3 * ldc + vw, c31)


#: Rows of the broadcast operand in a weight-gradient block (:func:`micro_kernel_w`).
MRW = 6
#: Vectors of the weight-gradient block's columns (output channels).
NVW = 2


def nrw(dtype):
    """Output channels per weight-gradient block: 16 for float32, 8 for float64."""
    return NVW * VEC_BYTES // np.dtype(dtype).itemsize


@njit(cache=True, fastmath=FASTMATH)
def micro_kernel_w(A, ao, lda, Bt, bo, ldb, kdim, C, co, ldc):
    """``C[co + i*ldc + j] += sum_p A[ao + i*lda + p] * Bt[bo + p*ldb + j]`` (MRW x NVW*lanes).

    The weight gradient's product ``gW^T (Kd, Cout) += cols (Kd, npix) @
    gout^T (npix, Cout)``: ``A`` holds :data:`MRW` rows of K-weighted columns
    (``lda`` apart, pixels contiguous), ``Bt`` the transposed output gradient
    (pixels ``ldb`` apart, output channels contiguous); the reduction runs over
    the ``kdim`` pixels with the ``MRW x NVW`` vector block in registers, and
    the block is added to ``C`` once at the end.
    """
    vw = lanes(Bt)
    z = vzeros(Bt)
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = z
    a0, a1, a2, a3, a4, a5 = ao, ao + lda, ao + 2 * lda, ao + 3 * lda, ao + 4 * lda, ao + 5 * lda
    for p in range(kdim):
        bb = bo + p * ldb
        b0 = vload(Bt, bb)
        b1 = vload(Bt, bb + vw)
        a = vbroadcast(A, a0 + p)
        c00 = vfma(a, b0, c00)
        c01 = vfma(a, b1, c01)
        a = vbroadcast(A, a1 + p)
        c10 = vfma(a, b0, c10)
        c11 = vfma(a, b1, c11)
        a = vbroadcast(A, a2 + p)
        c20 = vfma(a, b0, c20)
        c21 = vfma(a, b1, c21)
        a = vbroadcast(A, a3 + p)
        c30 = vfma(a, b0, c30)
        c31 = vfma(a, b1, c31)
        a = vbroadcast(A, a4 + p)
        c40 = vfma(a, b0, c40)
        c41 = vfma(a, b1, c41)
        a = vbroadcast(A, a5 + p)
        c50 = vfma(a, b0, c50)
        c51 = vfma(a, b1, c51)
    vstore(C, co, vadd(vload(C, co), c00))
    vstore(C, co + vw, vadd(vload(C, co + vw), c01))
    vstore(C, co + ldc, vadd(vload(C, co + ldc), c10))
    vstore(C, co + ldc + vw, vadd(vload(C, co + ldc + vw), c11))
    vstore(C, co + 2 * ldc, vadd(vload(C, co + 2 * ldc), c20))
    vstore(C, co + 2 * ldc + vw, vadd(vload(C, co + 2 * ldc + vw), c21))
    vstore(C, co + 3 * ldc, vadd(vload(C, co + 3 * ldc), c30))
    vstore(C, co + 3 * ldc + vw, vadd(vload(C, co + 3 * ldc + vw), c31))
    vstore(C, co + 4 * ldc, vadd(vload(C, co + 4 * ldc), c40))
    vstore(C, co + 4 * ldc + vw, vadd(vload(C, co + 4 * ldc + vw), c41))
    vstore(C, co + 5 * ldc, vadd(vload(C, co + 5 * ldc), c50))
    vstore(C, co + 5 * ldc + vw, vadd(vload(C, co + 5 * ldc + vw), c51))

