"""PAC-CRF refinement of Dask arrays: lazy labels (and probabilities), block by block.

:func:`pacnd.crf.refine` and :func:`pacnd.crf.convcrf_refine` dispatch here
when the image or the scores are ``dask.array.Array`` s, handing over the CRF
they built for the call (the mapping of the whole image's size). Every
output block is that CRF's in-memory inference on the block plus a halo,
cut back to the block.

The halo (:func:`crf_halo`) is derived from the CRF object itself — every
pairwise kernel's ``kernel_size``, ``dilation``, ``blur``, normalisation
group and compatibility, and the number of mean-field steps — so it stays
exact when the mapping's defaults change. Per step, a message at a pooled
cell reads the cells within ``(k // 2) * d`` (its taps), the adapting
kernel reads the pooled features as far, a normaliser reads its group's
taps (and the message reads the normalisers of its sources), and the
(bi/tri)linear upsampling of the messages reads the neighbouring cells. Counting
that reach in pixels (``blur`` pixels per cell) through every step gives the
distance from a block edge beyond which the block's values are exactly the
whole image's. Regions are then aligned to the pooled grids: along every
axis they start on a multiple of every kernel's ``blur`` and end where the
image's length is congruent to their own, so their pooling cells and padding
are the whole image's.

The exact halo grows with ``steps * reach``: for the fully-connected-CRF
defaults on a 2048x2048 image (5 steps; bilateral rings reaching 27 cells of
3 pixels) it is 511 pixels a side, so blocks of 2048-4096 pixels keep the
overhead moderate. The mapping is built for the whole image's size, so on
very large images it is the in-memory call's mapping (whose automatic
``blur`` grows to bound the whole image's kernel memory); pass ``blur=`` to
:func:`pacnd.crf.refine` to fix the grid. :func:`refine` takes a smaller
``halo`` for an approximation (a measured agreement is in
``benchmarks/results/dask.md``).

Volumes ((D, H, W[, C]) guides with (D, H, W, L) scores) run the same way:
the halo and the alignment are per axis (a kernel's ``blur`` may be a
per-axis tuple, e.g. for anisotropic voxels with ``spacing=``).
"""

from __future__ import annotations

import contextvars
import math
import numbers
import warnings

import numpy as np

from . import require
from .regions import Region, as_dask, map_regions

__all__ = ["crf_halo", "refine", "refine_dask"]

_HALO = contextvars.ContextVar("pacnd_dask_crf_halo", default=None)


# --------------------------------------------------------------------------- the halo
def crf_halo(crf, per_axis=False):
    """Halo (pixels per side) that makes block-wise inference of ``crf`` exact.

    Parameters
    ----------
    crf : pacnd.crf.PacCRF
        The CRF (its ``kernels``, ``num_steps`` and ``ndim`` are read).
    per_axis : bool
        Return one halo per spatial axis (they differ when a kernel's
        ``blur`` is a per-axis tuple, e.g. anisotropic volumes).

    Returns
    -------
    int or tuple of int
        Pixels a block needs on each side (the largest over the axes, or one
        per axis), before the alignment to the pooled grids, which only adds
        to it.

    Notes
    -----
    Along an axis, with ``b_i`` kernel ``i``'s blur there,
    ``rho_i = (k_i // 2) * d_i * b_i`` its reach in pixels, ``G(i)`` its
    normalisation group (``rho_G`` the group's largest reach; 'symmetric',
    'before' and 'after' normalisers all read at most that far from the
    sending pixel) and ``L_s`` the distance from a block edge beyond which the
    full-resolution logits of step ``s`` are exact (``L_0 = 0``)::

        M_i,s = max(rho_i [adaptive K], rho_i + rho_G(i) [normalised],
                    rho_i + L_(s-1) [sources])
        L_s   = max over kernels i of (M_i,s + up(b_i))

    where ``up(b) = 2 b - 1`` covers the cells the linear upsampling reads
    (0 for ``b = 1``). The halo is ``L_steps``.
    """
    from ..crf.spec import blur_tuple, norm_groups  # noqa: PLC0415

    kernels = list(getattr(crf, "kernels", ()))
    steps = int(getattr(crf, "num_steps", 0))
    nd = int(getattr(crf, "ndim", 2))
    if not kernels or steps == 0:
        return (0,) * nd if per_axis else 0
    groups = norm_groups(kernels)
    out = []
    for axis in range(nd):
        blur = [blur_tuple(s.blur, nd)[axis] for s in kernels]
        reach = [s.padding * b for s, b in zip(kernels, blur)]
        group_reach = {}
        for idx in groups.values():
            r = max(reach[i] for i in idx)
            for i in idx:
                group_reach[i] = r
        L = 0
        for _ in range(steps):
            new = 0
            for i, s in enumerate(kernels):
                m = reach[i] + L
                if s.adaptive:
                    m = max(m, reach[i])
                if i in group_reach:
                    m = max(m, reach[i] + group_reach[i])
                new = max(new, m + (2 * blur[i] - 1 if blur[i] > 1 else 0))
            L = new
        out.append(int(L))
    return tuple(out) if per_axis else max(out)


