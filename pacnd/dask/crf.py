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
kernel reads the pooled features as far, a symmetric normaliser reads its
group's taps (and the message reads the normalisers of its sources), and the
bilinear upsampling of the messages reads the neighbouring cells. Counting
that reach in pixels (``blur`` pixels per cell) through every step gives the
distance from a block edge beyond which the block's values are exactly the
whole image's. Regions are then aligned to the pooled grids: they start on
a multiple of every ``blur`` and end where the image's length is congruent
to their own, so their pooling cells and padding are the whole image's.

The exact halo grows with ``steps * reach``: for the fully-connected-CRF
defaults (5 steps; bilateral rings reaching 27 cells of 4 pixels) it is 683
pixels a side, so blocks of 2048-4096 pixels keep the overhead moderate
(region area / block area = 1.8 for 4096). :func:`refine` takes a smaller
``halo`` for an approximation (a measured agreement is in
``benchmarks/results/dask.md``).
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
def crf_halo(crf):
    """Halo (pixels per side) that makes block-wise inference of ``crf`` exact.

    Parameters
    ----------
    crf : pacnd.crf.PacCRF
        The CRF (its ``kernels`` and ``num_steps`` are read).

    Returns
    -------
    int
        Pixels a block needs on each side (before the alignment to the
        pooled grids, which only adds to it).

    Notes
    -----
    With ``rho_i = (k_i // 2) * d_i * blur_i`` the reach of kernel ``i`` in
    pixels, ``G(i)`` its normalisation group (``rho_G`` the group's largest
    reach) and ``L_s`` the distance from a block edge beyond which the
    full-resolution logits of step ``s`` are exact (``L_0 = 0``)::

        M_i,s = max(rho_i [adaptive K], rho_i + rho_G(i) [normalised],
                    rho_i + L_(s-1) [sources])
        L_s   = max over blur levels b of (max_(i in b) M_i,s + up_b)

    where ``up_b = 2 b - 1`` covers the cells the bilinear upsampling reads
    (0 for ``b = 1``). The halo is ``L_steps``.
    """
    kernels = list(getattr(crf, "kernels", ()))
    steps = int(getattr(crf, "num_steps", 0))
    if not kernels or steps == 0:
        return 0
    reach = [s.padding * s.blur for s in kernels]
    groups = {}
    for i, s in enumerate(kernels):
        if s.normalize == "symmetric":
            key = s.group if s.group is not None else ("own", i)
            groups.setdefault(key, []).append(i)
    group_reach = {}
    for idx in groups.values():
        r = max(reach[i] for i in idx)
        for i in idx:
            group_reach[i] = r
    L = 0
    for _ in range(steps):
        per_level = {}
        for i, s in enumerate(kernels):
            m = reach[i] + L
            if s.adaptive:
                m = max(m, reach[i])
            if i in group_reach:
                m = max(m, reach[i] + group_reach[i])
            per_level[s.blur] = max(per_level.get(s.blur, 0), m)
        L = max(m + (2 * b - 1 if b > 1 else 0) for b, m in per_level.items())
    return int(L)


def _alignment(crf):
    """The pooled grids' common period: lcm of the kernels' ``blur``."""
    out = 1
    for s in getattr(crf, "kernels", ()):
        out = out * s.blur // math.gcd(out, s.blur)
    return out


