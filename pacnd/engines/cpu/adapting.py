"""Adapting kernel K on tiles (Numba): forward, and backward to guide, alpha, lam.

K of one tile is ``Kt[ck, ti, p]`` — K channel ``ck`` (1, or Cg with
``channel_wise``), class tap ``ti``, tile pixel ``p`` (see
:mod:`pacnd.engines.cpu.layout`). :func:`kernel_tile` computes it from the
guide with the mask/normalisation applied; with ``save`` it also keeps the raw
``phi`` and the squared distances for :func:`kernel_tile_vjp`, which turns a
gradient w.r.t. the tile's K into guide, alpha and lam gradients.

The PAC kernels call these per tile (K is never materialised at full size);
:func:`adapting_kernel` / :func:`adapting_kernel_vjp` (the engine interface
for the public full-K call) walk all tiles and write or read the full K.

Options reach the kernels as run-time integers so each kernel compiles once
per dtype: ``kind`` (0 gaussian, 1 laplacian, 2 inverse), ``asym``, ``chw``
(channel-wise), ``normalize``, ``masked`` (normalize or a mask: taps off the
input, or on masked-out pixels, get K = 0), ``has_mask``. ``cst`` holds the
dtype's constants ``[0.5, EPS, 1, 0, relu floor, 2]`` (the relu floor is 0
with ``asym``, else a huge negative number: ``max(diff, floor)`` is the relu).
"""

import math

import numpy as np
from numba import njit, prange

from ..._kernelspec import EPS
from .fastexp import vexp
from .indexing import COL_BLOCK, FASTMATH, add_row, decode_row, jrange, load_row, unit_of
from .layout import Workspace, layout_of, row_segments, tiles

__all__ = ["adapting_kernel", "adapting_kernel_vjp", "kernel_tile", "kernel_tile_vjp",
           "constants", "options", "params"]


def constants(dtype, asym):
    return np.array([0.5, EPS, 1.0, 0.0, 0.0 if asym else -1e30, 2.0], dtype=dtype)


def options(spec, mask):
    """int64 [kind, asym, chw, normalize, masked, has_mask]."""
    return np.array([spec.code, spec.asym, spec.channel_wise, spec.normalize,
                     spec.normalize or mask is not None, mask is not None], dtype=np.int64)


def params(spec, ck, dtype):
    a, l_ = spec.params_for(ck)
    return np.ascontiguousarray(a, dtype=dtype), np.ascontiguousarray(l_, dtype=dtype)


def dummy_mask(dtype):
    return np.zeros((1, 1, 1, 1, 1), dtype=dtype)


# --------------------------------------------------------------------------- forward
# Each kernel is a thin ``prange`` over work units calling a plain ``njit`` body:
# Numba's parfor passes are slow on large loop bodies, so this keeps compile
# times short.
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
    if ghi > glo:
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
def _kernel_unit(u, nblk, guide, mask, geo, cls, taps, r0, c0, c1, opt, alpha, lam, cst,
                 Kt, Krt, D2t, save):
    kind, chw, normalize, masked, has_mask = opt[0], opt[2], opt[3], opt[4], opt[5]
    cg_n = guide.shape[1]
    ck_n = Kt.shape[0]
    td_n, th_n, tw_n = cls[0, 3], cls[1, 3], cls[2, 3]
    t_n = td_n * th_n * tw_n
    gsd, gsh, gsw = cls[0, 5], cls[1, 5], cls[2, 5]
    floor = cst[4]
    r, ja, jb, pb = unit_of(u, nblk, r0, c0, c1)
    m = jb - ja
    b, jd, jh = decode_row(r, cls[0, 2], cls[1, 2])
    f0, dedge = centre_features(guide, b, jd, jh, cls, geo, ja, jb, floor, chw)
    d2 = np.empty(m, dtype=Kt.dtype)
    ti = -1
    for tdi in range(td_n):
        gd = taps[0, tdi, 2] + jd * gsd
        for thi in range(th_n):
            gh = taps[1, thi, 2] + jh * gsh
            for twi in range(tw_n):
                ti += 1
                gbw = taps[2, twi, 2]
                for k in range(ck_n):
                    # guide channels [k, k+1) with channel_wise, else all of them
                    c_last = k + 1 if chw != 0 else cg_n
                    tap_d2(d2, f0, dedge[k], guide, b, k, c_last, gd, gh, gbw, gsw, geo,
                           ja, jb, floor)
                    kr = Kt[k, ti][pb:pb + m]
                    phi_row(kr, d2, kind, alpha[k], cst[0] * lam[k], cst)
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