def _alignment(crf, nd):
    """Per axis, the pooled grids' common period: lcm of the kernels' ``blur`` there."""
    from ..crf.spec import blur_tuple  # noqa: PLC0415

    out = [1] * nd
    for s in getattr(crf, "kernels", ()):
        for a, b in enumerate(blur_tuple(s.blur, nd)):
            out[a] = out[a] * b // math.gcd(out[a], b)
    return tuple(out)


def _aligned_span(start, stop, halo, n, period):
    """Region ``[start - halo, stop + halo]`` clipped to ``[0, n]``, grown so that it starts
    on a multiple of ``period`` and its length is congruent to ``n`` (pooled cells and the
    pooling's padding are then the whole image's)."""
    a = max(0, start - halo)
    e = min(n, stop + halo)
    a = (a // period) * period
    e = n - ((n - e) // period) * period
    return a, e


def _check_halo(halo, nd):
    """None, or a non-negative int (every axis) / one per axis -> None or tuple of nd ints."""
    if halo is None:
        return None
    if isinstance(halo, numbers.Integral) and not isinstance(halo, bool) and halo >= 0:
        return (int(halo),) * nd
    if isinstance(halo, (tuple, list)) and len(halo) == nd and all(
            isinstance(h, numbers.Integral) and not isinstance(h, bool) and h >= 0
            for h in halo):
        return tuple(int(h) for h in halo)
    raise ValueError(f"halo={halo!r} must be None (exact) or a non-negative int (pixels), or "
                     f"one per spatial axis ({nd})")


# --------------------------------------------------------------------------- checks
def _dask_or_array(a, name, what):
    if hasattr(a, "dask"):
        return a
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "__array__") and not isinstance(a, (str, bytes)):
        return np.asarray(a)
    raise TypeError(f"{name} must be {what}, got {type(a).__name__}")


def _stand_in(a):
    """A zero-strided NumPy array with ``a``'s shape and dtype (no data read, no memory):
    lets the in-memory shape checks (:func:`pacnd.crf.inputs.spatial_shape`) run on a Dask
    array without computing it."""
    if isinstance(a, np.ndarray):
        return a
    return np.lib.stride_tricks.as_strided(np.zeros(1, dtype=a.dtype), shape=tuple(a.shape),
                                           strides=(0,) * a.ndim, writeable=False)


def _wxh(shape):
    return "x".join(map(str, tuple(shape)[::-1]))


def _guide_meta(image, spatial):
    """The shape / dtype checks of :func:`pacnd.crf.inputs.check_guide` (values are checked
    block by block): the guide with a channel axis, ``(*spatial, C)``."""
    from ..crf.inputs import guide_layout  # noqa: PLC0415

    if guide_layout(image.shape, image.dtype, spatial):
        image = image[..., None]
    if image.dtype.kind not in "uif":
        raise TypeError(f"image must be numeric (uint8, or floats in the guide's units), got "
                        f"dtype {image.dtype}")
    return image


def _annotation_to_labels(ann, n_labels):
    """A Dask colour annotation -> (Dask label map, number of labels). Reads the annotation
    once (eagerly) to find its colours, ordered as :func:`pacnd.crf.labels_from_annotation`."""
    from ..crf.unary import _code  # noqa: PLC0415
    import dask.array as da  # noqa: PLC0415

    codes = ann.rechunk({2: -1})[..., :3].map_blocks(_code, dtype=np.uint32, drop_axis=2)
    palette = np.asarray(da.unique(codes).compute())
    palette = palette[palette != 0]
    n = len(palette)
    if n_labels is not None and n_labels != n:
        raise ValueError(f"the annotation has {n} colours (labels) but n_labels={n_labels}; "
                         f"drop n_labels or fix the annotation")
    if n < 2:
        raise ValueError(f"the annotation has {n} non-black colour(s); a CRF needs at least 2 "
                         f"labels (black = unknown)")
    labels = codes.map_blocks(_codes_to_labels, palette, dtype=np.int64)
    return labels, n


def _codes_to_labels(codes, palette):
    idx = np.searchsorted(palette, codes)
    idx = np.minimum(idx, len(palette) - 1)
    return np.where(palette[idx] == codes, idx, -1).astype(np.int64)


def _scores_meta(scores, kind, channel_axis, size, n_labels):
    """(scores, kind, label axis or None, n_labels) with the checks of the in-memory call
    (:func:`pacnd.crf.inputs.prepare_unary`, shapes only); label counts of label maps /
    annotations are read from the data (eagerly)."""
    size = tuple(size)
    nd = len(size)
    dims = _wxh(size)
    if kind == "labels":
        if nd == 2 and scores.ndim == 3 and scores.shape[2] in (3, 4) and \
                scores.dtype == np.uint8:
            if tuple(scores.shape[:2]) != size:
                raise ValueError(f"the annotation is {scores.shape[1]}x{scores.shape[0]} but the "
                                 f"image is {dims}; they must have the same size")
            labels, n = _annotation_to_labels(as_dask(scores), n_labels)
            return labels, "labels", None, n
        if scores.ndim != nd:
            raise ValueError(f"kind='labels' needs an integer label map of shape {size} (or an "
                             f"(H, W, 3) uint8 colour annotation), got shape "
                             f"{tuple(scores.shape)}")
        if scores.dtype.kind not in "iu":
            raise TypeError(f"a label map must hold integers, got dtype {scores.dtype}; for "
                            f"scores use kind='probabilities' or 'logits'")
        if tuple(scores.shape) != size:
            raise ValueError(f"the label map is {_wxh(scores.shape)} but the image is {dims}; "
                             f"they must have the same size")
        if min(size) < 1:
            raise ValueError(f"scores are empty (spatial size {size})")
        if n_labels is None:
            n_labels = int(as_dask(scores).max().compute()) + 1
            if n_labels < 2:
                raise ValueError("the label map has fewer than 2 labels; pass n_labels")
        return scores, "labels", None, n_labels
    if scores.ndim != nd + 1:
        raise ValueError(f"{kind} must be {size + ('L',)} (label axis {channel_axis}), got "
                         f"shape {tuple(scores.shape)}".replace("'", ""))
    if scores.dtype.kind not in "fiu":
        raise TypeError(f"{kind} must be numeric, got dtype {scores.dtype}")
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, numbers.Integral) or \
            not -scores.ndim <= channel_axis < scores.ndim:
        raise ValueError(f"channel_axis={channel_axis!r} is not an axis of scores with shape "
                         f"{tuple(scores.shape)}")
    axis = int(channel_axis) % scores.ndim
    sp = tuple(s for i, s in enumerate(scores.shape) if i != axis)
    if sp != size:
        raise ValueError(f"scores have spatial size {_wxh(sp)} but the image is {dims}; resize "
                         f"the scores to the image (or pass channel_axis=0 for (L, ...) "
                         f"scores)")
    L = scores.shape[axis]
    if L < 2:
        raise ValueError(f"scores have {L} label(s) on axis {channel_axis}; a CRF needs at "
                         f"least 2")
    if n_labels is not None and n_labels != L:
        raise ValueError(f"scores have {L} labels but n_labels={n_labels}")
    if min(size) < 1:
        raise ValueError(f"scores are empty (spatial size {size})")
    return scores, kind, axis, L


