"""Dense-groups PAC forward (Numba): K, K-weighted panels and the product, fused.

One parallel work unit is a segment of one output row of a tap class (see
:mod:`pacnd.engines.cpu.layout`), at most :data:`pacnd.engines.cpu.indexing.COL_BLOCK`
pixels. Per unit:

1. K of the segment, ``Kt[kc, ti, j]``: computed from the guide
   (:func:`pacnd.engines.cpu.adapting.kernel_unit`, mask and normalisation
   fused), copied from a precomputed K, or absent (plain convolution);
2. per tap, the input row it reads and the columns where that row exists;
3. per group and panel of :func:`pacnd.engines.cpu.gemm.nr` pixels: pack
   ``Bp[cl*T_r + ti, j] = K[kc, ti, j] * x[b, c, in(j, ti)]`` (0 off the
   input), then for every block of ``MR`` output channels run
   :func:`pacnd.engines.cpu.gemm.micro_kernel` and write ``block + bias``
   to the output.

Working memory per thread is one K segment and one panel (``Cin/g * T_r *
nr`` values), independent of the image; no column matrix exists.
"""

import numpy as np
from numba import njit, prange

from .adapting import kernel_unit
from .gemm import MR, NR_VECS, micro_kernel
from .indexing import COL_BLOCK, FASTMATH, decode_row, jrange
from .simd import lanes, vload, vmul, vstore
from .tiles import tap_of

__all__ = ["dense_forward", "chunking"]


