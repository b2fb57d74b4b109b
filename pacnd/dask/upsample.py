"""Joint upsampling of Dask arrays: ``model.upsample`` lazily, block by block.

:meth:`pacnd.models.JointUpsampler.upsample` dispatches here when the low-res
target or the guide is a ``dask.array.Array``. Output blocks are the low-res
chunks times the factor (block boundaries on multiples of the factor), and
each is ``model.upsample`` of the block's low-res samples plus a halo and the
guide over the same span, cut back to the block:

* the halo (:func:`upsample_halo`) is the model's receptive field, read from
  its layers: the target branch's convolutions (low-res), the PAC^T layers'
  taps and adapting kernels at each intermediate resolution, the guide
  branch's convolutions and the bilinear resizing of its slices, the final
  convolutions (full resolution) — every conv counted with its full
  one-sided reach ``max(p, (k - 1) d - p)``, so the bound holds for the
  shifted paddings of DJF too;
* the min-max normalisation uses the whole target's per-channel range (a
  lazy reduction every block depends on, passed as ``value_range``);
* the mirror padding of the learned networks applies at the image border
  only (inside, it falls into the discarded halo);
* :class:`~pacnd.models.JointBilateralUpsample` blocks (and networks with a
  residual JBU base) get their own coordinate origin, so the spatial part of
  their features is the whole image's; a residual base's halo counts too;
* :class:`~pacnd.models.Bicubic`'s spline prefilter is recursive (infinite
  support, decaying as ``0.268^n``): its halo of 40 samples leaves a
  truncation below ``1e-22`` of the value range, i.e. float rounding.
"""

from __future__ import annotations

import copy
import functools
import math
import numbers

import numpy as np

from . import require
from .regions import Region, as_dask, map_regions, meta_like

__all__ = ["upsample_halo", "upsample"]

_BICUBIC_HALO = 40


def _conv_reach(m):
    """One-sided reach (input pixels) of a stride-1 conv layer: ``max(p, (k - 1) d - p)``."""
    return max(max(p, (k - 1) * d - p) for k, p, d in zip(m.kernel_size, m.padding, m.dilation))


def _seq_reach(seq):
    from ..nn import Conv2d  # noqa: PLC0415

    return sum(_conv_reach(m) for m in seq.modules() if isinstance(m, Conv2d))


def upsample_halo(model):
    """Low-res samples per side a block needs for ``model.upsample`` to be exact.

    Parameters
    ----------
    model : pacnd.models.JointUpsampler
        A PAC network (standard or lite), DJF, JBU, bilinear or bicubic.

    Returns
    -------
    int

    Raises
    ------
    TypeError
        For another model class (pass ``halo=`` to :func:`upsample`).
    """
    f = model.factor
    base = getattr(model, "_base", None)   # a residual base (JBU / bicubic / bilinear)
    if base is not None:
        if getattr(model, "residual_input", False):   # the base feeds the network: reaches add
            return upsample_halo(base) + _own_halo(model, f)
        return max(upsample_halo(base), _own_halo(model, f))
    return _own_halo(model, f)


