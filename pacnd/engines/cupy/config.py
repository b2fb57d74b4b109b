"""Launch settings of the CuPy RawKernel engine.

``PATH``     ``"auto"`` (tiled GEMM kernels where they pay, direct elsewhere),
             ``"direct"`` or ``"tiled"`` (tiled wherever supported); env ``PACND_CUPY_PATH``
``THREADS``  threads per block of the direct kernels (power of two <= 1024)
``MAX_BLOCKS`` largest 1-D grid of the direct kernels (grid-stride loops cover the rest)
``MIN_SPLIT`` fewest (b, y) positions per split of the weight-gradient reduction
``CHUNK_ELEMENTS`` largest channel-wise dL/dK chunk (elements) of the backward pass
``PIPELINE``  software-pipelined tiled GEMMs (operand gathers of the next k-chunk
             issued before the current chunk's multiply-adds; ``PAC_PIPELINE`` in
             kernels/pac_common.cuh); env ``PACND_CUPY_PIPELINE=0`` turns it off
"""

import os

from ._source import USER_OPTIONS

PATH = os.environ.get("PACND_CUPY_PATH", "auto")
THREADS = int(os.environ.get("PACND_CUPY_THREADS", 256))
MAX_BLOCKS = int(os.environ.get("PACND_CUPY_MAX_BLOCKS", 16384))
MIN_SPLIT = int(os.environ.get("PACND_CUPY_MIN_SPLIT", 1024))
CHUNK_ELEMENTS = int(os.environ.get("PACND_CUPY_CHUNK_ELEMENTS", 1 << 25))
PIPELINE = os.environ.get("PACND_CUPY_PIPELINE", "1") != "0"


def options():
    """NVRTC options of the kernels under the current settings (user options + defines)."""
    return USER_OPTIONS + (() if PIPELINE else ("-DPAC_PIPELINE=0",))


def check():
    if PATH not in ("auto", "direct", "tiled"):
        raise ValueError(f"pacnd.engines.cupy.config.PATH={PATH!r}: use 'auto', 'direct' or "
                         f"'tiled'")
    if THREADS < 32 or THREADS > 1024 or THREADS & (THREADS - 1):
        raise ValueError(f"pacnd.engines.cupy.config.THREADS={THREADS} must be a power of two "
                         f"between 32 and 1024")
