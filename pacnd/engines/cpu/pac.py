"""PAC forward and vector-Jacobian products on the Numba engine (orchestration).

Per tap class (:mod:`pacnd.engines.cpu.layout`):

* dense groups: :func:`dense.dense_forward` and :func:`dense_vjp.dense_vjp_class`
  -- per output-row segment, K computed in the unit (from the guide with mask
  and normalisation fused, or read from a precomputed K, or none for a plain
  convolution) and the products run by register-blocked micro-kernels
  (:mod:`gemm`) on one thread pool; no column matrix, no K tile, no BLAS;
* depthwise (Cin/g == Cout/g == 1): direct loops (:mod:`depthwise`), K
  computed on the fly when it comes from a guide (forward) or per tile.

Working memory is a few row-sized buffers per thread (dense) or tile-sized
buffers (:data:`pacnd.engines.cpu.TILE_BYTES`, depthwise), independent of the
image size; no full-size K, columns or zero-inserted input.
"""

import numpy as np

from . import adapting as _ad
from .dense import chunking, dense_forward
from .dense_vjp import dense_vjp_class
from .depthwise import dw_backward, dw_forward, dw_forward_fused
from .gemm import MRW, nr, nrw, pack_rows, pack_weights
from .layout import Workspace, layout_of, tiles
from .threads import sum_slots

__all__ = ["pac_forward", "pac_vjp", "UNIT_BYTES"]