@njit(parallel=True, cache=True)
def kernel_tile(guide, mask, geo, cls, taps, r0, r1, c0, c1, opt, alpha, lam, cst,
                Kt, Krt, D2t, save):
    """K of tile ``rows [r0, r1) x cols [c0, c1)`` into ``Kt`` (Ck, T_r, npix).

    With ``save``: ``Krt`` = phi (before mask/normalisation), ``D2t`` = squared
    distance, same shape.

    A ``prange`` kernel, unlike the dense product's thread pool
    (:func:`.threads.parallel_for`): the backward calls it once per small tile
    between BLAS calls, where waking pool threads cost ~0.5 ms a call.
    """
    nblk = (c1 - c0 + COL_BLOCK - 1) // COL_BLOCK
    for u_ in prange((r1 - r0) * nblk):
        u = np.int64(u_)  # one body specialisation (prange indices are unsigned)
        _kernel_unit(u, nblk, guide, mask, geo, cls, taps, r0, c0, c1, opt, alpha, lam, cst,
                    Kt, Krt, D2t, save)


# --------------------------------------------------------------------------- backward
@njit(cache=True, fastmath=FASTMATH)
def _kernel_vjp_unit(u, nblk, mask, geo, cls, taps, r0, c0, c1, opt, alpha, lam, cst,
                     Kt, Krt, D2t, gKt, part, need_guide, need_alpha, need_lam):
    """Through normalisation and mask, alpha/lam sums, then d phi / d d2 (into gKt)."""
    kind, normalize, masked, has_mask = opt[0], opt[3], opt[4], opt[5]
    ck_n = Kt.shape[0]
    th_n, tw_n = cls[1, 3], cls[2, 3]
    t_n = cls[0, 3] * th_n * tw_n
    half, eps, one, two = cst[0], cst[1], cst[2], cst[5]
    r, ja, jb, pb = unit_of(u, nblk, r0, c0, c1)
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
        part[u, 0, k] = sa
        part[u, 1, k] = sl
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
def _guide_grad_channel(c, nblk, guide, geo, cls, taps, r0, r1, c0, c1, opt, cst, gKt,
                        grad_guide):
    """Scatter ``2*diff*g_d2`` of guide channel ``c`` to neighbours and centres."""
    chw = opt[2]
    kg = c * (chw != 0)
    td_n, th_n, tw_n = cls[0, 3], cls[1, 3], cls[2, 3]
    gsd, gsh, gsw = cls[0, 5], cls[1, 5], cls[2, 5]
    floor, two = cst[4], cst[5]
    cbw = cls[2, 6]
    f0 = np.empty(COL_BLOCK, dtype=gKt.dtype)
    acc = np.empty(COL_BLOCK, dtype=gKt.dtype)
    buf = np.empty(COL_BLOCK, dtype=gKt.dtype)
    for u in range((r1 - r0) * nblk):
        r, ja, jb, pb = unit_of(u, nblk, r0, c0, c1)
        m = jb - ja
        b, jd, jh = decode_row(r, cls[0, 2], cls[1, 2])
        cd = cls[0, 6] + jd * gsd
        ch = cls[1, 6] + jh * gsh
        clo, chi = guide_row(f0, guide, b, c, cd, ch, cbw, gsw, geo, ja, jb)
        for jj in range(m):
            acc[jj] = 0
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


@njit(parallel=True, cache=True)
def kernel_tile_vjp(guide, mask, geo, cls, taps, r0, r1, c0, c1, opt, alpha, lam, cst,
                    Kt, Krt, D2t, gKt, grad_guide, part, need_guide, need_alpha, need_lam):
    """Backward of :func:`kernel_tile` for one tile.

    ``gKt`` (Ck, T_r, npix): gradient w.r.t. the tile's final K; overwritten.
    ``grad_guide`` (B, Cg, *guide): accumulated, one guide channel per thread.
    ``part`` (units, 2, Ck): per-unit alpha and lam partial sums.
    """
    nblk = (c1 - c0 + COL_BLOCK - 1) // COL_BLOCK
    for u_ in prange((r1 - r0) * nblk):
        u = np.int64(u_)  # one body specialisation (prange indices are unsigned)
        _kernel_vjp_unit(u, nblk, mask, geo, cls, taps, r0, c0, c1, opt, alpha, lam, cst,
                         Kt, Krt, D2t, gKt, part, need_guide, need_alpha, need_lam)
    if need_guide:
        for c_ in prange(guide.shape[1]):
            c = np.int64(c_)  # one body specialisation (prange indices are unsigned)
            _guide_grad_channel(c, nblk, guide, geo, cls, taps, r0, r1, c0, c1, opt, cst, gKt,
                                grad_guide)


# --------------------------------------------------------------------------- full K
def put_taps(Kt, K, tc, tile):
    """``K[b, k, tap_ids[ti], od, oh, ow] = Kt[k, ti, p]`` for the tile's pixels."""
    for p0, p1, b, idx in row_segments(tc, tile):
        for ti, t in enumerate(tc.tap_ids):
            blk = K[b, :, t][idx]
            blk[...] = Kt[:, ti, p0:p1].reshape(blk.shape)


def take_taps(K, Kt, tc, tile):
    """Inverse of :func:`put_taps`: ``Kt[k, ti, p] = K[b, k, tap_ids[ti], od, oh, ow]``."""
    for p0, p1, b, idx in row_segments(tc, tile):
        for ti, t in enumerate(tc.tap_ids):
            blk = K[b, :, t][idx]
            Kt[:, ti, p0:p1].reshape(blk.shape)[...] = blk


