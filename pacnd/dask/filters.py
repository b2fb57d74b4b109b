"""The :mod:`pacnd.filters` calls on Dask arrays: lazy, block by block, equal to in memory.

Each function takes the same arguments as its :mod:`pacnd.filters`
namesake (which dispatches here when an input is a ``dask.array.Array``) and
returns a lazy Dask array. Every output block is the in-memory filter run on
the block plus a halo, cut back to the block (:func:`pacnd.dask.regions.map_regions`):

* :func:`bilateral`, :func:`joint_bilateral` — halo ``win_size // 2`` per
  spatial axis: a pixel's window lies inside its block's region, and the
  region's edges are either interior (beyond every window of the block) or
  the image's own border, where the filter's in-image normalisation is the
  same as for the whole image. ``sigma_color=None`` (the guide's standard
  deviation) is a lazy reduction over the whole guide that every block
  depends on.
* :func:`joint_bilateral_upsample` — output blocks are the low-res chunks
  times the factor (boundaries on multiples of the factor); a block reads the
  low-res samples within ``win_size // 2`` high-res pixels of it and the
  guide over the same span, so sample ``i`` stays on high-res pixel
  ``i * factor + (factor - 1) // 2``.
* :func:`detail_preserving_pool` — regions start on multiples of the stride
  so the pooling grid is the whole image's; they cover the windows of the
  block's outputs (and one more output each side for ``reference='dpid'``,
  whose smoothing reads the neighbours).

Channel chunks are merged in the output (the range kernel uses every channel;
each block's region gathers all of them). Integer
images are converted like the in-memory call; value checks (NaN, ...) run
when the blocks are computed and raise the in-memory call's error.
"""

from __future__ import annotations

import numpy as np

from .. import filters as _mem
from ..filters import _bilateral as _mem_bil
from ..filters import _common as _mem_common
from ..filters import _pooling as _mem_pool
from ..filters import _upsample as _mem_up
from . import require
from .regions import Region, as_dask, axis_halo, map_regions, meta_like

__all__ = ["bilateral", "joint_bilateral", "joint_bilateral_upsample", "detail_preserving_pool"]

_WHAT = "pacnd.filters on Dask arrays"


# --------------------------------------------------------------------------- helpers
def _float_dtype(dtype, name):
    """The float dtype the in-memory filters give an image of ``dtype`` (checked)."""
    return _mem_common._as_float_image(np.zeros(1, dtype=dtype), name).dtype


def _dask_image(image, name):
    if image is None:
        raise TypeError(f"{name} is required: pass a NumPy or Dask array")
    if isinstance(image, (list, tuple)):
        image = np.asarray(image)
    if not (_mem_common._is_array(image) or hasattr(image, "dask")):
        raise TypeError(f"{name} must be a NumPy or Dask array, got {type(image).__name__}; "
                        f"convert it with dask.array.from_array({name})")
    a = as_dask(image)
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {tuple(a.shape)}); give an image with at "
                         f"least one pixel")
    return a


def _spatial_axes(layout):
    return [ax for ax in range(layout.ndim) if ax != layout.axis]


def _merged_chunks(a, layout):
    """``a``'s chunks with the channel axis in one chunk: the output's (the regions gather
    every channel, so the input itself is not rechunked — a file-backed input keeps
    reading its regions from the file)."""
    return tuple((a.shape[ax],) if ax == layout.axis else c for ax, c in enumerate(a.chunks))


def _guide_channel_axis(guide, layout, spatial, name="guide"):
    """The guide's channel axis (None for a one-channel guide), checked like in memory."""
    nsp = len(spatial)
    if guide.ndim == nsp:
        if tuple(guide.shape) != tuple(spatial):
            raise ValueError(f"{name} has shape {tuple(guide.shape)} but its spatial size must "
                             f"be {tuple(spatial)}" + _mem_common._GUIDE_HINT)
        return None
    if guide.ndim == nsp + 1:
        axis = layout.axis if layout.axis is not None else nsp
        g_sp = tuple(s for i, s in enumerate(guide.shape) if i != axis)
        if g_sp != tuple(spatial):
            raise ValueError(f"{name} has shape {tuple(guide.shape)}, spatial size {g_sp} "
                             f"(channel axis {axis}), but it must be {tuple(spatial)}"
                             + _mem_common._GUIDE_HINT)
        return axis
    raise ValueError(f"{name} has {guide.ndim} dimensions (shape {tuple(guide.shape)}); it must "
                     f"have the {nsp} spatial dimensions {tuple(spatial)} and optionally one "
                     f"channel axis")


