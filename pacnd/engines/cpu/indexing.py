"""Small helpers shared by the Numba kernels: tile rows and valid ranges.

See :mod:`pacnd.engines.cpu.layout` for the meaning of ``cls``/``taps``/``geo``.
"""

import numpy as np
from numba import njit

__all__ = ["FASTMATH", "COL_BLOCK", "decode_row", "next_row", "jrange", "unit_of", "load_row",
           "store_row", "add_row", "tap_of", "input_row", "output_row"]

#: LLVM fast-math flags of every kernel: reassociation/contraction for
#: vectorisation, but no ``nnan``/``ninf`` (zero-padding tests compare with 0).
FASTMATH = {"nsz", "arcp", "contract", "reassoc", "afn"}

#: Columns per parallel work unit (a unit is one tile row, or a block of it).
COL_BLOCK = 256


@njit(cache=True)
def decode_row(r, nd, nh):
    """Row ``r`` of a class -> (batch, j_d, j_h)."""
    per_b = nd * nh
    b = r // per_b
    rem = r - b * per_b
    jd = rem // nh
    return b, jd, rem - jd * nh


@njit(cache=True)
def next_row(b, jd, jh, nd, nh):
    """The row after (batch, j_d, j_h) in :func:`decode_row` order."""
    jh += 1
    if jh == nh:
        jh = 0
        jd += 1
        if jd == nd:
            jd = 0
            b += 1
    return b, jd, jh


@njit(cache=True)
def jrange(base, step, n, ja, jb):
    """``[lo, hi)``: the ``j`` in ``[ja, jb)`` with ``0 <= base + j*step < n``;
    ``ja <= lo <= hi <= jb`` whatever the geometry."""
    if step == 1:                        # the common case, without divisions
        lo = -base
        hi = n - base
    else:
        lo = -(base // step)             # ceil(-base / step)
        hi = (n - 1 - base) // step + 1
    # ja <= lo <= hi <= jb always: an empty range sits inside [ja, jb] (callers
    # index their row buffers with lo - ja and hi - ja)
    if lo < ja:
        lo = ja
    if lo > jb:
        lo = jb
    if hi > jb:
        hi = jb
    if hi < lo:
        hi = lo
    return lo, hi


@njit(cache=True)
def unit_of(u, nblk, r0, c0, c1):
    """Work unit ``u`` -> (row, first column, end column, tile pixel of the first column)."""
    rr = u // nblk
    blk = u - rr * nblk
    ja = c0 + blk * COL_BLOCK
    jb = ja + COL_BLOCK
    if jb > c1:
        jb = c1
    return r0 + rr, ja, jb, rr * (c1 - c0) + (ja - c0)


# Row access. Numba handles negative indices at run time, which stops LLVM from
# vectorising loops like ``a[base + j]``; the helpers below hand out 1-D views
# indexed from 0 (unit stride), so the loops that use them vectorise.
@njit(cache=True)
def load_row(row, base, step, lo, hi):
    """``row[base + j*step]`` for ``j`` in ``[lo, hi)`` as a contiguous 1-D array
    (a view for ``step == 1``, else a copy)."""
    if step == 1:
        return row[base + lo:base + hi]
    n = hi - lo
    out = np.empty(max(n, 0), dtype=row.dtype)
    p = base + lo * step
    for j in range(n):
        out[j] = row[p + j * step]
    return out


@njit(cache=True)
def store_row(row, base, step, lo, vals):
    """``row[base + (lo + j)*step] = vals[j]``."""
    n = vals.shape[0]
    if step == 1:
        dst = row[base + lo:base + lo + n]
        for j in range(n):
            dst[j] = vals[j]
    else:
        p = base + lo * step
        for j in range(n):
            row[p + j * step] = vals[j]


@njit(cache=True, fastmath=FASTMATH)
def add_row(row, base, step, lo, vals):
    """``row[base + (lo + j)*step] += vals[j]``."""
    n = vals.shape[0]
    if step == 1:
        dst = row[base + lo:base + lo + n]
        for j in range(n):
            dst[j] += vals[j]
    else:
        p = base + lo * step
        for j in range(n):
            row[p + j * step] += vals[j]


# Class rows and taps (see :mod:`pacnd.engines.cpu.layout` for ``cls`` / ``taps`` / ``geo``).
@njit(cache=True)
def tap_of(ti, th_n, tw_n):
    """Class tap ``ti`` -> its per-dim indices (C order)."""
    tdi = ti // (th_n * tw_n)
    rem = ti - tdi * th_n * tw_n
    thi = rem // tw_n
    return tdi, thi, rem - thi * tw_n


@njit(cache=True)
def input_row(geo, cls, taps, r, tdi, thi, twi, c0, c1):
    """(b, input d, input h, input w base, w step, lo, hi) of class row ``r`` and a tap.

    ``[lo, hi)`` are the columns whose input sample exists (empty when the
    row misses the input).
    """
    b, jd, jh = decode_row(r, cls[0, 2], cls[1, 2])
    idd = taps[0, tdi, 1] + jd * cls[0, 4]
    ihh = taps[1, thi, 1] + jh * cls[1, 4]
    ibw = taps[2, twi, 1]
    isw = cls[2, 4]
    lo, hi = c0, c0
    ok = 0 <= idd < geo[0, 0] and 0 <= ihh < geo[0, 1]
    if ok:
        lo, hi = jrange(ibw, isw, geo[0, 2], c0, c1)
    else:
        idd, ihh = 0, 0
    return b, idd, ihh, ibw, isw, lo, hi


@njit(cache=True)
def output_row(cls, r):
    """(b, output d, output h, output w base, w step) of class row ``r``."""
    b, jd, jh = decode_row(r, cls[0, 2], cls[1, 2])
    return b, cls[0, 0] + jd * cls[0, 1], cls[1, 0] + jh * cls[1, 1], cls[2, 0], cls[2, 1]
