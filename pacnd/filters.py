"""Image-level adaptive filters built on the PAC operations.

Every filter here is one call (or a few) of :func:`pacnd.pac_conv`,
:func:`pacnd.pac_conv_transpose` or :func:`pacnd.pac_pool` on channels-first
arrays; this module only turns images in the scikit-image layout (spatial axes
plus an optional ``channel_axis``) into those arrays and back, picks the
weights and guides, and checks the arguments.

* :func:`bilateral` and :func:`joint_bilateral` — the (joint / cross)
  bilateral filter, normalised over in-image pixels.
* :func:`joint_bilateral_upsample` — joint bilateral upsampling (JBU, Kopf et
  al. 2007) as a normalised transposed PAC.
* :func:`detail_preserving_pool` — detail-preserving pooling (DPP, Saeedan et
  al. 2018) as a normalised PAC pooling with the ``'inverse'`` kernel.

Conventions shared by all of them:

* **dtype** — float32 and float64 images keep their dtype; float16 becomes
  float32; integer and boolean images are converted to float64 like
  :func:`skimage.util.img_as_float` (unsigned integers to ``[0, 1]`` by dividing
  by the dtype's maximum, signed integers to ``[-1, 1]``). A guide is converted
  the same way and then cast to the image's float dtype, so *the output dtype is
  the image's float dtype*.
* **channel_axis** — ``None``: the image has no channel axis and every axis is
  spatial (1, 2 or 3 of them). An int: that axis holds channels; the result
  keeps the input's layout.
* **engine** — passed through to the PAC ops (``None``: the configured default).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ._kernelspec import EPS
from ._validate import array_module, check_finite
from .dask import any_dask
from .ops import conv_transpose, pac_conv, pac_conv_transpose, pac_pool

__all__ = ["bilateral", "joint_bilateral", "joint_bilateral_upsample", "detail_preserving_pool"]

_RANGE_KERNELS = ("gaussian", "laplacian")
_WINDOWS = ("square", "disk")


# =========================================================================== argument checks
def _on_dask(name, args):
    """Run filter ``name`` of :mod:`pacnd.dask.filters` (lazy, block by block) with ``args``."""
    from .dask import filters as dask_filters  # noqa: PLC0415

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


# =========================================================================== bilateral
def _bilateral_cf(x, g, *, sigma_spatial, sigma_color, win_size, kernel, window, engine):
    """Joint bilateral filter of channels-first ``x`` (1, C, *S) guided by ``g`` (1, Cg, *S).

    One un-normalised PAC of ``[x, 1]`` with a Gaussian spatial filter shared
    over channels and the Gaussian of ``g / sigma_color`` as adapting kernel;
    the ones channel accumulates the normaliser over in-image taps only (zero
    padding), so ``out = sum W K x / sum W K`` over in-image neighbours.
    """
    nd = x.ndim - 2
    C = x.shape[1]
    xp = array_module(x)
    ksize = (win_size,) * nd
    w = _gaussian_window(ksize, sigma_spatial, x.dtype, window, xp)
    gs = g * x.dtype.type(1.0 / sigma_color)
    res = pac_conv(_with_ones(x), gs, w, shared=True, padding=win_size // 2, kernel=kernel,
                   engine=engine)
    # the centre tap has W = 1 and K = K(0) > 0, so the normaliser is never 0
    return res[:, :C] / res[:, C:]


def bilateral(image, *, sigma_spatial=1.0, sigma_color=None, win_size=None, channel_axis=None,
              kernel="gaussian", window="square", engine=None):
    """Edge-preserving bilateral filter, as a normalised pixel-adaptive convolution.

    ``out[p] = sum_q w(p, q) I[q] / sum_q w(p, q)`` over the in-image pixels
    ``q`` of the window centred on ``p``, with

    ``w(p, q) = exp(-|p - q|^2 / (2 sigma_spatial^2)) * exp(-||I[q] - I[p]||^2 / (2 sigma_color^2))``

    where ``||.||`` is the Euclidean distance over **all channels jointly**
    (like scikit-image and OpenCV, one weight per pixel pair shared by every
    channel).

    It is computed as one PAC (:func:`pacnd.pac_conv`) whose weight is the
    Gaussian spatial filter (shared by all channels), whose guide is the image
    itself scaled by ``1 / sigma_color`` (so the Gaussian adapting kernel is the
    range term), applied to the image plus a channel of ones that accumulates
    the normaliser.

    Parameters
    ----------
    image : ndarray
        Image with 1, 2 or 3 spatial dimensions and optionally one channel axis
        (see ``channel_axis``). Integer images are converted to float in
        ``[0, 1]`` (float64), float32/float64 keep their dtype.
    sigma_spatial : float, optional
        Standard deviation of the spatial Gaussian, in pixels.
    sigma_color : float, optional
        Standard deviation of the range Gaussian, in image units (after the
        integer-to-float conversion, i.e. ``[0, 1]`` for uint8 images). ``None``
        (default) uses the standard deviation of the image, like scikit-image.
    win_size : int, optional
        Window size (odd). Default ``max(5, 2 * ceil(3 * sigma_spatial) + 1)``
        (scikit-image's default).
    channel_axis : int or None, optional
        Axis of the channels; ``None`` means the image has no channel axis.
    kernel : {'gaussian', 'laplacian'}, optional
        Range kernel: ``exp(-d^2/2)`` (default) or ``exp(-sqrt(d^2 + 1e-4))``
        with ``d = ||I[q] - I[p]|| / sigma_color``.
    window : {'square', 'disk'}, optional
        ``'disk'`` keeps only taps within ``win_size // 2`` of the centre (the
        round window of OpenCV's ``bilateralFilter``).
    engine : str, optional
        PAC engine (``None``: the configured default).

    Returns
    -------
    out : ndarray
        Filtered image, same shape and layout as ``image``, float dtype as above.

    Notes
    -----
    Boundary handling: the sums run over **in-image pixels only** (the
    normaliser counts only them), i.e. the window is cropped at the border.
    scikit-image instead pads with ``cval`` (``mode='constant'``) and OpenCV
    reflects the image; results agree with theirs away from the border.

    References
    ----------
    .. [1] C. Tomasi and R. Manduchi, "Bilateral filtering for gray and color
       images", ICCV 1998.
    .. [2] H. Su et al., "Pixel-Adaptive Convolutional Neural Networks",
       CVPR 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from pacnd.filters import bilateral
    >>> img = np.zeros((32, 32), np.float32); img[:, 16:] = 1
    >>> noisy = img + 0.05 * np.random.default_rng(0).standard_normal(img.shape).astype(np.float32)
    >>> out = bilateral(noisy, sigma_spatial=2, sigma_color=0.2)
    >>> out.dtype, out.shape
    (dtype('float32'), (32, 32))
    >>> bool(abs(out[:, 14] - 0).max() < 0.1 and abs(out[:, 17] - 1).max() < 0.1)
    True
    """
    if any_dask(image):  # Dask arrays: lazy, block by block (pacnd.dask.filters)
        return _on_dask("bilateral", locals())
    img = _as_float_image(image, "image")
    layout = _Layout(img, channel_axis, "image")
    return _joint_bilateral_impl(img, layout, layout.to_cf(img), sigma_spatial=sigma_spatial,
                                 sigma_color=sigma_color, win_size=win_size, kernel=kernel,
                                 window=window, engine=engine)


def _joint_bilateral_impl(img, layout, g, *, sigma_spatial, sigma_color, win_size, kernel,
                          window, engine):
    sigma_spatial = _check_positive(sigma_spatial, "sigma_spatial")
    sigma_color = _check_positive(sigma_color, "sigma_color", allow_none=True,
                                  hint="or None for the guide's standard deviation")
    win_size = _bilateral_win_size(sigma_spatial, win_size)
    _check_choice(kernel, "kernel", _RANGE_KERNELS)
    _check_choice(window, "window", _WINDOWS)
    if sigma_color is None:
        sigma_color = _default_sigma_color(g)
    x = layout.to_cf(img)
    out = _bilateral_cf(x, g, sigma_spatial=sigma_spatial, sigma_color=sigma_color,
                        win_size=win_size, kernel=kernel, window=window, engine=engine)
    return layout.from_cf(out)


def _bilateral_win_size(sigma_spatial, win_size):
    """The (checked) window size of the bilateral filters: ``win_size`` or the default."""
    if win_size is None:
        win_size = max(5, 2 * math.ceil(3 * sigma_spatial) + 1)
    return _check_int(win_size, "win_size", minimum=1, odd=True)


def joint_bilateral(image, guide, *, sigma_spatial=1.0, sigma_color=None, win_size=None,
                    channel_axis=None, kernel="gaussian", window="square", engine=None):
    """Joint (cross) bilateral filter: range weights from a separate guide image.

    ``out[p] = sum_q w(p, q) I[q] / sum_q w(p, q)`` over the in-image pixels
    ``q`` of the window centred on ``p``, with

    ``w(p, q) = exp(-|p - q|^2 / (2 sigma_spatial^2)) * exp(-||G[q] - G[p]||^2 / (2 sigma_color^2))``

    the Euclidean distance taken over all guide channels jointly. With a
    constant guide this is a normalised Gaussian blur; with ``guide = image``
    it is :func:`bilateral`. Computed as one PAC whose guide is
    ``guide / sigma_color`` (see :func:`bilateral`).

    Parameters
    ----------
    image : ndarray
        Image to filter, 1-3 spatial dims plus an optional channel axis.
    guide : ndarray
        Guide with the image's spatial size and any number of channels: either
        exactly the spatial shape (one channel) or one more axis holding
        channels — at ``channel_axis`` when the image has a channel axis, else
        the last axis. Integer guides are scaled to ``[0, 1]``; the guide is
        cast to the image's float dtype.
    sigma_spatial : float, optional
        Spatial standard deviation in pixels.
    sigma_color : float, optional
        Range standard deviation in guide units; ``None`` uses the guide's
        standard deviation.
    win_size : int, optional
        Odd window size, default ``max(5, 2 * ceil(3 * sigma_spatial) + 1)``.
    channel_axis : int or None, optional
        Channel axis of ``image`` (and of ``guide``, see above).
    kernel : {'gaussian', 'laplacian'}, optional
        Range kernel family (see :func:`bilateral`).
    window : {'square', 'disk'}, optional
        Window shape (see :func:`bilateral`).
    engine : str, optional
        PAC engine.

    Returns
    -------
    out : ndarray
        Same shape and layout as ``image``.

    Notes
    -----
    Boundary: normalised over in-image pixels only (the window is cropped at
    the border). OpenCV's ``ximgproc.jointBilateralFilter`` differs in three
    conventions: it reflects the border, it measures colour distance as the
    **L1** sum ``sum_c |G_c[q] - G_c[p]|`` (squared inside the Gaussian) rather
    than the Euclidean norm (identical for one guide channel), and it uses a
    round window (``window='disk'`` here).

    References
    ----------
    .. [1] G. Petschnigg et al., "Digital photography with flash and no-flash
       image pairs", SIGGRAPH 2004.
    .. [2] E. Eisemann and F. Durand, "Flash photography enhancement via
       intrinsic relighting", SIGGRAPH 2004.

    Examples
    --------
    >>> import numpy as np
    >>> from pacnd.filters import joint_bilateral
    >>> guide = np.zeros((16, 16)); guide[:, 8:] = 1
    >>> noise = np.random.default_rng(0).standard_normal((16, 16))
    >>> out = joint_bilateral(noise, guide, sigma_spatial=2, sigma_color=0.1)
    >>> out.shape
    (16, 16)
    """
    if any_dask(image, guide):  # Dask arrays: lazy, block by block (pacnd.dask.filters)
        return _on_dask("joint_bilateral", locals())
    img = _as_float_image(image, "image")
    layout = _Layout(img, channel_axis, "image")
    g = _guide_to_cf(guide, layout, layout.spatial, img.dtype)
    return _joint_bilateral_impl(img, layout, g, sigma_spatial=sigma_spatial,
                                 sigma_color=sigma_color, win_size=win_size, kernel=kernel,
                                 window=window, engine=engine)


# =========================================================================== JBU
def jbu_sample_offset(factor):
    """High-res index of low-res sample 0 along a dim: ``(factor - 1) // 2``.

    Low-res sample ``i`` sits on high-res pixel ``i * factor + (factor - 1) // 2``
    (the centre of its ``factor``-wide block, or the pixel just before the
    centre for even factors) — the reference implementation's "center"
    subsampling, ``high[(factor - 1) // 2::factor]``.
    """
    return (int(factor) - 1) // 2


def joint_bilateral_upsample(low_res, guide, *, factor, sigma_spatial=0.5, sigma_color=None,
                             win_size=None, channel_axis=None, mask=None, kernel="gaussian",
                             engine=None):
    """Joint bilateral upsampling (JBU, Kopf et al. 2007) as a normalised transposed PAC.

    Each high-res pixel ``p`` is a weighted average of the low-res samples
    ``q`` in its window:

    ``out[p] = sum_q f(p, q) g(p, q) L[q] / sum_q f(p, q) g(p, q)``

    ``f = exp(-|p/factor - q_pos/factor|^2 / (2 sigma_spatial^2))`` — spatial,
    in low-res pixel units, with ``q_pos`` the high-res pixel the sample sits
    on; ``g = exp(-||G[q_pos] - G[p]||^2 / (2 sigma_color^2))`` — range, on the
    high-res guide, Euclidean over all guide channels.

    It is one :func:`pacnd.pac_conv_transpose` with stride ``factor``, the
    Gaussian spatial term as a weight shared by (identity over) the channels,
    and the guide at the **output** resolution scaled by ``1 / sigma_color`` —
    the paper's JBU baseline (Su et al. 2019, Sec. 4), normalised over the
    taps that land on real (and unmasked) low-res samples.

    Sampling convention: low-res sample ``i`` sits on high-res pixel
    ``i * factor + (factor - 1) // 2`` in every dimension (see
    :func:`jbu_sample_offset`); so ``low_res = high[o::factor, o::factor]``
    with ``o = (factor - 1) // 2`` ("center" subsampling) is reproduced exactly
    at the sample positions when the guide is flat.

    Parameters
    ----------
    low_res : ndarray
        Low-res image, spatial shape ``(h, w)`` (1-3 spatial dims) plus an
        optional channel axis.
    guide : ndarray
        High-res guide, spatial shape ``(factor * h, factor * w)``, optionally
        with channels (at ``channel_axis`` if ``low_res`` has a channel axis,
        else the last axis). Integer guides are scaled to ``[0, 1]``.
    factor : int or tuple of int
        Upsampling factor (per dimension), positive.
    sigma_spatial : float, optional
        Spatial standard deviation in **low-res pixels** (Kopf et al. use 0.5).
    sigma_color : float, optional
        Range standard deviation in guide units; ``None`` uses the guide's
        standard deviation.
    win_size : int, optional
        Window size in **high-res pixels** (odd, at least ``factor``); default
        ``2 * max(ceil(3 * sigma_spatial * factor), ceil(factor / 2)) + 1``.
    channel_axis : int or None, optional
        Channel axis of ``low_res`` (and of the guide, see above).
    mask : ndarray of bool, optional
        Valid low-res samples (the low-res spatial shape); invalid samples are
        ignored (normalised convolution). High-res pixels whose window holds no
        valid sample are NaN.
    kernel : {'gaussian', 'laplacian'}, optional
        Range kernel family.
    engine : str, optional
        PAC engine.

    Returns
    -------
    out : ndarray
        Upsampled image, spatial shape ``factor * (h, w)``, same layout and
        float dtype as ``low_res``.

    Notes
    -----
    If every range weight in a window underflows to 0 (a guide far from all
    its neighbours with a tiny ``sigma_color``), that pixel falls back to the
    spatial weights alone.

    References
    ----------
    .. [1] J. Kopf, M. F. Cohen, D. Lischinski and M. Uyttendaele, "Joint
       bilateral upsampling", ACM TOG (SIGGRAPH) 2007.
    .. [2] H. Su et al., "Pixel-Adaptive Convolutional Neural Networks",
       CVPR 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from pacnd.filters import joint_bilateral_upsample
    >>> guide = np.zeros((32, 32)); guide[:, 13:] = 1          # edge between pixels 12 and 13
    >>> low = guide[1::4, 1::4].copy()                         # samples at 4*i + 1
    >>> up = joint_bilateral_upsample(low, guide, factor=4, sigma_spatial=1, sigma_color=0.1)
    >>> bool(np.abs(up - guide).max() < 1e-6)
    True
    """
    if any_dask(low_res, guide, mask):  # Dask arrays: lazy, block by block
        return _on_dask("joint_bilateral_upsample", locals())
    x_img = _as_float_image(low_res, "low_res", nonfinite_hint=(
        "fill unknown samples (e.g. np.nan_to_num(low_res)) and pass "
        "mask=np.isfinite(low_res) so that they are ignored"))
    layout = _Layout(x_img, channel_axis, "low_res")
    nd = len(layout.spatial)
    factor = _check_factor(factor, nd)
    sigma_spatial = _check_positive(sigma_spatial, "sigma_spatial")
    sigma_color = _check_positive(sigma_color, "sigma_color", allow_none=True,
                                  hint="or None for the guide's standard deviation")
    _check_choice(kernel, "kernel", _RANGE_KERNELS)
    out_spatial = tuple(f * s for f, s in zip(factor, layout.spatial))
    g = _guide_to_cf(guide, layout, out_spatial, x_img.dtype)
    ksize = _jbu_window(factor, sigma_spatial, win_size)
    if sigma_color is None:
        sigma_color = _default_sigma_color(g)

    xp = array_module(x_img)
    x = layout.to_cf(x_img)
    C = x.shape[1]
    xin = _with_ones(x)
    if mask is not None:
        m = _check_mask(mask, layout.spatial, xp)
        xin = xin * m.astype(x.dtype)[None, None]   # zeroes invalid samples and their ones
    offs = tuple(jbu_sample_offset(f) for f in factor)
    padding = tuple(k // 2 - o for k, o in zip(ksize, offs))
    output_padding = tuple(f - 1 - 2 * o for f, o in zip(factor, offs))
    w = _gaussian_window(ksize, tuple(sigma_spatial * f for f in factor), x.dtype, "square", xp)
    gs = g * x.dtype.type(1.0 / sigma_color)
    geo = dict(stride=factor, padding=padding, output_padding=output_padding)
    res = pac_conv_transpose(xin, gs, w, shared=True, kernel=kernel, engine=engine, **geo)
    num, den = res[:, :C], res[:, C:]
    empty = den <= 0
    if bool(empty.any()):
        # range weights underflowed (or no valid sample): spatial weights only there
        wt = xp.broadcast_to(w, (C + 1, 1) + ksize)
        plain = conv_transpose(xin, xp.ascontiguousarray(wt), groups=C + 1, engine=engine,
                               **geo)
        num = xp.where(empty, plain[:, :C], num)
        den = xp.where(empty, plain[:, C:], den)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = xp.where(den > 0, num / xp.where(den > 0, den, 1), xp.nan)
    else:
        out = num / den
    return layout.from_cf(out.astype(x.dtype, copy=False))


def _jbu_window(factor, sigma_spatial, win_size):
    """The (checked) window of joint bilateral upsampling per spatial dim, high-res pixels."""
    if win_size is None:
        return tuple(2 * max(math.ceil(3 * sigma_spatial * f), math.ceil(f / 2)) + 1
                     for f in factor)
    _check_int(win_size, "win_size", minimum=1, odd=True)
    if win_size < max(factor):
        raise ValueError(f"win_size={win_size} is smaller than factor={max(factor)}: some "
                         f"high-res pixels would see no low-res sample; use win_size >= "
                         f"{max(factor) + (1 - max(factor) % 2)}")
    return (int(win_size),) * len(factor)


def _check_factor(factor, nd):
    if isinstance(factor, numbers.Integral) and not isinstance(factor, bool):
        fac = (int(factor),) * nd
    elif isinstance(factor, (tuple, list)) and len(factor) == nd and all(
            isinstance(f, numbers.Integral) and not isinstance(f, bool) for f in factor):
        fac = tuple(int(f) for f in factor)
    else:
        raise TypeError(f"factor must be a positive int (or {nd} ints, one per spatial dim), "
                        f"got {factor!r}")
    if any(f < 1 for f in fac):
        raise ValueError(f"factor={factor!r} is invalid: it must be a positive int")
    return fac


def _check_mask(mask, spatial, xp):
    if not _is_array(mask):
        raise TypeError(f"mask must be a boolean array of shape {tuple(spatial)}, got "
                        f"{type(mask).__name__}")
    if mask.dtype != np.bool_:
        raise TypeError(f"mask has dtype {mask.dtype}; give a boolean array (True = valid "
                        f"sample), e.g. mask=np.isfinite(low_res)")
    if tuple(mask.shape) != tuple(spatial):
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected the low-res spatial "
                         f"shape {tuple(spatial)}")
    return xp.asarray(mask)


# =========================================================================== DPP
_REFERENCES = ("box", "dpid")


def detail_preserving_pool(image, *, size=2, stride=None, padding=0, alpha=0.1, lam=1.0,
                           asym=False, reference="box", eps=1e-3, channel_axis=None,
                           engine=None):
    """Detail-preserving pooling (DPP, Saeedan et al. 2018) via PAC pooling.

    For each output pixel ``p`` with pooling window ``Omega_p``:

    ``out[p] = sum_q w[p, q] I[q] / sum_q w[p, q]``,
    ``w[p, q] = alpha + rho(I[q] - I~[p])``,

    with the reward ``rho(x) = (x^2 + eps^2)^(lam / 2)`` (symmetric DPP) or
    ``rho(x) = (max(0, x)^2 + eps^2)^(lam / 2)`` (``asym=True``, asymmetric
    DPP), computed per channel. ``I~`` is a linearly downscaled version of the
    image at the **output** resolution — the neighbours are compared with it,
    not with the pixel at the window centre (see ``reference``). ``lam > 0``
    rewards pixels that differ from their surroundings (detail preservation);
    ``lam < 0`` gives an inverse-distance (smoothing) weighting.

    Mapping onto :func:`pacnd.pac_pool`: the ``'inverse'`` adapting kernel
    ``K = alpha' + (d^2 + 1e-4)^(lam/2)`` with ``normalize=True`` and
    ``channel_wise=True``, where the neighbour feature is ``I[q]`` and the
    centre feature is ``I~[p]``. PAC takes both from one guide (neighbours and
    window centre), so each window is laid out in its own odd-sized block: the
    window's pixels fill the non-centre slots of the input and the guide, the
    centre slot of the guide holds ``I~[p]``, and a ``mask`` excludes the
    centre slot, unused slots and zero padding from the sums. The guide is
    scaled by ``a = 1e-2 / eps`` and ``alpha' = alpha * a**lam``, which makes
    PAC's fixed ``1e-4`` equal to ``eps^2`` after normalisation
    (``K = a**lam * (alpha + rho)``).

    Parameters
    ----------
    image : ndarray
        Image (or feature map) with 1-3 spatial dims and an optional channel
        axis. Integer images are converted to float in ``[0, 1]``.
    size : int, optional
        Pooling window size (any positive int; DPP usually uses 2 or 3).
    stride : int, optional
        Stride, default ``size``.
    padding : int, optional
        Zero padding, at most ``size // 2``; padded pixels are excluded from the
        sums (like average pooling with ``count_include_pad=False``).
    alpha : float or array of shape (C,), optional
        Non-negative reward offset (per channel if an array); larger values move
        DPP towards average pooling.
    lam : float or array of shape (C,), optional
        Reward exponent (per channel if an array).
    asym : bool, optional
        Asymmetric reward: only pixels brighter than ``I~[p]`` are rewarded.
    reference : {'box', 'dpid'} or ndarray, optional
        How the linearly downscaled ``I~`` is computed. ``'box'`` (default):
        the mean of the window's in-image pixels (average pooling). ``'dpid'``:
        that box-downscaled image smoothed with ``[1, 2, 1]/4`` along every
        spatial dim (edge-replicated), the fixed filter of DPID (Weber et al.
        2016), which DPP builds on. An array: ``I~`` itself, with the output's
        shape and layout — e.g. the output of a learned linear downscaling, as
        in the paper's full DPP.
    eps : float, optional
        The reward's ``epsilon``, a small constant that keeps ``rho`` smooth
        at 0 (default 1e-3).
    channel_axis : int or None, optional
        Channel axis of ``image``.
    engine : str, optional
        PAC engine.

    Returns
    -------
    out : ndarray
        Pooled image, spatial size ``floor((S + 2*padding - size) / stride) + 1``,
        same layout and float dtype as ``image``.

    References
    ----------
    .. [1] F. Saeedan, N. Weber, M. Goesele and S. Roth, "Detail-preserving
       pooling in deep networks", CVPR 2018.
    .. [2] N. Weber, M. Waechter, S. C. Amend, S. Guthe and M. Goesele, "Rapid,
       detail-preserving image downscaling", SIGGRAPH Asia 2016.

    Examples
    --------
    >>> import numpy as np
    >>> from pacnd.filters import detail_preserving_pool
    >>> img = np.full((4, 4), 0.5); img[0, 0] = 1.0           # one bright detail
    >>> out = detail_preserving_pool(img, size=2, alpha=0.0, lam=2.0)
    >>> out.shape
    (2, 2)
    >>> bool(out[0, 0] > img[:2, :2].mean())                 # DPP keeps more of it
    True
    """
    if any_dask(image, reference):  # Dask arrays: lazy, block by block (pacnd.dask.filters)
        return _on_dask("detail_preserving_pool", locals())
    img = _as_float_image(image, "image")
    layout = _Layout(img, channel_axis, "image")
    nd = len(layout.spatial)
    C = layout.channels
    size = _check_int(size, "size", minimum=1)
    stride = size if stride is None else _check_int(stride, "stride", minimum=1)
    padding = _check_int(padding, "padding", minimum=0)
    if padding > size // 2:
        raise ValueError(f"padding={padding} is larger than size // 2 = {size // 2}: some windows "
                         f"would hold only padding; use padding <= {size // 2}")
    eps = _check_positive(eps, "eps")
    if not isinstance(asym, (bool, np.bool_)):
        raise TypeError(f"asym must be True or False, got {asym!r}")
    alpha = _dpp_param(alpha, "alpha", C, nonneg=True)
    lam = _dpp_param(lam, "lam", C, nonneg=False)
    out_sp = tuple((s + 2 * padding - size) // stride + 1 for s in layout.spatial)
    if any(o < 1 for o in out_sp):
        raise ValueError(f"size={size} (with padding={padding}) is larger than the image's "
                         f"spatial shape {layout.spatial}; use a smaller size or more padding")

    xp = array_module(img)
    x = layout.to_cf(img)                                         # (1, C, *S)
    dt = x.dtype
    pad = ((0, 0), (0, 0)) + ((padding, padding),) * nd
    xpad = xp.pad(x, pad)
    vpad = xp.pad(xp.ones((1, 1) + layout.spatial, dtype=dt), pad)
    win = _windows(xpad, size, stride, nd, out_sp)                # (1, C, *out, n)
    vwin = _windows(vpad, size, stride, nd, out_sp)               # (1, 1, *out, n)
    box = (win * vwin).sum(axis=-1) / vwin.sum(axis=-1)           # (1, C, *out)
    if isinstance(reference, str):
        _check_choice(reference, "reference", _REFERENCES)
        ref = box if reference == "box" else _dpid_smooth(box, nd)
    else:
        ref_img = _as_float_image(reference, "reference", dt)
        expected = layout.from_cf(xp.empty((1, C) + out_sp, dtype=dt)).shape
        if tuple(ref_img.shape) != tuple(expected):
            raise ValueError(f"reference has shape {tuple(ref_img.shape)}; an array reference "
                             f"is I~ at the output resolution, shape {tuple(expected)} (same "
                             f"layout as the output)")
        ref = layout.to_cf(ref_img)

    # one odd block per window: the window's pixels in the non-centre slots
    n = size ** nd
    bshape = _block_shape(size, nd)
    nb = int(np.prod(bshape))
    centre = nb // 2
    slots = np.array([i for i in range(nb) if i != centre][:n])
    blk_x = xp.zeros((1, C) + out_sp + (nb,), dtype=dt)
    blk_m = xp.zeros((1, 1) + out_sp + (nb,), dtype=dt)
    blk_x[..., slots] = win
    blk_m[..., slots] = vwin
    blk_g = blk_x.copy()
    blk_g[..., centre] = ref
    a = math.sqrt(EPS) / eps
    xb, gb, mb = (_tile_blocks(b, out_sp, bshape) for b in (blk_x, blk_g, blk_m))
    gb *= dt.type(a)
    alpha_k = alpha * a ** lam
    if alpha_k.shape == (1,):
        alpha_k, lam_k = float(alpha_k[0]), float(lam[0])
    else:
        lam_k = np.broadcast_to(lam, (C,)).copy()
        alpha_k = np.broadcast_to(alpha_k, (C,)).copy()
    out = pac_pool(xb, gb, bshape, stride=bshape, kernel="inverse", alpha=alpha_k, lam=lam_k,
                   asym=bool(asym), normalize=True, channel_wise=True, mask=mb, engine=engine)
    return layout.from_cf(out)


def _dpp_param(value, name, C, *, nonneg):
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        arr = np.asarray([float(value)])
    elif _is_array(value) or isinstance(value, (list, tuple)):
        arr = np.asarray(value.get() if hasattr(value, "get") else value, dtype=np.float64)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != 1 or arr.shape[0] not in (1, C):
            raise ValueError(f"{name} has shape {arr.shape}; give a number or one value per "
                             f"channel, shape ({C},)")
    else:
        raise TypeError(f"{name} must be a number or an array of one value per channel, got "
                        f"{type(value).__name__}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}={value!r} must be finite")
    if nonneg and (arr < 0).any():
        raise ValueError(f"{name}={value!r} must be >= 0 so that every weight is positive")
    return arr


def _block_shape(size, nd):
    """Odd block sizes per dim with room for ``size**nd`` pixels plus a centre slot."""
    b = [size + 1 - size % 2] * nd            # smallest odd >= size
    if int(np.prod(b)) < size ** nd + 1:
        b[-1] += 2
    return tuple(b)


def _windows(a, size, stride, nd, out_sp):
    """(B, C, *S_pad) -> (B, C, *out, size**nd): the pooling windows, row-major."""
    xp = array_module(a)
    v = xp.lib.stride_tricks.sliding_window_view(a, (size,) * nd, axis=tuple(range(2, 2 + nd)))
    sl = (slice(None), slice(None)) + tuple(slice(0, o * stride, stride) for o in out_sp)
    v = v[sl]
    return v.reshape(v.shape[:2 + nd] + (size ** nd,))


def _tile_blocks(blk, out_sp, bshape):
    """(B, C, *out, nb) -> (B, C, out_0*b_0, out_1*b_1, ...): blocks side by side."""
    xp = array_module(blk)
    nd = len(out_sp)
    a = blk.reshape(blk.shape[:2] + tuple(out_sp) + tuple(bshape))
    perm = [0, 1] + [ax for d in range(nd) for ax in (2 + d, 2 + nd + d)]
    a = a.transpose(perm)
    return xp.ascontiguousarray(a.reshape(blk.shape[:2] + tuple(o * b for o, b in
                                                                  zip(out_sp, bshape))))


def _dpid_smooth(box, nd):
    """``[1, 2, 1] / 4`` along every spatial dim, edge-replicated (DPID's fixed filter)."""
    xp = array_module(box)
    out = box
    for d in range(nd):
        ax = 2 + d
        if out.shape[ax] == 1:
            continue
        lo = xp.concatenate([xp.take(out, [0], axis=ax),
                             xp.take(out, range(out.shape[ax] - 1), axis=ax)], axis=ax)
        hi = xp.concatenate([xp.take(out, range(1, out.shape[ax]), axis=ax),
                             xp.take(out, [out.shape[ax] - 1], axis=ax)], axis=ax)
        out = (lo + 2 * out + hi) / 4
    return out.astype(box.dtype, copy=False)
