"""Detail-preserving pooling (:func:`pacnd.filters.detail_preserving_pool`)."""

from __future__ import annotations

import math
import numbers

import numpy as np

from .._kernelspec import EPS
from .._validate import array_module
from ..dask import any_dask
from ..ops import pac_pool
from ._common import (_Layout, _as_float_image, _check_choice, _check_int, _check_positive,
                      _is_array, _on_dask)


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