# --------------------------------------------------------------------------- blocks
def _host(a):
    return a.get() if type(a).__module__.split(".")[0] == "cupy" else a


def _refine_block(block, img, scores, crf, *, opts, probs):
    from ..crf.refine import refine as refine_mem  # noqa: PLC0415

    img, scores = _host(img), _host(scores)
    with warnings.catch_warnings():
        # "float image with values <= 1": a block of a dark region is no evidence of the
        # 0..1 scale (the whole image would be); the in-memory check is per image
        warnings.filterwarnings("ignore", message="the image is float with values <= 1")
        res = refine_mem(img, scores, params=crf, return_probabilities=probs, **opts)
    reg = block.regions[0]
    sl = tuple(slice(s - r[0], e - r[0]) for (s, e), r in zip(block.bounds, reg))
    if probs:
        labels, P = res
        return labels[sl], P[sl]
    return res[sl]


def refine_dask(crf, image, scores, *, kind="probabilities", channel_axis=-1, n_labels=None,
                gt_prob=0.7, clip=1e-5, return_probabilities=False, engine=None, halo=None):
    """Block-wise, lazy refinement with ``crf`` (the dispatch target of the in-memory calls).

    Parameters
    ----------
    crf : PacCRF or callable
        The CRF, or ``(size, n_labels, n_channels) -> PacCRF`` (what
        :func:`pacnd.crf.refine` builds for the whole image or volume: the
        spatial size, the number of labels and of guide channels are known
        here without computing anything, except the label count of a label
        map or annotation, read once).
    image, scores : dask.array.Array or ndarray
        As in :func:`pacnd.crf.refine` (at least one a Dask array): images
        (H, W[, C]) with (H, W, L) scores, or volumes (D, H, W[, C]) with
        (D, H, W, L) scores.
    kind, channel_axis, n_labels, gt_prob, clip, return_probabilities, engine
        As in :func:`pacnd.crf.refine`.
    halo : int or tuple of int, optional
        Pixels per side (one number, or one per spatial axis); default (None)
        the exact :func:`crf_halo`. A smaller value approximates (blocks no
        longer see every pixel that reaches them).

    Returns
    -------
    labels : dask.array.Array (*S) int64
    probabilities : dask.array.Array (*S, L) float32
        With ``return_probabilities=True``.
    """
    require("pacnd.crf.refine on Dask arrays")
    from ..crf.inputs import KINDS, spatial_shape  # noqa: PLC0415
    from ..crf.model import PacCRF  # noqa: PLC0415

    if halo is None:
        halo = _HALO.get()
    image = _dask_or_array(image, "image", "an array (the guide image or volume)")
    scores = _dask_or_array(scores, "scores", "an array")
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not supported; choose one of {KINDS}")
    # the in-memory call's shape rules, on stand-ins (nothing is read)
    size = tuple(spatial_shape(_stand_in(scores), kind, _stand_in(image), channel_axis))
    nd = len(size)
    if nd not in (2, 3):
        raise ValueError(f"scores describe a {nd}-D grid {size}; refine works on images "
                         f"(H, W, L) and volumes (D, H, W, L)")
    image = _guide_meta(image, size)
    C = int(image.shape[-1])
    scores, kind, label_axis, L = _scores_meta(scores, kind, channel_axis, size, n_labels)
    if not isinstance(crf, PacCRF):
        crf = crf(size, L, C)
    if crf.n_labels != L:
        raise ValueError(f"the scores have {L} labels but the CRF parameters were learned for "
                         f"{crf.n_labels}")
    if getattr(crf, "ndim", 2) != nd:
        raise ValueError(f"the CRF works on {crf.ndim}-D grids but the scores are {nd}-D")
    halos = _check_halo(halo, nd)
    if halos is None:
        halos = crf_halo(crf, per_axis=True)
    periods = _alignment(crf, nd)
    img = as_dask(image) if hasattr(image, "dask") else None
    sc = as_dask(scores) if hasattr(scores, "dask") else None
    if img is not None:
        spatial_chunks = img.chunks[:nd]
    else:
        sp_axes = [a for a in range(sc.ndim) if a != label_axis]
        spatial_chunks = tuple(sc.chunks[a] for a in sp_axes)
    if img is None:
        img = as_dask(image, chunks=spatial_chunks + ((C,),))
    if sc is None:
        it = iter(spatial_chunks)
        sc = as_dask(scores, chunks=tuple((n,) if a == label_axis else next(it)
                                          for a, n in enumerate(scores.shape)))

    def span(bounds):
        return tuple(_aligned_span(s, e, h, n, p) for (s, e), h, n, p in
                     zip(bounds[:nd], halos, size, periods))

    def img_region(bounds):
        return span(bounds) + ((0, C),)

    def score_region(bounds):
        sp = list(span(bounds))
        if label_axis is None:
            return tuple(sp) + (((0, sc.shape[nd]),) if sc.ndim == nd + 1 else ())
        sp.insert(label_axis, (0, L))
        return tuple(sp)

    opts = dict(kind=kind, channel_axis=-1 if label_axis is None else label_axis,
                n_labels=L if kind == "labels" else None, gt_prob=gt_prob, clip=clip,
                engine=engine)
    import functools  # noqa: PLC0415

    func = functools.partial(_refine_block, opts=opts, probs=bool(return_probabilities))
    inputs = [Region(img, img_region), Region(sc, score_region)]
    out_chunks = tuple(spatial_chunks)
    if not return_probabilities:
        return map_regions(func, inputs, out_chunks, dtype=np.int64,
                           meta=np.empty((0,) * nd, np.int64), name="pacnd-crf",
                           constants=[crf])
    labels, probs = map_regions(
        func, inputs, out_chunks, dtype=(np.int64, np.float32), n_out=2, name="pacnd-crf",
        out_meta=[(out_chunks, np.empty((0,) * nd, np.int64)),
                  (out_chunks + ((L,),), np.empty((0,) * (nd + 1), np.float32))],
        constants=[crf])
    return labels, probs


