"""Array-level PAC operations and their vector-Jacobian products.

Every call takes NumPy (or CuPy) arrays in channels-first layout
``(B, C, *spatial)`` with 1, 2 or 3 spatial dims, validates them, resolves the
geometry and hands the work to the engine chosen by :mod:`pacnd._dispatch`.
The result has the common float dtype of the inputs (float32 unless one of
them is float64).

Conventions follow the reference implementation (NVlabs/pacnet), see
``DESIGN.md`` section 1: cross-correlation, zero padding of input and guide,
the centre feature at the window centre, transposed weights applied unflipped.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

from ._dispatch import select_engine
from ._geometry import Geometry, conv_output_size, conv_transpose_output_size
from ._kernelspec import KERNEL_KINDS, KernelSpec
from ._validate import (array_module, check_finite, check_float_array, check_shape,
                        common_float_dtype, spatial_tuple)

__all__ = [
    "adapting_kernel", "adapting_kernel_vjp",
    "pac_conv", "pac_conv_vjp",
    "pac_conv_transpose", "pac_conv_transpose_vjp",
    "pac_pool", "pac_pool_vjp",
    "conv", "conv_vjp", "conv_transpose", "conv_transpose_vjp",
]

_KIND_ALIASES = {"gaussian": "gaussian", "laplacian": "laplacian", "inverse": "inverse",
                 "inv": "inverse"}


# --------------------------------------------------------------------------- helpers
def _is_tensor(a):
    return any(c.__name__ == "Tensor" for c in type(a).__mro__) and hasattr(a, "data")


def _unwrap(a):
    """Arrays pass through; Tensors (and subclasses such as Parameter) give their array."""
    if a is not None and _is_tensor(a):
        return a.data
    return a


def _param_array(value, name, ck_allowed, dtype):
    """alpha/lam: a real scalar or a 1-D array of one value per K channel."""
    value = _unwrap(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        arr = np.asarray([float(value)], dtype=np.float64)
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} must be finite, got {float(value)}")
        return arr, ()
    if isinstance(value, np.ndarray) or type(value).__module__.split(".")[0] == "cupy":
        if value.dtype.kind not in "fiu":
            raise TypeError(f"{name} must be real, got dtype {value.dtype}")
        if value.ndim == 0:
            arr = np.asarray([float(value)], dtype=np.float64)
            if not np.isfinite(arr).all():
                raise ValueError(f"{name} must be finite, got {float(value)}")
            return arr, ()
        if value.ndim != 1 or value.shape[0] not in ck_allowed:
            raise ValueError(
                f"{name} has shape {tuple(value.shape)}; give a scalar or one value per kernel "
                f"channel, shape ({max(ck_allowed)},)")
        arr = np.asarray(value.get() if hasattr(value, "get") else value, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} must be finite, got {arr}")
        return arr, tuple(value.shape)
    raise TypeError(f"{name} must be a float or a 1-D array, got {type(value).__name__}")


def _kernel_spec(kernel, alpha, lam, asym, normalize, channel_wise, ck_channel_wise, dtype):
    if not isinstance(kernel, str) or kernel not in _KIND_ALIASES:
        raise ValueError(f"kernel={kernel!r} is not supported; choose one of {KERNEL_KINDS}")
    kind = _KIND_ALIASES[kernel]
    shapes = {}
    if kind == "inverse":
        allowed = (1, ck_channel_wise) if channel_wise else (1,)
        a, shapes["alpha"] = _param_array(0.0 if alpha is None else alpha, "alpha", allowed, dtype)
        l_, shapes["lam"] = _param_array(-1.0 if lam is None else lam, "lam", allowed, dtype)
    else:
        if alpha is not None or lam is not None:
            raise ValueError(f"alpha and lam only apply to kernel='inverse', not kernel={kind!r}; "
                             "drop them or use kernel='inverse'")
        a = l_ = None
    for flag, fname in ((asym, "asym"), (normalize, "normalize"), (channel_wise, "channel_wise")):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{fname} must be True or False, got {flag!r}")
    return KernelSpec(kind, a, l_, bool(asym), bool(normalize), bool(channel_wise)), shapes


def _odd_kernel(kernel_size, name="kernel_size"):
    if any(k % 2 == 0 for k in kernel_size):
        raise ValueError(
            f"{name}={kernel_size} has an even entry; PAC needs odd kernel sizes so that the "
            f"window has a centre pixel (use e.g. {tuple(k + 1 if k % 2 == 0 else k for k in kernel_size)})")


def _check_nonempty(a, name):
    if any(n == 0 for n in a.shape):
        raise ValueError(f"{name} is empty: shape {tuple(a.shape)} has a zero-sized axis; PAC "
                         f"needs at least one batch item, channel and pixel")


def _check_out_size(out_size, in_size, what):
    if any(o < 1 for o in out_size):
        raise ValueError(
            f"the output would be empty (spatial size {out_size}) for input size {in_size}: "
            f"the {what} does not fit; reduce kernel_size/dilation/stride or increase padding")


def _check_output_padding(output_padding, stride, dilation):
    for op, s, d in zip(output_padding, stride, dilation):
        if op >= s and op >= d:
            raise ValueError(
                f"output_padding={output_padding} must be smaller than stride={stride} (or than "
                f"dilation={dilation}) in every dim; it only picks among output sizes that "
                f"stride maps to the same input size")


def _check_mask(mask, batch, in_size, dtype):
    if mask is None:
        return None
    mask = check_float_array(mask, "mask")
    check_shape(mask, "mask", (batch, 1) + tuple(in_size),
                "mask marks valid input pixels: one channel, same batch and spatial size as input")
    check_finite(mask, "mask")
    return mask


def _contig(a, dtype):
    if a is None:
        return None
    xp = array_module(a)
    return xp.ascontiguousarray(a, dtype=dtype)


@dataclass
class _Plan:
    """Everything an engine needs, plus how to map gradients back to the caller's shapes."""

    engine: object
    x: object
    weight: object
    bias: object
    geom: Geometry
    groups: int
    K: object = None
    guide: object = None
    spec: KernelSpec | None = None
    mask: object = None
    shared: bool = False
    transposed: bool = False
    user_weight_shape: tuple = ()
    param_shapes: dict = field(default_factory=dict)
    wrt_allowed: tuple = ()

    def forward(self):
        return self.engine.pac_forward(self.x, self.weight, self.bias, self.geom, self.groups,
                                       K=self.K, guide=self.guide, spec=self.spec, mask=self.mask)

    def vjp(self, grad_output, wrt):
        wrt = _check_wrt(wrt, self.wrt_allowed)
        xp = array_module(self.x)
        B = self.x.shape[0]
        cout = self.weight.shape[0]
        grad_output = check_float_array(grad_output, "grad_output")
        check_shape(grad_output, "grad_output", (B, cout) + tuple(self.geom.out_size),
                    "it must have the shape of the operation's output")
        grad_output = _contig(grad_output, self.x.dtype)
        needs = tuple(wrt)
        res = self.engine.pac_vjp(grad_output, self.x, self.weight, self.geom, self.groups,
                                  K=self.K, guide=self.guide, spec=self.spec, mask=self.mask,
                                  needs=needs)
        if "weight" in res:
            gw = res["weight"]
            if self.shared:
                gw = gw.sum(axis=0, keepdims=True)
            elif self.transposed:
                gw = _transposed_weight_back(gw, self.groups)
            res["weight"] = xp.ascontiguousarray(gw).reshape(self.user_weight_shape)
        for p in ("alpha", "lam"):
            if p in res:
                res[p] = _param_grad_back(res[p], self.param_shapes.get(p, ()), xp)
        return {k: res[k] for k in wrt}


