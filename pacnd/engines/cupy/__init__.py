"""CuPy engine: the PAC kernels as CUDA C (``kernels/*.cu``) run through
``cupy.RawModule`` — the fast GPU path (``engine="cupy"``, the default for CuPy
arrays).

Importing this package does not import CuPy; the first call does (through
:mod:`pacnd._cupy`), and raises RuntimeError with the install command
(``pip install "pacnd[gpu]"``) when CuPy or a CUDA device is missing.
Settings: :mod:`pacnd.engines.cupy.config`; sources and NVRTC options:
:mod:`pacnd.engines.cupy._source`.
"""

from .adapting import adapting_kernel, adapting_kernel_vjp
from .pac import pac_forward, pac_vjp

__all__ = ["adapting_kernel", "adapting_kernel_vjp", "pac_forward", "pac_vjp"]
