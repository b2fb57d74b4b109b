"""Low-resolution inputs and the normalisation convention of joint upsampling.

- :func:`make_low_res`: ``'center'`` nearest subsampling (depth; sample ``i``
  is high-res pixel ``i*factor + (factor-1)//2``), ``'last'``, and
  ``'bilinear'`` antialiased bilinear downsampling (flow; Gaussian
  prefilter ``sigma = (factor-1)/2`` then linear interpolation at
  ``(i + 0.5)*factor - 0.5``, mirror boundaries — scikit-image's
  ``resize(order=1, anti_aliasing=True, mode='reflect')``, which the
  reference implementation uses);
  ``'bicubic'`` antialiased bicubic downsampling (MATLAB ``imresize``; what
  depth super-resolution papers after PAC use), sample ``i`` centred on
  ``(i + 0.5)*factor - 0.5``.
- :func:`fill_unknown`: NaN samples replaced by the nearest known one.
- :func:`crop_to_multiple`: centre crop to a multiple of the factor.
- :func:`minmax_range`, :func:`normalize_target`, :func:`denormalize_target`.
"""

from __future__ import annotations


import numpy as np

from ..filters import jbu_sample_offset
from ..models._interface import (check_factor, denormalize_target, minmax_range,
                                 normalize_target)

__all__ = ["make_low_res", "fill_unknown", "crop_to_multiple", "minmax_range",
           "normalize_target", "denormalize_target", "LOWRES_MODES"]

LOWRES_MODES = ("center", "last", "bilinear", "bicubic")


