"""Reductions: ``sum``, ``mean``, ``softmax``, ``log_softmax``, ``logsumexp``."""

from __future__ import annotations

import numbers

import numpy as np

from .._validate import array_module
from .function import Function
from .tensor import Tensor, is_array

__all__ = ["sum", "mean", "softmax", "log_softmax", "logsumexp"]


def _norm_axis(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, numbers.Integral):
        axis = (axis,)
    try:
        axes = tuple(int(a) for a in axis)
    except TypeError:
        raise TypeError(f"axis must be None, an int or a tuple of ints, got {axis!r}") from None
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for an array with {ndim} dims")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"axis {axis} repeats an axis")
    return tuple(sorted(out))


def _check(a, name):
    if not (isinstance(a, Tensor) or is_array(a)):
        raise TypeError(f"{name} expects a Tensor or an array, got {type(a).__name__}")
    return a.data if isinstance(a, Tensor) else a


def _expand(g, in_shape, axes, keepdims):
    if not keepdims:
        shape = list(in_shape)
        for a in axes:
            shape[a] = 1
        g = g.reshape(shape)
    return array_module(g).broadcast_to(g, in_shape)


class _Sum(Function):
    def __init__(self, axes, keepdims):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, a):
        self.in_shape = a.shape
        return a.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, g):
        return (_expand(g, self.in_shape, self.axes, self.keepdims),)


class _Mean(_Sum):
    def forward(self, a):
        self.in_shape = a.shape
        self.count = int(np.prod([a.shape[i] for i in self.axes])) if self.axes else 1
        return a.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, g):
        return (_expand(g / g.dtype.type(self.count), self.in_shape, self.axes, self.keepdims),)


def sum(a, axis=None, keepdims=False):  # noqa: A001
    """Sum over ``axis`` (None: all axes)."""
    arr = _check(a, "sum")
    return _Sum(_norm_axis(axis, arr.ndim), keepdims).apply(a)


def mean(a, axis=None, keepdims=False):
    """Mean over ``axis`` (None: all axes)."""
    arr = _check(a, "mean")
    return _Mean(_norm_axis(axis, arr.ndim), keepdims).apply(a)


def _logsumexp(x, axis):
    xp = array_module(x)
    m = x.max(axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0)
    return xp.log(xp.exp(x - m).sum(axis=axis, keepdims=True)) + m


class _Softmax(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        xp = array_module(x)
        e = xp.exp(x - x.max(axis=self.axis, keepdims=True))
        out = e / e.sum(axis=self.axis, keepdims=True)
        self.out = out
        return out

    def backward(self, g):
        y = self.out
        return (y * (g - (g * y).sum(axis=self.axis, keepdims=True)),)


class _LogSoftmax(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        out = x - _logsumexp(x, self.axis)
        self.out = out
        return out

    def backward(self, g):
        xp = array_module(g)
        return (g - xp.exp(self.out) * g.sum(axis=self.axis, keepdims=True),)


class _LogSumExp(Function):
    def __init__(self, axis, keepdims):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.x = x
        lse = _logsumexp(x, self.axis)
        self.lse = lse
        return lse if self.keepdims else lse.squeeze(axis=self.axis)

    def backward(self, g):
        xp = array_module(g)
        if not self.keepdims:
            g = xp.expand_dims(g, self.axis)
        return (g * xp.exp(self.x - self.lse),)


def _one_axis(axis, ndim):
    if not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an int, got {axis!r}")
    return _norm_axis(axis, ndim)[0]


def softmax(x, axis=-1):
    """``exp(x) / sum(exp(x))`` along ``axis`` (computed stably)."""
    arr = _check(x, "softmax")
    return _Softmax(_one_axis(axis, arr.ndim)).apply(x)


def log_softmax(x, axis=-1):
    """``x - logsumexp(x)`` along ``axis``."""
    arr = _check(x, "log_softmax")
    return _LogSoftmax(_one_axis(axis, arr.ndim)).apply(x)


def logsumexp(x, axis=-1, keepdims=False):
    """``log(sum(exp(x)))`` along ``axis`` (computed stably)."""
    arr = _check(x, "logsumexp")
    return _LogSumExp(_one_axis(axis, arr.ndim), keepdims).apply(x)
