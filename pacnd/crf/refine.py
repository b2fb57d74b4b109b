"""Training-free CRF post-processing: :func:`refine` and :func:`convcrf_refine`.

:func:`refine` takes the parameters users of the fully-connected CRF
(Krähenbühl & Koltun 2011; pydensecrf) know — a Gaussian term (``sxy``,
``compat``), a bilateral term (``sxy``, ``srgb``, ``compat``), the number of
iterations — and runs a PAC-CRF (:class:`~pacnd.crf.PacCRF`, fast array path)
that approximates that CRF with local, dilated PAC kernels.

The mapping (fully-connected CRF -> PAC-CRF)
--------------------------------------------
The fully-connected CRF's mean-field update is
``logQ_i(l) = log P_i(l) + sum_terms w * n_i sum_j k(i, j) n_j Q_j(l)``
(Potts compatibility ``w`` = ``compat``; pydensecrf's default symmetric
normalisation ``n_i = (sum_j k(i, j))^(-1/2)``), with
``k = exp(-|p_i - p_j|^2 / 2 sxy^2 - |I_i - I_j|^2 / 2 srgb^2)`` for the
bilateral term and ``exp(-|p_i - p_j|^2 / 2 sxy^2)`` for the Gaussian term.
Each term becomes a group of PAC-CRF ``'potts'`` kernels:

* **unaries**: ``U = log(max(P, clip))`` (pydensecrf's ``unary_from_softmax``
  uses ``-log`` of the same clipped P), so both start from the same Q;
* **weights**: ``pairwise_weight = compat`` (Potts; PAC-CRF's sign convention
  turns it into ``logQ = U + compat * msg``);
* **range part in the guide**: the edge features are the RGB image and the
  kernel's ``feat_scale = 1/srgb``, so the adapting kernel is exactly
  ``exp(-|I_n - I_0|^2 / 2 srgb^2)``; the Gaussian term uses
  ``feat_scale = 0`` (K = 1);
* **spatial part in W**: all kernels of a term live on one pooled grid
  (``blur`` = b pixels per cell). Tap t at offset ``o_t`` (in cells) gets
  ``W_t = sum over the integer offsets o nearest to o_t of
  exp(-|b o|^2 / 2 sxy^2)`` — the Gaussian mass of the tap's Voronoi cell —
  so the taps are a quadrature of the dense Gaussian sum; the centre tap is
  kept (a pooled cell holds the pixel's neighbours too);
* **reach**: the dense sum is truncated at ``reach * sxy`` pixels (default
  2 sxy, i.e. ``R = 2 sxy / b`` cells). Dilated kernels cover it in rings:
  ``kernel_size`` (5) taps at dilations 1, 3, 9, 27, ... until a ring's
  Voronoi extent ``(k // 2) d + d / 2`` reaches R (the last ring uses a 3x3
  kernel when that suffices). For the standard parameters on a 500x375
  image: b = 4, the bilateral term is rings (5, 1), (5, 3), (5, 9),
  (3, 27) — taps out to 108 px, Voronoi cells to 162 px — and the Gaussian
  term one 3x3 kernel;
* **blur**: ``b = clip(round(sxy_bilateral / 20), 1, 8)`` (4 for the
  standard sxy = 80): the pooled grid that makes long reach cheap; messages
  are upsampled bilinearly (the reference PAC-CRF's blur);
* **normalisation**: each term's kernels share one symmetric normaliser
  (``normalize='symmetric'``, one ``group`` per term), like pydensecrf's
  default ``NORMALIZE_SYMMETRIC``.

What is not the same: the dense CRF sums over every pixel (its permutohedral
lattice approximates that), PAC-CRF over a few hundred sampled, block-averaged
taps; messages are computed on the pooled grid. See
``benchmarks/results/crf.md`` for how the two compare.

:func:`convcrf_refine` is the ConvCRF baseline (Teichmann & Cipolla 2018,
default configuration): one 11x11 window on a grid pooled by 4, the dense
CRF's Gaussian and colour kernels (positions in W, colour in the guide,
centre included), unnormalised, message weight 0.2 and unary weight 0.8 —
also expressed as a PAC-CRF (ConvCRF feeds log-probabilities instead of Q to
its first message, which is not reproduced: every step uses Q).
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import warnings

import numpy as np

from .._validate import as_ndarray, check_int
from ..dask import any_dask
from .fast import scores_to_unary
from .model import PacCRF
from .spec import pooled_size
from .unary import labels_from_annotation, unary_from_labels

__all__ = ["refine", "convcrf_refine", "dense_crf_mapping", "convcrf_mapping",
           "prepare_unary", "image_features", "DENSE_CRF_DEFAULTS", "KINDS"]

#: the fully-connected CRF's standard parameters (pydensecrf's examples)
DENSE_CRF_DEFAULTS = dict(sxy_gaussian=3.0, compat_gaussian=3.0, sxy_bilateral=80.0, srgb=13.0,
                          compat_bilateral=10.0, iterations=5)
KINDS = ("probabilities", "logits", "labels")
_METHODS = ("pac", "convcrf")


# ------------------------------------------------------------------------- validation
def _pos(v, name, hint):
    if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name}={v!r} must be a positive number ({hint})")
    return float(v)


def _finite(v, name, hint):
    if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v):
        raise ValueError(f"{name}={v!r} must be a finite number ({hint})")
    return float(v)


def check_image(image):
    """(H, W, 3) array with values in [0, 255] -> float32 (H, W, 3)."""
    image = as_ndarray(image, "image", "an (H, W, 3) array",
                       hint="; read files with PIL: np.asarray(Image.open(path).convert('RGB'))")
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        hint = (" (a grey image: stack it with np.dstack([img] * 3))" if image.ndim == 2
                else "")
        raise ValueError(f"image has shape {image.shape}; expected (H, W, 3) RGB{hint}")
    if image.shape[2] == 4:
        raise ValueError("image has 4 channels; drop the alpha channel with image[..., :3]")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty (shape {image.shape})")
    if image.dtype.kind not in "uif":
        raise TypeError(f"image must be numeric (uint8 RGB, or floats on the 0..255 scale), "
                        f"got dtype {image.dtype}")
    img = image.astype(np.float32)
    if image.dtype.kind == "f":
        if not np.isfinite(img).all():
            raise ValueError("image contains NaN or infinite values")
        if img.size and float(img.max()) <= 1.0:
            warnings.warn("the image is float with values <= 1: refine expects the 0..255 "
                          "scale (srgb is in those units); multiply it by 255 (or divide "
                          "srgb by 255)", stacklevel=3)
    return img


def image_features(image):
    """Edge features (1, 3, H, W) float32: the RGB values on the 0..255 scale."""
    img = check_image(image)
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None])


def prepare_unary(scores, size, *, kind="probabilities", channel_axis=-1, n_labels=None,
                  gt_prob=0.7, clip=1e-5, prob_tol=1e-3):
    """Validate scores and turn them into unary logits ``(1, L, H, W)`` float32.

    Parameters
    ----------
    scores : ndarray
        ``kind='probabilities'``: (H, W, L) per-pixel distributions;
        ``'logits'``: (H, W, L) unnormalised log-probabilities;
        ``'labels'``: an (H, W) integer label map (negative = unknown) or an
        (H, W, 3) uint8 colour annotation (black = unknown).
    size : (H, W)
        The image size the scores must match.
    channel_axis : int
        Label axis of (H, W, L) scores (-1; 0 for (L, H, W)).
    n_labels : int, optional
        For integer label maps (default: max label + 1).
    gt_prob : float
        Probability of the annotated label (labels only).
    clip : float
        Probabilities are clipped below at this before the log.
    prob_tol : float
        Tolerance of the sum-to-one check.

    Returns
    -------
    unary : ndarray (1, L, H, W) float32
    colors : ndarray (L, 3) uint8 or None
        The label colours of an annotation image.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not supported; choose one of {KINDS}")
    if not isinstance(scores, np.ndarray):
        if hasattr(scores, "__array__") and not isinstance(scores, (str, bytes)):
            scores = np.asarray(scores)
        else:
            raise TypeError(f"scores must be an array, got {type(scores).__name__}")
    H, W = size
    colors = None
    if kind == "labels":
        if scores.ndim == 3 and scores.shape[2] in (3, 4) and scores.dtype == np.uint8:
            if scores.shape[:2] != (H, W):
                raise ValueError(f"the annotation is {scores.shape[1]}x{scores.shape[0]} but the "
                                 f"image is {W}x{H}; they must have the same size")
            labels, colors = labels_from_annotation(scores)
            n = len(colors)
            if n_labels is not None and n_labels != n:
                raise ValueError(f"the annotation has {n} colours (labels) but n_labels="
                                 f"{n_labels}; drop n_labels or fix the annotation")
            if n < 2:
                raise ValueError(f"the annotation has {n} non-black colour(s); a CRF needs at "
                                 f"least 2 labels (black = unknown)")
        else:
            if scores.ndim != 2:
                raise ValueError(f"kind='labels' needs an (H, W) integer label map or an "
                                 f"(H, W, 3) uint8 colour annotation, got shape {scores.shape}")
            if scores.dtype.kind not in "iu":
                raise TypeError(f"a label map must hold integers, got dtype {scores.dtype}; "
                                f"for scores use kind='probabilities' or 'logits'")
            if scores.shape != (H, W):
                raise ValueError(f"the label map is {scores.shape[1]}x{scores.shape[0]} but the "
                                 f"image is {W}x{H}; they must have the same size")
            labels = scores.astype(np.int64)
            n = int(labels.max()) + 1 if n_labels is None else n_labels
            if n_labels is None and n < 2:
                raise ValueError("the label map has fewer than 2 labels; pass n_labels")
        P = unary_from_labels(labels, n, gt_prob)
        U = np.log(P).transpose(2, 0, 1)[None]
        return np.ascontiguousarray(U, dtype=np.float32), colors
    if scores.ndim != 3:
        raise ValueError(f"{kind} must be (H, W, L) (label axis {channel_axis}), got shape "
                         f"{scores.shape}")
    if scores.dtype.kind not in "fiu":
        raise TypeError(f"{kind} must be numeric, got dtype {scores.dtype}")
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, numbers.Integral) or \
            not -3 <= channel_axis < 3:
        raise ValueError(f"channel_axis={channel_axis!r} is not an axis of scores with shape "
                         f"{scores.shape}")
    s = np.moveaxis(scores, channel_axis, -1)
    if s.shape[:2] != (H, W):
        raise ValueError(f"scores have spatial size {s.shape[1]}x{s.shape[0]} but the image is "
                         f"{W}x{H}; resize the scores to the image (or pass channel_axis=0 "
                         f"for (L, H, W) scores)")
    L = s.shape[2]
    if L < 2:
        raise ValueError(f"scores have {L} label(s) on axis {channel_axis}; a CRF needs at "
                         f"least 2")
    if n_labels is not None and n_labels != L:
        raise ValueError(f"scores have {L} labels but n_labels={n_labels}")
    is_prob = kind == "probabilities"
    if is_prob:
        clip = _pos(clip, "clip", "the floor applied to probabilities before the log")
    if s.dtype not in (np.float32, np.float64):
        s = s.astype(np.float64)
    U, (n_bad, smallest, worst) = scores_to_unary(s, is_prob, clip if is_prob else 0.0)
    if n_bad:
        raise ValueError(f"{kind} contain {n_bad} NaN or infinite value(s); fix the model "
                         f"output (e.g. np.nan_to_num)")
    if is_prob:
        if smallest < -prob_tol:
            raise ValueError(f"probabilities must be >= 0, found {smallest:.4g}; pass "
                             f"kind='logits' for unnormalised scores")
        if worst > prob_tol:
            raise ValueError(f"probabilities must sum to 1 over the labels (axis "
                             f"{channel_axis}), but a pixel's sum is off by {worst:.4g} — "
                             f"normalise them, or pass kind='logits' for scores")
    return U[None], colors