def _param_grad_back(g, shape, xp):
    g = xp.asarray(g)
    if shape == ():
        return g.sum()
    if g.shape[0] != shape[0]:
        return xp.broadcast_to(g.sum(), shape).copy()
    return g


def _check_wrt(wrt, allowed):
    if isinstance(wrt, str):
        wrt = (wrt,)
    wrt = tuple(wrt)
    bad = [w for w in wrt if w not in allowed]
    if bad:
        raise ValueError(f"cannot differentiate with respect to {bad}: this call has gradients "
                         f"for {allowed}")
    return wrt


def _transposed_weight_to_engine(w, groups):
    """(Cin, Cout/g, *k) -> (Cout, Cin/g, *k), the layout engines use for both ops."""
    xp = array_module(w)
    cin, cout_g = w.shape[:2]
    cin_g = cin // groups
    k = w.shape[2:]
    w = w.reshape((groups, cin_g, cout_g) + k)
    w = xp.swapaxes(w, 1, 2)
    return xp.ascontiguousarray(w.reshape((groups * cout_g, cin_g) + k))


def _transposed_weight_back(gw, groups):
    xp = array_module(gw)
    cout, cin_g = gw.shape[:2]
    cout_g = cout // groups
    k = gw.shape[2:]
    gw = gw.reshape((groups, cout_g, cin_g) + k)
    gw = xp.swapaxes(gw, 1, 2)
    return xp.ascontiguousarray(gw.reshape((groups * cin_g, cout_g) + k))


