"""The one place that imports CuPy — lazily, on first use.

``import pacnd`` never imports CuPy; the GPU engines call :func:`cupy_module`
when they first run. Without CuPy, or without a visible CUDA device, that
raises :class:`RuntimeError` naming what is missing and how to install it.
"""

from __future__ import annotations

import importlib

__all__ = ["cupy_module", "cupy_module_or_none", "require_gpu", "INSTALL_HINT"]

INSTALL_HINT = ('install the GPU extra with  pip install "pacnd[gpu]"  (CuPy for CUDA 13, '
                'package cupy-cuda13x; use cupy-cuda12x for a CUDA 12 driver)')

_state = {"module": None, "error": None, "gpu_checked": False}


def cupy_module_or_none():
    """CuPy if it imports, else None (never raises)."""
    if _state["module"] is None and _state["error"] is None:
        try:
            _state["module"] = importlib.import_module("cupy")
        except Exception as exc:  # ImportError, or a CUDA library failing to load
            _state["error"] = exc
    return _state["module"]


def cupy_module():
    """CuPy, imported on first call; RuntimeError with an install hint if it is missing."""
    cp = cupy_module_or_none()
    if cp is None:
        exc = _state["error"]
        raise RuntimeError(f"the GPU engines need CuPy, which does not import here "
                           f"({type(exc).__name__}: {exc}); {INSTALL_HINT}") from exc
    return cp


def require_gpu(engine="cupy"):
    """CuPy, after checking that a CUDA device is visible (RuntimeError otherwise)."""
    cp = cupy_module()
    if not _state["gpu_checked"]:
        try:
            n = cp.cuda.runtime.getDeviceCount()
        except Exception as exc:
            raise RuntimeError(
                f"engine {engine!r} needs a CUDA GPU, but CuPy sees none ({type(exc).__name__}: "
                f"{exc}); check the NVIDIA driver (nvidia-smi) or use a CPU engine "
                f"('numba' or 'numpy') with NumPy arrays") from exc
        if n < 1:
            raise RuntimeError(f"engine {engine!r} needs a CUDA GPU, but no CUDA device is "
                               f"visible; use a CPU engine ('numba' or 'numpy') with NumPy arrays")
        _state["gpu_checked"] = True
    return cp