#: Byte budget of one dense work unit's K buffers (K, phi, d2 and K's gradient of
#: the unit's row segment): the segment gets narrower when K has many taps and
#: channels.
UNIT_BYTES = 1 << 20


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

    def k_args(self, tc):
        """The K source of the dense kernels: ``(ck, ksrc, kmode, guide, mask, geo, opt,
        alpha, lam, cst, Kfull, tap_ids)`` (dummies where unused; one specialisation)."""
        dt = self.dtype
        d5 = np.zeros((1,) * 5, dtype=dt)
        if self.ctx is not None:
            c = self.ctx
            return (self.ck, 1, self.kmode, c.guide5, c.mask5, self.lay.geo, c.opt, c.alpha,
                    c.lam, c.cst, np.zeros((1,) * 6, dtype=dt), tc.tap_ids)
        opt = np.zeros(6, dtype=np.int64)
        one = np.zeros(1, dtype=dt)
        cst = np.zeros(6, dtype=dt)
        K = self.Kfull if self.Kfull is not None else np.zeros((1,) * 6, dtype=dt)
        return (self.ck, 2 if self.Kfull is not None else 0, self.kmode, d5, d5, self.lay.geo,
                opt, one, one, cst, K, tc.tap_ids)

    def unit_width(self, tc, arrays):
        """Columns per dense work unit: ``COL_BLOCK`` at most, fewer when ``arrays`` K-sized
        buffers of the segment would pass :data:`UNIT_BYTES`."""
        per_col = self.dtype.itemsize * max(self.ck, 1) * tc.ntaps * arrays
        return chunking(tc.n[2], nr(self.dtype), UNIT_BYTES // per_col)[1]

    def class_weights(self, tc):
        """Depthwise: W of the class taps as (C, T_r)."""
        return np.ascontiguousarray(self.W3[:, 0, tc.tap_ids])

    def k_tile(self, tc, tile, save=False):
        """(Kt, Krt, D2t) of a tile (the depthwise path); dummies where not needed."""
        if self.kmode == 0:
            return self._dummy, None, None
        shape = (self.ck, tc.ntaps, (tile[1] - tile[0]) * (tile[3] - tile[2]))
        Kt = self.ws.get("K", shape)
        if save:
            Krt, D2t = self.ws.get("Kraw", shape), self.ws.get("D2", shape)
            self.ctx.compute(tc, tile, Kt, Krt, D2t)
            return Kt, Krt, D2t
        if self.ctx is None:
            _ad.take_taps(self.Kfull, Kt, tc, tile)
        else:
            self.ctx.compute(tc, tile, Kt)
        return Kt, None, None


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
    """Forward of one tap class on the dense path (:mod:`.dense`)."""
    Wp, nob = pack_weights(op.W3, op.groups, tc.tap_ids)
    bias = np.ascontiguousarray(bias, dtype=op.dtype)
    nrows = op.B * tc.n[0] * tc.n[1]
    dense_forward(op.x5.reshape(-1), op.x5.shape, Wp, nob, bias, op.k_args(tc), tc.cls, tc.taps,
                  nrows, tc.n[2], op.groups, op.unit_width(tc, 1), out.reshape(-1), out.shape)


def _dense_vjp(op, tc, gout5, gx5, gW3, gKfull, grad_guide, part, flags):
    """Backward of one tap class on the dense path (:mod:`.dense_vjp`)."""
    dt = op.dtype
    t_r = tc.ntaps
    kdim = op.cin_g * t_r
    need_w = flags[1]
    W = op.W3[:, :, tc.tap_ids].reshape(op.groups, op.cout_g, kdim)
    WtP, nobt = pack_rows(np.ascontiguousarray(W.transpose(0, 2, 1)))
    blk = nrw(dt)
    co_pad = -(-op.cout_g // blk) * blk
    kd_pad = -(-kdim // MRW) * MRW
    gWT = np.zeros((part.shape[0], op.groups) + ((kd_pad, co_pad) if need_w else (1, 1)),
                   dtype=dt)
    dense_vjp_class(tc, op.x5.reshape(-1), op.x5.shape, gout5.reshape(-1), gout5.shape, WtP,
                    nobt, op.groups, co_pad, op.k_args(tc), op.unit_width(tc, 4),
                    gx5.reshape(-1), gWT, gKfull, grad_guide, part, flags)
    if need_w:
        gw = gWT.sum(axis=0)[:, :kdim, :op.cout_g].transpose(0, 2, 1)
        gW3[:, :, tc.tap_ids] += gw.reshape(op.cout, op.cin_g, t_r)


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
    if not op.depthwise:
        gout5 = np.ascontiguousarray(gout5)
        need_guide = grad_guide is not None
        flags = (bool(need_x), bool(need_w), bool(need_k), need_guide, "alpha" in needs,
                 "lam" in needs)
        # per-slot sums (deterministic, threads.SLOTS): as many as fit in a tile budget
        gw_bytes = max([op.groups * -(-op.cin_g * tc.ntaps // MRW) * MRW
                        * -(-op.cout_g // nrw(dt)) * nrw(dt) * item if need_w else 0
                        for tc in lay.classes] or [0])
        part = np.zeros((sum_slots(gw_bytes, _budget()), 2, max(op.ck, 1)))
        gg = grad_guide if need_guide else np.zeros((1,) * 5, dtype=dt)
        gKf = gKfull if gKfull is not None else np.zeros((1,) * 6, dtype=dt)
        for tc in lay.classes:
            _dense_vjp(op, tc, gout5, gx5, gW3, gKf, gg, part, flags)
        sums += part.sum(axis=0)
    for tc in lay.classes if op.depthwise else ():
        t_r = tc.ntaps
        mats = op.class_weights(tc)
        # K-sized tile arrays: K, its gradient, phi and d2 (guide)
        bpp = item * op.ck * t_r * (1 + need_k + 2 * need_guide_k)
        gWc = np.zeros((op.cout, t_r), dtype=np.float64) if need_w else None
        for tile in tiles(tc, op.B, bpp, _budget()):
            npix = (tile[1] - tile[0]) * (tile[3] - tile[2])
            Kt, Krt, D2t = op.k_tile(tc, tile, save=need_guide_k)
            gKt = op.ws.get("gK", (op.ck, t_r, npix), zero=True) if need_k else op._dummy
            dw_backward(gout5, op.x5, mats, Kt, op.kmode, gx5,
                        gWc if need_w else np.zeros((1, 1)), gKt, need_x, need_w, need_k,
                        lay.geo, tc.cls, tc.taps, *tile)
            if need_k:
                if op.ctx is None:
                    _ad.put_taps(gKt, gKfull, tc, tile)
                else:
                    sums += op.ctx.backward(tc, tile, Kt, Krt, D2t, gKt, grad_guide, needs)
        if need_w:
            gW3[:, 0, tc.tap_ids] += gWc
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
