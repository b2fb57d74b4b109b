"""How the CuPy engine compiles and launches the CUDA C kernels (the backend of
:mod:`pacnd.engines._gpu_common`).

Each source file of ``kernels/`` becomes one ``cupy.RawModule`` holding all of
its specialisations (name expressions ``kernel<float>`` / ``kernel<double>``),
compiled by NVRTC on first use and cached by CuPy (in memory and on disk,
keyed by the source text, so editing a kernel recompiles it).
"""

from __future__ import annotations

import numpy as np

from .._gpu_common import tiled_launch_config
from . import config
from ._source import KERNEL_FILES, NAME_EXPRESSIONS, load_source, name_expression

__all__ = ["backend", "CupyBackend"]

_FILE_OF = {k: f for f, ks in KERNEL_FILES.items() for k in ks}


class CupyBackend:
    has_tiled = True

    def __init__(self, cp):
        self.cp = cp
        self._modules = {}
        self._functions = {}
        self._params = {}
        self._sms = {}

    @property
    def threads(self):
        config.check()
        return config.THREADS

    @property
    def max_blocks(self):
        return config.MAX_BLOCKS

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

    def _device(self):
        return self.cp.cuda.runtime.getDevice()

    @property
    def target_blocks(self):
        dev = self._device()
        if dev not in self._sms:
            self._sms[dev] = self.cp.cuda.Device(dev).attributes["MultiProcessorCount"]
        return 4 * self._sms[dev]

    @property
    def target_threads(self):
        return self.target_blocks * 512

    def array_module(self, a):
        return self.cp

    def params(self, P):
        key = (self._device(), P.tobytes())
        dev = self._params.get(key)
        if dev is None:
            if len(self._params) > 1024:
                self._params.clear()
            dev = self._params[key] = self.cp.asarray(P)
        return dev

    def function(self, name, dtype):
        """The RawKernel of specialisation ``name<dtype>`` (compiled once per device and
        option set, see :func:`config.options`)."""
        opts = config.options()
        key = (self._device(), name, np.dtype(dtype).name, opts)
        fn = self._functions.get(key)
        if fn is None:
            fname = _FILE_OF[name]
            mkey = (key[0], fname, opts)
            mod = self._modules.get(mkey)
            if mod is None:
                mod = self._modules[mkey] = self.cp.RawModule(
                    code=load_source(fname), options=opts,
                    name_expressions=NAME_EXPRESSIONS[fname])
            fn = self._functions[key] = mod.get_function(name_expression(name, np.dtype(dtype)))
        return fn

    def launch(self, name, dtype, grid, block, args, shared_mem=0):
        self.function(name, dtype)(tuple(int(g) for g in grid), tuple(block), args,
                                   shared_mem=int(shared_mem))

    def launch_tiled(self, name, dtype, geom, args, *, B, groups, rows, cols, nsplit=1):
        grid, block, shared = tiled_launch_config(name, dtype, geom, B=B, groups=groups,
                                                  rows=rows, cols=cols, nsplit=nsplit)
        self.launch(name, dtype, grid, block, args, shared_mem=shared)


_BACKEND = {}


def backend():
    """The CuPy backend (RuntimeError naming the fix when CuPy or a GPU is missing)."""
    from ..._cupy import require_gpu  # noqa: PLC0415

    cp = require_gpu("cupy")
    be = _BACKEND.get("be")
    if be is None:
        be = _BACKEND["be"] = CupyBackend(cp)
    return be