def _guide_for(guide, layout, spatial_chunks):
    """The guide, checked, as a Dask array (a NumPy guide gets ``spatial_chunks``)."""
    if not (_mem_common._is_array(guide) or hasattr(guide, "dask")):
        if isinstance(guide, (list, tuple)):
            guide = np.asarray(guide)
        else:
            raise TypeError(f"guide must be a NumPy or Dask array, got {type(guide).__name__}")
    spatial = tuple(sum(c) for c in spatial_chunks)
    gaxis = _guide_channel_axis(guide, layout, spatial)
    chunks, k = [], 0
    for ax in range(guide.ndim):
        if ax == gaxis:
            chunks.append((guide.shape[ax],))
        else:
            chunks.append(tuple(spatial_chunks[k]))
            k += 1
    g = guide if hasattr(guide, "dask") else as_dask(guide, chunks=tuple(chunks))
    if g.size == 0:
        raise ValueError(f"guide is empty (shape {tuple(g.shape)})")
    return g, gaxis


def _global_std(a, name, dtype):
    """Lazy ``float(a_as_float.std())`` (0-d), 1 for a flat image — the default sigma_color."""
    f = a.map_blocks(_mem_common._as_float_image, name, dtype, dtype=dtype)
    return f.astype(np.float64).std().map_blocks(_std_or_one, dtype=np.float64,
                                                 meta=np.empty((), np.float64))


def _std_or_one(s):
    s = float(s)          # a NumPy or CuPy 0-d array
    return np.asarray(s if s > 0 else 1.0, dtype=np.float64)


def _positions(layout):
    """``{output axis: region axis}`` for the spatial axes (same layout in and out)."""
    return {ax: ax for ax in _spatial_axes(layout)}


def _guide_region(gaxis, ndim_g, spatial_axes_out, span):
    """Region function of a guide whose spatial axes follow the image's ``spatial_axes_out``."""
    def region(bounds):
        out, k = [], 0
        for ax in range(ndim_g):
            if ax == gaxis:
                out.append((0, 1 << 62))
            else:
                out.append(span(k, bounds[spatial_axes_out[k]]))
                k += 1
        return tuple(out)
    return region


def _image_region(layout, span):
    sp = _spatial_axes(layout)

    def region(bounds):
        out = []
        for ax in range(layout.ndim):
            out.append((0, 1 << 62) if ax == layout.axis else span(sp.index(ax), bounds[ax]))
        return tuple(out)
    return region


# --------------------------------------------------------------------------- bilateral
def _bilateral_block(block, img, *rest, guided, opts, pos):
    if guided:
        guide, sigma = rest
        out = _mem.joint_bilateral(img, guide, sigma_color=float(sigma), **opts)
    else:
        (sigma,) = rest
        out = _mem.bilateral(img, sigma_color=float(sigma), **opts)
    return out[block.core(0, pos)]


