"""Numba CPU engine: ``njit(parallel=True)`` kernels on tiles, BLAS for the dense GEMMs.

Same interface and semantics as :mod:`pacnd.engines.reference` (see
:mod:`pacnd.engines`). 1-D and 2-D problems run as 3-D ones with unit dims.

* :mod:`.layout` — 3-D embedding, tap classes (the transposed op as
  sub-pixel convolutions), tiles;
* :mod:`.adapting` — K of a tile from the guide (mask and normalisation
  fused) and its backward to guide, alpha, lam; the full-K interface calls;
* :mod:`.tiles` — gather of K-weighted columns, col2im scatter, K-gradient
  reduction (dense groups, GEMM with NumPy's BLAS);
* :mod:`.depthwise` — direct loops when Cin/g == Cout/g == 1;
* :mod:`.pac` — orchestration of forward and vjp;
* :mod:`.fastexp` — a vectorisable ``exp``;
* :mod:`.threads` — starts Numba's thread pool with passive OpenMP waiting,
  so that it does not busy-wait against the BLAS threads.

Working memory per tile is bounded by :data:`TILE_BYTES` (bytes of tile
buffers: K tile, columns, GEMM operands), so it does not grow with the image.
Kernels are compiled once per dtype and cached on disk (``cache=True``).
"""

#: Byte budget of the per-tile working buffers (K tile, columns, GEMM results).
TILE_BYTES = 8 * 2**20

from .threads import start_threads  # noqa: E402

start_threads()

from .adapting import adapting_kernel, adapting_kernel_vjp  # noqa: E402
from .pac import pac_forward, pac_vjp  # noqa: E402

__all__ = ["adapting_kernel", "adapting_kernel_vjp", "pac_forward", "pac_vjp", "TILE_BYTES"]
