"""Seeded synthetic labelled volumes and noisy unaries for the volume CRF benchmark.

:func:`phantom` draws an MRI/CT-like labelled volume: a background, a body
(large ellipsoid), organs inside it (smaller ellipsoids, some overlapping
the body edge), a few tubes (vessels, curved), and small spheres (lesions) —
``n_labels`` classes in all. The guide has ``channels`` modalities with
different contrasts per class (some classes look alike in one modality and
differ in the other), a smooth multiplicative bias field, partial-volume blur
(Gaussian, sigma 0.7 voxel) and noise (sigma ~ 12 % of the contrast range).
``spacing`` makes the voxels anisotropic: objects are drawn in millimetres.

:func:`noisy_unary` makes probabilities from the labels with a 3-D version of
the image protocols (``crf_protocols.py``): ``blocky`` — one-hot labels on a
grid 4x coarser with 8 % of the cells replaced by cubes of a random label,
trilinear upsampling, voxel noise, softmax (T 0.25); ``coarse`` — labels
averaged on a grid 4x coarser (a 3-D network's output stride), blurred, with
confusion blobs and smooth noise, softmax (T 0.2). Everything float32, label by
label, so a 256^3 volume with 8 labels fits in a few GB.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["phantom", "noisy_unary"]


def phantom(shape=(48, 96, 96), *, n_labels=6, channels=2, spacing=(2.0, 1.0, 1.0), seed=0):
    """(guide (D, H, W, C) float32, labels (D, H, W) int64) — see the module doc."""
    rng = np.random.default_rng(seed)
    D, H, W = shape
    z, y, x = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing)), indexing="ij")
    ext = np.array([D * spacing[0], H * spacing[1], W * spacing[2]])
    labels = np.zeros(shape, np.int64)

    def ellipsoid(c, r):
        return (((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2
                + ((x - c[2]) / r[2]) ** 2) < 1

    labels[ellipsoid(ext / 2, ext * rng.uniform(0.38, 0.46, 3))] = 1
    organ_labels = list(range(2, max(n_labels - 1, 3)))
    for i in range(2 * len(organ_labels)):
        c = ext * rng.uniform(0.25, 0.75, 3)
        r = ext * rng.uniform(0.08, 0.2, 3)
        labels[ellipsoid(c, r)] = organ_labels[i % len(organ_labels)]
    if n_labels >= 4:  # tubes: random smooth curves thickened
        tube = n_labels - 1 if n_labels > 4 else 3
        for _ in range(3):
            t = np.linspace(0, 1, 200)
            p0, p1, p2 = (ext * rng.uniform(0.2, 0.8, 3) for _ in range(3))
            pts = ((1 - t) ** 2)[:, None] * p0 + (2 * t * (1 - t))[:, None] * p1 + \
                (t ** 2)[:, None] * p2
            rad = rng.uniform(1.5, 3.0)
            m = np.zeros(shape, bool)
            idx = np.round(pts / np.asarray(spacing)).astype(int)
            idx = idx[(idx >= 0).all(1) & (idx < np.asarray(shape)).all(1)]
            m[tuple(idx.T)] = True
            dist = ndimage.distance_transform_edt(~m, sampling=spacing)
            labels[dist < rad] = tube
    if n_labels >= 5:  # lesions
        for _ in range(6):
            c = ext * rng.uniform(0.3, 0.7, 3)
            labels[ellipsoid(c, np.full(3, rng.uniform(3.0, 6.0)))] = n_labels - 2
    means = rng.uniform(0.0, 1.0, (channels, n_labels))
    means[:, 0] = 0.0
    if channels > 1:  # two classes alike in channel 0, apart in channel 1
        means[0, 2] = means[0, 1] + 0.05
    bias = ndimage.gaussian_filter(rng.normal(0, 1, shape), 12) * 4.0
    guide = np.empty(shape + (channels,), np.float32)
    for c in range(channels):
        v = means[c][labels] * np.exp(0.15 * bias)
        v = ndimage.gaussian_filter(v, 0.7 / np.asarray(spacing) * min(spacing))
        guide[..., c] = (v + rng.normal(0, 0.12, shape)) * 100.0
    return guide, labels


def _up(c, factor, shape):
    """(d, h, w) -> shape: trilinear (align_corners=False), edge-clamped, float32."""
    out = c.astype(np.float32)
    for ax, n in enumerate(shape):
        n_in = out.shape[ax]
        src = np.clip((np.arange(n) + 0.5) / factor - 0.5, 0, n_in - 1)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        lam = (src - i0).astype(np.float32).reshape((-1,) + (1,) * (2 - ax))
        out = np.take(out, i0, axis=ax) * (1 - lam) + np.take(out, i1, axis=ax) * lam
    return out


def _coarse(labels, L, f):
    shape = labels.shape
    cs = tuple(-(-n // f) for n in shape)
    oh = np.zeros((L,) + tuple(c * f for c in cs), np.float32)
    idx = np.indices(shape)
    oh[(labels,) + tuple(idx)] = 1
    pad_cnt = np.zeros(oh.shape[1:], np.float32)
    pad_cnt[tuple(slice(0, n) for n in shape)] = 1
    r = oh.reshape(L, cs[0], f, cs[1], f, cs[2], f).sum(axis=(2, 4, 6))
    cnt = pad_cnt.reshape(cs[0], f, cs[1], f, cs[2], f).sum(axis=(1, 3, 5))
    return r / np.maximum(cnt, 1)


def _probabilities(c, f, shape, rng, noise, T):
    """Upsample coarse scores label by label (float32), add voxel noise, softmax at T."""
    L = len(c)
    z = np.empty(shape + (L,), np.float32)
    for lab in range(L):
        up = _up(c[lab], f, shape)
        if noise:
            up += rng.normal(0, noise, shape).astype(np.float32)
        z[..., lab] = up / np.float32(T)
    z -= z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def noisy_unary(labels, n_labels, protocol, seed):
    """Probabilities (D, H, W, L) float32 from labels (see the module doc)."""
    rng = np.random.default_rng(seed)
    L = n_labels
    if protocol == "blocky":
        f = 4
        c = _coarse(labels, L, f)
        covered = np.zeros(c.shape[1:], bool)
        while covered.mean() < 0.08:
            sz = int(rng.integers(1, 3))
            p = [int(rng.integers(0, n)) for n in c.shape[1:]]
            sl = tuple(slice(q, q + sz) for q in p)
            c[(slice(None),) + sl] = 0
            c[(int(rng.integers(0, L)),) + sl] = 1
            covered[sl] = True
        return _probabilities(c, f, labels.shape, rng, 0.1, 0.25)
    if protocol == "coarse":
        f = 4
        c = np.stack([ndimage.gaussian_filter(ch, 0.7) for ch in _coarse(labels, L, f)])
        grid = np.indices(c.shape[1:]).astype(np.float32)
        for _ in range(int(rng.integers(3, 7))):
            ctr = [rng.uniform(0, n) for n in c.shape[1:]]
            r = rng.uniform(1.5, 3.5)
            blob = np.exp(-sum((g - q) ** 2 for g, q in zip(grid, ctr)) / (2 * r * r))
            c[int(rng.integers(0, L))] += rng.uniform(0.5, 1.1) * blob
        c += np.stack([ndimage.gaussian_filter(ch, 1.0) for ch in
                       rng.normal(0, 0.12, c.shape)]) * 2.0
        return _probabilities(c, f, labels.shape, rng, 0.0, 0.2)
    raise ValueError(f"protocol={protocol!r}; choose 'blocky' or 'coarse'")
