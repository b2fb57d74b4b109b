"""Validation and planning behind the array-level PAC operations (:mod:`pacnd.ops`).

Each public op of :mod:`pacnd.ops` turns its arguments into a :class:`_Plan`
here: arrays checked (dtype, shape, finiteness) and made contiguous in their
common float dtype, the geometry resolved (:class:`pacnd._geometry.Geometry`),
the adapting-kernel family fixed (:class:`pacnd._kernelspec.KernelSpec`) and
the engine chosen (:func:`pacnd._dispatch.select_engine`, the one place that
picks it). The plan runs the engine's forward or vjp and maps gradients back
to the caller's shapes.
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


def _spatial_array(a, name, layout):
    """A non-empty float array ``layout`` with 1, 2 or 3 spatial dims, and that count."""
    a = check_float_array(_unwrap(a), name)
    _check_nonempty(a, name)
    nd = a.ndim - 2
    if nd not in (1, 2, 3):
        raise ValueError(f"{name} has shape {tuple(a.shape)}: it must be {layout} with 1, 2 "
                         f"or 3 spatial dims")
    return a, nd


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
                gw = _swap_group_axes(gw, self.groups)
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


def _swap_group_axes(w, groups):
    """(G*a, b, *k) -> (G*b, a, *k), swapping the two channel axes within each of the
    ``groups`` groups: a transposed op's weight (Cin, Cout/g, *k) to the engines' layout
    (Cout, Cin/g, *k), and that layout's gradient back (the map is its own inverse)."""
    xp = array_module(w)
    a = w.shape[0] // groups
    b = w.shape[1]
    k = w.shape[2:]
    w = xp.swapaxes(w.reshape((groups, a, b) + k), 1, 2)
    return xp.ascontiguousarray(w.reshape((groups * b, a) + k))


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
        eng_weight = _swap_group_axes(weight, groups)
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
    input, nd = _spatial_array(input, "input", "(B, C, *spatial)")
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


def _default_wrt(wrt, plan):
    if wrt == ("input", "weight", "bias", "guide"):  # the default: keep what applies
        return tuple(w for w in wrt if w in plan.wrt_allowed)
    return wrt


# --------------------------------------------------------------------------- adapting kernel
def _plan_kernel(guide, kernel_size, *, stride, padding, dilation, kernel, alpha, lam, asym,
                 normalize, mask, channel_wise, transposed, output_padding, engine):
    guide, nd = _spatial_array(guide, "guide", "(B, Cg, *spatial)")
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
