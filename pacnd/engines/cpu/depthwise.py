"""Depthwise PAC on tiles (Numba): ``Cin/groups == Cout/groups == 1``.

Shared filters, PAC pooling and bilateral-type filtering land here: no GEMM,
direct loops over contiguous output rows with K fused per tile (one K per
pixel and tap, reused across channels when K has one channel).

``Wc`` is the weight restricted to the class taps, ``(C, T_r)``. ``kmode`` as
in :mod:`pacnd.engines.cpu.tiles` (0 plain, 1 shared K, 2 per-channel K).
"""

import numpy as np
from numba import njit, prange

from .indexing import FASTMATH
from .tiles import input_row, output_row, tap_of

__all__ = ["dw_forward", "dw_backward"]


@njit(cache=True, fastmath=FASTMATH)
def _dw_row(it, x, Wc, bias, Kt, kmode, out, geo, cls, taps, r0, r1, c0, c1):
    nr = r1 - r0
    th_n, tw_n = cls[1, 3], cls[2, 3]
    t_n = cls[0, 3] * th_n * tw_n
    c = it // nr
    rr = it - c * nr
    kc = c * (kmode == 2)
    ncol = c1 - c0
    pb = rr * ncol - c0
    acc = np.zeros(ncol, dtype=out.dtype)
    for ti in range(t_n):
        tdi, thi, twi = tap_of(ti, th_n, tw_n)
        b, idd, ihh, ibw, isw, lo, hi = input_row(geo, cls, taps, r0 + rr, tdi, thi, twi, c0, c1)
        w = Wc[c, ti]
        if kmode == 0:
            for j in range(lo, hi):
                acc[j - c0] += w * x[b, c, idd, ihh, ibw + j * isw]
        else:
            for j in range(lo, hi):
                acc[j - c0] += w * Kt[kc, ti, pb + j] * x[b, c, idd, ihh, ibw + j * isw]
    b, od, oh, o0w, osw = output_row(cls, r0 + rr)
    bv = bias[c]
    for j in range(c0, c1):
        out[b, c, od, oh, o0w + j * osw] = acc[j - c0] + bv


@njit(parallel=True, cache=True)
def dw_forward(x, Wc, bias, Kt, kmode, out, geo, cls, taps, r0, r1, c0, c1):
    """``out[b, c, pixel] = bias[c] + sum_ti Wc[c, ti] K[kc, ti, p] x[b, c, in(p, ti)]``."""
    for it in prange(x.shape[1] * (r1 - r0)):
        _dw_row(it, x, Wc, bias, Kt, kmode, out, geo, cls, taps, r0, r1, c0, c1)


@njit(cache=True, fastmath=FASTMATH)
def _dw_channel_grads(c, gout, x, Wc, Kt, kmode, gx, gWc, need_x, need_w,
                      geo, cls, taps, r0, r1, c0, c1):
    th_n, tw_n = cls[1, 3], cls[2, 3]
    t_n = cls[0, 3] * th_n * tw_n
    kc = c * (kmode == 2)
    ncol = c1 - c0
    g = np.empty(ncol, dtype=x.dtype)
    for rr in range(r1 - r0):
        b, od, oh, o0w, osw = output_row(cls, r0 + rr)
        pb = rr * ncol - c0
        for j in range(c0, c1):
            g[j - c0] = gout[b, c, od, oh, o0w + j * osw]
        for ti in range(t_n):
            tdi, thi, twi = tap_of(ti, th_n, tw_n)
            b, idd, ihh, ibw, isw, lo, hi = input_row(geo, cls, taps, r0 + rr, tdi, thi, twi,
                                                      c0, c1)
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
                        gx[b, c, idd, ihh, ibw + j * isw] += w * Kt[kc, ti, pb + j] * g[j - c0]
                if need_w:
                    for j in range(lo, hi):
                        sw += g[j - c0] * Kt[kc, ti, pb + j] * x[b, c, idd, ihh, ibw + j * isw]
            gWc[c, ti] += sw


@njit(cache=True, fastmath=FASTMATH)
def _dw_k_row(it, gout, x, Wc, kmode, gKt, geo, cls, taps, r0, r1, c0, c1):
    nr = r1 - r0
    th_n, tw_n = cls[1, 3], cls[2, 3]
    ti = it // nr
    rr = it - ti * nr
    tdi, thi, twi = tap_of(ti, th_n, tw_n)
    b, idd, ihh, ibw, isw, lo, hi = input_row(geo, cls, taps, r0 + rr, tdi, thi, twi, c0, c1)
    b, od, oh, o0w, osw = output_row(cls, r0 + rr)
    pb = rr * (c1 - c0) - c0
    for c in range(x.shape[1]):
        kc = c * (kmode == 2)
        w = Wc[c, ti]
        for j in range(lo, hi):
            gKt[kc, ti, pb + j] += w * gout[b, c, od, oh, o0w + j * osw] * x[
                b, c, idd, ihh, ibw + j * isw]


@njit(parallel=True, cache=True)
def dw_backward(gout, x, Wc, Kt, kmode, gx, gWc, gKt, need_x, need_w, need_k,
                geo, cls, taps, r0, r1, c0, c1):
    """Input, weight and K gradients of :func:`dw_forward` for one tile.

    ``gx`` (B, C, *in) and ``gWc`` (C, T_r, float64) accumulate, one channel
    per thread; ``gKt`` (Ck, T_r, npix) accumulates, one (tap, row) per
    iteration.
    """
    if need_x or need_w:
        for c in prange(x.shape[1]):
            _dw_channel_grads(c, gout, x, Wc, Kt, kmode, gx, gWc, need_x, need_w,
                              geo, cls, taps, r0, r1, c0, c1)
    if need_k:
        t_n = cls[0, 3] * cls[1, 3] * cls[2, 3]
        for it in prange(t_n * (r1 - r0)):
            _dw_k_row(it, gout, x, Wc, kmode, gKt, geo, cls, taps, r0, r1, c0, c1)
