"""What stays fixed during one fast PAC-CRF inference: the plan (2-D and 3-D).

:class:`MeanFieldPlan` is built once per inference (:func:`prepare`) and holds

* one :class:`Level` per blur factor: the pooled grid's size, the reference's
  ceil-mode padding, the per-axis bilinear tables of the message upsampling and
  the per-axis pixel counts of the average pooling;
* per level a :class:`LevelPlan`: every shared-filter ('potts', '2d') kernel of
  that blur as one list of taps — offset, per-pixel factor (adapting kernel K
  times the spatial filter W, the receiving pixel's normaliser and, for
  'potts', the signed pairwise weight), input (Q or Q times a sending
  normaliser) and output (0, or a '2d' kernel's slot before its compatibility
  matrix) — evaluated in one Numba pass (:func:`multi_tap`; taps
  with W = 0 are skipped, which is exact; K, W and the normaliser sums are folded by
  :func:`fold_taps`); '4d' and
  'none' kernels go through :mod:`pacnd.ops` with the precomputed K.

The iteration itself (pooling, softmax, upsampling, fused per image row) is in
:mod:`pacnd.crf.fast` (2-D) and :mod:`pacnd.crf.fast3d` (3-D).
"""

from __future__ import annotations

import numpy as np

# Start Numba's thread pool the engine's way (passive waiting) first.
from ..engines import cpu as _cpu_engine  # noqa: F401
from numba import njit, prange  # noqa: E402

from .. import functional as F
from .. import ops
from .spec import blur_tuple, ceil_pad, norm_groups

__all__ = ["MeanFieldPlan", "Level", "LevelPlan", "prepare", "multi_tap", "fold_taps"]


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


@njit(parallel=True, cache=True)
def _block_mean_2d(f, by, bx, pady, padx, cnt_y, cnt_x, out):
    B, C, H, W = f.shape
    h, w = out.shape[2], out.shape[3]
    for task in prange(B * C * h):
        bc = task // h
        cy = task - bc * h
        bb = bc // C
        c = bc - bb * C
        y_lo = max(cy * by - pady, 0)
        y_hi = min((cy + 1) * by - pady, H)
        for cx in range(w):
            x_lo = max(cx * bx - padx, 0)
            x_hi = min((cx + 1) * bx - padx, W)
            t = 0.0
            for y in range(y_lo, y_hi):
                for x in range(x_lo, x_hi):
                    t += f[bb, c, y, x]
            out[bb, c, cy, cx] = t / (cnt_y[cy] * cnt_x[cx])


