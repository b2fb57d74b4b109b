"""Out-of-core files for Dask arrays: ``.zarr``, (tiled) TIFF and ``.npy``, chunk by chunk.

:func:`open_array` gives a lazy Dask array whose chunks are read from the file
when computed (on whichever worker computes them: the graph holds the path,
never the data) — and pacnd's block-wise operations read their regions (block
plus halo) from the file directly (:func:`pacnd.dask.regions.register_source`); :func:`save_array` computes an array chunk by chunk into a
file. An image larger than memory is thus read, filtered / refined and
written with memory bounded by a few chunks (plus halos) per worker.

Writes are atomic: the file (or the ``.zarr`` folder) is assembled under a
temporary name next to the target and renamed into place when complete, so
an interrupted run leaves no partial output under the final name.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

from . import require, require_module
from .regions import register_source

__all__ = ["open_array", "save_array", "is_chunked_path", "CHUNKED_SUFFIXES"]

#: file types read and written chunk by chunk
CHUNKED_SUFFIXES = (".zarr", ".tif", ".tiff", ".npy")
_SMALL_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")


def is_chunked_path(path):
    """True for a path :func:`open_array` reads lazily (``.zarr``, ``.tif(f)``, ``.npy``)."""
    return str(path).lower().rstrip("/").endswith(CHUNKED_SUFFIXES)


def _suffix(path):
    p = str(path).lower().rstrip("/")
    for s in CHUNKED_SUFFIXES + _SMALL_IMAGE_SUFFIXES:
        if p.endswith(s):
            return s
    return os.path.splitext(p)[1]


class _FileArray:
    """An array-like over a file region reader: what ``da.from_array`` slices lazily.

    Holds the path only, so a graph that contains it is small and every
    worker opens the file itself.
    """

    def __init__(self, path, kind, shape, dtype):
        self.path, self.kind = os.fspath(path), kind
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        if self.kind == "npy":
            a = np.load(self.path, mmap_mode="r", allow_pickle=False)
            return np.array(a[key])
        import tifffile  # noqa: PLC0415
        import zarr  # noqa: PLC0415

        with tifffile.imread(self.path, aszarr=True) as store:
            z = zarr.open(store, mode="r")
            if not hasattr(z, "shape"):  # a pyramid: level 0
                z = z[sorted(z.array_keys())[0]]
            return np.asarray(z[key])


def _tiff_meta(path):
    tifffile = require_module("tifffile", "reading TIFFs chunk by chunk")
    try:
        with tifffile.TiffFile(path) as tf:
            s = tf.series[0]
            return tuple(s.shape), s.dtype
    except (tifffile.TiffFileError, ValueError) as exc:
        raise OSError(f"cannot read TIFF {path!r}: {exc}") from None


def _chunks_arg(chunks, shape, default):
    if chunks is None:
        return default
    if isinstance(chunks, int):
        return tuple(chunks if i < 2 else -1 for i in range(len(shape)))
    return chunks


class _AsFloat32:
    """A region reader returning an integer file's values as float32 in [0, 1] (signed
    integers in [-1, 1]), like the filters' integer-image conversion."""

    def __init__(self, source, dtype):
        self.source, self.src_dtype = source, np.dtype(dtype)
        self.shape, self.ndim = tuple(source.shape), len(source.shape)
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key):
        a = np.asarray(self.source[key])
        if self.src_dtype.kind == "b":
            return a.astype(np.float32)
        out = a.astype(np.float32) / np.float32(np.iinfo(self.src_dtype).max)
        return np.maximum(out, np.float32(-1)) if self.src_dtype.kind == "i" else out


def _lazy(source, chunks, default, as_float32):
    """A registered Dask array over ``source`` (optionally converted to float32)."""
    import dask.array as da  # noqa: PLC0415

    dt = np.dtype(source.dtype)
    if as_float32 and dt.kind in "uib":
        source = _AsFloat32(source, dt)
        dt = source.dtype
    arr = da.from_array(source, chunks=_chunks_arg(chunks, source.shape, default),
                        meta=np.empty((0,) * len(source.shape), dt), name=False,
                        asarray=False, fancy=False, inline_array=True)
    return register_source(arr, source)