def _resolve_guide_or_kernel(guide, adapting, kernel_opts, *, batch, guide_size, k_channels_ok,
                             kernel_size, out_size, dtype_arrays):
    """Validate the guide / precomputed K pair and the kernel options."""
    kernel, alpha, lam, asym, normalize, mask, channel_wise = kernel_opts
    if adapting is not None:
        if guide is not None:
            raise ValueError("pass either guide (K is computed from it) or adapting (a "
                             "precomputed K), not both")
        if (kernel != "gaussian" or alpha is not None or lam is not None or asym or normalize
                or mask is not None or channel_wise):
            raise ValueError("kernel, alpha, lam, asym, normalize, mask and channel_wise describe "
                             "how K is computed from the guide; with a precomputed adapting "
                             "kernel they do not apply — compute it with pacnd.adapting_kernel "
                             "using those options instead")
        adapting = check_float_array(adapting, "adapting")
        expected_tail = tuple(kernel_size) + tuple(out_size)
        if (adapting.ndim != 2 + len(expected_tail) or adapting.shape[0] != batch
                or adapting.shape[1] not in k_channels_ok
                or tuple(adapting.shape[2:]) != expected_tail):
            raise ValueError(
                f"adapting has shape {tuple(adapting.shape)}, expected ({batch}, "
                f"{' or '.join(map(str, sorted(set(k_channels_ok))))}, *{tuple(kernel_size)}, "
                f"*{tuple(out_size)}) = (batch, kernel channels, *kernel_size, *output size)")
        check_finite(adapting, "adapting")
        return None, adapting
    if guide is None:
        raise ValueError("guide is required (or pass a precomputed adapting kernel as adapting=)")
    guide = check_float_array(guide, "guide")
    if guide.ndim != 2 + len(guide_size) or guide.shape[0] != batch or \
            tuple(guide.shape[2:]) != tuple(guide_size):
        raise ValueError(
            f"guide has shape {tuple(guide.shape)}, expected ({batch}, Cg, *{tuple(guide_size)}): "
            f"same batch as input and the spatial size the operation needs")
    check_finite(guide, "guide")
    return guide, None


