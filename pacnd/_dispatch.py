"""The one place that picks a compute engine.

Engines by name:

* ``"numpy"`` — NumPy reference (the oracle; 1-3 spatial dims);
* ``"numba"`` — Numba ``parallel=True`` CPU fast path;
* ``"cuda"``  — Numba CUDA kernels (CuPy arrays);
* ``"cupy"``  — CuPy RawKernels (CuPy arrays).

``engine=None`` (the default of every public call) uses the configured engine
for the array's device: :func:`set_engine` / :func:`use_engine`, or the
``PACND_ENGINE`` environment variable, else ``"numba"`` for NumPy arrays (when
Numba imports) and ``"cupy"`` for CuPy arrays.
"""

from __future__ import annotations

import contextlib
import importlib
import os

__all__ = ["ENGINES", "select_engine", "set_engine", "get_engine", "use_engine"]

ENGINES = {
    "numpy": ("cpu", "pacnd.engines.reference"),
    "numba": ("cpu", "pacnd.engines.cpu"),
    "cuda": ("gpu", "pacnd.engines.cuda"),
    "cupy": ("gpu", "pacnd.engines.cupy"),
}
_DEFAULT = {"cpu": "numba", "gpu": "cupy"}
_configured = {"cpu": None, "gpu": None}


def _check_name(name):
    if name not in ENGINES:
        raise ValueError(f"engine={name!r} is not known; choose one of {sorted(ENGINES)} or None")


def set_engine(name):
    """Set the default engine for its device (``None`` restores the built-in default)."""
    if name is None:
        _configured["cpu"] = _configured["gpu"] = None
        return
    _check_name(name)
    _configured[ENGINES[name][0]] = name


def get_engine(device="cpu"):
    """Name of the engine that ``engine=None`` selects for ``device`` ('cpu' or 'gpu')."""
    if _configured[device] is not None:
        return _configured[device]
    env = os.environ.get("PACND_ENGINE")
    if env:
        if env not in ENGINES:
            raise ValueError(f"the environment variable PACND_ENGINE={env!r} is not a known "
                             f"engine; choose one of {sorted(ENGINES)} or unset it")
        if ENGINES[env][0] == device:
            return env
    return _DEFAULT[device]


@contextlib.contextmanager
def use_engine(name):
    """Context manager: run the enclosed calls on engine ``name``."""
    _check_name(name)
    device = ENGINES[name][0]
    old = _configured[device]
    _configured[device] = name
    try:
        yield
    finally:
        _configured[device] = old


def _device_of(arrays):
    devices = set()
    for a in arrays:
        if a is None:
            continue
        devices.add("gpu" if type(a).__module__.split(".")[0] == "cupy" else "cpu")
    if len(devices) > 1:
        raise ValueError("arrays are on different devices (some NumPy, some CuPy); move them all "
                         "to one with cupy.asarray(...) or cupy.asnumpy(...)")
    return devices.pop() if devices else "cpu"


def select_engine(arrays, engine=None):
    """Return the engine module for ``arrays`` (NumPy -> CPU, CuPy -> GPU) and ``engine``."""
    device = _device_of(arrays)
    if engine is None:
        name = get_engine(device)
    else:
        _check_name(engine)
        name = engine
        if ENGINES[name][0] != device:
            raise ValueError(
                f"engine={name!r} runs on the {ENGINES[name][0].upper()} but the arrays are "
                f"{'CuPy (GPU)' if device == 'gpu' else 'NumPy (CPU)'} arrays; pick a "
                f"{device.upper()} engine or move the arrays")
    try:
        return importlib.import_module(ENGINES[name][1])
    except ImportError as exc:
        explicit = engine is not None or _configured[device] is not None \
            or os.environ.get("PACND_ENGINE")
        if not explicit and name == "numba":
            # Only the built-in default falls back; an engine someone asked for never does.
            return importlib.import_module(ENGINES["numpy"][1])
        raise RuntimeError(f"engine {name!r} is not available: {exc}") from exc
