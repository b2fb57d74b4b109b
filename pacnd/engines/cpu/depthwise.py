"""Depthwise PAC on tiles (Numba): ``Cin/groups == Cout/groups == 1``.

Shared filters, PAC pooling and bilateral-type filtering land here: no GEMM,
direct loops over contiguous output rows with K fused per tile (one K per
pixel and tap, reused across channels when K has one channel).

``Wc`` is the weight restricted to the class taps, ``(C, T_r)``. ``kmode`` as
in :mod:`pacnd.engines.cpu.tiles` (0 plain, 1 shared K, 2 per-channel K).
"""

import numpy as np
from numba import njit, prange

from .indexing import FASTMATH, decode_row, jrange
from .tiles import _tap_of

__all__ = ["dw_forward", "dw_backward"]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dw_forward(x, Wc, bias, Kt, kmode, out, geo, cls, taps, r0, r1, c0, c1):
    """``out[b, c, pixel] = bias[c] + sum_ti Wc[c, ti] K[kc, ti, p] x[b, c, in(p, ti)]``."""
    c_n = x.shape[1]
    nd, nh = cls[0, 2], cls[1, 2]
    th_n, tw_n = cls[1, 3], cls[2, 3]
    t_n = cls[0, 3] * th_n * tw_n
    isd, ish, isw = cls[0, 4], cls[1, 4], cls[2, 4]
    o0w, osw = cls[2, 0], cls[2, 1]
    nr = r1 - r0
    ncol = c1 - c0
    for it in prange(c_n * nr):
        c = it // nr
        rr = it - c * nr
        kc = c * (kmode == 2)
        b, jd, jh = decode_row(r0 + rr, nd, nh)
        pb = rr * ncol - c0
        acc = np.zeros(ncol, dtype=out.dtype)
        for ti in range(t_n):
            tdi, thi, twi = _tap_of(ti, th_n, tw_n)
            idd = taps[0, tdi, 1] + jd * isd
            ihh = taps[1, thi, 1] + jh * ish
            if not (0 <= idd < geo[0, 0] and 0 <= ihh < geo[0, 1]):
                continue
            ibw = taps[2, twi, 1]
            lo, hi = jrange(ibw, isw, geo[0, 2], c0, c1)
            w = Wc[c, ti]
            if kmode == 0:
                for j in range(lo, hi):
                    acc[j - c0] += w * x[b, c, idd, ihh, ibw + j * isw]
            else:
                for j in range(lo, hi):
                    acc[j - c0] += w * Kt[kc, ti, pb + j] * x[b, c, idd, ihh, ibw + j * isw]
        od = cls[0, 0] + jd * cls[0, 1]
        oh = cls[1, 0] + jh * cls[1, 1]
        bv = bias[c]
        for j in range(c0, c1):
            out[b, c, od, oh, o0w + j * osw] = acc[j - c0] + bv


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dw_backward(gout, x, Wc, Kt, kmode, gx, gWc, gKt, need_x, need_w, need_k,
                geo, cls, taps, r0, r1, c0, c1):
    """Input, weight and K gradients of :func:`dw_forward` for one tile.

    ``gx`` (B, C, *in) and ``gWc`` (C, T_r, float64) accumulate; ``gKt``
    (Ck, T_r, npix) accumulates.
    """
    c_n = x.shape[1]
    nd, nh = cls[0, 2], cls[1, 2]
    th_n, tw_n = cls[1, 3], cls[2, 3]
    t_n = cls[0, 3] * th_n * tw_n
    isd, ish, isw = cls[0, 4], cls[1, 4], cls[2, 4]
    o0w, osw = cls[2, 0], cls[2, 1]
    nr = r1 - r0
    ncol = c1 - c0
    if need_x or need_w:
        for c in prange(c_n):
            kc = c * (kmode == 2)
            g = np.empty(ncol, dtype=x.dtype)
            for rr in range(nr):
                b, jd, jh = decode_row(r0 + rr, nd, nh)
                od = cls[0, 0] + jd * cls[0, 1]
                oh = cls[1, 0] + jh * cls[1, 1]
                pb = rr * ncol - c0
                for j in range(c0, c1):
                    g[j - c0] = gout[b, c, od, oh, o0w + j * osw]
                for ti in range(t_n):
                    tdi, thi, twi = _tap_of(ti, th_n, tw_n)
                    idd = taps[0, tdi, 1] + jd * isd
                    ihh = taps[1, thi, 1] + jh * ish
                    if not (0 <= idd < geo[0, 0] and 0 <= ihh < geo[0, 1]):
                        continue
                    ibw = taps[2, twi, 1]
                    lo, hi = jrange(ibw, isw, geo[0, 2], c0, c1)
                    w = Wc[c, ti]
                    sw = 0.0
                    if kmode == 0:
                        if need_x:
                            for j in range(lo, hi):
                                gx[b, c, idd, ihh, ibw + j * isw] += w * g[j - c0]
                        if need_w:
                            for j in range(lo, hi):
                                sw += g[j - c0] * x[b, c, idd, ihh, ibw + j * isw]
                    else:
                        if need_x:
                            for j in range(lo, hi):
                                gx[b, c, idd, ihh, ibw + j * isw] += (
                                    w * Kt[kc, ti, pb + j] * g[j - c0])
                        if need_w:
                            for j in range(lo, hi):
                                sw += g[j - c0] * Kt[kc, ti, pb + j] * x[b, c, idd, ihh,
                                                                         ibw + j * isw]
                    gWc[c, ti] += sw
    if need_k:
        for it in prange(t_n * nr):
            ti = it // nr
            rr = it - ti * nr
            tdi, thi, twi = _tap_of(ti, th_n, tw_n)
            b, jd, jh = decode_row(r0 + rr, nd, nh)
            idd = taps[0, tdi, 1] + jd * isd
            ihh = taps[1, thi, 1] + jh * ish
            if not (0 <= idd < geo[0, 0] and 0 <= ihh < geo[0, 1]):
                continue
            ibw = taps[2, twi, 1]
            lo, hi = jrange(ibw, isw, geo[0, 2], c0, c1)
            od = cls[0, 0] + jd * cls[0, 1]
            oh = cls[1, 0] + jh * cls[1, 1]
            pb = rr * ncol - c0
            for ch in range(c_n):
                kk = ch * (kmode == 2)
                wk = Wc[ch, ti]
                for j in range(lo, hi):
                    gKt[kk, ti, pb + j] += wk * gout[b, ch, od, oh, o0w + j * osw] * x[
                        b, ch, idd, ihh, ibw + j * isw]
