"""Launch settings of the Numba CUDA engine (tests shrink them).

``THREADS``      threads per block (a power of two, <= 1024; env ``PACND_CUDA_THREADS``)
``MAX_BLOCKS``   largest 1-D grid; grid-stride loops cover the rest (env ``PACND_CUDA_MAX_BLOCKS``)
``TARGET_THREADS`` threads the weight-gradient reduction aims for (weight elements x splits of (b, y))
``MIN_SPLIT``    fewest (b, y) positions per weight-gradient split
``CHUNK_ELEMENTS`` largest channel-wise dL/dK chunk (elements) in the backward pass
``PATH``         ``"auto"`` (the tiled kernels where they pay, direct kernels elsewhere),
                 ``"direct"`` or ``"tiled"`` (tiled wherever supported); env ``PACND_CUDA_PATH``
``TILE``, ``TILE_K`` the tiled kernels' output tile (TILE x TILE, (TILE / 4)^2 threads) and
                 k-chunk, read when the kernels are built (:func:`pac.set_tile`); 64 / 16
                 as the CUDA C kernels, smaller under the simulator
"""

import os


def _env_int(name, default):
    v = os.environ.get(name)
    return int(v) if v else default


THREADS = _env_int("PACND_CUDA_THREADS", 128)
MAX_BLOCKS = _env_int("PACND_CUDA_MAX_BLOCKS", 8192)
TARGET_THREADS = _env_int("PACND_CUDA_TARGET_THREADS", 1 << 18)
MIN_SPLIT = _env_int("PACND_CUDA_MIN_SPLIT", 2048)
CHUNK_ELEMENTS = _env_int("PACND_CUDA_CHUNK_ELEMENTS", 1 << 25)
PATH = os.environ.get("PACND_CUDA_PATH", "auto")
TILE = 64
TILE_K = 16


def check():
    """Raise ValueError if the settings cannot be used."""
    threads = (TILE // 4) ** 2
    if (TILE < 8 or TILE % 4 or TILE_K < 1 or threads > 1024 or threads < TILE_K
            or (TILE * TILE_K) % threads):
        raise ValueError(f"pacnd.engines.cuda.config TILE={TILE}, TILE_K={TILE_K}: TILE must be "
                         f"a multiple of 4 in [8, 128] and TILE_K a divisor-compatible chunk "
                         f"(TILE * TILE_K a multiple of (TILE / 4)^2, TILE_K <= (TILE / 4)^2)")
    if PATH not in ("auto", "direct", "tiled"):
        raise ValueError(f"pacnd.engines.cuda.config.PATH={PATH!r}: use 'auto', 'direct' or "
                         f"'tiled'")
    if THREADS < 1 or THREADS > 1024 or THREADS & (THREADS - 1):
        raise ValueError(f"pacnd.engines.cuda.config.THREADS={THREADS} must be a power of two "
                         f"between 1 and 1024")
    for name in ("MAX_BLOCKS", "TARGET_THREADS", "MIN_SPLIT", "CHUNK_ELEMENTS"):
        if globals()[name] < 1:
            raise ValueError(f"pacnd.engines.cuda.config.{name} must be positive")
