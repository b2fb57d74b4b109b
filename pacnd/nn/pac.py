"""PAC layers: ``PacConv{1,2,3}d``, ``PacConvTranspose{1,2,3}d``, ``PacPool{1,2,3}d``.

They mirror the reference implementation's ``PacConv2d`` /
``PacConvTranspose2d`` / ``PacPool2d`` (argument names, defaults, parameter
names ``weight``, ``bias``, ``inv_alpha``, ``inv_lambda``, initialisation), so
the reference's checkpoints load by name. Differences: no
``smooth_kernel_type``; ``kernel_type='laplacian'`` and ``groups`` are
added; 1-D and 3-D variants exist.

``kernel_type``: ``'gaussian'``, ``'laplacian'`` or
``'inv_{alpha}_{lambda}[_asym][_fixed]'`` — the inverse kernel
``alpha + (d2 + 1e-4)^(lambda/2)`` with learnable ``inv_alpha`` and
``inv_lambda`` (buffers instead with ``_fixed``).

Calling a layer: ``layer(input, guide)``, or ``layer(input, adapting=K)``
with a precomputed kernel, optionally ``mask=``. A layer inside a
``Sequential`` gets its guide from ``layer.guide_source`` instead: a callable
``source(input) -> guide`` (see :mod:`pacnd.nn.hotswap`, which sets it up
from an earlier layer's output). ``layer.guide_scale`` multiplies the guide
(1.0 by default; hot-swapping uses a small value).
"""

from __future__ import annotations

import numbers
import re

import numpy as np

from .. import functional as F
from .._validate import on_device_of, spatial_tuple
from . import init
from .conv import _check_channels, _odd_kernel
from .module import Module, Parameter

__all__ = ["PacConv1d", "PacConv2d", "PacConv3d", "PacConvTranspose1d", "PacConvTranspose2d",
           "PacConvTranspose3d", "PacPool1d", "PacPool2d", "PacPool3d", "parse_kernel_type"]

_INV = re.compile(r"^inv_([-+0-9.eE]+)_([-+0-9.eE]+)((?:_asym|_fixed)*)$")


def parse_kernel_type(kernel_type):
    """Reference ``kernel_type`` string -> (kind, alpha, lam, asym, fixed)."""
    if kernel_type in ("gaussian", "laplacian"):
        return kernel_type, None, None, False, False
    m = _INV.match(kernel_type) if isinstance(kernel_type, str) else None
    if m is None:
        raise ValueError(f"kernel_type={kernel_type!r} is not supported; use 'gaussian', "
                         f"'laplacian' or 'inv_{{alpha}}_{{lambda}}[_asym][_fixed]', e.g. "
                         f"'inv_0.5_-1'")
    try:
        alpha, lam = float(m.group(1)), float(m.group(2))
    except ValueError:
        raise ValueError(f"kernel_type={kernel_type!r}: alpha and lambda must be numbers") from None
    flags = m.group(3)
    return "inverse", alpha, lam, "_asym" in flags, "_fixed" in flags


