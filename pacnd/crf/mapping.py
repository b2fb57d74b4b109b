"""Fully-connected CRF terms -> a PAC-CRF (images and volumes).

A term of the fully-connected CRF (Krähenbühl & Koltun 2011) is
``w * exp(-sum_r (p_r,i - p_r,j)^2 / 2 sxy_r^2 - sum_c (f_c,i - f_c,j)^2 / 2 s_c^2)``
with a label compatibility ``w`` (Potts number, per-label vector or L x L
matrix) and a normalisation. :func:`crf_from_terms` turns a list of
:class:`DenseTerm` into a :class:`~pacnd.crf.PacCRF` whose messages
approximate those sums with a few dilated PAC kernels:

* **guide part in K**: the edge features (the image) times ``feat_scale``
  (``1/s_c`` per channel; 0 for a purely spatial term: K = 1);
* **spatial part in W**: all kernels live on one pooled grid (``blur`` = b
  pixels per cell). The spatial Gaussian is used with the std
  ``sxy_scale * sxy_r`` (default 0.5: see below) and truncated at ``reach``
  of those stds (default 2, i.e. at ``sxy`` itself). Dilated kernels cover
  that reach in rings — ``kernel_size`` taps per side (5 on images, 3 on
  volumes) at dilations 1, r, r^2, ... with r = kernel_size // 2 + 1, the last
  ring 3 taps wide when that suffices — and tap t gets the Gaussian mass of
  the integer offsets nearest to it (its Voronoi cell):
  ``W_t = sum_{o -> t} exp(-sum_r (b o_r)^2 / 2 sigma_r^2)``; taps whose weight
  is below 1e-6 of the largest are dropped (anisotropic spacing);
* **blur**: per axis ``b_r = clip(round(max sigma_r / cells_per_std), 1, 8)``
  (images: 12, so 3 for the standard sxy = 80; volumes: 2.5), raised further
  while the folded K of every tap would exceed ``max_kernel_bytes`` (large
  volumes); anisotropic spacing gives anisotropic cells, so the rings are
  isotropic in cells;
* **compatibility**: a number -> a 'potts' kernel group with that weight; a
  vector v -> '2d' kernels with the matrix diag(v); a matrix M -> '2d' with
  (M + M^T) / 2 (what the fully-connected CRF uses: its update is
  ``logQ = -U - sum_terms C msg`` with C = -w I for Potts w);
* **normalisation**: each term's kernels form one group (its normaliser sums
  all of its taps), 'symmetric' (the default), 'before' or 'after' as the
  fully-connected CRF's; 'none' multiplies W by b^ndim (a cell stands for
  b^ndim pixels of the unnormalised sum).

Why ``sxy_scale = 0.5``: the training-free defaults were chosen on VOC images
with three seeded unary protocols (``benchmarks/tune_crf.py``): a spatial std
of half the fully-connected CRF's ``sxy`` on a 3-pixel grid beat both the
fully-connected CRF and a ConvCRF-style local window there; the held-out
comparison is in ``benchmarks/results/crf.md``. ``sxy_scale=1, reach=2,
blur=4`` reproduces the earlier, literal mapping.
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
from dataclasses import dataclass

import numpy as np

from .._validate import check_int
from .model import PacCRF
from .spec import pooled_size

__all__ = ["DenseTerm", "crf_from_terms", "auto_blur", "ring_kernels", "voronoi_weights",
           "PRESETS", "mapping_options"]

#: default mapping options by preset and number of spatial dims: 'refine' (chosen for
#: accuracy, benchmarks/tune_crf.py) and 'densecrf' (reproducing the fully-connected CRF on
#: images, pacnd.densecrf); volumes use a coarser grid (cost grows with blur^-3), chosen on
#: a synthetic phantom (benchmarks/volume_data.py, seed 0, not one of the benchmark's) against
#: pydensecrf's N-D API: per axis about 2.5 scaled stds per cell.
PRESETS = {
    "refine": {2: dict(sxy_scale=0.5, reach=2.0, cells_per_std=12.0, kernel_size=5),
               3: dict(sxy_scale=0.5, reach=2.0, cells_per_std=2.5, kernel_size=3)},
    "densecrf": {2: dict(sxy_scale=1.0, reach=2.0, cells_per_std=20.0, kernel_size=5),
                 3: dict(sxy_scale=0.5, reach=2.0, cells_per_std=2.5, kernel_size=3)},
}


def mapping_options(preset, ndim, **given):
    """The mapping options of ``preset`` for ``ndim`` spatial dims, overridden by the
    ``given`` ones that are not None."""
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r}; choose one of {sorted(PRESETS)}")
    opts = dict(PRESETS[preset][3 if ndim == 3 else 2])
    opts.update({k: v for k, v in given.items() if v is not None})
    return opts
_TAP_FLOOR = 1e-6


@dataclass(frozen=True)
class DenseTerm:
    """One term of a fully-connected CRF.

    Parameters
    ----------
    sxy : tuple of float
        Spatial standard deviation per spatial dimension, in pixels (voxels).
    compat : float or ndarray
        Potts weight (number), per-label vector (L,) or matrix (L, L), with
        the fully-connected CRF's sign conventions.
    feat_scale : float, tuple of float or None
        ``1 / s`` for every edge-feature channel, or one per channel (0 for
        channels the term does not use); None for a purely spatial term.
    normalize : {'symmetric', 'before', 'after', 'none'}
    """

    sxy: tuple
    compat: object
    feat_scale: object = None
    normalize: str = "symmetric"


def auto_blur(sigma, cells_per_std=12.0):
    """The pooled grid for a spatial std ``sigma`` (pixels):
    ``clip(round(sigma / cells_per_std), 1, 8)`` pixels per cell."""
    # halves round up, with a margin for float noise (voxel sizes come as float32)
    return int(min(8, max(1, math.floor(float(sigma) / float(cells_per_std) + 0.5 + 1e-6))))


def ring_kernels(reach_cells, kernel_size=5, ratio=None):
    """Dilated kernels ``[(k, d), ...]`` whose taps cover ``reach_cells`` pooled cells.

    Dilations ``1, ratio, ratio^2, ...`` (default ``ratio = kernel_size // 2 + 1``)
    with ``kernel_size`` taps; stop at the first ring whose Voronoi extent
    ``(k // 2) d + d / 2`` reaches the target, using a 3-tap kernel for that
    ring when it suffices.
    """
    ratio = kernel_size // 2 + 1 if ratio is None else ratio
    rings = []
    d = 1
    while True:
        for k in sorted({3, kernel_size}):
            if (k // 2) * d + d / 2 >= reach_cells:
                rings.append((k, d))
                return rings
        rings.append((kernel_size, d))
        d *= ratio
        if len(rings) > 12:  # pragma: no cover - reach_cells is bounded by the image
            return rings


def voronoi_weights(rings, blur, sxy, ndim=None):
    """Quadrature weights of the taps of ``rings`` for ``exp(-sum_r (x_r / sxy_r)^2 / 2)``.

    Every integer offset (in pooled cells) within the outermost ring's extent
    is given to its nearest tap (ties shared; a position several rings share
    counts once, for the innermost); a tap's weight is the summed Gaussian of
    its offsets, ``x_r = blur * offset_r`` pixels.

    Parameters
    ----------
    rings : list of (k, d)
    blur : int or tuple of int
        Pixels per cell (one per spatial dimension).
    sxy : float or tuple of float
        One std, or one per spatial dimension.
    ndim : int, optional
        Spatial dimensions (default: ``len(sxy)``, or 2 for a number).

    Returns
    -------
    list of ndarray (k,) * ndim
    """
    if isinstance(sxy, numbers.Real):
        sxy = (float(sxy),) * (2 if ndim is None else int(ndim))
    nd = len(sxy)
    bl = tuple(int(x) for x in blur) if isinstance(blur, (tuple, list)) else (int(blur),) * nd
    return [w.copy() for w in _voronoi(tuple(map(tuple, rings)), bl,
                                       tuple(float(s) for s in sxy))]


@functools.lru_cache(maxsize=64)
def _voronoi(rings, blur, sxy):
    nd = len(sxy)
    pts, owner = [], []
    for ki, (k, d) in enumerate(rings):
        r = k // 2
        for a in itertools.product(range(-r, r + 1), repeat=nd):
            pts.append(tuple(ai * d for ai in a))
            owner.append((ki,) + tuple(ai + r for ai in a))
    pts = np.asarray(pts, dtype=np.float64)
    R = max((k // 2) * d + d // 2 for k, d in rings)
    offs = np.stack([g.ravel() for g in np.mgrid[(slice(-R, R + 1),) * nd]],
                    axis=1).astype(np.float64)
    inv = 1.0 / (2.0 * np.asarray(sxy) ** 2)
    g = np.exp(-((offs * np.asarray(blur, np.float64)) ** 2 * inv).sum(axis=1))
    _, first = np.unique(pts, axis=0, return_index=True)
    dup = np.full(len(pts), np.inf)
    dup[first] = 0.0
    out = [np.zeros((k,) * nd) for k, _ in rings]
    acc = np.zeros(len(pts))
    for s in range(0, len(offs), 2048):
        o = offs[s:s + 2048]
        keep = g[s:s + 2048] > 0
        if not keep.any():
            continue
        o = o[keep]
        d2 = ((o[:, None, :] - pts[None, :, :]) ** 2).sum(axis=2) + dup[None, :]
        near = d2 <= d2.min(axis=1, keepdims=True) + 1e-9
        share = near / near.sum(axis=1, keepdims=True)
        acc += (share * g[s:s + 2048][keep][:, None]).sum(axis=0)
    for wt, (ki, *a) in zip(acc, owner):
        out[ki][tuple(a)] += wt
    return out


def _compat_spec(compat, n_labels, name):
    """('potts', weight, None) or ('2d', 1.0, matrix) for a compatibility."""
    if isinstance(compat, numbers.Real) and not isinstance(compat, bool):
        if not math.isfinite(compat):
            raise ValueError(f"{name}={compat!r} must be finite")
        return "potts", float(compat), None
    c = np.asarray(compat, dtype=np.float64)
    if not np.isfinite(c).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if c.shape == (n_labels,):
        return "2d", 1.0, np.diag(c)
    if c.shape == (n_labels, n_labels):
        return "2d", 1.0, 0.5 * (c + c.T)
    raise ValueError(f"{name} has shape {c.shape}; give a number (Potts), a vector ({n_labels},) "
                     f"or a matrix ({n_labels}, {n_labels})")


def _rings_of(term, blur, cells, sxy_scale, reach, kernel_size):
    """Rings and tap weights of a term on a grid of ``blur`` (per axis) pixels per cell."""
    sig = tuple(sxy_scale * s for s in term.sxy)
    reach_cells = max(min(max(reach * g / b for g, b in zip(sig, blur)), max(cells) - 1), 1.0)
    rings = ring_kernels(reach_cells, kernel_size)
    Ws = voronoi_weights(rings, blur, sig)
    top = max(float(w.max()) for w in Ws)
    for w in Ws:
        w[w < _TAP_FLOOR * top] = 0.0
    return rings, Ws


def _pos(v, name, hint):
    if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name}={v!r} must be a positive number ({hint})")
    return float(v)


def crf_from_terms(size, n_labels, terms, *, iterations=5, sxy_scale=None, reach=None,
                   blur=None, kernel_size=None, cells_per_std=None, preset="refine",
                   max_kernel_bytes=512e6, dtype=np.float32):
    """The PAC-CRF approximating a fully-connected CRF made of ``terms`` (see the module doc).

    Parameters
    ----------
    size : tuple of int
        Spatial size, (H, W) or (D, H, W).
    n_labels : int
    terms : list of DenseTerm
    iterations : int
    sxy_scale : float, optional
        The PAC kernels' spatial std as a fraction of each term's ``sxy``.
    reach : float, optional
        Truncation, in those (scaled) stds.
    blur : int, optional
        Pooled grid (pixels per cell); default from the largest std (see the module doc).
    kernel_size : int, optional
        Taps per side of the rings (odd >= 3).
    cells_per_std : float, optional
        The automatic blur: ``blur = round(largest scaled std / cells_per_std)``.
    preset : {'refine', 'densecrf'}
        Where the options left None come from (:data:`PRESETS`: per preset and
        dimensionality; 'refine' 2-D: 0.5, 2, 5 taps, 12; 3-D: 0.5, 2, 3 taps, 2.5).
    max_kernel_bytes : float
        Raise the automatic blur until the folded K of all taps fits this.
    dtype : float32 or float64

    Returns
    -------
    PacCRF
        ``ndim = len(size)``; give it the edge features the terms' ``feat_scale`` refer to.
    """
    nd = len(size)
    if nd not in (2, 3):
        raise ValueError(f"size={tuple(size)}: a CRF runs on images (H, W) or volumes (D, H, W)")
    o = mapping_options(preset, nd, sxy_scale=sxy_scale, reach=reach, kernel_size=kernel_size,
                        cells_per_std=cells_per_std)
    sxy_scale, reach, kernel_size, cells_per_std = (o["sxy_scale"], o["reach"],
                                                    o["kernel_size"], o["cells_per_std"])
    sxy_scale = _pos(sxy_scale, "sxy_scale", "the PAC kernels' spatial std relative to sxy")
    reach = _pos(reach, "reach", "how far each term reaches, in its spatial stds")
    iterations = check_int(iterations, "iterations", 0, "use 0 or more mean-field iterations")
    cells_per_std = _pos(cells_per_std, "cells_per_std", "pixels per pooled cell per std")
    kernel_size = check_int(kernel_size, "kernel_size", 3, "use an odd kernel size >= 3")
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size={kernel_size} must be odd (e.g. {kernel_size + 1})")
    for t in terms:
        if len(t.sxy) != nd:
            raise ValueError(f"a term has sxy={t.sxy} for a {nd}-D grid; give {nd} stds")
    if blur is None:
        # per axis, from the largest std any term has along it
        big = [max((t.sxy[r] for t in terms), default=1.0) for r in range(nd)]
        b = tuple(auto_blur(sxy_scale * g, cells_per_std) for g in big)
        itemsize = np.dtype(dtype).itemsize
        while max(b) < 64:
            cells = pooled_size(tuple(size), b)
            n_taps = sum(int((w != 0).sum()) for t in terms
                         for w in _rings_of(t, b, cells, sxy_scale, reach, kernel_size)[1])
            if n_taps * float(np.prod(cells)) * itemsize <= max_kernel_bytes:
                break
            b = tuple(x + 1 for x in b)
    elif isinstance(blur, (tuple, list)):
        if len(blur) != nd:
            raise ValueError(f"blur={tuple(blur)} has {len(blur)} entries for a {nd}-D grid")
        b = tuple(check_int(x, "blur", 1, "use blur >= 1") for x in blur)
    else:
        b = (check_int(blur, "blur", 1, "use blur >= 1"),) * nd
    cells = pooled_size(tuple(size), b)
    specs, weights, compats = [], [], []
    for group, t in enumerate(terms):
        kind, pw, C = _compat_spec(t.compat, n_labels, "compat")
        if t.normalize not in ("symmetric", "before", "after", "none"):
            raise ValueError(f"normalize={t.normalize!r}; choose 'symmetric', 'before', "
                             f"'after' or 'none'")
        if t.feat_scale is None:
            fs = 0.0
        elif np.ndim(t.feat_scale) == 0:
            fs = float(t.feat_scale)
        else:
            fs = tuple(float(v) for v in t.feat_scale)
        rings, Ws = _rings_of(t, b, cells, sxy_scale, reach, kernel_size)
        for (k, d), Wt in zip(rings, Ws):
            if not Wt.any():
                continue
            specs.append(dict(kernel_size=k, dilation=d, blur=b, compat=kind,
                              pairwise_weight=pw, feat_scale=fs, normalize=t.normalize,
                              group=None if t.normalize == "none" else group))
            weights.append(Wt * (float(np.prod(b)) if t.normalize == "none" else 1.0))
            compats.append(C)
    crf = PacCRF(n_labels, iterations, specs, dtype=dtype, fixed_weighting=False, ndim=nd)
    for i, (Wt, C) in enumerate(zip(weights, compats)):
        crf.messengers[i].weight.data[...] = Wt[None, None]
        if C is not None:
            crf.compat[i].weight.data[...] = C.reshape(crf.compat[i].weight.shape)
    return crf
