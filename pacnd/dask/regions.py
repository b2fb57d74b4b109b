"""Block-wise maps whose blocks read a *region* of each input (block plus halo).

:func:`map_regions` is the one graph builder of :mod:`pacnd.dask`. For every
block of the output it gathers, from each input Dask array, the region that
block needs — any rectangle, computed by a per-input function of the
block's bounds, possibly several chunks wide (halos larger than a chunk),
clipped to the array — and calls ``func`` on those regions. Unlike
``dask.array.map_overlap`` it keeps the output chunks the caller asks for
(no rechunking when a chunk is smaller than the halo), allows inputs at
other resolutions than the output (joint upsampling reads a low-res input
and a high-res guide) and regions aligned to a grid (the CRF's pooled cells).

Data movement: a region is assembled from separate ``getitem`` tasks on the
chunks it overlaps (shared by the blocks that need the same slice), which the
scheduler runs where the chunk lives, so only the needed slices of
neighbouring chunks travel to the worker that computes the block. Arrays read
straight from files (:func:`pacnd.dask.open_array` registers them,
:func:`register_source`) are not gathered at all: each block reads its region
from the file, so a worker holds only the regions it is computing (Dask would
otherwise keep neighbouring chunks in memory until every block that needs a
slice of them has run — rows of chunks for wide images).
"""

from __future__ import annotations

import operator
import uuid
from dataclasses import dataclass

import numpy as np

__all__ = ["Region", "Block", "map_regions", "register_source", "axis_halo", "chunk_bounds",
           "as_dask", "meta_like"]


@dataclass(frozen=True)
class Block:
    """What ``func`` learns about the block it computes.

    Attributes
    ----------
    index : tuple of int
        Block index in the output's chunk grid.
    bounds : tuple of (int, int)
        ``(start, stop)`` of the block along every output axis.
    regions : tuple
        For every array input, the ``(start, stop)`` per axis of the region
        it received (``None`` for constants).
    """

    index: tuple
    bounds: tuple
    regions: tuple

    def core(self, k, axes_map):
        """Slices that cut the block out of input ``k``'s region.

        ``axes_map`` pairs output axes with the region's axes:
        ``{output axis: input axis}``; unlisted region axes are kept whole.
        """
        reg = self.regions[k]
        sl = [slice(None)] * len(reg)
        for oa, ia in axes_map.items():
            s, e = self.bounds[oa]
            sl[ia] = slice(s - reg[ia][0], e - reg[ia][0])
        return tuple(sl)


@dataclass(frozen=True)
class Region:
    """An array input of :func:`map_regions`.

    Attributes
    ----------
    array : dask.array.Array
        The input.
    region : callable or None
        ``region(bounds) -> ((start, stop), ...)`` along every axis of
        ``array`` for an output block with ``bounds``; values outside the
        array are clipped. ``None``: the whole array (e.g. a 0-d reduction
        result every block needs).
    """

    array: object
    region: object = None


def chunk_bounds(chunks):
    """``[(start, stop), ...]`` of the chunks along one axis."""
    edges = np.concatenate([[0], np.cumsum(chunks)]).astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def axis_halo(start, stop, halo, n):
    """``(start - halo, stop + halo)`` clipped to ``[0, n]``."""
    return max(0, start - halo), min(n, stop + halo)


def as_dask(a, like=None, chunks=None):
    """``a`` as a Dask array (NumPy/CuPy arrays are wrapped; chunks from ``chunks``)."""
    import dask.array as da  # noqa: PLC0415

    if isinstance(a, da.Array):
        return a
    if chunks is None:
        chunks = "auto" if like is None else like
    return da.from_array(a, chunks=chunks, asarray=False)


def meta_like(arrays, ndim, dtype):
    """An empty array of the module (NumPy or CuPy) of the inputs' chunks, for ``meta``."""
    for a in arrays:
        meta = getattr(a, "_meta", None)
        if meta is not None and type(meta).__module__.split(".")[0] == "cupy":
            import cupy  # noqa: PLC0415

            return cupy.empty((0,) * ndim, dtype=dtype)
    return np.empty((0,) * ndim, dtype=dtype)


