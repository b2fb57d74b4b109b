"""Learned joint-upsampling networks: PAC (standard and lite) and DJF.

(The training-free JBU and interpolation baselines are in
:mod:`pacnd.models.baselines`, re-exported here.)

Every model here is a :class:`JointUpsampler`: ``model(target_low, guide)``
maps a low-resolution target ``(B, C, h, w)`` (min-max normalised, see
:meth:`JointUpsampler.upsample`) and a guide ``(B, 3, factor*h, factor*w)``
(RGB in ``[0, 1]``) to ``(B, C, factor*h, factor*w)``. Multi-channel targets
(optical flow u, v) are folded into the batch: one single-channel network
serves every channel, so parameter counts do not depend on ``C``.

Architectures follow the reference implementation (NVlabs/pacnet,
``task_jointUpsampling/models.py``) and the paper (Su et al., CVPR 2019,
Sec. 4 and appendix Table 5); parameter names equal the reference's
state-dict keys, so its ``.pth`` weights load by name (:mod:`pacnd.io`).
"""

from __future__ import annotations

import math
import numbers
from collections import OrderedDict

import numpy as np

from .. import functional as F
from .._validate import on_device_of
from ..autograd.tensor import as_array
from ..nn import Conv2d, ModuleList, PacConvTranspose2d, ReLU, Sequential
from ..nn import init as _init
from ._interface import JointUpsampler, check_factor
from .baselines import _SAMPLINGS, Bicubic, Bilinear, JointBilateralUpsample
from .folding import fold_channels, repeat_for_channels, unfold_channels

__all__ = ["PacJointUpsample", "PacJointUpsampleLite", "DJF", "JointBilateralUpsample",
           "Bilinear", "Bicubic", "LITE_CONFIGS", "RESIDUAL_BASES", "fold_channels",
           "unfold_channels", "repeat_for_channels"]


def _check_pow2_factor(factor):
    if not isinstance(factor, numbers.Integral) or isinstance(factor, bool):
        raise TypeError(f"factor must be an int, got {factor!r}")
    factor = int(factor)
    if factor < 2 or factor & (factor - 1):
        raise ValueError(f"factor={factor} is invalid: the PAC joint-upsampling network "
                         f"upsamples by a power of 2 >= 2 (e.g. 4, 8 or 16)")
    return factor


def check_pre_upsample(pre_upsample, factor):
    """``pre_upsample`` as an int: a power of 2 (1: none) below ``factor``."""
    if not isinstance(pre_upsample, numbers.Integral) or isinstance(pre_upsample, bool):
        raise TypeError(f"pre_upsample must be an int, got {pre_upsample!r}")
    p = int(pre_upsample)
    if p < 1 or p & (p - 1) or p >= factor:
        raise ValueError(f"pre_upsample={p} is invalid: give a power of 2 (1: none) below "
                         f"factor={factor}, so that the network body upsamples by "
                         f"factor / pre_upsample >= 2")
    return p


def _widths(v, n, name):
    if isinstance(v, numbers.Integral):
        return (int(v),) * n
    v = tuple(int(x) for x in v)
    if len(v) != n:
        raise ValueError(f"{name} has {len(v)} entries, expected {n}")
    return v


def _conv_stack(widths, ksize, rng, relu_last=False, paddings=None):
    layers = []
    n = len(widths) - 1
    for i in range(n):
        k = ksize[i] if isinstance(ksize, (tuple, list)) else ksize
        p = paddings[i] if paddings is not None else k // 2
        layers.append((f"conv{i + 1}", Conv2d(widths[i], widths[i + 1], k, padding=p, rng=rng)))
        if i < n - 1 or relu_last:
            layers.append((f"relu{i + 1}", ReLU()))
    return Sequential(OrderedDict(layers))


# ----------------------------------------------------------------------- residual base
#: what a learned network's output can be added to (``residual=``)
RESIDUAL_BASES = (None, "jbu", "bicubic", "bilinear")


