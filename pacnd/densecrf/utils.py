"""pydensecrf's ``utils``: unaries from labels or softmax outputs, pairwise features on grids.

Same names, arguments and results as ``pydensecrf.utils`` (energies are
negative log-probabilities, (L, N) float32; features (D, N) float32 with the
grid coordinates first, row-major). Where pydensecrf asserts, silently reshapes
or indexes out of range (a label beyond ``n_labels``, ``sdims`` for the wrong
number of axes, NaN), these raise a ValueError/TypeError that says what to fix.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np

__all__ = ["unary_from_labels", "compute_unary", "unary_from_softmax", "softmax_to_unary",
           "create_pairwise_gaussian", "create_pairwise_bilateral"]


def _array(a, name):
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "__array__") and not isinstance(a, (str, bytes)):
        return np.asarray(a)
    if isinstance(a, (list, tuple)):
        return np.asarray(a)
    raise TypeError(f"{name} must be a NumPy array, got {type(a).__name__}")


def _prob(v, name, lo_open=True, hi_closed=False):
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v) and \
        (0 < v) and ((v <= 1) if hi_closed else (v < 1))
    if not ok:
        rng = "(0, 1]" if hi_closed else "(0, 1)"
        raise ValueError(f"{name}={v!r} must be a number in {rng}")
    return float(v)


def unary_from_labels(labels, n_labels, gt_prob, zero_unsure=True):
    """Unary energy (n_labels, N) float32 of a label map: ``-log(gt_prob)`` on the given
    label, ``-log((1 - gt_prob) / (n_labels - 1))`` on the others.

    Parameters
    ----------
    labels : ndarray of int
        Label map of any shape (flattened row-major).
    n_labels : int
        Number of labels; with ``zero_unsure`` the value 0 is not a label, so it
        counts labels 1..n_labels.
    gt_prob : float
        Certainty of the given label, in (0, 1).
    zero_unsure : bool
        Label 0 means "unknown": uniform energy ``-log(1 / n_labels)`` there, and
        label k is row k - 1.
    """
    lab = _array(labels, "labels")
    if lab.dtype.kind not in "iu":
        raise TypeError(f"labels must hold integers, got dtype {lab.dtype}; convert a label "
                        f"image with labels.astype(np.int64)")
    if isinstance(n_labels, bool) or not isinstance(n_labels, numbers.Integral) or n_labels < 2:
        raise ValueError(f"n_labels={n_labels!r} must be an int >= 2")
    gt_prob = _prob(gt_prob, "gt_prob")
    lab = lab.ravel().astype(np.int64)
    rows = lab - 1 if zero_unsure else lab
    unsure = (lab == 0) if zero_unsure else np.zeros(lab.shape, bool)
    bad = ~unsure & ((rows < 0) | (rows >= n_labels))
    if bad.any():
        v = int(lab[bad][0])
        rng = f"1..{n_labels} (0 = unsure)" if zero_unsure else f"0..{n_labels - 1}"
        raise ValueError(f"labels holds {v}, outside {rng} for n_labels={n_labels}; count "
                         f"the labels again (with zero_unsure=True, 0 is not a label)")
    U = np.full((n_labels, lab.size), -np.log((1.0 - gt_prob) / (n_labels - 1)), np.float32)
    idx = np.flatnonzero(~unsure)
    U[rows[idx], idx] = -np.log(gt_prob)
    U[:, unsure] = -np.log(1.0 / n_labels)
    return U


def compute_unary(labels, M, GT_PROB=0.5):
    """Deprecated name of :func:`unary_from_labels` (``zero_unsure=True``)."""
    warnings.warn("compute_unary is deprecated, use unary_from_labels instead",
                  DeprecationWarning, stacklevel=2)
    return unary_from_labels(labels, M, GT_PROB)


def unary_from_softmax(sm, scale=None, clip=1e-5):
    """Unary energy (L, N) float32 of class probabilities ``sm`` (L, ...): ``-log`` of the
    probabilities clipped to [clip, 1].

    Parameters
    ----------
    sm : ndarray (L, ...)
        Softmax output, classes first; the other axes are flattened.
    scale : float, optional
        In (0, 1]: mix with the uniform distribution, ``scale * sm + (1 - scale) / L``.
    clip : float or None
        Floor of the probabilities (None: no clipping; zeros then give infinite
        energies, which are refused).
    """
    sm = _array(sm, "sm")
    if sm.dtype.kind not in "fiu" or sm.ndim < 1:
        raise TypeError(f"sm must be a numeric array (classes first), got dtype {sm.dtype}, "
                        f"shape {sm.shape}")
    if sm.ndim < 2 or sm.shape[0] < 2:
        raise ValueError(f"sm has shape {sm.shape}; it must be (n_classes >= 2, ...) with the "
                         f"classes first (move them with np.moveaxis(sm, -1, 0))")
    if not np.isfinite(sm).all():
        raise ValueError("sm contains NaN or infinite values; fix the model output first "
                         "(e.g. np.nan_to_num)")
    L = sm.shape[0]
    p = sm.astype(np.float32 if sm.dtype == np.float32 else np.float64)
    if scale is not None:
        scale = _prob(scale, "scale", hi_closed=True)
        p = scale * p + (1.0 - scale) / L
    if clip is not None:
        if isinstance(clip, bool) or not isinstance(clip, numbers.Real) or not 0 < clip <= 1:
            raise ValueError(f"clip={clip!r} must be a number in (0, 1] (or None)")
        p = np.clip(p, clip, 1.0)
    elif (p <= 0).any():
        raise ValueError("sm has values <= 0 and clip=None: their energy -log(p) is infinite; "
                         "keep the default clip=1e-5")
    out = np.log(p).reshape(L, -1)
    np.negative(out, out=out)
    return np.ascontiguousarray(out, dtype=np.float32)


def softmax_to_unary(sm, GT_PROB=1):
    """Deprecated name of :func:`unary_from_softmax` (no clipping)."""
    warnings.warn("softmax_to_unary is deprecated, use unary_from_softmax instead",
                  DeprecationWarning, stacklevel=2)
    return unary_from_softmax(sm, None if GT_PROB == 1 else GT_PROB, clip=None)


def _stds(v, name, n, what):
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        vals = (v,) * n if what == "channels" else None
        if vals is None:
            raise ValueError(f"{name}={v!r}: give one std per axis ({n} for shape with {n} "
                             f"axes)")
    else:
        try:
            vals = tuple(v)
        except TypeError:
            raise TypeError(f"{name} must be a sequence of numbers, got {v!r}") from None
    if len(vals) != n:
        raise ValueError(f"{name} has {len(vals)} entries but there are {n} {what}; give one "
                         f"std per {what[:-1]}")
    for x in vals:
        if isinstance(x, bool) or not isinstance(x, numbers.Real) or not np.isfinite(x) \
                or x <= 0:
            raise ValueError(f"{name}={tuple(vals)} must hold positive numbers")
    return np.asarray(vals, np.float32)


def _mesh(shape, sdims):
    mesh = np.indices(shape, dtype=np.float32)
    mesh /= sdims.reshape((-1,) + (1,) * len(shape))
    return mesh.reshape(len(shape), -1)


def create_pairwise_gaussian(sdims, shape):
    """Features (len(shape), N) float32 of a grid: each point's index along every axis
    divided by that axis' std ``sdims`` (row-major; for 2-D what
    ``DenseCRF2D.addPairwiseGaussian`` uses, axes in (rows, columns) order)."""
    try:
        shape = tuple(int(n) for n in shape)
    except TypeError:
        raise TypeError(f"shape must be a sequence of ints, got {shape!r}") from None
    if not shape or min(shape) < 1:
        raise ValueError(f"shape={shape} must hold positive sizes")
    sd = _stds(sdims, "sdims", len(shape), "axes")
    return _mesh(shape, sd)


def create_pairwise_bilateral(sdims, schan, img, chdim=-1):
    """Features (len(sdims) + C, N) float32: grid coordinates / ``sdims`` then the image's
    channels / ``schan``.

    Parameters
    ----------
    sdims : sequence of float
        Spatial std per axis of the image without its channel axis.
    schan : float or sequence of float
        Std of every channel (one number for all).
    img : ndarray
        The image (any number of axes and channels).
    chdim : int
        Axis of the channels; -1: the image has no channel axis (one channel).
    """
    img = _array(img, "img")
    if img.dtype.kind not in "uifb":
        raise TypeError(f"img must be numeric, got dtype {img.dtype}")
    if chdim == -1:
        feat = img[None].astype(np.float32)
    else:
        if isinstance(chdim, bool) or not isinstance(chdim, numbers.Integral) or \
                not 0 <= chdim < img.ndim:
            raise ValueError(f"chdim={chdim!r} is not an axis of img with shape {img.shape} "
                             f"(use -1 for an image without a channel axis)")
        feat = np.moveaxis(img, chdim, 0).astype(np.float32)
    if feat.ndim < 2 or min(feat.shape[1:], default=0) < 1:
        raise ValueError(f"img with shape {img.shape} has no pixels")
    if not np.isfinite(feat).all():
        raise ValueError("img contains NaN or infinite values")
    feat /= _stds(schan, "schan", feat.shape[0], "channels").reshape(
        (-1,) + (1,) * (feat.ndim - 1))
    sd = _stds(sdims, "sdims", feat.ndim - 1, "axes")
    return np.concatenate([_mesh(feat.shape[1:], sd), feat.reshape(feat.shape[0], -1)])


def _create_pairwise_gaussian_2d(sx, sy, shape):
    """2-D special case of :func:`create_pairwise_gaussian`: rows / sx, columns / sy."""
    return create_pairwise_gaussian((sx, sy), shape[:2])


def _create_pairwise_bilateral_2d(sx, sy, sr, sg, sb, img):
    """2-D RGB special case of :func:`create_pairwise_bilateral`."""
    return create_pairwise_bilateral((sx, sy), (sr, sg, sb), img, chdim=2)