def open_array(path, *, chunks=None, as_float32=False):
    """A file as a lazy Dask array, read chunk by chunk.

    Parameters
    ----------
    path : str or path
        ``.zarr`` (a zarr array store), ``.tif`` / ``.tiff`` (the first
        series, level 0 of a pyramid; tiled TIFFs read tile by tile),
        ``.npy`` (memory-mapped), or a small image (``.png``, ``.jpg``, ...,
        read whole).
    chunks : int or tuple, optional
        Chunks of the result; an int is the spatial chunk size (first two
        axes), other axes whole. Default: the zarr store's chunks, else
        Dask's ``'auto'`` for the spatial axes.
    as_float32 : bool
        Read integer (and boolean) files as float32 in ``[0, 1]`` (signed:
        ``[-1, 1]``), converted chunk by chunk as they are read — the filters'
        own scaling, in float32 instead of float64.

    Returns
    -------
    dask.array.Array
    """
    da = require("pacnd.dask.open_array")
    path = os.fspath(path)
    suffix = _suffix(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path!r} does not exist")
    if suffix == ".zarr":
        zarr = require_module("zarr", "reading .zarr files")
        try:
            z = zarr.open_array(path, mode="r")
        except Exception as exc:  # zarr raises several types for a bad store
            raise OSError(f"cannot read zarr array {path!r}: {exc}") from None
        if as_float32 and z.dtype.kind in "uib":
            return _lazy(z, chunks, z.chunks, True)
        c = _chunks_arg(chunks, z.shape, z.chunks)
        return register_source(da.from_zarr(z, chunks=c, inline_array=True), z)
    if suffix in (".tif", ".tiff", ".npy"):
        if suffix == ".npy":
            try:
                a = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise OSError(f"cannot read {path!r}: {exc}") from None
            shape, dtype, kind = a.shape, a.dtype, "npy"
            del a
        else:
            shape, dtype = _tiff_meta(path)
            kind = "tiff"
        src = _FileArray(path, kind, shape, dtype)
        default = tuple("auto" if i < 2 else -1 for i in range(len(shape)))
        return _lazy(src, chunks, default, as_float32)
    if suffix in _SMALL_IMAGE_SUFFIXES:
        from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

        try:
            with Image.open(path) as im:
                a = np.asarray(im)
        except (UnidentifiedImageError, OSError) as exc:
            raise OSError(f"cannot read image {path!r}: {exc}") from None
        default = tuple("auto" if i < 2 else -1 for i in range(a.ndim))
        if as_float32 and a.dtype.kind in "uib":
            return _lazy(a, chunks, default, True)
        return da.from_array(a, chunks=_chunks_arg(chunks, a.shape, default))
    raise ValueError(f"{path!r}: unsupported file type {suffix or '(none)'}; use .zarr, .tif, "
                     f".tiff, .npy or an image (.png, ...)")


def _regular(a):
    """``a`` with regular chunks (all equal but the last per axis), as zarr needs."""
    if all(len(set(c[:-1])) <= 1 and (len(c) == 1 or c[-1] <= c[0]) for c in a.chunks):
        return a
    return a.rechunk(a.chunksize)


def _tmp_name(path):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    return tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)


def _replace(tmp, path):
    """Move ``tmp`` onto ``path`` (a file or a folder), replacing what is there."""
    old = None
    if os.path.isdir(path) and not os.path.islink(path):
        old = tmp + ".old"
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class _NpyTarget:
    """``target[region] = block`` into an ``.npy`` file opened per write (picklable)."""

    def __init__(self, path):
        self.path = path

    def __setitem__(self, key, value):
        m = np.load(self.path, mmap_mode="r+", allow_pickle=False)
        m[key] = value
        m.flush()
        del m


def _tile_size(a):
    """TIFF tile side: the array's spatial chunk when a multiple of 16, else 512."""
    c = a.chunksize[:2]
    if c[0] == c[1] and c[0] % 16 == 0 and c[0] <= 8192:
        return int(c[0])
    return 512


