"""How the Numba engine walks a PAC operation: 3-D embedding, tap classes, tiles.

Every problem is embedded in three spatial dims (a 1-D or 2-D problem gets
leading unit dims with k=1, s=1, p=0, d=1), so one set of kernels serves all.

**Classes.** The output pixels are split into *classes* whose pixels share one
set of taps that land on real input samples:

* forward op: one class, all output pixels, all taps;
* transposed op: one class per residue of the output coordinate modulo the
  stride in each dim (sub-pixel convolution). In dim ``i`` the class with
  residue ``r`` holds the outputs ``y = r + j*s`` and the taps ``t`` with
  ``(r + t*d - ((k-1)*d - p)) % s == 0``; only those taps ever meet an input
  sample, so nothing is multiplied by an inserted zero and no zero-inserted
  copy exists.

In every class and dim, everything is affine in the class coordinate ``j``:
output ``o0 + j*ostep``, input index of tap ``t`` ``ib[t] + j*istep``, guide
index ``gb[t] + j*gstep``, centre guide index ``cb + j*gstep``. These are
exactly the entries of :attr:`Geometry.input_index` / ``guide_index`` /
``centre_index`` (an index outside ``[0, size)`` is the tables' ``-1``);
:func:`check_against_geometry` verifies that.

A class is handed to the kernels as two int64 arrays:

``cls`` (3, 7)
    per dim: ``o0, ostep, n, ntaps, istep, gstep, cb``
``taps`` (3, kmax, 4)
    per dim and class tap: ``t, ib, gb, lands`` (``lands`` is 0 only for the
    taps a full adapting kernel includes although they miss the input grid)

and ``geo`` (4, 3): per dim the input, guide and output size and kernel size.

**Tiles.** A class's pixels are rows ``(b, j_d, j_h)`` (batch folded in) times
columns ``j_w``. A tile is a rectangle ``rows [r0, r1) x columns [c0, c1)``;
its pixel ``p = (r - r0)*(c1 - c0) + (j_w - c0)``. Tile sizes come from a byte
budget (:data:`pacnd.engines.cpu.TILE_BYTES`), so working memory does not grow
with the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Layout", "TapClass", "layout_of", "tiles", "check_against_geometry", "Workspace"]


def _embed(seq, fill):
    seq = tuple(int(v) for v in seq)
    return (fill,) * (3 - len(seq)) + seq


@dataclass(frozen=True)
class TapClass:
    cls: np.ndarray          # (3, 7) int64
    taps: np.ndarray         # (3, kmax, 4) int64
    tap_ids: np.ndarray      # (T_r,) int64, flat tap index (C order over kernel_size)
    n: tuple                 # class extent per dim (n_d, n_h, n_w)
    slices: tuple            # per dim slice of the output this class covers

    @property
    def ntaps(self):
        return len(self.tap_ids)


@dataclass(frozen=True)
class Layout:
    geo: np.ndarray          # (4, 3) int64: in, guide, out, kernel size
    in3: tuple
    out3: tuple
    guide3: tuple
    k3: tuple
    classes: tuple           # of TapClass
    empty: tuple             # output slices (per dim) of classes without taps (bias only)


def _dim_phases(n_in, n_out, k, s, p, d, transposed, all_taps):
    """Per dim: list of (o0, ostep, n, istep, gstep, cb, [(t, ib, gb, lands)])."""
    if not transposed:
        taps = [(t, t * d - p, t * d - p, 1) for t in range(k)]
        return [(0, 1, n_out, s, s, (k // 2) * d - p, taps)]
    off = (k - 1) * d - p
    phases = []
    for r in range(min(s, n_out)):
        n = (n_out - r + s - 1) // s
        taps = []
        for t in range(k):
            lands = (r + t * d - off) % s == 0
            if lands or all_taps:
                ib = (r + t * d - off) // s if lands else 0
                taps.append((t, ib, r - (k // 2) * d + t * d, int(lands)))
        phases.append((r, s, n, 1, s, r, taps))
    return phases


def layout_of(geom, all_taps=False):
    """The classes of ``geom`` (a :class:`pacnd._geometry.Geometry`).

    ``all_taps=True`` keeps in every class the taps that miss the input grid
    too (the full adapting kernel has values there); the PAC kernels use
    ``False``.
    """
    nd = geom.ndim
    in3 = _embed(geom.in_size, 1)
    out3 = _embed(geom.out_size, 1)
    g3 = _embed(geom.guide_size, 1)
    k3 = _embed(geom.kernel_size, 1)
    s3 = _embed(geom.stride, 1)
    p3 = (0,) * (3 - nd) + tuple(int(v) for v in geom.padding)
    d3 = _embed(geom.dilation, 1)
    geo = np.array([in3, g3, out3, k3], dtype=np.int64)
    per_dim = [_dim_phases(in3[i], out3[i], k3[i], s3[i], p3[i], d3[i], geom.transposed,
                           all_taps) for i in range(3)]
    kmax = max(k3)
    classes, empty = [], []
    for ph_d in per_dim[0]:
        for ph_h in per_dim[1]:
            for ph_w in per_dim[2]:
                phs = (ph_d, ph_h, ph_w)
                slices = tuple(slice(ph[0], None, ph[1]) for ph in phs)
                if any(len(ph[6]) == 0 for ph in phs):
                    empty.append(slices)
                    continue
                cls = np.array([[ph[0], ph[1], ph[2], len(ph[6]), ph[3], ph[4], ph[5]]
                                for ph in phs], dtype=np.int64)
                taps = np.zeros((3, kmax, 4), dtype=np.int64)
                for i, ph in enumerate(phs):
                    for ti, tap in enumerate(ph[6]):
                        taps[i, ti] = tap
                td = np.array([tp[0] for tp in ph_d[6]], dtype=np.int64)
                th = np.array([tp[0] for tp in ph_h[6]], dtype=np.int64)
                tw = np.array([tp[0] for tp in ph_w[6]], dtype=np.int64)
                ids = ((td[:, None, None] * k3[1] + th[None, :, None]) * k3[2]
                       + tw[None, None, :]).ravel()
                classes.append(TapClass(cls, taps, np.ascontiguousarray(ids),
                                        (ph_d[2], ph_h[2], ph_w[2]), slices))
    return Layout(geo, in3, out3, g3, k3, tuple(classes), tuple(empty))


def tiles(tc, batch, bytes_per_pixel, budget):
    """Yield tiles ``(r0, r1, c0, c1)`` of class ``tc`` within ``budget`` bytes."""
    nrows = batch * tc.n[0] * tc.n[1]
    ncol = tc.n[2]
    npix = max(1, int(budget // max(1, bytes_per_pixel)))
    if npix >= ncol:
        step = max(1, npix // ncol)
        for r0 in range(0, nrows, step):
            yield r0, min(nrows, r0 + step), 0, ncol
    else:
        for r0 in range(nrows):
            for c0 in range(0, ncol, npix):
                yield r0, r0 + 1, c0, min(ncol, c0 + npix)


def check_against_geometry(geom, all_taps=False):
    """Assert that the affine class description reproduces the Geometry tables."""
    lay = layout_of(geom, all_taps)
    nd = geom.ndim
    tables = [
        [np.ones((1, 1), np.int64) * 0] * (3 - nd) + list(geom.input_index),
        [np.zeros((1, 1), np.int64)] * (3 - nd) + list(geom.guide_index),
    ]
    centre = [np.zeros(1, np.int64)] * (3 - nd) + list(geom.centre_index)
    for tc in lay.classes:
        for i in range(3):
            o0, ostep, n, nt, istep, gstep, cb = tc.cls[i]
            j = np.arange(n)
            o = o0 + j * ostep
            c = cb + j * gstep
            c = np.where((c >= 0) & (c < lay.guide3[i]), c, -1)
            assert np.array_equal(c, centre[i][o])
            for ti in range(nt):
                t, ib, gb, lands = tc.taps[i, ti]
                g = gb + j * gstep
                g = np.where((g >= 0) & (g < lay.guide3[i]), g, -1)
                assert np.array_equal(g, tables[1][i][t, o])
                if lands:
                    x = ib + j * istep
                    x = np.where((x >= 0) & (x < lay.in3[i]), x, -1)
                    assert np.array_equal(x, tables[0][i][t, o])
                else:
                    assert (tables[0][i][t, o] == -1).all()
    return lay


class Workspace:
    """Tile buffers of one call, reused from tile to tile.

    Fresh multi-MB arrays per tile would be fresh ``mmap`` pages each time
    (a page fault per 4 KiB on first touch); one flat buffer per name, grown
    when needed, avoids that.
    """

    def __init__(self, dtype):
        self.dtype = dtype
        self._bufs = {}

    def get(self, name, shape, zero=False):
        n = int(np.prod(shape))
        buf = self._bufs.get(name)
        if buf is None or buf.size < n:
            buf = np.empty(max(n, 1), dtype=self.dtype)
            self._bufs[name] = buf
        out = buf[:n].reshape(shape)
        if zero:
            out.fill(0)
        return out


def row_segments(tc, tile):
    """Split a tile into runs of rows that share (batch, j_d).

    Yields ``(p0, p1, b, out_index)``: tile pixels ``[p0, p1)`` are the output
    block ``out5[b, :][out_index]`` of shape (C, rows, cols) — a strided view for
    transposed classes — so tile buffers move to and from the output with
    NumPy slicing instead of a kernel.
    """
    r0, r1, c0, c1 = tile
    nd, nh = tc.n[0], tc.n[1]
    cls = tc.cls
    ncol = c1 - c0
    ow0 = int(cls[2, 0] + c0 * cls[2, 1])
    ow_sl = slice(ow0, ow0 + (ncol - 1) * int(cls[2, 1]) + 1, int(cls[2, 1]))
    r = r0
    while r < r1:
        b, rem = divmod(r, nd * nh)
        jd, jh = divmod(rem, nh)
        n = min(r1 - r, nh - jh)
        od = int(cls[0, 0] + jd * cls[0, 1])
        oh0 = int(cls[1, 0] + jh * cls[1, 1])
        oh_sl = slice(oh0, oh0 + (n - 1) * int(cls[1, 1]) + 1, int(cls[1, 1]))
        yield (r - r0) * ncol, (r - r0 + n) * ncol, b, (slice(None), od, oh_sl, ow_sl)
        r += n
