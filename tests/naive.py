"""Brute-force oracles for the image-level filters (``pacnd.filters``).

Each function is a direct transcription of the filter's defining formula as
plain Python loops over output pixels and window positions, in float64, with
channels last (``(*spatial, C)``). They share nothing with the PAC code paths
(no padding tricks, no ones-channel normaliser, no block layout) and are only
fast enough for tiny images.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def _inside(q, shape):
    return all(0 <= qi < n for qi, n in zip(q, shape))


def bilateral(image, guide, sigma_spatial, sigma_color, win_size, window="square"):
    """Joint bilateral filter normalised over in-image pixels.

    ``image`` (*S, C), ``guide`` (*S, Cg). Weight of neighbour q for pixel p:
    ``exp(-|p-q|^2 / 2 sigma_s^2) * exp(-||G[q]-G[p]||^2 / 2 sigma_c^2)``
    (Euclidean over guide channels); ``window='disk'`` keeps offsets with
    ``sum (d / r)^2 <= 1``, ``r = win_size // 2``.
    """
    image = np.asarray(image, dtype=np.float64)
    guide = np.asarray(guide, dtype=np.float64)
    shape = image.shape[:-1]
    r = win_size // 2
    out = np.zeros_like(image)
    offsets = list(itertools.product(range(-r, r + 1), repeat=len(shape)))
    for p in np.ndindex(*shape):
        num = np.zeros(image.shape[-1])
        den = 0.0
        for d in offsets:
            if window == "disk" and r > 0 and sum((di / r) ** 2 for di in d) > 1 + 1e-12:
                continue
            q = tuple(pi + di for pi, di in zip(p, d))
            if not _inside(q, shape):
                continue
            ws = math.exp(-0.5 * sum(di * di for di in d) / sigma_spatial ** 2)
            dist2 = float(np.sum((guide[q] - guide[p]) ** 2))
            wr = math.exp(-0.5 * dist2 / sigma_color ** 2)
            num += ws * wr * image[q]
            den += ws * wr
        out[p] = num / den
    return out


def joint_bilateral_upsample(low_res, guide, factor, sigma_spatial, sigma_color, win_size,
                             mask=None):
    """Kopf et al.'s JBU with low-res sample ``i`` at high-res ``i*factor + (factor-1)//2``.

    ``low_res`` (*s, C), ``guide`` (*S, Cg) with ``S = factor * s``. Every
    low-res sample within ``win_size // 2`` high-res pixels (per dim) of p
    contributes ``exp(-|P_i - p|^2 / (2 (sigma_s*factor)^2)) *
    exp(-||G[P_i] - G[p]||^2 / 2 sigma_c^2)``; NaN where nothing contributes.
    """
    low_res = np.asarray(low_res, dtype=np.float64)
    guide = np.asarray(guide, dtype=np.float64)
    small = low_res.shape[:-1]
    big = tuple(factor * n for n in small)
    off = (factor - 1) // 2
    r = win_size // 2
    out = np.zeros(big + (low_res.shape[-1],))
    for p in np.ndindex(*big):
        num = np.zeros(low_res.shape[-1])
        den = 0.0
        for i in np.ndindex(*small):
            if mask is not None and not mask[i]:
                continue
            P = tuple(ii * factor + off for ii in i)
            d = [Pi - pi for Pi, pi in zip(P, p)]
            if any(abs(di) > r for di in d):
                continue
            ws = math.exp(-0.5 * sum((di / factor) ** 2 for di in d) / sigma_spatial ** 2)
            wr = math.exp(-0.5 * float(np.sum((guide[P] - guide[p]) ** 2)) / sigma_color ** 2)
            num += ws * wr * low_res[i]
            den += ws * wr
        out[p] = num / den if den > 0 else np.nan
    return out


def _box_downscale(image, size, stride, padding, out_shape):
    """Mean of the in-image pixels of each pooling window: (*out, C)."""
    shape = image.shape[:-1]
    box = np.zeros(tuple(out_shape) + (image.shape[-1],))
    for p in np.ndindex(*out_shape):
        vals = [image[q] for q in _window(p, size, stride, padding, shape)]
        box[p] = np.mean(vals, axis=0)
    return box


def _window(p, size, stride, padding, shape):
    """In-image pixels of the pooling window of output p."""
    for t in itertools.product(range(size), repeat=len(shape)):
        q = tuple(pi * stride - padding + ti for pi, ti in zip(p, t))
        if _inside(q, shape):
            yield q


def _dpid_smooth(box):
    """``sum_o prod_d w(o_d) B[clip(p + o)]`` with ``w = (1, 2, 1) / 4`` over ``o in {-1,0,1}^nd``."""
    shape = box.shape[:-1]
    out = np.zeros_like(box)
    w = {-1: 0.25, 0: 0.5, 1: 0.25}
    for p in np.ndindex(*shape):
        acc = np.zeros(box.shape[-1])
        for o in itertools.product((-1, 0, 1), repeat=len(shape)):
            q = tuple(min(max(pi + oi, 0), n - 1) for pi, oi, n in zip(p, o, shape))
            wt = 1.0
            for oi in o:
                wt *= w[oi]
            acc += wt * box[q]
        out[p] = acc
    return out


def detail_preserving_pool(image, size, stride, padding, alpha, lam, asym=False, eps=1e-3,
                           reference="box"):
    """DPP (Saeedan et al. 2018): ``sum_q w I[q] / sum_q w`` over the in-image window,
    ``w = alpha + ((I[q] - I~[p])^2 + eps^2)^(lam/2)`` per channel (``asym``: ``max(0, .)``).

    ``reference``: 'box' (I~ = window mean), 'dpid' (box mean smoothed by
    [1,2,1]/4 per dim, edge-replicated) or an array (*out, C).
    """
    image = np.asarray(image, dtype=np.float64)
    shape = image.shape[:-1]
    C = image.shape[-1]
    out_shape = tuple((n + 2 * padding - size) // stride + 1 for n in shape)
    alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64).reshape(-1), (C,))
    lam = np.broadcast_to(np.asarray(lam, dtype=np.float64).reshape(-1), (C,))
    if isinstance(reference, str):
        ref = _box_downscale(image, size, stride, padding, out_shape)
        if reference == "dpid":
            ref = _dpid_smooth(ref)
    else:
        ref = np.asarray(reference, dtype=np.float64)
    out = np.zeros(out_shape + (C,))
    for p in np.ndindex(*out_shape):
        for c in range(C):
            num = den = 0.0
            for q in _window(p, size, stride, padding, shape):
                x = image[q + (c,)] - ref[p + (c,)]
                if asym:
                    x = max(x, 0.0)
                w = alpha[c] + (x * x + eps * eps) ** (lam[c] / 2)
                num += w * image[q + (c,)]
                den += w
            out[p + (c,)] = num / den
    return out
