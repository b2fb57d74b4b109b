"""Argument types of every Numba CUDA kernel, as it is launched (for
``numba.cuda.compile_ptx`` in the tests and for ahead-of-time checks).

Every kernel takes the int32 parameter array ``P`` first, then flat
C-contiguous arrays of the problem's float dtype.
"""

from numba import types

from ._backend import all_kernels

__all__ = ["signature", "kernel_signatures"]

# number of float array arguments after P, per kernel
_N_ARRAYS = {
    "adapting_fwd": 5, "adapting_zinv": 5, "adapting_bwd_d2": 6, "adapting_bwd_guide": 3,
    "pac_fwd_direct": 9, "pac_bwd_input_direct": 9, "pac_bwd_weight_direct": 9,
    "pac_bwd_kernel_direct": 4, "pac_fwd_tiled": 9, "pac_bwd_input_tiled": 4,
    "pac_bwd_weight_tiled": 4, "pac_bwd_kernel_tiled": 4,
}


def signature(name, dtype):
    """Tuple of Numba types of kernel ``name`` launched on ``dtype`` ('float32'/'float64')."""
    ft = types.Array(getattr(types, str(dtype)), 1, "C")
    return (types.Array(types.int32, 1, "C"),) + (ft,) * _N_ARRAYS[name]


def kernel_signatures():
    """[(name, kernel, dtype, signature)] for every kernel and float dtype."""
    out = []
    for name, kern in all_kernels().items():
        for dt in ("float32", "float64"):
            k = kern[dt] if isinstance(kern, dict) else kern
            out.append((name, k, dt, signature(name, dt)))
    return out
