"""Elementwise differentiable operations: arithmetic with broadcasting,
exp/log/sqrt/abs/pow, activations (relu, leaky_relu, sigmoid, tanh),
``where``, ``clip``, dtype casts and ``matmul``.

Each public function accepts arrays, Tensors and Python numbers; it returns a
plain array when no argument is a Tensor (see :meth:`Function.apply`).
Gradients of broadcast operands are summed back to the operand's shape.
"""

from __future__ import annotations

import numbers

import numpy as np

from .._validate import array_module, on_device_of
from .function import Function
from .tensor import Tensor, as_array, is_array

__all__ = [
    "add", "sub", "mul", "div", "pow", "neg", "exp", "log", "sqrt", "abs", "relu",
    "leaky_relu", "sigmoid", "tanh", "where", "clip", "cast", "matmul", "maximum", "minimum",
    "unbroadcast",
]


def unbroadcast(g, shape):
    """Sum ``g`` over the axes that broadcasting expanded, giving ``shape``."""
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        i + lead for i, s in enumerate(shape) if s == 1 and g.shape[i + lead] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def _operands(a, b):
    """Turn Python numbers into 0-d arrays of the other operand's dtype
    (so float32 stays float32)."""
    a_num = isinstance(a, numbers.Number) and not isinstance(a, bool)
    b_num = isinstance(b, numbers.Number) and not isinstance(b, bool)
    if a_num and not b_num:
        ref = as_array(b)
        a = _scalar_like(a, ref)
    elif b_num and not a_num:
        ref = as_array(a)
        b = _scalar_like(b, ref)
    elif a_num and b_num:
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    for v, name in ((a, "left"), (b, "right")):
        if not (isinstance(v, Tensor) or is_array(v)):
            raise TypeError(f"unsupported {name} operand of type {type(v).__name__}; "
                            f"use a Tensor, an array or a number")
    return a, b


def _scalar_like(value, ref):
    xp = array_module(ref)
    dt = ref.dtype if ref.dtype.kind in "fc" else np.result_type(ref.dtype, type(value))
    return xp.asarray(value, dtype=dt)


# --------------------------------------------------------------------- binary
class _Add(Function):
    def forward(self, a, b):
        self.shapes = (a.shape, b.shape)
        return a + b

    def backward(self, g):
        na, nb = self.needs_input_grad
        return (unbroadcast(g, self.shapes[0]) if na else None,
                unbroadcast(g, self.shapes[1]) if nb else None)


class _Sub(Function):
    def forward(self, a, b):
        self.shapes = (a.shape, b.shape)
        return a - b

    def backward(self, g):
        na, nb = self.needs_input_grad
        return (unbroadcast(g, self.shapes[0]) if na else None,
                unbroadcast(-g, self.shapes[1]) if nb else None)


class _Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        na, nb = self.needs_input_grad
        return (unbroadcast(g * self.b, self.a.shape) if na else None,
                unbroadcast(g * self.a, self.b.shape) if nb else None)


class _Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        out = a / b
        self.out = out
        return out

    def backward(self, g):
        na, nb = self.needs_input_grad
        ga = gb = None
        if na:
            ga = unbroadcast(g / self.b, self.a.shape)
        if nb:
            gb = unbroadcast(-g * self.out / self.b, self.b.shape)
        return ga, gb


