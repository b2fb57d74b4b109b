"""PAC forward and vector-Jacobian products on the Numba engine (orchestration).

Forward, per tap class (:mod:`pacnd.engines.cpu.layout`):

* dense groups: per tile, K (from the guide with mask and normalisation
  fused, :func:`adapting.kernel_tile`; or copied from a precomputed K; or none
  for a plain convolution), then :func:`dense.dense_forward` — per output-row
  segment, K-weighted input panels multiplied by the weights with a
  register-blocked micro-kernel (:mod:`gemm`), no column matrix;
* depthwise (Cin/g == Cout/g == 1): direct loops (:mod:`depthwise`), K
  computed on the fly when it comes from a guide.

Backward per tile: ``gW += gout_tile @ cols^T``, ``G = W^T @ gout_tile``,
grad input by col2im scatter of ``G*K`` (one input channel per thread),
``gK[t, p] = sum_c G * x``, then through normalisation/mask/phi to the guide
(:func:`adapting.kernel_tile_vjp`).

Working memory is a few tile-sized buffers (:data:`pacnd.engines.cpu.TILE_BYTES`),
independent of the image size; no full-size K, columns or zero-inserted input.
"""

import numba
import numpy as np

from . import adapting as _ad
from .dense import chunking, dense_forward
from .depthwise import dw_backward, dw_forward, dw_forward_fused
from .gemm import nr, pack_weights
from .layout import Workspace, layout_of, row_segments, tiles
from .tiles import gather_cols, scatter_input

__all__ = ["pac_forward", "pac_vjp"]


class _Op:
    """Shapes, embeddings and the K source of one PAC call."""

    def __init__(self, x, weight, geom, groups, K, guide, spec, mask):
        self.lay = lay = layout_of(geom)
        self.B, self.cin = x.shape[:2]
        self.cout = weight.shape[0]
        self.groups = groups
        self.cin_g = self.cin // groups
        self.cout_g = self.cout // groups
        self.T = geom.taps
        self.dtype = x.dtype
        self.x5 = x.reshape((self.B, self.cin) + lay.in3)
        self.W3 = weight.reshape(self.cout, self.cin_g, self.T)
        self.depthwise = self.cin_g == 1 and self.cout_g == 1
        self.ctx = None
        self.Kfull = None
        if guide is not None:
            self.ctx = _ad.KernelContext(guide, geom, spec, mask, lay)
            self.ck = self.ctx.ck
        elif K is not None:
            self.ck = K.shape[1]
            self.Kfull = K.reshape((self.B, self.ck, self.T) + lay.out3)
        else:
            self.ck = 0
        self.kmode = 0 if self.ck == 0 else (1 if self.ck == 1 else 2)
        self._dummy = np.zeros((1, 1, 1), dtype=self.dtype)
        self.ws = Workspace(self.dtype)

    def class_weights(self, tc):
        """Per group: W of the class taps as (Cout/g, Cin/g*T_r), and its transpose."""
        W = self.W3[:, :, tc.tap_ids]
        if self.depthwise:
            return np.ascontiguousarray(W[:, 0, :])
        mats = []
        for g in range(self.groups):
            Wg = W[g * self.cout_g:(g + 1) * self.cout_g].reshape(self.cout_g, -1)
            mats.append((np.ascontiguousarray(Wg), np.ascontiguousarray(Wg.T)))
        return mats

    def k_tile(self, tc, tile, save=False):
        """(Kt, Krt, D2t) of the tile; dummies where not needed."""
        if self.kmode == 0:
            return self._dummy, None, None
        if save:
            shape = self._k_shape(tc, tile)
            Kt = self.ws.get("K", shape)
            Krt, D2t = self.ws.get("Kraw", shape), self.ws.get("D2", shape)
            self.ctx.compute(tc, tile, Kt, Krt, D2t)
            return Kt, Krt, D2t
        shape = self._k_shape(tc, tile)
        return self.k_tile_flat(tc, tile)[:int(np.prod(shape))].reshape(shape), None, None

    def _k_shape(self, tc, tile):
        return (self.ck, tc.ntaps, (tile[1] - tile[0]) * (tile[3] - tile[2]))

    def k_tile_flat(self, tc, tile, slack=0):
        """K of the tile, flat (Ck * T_r * npix values), then ``slack`` more elements;
        one element when there is no K."""
        if self.kmode == 0:
            return self._dummy.reshape(-1)
        shape = self._k_shape(tc, tile)
        size = int(np.prod(shape))
        flat = self.ws.get("K", (size + slack,))
        Kt = flat[:size].reshape(shape)
        if self.ctx is None:
            _ad.take_taps(self.Kfull, Kt, tc, tile)
        else:
            self.ctx.compute(tc, tile, Kt)
        return flat


