"""Run pacnd's CUDA C kernels on the CPU: g++ + cuda_host_emu.h (test support).

:func:`build` compiles ``kernels/adapting.cu`` and ``kernels/pac.cu`` as host
C++ with the emulation shim into a shared library (cached by source hash),
exporting one launcher per specialisation; :class:`EmuBackend` is a backend of
:mod:`pacnd.engines._gpu_common` that launches them on NumPy arrays. With it
the CuPy engine's driver and every CUDA C kernel (direct and tiled) run
against the NumPy reference without a GPU.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from pacnd.engines import _gpu_common as common
from pacnd.engines.cupy._source import KERNEL_FILES, kernels_dir

from cases import PoisonNumpy

HERE = Path(__file__).resolve().parent
CTYPE = {"float32": "float", "float64": "double"}


def compiler():
    return shutil.which(os.environ.get("CXX", "g++"))


def _source():
    lines = ['#include "cuda_host_emu.h"']
    for f in KERNEL_FILES:
        lines.append(f'#include "{f}"')
    for ks in KERNEL_FILES.values():
        for k in ks:
            for ct in CTYPE.values():
                lines.append(f"PAC_EMU_EXPORT({k}, {ct})")
    return "\n".join(lines) + "\n"


_LIB = {}


def sanitize_flags():
    """Extra compiler flags: AddressSanitizer when ``PACND_EMU_SANITIZE=1`` (the process
    must then run with ``LD_PRELOAD`` of libasan: see tests/test_memory_safety.py)."""
    if os.environ.get("PACND_EMU_SANITIZE") == "1":
        return ("-fsanitize=address", "-fno-omit-frame-pointer", "-g")
    return ()


def build(defines=()):
    """ctypes handle of the emulated kernels (compiled once per source version and
    set of ``-D`` defines, e.g. ``("PAC_PIPELINE=0",)``)."""
    defines = tuple(defines)
    if defines in _LIB:
        return _LIB[defines]
    kdir = kernels_dir()
    h = hashlib.sha256((_source() + repr(defines) + repr(sanitize_flags())).encode())
    for p in sorted(kdir.glob("*.cu*")) + [HERE / "cuda_host_emu.h"]:
        h.update(p.read_bytes())
    out_dir = Path(tempfile.gettempdir()) / "pacnd_cuda_emu"
    out_dir.mkdir(exist_ok=True)
    so = out_dir / f"emu_{h.hexdigest()[:16]}.so"
    if not so.exists():
        src = out_dir / f"emu_{h.hexdigest()[:16]}.cpp"
        src.write_text(_source())
        tmp = so.with_suffix(f".{os.getpid()}.tmp")
        cmd = [compiler(), "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread",
               "-Wno-unknown-pragmas", *sanitize_flags(), *(f"-D{d}" for d in defines),
               f"-I{HERE}", f"-I{kdir}", str(src), "-o", str(tmp)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"host build of the CUDA C kernels failed:\n{' '.join(cmd)}\n"
                               f"{res.stderr[-8000:]}")
        os.replace(tmp, so)
    _LIB[defines] = ctypes.CDLL(str(so))
    return _LIB[defines]


class EmuBackend:
    """The CuPy engine's backend, with launches emulated on the CPU (NumPy arrays)."""

    has_tiled = True

    def __init__(self, *, threads=32, max_blocks=4, path="auto", target_blocks=4,
                 min_split=16, chunk_elements=1 << 25, poison=True, defines=()):
        self.lib = build(defines)
        self.xp = PoisonNumpy() if poison else np
        self.threads = threads
        self.max_blocks = max_blocks
        self._path = path
        self.target_blocks = target_blocks
        self.target_threads = target_blocks * threads
        self.min_split = min_split
        self.chunk_elements = chunk_elements
        self.launched = []

    def path(self):
        return self._path

    def array_module(self, a):
        return self.xp

    @staticmethod
    def params(P):
        return P

    def launch(self, name, dtype, grid, block, args, shared_mem=0):
        fn = getattr(self.lib, f"emu_{name}_{CTYPE[np.dtype(dtype).name]}")
        dims = (ctypes.c_uint * 6)(*(int(v) for v in tuple(grid) + tuple(block)))
        for a in args:
            assert isinstance(a, np.ndarray) and a.flags.c_contiguous, (name, type(a))
            assert a.dtype in (np.int32, np.dtype(dtype)), (name, a.dtype, dtype)
        ptrs = (ctypes.c_void_p * len(args))(*(a.ctypes.data for a in args))
        fn(dims, ctypes.c_size_t(int(shared_mem)), ptrs)
        self.launched.append(name)

    def launch_tiled(self, name, dtype, geom, args, *, B, groups, rows, cols, nsplit=1):
        grid, block, shared = common.tiled_launch_config(name, dtype, geom, B=B, groups=groups,
                                                         rows=rows, cols=cols, nsplit=nsplit)
        self.launch(name, dtype, grid, block, args, shared_mem=shared)


class EmuEngine:
    """An engine module look-alike (the four engine functions) over an EmuBackend."""

    def __init__(self, be):
        self.be = be
        self.__name__ = "cuda_c_host_emulation"

    def adapting_kernel(self, guide, geom, spec, mask=None):
        return common.adapting_kernel(self.be, guide, geom, spec, mask)

    def adapting_kernel_vjp(self, grad_K, guide, geom, spec, mask=None,
                            needs=("guide", "alpha", "lam")):
        return common.adapting_kernel_vjp(self.be, grad_K, guide, geom, spec, mask, needs)

    def pac_forward(self, x, weight, bias, geom, groups, **kw):
        return common.pac_forward(self.be, x, weight, bias, geom, groups, **kw)

    def pac_vjp(self, grad_out, x, weight, geom, groups, **kw):
        return common.pac_vjp(self.be, grad_out, x, weight, geom, groups, **kw)
