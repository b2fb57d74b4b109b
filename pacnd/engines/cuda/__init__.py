"""Numba CUDA engine: the PAC kernels written with ``numba.cuda``.

Works on CuPy arrays on a CUDA GPU (``engine="cuda"``), and on NumPy arrays
under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), which is how its
kernels are tested without a GPU. Needs the ``numba-cuda`` package (CUDA 13:
``pip install "numba-cuda[cu13]"``, part of ``pacnd[gpu]``).

The kernels are the portable twins of the direct CUDA C kernels of
``kernels/*.cu`` (one thread per output element, grid-stride loops, block
reductions in shared memory); the CuPy engine adds tiled GEMM kernels. Launch
sizes: :mod:`pacnd.engines.cuda.config`.
"""

from .adapting import adapting_kernel, adapting_kernel_vjp
from .pac import pac_forward, pac_vjp

__all__ = ["adapting_kernel", "adapting_kernel_vjp", "pac_forward", "pac_vjp"]