# --------------------------------------------------------------------------- planners
def _plan_pac(input, guide, weight, bias, *, stride, padding, dilation, groups, kernel, alpha,
              lam, asym, normalize, mask, shared, adapting, channel_wise, engine, transposed,
              output_padding=0):
    input, guide, weight, bias, adapting, mask = map(_unwrap, (input, guide, weight, bias,
                                                               adapting, mask))
    weight = check_float_array(weight, "weight")
    nd = weight.ndim - 2
    if nd not in (1, 2, 3):
        raise ValueError(
            f"weight has shape {tuple(weight.shape)}: it must be "
            f"({'Cin, Cout/groups' if transposed else 'Cout, Cin/groups'}, *kernel_size) with 1, 2 "
            f"or 3 spatial dims")
    input = check_float_array(input, "input")
    if input.ndim != nd + 2:
        raise ValueError(
            f"input has shape {tuple(input.shape)} ({input.ndim} dims) but weight "
            f"{tuple(weight.shape)} has {nd} spatial dim(s): input must be (B, C, "
            f"{', '.join('S%d' % i for i in range(nd))}); add a batch axis with input[None] if "
            f"it is missing")
    if not isinstance(groups, numbers.Integral) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups={groups!r} must be a positive int")
    groups = int(groups)
    _check_nonempty(input, "input")
    B, cin = input.shape[:2]
    in_size = tuple(input.shape[2:])
    ksize = tuple(weight.shape[2:])
    _odd_kernel(ksize, "weight's kernel size")
    stride = spatial_tuple(stride, nd, "stride", minimum=1)
    padding = spatial_tuple(padding, nd, "padding", minimum=0)
    dilation = spatial_tuple(dilation, nd, "dilation", minimum=1)

    if shared:
        if tuple(weight.shape[:2]) != (1, 1):
            raise ValueError(f"shared=True needs one (1, 1, *k) filter, got weight "
                             f"{tuple(weight.shape)}")
        if groups != 1:
            raise ValueError("shared=True already applies the filter to each channel separately; "
                             "leave groups=1")
        cout = cin
        eng_groups = cin
    else:
        if cin % groups:
            raise ValueError(f"input has {cin} channels, not divisible by groups={groups}; "
                             f"choose groups dividing {cin}")
        if transposed:
            if weight.shape[0] != cin:
                raise ValueError(f"weight {tuple(weight.shape)} must be (Cin={cin}, "
                                 f"Cout/groups, *k) for the transposed op")
            cout = weight.shape[1] * groups
        else:
            cout = weight.shape[0]
            if cout % groups:
                raise ValueError(f"weight has {cout} output channels, not divisible by "
                                 f"groups={groups}")
            if weight.shape[1] != cin // groups:
                raise ValueError(f"weight {tuple(weight.shape)} must be (Cout, Cin/groups="
                                 f"{cin // groups}, *k) for input with {cin} channels and "
                                 f"groups={groups}")
        eng_groups = groups

    if transposed:
        output_padding = spatial_tuple(output_padding, nd, "output_padding", minimum=0)
        _check_output_padding(output_padding, stride, dilation)
        out_size = conv_transpose_output_size(in_size, ksize, stride, padding, dilation,
                                              output_padding)
        _check_out_size(out_size, in_size, "padding")
        geom = Geometry(ksize, stride, padding, dilation, in_size, out_size, True, output_padding)
    else:
        out_size = conv_output_size(in_size, ksize, stride, padding, dilation)
        _check_out_size(out_size, in_size, "dilated kernel")
        geom = Geometry(ksize, stride, padding, dilation, in_size, out_size)

    if bias is not None:
        bias = check_float_array(bias, "bias")
        check_shape(bias, "bias", (cout,), "one value per output channel")

    plain = guide is None and adapting is None and kernel is None
    if plain:
        spec, pshapes = None, {}
    else:
        guide, adapting = _resolve_guide_or_kernel(
            guide, adapting, (kernel or "gaussian", alpha, lam, asym, normalize, mask,
                              channel_wise),
            batch=B, guide_size=geom.guide_size, k_channels_ok=(1, cin), kernel_size=ksize,
            out_size=out_size, dtype_arrays=None)
        if guide is not None:
            cg = guide.shape[1]
            if channel_wise and cg != cin:
                raise ValueError(f"channel_wise=True needs one guide channel per input channel: "
                                 f"guide has {cg}, input has {cin}")
            spec, pshapes = _kernel_spec(kernel or "gaussian", alpha, lam, asym, normalize,
                                         channel_wise, cg, None)
            mask = _check_mask(mask, B, in_size, None)
        else:
            spec, pshapes = None, {}
    dtype = common_float_dtype(input, guide, weight, bias, adapting, mask)
    input, guide, weight, bias, adapting, mask = (_contig(a, dtype) for a in
                                                  (input, guide, weight, bias, adapting, mask))
    user_weight_shape = tuple(weight.shape)
    if shared:
        xp = array_module(weight)
        eng_weight = xp.ascontiguousarray(xp.broadcast_to(weight, (cin, 1) + ksize))
    elif transposed:
        eng_weight = _transposed_weight_to_engine(weight, groups)
    else:
        eng_weight = weight
    eng = select_engine([input, guide, eng_weight, bias, adapting, mask], engine)
    wrt = ["input", "weight"] + (["bias"] if bias is not None else [])
    if adapting is not None:
        wrt.append("adapting")
    elif guide is not None:
        wrt.append("guide")
        if spec.kind == "inverse":
            wrt += ["alpha", "lam"]
    return _Plan(eng, input, eng_weight, bias, geom, eng_groups, K=adapting, guide=guide,
                 spec=spec, mask=mask, shared=shared, transposed=transposed,
                 user_weight_shape=user_weight_shape, param_shapes=pshapes,
                 wrt_allowed=tuple(wrt))


def _plan_pool(input, guide, kernel_size, *, stride, padding, dilation, kernel, alpha, lam, asym,
               normalize, channel_wise, mask, adapting, engine):
    input = check_float_array(_unwrap(input), "input")
    _check_nonempty(input, "input")
    nd = input.ndim - 2
    if nd not in (1, 2, 3):
        raise ValueError(f"input has shape {tuple(input.shape)}: it must be (B, C, *spatial) "
                         f"with 1, 2 or 3 spatial dims")
    ksize = spatial_tuple(kernel_size, nd, "kernel_size", minimum=1)
    _odd_kernel(ksize)
    cin = input.shape[1]
    weight = np.ones((cin, 1) + ksize, dtype=input.dtype)
    if array_module(input) is not np:
        weight = array_module(input).asarray(weight)
    plan = _plan_pac(input, guide, weight, None, stride=stride, padding=padding,
                     dilation=dilation, groups=cin, kernel=kernel, alpha=alpha, lam=lam,
                     asym=asym, normalize=normalize, mask=mask, shared=False, adapting=adapting,
                     channel_wise=channel_wise, engine=engine, transposed=False)
    plan.wrt_allowed = tuple(w for w in plan.wrt_allowed if w != "weight")
    return plan


