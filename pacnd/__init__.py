"""pacnd: pixel-adaptive convolution on NumPy, Numba and CuPy.

Array-level operations (forward and vector-Jacobian products) live in
:mod:`pacnd.ops`; the names exported here accept arrays or :class:`Tensor` s
(recording the autodiff graph when an input requires grad); image-level filters (bilateral,
joint bilateral, joint bilateral upsampling, detail-preserving pooling) in
:mod:`pacnd.filters`; PAC-CRF in :mod:`pacnd.crf`; deep joint upsampling
(networks, baselines, pretrained weights) in :mod:`pacnd.models` with its data
readers, pairs and synthetic scenes in :mod:`pacnd.data`.
"""

from . import datasets, filters
from ._dispatch import get_engine, set_engine, use_engine
from .filters import bilateral, detail_preserving_pool, joint_bilateral, joint_bilateral_upsample
from .ops import (adapting_kernel_vjp, conv_transpose_vjp, conv_vjp, pac_conv_transpose_vjp,
                  pac_conv_vjp, pac_pool_vjp)
from . import crf, data, functional, io, models, nn, optim, train
from .autograd import Tensor, enable_grad, is_grad_enabled, no_grad, set_grad_enabled
# Tensor-aware: arrays in -> arrays out (pacnd.ops); Tensors in -> Tensors out, graph recorded
from .functional import (adapting_kernel, conv, conv_transpose, pac_conv, pac_conv_transpose,
                         pac_pool)

__version__ = "0.1.0"

__all__ = [
    "adapting_kernel", "adapting_kernel_vjp", "pac_conv", "pac_conv_vjp", "pac_conv_transpose",
    "pac_conv_transpose_vjp", "pac_pool", "pac_pool_vjp", "conv", "conv_vjp", "conv_transpose",
    "conv_transpose_vjp", "get_engine", "set_engine", "use_engine", "datasets", "filters",
    "bilateral", "joint_bilateral", "joint_bilateral_upsample", "detail_preserving_pool",
    "Tensor", "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "functional",
    "io", "nn", "optim", "train", "crf", "data", "models",
]