#: Dask arrays read straight from a file (name -> object whose ``[slices]`` reads them),
#: registered by :func:`pacnd.dask.open_array`; bounded, most recent kept
_SOURCES = {}
_MAX_SOURCES = 256


def register_source(array, source):
    """Let blocks read regions of ``array`` from ``source[slices]`` directly.

    ``source`` (a zarr array, a file-region reader: small and picklable) must hold
    exactly ``array``'s data. Blocks then depend on no chunk task of ``array``:
    each worker reads its region (block plus halo) from storage, no neighbour
    chunks are held in memory or moved between workers. Returns ``array``.
    """
    _SOURCES.pop(array.name, None)
    _SOURCES[array.name] = source
    while len(_SOURCES) > _MAX_SOURCES:
        _SOURCES.pop(next(iter(_SOURCES)))
    return array


def _read_region(source, sl):
    import numpy as np  # noqa: PLC0415

    return np.asarray(source[sl])


def _gather(a, reg, slices):
    """Task that assembles region ``reg`` of Dask array ``a`` from its chunks.

    Parts of chunks become their own ``getitem`` tasks, registered in ``slices``
    (``{(array name, chunk index, slices): key}``, shared by every block): the
    scheduler runs them where the chunk is, so only the slice travels to the block's
    worker, and the chunk can be released once its slices are cut.
    """
    from dask.array.core import concatenate3  # noqa: PLC0415

    if a.ndim == 0:
        return (a.name,)
    per_axis = []
    for ax, (s, e) in enumerate(reg):
        parts = []
        for i, (cs, ce) in enumerate(chunk_bounds(a.chunks[ax])):
            lo, hi = max(s, cs), min(e, ce)
            if lo < hi:
                parts.append((i, (lo - cs, hi - cs), hi - lo == ce - cs))
        per_axis.append(parts)

    def build(ax, idx, sls, whole):
        if ax == a.ndim:
            key = (a.name,) + tuple(idx)
            if all(whole):
                return key
            ident = (a.name, tuple(idx), tuple(sls))
            if ident not in slices:
                slices[ident] = len(slices)
            return ("__slice__", slices[ident], key, tuple(slice(*b) for b in sls))
        return [build(ax + 1, idx + [i], sls + [b], whole + [w])
                for i, b, w in per_axis[ax]]

    nested = build(0, [], [], [])
    flat = nested
    for _ in range(a.ndim):
        if len(flat) != 1:
            return (concatenate3, nested)
        flat = flat[0]
    return flat  # one chunk: no concatenation


def _slice_keys(task, name, layer):
    """Replace ``('__slice__', n, key, slices)`` markers by keys of getitem tasks in
    ``layer``."""
    if isinstance(task, list):
        return [_slice_keys(t, name, layer) for t in task]
    if isinstance(task, tuple) and task and task[0] == "__slice__":
        _, n, key, sl = task
        k = (name, n)
        layer[k] = (operator.getitem, key, sl)
        return k
    if isinstance(task, tuple) and task and callable(task[0]):
        return (task[0],) + tuple(_slice_keys(t, name, layer) for t in task[1:])
    return task


def _clip(reg, shape):
    out = []
    for (s, e), n in zip(reg, shape):
        s, e = max(0, int(s)), min(int(n), int(e))
        if s >= e:
            raise ValueError(f"empty region {(s, e)} of an axis of length {n}")
        out.append((s, e))
    return tuple(out)


def _call(func, index, bounds, regions, *args):
    return func(Block(index, bounds, regions), *args)


