"""NumPy reference engine: slow, obviously correct, the oracle for tests.

Loops over kernel taps; every tap is a gather of a whole (B, C, *out) slab
through the per-dimension index tables of :class:`pacnd._geometry.Geometry`
(zero where a table says -1). Covers 1, 2 and 3 spatial dims.
"""
from .adapting import adapting_kernel, adapting_kernel_vjp
from .pac import pac_forward, pac_vjp

__all__ = ["adapting_kernel", "adapting_kernel_vjp", "pac_forward", "pac_vjp"]