def _aligned_span(start, stop, halo, n, period):
    """Region ``[start - halo, stop + halo]`` clipped to ``[0, n]``, grown so that it starts
    on a multiple of ``period`` and its length is congruent to ``n`` (pooled cells and the
    pooling's padding are then the whole image's)."""
    a = max(0, start - halo)
    e = min(n, stop + halo)
    a = (a // period) * period
    e = n - ((n - e) // period) * period
    return a, e


# --------------------------------------------------------------------------- checks
def _dask_or_array(a, name, what):
    if hasattr(a, "dask"):
        return a
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "__array__") and not isinstance(a, (str, bytes)):
        return np.asarray(a)
    raise TypeError(f"{name} must be {what}, got {type(a).__name__}")


def _check_image_meta(image):
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        hint = (" (a grey image: stack it with np.dstack([img] * 3))" if image.ndim == 2
                else "")
        raise ValueError(f"image has shape {tuple(image.shape)}; expected (H, W, 3) RGB{hint}")
    if image.shape[2] == 4:
        raise ValueError("image has 4 channels; drop the alpha channel with image[..., :3]")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty (shape {tuple(image.shape)})")
    if image.dtype.kind not in "uif":
        raise TypeError(f"image must be numeric (uint8 RGB, or floats on the 0..255 scale), "
                        f"got dtype {image.dtype}")


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
    """(scores, kind, label axis or None, n_labels) with the shape checks of the in-memory
    call; label counts of label maps / annotations are read from the data (eagerly)."""
    H, W = size
    if kind == "labels":
        if scores.ndim == 3 and scores.shape[2] in (3, 4) and scores.dtype == np.uint8:
            if tuple(scores.shape[:2]) != (H, W):
                raise ValueError(f"the annotation is {scores.shape[1]}x{scores.shape[0]} but the "
                                 f"image is {W}x{H}; they must have the same size")
            labels, n = _annotation_to_labels(as_dask(scores), n_labels)
            return labels, "labels", None, n
        if scores.ndim != 2:
            raise ValueError(f"kind='labels' needs an (H, W) integer label map or an (H, W, 3) "
                             f"uint8 colour annotation, got shape {tuple(scores.shape)}")
        if scores.dtype.kind not in "iu":
            raise TypeError(f"a label map must hold integers, got dtype {scores.dtype}; for "
                            f"scores use kind='probabilities' or 'logits'")
        if tuple(scores.shape) != (H, W):
            raise ValueError(f"the label map is {scores.shape[1]}x{scores.shape[0]} but the "
                             f"image is {W}x{H}; they must have the same size")
        if n_labels is None:
            n_labels = int(as_dask(scores).max().compute()) + 1
            if n_labels < 2:
                raise ValueError("the label map has fewer than 2 labels; pass n_labels")
        return scores, "labels", None, n_labels
    if scores.ndim != 3:
        raise ValueError(f"{kind} must be (H, W, L) (label axis {channel_axis}), got shape "
                         f"{tuple(scores.shape)}")
    if scores.dtype.kind not in "fiu":
        raise TypeError(f"{kind} must be numeric, got dtype {scores.dtype}")
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, numbers.Integral) or \
            not -3 <= channel_axis < 3:
        raise ValueError(f"channel_axis={channel_axis!r} is not an axis of scores with shape "
                         f"{tuple(scores.shape)}")
    axis = int(channel_axis) % 3
    sp = tuple(s for i, s in enumerate(scores.shape) if i != axis)
    if sp != (H, W):
        raise ValueError(f"scores have spatial size {sp[1]}x{sp[0]} but the image is {W}x{H}; "
                         f"resize the scores to the image (or pass channel_axis=0 for (L, H, W) "
                         f"scores)")
    L = scores.shape[axis]
    if L < 2:
        raise ValueError(f"scores have {L} label(s) on axis {channel_axis}; a CRF needs at "
                         f"least 2")
    if n_labels is not None and n_labels != L:
        raise ValueError(f"scores have {L} labels but n_labels={n_labels}")
    return scores, kind, axis, L


# --------------------------------------------------------------------------- blocks
def _host(a):
    return a.get() if type(a).__module__.split(".")[0] == "cupy" else a