class _Pow(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        out = a ** b
        self.out = out
        return out

    def backward(self, g):
        na, nb = self.needs_input_grad
        xp = array_module(g)
        ga = gb = None
        if na:
            ga = unbroadcast(g * self.b * self.a ** (self.b - 1), self.a.shape)
        if nb:
            # d(a^b)/db = a^b log a; 0 where a == 0 (limit for b > 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                loga = xp.where(self.a > 0, xp.log(xp.where(self.a > 0, self.a, 1)), 0)
            gb = unbroadcast(g * self.out * loga, self.b.shape)
        return ga, gb


class _Maximum(Function):
    def forward(self, a, b):
        self.mask = a >= b
        self.shapes = (a.shape, b.shape)
        return array_module(a).maximum(a, b)

    def backward(self, g):
        na, nb = self.needs_input_grad
        xp = array_module(g)
        return (unbroadcast(xp.where(self.mask, g, 0), self.shapes[0]) if na else None,
                unbroadcast(xp.where(self.mask, 0, g), self.shapes[1]) if nb else None)


class _Minimum(_Maximum):
    def forward(self, a, b):
        self.mask = a <= b
        self.shapes = (a.shape, b.shape)
        return array_module(a).minimum(a, b)


def add(a, b):
    """``a + b`` with broadcasting."""
    return _Add().apply(*_operands(a, b))


def sub(a, b):
    """``a - b`` with broadcasting."""
    return _Sub().apply(*_operands(a, b))


def mul(a, b):
    """``a * b`` with broadcasting."""
    return _Mul().apply(*_operands(a, b))


def div(a, b):
    """``a / b`` with broadcasting."""
    return _Div().apply(*_operands(a, b))


def pow(a, b):  # noqa: A001 - mirrors operator name
    """``a ** b`` (either may be a Tensor)."""
    if isinstance(b, numbers.Number) and not isinstance(b, bool) and isinstance(a, Tensor):
        return _PowScalar(b).apply(a)
    return _Pow().apply(*_operands(a, b))


def maximum(a, b):
    """Elementwise maximum (the gradient goes to ``a`` on ties)."""
    return _Maximum().apply(*_operands(a, b))


def minimum(a, b):
    """Elementwise minimum (the gradient goes to ``a`` on ties)."""
    return _Minimum().apply(*_operands(a, b))


class _PowScalar(Function):
    def __init__(self, p):
        self.p = p

    def forward(self, a):
        self.a = a
        p = self.p
        return a ** (a.dtype.type(p) if a.dtype.kind == "f" else p)

    def backward(self, g):
        a, p = self.a, self.p
        if p == 2:
            return (g * (2 * a),)
        return (g * (p * a ** (a.dtype.type(p - 1))),)


# --------------------------------------------------------------------- unary
class _Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return (-g,)


class _Exp(Function):
    def forward(self, a):
        self.out = array_module(a).exp(a)
        return self.out

    def backward(self, g):
        return (g * self.out,)


class _Log(Function):
    def forward(self, a):
        self.a = a
        return array_module(a).log(a)

    def backward(self, g):
        return (g / self.a,)


class _Sqrt(Function):
    def forward(self, a):
        self.out = array_module(a).sqrt(a)
        return self.out

    def backward(self, g):
        return (g / (2 * self.out),)


class _Abs(Function):
    def forward(self, a):
        self.a = a
        return array_module(a).abs(a)

    def backward(self, g):
        return (g * array_module(g).sign(self.a),)


class _Relu(Function):
    def forward(self, a):
        out = array_module(a).maximum(a, 0)
        self.out = out
        return out

    def backward(self, g):
        return (array_module(g).where(self.out > 0, g, 0),)


class _LeakyRelu(Function):
    def __init__(self, slope):
        self.slope = slope

    def forward(self, a):
        self.a = a
        xp = array_module(a)
        return xp.where(a > 0, a, a * a.dtype.type(self.slope))

    def backward(self, g):
        xp = array_module(g)
        return (xp.where(self.a > 0, g, g * g.dtype.type(self.slope)),)


class _Sigmoid(Function):
    def forward(self, a):
        # 0.5 (1 + tanh(a/2)): no overflow for large |a|
        half = a.dtype.type(0.5)
        out = half * (array_module(a).tanh(a * half) + 1)
        self.out = out
        return out

    def backward(self, g):
        return (g * self.out * (1 - self.out),)


class _Tanh(Function):
    def forward(self, a):
        self.out = array_module(a).tanh(a)
        return self.out

    def backward(self, g):
        return (g * (1 - self.out * self.out),)


class _Where(Function):
    def __init__(self, cond):
        self.cond = cond

    def forward(self, a, b):
        self.shapes = (a.shape, b.shape)
        return array_module(a).where(self.cond, a, b)

    def backward(self, g):
        na, nb = self.needs_input_grad
        xp = array_module(g)
        return (unbroadcast(xp.where(self.cond, g, 0), self.shapes[0]) if na else None,
                unbroadcast(xp.where(self.cond, 0, g), self.shapes[1]) if nb else None)


class _Clip(Function):
    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def forward(self, a):
        xp = array_module(a)
        self.a = a
        return xp.clip(a, self.lo, self.hi)

    def backward(self, g):
        inside = True
        if self.lo is not None:
            inside = self.a >= self.lo
        if self.hi is not None:
            inside = inside & (self.a <= self.hi)
        return (array_module(g).where(inside, g, 0),)


class _Cast(Function):
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)

    def forward(self, a):
        self.src = a.dtype
        return a.astype(self.dtype)

    def backward(self, g):
        return (g.astype(self.src),)


