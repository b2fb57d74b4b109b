"""Gather/scatter of K-weighted columns for one tile (Numba), the dense-groups path.

For one group (input channels ``c_start .. c_start + cin_g``) and one tile of
a tap class (see :mod:`pacnd.engines.cpu.layout`), the columns are
``cols[cl*T_r + ti, p] = K[kc, ti, p] * x[b, c, in(p, ti)]`` (0 where the tap
is off the input), so the tile's output is the GEMM ``W_class @ cols``.
``kmode``: 0 plain convolution (no K), 1 one K for all channels, 2 one K per
input channel (``kc = c``).

Arrays are the 5-D embeddings ``(B, C, D, H, W)`` of the engine's inputs. Each
parallel kernel is a thin ``prange`` over a plain ``njit`` body (short compile
times; see :mod:`pacnd.engines.cpu.adapting`).
"""

from numba import njit, prange

from .indexing import FASTMATH, decode_row, jrange

__all__ = ["gather_cols", "write_out", "gather_out", "scatter_input", "reduce_gk"]


@njit(cache=True)
def tap_of(ti, th_n, tw_n):
    """Class tap ``ti`` -> its per-dim indices (C order)."""
    tdi = ti // (th_n * tw_n)
    rem = ti - tdi * th_n * tw_n
    thi = rem // tw_n
    return tdi, thi, rem - thi * tw_n


@njit(cache=True)
def input_row(geo, cls, taps, r, tdi, thi, twi, c0, c1):
    """(b, input d, input h, input w base, w step, lo, hi) of tile row ``r`` and a tap.

    ``[lo, hi)`` are the columns whose input sample exists (empty when the
    row misses the input).
    """
    b, jd, jh = decode_row(r, cls[0, 2], cls[1, 2])
    idd = taps[0, tdi, 1] + jd * cls[0, 4]
    ihh = taps[1, thi, 1] + jh * cls[1, 4]
    ibw = taps[2, twi, 1]
    isw = cls[2, 4]
    lo, hi = c0, c0
    if 0 <= idd < geo[0, 0] and 0 <= ihh < geo[0, 1]:
        lo, hi = jrange(ibw, isw, geo[0, 2], c0, c1)
    return b, idd, ihh, ibw, isw, lo, hi


@njit(cache=True)
def output_row(cls, r):
    """(b, output d, output h, output w base, w step) of class row ``r``."""
    b, jd, jh = decode_row(r, cls[0, 2], cls[1, 2])
    return b, cls[0, 0] + jd * cls[0, 1], cls[1, 0] + jh * cls[1, 1], cls[2, 0], cls[2, 1]


@njit(cache=True, fastmath=FASTMATH)
def _gather_row(it, x, Kt, geo, cls, taps, r0, r1, c0, c1, c_start, kmode, cols):
    nr = r1 - r0
    th_n, tw_n = cls[1, 3], cls[2, 3]
    t_n = cls[0, 3] * th_n * tw_n
    q = it // nr
    rr = it - q * nr
    cl = q // t_n
    ti = q - cl * t_n
    tdi, thi, twi = tap_of(ti, th_n, tw_n)
    c = c_start + cl
    kc = c * (kmode == 2)
    b, idd, ihh, ibw, isw, lo, hi = input_row(geo, cls, taps, r0 + rr, tdi, thi, twi, c0, c1)
    pb = rr * (c1 - c0) - c0
    for j in range(c0, lo):
        cols[q, pb + j] = 0
    if kmode == 0:
        for j in range(lo, hi):
            cols[q, pb + j] = x[b, c, idd, ihh, ibw + j * isw]
    else:
        for j in range(lo, hi):
            cols[q, pb + j] = Kt[kc, ti, pb + j] * x[b, c, idd, ihh, ibw + j * isw]
    for j in range(hi, c1):
        cols[q, pb + j] = 0


@njit(parallel=True, cache=True)
def gather_cols(x, Kt, geo, cls, taps, r0, r1, c0, c1, c_start, cin_g, kmode, cols):
    """``cols`` (cin_g*T_r, npix) of the tile, K-weighted unless ``kmode == 0``."""
    t_n = cls[0, 3] * cls[1, 3] * cls[2, 3]
    for it in prange(cin_g * t_n * (r1 - r0)):
        _gather_row(it, x, Kt, geo, cls, taps, r0, r1, c0, c1, c_start, kmode, cols)


