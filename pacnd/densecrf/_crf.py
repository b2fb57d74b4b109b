"""``DenseCRF`` and ``DenseCRF2D``: pydensecrf's classes, inference on PAC-CRF.

The objects keep pydensecrf's state — a unary energy (L, N) and a list of
pairwise terms (features, compatibility, kernel type, normalisation) — and
turn it into a PAC-CRF (:func:`pacnd.crf.mapping.crf_from_terms`) the first
time inference needs it; the model and its plan (adapting kernels folded with
the spatial filters) are cached until a term is added.
"""

from __future__ import annotations

import enum

import numpy as np

from ..crf.fast import mean_field
from ..crf.mapping import DenseTerm, crf_from_terms
from ..crf.plan import prepare
from ._checks import check_compat, check_count, check_enum, check_f32, check_sxy
from ._grid import GridFeatures, find_grid

__all__ = ["KernelType", "NormalizationType", "Unary", "ConstUnary", "LogisticUnary",
           "DenseCRF", "DenseCRF2D"]


class KernelType(enum.IntEnum):
    """pydensecrf's kernel types. They parameterise the kernel for learning; inference
    with the initial (identity) parameters is the same for all three."""

    CONST_KERNEL = 0
    DIAG_KERNEL = 1
    FULL_KERNEL = 2


class NormalizationType(enum.IntEnum):
    """pydensecrf's message normalisations (``S_i = sum_j k(i, j)``): none,
    ``sum_j k Q_j / S_j`` (before), ``sum_j k Q_j / S_i`` (after), symmetric."""

    NO_NORMALIZATION = 0
    NORMALIZE_BEFORE = 1
    NORMALIZE_AFTER = 2
    NORMALIZE_SYMMETRIC = 3


_NORM = {0: "none", 1: "before", 2: "after", 3: "symmetric"}


class Unary:
    """A unary energy (pydensecrf's ``Unary``): :meth:`get` gives it as (L, N) float32."""

    _energy = None

    def get(self):
        return self._energy


class ConstUnary(Unary):
    """A fixed unary energy ``u`` (L, N) float32 (negative log-probabilities)."""

    def __init__(self, u):
        check_f32(u, "u", (None, None))
        self._energy = u.copy()


class LogisticUnary(Unary):
    """The unary energy ``-(L @ f)`` of a logistic model: weights ``L`` (labels, D) and
    features ``f`` (D, N), float32."""

    def __init__(self, L, f):
        check_f32(L, "L", (None, None))
        check_f32(f, "f", (L.shape[1], None), what=f" (L is {L.shape})")
        self._energy = np.ascontiguousarray(-(L @ f), dtype=np.float32)


class _Term:
    def __init__(self, grid, compat, kernel, normalization):
        self.grid, self.compat = grid, compat
        self.kernel, self.normalization = kernel, normalization


