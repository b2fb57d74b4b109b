"""Numba CPU engine: ``njit`` kernels on tiles, explicit-SIMD matrix products.

Same interface and semantics as :mod:`pacnd.engines.reference` (see
:mod:`pacnd.engines`). 1-D and 2-D problems run as 3-D ones with unit dims.

* :mod:`.layout` — 3-D embedding, tap classes (the transposed op as
  sub-pixel convolutions: only taps that land on real input samples), tiles,
  the per-call buffer workspace;
* :mod:`.indexing` — row/tap index helpers and valid column ranges;
* :mod:`.kernel_rows` — K of one row segment from the guide (mask and
  normalisation fused), its backward to guide, alpha, lam, and reads/writes
  of a precomputed K;
* :mod:`.adapting` — the full-K interface calls and K of whole tiles;
* :mod:`.dense` — the dense-groups forward: per output-row segment, K of the
  segment, the input rows staged, K-weighted panels packed and multiplied by
  the weights with :mod:`.gemm`'s register-blocked micro-kernel (vectors from
  :mod:`.simd`);
* :mod:`.dense_vjp` — its backward, fused the same way: weight gradient,
  ``W^T gout`` and the input and K gradients per segment with the
  micro-kernels, no BLAS, no column matrix;
* :mod:`.depthwise` — direct loops when Cin/g == Cout/g == 1 (shared filters,
  pooling, bilateral filtering), K computed on the fly when it comes from the
  guide;
* :mod:`.pac` — orchestration of forward and vjp;
* :mod:`.fastexp` — a vectorisable ``exp``;
* :mod:`.threads` — one thread pool running ``nogil`` kernels whose work units
  are claimed dynamically (:func:`.threads.parallel_for`), so a descheduled
  thread on a busy machine holds up one unit, not half the work; it also
  starts Numba's OpenMP pool with passive waiting for code that still uses
  ``prange``.

Working memory is bounded independently of the image: dense kernels use a few
row-segment buffers per thread (:data:`.pac.UNIT_BYTES` caps the segment's K
buffers), tiled paths (depthwise, full K) at most :data:`TILE_BYTES` of tile
buffers.
Kernels are compiled once per dtype (options are run-time arguments) and
cached on disk (``cache=True``): the first call after installation compiles
for several seconds, later processes load them in a fraction of a second.
:func:`warmup` compiles everything ahead of time (e.g. when building an
image or a CI cache).
"""

#: Byte budget of the per-tile working buffers of the tiled paths (depthwise K tiles,
#: the full adapting kernel).
TILE_BYTES = 32 * 2**20

from ._cache import install as _install_cache  # noqa: E402

_install_cache()   # before any kernel is defined: cache stamps cover every kernel source

from .threads import start_threads  # noqa: E402

start_threads()

from .adapting import adapting_kernel, adapting_kernel_vjp  # noqa: E402
from .pac import pac_forward, pac_vjp  # noqa: E402

__all__ = ["adapting_kernel", "adapting_kernel_vjp", "pac_forward", "pac_vjp", "TILE_BYTES",
           "warmup"]


def warmup(dtypes=("float32", "float64"), progress=False):
    """Compile (or load from the disk cache) every kernel of the engine for ``dtypes``.

    Runs each code path once on tiny arrays: dense and depthwise, forward and
    transposed, K from a guide (with mask and normalisation), precomputed K,
    plain convolution, the full adapting kernel, and every backward. On an
    empty cache this takes about a minute per dtype on 2 cores; afterwards
    every process loads the kernels in well under a second.

    Parameters
    ----------
    dtypes : sequence of str
        Float dtypes to compile for (``"float32"``, ``"float64"``).
    progress : bool
        Show a progress bar (tqdm) over the code paths.
    """
    import numpy as np  # noqa: PLC0415

    from ... import ops  # noqa: PLC0415

    steps = []
    for name in dtypes:
        dt = np.dtype(name)
        if dt not in (np.float32, np.float64):
            raise ValueError(f"warmup: dtype {name!r} is not supported; use 'float32' or "
                             "'float64'")
        steps.extend((f"{dt.name} {label}", fn) for label, fn in _warmup_steps(dt, ops))
    if progress:
        from tqdm import tqdm  # noqa: PLC0415
        steps = tqdm(steps, desc="compiling kernels", unit="path")
    for _, fn in steps:
        fn()


def _warmup_steps(dt, ops):
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 6, 6)).astype(dt)
    f = rng.standard_normal((1, 2, 6, 6)).astype(dt)
    m = np.ones((1, 1, 6, 6), dtype=dt)
    w = rng.standard_normal((2, 2, 3, 3)).astype(dt)
    ws = rng.standard_normal((1, 1, 3, 3)).astype(dt)
    b = np.zeros(2, dtype=dt)
    g = rng.standard_normal((1, 2, 11, 11)).astype(dt)
    kw = dict(padding=1, engine="numba")
    tkw = dict(stride=2, padding=1, engine="numba")
    K = ops.adapting_kernel(f, 3, padding=1, engine="numpy")

    def conv_path(extra, weight, **more):
        def run():
            y = ops.pac_conv(x, f, weight, None, **kw, **extra, **more)
            ops.pac_conv_vjp(y, x, f, weight, None, **kw, **extra, **more)
        return run

    def full_k():
        Kn = ops.adapting_kernel(f, 3, padding=1, engine="numba")
        ops.adapting_kernel_vjp(Kn, f, 3, padding=1, engine="numba")

    def given_k():
        y = ops.pac_conv(x, None, w, b, adapting=K, **kw)
        ops.pac_conv_vjp(y, x, None, w, b, adapting=K, wrt=("input", "adapting"), **kw)

    def pool():
        y = ops.pac_pool(x, f, 3, channel_wise=True, **kw)
        ops.pac_pool_vjp(y, x, f, 3, channel_wise=True, **kw)

    def plain():
        y = ops.conv(x, w, b, **kw)
        ops.conv_vjp(y, x, w, b, **kw)

    def transposed():
        y = ops.pac_conv_transpose(x, g, w, b, **tkw)
        ops.pac_conv_transpose_vjp(y, x, g, w, b, **tkw)

    masked = {"normalize": True, "mask": m}
    return [("pac_conv", conv_path({}, w)), ("pac_conv normalize+mask", conv_path(masked, w)),
            ("shared filter", conv_path({}, ws, shared=True)),
            ("shared filter normalize+mask", conv_path(masked, ws, shared=True)),
            ("adapting_kernel", full_k), ("precomputed K", given_k), ("pac_pool", pool),
            ("conv", plain), ("pac_conv_transpose", transposed)]
