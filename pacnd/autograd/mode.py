"""Gradient recording mode: :func:`no_grad`, :func:`enable_grad`, :func:`is_grad_enabled`.

Recording is on by default. Inside ``no_grad()`` operations on Tensors return
Tensors that do not require grad and record nothing (inference, metrics,
optimizer updates). The flag is per thread.
"""

from __future__ import annotations

import functools
import threading

__all__ = ["no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled"]

_state = threading.local()


def is_grad_enabled():
    """True when operations on Tensors record the graph (the default)."""
    return getattr(_state, "enabled", True)


def _set(mode):
    _state.enabled = bool(mode)


class set_grad_enabled:
    """Context manager (and decorator) that sets gradient recording on or off."""

    def __init__(self, mode):
        if not isinstance(mode, bool):
            raise TypeError(f"mode must be True or False, got {mode!r}")
        self.mode = mode
        self._prev = []

    def __enter__(self):
        self._prev.append(is_grad_enabled())
        _set(self.mode)
        return self

    def __exit__(self, *exc):
        _set(self._prev.pop())
        return False

    def __call__(self, func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with type(self)(*self._args()):
                return func(*args, **kwargs)
        return wrapper

    def _args(self):
        return (self.mode,)


class no_grad(set_grad_enabled):
    """Turn gradient recording off: ``with no_grad(): y = model(x)`` (or ``@no_grad()``)."""

    def __init__(self):
        super().__init__(False)

    def _args(self):
        return ()


class enable_grad(set_grad_enabled):
    """Turn gradient recording back on inside a :class:`no_grad` block."""

    def __init__(self):
        super().__init__(True)

    def _args(self):
        return ()
