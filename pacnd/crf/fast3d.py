"""The fast array path of PAC-CRF inference on volumes (3-D, no graph).

The same scheme as :mod:`pacnd.crf.fast` with a depth axis: the plan
(:mod:`pacnd.crf.plan`) folds K, W, weights and normalisers once; messages of
a blur level are one pass over the pooled grid (:func:`pacnd.crf.plan.multi_tap`);
messages are interpolated along x once per step at pooled depth and height,
and the full-resolution part of a step — ``w_u * U`` plus the trilinearly
upsampled messages, the softmax over labels and the average pooling of Q —
is one fused, parallel pass per pooled (z, y) row block that never stores
logQ or Q at full resolution. Memory beyond the unary and the output is
therefore what lives on the pooled grid (Q, messages, the folded K of every
tap) plus one x-interpolated message array ``(B, d, h, L, W)``.

CRFs whose kernels use several blur factors take a slower NumPy route for the
full-resolution part (logits, softmax, pooling stored in full).
"""

from __future__ import annotations

import numpy as np

from ..engines import cpu as _cpu_engine  # noqa: F401
from numba import njit, prange  # noqa: E402

from .. import functional as F
from .fast import _exp_sum
from .plan import Level, prepare
from .spec import ceil_pad

__all__ = ["mean_field_3d"]


@njit(parallel=True, cache=True)
def _interp_x3(M, x0, x1, wx0, wx1, Mx):
    """Mx[b, z, y, l, x] = M[b, l, z, y, x0[x]] * wx0[x] + M[b, l, z, y, x1[x]] * wx1[x]."""
    B, L, d, h, w = M.shape
    W = Mx.shape[4]
    for task in prange(B * d * h):
        bb = task // (d * h)
        r = task - bb * d * h
        z = r // h
        y = r - z * h
        for l in range(L):
            src = M[bb, l, z, y]
            dst = Mx[bb, z, y, l]
            for x in range(W):
                dst[x] = src[x0[x]] * wx0[x] + src[x1[x]] * wx1[x]


@njit(cache=True, inline="always")
def _logit_row3(buf, U, bb, z, y, w_u, has_msg, Mx, z0, z1, wz0, wz1, y0, y1, wy0, wy1):
    """buf = w_u * U[bb, :, z, y] + (z, y interpolation of the x-interpolated messages)."""
    L, W = buf.shape
    if has_msg:
        c00 = Mx[bb, z0[z], y0[y]]
        c01 = Mx[bb, z0[z], y1[y]]
        c10 = Mx[bb, z1[z], y0[y]]
        c11 = Mx[bb, z1[z], y1[y]]
        a00 = wz0[z] * wy0[y]
        a01 = wz0[z] * wy1[y]
        a10 = wz1[z] * wy0[y]
        a11 = wz1[z] * wy1[y]
        for l in range(L):
            for x in range(W):
                buf[l, x] = U[bb, l, z, y, x] * w_u + (
                    (c00[l, x] * a00 + c01[l, x] * a01) + (c10[l, x] * a10 + c11[l, x] * a11))
    else:
        for l in range(L):
            for x in range(W):
                buf[l, x] = U[bb, l, z, y, x] * w_u


@njit(cache=True, inline="always")
def _row_max(buf, mx):
    L, W = buf.shape
    for x in range(W):
        mx[x] = buf[0, x]
    for l in range(1, L):
        for x in range(W):
            mx[x] = max(mx[x], buf[l, x])


@njit(cache=True)
def _block3(task, d, h, bz, by, padz, pady, D, H):
    """Work item -> (batch, pooled cz, cy, full-res z range, y range)."""
    bb = task // (d * h)
    r = task - bb * d * h
    cz = r // h
    cy = r - cz * h
    return (bb, cz, cy, max(cz * bz - padz, 0), min((cz + 1) * bz - padz, D),
            max(cy * by - pady, 0), min((cy + 1) * by - pady, H))


@njit(parallel=True, cache=True)
def _fused_step3(U, w_u, M, has_msg, z0, z1, wz0, wz1, y0, y1, wy0, wy1, bz, by, bx, padz,
                 pady, padx, cnt_z, cnt_y, cnt_x, Qp):
    """Qp = avgpool_blur(softmax(w_u * U + up(M))) without storing full-res arrays."""
    B, L, D, H, W = U.shape
    d, h, w = Qp.shape[2], Qp.shape[3], Qp.shape[4]
    for task in prange(B * d * h):
        bb, cz, cy, z_lo, z_hi, y_lo, y_hi = _block3(task, d, h, bz, by, padz, pady, D, H)
        buf = np.empty((L, W), dtype=U.dtype)
        mx = np.empty(W, dtype=U.dtype)
        s = np.empty(W, dtype=U.dtype)
        racc = np.zeros((L, W), dtype=U.dtype)
        for z in range(z_lo, z_hi):
            for y in range(y_lo, y_hi):
                _logit_row3(buf, U, bb, z, y, w_u, has_msg, M, z0, z1, wz0, wz1, y0, y1,
                            wy0, wy1)
                _row_max(buf, mx)
                _exp_sum(buf, mx, s)
                for l in range(L):
                    for x in range(W):
                        racc[l, x] += buf[l, x] * s[x]
        for l in range(L):
            for cx in range(w):
                x_lo = max(cx * bx - padx, 0)
                x_hi = min((cx + 1) * bx - padx, W)
                t = racc[l, x_lo]
                for x in range(x_lo + 1, x_hi):
                    t += racc[l, x]
                Qp[bb, l, cz, cy, cx] = t / (cnt_z[cz] * cnt_y[cy] * cnt_x[cx])


