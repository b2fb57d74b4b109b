"""Argument checks, layouts and weights shared by the image-level filters.

The private helpers of :mod:`pacnd.filters` and of its Dask twin :mod:`pacnd.dask.filters`.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .._validate import array_module, check_finite


_RANGE_KERNELS = ("gaussian", "laplacian")
_WINDOWS = ("square", "disk")


# =========================================================================== argument checks
def _on_dask(name, args):
    """Run filter ``name`` of :mod:`pacnd.dask.filters` (lazy, block by block) with ``args``."""
    from ..dask import filters as dask_filters  # noqa: PLC0415

    return getattr(dask_filters, name)(**args)


def _is_array(a):
    return isinstance(a, np.ndarray) or type(a).__module__.split(".")[0] == "cupy"


def _as_float_image(image, name, dtype=None, nonfinite_hint=None):
    """``image`` as a float32/float64 array (integer images scaled like img_as_float).

    With ``dtype`` given, the result is cast to it (used for guides).
    """
    if image is None:
        raise TypeError(f"{name} is required: pass a NumPy array")
    if not _is_array(image):
        if isinstance(image, (list, tuple)):
            image = np.asarray(image)
        else:
            raise TypeError(f"{name} must be a NumPy array, got {type(image).__name__}; "
                            f"convert it with np.asarray({name})")
    xp = array_module(image)
    kind = image.dtype.kind
    if kind == "f":
        if image.dtype == np.float16:
            out = image.astype(np.float32)
        elif image.dtype in (np.float32, np.float64):
            out = image
        else:  # longdouble
            out = image.astype(np.float64)
    elif kind == "u":
        out = image.astype(np.float64) / float(np.iinfo(image.dtype).max)
    elif kind == "i":
        out = xp.maximum(image.astype(np.float64) / float(np.iinfo(image.dtype).max), -1.0)
    elif kind == "b":
        out = image.astype(np.float64)
    else:
        raise TypeError(f"{name} has dtype {image.dtype}; give a real-valued image (float, "
                        f"integer or bool), e.g. {name}.real or {name}.astype(np.float32)")
    if image.size == 0:
        raise ValueError(f"{name} is empty (shape {tuple(image.shape)}); give an image with at "
                         f"least one pixel")
    if nonfinite_hint is not None and not bool(xp.isfinite(out).all()):
        raise ValueError(f"{name} contains NaN or infinite values; {nonfinite_hint}")
    check_finite(out, name)
    if dtype is not None and out.dtype != dtype:
        out = out.astype(dtype)
    return out


def _check_positive(value, name, *, allow_none=False, hint=""):
    if value is None and allow_none:
        return None
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a positive number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} is invalid: it must be a positive, finite number"
                         + (f" ({hint})" if hint else ""))
    return value


def _check_int(value, name, *, minimum, odd=False, hint=""):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name}={value} is invalid: it must be >= {minimum}"
                         + (f" ({hint})" if hint else ""))
    if odd and value % 2 == 0:
        raise ValueError(f"{name}={value} is even; the window needs a centre pixel, use an odd "
                         f"size such as {value + 1}")
    return value


def _check_choice(value, name, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {choices}")
    return value


def _normalize_axis(channel_axis, ndim, name="channel_axis"):
    if channel_axis is None:
        return None
    if not isinstance(channel_axis, numbers.Integral) or isinstance(channel_axis, bool):
        raise TypeError(f"{name} must be an int or None, got {channel_axis!r}")
    if not -ndim <= channel_axis < ndim:
        raise ValueError(f"{name}={channel_axis} is out of range for an array with {ndim} "
                         f"dimensions; use an axis in [{-ndim}, {ndim - 1}] or None")
    return int(channel_axis) % ndim


class _Layout:
    """How an image maps to a channels-first ``(1, C, *S)`` array and back."""

    def __init__(self, image, channel_axis, name):
        self.ndim = image.ndim
        self.axis = _normalize_axis(channel_axis, image.ndim)
        nsp = image.ndim - (self.axis is not None)
        if nsp not in (1, 2, 3):
            extra = ("" if self.axis is not None else
                     "; for a colour image pass channel_axis=-1")
            raise ValueError(
                f"{name} has shape {tuple(image.shape)}, i.e. {nsp} spatial dimension(s) "
                f"with channel_axis={channel_axis}; the filters support 1, 2 or 3 spatial "
                f"dimensions{extra}")
        if self.axis is None:
            self.spatial = tuple(image.shape)
            self.channels = 1
        else:
            self.spatial = tuple(s for i, s in enumerate(image.shape) if i != self.axis)
            self.channels = image.shape[self.axis]

    def to_cf(self, image):
        xp = array_module(image)
        if self.axis is None:
            a = image[None, None]
        else:
            a = xp.moveaxis(image, self.axis, 0)[None]
        return xp.ascontiguousarray(a)

    def from_cf(self, out):
        xp = array_module(out)
        a = out[0]
        if self.axis is None:
            return a[0]
        return xp.ascontiguousarray(xp.moveaxis(a, 0, self.axis))


def _guide_to_cf(guide, layout, spatial, dtype, name="guide"):
    """A guide with the given spatial shape and an optional channel axis, channels-first.

    Its channel axis is ``layout.axis`` (the image's ``channel_axis``) when the
    image has one and the guide has one more dimension than its spatial shape;
    otherwise the last axis.
    """
    g = _as_float_image(guide, name, dtype)
    xp = array_module(g)
    nsp = len(spatial)
    if g.ndim == nsp:
        if tuple(g.shape) != tuple(spatial):
            raise ValueError(f"{name} has shape {tuple(g.shape)} but its spatial size must be "
                             f"{tuple(spatial)}" + _GUIDE_HINT)
        return g[None, None]
    if g.ndim == nsp + 1:
        axis = layout.axis if layout.axis is not None else nsp
        g_sp = tuple(s for i, s in enumerate(g.shape) if i != axis)
        if g_sp != tuple(spatial):
            raise ValueError(f"{name} has shape {tuple(g.shape)}, spatial size {g_sp} (channel "
                             f"axis {axis}), but it must be {tuple(spatial)}" + _GUIDE_HINT)
        return xp.ascontiguousarray(xp.moveaxis(g, axis, 0)[None])
    raise ValueError(f"{name} has {g.ndim} dimensions (shape {tuple(g.shape)}); it must have the "
                     f"{nsp} spatial dimensions {tuple(spatial)} and optionally one channel axis")


_GUIDE_HINT = (" (the guide's channel axis is the image's channel_axis when the image has one, "
               "else the last axis; resize or crop the guide to match)")


# =========================================================================== weights
def _gaussian_window(ksize, sigma, dtype, window="square", xp=np):
    """Separable Gaussian ``exp(-0.5 r^2 / sigma^2)`` on a ``ksize`` grid, shape (1, 1, *ksize).

    ``sigma`` is a scalar or one value per dim; ``window='disk'`` zeroes taps
    with ``sum_d (t_d / (k_d // 2))^2 > 1`` (OpenCV's round window).
    """
    nd = len(ksize)
    sig = (sigma,) * nd if np.isscalar(sigma) else tuple(sigma)
    w = np.ones((), dtype=np.float64)
    r2 = np.zeros((), dtype=np.float64)
    for d, (k, s) in enumerate(zip(ksize, sig)):
        t = np.arange(k, dtype=np.float64) - k // 2
        shape = [1] * nd
        shape[d] = k
        w = w * np.exp(-0.5 * (t / s) ** 2).reshape(shape)
        if k > 1:
            r2 = r2 + ((t / (k // 2)) ** 2).reshape(shape)
        else:
            r2 = r2 + np.zeros(shape)
    if window == "disk":
        w = np.where(r2 <= 1.0 + 1e-12, w, 0.0)
    return xp.asarray(w.reshape((1, 1) + tuple(ksize)), dtype=dtype)


def _default_sigma_color(g):
    """skimage's default: the standard deviation of the (float) guide; 1 for a flat guide."""
    s = float(g.std())
    return s if s > 0 else 1.0


def _with_ones(x):
    """Append a channel of ones: the normaliser of a normalised (masked) convolution."""
    xp = array_module(x)
    ones = xp.ones((x.shape[0], 1) + x.shape[2:], dtype=x.dtype)
    return xp.concatenate([x, ones], axis=1)