def refine(image, scores, *, halo=None, chunks=None, **kwargs):
    """:func:`pacnd.crf.refine` on Dask arrays with an explicit halo or chunking.

    Parameters
    ----------
    image, scores : array or dask.array.Array
        As in :func:`pacnd.crf.refine` (images or volumes); NumPy arrays are
        wrapped with ``chunks`` (spatial chunk size, e.g. 2048).
    halo : int or tuple of int, optional
        Pixels per side (one number, or one per spatial axis); None (default)
        the exact :func:`crf_halo` of the CRF the call builds. Smaller values
        trade exactness for less overlap (see ``benchmarks/results/dask.md``
        for the agreement).
    chunks : int or tuple, optional
        Spatial chunks for NumPy inputs (ignored for Dask inputs): one size
        for every axis, or one per leading axis (the others whole).
    **kwargs
        Every other argument of :func:`pacnd.crf.refine` (``method=
        'convcrf'``, ``params=`` and ``spacing=`` included).

    Returns
    -------
    dask.array.Array or tuple
        Lazy labels (and probabilities), like :func:`pacnd.crf.refine`.
    """
    require("pacnd.dask.refine")
    import dask.array as da  # noqa: PLC0415
    from ..crf.refine import refine as refine_mem  # noqa: PLC0415

    def _ok(h):
        return isinstance(h, numbers.Integral) and not isinstance(h, bool) and h >= 0

    if halo is not None and not (_ok(halo) or (isinstance(halo, (tuple, list)) and halo
                                               and all(_ok(h) for h in halo))):
        raise ValueError(f"halo={halo!r} must be None (exact) or a non-negative int (pixels), "
                         f"or one per spatial axis")
    if not hasattr(image, "dask") and not hasattr(scores, "dask"):
        image = np.asarray(image)
        c = "auto" if chunks is None else chunks
        if isinstance(c, numbers.Integral):
            c = int(c)  # every axis (a guide's few channels fit one chunk)
        elif c != "auto":
            c = tuple(c) + (-1,) * (image.ndim - len(tuple(c)))
        image = da.from_array(image, chunks=c)
    token = _HALO.set(halo)
    try:
        return refine_mem(image, scores, **kwargs)
    finally:
        _HALO.reset(token)