def _bilateral(image, guide, *, sigma_spatial, sigma_color, win_size, channel_axis, kernel,
               window, engine):
    require(_WHAT)
    img = _dask_image(image, "image")
    dtype = _float_dtype(img.dtype, "image")
    layout = _mem_common._Layout(img, channel_axis, "image")
    sigma_spatial = _mem_common._check_positive(sigma_spatial, "sigma_spatial")
    sigma_color = _mem_common._check_positive(sigma_color, "sigma_color", allow_none=True,
                                       hint="or None for the guide's standard deviation")
    win_size = _mem_bil._bilateral_win_size(sigma_spatial, win_size)
    _mem_common._check_choice(kernel, "kernel", _mem_common._RANGE_KERNELS)
    _mem_common._check_choice(window, "window", _mem_common._WINDOWS)
    out_chunks = _merged_chunks(img, layout)
    sp = _spatial_axes(layout)
    spatial_chunks = [img.chunks[ax] for ax in sp]
    halo = win_size // 2

    def span(k, b):
        return axis_halo(b[0], b[1], halo, img.shape[sp[k]])

    inputs = [Region(img, _image_region(layout, span))]
    if guide is not None:
        g, gaxis = _guide_for(guide, layout, spatial_chunks)
        inputs.append(Region(g, _guide_region(gaxis, g.ndim, sp, span)))
        std_src, std_name = g, "guide"
    else:
        std_src, std_name = img, "image"
    if sigma_color is None:
        inputs.append(Region(_global_std(std_src, std_name, dtype), None))
    else:
        inputs.append(Region(as_dask(np.asarray(sigma_color, dtype=np.float64)), None))
    opts = dict(sigma_spatial=sigma_spatial, win_size=win_size, channel_axis=channel_axis,
                kernel=kernel, window=window, engine=engine)
    func = _partial(_bilateral_block, guided=guide is not None, opts=opts,
                    pos=_positions(layout))
    return map_regions(func, inputs, out_chunks, dtype=dtype,
                       meta=meta_like([img], img.ndim, dtype), name="pacnd-bilateral")


def _partial(f, **kw):
    import functools  # noqa: PLC0415

    return functools.partial(f, **kw)


def bilateral(image, *, sigma_spatial=1.0, sigma_color=None, win_size=None, channel_axis=None,
              kernel="gaussian", window="square", engine=None):
    """:func:`pacnd.filters.bilateral` of a Dask array, lazily (see the module notes).

    Parameters and result as :func:`pacnd.filters.bilateral`; the result is a
    ``dask.array.Array`` with the image's chunks (channel axis merged).
    """
    return _bilateral(image, None, sigma_spatial=sigma_spatial, sigma_color=sigma_color,
                      win_size=win_size, channel_axis=channel_axis, kernel=kernel,
                      window=window, engine=engine)


def joint_bilateral(image, guide, *, sigma_spatial=1.0, sigma_color=None, win_size=None,
                    channel_axis=None, kernel="gaussian", window="square", engine=None):
    """:func:`pacnd.filters.joint_bilateral` of Dask arrays, lazily (see the module notes).

    The guide (NumPy or Dask, any chunks) is read over each block's region.
    """
    if guide is None:
        raise TypeError("guide is required: pass a NumPy or Dask array")
    return _bilateral(image, guide, sigma_spatial=sigma_spatial, sigma_color=sigma_color,
                      win_size=win_size, channel_axis=channel_axis, kernel=kernel,
                      window=window, engine=engine)


# --------------------------------------------------------------------------- JBU
def _jbu_block(block, low, guide, *rest, opts, pos, factor, has_mask):
    if has_mask:
        mask, sigma = rest
    else:
        (sigma,) = rest
        mask = None
    out = _mem.joint_bilateral_upsample(low, guide, sigma_color=float(sigma), mask=mask,
                                        **opts)
    sl = [slice(None)] * out.ndim
    for oa, k in pos.items():
        s, e = block.bounds[oa]
        lo = block.regions[0][oa][0] * factor[k]
        sl[oa] = slice(s - lo, e - lo)
    return out[tuple(sl)]