# --------------------------------------------------------------------------- public ops
_KERNEL_DOC = """
    kernel : {'gaussian', 'laplacian', 'inverse'}, optional
        Adapting kernel family (see :mod:`pacnd._kernelspec`): ``exp(-d2/2)``,
        ``exp(-sqrt(d2 + 1e-4))`` or ``alpha + (d2 + 1e-4)**(lam/2)``.
    alpha, lam : float or array of shape (Ck,), optional
        Parameters of the ``'inverse'`` kernel (defaults 0 and -1).
    asym : bool, optional
        Use ``relu(f_n - f_0)`` instead of ``f_n - f_0``.
    normalize : bool, optional
        Divide K by its sum over the in-image (and unmasked) taps.
    mask : ndarray (B, 1, *input_spatial), optional
        Validity of input pixels; a tap on an invalid pixel gets K = 0.
    engine : {None, 'numpy', 'numba', 'cuda', 'cupy'}, optional
        Compute engine; ``None`` uses the configured default for the array type."""


def pac_conv(input, guide, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1,
             kernel="gaussian", alpha=None, lam=None, asym=False, normalize=False, mask=None,
             shared=False, adapting=None, channel_wise=False, engine=None):
    """Pixel-adaptive convolution.

    ``out[b,o,y] = bias[o] + sum_{c,t} W[o,c,t] K[b,t,y] x_pad[b,c,y*s + t*d]``
    with ``K`` computed from ``guide`` (or given as ``adapting``).

    Parameters
    ----------
    input : ndarray (B, Cin, *S)
        Input with 1, 2 or 3 spatial dims.
    guide : ndarray (B, Cg, *S) or None
        Guide features at input resolution; ``None`` when ``adapting`` is given.
    weight : ndarray (Cout, Cin/groups, *k)
        Spatially shared filter (odd kernel sizes); ``(1, 1, *k)`` with ``shared``.
    bias : ndarray (Cout,), optional
    stride, padding, dilation : int or tuple of int
    groups : int
        Channel groups as in a grouped convolution.
    shared : bool
        Apply one ``(1, 1, *k)`` filter to every channel separately.
    adapting : ndarray (B, 1 or Cin, *k, *out), optional
        A precomputed adapting kernel (from :func:`adapting_kernel`).
    channel_wise : bool
        One K per guide channel (needs ``Cg == Cin``).
    """ + _KERNEL_DOC + """

    Returns
    -------
    out : ndarray (B, Cout, *out)
    """
    return _plan_pac(input, guide, weight, bias, stride=stride, padding=padding,
                     dilation=dilation, groups=groups, kernel=kernel, alpha=alpha, lam=lam,
                     asym=asym, normalize=normalize, mask=mask, shared=shared, adapting=adapting,
                     channel_wise=channel_wise, engine=engine, transposed=False).forward()


def pac_conv_vjp(grad_output, input, guide, weight, bias=None, *, stride=1, padding=0,
                 dilation=1, groups=1, kernel="gaussian", alpha=None, lam=None, asym=False,
                 normalize=False, mask=None, shared=False, adapting=None, channel_wise=False,
                 engine=None, wrt=("input", "weight", "bias", "guide")):
    """Vector-Jacobian product of :func:`pac_conv`.

    Parameters are those of :func:`pac_conv`, plus ``grad_output`` (the
    upstream gradient, shaped like the output) and ``wrt``: the names to
    differentiate with respect to, among ``'input'``, ``'weight'``, ``'bias'``,
    ``'guide'``, ``'adapting'`` (when K was given), ``'alpha'``, ``'lam'``.
    Only those are computed.

    Returns
    -------
    dict
        Name -> gradient, each shaped like the argument it belongs to.
    """
    plan = _plan_pac(input, guide, weight, bias, stride=stride, padding=padding,
                     dilation=dilation, groups=groups, kernel=kernel, alpha=alpha, lam=lam,
                     asym=asym, normalize=normalize, mask=mask, shared=shared, adapting=adapting,
                     channel_wise=channel_wise, engine=engine, transposed=False)
    return plan.vjp(grad_output, _default_wrt(wrt, plan))


def _default_wrt(wrt, plan):
    if wrt == ("input", "weight", "bias", "guide"):  # the default: keep what applies
        return tuple(w for w in wrt if w in plan.wrt_allowed)
    return wrt


