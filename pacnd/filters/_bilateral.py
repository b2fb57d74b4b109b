"""The bilateral and joint bilateral filters.

:func:`pacnd.filters.bilateral` and :func:`pacnd.filters.joint_bilateral`.
"""

from __future__ import annotations

import math

from .._validate import array_module
from ..dask import any_dask
from ..ops import pac_conv
from ._common import (_Layout, _RANGE_KERNELS, _WINDOWS, _as_float_image, _check_choice,
                      _check_int, _check_positive, _default_sigma_color, _gaussian_window,
                      _guide_to_cf, _on_dask, _with_ones)


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