# --------------------------------------------------------------------------- helpers
class KernelContext:
    """Everything the tile kernels need about K for one operation."""

    def __init__(self, guide, geom, spec, mask, lay):
        self.guide5 = guide.reshape(guide.shape[:2] + lay.guide3)
        self.dtype = guide.dtype
        self.ck = guide.shape[1] if spec.channel_wise else 1
        self.opt = options(spec, mask)
        self.alpha, self.lam = params(spec, self.ck, guide.dtype)
        self.cst = constants(guide.dtype, spec.asym)
        self.mask5 = (dummy_mask(guide.dtype) if mask is None
                      else mask.reshape(mask.shape[:2] + lay.in3))
        self.geo = lay.geo
        self.spec = spec

    def compute(self, tc, tile, Kt, Krt=None, D2t=None):
        save = Krt is not None
        if not save:
            Krt = D2t = Kt
        kernel_tile(self.guide5, self.mask5, self.geo, tc.cls, tc.taps, *tile, self.opt,
                    self.alpha, self.lam, self.cst, Kt, Krt, D2t, save)

    def backward(self, tc, tile, Kt, Krt, D2t, gKt, grad_guide, needs):
        r0, r1, c0, c1 = tile
        nblk = (c1 - c0 + COL_BLOCK - 1) // COL_BLOCK
        part = np.zeros(((r1 - r0) * nblk, 2, self.ck), dtype=np.float64)
        gg = grad_guide if grad_guide is not None else self.guide5[:1, :1, :1, :1, :1]
        kernel_tile_vjp(self.guide5, self.mask5, self.geo, tc.cls, tc.taps, r0, r1, c0, c1,
                        self.opt, self.alpha, self.lam, self.cst, Kt, Krt, D2t, gKt, gg,
                        part, grad_guide is not None, "alpha" in needs, "lam" in needs)
        return part.sum(axis=0)


def _bytes_per_pixel(ck, taps, itemsize, arrays):
    return ck * taps * itemsize * arrays


def adapting_kernel(guide, geom, spec, mask=None):
    from . import TILE_BYTES  # noqa: PLC0415 - read at call time (tests change it)
    lay = layout_of(geom, all_taps=True)
    ctx = KernelContext(guide, geom, spec, mask, lay)
    B = guide.shape[0]
    T = geom.taps
    K = np.empty((B, ctx.ck, T) + lay.out3, dtype=guide.dtype)
    ws = Workspace(guide.dtype)
    for tc in lay.classes:
        bpp = _bytes_per_pixel(ctx.ck, tc.ntaps, guide.itemsize, 1)
        for tile in tiles(tc, B, bpp, TILE_BYTES):
            npix = (tile[1] - tile[0]) * (tile[3] - tile[2])
            Kt = ws.get("K", (ctx.ck, tc.ntaps, npix))
            ctx.compute(tc, tile, Kt)
            put_taps(Kt, K, tc, tile)
    return K.reshape((B, ctx.ck) + tuple(geom.kernel_size) + tuple(geom.out_size))


def adapting_kernel_vjp(grad_K, guide, geom, spec, mask=None, needs=("guide", "alpha", "lam")):
    from . import TILE_BYTES  # noqa: PLC0415
    lay = layout_of(geom, all_taps=True)
    ctx = KernelContext(guide, geom, spec, mask, lay)
    B = guide.shape[0]
    T = geom.taps
    gK = grad_K.reshape((B, ctx.ck, T) + lay.out3)
    need_guide = "guide" in needs
    grad_guide = np.zeros(ctx.guide5.shape, dtype=guide.dtype) if need_guide else None
    sums = np.zeros((2, ctx.ck))
    ws = Workspace(guide.dtype)
    for tc in lay.classes:
        bpp = _bytes_per_pixel(ctx.ck, tc.ntaps, guide.itemsize, 4)
        for tile in tiles(tc, B, bpp, TILE_BYTES):
            npix = (tile[1] - tile[0]) * (tile[3] - tile[2])
            shape = (ctx.ck, tc.ntaps, npix)
            Kt, Krt, D2t, gKt = (ws.get(n, shape) for n in ("K", "Kraw", "D2", "gK"))
            ctx.compute(tc, tile, Kt, Krt, D2t)
            take_taps(gK, gKt, tc, tile)
            sums += ctx.backward(tc, tile, Kt, Krt, D2t, gKt, grad_guide, needs)
    return finish_kernel_grads(spec, needs, grad_guide, sums, guide)


def finish_kernel_grads(spec, needs, grad_guide, sums, guide):
    res = {}
    if "guide" in needs and grad_guide is not None:
        res["guide"] = grad_guide.reshape(guide.shape)
    if spec is not None and spec.kind == "inverse":
        if "alpha" in needs:
            res["alpha"] = sums[0].astype(guide.dtype)
        if "lam" in needs:
            res["lam"] = sums[1].astype(guide.dtype)
    return res
