"""Adapting kernel K on tiles (Numba): forward, and backward to guide, alpha, lam.

K of one tile is ``Kt[ck, ti, p]`` — K channel ``ck`` (1, or Cg with
``channel_wise``), class tap ``ti``, tile pixel ``p`` (see
:mod:`pacnd.engines.cpu.layout`). :func:`kernel_tile` computes it from the
guide with the mask/normalisation applied; with ``save`` it also keeps the raw
``phi`` and the squared distances for :func:`kernel_tile_vjp`, which turns a
gradient w.r.t. the tile's K into guide, alpha and lam gradients. Both run the
row-segment cores of :mod:`.kernel_rows` on :func:`.threads.parallel_for`.

The depthwise kernels use these per tile (K is never materialised at full
size; the dense kernels compute K per row segment themselves);
:func:`adapting_kernel` / :func:`adapting_kernel_vjp` (the engine interface
for the public full-K call) walk all tiles and write or read the full K.
Options and constants: see :mod:`.kernel_rows`.
"""

import numpy as np
from numba import njit

from ..._kernelspec import EPS
from .indexing import COL_BLOCK, unit_of
from .kernel_rows import guide_grad_rows, guide_slots, kernel_rows, kernel_rows_vjp
from .layout import Workspace, layout_of, row_segments, tiles
from .threads import SLOTS, claim, parallel_for

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


# --------------------------------------------------------------------------- tile kernels
# Thin loops over work units (row segments of at most COL_BLOCK columns) calling the
# row-segment cores of :mod:`.kernel_rows`, run on :func:`.threads.parallel_for`.
@njit(nogil=True, cache=True)
def _kernel_units(tid, ctl, n, nblk, guide, mask, geo, cls, taps, r0, c0, c1, opt, alpha, lam,
                  cst, Kt, Krt, D2t, save):
    Sr, skey = guide_slots(guide, cls, taps, min(COL_BLOCK, c1 - c0), Kt)
    u = claim(ctl, tid)
    while u < n:
        r, ja, jb, pb = unit_of(u, nblk, r0, c0, c1)
        kernel_rows(r, ja, jb, pb, guide, mask, geo, cls, taps, opt, alpha, lam, cst, Kt, Krt,
                    D2t, save, Sr, skey)
        u = claim(ctl, tid)


def kernel_tile(guide, mask, geo, cls, taps, r0, r1, c0, c1, opt, alpha, lam, cst,
                Kt, Krt, D2t, save):
    """K of tile ``rows [r0, r1) x cols [c0, c1)`` into ``Kt`` (Ck, T_r, npix).

    With ``save``: ``Krt`` = phi (before mask/normalisation), ``D2t`` = squared
    distance, same shape.
    """
    nblk = (c1 - c0 + COL_BLOCK - 1) // COL_BLOCK
    parallel_for(_kernel_units, (r1 - r0) * nblk, nblk, guide, mask, geo, cls, taps, r0, c0, c1,
                 opt, alpha, lam, cst, Kt, Krt, D2t, save)


@njit(nogil=True, cache=True)
def _kernel_vjp_units(tid, ctl, nslots, n, nblk, mask, geo, cls, taps, r0, c0, c1, opt, alpha, lam, cst,
                      Kt, Krt, D2t, gKt, part, need_guide, need_alpha, need_lam):
    slot = claim(ctl, tid)     # slot s: units s, s + nslots, ... into part[s] (threads.SLOTS)
    while slot < nslots:
        for u in range(slot, n, nslots):
            r, ja, jb, pb = unit_of(u, nblk, r0, c0, c1)
            kernel_rows_vjp(r, ja, jb, pb, mask, geo, cls, taps, opt, alpha, lam, cst, Kt, Krt,
                            D2t, gKt, part[slot], need_guide, need_alpha, need_lam)
        slot = claim(ctl, tid)


@njit(nogil=True, cache=True)
def _guide_grad_channels(tid, ctl, n, nblk, guide, geo, cls, taps, r0, r1, c0, c1, opt, cst,
                         gKt, grad_guide):
    f0 = np.empty(COL_BLOCK, dtype=gKt.dtype)
    acc = np.empty(COL_BLOCK, dtype=gKt.dtype)
    buf = np.empty(COL_BLOCK, dtype=gKt.dtype)
    c = claim(ctl, tid)
    while c < n:
        for u in range((r1 - r0) * nblk):
            r, ja, jb, pb = unit_of(u, nblk, r0, c0, c1)
            guide_grad_rows(c, r, ja, jb, pb, guide, geo, cls, taps, opt, cst, gKt, grad_guide,
                            f0, acc, buf)
        c = claim(ctl, tid)


def kernel_tile_vjp(guide, mask, geo, cls, taps, r0, r1, c0, c1, opt, alpha, lam, cst,
                    Kt, Krt, D2t, gKt, grad_guide, part, need_guide, need_alpha, need_lam):
    """Backward of :func:`kernel_tile` for one tile.

    ``gKt`` (Ck, T_r, npix): gradient w.r.t. the tile's final K; overwritten.
    ``grad_guide`` (B, Cg, *guide): accumulated, one guide channel per thread.
    ``part`` (slots, 2, Ck) float64: per-slot alpha and lam partial sums (added to;
    :data:`.threads.SLOTS`).
    """
    nblk = (c1 - c0 + COL_BLOCK - 1) // COL_BLOCK
    parallel_for(_kernel_vjp_units, part.shape[0], (r1 - r0) * nblk, nblk, mask, geo, cls, taps, r0, c0, c1, opt,
                 alpha, lam, cst, Kt, Krt, D2t, gKt, part, need_guide, need_alpha, need_lam)
    if need_guide:
        parallel_for(_guide_grad_channels, guide.shape[1], nblk, guide, geo, cls, taps, r0, r1,
                     c0, c1, opt, cst, gKt, grad_guide)


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
        part = np.zeros((SLOTS, 2, self.ck), dtype=np.float64)
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
