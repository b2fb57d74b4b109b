"""Training-free CRF post-processing: :func:`refine` and :func:`convcrf_refine`.

:func:`refine` takes the parameters users of the fully-connected CRF
(Krähenbühl & Koltun 2011; pydensecrf) know — a Gaussian term (``sxy``,
``compat``), a bilateral term (``sxy``, ``srgb``, ``compat``), the number of
iterations — and runs a PAC-CRF (:class:`~pacnd.crf.PacCRF`, fast array path)
that approximates that CRF with local, dilated PAC kernels.

Images and volumes
------------------
``image`` is the guide: (H, W, C) or (H, W) for images, (D, H, W, C) or
(D, H, W) for volumes (CT intensity, several MRI modalities, ...), any number
of channels; ``srgb`` is the guide's std per channel in its own units (one
number for all channels, or one per channel). The scores decide the
dimensionality: (H, W, L) probabilities are an image's, (D, H, W, L) a
volume's. ``spacing`` gives the physical size of a pixel/voxel per axis
(e.g. ``(2.5, 0.7, 0.7)`` mm); ``sxy_gaussian`` / ``sxy_bilateral`` are then in
the same units, so anisotropic volumes get anisotropic kernels.

The mapping (fully-connected CRF -> PAC-CRF)
--------------------------------------------
The fully-connected CRF's mean-field update is
``logQ_i(l) = log P_i(l) + sum_terms w * n_i sum_j k(i, j) n_j Q_j(l)``
(Potts compatibility ``w`` = ``compat``; pydensecrf's default symmetric
normalisation ``n_i = (sum_j k(i, j))^(-1/2)``), with
``k = exp(-|p_i - p_j|^2 / 2 sxy^2 - |I_i - I_j|^2 / 2 srgb^2)`` for the
bilateral term and ``exp(-|p_i - p_j|^2 / 2 sxy^2)`` for the Gaussian term.
Each term becomes a group of PAC-CRF ``'potts'`` kernels
(:func:`pacnd.crf.mapping.crf_from_terms`):

* **unaries**: ``U = log(max(P, clip))`` (pydensecrf's ``unary_from_softmax``
  uses ``-log`` of the same clipped P), so both start from the same Q;
* **weights**: ``pairwise_weight = compat`` (Potts);
* **range part in the guide**: the edge features are the image and the
  kernel's ``feat_scale = 1/srgb``, so the adapting kernel is exactly
  ``exp(-|I_n - I_0|^2 / 2 srgb^2)``; the Gaussian term has K = 1;
* **spatial part in W**: a Gaussian of std ``sxy_scale * sxy`` (default
  0.5 sxy) truncated at ``reach`` of those stds (default 2), as a quadrature
  over dilated rings of taps on a pooled grid (``blur`` pixels per cell, 3
  for the standard sxy = 80): for a 500x375 image the bilateral term is rings
  (k, d) = (5, 1), (5, 3), (5, 9), (3, 27) — taps out to 81 px — and the
  Gaussian term one 3x3 kernel; on volumes 3x3x3 rings;
* **normalisation**: each term's kernels share one symmetric normaliser, like
  pydensecrf's default ``NORMALIZE_SYMMETRIC``.

The defaults ``sxy_scale=0.5, reach=2`` (and the blur rule) were chosen on
VOC images with three seeded unary protocols and checked on held-out images
(``benchmarks/tune_crf.py``, ``benchmarks/results/crf.md``); ``sxy_scale=1,
blur=4`` gives the literal mapping of the fully-connected CRF's parameters.

What is not the same: the dense CRF sums over every pixel (its permutohedral
lattice approximates that), PAC-CRF over a few hundred sampled, block-averaged
taps of a narrower Gaussian; messages are computed on the pooled grid. See
``benchmarks/results/crf.md`` for how the two compare.

:func:`convcrf_refine` is the ConvCRF baseline (Teichmann & Cipolla 2018,
default configuration): one 11x11 window on a grid pooled by 4, the dense
CRF's Gaussian and colour kernels (positions in W, colour in the guide,
centre included), unnormalised, message weight 0.2 and unary weight 0.8 —
also expressed as a PAC-CRF (ConvCRF feeds log-probabilities instead of Q to
its first message, which is not reproduced: every step uses Q).
"""

