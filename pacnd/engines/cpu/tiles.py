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

from .indexing import FASTMATH, add_row, decode_row, jrange, load_row, next_row

__all__ = ["gather_cols", "scatter_input", "tap_of", "input_row", "output_row"]


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
    kt = Kt[kc, ti] if kmode != 0 else Kt[0, 0]   # no K: a 1-element dummy
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
        bd, jd, jh = next_row(bd, jd, jh, nd, nh)


@njit(parallel=True, cache=True)
def gather_cols(x, Kt, geo, cls, taps, r0, r1, c0, c1, c_start, cin_g, kmode, cols):
    """``cols`` (cin_g*T_r, npix) of the tile, K-weighted unless ``kmode == 0``."""
    t_n = cls[0, 3] * cls[1, 3] * cls[2, 3]
    for q_ in prange(cin_g * t_n):
        q = np.int64(q_)  # one body specialisation (prange indices are unsigned)
        _gather_q(q, x, Kt, geo, cls, taps, r0, r1, c0, c1, c_start, kmode, cols)


@njit(cache=True, fastmath=FASTMATH)
def _scatter_chunk(ch, nchunk, G, Kt, x, gx, gKt, gKp, geo, cls, taps, r0, r1, c0, c1, c_start,
                   cin_g, kmode, need_x, need_k, buf):
    th_n, tw_n = cls[1, 3], cls[2, 3]
    t_n = cls[0, 3] * th_n * tw_n
    ncol = c1 - c0
    nd, nh = cls[0, 2], cls[1, 2]
    for cl in range((cin_g * ch) // nchunk, (cin_g * (ch + 1)) // nchunk):
        c = c_start + cl
        kc = c * (kmode == 2)
        for ti in range(t_n):
            tdi, thi, twi = tap_of(ti, th_n, tw_n)
            ibw, isw = taps[2, twi, 1], cls[2, 4]
            wlo, whi = jrange(ibw, isw, geo[0, 2], c0, c1)
            n = whi - wlo
            if n <= 0:
                continue
            ib_d, is_d = taps[0, tdi, 1], cls[0, 4]
            ib_h, is_h = taps[1, thi, 1], cls[1, 4]
            grow = G[cl * t_n + ti]
            krow = Kt[kc, ti] if kmode != 0 else Kt[0, 0]   # no K: a 1-element dummy
            # this chunk's K gradient: its own channel's row, or its private partial sum
            if not need_k:
                gkrow = gKp[0, 0]     # unused
            elif kmode == 2:
                gkrow = gKt[c, ti]
            else:
                gkrow = gKp[ch, ti]
            vals = buf[:n]
            bd, jd, jh = decode_row(r0, nd, nh)
            for rr in range(r1 - r0):
                idd = ib_d + jd * is_d
                ihh = ib_h + jh * is_h
                if 0 <= idd < geo[0, 0] and 0 <= ihh < geo[0, 1]:
                    a = rr * ncol + wlo - c0
                    gs = grow[a:a + n]
                    if need_k:
                        xs = load_row(x[bd, c, idd, ihh], ibw, isw, wlo, whi)
                        gk = gkrow[a:a + n]
                        for j in range(n):
                            gk[j] += gs[j] * xs[j]
                    if need_x:
                        if kmode == 0:
                            add_row(gx[bd, c, idd, ihh], ibw, isw, wlo, gs)
                        else:
                            ks = krow[a:a + n]
                            for j in range(n):
                                vals[j] = gs[j] * ks[j]
                            add_row(gx[bd, c, idd, ihh], ibw, isw, wlo, vals)
                bd, jd, jh = next_row(bd, jd, jh, nd, nh)


@njit(parallel=True, cache=True)
def scatter_input(G, Kt, x, gx, gKt, gKp, geo, cls, taps, r0, r1, c0, c1, c_start, cin_g,
                  kmode, need_x, need_k):
    """col2im and K gradient in one pass over ``G`` (Cin/g*T_r, npix).

    ``gx[b, c, in(p, ti)] += G[cl*T_r + ti, p] * K[kc, ti, p]`` (with
    ``need_x``) and ``gK[kc, ti, p] += G[cl*T_r + ti, p] * x[b, c, in(p, ti)]``
    (with ``need_k``). The input channels are split into ``gKp.shape[0]``
    chunks, one per iteration: each owns its channels of ``gx``; the K
    gradient goes to the channel's own row of ``gKt`` (``kmode == 2``) or to
    the chunk's partial sum ``gKp[chunk]`` (T_r, npix), which the caller adds
    up.
    """
    nchunk = gKp.shape[0]
    for ch_ in prange(nchunk):
        ch = np.int64(ch_)  # one body specialisation (prange indices are unsigned)
        buf = np.empty(c1 - c0, dtype=G.dtype)
        _scatter_chunk(ch, nchunk, G, Kt, x, gx, gKt, gKp, geo, cls, taps, r0, r1, c0, c1,
                       c_start, cin_g, kmode, need_x, need_k, buf)