class _ResidualMixin:
    """``residual=`` for the learned networks: the output is ``base(x, guide) +
    net(x, guide)``, the base a training-free upsampler (JBU, bicubic or bilinear,
    with the sampling convention of the low-res protocol). The base has no
    parameters and is not part of the module tree (state dicts are unchanged);
    with ``zero_last=True`` the net's last conv starts at zero, so the untrained
    model *is* the base and training only has to learn the correction."""

    def _setup_residual(self, residual, residual_sampling, residual_sigmas,
                        residual_input=False):
        if residual not in RESIDUAL_BASES:
            raise ValueError(f"residual={residual!r}; choose one of {RESIDUAL_BASES}")
        if not isinstance(residual_input, (bool, np.bool_)):
            raise TypeError(f"residual_input must be True or False, got {residual_input!r}")
        if residual_input and residual is None:
            raise ValueError("residual_input=True feeds the residual base to the network: "
                             "choose a base too (residual='jbu', 'bicubic' or 'bilinear')")
        self.residual_input = bool(residual_input)
        if residual_sampling not in _SAMPLINGS:
            raise ValueError(f"residual_sampling={residual_sampling!r}; choose one of "
                             f"{_SAMPLINGS}")
        self.residual = residual
        self.residual_sampling = residual_sampling
        self.residual_sigmas = None if residual_sigmas is None else tuple(
            float(v) for v in residual_sigmas)
        base = None
        if residual == "jbu":
            ss, sc = self.residual_sigmas or (0.75, 0.1)
            base = JointBilateralUpsample(self.factor, sigma_spatial=ss, sigma_color=sc)
        elif residual == "bicubic":
            base = Bicubic(self.factor, sampling=residual_sampling)
        elif residual == "bilinear":
            base = Bilinear(self.factor, sampling=residual_sampling)
        object.__setattr__(self, "_base", base)     # not a submodule: no state

    def residual_config(self):
        """The ``residual*`` keyword arguments that rebuild this model."""
        cfg = {"residual": self.residual, "residual_sampling": self.residual_sampling,
               "residual_sigmas": None if self.residual_sigmas is None
               else list(self.residual_sigmas)}
        if self.residual_input:
            cfg["residual_input"] = True
        return cfg

    def _base_of(self, target_low, guide):
        """The residual base's result (an array, no gradient), or None without a base."""
        if self._base is None:
            return None
        from ..autograd import no_grad  # noqa: PLC0415

        with no_grad():
            return as_array(self._base(as_array(target_low), as_array(guide)))

    def _add_base(self, y, target_low, guide, base=None):
        if self._base is None:
            return y
        b = self._base_of(target_low, guide) if base is None else base
        return y + b.astype(as_array(y).dtype, copy=False)


def _zero_conv(conv):
    conv.weight.data[...] = 0
    if conv.bias is not None:
        conv.bias.data[...] = 0


def _he_init(layer, rng, transposed=False):
    """Variance-preserving ("He") init for a layer followed by ReLU: weights
    N(0, 2 / fan_in), biases 0. A stride-s transposed layer reaches each output
    through only ``prod(k) / s**d`` of its taps, so that is its fan-in per input
    channel. (The reference's PyTorch-default init shrinks the signal ~0.4x per
    layer: through the ~10 layers of these networks the output barely depends on
    the input at the start, and a short run spends its steps undoing that.)"""
    w = layer.weight.data
    k = int(np.prod(w.shape[2:]))
    if transposed:
        s = int(np.prod(layer.stride))
        fan_in = w.shape[0] * max(1.0, k / s)
    else:
        fan_in = w.shape[1] * k
    std = math.sqrt(2.0 / fan_in)
    w[...] = on_device_of(rng.standard_normal(w.shape).astype(w.dtype) * w.dtype.type(std), w)
    if layer.bias is not None:
        layer.bias.data[...] = 0


def _apply_init(model, init, rng, out_branch, extra_convs=()):
    """``init='he'``: He init for every conv of the networks' main path (target
    branch, PAC^T layers, output branch) and the guide branch's hidden layers; the
    guide branch's last conv keeps the reference init (small features: K starts
    close to 1, an ordinary transposed convolution that learns to adapt); the last
    conv of the output branch starts at zero (with ``residual`` the untrained
    model is its base). ``'zero_last'``: the reference init, last conv zeroed."""
    last = [m for m in out_branch if isinstance(m, Conv2d)][-1]
    if init == "he":
        for conv in extra_convs:
            _he_init(conv, rng, transposed=isinstance(conv, PacConvTranspose2d))
    if init in ("he", "zero_last"):
        _zero_conv(last)


