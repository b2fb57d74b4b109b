"""Checking what the CRF post-processors are given: guides (images, volumes) and scores.

:func:`spatial_shape` decides from the scores whether a call is about an image
or a volume, :func:`check_guide` validates the guide against that shape (any
number of channels, channels last), :func:`prepare_unary` turns probabilities,
logits or labels into unary logits ``(1, L, *S)``. Every problem is a
ValueError/TypeError that names the bad value and the fix.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

from .._validate import as_ndarray
from .fast import scores_to_unary
from .unary import labels_from_annotation, unary_from_labels

__all__ = ["KINDS", "check_image", "check_guide", "guide_features", "image_features",
           "spatial_shape", "prepare_unary", "check_spacing", "positive", "finite"]

KINDS = ("probabilities", "logits", "labels")


def positive(v, name, hint):
    """``v`` as a positive finite float, else ValueError naming it."""
    if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name}={v!r} must be a positive number ({hint})")
    return float(v)


def finite(v, name, hint):
    """``v`` as a finite float, else ValueError naming it."""
    if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v):
        raise ValueError(f"{name}={v!r} must be a finite number ({hint})")
    return float(v)


def _as_array(a, name, what, hint=""):
    return as_ndarray(a, name, what, hint=hint)


def _check_values(image, name):
    if image.dtype.kind not in "uif":
        raise TypeError(f"{name} must be numeric (uint8, or floats in the guide's units), got "
                        f"dtype {image.dtype}")
    img = image.astype(np.float32)
    if image.dtype.kind == "f" and not np.isfinite(img).all():
        raise ValueError(f"{name} contains NaN or infinite values; fill them first "
                         f"(e.g. np.nan_to_num)")
    return img


def check_image(image):
    """An RGB image (H, W, 3) with values in [0, 255] -> float32 (H, W, 3)."""
    image = _as_array(image, "image", "an (H, W, 3) array",
                      "; read files with PIL: np.asarray(Image.open(path).convert('RGB'))")
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        hint = (" (a grey image: stack it with np.dstack([img] * 3))" if image.ndim == 2
                else "")
        raise ValueError(f"image has shape {image.shape}; expected (H, W, 3) RGB{hint}")
    if image.shape[2] == 4:
        raise ValueError("image has 4 channels; drop the alpha channel with image[..., :3]")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty (shape {image.shape})")
    img = _check_values(image, "image")
    _warn_unit_scale(image, img)
    return img


def _warn_unit_scale(image, img):
    if image.dtype.kind == "f" and img.size and float(img.max()) <= 1.0:
        warnings.warn("the image is float with values <= 1: refine expects the 0..255 scale "
                      "(srgb is in those units); multiply it by 255 (or divide srgb by 255)",
                      stacklevel=4)


def guide_layout(shape, dtype, spatial):
    """The shape checks of a guide for scores of spatial size ``spatial`` (no values read;
    shared by :func:`check_guide` and the Dask path): whether the guide needs a trailing
    channel axis (``shape == spatial``). Refuses other spatial sizes, other ranks, no
    channels, and a 2-D uint8 guide with 4 channels (RGBA)."""
    shape, spatial = tuple(shape), tuple(spatial)
    nd = len(spatial)
    want = (f"{spatial} (one channel) or {spatial + ('C',)} (channels last)").replace("'", "")
    if len(shape) == nd and shape == spatial:
        return True
    if len(shape) in (nd, nd + 1) and shape[:nd] != spatial:
        def wxh(s):
            return "x".join(map(str, s[::-1]))
        raise ValueError(f"scores have spatial size {wxh(spatial)} but the image is "
                         f"{wxh(shape[:nd])}; resize the scores to the image (or pass "
                         f"channel_axis=0 for (L, ...) scores)")
    if len(shape) != nd + 1:
        what = "image" if nd == 2 else "volume"
        raise ValueError(f"image has shape {shape} but the scores describe a {nd}-D "
                         f"{what} of size {spatial}; the guide must be {want}")
    if shape[-1] < 1:
        raise ValueError(f"image has shape {shape}: no guide channel")
    if nd == 2 and shape[-1] == 4 and np.dtype(dtype) == np.uint8:
        raise ValueError("image has 4 uint8 channels (RGBA?); drop the alpha channel with "
                         "image[..., :3] (genuine 4-channel guides: pass them as floats)")
    return False


def check_guide(image, spatial):
    """A guide for scores of spatial size ``spatial`` -> float32 ``(*spatial, C)``.

    The guide is ``spatial`` (one channel) or ``spatial + (C,)`` (channels last).
    A 2-D uint8 guide with 4 channels is taken for RGBA and refused; a 2-D float
    RGB guide with values <= 1 warns (``srgb`` is on the 0..255 scale).
    """
    spatial = tuple(spatial)
    nd = len(spatial)
    image = _as_array(image, "image", "an array (the guide image or volume)",
                      "; read files with PIL: np.asarray(Image.open(path).convert('RGB'))")
    if guide_layout(image.shape, image.dtype, spatial):
        image = image[..., None]
    img = _check_values(image, "image")
    if nd == 2 and image.shape[-1] == 3:
        _warn_unit_scale(image, img)
    return img


def guide_features(img):
    """Edge features ``(1, C, *S)`` float32 from a checked guide ``(*S, C)``."""
    return np.ascontiguousarray(np.moveaxis(img, -1, 0)[None])


def image_features(image):
    """Edge features (1, 3, H, W) float32: the RGB values on the 0..255 scale."""
    return guide_features(check_image(image))


def spatial_shape(scores, kind, image, channel_axis=-1):
    """The spatial size the scores describe: (H, W) or (D, H, W).

    Probabilities / logits: every axis but ``channel_axis``; labels: the label
    map's shape, or (H, W) for an (H, W, 3|4) uint8 colour annotation (when the
    image is (H, W, C) with the same H, W).
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not supported; choose one of {KINDS}")
    if not isinstance(scores, np.ndarray):
        if hasattr(scores, "__array__") and not isinstance(scores, (str, bytes)):
            scores = np.asarray(scores)
        else:
            raise TypeError(f"scores must be an array, got {type(scores).__name__}")
    shape = scores.shape
    if kind == "labels":
        ishape = np.shape(image)
        if (scores.ndim == 3 and shape[2] in (3, 4) and scores.dtype == np.uint8
                and len(ishape) == 3 and tuple(ishape[:2]) == shape[:2]):
            return shape[:2]
        if scores.ndim not in (2, 3):
            raise ValueError(f"kind='labels' needs an (H, W) integer label map, a (D, H, W) "
                             f"label volume or an (H, W, 3) uint8 colour annotation, got shape "
                             f"{shape}")
        return shape
    if scores.ndim not in (3, 4):
        raise ValueError(f"{kind} must be (H, W, L) for an image or (D, H, W, L) for a volume "
                         f"(label axis {channel_axis}), got shape {shape}")
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, numbers.Integral) or \
            not -scores.ndim <= channel_axis < scores.ndim:
        raise ValueError(f"channel_axis={channel_axis!r} is not an axis of scores with shape "
                         f"{shape}")
    return tuple(n for a, n in enumerate(shape) if a != channel_axis % scores.ndim)


