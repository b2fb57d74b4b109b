"""Command-line glue of the out-of-core runs: chunk options, schedulers, the chunked CRF.

``pacnd crf IMAGE SCORES -o OUT`` runs chunk by chunk (Dask) when a path is a
``.zarr`` store or OUT is a ``.zarr`` / ``.tif`` / ``.tiff`` file, or when
``--chunks`` is given: the image and scores are opened lazily
(:func:`pacnd.dask.open_array`), refined block by block with the exact halo
(:mod:`pacnd.dask.crf`) and written chunk by chunk (:func:`pacnd.dask.save_array`),
on the scheduler ``--scheduler`` names. ``pacnd filter`` (:mod:`pacnd.cli.filter`)
uses the same helpers.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

import numpy as np

__all__ = ["add_chunk_options", "use_scheduler", "wants_chunked", "run_chunked_crf"]

_DEFAULT_CHUNK = 2048


def add_chunk_options(p):
    """``--chunks``, ``--overwrite`` and ``--worker-memory`` (out-of-core runs)."""
    g = p.add_argument_group("out-of-core runs (.zarr / .tif / .npy, chunk by chunk)")
    g.add_argument("--chunks", type=int, default=None, metavar="PX",
                   help=f"process chunk by chunk with PX x PX chunks (default for .zarr/.tif "
                        f"paths: the input's zarr chunks, else {_DEFAULT_CHUNK})")
    g.add_argument("--overwrite", action="store_true",
                   help="replace existing chunked outputs (.zarr/.tif/.npy)")
    g.add_argument("--worker-memory", default=None, metavar="SIZE",
                   help="--scheduler local:N: memory limit per worker, e.g. 2GiB (Dask's "
                        "spilling and pausing apply)")
    return g


def wants_chunked(args, paths, outputs):
    """True when the run should go through Dask (see the module doc)."""
    from ..dask.io import is_chunked_path  # noqa: PLC0415

    if getattr(args, "chunks", None) is not None:
        return True
    if any(str(p).lower().rstrip("/").endswith(".zarr") for p in paths):
        return True
    return any(o is not None and is_chunked_path(o) and not str(o).lower().endswith(".npy")
               for o in outputs)


@contextlib.contextmanager
def use_scheduler(spec, *, memory_limit=None):
    """Run the enclosed Dask computations on ``spec`` (see :func:`pacnd.batch.parse_scheduler`).

    ``threads`` computes one chunk at a time in this process (each chunk's
    kernels use every core); ``processes[:N]`` Dask's multiprocessing
    scheduler; ``local:N`` a LocalCluster (started and shut down here);
    ``tcp://...`` an existing cluster.
    """
    import dask  # noqa: PLC0415

    from ..batch import distributed_client, parse_scheduler  # noqa: PLC0415

    kind, value = parse_scheduler(spec)
    if kind == "threads":
        with dask.config.set(scheduler="threads", num_workers=1):
            yield
    elif kind == "processes":
        with dask.config.set(scheduler="processes", num_workers=value or os.cpu_count()):
            yield
    else:
        with distributed_client(kind, value, memory_limit=memory_limit) as (client, _):
            # the client by name, not in the config: a nanny restarting a dead worker pickles
            # the config, and a Client object in it makes every restart fail
            with client.as_current(), dask.config.set(scheduler="dask.distributed"):
                yield


def _open(path, chunks, as_float32=False):
    from ..dask.io import open_array  # noqa: PLC0415

    a = open_array(path, as_float32=as_float32)
    c = chunks if chunks is not None else _chunk_size_default(a)
    if c is not None:  # reopened (not rechunked): blocks read their regions from the file
        a = open_array(path, chunks=c, as_float32=as_float32)
    return a


def _chunk_size_default(a):
    return None if len(a.chunks[0]) > 1 or len(a.chunks[1]) > 1 else _DEFAULT_CHUNK


def run_chunked_crf(args, kw, params):
    """``pacnd crf`` on lazily read arrays, written chunk by chunk (see the module doc)."""
    from ..dask import require  # noqa: PLC0415

    require("pacnd crf on .zarr/.tif inputs or outputs")
    from ..crf.refine import refine  # noqa: PLC0415
    from ..dask.io import save_array  # noqa: PLC0415

    out = args.output
    out_npy = args.save_probabilities
    if out_npy is True:
        out_npy = os.path.splitext(out.rstrip("/"))[0] + ".zarr"
    for o in (out, out_npy):
        if o is not None and not str(o).lower().rstrip("/").endswith(
                (".zarr", ".tif", ".tiff", ".npy")):
            raise ValueError(f"output {o!r}: a chunked run writes .zarr, .tif, .tiff or .npy")
        if o is not None and os.path.lexists(o) and not args.overwrite:
            raise FileExistsError(f"{o!r} exists; pass --overwrite to replace it")
    image = _open(args.image, args.chunks)
    scores = _open(args.scores, None)
    kind = kw.get("kind", "auto")
    if kind == "auto":
        kind = "labels" if scores.dtype.kind in "iub" else "probabilities"
    if scores.dtype.kind == "b":
        scores = scores.astype(np.int64)
    opts = {k: v for k, v in kw.items() if k not in ("kind", "prob_tol")}
    t0 = time.perf_counter()
    with use_scheduler(args.scheduler, memory_limit=args.worker_memory):
        res = refine(image, scores, kind=kind, return_probabilities=out_npy is not None,
                     params=params, **opts)
        labels, probs = res if out_npy is not None else (res, None)
        labels = labels.astype(np.uint8 if kw.get("n_labels") is None or
                               kw["n_labels"] <= 256 else np.int32)
        if probs is None:
            save_array(labels, out, overwrite=args.overwrite)
        else:
            # one pass computes both (each block's inference is shared)
            _save_both(labels, out, probs, out_npy, args.overwrite)
    if not args.quiet:
        print(f"wrote {out} ({'x'.join(map(str, labels.shape[::-1]))}, chunks "
              f"{'x'.join(map(str, labels.chunksize[::-1]))}, scheduler {args.scheduler})"
              f"{' and ' + out_npy if out_npy else ''} in {time.perf_counter() - t0:.2f} s",
              file=sys.stderr)
    return 0


def _save_both(labels, out, probs, out_probs, overwrite):
    """Write labels and probabilities; zarr pairs in one computation (shared blocks)."""
    import dask.array as da  # noqa: PLC0415

    from ..dask.io import _regular, _replace, _tmp_name, save_array  # noqa: PLC0415

    zarr_both = all(str(p).lower().rstrip("/").endswith(".zarr") for p in (out, out_probs))
    if not zarr_both:
        save_array(labels, out, overwrite=overwrite)
        save_array(probs, out_probs, overwrite=overwrite)
        return
    import shutil  # noqa: PLC0415

    tmps = [_tmp_name(out), _tmp_name(out_probs)]
    try:
        for t in tmps:
            shutil.rmtree(t)
        stores = [da.to_zarr(_regular(a), t, compute=False)
                  for a, t in zip((labels, probs), tmps)]
        import dask  # noqa: PLC0415

        dask.compute(*stores)
        _replace(tmps[0], out)
        _replace(tmps[1], out_probs)
    except BaseException:
        for t in tmps:
            shutil.rmtree(t, ignore_errors=True)
        raise
