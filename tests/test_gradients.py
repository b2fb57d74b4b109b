"""Every vector-Jacobian product against float64 central differences along
random directions (tests/gradcheck.py), for every op and option, on every CPU
engine. Sizes are tiny so that the finite differences stay cheap."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from gradcheck import check_backward
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import _realise, pac_problems

import pacnd


def _make(fn, vjp_fn, arg_names, engine, opts, extra_args=()):
    """Closures over a public op: inputs named in ``arg_names`` are passed
    positionally (missing ones as None), any other input by keyword."""
    def split(a):
        args = [a.get(n) for n in arg_names] + list(extra_args)
        kw = {**opts, **{n: v for n, v in a.items() if n not in arg_names}}
        return args, kw

    def f(**a):
        args, kw = split(a)
        return fn(*args, engine=engine, **kw)

    def vjp(u, wrt, **a):
        args, kw = split(a)
        return vjp_fn(u, *args, engine=engine, wrt=tuple(wrt), **kw)

    return f, vjp


def _randn(rng, shape, scale=1.0):
    return scale * rng.standard_normal(shape)


def _mask(rng, batch, size):
    m = (rng.random((batch, 1) + tuple(size)) > 0.3).astype(np.float64)
    m[..., 0] = 1.0  # keep every window non-empty for the small kernels used here
    return m


def _pac_inputs(rng, *, size, cin, cout, k, transposed=False, groups=1, shared=False, cg=2,
                bias=True, stride=1, padding=0, dilation=1, output_padding=0, batch=2,
                adapting=None, channel_wise=False, guide_scale=1.0):
    nd = len(size)
    ks = (k,) * nd if isinstance(k, int) else tuple(k)
    st = (stride,) * nd if isinstance(stride, int) else tuple(stride)
    pd = (padding,) * nd if isinstance(padding, int) else tuple(padding)
    dl = (dilation,) * nd if isinstance(dilation, int) else tuple(dilation)
    op = (output_padding,) * nd if isinstance(output_padding, int) else tuple(output_padding)
    if transposed:
        out = tuple((n - 1) * s - 2 * p + d * (kk - 1) + 1 + o
                    for n, s, p, d, kk, o in zip(size, st, pd, dl, ks, op))
        wshape = (cin, cout // groups) + ks
        gsize = out
    else:
        out = tuple((n + 2 * p - d * (kk - 1) - 1) // s + 1
                    for n, s, p, d, kk in zip(size, st, pd, dl, ks))
        wshape = (cout, cin // groups) + ks
        gsize = size
    if shared:
        wshape = (1, 1) + ks
    inputs = {"input": _randn(rng, (batch, cin) + tuple(size)),
              "weight": _randn(rng, wshape, 0.5)}
    if bias:
        inputs["bias"] = _randn(rng, (cout,))
    if adapting is not None:
        inputs["adapting"] = rng.uniform(0.2, 1.5, (batch, adapting) + ks + out)
    else:
        inputs["guide"] = _randn(rng, (batch, cin if channel_wise else cg) + tuple(gsize),
                                 guide_scale)
    return inputs, out


# --------------------------------------------------------------------------- pac_conv
PAC_CONV_CASES = {
    # id: (geometry / channel args, op options)
    "gauss_k3_p1": (dict(size=(5, 6), cin=2, cout=3, k=3, padding=1), {}),
    "gauss_norm_s2": (dict(size=(5, 6), cin=2, cout=2, k=3, padding=1, stride=2),
                      dict(normalize=True)),
    "gauss_no_bias": (dict(size=(5, 6), cin=2, cout=2, k=3, padding=1, bias=False), {}),
    "laplacian_dil2": (dict(size=(6, 6), cin=2, cout=2, k=3, padding=2, dilation=2),
                       dict(kernel="laplacian")),
    "laplacian_norm": (dict(size=(5, 6), cin=2, cout=2, k=3, padding=1),
                       dict(kernel="laplacian", normalize=True)),
    "inverse": (dict(size=(5, 6), cin=2, cout=2, k=3, padding=1),
                dict(kernel="inverse", alpha=0.3, lam=-1.0)),
    "inverse_asym": (dict(size=(5, 6), cin=2, cout=2, k=3, padding=1),
                     dict(kernel="inverse", alpha=0.1, lam=-2.0, asym=True)),
    "inverse_pos_lam_norm": (dict(size=(5, 6), cin=2, cout=2, k=3, padding=1),
                             dict(kernel="inverse", alpha=0.2, lam=1.0, normalize=True)),
    "inverse_param_arrays": (dict(size=(5, 6), cin=2, cout=2, k=3, padding=1),
                             dict(kernel="inverse", alpha=np.array([0.4]),
                                  lam=np.array([-1.5]))),
    "inverse_channel_wise": (dict(size=(5, 6), cin=2, cout=2, k=3, padding=1,
                                  channel_wise=True),
                             dict(kernel="inverse", channel_wise=True, normalize=True,
                                  alpha=np.array([0.3, 0.6]), lam=np.array([-1.0, 0.5]))),
    "inverse_channel_wise_asym": (dict(size=(5, 6), cin=2, cout=2, k=3, padding=1,
                                       channel_wise=True),
                                  dict(kernel="inverse", channel_wise=True, asym=True,
                                       alpha=np.array([0.3, 0.6]), lam=np.array([-1.0, -0.5]))),
    "gauss_channel_wise": (dict(size=(5, 6), cin=2, cout=3, k=3, padding=1, channel_wise=True),
                           dict(channel_wise=True)),
    "mask": (dict(size=(5, 6), cin=2, cout=2, k=3, padding=1), dict(mask=True)),
    "mask_norm": (dict(size=(5, 6), cin=2, cout=2, k=3, padding=1),
                  dict(mask=True, normalize=True)),
    "shared": (dict(size=(5, 6), cin=3, cout=3, k=3, padding=1, shared=True),
               dict(shared=True)),
    "groups2": (dict(size=(5, 6), cin=4, cout=6, k=3, padding=1, groups=2), dict(groups=2)),
    "groups2_norm_inverse": (dict(size=(5, 6), cin=4, cout=2, k=3, padding=1, groups=2),
                             dict(groups=2, normalize=True, kernel="inverse", alpha=0.5,
                                  lam=-1.0)),
    "depthwise": (dict(size=(5, 6), cin=3, cout=3, k=3, padding=1, groups=3), dict(groups=3)),
    "pad_beyond_reach": (dict(size=(5, 6), cin=2, cout=2, k=3, padding=3), {}),
    "pad_beyond_reach_norm": (dict(size=(5, 6), cin=2, cout=2, k=3, padding=(3, 2), stride=2),
                              dict(normalize=True)),
    "pad0": (dict(size=(5, 6), cin=2, cout=2, k=3, padding=0), {}),
    "k5_pad1_offcentre": (dict(size=(6, 7), cin=2, cout=2, k=5, padding=1), {}),
    "anisotropic": (dict(size=(7, 6), cin=2, cout=2, k=(3, 5), padding=(2, 1), stride=(1, 2),
                         dilation=(2, 1)), dict(normalize=True)),
    "stride3_dil2": (dict(size=(8, 9), cin=2, cout=2, k=3, padding=2, stride=3, dilation=2), {}),
    "adapting_1ch": (dict(size=(5, 6), cin=2, cout=2, k=3, padding=1, adapting=1), {}),
    "adapting_cin_ch": (dict(size=(5, 6), cin=2, cout=3, k=3, padding=1, stride=2, adapting=2),
                        {}),
    "1d": (dict(size=(9,), cin=2, cout=3, k=5, padding=2, stride=2), {}),
    "1d_inverse_norm": (dict(size=(8,), cin=2, cout=2, k=3, padding=1, dilation=2),
                        dict(kernel="inverse", alpha=0.2, lam=-1.0, normalize=True)),
    "3d": (dict(size=(3, 4, 5), cin=2, cout=2, k=3, padding=1), {}),
    "3d_laplacian_norm_s2": (dict(size=(4, 4, 5), cin=2, cout=2, k=3, padding=1, stride=2),
                             dict(kernel="laplacian", normalize=True)),
    "3d_mask_groups": (dict(size=(3, 4, 4), cin=2, cout=2, k=3, padding=1, groups=2),
                       dict(groups=2, mask=True, normalize=True)),
}


def _split_params(opts, rng, batch, size):
    """Move differentiable alpha/lam into the inputs; realise ``mask=True``."""
    opts = dict(opts)
    params = {}
    if opts.get("kernel") == "inverse":
        for p in ("alpha", "lam"):
            params[p] = np.asarray(opts.pop(p), dtype=np.float64)
    if opts.get("mask") is True:
        opts["mask"] = _mask(rng, batch, size)
    return opts, params


@pytest.mark.parametrize("case", list(PAC_CONV_CASES))
def test_pac_conv_gradients(case, engine, rng):
    geo, opts = PAC_CONV_CASES[case]
    inputs, _ = _pac_inputs(rng, **geo)
    opts, params = _split_params(opts, rng, 2, geo["size"])
    inputs.update(params)
    for key in ("stride", "padding", "dilation"):
        if key in geo:
            opts[key] = geo[key]
    f, vjp = _make(pacnd.pac_conv, pacnd.pac_conv_vjp, ("input", "guide", "weight", "bias"),
                   engine, opts)
    check_backward(f, vjp, inputs, seed=zlib.crc32(case.encode()))


# --------------------------------------------------------------------------- pac_conv_transpose
PAC_CONVT_CASES = {
    "k3_s2_p1_op1_norm": (dict(size=(3, 4), cin=2, cout=3, k=3, stride=2, padding=1,
                               output_padding=1), dict(normalize=True)),
    "k3_s3_p1_op2": (dict(size=(3, 3), cin=2, cout=2, k=3, stride=3, padding=1,
                          output_padding=2), {}),
    "k5_s3_p1_norm": (dict(size=(2, 3), cin=2, cout=2, k=5, stride=3, padding=1),
                      dict(normalize=True)),
    "k5_s2_p2_op1_laplacian": (dict(size=(3, 3), cin=2, cout=2, k=5, stride=2, padding=2,
                                    output_padding=1), dict(kernel="laplacian")),
    "dil2_op1": (dict(size=(3, 4), cin=2, cout=2, k=3, stride=2, padding=2, dilation=2,
                      output_padding=1), {}),
    "op_ge_stride_lt_dil": (dict(size=(4, 4), cin=2, cout=2, k=3, stride=1, padding=1,
                                 dilation=2, output_padding=1), dict(normalize=True)),
    "pad_beyond_reach": (dict(size=(4, 5), cin=2, cout=2, k=3, stride=2, padding=3), {}),
    "inverse_asym": (dict(size=(3, 3), cin=2, cout=2, k=3, stride=2, padding=1,
                          output_padding=1),
                     dict(kernel="inverse", alpha=0.1, lam=-1.0, asym=True)),
    "inverse_channel_wise_norm": (dict(size=(3, 3), cin=2, cout=2, k=3, stride=2, padding=1,
                                       channel_wise=True),
                                  dict(kernel="inverse", channel_wise=True, normalize=True,
                                       alpha=np.array([0.3, 0.2]), lam=np.array([-1.0, 1.0]))),
    "groups2": (dict(size=(3, 3), cin=4, cout=2, k=3, stride=2, padding=1, groups=2),
                dict(groups=2)),
    "shared": (dict(size=(3, 3), cin=2, cout=2, k=3, stride=2, padding=1, shared=True),
               dict(shared=True)),
    "mask_norm": (dict(size=(3, 4), cin=2, cout=2, k=3, stride=2, padding=1,
                       output_padding=1), dict(mask=True, normalize=True)),
    "adapting": (dict(size=(3, 3), cin=2, cout=2, k=3, stride=2, padding=1, adapting=2), {}),
    "anisotropic": (dict(size=(3, 4), cin=2, cout=2, k=(3, 5), stride=(2, 3), padding=(1, 2),
                         output_padding=(1, 0)), dict(normalize=True)),
    "1d": (dict(size=(4,), cin=2, cout=2, k=5, stride=3, padding=2, output_padding=1), {}),
    "3d": (dict(size=(2, 3, 2), cin=2, cout=2, k=3, stride=2, padding=1, output_padding=1),
           dict(normalize=True)),
}


@pytest.mark.parametrize("case", list(PAC_CONVT_CASES))
def test_pac_conv_transpose_gradients(case, engine, rng):
    geo, opts = PAC_CONVT_CASES[case]
    inputs, _ = _pac_inputs(rng, transposed=True, **geo)
    opts, params = _split_params(opts, rng, 2, geo["size"])
    inputs.update(params)
    for key in ("stride", "padding", "dilation", "output_padding"):
        if key in geo:
            opts[key] = geo[key]
    f, vjp = _make(pacnd.pac_conv_transpose, pacnd.pac_conv_transpose_vjp,
                   ("input", "guide", "weight", "bias"), engine, opts)
    check_backward(f, vjp, inputs, seed=zlib.crc32(case.encode()))


# --------------------------------------------------------------------------- pac_pool
PAC_POOL_CASES = {
    "gauss_k3_s2": (dict(size=(5, 6), k=3, stride=2, padding=1), {}),
    "gauss_norm": (dict(size=(5, 6), k=3, padding=1), dict(normalize=True)),
    "channel_wise": (dict(size=(5, 6), k=3, padding=1, channel_wise=True),
                     dict(channel_wise=True)),
    "channel_wise_norm_laplacian": (dict(size=(5, 6), k=3, padding=1, stride=2,
                                         channel_wise=True),
                                    dict(channel_wise=True, normalize=True,
                                         kernel="laplacian")),
    "dpp": (dict(size=(6, 6), k=3, padding=1, stride=2),
            dict(kernel="inverse", alpha=0.2, lam=1.0, normalize=True)),
    "dpp_asym_channel_wise": (dict(size=(6, 6), k=3, padding=1, stride=2, channel_wise=True),
                              dict(kernel="inverse", alpha=np.array([0.2, 0.5]),
                                   lam=np.array([1.0, 0.5]), asym=True, normalize=True,
                                   channel_wise=True)),
    "dpp_channel_wise_scalar_params": (dict(size=(5, 6), k=3, padding=1, channel_wise=True),
                                       dict(kernel="inverse", alpha=0.3, lam=np.array([0.5]),
                                            normalize=True, channel_wise=True)),
    "mask_norm": (dict(size=(5, 6), k=3, padding=1), dict(mask=True, normalize=True)),
    "adapting": (dict(size=(5, 6), k=3, padding=1, adapting=2), {}),
    "pad_beyond_reach": (dict(size=(4, 5), k=3, padding=2, dilation=1), dict(normalize=True)),
    "1d": (dict(size=(9,), k=5, stride=2, padding=2), dict(normalize=True)),
    "3d": (dict(size=(3, 4, 4), k=3, stride=2, padding=1), {}),
}


@pytest.mark.parametrize("case", list(PAC_POOL_CASES))
def test_pac_pool_gradients(case, engine, rng):
    geo, opts = PAC_POOL_CASES[case]
    geo = dict(geo)
    k = geo.pop("k")
    inputs, _ = _pac_inputs(rng, cin=2, cout=2, k=k, bias=False, **geo)
    del inputs["weight"]
    opts, params = _split_params(opts, rng, 2, geo["size"])
    inputs.update(params)
    for key in ("stride", "padding", "dilation"):
        if key in geo:
            opts[key] = geo[key]
    f, vjp = _make(pacnd.pac_pool, pacnd.pac_pool_vjp, ("input", "guide"), engine, opts,
                   extra_args=(k,))
    check_backward(f, vjp, inputs, seed=zlib.crc32(case.encode()))


# --------------------------------------------------------------------------- adapting_kernel
KERNEL_CASES = {
    "gauss": (dict(size=(5, 6), k=3, padding=1), {}),
    "gauss_norm_s2": (dict(size=(5, 6), k=3, padding=1, stride=2), dict(normalize=True)),
    "laplacian_dil2": (dict(size=(6, 6), k=3, padding=2, dilation=2), dict(kernel="laplacian")),
    "inverse": (dict(size=(5, 6), k=3, padding=1), dict(kernel="inverse", alpha=0.3, lam=-1.0)),
    "inverse_asym_norm": (dict(size=(5, 6), k=3, padding=1),
                          dict(kernel="inverse", alpha=0.3, lam=-0.5, asym=True,
                               normalize=True)),
    "inverse_channel_wise": (dict(size=(5, 6), k=3, padding=1),
                             dict(kernel="inverse", channel_wise=True,
                                  alpha=np.array([0.3, 0.1]), lam=np.array([-1.0, 0.7]))),
    "mask": (dict(size=(5, 6), k=3, padding=1), dict(mask=True)),
    "mask_norm_offcentre": (dict(size=(6, 6), k=5, padding=1), dict(mask=True, normalize=True)),
    "transposed": (dict(size=(8, 10), k=3, padding=1, stride=2, output_padding=1,
                        transposed=True), {}),
    "transposed_norm": (dict(size=(8, 10), k=3, padding=1, stride=2, output_padding=1,
                             transposed=True), dict(normalize=True)),
    "transposed_norm_s3_inverse": (dict(size=(7, 7), k=5, padding=2, stride=3,
                                        transposed=True),
                                   dict(normalize=True, kernel="inverse", alpha=0.2, lam=-1.0)),
    "transposed_mask_norm": (dict(size=(8, 10), k=3, padding=1, stride=2, output_padding=1,
                                  transposed=True), dict(mask=True, normalize=True)),
    "1d": (dict(size=(9,), k=5, padding=2, stride=2), dict(normalize=True)),
    "3d": (dict(size=(3, 4, 4), k=3, padding=1), dict(kernel="laplacian", normalize=True)),
}


@pytest.mark.parametrize("case", list(KERNEL_CASES))
def test_adapting_kernel_gradients(case, engine, rng):
    geo, opts = KERNEL_CASES[case]
    geo = dict(geo)
    size, k = geo.pop("size"), geo.pop("k")
    nd = len(size)
    opts = dict(opts)
    params = {}
    if opts.get("kernel") == "inverse":
        params = {p: np.asarray(opts.pop(p), dtype=np.float64) for p in ("alpha", "lam")}
    if opts.get("mask") is True:
        if geo.get("transposed"):
            s, p, op = geo["stride"], geo["padding"], geo.get("output_padding", 0)
            in_size = tuple((o - op - 1 - (k - 1) + 2 * p) // s + 1 for o in size)
        else:
            in_size = size
        opts["mask"] = _mask(rng, 2, in_size)
    opts.update(geo)
    inputs = {"guide": _randn(rng, (2, 2) + size), **params}
    f, vjp = _make(pacnd.adapting_kernel, pacnd.adapting_kernel_vjp, ("guide",), engine, opts,
                   extra_args=((k,) * nd,))
    check_backward(f, vjp, inputs, seed=zlib.crc32(case.encode()))


# --------------------------------------------------------------------------- plain conv
CONV_CASES = {
    "k3_p1_bias": dict(size=(5, 6), cin=2, cout=3, k=3, padding=1),
    "groups2_s2_dil2": dict(size=(7, 7), cin=4, cout=2, k=3, padding=2, stride=2, dilation=2,
                            groups=2),
    "k5_pad_beyond": dict(size=(4, 5), cin=2, cout=2, k=5, padding=3, bias=False),
    "1d": dict(size=(9,), cin=2, cout=2, k=3, padding=1, stride=2),
    "3d_groups": dict(size=(3, 4, 4), cin=2, cout=4, k=3, padding=1, groups=2),
}


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv_gradients(case, engine, rng):
    geo = CONV_CASES[case]
    inputs, _ = _pac_inputs(rng, **geo)
    del inputs["guide"]
    opts = {k: geo[k] for k in ("stride", "padding", "dilation", "groups") if k in geo}
    f, vjp = _make(pacnd.conv, pacnd.conv_vjp, ("input", "weight", "bias"), engine, opts)
    check_backward(f, vjp, inputs, seed=zlib.crc32(case.encode()))


CONVT_CASES = {
    "k3_s2_p1_op1": dict(size=(3, 4), cin=2, cout=3, k=3, stride=2, padding=1,
                         output_padding=1),
    "groups2_s3": dict(size=(3, 3), cin=4, cout=2, k=3, stride=3, padding=1, groups=2),
    "dil2_op1": dict(size=(3, 3), cin=2, cout=2, k=3, stride=1, padding=1, dilation=2,
                     output_padding=1, bias=False),
    "1d": dict(size=(4,), cin=2, cout=2, k=5, stride=2, padding=2, output_padding=1),
    "3d_groups": dict(size=(2, 3, 2), cin=2, cout=2, k=3, stride=2, padding=1, groups=2),
}


@pytest.mark.parametrize("case", list(CONVT_CASES))
def test_conv_transpose_gradients(case, engine, rng):
    geo = CONVT_CASES[case]
    inputs, _ = _pac_inputs(rng, transposed=True, **geo)
    del inputs["guide"]
    opts = {k: geo[k] for k in ("stride", "padding", "dilation", "groups", "output_padding")
            if k in geo}
    f, vjp = _make(pacnd.conv_transpose, pacnd.conv_transpose_vjp, ("input", "weight", "bias"),
                   engine, opts)
    check_backward(f, vjp, inputs, seed=zlib.crc32(case.encode()))


# --------------------------------------------------------------------------- the checker itself
def test_gradcheck_catches_a_wrong_gradient(rng):
    """The checker must fail on a subtly wrong vjp (and say which input)."""
    x = rng.standard_normal((2, 2, 5, 6))
    f = rng.standard_normal((2, 2, 5, 6))
    w = rng.standard_normal((2, 2, 3, 3))

    def fwd(input, guide, weight):
        return pacnd.pac_conv(input, guide, weight, padding=1, engine="numpy")

    def bad_vjp(u, wrt, input, guide, weight):
        res = pacnd.pac_conv_vjp(u, input, guide, weight, padding=1, engine="numpy", wrt=wrt)
        if "guide" in res:
            res["guide"] = res["guide"] * (1 + 1e-4)
        return res

    with pytest.raises(AssertionError, match="guide: analytic") as info:
        check_backward(fwd, bad_vjp, {"input": x, "guide": f, "weight": w}, check_single=False)
    assert "input:" not in str(info.value) and "weight:" not in str(info.value)


# --------------------------------------------------------------------------- random geometries
@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_geometry_gradients(data, engine):
    """Random 1-3D geometry, groups, kernel family, asym, channel_wise, normalize
    and mask, for PAC and PAC^T."""
    transposed = data.draw(st.booleans(), label="transposed")
    prob = data.draw(pac_problems(transposed), label="problem")
    x, guide, W, b, extra = _realise(prob, transposed)
    kopts = dict(prob["kopts"])
    inputs = {"input": x, "guide": guide, "weight": W, "bias": b}
    if kopts["kind"] == "inverse":
        inputs["alpha"] = np.float64(kopts.pop("alpha"))
        inputs["lam"] = np.float64(kopts.pop("lam"))
    kopts["kernel"] = kopts.pop("kind")
    opts = {**prob["geo"], **kopts, **extra}
    if transposed:
        f, vjp = _make(pacnd.pac_conv_transpose, pacnd.pac_conv_transpose_vjp,
                       ("input", "guide", "weight", "bias"), engine, opts)
    else:
        f, vjp = _make(pacnd.pac_conv, pacnd.pac_conv_vjp, ("input", "guide", "weight", "bias"),
                       engine, opts)
    # degenerate draws are legitimate here (1x1 kernels, windows holding a single
    # valid tap, outputs that see only padding): a zero derivative is allowed only
    # for the inputs the output provably does not depend on at this point
    check_backward(f, vjp, inputs, seed=prob["seed"], allow_zero=_independent_of(f, inputs),
                   check_single=False)


def _independent_of(f, inputs, trials=3):
    """Inputs whose random perturbation (large, in ``trials`` directions) leaves the
    output unchanged: the ones whose derivative is legitimately zero. The bias always
    reaches the output, so it is never among them."""
    rng = np.random.default_rng(0)
    y0 = np.asarray(f(**inputs))
    scale = 1e-12 * max(1.0, float(np.abs(y0).max()))
    out = []
    for k, v in inputs.items():
        if k == "bias":
            continue
        same = True
        for _ in range(trials):
            moved = dict(inputs)
            moved[k] = v + rng.standard_normal(np.shape(v)) * 0.5
            if k == "lam":
                moved[k] = np.asarray(v) - 0.5 * rng.random()    # stay in the kernel's domain
            if float(np.abs(np.asarray(f(**moved)) - y0).max()) > scale:
                same = False
                break
        if same:
            out.append(k)
    return tuple(out)