@njit(parallel=True, cache=True)
def _argmax3(U, w_u, M, has_msg, z0, z1, wz0, wz1, y0, y1, wy0, wy1, bz, by, padz, pady,
             d, h, out):
    """out = argmax_l(w_u * U + up(M)) (first maximum wins, like NumPy)."""
    B, L, D, H, W = U.shape
    for task in prange(B * d * h):
        bb, cz, cy, z_lo, z_hi, y_lo, y_hi = _block3(task, d, h, bz, by, padz, pady, D, H)
        buf = np.empty((L, W), dtype=U.dtype)
        best = np.empty(W, dtype=U.dtype)
        arg = np.empty(W, dtype=out.dtype)
        for z in range(z_lo, z_hi):
            for y in range(y_lo, y_hi):
                _logit_row3(buf, U, bb, z, y, w_u, has_msg, M, z0, z1, wz0, wz1, y0, y1,
                            wy0, wy1)
                for x in range(W):
                    best[x] = buf[0, x]
                    arg[x] = 0
                for l in range(1, L):
                    for x in range(W):
                        if buf[l, x] > best[x]:
                            best[x] = buf[l, x]
                            arg[x] = l
                for x in range(W):
                    out[bb, z, y, x] = arg[x]


@njit(parallel=True, cache=True)
def _logits3(U, w_u, M, has_msg, z0, z1, wz0, wz1, y0, y1, wy0, wy1, bz, by, padz, pady,
             d, h, accumulate, out):
    """out = w_u * U + up(M) (``accumulate``: out += up(M), U unused)."""
    B, L, D, H, W = out.shape
    for task in prange(B * d * h):
        bb, cz, cy, z_lo, z_hi, y_lo, y_hi = _block3(task, d, h, bz, by, padz, pady, D, H)
        buf = np.empty((L, W), dtype=out.dtype)
        for z in range(z_lo, z_hi):
            for y in range(y_lo, y_hi):
                _logit_row3(buf, U, bb, z, y, w_u, has_msg, M, z0, z1, wz0, wz1, y0, y1,
                            wy0, wy1)
                for l in range(L):
                    for x in range(W):
                        if accumulate:
                            out[bb, l, z, y, x] += buf[l, x]
                        else:
                            out[bb, l, z, y, x] = buf[l, x]


@njit(parallel=True, cache=True)
def _softmax3(U, w_u, M, has_msg, z0, z1, wz0, wz1, y0, y1, wy0, wy1, bz, by, padz, pady,
              d, h, labels_last, out):
    """out = softmax over labels of w_u * U + up(M), in one pass; (B, L, D, H, W), or
    (B, D, H, W, L) with ``labels_last``."""
    B, L, D, H, W = U.shape
    for task in prange(B * d * h):
        bb, cz, cy, z_lo, z_hi, y_lo, y_hi = _block3(task, d, h, bz, by, padz, pady, D, H)
        buf = np.empty((L, W), dtype=U.dtype)
        mx = np.empty(W, dtype=U.dtype)
        s = np.empty(W, dtype=U.dtype)
        for z in range(z_lo, z_hi):
            for y in range(y_lo, y_hi):
                _logit_row3(buf, U, bb, z, y, w_u, has_msg, M, z0, z1, wz0, wz1, y0, y1,
                            wy0, wy1)
                _row_max(buf, mx)
                _exp_sum(buf, mx, s)
                if labels_last:
                    for x in range(W):
                        for l in range(L):
                            out[bb, z, y, x, l] = buf[l, x] * s[x]
                else:
                    for l in range(L):
                        for x in range(W):
                            out[bb, l, z, y, x] = buf[l, x] * s[x]


# --------------------------------------------------------------------------- helpers
def _tabs3(level):
    """(z tables, y tables) of a level, flattened for the kernels."""
    return (*level.tabs[0], *level.tabs[1])


def _xinterp3(level, M):
    x0, x1, wx0, wx1 = level.tabs[2]
    B, L, d, h, _ = M.shape
    Mx = np.empty((B, d, h, L, len(x0)), dtype=M.dtype)
    _interp_x3(M, x0, x1, wx0, wx1, Mx)
    return Mx


def _blocks3(level):
    return (level.blurs[0], level.blurs[1], level.pad[0], level.pad[1], level.size[0],
            level.size[1])