def _gather_out(gout5, dst, tc, tile, o_start):
    """``dst[o, p] = gout[b, o_start + o, pixel]`` for the tile's pixels."""
    cg = dst.shape[0]
    for p0, p1, b, idx in row_segments(tc, tile):
        blk = gout5[b, o_start:o_start + cg][idx]
        dst[:, p0:p1].reshape(blk.shape)[...] = blk


def _budget():
    from . import TILE_BYTES  # noqa: PLC0415 - read at call time (tests change it)
    return TILE_BYTES


def pac_forward(x, weight, bias, geom, groups, *, K=None, guide=None, spec=None, mask=None):
    op = _Op(x, weight, geom, groups, K, guide, spec, mask)
    lay = op.lay
    out = np.empty((op.B, op.cout) + lay.out3, dtype=op.dtype)
    b = np.zeros(op.cout, dtype=op.dtype) if bias is None else bias
    for sl in lay.empty:
        out[(slice(None), slice(None)) + sl] = b.reshape(-1, 1, 1, 1)
    item = op.dtype.itemsize
    for tc in lay.classes:
        if not op.depthwise:
            _dense_class(op, tc, b, out)
            continue
        mats = op.class_weights(tc)
        if op.ctx is not None and op.ck == 1:
            # K from the guide, one channel: computed on the fly, no tiles
            nrows = op.B * tc.n[0] * tc.n[1]
            c = op.ctx
            dw_forward_fused(op.x5, mats, b, c.guide5, c.mask5, lay.geo, tc.cls, tc.taps, 0, nrows,
                             0, tc.n[2], c.opt, c.alpha, c.lam, c.cst, out)
            continue
        bpp = item * op.ck * tc.ntaps
        for tile in tiles(tc, op.B, bpp, _budget()):
            Kt, _, _ = op.k_tile(tc, tile)
            dw_forward(op.x5, mats, b, Kt, op.kmode, out, lay.geo, tc.cls, tc.taps, *tile)
    return out.reshape((op.B, op.cout) + tuple(geom.out_size))


def _dense_class(op, tc, bias, out):
    """Forward of one tap class on the dense path (:mod:`.dense`), tile by tile."""
    Wp, nob = pack_weights(op.W3, op.groups, tc.tap_ids)
    n = nr(op.dtype)
    _, width = chunking(tc.n[2], n)
    x5 = np.ascontiguousarray(op.x5)
    bias = np.ascontiguousarray(bias, dtype=op.dtype)
    bpp = op.dtype.itemsize * max(op.ck, 1) * tc.ntaps
    for tile in tiles(tc, op.B, bpp, _budget()):
        Kf = op.k_tile_flat(tc, tile, slack=n)
        dense_forward(x5.reshape(-1), x5.shape, Wp, nob, bias, op.kmode, Kf, tc.cls, tc.taps,
                      *tile, op.groups, width, out.reshape(-1), out.shape)


