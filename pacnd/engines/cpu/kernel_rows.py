"""The adapting kernel K of one row segment (Numba): forward, backward, guide gradient.

A *row segment* is class row ``r`` (see :mod:`pacnd.engines.cpu.layout`),
columns ``[ja, jb)``. Its K lives in a buffer ``Kt[ck, ti, pb + j - ja]`` —
K channel ``ck`` (1, or Cg with ``channel_wise``), class tap ``ti``, the
segment's columns from offset ``pb`` (a tile buffer, or a work unit's own
buffer with ``pb = 0``).

* :func:`kernel_rows` — K from the guide, mask and normalisation fused (with
  ``save``: also phi and the squared distances, for the backward);
* :func:`kernel_rows_vjp` — a gradient w.r.t. K back through normalisation,
  mask and phi: alpha/lam sums and the gradient w.r.t. the squared distances;
* :func:`guide_grad_rows` — that gradient scattered to the guide (one channel);
* :func:`take_k_rows` / :func:`put_k_rows` — a precomputed full K read into,
  or a K gradient written from, a segment buffer;
* :func:`segment_k` — K of a segment from whichever source the op has.

The tile kernels of :mod:`.adapting` and the fused dense kernels
(:mod:`.dense`, :mod:`.dense_vjp`) and depthwise kernels call these.

Options reach the kernels as run-time integers so each kernel compiles once
per dtype: ``opt`` = ``[kind, asym, chw, normalize, masked, has_mask]`` with
``kind`` 0 gaussian, 1 laplacian, 2 inverse; ``chw`` channel-wise; ``masked``
(normalize or a mask: taps off the input, or on masked-out pixels, get K = 0).
``cst`` holds the dtype's constants ``[0.5, EPS, 1, 0, relu floor, 2]`` (the
relu floor is 0 with ``asym``, else a huge negative number: ``max(diff,
floor)`` is the relu).
"""

import math

import numpy as np
from numba import njit

from .fastexp import vexp
from .indexing import FASTMATH, add_row, decode_row, jrange, load_row, output_row
from .simd import lanes, vfma, vload, vmax, vmul, vsplat, vstore, vsub

__all__ = ["kernel_rows", "kernel_rows_vjp", "guide_grad_rows", "take_k_rows", "put_k_rows",
           "segment_k",
           "tap_validity", "guide_row", "phi_row", "tap_d2", "centre_features"]


@njit(cache=True, fastmath=FASTMATH)
def tap_validity(M, mask, has_mask, b, geo, cls, taps, jd, jh, tdi, thi, twi, ja, jb):
    """M[0:jb-ja] = 1 where the tap lands on a real (unmasked) input pixel, else 0."""
    m = jb - ja
    idd = taps[0, tdi, 1] + jd * cls[0, 4]
    ihh = taps[1, thi, 1] + jh * cls[1, 4]
    ok = (taps[0, tdi, 3] != 0 and taps[1, thi, 3] != 0 and taps[2, twi, 3] != 0
          and 0 <= idd < geo[0, 0] and 0 <= ihh < geo[0, 1])
    ibw = taps[2, twi, 1]
    isw = cls[2, 4]
    lo, hi = ja, ja
    if ok:
        lo, hi = jrange(ibw, isw, geo[0, 2], ja, jb)
    for jj in range(m):
        M[jj] = 0
    mid = M[lo - ja:hi - ja]
    if has_mask and hi > lo:
        ms = load_row(mask[b, 0, idd, ihh], ibw, isw, lo, hi)
        for j in range(hi - lo):
            mid[j] = ms[j]
    else:
        for j in range(hi - lo):
            mid[j] = 1


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
def phi_row(kr, d2, kind, a, hl, cst):
    """kr[:] = phi(d2[:]) (``a``, ``hl`` = alpha, lam/2 of the K channel)."""
    half, eps = cst[0], cst[1]
    m = kr.shape[0]
    if kind == 0:
        for jj in range(m):
            kr[jj] = vexp(-half * d2[jj])
    elif kind == 1:
        for jj in range(m):
            kr[jj] = vexp(-math.sqrt(d2[jj] + eps))
    else:
        for jj in range(m):
            kr[jj] = a + (d2[jj] + eps) ** hl


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


