"""A fix for Numba's CUDA simulator, installed by ``sim_numba_kernels.py``.

``FakeCUDAShared.array`` (numba-cuda 0.30) hands each simulated thread the
block's shared array through a check-then-set on a dict keyed by the calling
line::

    res = self._allocations.get(caller)
    if res is None:
        res = np.empty(shape, dtype)
        self._allocations[caller] = res

Two threads that are switched between the ``get`` and the store each make an
array of their own, so one thread's writes never reach the others and a block
reduction loses its partial sums. The simulator suite runs with a 10 us GIL
switch interval (see ``sim_numba_kernels.py``), which makes that switch rare but
not impossible: a CI run once got dL/dalpha and dL/dlambda of
``conv_inv_asym`` 30-45% wrong (the only reference-case outputs made by a
kernel with a shared array, ``adapting_bwd_d2``), and the same case passed on
rerun. Real GPUs have no such race; the kernels are not at fault.

:func:`install` replaces the method with one that does the check and the store
under a lock (same key: the caller's file and line).
"""

from __future__ import annotations

import sys
import threading

import numpy as np
from numba.core import types
from numba.np import numpy_support

_LOCK = threading.Lock()


def _between_check_and_store():
    """Hook for the test of :func:`install` (forces a thread switch there)."""


def _shared_array(self, shape, dtype, alignment=None):
    if shape == 0 or alignment is not None:
        return _ORIGINAL[0](self, shape, dtype, alignment)  # dynamic shared memory: no dict
    if isinstance(dtype, types.Type):
        dtype = numpy_support.as_dtype(dtype)
    frame = sys._getframe(1)
    key = (frame.f_code.co_filename, frame.f_lineno)
    with _LOCK:
        res = self._allocations.get(key)
        _between_check_and_store()
        if res is None:
            res = self._allocations[key] = np.empty(shape, dtype)
    return res


_ORIGINAL = []


def install():
    """Make the simulator's shared-array allocation atomic (idempotent)."""
    from numba.cuda.simulator import kernelapi  # noqa: PLC0415

    if not _ORIGINAL:
        _ORIGINAL.append(kernelapi.FakeCUDAShared.array)
        kernelapi.FakeCUDAShared.array = _shared_array
