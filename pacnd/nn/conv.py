"""Plain convolution layers: ``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d``.

They run on the PAC engines (:func:`pacnd.functional.conv`), which need odd
kernel sizes. Initialisation is PyTorch's default (see :mod:`pacnd.nn.init`).

``ConvTranspose*d`` follow **PyTorch's** convention (``nn.ConvTranspose2d``
weights load as they are): the layer applies ``pacnd.conv_transpose`` to the
spatially flipped weight. The PAC^T layers (:class:`PacConvTranspose2d`)
keep the reference implementation's unflipped convention instead, so with a
constant guide ``PacConvTranspose2d(W) == ConvTranspose2d(flip(W))``.
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import functional as F
from .._validate import spatial_tuple
from . import init
from .module import Module, Parameter

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"]


def _positive_int(v, name):
    if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name}={v!r} must be a positive int")
    return int(v)


def _check_channels(in_channels, out_channels, groups):
    in_channels = _positive_int(in_channels, "in_channels")
    out_channels = _positive_int(out_channels, "out_channels")
    groups = _positive_int(groups, "groups")
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"in_channels={in_channels} and out_channels={out_channels} must both be "
                         f"divisible by groups={groups}")
    return in_channels, out_channels, groups


def _odd_kernel(kernel_size, nd):
    k = spatial_tuple(kernel_size, nd, "kernel_size", minimum=1)
    if any(ki % 2 == 0 for ki in k):
        raise ValueError(f"kernel_size={k} has an even entry; pacnd's convolution engines need "
                         f"odd kernel sizes (use e.g. "
                         f"{tuple(ki + 1 if ki % 2 == 0 else ki for ki in k)})")
    return k


class _ConvNd(Module):
    _nd = 2
    _transposed = False

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, *, output_padding=0, dtype=np.float32, rng=None):
        super().__init__()
        nd = self._nd
        self.in_channels, self.out_channels, self.groups = _check_channels(
            in_channels, out_channels, groups)
        self.kernel_size = _odd_kernel(kernel_size, nd)
        self.stride = spatial_tuple(stride, nd, "stride", minimum=1)
        self.padding = spatial_tuple(padding, nd, "padding", minimum=0)
        self.dilation = spatial_tuple(dilation, nd, "dilation", minimum=1)
        self.output_padding = spatial_tuple(output_padding, nd, "output_padding", minimum=0)
        if self._transposed:
            shape = (self.in_channels, self.out_channels // self.groups) + self.kernel_size
        else:
            shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        wb, bb = init.conv_bounds(shape)
        rng = init.resolve_rng(rng)
        self.weight = Parameter(init.uniform(shape, wb, rng, dtype))
        if bias:
            self.bias = Parameter(init.uniform((self.out_channels,), bb, rng, dtype))
        else:
            self.register_parameter("bias", None)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        for name, default in (("stride", 1), ("padding", 0), ("dilation", 1),
                              ("output_padding", 0)):
            val = getattr(self, name)
            if any(v != default for v in val):
                s += f", {name}={val}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class _Conv(_ConvNd):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, *, dtype=np.float32, rng=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, dtype=dtype, rng=rng)

    def forward(self, input):
        return F.conv(input, self.weight, self.bias, stride=self.stride, padding=self.padding,
                      dilation=self.dilation, groups=self.groups)


class _ConvT(_ConvNd):
    _transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, *, dtype=np.float32,
                 rng=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, output_padding=output_padding, dtype=dtype, rng=rng)

    def forward(self, input):
        w = F.flip(self.weight, axis=tuple(range(2, 2 + self._nd)))
        return F.conv_transpose(input, w, self.bias, stride=self.stride, padding=self.padding,
                                output_padding=self.output_padding, dilation=self.dilation,
                                groups=self.groups)


class Conv1d(_Conv):
    """1-D convolution (cross-correlation) of (B, Cin, L)."""
    _nd = 1


class Conv2d(_Conv):
    """2-D convolution (cross-correlation) of (B, Cin, H, W), like PyTorch's
    ``nn.Conv2d`` (odd kernel sizes): weight (Cout, Cin/groups, kh, kw)."""
    _nd = 2


class Conv3d(_Conv):
    """3-D convolution of (B, Cin, D, H, W)."""
    _nd = 3


class ConvTranspose1d(_ConvT):
    """1-D transposed convolution, PyTorch convention (see module docstring)."""
    _nd = 1


class ConvTranspose2d(_ConvT):
    """2-D transposed convolution with PyTorch's ``nn.ConvTranspose2d``
    convention and argument order: weight (Cin, Cout/groups, kh, kw)."""
    _nd = 2


class ConvTranspose3d(_ConvT):
    """3-D transposed convolution, PyTorch convention."""
    _nd = 3