# ------------------------------------------------------------------------- PAC network
class PacJointUpsample(_ResidualMixin, JointUpsampler):
    """The PAC joint-upsampling network (Su et al. 2019, Sec. 4).

    Target branch: ``n_t_layers`` 5x5 convolutions on the low-res target;
    guidance branch: ``n_g_layers`` 5x5 convolutions on the RGB guide whose
    last layer has ``k_ch * log2(factor)`` channels, split evenly across the
    ``log2(factor)`` PAC^T layers (each slice bilinearly resized, no
    antialiasing, ``align_corners=False``, to that layer's output size);
    decoder: ``log2(factor)`` 5x5 stride-2 PAC^T layers (padding 2,
    output_padding 1), each followed by ReLU, then ``n_f_layers`` 5x5
    convolutions. ReLU after every conv except each branch's last.

    The standard network (32 channels everywhere, ``k_ch=16``) has
    183,489 / 221,937 / 260,385 parameters at 4x / 8x / 16x.

    Parameters
    ----------
    factor : int
        Power of two >= 2.
    channels : int, optional
        Number of target channels the model is meant for (1 depth, 2 flow).
        Metadata only: channels are folded into the batch, any count runs.
    guide_channels : int, optional
    n_t_layers, n_g_layers, n_f_layers : int, optional
    n_t_filters, n_g_filters, n_f_filters : int or tuple of int, optional
        Widths of the target branch (``n_t_layers`` entries), the guidance
        branch's hidden layers (``n_g_layers - 1``) and the decoder (the
        PAC^T outputs then the final convs except the last:
        ``log2(factor) + n_f_layers - 1``).
    k_ch : int, optional
        Guide channels per PAC^T layer.
    f_sz_1, f_sz_2 : int, optional
        Conv and PAC^T kernel sizes (odd).
    rng : numpy Generator or int, optional
        Random init (PyTorch's default for convs, the reference's uniform
        filler for PAC^T).
    init : {'reference', 'bilinear'}, optional
        ``'reference'``: the random init above. ``'bilinear'``: the same,
        then channel 0 of every layer is made a pass-through (centre-tap
        identity in the convs, a 2x bilinear tent in the PAC^T layers) and
        every other weight into it zeroed, so the untrained network is
        already an upsampler (a cascade of 2x bilinear steps, modulated by
        the guide's kernel); the other channels
        start random and learn the correction. Same architecture and
        parameters — only a warm start for short training runs (see
        :meth:`init_bilinear_path`). ``'zero_last'``: the random init with
        the last conv zeroed (the network outputs 0: with ``residual`` the
        untrained model is its base). ``'he'``: variance-preserving init of the
        main path, last conv zeroed (see :func:`_apply_init`).
    residual : {None, 'jbu', 'bicubic', 'bilinear'}, optional
        Add a training-free upsampler's result to the output (the network
        learns the residual); no parameters are added.
    residual_sampling : {'center', 'area'}, optional
        Low-res sample positions of a bicubic/bilinear base (``'center'``:
        nearest-subsampled depth; ``'area'``: area-like downsampling).
    residual_sigmas : (float, float), optional
        JBU base ``(sigma_spatial [low-res px], sigma_color)``.
    residual_input : bool, optional
        Also give the residual base's result to the guidance branch (as
        ``channels`` extra guide channels): the network then sees what it
        corrects instead of having to emulate the base (a JBU base is a
        nonlinear filter of target and guide). Needs ``residual``; the model
        then runs on targets of exactly ``channels`` channels.
    pre_upsample : int, optional
        Power of two ``p < factor``: the low-res target is first interpolated
        ``p`` times (bilinear, ``align_corners=False``: with either low-res
        protocol the samples then sit on the grid the ``factor / p``
        protocol gives) and the network body is the ``factor / p`` one
        (``log2(factor / p)`` PAC^T layers); the residual base still
        upsamples the original low-res target by ``factor``. The body has
        the same parameters as a ``factor / p`` network, so a 16x model can
        start from 8x weights (``Recipe.init_from``). Default 1 (none).
    """

    kind = "pac"
    pad_borders = True

    def __init__(self, factor, channels=1, guide_channels=3, *, n_t_layers=3, n_g_layers=3,
                 n_f_layers=2, n_t_filters=32, n_g_filters=32, n_f_filters=32, k_ch=16,
                 f_sz_1=5, f_sz_2=5, rng=None, init="reference", residual=None,
                 residual_sampling="center", residual_sigmas=None, residual_input=False,
                 pre_upsample=1):
        factor = _check_pow2_factor(factor)
        super().__init__(factor, channels)
        self._setup_residual(residual, residual_sampling, residual_sigmas, residual_input)
        self.pre_upsample = pre_upsample = check_pre_upsample(pre_upsample, factor)
        if n_g_layers < 1 or n_f_layers < 1 or n_t_layers < 1:
            raise ValueError("every branch needs at least one layer")
        if f_sz_1 % 2 != 1 or f_sz_2 % 2 != 1:
            raise ValueError(f"filter sizes must be odd, got f_sz_1={f_sz_1}, f_sz_2={f_sz_2}")
        self.guide_channels = int(guide_channels)
        self.k_ch = int(k_ch)
        num_ups = int(round(math.log2(factor // pre_upsample)))
        self.num_ups = num_ups
        t = _widths(n_t_filters, n_t_layers, "n_t_filters")
        g = _widths(n_g_filters, n_g_layers - 1, "n_g_filters")
        f = _widths(n_f_filters, n_f_layers + num_ups - 1, "n_f_filters")
        self.config = dict(n_t_layers=n_t_layers, n_g_layers=n_g_layers, n_f_layers=n_f_layers,
                           n_t_filters=t, n_g_filters=g, n_f_filters=f, k_ch=self.k_ch,
                           f_sz_1=f_sz_1, f_sz_2=f_sz_2)
        if pre_upsample > 1:
            self.config["pre_upsample"] = pre_upsample
        rng = _init.resolve_rng(rng)
        self.branch_t = _conv_stack((1,) + t, f_sz_1, rng)
        g_in = self.guide_channels + (self.channels if self.residual_input else 0)
        self.branch_g = _conv_stack((g_in,) + g + (self.k_ch * num_ups,), f_sz_1, rng)
        fw = (t[-1],) + f + (1,)
        p, op = (f_sz_2 - 1) // 2, f_sz_2 % 2
        self.up_convts = ModuleList()
        for i in range(num_ups):
            self.up_convts.append(PacConvTranspose2d(fw[i], fw[i + 1], f_sz_2, stride=2,
                                                     padding=p, output_padding=op, rng=rng))
        self.branch_f = _conv_stack(fw[num_ups:], f_sz_1, rng)
        if init == "bilinear":
            self.init_bilinear_path()
        elif init in ("he", "zero_last"):
            g_hidden = [m for m in self.branch_g if isinstance(m, Conv2d)][:-1]
            main = ([m for m in self.branch_t if isinstance(m, Conv2d)] + list(self.up_convts)
                    + [m for m in self.branch_f if isinstance(m, Conv2d)])
            _apply_init(self, init, rng, self.branch_f, main + g_hidden)
        elif init != "reference":
            raise ValueError(f"init={init!r}; choose 'reference', 'bilinear', 'he' or "
                             f"'zero_last'")

    def init_bilinear_path(self):
        """Make channel 0 a pass-through from the input to the output
        (see ``init='bilinear'``); other weights are left as they are."""
        def conv_identity(conv):
            w, b = conv.weight.data, conv.bias.data
            k = w.shape[-1] // 2
            w[0] = 0
            w[0, 0, k, k] = 1
            b[0] = 0

        for seq in (self.branch_t, self.branch_f):
            for m in seq:
                if isinstance(m, Conv2d):
                    conv_identity(m)
        k = self.config["f_sz_2"]
        # input i of a stride-2 PAC^T (padding (k-1)/2, output_padding 1) reaches output
        # 2i - (k-1)/2 + t + 1 through tap t (unflipped weights): taps (k-1)/2 - 2 ..
        # (k-1)/2 + 1 get the 2x "area" tent 1/4, 3/4, 3/4, 1/4, so sample i is centred on
        # output 2i + 1/2 (PyTorch's align_corners=False bilinear upsampling)
        c = (k - 1) // 2
        prof = np.zeros(k)
        for t, v in zip(range(c - 2, c + 2), (0.25, 0.75, 0.75, 0.25)):
            if 0 <= t < k:
                prof[t] = v
        tent = np.outer(prof, prof)
        for up in self.up_convts:
            w = up.weight.data                      # (Cin, Cout, k, k)
            w[:, 0] = 0
            w[0, 0] = on_device_of(tent, w)
            if up.bias is not None:
                up.bias.data[0] = 0

    def forward(self, target_low, guide):
        base = None
        if self.residual_input:
            if target_low.shape[1] != self.channels:
                raise ValueError(f"this model (residual_input=True) was built for "
                                 f"{self.channels}-channel targets, got {target_low.shape[1]}")
            base = self._base_of(target_low, guide)
            guide = F.concat([guide, base.astype(as_array(guide).dtype, copy=False)], axis=1)
        x, C = fold_channels(target_low)
        if self.pre_upsample > 1:
            h, w = x.shape[-2:]
            x = F.interpolate(x, size=(h * self.pre_upsample, w * self.pre_upsample),
                              mode="bilinear", align_corners=False)
        x = self.branch_t(x)
        g = self.branch_g(guide)
        H, W = guide.shape[-2:]
        for i, up in enumerate(self.up_convts):
            gi = g[:, i * self.k_ch:(i + 1) * self.k_ch]
            s = 2 ** (self.num_ups - 1 - i)  # the guide is `s` times larger than this output
            if s != 1:
                gi = F.interpolate(gi, scale_factor=1.0 / s, mode="bilinear",
                                   align_corners=False)
            gi = repeat_for_channels(gi, C)
            x = F.relu(up(x, gi))
        x = self.branch_f(x)
        return self._add_base(unfold_channels(x, C), target_low, guide, base)


#: the reference's lite configurations (DESIGN.md section 3)
LITE_CONFIGS = {
    4: dict(n_t_filters=(12, 16, 22), n_g_filters=(12, 22), n_f_filters=(12, 16, 22), k_ch=12),
    8: dict(n_t_filters=(12, 16, 16), n_g_filters=(12, 16), n_f_filters=(12, 16, 16, 20),
            k_ch=12),
    16: dict(n_t_filters=(8, 16, 16), n_g_filters=(8, 16), n_f_filters=(8, 16, 16, 16, 16),
             k_ch=10),
}


class PacJointUpsampleLite(PacJointUpsample):
    """The lite PAC network (about DJF's size): 55,509 / 56,273 / 55,777
    parameters at 4x / 8x / 16x (only those factors)."""

    kind = "pac_lite"

    def __init__(self, factor, channels=1, guide_channels=3, *, rng=None, init="reference",
                 residual=None, residual_sampling="center", residual_sigmas=None):
        if factor not in LITE_CONFIGS:
            raise ValueError(f"factor={factor!r}: the lite network exists for factors "
                             f"{sorted(LITE_CONFIGS)} only")
        super().__init__(factor, channels, guide_channels, rng=rng, init=init,
                         residual=residual, residual_sampling=residual_sampling,
                         residual_sigmas=residual_sigmas, **LITE_CONFIGS[factor])


# ------------------------------------------------------------------------------- DJF
class DJF(_ResidualMixin, JointUpsampler):
    """Deep joint image filter (Li et al., ECCV 2016) as the reference builds it.

    The low-res target is bilinearly upsampled (``align_corners=False``);
    two 3-conv branches (9x9 -> 96, 1x1 -> 48, 5x5 -> 1, each with padding 2
    so the size is kept overall) process target and guide; their outputs are
    concatenated and a joint 3-conv branch (9x9 -> 64, 1x1 -> 32, 5x5 -> 1,
    "same" padding) predicts the result. ReLU between convs. 56,323
    parameters. ``init``, ``residual``, ``residual_sampling``,
    ``residual_sigmas`` as in :class:`PacJointUpsample`.
    """

    kind = "djf"
    pad_borders = True

    def __init__(self, factor, channels=1, guide_channels=3, *, fs=(9, 1, 5), ns_tg=(96, 48, 1),
                 ns_f=(64, 32), rng=None, init="reference", residual=None,
                 residual_sampling="center", residual_sigmas=None):
        factor = check_factor(factor)
        super().__init__(factor, channels)
        self._setup_residual(residual, residual_sampling, residual_sigmas)
        rng = _init.resolve_rng(rng)
        pads = tuple(k // 2 for k in fs)
        s = sum(pads)
        pads_tg = (s // 3, s // 3, s - 2 * (s // 3))
        self.guide_channels = int(guide_channels)
        self.branch_t = _conv_stack((1,) + tuple(ns_tg), fs, rng, paddings=pads_tg)
        self.branch_g = _conv_stack((self.guide_channels,) + tuple(ns_tg), fs, rng,
                                    paddings=pads_tg)
        self.branch_joint = _conv_stack((2 * ns_tg[-1],) + tuple(ns_f) + (1,), fs, rng,
                                        paddings=pads)
        if init in ("he", "zero_last"):
            convs = [m for seq in (self.branch_t, self.branch_g, self.branch_joint)
                     for m in seq if isinstance(m, Conv2d)]
            _apply_init(self, init, rng, self.branch_joint, convs)
        elif init != "reference":
            raise ValueError(f"init={init!r}; choose 'reference', 'he' or 'zero_last'")

    def forward(self, target_low, guide):
        x, C = fold_channels(target_low)
        if x.shape[-1] < guide.shape[-1]:
            x = F.interpolate(x, size=tuple(guide.shape[-2:]), mode="bilinear",
                              align_corners=False)
        x = self.branch_t(x)
        g = repeat_for_channels(self.branch_g(guide), C)
        x = self.branch_joint(F.concat([x, g], axis=1))
        return self._add_base(unfold_channels(x, C), target_low, guide)
