"""Average and max pooling over 1-3 spatial dims (PyTorch semantics, floor mode).

Both loop over the kernel taps with strided slices of the padded input, so
working memory is a few arrays of the output's size (no unfolding).
"""

from __future__ import annotations

import itertools

import numpy as np

from .._validate import array_module, spatial_tuple
from .function import Function
from .tensor import Tensor, as_array, is_array

__all__ = ["avg_pool", "max_pool"]


def _geometry(arr, kernel_size, stride, padding, dilation, name):
    if not (is_array(arr)):
        raise TypeError(f"{name} expects a Tensor or an array")
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} needs a float input, got dtype {arr.dtype}")
    nd = arr.ndim - 2
    if nd not in (1, 2, 3):
        raise ValueError(f"input has shape {tuple(arr.shape)}: {name} needs (B, C, *S) with 1, 2 "
                         f"or 3 spatial dims")
    k = spatial_tuple(kernel_size, nd, "kernel_size", minimum=1)
    s = k if stride is None else spatial_tuple(stride, nd, "stride", minimum=1)
    p = spatial_tuple(padding, nd, "padding", minimum=0)
    d = spatial_tuple(dilation, nd, "dilation", minimum=1)
    if any(pi > ki // 2 for pi, ki in zip(p, k)):
        raise ValueError(f"padding={p} must be at most half the kernel size {k}")
    size = tuple(arr.shape[2:])
    out = tuple((n + 2 * pi - di * (ki - 1) - 1) // si + 1
                for n, ki, si, pi, di in zip(size, k, s, p, d))
    if any(o < 1 for o in out):
        raise ValueError(f"{name}: the window (kernel {k}, dilation {d}) does not fit the input "
                         f"size {size} with padding {p}")
    return k, s, p, d, out


def _tap_slices(tap, s, d, out):
    return (Ellipsis,) + tuple(slice(t * di, t * di + si * (o - 1) + 1, si)
                               for t, si, di, o in zip(tap, s, d, out))


class _AvgPool(Function):
    def __init__(self, k, s, p, d, out, count_include_pad):
        self.k, self.s, self.p, self.d, self.out = k, s, p, d, out
        self.count_include_pad = count_include_pad

    def _divisor(self, xp, size, dtype):
        if self.count_include_pad or not any(self.p):
            return dtype.type(np.prod(self.k))
        ones = xp.pad(xp.ones(size, dtype=dtype), [(pi, pi) for pi in self.p])
        cnt = xp.zeros(self.out, dtype=dtype)
        for tap in itertools.product(*map(range, self.k)):
            cnt += ones[_tap_slices(tap, self.s, self.d, self.out)]
        return cnt

    def forward(self, x):
        xp = array_module(x)
        self.in_shape = x.shape
        xpad = xp.pad(x, [(0, 0), (0, 0)] + [(pi, pi) for pi in self.p]) if any(self.p) else x
        acc = xp.zeros(x.shape[:2] + tuple(self.out), dtype=x.dtype)
        for tap in itertools.product(*map(range, self.k)):
            acc += xpad[_tap_slices(tap, self.s, self.d, self.out)]
        self.div = self._divisor(xp, x.shape[2:], x.dtype)
        return acc / self.div

    def backward(self, g):
        xp = array_module(g)
        gd = g / self.div
        pad_shape = self.in_shape[:2] + tuple(n + 2 * pi for n, pi in
                                              zip(self.in_shape[2:], self.p))
        gpad = xp.zeros(pad_shape, dtype=g.dtype)
        for tap in itertools.product(*map(range, self.k)):
            gpad[_tap_slices(tap, self.s, self.d, self.out)] += gd
        crop = (Ellipsis,) + tuple(slice(pi, pi + n) for pi, n in zip(self.p, self.in_shape[2:]))
        return (gpad[crop],)


class _MaxPool(Function):
    def __init__(self, k, s, p, d, out):
        self.k, self.s, self.p, self.d, self.out = k, s, p, d, out

    def forward(self, x):
        xp = array_module(x)
        self.in_shape = x.shape
        xpad = xp.pad(x, [(0, 0), (0, 0)] + [(pi, pi) for pi in self.p],
                      constant_values=-np.inf) if any(self.p) else x
        best = None
        arg = xp.zeros(x.shape[:2] + tuple(self.out), dtype=np.int16)
        for ti, tap in enumerate(itertools.product(*map(range, self.k))):
            win = xpad[_tap_slices(tap, self.s, self.d, self.out)]
            if best is None:
                best = win.copy()
                continue
            m = win > best  # strict: the first maximum wins, as in PyTorch
            best = xp.where(m, win, best)
            arg[m] = ti
        self.arg = arg
        return best

    def backward(self, g):
        xp = array_module(g)
        pad_shape = self.in_shape[:2] + tuple(n + 2 * pi for n, pi in
                                              zip(self.in_shape[2:], self.p))
        gpad = xp.zeros(pad_shape, dtype=g.dtype)
        for ti, tap in enumerate(itertools.product(*map(range, self.k))):
            gpad[_tap_slices(tap, self.s, self.d, self.out)] += xp.where(self.arg == ti, g, 0)
        crop = (Ellipsis,) + tuple(slice(pi, pi + n) for pi, n in zip(self.p, self.in_shape[2:]))
        return (gpad[crop],)


def avg_pool(input, kernel_size, stride=None, padding=0, *, count_include_pad=True):
    """Average pooling of (B, C, *S); ``stride`` defaults to ``kernel_size``.

    ``count_include_pad`` (PyTorch's default True) divides by the full window
    size; False divides by the number of in-image taps.
    """
    arr = as_array(input)
    if not (isinstance(input, Tensor) or is_array(input)):
        raise TypeError(f"avg_pool expects a Tensor or an array, got {type(input).__name__}")
    k, s, p, d, out = _geometry(arr, kernel_size, stride, padding, 1, "avg_pool")
    return _AvgPool(k, s, p, d, out, bool(count_include_pad)).apply(input)


def max_pool(input, kernel_size, stride=None, padding=0, dilation=1):
    """Max pooling of (B, C, *S) (padding with -inf); ``stride`` defaults to
    ``kernel_size``. The gradient goes to the first maximal tap."""
    arr = as_array(input)
    if not (isinstance(input, Tensor) or is_array(input)):
        raise TypeError(f"max_pool expects a Tensor or an array, got {type(input).__name__}")
    k, s, p, d, out = _geometry(arr, kernel_size, stride, padding, dilation, "max_pool")
    if int(np.prod(k)) > np.iinfo(np.int16).max:
        raise ValueError(f"kernel_size {k} is too large for max_pool")
    return _MaxPool(k, s, p, d, out).apply(input)
