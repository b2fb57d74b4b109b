"""Argument checking shared by every public call.

Each check raises ``TypeError`` (wrong kind of thing) or ``ValueError`` (right
kind, wrong value) with a message that names the argument, what was given and
how to fix it.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

__all__ = [
    "array_module", "check_float_array", "spatial_tuple", "check_finite", "check_shape",
    "common_float_dtype", "on_device_of", "to_module",
]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def array_module(a):
    """The array module of ``a``: NumPy, or CuPy for CuPy arrays (never imports CuPy)."""
    mod = type(a).__module__.split(".")[0]
    if mod == "cupy":
        from ._cupy import cupy_module  # noqa: PLC0415 - only reached with a CuPy array
        return cupy_module()
    return np


def on_device_of(a, ref):
    """``a`` on the device of ``ref``: a NumPy constant (mask, labels, filter
    init) is copied to the GPU when ``ref`` is a CuPy array; otherwise ``a`` is
    returned unchanged (CuPy refuses NumPy operands in arithmetic and in
    ``x[...] = value``)."""
    xp = array_module(ref)
    if xp is not np and isinstance(a, np.ndarray):
        return xp.asarray(a)
    return a


def to_module(a, xp, dtype=None):
    """``a`` as an array of module ``xp`` (NumPy or CuPy): a CuPy array given
    for NumPy is copied to the host (``.get()``; NumPy refuses the implicit
    conversion), anything else goes through ``xp.asarray``."""
    if xp is np and type(a).__module__.split(".")[0] == "cupy":
        a = a.get()
    return xp.asarray(a, dtype=dtype)


def _is_array(a):
    return isinstance(a, np.ndarray) or type(a).__module__.split(".")[0] == "cupy"


def check_float_array(a, name, *, ndim=None, allow_none=False):
    """Return ``a`` if it is a float32/float64 NumPy or CuPy array, else raise."""
    if a is None:
        if allow_none:
            return None
        raise TypeError(f"{name} is required: pass a float32 or float64 array")
    if not _is_array(a):
        if hasattr(a, "data") and _is_array(getattr(a, "data")) and \
                any(c.__name__ == "Tensor" for c in type(a).__mro__):
            a = a.data
        else:
            raise TypeError(
                f"{name} must be a NumPy or CuPy array, got {type(a).__name__}; "
                f"wrap it with np.asarray({name}, dtype=np.float32)")
    if a.dtype not in _FLOAT_DTYPES:
        kind = {"i": "integer", "u": "unsigned integer", "b": "boolean", "c": "complex",
                "f": "floating"}.get(a.dtype.kind, a.dtype.kind)
        raise TypeError(
            f"{name} has dtype {a.dtype} ({kind}); PAC operations need float32 or float64 — "
            f"convert with {name}.astype(np.float32)")
    if ndim is not None and a.ndim not in (ndim if isinstance(ndim, tuple) else (ndim,)):
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(a.shape)}")
    return a


def common_float_dtype(*arrays):
    """float64 if any given array is float64, else float32."""
    dts = [a.dtype for a in arrays if a is not None]
    return np.result_type(*dts) if dts else np.dtype(np.float32)


def spatial_tuple(value, ndim, name, *, minimum=None):
    """Expand an int or a length-``ndim`` sequence of ints to a tuple, checked."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        tup = (int(value),) * ndim
    elif isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != ndim:
            raise ValueError(
                f"{name} has {len(value)} entries {tuple(value)} but the operation has {ndim} "
                f"spatial dimension(s); give one int or {ndim} ints")
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
            raise TypeError(f"{name} must hold ints, got {tuple(value)}")
        tup = tuple(int(v) for v in value)
    else:
        raise TypeError(f"{name} must be an int or a sequence of {ndim} ints, got {value!r}")
    if minimum is not None and any(v < minimum for v in tup):
        what = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{name}={tup if len(set(tup)) > 1 else tup[0]} is invalid: every entry must be "
                         f"{what}")
    return tup


def check_finite(a, name):
    """Raise ValueError if ``a`` holds NaN or infinity."""
    xp = array_module(a)
    if not bool(xp.isfinite(a).all()):
        n_nan = int(xp.isnan(a).sum())
        what = f"{n_nan} NaN value(s)" if n_nan else "infinite value(s)"
        raise ValueError(
            f"{name} contains {what}; PAC kernels of non-finite features are undefined — "
            f"fill them first (e.g. np.nan_to_num({name}) or inpaint the holes)")


def check_shape(a, name, expected, hint=""):
    """Raise ValueError unless ``a.shape == expected``."""
    if tuple(a.shape) != tuple(expected):
        raise ValueError(f"{name} has shape {tuple(a.shape)}, expected {tuple(expected)}"
                         + (f"; {hint}" if hint else ""))


def as_ndarray(a, name, what, hint=""):
    """``a`` as a NumPy array: arrays pass through, array-likes (``__array__``)
    are converted; anything else is a TypeError saying what ``name`` must be."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "__array__") and not isinstance(a, (str, bytes)):
        return np.asarray(a)
    raise TypeError(f"{name} must be {what}, got {type(a).__name__}{hint}")


def check_int(v, name, minimum, hint):
    """``v`` as an int >= ``minimum``: TypeError for a non-int (bools rejected),
    ValueError ``"{name}={v} is invalid: {hint}"`` below the minimum."""
    if not isinstance(v, numbers.Integral) or isinstance(v, bool):
        raise TypeError(f"{name} must be an int, got {v!r}")
    if v < minimum:
        raise ValueError(f"{name}={v} is invalid: {hint}")
    return int(v)
