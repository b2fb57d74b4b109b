"""Tensor-aware operations: one function for arrays and for Tensors.

Every function here takes NumPy/CuPy arrays or :class:`~pacnd.autograd.Tensor`
objects. With plain arrays it returns a plain array (nothing is recorded);
with Tensors it returns a Tensor, and records the operation in the graph when
any input Tensor has ``requires_grad=True`` (and recording is on, see
:func:`~pacnd.autograd.no_grad`).

The PAC and convolution ops have exactly the signatures of :mod:`pacnd.ops`;
``input``, ``guide``, ``weight``, ``bias``, ``adapting`` and — for the
``'inverse'`` kernel — ``alpha`` and ``lam`` may be Tensors and are then
differentiated (``mask`` is a constant).

Also here: arithmetic (:func:`add` ... also as Tensor operators),
:func:`exp`, :func:`log`, activations (:func:`relu`, :func:`leaky_relu`,
:func:`sigmoid`, :func:`tanh`), reductions (:func:`sum`, :func:`mean`,
:func:`softmax`, :func:`log_softmax`), shape ops (:func:`reshape`,
:func:`transpose`, :func:`concat`, :func:`split`, :func:`pad`, indexing via
``tensor[...]``), :func:`interpolate` (PyTorch semantics), pooling
(:func:`avg_pool`, :func:`max_pool`) and losses (:func:`mse_loss`,
:func:`l1_loss`, :func:`cross_entropy`).
"""

from __future__ import annotations

from . import ops as _ops
from .autograd.arith import (abs, add, cast, clip, div, exp, leaky_relu, log, matmul, maximum,
                             minimum, mul, neg, pow, relu, sigmoid, sqrt, sub, tanh, where)
from .autograd.loss import cross_entropy, l1_loss, mse_loss
from .autograd.pac import PAIRS as _PAIRS
from .autograd.pac import apply_op as _apply
from .autograd.pool import avg_pool, max_pool
from .autograd.tensor import as_array
from .autograd.reduce import log_softmax, logsumexp, mean, softmax, sum
from .autograd.resize import interpolate, resize
from .autograd.shape import (broadcast_to, concat, expand_dims, flip, getitem, pad, reshape,
                             split, squeeze, stack, transpose)

__all__ = [
    "pac_conv", "pac_conv_transpose", "pac_pool", "adapting_kernel", "conv", "conv_transpose",
    "add", "sub", "mul", "div", "pow", "neg", "abs", "exp", "log", "sqrt", "relu",
    "leaky_relu", "sigmoid", "tanh", "where", "clip", "cast", "matmul", "maximum", "minimum",
    "sum", "mean", "softmax", "log_softmax", "logsumexp",
    "reshape", "transpose", "getitem", "concat", "stack", "split", "pad", "broadcast_to",
    "flip", "expand_dims", "squeeze",
    "interpolate", "resize", "avg_pool", "max_pool",
    "mse_loss", "l1_loss", "cross_entropy",
]

_NOTE = """
    Tensor-aware (:mod:`pacnd.functional`): arrays in, array out; Tensors in,
    Tensor out, recorded for backward when an input requires grad.
"""


def pac_conv(input, guide, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1,
             kernel="gaussian", alpha=None, lam=None, asym=False, normalize=False, mask=None,
             shared=False, adapting=None, channel_wise=False, engine=None):
    fn, vjp = _PAIRS["pac_conv"]
    return _apply(fn, vjp,
                  dict(input=input, guide=guide, weight=weight, bias=bias, adapting=adapting,
                       alpha=alpha, lam=lam),
                  dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                       kernel=kernel, asym=asym, normalize=normalize, mask=as_array(mask),
                       shared=shared, channel_wise=channel_wise, engine=engine))


def pac_conv_transpose(input, guide, weight, bias=None, *, stride=1, padding=0,
                       output_padding=0, dilation=1, groups=1, kernel="gaussian", alpha=None,
                       lam=None, asym=False, normalize=False, mask=None, shared=False,
                       adapting=None, channel_wise=False, engine=None):
    fn, vjp = _PAIRS["pac_conv_transpose"]
    return _apply(fn, vjp,
                  dict(input=input, guide=guide, weight=weight, bias=bias, adapting=adapting,
                       alpha=alpha, lam=lam),
                  dict(stride=stride, padding=padding, output_padding=output_padding,
                       dilation=dilation, groups=groups, kernel=kernel, asym=asym,
                       normalize=normalize, mask=as_array(mask), shared=shared,
                       channel_wise=channel_wise, engine=engine))


def pac_pool(input, guide, kernel_size, *, stride=1, padding=0, dilation=1, kernel="gaussian",
             alpha=None, lam=None, asym=False, normalize=False, channel_wise=False, mask=None,
             adapting=None, engine=None):
    fn, vjp = _PAIRS["pac_pool"]
    return _apply(fn, vjp,
                  dict(input=input, guide=guide, adapting=adapting, alpha=alpha, lam=lam),
                  dict(kernel_size=kernel_size, stride=stride, padding=padding,
                       dilation=dilation, kernel=kernel, asym=asym, normalize=normalize,
                       channel_wise=channel_wise, mask=as_array(mask), engine=engine))


def adapting_kernel(guide, kernel_size, *, stride=1, padding=0, dilation=1, kernel="gaussian",
                    alpha=None, lam=None, asym=False, normalize=False, mask=None,
                    channel_wise=False, transposed=False, output_padding=0, engine=None):
    fn, vjp = _PAIRS["adapting_kernel"]
    return _apply(fn, vjp, dict(guide=guide, alpha=alpha, lam=lam),
                  dict(kernel_size=kernel_size, stride=stride, padding=padding,
                       dilation=dilation, kernel=kernel, asym=asym, normalize=normalize,
                       mask=as_array(mask), channel_wise=channel_wise, transposed=transposed,
                       output_padding=output_padding, engine=engine))


def conv(input, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1, engine=None):
    fn, vjp = _PAIRS["conv"]
    return _apply(fn, vjp, dict(input=input, weight=weight, bias=bias),
                  dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                       engine=engine))


def conv_transpose(input, weight, bias=None, *, stride=1, padding=0, output_padding=0,
                   dilation=1, groups=1, engine=None):
    fn, vjp = _PAIRS["conv_transpose"]
    return _apply(fn, vjp, dict(input=input, weight=weight, bias=bias),
                  dict(stride=stride, padding=padding, output_padding=output_padding,
                       dilation=dilation, groups=groups, engine=engine))


for _f in (pac_conv, pac_conv_transpose, pac_pool, adapting_kernel, conv, conv_transpose):
    _f.__doc__ = (getattr(_ops, _f.__name__).__doc__ or "").rstrip() + "\n" + _NOTE
del _f
