"""The fast array path of PAC-CRF inference (no graph).

Runs exactly the model of :class:`pacnd.crf.PacCRF` (same formulas, same
blur/crop geometry), organised for speed on the CPU:

* each kernel's adapting kernel K is computed **once** per inference
  (:func:`pacnd.ops.adapting_kernel`; K = 1 for a zero ``feat_scale``) and
  the fixed factors are folded into it: the shared spatial filter W, the
  effective pairwise weight and, for normalised kernels, the receiving
  pixel's normaliser (computed with :func:`pacnd.ops.pac_pool`);
* all shared-filter ('potts', '2d') kernels of a blur level become one list
  of taps — (offset, per-pixel factor, input, output) — and every message of
  the level is one vectorised Numba pass over the pooled grid
  (:func:`pacnd.crf.plan.multi_tap`; taps with W = 0, e.g. the zero centre, are skipped,
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

The plan (what stays fixed) is built by :mod:`pacnd.crf.plan`; volumes run the
same scheme in :mod:`pacnd.crf.fast3d`. Agreement with the graph path is to
rounding (float64: ~1e-15 relative);
the tests check it. NumPy arrays only (the graph path also runs on CuPy).
"""

from __future__ import annotations

import math

import numpy as np

# Start Numba's thread pool the engine's way (passive waiting) before this
# module's own parallel kernels can start it with busy-waiting threads.
from ..engines import cpu as _cpu_engine  # noqa: F401
from numba import njit, prange  # noqa: E402

from .plan import Level as _Level
from .plan import MeanFieldPlan, prepare

try:  # a vectorisable exp from the CPU engine; libm exp otherwise
    from ..engines.cpu.fastexp import vexp as _exp
except Exception:  # pragma: no cover - engine module unavailable
    _exp = math.exp

__all__ = ["mean_field", "prepare", "MeanFieldPlan", "scores_to_unary"]


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
def _logit_row_max(buf, mx, U, bb, y, w_u, has_msg, Mx, ytab0, ytab1, wy0, wy1):
    """:func:`_logit_row` that also leaves the maximum over labels in ``mx`` (one pass)."""
    L, W = buf.shape
    for x in range(W):
        mx[x] = -np.inf
    if has_msg:
        c0 = Mx[bb, ytab0[y]]
        c1 = Mx[bb, ytab1[y]]
        a = wy0[y]
        c = wy1[y]
        for l in range(L):
            for x in range(W):
                v = U[bb, l, y, x] * w_u + (c0[l, x] * a + c1[l, x] * c)
                buf[l, x] = v
                mx[x] = max(mx[x], v)
    else:
        for l in range(L):
            for x in range(W):
                v = U[bb, l, y, x] * w_u
                buf[l, x] = v
                mx[x] = max(mx[x], v)


@njit(cache=True, inline="always")
def _exp_sum(buf, mx, s):
    """buf <- exp(buf - mx), s <- 1 / sum_l of it (``mx``: the maximum over labels)."""
    L, W = buf.shape
    for x in range(W):
        s[x] = 0
    for l in range(L):
        for x in range(W):
            e = _exp(buf[l, x] - mx[x])
            buf[l, x] = e
            s[x] += e
    for x in range(W):
        s[x] = 1 / s[x]


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
def _store_pooled_row(racc, Qp, bb, cy, bx, padx, cnt_y, cnt_x):
    """Qp[bb, :, cy, :] = the column blocks (``bx`` wide) of the row sums ``racc`` (L, W),
    averaged."""
    L, W = racc.shape
    for l in range(L):
        for cx in range(Qp.shape[3]):
            x_lo = max(cx * bx - padx, 0)
            x_hi = min((cx + 1) * bx - padx, W)
            t = racc[l, x_lo]
            for x in range(x_lo + 1, x_hi):
                t += racc[l, x]
            Qp[bb, l, cy, cx] = t / (cnt_y[cy] * cnt_x[cx])


@njit(parallel=True, cache=True)
def _fused_step(U, w_u, M, has_msg, ytab0, ytab1, wy0, wy1, blur, pady,
                bx, padx, cnt_y, cnt_x, Qp):
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
            _logit_row_max(buf, mx, U, bb, y, w_u, has_msg, M, ytab0, ytab1, wy0, wy1)
            _exp_sum(buf, mx, s)
            for l in range(L):
                for x in range(W):
                    racc[l, x] += buf[l, x] * s[x]
        _store_pooled_row(racc, Qp, bb, cy, bx, padx, cnt_y, cnt_x)