from __future__ import annotations

import os

import numpy as np

from .._validate import check_int
from ..dask import any_dask
from .inputs import (KINDS, check_guide, check_image, check_spacing, finite, guide_features,
                     image_features, positive, prepare_unary, spatial_shape)
from .mapping import DenseTerm, auto_blur, crf_from_terms, ring_kernels, voronoi_weights
from .model import PacCRF

__all__ = ["refine", "convcrf_refine", "dense_crf_mapping", "convcrf_mapping",
           "prepare_unary", "image_features", "check_image", "DENSE_CRF_DEFAULTS", "KINDS",
           "auto_blur", "ring_kernels", "voronoi_weights"]

#: the fully-connected CRF's standard parameters (pydensecrf's examples)
DENSE_CRF_DEFAULTS = dict(sxy_gaussian=3.0, compat_gaussian=3.0, sxy_bilateral=80.0, srgb=13.0,
                          compat_bilateral=10.0, iterations=5)
_METHODS = ("pac", "convcrf")


def _srgb_scale(srgb, n_channels):
    """``1 / srgb``: a number for one std, a tuple for one std per guide channel."""
    if np.ndim(srgb) == 0:
        return 1.0 / positive(srgb, "srgb", "the guide's std in its units (13 for RGB 0..255)")
    vals = tuple(srgb)
    if n_channels is not None and len(vals) != n_channels:
        raise ValueError(f"srgb has {len(vals)} entries but the guide has {n_channels} "
                         f"channel(s); give one number or one per channel")
    return tuple(1.0 / positive(v, "srgb", "every channel's std must be > 0") for v in vals)


# ------------------------------------------------------------------------- the mapping
def dense_crf_mapping(size, n_labels, *, sxy_gaussian=3.0, compat_gaussian=3.0,
                      sxy_bilateral=80.0, srgb=13.0, compat_bilateral=10.0, iterations=5,
                      spacing=None, sxy_scale=None, reach=None, blur=None, kernel_size=None,
                      cells_per_std=None, preset="refine", n_channels=None, dtype=np.float32):
    """The PAC-CRF that approximates a fully-connected CRF (see the module doc).

    Parameters
    ----------
    size : (H, W) or (D, H, W)
        Image or volume size (the reach is capped by it).
    n_labels : int
    sxy_gaussian, compat_gaussian : float
        Gaussian (smoothness) term; ``compat_gaussian=0`` drops it.
    sxy_bilateral, srgb, compat_bilateral : float
        Bilateral (appearance) term; ``compat_bilateral=0`` drops it. ``srgb``
        may give one std per guide channel.
    iterations : int
    spacing : float or tuple of float, optional
        Pixel/voxel size per axis; the ``sxy`` values are in its units.
    sxy_scale, reach, blur, kernel_size, cells_per_std, preset
        Mapping options (:func:`pacnd.crf.mapping.crf_from_terms`; None: the preset's,
        which depend on the number of spatial dims).
    n_channels : int, optional
        Number of guide channels (checks a per-channel ``srgb``).

    Returns
    -------
    PacCRF
        Edge features: the guide in its units, (B, C, *size).
    """
    size = tuple(int(n) for n in size)
    nd = len(size)
    sp = check_spacing(spacing, nd)
    sxy_g = positive(sxy_gaussian, "sxy_gaussian", "the Gaussian term's spatial std")
    sxy_b = positive(sxy_bilateral, "sxy_bilateral", "the bilateral term's spatial std")
    fs = _srgb_scale(srgb, n_channels)
    w_g = finite(compat_gaussian, "compat_gaussian", "the Gaussian term's Potts weight")
    w_b = finite(compat_bilateral, "compat_bilateral", "the bilateral term's Potts weight")
    iterations = check_int(iterations, "iterations", 0, "use 0 or more mean-field iterations")
    terms = []
    if w_b != 0:
        terms.append(DenseTerm(tuple(sxy_b / s for s in sp), w_b, fs))
    if w_g != 0:
        terms.append(DenseTerm(tuple(sxy_g / s for s in sp), w_g, None))
    crf = crf_from_terms(size, n_labels, terms, iterations=iterations, sxy_scale=sxy_scale,
                         reach=reach, blur=blur, kernel_size=kernel_size,
                         cells_per_std=cells_per_std, preset=preset, dtype=dtype)
    return crf


