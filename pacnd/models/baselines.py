"""Training-free joint upsamplers: joint bilateral upsampling (JBU, the paper's
baseline) and the bilinear / bicubic interpolation baselines, each a
:class:`JointUpsampler` with the sampling convention of a low-res protocol.
They are also the residual bases of the learned networks
(:mod:`pacnd.models.networks`).
"""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from .._validate import array_module
from ..autograd.tensor import as_array
from ..filters import jbu_sample_offset
from ._interface import JointUpsampler, check_factor
from .folding import fold_channels, repeat_for_channels, unfold_channels

__all__ = ["JointBilateralUpsample", "Bilinear", "Bicubic"]


# ------------------------------------------------------------------------------- JBU
class JointBilateralUpsample(JointUpsampler):
    """Joint bilateral upsampling as the paper's baseline: one normalised
    PAC^T (stride ``factor``, identity weight over channels, no bias) whose
    Gaussian kernel sees the guide ``(scale_color * RGB, scale_space * y,
    scale_space * x)`` — so it holds both the range and the spatial term.

    Equals :func:`pacnd.filters.joint_bilateral_upsample` with
    ``sigma_spatial = 1 / (scale_space * factor)`` (low-res pixels),
    ``sigma_color = 1 / scale_color`` and ``win_size = kernel_size`` (same
    "center" sampling convention: low-res sample ``i`` sits on high-res
    pixel ``i*factor + (factor-1)//2``).

    Parameters
    ----------
    factor : int
    kernel_size : int, optional
        Odd window in high-res pixels (default ``2*factor + 1``... at least
        ``factor``), the reference's ``JBU_{ks}_{color}_{space}``.
    scale_space, scale_color : float, optional
        Inverse spatial sigma (high-res pixels) and inverse range sigma
        (RGB in [0, 1]). Defaults: ``sigma_spatial = 0.75`` low-res pixels,
        ``sigma_color = 0.1``.
    """

    kind = "jbu"
    #: high-res coordinates (y, x) of the guide's first pixel in the spatial features; a
    #: block of a larger image (:mod:`pacnd.dask.upsample`) sets its own, so that its
    #: features equal the whole image's (float32 coordinates round as they do there)
    coord_origin = (0, 0)

    def __init__(self, factor, channels=1, *, kernel_size=None, scale_space=None,
                 scale_color=None, sigma_spatial=0.75, sigma_color=0.1):
        factor = check_factor(factor)
        super().__init__(factor, channels)
        if scale_space is None:
            scale_space = 1.0 / (float(sigma_spatial) * factor)
        if scale_color is None:
            scale_color = 1.0 / float(sigma_color)
        if kernel_size is None:
            sig = 1.0 / (scale_space * factor)
            kernel_size = 2 * max(math.ceil(3 * sig * factor), math.ceil(factor / 2)) + 1
        kernel_size = int(kernel_size)
        if kernel_size % 2 != 1 or kernel_size < factor:
            raise ValueError(f"kernel_size={kernel_size} must be odd and >= factor={factor}")
        self.kernel_size = kernel_size
        self.scale_space = float(scale_space)
        self.scale_color = float(scale_color)
        o = jbu_sample_offset(factor)
        self.padding = kernel_size // 2 - o
        self.output_padding = factor - 1 - 2 * o
        self.register_buffer("weight", np.ones((1, 1, kernel_size, kernel_size), np.float32))

    def extra_repr(self):
        return (f"factor={self.factor}, kernel_size={self.kernel_size}, "
                f"scale_space={self.scale_space:g}, scale_color={self.scale_color:g}")

    def forward(self, target_low, guide):
        g = as_array(guide)
        xp = array_module(g)
        B, _, H, W = g.shape
        oy, ox = self.coord_origin
        yy = xp.broadcast_to(xp.arange(oy, oy + H, dtype=g.dtype)[:, None], (B, 1, H, W))
        xx = xp.broadcast_to(xp.arange(ox, ox + W, dtype=g.dtype)[None, :], (B, 1, H, W))
        feats = xp.concatenate([g * g.dtype.type(self.scale_color),
                                yy * g.dtype.type(self.scale_space),
                                xx * g.dtype.type(self.scale_space)], axis=1)
        x, C = fold_channels(target_low)
        feats = repeat_for_channels(feats, C)
        feats = as_array(feats)
        w = self.weight.astype(as_array(x).dtype, copy=False)
        out = F.pac_conv_transpose(x, feats, w, stride=self.factor, padding=self.padding,
                                   output_padding=self.output_padding, normalize=True,
                                   shared=True)
        return unfold_channels(out, C)


# ---------------------------------------------------------------------- interpolation
def _sample_positions(n_low, factor, sampling):
    """Low-res sample i's position on the high-res grid, inverted: for every
    high-res index, its coordinate in low-res sample units."""
    d = np.arange(n_low * factor, dtype=np.float64)
    if sampling == "center":
        return (d - jbu_sample_offset(factor)) / factor
    return (d + 0.5) / factor - 0.5  # "area": PyTorch align_corners=False


_SAMPLINGS = ("center", "area")


class _Interpolation(JointUpsampler):
    """A guide-free interpolation baseline on a low-res sampling grid."""

    def __init__(self, factor, channels=1, *, sampling):
        super().__init__(check_factor(factor), channels)
        if sampling not in _SAMPLINGS:
            raise ValueError(f"sampling={sampling!r}; choose one of {_SAMPLINGS}")
        self.sampling = sampling


class Bilinear(_Interpolation):
    """Bilinear interpolation (ignores the guide).

    ``sampling='area'`` (default) is PyTorch's ``interpolate(...,
    align_corners=False)`` — the reference's baseline, matching low-res made
    by area-like downsampling (flow); ``'center'`` puts low-res sample ``i``
    on high-res pixel ``i*factor + (factor-1)//2`` (nearest "center"
    subsampling, depth).
    """

    kind = "bilinear"

    def __init__(self, factor, channels=1, *, sampling="area"):
        super().__init__(factor, channels, sampling=sampling)

    def forward(self, target_low, guide):
        if self.sampling == "area":
            h, w = target_low.shape[-2:]
            return F.interpolate(target_low, size=(h * self.factor, w * self.factor),
                                 mode="bilinear", align_corners=False)
        return _spline_resize(as_array(target_low), self.factor, 1, self.sampling)


class Bicubic(_Interpolation):
    """Cubic interpolation (ignores the guide): interpolating cubic B-spline
    (:func:`scipy.ndimage.map_coordinates`, order 3, edges repeated) at the
    same sample positions as :class:`Bilinear` (``sampling``: ``'center'``
    for depth, ``'area'`` for flow)."""

    kind = "bicubic"

    def __init__(self, factor, channels=1, *, sampling="center"):
        super().__init__(factor, channels, sampling=sampling)

    def forward(self, target_low, guide):
        return _spline_resize(as_array(target_low), self.factor, 3, self.sampling)


def _spline_resize(x, factor, order, sampling):
    from scipy import ndimage  # noqa: PLC0415

    B, C, h, w = x.shape
    yy = _sample_positions(h, factor, sampling)
    xx = _sample_positions(w, factor, sampling)
    coords = np.meshgrid(yy, xx, indexing="ij")
    out = np.empty((B, C, h * factor, w * factor), dtype=x.dtype)
    for b in range(B):
        for c in range(C):
            out[b, c] = ndimage.map_coordinates(x[b, c].astype(np.float64), coords, order=order,
                                                mode="nearest")
    return out
