"""Gather/scatter of K-weighted columns for one tile (Numba), the dense-groups path.

For one group (input channels ``c_start .. c_start + cin_g``) and one tile of
a tap class (see :mod:`pacnd.engines.cpu.layout`), the columns are
``cols[cl*T_r + ti, p] = K[kc, ti, p] * x[b, c, in(p, ti)]`` (0 where the tap
is off the input), so the tile's output is the GEMM ``W_class @ cols``.
``kmode``: 0 plain convolution (no K), 1 one K for all channels, 2 one K per
input channel (``kc = c``).

Arrays are the 5-D embeddings ``(B, C, D, H, W)`` of the engine's inputs.
"""

from numba import njit, prange

from .indexing import FASTMATH, decode_row, jrange

__all__ = ["gather_cols", "write_out", "gather_out", "scatter_input", "reduce_gk"]


@njit(cache=True)
def _tap_of(ti, th_n, tw_n):
    tdi = ti // (th_n * tw_n)
    rem = ti - tdi * th_n * tw_n
    thi = rem // tw_n
    return tdi, thi, rem - thi * tw_n


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def gather_cols(x, Kt, geo, cls, taps, r0, r1, c0, c1, c_start, cin_g, kmode, cols):
    """``cols`` (cin_g*T_r, npix) of the tile, K-weighted unless ``kmode == 0``."""
    nd, nh = cls[0, 2], cls[1, 2]
    th_n, tw_n = cls[1, 3], cls[2, 3]
    t_n = cls[0, 3] * th_n * tw_n
    isd, ish, isw = cls[0, 4], cls[1, 4], cls[2, 4]
    nr = r1 - r0
    ncol = c1 - c0
    for it in prange(cin_g * t_n * nr):
        q = it // nr
        rr = it - q * nr
        cl = q // t_n
        ti = q - cl * t_n
        tdi, thi, twi = _tap_of(ti, th_n, tw_n)
        c = c_start + cl
        kc = c * (kmode == 2)
        b, jd, jh = decode_row(r0 + rr, nd, nh)
        idd = taps[0, tdi, 1] + jd * isd
        ihh = taps[1, thi, 1] + jh * ish
        ibw = taps[2, twi, 1]
        lo, hi = c0, c0
        if 0 <= idd < geo[0, 0] and 0 <= ihh < geo[0, 1]:
            lo, hi = jrange(ibw, isw, geo[0, 2], c0, c1)
        pb = rr * ncol - c0
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
def write_out(tmp, out, bias, cls, r0, r1, c0, c1, o_start):
    """``out[b, o_start + o, pixel] = tmp[o, p] + bias[o_start + o]``."""
    nd, nh = cls[0, 2], cls[1, 2]
    nr = r1 - r0
    ncol = c1 - c0
    cout_g = tmp.shape[0]
    o0w, osw = cls[2, 0], cls[2, 1]
    for it in prange(cout_g * nr):
        o = it // nr
        rr = it - o * nr
        b, jd, jh = decode_row(r0 + rr, nd, nh)
        od = cls[0, 0] + jd * cls[0, 1]
        oh = cls[1, 0] + jh * cls[1, 1]
        bv = bias[o_start + o]
        pb = rr * ncol - c0
        for j in range(c0, c1):
            out[b, o_start + o, od, oh, o0w + j * osw] = tmp[o, pb + j] + bv


@njit(parallel=True, cache=True)
def gather_out(gout, dst, cls, r0, r1, c0, c1, o_start):
    """``dst[o, p] = gout[b, o_start + o, pixel]`` (inverse of :func:`write_out`)."""
    nd, nh = cls[0, 2], cls[1, 2]
    nr = r1 - r0
    ncol = c1 - c0
    cout_g = dst.shape[0]
    o0w, osw = cls[2, 0], cls[2, 1]
    for it in prange(cout_g * nr):
        o = it // nr
        rr = it - o * nr
        b, jd, jh = decode_row(r0 + rr, nd, nh)
        od = cls[0, 0] + jd * cls[0, 1]
        oh = cls[1, 0] + jh * cls[1, 1]
        pb = rr * ncol - c0
        for j in range(c0, c1):
            dst[o, pb + j] = gout[b, o_start + o, od, oh, o0w + j * osw]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def scatter_input(G, Kt, gx, geo, cls, taps, r0, r1, c0, c1, c_start, cin_g, kmode):
    """col2im: ``gx[b, c, in(p, ti)] += G[cl*T_r + ti, p] * K[kc, ti, p]``.

    One input channel per thread: no two threads touch the same element.
    """
    nd, nh = cls[0, 2], cls[1, 2]
    th_n, tw_n = cls[1, 3], cls[2, 3]
    t_n = cls[0, 3] * th_n * tw_n
    isd, ish, isw = cls[0, 4], cls[1, 4], cls[2, 4]
    nr = r1 - r0
    ncol = c1 - c0
    for cl in prange(cin_g):
        c = c_start + cl
        kc = c * (kmode == 2)
        for rr in range(nr):
            b, jd, jh = decode_row(r0 + rr, nd, nh)
            pb = rr * ncol - c0
            for ti in range(t_n):
                tdi, thi, twi = _tap_of(ti, th_n, tw_n)
                idd = taps[0, tdi, 1] + jd * isd
                ihh = taps[1, thi, 1] + jh * ish
                if not (0 <= idd < geo[0, 0] and 0 <= ihh < geo[0, 1]):
                    continue
                ibw = taps[2, twi, 1]
                lo, hi = jrange(ibw, isw, geo[0, 2], c0, c1)
                q = cl * t_n + ti
                if kmode == 0:
                    for j in range(lo, hi):
                        gx[b, c, idd, ihh, ibw + j * isw] += G[q, pb + j]
                else:
                    for j in range(lo, hi):
                        gx[b, c, idd, ihh, ibw + j * isw] += G[q, pb + j] * Kt[kc, ti, pb + j]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def reduce_gk(G, x, gKt, geo, cls, taps, r0, r1, c0, c1, c_start, cin_g, kmode):
    """``gKt[kc, ti, p] += sum_cl G[cl*T_r + ti, p] * x[b, c, in(p, ti)]``.

    One (tap, row) per iteration: each owns its slice of ``gKt``.
    """
    nd, nh = cls[0, 2], cls[1, 2]
    th_n, tw_n = cls[1, 3], cls[2, 3]
    t_n = cls[0, 3] * th_n * tw_n
    isd, ish, isw = cls[0, 4], cls[1, 4], cls[2, 4]
    nr = r1 - r0
    ncol = c1 - c0
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
        pb = rr * ncol - c0
        for cl in range(cin_g):
            c = c_start + cl
            kc = c * (kmode == 2)
            q = cl * t_n + ti
            for j in range(lo, hi):
                gKt[kc, ti, pb + j] += G[q, pb + j] * x[b, c, idd, ihh, ibw + j * isw]
