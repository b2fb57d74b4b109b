"""PAC-CRF: mean-field CRFs with pixel-adaptive messages (``DESIGN.md`` section 2).

- :class:`PacCRF` — the learnable module (a :class:`pacnd.nn.Module`):
  differentiable mean-field on the autodiff graph (reproduces the reference
  implementation's cases), plus :meth:`PacCRF.infer`, the same inference on
  the fast array path (:mod:`pacnd.crf.fast`: K computed once, fused Numba
  passes, no graph);
- :class:`PairwiseKernel` — one pairwise term (kernel size, dilation, blur,
  compatibility '4d' | '2d' | 'potts' | 'none', weight; pacnd extensions
  ``feat_scale``, ``normalize``, ``group``);
- :func:`refine` — training-free post-processing of images and volumes with
  the fully-connected CRF's parameters (sxy, srgb, compat, iterations)
  mapped onto a dilated PAC-CRF (:mod:`pacnd.crf.mapping`:
  :func:`crf_from_terms`, :class:`DenseTerm`), or with learned parameters;
  :func:`convcrf_refine` — the ConvCRF baseline;
- :func:`fit_crf`, :func:`learnable`, :func:`save_crf`, :func:`load_crf` —
  learning the parameters through :func:`pacnd.train.fit` and storing them;
- :func:`unary_from_labels`, :func:`labels_from_annotation`,
  :func:`read_label_image`, :func:`write_label_image` — the "unary from
  labels" recipe and palette PNGs.

The command line front end is ``pacnd crf`` (:mod:`pacnd.cli.crf`); pydensecrf's
API on top of all this is :mod:`pacnd.densecrf`. Modules: ``model`` (PacCRF),
``spec`` (pairwise kernels), ``plan`` / ``fast`` / ``fast3d`` (the fast path),
``mapping`` (dense CRF -> PAC-CRF), ``inputs`` (checks), ``refine``, ``learn``,
``unary``, ``files`` (reading and writing for the CLI).
"""

from .fast import mean_field
from .learn import evaluate_loss, fit_crf, learnable, load_crf, save_crf
from .model import FINAL_OUTPUTS, PacCRF, crf_filter_init
from .mapping import DenseTerm, crf_from_terms
from .refine import (DENSE_CRF_DEFAULTS, convcrf_mapping, convcrf_refine, dense_crf_mapping,
                     image_features, prepare_unary, refine)
from .spec import COMPATS, NORMALIZATIONS, PairwiseKernel
from .unary import (default_palette, labels_from_annotation, read_label_image,
                    unary_from_labels, write_label_image)

__all__ = [
    "PacCRF", "PairwiseKernel", "COMPATS", "NORMALIZATIONS", "FINAL_OUTPUTS",
    "crf_filter_init", "mean_field",
    "refine", "convcrf_refine", "dense_crf_mapping", "convcrf_mapping", "prepare_unary",
    "image_features", "DENSE_CRF_DEFAULTS", "DenseTerm", "crf_from_terms",
    "fit_crf", "learnable", "save_crf", "load_crf", "evaluate_loss",
    "unary_from_labels", "labels_from_annotation", "read_label_image", "write_label_image",
    "default_palette",
]
