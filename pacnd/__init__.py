"""pacnd: pixel-adaptive convolution on NumPy, Numba and CuPy.

Array-level operations (forward and vector-Jacobian products) live in
:mod:`pacnd.ops` and are re-exported here; image-level filters (bilateral,
joint bilateral, joint bilateral upsampling, detail-preserving pooling) in
:mod:`pacnd.filters`.
"""

from . import datasets, filters
from ._dispatch import get_engine, set_engine, use_engine
from .filters import bilateral, detail_preserving_pool, joint_bilateral, joint_bilateral_upsample
from .ops import (adapting_kernel, adapting_kernel_vjp, conv, conv_transpose,
                  conv_transpose_vjp, conv_vjp, pac_conv, pac_conv_transpose,
                  pac_conv_transpose_vjp, pac_conv_vjp, pac_pool, pac_pool_vjp)

__version__ = "0.1.0"

__all__ = [
    "adapting_kernel", "adapting_kernel_vjp", "pac_conv", "pac_conv_vjp", "pac_conv_transpose",
    "pac_conv_transpose_vjp", "pac_pool", "pac_pool_vjp", "conv", "conv_vjp", "conv_transpose",
    "conv_transpose_vjp", "get_engine", "set_engine", "use_engine", "datasets", "filters",
    "bilateral", "joint_bilateral", "joint_bilateral_upsample", "detail_preserving_pool",
]