def pac_conv_transpose(input, guide, weight, bias=None, *, stride=1, padding=0,
                       output_padding=0, dilation=1, groups=1, kernel="gaussian", alpha=None,
                       lam=None, asym=False, normalize=False, mask=None, shared=False,
                       adapting=None, channel_wise=False, engine=None):
    """Transposed pixel-adaptive convolution (learnable guided upsampling).

    The guide lives at the **output** resolution; K is computed there with
    stride 1 and "same" padding. The result equals inserting ``stride - 1``
    zeros between input samples, padding by ``(k-1)*d - p`` (plus
    ``output_padding`` after) and correlating with ``W[c, o]`` **unflipped** —
    the reference implementation's convention, so its weights load as they
    are. With a constant guide this is ``conv_transpose`` with the weight
    flipped. Nothing zero-inserted is ever materialised.

    Parameters
    ----------
    input : ndarray (B, Cin, *S)
    guide : ndarray (B, Cg, *S_out) or None
        Guide at output resolution ``S_out = (S-1)*s - 2p + d*(k-1) + 1 + output_padding``.
    weight : ndarray (Cin, Cout/groups, *k)
    bias : ndarray (Cout,), optional
    stride, padding, output_padding, dilation : int or tuple of int
    groups, shared, adapting, channel_wise
        As in :func:`pac_conv`.
    """ + _KERNEL_DOC + """

    Returns
    -------
    out : ndarray (B, Cout, *S_out)
    """
    return _plan_pac(input, guide, weight, bias, stride=stride, padding=padding,
                     dilation=dilation, groups=groups, kernel=kernel, alpha=alpha, lam=lam,
                     asym=asym, normalize=normalize, mask=mask, shared=shared, adapting=adapting,
                     channel_wise=channel_wise, engine=engine, transposed=True,
                     output_padding=output_padding).forward()


def pac_conv_transpose_vjp(grad_output, input, guide, weight, bias=None, *, stride=1, padding=0,
                           output_padding=0, dilation=1, groups=1, kernel="gaussian",
                           alpha=None, lam=None, asym=False, normalize=False, mask=None,
                           shared=False, adapting=None, channel_wise=False, engine=None,
                           wrt=("input", "weight", "bias", "guide")):
    """Vector-Jacobian product of :func:`pac_conv_transpose` (see :func:`pac_conv_vjp`)."""
    plan = _plan_pac(input, guide, weight, bias, stride=stride, padding=padding,
                     dilation=dilation, groups=groups, kernel=kernel, alpha=alpha, lam=lam,
                     asym=asym, normalize=normalize, mask=mask, shared=shared, adapting=adapting,
                     channel_wise=channel_wise, engine=engine, transposed=True,
                     output_padding=output_padding)
    return plan.vjp(grad_output, _default_wrt(wrt, plan))


def pac_pool(input, guide, kernel_size, *, stride=1, padding=0, dilation=1, kernel="gaussian",
             alpha=None, lam=None, asym=False, normalize=False, channel_wise=False, mask=None,
             adapting=None, engine=None):
    """Pixel-adaptive pooling: a K-weighted sum over each window.

    ``out[b,c,y] = sum_t K[b,c|0,t,y] x_pad[b,c,y*s + t*d]``; with
    ``normalize`` it is a K-weighted average (and with a constant guide,
    average pooling that excludes padding). Detail-preserving pooling is
    ``kernel='inverse'`` with ``normalize=True``.

    Parameters
    ----------
    input : ndarray (B, C, *S)
    guide : ndarray (B, Cg, *S) or None
        ``Cg == C`` with ``channel_wise``.
    kernel_size : int or tuple of int (odd)
    stride, padding, dilation : int or tuple of int
    channel_wise : bool
        One K per channel.
    adapting : ndarray (B, 1 or C, *k, *out), optional
        Precomputed K instead of a guide.
    """ + _KERNEL_DOC + """

    Returns
    -------
    out : ndarray (B, C, *out)
    """
    return _plan_pool(input, guide, kernel_size, stride=stride, padding=padding,
                      dilation=dilation, kernel=kernel, alpha=alpha, lam=lam, asym=asym,
                      normalize=normalize, channel_wise=channel_wise, mask=mask,
                      adapting=adapting, engine=engine).forward()


def pac_pool_vjp(grad_output, input, guide, kernel_size, *, stride=1, padding=0, dilation=1,
                 kernel="gaussian", alpha=None, lam=None, asym=False, normalize=False,
                 channel_wise=False, mask=None, adapting=None, engine=None,
                 wrt=("input", "guide")):
    """Vector-Jacobian product of :func:`pac_pool`: ``wrt`` among ``'input'``,
    ``'guide'``, ``'adapting'``, ``'alpha'``, ``'lam'``."""
    plan = _plan_pool(input, guide, kernel_size, stride=stride, padding=padding,
                      dilation=dilation, kernel=kernel, alpha=alpha, lam=lam, asym=asym,
                      normalize=normalize, channel_wise=channel_wise, mask=mask,
                      adapting=adapting, engine=engine)
    if tuple(wrt) == ("input", "guide"):
        wrt = tuple(w for w in wrt if w in plan.wrt_allowed)
    return plan.vjp(grad_output, wrt)