class _MatMul(Function):
    def forward(self, a, b):
        if a.ndim < 2 or b.ndim < 2:
            raise ValueError(f"matmul needs operands with at least 2 dims, got shapes "
                             f"{tuple(a.shape)} and {tuple(b.shape)}; reshape vectors to "
                             f"(1, n) or (n, 1)")
        self.a, self.b = a, b
        return a @ b

    def backward(self, g):
        na, nb = self.needs_input_grad
        xp = array_module(g)
        ga = unbroadcast(g @ xp.swapaxes(self.b, -1, -2), self.a.shape) if na else None
        gb = unbroadcast(xp.swapaxes(self.a, -1, -2) @ g, self.b.shape) if nb else None
        return ga, gb


def _unary(fn, a, name):
    if not (isinstance(a, Tensor) or is_array(a)):
        raise TypeError(f"{name} expects a Tensor or an array, got {type(a).__name__}")
    return fn.apply(a)


def neg(a):
    """``-a``."""
    return _unary(_Neg(), a, "neg")


def exp(a):
    """Elementwise ``exp``."""
    return _unary(_Exp(), a, "exp")


def log(a):
    """Elementwise natural log."""
    return _unary(_Log(), a, "log")


def sqrt(a):
    """Elementwise square root."""
    return _unary(_Sqrt(), a, "sqrt")


def abs(a):  # noqa: A001
    """Elementwise absolute value (gradient ``sign(a)``, 0 at 0)."""
    return _unary(_Abs(), a, "abs")


def relu(a):
    """``max(a, 0)`` (gradient 0 at 0)."""
    return _unary(_Relu(), a, "relu")


def leaky_relu(a, negative_slope=0.01):
    """``a`` where positive, ``negative_slope * a`` elsewhere."""
    if not isinstance(negative_slope, numbers.Real):
        raise TypeError(f"negative_slope must be a number, got {negative_slope!r}")
    return _unary(_LeakyRelu(float(negative_slope)), a, "leaky_relu")


def sigmoid(a):
    """Logistic sigmoid ``1 / (1 + exp(-a))``, computed without overflow."""
    return _unary(_Sigmoid(), a, "sigmoid")


def tanh(a):
    """Hyperbolic tangent."""
    return _unary(_Tanh(), a, "tanh")


def where(cond, a, b):
    """``a`` where ``cond`` (a boolean array, not differentiated) else ``b``; a
    NumPy ``cond`` is copied to the GPU when the operands are CuPy arrays."""
    cond = as_array(cond)
    if not is_array(cond):
        cond = np.asarray(cond)
    if cond.dtype != np.bool_:
        raise TypeError(f"cond must be a boolean array, got dtype {cond.dtype}")
    a, b = _operands(a, b)
    cond = on_device_of(cond, as_array(a))  # a NumPy mask with CuPy operands
    return _Where(cond).apply(a, b)


def clip(a, min=None, max=None):  # noqa: A002
    """Clamp to ``[min, max]``; the gradient passes where the value was kept."""
    if min is None and max is None:
        raise ValueError("clip needs min, max or both")
    return _unary(_Clip(min, max), a, "clip")


def cast(a, dtype):
    """Convert to ``dtype``; the gradient is converted back."""
    return _unary(_Cast(dtype), a, "cast")


def matmul(a, b):
    """Matrix product ``a @ b`` (both at least 2-D; batch dims broadcast)."""
    return _MatMul().apply(*_operands(a, b))
