"""The fast array path of PAC-CRF inference (no graph).

Runs exactly the model of :class:`pacnd.crf.PacCRF` (same formulas, same
blur/crop geometry), organised for speed on the CPU:

* each kernel's adapting kernel K is computed **once** per inference
  (:func:`pacnd.ops.adapting_kernel`; K = 1 for a zero ``feat_scale``) and
  the fixed factors are folded into it: the shared spatial filter W, the
  effective pairwise weight and, for symmetric normalisation, the receiving
  pixel's normaliser (computed with :func:`pacnd.ops.pac_pool`);
* all shared-filter ('potts', '2d') kernels of a blur level become one list
  of taps — (offset, per-pixel factor, input, output) — and every message of
  the level is one vectorised Numba pass over the pooled grid
  (:func:`_multi_tap`; taps with W = 0, e.g. the zero centre, are skipped,
  which is exact); '4d' and 'none' kernels go through :func:`pacnd.ops.pac_conv`
  / :func:`pacnd.ops.conv` with the precomputed K;
* messages of kernels with the same ``blur`` are summed at the pooled
  resolution, interpolated along x once (:func:`_interp_x`), and the
  full-resolution part of an iteration — ``w_u * U`` plus the y-interpolated
  messages, the softmax over labels and the average pooling of Q for the
  next messages — is one fused, parallel pass over the image that never
  stores logQ or Q at full resolution (when all kernels share one ``blur``;
  otherwise a few passes). The last step computes only what the output
  needs (labels: a fused argmax).

Agreement with the graph path is to rounding (float64: ~1e-15 relative);
the tests check it. NumPy arrays only (the graph path also runs on CuPy).
"""

from __future__ import annotations

import math

import numpy as np

# Start Numba's thread pool the engine's way (passive waiting) before this
# module's own parallel kernels can start it with busy-waiting threads.
from ..engines import cpu as _cpu_engine  # noqa: F401
from numba import njit, prange  # noqa: E402

from .. import functional as F
from .. import ops
from .spec import ceil_pad, norm_groups

try:  # a vectorisable exp from the CPU engine; libm exp otherwise
    from ..engines.cpu.fastexp import vexp as _exp
except Exception:  # pragma: no cover - engine module unavailable
    _exp = math.exp

__all__ = ["mean_field", "prepare", "MeanFieldPlan"]


# --------------------------------------------------------------------------- tables
def _linear_table(n_out, n_in, factor, pad, dtype):
    """Bilinear (align_corners=False, scale 1/factor) source rows for output rows
    ``pad .. pad + n_out`` of an ``n_in * factor`` upsampling — the arithmetic of
    :func:`pacnd.functional.interpolate` in ``dtype``."""
    ct = np.dtype(dtype).type
    o = np.arange(pad, pad + n_out)
    if factor == 1:
        i0 = o.astype(np.int64)
        return i0, i0.copy(), np.ones(n_out, dtype), np.zeros(n_out, dtype)
    s = ct(1.0 / factor)
    src = s * (o.astype(ct) + ct(0.5)) - ct(0.5)
    src = np.where(src < 0, ct(0), src).astype(ct)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    lam = np.minimum(np.maximum(src - i0.astype(ct), ct(0)), ct(1)).astype(ct)
    i1 = i0 + (i0 < n_in - 1)
    return i0, i1, (ct(1) - lam).astype(dtype), lam.astype(dtype)


def _count_table(n, factor, pad, n_cells):
    """Number of in-image pixels in each pooling cell along one axis."""
    c = np.zeros(n_cells, dtype=np.int64)
    for cell in range(n_cells):
        lo = max(cell * factor - pad, 0)
        hi = min((cell + 1) * factor - pad, n)
        c[cell] = max(hi - lo, 0)
    return c


