"""Depthwise PAC on tiles (Numba): ``Cin/groups == Cout/groups == 1``.

Shared filters, PAC pooling and bilateral-type filtering land here: no GEMM,
direct loops over contiguous output rows with K fused per tile (one K per
pixel and tap, reused across channels when K has one channel).

``Wc`` is the weight restricted to the class taps, ``(C, T_r)``. ``kmode`` as
as in :mod:`pacnd.engines.cpu.dense` (0 plain, 1 shared K, 2 per-channel K).
"""

import numpy as np
from numba import njit

from .indexing import (COL_BLOCK, FASTMATH, add_row, decode_row, input_row, jrange, load_row,
                       output_row, store_row, tap_of, unit_of)
from .distances import centre_features, tap_d2
from .kernel_rows import phi_row, tap_validity
from .threads import claim, parallel_for

__all__ = ["dw_forward", "dw_forward_fused", "dw_backward"]


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
        if w == 0:
            continue
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


@njit(nogil=True, cache=True)
def _dw_rows(tid, ctl, n, x, Wc, bias, Kt, kmode, out, geo, cls, taps, r0, r1, c0, c1):
    it = claim(ctl, tid)
    while it < n:
        _dw_row(it, x, Wc, bias, Kt, kmode, out, geo, cls, taps, r0, r1, c0, c1)
        it = claim(ctl, tid)


def dw_forward(x, Wc, bias, Kt, kmode, out, geo, cls, taps, r0, r1, c0, c1):
    """``out[b, c, pixel] = bias[c] + sum_ti Wc[c, ti] K[kc, ti, p] x[b, c, in(p, ti)]``,
    one unit per (channel, row) on :func:`.threads.parallel_for`."""
    parallel_for(_dw_rows, x.shape[1] * (r1 - r0), x, Wc, bias, Kt, kmode, out, geo, cls, taps,
                 r0, r1, c0, c1)


@njit(cache=True, fastmath=FASTMATH)
def _fused_unit(u, nblk, x, Wc, bias, guide, mask, geo, cls, taps, r0, c0, c1, opt, alpha,
                lam, cst, out):
    kind, normalize, masked, has_mask = opt[0], opt[3], opt[4], opt[5]
    cg_n = guide.shape[1]
    c_n = x.shape[1]
    td_n, th_n, tw_n = cls[0, 3], cls[1, 3], cls[2, 3]
    gsd, gsh, gsw = cls[0, 5], cls[1, 5], cls[2, 5]
    isd, ish, isw = cls[0, 4], cls[1, 4], cls[2, 4]
    idn, ihn, iwn = geo[0, 0], geo[0, 1], geo[0, 2]
    floor = cst[4]
    r, ja, jb, pb = unit_of(u, nblk, r0, c0, c1)
    m = jb - ja
    b, jd, jh = decode_row(r, cls[0, 2], cls[1, 2])
    f0, dedge2 = centre_features(guide, b, jd, jh, cls, geo, ja, jb, floor, opt[2])
    dedge = dedge2[0]
    d2 = np.empty(m, dtype=out.dtype)
    k = np.empty(m, dtype=out.dtype)
    M = np.empty(m, dtype=out.dtype)
    Z = np.zeros(m, dtype=out.dtype)
    acc = np.zeros((c_n, m), dtype=out.dtype)
    a0 = alpha[0]
    hl = cst[0] * lam[0]
    ti = -1
    for tdi in range(td_n):
        gd = taps[0, tdi, 2] + jd * gsd
        idd = taps[0, tdi, 1] + jd * isd
        for thi in range(th_n):
            gh = taps[1, thi, 2] + jh * gsh
            ihh = taps[1, thi, 1] + jh * ish
            xrow_ok = 0 <= idd < idn and 0 <= ihh < ihn
            for twi in range(tw_n):
                ti += 1
                ibw = taps[2, twi, 1]
                lo, hi = ja, ja
                if xrow_ok:
                    lo, hi = jrange(ibw, isw, iwn, ja, jb)
                if not normalize:
                    if hi == lo:
                        continue    # the tap meets no input: it adds nothing
                    wsum = 0.0
                    for c in range(c_n):
                        wsum += abs(Wc[c, ti])
                    if wsum == 0:
                        continue    # zero weight (e.g. a round window): it adds nothing
                tap_d2(d2, f0, dedge, guide, b, cg_n - cg_n, cg_n, gd, gh, taps[2, twi, 2], gsw,
                       geo, ja, jb, floor)   # (c_first a run-time 0: tap_d2 compiles once)
                phi_row(k, d2, kind, a0, hl, cst)
                if masked:
                    tap_validity(M, mask, has_mask, b, geo, cls, taps, jd, jh, tdi, thi, twi,
                                 ja, jb)
                    for jj in range(m):
                        k[jj] *= M[jj]
                    if normalize:
                        for jj in range(m):
                            Z[jj] += k[jj]
                if hi == lo:
                    continue
                km = k[lo - ja:hi - ja]
                for c in range(c_n):
                    w = Wc[c, ti]
                    xs = load_row(x[b, c, idd, ihh], ibw, isw, lo, hi)
                    am = acc[c, lo - ja:hi - ja]
                    for j in range(hi - lo):
                        am[j] += w * km[j] * xs[j]
    if normalize:
        for jj in range(m):
            if Z[jj] == 0:
                Z[jj] = 1
    b, od, oh, o0w, osw = output_row(cls, r)
    for c in range(c_n):
        ac = acc[c]
        bv = bias[c]
        if normalize:
            for jj in range(m):
                ac[jj] = ac[jj] / Z[jj] + bv
        else:
            for jj in range(m):
                ac[jj] += bv
        store_row(out[b, c, od, oh], o0w, osw, ja, ac)