@njit(parallel=True, cache=True)
def _softmax_out(U, w_u, M, has_msg, ytab0, ytab1, wy0, wy1, blur, pady, n_blocks,
                 labels_last, out):
    """out = softmax(w_u * U + up(M)) over labels, in one pass (no logits stored); out is
    (B, L, H, W), or (B, H, W, L) with ``labels_last``."""
    B, L, H, W = U.shape
    for task in prange(B * n_blocks):
        bb, cy, y_lo, y_hi = _block_of(task, n_blocks, blur, pady, H)
        buf = np.empty((L, W), dtype=U.dtype)
        mx = np.empty(W, dtype=U.dtype)
        s = np.empty(W, dtype=U.dtype)
        for y in range(y_lo, y_hi):
            _logit_row_max(buf, mx, U, bb, y, w_u, has_msg, M, ytab0, ytab1, wy0, wy1)
            _exp_sum(buf, mx, s)
            if labels_last:
                for x in range(W):
                    for l in range(L):
                        out[bb, y, x, l] = buf[l, x] * s[x]
            else:
                for l in range(L):
                    for x in range(W):
                        out[bb, l, y, x] = buf[l, x] * s[x]


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
def _pool(Q, blur, pady, bx, padx, cnt_y, cnt_x, Qp):
    B, L, H, W = Q.shape
    h, w = Qp.shape[2], Qp.shape[3]
    for task in prange(B * h):
        bb, cy, y_lo, y_hi = _block_of(task, h, blur, pady, H)
        racc = np.zeros((L, W), dtype=Q.dtype)
        for y in range(y_lo, y_hi):
            for l in range(L):
                for x in range(W):
                    racc[l, x] += Q[bb, l, y, x]
        _store_pooled_row(racc, Qp, bb, cy, bx, padx, cnt_y, cnt_x)


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
    """(y blur, pady, number of row blocks) of a level, for the block-wise kernels."""
    return level.blurs[0], level.pad[0], level.size[0]