def conv(input, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1, engine=None):
    """Plain convolution (cross-correlation) on the PAC engines.

    Parameters
    ----------
    input : ndarray (B, Cin, *S)
    weight : ndarray (Cout, Cin/groups, *k), odd k
    bias : ndarray (Cout,), optional
    stride, padding, dilation : int or tuple of int
    groups : int

    Returns
    -------
    out : ndarray (B, Cout, *out)
    """
    return _plan_pac(input, None, weight, bias, stride=stride, padding=padding,
                     dilation=dilation, groups=groups, kernel=None, alpha=None, lam=None,
                     asym=False, normalize=False, mask=None, shared=False, adapting=None,
                     channel_wise=False, engine=engine, transposed=False).forward()


def conv_vjp(grad_output, input, weight, bias=None, *, stride=1, padding=0, dilation=1,
             groups=1, engine=None, wrt=("input", "weight", "bias")):
    """Vector-Jacobian product of :func:`conv`."""
    plan = _plan_pac(input, None, weight, bias, stride=stride, padding=padding,
                     dilation=dilation, groups=groups, kernel=None, alpha=None, lam=None,
                     asym=False, normalize=False, mask=None, shared=False, adapting=None,
                     channel_wise=False, engine=engine, transposed=False)
    if tuple(wrt) == ("input", "weight", "bias"):
        wrt = tuple(w for w in wrt if w in plan.wrt_allowed)
    return plan.vjp(grad_output, wrt)


def conv_transpose(input, weight, bias=None, *, stride=1, padding=0, output_padding=0,
                   dilation=1, groups=1, engine=None):
    """Plain transposed convolution with the reference PAC^T weight convention.

    The weight (Cin, Cout/groups, *k) is applied **unflipped** to the
    zero-inserted input (as in :func:`pac_conv_transpose`), so this equals
    PyTorch's ``conv_transpose`` with the weight flipped in every spatial dim.
    """
    return _plan_pac(input, None, weight, bias, stride=stride, padding=padding,
                     dilation=dilation, groups=groups, kernel=None, alpha=None, lam=None,
                     asym=False, normalize=False, mask=None, shared=False, adapting=None,
                     channel_wise=False, engine=engine, transposed=True,
                     output_padding=output_padding).forward()


def conv_transpose_vjp(grad_output, input, weight, bias=None, *, stride=1, padding=0,
                       output_padding=0, dilation=1, groups=1, engine=None,
                       wrt=("input", "weight", "bias")):
    """Vector-Jacobian product of :func:`conv_transpose`."""
    plan = _plan_pac(input, None, weight, bias, stride=stride, padding=padding,
                     dilation=dilation, groups=groups, kernel=None, alpha=None, lam=None,
                     asym=False, normalize=False, mask=None, shared=False, adapting=None,
                     channel_wise=False, engine=engine, transposed=True,
                     output_padding=output_padding)
    if tuple(wrt) == ("input", "weight", "bias"):
        wrt = tuple(w for w in wrt if w in plan.wrt_allowed)
    return plan.vjp(grad_output, wrt)


