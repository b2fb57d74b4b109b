"""The common interface of joint upsamplers: :class:`JointUpsampler`.

``model(target_low, guide)`` is the network on normalised batches (Tensors or
arrays, ``(B, C, h, w)`` and ``(B, 3, factor*h, factor*w)``);
:meth:`JointUpsampler.upsample` is the user-level call on one image in its
own units.
"""

from __future__ import annotations

import contextlib
import numbers

import numpy as np

from .._validate import array_module, as_ndarray
from ..nn import Module
from .ensemble import Ensembled, ensemble_size

__all__ = ["JointUpsampler", "as_guide", "as_target", "minmax_range", "normalize_target",
           "denormalize_target", "check_factor", "mirror_pad", "mirror_crop"]


def check_factor(factor):
    """``factor`` as a positive int (TypeError for non-ints and bools)."""
    if not isinstance(factor, numbers.Integral) or isinstance(factor, bool):
        raise TypeError(f"factor must be an int, got {factor!r}")
    if factor < 1:
        raise ValueError(f"factor={factor} must be a positive int")
    return int(factor)


def as_guide(guide, name="guide"):
    """An RGB guide ``(H, W, 3)`` (uint8/uint16, or float in ``[0, 1]``) as
    float32 in ``[0, 1]``, shape ``(H, W, 3)``."""
    guide = as_ndarray(guide, name, "an (H, W, 3) array (uint8, or float in [0, 1])")
    if guide.ndim != 3 or guide.shape[2] != 3:
        hint = ""
        if guide.ndim == 3 and guide.shape[2] == 4:
            hint = "; drop the alpha channel with guide[..., :3]"
        elif guide.ndim == 2:
            hint = "; a grey guide can be stacked: np.stack([g, g, g], axis=-1)"
        elif guide.ndim == 3 and guide.shape[0] == 3:
            hint = "; it looks channel-first: use guide.transpose(1, 2, 0)"
        raise ValueError(f"{name} must have shape (H, W, 3) (RGB), got {guide.shape}{hint}")
    if guide.dtype == np.uint8:
        return guide.astype(np.float32) / np.float32(255.0)
    if guide.dtype == np.uint16:
        return guide.astype(np.float32) / np.float32(65535.0)
    if guide.dtype.kind == "b" or guide.dtype.kind not in "fiu":
        raise TypeError(f"{name} has dtype {guide.dtype}; pass uint8 RGB or float in [0, 1]")
    if guide.dtype.kind in "iu":
        raise TypeError(f"{name} has integer dtype {guide.dtype}; pass uint8 (0..255) RGB or "
                        f"float RGB in [0, 1]")
    g = guide.astype(np.float32)
    if not np.isfinite(g).all():
        raise ValueError(f"{name} contains {int((~np.isfinite(g)).sum())} NaN/inf values")
    lo, hi = float(g.min()), float(g.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"float {name} must be in [0, 1], got values in [{lo:g}, {hi:g}]"
                         + ("; divide 0..255 RGB by 255" if hi <= 255.5 else ""))
    return np.clip(g, 0, 1)


def as_target(low_res, name="low_res"):
    """A target ``(h, w)`` or ``(h, w, C)`` as float32 ``(h, w, C)`` and
    whether it had a channel axis."""
    low_res = as_ndarray(low_res, name, "an (h, w) or (h, w, C) array")
    if low_res.dtype.kind not in "fiu" or low_res.dtype.kind == "b":
        raise TypeError(f"{name} has dtype {low_res.dtype}; pass a real-valued array")
    if low_res.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape (h, w) or (h, w, C), got {low_res.shape}")
    had_channels = low_res.ndim == 3
    x = low_res.astype(np.float32)
    if not had_channels:
        x = x[..., None]
    if x.shape[0] < 1 or x.shape[1] < 1 or x.shape[2] < 1:
        raise ValueError(f"{name} is empty: shape {low_res.shape}")
    bad = ~np.isfinite(x)
    if bad.any():
        raise ValueError(
            f"{name} contains {int(bad.sum())} NaN/inf values (unknown samples); fill them "
            f"first, e.g. pacnd.data.fill_unknown({name})")
    return x, had_channels


