"""Differentiable resizing with PyTorch's ``F.interpolate`` semantics.

``interpolate(x, size=None, scale_factor=None, mode='nearest',
align_corners=None, recompute_scale_factor=None)`` on (B, C, *S) with 1-3
spatial dims; ``mode`` in ``'nearest'``, ``'linear'`` (1-D), ``'bilinear'``
(2-D), ``'trilinear'`` (3-D). No antialiasing.

The index and weight arithmetic follows PyTorch's CPU kernels step by step
(``area_pixel_compute_scale``, ``area_pixel_compute_source_index``,
``guard_index_and_lambda``, ``nearest_idx``), in the input's float precision
(float32 for float32 input; ``nearest`` always in float32, as PyTorch does):

- linear, ``align_corners=False``: ``src = scale * (dst + 0.5) - 0.5``,
  clamped at 0, with ``scale = 1/scale_factor`` when a scale factor is given
  (and not recomputed), else ``in/out``;
- linear, ``align_corners=True``: ``src = dst * (in-1)/(out-1)``;
- nearest: ``src = min(floor(dst * scale), in-1)`` (identity when
  ``out == in``, ``dst >> 1`` when ``out == 2 in``).

Multi-dimensional linear modes are separable; the last axis is interpolated
first and the products are accumulated in PyTorch's order, so results match
PyTorch's CPU output to the last bit for the same inputs in the cases we
checked by hand (see tests).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .._validate import array_module
from .function import Function
from .tensor import Tensor, as_array, is_array

__all__ = ["interpolate", "resize"]

_MODES = {"nearest": None, "linear": 1, "bilinear": 2, "trilinear": 3}


def _linear_plan(n_in, n_out, scale, align_corners, dtype):
    ct = np.dtype(dtype).type
    d = np.arange(n_out)
    if align_corners:
        s = ct(n_in - 1) / ct(n_out - 1) if n_out > 1 else ct(0)
        src = s * d.astype(ct)
    else:
        s = ct(1.0 / scale) if (scale is not None and scale > 0) else ct(n_in) / ct(n_out)
        src = s * (d.astype(ct) + ct(0.5)) - ct(0.5)
        src = np.where(src < 0, ct(0), src).astype(ct)
    if n_in == n_out and s == 1:
        return None  # identity (weights 1 and 0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    lam = np.minimum(np.maximum(src - i0.astype(ct), ct(0)), ct(1)).astype(ct)
    i1 = i0 + (i0 < n_in - 1)
    return ("linear", i0, i1, (ct(1) - lam).astype(ct), lam)


def _nearest_plan(n_in, n_out, scale):
    d = np.arange(n_out)
    if n_out == n_in:
        return None
    if n_out == 2 * n_in:
        idx = d >> 1
    else:
        s = np.float32(1.0 / scale) if (scale is not None and scale > 0) else (
            np.float32(n_in) / np.float32(n_out))
        idx = np.minimum(np.floor(d.astype(np.float32) * s).astype(np.int64), n_in - 1)
    return ("nearest", idx)


def _scatter_axis(contrib, idx, n_in, axis):
    """out[..., i, ...] = sum over positions p with idx[p] == i of contrib[..., p, ...]."""
    xp = array_module(contrib)
    shape = list(contrib.shape)
    shape[axis] = n_in
    out = xp.zeros(shape, dtype=contrib.dtype)
    lead = (slice(None),) * axis
    if xp is np and (np.diff(idx) >= 0).all():
        uniq, starts = np.unique(idx, return_index=True)
        out[lead + (uniq,)] = np.add.reduceat(contrib, starts, axis=axis)
    else:
        xp.add.at(out, lead + (xp.asarray(idx),), contrib)
    return out


class _Resize(Function):
    def __init__(self, plans):
        self.plans = plans  # [(axis, n_in, plan)] in application order

    def forward(self, x):
        xp = array_module(x)
        for axis, _n_in, plan in self.plans:
            tail = (1,) * (x.ndim - axis - 1)
            if plan[0] == "nearest":
                x = xp.take(x, xp.asarray(plan[1]), axis=axis)
            else:
                _, i0, i1, w0, w1 = plan
                w0 = xp.asarray(w0, dtype=x.dtype).reshape((-1,) + tail)
                w1 = xp.asarray(w1, dtype=x.dtype).reshape((-1,) + tail)
                x = xp.take(x, xp.asarray(i0), axis=axis) * w0 + \
                    xp.take(x, xp.asarray(i1), axis=axis) * w1
        return x

    def backward(self, g):
        xp = array_module(g)
        for axis, n_in, plan in reversed(self.plans):
            tail = (1,) * (g.ndim - axis - 1)
            if plan[0] == "nearest":
                g = _scatter_axis(g, plan[1], n_in, axis)
            else:
                _, i0, i1, w0, w1 = plan
                w0 = xp.asarray(w0, dtype=g.dtype).reshape((-1,) + tail)
                w1 = xp.asarray(w1, dtype=g.dtype).reshape((-1,) + tail)
                g = _scatter_axis(g * w0, i0, n_in, axis) + _scatter_axis(g * w1, i1, n_in, axis)
        return (g,)


def _per_dim(value, nd, name, kind):
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return (value,) * nd
    try:
        vals = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be {kind} or a sequence of {nd}, got {value!r}") from None
    if len(vals) != nd:
        raise ValueError(f"{name} has {len(vals)} entries {vals} but the input has {nd} spatial "
                         f"dim(s)")
    return vals


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None):
    """Resize the spatial dims of (B, C, *S) like PyTorch's ``F.interpolate``.

    Parameters
    ----------
    input : Tensor or array (B, C, *S), 1-3 spatial dims
    size : int or tuple of int, optional
        Output spatial size. Give exactly one of ``size`` and ``scale_factor``.
    scale_factor : float or tuple of float, optional
        Output size ``floor(S * scale_factor)``; the coordinate mapping uses
        ``1 / scale_factor`` unless ``recompute_scale_factor=True``.
    mode : {'nearest', 'linear', 'bilinear', 'trilinear'}
        ``linear``/``bilinear``/``trilinear`` for 1/2/3 spatial dims.
    align_corners : bool, optional
        Linear modes only; default False (PyTorch's default).
    recompute_scale_factor : bool, optional
        Use ``in/out`` instead of ``1/scale_factor`` for the coordinates.
    """
    arr = as_array(input)
    if not (isinstance(input, Tensor) or is_array(input)):
        raise TypeError(f"input must be a Tensor or an array, got {type(input).__name__}")
    if arr.dtype.kind != "f":
        raise TypeError(f"input must be a float array, got dtype {arr.dtype}")
    nd = arr.ndim - 2
    if nd not in (1, 2, 3):
        raise ValueError(f"input has shape {tuple(arr.shape)}: interpolate needs (B, C, *S) with "
                         f"1, 2 or 3 spatial dims")
    if mode not in _MODES:
        raise ValueError(f"mode={mode!r} is not supported; choose one of {sorted(_MODES)}")
    if _MODES[mode] is not None and _MODES[mode] != nd:
        want = {1: "linear", 2: "bilinear", 3: "trilinear"}[nd]
        raise ValueError(f"mode={mode!r} needs {_MODES[mode]} spatial dim(s) but the input has "
                         f"{nd}; use mode={want!r}")
    if mode == "nearest":
        if align_corners:
            raise ValueError("align_corners only applies to the linear modes, not 'nearest'")
    align_corners = bool(align_corners)
    if (size is None) == (scale_factor is None):
        raise ValueError("give exactly one of size and scale_factor")
    in_size = tuple(arr.shape[2:])
    if size is not None:
        out_size = tuple(int(s) for s in _per_dim(size, nd, "size", "an int"))
        scales = (None,) * nd
    else:
        factors = tuple(float(f) for f in _per_dim(scale_factor, nd, "scale_factor", "a number"))
        if any(not (f > 0 and math.isfinite(f)) for f in factors):
            raise ValueError(f"scale_factor must be positive and finite, got {scale_factor!r}")
        out_size = tuple(int(math.floor(float(n) * f)) for n, f in zip(in_size, factors))
        scales = (None,) * nd if recompute_scale_factor else factors
    if any(o < 1 for o in out_size):
        raise ValueError(f"the output size {out_size} has an empty dim (input size {in_size})")
    plans = []
    for i in range(nd - 1, -1, -1):  # last axis first, as PyTorch accumulates
        if mode == "nearest":
            plan = _nearest_plan(in_size[i], out_size[i], scales[i])
        else:
            plan = _linear_plan(in_size[i], out_size[i], scales[i], align_corners, arr.dtype)
        if plan is not None:
            plans.append((i + 2, in_size[i], plan))
    if not plans:
        return _Resize([]).apply(input)
    return _Resize(plans).apply(input)


def resize(input, size, mode="bilinear", align_corners=False):
    """``interpolate`` to a given spatial ``size`` (bilinear by default for 2-D;
    'linear' picks linear/bilinear/trilinear by the number of spatial dims)."""
    nd = as_array(input).ndim - 2
    if mode in ("linear", "bilinear", "trilinear"):
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}.get(nd, mode)
    return interpolate(input, size=size, mode=mode,
                       align_corners=align_corners if mode != "nearest" else None)
