"""NumPy twins of the PAC-CRF fast path's Numba kernels (:mod:`pacnd.crf.fast`).

Same arguments and results as the kernels they stand for (to rounding), in
plain vectorised NumPy with full-resolution temporaries: they serve the first
calls of a process while the kernels are compiled in the background on an
empty cache (:mod:`pacnd.engines.cpu.coldstart`), and the tests compare them
with the kernels.
"""

from __future__ import annotations

import numpy as np

__all__ = ["interp_x", "fused_step", "logits_full", "add_up", "softmax_full", "pool",
           "argmax_full", "multi_tap", "scores_to_planes"]


def _up(M, ytab0, ytab1, wy0, wy1):
    """(B, L, H, W): the x-interpolated messages ``M`` (B, h, L, W) interpolated along y."""
    a = M[:, ytab0] * wy0[None, :, None, None]
    a += M[:, ytab1] * wy1[None, :, None, None]
    return a.transpose(0, 2, 1, 3)


def _logits(U, w_u, M, has_msg, ytab0, ytab1, wy0, wy1):
    out = U * U.dtype.type(w_u)
    if has_msg:
        out += _up(M, ytab0, ytab1, wy0, wy1)
    return out


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e


def interp_x(M, x0, x1, wx0, wx1, Mx):
    Mx[...] = (M[..., x0] * wx0 + M[..., x1] * wx1).transpose(0, 2, 1, 3)


def pool(Q, blur, pady, padx, cnt_y, cnt_x, Qp):
    B, L, H, W = Q.shape
    h, w = Qp.shape[2:]
    P = np.zeros((B, L, h * blur, w * blur), dtype=Q.dtype)
    P[:, :, pady:pady + H, padx:padx + W] = Q[:, :, :h * blur - pady, :w * blur - padx]
    s = P.reshape(B, L, h, blur, w, blur).sum(axis=(3, 5))
    Qp[...] = s / (cnt_y[:, None] * cnt_x[None, :]).astype(Q.dtype)


def fused_step(U, w_u, M, has_msg, ytab0, ytab1, wy0, wy1, blur, pady, padx, cnt_y, cnt_x, Qp):
    pool(_softmax(_logits(U, w_u, M, has_msg, ytab0, ytab1, wy0, wy1)), blur, pady, padx,
         cnt_y, cnt_x, Qp)


def logits_full(U, w_u, M, has_msg, ytab0, ytab1, wy0, wy1, blur, pady, n_blocks, out):
    out[...] = _logits(U, w_u, M, has_msg, ytab0, ytab1, wy0, wy1)


def add_up(out, M, ytab0, ytab1, wy0, wy1, blur, pady, n_blocks):
    out += _up(M, ytab0, ytab1, wy0, wy1)


def softmax_full(x_in, out):
    out[...] = _softmax(x_in)


def argmax_full(U, w_u, M, has_msg, ytab0, ytab1, wy0, wy1, blur, pady, n_blocks, out):
    out[...] = _logits(U, w_u, M, has_msg, ytab0, ytab1, wy0, wy1).argmax(axis=1)


def multi_tap(X, gidx, K, dy, dx, oidx, out):
    G, B, L, h, w = X.shape
    out[...] = 0
    for t in range(K.shape[1]):
        oy, ox = int(dy[t]), int(dx[t])
        y0, y1 = max(0, -oy), min(h, h - oy)
        x0, x1 = max(0, -ox), min(w, w - ox)
        if y1 <= y0 or x1 <= x0:
            continue
        src = X[gidx[t], :, :, y0 + oy:y1 + oy, x0 + ox:x1 + ox]
        out[oidx[t], :, :, y0:y1, x0:x1] += K[:, t, None, y0:y1, x0:x1] * src


def scores_to_planes(P, clip, is_prob, out, stats):
    tot = P.sum(axis=2, dtype=np.float64)
    bad = ~np.isfinite(tot)
    stats[:, 0] = np.where(bad[..., None], ~np.isfinite(P), False).sum(axis=(1, 2))
    stats[:, 1] = P.min(axis=(1, 2))
    stats[:, 2] = np.abs(tot - 1.0).max(axis=1)
    planes = P.transpose(2, 0, 1)
    out[...] = np.maximum(planes, clip) if is_prob else planes
