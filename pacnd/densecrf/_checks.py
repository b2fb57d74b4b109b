"""Argument checks of :mod:`pacnd.densecrf`: pydensecrf's contract, as clear errors.

pydensecrf takes C-contiguous float32 (and uint8 for RGB) buffers and crashes
or silently misbehaves on much else (wrong shapes, NaN, unknown enum values).
These checks keep its contract — code that works with pydensecrf works here —
but every violation is a ValueError/TypeError that names the argument, what
was given and the fix.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["check_count", "check_f32", "check_compat", "check_enum", "check_sxy"]


def check_count(v, name, minimum):
    """An int >= ``minimum`` (NumPy integers accepted)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {v!r}")
    if v < minimum:
        raise ValueError(f"{name}={int(v)} must be >= {minimum}")
    return int(v)


def _kind(a):
    return {"f": "floating", "i": "integer", "u": "unsigned integer", "b": "boolean",
            "c": "complex", "O": "object"}.get(a.dtype.kind, a.dtype.kind)


def check_f32(a, name, shape=None, *, what="", finite=True, dtype=np.float32, layout="C"):
    """A C-contiguous array of ``dtype`` (float32) with ``shape`` (None entries: any size).

    pydensecrf's buffers are ``float[:, ::1]``: other dtypes, non-contiguous views and
    other numbers of dimensions are refused with the conversion that fixes them
    (``layout='any'``: any memory layout, for arrays that are only read or assigned to).
    """
    dt = np.dtype(dtype)
    if not isinstance(a, np.ndarray):
        if hasattr(a, "__array__") and not isinstance(a, (str, bytes)):
            raise TypeError(f"{name} must be a NumPy array, got {type(a).__name__}; convert it "
                            f"with np.ascontiguousarray({name}, dtype=np.{dt.name})")
        raise TypeError(f"{name} must be a {dt.name} NumPy array{what}, got "
                        f"{type(a).__name__}")
    if a.dtype != dt:
        raise ValueError(f"{name} has dtype {a.dtype} ({_kind(a)}) but must be {dt.name} (as "
                         f"pydensecrf's buffers); convert it with {name}.astype(np.{dt.name})")
    if shape is not None:
        if a.ndim != len(shape) or any(s is not None and n != s for n, s in zip(a.shape, shape)):
            want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + \
                   ("," if len(shape) == 1 else "") + ")"
            raise ValueError(f"bad shape for {name}: need {want}{what}, got {a.shape}")
    if layout == "C" and not a.flags.c_contiguous:
        raise ValueError(f"{name} is not C-contiguous (a transposed or sliced view?); pass "
                         f"np.ascontiguousarray({name})")
    if finite and a.dtype.kind == "f" and a.size and not np.isfinite(a.sum(dtype=np.float64)) \
            and not np.isfinite(a).all():  # the sum is a fast test; overflow re-checks
        bad = int((~np.isfinite(a)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s); fix them first "
                         f"(e.g. clip probabilities before the log: unary_from_softmax does)")
    return a


def check_compat(compat, n_labels):
    """A label compatibility: a number (Potts), a float32 vector (L,) or matrix (L, L)."""
    if isinstance(compat, numbers.Real) and not isinstance(compat, bool):
        v = float(compat)
        if not np.isfinite(v):
            raise ValueError(f"compat={compat!r} must be finite")
        return v
    if isinstance(compat, np.ndarray):
        if compat.ndim == 0:
            return check_compat(compat.item(), n_labels)
        if compat.ndim > 2:
            raise ValueError(f"compat has {compat.ndim} dimensions {compat.shape}: a label "
                             f"compatibility of dimension > 2 is not meaningful; give a number, "
                             f"a vector ({n_labels},) or a matrix ({n_labels}, {n_labels})")
        if compat.dtype != np.float32:
            raise ValueError(f"compat has dtype {compat.dtype} but must be float32 (as "
                             f"pydensecrf's); convert it with compat.astype(np.float32)")
        want = (n_labels,) if compat.ndim == 1 else (n_labels, n_labels)
        if compat.shape != want:
            raise ValueError(f"compat has shape {compat.shape}; this CRF has {n_labels} labels, "
                             f"so give a vector ({n_labels},) or a matrix "
                             f"({n_labels}, {n_labels})")
        if not np.isfinite(compat).all():
            raise ValueError("compat contains NaN or infinite values")
        return compat.astype(np.float64)
    raise TypeError(f"compat must be a number (Potts), or a float32 vector ({n_labels},) or "
                    f"matrix ({n_labels}, {n_labels}) NumPy array, got {type(compat).__name__}")


def check_enum(value, enum, name):
    """A member of ``enum`` (an IntEnum) from a member or its int value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be one of {[m.name for m in enum]}, got {value!r}")
    try:
        return enum(int(value))
    except ValueError:
        raise ValueError(f"{name}={int(value)} is not one of "
                         f"{', '.join(f'{m.name} ({int(m)})' for m in enum)}") from None


def check_sxy(v, name, n):
    """A positive std, or ``n`` of them -> tuple of n floats."""
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        vals = (v,) * n
    else:
        try:
            vals = tuple(v)
        except TypeError:
            raise TypeError(f"{name} must be a number or {n} numbers, got {v!r}") from None
        if len(vals) != n:
            raise ValueError(f"{name}={vals} has {len(vals)} entries; give one number or {n}")
    out = []
    for x in vals:
        if isinstance(x, bool) or not isinstance(x, numbers.Real) or not np.isfinite(x) \
                or x <= 0:
            raise ValueError(f"{name}={v!r} must hold positive numbers (standard deviations)")
        out.append(float(x))
    return tuple(out)