class DenseCRF:
    """A fully-connected CRF over ``nvar`` points with ``nlabels`` labels (pydensecrf's API),
    run as a PAC-CRF.

    Parameters
    ----------
    nvar : int
        Number of points N (pixels, voxels).
    nlabels : int
        Number of labels L (>= 2).
    sxy_scale, reach, blur, kernel_size, cells_per_std : optional, keyword-only
        pacnd extensions: options of the mapping onto PAC-CRF
        (:func:`pacnd.crf.mapping.crf_from_terms`, preset 'densecrf'). On
        images the defaults map the fully-connected CRF literally — a spatial
        Gaussian of std ``sxy`` truncated at 2 ``sxy``, ``sxy / 20`` pixels per
        pooled cell, 5-tap rings — because this class is there to reproduce
        pydensecrf's results; :func:`pacnd.crf.refine`'s image defaults
        (``sxy_scale=0.5, cells_per_std=12``) were tuned for accuracy instead.
        On volumes both use a Gaussian of std ``sxy / 2`` on a grid of about
        ``sxy / 5`` voxels per cell along each axis, with 3-tap rings (the literal
        mapping costs more than pydensecrf there).

    Notes
    -----
    The pairwise features must hold the points' grid coordinates (as
    :func:`~pacnd.densecrf.utils.create_pairwise_gaussian` /
    ``create_pairwise_bilateral`` make them, for a 1-D, 2-D or 3-D grid);
    arbitrary point sets are refused with a ValueError.
    """

    def __init__(self, nvar, nlabels, *, sxy_scale=None, reach=None, blur=None,
                 kernel_size=None, cells_per_std=None):
        self._nvar = check_count(nvar, "nvar", 1)
        self._nlabel = check_count(nlabels, "nlabels", 2)
        self._mapping = dict(sxy_scale=sxy_scale, reach=reach, blur=blur,
                             kernel_size=kernel_size, cells_per_std=cells_per_std,
                             preset="densecrf")
        self._logits = None
        self._terms = []
        self._grid_shape = None
        self._model = None
        crf_from_terms((2, 2), 2, [], **self._mapping)  # validate the mapping options now

    # ------------------------------------------------------------------ state
    def _shape_name(self):
        return f"({self._nlabel}, {self._nvar})"

    def setUnaryEnergy(self, u, f=None):
        """Set the unary energy: ``u`` (L, N) float32 negative log-probabilities; with ``f``,
        pydensecrf's logistic unary ``-(u @ f)`` (f: (N, N) float32)."""
        check_f32(u, "unary energy", (self._nlabel, self._nvar),
                  what=f" = (labels, points); move the label axis first and flatten: "
                       f"U.reshape({self._nlabel}, -1)")
        if f is None:
            self._set(u)
        else:
            self._set(LogisticUnary(u, check_f32(f, "f", (self._nvar, self._nvar))).get())

    def _set(self, energy):
        self._logits = np.negative(energy)  # pacnd's unary: logits = -energy (a copy)

    def setUnary(self, u):
        """Set the unary from a :class:`ConstUnary` or :class:`LogisticUnary`."""
        if not isinstance(u, Unary):
            raise TypeError(f"setUnary takes a ConstUnary or LogisticUnary, got "
                            f"{type(u).__name__}; for an array use setUnaryEnergy")
        e = u.get()
        if e is None or e.shape != (self._nlabel, self._nvar):
            raise ValueError(f"bad shape for the unary: need {self._shape_name()}, got "
                             f"{None if e is None else e.shape}")
        self._set(e)

    def _add(self, grid, compat, kernel, normalization):
        compat = check_compat(compat, self._nlabel)
        kernel = check_enum(kernel, KernelType, "kernel")
        normalization = check_enum(normalization, NormalizationType, "normalization")
        shape = grid.shape if len(grid.shape) > 1 else (1,) + grid.shape
        if self._grid_shape is not None and shape != self._grid_shape:
            raise ValueError(f"the pairwise features describe a grid of shape {shape} but this "
                             f"CRF's grid is {self._grid_shape}; every term must use the same "
                             f"grid")
        if len(grid.shape) == 1:
            grid = GridFeatures(shape, (grid.sxy[0],) * 2, grid.extra)
        self._grid_shape = shape
        self._terms.append(_Term(grid, compat, kernel, normalization))
        self._model = None

    def addPairwiseEnergy(self, features, compat, kernel=KernelType.DIAG_KERNEL,
                          normalization=NormalizationType.NORMALIZE_SYMMETRIC):
        """Add a pairwise term with ``features`` (D, N) float32 — grid coordinates / sxy
        and guide features / their std (``utils.create_pairwise_*``) — and a compatibility
        (a number: Potts; float32 (L,) vector or (L, L) matrix)."""
        check_f32(features, "features", (None, self._nvar),
                  what=" = (feature dimensions, points)")
        if features.shape[0] < 1:
            raise ValueError("features has no rows; give (D, N) features with D >= 1")
        self._add(find_grid(features, self._nvar), compat, kernel, normalization)

    # ------------------------------------------------------------------ model
    def _unary_energy(self):
        if self._logits is None:
            return np.zeros((self._nlabel, self._nvar), np.float32)
        return np.negative(self._logits)

    def _unary_logits(self, shape):
        """-energy as pacnd's (1, L, *shape) unary."""
        if self._logits is None:
            return np.zeros((1, self._nlabel) + shape, np.float32)
        return self._logits.reshape((1, self._nlabel) + shape)

    def _build(self):
        """(PacCRF, edge features, grid shape, plan), cached until a term is added."""
        if self._model is not None:
            return self._model
        shape = self._grid_shape
        extras = [t.grid.extra for t in self._terms if t.grid.extra is not None]
        C = sum(len(e) for e in extras)
        feats = np.zeros((1, max(C, 1)) + shape, np.float32)
        terms, c0 = [], 0
        for t in self._terms:
            fs = None
            if t.grid.extra is not None:
                n = len(t.grid.extra)
                feats[0, c0:c0 + n] = t.grid.extra.reshape((n,) + shape)
                fs = tuple(1.0 if c0 <= c < c0 + n else 0.0 for c in range(C))
                c0 += n
            terms.append(DenseTerm(t.grid.sxy, t.compat, fs, _NORM[int(t.normalization)]))
        crf = crf_from_terms(shape, self._nlabel, terms, iterations=1, **self._mapping)
        plan = prepare(crf, (1, self._nlabel) + shape, np.float32, feats)
        self._model = (crf, feats, shape, plan)
        return self._model

    def _step_logits(self, logq, steps):
        """log Q after ``steps`` mean-field steps from log Q = ``logq`` (L, N), as (L, N)."""
        crf, feats, shape, plan = self._build()
        U = self._unary_logits(shape)
        crf.num_steps = steps
        out = mean_field(crf, U, feats, output="log_Q", plan=plan,
                         logQ=None if logq is None else logq.reshape(U.shape))
        return out.reshape(self._nlabel, self._nvar)

    @staticmethod
    def _softmax(z):
        e = np.exp(z - z.max(axis=0, keepdims=True))
        return np.ascontiguousarray(e / e.sum(axis=0, keepdims=True), dtype=np.float32)

    # ------------------------------------------------------------------ inference
    def inference(self, niter):
        """``niter`` mean-field iterations from Q = softmax(-unary); returns Q (L, N) float32
        (``np.argmax(Q, axis=0)`` is the labelling). Like pydensecrf's (whose ``np.array(Q)``
        is Fortran-ordered), Q is the transpose of a C-ordered (N, L) array."""
        niter = check_count(niter, "niter", 0)
        if not self._terms or niter == 0:
            return np.asfortranarray(self._softmax(-self._unary_energy()))
        crf, feats, shape, plan = self._build()
        crf.num_steps = niter
        Q = mean_field(crf, self._unary_logits(shape), feats, output="softmax", plan=plan,
                       labels_last=True)
        return Q.reshape(self._nvar, self._nlabel).T

    def startInference(self):
        """(Q, tmp1, tmp2) to step by hand: Q = softmax(-unary); tmp1, tmp2 are scratch
        arrays (after a step tmp1 holds the logits, tmp2 their pairwise part)."""
        Q = self._softmax(-self._unary_energy())
        return Q, np.zeros_like(Q), np.zeros_like(Q)

    def _check_q(self, Q, name):
        check_f32(Q, name, (self._nlabel, self._nvar), finite=True, layout="any")
        if not Q.flags.writeable:
            raise ValueError(f"{name} is read-only; stepInference updates it in place")
        return Q

    def stepInference(self, Q, tmp1, tmp2):
        """One mean-field step: Q (from :meth:`startInference`) is updated in place."""
        self._check_q(Q, "Q")
        self._check_q(tmp1, "tmp1")
        self._check_q(tmp2, "tmp2")
        if not self._terms:
            tmp1[...] = -self._unary_energy()
            tmp2[...] = 0
            Q[...] = self._softmax(tmp1)
            return
        z = self._step_logits(np.log(np.maximum(Q, np.float32(1e-30))), 1)
        tmp1[...] = z
        tmp2[...] = z + self._unary_energy()
        Q[...] = self._softmax(z)

    def klDivergence(self, Q):
        """pydensecrf's KL divergence of Q (up to the log-partition function):
        ``sum Q log Q + sum unary Q + sum Q * pairwise(Q)`` with the PAC-CRF's messages."""
        Q = check_f32(Q, "Q", (self._nlabel, self._nvar), finite=True, layout="any")
        q = Q.astype(np.float64)
        U = self._unary_energy().astype(np.float64)
        kl = float((q * np.log(np.maximum(q, 1e-20))).sum() + (U * q).sum())
        if self._terms:
            z = self._step_logits(np.log(np.maximum(Q, np.float32(1e-30))), 1)
            kl -= float((q * (z.astype(np.float64) + U)).sum())
        return kl