def chunking(ncol, panel):
    """(units per row, columns per unit): balanced segments of at most ``COL_BLOCK``
    columns, whole panels where possible."""
    per_row = -(-ncol // COL_BLOCK)
    width = -(-ncol // per_row)
    width = min(COL_BLOCK, -(-width // panel) * panel)
    return -(-ncol // width), width


@njit(cache=True, fastmath=FASTMATH)
def _segment_k(Kt, ksrc, Kfull, tap_ids, guide, mask, geo, cls, taps, r, ja, jb, opt, alpha,
               lam, cst):
    """K of row ``r``, columns ``[ja, jb)`` into ``Kt`` (Ck, T_r, jb - ja)."""
    if ksrc == 1:
        kernel_unit(0, 1, guide, mask, geo, cls, taps, r, ja, jb, opt, alpha, lam, cst,
                    Kt, Kt, Kt, False)
        return
    b, jd, jh = decode_row(r, cls[0, 2], cls[1, 2])
    od = cls[0, 0] + jd * cls[0, 1]
    oh = cls[1, 0] + jh * cls[1, 1]
    o0w, osw = cls[2, 0], cls[2, 1]
    for k in range(Kt.shape[0]):
        for ti in range(Kt.shape[1]):
            src = Kfull[b, k, tap_ids[ti], od, oh]
            dst = Kt[k, ti]
            for j in range(jb - ja):
                dst[j] = src[o0w + (ja + j) * osw]


@njit(cache=True, fastmath=FASTMATH)
def _pack_panel(Bp, xf, Ktf, kmode, j0, ja, m, c_start, cin_g, t_n, cstride, xoff, lo, hi, isw):
    """``Bp[cl*T_r + ti, j] = K * x`` for the panel's columns ``j0 + j`` (0 off the input)."""
    vw = lanes(Bp)
    n = NR_VECS * vw
    for cl in range(cin_g):
        c = c_start + cl
        kc = c if kmode == 2 else 0
        for ti in range(t_n):
            dst = (cl * t_n + ti) * n
            l_, h_ = lo[ti], hi[ti]
            src = xoff[ti] + c * cstride
            koff = (kc * t_n + ti) * m - ja
            if isw == 1 and l_ <= j0 and j0 + n <= h_:
                for v in range(NR_VECS):
                    xv = vload(xf, src + j0 + v * vw)
                    if kmode != 0:
                        xv = vmul(xv, vload(Ktf, koff + j0 + v * vw))
                    vstore(Bp, dst + v * vw, xv)
            else:
                a = min(max(l_ - j0, 0), n)
                e = min(max(h_ - j0, a), n)
                for j in range(a):
                    Bp[dst + j] = 0
                for j in range(e, n):
                    Bp[dst + j] = 0
                xs = src + (j0 + a) * isw
                if kmode != 0:
                    ks = koff + j0 + a
                    for j in range(e - a):
                        Bp[dst + a + j] = xf[xs + j * isw] * Ktf[ks + j]
                else:
                    for j in range(e - a):
                        Bp[dst + a + j] = xf[xs + j * isw]


@njit(cache=True, fastmath=FASTMATH)
def _dense_unit(u, per_row, width, xf, x_shape, Wp, nob, bias, kmode, ksrc, ck, Kfull, tap_ids,
                guide, mask, geo, cls, taps, opt, alpha, lam, cst, groups, outf, out_shape):
    r = u // per_row
    ja = (u - r * per_row) * width
    jb = min(ja + width, cls[2, 2])
    m = jb - ja
    th_n, tw_n = cls[1, 3], cls[2, 3]
    t_n = cls[0, 3] * th_n * tw_n
    dt = xf.dtype
    vw = lanes(xf)
    n = NR_VECS * vw
    cin, cin_g = x_shape[1], x_shape[1] // groups
    cout_g = out_shape[1] // groups
    kdim = cin_g * t_n
    # 1. K of the segment
    Ktf = np.empty(ck * t_n * m if kmode != 0 else 0, dtype=dt)
    if kmode != 0:
        _segment_k(Ktf.reshape((ck, t_n, m)), ksrc, Kfull, tap_ids, guide, mask, geo, cls,
                   taps, r, ja, jb, opt, alpha, lam, cst)
    # 2. per tap: flat offset of the input row it reads (channel 0) and its columns
    b, jd, jh = decode_row(r, cls[0, 2], cls[1, 2])
    in_d, in_h, in_w = x_shape[2], x_shape[3], x_shape[4]
    cstride = in_d * in_h * in_w
    isw = cls[2, 4]
    xoff = np.zeros(t_n, dtype=np.int64)
    lo = np.zeros(t_n, dtype=np.int64)
    hi = np.zeros(t_n, dtype=np.int64)
    for ti in range(t_n):
        tdi, thi, twi = tap_of(ti, th_n, tw_n)
        idd = taps[0, tdi, 1] + jd * cls[0, 4]
        ihh = taps[1, thi, 1] + jh * cls[1, 4]
        ibw = taps[2, twi, 1]
        if 0 <= idd < in_d and 0 <= ihh < in_h:
            l_, h_ = jrange(ibw, isw, in_w, ja, jb)
            lo[ti] = l_
            hi[ti] = h_
            xoff[ti] = ((b * cin * in_d + idd) * in_h + ihh) * in_w + ibw
    # 3. panels x output-channel blocks
    od = cls[0, 0] + jd * cls[0, 1]
    oh = cls[1, 0] + jh * cls[1, 1]
    o0w, osw = cls[2, 0], cls[2, 1]
    cout = out_shape[1]
    ostride = out_shape[2] * out_shape[3] * out_shape[4]
    orow = ((b * cout * out_shape[2] + od) * out_shape[3] + oh) * out_shape[4] + o0w
    Bp = np.empty(kdim * n, dtype=dt)
    cbuf = np.empty(MR * n, dtype=dt)
    for g in range(groups):
        for j0 in range(ja, jb, n):
            _pack_panel(Bp, xf, Ktf, kmode, j0, ja, m, g * cin_g, cin_g, t_n, cstride, xoff,
                        lo, hi, isw)
            ncols = min(n, jb - j0)
            for ob in range(nob):
                micro_kernel(Wp, ((g * nob + ob) * kdim) * MR, Bp, 0, kdim, cbuf)
                for i in range(min(MR, cout_g - ob * MR)):
                    oc = g * cout_g + ob * MR + i
                    bv = bias[oc]
                    dst = orow + oc * ostride + j0 * osw
                    for j in range(ncols):
                        outf[dst + j * osw] = cbuf[i * n + j] + bv


@njit(parallel=True, cache=True)
def dense_forward(xf, x_shape, Wp, nob, bias, kmode, ksrc, ck, Kfull, tap_ids, guide, mask, geo,
                  cls, taps, opt, alpha, lam, cst, groups, width, outf, out_shape):
    """Forward of one tap class into the flat output ``outf`` (see module doc).

    ``xf``/``outf``: the flat C-contiguous 5-D input and output, shapes
    ``x_shape``/``out_shape``; ``Wp``/``nob`` from
    :func:`pacnd.engines.cpu.gemm.pack_weights`; ``kmode`` 0 (no K), 1 (one
    K channel), 2 (one per input channel); ``ksrc`` 1 (from ``guide``) or 2
    (precomputed ``Kfull`` (B, Ck, T, *out), class taps ``tap_ids``); ``width``
    columns per unit (:func:`chunking`).
    """
    per_row = (cls[2, 2] + width - 1) // width
    nrows = x_shape[0] * cls[0, 2] * cls[1, 2]
    for u_ in prange(nrows * per_row):
        u = np.int64(u_)  # one body specialisation (prange indices are unsigned)
        _dense_unit(u, per_row, width, xf, x_shape, Wp, nob, bias, kmode, ksrc, ck, Kfull,
                    tap_ids, guide, mask, geo, cls, taps, opt, alpha, lam, cst, groups, outf,
                    out_shape)
