"""How the Numba CUDA engine launches its kernels (the backend of
:mod:`pacnd.engines._gpu_common`).

Arrays are CuPy arrays on a GPU; under the CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) NumPy arrays work as well, which is how the
kernels are tested without a GPU.
"""

from __future__ import annotations

import numpy as np

from .._gpu_common import tiled_launch_config
from . import config

__all__ = ["backend", "NumbaBackend", "all_kernels"]


def all_kernels():
    """name -> Numba CUDA kernel, every kernel of the engine."""
    from .adapting import KERNELS as ka  # noqa: PLC0415 - avoid an import cycle
    from .pac import KERNELS as kp  # noqa: PLC0415
    return {**ka, **kp}


class NumbaBackend:
    """Launches the Numba kernels; sizes from :mod:`pacnd.engines.cuda.config`."""

    has_tiled = True

    def __init__(self):
        self._kernels = None
        self._params = {}

    # settings are read at every call so that tests can change them
    @property
    def threads(self):
        config.check()
        return config.THREADS

    @property
    def max_blocks(self):
        return config.MAX_BLOCKS

    @property
    def target_threads(self):
        return config.TARGET_THREADS

    @property
    def tile(self):
        """Output tile side of the tiled kernels as built (:func:`pac.set_tile`)."""
        from . import pac  # noqa: PLC0415 - avoid an import cycle
        return pac.TILE

    @property
    def target_blocks(self):
        """Blocks the tiled weight-gradient reduction aims for (over its splits)."""
        return max(1, config.TARGET_THREADS // (self.tile // 4) ** 2)

    @property
    def min_split(self):
        return config.MIN_SPLIT

    @property
    def chunk_elements(self):
        return config.CHUNK_ELEMENTS

    @staticmethod
    def path():
        config.check()
        return config.PATH

    @staticmethod
    def array_module(a):
        if type(a).__module__.split(".")[0] == "cupy":
            from ..._cupy import cupy_module  # noqa: PLC0415
            return cupy_module()
        return np

    def params(self, P, like=None):
        return P

    def launch(self, name, dtype, grid, block, args, shared_mem=0):
        if self._kernels is None:
            self._kernels = all_kernels()
        kern = self._kernels[name]
        if isinstance(kern, dict):  # specialised per storage type
            kern = kern[np.dtype(dtype).name]
        flat = []
        xp = None
        for a in args:
            if xp is None and type(a).__module__.split(".")[0] == "cupy":
                xp = self.array_module(a)
            flat.append(a.reshape(-1))
        if xp is not None and isinstance(flat[0], np.ndarray):
            key = flat[0].tobytes()
            dev = self._params.get(key)
            if dev is None:
                if len(self._params) > 512:
                    self._params.clear()
                dev = self._params[key] = xp.asarray(flat[0])
            flat[0] = dev
        kern[tuple(grid), tuple(block), 0, int(shared_mem)](*flat)

    def launch_tiled(self, name, dtype, geom, args, *, B, groups, rows, cols, nsplit=1):
        grid, block, shared = tiled_launch_config(name, dtype, geom, B=B, groups=groups,
                                                  rows=rows, cols=cols, nsplit=nsplit,
                                                  tile=self.tile)
        self.launch(name, dtype, grid, block, args, shared_mem=shared)


_BACKEND = None


def backend():
    global _BACKEND
    if _BACKEND is None:
        _BACKEND = NumbaBackend()
    return _BACKEND
