"""pacnd on Dask: lazy arrays in and out, out-of-core files, batches on Dask clusters.

Needs the ``dask`` extra (``pip install "pacnd[dask]"``: ``dask[array,distributed]``,
``zarr``, ``tifffile``). ``import pacnd`` and ``import pacnd.dask`` work without
it; the first call that needs Dask raises :class:`ImportError` naming the extra.

Lazy arrays
-----------
Every :mod:`pacnd.filters` call, :func:`pacnd.crf.refine` /
:func:`pacnd.crf.convcrf_refine` and every joint upsampler's
:meth:`~pacnd.models.JointUpsampler.upsample` accept ``dask.array.Array``
inputs and then return lazy Dask arrays (nothing is computed until
``.compute()`` / ``to_zarr``). Each output block is computed by the in-memory
call on the block plus a halo gathered from the neighbouring chunks
(:func:`pacnd.dask.regions.map_regions`), with the halo derived from the
operation's reach, so the result equals the in-memory call on the whole
image (see each function's notes):

* :mod:`pacnd.dask.filters` — the filters (halo ``win_size // 2``; the
  pooling grid of detail-preserving pooling and the sample grid of joint
  bilateral upsampling are kept);
* :mod:`pacnd.dask.crf` — PAC-CRF refinement (halo of all mean-field steps
  on the pooled grids, :func:`crf_halo`);
* :mod:`pacnd.dask.upsample` — joint upsamplers (receptive field of the
  network, :func:`upsample_halo`).

Chunks along channel / label axes are merged into one (every channel enters
the range kernel). CuPy-backed chunks stay CuPy (the output's ``meta`` is a
CuPy array) and run on the GPU engines.

Files and batches
-----------------
:func:`open_array` / :func:`save_array` (:mod:`pacnd.dask.io`) read and
write ``.zarr`` stores, (large, tiled) TIFFs and ``.npy`` files chunk by
chunk; :mod:`pacnd.batch` runs one task per file on a Dask scheduler
(``threads``, ``processes``, ``local:N``, ``tcp://HOST:PORT``).
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["is_dask_array", "any_dask", "require", "EXTRA_HINT", "crf_halo", "upsample_halo",
           "refine", "open_array", "save_array"]

#: how to install what this package needs
EXTRA_HINT = 'install the Dask extra:  pip install "pacnd[dask]"'

_LAZY = {
    "crf_halo": "pacnd.dask.crf", "refine": "pacnd.dask.crf",
    "upsample_halo": "pacnd.dask.upsample",
    "open_array": "pacnd.dask.io", "save_array": "pacnd.dask.io",
}


def is_dask_array(a):
    """True when ``a`` is a ``dask.array.Array`` (never imports Dask)."""
    mod = sys.modules.get("dask.array")
    return mod is not None and isinstance(a, mod.Array)


def any_dask(*arrays):
    """True when any of ``arrays`` is a Dask array (the dispatch test of every entry point)."""
    return "dask.array" in sys.modules and any(is_dask_array(a) for a in arrays)


def require(what="this"):
    """Import Dask (array and distributed) or raise ImportError naming the extra.

    Parameters
    ----------
    what : str
        What needs Dask, for the message.

    Returns
    -------
    module
        ``dask.array``.
    """
    try:
        import dask  # noqa: F401, PLC0415
        return importlib.import_module("dask.array")
    except ImportError as exc:
        raise ImportError(f"{what} needs Dask, which does not import here ({exc}); "
                          f"{EXTRA_HINT}") from exc


def require_module(name, what):
    """Import ``name`` (``zarr``, ``tifffile``, ``distributed``) or raise ImportError
    naming the extra."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"{what} needs {name}, which does not import here ({exc}); "
                          f"{EXTRA_HINT}") from exc


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pacnd.dask' has no attribute {name!r}")
