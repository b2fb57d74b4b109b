"""Shape operations: reshape, transpose, indexing/slicing, concat/stack/split,
pad, broadcast_to, flip, expand_dims, squeeze."""

from __future__ import annotations

import numbers

import numpy as np

from .._validate import array_module
from .arith import unbroadcast
from .function import Function
from .tensor import Tensor, as_array, is_array

__all__ = ["reshape", "transpose", "getitem", "concat", "stack", "split", "pad",
           "broadcast_to", "flip", "expand_dims", "squeeze"]


def _check(a, name):
    if not (isinstance(a, Tensor) or is_array(a)):
        raise TypeError(f"{name} expects a Tensor or an array, got {type(a).__name__}")
    return as_array(a)


class _Reshape(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, a):
        self.in_shape = a.shape
        return a.reshape(self.shape)

    def backward(self, g):
        return (g.reshape(self.in_shape),)


def reshape(a, shape):
    """Reshape (one entry may be -1)."""
    arr = _check(a, "reshape")
    if isinstance(shape, numbers.Integral):
        shape = (int(shape),)
    shape = tuple(int(s) for s in shape)
    known = int(np.prod([s for s in shape if s != -1])) if shape else 1
    n_free = shape.count(-1)
    if n_free > 1 or any(s < -1 for s in shape) or (
            n_free == 0 and known != arr.size) or (
            n_free == 1 and (known == 0 or arr.size % known)):
        raise ValueError(f"cannot reshape an array of shape {tuple(arr.shape)} (size "
                         f"{arr.size}) into shape {shape}")
    return _Reshape(shape).apply(a)


class _Transpose(Function):
    def __init__(self, axes):
        self.axes = axes

    def forward(self, a):
        return a.transpose(self.axes)

    def backward(self, g):
        return (g.transpose(tuple(np.argsort(self.axes))),)


def transpose(a, axes=None):
    """Permute axes (None reverses them)."""
    arr = _check(a, "transpose")
    if axes is None:
        axes = tuple(range(arr.ndim))[::-1]
    axes = tuple(int(x) % max(arr.ndim, 1) for x in axes)
    if sorted(axes) != list(range(arr.ndim)):
        raise ValueError(f"axes {axes} is not a permutation of the {arr.ndim} axes of an "
                         f"array of shape {tuple(arr.shape)}")
    return _Transpose(axes).apply(a)


def _is_basic(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (numbers.Integral, slice)) or i is None or i is Ellipsis
               for i in items if not isinstance(i, bool))


class _GetItem(Function):
    def __init__(self, index):
        self.index = index

    def forward(self, a):
        self.in_shape, self.dtype = a.shape, a.dtype
        return a[self.index]

    def backward(self, g):
        xp = array_module(g)
        out = xp.zeros(self.in_shape, dtype=g.dtype)
        if _is_basic(self.index):
            out[self.index] = g
        else:
            xp.add.at(out, self.index, g)
        return (out,)


def getitem(a, index):
    """``a[index]``: basic slicing and integer/boolean array indexing."""
    _check(a, "getitem")
    if isinstance(index, tuple):
        index = tuple(as_array(i) for i in index)
    else:
        index = as_array(index)
    return _GetItem(index).apply(a)


class _Concat(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, *arrays):
        self.sizes = [a.shape[self.axis] for a in arrays]
        return array_module(arrays[0]).concatenate(arrays, axis=self.axis)

    def backward(self, g):
        out = []
        start = 0
        for size, need in zip(self.sizes, self.needs_input_grad):
            if need:
                sl = [slice(None)] * g.ndim
                sl[self.axis] = slice(start, start + size)
                out.append(g[tuple(sl)])
            else:
                out.append(None)
            start += size
        return out


def concat(tensors, axis=0):
    """Join a sequence of Tensors/arrays along an existing axis."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("concat needs at least one Tensor")
    arrays = [_check(t, "concat") for t in tensors]
    nd = arrays[0].ndim
    if not -nd <= axis < nd:
        raise ValueError(f"axis {axis} is out of range for {nd}-dim inputs")
    axis %= nd
    ref = arrays[0].shape
    for i, a in enumerate(arrays):
        if a.ndim != nd or any(s != r for j, (s, r) in enumerate(zip(a.shape, ref)) if j != axis):
            raise ValueError(
                f"concat along axis {axis}: input {i} has shape {tuple(a.shape)}, not compatible "
                f"with input 0's {tuple(ref)} (all dims but axis {axis} must match)")
    return _Concat(axis).apply(*tensors)


def stack(tensors, axis=0):
    """Join Tensors of one shape along a new axis."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack needs at least one Tensor")
    nd = _check(tensors[0], "stack").ndim + 1
    if not -nd <= axis < nd:
        raise ValueError(f"axis {axis} is out of range for the stacked {nd}-dim result")
    axis %= nd
    shapes = {tuple(_check(t, "stack").shape) for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"stack needs Tensors of one shape, got {sorted(shapes)}")
    return concat([expand_dims(t, axis) for t in tensors], axis=axis)