class _PacBase(Module):
    _nd = 2

    def _setup_kernel(self, kernel_type, normalize_kernel, n_params, dtype):
        kind, alpha, lam, asym, fixed = parse_kernel_type(kernel_type)
        if not isinstance(normalize_kernel, (bool, np.bool_)):
            raise TypeError(f"normalize_kernel must be True or False, got {normalize_kernel!r}")
        self.kernel_type = kernel_type
        self.normalize_kernel = bool(normalize_kernel)
        self._kind, self._asym = kind, asym
        if kind == "inverse":
            shape = () if n_params is None else (n_params,)
            a = np.full(shape, alpha, dtype=dtype)
            lmb = np.full(shape, lam, dtype=dtype)
            if fixed:
                self.register_buffer("inv_alpha", a)
                self.register_buffer("inv_lambda", lmb)
            else:
                self.inv_alpha = Parameter(a)
                self.inv_lambda = Parameter(lmb)
        self.guide_source = None
        self.guide_scale = 1.0

    def _kernel_kwargs(self):
        kw = dict(kernel=self._kind, asym=self._asym, normalize=self.normalize_kernel)
        if self._kind == "inverse":
            kw["alpha"] = self.inv_alpha
            kw["lam"] = self.inv_lambda
        return kw

    def _guide(self, input, guide, adapting):
        if adapting is not None:
            if guide is not None:
                raise ValueError(f"{type(self).__name__}: pass a guide or adapting=, not both")
            return None
        if guide is None:
            if self.guide_source is None:
                raise ValueError(
                    f"{type(self).__name__} needs guide features: call layer(input, guide), "
                    f"layer(input, adapting=K), or set layer.guide_source (e.g. with "
                    f"pacnd.nn.hot_swap / pacnd.nn.GuideFrom) to route them from another layer")
            guide = self.guide_source(input)
        if self.guide_scale != 1.0:
            guide = guide * self.guide_scale
        return guide

    def _common_repr(self):
        s = f"kernel_size={self.kernel_size}, kernel_type={self.kernel_type}"
        for name, default in (("stride", 1), ("padding", 0), ("dilation", 1),
                              ("output_padding", 0)):
            val = getattr(self, name, None)
            if val is not None and any(v != default for v in val):
                s += f", {name}={val}"
        if self.normalize_kernel:
            s += ", normalize_kernel=True"
        if getattr(self, "shared_filters", False):
            s += ", shared_filters=True"
        if getattr(self, "channel_wise", False):
            s += ", channel_wise=True"
        if self.guide_source is not None:
            s += f", guide_source={self.guide_source!r}"
        if self.guide_scale != 1.0:
            s += f", guide_scale={self.guide_scale:g}"
        return s


