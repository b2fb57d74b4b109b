"""Squared guide distances of the adapting kernel (Numba): the first pass of K.

For a row segment (class row, columns ``[ja, jb)``, see
:mod:`pacnd.engines.cpu.kernel_rows`) and a tap, ``d2[j] = sum_c max(f_n -
f_0, floor)^2`` over guide channels ``c``: ``f_0`` the centre features,
``f_n`` the tap's neighbour (0 off the guide), ``floor`` the relu floor of
``cst[4]``.

* :func:`guide_row`, :func:`centre_features` — a guide row segment, and the
  centre features with the off-guide distance;
* :func:`tap_d2` — one tap read straight from the guide (any column step);
* the staged path, for taps whose reads are shifts of one row
  (:func:`staged_span`): :func:`stage_guide` copies a tap row's guide rows
  once, :func:`centre_staged` the padded centre features, and
  :func:`tap_row_d2` the distances of all taps of the tap row, several taps
  at a time so each centre vector is loaded once for them
  (:func:`tap_d2_staged` does one tap).

Every path adds the channels in the same order (the first squared, the rest
fused multiply-adds), so all of them give the same bits.
"""

import numpy as np
from numba import njit

from .indexing import FASTMATH, jrange, load_row
from .simd import lanes, prefetch, vfma, vload, vmax, vmul, vsplat, vstore, vsub

__all__ = ["guide_row", "centre_features", "centre_staged", "tap_d2", "staged_span",
           "stage_guide", "prefetch_guide", "tap_d2_staged", "tap_row_d2"]


@njit(cache=True, fastmath=FASTMATH)
def guide_row(dst, guide, b, c, gd, gh, gbw, gsw, geo, ja, jb):
    """dst[jj] = guide[b, c, gd, gh, gbw + (ja+jj)*gsw], 0 off the guide; returns the
    in-guide column range."""
    m = jb - ja
    lo, hi = ja, ja
    if 0 <= gd < geo[1, 0] and 0 <= gh < geo[1, 1]:
        lo, hi = jrange(gbw, gsw, geo[1, 2], ja, jb)
    for jj in range(lo - ja):
        dst[jj] = 0
    for jj in range(hi - ja, m):
        dst[jj] = 0
    if hi > lo:
        src = load_row(guide[b, c, gd, gh], gbw, gsw, lo, hi)
        mid = dst[lo - ja:hi - ja]
        for j in range(hi - lo):
            mid[j] = src[j]
    return lo, hi


@njit(cache=True, fastmath=FASTMATH)
def tap_d2(d2, f0, dedge, guide, b, c_first, c_last, gd, gh, gbw, gsw, geo, ja, jb, floor):
    """d2 = sum over guide channels [c_first, c_last) of max(f_n - f_0, floor)^2.

    ``dedge`` is the value for a neighbour off the guide (f_n = 0).
    """
    m = jb - ja
    glo, ghi = ja, ja
    if 0 <= gd < geo[1, 0] and 0 <= gh < geo[1, 1]:
        glo, ghi = jrange(gbw, gsw, geo[1, 2], ja, jb)
    for jj in range(glo - ja):
        d2[jj] = dedge[jj]
    for jj in range(ghi - ja, m):
        d2[jj] = dedge[jj]
    if ghi > glo and gsw == 1:
        # flat indices into the C-contiguous guide and f0 (no views), explicit vectors
        nint = ghi - glo
        vw = lanes(d2)
        cs = geo[1, 0] * geo[1, 1] * geo[1, 2]
        g0 = ((b * guide.shape[1] * geo[1, 0] + gd) * geo[1, 1] + gh) * geo[1, 2] + gbw + glo
        f00 = glo - ja
        fl = vsplat(floor)
        relu = floor > -1e29                            # asym: max(diff, 0)
        nv = nint - nint % vw
        gflat = guide.reshape(-1)
        # channel by channel, the sum kept in d2: the rows of one channel are contiguous,
        # while the channels of a power-of-two image are a power of two apart (reading all
        # channels per vector would make every load miss the same L1 set)
        for c in range(c_first, c_last):
            gc = g0 + c * cs
            fc = c * m + f00
            for j in range(0, nv, vw):
                v = vsub(vload(guide, gc + j), vload(f0, fc + j))
                if relu:
                    v = vmax(v, fl)
                if c == c_first:
                    vstore(d2, f00 + j, vmul(v, v))
                else:
                    vstore(d2, f00 + j, vfma(v, v, vload(d2, f00 + j)))
            for j in range(nv, nint):
                t = max(gflat[gc + j] - f0[c, f00 + j], floor)
                if c == c_first:
                    d2[f00 + j] = t * t
                else:
                    d2[f00 + j] += t * t
    elif ghi > glo:
        d2m = d2[glo - ja:ghi - ja]
        for c in range(c_first, c_last):
            gs = load_row(guide[b, c, gd, gh], gbw, gsw, glo, ghi)
            f0m = f0[c, glo - ja:ghi - ja]
            if c == c_first:
                for j in range(ghi - glo):
                    v = max(gs[j] - f0m[j], floor)
                    d2m[j] = v * v
            else:
                for j in range(ghi - glo):
                    v = max(gs[j] - f0m[j], floor)
                    d2m[j] += v * v