def joint_bilateral_upsample(low_res, guide, *, factor, sigma_spatial=0.5, sigma_color=None,
                             win_size=None, channel_axis=None, mask=None, kernel="gaussian",
                             engine=None):
    """:func:`pacnd.filters.joint_bilateral_upsample` of Dask arrays, lazily.

    Output chunks are the low-res chunks times ``factor`` (channel axis
    merged); the guide and ``mask`` may be NumPy or Dask arrays with any
    chunks. Exact: each block reads every low-res sample within the window of
    its pixels (see the module notes).
    """
    require(_WHAT)
    low = _dask_image(low_res, "low_res")
    dtype = _float_dtype(low.dtype, "low_res")
    layout = _mem_common._Layout(low, channel_axis, "low_res")
    nd = len(layout.spatial)
    factor = _mem_up._check_factor(factor, nd)
    sigma_spatial = _mem_common._check_positive(sigma_spatial, "sigma_spatial")
    sigma_color = _mem_common._check_positive(sigma_color, "sigma_color", allow_none=True,
                                       hint="or None for the guide's standard deviation")
    _mem_common._check_choice(kernel, "kernel", _mem_common._RANGE_KERNELS)
    ksize = _mem_up._jbu_window(factor, sigma_spatial, win_size)
    sp = _spatial_axes(layout)
    low_chunks = [low.chunks[ax] for ax in sp]
    g, gaxis = _guide_for(guide, layout, [tuple(c * f for c in ch)
                                          for ch, f in zip(low_chunks, factor)])
    offs = tuple(_mem.jbu_sample_offset(f) for f in factor)

    def low_span(k, b):
        """Low-res samples a block of high-res pixels ``b`` needs (and its guide span / f)."""
        f, r, o, n = factor[k], ksize[k] // 2, offs[k], layout.spatial[k]
        s, e = b
        lo = min(-((r + o - s) // f), (s - r) // f)            # ceil((s-r-o)/f), floor((s-r)/f)
        hi = max((e - 1 + r - o) // f + 1, -((r - e) // f))    # ..., ceil((e+r)/f)
        return max(0, lo), min(n, hi)

    def guide_span(k, b):
        lo, hi = low_span(k, b)
        return lo * factor[k], hi * factor[k]

    out_chunks = []
    for ax in range(low.ndim):
        if ax == layout.axis:
            out_chunks.append((low.shape[ax],))
        else:
            out_chunks.append(tuple(c * factor[sp.index(ax)] for c in low.chunks[ax]))
    inputs = [Region(low, _image_region(layout, low_span)),
              Region(g, _guide_region(gaxis, g.ndim, sp, guide_span))]
    has_mask = mask is not None
    if has_mask:
        if not (_mem_common._is_array(mask) or hasattr(mask, "dask")):
            raise TypeError(f"mask must be a boolean array of shape {tuple(layout.spatial)}, "
                            f"got {type(mask).__name__}")
        if mask.dtype != np.bool_:
            raise TypeError(f"mask has dtype {mask.dtype}; give a boolean array (True = valid "
                            f"sample), e.g. mask=np.isfinite(low_res)")
        if tuple(mask.shape) != tuple(layout.spatial):
            raise ValueError(f"mask has shape {tuple(mask.shape)}, expected the low-res "
                             f"spatial shape {tuple(layout.spatial)}")
        m = as_dask(mask, chunks=tuple(low_chunks))
        inputs.append(Region(m, lambda b: tuple(low_span(k, b[ax]) for k, ax in
                                                enumerate(sp))))
    if sigma_color is None:
        inputs.append(Region(_global_std(g, "guide", dtype), None))
    else:
        inputs.append(Region(as_dask(np.asarray(sigma_color, dtype=np.float64)), None))
    opts = dict(factor=factor, sigma_spatial=sigma_spatial, win_size=win_size,
                channel_axis=channel_axis, kernel=kernel, engine=engine)
    func = _partial(_jbu_block, opts=opts, pos={ax: k for k, ax in enumerate(sp)},
                    factor=factor, has_mask=has_mask)
    return map_regions(func, inputs, tuple(out_chunks), dtype=dtype,
                       meta=meta_like([low, g], low.ndim, dtype), name="pacnd-jbu")


# --------------------------------------------------------------------------- DPP
def _out_chunks(in_chunks, stride, n_out):
    """Output chunks of a strided pooling: boundaries at the input's, divided by the stride."""
    edges = np.concatenate([[0], np.cumsum(in_chunks)])
    cuts = sorted({min(n_out, -(-int(e) // stride)) for e in edges} | {0, n_out})
    return tuple(b - a for a, b in zip(cuts[:-1], cuts[1:]) if b > a)


def _dpp_block(block, img, *rest, opts, pos, stride, has_ref):
    if has_ref:
        (ref,) = rest
        opts = dict(opts, reference=ref)
    out = _mem.detail_preserving_pool(img, stride=stride, **opts)
    sl = [slice(None)] * out.ndim
    for oa in pos:
        s, e = block.bounds[oa]
        lo = block.regions[0][oa][0] // stride
        sl[oa] = slice(s - lo, e - lo)
    return out[tuple(sl)]


def detail_preserving_pool(image, *, size=2, stride=None, padding=0, alpha=0.1, lam=1.0,
                           asym=False, reference="box", eps=1e-3, channel_axis=None,
                           engine=None):
    """:func:`pacnd.filters.detail_preserving_pool` of a Dask array, lazily.

    Output chunk boundaries are the input's divided by the stride; an array
    ``reference`` (NumPy or Dask, the output's shape) is read block by block.
    Exact: regions start on multiples of the stride (see the module notes).
    """
    require(_WHAT)
    img = _dask_image(image, "image")
    dtype = _float_dtype(img.dtype, "image")
    layout = _mem_common._Layout(img, channel_axis, "image")
    C = layout.channels
    size = _mem_common._check_int(size, "size", minimum=1)
    stride = size if stride is None else _mem_common._check_int(stride, "stride", minimum=1)
    padding = _mem_common._check_int(padding, "padding", minimum=0)
    if padding > size // 2:
        raise ValueError(f"padding={padding} is larger than size // 2 = {size // 2}: some "
                         f"windows would hold only padding; use padding <= {size // 2}")
    _mem_common._check_positive(eps, "eps")
    if not isinstance(asym, (bool, np.bool_)):
        raise TypeError(f"asym must be True or False, got {asym!r}")
    _mem_pool._dpp_param(alpha, "alpha", C, nonneg=True)
    _mem_pool._dpp_param(lam, "lam", C, nonneg=False)
    out_sp = tuple((s + 2 * padding - size) // stride + 1 for s in layout.spatial)
    if any(o < 1 for o in out_sp):
        raise ValueError(f"size={size} (with padding={padding}) is larger than the image's "
                         f"spatial shape {layout.spatial}; use a smaller size or more padding")
    sp = _spatial_axes(layout)
    margin = 1 if isinstance(reference, str) and reference == "dpid" else 0
    if isinstance(reference, str):
        _mem_common._check_choice(reference, "reference", _mem_pool._REFERENCES)

    def span(k, b):
        n, n_out = layout.spatial[k], out_sp[k]
        a0, a1 = max(0, b[0] - margin), min(n_out, b[1] + margin)
        start = max(0, ((a0 * stride - padding) // stride) * stride)
        return start, min(n, (a1 - 1) * stride - padding + size)

    out_chunks = []
    for ax in range(img.ndim):
        if ax == layout.axis:
            out_chunks.append((C,))
        else:
            k = sp.index(ax)
            out_chunks.append(_out_chunks(img.chunks[ax], stride, out_sp[k]))
    inputs = [Region(img, _image_region(layout, span))]
    has_ref = not isinstance(reference, str)
    if has_ref:
        expected = tuple(out_sp[sp.index(ax)] if ax != layout.axis else C
                         for ax in range(img.ndim))
        if not (_mem_common._is_array(reference) or hasattr(reference, "dask")):
            raise TypeError(f"reference must be 'box', 'dpid' or an array, got "
                            f"{type(reference).__name__}")
        if tuple(reference.shape) != expected:
            raise ValueError(f"reference has shape {tuple(reference.shape)}; an array reference "
                             f"is I~ at the output resolution, shape {expected} (same layout as "
                             f"the output)")
        ref = as_dask(reference, chunks=tuple(out_chunks))

        def ref_region(b):
            out = []
            for ax in range(img.ndim):
                if ax == layout.axis:
                    out.append((0, C))
                    continue
                k = sp.index(ax)
                s, e = span(k, b[ax])
                n_loc = (e - s + 2 * padding - size) // stride + 1
                out.append((s // stride, s // stride + n_loc))
            return tuple(out)
        inputs.append(Region(ref, ref_region))
    opts = dict(size=size, padding=padding, alpha=alpha, lam=lam, asym=asym, eps=eps,
                channel_axis=channel_axis, engine=engine)
    if not has_ref:
        opts["reference"] = reference
    func = _partial(_dpp_block, opts=opts, pos=sp, stride=stride, has_ref=has_ref)
    return map_regions(func, inputs, tuple(out_chunks), dtype=dtype,
                       meta=meta_like([img], img.ndim, dtype), name="pacnd-dpp")