def save_array(array, path, *, overwrite=False, compression=None):
    """Compute ``array`` into ``path`` chunk by chunk (atomically).

    Parameters
    ----------
    array : dask.array.Array or ndarray
    path : str or path
        ``.zarr`` (chunks as the array's, regularised), ``.tif`` / ``.tiff``
        (a tiled BigTIFF, one tile row computed at a time), or ``.npy``.
    overwrite : bool
        Replace an existing output; otherwise FileExistsError.
    compression : str, optional
        TIFF: a tifffile compression (e.g. ``'zlib'``; default none). zarr:
        ``'none'`` stores chunks uncompressed (default: zarr's compressor).

    Returns
    -------
    str
        ``path``.

    Notes
    -----
    The computation runs on the current Dask scheduler (a ``distributed``
    client when one is active). ``.zarr`` and ``.npy`` outputs are written by
    the workers themselves (they need the folder on a shared file system);
    a TIFF is written by this process, tile row by tile row.
    """
    da = require("pacnd.dask.save_array")
    path = os.fspath(path)
    suffix = _suffix(path)
    if suffix not in CHUNKED_SUFFIXES:
        raise ValueError(f"{path!r}: save_array writes .zarr, .tif, .tiff or .npy, not "
                         f"{suffix or '(no suffix)'}")
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{path!r} exists; pass overwrite=True (--overwrite) to replace "
                              f"it")
    a = array if isinstance(array, da.Array) else da.from_array(np.asarray(array))
    tmp = _tmp_name(path)
    try:
        if suffix == ".zarr":
            require_module("zarr", "writing .zarr files")
            shutil.rmtree(tmp)
            da.to_zarr(_regular(a), tmp, compute=True, **_zarr_kwargs(compression))
        elif suffix == ".npy":
            f = os.path.join(tmp, "out.npy")
            mm = np.lib.format.open_memmap(f, mode="w+", dtype=a.dtype, shape=a.shape)
            del mm
            da.store(a, _NpyTarget(f), lock=False, compute=True)
            os.replace(f, tmp + ".npy")
            os.rmdir(tmp)
            tmp = tmp + ".npy"
        else:
            f = os.path.join(tmp, "out.tif")
            _write_tiff(a, f, compression)
            os.replace(f, tmp + ".tif")
            os.rmdir(tmp)
            tmp = tmp + ".tif"
        _replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.isfile(tmp):
            os.unlink(tmp)
        raise
    return path


def _zarr_kwargs(compression):
    """Keyword arguments of the zarr array creation for ``compression`` (None or 'none')."""
    if compression is None:
        return {}
    if compression != "none":
        raise ValueError(f"compression={compression!r}: zarr outputs take None (zarr's default "
                         f"compressor) or 'none'")
    import zarr  # noqa: PLC0415

    major = int(str(zarr.__version__).split(".")[0])
    return {"compressors": None} if major >= 3 else {"compressor": None}


def _write_tiff(a, f, compression):
    import dask  # noqa: PLC0415

    tifffile = require_module("tifffile", "writing TIFFs chunk by chunk")
    if a.ndim not in (2, 3):
        raise ValueError(f"a TIFF holds (H, W) or (H, W, C) images, got shape {a.shape}")
    T = _tile_size(a)
    a = a.rechunk((T, T) + ((-1,) if a.ndim == 3 else ()))

    def tiles():
        for i in range(a.numblocks[0]):
            row = dask.compute(*[a.blocks[(i, j) + ((0,) if a.ndim == 3 else ())]
                                 for j in range(a.numblocks[1])])
            yield from (np.ascontiguousarray(t) for t in row)

    photometric = "rgb" if a.ndim == 3 and a.shape[2] == 3 else "minisblack"
    planar = "contig" if a.ndim == 3 else None
    tifffile.imwrite(f, tiles(), shape=a.shape, dtype=a.dtype, tile=(T, T), bigtiff=True,
                     photometric=photometric, planarconfig=planar, compression=compression)