def block_mean(f, blur):
    """Average pooling of (B, C, *S) by ``blur`` with the reference's ceil-mode padding,
    averaging the in-image pixels of each cell (``F.avg_pool(..., count_include_pad=False)``)."""
    size = f.shape[2:]
    bs = blur_tuple(blur, len(size))
    if len(size) != 2:
        return F.avg_pool(f, bs, bs, ceil_pad(size, bs), count_include_pad=False)
    pad = ceil_pad(size, bs)
    cells = tuple((n + 2 * p - b) // b + 1 for n, p, b in zip(size, pad, bs))
    out = np.empty(f.shape[:2] + cells, dtype=f.dtype)
    _block_mean_2d(np.ascontiguousarray(f), bs[0], bs[1], pad[0], pad[1],
                   _count_table(size[0], bs[0], pad[0], cells[0]),
                   _count_table(size[1], bs[1], pad[1], cells[1]), out)
    return out


class Level:
    """Geometry of one blur level (any number of spatial dims, one blur factor per axis):
    pooled size, per-axis tables for the pooling (``cnts``) and the upsampling (``tabs``)."""

    def __init__(self, size, blur, dtype):
        self.blurs = blur_tuple(blur, len(size))
        self.pad = ceil_pad(size, self.blurs)
        self.size = tuple((n + 2 * p - b) // b + 1
                          for n, p, b in zip(size, self.pad, self.blurs))
        self.tabs = [_linear_table(n, m, b, p, dtype)
                     for n, m, p, b in zip(size, self.size, self.pad, self.blurs)]
        self.cnts = [_count_table(n, b, p, m)
                     for n, m, p, b in zip(size, self.size, self.pad, self.blurs)]

    # the last two axes (the 2-D kernels' names)
    ytab = property(lambda self: self.tabs[-2])
    xtab = property(lambda self: self.tabs[-1])
    cnt_y = property(lambda self: self.cnts[-2])
    cnt_x = property(lambda self: self.cnts[-1])


# --------------------------------------------------------------------------- tap kernels
# The tap kernels work on 3-D grids (2-D ones are passed with a depth of 1) and on chunks
# of grid rows flattened into one vector: within a z-plane, tap (dz, dy, dx) reads the cell
# ``dy * w + dx`` further on, so a chunk is one long contiguous multiply-add per tap and
# label (rows are short on volumes). Reads that wrap around a row end meet a K of exactly 0,
# which the fold kernels store for every tap that leaves the grid.
def _chunk_rows(B, d, h, w):
    """Rows per task: about 4096 cells, but at least 16 tasks when the grid allows."""
    rows = max(1, min(h, -(-4096 // max(w, 1))))
    while rows > 1 and B * d * -(-h // rows) < 16:
        rows = (rows + 1) // 2
    return rows


@njit(cache=True, inline="always")
def _chunk_of(task, d, n_ch, chunk, h):
    b = task // (d * n_ch)
    r = task - b * d * n_ch
    z = r // n_ch
    y0 = (r - z * n_ch) * chunk
    return b, z, y0, min(h, y0 + chunk)


@njit(cache=True, inline="always")
def _tap_range(dy, dx, y0, y1, h, w):
    """Flat plane range [i_lo, i_hi) of the cells of rows [y0, y1) whose tap stays in rows
    [0, h) and inside the plane; and the shift of the sending cell."""
    ya = max(y0, -dy)
    yb = min(y1, h - dy)
    shift = dy * w + dx
    return max(ya * w, -shift), min(yb * w, h * w - shift), shift, ya, yb


@njit(parallel=True, cache=True)
def multi_tap(X, gidx, K, offs, oidx, out, chunk):
    """``out[o(t), b, l, z, y, x] += K[t, b, z, y, x] * X[g(t), b, l, z + dz, y + dy, x + dx]``
    summed over taps t (zero outside the grid; ``offs[t] = (dz, dy, dx)``): every
    shared-filter message of a blur level in one pass."""
    G, B, L, d, h, w = X.shape
    T = K.shape[0]
    n_out = out.shape[0]
    n_ch = (h + chunk - 1) // chunk
    hw = h * w
    for task in prange(B * d * n_ch):
        b, z, y0, y1 = _chunk_of(task, d, n_ch, chunk, h)
        base = y0 * w
        acc = np.zeros((n_out, L, (y1 - y0) * w), dtype=X.dtype)
        for t in range(T):
            sz = z + offs[t, 0]
            if sz < 0 or sz >= d:
                continue
            i_lo, i_hi, shift, ya, yb = _tap_range(offs[t, 1], offs[t, 2], y0, y1, h, w)
            if i_hi <= i_lo:
                continue
            n = i_hi - i_lo
            g = gidx[t]
            o = oidx[t]
            ks = K[t, b, z].reshape(hw)[i_lo:i_hi]
            for l in range(L):
                xs = X[g, b, l, sz].reshape(hw)[i_lo + shift:i_hi + shift]
                acs = acc[o, l, i_lo - base:i_hi - base]
                for j in range(n):
                    acs[j] += ks[j] * xs[j]
        for o in range(n_out):
            for l in range(L):
                dst = out[o, b, l, z].reshape(hw)[base:y1 * w]
                src = acc[o, l]
                for j in range(src.shape[0]):
                    dst[j] = src[j]


try:  # a vectorisable exp from the CPU engine; libm exp otherwise
    from ..engines.cpu.fastexp import vexp as _exp
except Exception:  # pragma: no cover - engine module unavailable
    import math

    _exp = math.exp


@njit(parallel=True, cache=True)
def fold_taps(f, offs, w, adaptive, one, mhalf, slots, S, with_S, chunk):
    """``slots[t, b] = w[t] * exp(-|f(. + off_t) - f(.)|^2 / 2)`` on the pooled grid, exactly 0
    where the tap leaves the grid (``adaptive`` False: K = 1), and, with ``with_S``,
    ``S += |w[t]| K_t`` over in-grid taps — a kernel's adapting kernel, spatial filter and
    normaliser sum in one pass. 3-D grids (2-D ones with a depth of 1); ``f`` already
    multiplied by the feature scale; ``one``, ``mhalf``: 1 and -1/2 in f's dtype."""
    B, C, d, h, wd = f.shape
    T = offs.shape[0]
    n_ch = (h + chunk - 1) // chunk
    hw = h * wd
    for task in prange(B * d * n_ch):
        b, z, y0, y1 = _chunk_of(task, d, n_ch, chunk, h)
        base = y0 * wd
        tmp = np.empty((y1 - y0) * wd, dtype=f.dtype)
        for t in range(T):
            row = slots[t, b, z]
            for y in range(y0, y1):
                for x in range(wd):
                    row[y, x] = 0
            sz = z + offs[t, 0]
            if sz < 0 or sz >= d:
                continue
            dx = offs[t, 2]
            i_lo, i_hi, shift, ya, yb = _tap_range(offs[t, 1], dx, y0, y1, h, wd)
            if i_hi <= i_lo:
                continue
            n = i_hi - i_lo
            k = tmp[:n]
            if adaptive:
                for j in range(n):
                    k[j] = 0
                for c in range(C):
                    a = f[b, c, z].reshape(hw)[i_lo:i_hi]
                    s = f[b, c, sz].reshape(hw)[i_lo + shift:i_hi + shift]
                    for j in range(n):
                        e = s[j] - a[j]
                        k[j] += e * e
                for j in range(n):
                    k[j] = _exp(mhalf * k[j])
            else:
                for j in range(n):
                    k[j] = one
            # taps that wrap around a row end leave the grid: K = 0 there
            for y in range(ya, yb):
                for x in range(max(0, -dx)):
                    if y * wd + x >= i_lo and y * wd + x < i_hi:
                        k[y * wd + x - i_lo] = 0
                for x in range(max(0, min(wd, wd - dx)), wd):
                    if y * wd + x >= i_lo and y * wd + x < i_hi:
                        k[y * wd + x - i_lo] = 0
            wt = w[t]
            flat = row.reshape(hw)
            for j in range(n):
                flat[i_lo + j] = wt * k[j]
            if with_S:
                aw = abs(wt)
                Sf = S[b, 0, z].reshape(hw)
                for j in range(n):
                    Sf[i_lo + j] += aw * k[j]


def _as3d(a, lead):
    """A 2-D grid array with a depth axis of 1 inserted after its ``lead`` leading axes."""
    return a.reshape(a.shape[:lead] + (1,) + a.shape[lead:])


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


class LevelPlan:
    """The shared-filter ('potts', '2d') kernels of one blur level as one list of taps.

    Tap t has an offset in pooled pixels (``offs[t]``), a per-pixel factor ``K[t]`` (the
    adapting kernel times W_t, the receiving pixel's normaliser and, for 'potts', the
    effective pairwise weight with its sign), an input ``gidx[t]`` (0: Q; g >= 1: Q times
    sending normaliser g) and an output ``oidx[t]`` (0: summed directly; j > 0: a '2d'
    kernel's message before its compatibility matrix)."""

    def __init__(self, ndim):
        self.ndim = ndim
        self.norms = []         # input index g >= 1 -> sending normaliser (B, 1, *pooled)
        self.compats = []       # output index j >= 1 -> compatibility matrix (sign folded)
        self.op_terms = []
        self.has_taps = False

    def message(self, Qb, engine):
        m = None
        if self.has_taps:
            X = np.empty((1 + len(self.norms),) + Qb.shape, dtype=Qb.dtype)
            X[0] = Qb
            for g, n in enumerate(self.norms, start=1):
                np.multiply(Qb, n, out=X[g])
            out = np.empty((1 + len(self.compats),) + Qb.shape, dtype=Qb.dtype)
            if self.ndim == 2:
                X, out3, offs = _as3d(X, 3), _as3d(out, 3), self.offs3
            else:
                out3, offs = out, self.offs
            B, d, h, w = X.shape[1], X.shape[3], X.shape[4], X.shape[5]
            multi_tap(X, self.gidx, self.K if self.ndim == 3 else _as3d(self.K, 2), offs,
                      self.oidx, out3, _chunk_rows(B, d, h, w))
            m = out[0]
            for j, C in enumerate(self.compats, start=1):
                m = m + np.einsum("ij,bj...->bi...", C, out[j], optimize=False)
        for t in self.op_terms:
            mt = t.message(Qb, engine)
            m = mt if m is None else m + mt
        return m


def _scalar(v):
    return float(np.asarray(getattr(v, "data", v)))


def _kernel_shape(spec, nd):
    return (1, 1) + (spec.kernel_size,) * nd + (1,) * nd


def _valid(off, pooled):
    """Slices of the cells whose tap at offset ``off`` lands inside the grid."""
    return tuple(slice(max(-o, 0), n - max(o, 0)) for o, n in zip(off, pooled))


class MeanFieldPlan:
    """Everything fixed during one inference: levels, folded kernels, weights.

    Memory: the folded factors of all taps of a level live in one array (B, T, *pooled),
    filled kernel by kernel, so at most one kernel's adapting kernel exists besides it."""

    def __init__(self, crf, size, batch, dtype, edge_feat=None, edge_kernel=None,
                 engine=None):
        self.dtype = dt = np.dtype(dtype)
        self.size = tuple(size)
        self.ndim = nd = len(self.size)
        self.engine = engine
        self.w_u = dt.type(_scalar(crf.effective_unary_weight()))
        self.levels = {}
        bkey = [blur_tuple(spec.blur, nd) for spec in crf.kernels]
        for b in bkey:
            if b not in self.levels:
                self.levels[b] = Level(self.size, b, dt)
        self.plans = {b: LevelPlan(nd) for b in self.levels}
        self._feat, self._pooled_feat = edge_feat, {}
        # the taps of every shared kernel: (index in the window, offset), W != 0, in the grid
        taps, count = {}, {b: 0 for b in self.levels}
        for i, spec in enumerate(crf.kernels):
            if not spec.shared:
                continue
            W = np.asarray(crf.messengers[i].weight.data)[0, 0]
            k, d = spec.kernel_size, spec.dilation
            pooled = self.levels[bkey[i]].size
            lst = []
            for a in np.ndindex(*(k,) * nd):
                off = tuple((ai - k // 2) * d for ai in a)
                if W[a] != 0 and all(abs(o) < n for o, n in zip(off, pooled)):
                    lst.append((a, off))
            taps[i] = (count[bkey[i]], lst)
            count[bkey[i]] += len(lst)
        for b, plan in self.plans.items():
            if count[b]:
                plan.K = np.empty((count[b], batch) + self.levels[b].size, dtype=dt)
                plan.offs = np.zeros((count[b], nd), dtype=np.int64)
                plan.gidx = np.zeros(count[b], dtype=np.int64)
                plan.oidx = np.zeros(count[b], dtype=np.int64)
                plan.has_taps = True
        groups = norm_groups(crf.kernels)
        group_of = {i: key for key, idx in groups.items() for i in idx}
        S = {}
        # fill the slots with K * W (and the group sums S of |W| K over in-image taps)
        for i, spec in enumerate(crf.kernels):
            W = np.asarray(crf.messengers[i].weight.data, dtype=dt)
            weff = _scalar(crf.effective_pairwise_weight(i))
            plan = self.plans[bkey[i]]
            if not spec.shared:
                K = self._kernel(crf, i, edge_kernel, dt, engine, nd)
                plan.op_terms.append(_OpTerm(spec, K, np.ascontiguousarray(-weff * W)))
                continue
            start, lst = taps[i]
            pooled = self.levels[bkey[i]].size
            key = group_of.get(i)
            if key is not None and key not in S:
                S[key] = np.zeros((batch, 1) + pooled, dtype=dt)
            if not lst:
                continue
            plan.offs[start:start + len(lst)] = [off for _, off in lst]
            if edge_kernel is None:  # K, W and S in one pass over the pooled grid
                f, adaptive = self._scaled_feat(crf, i, dt, nd)
                wt = np.array([W[(0, 0) + a] for a, _ in lst], dtype=dt)
                Si = S[key] if key is not None else np.zeros((1,) * (nd + 2), dtype=dt)
                offs = np.ascontiguousarray(plan.offs[start:start + len(lst)])
                slots = plan.K[start:start + len(lst)]
                if nd == 2:
                    f, slots, Si = _as3d(f, 2), _as3d(slots, 2), _as3d(Si, 2)
                    offs = np.concatenate([np.zeros((len(lst), 1), np.int64), offs], axis=1)
                fold_taps(f, offs, wt, adaptive, dt.type(1), dt.type(-0.5), slots, Si,
                          key is not None, _chunk_rows(*f.shape[:1], *f.shape[2:]))
                continue
            K = self._kernel(crf, i, edge_kernel, dt, engine, nd)
            for j, (a, off) in enumerate(lst):
                slot = plan.K[start + j]
                w = W[(0, 0) + a]
                if K is None:
                    slot[...] = w
                else:
                    np.multiply(K[(slice(None), 0) + a], w, out=slot)
                keep = np.zeros(pooled, bool)  # K = 0 where the tap leaves the grid
                keep[_valid(off, pooled)] = True
                slot[:, ~keep] = 0
                if key is not None:
                    dst = (slice(None), 0) + _valid(off, pooled)
                    S[key][dst] += slot[(slice(None),) + dst[2:]] * np.sign(w)
            del K
        # normalisers: receiving one folded into the slots, sending one as an input
        fold = {}
        for key, idx in groups.items():
            total = np.maximum(S.pop(key), dt.type(1e-12))
            kind = crf.kernels[idx[0]].normalize
            n_in = n_out = None
            if kind == "symmetric":
                n_in = n_out = total ** dt.type(-0.5)
            elif kind == "before":
                n_in = dt.type(1) / total
            else:
                n_out = dt.type(1) / total
            plan = self.plans[bkey[idx[0]]]
            g = 0
            if n_in is not None:
                plan.norms.append(n_in)
                g = len(plan.norms)
            for i in idx:
                fold[i] = (g, n_out)
        for i, spec in enumerate(crf.kernels):
            if not spec.shared:
                continue
            plan = self.plans[bkey[i]]
            start, lst = taps[i]
            sl = slice(start, start + len(lst))
            g, n_out = fold.get(i, (0, None))
            weff = _scalar(crf.effective_pairwise_weight(i))
            if n_out is not None:
                plan.K[sl] *= n_out[None, :, 0]
            if spec.compat == "2d":
                L = crf.n_labels
                C = np.asarray(crf.compat[i].weight.data, dtype=dt).reshape(L, L) * \
                    dt.type(-weff)
                plan.compats.append(np.ascontiguousarray(C))
                plan.oidx[sl] = len(plan.compats)
            else:
                plan.K[sl] *= dt.type(-weff)
            plan.gidx[sl] = g
        for plan in self.plans.values():
            if plan.has_taps and nd == 2:
                plan.offs3 = np.concatenate([np.zeros((len(plan.offs), 1), np.int64),
                                             plan.offs], axis=1)
        self._feat = self._pooled_feat = None

    def _scaled_feat(self, crf, i, dt, nd):
        """(pooled edge features times kernel i's feature scale, whether K is adaptive)."""
        spec = crf.kernels[i]
        b = blur_tuple(spec.blur, nd)
        if b not in self._pooled_feat:
            f = np.asarray(self._feat, dtype=dt)
            self._pooled_feat[b] = f if max(b) == 1 else block_mean(f, b)
        f = self._pooled_feat[b]
        scale = crf.feat_scales[i]
        if scale is not None:
            sc = np.asarray(scale.data, dtype=dt)
            if not sc.any():
                return np.ascontiguousarray(f, dtype=dt), False
            f = f * (sc.reshape((1, -1) + (1,) * nd) if sc.ndim == 1 else sc)
        return np.ascontiguousarray(f, dtype=dt), True

    def _kernel(self, crf, i, edge_kernel, dt, engine, nd):
        """Kernel i's adapting kernel K (B, 1, *k, *pooled); None when K = 1 (zero guide
        scale) or the kernel is not adaptive."""
        spec = crf.kernels[i]
        if not spec.adaptive:
            return None
        if edge_kernel is not None:
            K = edge_kernel[i] if isinstance(edge_kernel, (list, tuple)) else edge_kernel
            return np.asarray(getattr(K, "data", K), dtype=dt)
        b = blur_tuple(spec.blur, nd)
        if b not in self._pooled_feat:
            f = np.asarray(self._feat, dtype=dt)
            self._pooled_feat[b] = f if max(b) == 1 else block_mean(f, b)
        f = self._pooled_feat[b]
        scale = crf.feat_scales[i]
        if scale is not None:
            sc = np.asarray(scale.data, dtype=dt)
            if not sc.any():  # zero-scaled guide: K = exp(0) = 1 on every tap
                if spec.shared:
                    return None
                k = spec.kernel_size
                return np.ones((f.shape[0], 1) + (k,) * nd + f.shape[2:], dtype=dt)
            f = f * (sc.reshape((1, -1) + (1,) * nd) if sc.ndim == 1 else sc)
        return ops.adapting_kernel(f, spec.kernel_size, padding=spec.padding,
                                   dilation=spec.dilation, engine=engine)

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
