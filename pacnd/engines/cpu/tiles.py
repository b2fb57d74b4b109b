"""Gather/scatter of K-weighted columns for one tile (Numba), the dense-groups path.

For one group (input channels ``c_start .. c_start + cin_g``) and one tile of
a tap class (see :mod:`pacnd.engines.cpu.layout`), the columns are
``cols[cl*T_r + ti, p] = K[kc, ti, p] * x[b, c, in(p, ti)]`` (0 where the tap
is off the input), so the tile's output is the GEMM ``W_class @ cols``.
``kmode``: 0 plain convolution (no K), 1 one K for all channels, 2 one K per
input channel (``kc = c``).

Arrays are the 5-D embeddings ``(B, C, D, H, W)`` of the engine's inputs. Each
parallel kernel is a thin ``prange`` over a plain ``njit`` body (short compile
times; see :mod:`pacnd.engines.cpu.adapting`); inner loops run over 1-D views
indexed from 0 so that they vectorise (:func:`indexing.load_row`).
"""

import numpy as np
from numba import njit, prange

from .indexing import FASTMATH, add_row, decode_row, jrange, load_row, store_row

__all__ = ["gather_cols", "write_out", "gather_out", "scatter_input", "reduce_gk",
           "tap_of", "input_row", "output_row"]


@njit(cache=True)
def tap_of(ti, th_n, tw_n):
    """Class tap ``ti`` -> its per-dim indices (C order)."""
    tdi = ti // (th_n * tw_n)
    rem = ti - tdi * th_n * tw_n
    thi = rem // tw_n
    return tdi, thi, rem - thi * tw_n


@njit(cache=True)
def input_row(geo, cls, taps, r, tdi, thi, twi, c0, c1):
    """(b, input d, input h, input w base, w step, lo, hi) of class row ``r`` and a tap.

    ``[lo, hi)`` are the columns whose input sample exists (empty when the
    row misses the input).
    """
    b, jd, jh = decode_row(r, cls[0, 2], cls[1, 2])
    idd = taps[0, tdi, 1] + jd * cls[0, 4]
    ihh = taps[1, thi, 1] + jh * cls[1, 4]
    ibw = taps[2, twi, 1]
    isw = cls[2, 4]
    lo, hi = c0, c0
    ok = 0 <= idd < geo[0, 0] and 0 <= ihh < geo[0, 1]
    if ok:
        lo, hi = jrange(ibw, isw, geo[0, 2], c0, c1)
    else:
        idd, ihh = 0, 0
    return b, idd, ihh, ibw, isw, lo, hi


@njit(cache=True)
def output_row(cls, r):
    """(b, output d, output h, output w base, w step) of class row ``r``."""
    b, jd, jh = decode_row(r, cls[0, 2], cls[1, 2])
    return b, cls[0, 0] + jd * cls[0, 1], cls[1, 0] + jh * cls[1, 1], cls[2, 0], cls[2, 1]


@njit(cache=True, fastmath=FASTMATH)
def _gather_q(q, x, Kt, geo, cls, taps, r0, r1, c0, c1, c_start, kmode, cols):
    th_n, tw_n = cls[1, 3], cls[2, 3]
    t_n = cls[0, 3] * th_n * tw_n
    ncol = c1 - c0
    cl = q // t_n
    ti = q - cl * t_n
    tdi, thi, twi = tap_of(ti, th_n, tw_n)
    c = c_start + cl
    kc = c * (kmode == 2)
    dst = cols[q]
    kt = Kt[kc, ti]
    ibw, isw = taps[2, twi, 1], cls[2, 4]
    wlo, whi = jrange(ibw, isw, geo[0, 2], c0, c1)
    n = whi - wlo
    nd, nh = cls[0, 2], cls[1, 2]
    bd, jd, jh = decode_row(r0, nd, nh)
    ib_d, is_d = taps[0, tdi, 1], cls[0, 4]
    ib_h, is_h = taps[1, thi, 1], cls[1, 4]
    for rr in range(r1 - r0):
        idd = ib_d + jd * is_d
        ihh = ib_h + jh * is_h
        a = rr * ncol
        seg = dst[a:a + ncol]
        if n > 0 and 0 <= idd < geo[0, 0] and 0 <= ihh < geo[0, 1]:
            for j in range(wlo - c0):
                seg[j] = 0
            for j in range(whi - c0, ncol):
                seg[j] = 0
            mid = seg[wlo - c0:whi - c0]
            xs = load_row(x[bd, c, idd, ihh], ibw, isw, wlo, whi)
            if kmode == 0:
                for j in range(n):
                    mid[j] = xs[j]
            else:
                ks = kt[a + wlo - c0:a + whi - c0]
                for j in range(n):
                    mid[j] = ks[j] * xs[j]
        else:
            for j in range(ncol):
                seg[j] = 0
        jh += 1
        if jh == nh:
            jh = 0
            jd += 1
            if jd == nd:
                jd = 0
                bd += 1


@njit(parallel=True, cache=True)
def gather_cols(x, Kt, geo, cls, taps, r0, r1, c0, c1, c_start, cin_g, kmode, cols):
    """``cols`` (cin_g*T_r, npix) of the tile, K-weighted unless ``kmode == 0``."""
    t_n = cls[0, 3] * cls[1, 3] * cls[2, 3]
    for q in prange(cin_g * t_n):
        _gather_q(q, x, Kt, geo, cls, taps, r0, r1, c0, c1, c_start, kmode, cols)