@njit(cache=True)
def _out_row(it, tmp, out, bias, cls, r0, r1, c0, c1, o_start, write):
    nr = r1 - r0
    o = it // nr
    rr = it - o * nr
    b, od, oh, o0w, osw = output_row(cls, r0 + rr)
    pb = rr * (c1 - c0) - c0
    if write:
        bv = bias[o_start + o]
        for j in range(c0, c1):
            out[b, o_start + o, od, oh, o0w + j * osw] = tmp[o, pb + j] + bv
    else:
        for j in range(c0, c1):
            tmp[o, pb + j] = out[b, o_start + o, od, oh, o0w + j * osw]


@njit(parallel=True, cache=True)
def write_out(tmp, out, bias, cls, r0, r1, c0, c1, o_start):
    """``out[b, o_start + o, pixel] = tmp[o, p] + bias[o_start + o]``."""
    for it in prange(tmp.shape[0] * (r1 - r0)):
        _out_row(it, tmp, out, bias, cls, r0, r1, c0, c1, o_start, True)


@njit(parallel=True, cache=True)
def gather_out(gout, dst, cls, r0, r1, c0, c1, o_start):
    """``dst[o, p] = gout[b, o_start + o, pixel]`` (inverse of :func:`write_out`)."""
    for it in prange(dst.shape[0] * (r1 - r0)):
        _out_row(it, dst, gout, gout[0, 0, 0, 0], cls, r0, r1, c0, c1, o_start, False)


@njit(cache=True, fastmath=FASTMATH)
def _scatter_channel(cl, G, Kt, gx, geo, cls, taps, r0, r1, c0, c1, c_start, kmode):
    th_n, tw_n = cls[1, 3], cls[2, 3]
    t_n = cls[0, 3] * th_n * tw_n
    c = c_start + cl
    kc = c * (kmode == 2)
    for rr in range(r1 - r0):
        pb = rr * (c1 - c0) - c0
        for ti in range(t_n):
            tdi, thi, twi = tap_of(ti, th_n, tw_n)
            b, idd, ihh, ibw, isw, lo, hi = input_row(geo, cls, taps, r0 + rr, tdi, thi, twi,
                                                      c0, c1)
            q = cl * t_n + ti
            if kmode == 0:
                for j in range(lo, hi):
                    gx[b, c, idd, ihh, ibw + j * isw] += G[q, pb + j]
            else:
                for j in range(lo, hi):
                    gx[b, c, idd, ihh, ibw + j * isw] += G[q, pb + j] * Kt[kc, ti, pb + j]


@njit(parallel=True, cache=True)
def scatter_input(G, Kt, gx, geo, cls, taps, r0, r1, c0, c1, c_start, cin_g, kmode):
    """col2im: ``gx[b, c, in(p, ti)] += G[cl*T_r + ti, p] * K[kc, ti, p]``.

    One input channel per thread: no two threads touch the same element.
    """
    for cl in prange(cin_g):
        _scatter_channel(cl, G, Kt, gx, geo, cls, taps, r0, r1, c0, c1, c_start, kmode)


@njit(cache=True, fastmath=FASTMATH)
def _reduce_row(it, G, x, gKt, geo, cls, taps, r0, r1, c0, c1, c_start, cin_g, kmode):
    nr = r1 - r0
    th_n, tw_n = cls[1, 3], cls[2, 3]
    t_n = cls[0, 3] * th_n * tw_n
    ti = it // nr
    rr = it - ti * nr
    tdi, thi, twi = tap_of(ti, th_n, tw_n)
    b, idd, ihh, ibw, isw, lo, hi = input_row(geo, cls, taps, r0 + rr, tdi, thi, twi, c0, c1)
    pb = rr * (c1 - c0) - c0
    for cl in range(cin_g):
        c = c_start + cl
        kc = c * (kmode == 2)
        q = cl * t_n + ti
        for j in range(lo, hi):
            gKt[kc, ti, pb + j] += G[q, pb + j] * x[b, c, idd, ihh, ibw + j * isw]


@njit(parallel=True, cache=True)
def reduce_gk(G, x, gKt, geo, cls, taps, r0, r1, c0, c1, c_start, cin_g, kmode):
    """``gKt[kc, ti, p] += sum_cl G[cl*T_r + ti, p] * x[b, c, in(p, ti)]``.

    One (tap, row) per iteration: each owns its slice of ``gKt``.
    """
    t_n = cls[0, 3] * cls[1, 3] * cls[2, 3]
    for it in prange(t_n * (r1 - r0)):
        _reduce_row(it, G, x, gKt, geo, cls, taps, r0, r1, c0, c1, c_start, cin_g, kmode)
