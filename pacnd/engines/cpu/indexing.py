"""Small helpers shared by the Numba kernels: tile rows and valid ranges.

See :mod:`pacnd.engines.cpu.layout` for the meaning of ``cls``/``taps``/``geo``.
"""

from numba import njit

__all__ = ["FASTMATH", "COL_BLOCK", "decode_row", "jrange", "unit_of"]

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
def jrange(base, step, n, ja, jb):
    """``[lo, hi)``: the ``j`` in ``[ja, jb)`` with ``0 <= base + j*step < n``."""
    lo = -(base // step)                 # ceil(-base / step)
    hi = (n - 1 - base) // step + 1
    if lo < ja:
        lo = ja
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