@njit(cache=True)
def _out_channel(o, tmp, out, bias, cls, r0, r1, c0, c1, o_start, write):
    ncol = c1 - c0
    src = tmp[o]
    for rr in range(r1 - r0):
        b, od, oh, o0w, osw = output_row(cls, r0 + rr)
        seg = src[rr * ncol:(rr + 1) * ncol]
        orow = out[b, o_start + o, od, oh]
        if write:
            bv = bias[o_start + o]
            for j in range(ncol):
                seg[j] += bv
            store_row(orow, o0w, osw, c0, seg)
        else:
            vals = load_row(orow, o0w, osw, c0, c1)
            for j in range(ncol):
                seg[j] = vals[j]


@njit(parallel=True, cache=True)
def write_out(tmp, out, bias, cls, r0, r1, c0, c1, o_start):
    """``out[b, o_start + o, pixel] = tmp[o, p] + bias[o_start + o]`` (adds bias into tmp)."""
    for o in prange(tmp.shape[0]):
        _out_channel(o, tmp, out, bias, cls, r0, r1, c0, c1, o_start, True)


@njit(parallel=True, cache=True)
def gather_out(gout, dst, cls, r0, r1, c0, c1, o_start):
    """``dst[o, p] = gout[b, o_start + o, pixel]`` (inverse of :func:`write_out`)."""
    for o in prange(dst.shape[0]):
        _out_channel(o, dst, gout, gout[0, 0, 0, 0], cls, r0, r1, c0, c1, o_start, False)


@njit(cache=True, fastmath=FASTMATH)
def _scatter_channel(cl, G, Kt, gx, geo, cls, taps, r0, r1, c0, c1, c_start, kmode, buf):
    th_n, tw_n = cls[1, 3], cls[2, 3]
    t_n = cls[0, 3] * th_n * tw_n
    ncol = c1 - c0
    c = c_start + cl
    kc = c * (kmode == 2)
    for rr in range(r1 - r0):
        for ti in range(t_n):
            tdi, thi, twi = tap_of(ti, th_n, tw_n)
            b, idd, ihh, ibw, isw, lo, hi = input_row(geo, cls, taps, r0 + rr, tdi, thi, twi,
                                                      c0, c1)
            if hi == lo:
                continue
            a = rr * ncol + lo - c0
            gs = G[cl * t_n + ti][a:a + hi - lo]
            if kmode != 0:
                ks = Kt[kc, ti][a:a + hi - lo]
                vals = buf[:hi - lo]
                for j in range(hi - lo):
                    vals[j] = gs[j] * ks[j]
                gs = vals
            add_row(gx[b, c, idd, ihh], ibw, isw, lo, gs)


@njit(parallel=True, cache=True)
def scatter_input(G, Kt, gx, geo, cls, taps, r0, r1, c0, c1, c_start, cin_g, kmode):
    """col2im: ``gx[b, c, in(p, ti)] += G[cl*T_r + ti, p] * K[kc, ti, p]``.

    One input channel per thread: no two threads touch the same element.
    """
    for cl in prange(cin_g):
        buf = np.empty(c1 - c0, dtype=G.dtype)
        _scatter_channel(cl, G, Kt, gx, geo, cls, taps, r0, r1, c0, c1, c_start, kmode, buf)


@njit(cache=True, fastmath=FASTMATH)
def _reduce_tap_row(it, G, x, gKt, geo, cls, taps, r0, r1, c0, c1, c_start, cin_g, kmode):
    th_n, tw_n = cls[1, 3], cls[2, 3]
    t_n = cls[0, 3] * th_n * tw_n
    ncol = c1 - c0
    nr = r1 - r0
    ti = it // nr
    rr = it - ti * nr
    tdi, thi, twi = tap_of(ti, th_n, tw_n)
    b, idd, ihh, ibw, isw, lo, hi = input_row(geo, cls, taps, r0 + rr, tdi, thi, twi, c0, c1)
    if hi == lo:
        return
    a = rr * ncol + lo - c0
    for cl in range(cin_g):
        c = c_start + cl
        kc = c * (kmode == 2)
        gk = gKt[kc, ti][a:a + hi - lo]
        gs = G[cl * t_n + ti][a:a + hi - lo]
        xs = load_row(x[b, c, idd, ihh], ibw, isw, lo, hi)
        for j in range(hi - lo):
            gk[j] += gs[j] * xs[j]


@njit(parallel=True, cache=True)
def reduce_gk(G, x, gKt, geo, cls, taps, r0, r1, c0, c1, c_start, cin_g, kmode):
    """``gKt[kc, ti, p] += sum_cl G[cl*T_r + ti, p] * x[b, c, in(p, ti)]``.

    One (tap, row) per iteration: each owns its slice of ``gKt``.
    """
    t_n = cls[0, 3] * cls[1, 3] * cls[2, 3]
    for it in prange(t_n * (r1 - r0)):
        _reduce_tap_row(it, G, x, gKt, geo, cls, taps, r0, r1, c0, c1, c_start, cin_g, kmode)