def split(a, indices_or_sections, axis=0):
    """Split along ``axis`` into equal sections (an int) or at the given
    indices (a sequence), like ``numpy.split``; returns a list."""
    arr = _check(a, "split")
    nd = arr.ndim
    if not -nd <= axis < nd:
        raise ValueError(f"axis {axis} is out of range for an array with {nd} dims")
    axis %= nd
    n = arr.shape[axis]
    if isinstance(indices_or_sections, numbers.Integral):
        k = int(indices_or_sections)
        if k <= 0 or n % k:
            raise ValueError(f"cannot split an axis of length {n} into {k} equal sections")
        bounds = [i * (n // k) for i in range(k + 1)]
    else:
        bounds = [0] + [int(i) for i in indices_or_sections] + [n]
    out = []
    for s, e in zip(bounds[:-1], bounds[1:]):
        sl = [slice(None)] * nd
        sl[axis] = slice(s, e)
        out.append(getitem(a, tuple(sl)))
    return out


class _Pad(Function):
    def __init__(self, widths, value):
        self.widths, self.value = widths, value

    def forward(self, a):
        xp = array_module(a)
        return xp.pad(a, self.widths, mode="constant", constant_values=self.value)

    def backward(self, g):
        sl = tuple(slice(b, g.shape[i] - e) for i, (b, e) in enumerate(self.widths))
        return (g[sl],)


def pad(a, pad_width, value=0.0):
    """Constant padding, ``pad_width`` as in ``numpy.pad``: an int, a
    ``(before, after)`` pair, or one pair per axis."""
    arr = _check(a, "pad")
    try:
        widths = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (arr.ndim, 2))
    except ValueError:
        raise ValueError(f"pad_width {pad_width!r} does not fit an array with {arr.ndim} dims: "
                         f"give an int, a (before, after) pair or {arr.ndim} pairs") from None
    if (widths < 0).any():
        raise ValueError(f"pad_width must be non-negative, got {pad_width!r}")
    widths = tuple((int(b), int(e)) for b, e in widths)
    return _Pad(widths, value).apply(a)


class _BroadcastTo(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, a):
        self.in_shape = a.shape
        return array_module(a).broadcast_to(a, self.shape)

    def backward(self, g):
        return (unbroadcast(g, self.in_shape),)


def broadcast_to(a, shape):
    """Broadcast to ``shape`` (a read-only view forward; summed backward)."""
    arr = _check(a, "broadcast_to")
    shape = tuple(int(s) for s in shape)
    try:
        np.broadcast_shapes(tuple(arr.shape), shape)
    except ValueError:
        raise ValueError(f"cannot broadcast shape {tuple(arr.shape)} to {shape}") from None
    return _BroadcastTo(shape).apply(a)


def flip(a, axis=None):
    """Reverse the order of elements along ``axis`` (None: all axes)."""
    arr = _check(a, "flip")
    axes = range(arr.ndim) if axis is None else (
        (axis,) if isinstance(axis, numbers.Integral) else axis)
    index = [slice(None)] * arr.ndim
    for ax in axes:
        index[ax] = slice(None, None, -1)
    return getitem(a, tuple(index))


def expand_dims(a, axis):
    """Insert a length-1 axis at ``axis``."""
    arr = _check(a, "expand_dims")
    nd = arr.ndim + 1
    if not -nd <= axis < nd:
        raise ValueError(f"axis {axis} is out of range for the {nd}-dim result")
    axis %= nd
    return reshape(a, tuple(arr.shape[:axis]) + (1,) + tuple(arr.shape[axis:]))


def squeeze(a, axis=None):
    """Remove length-1 axes (all of them, or the given ones)."""
    arr = _check(a, "squeeze")
    if axis is None:
        axes = [i for i, s in enumerate(arr.shape) if s == 1]
    else:
        axes = [axis] if isinstance(axis, numbers.Integral) else list(axis)
        axes = [x % arr.ndim for x in axes]
        bad = [x for x in axes if arr.shape[x] != 1]
        if bad:
            raise ValueError(f"cannot squeeze axis {bad[0]} of length {arr.shape[bad[0]]} "
                             f"(shape {tuple(arr.shape)})")
    return reshape(a, tuple(s for i, s in enumerate(arr.shape) if i not in axes))