def minmax_range(low, axis=(0, 1)):
    """Per-channel ``(lo, hi)`` of a low-res target, with flat channels
    widened to ``(v - 0.5, v + 0.5)`` (the reference's convention)."""
    lo = np.min(low, axis=axis).astype(np.float64)
    hi = np.max(low, axis=axis).astype(np.float64)
    flat = hi == lo
    lo = np.where(flat, lo - 0.5, lo)
    hi = np.where(flat, hi + 0.5, hi)
    return lo, hi


def _given_range(value_range, C):
    """``(lo, hi, flat)`` of a given per-channel ``(min, max)`` (as :func:`minmax_range`)."""
    try:
        vmin, vmax = (np.asarray(v, dtype=np.float64).reshape(-1) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"value_range must be (min, max) with one value per channel, got "
                         f"{value_range!r}") from None
    if vmin.shape != (C,) or vmax.shape != (C,) or not (np.isfinite(vmin).all()
                                                         and np.isfinite(vmax).all()) \
            or (vmax < vmin).any():
        raise ValueError(f"value_range must be finite (min, max) with min <= max and one value "
                         f"per channel ({C}), got {value_range!r}")
    flat = vmax == vmin
    return np.where(flat, vmin - 0.5, vmin), np.where(flat, vmax + 0.5, vmax), flat


