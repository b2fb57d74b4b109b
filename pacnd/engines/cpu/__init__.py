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
* :mod:`.distances` — the squared guide distances K starts from (staged guide
  rows, several taps at a time);
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
* :mod:`.coldstart` — first calls on an empty kernel cache: the reference
  engine serves them while a background process compiles the kernels;
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
cached on disk (``cache=True``; :mod:`._cache` keys the cache on every kernel
source): later processes load them in a fraction of a second. On an empty
cache the entry points below serve calls with the reference engine while the
kernels compile in the background (:mod:`.coldstart`); :func:`warmup`
compiles everything ahead of time (e.g. when building an image or a CI cache).
"""

#: Byte budget of the per-tile working buffers of the tiled paths (depthwise K tiles,
#: the full adapting kernel).
TILE_BYTES = 32 * 2**20

from ._cache import install as _install_cache  # noqa: E402

_install_cache()   # before any kernel is defined: cache stamps cover every kernel source

from .threads import start_threads  # noqa: E402

start_threads()

import math  # noqa: E402

from .. import reference as _reference  # noqa: E402
from . import adapting as _adapting  # noqa: E402
from . import coldstart  # noqa: E402
from . import pac as _pac  # noqa: E402

__all__ = ["adapting_kernel", "adapting_kernel_vjp", "pac_forward", "pac_vjp", "TILE_BYTES",
           "warmup", "coldstart"]


# --------------------------------------------------------------------------- entry points
# The engine interface (see pacnd.engines). Each call first asks coldstart whether the
# kernels it needs are compiled; while they are being compiled in the background, small
# calls are served by the NumPy reference engine (see pacnd.engines.cpu.coldstart).
def _pac_paths(x, weight, groups, guide, spec, backward):
    depthwise = x.shape[1] // groups == 1 and weight.shape[0] // groups == 1
    if not depthwise:
        return ("dense_vjp",) if backward else ("dense",)
    if backward:
        return ("dw_vjp",)
    return ("dw_fused",) if guide is not None and not spec.channel_wise else ("dw_tiles",)


def _reference_cost(x, weight, geom, groups, guide, spec, backward):
    """(bytes of temporaries, multiply-adds) of the reference engine for this call."""
    B, cin = x.shape[:2]
    out_px = math.prod(geom.out_size)
    ck = (guide.shape[1] if spec.channel_wise else 1) if guide is not None else 0
    item = x.dtype.itemsize
    nbytes = item * out_px * B * (ck * geom.taps * (1 + 2 * backward) + 4 * cin
                                  + 2 * weight.shape[0])
    flops = B * out_px * geom.taps * (cin * weight.shape[0] // groups + ck * (
        guide.shape[1] if guide is not None else 0)) * (3 if backward else 1)
    return nbytes, flops


def pac_forward(x, weight, bias, geom, groups, *, K=None, guide=None, spec=None, mask=None):
    if coldstart.use_numba(_pac_paths(x, weight, groups, guide, spec, False), x.dtype,
                           *_reference_cost(x, weight, geom, groups, guide, spec, False)):
        return _pac.pac_forward(x, weight, bias, geom, groups, K=K, guide=guide, spec=spec,
                                mask=mask)
    return _reference.pac_forward(x, weight, bias, geom, groups, K=K, guide=guide, spec=spec,
                                  mask=mask)


def pac_vjp(grad_out, x, weight, geom, groups, *, K=None, guide=None, spec=None, mask=None,
            needs=("input", "weight", "bias", "guide")):
    if coldstart.use_numba(_pac_paths(x, weight, groups, guide, spec, True), x.dtype,
                           *_reference_cost(x, weight, geom, groups, guide, spec, True)):
        return _pac.pac_vjp(grad_out, x, weight, geom, groups, K=K, guide=guide, spec=spec,
                            mask=mask, needs=needs)
    return _reference.pac_vjp(grad_out, x, weight, geom, groups, K=K, guide=guide, spec=spec,
                              mask=mask, needs=needs)


def _k_cost(guide, geom, backward):
    B, cg = guide.shape[:2]
    out_px = math.prod(geom.out_size)
    return (guide.itemsize * B * out_px * (geom.taps * (1 + 2 * backward) + 2 * cg),
            B * out_px * geom.taps * cg * (3 if backward else 1))


def adapting_kernel(guide, geom, spec, mask=None):
    if coldstart.use_numba(("adapting",), guide.dtype, *_k_cost(guide, geom, False)):
        return _adapting.adapting_kernel(guide, geom, spec, mask)
    return _reference.adapting_kernel(guide, geom, spec, mask)


def adapting_kernel_vjp(grad_K, guide, geom, spec, mask=None, needs=("guide", "alpha", "lam")):
    if coldstart.use_numba(("adapting",), guide.dtype, *_k_cost(guide, geom, True)):
        return _adapting.adapting_kernel_vjp(grad_K, guide, geom, spec, mask, needs)
    return _reference.adapting_kernel_vjp(grad_K, guide, geom, spec, mask, needs)


def warmup(dtypes=("float32", "float64"), progress=False):
    """Compile (or load from the disk cache) every kernel of the engine for ``dtypes``.

    Runs each code path once on tiny arrays (:data:`coldstart.PATHS`: dense and
    depthwise forward and backward, K of tiles and the full adapting kernel, the
    PAC-CRF fast path) in this process and marks them compiled in the cache, so
    later processes neither compile nor fall back to the reference engine
    (:mod:`.coldstart`). On an empty cache this takes one to two minutes per
    dtype on 2 cores.

    Parameters
    ----------
    dtypes : sequence of str
        Float dtypes to compile for (``"float32"``, ``"float64"``).
    progress : bool
        Show a progress bar (tqdm) over the code paths.
    """
    import numpy as np  # noqa: PLC0415

    steps = []
    for name in dtypes:
        dt = np.dtype(name)
        if dt not in (np.float32, np.float64):
            raise ValueError(f"warmup: dtype {name!r} is not supported; use 'float32' or "
                             "'float64'")
        steps.extend((path, dt) for path in coldstart.PATHS)
    if progress:
        from tqdm import tqdm  # noqa: PLC0415
        steps = tqdm(steps, desc="compiling kernels", unit="path")
    for path, dt in steps:
        coldstart.warm(path, dt)