def convcrf_mapping(n_labels, *, sxy_gaussian=3.0, compat_gaussian=3.0, srgb=13.0,
                    compat_bilateral=10.0, iterations=5, filter_size=11, blur=4,
                    weight=0.2, ndim=2, dtype=np.float32):
    """ConvCRF's default configuration as a PAC-CRF (see the module doc).

    ConvCRF's colour kernel has no position term (its ``use_bias=False``); its
    Gaussian kernel's positions are pooled pixel coordinates, i.e. taps
    ``blur`` pixels apart. ``ndim=3`` runs the same on volumes (k^3 windows).
    """
    sxy_g = positive(sxy_gaussian, "sxy_gaussian", "the Gaussian term's spatial std in pixels")
    fs = _srgb_scale(srgb, None)
    iterations = check_int(iterations, "iterations", 0, "use 0 or more mean-field iterations")
    filter_size = check_int(filter_size, "filter_size", 1, "use an odd window size")
    if filter_size % 2 == 0:
        raise ValueError(f"filter_size={filter_size} must be odd")
    blur = check_int(blur, "blur", 1, "use blur >= 1")
    weight = finite(weight, "weight", "ConvCRF's message weight (default 0.2)")
    k = filter_size
    r2 = (np.arange(-(k // 2), k // 2 + 1) * blur) ** 2.0
    d2 = sum(np.meshgrid(*([r2] * ndim), indexing="ij"))
    g = np.exp(-d2 / (2.0 * sxy_g * sxy_g))
    specs = [dict(kernel_size=k, blur=blur, compat="potts", feat_scale=fs,
                  pairwise_weight=weight * finite(compat_bilateral, "compat_bilateral", "")),
             dict(kernel_size=k, blur=blur, compat="potts", feat_scale=0.0,
                  pairwise_weight=weight * finite(compat_gaussian, "compat_gaussian", ""))]
    crf = PacCRF(n_labels, iterations, specs, unary_weight=1.0 - weight, dtype=dtype, ndim=ndim)
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


def prepare_inputs(image, scores, kind, channel_axis, n_labels, gt_prob, clip, prob_tol=1e-3):
    """(guide (*S, C) float32, unary (1, L, *S), annotation colours or None) of a call."""
    size = spatial_shape(scores, kind, image, channel_axis)
    if len(size) not in (2, 3):
        raise ValueError(f"scores describe a {len(size)}-D grid {size}; refine works on images "
                         f"(H, W, L) and volumes (D, H, W, L)")
    img = check_guide(image, size)
    U, colors = prepare_unary(scores, size, kind=kind, channel_axis=channel_axis,
                              n_labels=n_labels, gt_prob=gt_prob, clip=clip, prob_tol=prob_tol)
    return img, U, colors


def run_crf(crf, img, U, return_probabilities, engine):
    """Inference of ``crf`` (a PacCRF, or a function n_labels -> PacCRF) on a checked guide
    and unary: labels (*S) int64, and (*S, L) float32 probabilities on request."""
    if not isinstance(crf, PacCRF):
        crf = crf(U.shape[1])
    if U.shape[1] != crf.n_labels:
        raise ValueError(f"the scores have {U.shape[1]} labels but the CRF parameters were "
                         f"learned for {crf.n_labels}")
    nd = U.ndim - 2
    if crf.ndim != nd:
        raise ValueError(f"the CRF works on {crf.ndim}-D grids but the scores are {nd}-D")
    f = guide_features(img)
    if return_probabilities:
        Q = crf.infer(U, f, output="softmax", engine=engine)[0]
        return Q.argmax(axis=0), np.ascontiguousarray(np.moveaxis(Q, 0, -1))
    return crf.infer(U, f, output="labels", engine=engine)[0]


def _on_dask(build, image, scores, kind, channel_axis, n_labels, gt_prob, clip,
             return_probabilities, engine):
    """Dask inputs: lazy block-wise inference with the CRF ``build`` makes for the whole
    image or volume (see :mod:`pacnd.dask.crf`)."""
    from ..dask.crf import refine_dask  # noqa: PLC0415

    return refine_dask(build, image, scores, kind=kind, channel_axis=channel_axis,
                       n_labels=n_labels, gt_prob=gt_prob, clip=clip,
                       return_probabilities=return_probabilities, engine=engine)


def _run(crf, image, scores, kind, channel_axis, n_labels, gt_prob, clip,
         return_probabilities, engine):
    img, U, _ = prepare_inputs(image, scores, kind, channel_axis, n_labels, gt_prob, clip)
    return run_crf(crf, img, U, return_probabilities, engine)


def refine(image, scores, *, kind="probabilities", sxy_gaussian=3.0, compat_gaussian=3.0,
           sxy_bilateral=80.0, srgb=13.0, compat_bilateral=10.0, iterations=5, method="pac",
           params=None, gt_prob=0.7, n_labels=None, channel_axis=-1, spacing=None,
           sxy_scale=None, reach=None, blur=None, kernel_size=None, cells_per_std=None,
           clip=1e-5, return_probabilities=False, engine=None):
    """Refine a segmentation with a training-free PAC-CRF (or learned parameters).

    Parameters
    ----------
    image : ndarray
        The guide: an RGB image (H, W, 3) uint8 (or numbers on the 0..255
        scale), any image (H, W[, C]) or a volume (D, H, W[, C]) — one or more
        channels, channels last, in units ``srgb`` refers to.
    scores : ndarray
        Per-pixel class scores, see ``kind``: (H, W, L) for images,
        (D, H, W, L) for volumes.
    kind : {'probabilities', 'logits', 'labels'}
        ``'probabilities'``: distributions (each pixel sums to 1);
        ``'logits'``: unnormalised log-probabilities;
        ``'labels'``: an integer label map (H, W) or (D, H, W) (negative =
        unknown) or an (H, W, 3) uint8 colour annotation (black = unknown;
        label i is the i-th colour in ``r + 256 g + 65536 b`` order) — turned
        into probabilities with ``gt_prob`` on the given label (the "unary
        from labels" recipe).
    sxy_gaussian, compat_gaussian : float
        The fully-connected CRF's Gaussian term (defaults 3, 3).
    sxy_bilateral, srgb, compat_bilateral : float
        Its bilateral term (defaults 80, 13, 10); ``srgb`` may give one std per
        guide channel (e.g. ``(40, 20)`` for two MRI modalities).
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
        Label axis of the scores (default -1).
    spacing : float or tuple of float, optional
        Pixel/voxel size per axis, e.g. ``(2.5, 0.7, 0.7)`` mm for a CT volume;
        ``sxy_*`` are then in those units (default: pixels).
    sxy_scale, reach, blur, kernel_size, cells_per_std
        Mapping options (see :func:`pacnd.crf.mapping.crf_from_terms`). Defaults
        on images: 0.5, 2, automatic (``round(sxy_scale * sxy / cells_per_std)``:
        3 for sxy = 80), 5, 12; on volumes 0.5, 2, automatic per axis, 3, 2.5 (a
        coarser grid: the cost grows with blur^-3).
    clip : float
        Floor of the probabilities before the log (pydensecrf's 1e-5).
    return_probabilities : bool
        Also return the refined probabilities (*S, L) float32.
    engine : str, optional
        PAC engine ('numba', 'numpy').

    Returns
    -------
    labels : ndarray (H, W) or (D, H, W) int64
    probabilities : ndarray (*S, L) float32
        Only with ``return_probabilities=True``.

    Notes
    -----
    With a ``dask.array.Array`` image or scores the result is lazy (Dask
    arrays): the CRF built here for the whole image (or volume) runs block by
    block with the exact halo derived from it (:mod:`pacnd.dask.crf`), so the
    result equals this call on the whole, in-memory arrays.

    Examples
    --------
    >>> labels = refine(image, probs)                        # doctest: +SKIP
    >>> labels = refine(image, anno_rgb, kind="labels", gt_prob=0.7)  # doctest: +SKIP
    >>> labels = refine(ct, probs_dhwl, spacing=(2.5, 0.7, 0.7), sxy_bilateral=20,
    ...                 srgb=30, sxy_gaussian=2)             # doctest: +SKIP
    """
    if method not in _METHODS:
        raise ValueError(f"method={method!r} is not supported; choose one of {_METHODS}")
    if not isinstance(return_probabilities, (bool, np.bool_)):
        raise TypeError(f"return_probabilities must be True or False, got "
                        f"{return_probabilities!r}")

    def build(size, n_labels_, n_channels):
        """The CRF of this call for a grid ``size`` with ``n_labels_`` labels."""
        if params is not None:
            return _load_params(params)
        if method == "convcrf":
            return convcrf_mapping(n_labels_, sxy_gaussian=sxy_gaussian,
                                   compat_gaussian=compat_gaussian, srgb=srgb,
                                   compat_bilateral=compat_bilateral, iterations=iterations,
                                   ndim=len(size))
        return dense_crf_mapping(size, n_labels_, sxy_gaussian=sxy_gaussian,
                                 compat_gaussian=compat_gaussian, sxy_bilateral=sxy_bilateral,
                                 srgb=srgb, compat_bilateral=compat_bilateral,
                                 iterations=iterations, spacing=spacing, sxy_scale=sxy_scale,
                                 reach=reach, blur=blur, kernel_size=kernel_size,
                                 cells_per_std=cells_per_std, n_channels=n_channels)

    if any_dask(image, scores):  # lazy, block by block with this CRF (pacnd.dask.crf)
        return _on_dask(build, image, scores, kind, channel_axis, n_labels, gt_prob, clip,
                        return_probabilities, engine)
    img, U, _ = prepare_inputs(image, scores, kind, channel_axis, n_labels, gt_prob, clip)
    crf = build(img.shape[:-1], U.shape[1], img.shape[-1])
    return run_crf(crf, img, U, return_probabilities, engine)


def convcrf_refine(image, scores, *, kind="probabilities", sxy_gaussian=3.0,
                   compat_gaussian=3.0, srgb=13.0, compat_bilateral=10.0, iterations=5,
                   filter_size=11, blur=4, weight=0.2, gt_prob=0.7, n_labels=None,
                   channel_axis=-1, clip=1e-5, return_probabilities=False, engine=None):
    """The ConvCRF baseline (local 11x11 window on a grid pooled by 4).

    Same inputs and outputs as :func:`refine`; ``filter_size``, ``blur`` and
    ``weight`` are ConvCRF's (its colour kernel has no spatial term, so
    there is no ``sxy_bilateral``).
    """
    def build(size, n_labels_, n_channels):
        """The ConvCRF of this call for a grid ``size`` with ``n_labels_`` labels."""
        return convcrf_mapping(n_labels_, sxy_gaussian=sxy_gaussian,
                               compat_gaussian=compat_gaussian, srgb=srgb,
                               compat_bilateral=compat_bilateral, iterations=iterations,
                               filter_size=filter_size, blur=blur, weight=weight,
                               ndim=len(size))

    if any_dask(image, scores):  # lazy, block by block with this CRF (pacnd.dask.crf)
        return _on_dask(build, image, scores, kind, channel_axis, n_labels, gt_prob, clip,
                        return_probabilities, engine)
    img, U, _ = prepare_inputs(image, scores, kind, channel_axis, n_labels, gt_prob, clip)
    crf = build(img.shape[:-1], U.shape[1], img.shape[-1])
    return run_crf(crf, img, U, return_probabilities, engine)
