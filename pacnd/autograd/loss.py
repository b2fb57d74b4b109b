"""Losses: ``mse_loss``, ``l1_loss``, ``cross_entropy`` (PyTorch semantics).

Each is one graph node (no intermediate Tensors). ``reduction`` is
``'mean'`` (default), ``'sum'`` or ``'none'``.
"""

from __future__ import annotations

import numbers

import numpy as np

from .._validate import array_module, on_device_of
from .function import Function
from .tensor import Tensor, as_array, is_array

__all__ = ["mse_loss", "l1_loss", "cross_entropy"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_pair(pred, target, name):
    for v, what in ((pred, "input"), (target, "target")):
        if not (isinstance(v, Tensor) or is_array(v)):
            raise TypeError(f"{name}: {what} must be a Tensor or an array, got {type(v).__name__}")
    p, t = as_array(pred), as_array(target)
    if tuple(p.shape) != tuple(t.shape):
        raise ValueError(f"{name}: input has shape {tuple(p.shape)} but target has shape "
                         f"{tuple(t.shape)}; they must match (crop or resize one of them)")


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}; choose one of {_REDUCTIONS}")


class _Elementwise(Function):
    def __init__(self, reduction):
        self.reduction = reduction

    def _reduce(self, e):
        if self.reduction == "mean":
            return e.mean()
        if self.reduction == "sum":
            return e.sum()
        return e

    def _scale(self, g, n):
        if self.reduction == "mean":
            return g / g.dtype.type(n)
        return g


class _MSE(_Elementwise):
    def forward(self, p, t):
        self.diff = p - t
        return self._reduce(self.diff * self.diff)

    def backward(self, g):
        gd = self._scale(g, self.diff.size) * (2 * self.diff)
        return (gd if self.needs_input_grad[0] else None,
                -gd if self.needs_input_grad[1] else None)


class _L1(_Elementwise):
    def forward(self, p, t):
        self.diff = p - t
        return self._reduce(array_module(p).abs(self.diff))

    def backward(self, g):
        gd = self._scale(g, self.diff.size) * array_module(g).sign(self.diff)
        return (gd if self.needs_input_grad[0] else None,
                -gd if self.needs_input_grad[1] else None)


def mse_loss(input, target, reduction="mean"):
    """Mean squared error ``mean((input - target)^2)``."""
    _check_pair(input, target, "mse_loss")
    _check_reduction(reduction)
    return _MSE(reduction).apply(input, target)


def l1_loss(input, target, reduction="mean"):
    """Mean absolute error ``mean(|input - target|)`` (gradient 0 where equal)."""
    _check_pair(input, target, "l1_loss")
    _check_reduction(reduction)
    return _L1(reduction).apply(input, target)


class _CrossEntropy(Function):
    def __init__(self, target, axis, ignore_index, reduction):
        self.target, self.axis = target, axis
        self.ignore_index, self.reduction = ignore_index, reduction

    def forward(self, x):
        xp = array_module(x)
        ax = self.axis
        m = x.max(axis=ax, keepdims=True)
        shifted = x - m
        logsm = shifted - xp.log(xp.exp(shifted).sum(axis=ax, keepdims=True))
        valid = self.target != self.ignore_index
        tgt = xp.where(valid, self.target, 0)
        picked = xp.take_along_axis(logsm, xp.expand_dims(tgt, ax), axis=ax).squeeze(ax)
        loss = xp.where(valid, -picked, 0).astype(x.dtype)
        self.logsm, self.valid, self.tgt = logsm, valid, tgt
        self.n_valid = int(valid.sum())
        if self.reduction == "none":
            return loss
        total = loss.sum()
        if self.reduction == "sum":
            return total
        return total / x.dtype.type(self.n_valid) if self.n_valid else total * x.dtype.type(np.nan)

    def backward(self, g):
        xp = array_module(g)
        ax = self.axis
        n_cls = self.logsm.shape[ax]
        labels = xp.arange(n_cls).reshape((-1,) + (1,) * (self.logsm.ndim - ax - 1))
        grad = xp.exp(self.logsm) - (xp.expand_dims(self.tgt, ax) == labels)
        w = xp.where(self.valid, g if self.reduction == "none" else 1, 0).astype(grad.dtype)
        if self.reduction == "mean":
            w = w * (g / g.dtype.type(max(self.n_valid, 1)))
        elif self.reduction == "sum":
            w = w * g
        return (grad * xp.expand_dims(w, ax),)


def cross_entropy(input, target, *, axis=1, ignore_index=-100, reduction="mean"):
    """Softmax cross-entropy of logits over a class axis with an ignore label.

    Parameters
    ----------
    input : Tensor or array (B, L, *S)
        Unnormalised scores (logits), classes along ``axis``.
    target : int array (B, *S)
        Class indices in ``[0, L)``, or ``ignore_index`` for pixels that do
        not count (e.g. 255, VOC's "void"). NumPy labels are copied to the
        GPU when ``input`` is a CuPy array.
    axis : int
        The class axis of ``input``.
    ignore_index : int
    reduction : {'mean', 'sum', 'none'}
        ``'mean'`` averages over the counted pixels (NaN if none counts, as in
        PyTorch).
    """
    if not (isinstance(input, Tensor) or is_array(input)):
        raise TypeError(f"cross_entropy: input must be a Tensor or an array, got "
                        f"{type(input).__name__}")
    x = as_array(input)
    t = as_array(target)
    if not is_array(t):
        t = np.asarray(t)
    t = on_device_of(t, x)  # NumPy labels with CuPy logits
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: target must hold integer class indices, got dtype "
                        f"{t.dtype}")
    if not isinstance(axis, numbers.Integral) or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis={axis!r} is not an axis of an input with {x.ndim} dims")
    axis %= x.ndim
    expect = tuple(s for i, s in enumerate(x.shape) if i != axis)
    if tuple(t.shape) != expect:
        raise ValueError(f"cross_entropy: target has shape {tuple(t.shape)}, expected {expect} "
                         f"(the input's shape {tuple(x.shape)} without the class axis {axis})")
    _check_reduction(reduction)
    n_cls = x.shape[axis]
    bad = (t != ignore_index) & ((t < 0) | (t >= n_cls))
    if bool(bad.any()):
        val = int(t[bad].ravel()[0])
        raise ValueError(f"cross_entropy: target holds label {val}, outside [0, {n_cls}) and not "
                         f"the ignore_index {ignore_index}")
    return _CrossEntropy(t.astype(np.int64), axis, ignore_index, reduction).apply(input)