def map_regions(func, inputs, out_chunks, *, dtype, meta=None, name="pacnd", n_out=1,
                out_meta=None, constants=()):
    """A lazy array (or ``n_out`` arrays) whose every block is ``func`` of input regions.

    Parameters
    ----------
    func : callable
        ``func(block, *regions, *constants)`` with ``block`` a :class:`Block`,
        one array per :class:`Region` input (NumPy or CuPy, the region's
        data) and the constants; returns the block (an array of the block's
        shape) or a tuple of ``n_out`` blocks.
    inputs : sequence of Region
        The array inputs.
    out_chunks : tuple of tuple of int
        Chunks of the output(s) (Dask's normalised form).
    dtype : dtype or sequence of dtype
        Output dtype(s).
    meta : array or sequence, optional
        ``meta`` of the output(s) (an empty NumPy/CuPy array).
    name : str
        Prefix of the graph keys.
    n_out : int
        Number of outputs ``func`` returns.
    out_meta, constants
        ``out_meta``: per output, ``(chunks, meta)`` overrides when the
        outputs differ in chunking (e.g. labels and probabilities);
        ``constants``: objects placed once in the graph (a model, CRF
        parameters) and passed to every call after the regions.

    Returns
    -------
    dask.array.Array or tuple of dask.array.Array
    """
    import dask.array as da  # noqa: PLC0415
    from dask.highlevelgraph import HighLevelGraph  # noqa: PLC0415
    from dask.utils import apply  # noqa: PLC0415

    token = uuid.uuid4().hex
    cname = f"{name}-{token}"
    layer = {}
    const_keys = []
    for i, c in enumerate(constants):
        if isinstance(c, tuple):
            raise TypeError("constants must not be tuples (Dask would read them as tasks); "
                            "pass a list or an object")
        key = (f"{cname}-const{i}",)
        layer[key] = c
        const_keys.append(key)
    grids = [chunk_bounds(c) for c in out_chunks]
    arrays = [r.array for r in inputs]
    slices, slice_name = {}, f"{name}-halo-{token}"
    sources = {}
    for k, r in enumerate(inputs):
        src = _SOURCES.get(r.array.name)
        if src is not None and r.array.ndim > 0:
            sources[k] = (f"{cname}-source{k}",)
            layer[sources[k]] = src
    for index in np.ndindex(*[len(g) for g in grids]):
        bounds = tuple(g[i] for g, i in zip(grids, index))
        regs, tasks = [], []
        for k, r in enumerate(inputs):
            a = r.array
            reg = (tuple((0, n) for n in a.shape) if r.region is None
                   else _clip(r.region(bounds), a.shape))
            regs.append(reg)
            if k in sources:  # straight from the file: no chunk task involved
                tasks.append((_read_region, sources[k], tuple(slice(*b) for b in reg)))
            else:
                tasks.append(_slice_keys(_gather(a, reg, slices), slice_name, layer))
        layer[(cname,) + index] = (apply, _call, [func, tuple(index), bounds, tuple(regs)]
                                   + tasks + const_keys)
    deps = [a for k, a in enumerate(arrays) if k not in sources]
    graph = HighLevelGraph.from_collections(cname, layer, dependencies=deps)
    dtypes = list(dtype) if n_out > 1 else [dtype]
    metas = list(meta) if (n_out > 1 and meta is not None) else [meta] * n_out
    if n_out == 1:
        return da.Array(graph, cname, out_chunks, dtype=dtypes[0], meta=metas[0])
    outs = []
    for k in range(n_out):
        chunks_k, meta_k = (out_meta[k] if out_meta is not None else (out_chunks, metas[k]))
        oname = f"{name}-out{k}-{token}"
        olayer = {}
        for index in np.ndindex(*[len(g) for g in grids]):
            extra = (0,) * (len(chunks_k) - len(out_chunks))
            olayer[(oname,) + index + extra] = (operator.getitem, (cname,) + index, k)
        layers = dict(graph.layers)
        layers[oname] = olayer
        deps = {kk: set(v) for kk, v in graph.dependencies.items()}
        deps[oname] = {cname}
        outs.append(da.Array(HighLevelGraph(layers, deps), oname, chunks_k, dtype=dtypes[k],
                             meta=meta_k))
    return tuple(outs)
