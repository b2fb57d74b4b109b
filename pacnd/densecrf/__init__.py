"""pacnd.densecrf: pydensecrf's API on PAC-CRF — ``import pacnd.densecrf as dcrf``.

A drop-in replacement for ``pydensecrf.densecrf`` (and ``pacnd.densecrf.utils``
for ``pydensecrf.utils``): the same classes, methods, constants and array
conventions, so switching is a one-line change::

    import pacnd.densecrf as dcrf                       # was: import pydensecrf.densecrf as dcrf
    from pacnd.densecrf.utils import unary_from_softmax  # was: from pydensecrf.utils import ...

    d = dcrf.DenseCRF2D(w, h, n_labels)
    d.setUnaryEnergy(unary_from_softmax(probs))          # (L, N) float32
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=img, compat=10)
    Q = d.inference(5)                                   # (L, N) float32, np.array(Q) works
    labels = np.argmax(Q, axis=0).reshape(h, w)

``DenseCRF(N, L)`` with features from ``utils.create_pairwise_gaussian`` /
``create_pairwise_bilateral`` works on 1-D, 2-D and 3-D grids (volumes, any
number of guide channels). Compatibilities: a number (Potts), a float32
vector (L,) or matrix (L, L); normalisations ``NO_NORMALIZATION``,
``NORMALIZE_BEFORE``, ``NORMALIZE_AFTER``, ``NORMALIZE_SYMMETRIC``; kernel
types are accepted (they only matter for learning, which pydensecrf does not
expose either). ``startInference`` / ``stepInference`` / ``klDivergence`` step
by hand. Installs wherever NumPy and Numba do — no C++ build.

How it differs from the fully-connected CRF
-------------------------------------------
Inference runs a PAC-CRF through the mapping of :func:`pacnd.crf.refine`
(:mod:`pacnd.crf.mapping`), with the options that reproduce the
fully-connected CRF rather than refine's accuracy-tuned ones: each term's
Gaussian over positions (std ``sxy``, truncated at 2 ``sxy``) becomes dilated
rings of taps on a grid pooled by about ``sxy / 20`` pixels, the guide part is
exact at the taps, and messages are computed on the pooled grid and
interpolated back. So Q is close to pydensecrf's but not equal, and the
difference is not a rounding error: on pydensecrf's example script
(``examples/inference.py`` on im1, im2, im3) 97.5 %, 95.0 % and 99.0 % of
the pixels get the fully-connected CRF's label (its ``out*.png``); on VOC
images with corrupted-ground-truth unaries (three protocols) the labels are
more accurate than the fully-connected CRF's (pixel accuracy 0.926-0.950 vs
0.919-0.930), in about 0.3 of pydensecrf2's time on a loaded 2-core machine,
with half its memory. On volumes (3-D grids) the mapping uses a Gaussian of
std ``sxy / 2`` on cells of about ``sxy / 5`` voxels per axis; on synthetic
phantoms voxel accuracy is higher than pydensecrf2's N-D API (0.958-0.975 vs
0.945-0.947) and a 256^3 volume with 8 labels needs 1.6 GB beside its inputs
(pydensecrf2: 5.2 GB). ``benchmarks/results/crf.md`` and ``crf_volume.md``
have the numbers (``benchmarks/bench_crf.py``, ``bench_crf_volume.py``). Pass
``sxy_scale=0.5, cells_per_std=12`` to get refine's image defaults. Also
different:

* ``inference`` returns a NumPy array (pydensecrf: an Eigen matrix); like
  ``np.array`` of pydensecrf's, it is Fortran-ordered (L, N);
* ``klDivergence`` uses the PAC-CRF's messages;
* the features of ``addPairwiseEnergy`` must contain grid coordinates (as the
  ``create_pairwise_*`` utilities make them); arbitrary point clouds are
  refused;
* wrong shapes, dtypes, non-contiguous arrays, NaN, unknown enum values and
  features that do not match the CRF raise ValueError/TypeError instead of
  crashing or being misread.
"""

from . import utils
from ._crf import (ConstUnary, DenseCRF, DenseCRF2D, KernelType, LogisticUnary,
                   NormalizationType, Unary)

CONST_KERNEL = KernelType.CONST_KERNEL
DIAG_KERNEL = KernelType.DIAG_KERNEL
FULL_KERNEL = KernelType.FULL_KERNEL
NO_NORMALIZATION = NormalizationType.NO_NORMALIZATION
NORMALIZE_BEFORE = NormalizationType.NORMALIZE_BEFORE
NORMALIZE_AFTER = NormalizationType.NORMALIZE_AFTER
NORMALIZE_SYMMETRIC = NormalizationType.NORMALIZE_SYMMETRIC

__all__ = ["DenseCRF", "DenseCRF2D", "Unary", "ConstUnary", "LogisticUnary", "KernelType",
           "NormalizationType", "CONST_KERNEL", "DIAG_KERNEL", "FULL_KERNEL",
           "NO_NORMALIZATION", "NORMALIZE_BEFORE", "NORMALIZE_AFTER", "NORMALIZE_SYMMETRIC",
           "utils"]