# --------------------------------------------------------------------------- adapting kernel
def _plan_kernel(guide, kernel_size, *, stride, padding, dilation, kernel, alpha, lam, asym,
                 normalize, mask, channel_wise, transposed, output_padding, engine):
    guide = check_float_array(_unwrap(guide), "guide")
    _check_nonempty(guide, "guide")
    nd = guide.ndim - 2
    if nd not in (1, 2, 3):
        raise ValueError(f"guide has shape {tuple(guide.shape)}: it must be (B, Cg, *spatial) "
                         f"with 1, 2 or 3 spatial dims")
    check_finite(guide, "guide")
    ksize = spatial_tuple(kernel_size, nd, "kernel_size", minimum=1)
    _odd_kernel(ksize)
    stride = spatial_tuple(stride, nd, "stride", minimum=1)
    padding = spatial_tuple(padding, nd, "padding", minimum=0)
    dilation = spatial_tuple(dilation, nd, "dilation", minimum=1)
    size = tuple(guide.shape[2:])
    B, cg = guide.shape[:2]
    if transposed:
        output_padding = spatial_tuple(output_padding, nd, "output_padding", minimum=0)
        _check_output_padding(output_padding, stride, dilation)
        in_size = tuple((o - op - 1 - (k - 1) * d + 2 * p) // s + 1 for o, k, s, p, op, d in
                        zip(size, ksize, stride, padding, output_padding, dilation))
        if any(n < 1 for n in in_size) or conv_transpose_output_size(
                in_size, ksize, stride, padding, dilation, output_padding) != size:
            raise ValueError(
                f"guide spatial size {size} is not an output size of a transposed op with "
                f"kernel_size={ksize}, stride={stride}, padding={padding}, dilation={dilation}, "
                f"output_padding={output_padding}; adjust output_padding")
        geom = Geometry(ksize, stride, padding, dilation, in_size, size, True, output_padding)
    else:
        if output_padding not in (0, None) and any(spatial_tuple(output_padding, nd,
                                                                 "output_padding")):
            raise ValueError("output_padding only applies with transposed=True")
        out_size = conv_output_size(size, ksize, stride, padding, dilation)
        _check_out_size(out_size, size, "dilated kernel")
        geom = Geometry(ksize, stride, padding, dilation, size, out_size)
    spec, pshapes = _kernel_spec(kernel, alpha, lam, asym, normalize, channel_wise, cg, None)
    mask = _check_mask(_unwrap(mask), B, geom.in_size, None)
    dtype = common_float_dtype(guide, mask)
    guide, mask = _contig(guide, dtype), _contig(mask, dtype)
    eng = select_engine([guide, mask], engine)
    return eng, guide, geom, spec, mask, pshapes


def adapting_kernel(guide, kernel_size, *, stride=1, padding=0, dilation=1, kernel="gaussian",
                    alpha=None, lam=None, asym=False, normalize=False, mask=None,
                    channel_wise=False, transposed=False, output_padding=0, engine=None):
    """The adapting kernel K of a PAC operation, computed from guide features.

    Parameters
    ----------
    guide : ndarray (B, Cg, *S)
        Guide features; for ``transposed=True`` at the transposed op's output
        resolution.
    kernel_size : int or tuple of int (odd)
    stride, padding, dilation : int or tuple of int
        Of the operation K is for (a transposed op's K always uses stride 1
        and "same" padding; its stride/padding/output_padding define which
        taps land on real input samples for ``normalize`` and ``mask``).
    channel_wise : bool
        One K per guide channel instead of summing the distance over channels.
    transposed : bool
    output_padding : int or tuple of int
    """ + _KERNEL_DOC + """

    Returns
    -------
    K : ndarray (B, 1 or Cg, *kernel_size, *out)
    """
    eng, guide, geom, spec, mask, _ = _plan_kernel(
        guide, kernel_size, stride=stride, padding=padding, dilation=dilation, kernel=kernel,
        alpha=alpha, lam=lam, asym=asym, normalize=normalize, mask=mask,
        channel_wise=channel_wise, transposed=transposed, output_padding=output_padding,
        engine=engine)
    return eng.adapting_kernel(guide, geom, spec, mask)


def adapting_kernel_vjp(grad_kernel, guide, kernel_size, *, stride=1, padding=0, dilation=1,
                        kernel="gaussian", alpha=None, lam=None, asym=False, normalize=False,
                        mask=None, channel_wise=False, transposed=False, output_padding=0,
                        engine=None, wrt=("guide",)):
    """Vector-Jacobian product of :func:`adapting_kernel`: ``wrt`` among
    ``'guide'``, ``'alpha'``, ``'lam'``."""
    eng, guide, geom, spec, mask, pshapes = _plan_kernel(
        guide, kernel_size, stride=stride, padding=padding, dilation=dilation, kernel=kernel,
        alpha=alpha, lam=lam, asym=asym, normalize=normalize, mask=mask,
        channel_wise=channel_wise, transposed=transposed, output_padding=output_padding,
        engine=engine)
    allowed = ("guide", "alpha", "lam") if spec.kind == "inverse" else ("guide",)
    wrt = _check_wrt(wrt, allowed)
    ck = guide.shape[1] if channel_wise else 1
    grad_kernel = check_float_array(grad_kernel, "grad_kernel")
    check_shape(grad_kernel, "grad_kernel",
                (guide.shape[0], ck) + tuple(geom.kernel_size) + tuple(geom.out_size),
                "it must have the shape of the adapting kernel")
    grad_kernel = _contig(grad_kernel, guide.dtype)
    res = eng.adapting_kernel_vjp(grad_kernel, guide, geom, spec, mask, needs=wrt)
    xp = array_module(guide)
    for p in ("alpha", "lam"):
        if p in res:
            res[p] = _param_grad_back(res[p], pshapes.get(p, ()), xp)
    return {k: res[k] for k in wrt}