@njit(cache=True, fastmath=FASTMATH)
def tap_d2_staged(d2, f0p, ldf, S, sstride, shift, ncf, mp, floor):
    """``d2[j] = sum_c max(S[c*sstride + shift + j] - f0p[c*ldf + j], floor)^2`` for
    ``j < mp`` (a multiple of the vector width; ``ncf`` channels from row 0 of the
    staged guide ``S`` and the padded centre features ``f0p``).

    Four vectors of pixels at a time, their sums held in registers over the
    channel loop: one store per pixel instead of a load and a store per
    channel. Each channel adds to the sum in the order :func:`tap_d2` uses
    (the first squares, the rest fused multiply-adds), so both give the same bits.
    """
    vw = lanes(d2)
    fl = vsplat(floor)
    relu = floor > -1e29                                # asym: max(diff, 0)
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
def kernel_rows(r, ja, jb, pb, guide, mask, geo, cls, taps, opt, alpha, lam, cst, Kt, Krt, D2t,
                save):
    """K of class row ``r``, columns ``[ja, jb)``, into ``Kt[k, ti, pb:pb + jb - ja]``
    (mask and normalisation applied); with ``save`` also phi into ``Krt`` and the
    squared distance into ``D2t`` (same layout)."""
    kind, chw, normalize, masked, has_mask = opt[0], opt[2], opt[3], opt[4], opt[5]
    cg_n = guide.shape[1]
    ck_n = Kt.shape[0]
    td_n, th_n, tw_n = cls[0, 3], cls[1, 3], cls[2, 3]
    t_n = td_n * th_n * tw_n
    gsd, gsh, gsw = cls[0, 5], cls[1, 5], cls[2, 5]
    floor = cst[4]
    m = jb - ja
    b, jd, jh = decode_row(r, cls[0, 2], cls[1, 2])
    f0, dedge = centre_features(guide, b, jd, jh, cls, geo, ja, jb, floor, chw)
    # staged path (see stage_guide): the tap row's guide rows copied once for its taps
    vw = lanes(Kt)
    mp = -(-m // vw) * vw
    wlo, span = staged_span(taps, tw_n, gsw)
    staged = span >= 0
    ncs = mp + span if staged else 0
    sstride = -(-ncs // vw) * vw + vw
    S = np.empty(cg_n * sstride if staged else 0, dtype=Kt.dtype)
    f0p = np.zeros(cg_n * mp if staged else 0, dtype=Kt.dtype)
    for c in range(cg_n if staged else 0):
        f0p[c * mp:c * mp + m] = f0[c]
    d2 = np.empty(mp, dtype=Kt.dtype)
    ti = -1
    for tdi in range(td_n):
        gd = taps[0, tdi, 2] + jd * gsd
        for thi in range(th_n):
            gh = taps[1, thi, 2] + jh * gsh
            if staged:
                stage_guide(S, sstride, guide, b, 0, cg_n, gd, gh, wlo, gsw, geo, ja, ncs)
            for twi in range(tw_n):
                ti += 1
                gbw = taps[2, twi, 2]
                for k in range(ck_n):
                    # guide channels [k, k+1) with channel_wise, else all of them
                    c_first = k if chw != 0 else 0
                    c_last = k + 1 if chw != 0 else cg_n
                    if staged:
                        tap_d2_staged(d2, f0p[c_first * mp:], mp, S[c_first * sstride:], sstride,
                                      (gbw - wlo) // gsw, c_last - c_first, mp, floor)
                    else:
                        tap_d2(d2, f0, dedge[k], guide, b, k, c_last, gd, gh, gbw, gsw, geo,
                               ja, jb, floor)
                    kr = Kt[k, ti][pb:pb + m]
                    phi_row(kr, d2[:m], kind, alpha[k], cst[0] * lam[k], cst)
                    if save:
                        kraw = Krt[k, ti][pb:pb + m]
                        dd = D2t[k, ti][pb:pb + m]
                        for jj in range(m):
                            kraw[jj] = kr[jj]
                            dd[jj] = d2[jj]
    if masked:
        M = d2
        for ti in range(t_n):
            tap_validity(M, mask, has_mask, b, geo, cls, taps, jd, jh,
                         ti // (th_n * tw_n), (ti // tw_n) % th_n, ti % tw_n, ja, jb)
            for k in range(ck_n):
                kr = Kt[k, ti][pb:pb + m]
                for jj in range(m):
                    kr[jj] *= M[jj]
    if normalize:
        Z = d2
        for k in range(ck_n):
            for jj in range(m):
                Z[jj] = 0
            for ti in range(t_n):
                kr = Kt[k, ti][pb:pb + m]
                for jj in range(m):
                    Z[jj] += kr[jj]
            for jj in range(m):
                if Z[jj] == 0:
                    Z[jj] = 1
            for ti in range(t_n):
                kr = Kt[k, ti][pb:pb + m]
                for jj in range(m):
                    kr[jj] /= Z[jj]


@njit(cache=True, fastmath=FASTMATH)
def kernel_rows_vjp(r, ja, jb, pb, mask, geo, cls, taps, opt, alpha, lam, cst, Kt, Krt, D2t, gKt,
                    part, need_guide, need_alpha, need_lam):
    """Backward of :func:`kernel_rows` for the same row segment: ``gKt`` (the gradient
    w.r.t. the final K) goes through normalisation and mask, the alpha/lam gradient
    sums are added to ``part[0, k]`` / ``part[1, k]``, and with ``need_guide`` ``gKt``
    is overwritten with the gradient w.r.t. the squared distance."""
    kind, normalize, masked, has_mask = opt[0], opt[3], opt[4], opt[5]
    ck_n = Kt.shape[0]
    th_n, tw_n = cls[1, 3], cls[2, 3]
    t_n = cls[0, 3] * th_n * tw_n
    half, eps, one, two = cst[0], cst[1], cst[2], cst[5]
    m = jb - ja
    b, jd, jh = decode_row(r, cls[0, 2], cls[1, 2])
    M = np.empty((t_n if masked else 0, m), dtype=Kt.dtype)
    if masked:
        for ti in range(t_n):
            tap_validity(M[ti], mask, has_mask, b, geo, cls, taps, jd, jh,
                          ti // (th_n * tw_n), (ti // tw_n) % th_n, ti % tw_n, ja, jb)
    Z = np.empty(m, dtype=Kt.dtype)
    S = np.empty(m, dtype=Kt.dtype)
    for k in range(ck_n):
        if normalize:
            for jj in range(m):
                Z[jj] = 0
                S[jj] = 0
            for ti in range(t_n):
                kraw = Krt[k, ti][pb:pb + m]
                kn = Kt[k, ti][pb:pb + m]
                g = gKt[k, ti][pb:pb + m]
                mt = M[ti]
                for jj in range(m):
                    Z[jj] += kraw[jj] * mt[jj]
                    S[jj] += g[jj] * kn[jj]
            for jj in range(m):
                if Z[jj] == 0:
                    Z[jj] = 1
            for ti in range(t_n):
                g = gKt[k, ti][pb:pb + m]
                for jj in range(m):
                    g[jj] = (g[jj] - S[jj]) / Z[jj]
        if masked:
            for ti in range(t_n):
                g = gKt[k, ti][pb:pb + m]
                mt = M[ti]
                for jj in range(m):
                    g[jj] *= mt[jj]
        sa = 0.0
        sl = 0.0
        if need_alpha:
            for ti in range(t_n):
                g = gKt[k, ti][pb:pb + m]
                for jj in range(m):
                    sa += g[jj]
        if need_lam:
            a = alpha[k]
            for ti in range(t_n):
                g = gKt[k, ti][pb:pb + m]
                kraw = Krt[k, ti][pb:pb + m]
                dd = D2t[k, ti][pb:pb + m]
                for jj in range(m):
                    if g[jj] != 0:
                        sl += g[jj] * half * math.log(dd[jj] + eps) * (kraw[jj] - a)
        part[0, k] += sa
        part[1, k] += sl
        if need_guide:
            hl = half * lam[k]
            e = hl - one
            for ti in range(t_n):
                g = gKt[k, ti][pb:pb + m]
                kraw = Krt[k, ti][pb:pb + m]
                dd = D2t[k, ti][pb:pb + m]
                if kind == 0:
                    for jj in range(m):
                        g[jj] *= -half * kraw[jj]
                elif kind == 1:
                    for jj in range(m):
                        g[jj] *= -kraw[jj] / (two * math.sqrt(dd[jj] + eps))
                else:
                    for jj in range(m):
                        if g[jj] != 0:
                            g[jj] = g[jj] * hl * (dd[jj] + eps) ** e


@njit(cache=True, fastmath=FASTMATH)
def _guide_grad_staged(c, kg, b, jd, jh, ja, m, pb, wlo, span, guide, geo, cls, taps, floor, two,
                       gKt, grad_guide, f0, acc):
    """The neighbour part of :func:`guide_grad_rows` for taps whose reads are shifts of one
    row (:func:`staged_span`): per tap row, guide channel ``c`` is staged once
    (:func:`stage_guide`, zeros off the guide), its taps add to a staged gradient row,
    and that row is added to the guide gradient once -- one strided gather and one
    strided add per tap row instead of per tap (the transposed convolution's classes
    read every other guide column), and no column bounds in the tap loop (a zero
    neighbour gives the off-guide term ``2*max(-f0, floor)*g`` exactly)."""
    td_n, th_n, tw_n = cls[0, 3], cls[1, 3], cls[2, 3]
    gsd, gsh, gsw = cls[0, 5], cls[1, 5], cls[2, 5]
    ncs = m + span
    Sg = np.empty(ncs, dtype=acc.dtype)
    Gs = np.empty(ncs, dtype=acc.dtype)
    f0m = f0[:m]
    am = acc[:m]
    ti = -1
    for tdi in range(td_n):
        gd = taps[0, tdi, 2] + jd * gsd
        for thi in range(th_n):
            gh = taps[1, thi, 2] + jh * gsh
            stage_guide(Sg, ncs, guide, b, c, c + 1, gd, gh, wlo, gsw, geo, ja, ncs)
            for i in range(ncs):
                Gs[i] = 0
            for twi in range(tw_n):
                ti += 1
                sh = (taps[2, twi, 2] - wlo) // gsw
                gm = gKt[kg, ti][pb:pb + m]
                ss = Sg[sh:sh + m]
                gs = Gs[sh:sh + m]
                for j in range(m):
                    gv = two * max(ss[j] - f0m[j], floor) * gm[j]
                    gs[j] += gv
                    am[j] -= gv
            # the staged columns on the guide: the same range stage_guide copied
            if 0 <= gd < geo[1, 0] and 0 <= gh < geo[1, 1]:
                lo, hi = jrange(wlo, gsw, geo[1, 2], ja, ja + ncs)
                if hi > lo:
                    add_row(grad_guide[b, c, gd, gh], wlo, gsw, lo, Gs[lo - ja:hi - ja])


@njit(cache=True, fastmath=FASTMATH)
def guide_grad_rows(c, r, ja, jb, pb, guide, geo, cls, taps, opt, cst, gKt, grad_guide, f0, acc,
                    buf):
    """Scatter ``2*diff*g_d2`` of guide channel ``c`` (``gKt`` from :func:`kernel_rows_vjp`)
    to the neighbours and the centres of class row ``r``, columns ``[ja, jb)``;
    ``f0``, ``acc``, ``buf``: scratch of at least ``jb - ja`` elements."""
    chw = opt[2]
    kg = c * (chw != 0)
    td_n, th_n, tw_n = cls[0, 3], cls[1, 3], cls[2, 3]
    gsd, gsh, gsw = cls[0, 5], cls[1, 5], cls[2, 5]
    floor, two = cst[4], cst[5]
    cbw = cls[2, 6]
    m = jb - ja
    b, jd, jh = decode_row(r, cls[0, 2], cls[1, 2])
    cd = cls[0, 6] + jd * gsd
    ch = cls[1, 6] + jh * gsh
    clo, chi = guide_row(f0, guide, b, c, cd, ch, cbw, gsw, geo, ja, jb)
    for jj in range(m):
        acc[jj] = 0
    wlo, span = staged_span(taps, tw_n, gsw)
    if span >= 0:
        _guide_grad_staged(c, kg, b, jd, jh, ja, m, pb, wlo, span, guide, geo, cls, taps, floor,
                           two, gKt, grad_guide, f0, acc)
        if chi > clo:
            add_row(grad_guide[b, c, cd, ch], cbw, gsw, clo, acc[clo - ja:chi - ja])
        return
    ti = -1
    for tdi in range(td_n):
        gd = taps[0, tdi, 2] + jd * gsd
        for thi in range(th_n):
            gh = taps[1, thi, 2] + jh * gsh
            row_ok = 0 <= gd < geo[1, 0] and 0 <= gh < geo[1, 1]
            for twi in range(tw_n):
                ti += 1
                g = gKt[kg, ti][pb:pb + m]
                gbw = taps[2, twi, 2]
                lo, hi = ja, ja
                if row_ok:
                    lo, hi = jrange(gbw, gsw, geo[1, 2], ja, jb)
                for jj in range(lo - ja):          # neighbour off the guide: f_n = 0
                    acc[jj] -= two * max(-f0[jj], floor) * g[jj]
                for jj in range(hi - ja, m):
                    acc[jj] -= two * max(-f0[jj], floor) * g[jj]
                if hi > lo:
                    n = hi - lo
                    f0m = f0[lo - ja:hi - ja]
                    am = acc[lo - ja:hi - ja]
                    gm = g[lo - ja:hi - ja]
                    row = grad_guide[b, c, gd, gh]
                    grow = guide[b, c, gd, gh]
                    if gsw == 1:
                        dst = row[gbw + lo:gbw + hi]
                        gs = grow[gbw + lo:gbw + hi]
                        for j in range(n):
                            gv = two * max(gs[j] - f0m[j], floor) * gm[j]
                            dst[j] += gv
                            am[j] -= gv
                    else:
                        gs = load_row(grow, gbw, gsw, lo, hi)
                        vals = buf[:n]
                        for j in range(n):
                            gv = two * max(gs[j] - f0m[j], floor) * gm[j]
                            vals[j] = gv
                            am[j] -= gv
                        add_row(row, gbw, gsw, lo, vals)
    if chi > clo:
        add_row(grad_guide[b, c, cd, ch], cbw, gsw, clo, acc[clo - ja:chi - ja])


@njit(cache=True)
def take_k_rows(K, b, od, oh, o0w, osw, tap_ids, ja, jb, Kt, pb):
    """``Kt[k, ti, pb + j - ja] = K[b, k, tap_ids[ti], od, oh, o0w + j*osw]`` for ``j`` in
    ``[ja, jb)`` (``K``: a full adapting kernel, (B, Ck, T, D, H, W))."""
    m = jb - ja
    for k in range(Kt.shape[0]):
        for ti in range(tap_ids.shape[0]):
            src = load_row(K[b, k, tap_ids[ti], od, oh], o0w, osw, ja, jb)
            dst = Kt[k, ti, pb:pb + m]
            for j in range(m):
                dst[j] = src[j]


@njit(cache=True, fastmath=FASTMATH)
def put_k_rows(gKt, pb, b, od, oh, o0w, osw, tap_ids, ja, jb, gK):
    """``gK[b, k, tap_ids[ti], od, oh, o0w + j*osw] += gKt[k, ti, pb + j - ja]`` (the
    segment's pixels belong to it alone: a plain add)."""
    m = jb - ja
    for k in range(gKt.shape[0]):
        for ti in range(tap_ids.shape[0]):
            add_row(gK[b, k, tap_ids[ti], od, oh], o0w, osw, ja, gKt[k, ti, pb:pb + m])


@njit(cache=True)
def segment_k(ksrc, r, ja, jb, guide, mask, geo, cls, taps, opt, alpha, lam, cst, Kfull, tap_ids,
              Kt, Krt, D2t, save):
    """K of class row ``r``, columns ``[ja, jb)``, into ``Kt[k, ti, 0:jb - ja]``.

    ``ksrc``: 0 none (a plain convolution: nothing to do), 1 from the guide
    (:func:`kernel_rows`; ``save`` keeps phi and d2 in ``Krt``/``D2t``), 2 a
    precomputed full K ``Kfull`` (B, Ck, T, D, H, W) (:func:`take_k_rows`).
    """
    if ksrc == 1:
        kernel_rows(r, ja, jb, ja - ja, guide, mask, geo, cls, taps, opt, alpha, lam, cst, Kt, Krt,
                    D2t, save)
    elif ksrc == 2:
        b, od, oh, o0w, osw = output_row(cls, r)
        take_k_rows(Kfull, b, od, oh, o0w, osw, tap_ids, ja, jb, Kt, 0)