def check_spacing(spacing, nd):
    """``spacing`` (None, a number or one positive number per axis) -> tuple of nd floats."""
    if spacing is None:
        return (1.0,) * nd
    if isinstance(spacing, numbers.Real) and not isinstance(spacing, bool):
        return (positive(spacing, "spacing", "the pixel/voxel size"),) * nd
    try:
        vals = tuple(spacing)
    except TypeError:
        raise TypeError(f"spacing must be a number or a sequence of {nd} numbers, got "
                        f"{spacing!r}") from None
    if len(vals) != nd:
        raise ValueError(f"spacing={vals} has {len(vals)} entries for a {nd}-D grid; give "
                         f"{nd} (one per axis, e.g. (slice thickness, row, column) for volumes)")
    return tuple(positive(v, "spacing", "every pixel/voxel size must be > 0") for v in vals)


def prepare_unary(scores, size, *, kind="probabilities", channel_axis=-1, n_labels=None,
                  gt_prob=0.7, clip=1e-5, prob_tol=1e-3):
    """Validate scores and turn them into unary logits ``(1, L, *size)`` float32.

    Parameters
    ----------
    scores : ndarray
        ``kind='probabilities'``: (*size, L) per-pixel distributions;
        ``'logits'``: (*size, L) unnormalised log-probabilities;
        ``'labels'``: an integer label map of shape ``size`` (negative =
        unknown) or an (H, W, 3) uint8 colour annotation (black = unknown).
    size : (H, W) or (D, H, W)
        The spatial size the scores must have.
    channel_axis : int
        Label axis of probabilities / logits (-1; 0 for (L, *size)).
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
    unary : ndarray (1, L, *size) float32
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
    size = tuple(size)
    nd = len(size)
    dims = "x".join(map(str, size[::-1]))
    colors = None
    if kind == "labels":
        if nd == 2 and scores.ndim == 3 and scores.shape[2] in (3, 4) and \
                scores.dtype == np.uint8:
            if scores.shape[:2] != size:
                raise ValueError(f"the annotation is {scores.shape[1]}x{scores.shape[0]} but the "
                                 f"image is {dims}; they must have the same size")
            labels, colors = labels_from_annotation(scores)
            n = len(colors)
            if n_labels is not None and n_labels != n:
                raise ValueError(f"the annotation has {n} colours (labels) but n_labels="
                                 f"{n_labels}; drop n_labels or fix the annotation")
            if n < 2:
                raise ValueError(f"the annotation has {n} non-black colour(s); a CRF needs at "
                                 f"least 2 labels (black = unknown)")
        else:
            if scores.ndim != nd:
                raise ValueError(f"kind='labels' needs an integer label map of shape {size} (or "
                                 f"an (H, W, 3) uint8 colour annotation), got shape "
                                 f"{scores.shape}")
            if scores.dtype.kind not in "iu":
                raise TypeError(f"a label map must hold integers, got dtype {scores.dtype}; "
                                f"for scores use kind='probabilities' or 'logits'")
            if scores.shape != size:
                raise ValueError(f"the label map is {'x'.join(map(str, scores.shape[::-1]))} "
                                 f"but the image is {dims}; they must have the same size")
            labels = scores.astype(np.int64)
            n = int(labels.max()) + 1 if n_labels is None else n_labels
            if n_labels is None and n < 2:
                raise ValueError("the label map has fewer than 2 labels; pass n_labels")
        P = unary_from_labels(labels, n, gt_prob)
        U = np.log(np.moveaxis(P, -1, 0))[None]
        return np.ascontiguousarray(U, dtype=np.float32), colors
    if scores.ndim != nd + 1:
        raise ValueError(f"{kind} must be {size + ('L',)} (label axis {channel_axis}), got "
                         f"shape {scores.shape}".replace("'", ""))
    if scores.dtype.kind not in "fiu":
        raise TypeError(f"{kind} must be numeric, got dtype {scores.dtype}")
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, numbers.Integral) or \
            not -scores.ndim <= channel_axis < scores.ndim:
        raise ValueError(f"channel_axis={channel_axis!r} is not an axis of scores with shape "
                         f"{scores.shape}")
    s = np.moveaxis(scores, channel_axis, -1)
    if s.shape[:nd] != size:
        raise ValueError(f"scores have spatial size {'x'.join(map(str, s.shape[:nd][::-1]))} "
                         f"but the image is {dims}; resize the scores to the image (or pass "
                         f"channel_axis=0 for (L, ...) scores)")
    L = s.shape[-1]
    if L < 2:
        raise ValueError(f"scores have {L} label(s) on axis {channel_axis}; a CRF needs at "
                         f"least 2")
    if n_labels is not None and n_labels != L:
        raise ValueError(f"scores have {L} labels but n_labels={n_labels}")
    if min(size) < 1:
        raise ValueError(f"scores are empty (spatial size {size})")
    is_prob = kind == "probabilities"
    if is_prob:
        clip = positive(clip, "clip", "the floor applied to probabilities before the log")
    if s.dtype not in (np.float32, np.float64):
        s = s.astype(np.float64)
    rows = s.reshape((-1,) + s.shape[nd - 1:])  # (rows, W, L): a view when contiguous
    U, (n_bad, smallest, worst) = scores_to_unary(rows, is_prob, clip if is_prob else 0.0)
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
    return U.reshape((1, L) + size), colors