def mean_field(crf, unary, edge_feat=None, *, output="log_Q", edge_kernel=None, engine=None,
               logQ=None, plan=None, labels_last=False):
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
    labels_last : bool
        Return softmax / log-Q / log-softmax with the label axis last,
        (B, H, W, L) (a contiguous array: ``out.reshape(-1, L).T`` is the
        Fortran-ordered (L, N) matrix pydensecrf returns).

    Returns
    -------
    ndarray (B, L, H, W) float, or (B, H, W) int64 labels; with 3-D unaries
    (B, L, D, H, W) the same with a depth axis (:mod:`pacnd.crf.fast3d`).
    """
    if _serve_on_graph(crf, unary, edge_feat):
        return _on_graph(crf, unary, edge_feat, edge_kernel, logQ, output, labels_last)
    if unary.ndim == 5:
        from .fast3d import mean_field_3d  # noqa: PLC0415

        return mean_field_3d(crf, unary, edge_feat, output=output, edge_kernel=edge_kernel,
                             engine=engine, logQ=logQ, plan=plan, labels_last=labels_last)
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
            _fused_step(src, wu, M, has, *_tabs(lev), lev.blurs[0], lev.pad[0], lev.blurs[1],
                        lev.pad[1], lev.cnt_y, lev.cnt_x, Qp)
            pooled[b] = Qp
        else:
            logits = _full_logits(src, wu, msgs if has else None, levels, dtype)
            Q = np.empty_like(logits)
            _softmax_full(logits, Q)
            for b, lev in levels.items():
                if max(b) == 1:
                    pooled[b] = Q
                else:
                    Qp = np.empty((B, L) + lev.size, dtype=dtype)
                    _pool(Q, lev.blurs[0], lev.pad[0], lev.blurs[1], lev.pad[1], lev.cnt_y,
                          lev.cnt_x, Qp)
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
    if output == "softmax" and (msgs is None or len(levels) == 1):
        out = np.empty((B, H, W, L) if labels_last else (B, L, H, W), dtype=dtype)
        if msgs is None:
            lev = _Level((H, W), 1, dtype)
            _softmax_out(src, wu, dummy, False, *_tabs(lev), *_blocks(lev), labels_last, out)
        else:
            (b, lev), = levels.items()
            _softmax_out(src, wu, msgs[b], True, *_tabs(lev), *_blocks(lev), labels_last,
                         out)
        return out
    logits = _full_logits(src, wu, msgs, levels, dtype)
    if output == "log_Q":
        res = logits
    elif output == "softmax":
        res = np.empty_like(logits)
        _softmax_full(logits, res)
    elif output == "log_softmax":
        m = logits.max(axis=1, keepdims=True)
        res = logits - (np.log(np.exp(logits - m).sum(axis=1, keepdims=True)) + m)
    else:
        raise ValueError(f"output={output!r} is not supported; choose 'log_Q', 'softmax', "
                         f"'log_softmax' or 'labels'")
    return np.ascontiguousarray(np.moveaxis(res, 1, -1)) if labels_last else res


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
    one = [dict(kernel_size=3, dilation=1, blur=1, compat="potts", normalize="symmetric")]
    two = one + [dict(kernel_size=3, dilation=2, blur=2, compat="2d")]
    for nd in (2, 3):   # the 2-D kernels here, the 3-D ones of .fast3d, the plan's (.plan)
        shape = (6, 7) if nd == 2 else (4, 5, 6)
        U = rng.standard_normal((1, 2) + shape).astype(dt)
        f = rng.standard_normal((1, 3) + shape).astype(dt)
        for kernels in (one, two):
            crf = PacCRF(2, 1, kernels, dtype=dt, ndim=nd)
            for output in ("labels", "softmax", "log_Q"):
                mean_field(crf, U, f, output=output)
    for sdt in (np.float32, np.float64):
        scores_to_unary(np.full((4, 5, 2), 0.5, dtype=sdt), True)
        scores_to_unary(np.zeros((4, 5, 2), dtype=sdt), False)


def _serve_on_graph(crf, unary, edge_feat):
    """Whether this call runs on the graph path (its ops on the reference engine) because
    the fast path's kernels (this module, :mod:`.plan`, :mod:`.fast3d`) are being compiled in
    the background on an empty cache (:mod:`pacnd.engines.cpu.coldstart`). Calls too large
    for that wait for the compile instead."""
    taps = sum(int(k.kernel_size) ** crf.ndim for k in crf.kernels) or 1
    cf = 0 if edge_feat is None else int(edge_feat.shape[1])
    n = int(unary.size)
    nbytes = 8 * n * (4 + len(crf.kernels)) + 8 * taps * (n // max(int(unary.shape[1]), 1))
    flops = n * max(int(crf.num_steps), 1) * taps * 2 + taps * (n // max(int(unary.shape[1]), 1)) * cf
    dt = unary.dtype if unary.dtype.kind == "f" else crf.dtype
    return not _coldstart.use_numba(("crf",), dt, nbytes, flops)


def _on_graph(crf, unary, edge_feat, edge_kernel, logQ, output, labels_last):
    """:func:`mean_field` computed by the module's graph path (the same mean-field steps
    through :mod:`pacnd.functional`; equal to rounding)."""
    from ..autograd import no_grad  # noqa: PLC0415
    from ..autograd.tensor import as_array  # noqa: PLC0415

    dtype = np.result_type(unary.dtype, crf.dtype) if unary.dtype.kind == "f" else crf.dtype
    if edge_feat is not None:
        dtype = np.result_type(dtype, edge_feat.dtype)
    dtype = np.dtype(np.float64 if dtype == np.float64 else np.float32)
    U = np.ascontiguousarray(unary, dtype=dtype)
    f = None if edge_feat is None else np.ascontiguousarray(edge_feat, dtype=dtype)
    start = None if logQ is None else np.ascontiguousarray(logQ, dtype=dtype)
    with no_grad():
        out = as_array(crf._graph(U, f, edge_kernel, start, output))
    if output == "labels":
        return np.asarray(out, dtype=np.int64)
    out = np.asarray(out, dtype=dtype)
    return np.ascontiguousarray(np.moveaxis(out, 1, -1)) if labels_last else out


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

_scores_to_planes = _with_twin(_scores_to_planes, _twins.scores_to_planes)
