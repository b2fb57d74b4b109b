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

from .distances import (centre_features, centre_staged, guide_row, prefetch_guide, stage_guide,
                        staged_span, tap_d2, tap_row_d2)
from .fastexp import vexp
from .indexing import FASTMATH, add_row, decode_row, jrange, load_row, output_row
from .simd import lanes

__all__ = ["kernel_rows", "guide_slots", "kernel_rows_vjp", "guide_grad_rows", "take_k_rows",
           "put_k_rows", "segment_k", "tap_validity", "phi_row"]


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


@njit(cache=True)
def guide_slots(guide, cls, taps, width, like):
    """A thread's guide-row slots for :func:`kernel_rows` on segments of at most ``width``
    columns of class ``cls``: ``(Sr, skey)`` of ``like``'s dtype, one slot per tap row,
    nothing held yet (none when the taps cannot be staged)."""
    vw = lanes(like)
    wlo, span = staged_span(taps, cls[2, 3], cls[2, 5])
    nq = cls[0, 3] * cls[1, 3]
    ncs = -(-width // vw) * vw + max(span, 0)
    ssz = guide.shape[1] * (-(-ncs // vw) * vw + vw)
    return (np.empty(nq * ssz if span >= 0 else 0, dtype=like.dtype),
            np.full((nq if span >= 0 else 0, 5), -1, dtype=np.int64))


@njit(cache=True, fastmath=FASTMATH)
def kernel_rows(r, ja, jb, pb, guide, mask, geo, cls, taps, opt, alpha, lam, cst, Kt, Krt, D2t,
                save, Sr, skey):
    """K of class row ``r``, columns ``[ja, jb)``, into ``Kt[k, ti, pb:pb + jb - ja]``
    (mask and normalisation applied); with ``save`` also phi into ``Krt`` and the
    squared distance into ``D2t`` (same layout).

    ``Sr``/``skey``: the calling thread's slots of staged guide rows, kept from
    one call to the next (:func:`.distances.stage_guide`; slot ``s`` is
    ``Sr[s*ssz:(s + 1)*ssz]``, ``ssz = len(Sr) // len(skey)``, holding the row
    ``skey[s] = (b, d, h, ja, ncols)``; -1 for none): the next row segment of a
    thread usually reads all but one of the same guide rows. With fewer slots
    than tap rows, or slots too small, the rows are staged in a buffer of the call.
    """
    kind, chw, normalize, masked, has_mask = opt[0], opt[2], opt[3], opt[4], opt[5]
    cg_n = guide.shape[1]
    ck_n = Kt.shape[0]
    td_n, th_n, tw_n = cls[0, 3], cls[1, 3], cls[2, 3]
    t_n = td_n * th_n * tw_n
    gsd, gsh, gsw = cls[0, 5], cls[1, 5], cls[2, 5]
    floor = cst[4]
    m = jb - ja
    b, jd, jh = decode_row(r, cls[0, 2], cls[1, 2])
    # staged path (see distances.stage_guide): a tap row's guide rows copied once, the
    # distances of its taps computed together, then phi of each
    vw = lanes(Kt)
    mp = -(-m // vw) * vw
    wlo, span = staged_span(taps, tw_n, gsw)
    staged = span >= 0
    ncs = mp + span if staged else 0
    sstride = -(-ncs // vw) * vw + vw
    nq = td_n * th_n
    ring = staged and skey.shape[0] >= nq and Sr.shape[0] // skey.shape[0] >= cg_n * sstride
    if ring:
        R, keys, ssz = Sr, skey, Sr.shape[0] // skey.shape[0]
    else:
        R = np.empty(cg_n * sstride if staged else 0, dtype=Kt.dtype)
        keys, ssz = np.full((1, 5), -1, dtype=np.int64), cg_n * sstride
    slot_of = np.zeros(nq, dtype=np.int64)
    used = np.zeros(keys.shape[0], dtype=np.bool_)
    for q in range(nq if ring else 0):  # tap rows a slot holds already
        slot_of[q] = -1
        gd = taps[0, q // th_n, 2] + jd * gsd
        gh = taps[1, q % th_n, 2] + jh * gsh
        for sl in range(keys.shape[0]):
            if (not used[sl] and keys[sl, 0] == b and keys[sl, 1] == gd and keys[sl, 2] == gh
                    and keys[sl, 3] == ja and keys[sl, 4] == ncs):
                slot_of[q] = sl
                used[sl] = True
                break
    f0p = np.empty(cg_n * mp if staged else 0, dtype=Kt.dtype)
    shifts = np.empty(tw_n if staged else 0, dtype=np.int64)
    if staged:
        centre_staged(f0p, mp, guide, b, jd, jh, cls, geo, ja, jb)
        for twi in range(tw_n):
            shifts[twi] = (taps[2, twi, 2] - wlo) // gsw
        f0 = dedge = np.empty((0, 0), dtype=guide.dtype)
    else:
        f0, dedge = centre_features(guide, b, jd, jh, cls, geo, ja, jb, floor, chw)
    # one distance row per tap of a tap row (staged), else one row
    D = np.empty(tw_n * mp if staged else mp, dtype=Kt.dtype)
    d2 = D[:mp]
    ti = -1
    for tdi in range(td_n):
        gd = taps[0, tdi, 2] + jd * gsd
        for thi in range(th_n):
            gh = taps[1, thi, 2] + jh * gsh
            q = tdi * th_n + thi
            if staged and (slot_of[q] < 0 or not ring):     # not held: into a free slot
                sl = 0
                while ring and sl < keys.shape[0] and used[sl]:
                    sl += 1
                if sl == keys.shape[0]:     # cannot happen (a slot per tap row)
                    raise RuntimeError("no free slot for a guide row")
                used[sl] = ring
                slot_of[q] = sl
                keys[sl, 0], keys[sl, 1], keys[sl, 2], keys[sl, 3], keys[sl, 4] = b, gd, gh, ja, ncs
                stage_guide(R[sl * ssz:], sstride, guide, b, 0, cg_n, gd, gh, wlo, gsw, geo, ja,
                            ncs)
            if staged and q + 1 < nq and (slot_of[q + 1] < 0 or not ring):  # next new rows
                prefetch_guide(guide, b, 0, cg_n, taps[0, (q + 1) // th_n, 2] + jd * gsd,
                               taps[1, (q + 1) % th_n, 2] + jh * gsh, wlo, gsw, geo, ja, ncs)
            S = R[slot_of[q] * ssz:]
            t0 = ti + 1
            for k in range(ck_n):
                # guide channels [k, k+1) with channel_wise, else all of them
                c_first = k if chw != 0 else 0
                c_last = k + 1 if chw != 0 else cg_n
                if staged:
                    tap_row_d2(D, mp, f0p[c_first * mp:], mp, S[c_first * sstride:], sstride,
                               shifts, c_last - c_first, mp, floor)
                for twi in range(tw_n):
                    ti = t0 + twi
                    if staged:
                        d2 = D[twi * mp:(twi + 1) * mp]
                    else:
                        tap_d2(d2, f0, dedge[k], guide, b, k, c_last, gd, gh, taps[2, twi, 2],
                               gsw, geo, ja, jb, floor)
                    kr = Kt[k, ti][pb:pb + m]
                    phi_row(kr, d2[:m], kind, alpha[k], cst[0] * lam[k], cst)
                    if save:
                        kraw = Krt[k, ti][pb:pb + m]
                        dd = D2t[k, ti][pb:pb + m]
                        for jj in range(m):
                            kraw[jj] = kr[jj]
                            dd[jj] = d2[jj]
            ti = t0 + tw_n - 1
    if masked:
        M = D
        for ti in range(t_n):
            tap_validity(M, mask, has_mask, b, geo, cls, taps, jd, jh,
                         ti // (th_n * tw_n), (ti // tw_n) % th_n, ti % tw_n, ja, jb)
            for k in range(ck_n):
                kr = Kt[k, ti][pb:pb + m]
                for jj in range(m):
                    kr[jj] *= M[jj]
    if normalize:
        Z = D
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
              Kt, Krt, D2t, save, Sr, skey):
    """K of class row ``r``, columns ``[ja, jb)``, into ``Kt[k, ti, 0:jb - ja]``.

    ``ksrc``: 0 none (a plain convolution: nothing to do), 1 from the guide
    (:func:`kernel_rows`; ``save`` keeps phi and d2 in ``Krt``/``D2t``; ``Sr``/``skey``
    its guide-row slots), 2 a precomputed full K ``Kfull`` (B, Ck, T, D, H, W)
    (:func:`take_k_rows`).
    """
    if ksrc == 1:
        kernel_rows(r, ja, jb, ja - ja, guide, mask, geo, cls, taps, opt, alpha, lam, cst, Kt, Krt,
                    D2t, save, Sr, skey)
    elif ksrc == 2:
        b, od, oh, o0w, osw = output_row(cls, r)
        take_k_rows(Kfull, b, od, oh, o0w, osw, tap_ids, ja, jb, Kt, 0)
