"""Joint bilateral upsampling (:func:`pacnd.filters.joint_bilateral_upsample`)."""

from __future__ import annotations

import math
import numbers

import numpy as np

from .._validate import array_module
from ..dask import any_dask
from ..ops import conv_transpose, pac_conv_transpose
from ._common import (_Layout, _RANGE_KERNELS, _as_float_image, _check_choice, _check_int,
                      _check_positive, _default_sigma_color, _gaussian_window, _guide_to_cf,
                      _is_array, _on_dask, _with_ones)


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