def _full_logits3(src, wu, msgs, levels, dtype):
    """w_u * src + sum of the upsampled messages of every level, stored in full."""
    B, L = src.shape[:2]
    out = np.empty(src.shape, dtype=dtype)
    if not msgs:
        lev = Level(src.shape[2:], 1, dtype)
        dummy = np.zeros((B, 1, 1, L, 1), dtype=dtype)
        _logits3(src, wu, dummy, False, *_tabs3(lev), *_blocks3(lev), False, out)
        return out
    first = True
    for b, lev in levels.items():
        _logits3(src, wu if first else dtype.type(0), msgs[b], True, *_tabs3(lev),
                 *_blocks3(lev), not first, out)
        first = False
    return out


def _softmax(logits):
    m = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - m)
    e /= e.sum(axis=1, keepdims=True)
    return e


def mean_field_3d(crf, unary, edge_feat=None, *, output="log_Q", edge_kernel=None,
                  engine=None, logQ=None, plan=None, labels_last=False):
    """Mean-field inference of a 3-D ``crf`` on arrays (see :func:`pacnd.crf.fast.mean_field`).

    Parameters
    ----------
    crf : PacCRF
        With ``ndim=3``.
    unary : ndarray (B, L, D, H, W)
    edge_feat : ndarray (B, Cf, D, H, W), optional
    output : {'log_Q', 'softmax', 'log_softmax', 'labels'}
    edge_kernel, engine, logQ, plan, labels_last
        As in :func:`pacnd.crf.fast.mean_field`.

    Returns
    -------
    ndarray (B, L, D, H, W) float, or (B, D, H, W) int64 labels.
    """
    if output not in ("log_Q", "softmax", "log_softmax", "labels"):
        raise ValueError(f"output={output!r} is not supported; choose 'log_Q', 'softmax', "
                         f"'log_softmax' or 'labels'")
    dtype = np.result_type(unary.dtype, crf.dtype) if unary.dtype.kind == "f" else crf.dtype
    if edge_feat is not None:
        dtype = np.result_type(dtype, edge_feat.dtype)
    dtype = np.dtype(np.float64 if dtype == np.float64 else np.float32)
    U = np.ascontiguousarray(unary, dtype=dtype)
    B, L, D, H, W = U.shape
    if plan is None:
        plan = prepare(crf, U.shape, dtype, edge_feat, edge_kernel, engine)
    levels = plan.levels
    start = U if logQ is None else np.ascontiguousarray(logQ, dtype=dtype)
    one = dtype.type(1)
    dummy = np.zeros((B, 1, 1, L, 1), dtype=dtype)
    msgs = None
    single = len(levels) == 1
    for step in range(crf.num_steps):
        src, wu, has = (start, one, False) if step == 0 else (U, plan.w_u, True)
        pooled = {}
        if single:
            (b, lev), = levels.items()
            Qp = np.empty((B, L) + lev.size, dtype=dtype)
            _fused_step3(src, wu, msgs[b] if has else dummy, has, *_tabs3(lev), *lev.blurs,
                         *lev.pad, *lev.cnts, Qp)
            pooled[b] = Qp
        else:
            Q = _softmax(_full_logits3(src, wu, msgs if has else None, levels, dtype))
            for b in levels:
                pooled[b] = Q if max(b) == 1 else np.ascontiguousarray(F.avg_pool(
                    Q, b, b, ceil_pad(Q.shape[2:], b), count_include_pad=False), dtype=dtype)
            del Q
        msgs = {b: _xinterp3(levels[b], m) for b, m in plan.messages(pooled).items()}
        del pooled
    if crf.num_steps == 0:
        src, wu, msgs = start, one, None
    else:
        src, wu = U, plan.w_u
    if output == "labels":
        if msgs is not None and len(levels) == 1:
            (b, lev), = levels.items()
            out = np.empty((B, D, H, W), dtype=np.int64)
            _argmax3(src, wu, msgs[b], True, *_tabs3(lev), *_blocks3(lev), out)
            return out
        if msgs is None:
            lev = Level((D, H, W), 1, dtype)
            out = np.empty((B, D, H, W), dtype=np.int64)
            _argmax3(src, wu, dummy, False, *_tabs3(lev), *_blocks3(lev), out)
            return out
        return _full_logits3(src, wu, msgs, levels, dtype).argmax(axis=1)
    if output == "softmax" and (msgs is None or len(levels) == 1):
        out = np.empty((B, D, H, W, L) if labels_last else (B, L, D, H, W), dtype=dtype)
        if msgs is None:
            lev = Level((D, H, W), 1, dtype)
            _softmax3(src, wu, dummy, False, *_tabs3(lev), *_blocks3(lev), labels_last, out)
        else:
            (b, lev), = levels.items()
            _softmax3(src, wu, msgs[b], True, *_tabs3(lev), *_blocks3(lev), labels_last, out)
        return out
    logits = _full_logits3(src, wu, msgs, levels, dtype)
    if output == "log_Q":
        res = logits
    elif output == "softmax":
        res = _softmax(logits)
    else:
        m = logits.max(axis=1, keepdims=True)
        res = logits - (np.log(np.exp(logits - m).sum(axis=1, keepdims=True)) + m)
    return np.ascontiguousarray(np.moveaxis(res, 1, -1)) if labels_last else res
