"""Adapting kernel K and its vector-Jacobian product on the CuPy engine
(kernels in ``kernels/adapting.cu``)."""

from .. import _gpu_common as common
from ._backend import backend

__all__ = ["adapting_kernel", "adapting_kernel_vjp"]


def adapting_kernel(guide, geom, spec, mask=None):
    return common.adapting_kernel(backend(), guide, geom, spec, mask)


def adapting_kernel_vjp(grad_K, guide, geom, spec, mask=None, needs=("guide", "alpha", "lam")):
    return common.adapting_kernel_vjp(backend(), grad_K, guide, geom, spec, mask, needs)