def _refine_block(block, img, scores, crf, *, opts, label_axis, probs):
    from ..crf.refine import refine as refine_mem  # noqa: PLC0415

    img, scores = _host(img), _host(scores)
    with warnings.catch_warnings():
        # "float image with values <= 1": a block of a dark region is no evidence of the
        # 0..1 scale (the whole image would be); the in-memory check is per image
        warnings.filterwarnings("ignore", message="the image is float with values <= 1")
        res = refine_mem(img, scores, params=crf, return_probabilities=probs, **opts)
    reg = block.regions[0]
    (ys, ye), (xs, xe) = block.bounds[:2]
    sl = (slice(ys - reg[0][0], ye - reg[0][0]), slice(xs - reg[1][0], xe - reg[1][0]))
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
        The CRF, or ``n_labels -> PacCRF`` (what :func:`pacnd.crf.refine`
        built for the whole image).
    image, scores : dask.array.Array or ndarray
        As in :func:`pacnd.crf.refine` (at least one a Dask array).
    kind, channel_axis, n_labels, gt_prob, clip, return_probabilities, engine
        As in :func:`pacnd.crf.refine`.
    halo : int, optional
        Pixels per side; default (None) the exact :func:`crf_halo`. A smaller
        value approximates (blocks no longer see every pixel that reaches
        them).

    Returns
    -------
    labels : dask.array.Array (H, W) int64
    probabilities : dask.array.Array (H, W, L) float32
        With ``return_probabilities=True``.
    """
    require("pacnd.crf.refine on Dask arrays")
    from ..crf.model import PacCRF  # noqa: PLC0415

    if halo is None:
        halo = _HALO.get()
    image = _dask_or_array(image, "image", "an (H, W, 3) array")
    scores = _dask_or_array(scores, "scores", "an array")
    _check_image_meta(image)
    if kind not in ("probabilities", "logits", "labels"):
        raise ValueError(f"kind={kind!r} is not supported; choose one of "
                         f"('probabilities', 'logits', 'labels')")
    H, W = image.shape[:2]
    scores, kind, label_axis, L = _scores_meta(scores, kind, channel_axis, (H, W), n_labels)
    if not isinstance(crf, PacCRF):
        crf = crf(L)
    if crf.n_labels != L:
        raise ValueError(f"the scores have {L} labels but the CRF parameters were learned for "
                         f"{crf.n_labels}")
    if halo is None:
        halo = crf_halo(crf)
    elif not isinstance(halo, numbers.Integral) or isinstance(halo, bool) or halo < 0:
        raise ValueError(f"halo={halo!r} must be None (exact) or a non-negative int (pixels)")
    period = _alignment(crf)
    img = as_dask(image) if hasattr(image, "dask") else None
    sc = as_dask(scores) if hasattr(scores, "dask") else None
    ref = img if img is not None else sc
    if ref is img:
        spatial_chunks = img.chunks[:2]
    else:
        sp_axes = [a for a in range(sc.ndim) if a != label_axis]
        spatial_chunks = tuple(sc.chunks[a] for a in sp_axes)
    if img is None:
        img = as_dask(image, chunks=spatial_chunks + ((3,),))
    if sc is None:
        it = iter(spatial_chunks)
        sc = as_dask(scores, chunks=tuple((n,) if a == label_axis or a >= 2 + (
            label_axis is not None) else next(it) for a, n in enumerate(scores.shape)))

    def span(bounds):
        return tuple(_aligned_span(s, e, halo, n, period) for (s, e), n in
                     zip(bounds[:2], (H, W)))

    def img_region(bounds):
        return span(bounds) + ((0, 3),)

    def score_region(bounds):
        ys, xs = span(bounds)
        if label_axis is None:
            return (ys, xs) + (((0, sc.shape[2]),) if sc.ndim == 3 else ())
        out = [ys, xs]
        out.insert(label_axis, (0, L))
        return tuple(out)

    opts = dict(kind=kind, channel_axis=-1 if label_axis is None else label_axis,
                n_labels=L if kind == "labels" else None, gt_prob=gt_prob, clip=clip,
                engine=engine)
    import functools  # noqa: PLC0415

    func = functools.partial(_refine_block, opts=opts, label_axis=label_axis,
                             probs=bool(return_probabilities))
    inputs = [Region(img, img_region), Region(sc, score_region)]
    out_chunks = tuple(spatial_chunks)
    if not return_probabilities:
        return map_regions(func, inputs, out_chunks, dtype=np.int64,
                           meta=np.empty((0, 0), np.int64), name="pacnd-crf",
                           constants=[crf])
    labels, probs = map_regions(
        func, inputs, out_chunks, dtype=(np.int64, np.float32), n_out=2, name="pacnd-crf",
        out_meta=[(out_chunks, np.empty((0, 0), np.int64)),
                  (out_chunks + ((L,),), np.empty((0, 0, 0), np.float32))],
        constants=[crf])
    return labels, probs


def refine(image, scores, *, halo=None, chunks=None, **kwargs):
    """:func:`pacnd.crf.refine` on Dask arrays with an explicit halo or chunking.

    Parameters
    ----------
    image, scores : array or dask.array.Array
        As in :func:`pacnd.crf.refine`; NumPy arrays are wrapped with
        ``chunks`` (spatial chunk size, e.g. 2048).
    halo : int, optional
        Pixels per side; None (default) the exact :func:`crf_halo` of the
        CRF the call builds. Smaller values trade exactness for less
        overlap (see ``benchmarks/results/dask.md`` for the agreement).
    chunks : int or tuple, optional
        Spatial chunks for NumPy inputs (ignored for Dask inputs).
    **kwargs
        Every other argument of :func:`pacnd.crf.refine` (``method=
        'convcrf'`` and ``params=`` included).

    Returns
    -------
    dask.array.Array or tuple
        Lazy labels (and probabilities), like :func:`pacnd.crf.refine`.
    """
    require("pacnd.dask.refine")
    import dask.array as da  # noqa: PLC0415
    from ..crf.refine import refine as refine_mem  # noqa: PLC0415

    if halo is not None and (not isinstance(halo, numbers.Integral) or isinstance(halo, bool)
                             or halo < 0):
        raise ValueError(f"halo={halo!r} must be None (exact) or a non-negative int (pixels)")
    if not hasattr(image, "dask") and not hasattr(scores, "dask"):
        c = "auto" if chunks is None else chunks
        if isinstance(c, numbers.Integral):
            c = (int(c), int(c))
        image = da.from_array(np.asarray(image), chunks=tuple(c) + (-1,) if c != "auto"
                              else "auto")
    token = _HALO.set(halo)
    try:
        return refine_mem(image, scores, **kwargs)
    finally:
        _HALO.reset(token)
