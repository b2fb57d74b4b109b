"""PAC forward and vector-Jacobian products on the CuPy engine (kernels in
``kernels/pac.cu``: tiled implicit-GEMM kernels for the common layer shapes,
direct kernels for the rest)."""

from .. import _gpu_common as common
from ._backend import backend

__all__ = ["pac_forward", "pac_vjp"]


def pac_forward(x, weight, bias, geom, groups, *, K=None, guide=None, spec=None, mask=None):
    return common.pac_forward(backend(), x, weight, bias, geom, groups, K=K, guide=guide,
                              spec=spec, mask=mask)


def pac_vjp(grad_out, x, weight, geom, groups, *, K=None, guide=None, spec=None, mask=None,
            needs=("input", "weight", "bias", "guide")):
    return common.pac_vjp(backend(), grad_out, x, weight, geom, groups, K=K, guide=guide,
                          spec=spec, mask=mask, needs=needs)