class DenseCRF2D(DenseCRF):
    """A fully-connected CRF on a ``w`` x ``h`` image with ``nlabels`` labels (pydensecrf's
    API): points are pixels in row-major order, N = w * h."""

    def __init__(self, w, h, nlabels, **mapping):
        self._w = check_count(w, "w", 1)
        self._h = check_count(h, "h", 1)
        super().__init__(self._w * self._h, nlabels, **mapping)
        self._grid_shape = (self._h, self._w)

    def addPairwiseGaussian(self, sxy, compat, kernel=KernelType.DIAG_KERNEL,
                            normalization=NormalizationType.NORMALIZE_SYMMETRIC):
        """The smoothness term ``exp(-x^2 / 2 sx^2 - y^2 / 2 sy^2)``; ``sxy`` = s or (sx, sy)
        (x: columns, y: rows)."""
        sx, sy = check_sxy(sxy, "sxy", 2)
        self._add(GridFeatures((self._h, self._w), (sy, sx), None), compat, kernel,
                  normalization)

    def addPairwiseBilateral(self, sxy, srgb, rgbim, compat, kernel=KernelType.DIAG_KERNEL,
                             normalization=NormalizationType.NORMALIZE_SYMMETRIC):
        """The appearance term over positions / ``sxy`` and colours / ``srgb`` of an RGB image
        ``rgbim`` (h, w, 3) uint8. Other guides: ``utils.create_pairwise_bilateral`` and
        :meth:`addPairwiseEnergy`."""
        sx, sy = check_sxy(sxy, "sxy", 2)
        sr = check_sxy(srgb, "srgb", 3)
        if not isinstance(rgbim, np.ndarray):
            raise TypeError(f"rgbim must be an (h, w, 3) uint8 NumPy array, got "
                            f"{type(rgbim).__name__}")
        if rgbim.ndim != 3 or rgbim.shape[:2] != (self._h, self._w):
            raise ValueError(f"bad shape for pairwise bilateral: need ({self._h}, {self._w}, 3), "
                             f"got {rgbim.shape}")
        if rgbim.shape[2] != 3:
            raise ValueError("addPairwiseBilateral only works for RGB images (3 channels). For "
                             "other guides, build the features with "
                             "utils.create_pairwise_bilateral and add them with "
                             "addPairwiseEnergy")
        check_f32(rgbim, "rgbim", None, dtype=np.uint8, finite=False)
        extra = (rgbim.reshape(-1, 3).T.astype(np.float32)
                 / np.asarray(sr, np.float32)[:, None])
        self._add(GridFeatures((self._h, self._w), (sy, sx), np.ascontiguousarray(extra)),
                  compat, kernel, normalization)