def _cubic(x, a=-0.5):
    """Keys' cubic convolution kernel (``a = -0.5``: MATLAB's and Pillow's bicubic)."""
    x = np.abs(x)
    return np.where(x <= 1, (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1,
                    np.where(x < 2, a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a, 0.0))


def _bicubic_matrix(n_in, factor):
    """(n_in // factor, n_in) weights of antialiased bicubic downsampling by
    ``factor`` (the kernel stretched by ``factor``, normalised to sum 1, mirror
    boundaries; output ``i`` centred on input ``(i + 0.5) * factor - 0.5``) —
    MATLAB's ``imresize(..., 1/factor, 'bicubic')``."""
    n_out = n_in // factor
    centre = (np.arange(n_out) + 0.5) * factor - 0.5
    taps = np.arange(-2 * factor, 2 * factor + 1)
    m = np.zeros((n_out, n_in))
    for i, c in enumerate(centre):
        pos = np.floor(c) + taps
        w = _cubic((pos - c) / factor)
        idx = pos.astype(np.int64)
        idx = np.where(idx < 0, -idx - 1, idx)                     # mirror (symmetric)
        idx = np.where(idx >= n_in, 2 * n_in - idx - 1, idx)
        idx = np.clip(idx, 0, n_in - 1)
        np.add.at(m[i], idx, w / w.sum())
    return m


def make_low_res(high, factor, mode="center"):
    """Low-resolution version of a target ``(H, W)`` or ``(H, W, C)``.

    ``H`` and ``W`` must be multiples of ``factor`` (see
    :func:`crop_to_multiple`). ``mode``: ``'center'`` (nearest, the depth
    convention), ``'last'`` (nearest, last pixel of each block) or
    ``'bilinear'`` (antialiased, the flow convention) or ``'bicubic'``
    (antialiased, MATLAB's ``imresize``). NaN (unknown) samples stay NaN with
    the nearest modes; with ``'bilinear'``/``'bicubic'`` the filter is
    normalised over known pixels (NaN where too little of it is known).
    """
    factor = check_factor(factor)
    a = np.asarray(high)
    if a.ndim not in (2, 3):
        raise ValueError(f"high must be (H, W) or (H, W, C), got shape {a.shape}")
    H, W = a.shape[:2]
    if H % factor or W % factor:
        raise ValueError(f"the target is {H}x{W}, not a multiple of factor={factor}; crop it "
                         f"first, e.g. pacnd.data.crop_to_multiple(a, {factor})")
    if mode == "center" or mode == "nearest":
        o = jbu_sample_offset(factor)
        return np.ascontiguousarray(a[o::factor, o::factor]).astype(np.float32)
    if mode == "last":
        return np.ascontiguousarray(a[factor - 1::factor, factor - 1::factor]).astype(
            np.float32)
    if mode == "bicubic":
        return _bicubic_down(a, factor)
    if mode != "bilinear":
        raise ValueError(f"mode={mode!r}; choose one of {LOWRES_MODES}")
    from scipy import ndimage  # noqa: PLC0415

    x = a.astype(np.float64)
    squeeze = x.ndim == 2
    if squeeze:
        x = x[..., None]
    h, w = H // factor, W // factor
    yy = (np.arange(h) + 0.5) * factor - 0.5
    xx = (np.arange(w) + 0.5) * factor - 0.5
    coords = np.meshgrid(yy, xx, indexing="ij")
    sigma = max(0.0, (factor - 1) / 2.0)
    out = np.empty((h, w, x.shape[2]), np.float32)
    for c in range(x.shape[2]):
        v = x[..., c]
        known = np.isfinite(v)
        if known.all():
            s = ndimage.gaussian_filter(v, sigma, mode="mirror") if sigma > 0 else v
            out[..., c] = ndimage.map_coordinates(s, coords, order=1, mode="mirror")
        else:
            m = known.astype(np.float64)
            v0 = np.where(known, v, 0.0)
            if sigma > 0:
                v0 = ndimage.gaussian_filter(v0, sigma, mode="mirror")
                m = ndimage.gaussian_filter(m, sigma, mode="mirror")
            num = ndimage.map_coordinates(v0, coords, order=1, mode="mirror")
            den = ndimage.map_coordinates(m, coords, order=1, mode="mirror")
            with np.errstate(invalid="ignore", divide="ignore"):
                out[..., c] = np.where(den > 1e-6, num / np.where(den > 1e-6, den, 1), np.nan)
    return out[..., 0] if squeeze else out


def _bicubic_down(a, factor):
    """Antialiased bicubic downsampling; with unknown (NaN) samples the weights are
    renormalised over known ones (NaN where they carry less than half the weight)."""
    x = a.astype(np.float64)
    squeeze = x.ndim == 2
    if squeeze:
        x = x[..., None]
    H, W = x.shape[:2]
    my, mx = _bicubic_matrix(H, factor), _bicubic_matrix(W, factor)
    out = np.empty((H // factor, W // factor, x.shape[2]), np.float32)
    for c in range(x.shape[2]):
        v = x[..., c]
        known = np.isfinite(v)
        if known.all():
            out[..., c] = my @ v @ mx.T
        else:
            num = my @ np.where(known, v, 0.0) @ mx.T
            den = my @ known.astype(np.float64) @ mx.T
            with np.errstate(invalid="ignore", divide="ignore"):
                out[..., c] = np.where(den > 0.5, num / np.where(den > 0.5, den, 1), np.nan)
    return out[..., 0] if squeeze else out


def fill_unknown(a):
    """Replace NaN/inf samples by the nearest known sample (Euclidean);
    a pixel is unknown if any of its channels is. Raises if none is known."""
    from scipy import ndimage  # noqa: PLC0415

    a = np.asarray(a)
    bad = ~np.isfinite(a)
    if a.ndim == 3:
        bad = bad.any(axis=2)
    if not bad.any():
        return a
    if bad.all():
        raise ValueError("every sample is unknown (NaN); nothing to fill from")
    idx = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
    return a[tuple(idx)]


def crop_to_multiple(a, factor, *, multiple=None):
    """Centre crop of ``a`` (spatial axes first) to multiples of
    ``multiple`` (default ``factor``) in height and width."""
    m = check_factor(multiple if multiple is not None else factor)
    a = np.asarray(a)
    H, W = a.shape[:2]
    h, w = (H // m) * m, (W // m) * m
    if h == 0 or w == 0:
        raise ValueError(f"an image of {H}x{W} is smaller than the factor {m}")
    y0, x0 = (H - h) // 2, (W - w) // 2
    return a[y0:y0 + h, x0:x0 + w]
