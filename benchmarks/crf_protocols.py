"""Seeded unary protocols for CRF benchmarks: segmentation scores made from ground truth.

Three protocols turn a ground-truth label map (H, W) into per-pixel probabilities
(H, W, L) float32, each seeded (``numpy.random.default_rng(seed)``):

``blocky`` — blocky label noise (the protocol of the first CRF benchmark):
    one-hot labels area-averaged onto a grid 8x coarser; random squares of 1-3
    coarse cells (8-24 px) set to one label (half a label present in the image,
    half any of the L) until 10 % of the cells are covered; bilinear upsampling,
    i.i.d. Gaussian noise (sigma 0.1) per pixel and label, softmax at temperature
    0.25.

``coarse`` — coarse CNN-like scores: one-hot labels area-averaged onto the grid
    of a network's output stride (8 or 16 px, drawn per seed), blurred there
    (Gaussian, sigma 0.7 cells: boundaries spread over ~1-2 cells and thin
    parts fade), plus *confused regions*: 3-6 smooth blobs (radius 2-5 cells)
    in which a confusing label (another class present in the image, or any
    class) gains up to 0.5-1.1 of score, plus smooth low-frequency noise
    (sigma 0.12 per label on the coarse grid); bilinear upsampling to full
    size and softmax at temperature 0.2.

``both`` — ``coarse`` with ``blocky``'s square label noise added on the coarse
    grid before the blur (6 % of the cells).

:func:`make_unary` dispatches by name. Everything is NumPy (no pacnd), so the
same unaries feed every method.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PROTOCOLS", "make_unary", "blocky", "coarse", "both", "area_average",
           "upsample_bilinear"]

PROTOCOLS = ("blocky", "coarse", "both")


def area_average(gt, L, factor):
    """One-hot labels averaged over ``factor`` x ``factor`` cells (ceil): (L, h, w)."""
    H, W = gt.shape
    h, w = -(-H // factor), -(-W // factor)
    valid = (gt >= 0) & (gt < L)
    onehot = np.zeros((L, h * factor, w * factor))
    yy, xx = np.nonzero(valid)
    onehot[gt[valid], yy, xx] = 1
    coarse_ = onehot.reshape(L, h, factor, w, factor).sum(axis=(2, 4))
    s = coarse_.sum(axis=0, keepdims=True)
    return np.where(s > 0, coarse_ / np.maximum(s, 1), 1.0 / L)


def upsample_bilinear(c, factor, size):
    """(L, h, w) -> (L, H, W): bilinear, align_corners=False, edge-clamped."""
    H, W = size
    h, w = c.shape[1:]

    def table(n_in, n_out):
        src = np.clip((np.arange(n_out) + 0.5) / factor - 0.5, 0, n_in - 1)
        i0 = np.floor(src).astype(int)
        return i0, np.minimum(i0 + 1, n_in - 1), src - i0

    y0, y1, ly = table(h, H)
    x0, x1, lx = table(w, W)
    t = c[:, y0] * (1 - ly)[None, :, None] + c[:, y1] * ly[None, :, None]
    return t[:, :, x0] * (1 - lx) + t[:, :, x1] * lx


def _softmax_hwl(score, T):
    z = score / T
    e = np.exp(z - z.max(axis=0, keepdims=True))
    P = e / e.sum(axis=0, keepdims=True)
    return np.ascontiguousarray(P.transpose(1, 2, 0), dtype=np.float32)


def _square_noise(rng, c, present, frac):
    L, h, w = c.shape
    covered = np.zeros((h, w), bool)
    while covered.mean() < frac:
        sz = int(rng.integers(1, 4))
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        lab = rng.choice(present) if rng.random() < 0.5 else int(rng.integers(0, L))
        c[:, y:y + sz, x:x + sz] = 0
        c[lab, y:y + sz, x:x + sz] = 1
        covered[y:y + sz, x:x + sz] = True


def blocky(gt, seed, L=21, factor=8, noise_frac=0.1, pixel_noise=0.1, T=0.25):
    """Blocky label noise (see the module doc) -> (H, W, L) float32 probabilities."""
    rng = np.random.default_rng(seed)
    c = area_average(gt, L, factor)
    present = np.unique(gt[(gt >= 0) & (gt < L)])
    _square_noise(rng, c, present, noise_frac)
    score = upsample_bilinear(c, factor, gt.shape)
    score = score + rng.normal(0, pixel_noise, score.shape)
    return _softmax_hwl(score, T)


def _gauss_blur(c, sigma):
    from scipy.ndimage import gaussian_filter

    return np.stack([gaussian_filter(ch, sigma, mode="nearest") for ch in c])


def coarse(gt, seed, L=21, stride=None, square_frac=0.0, T=0.2):
    """Coarse CNN-like scores (see the module doc) -> (H, W, L) float32 probabilities."""
    rng = np.random.default_rng(seed)
    s = int(stride) if stride is not None else int(rng.choice([8, 16]))
    c = area_average(gt, L, s)
    present = np.unique(gt[(gt >= 0) & (gt < L)])
    if square_frac:
        _square_noise(rng, c, present, square_frac)
    c = _gauss_blur(c, 0.7)
    _, h, w = c.shape
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(int(rng.integers(3, 7))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(2, 5)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        lab = rng.choice(present) if rng.random() < 0.6 else int(rng.integers(0, L))
        c[lab] += rng.uniform(0.5, 1.1) * blob
    c = c + _gauss_blur(rng.normal(0, 0.12, c.shape), 1.0) * 2.0
    score = upsample_bilinear(c, s, gt.shape)
    return _softmax_hwl(score, T)


def both(gt, seed, L=21):
    """Coarse scores with square label noise on the coarse grid (see the module doc)."""
    return coarse(gt, seed, L, square_frac=0.06)


def make_unary(protocol, gt, seed, L=21):
    """Probabilities (H, W, L) float32 of ``protocol`` (one of :data:`PROTOCOLS`)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r}; choose one of {PROTOCOLS}")
    return {"blocky": blocky, "coarse": coarse, "both": both}[protocol](gt, seed, L)