class _PacConvBase(_PacBase):
    _transposed = False

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True, kernel_type="gaussian", normalize_kernel=False, shared_filters=False,
                 filler="uniform", *, output_padding=0, groups=1, dtype=np.float32, rng=None):
        super().__init__()
        nd = self._nd
        self.in_channels, self.out_channels, self.groups = _check_channels(
            in_channels, out_channels, groups)
        self.kernel_size = _odd_kernel(kernel_size, nd)
        self.stride = spatial_tuple(stride, nd, "stride", minimum=1)
        self.padding = spatial_tuple(padding, nd, "padding", minimum=0)
        self.dilation = spatial_tuple(dilation, nd, "dilation", minimum=1)
        self.output_padding = spatial_tuple(output_padding, nd, "output_padding", minimum=0)
        self.shared_filters = bool(shared_filters)
        if self.shared_filters:
            if self.in_channels != self.out_channels:
                raise ValueError(f"shared_filters=True keeps the channel count: in_channels="
                                 f"{self.in_channels} must equal out_channels={self.out_channels}")
            if self.groups != 1:
                raise ValueError("shared_filters=True already filters each channel separately; "
                                 "leave groups=1")
            shape = (1, 1) + self.kernel_size
        elif self._transposed:
            shape = (self.in_channels, self.out_channels // self.groups) + self.kernel_size
        else:
            shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self.filler = filler
        self.weight = Parameter(np.zeros(shape, dtype=dtype))
        if bias:
            self.bias = Parameter(np.zeros((self.out_channels,), dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self._setup_kernel(kernel_type, normalize_kernel, None, dtype)
        self.reset_parameters(rng)

    def reset_parameters(self, rng=None):
        """Fill the weights with the layer's ``filler``: ``'uniform'`` (the
        reference's), ``'linear'`` (bilinear tent, transposed layers with
        ``in_channels == out_channels``), ``'crf'`` / ``'crf_perturbed'``
        (PAC-CRF init, ``in_channels == out_channels``)."""
        w, b = self.weight.data, (None if self.bias is None else self.bias.data)
        dtype = w.dtype
        filler = self.filler
        if filler == "uniform":
            rng = init.resolve_rng(rng)
            s = init.pac_uniform_bound(self.in_channels, self.kernel_size, self.shared_filters)
            w[...] = on_device_of(init.uniform(w.shape, s, rng, dtype), w)
            if b is not None:
                b[...] = on_device_of(init.uniform(b.shape, s, rng, dtype), b)
        elif filler == "linear":
            if not self._transposed or self.in_channels != self.out_channels or self.groups != 1:
                raise ValueError("filler='linear' is for transposed layers with in_channels == "
                                 "out_channels (and groups=1)")
            tent = init.bilinear_tent(self.kernel_size, self.stride, self.normalize_kernel)
            w[...] = 0
            for c in range(1 if self.shared_filters else self.in_channels):
                w[c, c] = on_device_of(tent, w)
            if b is not None:
                b[...] = 0
        elif filler in ("crf", "crf_perturbed"):
            if self.in_channels != self.out_channels or self.groups != 1:
                raise ValueError(f"filler={filler!r} needs in_channels == out_channels "
                                 f"(the number of labels) and groups=1")
            compat = "2d" if self.shared_filters else "4d"
            w[...] = on_device_of(init.crf_weight(self.kernel_size, self.in_channels, compat), w)
            if filler == "crf_perturbed":
                rng = init.resolve_rng(rng)
                w += on_device_of(((rng.random(w.shape) - 0.5) * 0.001).astype(dtype), w)
            if b is not None:
                b[...] = 0
        else:
            raise ValueError(f"filler={filler!r} is not supported; choose 'uniform', 'linear' "
                             f"(transposed) or 'crf'/'crf_perturbed'")
        if self._kind == "inverse" and isinstance(self.inv_alpha, Parameter):
            _, alpha, lam, _, _ = parse_kernel_type(self.kernel_type)
            self.inv_alpha.data[...] = alpha
            self.inv_lambda.data[...] = lam

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, " + self._common_repr()
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class _PacConv(_PacConvBase):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True, kernel_type="gaussian", normalize_kernel=False, shared_filters=False,
                 filler="uniform", *, groups=1, dtype=np.float32, rng=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         bias, kernel_type, normalize_kernel, shared_filters, filler,
                         groups=groups, dtype=dtype, rng=rng)

    def forward(self, input, guide=None, *, adapting=None, mask=None):
        guide = self._guide(input, guide, adapting)
        return F.pac_conv(input, guide, self.weight, self.bias, stride=self.stride,
                          padding=self.padding, dilation=self.dilation, groups=self.groups,
                          shared=self.shared_filters, adapting=adapting,
                          mask=mask if adapting is None else None,
                          **(self._kernel_kwargs() if adapting is None else {}))


class _PacConvT(_PacConvBase):
    _transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, dilation=1, bias=True, kernel_type="gaussian",
                 normalize_kernel=False, shared_filters=False, filler="uniform", *, groups=1,
                 dtype=np.float32, rng=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         bias, kernel_type, normalize_kernel, shared_filters, filler,
                         output_padding=output_padding, groups=groups, dtype=dtype, rng=rng)

    def output_size(self, input_size):
        """Spatial output size for a spatial input size."""
        return tuple((n - 1) * s - 2 * p + d * (k - 1) + 1 + op for n, s, p, d, k, op in
                     zip(input_size, self.stride, self.padding, self.dilation, self.kernel_size,
                         self.output_padding))

    def forward(self, input, guide=None, *, adapting=None, mask=None):
        guide = self._guide(input, guide, adapting)
        return F.pac_conv_transpose(
            input, guide, self.weight, self.bias, stride=self.stride, padding=self.padding,
            output_padding=self.output_padding, dilation=self.dilation, groups=self.groups,
            shared=self.shared_filters, adapting=adapting,
            mask=mask if adapting is None else None,
            **(self._kernel_kwargs() if adapting is None else {}))


class _PacPool(_PacBase):
    def __init__(self, kernel_size, stride=1, padding=0, dilation=1, kernel_type="gaussian",
                 channel_wise=False, normalize_kernel=False, out_channels=-1, *,
                 dtype=np.float32):
        super().__init__()
        nd = self._nd
        self.kernel_size = _odd_kernel(kernel_size, nd)
        self.stride = spatial_tuple(stride, nd, "stride", minimum=1)
        self.padding = spatial_tuple(padding, nd, "padding", minimum=0)
        self.dilation = spatial_tuple(dilation, nd, "dilation", minimum=1)
        self.channel_wise = bool(channel_wise)
        if not isinstance(out_channels, numbers.Integral):
            raise TypeError(f"out_channels must be an int, got {out_channels!r}")
        self.out_channels = int(out_channels)
        kind = parse_kernel_type(kernel_type)
        n_params = None
        if kind[0] == "inverse" and self.channel_wise and not kind[4]:
            if self.out_channels <= 0:
                raise ValueError(f"channel_wise with a learnable {kernel_type!r} kernel needs "
                                 f"out_channels (one alpha/lambda per channel)")
            n_params = self.out_channels
        self._setup_kernel(kernel_type, normalize_kernel, n_params, dtype)

    def forward(self, input, guide=None, *, adapting=None, mask=None):
        guide = self._guide(input, guide, adapting)
        cin = input.shape[1]
        if self.out_channels > 0 and cin != self.out_channels:
            raise ValueError(f"{type(self).__name__} was built for {self.out_channels} channels, "
                             f"got input with {cin}")
        return F.pac_pool(input, guide, self.kernel_size, stride=self.stride,
                          padding=self.padding, dilation=self.dilation,
                          channel_wise=self.channel_wise, adapting=adapting,
                          mask=mask if adapting is None else None,
                          **(self._kernel_kwargs() if adapting is None else {}))

    def extra_repr(self):
        return self._common_repr()


class PacConv1d(_PacConv):
    """1-D pixel-adaptive convolution layer."""
    _nd = 1


class PacConv2d(_PacConv):
    """2-D pixel-adaptive convolution layer (reference ``PacConv2d``).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or tuple (odd)
    stride, padding, dilation : int or tuple
    bias : bool
    kernel_type : str
        ``'gaussian'``, ``'laplacian'`` or ``'inv_{alpha}_{lambda}[_asym][_fixed]'``.
    normalize_kernel : bool
    shared_filters : bool
        One ``(1, 1, *k)`` filter for every channel (``in == out``).
    filler : {'uniform', 'crf', 'crf_perturbed'}
    groups : int (keyword)
    dtype, rng : keyword
        Parameter dtype (float32) and the Generator for the random init.
    """
    _nd = 2


class PacConv3d(_PacConv):
    """3-D pixel-adaptive convolution layer."""
    _nd = 3


class PacConvTranspose1d(_PacConvT):
    """1-D transposed PAC layer."""
    _nd = 1


class PacConvTranspose2d(_PacConvT):
    """2-D transposed PAC layer (reference ``PacConvTranspose2d``; learnable
    guided upsampling). Weight ``(Cin, Cout/groups, k, k)`` applied unflipped
    (the reference convention); the guide lives at the output resolution.
    ``filler='linear'`` initialises a bilinear upsampler."""
    _nd = 2


class PacConvTranspose3d(_PacConvT):
    """3-D transposed PAC layer."""
    _nd = 3


class PacPool1d(_PacPool):
    """1-D pixel-adaptive pooling."""
    _nd = 1


class PacPool2d(_PacPool):
    """2-D pixel-adaptive pooling (reference ``PacPool2d``): a K-weighted sum
    over each window (an average with ``normalize_kernel``)."""
    _nd = 2


class PacPool3d(_PacPool):
    """3-D pixel-adaptive pooling."""
    _nd = 3