# ------------------------------------------------------------------------- the mapping
def auto_blur(sxy_bilateral):
    """The pooled grid for a bilateral ``sxy``: ``clip(round(sxy / 20), 1, 8)``."""
    return int(min(8, max(1, round(sxy_bilateral / 20.0))))


def ring_kernels(reach_cells, kernel_size=5, ratio=3):
    """Dilated kernels ``[(k, d), ...]`` whose taps cover ``reach_cells`` pooled cells.

    Dilations ``1, ratio, ratio^2, ...`` with ``kernel_size`` taps; stop at the
    first ring whose Voronoi extent ``(k // 2) d + d / 2`` reaches the target,
    using a 3x3 kernel for that ring when it suffices.
    """
    rings = []
    d = 1
    while True:
        for k in sorted({3, kernel_size}):
            if (k // 2) * d + d / 2 >= reach_cells:
                rings.append((k, d))
                return rings
        rings.append((kernel_size, d))
        d *= ratio
        if len(rings) > 12:  # pragma: no cover - reach_cells is bounded by the image
            return rings


def voronoi_weights(rings, blur, sxy):
    return [w.copy() for w in _voronoi_weights(tuple(map(tuple, rings)), int(blur), float(sxy))]


voronoi_weights.__doc__ = None  # set below


@functools.lru_cache(maxsize=64)
def _voronoi_weights(rings, blur, sxy):
    """Quadrature weights of the taps of ``rings`` for ``exp(-r^2 / 2 sxy^2)``.

    Every integer offset (in pooled cells) within the outermost ring's extent
    is given to its nearest tap (ties shared; a position several rings share
    counts once, for the innermost); a tap's weight is the summed Gaussian of
    its offsets, ``r = blur * |offset|`` pixels.

    Returns
    -------
    list of ndarray (k, k)
    """
    pts, owner = [], []
    for ki, (k, d) in enumerate(rings):
        r = k // 2
        for a in range(-r, r + 1):
            for c in range(-r, r + 1):
                pts.append((a * d, c * d))
                owner.append((ki, a + r, c + r))
    pts = np.asarray(pts, dtype=np.float64)
    R = max((k // 2) * d + d // 2 for k, d in rings)
    oy, ox = np.mgrid[-R:R + 1, -R:R + 1]
    offs = np.stack([oy.ravel(), ox.ravel()], axis=1).astype(np.float64)
    g = np.exp(-((offs * blur) ** 2).sum(axis=1) / (2.0 * sxy * sxy))
    _, first = np.unique(pts, axis=0, return_index=True)
    dup = np.full(len(pts), np.inf)
    dup[first] = 0.0
    out = [np.zeros((k, k)) for k, _ in rings]
    # chunked nearest-tap assignment (offsets x taps distances)
    for s in range(0, len(offs), 4096):
        o = offs[s:s + 4096]
        d2 = ((o[:, None, :] - pts[None, :, :]) ** 2).sum(axis=2) + dup[None, :]
        near = d2 <= d2.min(axis=1, keepdims=True) + 1e-9
        share = near / near.sum(axis=1, keepdims=True)
        w = (share * g[s:s + 4096, None]).sum(axis=0)
        for wt, (ki, a, c) in zip(w, owner):
            out[ki][a, c] += wt
    return out


voronoi_weights.__doc__ = _voronoi_weights.__doc__


def dense_crf_mapping(size, n_labels, *, sxy_gaussian=3.0, compat_gaussian=3.0,
                      sxy_bilateral=80.0, srgb=13.0, compat_bilateral=10.0, iterations=5,
                      reach=2.0, blur=None, kernel_size=5, dtype=np.float32):
    """The PAC-CRF that approximates a fully-connected CRF (see the module doc).

    Parameters
    ----------
    size : (H, W)
        Image size (the reach is capped by it).
    n_labels : int
    sxy_gaussian, compat_gaussian : float
        Gaussian (smoothness) term; ``compat_gaussian=0`` drops it.
    sxy_bilateral, srgb, compat_bilateral : float
        Bilateral (appearance) term; ``compat_bilateral=0`` drops it.
    iterations : int
    reach : float
        Truncate each term at ``reach * sxy`` pixels.
    blur : int, optional
        Pooled grid (pixels per cell); default :func:`auto_blur`.
    kernel_size : int
        Taps per side of the inner rings (odd, >= 3).

    Returns
    -------
    PacCRF
        Edge features: the RGB image on the 0..255 scale, (B, 3, H, W).
    """
    sxy_g = _pos(sxy_gaussian, "sxy_gaussian", "the Gaussian term's spatial std in pixels")
    sxy_b = _pos(sxy_bilateral, "sxy_bilateral", "the bilateral term's spatial std in pixels")
    srgb = _pos(srgb, "srgb", "the bilateral term's colour std on the 0..255 scale")
    w_g = _finite(compat_gaussian, "compat_gaussian", "the Gaussian term's Potts weight")
    w_b = _finite(compat_bilateral, "compat_bilateral", "the bilateral term's Potts weight")
    iterations = check_int(iterations, "iterations", 0, "use 0 or more mean-field iterations")
    reach = _pos(reach, "reach", "how far each term reaches, in units of its sxy")
    kernel_size = check_int(kernel_size, "kernel_size", 3, "use an odd kernel size >= 3")
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size={kernel_size} must be odd (e.g. {kernel_size + 1})")
    b = auto_blur(sxy_b) if blur is None else check_int(blur, "blur", 1, "use blur >= 1")
    H, W = size
    cells = pooled_size((H, W), b)
    max_cells = max(cells) - 1
    specs, weights = [], []
    for group, (sxy, w, fscale) in enumerate(((sxy_b, w_b, 1.0 / srgb), (sxy_g, w_g, 0.0))):
        if w == 0:
            continue
        reach_cells = max(min(reach * sxy / b, max_cells), 1.0)
        rings = ring_kernels(reach_cells, kernel_size)
        for (k, d), Wt in zip(rings, voronoi_weights(rings, b, sxy)):
            specs.append(dict(kernel_size=k, dilation=d, blur=b, compat="potts",
                              pairwise_weight=w, feat_scale=fscale, normalize="symmetric",
                              group=group))
            weights.append(Wt)
    crf = PacCRF(n_labels, iterations, specs, dtype=dtype, fixed_weighting=False)
    for i, Wt in enumerate(weights):
        crf.messengers[i].weight.data[...] = Wt[None, None]
    return crf


def convcrf_mapping(n_labels, *, sxy_gaussian=3.0, compat_gaussian=3.0, srgb=13.0,
                    compat_bilateral=10.0, iterations=5, filter_size=11, blur=4,
                    weight=0.2, dtype=np.float32):
    """ConvCRF's default configuration as a PAC-CRF (see the module doc).

    ConvCRF's colour kernel has no position term (its ``use_bias=False``); its
    Gaussian kernel's positions are pooled pixel coordinates, i.e. taps
    ``blur`` pixels apart.
    """
    sxy_g = _pos(sxy_gaussian, "sxy_gaussian", "the Gaussian term's spatial std in pixels")
    srgb = _pos(srgb, "srgb", "the colour std on the 0..255 scale")
    iterations = check_int(iterations, "iterations", 0, "use 0 or more mean-field iterations")
    filter_size = check_int(filter_size, "filter_size", 1, "use an odd window size")
    if filter_size % 2 == 0:
        raise ValueError(f"filter_size={filter_size} must be odd")
    blur = check_int(blur, "blur", 1, "use blur >= 1")
    weight = _finite(weight, "weight", "ConvCRF's message weight (default 0.2)")
    k = filter_size
    r = np.arange(-(k // 2), k // 2 + 1) * blur
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2.0 * sxy_g * sxy_g))
    specs = [dict(kernel_size=k, blur=blur, compat="potts", feat_scale=1.0 / srgb,
                  pairwise_weight=weight * _finite(compat_bilateral, "compat_bilateral", "")),
             dict(kernel_size=k, blur=blur, compat="potts", feat_scale=0.0,
                  pairwise_weight=weight * _finite(compat_gaussian, "compat_gaussian", ""))]
    crf = PacCRF(n_labels, iterations, specs, unary_weight=1.0 - weight, dtype=dtype)
    crf.messengers[0].weight.data[...] = 1.0
    crf.messengers[1].weight.data[...] = g[None, None]
    return crf


# ------------------------------------------------------------------------- post-processors
def _load_params(params):
    from .learn import load_crf  # noqa: PLC0415

    if isinstance(params, PacCRF):
        return params
    if isinstance(params, (str, os.PathLike)):
        return load_crf(params)
    raise TypeError(f"params must be a PacCRF or the path of one saved with "
                    f"pacnd.crf.save_crf, got {type(params).__name__}")


def _on_dask(crf, image, scores, kind, channel_axis, n_labels, gt_prob, clip,
             return_probabilities, engine):
    """Dask inputs: lazy block-wise inference with ``crf`` (see :mod:`pacnd.dask.crf`)."""
    from ..dask.crf import refine_dask  # noqa: PLC0415

    return refine_dask(crf, image, scores, kind=kind, channel_axis=channel_axis,
                       n_labels=n_labels, gt_prob=gt_prob, clip=clip,
                       return_probabilities=return_probabilities, engine=engine)


def _run(crf, image, scores, kind, channel_axis, n_labels, gt_prob, clip,
         return_probabilities, engine, return_colors=False):
    img = check_image(image)
    U, colors = prepare_unary(scores, img.shape[:2], kind=kind, channel_axis=channel_axis,
                              n_labels=n_labels, gt_prob=gt_prob, clip=clip)
    if not isinstance(crf, PacCRF):
        crf = crf(U.shape[1])
    if U.shape[1] != crf.n_labels:
        raise ValueError(f"the scores have {U.shape[1]} labels but the CRF parameters were "
                         f"learned for {crf.n_labels}")
    f = np.ascontiguousarray(img.transpose(2, 0, 1)[None])
    if return_probabilities:
        Q = crf.infer(U, f, output="softmax", engine=engine)[0]
        labels = Q.argmax(axis=0)
        out = (labels, np.ascontiguousarray(Q.transpose(1, 2, 0)))
    else:
        out = (crf.infer(U, f, output="labels", engine=engine)[0],)
    if return_colors:
        out = out + (colors,)
    return out[0] if len(out) == 1 else out


def refine(image, scores, *, kind="probabilities", sxy_gaussian=3.0, compat_gaussian=3.0,
           sxy_bilateral=80.0, srgb=13.0, compat_bilateral=10.0, iterations=5, method="pac",
           params=None, gt_prob=0.7, n_labels=None, channel_axis=-1, reach=2.0, blur=None,
           kernel_size=5, clip=1e-5, return_probabilities=False, engine=None):
    """Refine a segmentation with a training-free PAC-CRF (or learned parameters).

    Parameters
    ----------
    image : ndarray (H, W, 3)
        RGB image, uint8 (or numbers on the 0..255 scale).
    scores : ndarray
        Per-pixel class scores, see ``kind``.
    kind : {'probabilities', 'logits', 'labels'}
        ``'probabilities'``: (H, W, L) distributions (each pixel sums to 1);
        ``'logits'``: (H, W, L) unnormalised log-probabilities;
        ``'labels'``: an (H, W) integer label map (negative = unknown) or an
        (H, W, 3) uint8 colour annotation (black = unknown; label i is the
        i-th colour in ``r + 256 g + 65536 b`` order) — turned into
        probabilities with ``gt_prob`` on the given label (the "unary from
        labels" recipe).
    sxy_gaussian, compat_gaussian : float
        The fully-connected CRF's Gaussian term (defaults 3, 3).
    sxy_bilateral, srgb, compat_bilateral : float
        Its bilateral term (defaults 80, 13, 10).
    iterations : int
        Mean-field iterations (default 5).
    method : {'pac', 'convcrf'}
        ``'pac'``: the dilated PAC-CRF mapping of the module doc;
        ``'convcrf'``: the ConvCRF baseline (see :func:`convcrf_refine`).
    params : PacCRF or path, optional
        Learned PAC-CRF parameters (:func:`pacnd.crf.fit_crf` /
        :func:`pacnd.crf.save_crf`); the dense-CRF parameters are then unused.
    gt_prob : float
        Probability of an annotated label (``kind='labels'``), default 0.7.
    n_labels : int, optional
        Number of labels of an integer label map (default: max + 1).
    channel_axis : int
        Label axis of the scores (default -1: (H, W, L)).
    reach, blur, kernel_size
        Mapping options (see :func:`dense_crf_mapping`).
    clip : float
        Floor of the probabilities before the log (pydensecrf's 1e-5).
    return_probabilities : bool
        Also return the refined probabilities (H, W, L) float32.
    engine : str, optional
        PAC engine ('numba', 'numpy').

    Returns
    -------
    labels : ndarray (H, W) int64
    probabilities : ndarray (H, W, L) float32
        Only with ``return_probabilities=True``.

    Examples
    --------
    >>> labels = refine(image, probs)                        # doctest: +SKIP
    >>> labels = refine(image, anno_rgb, kind="labels", gt_prob=0.7)  # doctest: +SKIP
    """
    if method not in _METHODS:
        raise ValueError(f"method={method!r} is not supported; choose one of {_METHODS}")
    if params is not None:
        crf = _load_params(params)
    elif method == "convcrf":
        def crf(L):
            return convcrf_mapping(L, sxy_gaussian=sxy_gaussian,
                                   compat_gaussian=compat_gaussian, srgb=srgb,
                                   compat_bilateral=compat_bilateral, iterations=iterations)
    else:
        img_shape = np.shape(image)[:2]

        def crf(L):
            return dense_crf_mapping(img_shape, L, sxy_gaussian=sxy_gaussian,
                                     compat_gaussian=compat_gaussian,
                                     sxy_bilateral=sxy_bilateral, srgb=srgb,
                                     compat_bilateral=compat_bilateral, iterations=iterations,
                                     reach=reach, blur=blur, kernel_size=kernel_size)
    if not isinstance(return_probabilities, (bool, np.bool_)):
        raise TypeError(f"return_probabilities must be True or False, got "
                        f"{return_probabilities!r}")
    if any_dask(image, scores):  # lazy, block by block with this CRF (pacnd.dask.crf)
        return _on_dask(crf, image, scores, kind, channel_axis, n_labels, gt_prob, clip,
                        return_probabilities, engine)
    return _run(crf, image, scores, kind, channel_axis, n_labels, gt_prob, clip,
                return_probabilities, engine)


def convcrf_refine(image, scores, *, kind="probabilities", sxy_gaussian=3.0,
                   compat_gaussian=3.0, srgb=13.0, compat_bilateral=10.0, iterations=5,
                   filter_size=11, blur=4, weight=0.2, gt_prob=0.7, n_labels=None,
                   channel_axis=-1, clip=1e-5, return_probabilities=False, engine=None):
    """The ConvCRF baseline (local 11x11 window on a grid pooled by 4).

    Same inputs and outputs as :func:`refine`; ``filter_size``, ``blur`` and
    ``weight`` are ConvCRF's (its colour kernel has no spatial term, so
    there is no ``sxy_bilateral``).
    """
    def crf(L):
        return convcrf_mapping(L, sxy_gaussian=sxy_gaussian, compat_gaussian=compat_gaussian,
                               srgb=srgb, compat_bilateral=compat_bilateral,
                               iterations=iterations, filter_size=filter_size, blur=blur,
                               weight=weight)
    if any_dask(image, scores):  # lazy, block by block with this CRF (pacnd.dask.crf)
        return _on_dask(crf, image, scores, kind, channel_axis, n_labels, gt_prob, clip,
                        return_probabilities, engine)
    return _run(crf, image, scores, kind, channel_axis, n_labels, gt_prob, clip,
                return_probabilities, engine)