@njit(cache=True)
def staged_span(taps, tw_n, gsw):
    """(first tap offset, span in columns) of a tap row's guide reads when every tap's
    offset is a whole number of column steps ``gsw`` from the first; span -1 otherwise
    (the taps then need separate rows, see :func:`stage_guide`)."""
    wlo = taps[2, 0, 2]
    for twi in range(tw_n):
        wlo = min(wlo, taps[2, twi, 2])
    span = 0
    for twi in range(tw_n):
        d = taps[2, twi, 2] - wlo
        if d % gsw != 0:
            return wlo, -1
        span = max(span, d // gsw)
    return wlo, span


@njit(cache=True, fastmath=FASTMATH)
def stage_guide(S, sstride, guide, b, c_first, c_last, gd, gh, wlo, gsw, geo, ja, ncols):
    """``S[(c - c_first)*sstride + i] = guide[b, c, gd, gh, wlo + (ja + i)*gsw]`` for
    ``i < ncols``, 0 off the guide (``ncols <= sstride``).

    One copy serves every tap of a tap row (their reads are shifts of it), the
    channels sit ``sstride`` apart instead of a power of two (the guide's own
    channel rows of a power-of-two image all compete for one L1 set), and a
    zero neighbour gives exactly the off-guide distance (f_n = 0), so the
    distance loop needs no column bounds.
    """
    lo, hi = ja, ja
    if 0 <= gd < geo[1, 0] and 0 <= gh < geo[1, 1]:
        lo, hi = jrange(wlo, gsw, geo[1, 2], ja, ja + ncols)
    a, e = lo - ja, hi - ja
    for c in range(c_first, c_last):
        row = S[(c - c_first) * sstride:(c - c_first) * sstride + ncols]
        for i in range(a):
            row[i] = 0
        for i in range(e, ncols):
            row[i] = 0
        if e > a:
            src = load_row(guide[b, c, gd, gh], wlo, gsw, lo, hi)
            mid = row[a:e]
            for i in range(e - a):
                mid[i] = src[i]


@njit(cache=True)
def prefetch_guide(guide, b, c_first, c_last, gd, gh, wlo, gsw, geo, ja, ncols):
    """Prefetch what :func:`stage_guide` with the same arguments will read (the rows come
    from memory or L3 at the start of every segment: prefetched a tap row ahead, their
    latency overlaps the distances of the tap row before)."""
    if not (0 <= gd < geo[1, 0] and 0 <= gh < geo[1, 1]):
        return
    lo, hi = jrange(wlo, gsw, geo[1, 2], ja, ja + ncols)
    if hi <= lo:
        return
    line = 2 * lanes(guide)                             # elements per 64-byte line
    for c in range(c_first, c_last):
        row = guide[b, c, gd, gh]
        for i in range(wlo + lo * gsw, wlo + (hi - 1) * gsw + 1, line):
            prefetch(row, i)


@njit(cache=True, fastmath=FASTMATH)
def tap_d2_staged(d2, f0p, ldf, S, sstride, shift, ncf, mp, floor):
    """``d2[j] = sum_c max(S[c*sstride + shift + j] - f0p[c*ldf + j], floor)^2`` for
    ``j < mp`` (a multiple of the vector width; ``ncf`` channels from row 0 of the
    staged guide ``S`` and the padded centre features ``f0p``)."""
    # the relu test as a constant of each inlined copy: LLVM does not hoist it out of
    # the loops by itself, and a branch per vector costs more than the arithmetic
    if floor > -1e29:                                   # asym: max(diff, 0)
        _tap_d2_staged(d2, f0p, ldf, S, sstride, shift, ncf, mp, floor, True)
    else:
        _tap_d2_staged(d2, f0p, ldf, S, sstride, shift, ncf, mp, floor, False)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _tap_d2_staged(d2, f0p, ldf, S, sstride, shift, ncf, mp, floor, relu):
    """:func:`tap_d2_staged` with ``relu`` (whether ``floor`` applies) a constant.

    Four vectors of pixels at a time, their sums held in registers over the
    channel loop: one store per pixel instead of a load and a store per
    channel. Each channel adds to the sum in the order :func:`tap_d2` uses
    (the first squares, the rest fused multiply-adds), so both give the same bits.
    """
    vw = lanes(d2)
    fl = vsplat(floor)
    nb = mp - mp % (4 * vw)
    for j in range(0, nb, 4 * vw):
        s = shift + j
        v0 = vsub(vload(S, s), vload(f0p, j))
        v1 = vsub(vload(S, s + vw), vload(f0p, j + vw))
        v2 = vsub(vload(S, s + 2 * vw), vload(f0p, j + 2 * vw))
        v3 = vsub(vload(S, s + 3 * vw), vload(f0p, j + 3 * vw))
        if relu:
            v0, v1, v2, v3 = vmax(v0, fl), vmax(v1, fl), vmax(v2, fl), vmax(v3, fl)
        a0, a1, a2, a3 = vmul(v0, v0), vmul(v1, v1), vmul(v2, v2), vmul(v3, v3)
        for c in range(1, ncf):
            s = c * sstride + shift + j
            f = c * ldf + j
            v0 = vsub(vload(S, s), vload(f0p, f))
            v1 = vsub(vload(S, s + vw), vload(f0p, f + vw))
            v2 = vsub(vload(S, s + 2 * vw), vload(f0p, f + 2 * vw))
            v3 = vsub(vload(S, s + 3 * vw), vload(f0p, f + 3 * vw))
            if relu:
                v0, v1, v2, v3 = vmax(v0, fl), vmax(v1, fl), vmax(v2, fl), vmax(v3, fl)
            a0 = vfma(v0, v0, a0)
            a1 = vfma(v1, v1, a1)
            a2 = vfma(v2, v2, a2)
            a3 = vfma(v3, v3, a3)
        vstore(d2, j, a0)
        vstore(d2, j + vw, a1)
        vstore(d2, j + 2 * vw, a2)
        vstore(d2, j + 3 * vw, a3)
    for j in range(nb, mp, vw):
        v = vsub(vload(S, shift + j), vload(f0p, j))
        if relu:
            v = vmax(v, fl)
        a = vmul(v, v)
        for c in range(1, ncf):
            v = vsub(vload(S, c * sstride + shift + j), vload(f0p, c * ldf + j))
            if relu:
                v = vmax(v, fl)
            a = vfma(v, v, a)
        vstore(d2, j, a)


@njit(cache=True, fastmath=FASTMATH)
def centre_features(guide, b, jd, jh, cls, geo, ja, jb, floor, chw):
    """(f0 (Cg, m), dedge (Cg|1, m)): centre features of a row segment, and the squared
    distance to a neighbour off the guide (per channel with ``chw``)."""
    cg_n = guide.shape[1]
    m = jb - ja
    f0 = np.empty((cg_n, m), dtype=guide.dtype)
    for c in range(cg_n):
        guide_row(f0[c], guide, b, c, cls[0, 6] + jd * cls[0, 5], cls[1, 6] + jh * cls[1, 5],
                  cls[2, 6], cls[2, 5], geo, ja, jb)
    dedge = np.zeros((cg_n if chw != 0 else 1, m), dtype=guide.dtype)
    for c in range(cg_n):
        f0c = f0[c]
        de = dedge[c * (chw != 0)]
        for jj in range(m):
            v = max(-f0c[jj], floor)
            de[jj] += v * v
    return f0, dedge




@njit(cache=True, fastmath=FASTMATH)
def centre_staged(f0p, mp, guide, b, jd, jh, cls, geo, ja, jb):
    """``f0p[c*mp + j]`` = centre feature ``c`` of column ``ja + j`` (0 off the guide and
    for ``j >= jb - ja``): the staged path's centre features, padded to ``mp`` columns."""
    m = jb - ja
    for c in range(guide.shape[1]):
        guide_row(f0p[c * mp:c * mp + m], guide, b, c, cls[0, 6] + jd * cls[0, 5],
                  cls[1, 6] + jh * cls[1, 5], cls[2, 6], cls[2, 5], geo, ja, jb)
        pad = f0p[c * mp + m:(c + 1) * mp]
        for j in range(mp - m):
            pad[j] = 0


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _diff(S, s, f, fl, relu):
    """``max(S[s:s + lanes] - f, fl)`` (the relu only with ``relu``)."""
    v = vsub(vload(S, s), f)
    if relu:
        v = vmax(v, fl)
    return v


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _d2_taps4(D, ldd, t, nt, f0p, ldf, S, sstride, s0, s1, s2, s3, ncf, mp, floor, relu):
    """Rows ``t .. t + nt - 1`` (``2 <= nt <= 4``) of :func:`tap_row_d2` for the taps whose
    staged reads start at ``s0 .. s3`` (the unused ones repeat ``s0``; only ``nt`` rows
    are stored), ``relu`` a constant (see :func:`tap_d2_staged`). Two vectors of pixels
    times four taps: eight sums in registers over the channel loop, each centre vector
    loaded once for the four taps."""
    vw = lanes(D)
    fl = vsplat(floor)
    d0, d1, d2, d3 = t * ldd, (t + 1) * ldd, (t + 2) * ldd, (t + 3) * ldd
    nb = mp - mp % (2 * vw)
    for j in range(0, nb, 2 * vw):
        f = vload(f0p, j)
        g = vload(f0p, j + vw)
        v = _diff(S, s0 + j, f, fl, relu)
        a0 = vmul(v, v)
        v = _diff(S, s1 + j, f, fl, relu)
        a1 = vmul(v, v)
        v = _diff(S, s2 + j, f, fl, relu)
        a2 = vmul(v, v)
        v = _diff(S, s3 + j, f, fl, relu)
        a3 = vmul(v, v)
        v = _diff(S, s0 + j + vw, g, fl, relu)
        b0 = vmul(v, v)
        v = _diff(S, s1 + j + vw, g, fl, relu)
        b1 = vmul(v, v)
        v = _diff(S, s2 + j + vw, g, fl, relu)
        b2 = vmul(v, v)
        v = _diff(S, s3 + j + vw, g, fl, relu)
        b3 = vmul(v, v)
        for c in range(1, ncf):
            q = c * sstride + j
            f = vload(f0p, c * ldf + j)
            g = vload(f0p, c * ldf + j + vw)
            v = _diff(S, q + s0, f, fl, relu)
            a0 = vfma(v, v, a0)
            v = _diff(S, q + s1, f, fl, relu)
            a1 = vfma(v, v, a1)
            v = _diff(S, q + s2, f, fl, relu)
            a2 = vfma(v, v, a2)
            v = _diff(S, q + s3, f, fl, relu)
            a3 = vfma(v, v, a3)
            v = _diff(S, q + s0 + vw, g, fl, relu)
            b0 = vfma(v, v, b0)
            v = _diff(S, q + s1 + vw, g, fl, relu)
            b1 = vfma(v, v, b1)
            v = _diff(S, q + s2 + vw, g, fl, relu)
            b2 = vfma(v, v, b2)
            v = _diff(S, q + s3 + vw, g, fl, relu)
            b3 = vfma(v, v, b3)
        vstore(D, d0 + j, a0)
        vstore(D, d0 + j + vw, b0)
        vstore(D, d1 + j, a1)
        vstore(D, d1 + j + vw, b1)
        if nt > 2:
            vstore(D, d2 + j, a2)
            vstore(D, d2 + j + vw, b2)
        if nt > 3:
            vstore(D, d3 + j, a3)
            vstore(D, d3 + j + vw, b3)
    for j in range(nb, mp, vw):                         # one vector left
        f = vload(f0p, j)
        v = _diff(S, s0 + j, f, fl, relu)
        a0 = vmul(v, v)
        v = _diff(S, s1 + j, f, fl, relu)
        a1 = vmul(v, v)
        v = _diff(S, s2 + j, f, fl, relu)
        a2 = vmul(v, v)
        v = _diff(S, s3 + j, f, fl, relu)
        a3 = vmul(v, v)
        for c in range(1, ncf):
            q = c * sstride + j
            f = vload(f0p, c * ldf + j)
            v = _diff(S, q + s0, f, fl, relu)
            a0 = vfma(v, v, a0)
            v = _diff(S, q + s1, f, fl, relu)
            a1 = vfma(v, v, a1)
            v = _diff(S, q + s2, f, fl, relu)
            a2 = vfma(v, v, a2)
            v = _diff(S, q + s3, f, fl, relu)
            a3 = vfma(v, v, a3)
        vstore(D, d0 + j, a0)
        vstore(D, d1 + j, a1)
        if nt > 2:
            vstore(D, d2 + j, a2)
        if nt > 3:
            vstore(D, d3 + j, a3)


@njit(cache=True, fastmath=FASTMATH)
def tap_row_d2(D, ldd, f0p, ldf, S, sstride, shifts, ncf, mp, floor):
    """``D[t*ldd + j] = sum_c max(S[c*sstride + shifts[t] + j] - f0p[c*ldf + j], floor)^2``
    for every tap ``t`` of a tap row (``shifts``: where its reads start in the staged
    row, :func:`stage_guide`) and ``j < mp`` (a multiple of the vector width).

    Taps go four at a time (:func:`_d2_taps4`; the last two or three share a block),
    a single one left over by :func:`tap_d2_staged`: about 1.25 vector loads per
    sum term instead of two.
    """
    nt = shifts.shape[0]
    t = 0
    while t < nt:
        k = min(4, nt - t)
        if k == 1:
            tap_d2_staged(D[t * ldd:t * ldd + mp], f0p, ldf, S, sstride, shifts[t], ncf, mp,
                          floor)
        else:
            s0 = shifts[t]
            s2 = shifts[t + 2] if k > 2 else s0
            s3 = shifts[t + 3] if k > 3 else s0
            s1 = shifts[t + 1]
            if floor > -1e29:                           # asym: max(diff, 0)
                _d2_taps4(D, ldd, t, k, f0p, ldf, S, sstride, s0, s1, s2, s3, ncf, mp, floor,
                          True)
            else:
                _d2_taps4(D, ldd, t, k, f0p, ldf, S, sstride, s0, s1, s2, s3, ncf, mp, floor,
                          False)
        t += k
