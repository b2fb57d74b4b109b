"""Graph nodes for the array-level PAC and convolution ops of :mod:`pacnd.ops`.

A node's forward calls the op; its backward calls the op's vector-Jacobian
product asking only for the gradients the graph needs (``wrt``), so e.g. the
adapting kernel's gradient is never computed for a fixed guide. Nothing but
the inputs is kept between forward and backward: the vjp recomputes K from
the guide in a fused, tiled pass, which is what keeps PAC's memory low.
"""

from __future__ import annotations

from .. import ops
from .function import Function

__all__ = ["OpNode", "apply_op"]


class OpNode(Function):
    """Generic node for an op ``fn(**arrays, **options)`` with a vjp
    ``vjp(grad_output, **arrays, **options, wrt=names) -> {name: grad}``."""

    def __init__(self, fn, vjp, names, options):
        self.fn, self.vjp, self.names, self.options = fn, vjp, names, options

    @property
    def name(self):
        return self.fn.__name__ if "fn" in self.__dict__ else super().name

    def forward(self, *arrays):
        self.arrays = arrays
        return self.fn(**dict(zip(self.names, arrays)), **self.options)

    def backward(self, g):
        wrt = tuple(n for n, need in zip(self.names, self.needs_input_grad) if need)
        res = self.vjp(g, **dict(zip(self.names, self.arrays)), **self.options, wrt=wrt)
        return tuple(res[n] if need else None for n, need in zip(self.names, self.needs_input_grad))

    def release(self):
        name = self.fn.__name__ if "fn" in self.__dict__ else None
        super().release()
        if name:
            self._name = name


def apply_op(fn, vjp, arrays, options):
    """Run ``fn`` on ``arrays`` (a dict name -> array/Tensor/number/None),
    recording a node when a Tensor input requires grad."""
    names = tuple(arrays)
    return OpNode(fn, vjp, names, options).apply(*arrays.values())


# the op pairs, for pacnd.functional
PAIRS = {
    "pac_conv": (ops.pac_conv, ops.pac_conv_vjp),
    "pac_conv_transpose": (ops.pac_conv_transpose, ops.pac_conv_transpose_vjp),
    "pac_pool": (ops.pac_pool, ops.pac_pool_vjp),
    "adapting_kernel": (ops.adapting_kernel, ops.adapting_kernel_vjp),
    "conv": (ops.conv, ops.conv_vjp),
    "conv_transpose": (ops.conv_transpose, ops.conv_transpose_vjp),
}
