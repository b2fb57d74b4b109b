"""Low-resolution inputs and the normalisation convention of joint upsampling.

- :func:`make_low_res`: ``'center'`` nearest subsampling (depth; sample ``i``
  is high-res pixel ``i*factor + (factor-1)//2``), ``'last'``, and
  ``'bilinear'`` antialiased bilinear downsampling (flow; Gaussian
  prefilter ``sigma = (factor-1)/2`` then linear interpolation at
  ``(i + 0.5)*factor - 0.5``, mirror boundaries — scikit-image's
  ``resize(order=1, anti_aliasing=True, mode='reflect')``, which the
  reference implementation uses).
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

LOWRES_MODES = ("center", "last", "bilinear")


def make_low_res(high, factor, mode="center"):
    """Low-resolution version of a target ``(H, W)`` or ``(H, W, C)``.

    ``H`` and ``W`` must be multiples of ``factor`` (see
    :func:`crop_to_multiple`). ``mode``: ``'center'`` (nearest, the depth
    convention), ``'last'`` (nearest, last pixel of each block) or
    ``'bilinear'`` (antialiased, the flow convention). NaN (unknown) samples
    stay NaN with the nearest modes; with ``'bilinear'`` the filter is
    normalised over known pixels (NaN only where none contributes).
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