class _Level:
    """Geometry of one blur level: pooled size, tables for pooling and upsampling."""

    def __init__(self, size, blur, dtype):
        H, W = size
        self.blur = blur
        self.pad = ceil_pad(size, blur)
        self.size = tuple((n + 2 * p - blur) // blur + 1 for n, p in zip(size, self.pad))
        h, w = self.size
        self.ytab = _linear_table(H, h, blur, self.pad[0], dtype)
        self.xtab = _linear_table(W, w, blur, self.pad[1], dtype)
        self.cnt_y = _count_table(H, blur, self.pad[0], h)
        self.cnt_x = _count_table(W, blur, self.pad[1], w)


# --------------------------------------------------------------------------- kernels
# Messages are interpolated along x once per step (:func:`_interp_x`, at pooled height);
# the full-resolution kernels then work per pooled row ("block" of ``blur`` image rows): each
# image row is the y-interpolation of two such rows plus w_u * U — contiguous multiply-adds
# (vectorised) — and blocks are the parallel tasks.

@njit(cache=True, inline="always")
def _row_softmax(buf, mx, s):
    L, W = buf.shape
    for x in range(W):
        mx[x] = buf[0, x]
    for l in range(1, L):
        for x in range(W):
            if buf[l, x] > mx[x]:
                mx[x] = buf[l, x]
    for x in range(W):
        s[x] = 0
    for l in range(L):
        for x in range(W):
            e = _exp(buf[l, x] - mx[x])
            buf[l, x] = e
            s[x] += e
    for l in range(L):
        for x in range(W):
            buf[l, x] = buf[l, x] / s[x]


@njit(parallel=True, cache=True)
def _interp_x(M, x0, x1, wx0, wx1, Mx):
    """Mx[b, r, l, x] = M[b, l, r, x0[x]] * wx0[x] + M[b, l, r, x1[x]] * wx1[x]: the messages
    interpolated along x once per step, stored row-major ((B, h, L, W): the (L, W) block a
    pooled row needs is contiguous); the y-interpolation is done per image row."""
    B, L, h, w = M.shape
    W = Mx.shape[3]
    for task in prange(B * h):
        bb = task // h
        r = task - bb * h
        for l in range(L):
            src = M[bb, l, r]
            dst = Mx[bb, r, l]
            for x in range(W):
                dst[x] = src[x0[x]] * wx0[x] + src[x1[x]] * wx1[x]


@njit(cache=True, inline="always")
def _logit_row(buf, U, bb, y, w_u, has_msg, Mx, ytab0, ytab1, wy0, wy1):
    """buf = w_u * U[bb, :, y] + (y-interpolation of the x-interpolated messages)."""
    L, W = buf.shape
    if has_msg:
        c0 = Mx[bb, ytab0[y]]
        c1 = Mx[bb, ytab1[y]]
        a = wy0[y]
        c = wy1[y]
        for l in range(L):
            for x in range(W):
                buf[l, x] = U[bb, l, y, x] * w_u + (c0[l, x] * a + c1[l, x] * c)
    else:
        for l in range(L):
            for x in range(W):
                buf[l, x] = U[bb, l, y, x] * w_u


@njit(cache=True, inline="always")
def _row_exp(buf, mx, s):
    """buf <- exp(buf - max_l buf), s <- sum_l of it (softmax without the division)."""
    L, W = buf.shape
    for x in range(W):
        mx[x] = buf[0, x]
    for l in range(1, L):
        for x in range(W):
            mx[x] = max(mx[x], buf[l, x])
    for x in range(W):
        s[x] = 0
    for l in range(L):
        for x in range(W):
            e = _exp(buf[l, x] - mx[x])
            buf[l, x] = e
            s[x] += e


@njit(cache=True)
def _block_of(task, n_blocks, blur, pady, H):
    """Work item ``task`` -> (batch, pooled row cy, full-res rows [y_lo, y_hi))."""
    bb = task // n_blocks
    cy = task - bb * n_blocks
    return bb, cy, max(cy * blur - pady, 0), min((cy + 1) * blur - pady, H)


@njit(cache=True)
def _store_pooled_row(racc, Qp, bb, cy, blur, padx, cnt_y, cnt_x):
    """Qp[bb, :, cy, :] = the column blocks of the row sums ``racc`` (L, W), averaged."""
    L, W = racc.shape
    for l in range(L):
        for cx in range(Qp.shape[3]):
            x_lo = max(cx * blur - padx, 0)
            x_hi = min((cx + 1) * blur - padx, W)
            t = racc[l, x_lo]
            for x in range(x_lo + 1, x_hi):
                t += racc[l, x]
            Qp[bb, l, cy, cx] = t / (cnt_y[cy] * cnt_x[cx])


@njit(parallel=True, cache=True)
def _fused_step(U, w_u, M, has_msg, ytab0, ytab1, wy0, wy1, blur, pady,
                padx, cnt_y, cnt_x, Qp):
    """Qp = avgpool_blur(softmax(w_u * U + up(M))) without storing full-res arrays."""
    B, L, H, W = U.shape
    h, w = Qp.shape[2], Qp.shape[3]
    for task in prange(B * h):
        bb, cy, y_lo, y_hi = _block_of(task, h, blur, pady, H)
        buf = np.empty((L, W), dtype=U.dtype)
        mx = np.empty(W, dtype=U.dtype)
        s = np.empty(W, dtype=U.dtype)
        racc = np.zeros((L, W), dtype=U.dtype)
        for y in range(y_lo, y_hi):
            _logit_row(buf, U, bb, y, w_u, has_msg, M, ytab0, ytab1, wy0, wy1)
            _row_exp(buf, mx, s)
            for x in range(W):
                s[x] = 1 / s[x]
            for l in range(L):
                for x in range(W):
                    racc[l, x] += buf[l, x] * s[x]
        _store_pooled_row(racc, Qp, bb, cy, blur, padx, cnt_y, cnt_x)


@njit(parallel=True, cache=True)
def _logits_full(U, w_u, M, has_msg, ytab0, ytab1, wy0, wy1, blur, pady,
                 n_blocks, out):
    """out = w_u * U + up(M)."""
    B, L, H, W = U.shape
    for task in prange(B * n_blocks):
        bb, cy, y_lo, y_hi = _block_of(task, n_blocks, blur, pady, H)
        buf = np.empty((L, W), dtype=U.dtype)
        for y in range(y_lo, y_hi):
            _logit_row(buf, U, bb, y, w_u, has_msg, M, ytab0, ytab1, wy0, wy1)
            for l in range(L):
                for x in range(W):
                    out[bb, l, y, x] = buf[l, x]


@njit(parallel=True, cache=True)
def _add_up(out, M, ytab0, ytab1, wy0, wy1, blur, pady, n_blocks):
    """out += up(M)."""
    B, L, H, W = out.shape
    for task in prange(B * n_blocks):
        bb, cy, y_lo, y_hi = _block_of(task, n_blocks, blur, pady, H)
        for y in range(y_lo, y_hi):
            c0 = M[bb, ytab0[y]]
            c1 = M[bb, ytab1[y]]
            a = wy0[y]
            c = wy1[y]
            for l in range(L):
                for x in range(W):
                    out[bb, l, y, x] += c0[l, x] * a + c1[l, x] * c


@njit(parallel=True, cache=True)
def _softmax_full(x_in, out):
    B, L, H, W = x_in.shape
    for task in prange(B * H):
        bb = task // H
        y = task - bb * H
        buf = np.empty((L, W), dtype=x_in.dtype)
        mx = np.empty(W, dtype=x_in.dtype)
        s = np.empty(W, dtype=x_in.dtype)
        for l in range(L):
            for x in range(W):
                buf[l, x] = x_in[bb, l, y, x]
        _row_softmax(buf, mx, s)
        for l in range(L):
            for x in range(W):
                out[bb, l, y, x] = buf[l, x]


@njit(parallel=True, cache=True)
def _pool(Q, blur, pady, padx, cnt_y, cnt_x, Qp):
    B, L, H, W = Q.shape
    h, w = Qp.shape[2], Qp.shape[3]
    for task in prange(B * h):
        bb, cy, y_lo, y_hi = _block_of(task, h, blur, pady, H)
        racc = np.zeros((L, W), dtype=Q.dtype)
        for y in range(y_lo, y_hi):
            for l in range(L):
                for x in range(W):
                    racc[l, x] += Q[bb, l, y, x]
        _store_pooled_row(racc, Qp, bb, cy, blur, padx, cnt_y, cnt_x)


@njit(parallel=True, cache=True)
def _argmax_full(U, w_u, M, has_msg, ytab0, ytab1, wy0, wy1, blur, pady,
                 n_blocks, out):
    """out = argmax_l(w_u * U + up(M)) (first maximum wins, like NumPy)."""
    B, L, H, W = U.shape
    for task in prange(B * n_blocks):
        bb, cy, y_lo, y_hi = _block_of(task, n_blocks, blur, pady, H)
        buf = np.empty((L, W), dtype=U.dtype)
        best = np.empty(W, dtype=U.dtype)
        arg = np.empty(W, dtype=np.int64)
        for y in range(y_lo, y_hi):
            _logit_row(buf, U, bb, y, w_u, has_msg, M, ytab0, ytab1, wy0, wy1)
            for x in range(W):
                best[x] = buf[0, x]
                arg[x] = 0
            for l in range(1, L):
                for x in range(W):
                    if buf[l, x] > best[x]:
                        best[x] = buf[l, x]
                        arg[x] = l
            for x in range(W):
                out[bb, y, x] = arg[x]


@njit(parallel=True, cache=True)
def _multi_tap(X, gidx, K, dy, dx, oidx, out):
    """``out[o(t), b, l, y, x] += K[b, t, y, x] * X[g(t), b, l, y + dy(t), x + dx(t)]`` summed
    over taps t (zero outside the image): every shared-filter message of a blur level in one
    pass, rows contiguous so the inner loop vectorises."""
    G, B, L, h, w = X.shape
    T = K.shape[1]
    n_out = out.shape[0]
    for task in prange(B * h):
        b = task // h
        y = task - b * h
        acc = np.zeros((n_out, L, w), dtype=X.dtype)
        for t in range(T):
            sy = y + dy[t]
            if sy < 0 or sy >= h:
                continue
            ox = dx[t]
            x_lo = max(0, -ox)
            x_hi = min(w, w - ox)
            if x_hi <= x_lo:
                continue
            n = x_hi - x_lo
            g = gidx[t]
            o = oidx[t]
            ks = K[b, t, y, x_lo:x_hi]
            for l in range(L):
                xs = X[g, b, l, sy, x_lo + ox:x_hi + ox]
                acs = acc[o, l, x_lo:x_hi]
                for j in range(n):
                    acs[j] += ks[j] * xs[j]
        for o in range(n_out):
            for l in range(L):
                for x in range(w):
                    out[o, b, l, y, x] = acc[o, l, x]


# --------------------------------------------------------------------------- plan
class _OpTerm:
    """A '4d' or 'none' kernel: its message through :mod:`pacnd.ops` (weight sign folded)."""

    def __init__(self, spec, K, weight):
        self.spec, self.K, self.weight = spec, K, weight

    def message(self, Qb, engine):
        spec = self.spec
        if spec.compat == "none":
            return ops.conv(Qb, self.weight, padding=spec.padding, dilation=spec.dilation,
                            engine=engine)
        return ops.pac_conv(Qb, None, self.weight, adapting=self.K, padding=spec.padding,
                            dilation=spec.dilation, engine=engine)


class _LevelPlan:
    """The shared-filter ('potts', '2d') kernels of one blur level as one list of taps.

    Tap t has offset (dy, dx) in pooled pixels, a per-pixel factor K[:, t] (the adapting
    kernel times W_t, the receiving pixel's normaliser and, for 'potts', the effective
    pairwise weight with its sign), an input (Q, or Q times a group's normaliser) and an
    output (0: summed directly; j > 0: a '2d' kernel's message before its compatibility)."""

    def __init__(self):
        self.taps = []          # (K slice (B, h, w), dy, dx, input index, output index)
        self.norms = []         # input index g >= 1 -> normaliser (B, 1, h, w)
        self.compats = []       # output index j >= 1 -> compatibility matrix (sign folded)
        self.op_terms = []

    def finalize(self, dtype):
        if self.taps:
            self.K = np.ascontiguousarray(np.stack([t[0] for t in self.taps], axis=1),
                                          dtype=dtype)
            self.dy = np.array([t[1] for t in self.taps], dtype=np.int64)
            self.dx = np.array([t[2] for t in self.taps], dtype=np.int64)
            self.gidx = np.array([t[3] for t in self.taps], dtype=np.int64)
            self.oidx = np.array([t[4] for t in self.taps], dtype=np.int64)
        del self.taps[:]
        self.has_taps = hasattr(self, "K")

    def message(self, Qb, engine):
        m = None
        if self.has_taps:
            X = np.empty((1 + len(self.norms),) + Qb.shape, dtype=Qb.dtype)
            X[0] = Qb
            for g, n in enumerate(self.norms, start=1):
                np.multiply(Qb, n, out=X[g])
            out = np.empty((1 + len(self.compats),) + Qb.shape, dtype=Qb.dtype)
            _multi_tap(X, self.gidx, self.K, self.dy, self.dx, self.oidx, out)
            m = out[0]
            for j, C in enumerate(self.compats, start=1):
                m = m + np.einsum("ij,bjhw->bihw", C, out[j], optimize=False)
        for t in self.op_terms:
            mt = t.message(Qb, engine)
            m = mt if m is None else m + mt
        return m


def _scalar(v):
    return float(np.asarray(getattr(v, "data", v)))


class MeanFieldPlan:
    """Everything fixed during one inference: levels, folded kernels, weights."""

    def __init__(self, crf, size, batch, dtype, edge_feat=None, edge_kernel=None,
                 engine=None):
        self.dtype = dt = np.dtype(dtype)
        self.size = tuple(size)
        self.engine = engine
        self.w_u = dt.type(_scalar(crf.effective_unary_weight()))
        self.levels = {}
        for spec in crf.kernels:
            if spec.blur not in self.levels:
                self.levels[spec.blur] = _Level(self.size, spec.blur, dt)
        self.plans = {b: _LevelPlan() for b in self.levels}
        Ks = self._kernels(crf, edge_feat, edge_kernel, dt, engine)
        # W * K of the shared kernels, and the symmetric normalisers per group
        WK = {}
        for i, spec in enumerate(crf.kernels):
            if spec.shared:
                W = np.asarray(crf.messengers[i].weight.data, dtype=dt)
                WK[i] = Ks[i] * W.reshape(1, 1, spec.kernel_size, spec.kernel_size, 1, 1)
        norm_of = {}
        for idx in norm_groups(crf.kernels).values():
            total = None
            for i in idx:
                spec = crf.kernels[i]
                W = np.abs(np.asarray(crf.messengers[i].weight.data, dtype=dt))
                aWK = Ks[i] * W.reshape(1, 1, spec.kernel_size, spec.kernel_size, 1, 1)
                ones = np.ones((aWK.shape[0], 1) + aWK.shape[-2:], dtype=dt)
                S = ops.pac_pool(ones, None, spec.kernel_size, adapting=aWK,
                                 padding=spec.padding, dilation=spec.dilation, engine=engine)
                total = S if total is None else total + S
            n = np.maximum(total, dt.type(1e-12)) ** dt.type(-0.5)
            plan = self.plans[crf.kernels[idx[0]].blur]
            plan.norms.append(n)
            for i in idx:
                norm_of[i] = (len(plan.norms), n)
        for i, spec in enumerate(crf.kernels):
            plan = self.plans[spec.blur]
            weff = _scalar(crf.effective_pairwise_weight(i))
            if not spec.shared:
                W = np.asarray(crf.messengers[i].weight.data, dtype=dt)
                plan.op_terms.append(_OpTerm(spec, Ks[i], np.ascontiguousarray(-weff * W)))
                continue
            Kw = WK[i]
            g = 0
            if i in norm_of:
                g, n = norm_of[i]
                Kw = Kw * n[:, :, None, None]
            if spec.compat == "2d":
                C = np.asarray(crf.compat[i].weight.data, dtype=dt)[:, :, 0, 0] * dt.type(-weff)
                plan.compats.append(np.ascontiguousarray(C))
                o = len(plan.compats)
            else:
                Kw = Kw * dt.type(-weff)
                o = 0
            W = np.asarray(crf.messengers[i].weight.data)[0, 0]
            k, d = spec.kernel_size, spec.dilation
            h, w = Kw.shape[-2:]
            for a in range(k):
                for c in range(k):
                    dy, dx = (a - k // 2) * d, (c - k // 2) * d
                    if W[a, c] == 0 or abs(dy) >= h or abs(dx) >= w:
                        continue  # contributes exactly nothing
                    plan.taps.append((Kw[:, 0, a, c], dy, dx, g, o))
        for plan in self.plans.values():
            plan.finalize(dt)

    @staticmethod
    def _kernels(crf, edge_feat, edge_kernel, dt, engine):
        Ks = []
        pooled = {}
        for i, spec in enumerate(crf.kernels):
            if not spec.adaptive:
                Ks.append(None)
                continue
            if edge_kernel is not None:
                K = edge_kernel[i] if isinstance(edge_kernel, (list, tuple)) else edge_kernel
                Ks.append(np.asarray(getattr(K, "data", K), dtype=dt))
                continue
            b = spec.blur
            if b not in pooled:
                f = np.asarray(edge_feat, dtype=dt)
                pooled[b] = f if b == 1 else F.avg_pool(
                    f, b, b, ceil_pad(f.shape[2:], b), count_include_pad=False)
            f = pooled[b]
            scale = crf.feat_scales[i]
            if scale is not None:
                sc = np.asarray(scale.data, dtype=dt)
                if not sc.any():  # zero-scaled guide: K = exp(0) = 1 on every tap
                    k = spec.kernel_size
                    Ks.append(np.ones((f.shape[0], 1, k, k) + f.shape[2:], dtype=dt))
                    continue
                f = f * (sc.reshape(1, -1, 1, 1) if sc.ndim == 1 else sc)
            Ks.append(ops.adapting_kernel(f, spec.kernel_size, padding=spec.padding,
                                          dilation=spec.dilation, engine=engine))
        return Ks

    def messages(self, pooled_q):
        """Summed messages per blur level (weighted, sign included)."""
        out = {}
        for b, plan in self.plans.items():
            out[b] = np.ascontiguousarray(plan.message(pooled_q[b], self.engine),
                                          dtype=self.dtype)
        return out


def prepare(crf, unary_shape, dtype, edge_feat=None, edge_kernel=None, engine=None):
    """Build the :class:`MeanFieldPlan` of ``crf`` for unaries of ``unary_shape``."""
    return MeanFieldPlan(crf, unary_shape[2:], unary_shape[0], dtype, edge_feat, edge_kernel,
                         engine)


def _tabs(level):
    """The y-interpolation tables of a level."""
    return level.ytab


def _xinterp(level, M):
    """Messages (B, L, h, w) interpolated along x to the image width, as (B, h, L, W)."""
    x0, x1, wx0, wx1 = level.xtab
    B, L, h, _ = M.shape
    Mx = np.empty((B, h, L, len(x0)), dtype=M.dtype)
    _interp_x(M, x0, x1, wx0, wx1, Mx)
    return Mx


def _blocks(level):
    """(blur, pady, number of row blocks) of a level, for the block-wise kernels."""
    return level.blur, level.pad[0], level.size[0]


def mean_field(crf, unary, edge_feat=None, *, output="log_Q", edge_kernel=None, engine=None,
               logQ=None, plan=None):
    """Mean-field inference of ``crf`` (a :class:`~pacnd.crf.PacCRF`) on arrays.

    Parameters
    ----------
    crf : PacCRF
    unary : ndarray (B, L, H, W)
    edge_feat : ndarray (B, Cf, H, W), optional
    output : {'log_Q', 'softmax', 'log_softmax', 'labels'}
    edge_kernel : ndarray or list, optional
        Precomputed K (per kernel).
    engine : str, optional
        PAC engine for the messages.
    logQ : ndarray, optional
        Starting logQ (default: the unary).
    plan : MeanFieldPlan, optional
        Reuse a plan (same CRF, image and features).

    Returns
    -------
    ndarray (B, L, H, W) float, or (B, H, W) int64 labels.
    """
    dtype = np.result_type(unary.dtype, crf.dtype) if unary.dtype.kind == "f" else crf.dtype
    if edge_feat is not None:
        dtype = np.result_type(dtype, edge_feat.dtype)
    dtype = np.dtype(np.float64 if dtype == np.float64 else np.float32)
    U = np.ascontiguousarray(unary, dtype=dtype)
    B, L, H, W = U.shape
    if plan is None:
        plan = prepare(crf, U.shape, dtype, edge_feat, edge_kernel, engine)
    levels = plan.levels
    start = U if logQ is None else np.ascontiguousarray(logQ, dtype=dtype)
    one = dtype.type(1)
    dummy = np.zeros((B, 1, L, 1), dtype=dtype)
    msgs = None
    single = len(levels) == 1
    for step in range(crf.num_steps):
        # pooled Q of the current logQ (start or w_u U + up(msgs))
        pooled = {}
        if step == 0:
            src, wu, has = start, one, False
        else:
            src, wu, has = U, plan.w_u, True
        if single:
            (b, lev), = levels.items()
            Qp = np.empty((B, L) + lev.size, dtype=dtype)
            M = msgs[b] if has else dummy
            _fused_step(src, wu, M, has, *_tabs(lev), b, lev.pad[0], lev.pad[1], lev.cnt_y,
                        lev.cnt_x, Qp)
            pooled[b] = Qp
        else:
            logits = _full_logits(src, wu, msgs if has else None, levels, dtype)
            Q = np.empty_like(logits)
            _softmax_full(logits, Q)
            for b, lev in levels.items():
                if b == 1:
                    pooled[b] = Q
                else:
                    Qp = np.empty((B, L) + lev.size, dtype=dtype)
                    _pool(Q, b, lev.pad[0], lev.pad[1], lev.cnt_y, lev.cnt_x, Qp)
                    pooled[b] = Qp
        msgs = {b: _xinterp(levels[b], m) for b, m in plan.messages(pooled).items()}
    if crf.num_steps == 0:
        src, wu, msgs = start, one, None
    else:
        src, wu = U, plan.w_u
    if output == "labels":
        out = np.empty((B, H, W), dtype=np.int64)
        items = list(levels.items()) if msgs is not None else []
        if len(items) == 1:
            (b, lev), = items
            _argmax_full(src, wu, msgs[b], True, *_tabs(lev), *_blocks(lev), out)
        elif not items:
            lev = _Level((H, W), 1, dtype)
            _argmax_full(src, wu, dummy, False, *_tabs(lev), *_blocks(lev), out)
        else:
            out = _full_logits(src, wu, msgs, levels, dtype).argmax(axis=1)
        return out
    logits = _full_logits(src, wu, msgs, levels, dtype)
    if output == "log_Q":
        return logits
    if output == "softmax":
        Q = np.empty_like(logits)
        _softmax_full(logits, Q)
        return Q
    if output == "log_softmax":
        m = logits.max(axis=1, keepdims=True)
        return logits - (np.log(np.exp(logits - m).sum(axis=1, keepdims=True)) + m)
    raise ValueError(f"output={output!r} is not supported; choose 'log_Q', 'softmax', "
                     f"'log_softmax' or 'labels'")


def _full_logits(src, wu, msgs, levels, dtype):
    B, L, H, W = src.shape
    out = np.empty((B, L, H, W), dtype=dtype)
    if not msgs:
        lev = _Level((H, W), 1, dtype)
        _logits_full(src, wu, np.zeros((B, 1, L, 1), dtype=dtype), False, *_tabs(lev),
                     *_blocks(lev), out)
        return out
    first = True
    for b, lev in levels.items():
        if first:
            _logits_full(src, wu, msgs[b], True, *_tabs(lev), *_blocks(lev), out)
            first = False
        else:
            _add_up(out, msgs[b], *_tabs(lev), *_blocks(lev))
    return out


# --------------------------------------------------------------------------- unaries
@njit(parallel=True, cache=True)
def _scores_to_planes(P, clip, is_prob, out, stats):
    """(H, W, L) scores -> (L, H, W) planes in one parallel pass over rows, with the checks
    the caller needs.

    ``out[l, y, x] = max(P[y, x, l], clip)`` for probabilities (the log is taken
    afterwards, vectorised), ``P[y, x, l]`` for logits. ``stats[y]`` = (number of
    non-finite values, smallest value, largest |sum over labels - 1|) of row y."""
    H, W, L = P.shape
    for y in prange(H):
        row = P[y]
        bad = 0
        mn = np.inf
        worst = 0.0
        for x in range(W):
            tot = 0.0
            for l in range(L):
                v = row[x, l]
                tot += v
                mn = min(mn, v)
            if not np.isfinite(tot):
                for l in range(L):
                    if not np.isfinite(row[x, l]):
                        bad += 1
            worst = max(worst, abs(tot - 1.0))
        stats[y, 0] = bad
        stats[y, 1] = mn
        stats[y, 2] = worst
        for l in range(L):
            dst = out[l, y]
            if is_prob:
                for x in range(W):
                    dst[x] = max(row[x, l], clip)
            else:
                for x in range(W):
                    dst[x] = row[x, l]


def scores_to_unary(scores, is_prob, clip=1e-5):
    """(H, W, L) probabilities or logits -> ((L, H, W) float32 unary logits, stats).

    ``stats``: (non-finite count, minimum, worst |sum - 1|) over the image."""
    H, W, L = scores.shape
    out = np.empty((L, H, W), dtype=np.float32)
    stats = np.empty((H, 3), dtype=np.float64)
    _scores_to_planes(scores, np.float32(clip), bool(is_prob), out, stats)
    if is_prob:
        np.log(out, out=out)
    return out, (int(stats[:, 0].sum()), float(stats[:, 1].min()), float(stats[:, 2].max()))


# --------------------------------------------------------------------------- first calls
def warm(dtype):
    """Run every Numba kernel of this module once for ``dtype`` (compiles or loads them;
    :mod:`pacnd.engines.cpu.coldstart` runs this in its background process)."""
    from .model import PacCRF  # noqa: PLC0415

    dt = np.dtype(dtype)
    rng = np.random.default_rng(0)
    U = rng.standard_normal((1, 2, 6, 7)).astype(dt)
    f = rng.standard_normal((1, 3, 6, 7)).astype(dt)
    one = [dict(kernel_size=3, dilation=1, blur=1, compat="potts", normalize="symmetric")]
    two = one + [dict(kernel_size=3, dilation=2, blur=2, compat="2d")]
    for kernels in (one, two):
        crf = PacCRF(2, 1, kernels, dtype=dt)
        for output in ("labels", "softmax"):
            mean_field(crf, U, f, output=output)
    for sdt in (np.float32, np.float64):
        scores_to_unary(np.full((4, 5, 2), 0.5, dtype=sdt), True)
        scores_to_unary(np.zeros((4, 5, 2), dtype=sdt), False)


def _with_twin(kernel, twin):
    """``kernel`` once its code is compiled, its NumPy twin (:mod:`.fast_numpy`) while it is
    being compiled in the background on an empty cache."""
    def run(*args):
        if _coldstart.use_numba(("crf",), args[0].dtype):
            return kernel(*args)
        return twin(*args)
    run.kernel = kernel
    run.__name__, run.__doc__ = kernel.__name__, kernel.__doc__
    return run


from ..engines.cpu import coldstart as _coldstart  # noqa: E402
from . import fast_numpy as _twins  # noqa: E402

_interp_x = _with_twin(_interp_x, _twins.interp_x)
_fused_step = _with_twin(_fused_step, _twins.fused_step)
_logits_full = _with_twin(_logits_full, _twins.logits_full)
_add_up = _with_twin(_add_up, _twins.add_up)
_softmax_full = _with_twin(_softmax_full, _twins.softmax_full)
_pool = _with_twin(_pool, _twins.pool)
_argmax_full = _with_twin(_argmax_full, _twins.argmax_full)
_multi_tap = _with_twin(_multi_tap, _twins.multi_tap)
_scores_to_planes = _with_twin(_scores_to_planes, _twins.scores_to_planes)