@njit(nogil=True, cache=True)
def _fused_units(tid, ctl, n, nblk, x, Wc, bias, guide, mask, geo, cls, taps, r0, c0, c1, opt,
                 alpha, lam, cst, out):
    u = claim(ctl, tid)
    while u < n:
        _fused_unit(u, nblk, x, Wc, bias, guide, mask, geo, cls, taps, r0, c0, c1, opt, alpha,
                    lam, cst, out)
        u = claim(ctl, tid)


def dw_forward_fused(x, Wc, bias, guide, mask, geo, cls, taps, r0, r1, c0, c1, opt, alpha,
                     lam, cst, out):
    """Depthwise PAC forward with one K channel computed from the guide on the fly.

    For every row segment and tap, K is computed once (mask and the
    normaliser accumulated alongside) and applied to every channel while it
    is in registers/L1; nothing tile-sized is stored. Units (row segments of
    ``COL_BLOCK`` columns) run on :func:`.threads.parallel_for`.
    """
    nblk = (c1 - c0 + COL_BLOCK - 1) // COL_BLOCK
    parallel_for(_fused_units, (r1 - r0) * nblk, nblk, x, Wc, bias, guide, mask, geo, cls, taps,
                 r0, c0, c1, opt, alpha, lam, cst, out)


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


@njit(nogil=True, cache=True)
def _dw_channels(tid, ctl, n, gout, x, Wc, Kt, kmode, gx, gWc, need_x, need_w, geo, cls, taps,
                 r0, r1, c0, c1):
    c = claim(ctl, tid)
    while c < n:
        _dw_channel_grads(c, gout, x, Wc, Kt, kmode, gx, gWc, need_x, need_w,
                          geo, cls, taps, r0, r1, c0, c1)
        c = claim(ctl, tid)


@njit(nogil=True, cache=True)
def _dw_k_rows(tid, ctl, n, gout, x, Wc, kmode, gKt, geo, cls, taps, r0, r1, c0, c1):
    it = claim(ctl, tid)
    while it < n:
        _dw_k_row(it, gout, x, Wc, kmode, gKt, geo, cls, taps, r0, r1, c0, c1)
        it = claim(ctl, tid)


def dw_backward(gout, x, Wc, Kt, kmode, gx, gWc, gKt, need_x, need_w, need_k,
                geo, cls, taps, r0, r1, c0, c1):
    """Input, weight and K gradients of :func:`dw_forward` for one tile.

    ``gx`` (B, C, *in) and ``gWc`` (C, T_r, float64) accumulate, one channel
    per work unit; ``gKt`` (Ck, T_r, npix) accumulates, one (tap, row) per
    work unit.
    """
    if need_x or need_w:
        parallel_for(_dw_channels, x.shape[1], gout, x, Wc, Kt, kmode, gx, gWc, need_x, need_w,
                     geo, cls, taps, r0, r1, c0, c1)
    if need_k:
        t_n = int(cls[0, 3] * cls[1, 3] * cls[2, 3])
        parallel_for(_dw_k_rows, t_n * (r1 - r0), gout, x, Wc, kmode, gKt, geo, cls, taps,
                     r0, r1, c0, c1)
