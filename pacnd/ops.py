"""Array-level PAC operations and their vector-Jacobian products.

Every call takes NumPy (or CuPy) arrays in channels-first layout
``(B, C, *spatial)`` with 1, 2 or 3 spatial dims, validates them, resolves the
geometry and hands the work to the engine chosen by :mod:`pacnd._dispatch`
(the checks and that planning live in :mod:`pacnd._plan`).
The result has the common float dtype of the inputs (float32 unless one of
them is float64).

Conventions follow the reference implementation (NVlabs/pacnet), see
``DESIGN.md`` section 1: cross-correlation, zero padding of input and guide,
the centre feature at the window centre, transposed weights applied unflipped.
"""

from __future__ import annotations

from ._plan import (_check_wrt, _contig, _default_wrt, _param_grad_back, _plan_kernel, _plan_pac,
                    _plan_pool)
from ._validate import array_module, check_float_array, check_shape

__all__ = [
    "adapting_kernel", "adapting_kernel_vjp",
    "pac_conv", "pac_conv_vjp",
    "pac_conv_transpose", "pac_conv_transpose_vjp",
    "pac_pool", "pac_pool_vjp",
    "conv", "conv_vjp", "conv_transpose", "conv_transpose_vjp",
]


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
