"""Depthwise PAC on tiles (Numba): ``Cin/groups == Cout/groups == 1``.

Shared filters, PAC pooling and bilateral-type filtering land here: no GEMM,
direct loops over contiguous output rows with K fused per tile (one K per
pixel and tap, reused across channels when K has one channel).

``Wc`` is the weight restricted to the class taps, ``(C, T_r)``. ``kmode`` as
in :mod:`pacnd.engines.cpu.tiles` (0 plain, 1 shared K, 2 per-channel K).
"""

import numpy as np
from numba import njit, prange

from .indexing import FASTMATH, add_row, load_row, store_row
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
    acc = np.zeros(ncol, dtype=out.dtype)
    for ti in range(t_n):
        tdi, thi, twi = tap_of(ti, th_n, tw_n)
        b, idd, ihh, ibw, isw, lo, hi = input_row(geo, cls, taps, r0 + rr, tdi, thi, twi, c0, c1)
        n = hi - lo
        if n == 0:
            continue
        w = Wc[c, ti]
        xs = load_row(x[b, c, idd, ihh], ibw, isw, lo, hi)
        accs = acc[lo - c0:hi - c0]
        if kmode == 0:
            for j in range(n):
                accs[j] += w * xs[j]
        else:
            a = rr * ncol + lo - c0
            ks = Kt[kc, ti][a:a + n]
            for j in range(n):
                accs[j] += w * ks[j] * xs[j]
    b, od, oh, o0w, osw = output_row(cls, r0 + rr)
    bv = bias[c]
    for j in range(ncol):
        acc[j] += bv
    store_row(out[b, c, od, oh], o0w, osw, c0, acc)


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
    buf = np.empty(ncol, dtype=x.dtype)
    for rr in range(r1 - r0):
        b, od, oh, o0w, osw = output_row(cls, r0 + rr)
        g = load_row(gout[b, c, od, oh], o0w, osw, c0, c1)
        for ti in range(t_n):
            tdi, thi, twi = tap_of(ti, th_n, tw_n)
            b, idd, ihh, ibw, isw, lo, hi = input_row(geo, cls, taps, r0 + rr, tdi, thi, twi,
                                                      c0, c1)
            n = hi - lo
            if n == 0:
                continue
            w = Wc[c, ti]
            gs = g[lo - c0:hi - c0]
            vals = buf[:n]
            if kmode == 0:
                for j in range(n):
                    vals[j] = gs[j]
            else:
                a = rr * ncol + lo - c0
                ks = Kt[kc, ti][a:a + n]
                for j in range(n):
                    vals[j] = gs[j] * ks[j]
            if need_w:
                xs = load_row(x[b, c, idd, ihh], ibw, isw, lo, hi)
                sw = 0.0
                for j in range(n):
                    sw += vals[j] * xs[j]
                gWc[c, ti] += sw
            if need_x:
                for j in range(n):
                    vals[j] *= w
                add_row(gx[b, c, idd, ihh], ibw, isw, lo, vals)


@njit(cache=True, fastmath=FASTMATH)
def _dw_k_row(it, gout, x, Wc, kmode, gKt, geo, cls, taps, r0, r1, c0, c1):
    nr = r1 - r0
    th_n, tw_n = cls[1, 3], cls[2, 3]
    ti = it // nr
    rr = it - ti * nr
    ncol = c1 - c0
    tdi, thi, twi = tap_of(ti, th_n, tw_n)
    b, idd, ihh, ibw, isw, lo, hi = input_row(geo, cls, taps, r0 + rr, tdi, thi, twi, c0, c1)
    n = hi - lo
    if n == 0:
        return
    b, od, oh, o0w, osw = output_row(cls, r0 + rr)
    a = rr * ncol + lo - c0
    for c in range(x.shape[1]):
        kc = c * (kmode == 2)
        w = Wc[c, ti]
        gk = gKt[kc, ti][a:a + n]
        gs = load_row(gout[b, c, od, oh], o0w, osw, lo, hi)
        xs = load_row(x[b, c, idd, ihh], ibw, isw, lo, hi)
        for j in range(n):
            gk[j] += w * gs[j] * xs[j]


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