def mirror_pad(low, guide, pad):
    """``(low, guide)`` channel-first batches (``(..., h, w)``, ``(..., H, W)``)
    mirror-padded (``'symmetric'``) by ``pad`` low-res samples per side and the
    guide by the same span, ``pad * H // h`` pixels (what
    :meth:`JointUpsampler.upsample` runs a network on); crop its result with
    :func:`mirror_crop`."""
    if not pad:
        return low, guide
    xp = array_module(low)
    P = pad * (guide.shape[-1] // low.shape[-1])
    lead = ((0, 0),) * (low.ndim - 2)
    return (xp.pad(low, lead + ((pad, pad), (pad, pad)), mode="symmetric"),
            xp.pad(guide, ((0, 0),) * (guide.ndim - 2) + ((P, P), (P, P)), mode="symmetric"))


def mirror_crop(out, pad, factor):
    """A network's ``(..., H, W)`` result on :func:`mirror_pad`-padded inputs cut back."""
    if not pad:
        return out
    P = pad * factor
    return out[..., P:out.shape[-2] - P, P:out.shape[-1] - P]


def normalize_target(x, lo, hi):
    """``(x - lo) / (hi - lo)`` with per-channel (last axis) ``lo``, ``hi``."""
    return ((x - lo) / (hi - lo)).astype(np.float32)


def denormalize_target(y, lo, hi):
    """Inverse of :func:`normalize_target`."""
    return (y * (hi - lo) + lo).astype(np.float32)


class JointUpsampler(Module):
    """Base class of the joint-upsampling models (see the module docstring).

    Attributes
    ----------
    factor : int
        Upsampling factor.
    channels : int
        Target channels the model was made/trained for (1 depth, 2 flow);
        informative, every model folds channels into the batch.
    """

    kind = "base"
    #: whether :meth:`upsample` mirror-pads the inputs by default (learned
    #: networks: their zero-padded convolutions were never trained on borders)
    pad_borders = False

    def __init__(self, factor, channels=1):
        super().__init__()
        if not isinstance(channels, numbers.Integral) or isinstance(channels, bool) \
                or channels < 1:
            raise ValueError(f"channels={channels!r} must be a positive int")
        self.factor = int(factor)
        self.channels = int(channels)
        self.meta = {}

    def _array_module(self):
        """NumPy, or CuPy for a model whose parameters live on the GPU."""
        for p in self.parameters():
            return array_module(p.data)
        return np

    def border_pad(self):
        """Low-res samples of mirror padding :meth:`upsample` adds on each
        side by default: ``1 + ceil(8 / factor)`` for learned networks (at
        least 8 high-res pixels), 0 for the training-free baselines."""
        return 1 + -(-8 // self.factor) if self.pad_borders else 0

    def upsample(self, low_res, guide, *, pad=None, engine=None, value_range=None,
                 ensemble=False):
        """Upsample one low-res target guided by a high-res RGB image.

        Parameters
        ----------
        low_res : ndarray, shape (h, w) or (h, w, C)
            The low-resolution target in its own units (depth, disparity,
            flow in pixels, ...); every value finite.
        guide : ndarray, shape (factor*h, factor*w, 3)
            RGB guide: uint8 (0..255), or float in ``[0, 1]``.
        pad : int, optional
            Mirror-pad the low-res input by this many samples per side (and
            the guide by ``pad * factor`` pixels, ``'symmetric'``), run, and
            crop the result back: the networks were trained with a 6-pixel
            border left out of the loss, so their outermost pixels are
            unreliable. Default :meth:`border_pad`; 0 runs on the image as it
            is (the evaluation protocol).
        engine : str, optional
            PAC engine (default: the configured one).
        value_range : (array, array), optional
            Per-channel ``(min, max)`` of the low-res target that sets the
            min-max normalisation (default: ``low_res``'s own). A part of a
            larger image passes the whole image's, so that it is normalised
            like the whole (:mod:`pacnd.dask.upsample` does).
        ensemble : bool or int, optional
            Average the result over mirrored copies of the input: ``True`` or
            ``4`` (the four flips), ``2`` (left-right), ``8`` (flips and
            transposes); ``False``/``1`` runs once (default). Flow components
            are mirrored with the image; see :mod:`pacnd.models.ensemble`.
            Costs that many network runs; lowers a learned network's error
            (held out: 8x depth 0.824x -> 0.802x JBU's RMSE, 8x flow 0.567x
            -> 0.478x bilinear's EPE).

        Returns
        -------
        ndarray of float32, shape (factor*h, factor*w) or (factor*h, factor*w, C)
            The result in the target's units (NumPy; a model whose parameters
            were moved to the GPU with ``map_arrays(cupy.asarray)`` runs there).
            Dask arrays in: a lazy Dask array, computed block by block
            (:func:`pacnd.dask.upsample.upsample`).

        Notes
        -----
        Each channel is min-max normalised by the low-res input's range
        before the network runs and mapped back afterwards (the training
        convention). A constant channel is returned constant (no network
        call): there is nothing to upsample.
        """
        from ..dask import any_dask  # noqa: PLC0415

        if any_dask(low_res, guide):  # lazy, block by block (pacnd.dask.upsample)
            from ..dask.upsample import upsample  # noqa: PLC0415
            return upsample(self, low_res, guide, pad=pad, engine=engine, ensemble=ensemble)
        x, had_channels = as_target(low_res)
        g = as_guide(guide)
        h, w, C = x.shape
        H, W = g.shape[:2]
        f = self.factor
        if (H, W) != (f * h, f * w):
            implied = ""
            if H % h == 0 and W % w == 0 and H // h == W // w:
                implied = f" (the guide is {H // h}x the low-res input)"
            raise ValueError(
                f"size mismatch: this model upsamples by {f}, so a low-res input of {h}x{w} "
                f"needs a {f * h}x{f * w} guide, got {H}x{W}{implied}; crop the guide to a "
                f"multiple of {f} and subsample the target to match, or use a model for the "
                f"right factor")
        if value_range is None:
            lo, hi = minmax_range(x)
            flat = np.max(x, axis=(0, 1)) == np.min(x, axis=(0, 1))
        else:
            lo, hi, flat = _given_range(value_range, C)
        out = np.empty((H, W, C), np.float32)
        if pad is None:
            pad = self.border_pad()
        if not isinstance(pad, numbers.Integral) or isinstance(pad, bool) or pad < 0:
            raise ValueError(f"pad={pad!r} must be a non-negative int (low-res samples)")
        pad = int(pad)
        size = ensemble_size(ensemble)
        if not flat.all():
            xn, gn = mirror_pad(normalize_target(x, lo, hi).transpose(2, 0, 1)[None],
                                g.transpose(2, 0, 1)[None], pad)
            xp = self._array_module()
            xn = xp.asarray(np.ascontiguousarray(xn))  # (1, C, h, w)
            gn = xp.asarray(np.ascontiguousarray(gn))  # (1, 3, H, W)
            was_training = self.training
            self.eval()
            try:
                from .._dispatch import use_engine  # noqa: PLC0415

                with (use_engine(engine) if engine is not None else contextlib.nullcontext()):
                    y = Ensembled(self, size)(xn, gn)
            finally:
                self.train(was_training)
            if xp is not np:
                y = y.get()
            y = mirror_crop(np.asarray(y, dtype=np.float32)[0], pad, f).transpose(1, 2, 0)
            out[...] = denormalize_target(y, lo, hi)
        for c in np.flatnonzero(flat):
            out[..., c] = x[0, 0, c]
        return out if had_channels else out[..., 0]