def pac_vjp(grad_out, x, weight, geom, groups, *, K=None, guide=None, spec=None, mask=None,
            needs=("input", "weight", "bias", "guide")):
    needs = tuple(needs)
    nd = geom.ndim
    res = {}
    if "bias" in needs:
        res["bias"] = grad_out.sum(axis=(0,) + tuple(range(2, 2 + nd)))
    k_needs = {"adapting"} if K is not None else {"guide", "alpha", "lam"}
    need_k = bool(k_needs & set(needs)) and (K is not None or guide is not None)
    need_x, need_w = "input" in needs, "weight" in needs
    if not (need_x or need_w or need_k):
        return res
    op = _Op(x, weight, geom, groups, K, guide, spec, mask)
    lay = op.lay
    dt = op.dtype
    item = dt.itemsize
    gout5 = grad_out.reshape((op.B, op.cout) + lay.out3)
    gx5 = np.zeros_like(op.x5) if need_x else np.zeros((1,) * 5, dtype=dt)
    gW3 = np.zeros((op.cout, op.cin_g, op.T), dtype=np.float64 if op.depthwise else dt) \
        if need_w else None
    need_guide_k = need_k and op.ctx is not None
    gKfull = (np.zeros((op.B, op.ck, op.T) + lay.out3, dtype=dt)
              if need_k and op.ctx is None else None)
    grad_guide = (np.zeros(op.ctx.guide5.shape, dtype=dt)
                  if need_guide_k and "guide" in needs else None)
    sums = np.zeros((2, max(op.ck, 1)))
    for tc in lay.classes:
        t_r = tc.ntaps
        mats = op.class_weights(tc)
        # K-sized tile arrays: K, its gradient, phi and d2 (guide), partial K gradients
        kt_arrays = (1 + need_k + 2 * need_guide_k
                     + (numba.get_num_threads() if need_k and op.kmode == 1 else 0))
        if op.depthwise:
            bpp = item * op.ck * t_r * kt_arrays
            gWc = np.zeros((op.cout, t_r), dtype=np.float64) if need_w else None
        else:
            bpp = item * (op.cin_g * t_r * (need_w + (need_x or need_k))
                          + op.ck * t_r * kt_arrays + op.cout_g)
            gWacc = [np.zeros((op.cout_g, op.cin_g * t_r), dtype=dt) for _ in range(groups)] \
                if need_w else None
        for tile in tiles(tc, op.B, bpp, _budget()):
            npix = (tile[1] - tile[0]) * (tile[3] - tile[2])
            Kt, Krt, D2t = op.k_tile(tc, tile, save=need_guide_k)
            gKt = op.ws.get("gK", (op.ck, t_r, npix), zero=True) if need_k else op._dummy
            if op.depthwise:
                dw_backward(gout5, op.x5, mats, Kt, op.kmode, gx5,
                            gWc if need_w else np.zeros((1, 1)), gKt, need_x, need_w, need_k,
                            lay.geo, tc.cls, tc.taps, *tile)
            else:
                gt = op.ws.get("gout", (op.cout_g, npix))
                cols = op.ws.get("cols", (op.cin_g * t_r, npix)) if need_w else None
                G = op.ws.get("G", (op.cin_g * t_r, npix)) if (need_x or need_k) else None
                for g in range(groups):
                    cs = g * op.cin_g
                    _gather_out(gout5, gt, tc, tile, g * op.cout_g)
                    if need_w:
                        gather_cols(op.x5, Kt, lay.geo, tc.cls, tc.taps, *tile, cs, op.cin_g,
                                    op.kmode, cols)
                        gWacc[g] += gt @ cols.T
                    if need_x or need_k:
                        np.matmul(mats[g][1], gt, out=G)
                        if need_k and op.kmode == 1:
                            nchunk = max(1, min(op.cin_g, numba.get_num_threads()))
                            gKp = op.ws.get("gKpart", (nchunk, t_r, npix), zero=True)
                        else:
                            nchunk = max(1, op.cin_g)
                            gKp = op.ws.get("gKpart", (nchunk, 1, 1))
                        scatter_input(G, Kt, op.x5, gx5, gKt, gKp, lay.geo, tc.cls, tc.taps,
                                      *tile, cs, op.cin_g, op.kmode, need_x, need_k)
                        if need_k and op.kmode == 1:
                            gKt[0] += gKp.sum(axis=0)
            if need_k:
                if op.ctx is None:
                    _ad.put_taps(gKt, gKfull, tc, tile)
                else:
                    sums += op.ctx.backward(tc, tile, Kt, Krt, D2t, gKt, grad_guide, needs)
        if need_w:
            ids = tc.tap_ids
            if op.depthwise:
                gW3[:, 0, ids] += gWc
            else:
                for g in range(groups):
                    sl = slice(g * op.cout_g, (g + 1) * op.cout_g)
                    gW3[sl][:, :, ids] += gWacc[g].reshape(op.cout_g, op.cin_g, t_r)
    if need_x:
        res["input"] = gx5.reshape(x.shape)
    if need_w:
        res["weight"] = gW3.astype(dt, copy=False).reshape(weight.shape)
    if need_k:
        if op.ctx is None:
            res["adapting"] = gKfull.reshape(K.shape)
        else:
            res.update(_ad.finish_kernel_grads(spec, tuple(n for n in needs if n in k_needs),
                                               grad_guide, sums, guide))
    return res
