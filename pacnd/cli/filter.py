"""Filter an image, chunk by chunk when it is large (``pacnd filter``).

    pacnd filter bilateral IMAGE -o OUT [--sigma-spatial S] [--sigma-color C]
    pacnd filter joint-bilateral IMAGE --guide GUIDE -o OUT [...]
    pacnd filter jbu LOW --guide GUIDE --factor F -o OUT [...]
    pacnd filter dpp IMAGE -o OUT [--size N] [--stride N] [--alpha A] [--lam L]

IMAGE / GUIDE / OUT: ``.zarr`` stores, TIFFs (tiled TIFFs are read tile by
tile), ``.npy`` files or small images (``.png``, ...; OUT ``.png`` is
written from memory). Inputs are read lazily (:func:`pacnd.dask.open_array`)
and the result is computed and written chunk by chunk
(:func:`pacnd.dask.save_array`) on ``--scheduler`` (threads, processes[:N],
local:N, tcp://HOST:PORT), so images larger than memory work; the result
equals the in-memory filter (exact halos, :mod:`pacnd.dask.filters`).

Integer images are read as float32 in ``[0, 1]`` (chunk by chunk); the output is
float32 (``--output-dtype uint8`` rescales to 0..255). The last axis is the channel
axis when the image has 3 dimensions (``--channel-axis`` overrides).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

__all__ = ["configure_parser", "run_from_args"]

_METHODS = ("bilateral", "joint-bilateral", "jbu", "dpp")


def configure_parser(p):
    """Arguments of ``pacnd filter`` (called by :mod:`pacnd.cli`)."""
    p.add_argument("method", choices=_METHODS, help="the filter")
    p.add_argument("image", metavar="IMAGE", help="input (.zarr, .tif, .npy, .png, ...)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="result (.zarr, .tif, .tiff, .npy; .png for small images)")
    p.add_argument("--guide", default=None, metavar="GUIDE",
                   help="guide image (joint-bilateral, jbu)")
    p.add_argument("--sigma-spatial", type=float, default=None, metavar="S",
                   help="spatial sigma (pixels; jbu: low-res pixels); default the filter's")
    p.add_argument("--sigma-color", type=float, default=None, metavar="C",
                   help="range sigma in [0, 1] image units (default: the guide's std)")
    p.add_argument("--win-size", type=int, default=None, metavar="N", help="odd window size")
    p.add_argument("--factor", type=int, default=None, metavar="F", help="jbu: upsampling factor")
    p.add_argument("--size", type=int, default=2, metavar="N", help="dpp: window size")
    p.add_argument("--stride", type=int, default=None, metavar="N", help="dpp: stride")
    p.add_argument("--alpha", type=float, default=0.1, help="dpp: reward offset")
    p.add_argument("--lam", type=float, default=1.0, help="dpp: reward exponent")
    p.add_argument("--channel-axis", type=int, default=None, metavar="A",
                   help="channel axis (default: -1 for 3-D images, none for 2-D)")
    p.add_argument("--output-dtype", choices=("float32", "uint8"), default="float32")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    from ..batch import SCHEDULER_HELP  # noqa: PLC0415
    p.add_argument("--scheduler", default="threads", metavar="SPEC",
                   help=f"where the chunks are computed: {SCHEDULER_HELP}")
    from .chunked import add_chunk_options  # noqa: PLC0415
    add_chunk_options(p)


def _read(path, chunks):
    """``path`` lazily as float32 (integer files scaled to [0, 1] as they are read)."""
    from .chunked import _open  # noqa: PLC0415

    a = _open(path, chunks, as_float32=True)
    return a if a.dtype == np.float32 else a.astype(np.float32)


def run_from_args(args):
    """Run ``pacnd filter`` from parsed arguments."""
    from ..dask import require  # noqa: PLC0415

    require("pacnd filter")
    from .. import filters  # noqa: PLC0415
    from .chunked import use_scheduler  # noqa: PLC0415
    from ..dask.io import is_chunked_path, save_array  # noqa: PLC0415

    out = args.output
    small_out = not is_chunked_path(out)
    if small_out and not str(out).lower().endswith(".png"):
        raise ValueError(f"output {out!r}: use .zarr, .tif, .tiff, .npy or .png")
    if os.path.lexists(out) and not args.overwrite:
        raise FileExistsError(f"{out!r} exists; pass --overwrite to replace it")
    if args.method in ("joint-bilateral", "jbu") and args.guide is None:
        raise ValueError(f"pacnd filter {args.method} needs --guide")
    img = _read(args.image, args.chunks)
    axis = args.channel_axis
    if axis is None and img.ndim == 3:
        axis = -1
    opts = {}
    if args.sigma_spatial is not None:
        opts["sigma_spatial"] = args.sigma_spatial
    if args.win_size is not None:
        opts["win_size"] = args.win_size
    t0 = time.perf_counter()
    if args.method == "bilateral":
        res = filters.bilateral(img, sigma_color=args.sigma_color, channel_axis=axis, **opts)
    elif args.method == "joint-bilateral":
        guide = _read(args.guide, args.chunks)
        res = filters.joint_bilateral(img, guide, sigma_color=args.sigma_color,
                                      channel_axis=axis, **opts)
    elif args.method == "jbu":
        if args.factor is None:
            raise ValueError("pacnd filter jbu needs --factor")
        guide = _read(args.guide, None if args.chunks is None else args.chunks * args.factor)
        res = filters.joint_bilateral_upsample(img, guide, factor=args.factor,
                                               sigma_color=args.sigma_color,
                                               channel_axis=axis, **opts)
    else:
        res = filters.detail_preserving_pool(img, size=args.size, stride=args.stride,
                                             alpha=args.alpha, lam=args.lam, channel_axis=axis)
    if args.output_dtype == "uint8":
        res = (res.clip(0, 1) * 255 + 0.5).astype(np.uint8)
    else:
        res = res.astype(np.float32)
    with use_scheduler(args.scheduler, memory_limit=args.worker_memory):
        if small_out:
            from ..data.io import write_image  # noqa: PLC0415

            write_image(out, np.asarray(res.compute()))
        else:
            save_array(res, out, overwrite=args.overwrite)
    if not args.quiet:
        print(f"pacnd filter {args.method}: {tuple(img.shape)} -> {out} {tuple(res.shape)} "
              f"{res.dtype} (chunks {res.chunksize[:2]}, scheduler {args.scheduler}) in "
              f"{time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return 0