def _own_halo(model, f):
    from ..models.networks import (DJF, Bicubic, Bilinear, JointBilateralUpsample,  # noqa
                                   PacJointUpsample)

    if isinstance(model, PacJointUpsample):
        p = model.pre_upsample                   # input interpolated p times: a f/p body
        fb = f // p
        R = _seq_reach(model.branch_f) + _seq_reach(model.branch_g) + f + 1
        R += _seq_reach(model.branch_t) * fb + (f if p > 1 else 0)  # bilinear: 1 sample
        for i, up in enumerate(model.up_convts):
            s_out = fb // 2 ** (i + 1)
            taps = max(max(p, (k - 1) * d - p) for k, p, d in
                       zip(up.kernel_size, up.padding, up.dilation))
            kern = max((k // 2) * d for k, d in zip(up.kernel_size, up.dilation))
            R += (taps + 2) * s_out + kern * s_out + s_out + 1
    elif isinstance(model, DJF):
        R = (_seq_reach(model.branch_t) + _seq_reach(model.branch_g)
             + _seq_reach(model.branch_joint) + 2 * f + 1)
    elif isinstance(model, JointBilateralUpsample):
        R = model.kernel_size // 2 + f
    elif isinstance(model, Bilinear):
        R = 2 * f
    elif isinstance(model, Bicubic):
        return _BICUBIC_HALO
    else:
        raise TypeError(f"pacnd.dask cannot derive the receptive field of a "
                        f"{type(model).__name__}; pass halo= (low-res samples per side) to "
                        f"pacnd.dask.upsample.upsample")
    return int(math.ceil(R / f)) + 1


def _host(a):
    return a.get() if type(a).__module__.split(".")[0] == "cupy" else a


def _block(block, low, guide, vmin, vmax, model, *, factor, pad, engine, channels, xp_out,
           ensemble=1):
    from ..models.networks import JointBilateralUpsample  # noqa: PLC0415

    low, guide = _host(low), _host(guide)
    (a, _), (c, _) = block.regions[0][:2]
    origin = (a * factor, c * factor)      # the block's guide starts there in the image
    if isinstance(model, JointBilateralUpsample):
        model = copy.copy(model)
        model.coord_origin = origin
    base = getattr(model, "_base", None)
    if isinstance(base, JointBilateralUpsample):   # a residual JBU base: same coordinates
        model, base = copy.copy(model), copy.copy(base)
        base.coord_origin = origin
        object.__setattr__(model, "_base", base)
    out = model.upsample(low, guide, pad=pad, engine=engine, ensemble=ensemble,
                         value_range=(np.asarray(vmin), np.asarray(vmax)))
    (ys, ye), (xs, xe) = block.bounds[:2]
    out = out[ys - a * factor:ye - a * factor, xs - c * factor:xe - c * factor]
    if xp_out == "cupy":
        import cupy  # noqa: PLC0415

        out = cupy.asarray(out)
    return out


def upsample(model, low_res, guide, *, pad=None, engine=None, halo=None, chunks=None,
             ensemble=False):
    """``model.upsample(low_res, guide)`` as a lazy Dask array (see the module notes).

    Parameters
    ----------
    model : pacnd.models.JointUpsampler
    low_res : dask.array.Array or ndarray, (h, w) or (h, w, C)
        Low-res target; NumPy inputs are wrapped with ``chunks`` (low-res
        samples per chunk side).
    guide : dask.array.Array or ndarray, (factor*h, factor*w, 3)
        RGB guide (uint8, or float in ``[0, 1]``), any chunks.
    pad, engine, ensemble
        As in :meth:`~pacnd.models.JointUpsampler.upsample`.
    halo : int, optional
        Low-res samples per side (default: :func:`upsample_halo`, exact; one
        more with ``ensemble``, whose mirrored guides move by a pixel).
    chunks : int, optional
        Low-res chunk size for a NumPy ``low_res``.

    Returns
    -------
    dask.array.Array of float32, (factor*h, factor*w[, C])
        Chunks: the low-res chunks times ``factor`` (channels in one chunk).
    """
    require("model.upsample on Dask arrays")
    import dask.array as da  # noqa: PLC0415
    from ..models._interface import JointUpsampler  # noqa: PLC0415

    if not isinstance(model, JointUpsampler):
        raise TypeError(f"model must be a pacnd.models.JointUpsampler, got "
                        f"{type(model).__name__}")
    for a, name, what in ((low_res, "low_res", "an (h, w) or (h, w, C) array"),
                          (guide, "guide", "an (H, W, 3) array (uint8, or float in [0, 1])")):
        if not (hasattr(a, "dask") or hasattr(a, "__array__")) or isinstance(a, (str, bytes)):
            raise TypeError(f"{name} must be {what}, got {type(a).__name__}")
    if low_res.dtype.kind not in "fiu":
        raise TypeError(f"low_res has dtype {low_res.dtype}; pass a real-valued array")
    if low_res.ndim not in (2, 3):
        raise ValueError(f"low_res must have shape (h, w) or (h, w, C), got "
                         f"{tuple(low_res.shape)}")
    if 0 in low_res.shape:
        raise ValueError(f"low_res is empty: shape {tuple(low_res.shape)}")
    if guide.ndim != 3 or guide.shape[2] != 3:
        raise ValueError(f"guide must have shape (H, W, 3) (RGB), got {tuple(guide.shape)}")
    f = model.factor
    h, w = low_res.shape[:2]
    H, W = guide.shape[:2]
    if (H, W) != (f * h, f * w):
        raise ValueError(f"size mismatch: this model upsamples by {f}, so a low-res input of "
                         f"{h}x{w} needs a {f * h}x{f * w} guide, got {H}x{W}; crop the guide "
                         f"to a multiple of {f} and subsample the target to match, or use a "
                         f"model for the right factor")
    if pad is None:
        pad = model.border_pad()
    if not isinstance(pad, numbers.Integral) or isinstance(pad, bool) or pad < 0:
        raise ValueError(f"pad={pad!r} must be a non-negative int (low-res samples)")
    from ..models.ensemble import ensemble_size  # noqa: PLC0415

    size = ensemble_size(ensemble)
    if halo is None:
        halo = upsample_halo(model) + (size > 1)
    elif not isinstance(halo, numbers.Integral) or isinstance(halo, bool) or halo < 0:
        raise ValueError(f"halo={halo!r} must be None (exact) or a non-negative int "
                         f"(low-res samples)")
    had_channels = low_res.ndim == 3
    if hasattr(low_res, "dask"):
        low = low_res
    else:
        c = "auto" if chunks is None else ((chunks, chunks) if isinstance(chunks, int)
                                           else tuple(chunks))
        low = da.from_array(np.asarray(low_res), chunks=c if c == "auto" else
                            c + ((-1,) if had_channels else ()))
    C = low.shape[2] if had_channels else 1
    out_sp = tuple(tuple(c * f for c in ch) for ch in low.chunks[:2])
    g = guide if hasattr(guide, "dask") else as_dask(np.asarray(guide), chunks=out_sp + ((3,),))
    x = low if had_channels else low[..., None]
    xf = x.astype(np.float32)
    vmin, vmax = xf.min(axis=(0, 1)), xf.max(axis=(0, 1))

    def low_region(bounds):
        out = tuple((max(0, s // f - halo), min(n, -(-e // f) + halo))
                    for (s, e), n in zip(bounds[:2], (h, w)))
        return out + (((0, C),) if had_channels else ())

    def guide_region(bounds):
        (a, b), (c, d) = low_region(bounds)[:2]
        return (a * f, b * f), (c * f, d * f), (0, 3)

    m = copy.deepcopy(model)
    m.eval()  # upsample() switches modes; a private copy in eval mode is safe in threads
    xp_out = type(meta_like([low], 0, np.float32)).__module__.split(".")[0]
    func = functools.partial(_block, factor=f, pad=int(pad), engine=engine, channels=C,
                             xp_out=xp_out, ensemble=size)
    out_chunks = out_sp + ((C,),) if had_channels else out_sp
    inputs = [Region(low, low_region), Region(g, guide_region), Region(vmin, None),
              Region(vmax, None)]
    return map_regions(func, inputs, out_chunks, dtype=np.float32,
                       meta=meta_like([low], len(out_chunks), np.float32),
                       name="pacnd-upsample", constants=[m])
