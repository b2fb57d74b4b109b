"""Identities that pin the PAC ops to independent oracles written here:

(a) a constant guide reduces PAC to plain convolution, and plain convolution
    is ``scipy.ndimage.correlate`` summed over channel pairs; the adapting
    kernel and the PAC forward equal a literal transcription of DESIGN.md 1;
(b) Gaussian spatial and range terms give the bilateral filter (direct loop);
(c) PAC pooling with a constant guide / K = 1 gives average pooling;
(d) PAC^T with a constant guide is ``conv_transpose``, which is the adjoint of
    ``conv`` with the spatially flipped weight;
(e) the transposed ops equal the literal definition: zero insertion, padding,
    stride-1 correlation with the unflipped weight;
(f) dtype rules.

The oracles (``literal.py``) index zero-padded copies of the arrays directly —
the way the formulas read — and share no code with pacnd.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import HealthCheck, given, settings
from literal import (EPS, _tup, assert_close, literal_kernel, literal_pac, literal_pac_transpose,
                     literal_transposed_kernel, literal_validity, normalise)

import pacnd



# =========================================================================== (a) constant guide
CONV_GEOMS = {
    "k3_p1": dict(size=(6, 7), k=3, padding=1),
    "k3_p0_s2": dict(size=(7, 8), k=3, padding=0, stride=2),
    "k5_p1_offcentre": dict(size=(7, 7), k=5, padding=1),
    "k3_p3_beyond_reach": dict(size=(5, 6), k=3, padding=3),
    "k3_dil2_s3": dict(size=(9, 8), k=3, padding=2, stride=3, dilation=2),
    "aniso": dict(size=(7, 9), k=(3, 5), padding=(2, 1), stride=(2, 1), dilation=(1, 2)),
    "groups2": dict(size=(5, 6), k=3, padding=1, groups=2, cin=4, cout=6),
    "1d": dict(size=(11,), k=5, padding=2, stride=2),
    "3d": dict(size=(4, 5, 4), k=3, padding=1),
    "3d_s2_groups": dict(size=(5, 4, 5), k=3, padding=(1, 2, 0), stride=2, groups=2, cin=2,
                         cout=4),
}


def _geom(case):
    g = dict(CONV_GEOMS[case])
    size = g.pop("size")
    nd = len(size)
    k = _tup(g.pop("k"), nd)
    cin, cout = g.pop("cin", 2), g.pop("cout", 3)
    opts = {"stride": g.get("stride", 1), "padding": g.get("padding", 0),
            "dilation": g.get("dilation", 1), "groups": g.get("groups", 1)}
    return size, k, cin, cout, opts


@pytest.mark.parametrize("case", list(CONV_GEOMS))
def test_constant_guide_is_plain_conv(case, engine, rng):
    size, k, cin, cout, opts = _geom(case)
    x = rng.standard_normal((2, cin) + size)
    W = rng.standard_normal((cout, cin // opts["groups"]) + k)
    b = rng.standard_normal(cout)
    guide = np.full((2, 3) + size, 0.7)
    kg = {kk: opts[kk] for kk in ("stride", "padding", "dilation")}
    # The identity holds at every output whose window centre lies in the image.
    # When padding exceeds the kernel's reach ((k//2)*d), some centres fall in
    # the zero padding of the guide: f_0 = 0 there and K != 1 by definition.
    nd = len(size)
    sd, pd, dl = (_tup(kg[n], nd) for n in ("stride", "padding", "dilation"))
    ref = pacnd.conv(x, W, b, engine=engine, **opts)
    cv = np.ones(ref.shape[2:], dtype=bool)
    for i, (n, o, kk, ss, pp, dd) in enumerate(zip(size, ref.shape[2:], k, sd, pd, dl)):
        c = np.arange(o) * ss - pp + (kk // 2) * dd
        cv &= ((c >= 0) & (c < n)).reshape([o if j == i else 1 for j in range(nd)])
    beyond = any(pp > kk // 2 * dd for pp, kk, dd in zip(pd, k, dl))
    assert cv.all() != beyond
    got = pacnd.pac_conv(x, guide, W, b, engine=engine, **opts)
    assert_close(got[..., cv], ref[..., cv])
    if beyond:
        assert not np.allclose(got[..., ~cv], ref[..., ~cv])
    # K == 1 on every tap that lands in the image (out-of-image taps see the
    # zero padding of the guide, but multiply a zero input there)
    K = pacnd.adapting_kernel(guide, k, engine=engine, **kg)
    M = literal_validity(np.ones((1, 1) + size), k, **kg)
    assert np.array_equal((K * M)[..., cv], np.broadcast_to(M, K.shape)[..., cv])
    # other kernels: a constant guide gives the constant phi(0)
    nob = pacnd.conv(x, W, engine=engine, **opts)
    lap = pacnd.pac_conv(x, guide, W, b, kernel="laplacian", engine=engine, **opts)
    assert_close(lap[..., cv], (np.exp(-np.sqrt(EPS)) * nob + b.reshape(
        (1, cout) + (1,) * len(size)))[..., cv])
    inv = pacnd.pac_conv(x, guide, W, kernel="inverse", alpha=0.5, lam=-1.0, engine=engine,
                         **opts)
    assert_close(inv[..., cv], ((0.5 + EPS ** -0.5) * nob)[..., cv])
    # and with normalize, K = M / (number of in-image taps)
    Kn = pacnd.adapting_kernel(guide, k, normalize=True, engine=engine, **kg)
    Kc = np.broadcast_to(normalise(np.ones_like(M), M), Kn.shape)
    assert_close(Kn[..., cv], Kc[..., cv])


def scipy_conv(x, W, b=None, *, stride=1, padding=0, dilation=1, groups=1):
    """Plain conv from scipy.ndimage.correlate: zero-pad by p, correlate each
    (out, in) channel pair with the dilated kernel anchored at its first tap
    (origin = -(k_eff // 2)), sum over the group's inputs, subsample by s."""
    nd = x.ndim - 2
    s, p, d = (_tup(v, nd) for v in (stride, padding, dilation))
    k = W.shape[2:]
    keff = tuple(dd * (kk - 1) + 1 for kk, dd in zip(k, d))
    out = tuple((n + 2 * pp - ke) // ss + 1 for n, pp, ke, ss in zip(x.shape[2:], p, keff, s))
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pp, pp) for pp in p])
    cout, cin_g = W.shape[:2]
    cout_g = cout // groups
    res = np.zeros((x.shape[0], cout) + out)
    for bi in range(x.shape[0]):
        for o in range(cout):
            g = o // cout_g
            for ci in range(cin_g):
                wd = np.zeros(keff)
                wd[tuple(slice(None, None, dd) for dd in d)] = W[o, ci]
                full = ndi.correlate(xp[bi, g * cin_g + ci], wd, mode="constant", cval=0.0,
                                     origin=[-(ke // 2) for ke in keff])
                res[bi, o] += full[tuple(slice(0, (oo - 1) * ss + 1, ss)
                                         for oo, ss in zip(out, s))]
    if b is not None:
        res += b.reshape((1, cout) + (1,) * nd)
    return res


@pytest.mark.parametrize("case", list(CONV_GEOMS))
def test_conv_is_scipy_correlate(case, engine, rng):
    size, k, cin, cout, opts = _geom(case)
    x = rng.standard_normal((2, cin) + size)
    W = rng.standard_normal((cout, cin // opts["groups"]) + k)
    b = rng.standard_normal(cout)
    assert_close(pacnd.conv(x, W, b, engine=engine, **opts), scipy_conv(x, W, b, **opts))


def test_scipy_oracle_same_padding_is_plain_correlate(rng):
    """Sanity check of the scipy oracle itself on the textbook case."""
    x = rng.standard_normal((1, 1, 6, 7))
    w = rng.standard_normal((1, 1, 3, 3))
    direct = ndi.correlate(x[0, 0], w[0, 0], mode="constant", cval=0.0)
    assert_close(scipy_conv(x, w, padding=1)[0, 0], direct)


# ----------------------------------------------------------------- literal K and PAC forward
KERNEL_OPTS = {
    "gaussian": {},
    "laplacian": dict(kind="laplacian"),
    "inverse": dict(kind="inverse", alpha=0.3, lam=-1.0),
    "inverse_asym": dict(kind="inverse", alpha=0.1, lam=-2.0, asym=True),
    "gaussian_asym": dict(asym=True),
    "channel_wise": dict(channel_wise=True),
    "inverse_channel_wise": dict(kind="inverse", alpha=np.array([0.3, 0.1, 0.2]),
                                 lam=np.array([-1.0, 0.5, 1.0]), channel_wise=True),
}


def _api_kernel_opts(kopts):
    o = dict(kopts)
    if "kind" in o:
        o["kernel"] = o.pop("kind")
    return o


@pytest.mark.parametrize("kcase", list(KERNEL_OPTS))
@pytest.mark.parametrize("case", ["k3_p1", "k5_p1_offcentre", "k3_p3_beyond_reach",
                                  "k3_dil2_s3", "aniso", "1d", "3d"])
def test_adapting_kernel_is_literal(case, kcase, engine, rng):
    size, k, _, _, opts = _geom(case)
    kg = {kk: opts[kk] for kk in ("stride", "padding", "dilation")}
    kopts = KERNEL_OPTS[kcase]
    guide = rng.standard_normal((2, 3) + size)
    api = _api_kernel_opts(kopts)
    Kl = literal_kernel(guide, k, **kg, **kopts)
    assert_close(pacnd.adapting_kernel(guide, k, engine=engine, **kg, **api), Kl)
    M = literal_validity(np.ones((1, 1) + size), k, **kg)
    assert_close(pacnd.adapting_kernel(guide, k, normalize=True, engine=engine, **kg, **api),
                 normalise(Kl, M))
    mask = (rng.random((2, 1) + size) > 0.4).astype(np.float64)
    Mm = literal_validity(mask, k, **kg)
    assert_close(pacnd.adapting_kernel(guide, k, mask=mask, engine=engine, **kg, **api), Kl * Mm)
    assert_close(pacnd.adapting_kernel(guide, k, mask=mask, normalize=True, engine=engine, **kg,
                                       **api), normalise(Kl, Mm))


@pytest.mark.parametrize("case", list(CONV_GEOMS))
@pytest.mark.parametrize("kcase", ["gaussian", "inverse_asym", "channel_wise"])
def test_pac_conv_is_literal(case, kcase, engine, rng):
    size, k, cin, cout, opts = _geom(case)
    kg = {kk: opts[kk] for kk in ("stride", "padding", "dilation")}
    kopts = dict(KERNEL_OPTS[kcase])
    if kopts.get("channel_wise"):
        cg = cin
    else:
        cg = 2
    x = rng.standard_normal((2, cin) + size)
    guide = rng.standard_normal((2, cg) + size)
    W = rng.standard_normal((cout, cin // opts["groups"]) + k)
    b = rng.standard_normal(cout)
    mask = (rng.random((2, 1) + size) > 0.3).astype(np.float64)
    api = _api_kernel_opts(kopts)
    Kl = literal_kernel(guide, k, **kg, **kopts)
    Mm = literal_validity(mask, k, **kg)
    got = pacnd.pac_conv(x, guide, W, b, engine=engine, **opts, **api)
    assert_close(got, literal_pac(x, Kl, W, bias=b, **opts))
    got = pacnd.pac_conv(x, guide, W, b, mask=mask, normalize=True, engine=engine, **opts, **api)
    assert_close(got, literal_pac(x, normalise(Kl, Mm), W, bias=b, **opts))
    # a precomputed K gives the same as the guide it came from
    K = pacnd.adapting_kernel(guide, k, engine=engine, **kg, **api)
    assert_close(pacnd.pac_conv(x, None, W, b, adapting=K, engine=engine, **opts),
                 literal_pac(x, Kl, W, bias=b, **opts))


def test_fully_masked_windows(engine, rng):
    """A window with no valid input: normalised K is 0 there (Z = 0 is not divided by),
    the output is the bias, and no gradient flows to the guide from it."""
    x = rng.standard_normal((1, 2, 6, 6))
    guide = rng.standard_normal((1, 2, 6, 6))
    W = rng.standard_normal((2, 2, 3, 3))
    b = rng.standard_normal(2)
    mask = np.ones((1, 1, 6, 6))
    mask[..., :3, :] = 0.0  # rows 0-2 invalid: windows centred on rows 0-1 are empty
    K = pacnd.adapting_kernel(guide, 3, padding=1, mask=mask, normalize=True, engine=engine)
    assert np.isfinite(K).all()
    assert not K[..., :2, :].any()
    out = pacnd.pac_conv(x, guide, W, b, padding=1, mask=mask, normalize=True, engine=engine)
    assert_close(out[..., :2, :], np.broadcast_to(b[None, :, None, None], (1, 2, 2, 6)))
    u = np.zeros_like(out)
    u[..., :2, :] = 1.0
    g = pacnd.pac_conv_vjp(u, x, guide, W, b, padding=1, mask=mask, normalize=True,
                           engine=engine, wrt=("guide", "input", "weight"))
    assert not g["guide"].any() and not g["input"].any() and not g["weight"].any()
    # all-zero mask: everything is the bias
    out = pacnd.pac_conv(x, guide, W, b, padding=1, mask=np.zeros((1, 1, 6, 6)),
                         normalize=True, engine=engine)
    assert_close(out, np.broadcast_to(b[None, :, None, None], out.shape))


def test_shared_filters_equal_depthwise(engine, rng):
    x = rng.standard_normal((2, 3, 6, 5))
    guide = rng.standard_normal((2, 2, 6, 5))
    w = rng.standard_normal((1, 1, 3, 3))
    got = pacnd.pac_conv(x, guide, w, shared=True, padding=1, engine=engine)
    dw = np.repeat(w, 3, axis=0)
    assert_close(got, pacnd.pac_conv(x, guide, dw, groups=3, padding=1, engine=engine))
    assert_close(got, literal_pac(x, literal_kernel(guide, 3, 1, 1, 1), dw, 1, 1, 1, groups=3))


# =========================================================================== (b) bilateral
def direct_bilateral(x, image, radius, sigma_s, sigma_r):
    """Joint bilateral filter by a double loop: for every pixel p,
    sum_q w(p,q) x[q] / sum_q w(p,q) over the in-image q with |q-p|_inf <= r,
    w = exp(-|p-q|^2 / (2 sigma_s^2) - |I_p - I_q|^2 / (2 sigma_r^2))."""
    B, C, H, Wd = x.shape
    out = np.zeros_like(x)
    for b in range(B):
        for i in range(H):
            for j in range(Wd):
                num = np.zeros(C)
                den = 0.0
                for qi in range(max(0, i - radius), min(H, i + radius + 1)):
                    for qj in range(max(0, j - radius), min(Wd, j + radius + 1)):
                        ds = (qi - i) ** 2 + (qj - j) ** 2
                        dr = float(((image[b, :, qi, qj] - image[b, :, i, j]) ** 2).sum())
                        w = np.exp(-ds / (2 * sigma_s ** 2) - dr / (2 * sigma_r ** 2))
                        num += w * x[b, :, qi, qj]
                        den += w
                out[b, :, i, j] = num / den
    return out


@pytest.mark.parametrize("radius,sigma_s,sigma_r", [(1, 1.0, 0.3), (2, 1.5, 0.5)])
def test_bilateral_filter(radius, sigma_s, sigma_r, engine, rng):
    B, C, H, Wd = 2, 2, 7, 8
    image = rng.random((B, 3, H, Wd))
    x = rng.standard_normal((B, C, H, Wd))
    k = 2 * radius + 1
    expected = direct_bilateral(x, image, radius, sigma_s, sigma_r)

    # Gaussian spatial W times Gaussian range K, divided by the same filter of
    # the in-image indicator: the bilateral filter normalised over in-image pixels
    t = np.arange(k) - radius
    w_sp = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * sigma_s ** 2))[None, None]
    guide = image / sigma_r
    num = pacnd.pac_conv(x, guide, w_sp, shared=True, padding=radius, engine=engine)
    den = pacnd.pac_conv(np.ones((B, 1, H, Wd)), guide, w_sp, padding=radius, engine=engine)
    assert_close(num / den, expected)

    # the spatial term inside K (coordinates as guide channels), W = 1, normalize
    yy, xx = np.meshgrid(np.arange(H), np.arange(Wd), indexing="ij")
    coords = np.broadcast_to(np.stack([yy, xx]) / sigma_s, (B, 2, H, Wd))
    guide2 = np.concatenate([image / sigma_r, coords], axis=1)
    got = pacnd.pac_conv(x, guide2, np.ones((1, 1, k, k)), shared=True, padding=radius,
                         normalize=True, engine=engine)
    assert_close(got, expected)

    # and with the spatial Gaussian in W, K = the range term normalised over
    # in-image taps, the filter is sum W K x / sum K — equal to the above
    # only up to that normaliser, which we can divide back out exactly
    Kn = pacnd.adapting_kernel(guide, k, padding=radius, normalize=True, engine=engine)
    wk = (Kn * w_sp[:, :, :, :, None, None]).sum(axis=(2, 3))
    got = pacnd.pac_conv(x, guide, w_sp, shared=True, padding=radius, normalize=True,
                         engine=engine)
    assert_close(got / wk, expected)


# =========================================================================== (c) pooling
def direct_avg_pool(x, k, stride, padding, dilation, *, include_pad):
    nd = x.ndim - 2
    k, s, p, d = (_tup(v, nd) for v in (k, stride, padding, dilation))
    out = tuple((n + 2 * pp - dd * (kk - 1) - 1) // ss + 1
                for n, kk, ss, pp, dd in zip(x.shape[2:], k, s, p, d))
    res = np.zeros(x.shape[:2] + out)
    for y in itertools.product(*map(range, out)):
        acc = np.zeros(x.shape[:2])
        n = 0
        for t in itertools.product(*map(range, k)):
            z = tuple(yy * ss - pp + tt * dd for yy, ss, pp, tt, dd in zip(y, s, p, t, d))
            if all(0 <= zz < nn for zz, nn in zip(z, x.shape[2:])):
                acc += x[(Ellipsis,) + z]
                n += 1
        res[(Ellipsis,) + y] = acc / (np.prod(k) if include_pad else n)
    return res


POOL_GEOMS = {
    "k3_s2_p1": dict(size=(7, 8), k=3, stride=2, padding=1),
    "k3_s1_p1": dict(size=(5, 6), k=3, stride=1, padding=1),
    "k5_p2_dil2": dict(size=(8, 9), k=5, stride=2, padding=2, dilation=2),
    "k3_p3_beyond": dict(size=(4, 5), k=3, stride=1, padding=2),
    "1d": dict(size=(10,), k=5, stride=3, padding=2),
    "3d": dict(size=(4, 5, 4), k=3, stride=2, padding=1),
}


@pytest.mark.parametrize("case", list(POOL_GEOMS))
def test_pooling_identities(case, engine, rng):
    g = dict(POOL_GEOMS[case])
    size, k = g.pop("size"), g.pop("k")
    nd = len(size)
    x = rng.standard_normal((2, 3) + size)
    guide = np.full((2, 2) + size, -1.3)
    g.setdefault("dilation", 1)
    excl = direct_avg_pool(x, k, include_pad=False, **g)
    incl = direct_avg_pool(x, k, include_pad=True, **g)
    # normalize + constant guide: average excluding the padding (any kernel family)
    for kern in ({}, {"kernel": "laplacian"}, {"kernel": "inverse", "alpha": 0.2, "lam": 1.0}):
        got = pacnd.pac_pool(x, guide, k, normalize=True, engine=engine, **g, **kern)
        assert_close(got, excl)
    # channel_wise with a constant guide per channel too
    got = pacnd.pac_pool(x, np.full((2, 3) + size, 0.5), k, normalize=True, channel_wise=True,
                         engine=engine, **g)
    assert_close(got, excl)
    # K = 1 and W = 1/k^nd: average including the padding
    kt = _tup(k, nd)
    out = incl.shape[2:]
    ones = np.ones((2, 1) + kt + out)
    W = np.full((3, 1) + kt, 1.0 / np.prod(kt))
    assert_close(pacnd.pac_conv(x, None, W, adapting=ones, groups=3, engine=engine, **g), incl)
    assert_close(pacnd.conv(x, W, groups=3, engine=engine, **g), incl)
    assert_close(pacnd.pac_pool(x, None, k, adapting=ones, engine=engine, **g) / np.prod(kt),
                 incl)


def test_pool_is_literal_weighted_sum(engine, rng):
    x = rng.standard_normal((2, 3, 7, 6))
    guide = rng.standard_normal((2, 3, 7, 6))
    for cw in (False, True):
        K = literal_kernel(guide, 3, 2, 1, 1, channel_wise=cw)
        got = pacnd.pac_pool(x, guide, 3, stride=2, padding=1, channel_wise=cw, engine=engine)
        W = np.ones((3, 1, 3, 3))
        assert_close(got, literal_pac(x, K, W, 2, 1, 1, groups=3))


# ================================================================ (d) transposed, adjoint
CONVT_GEOMS = {
    "k3_s2_p1_op1": dict(size=(4, 5), k=3, stride=2, padding=1, output_padding=1),
    "k3_s3_p1": dict(size=(3, 4), k=3, stride=3, padding=1),
    "k5_s2_p2_op1": dict(size=(3, 4), k=5, stride=2, padding=2, output_padding=1),
    "k3_s2_p2_op1_dil2": dict(size=(4, 4), k=3, stride=2, padding=2, output_padding=1,
                              dilation=2),
    "op_ge_stride_lt_dil": dict(size=(4, 5), k=3, stride=1, padding=1, output_padding=1,
                                dilation=2),
    "k3_s2_p3_beyond": dict(size=(5, 5), k=3, stride=2, padding=3),
    "aniso_groups": dict(size=(3, 4), k=(3, 5), stride=(2, 3), padding=(1, 2),
                         output_padding=(1, 2), groups=2, cin=4, cout=2),
    "1d": dict(size=(5,), k=5, stride=3, padding=1, output_padding=2),
    "3d_groups": dict(size=(2, 3, 3), k=3, stride=2, padding=1, output_padding=(1, 0, 1),
                      groups=2, cin=2, cout=4),
}


def _tgeom(case):
    g = dict(CONVT_GEOMS[case])
    size = g.pop("size")
    nd = len(size)
    k = _tup(g.pop("k"), nd)
    cin, cout = g.pop("cin", 2), g.pop("cout", 3)
    opts = {"stride": g.get("stride", 1), "padding": g.get("padding", 0),
            "dilation": g.get("dilation", 1), "groups": g.get("groups", 1),
            "output_padding": g.get("output_padding", 0)}
    s, p, d, op = (_tup(opts[n], nd) for n in ("stride", "padding", "dilation",
                                                "output_padding"))
    out = tuple((n - 1) * ss - 2 * pp + dd * (kk - 1) + 1 + oo
                for n, ss, pp, dd, kk, oo in zip(size, s, p, d, k, op))
    return size, out, k, cin, cout, opts


@pytest.mark.parametrize("case", list(CONVT_GEOMS))
def test_conv_transpose_is_adjoint_of_flipped_conv(case, engine, rng):
    """<conv_transpose(x, W), y> == <x, conv(y, W')> with W' = W flipped in every
    spatial dim, used as a (Cout_conv = Cin, Cin_conv/g = Cout/g) conv weight
    unchanged, with the same stride/padding/dilation/groups; conv's output is
    cropped to x's size (it is larger only when output_padding >= stride)."""
    size, out, k, cin, cout, opts = _tgeom(case)
    nd = len(size)
    x = rng.standard_normal((2, cin) + size)
    W = rng.standard_normal((cin, cout // opts["groups"]) + k)
    y = rng.standard_normal((2, cout) + out)
    ct = pacnd.conv_transpose(x, W, engine=engine, **opts)
    assert ct.shape == y.shape
    Wf = W[(Ellipsis,) + (slice(None, None, -1),) * nd]
    copts = {n: opts[n] for n in ("stride", "padding", "dilation", "groups")}
    cy = pacnd.conv(y, np.ascontiguousarray(Wf), engine=engine, **copts)
    assert all(c >= n for c, n in zip(cy.shape[2:], size))
    cy = cy[(Ellipsis,) + tuple(slice(0, n) for n in size)]
    lhs, rhs = float(np.vdot(ct, y)), float(np.vdot(x, cy))
    assert abs(lhs - rhs) <= 1e-12 * np.abs(ct * y).sum(), (lhs, rhs)
    # elementwise: conv_transpose(x, W) is the vjp of conv(., W') at upstream x
    if all(c == n for c, n in zip(pacnd.conv(y, Wf, engine=engine, **copts).shape[2:], size)):
        gx = pacnd.conv_vjp(x, y, np.ascontiguousarray(Wf), engine=engine, wrt=("input",),
                            **copts)["input"]
        assert_close(gx, ct)


@pytest.mark.parametrize("case", list(CONVT_GEOMS))
def test_pac_transpose_constant_guide_is_conv_transpose(case, engine, rng):
    size, out, k, cin, cout, opts = _tgeom(case)
    x = rng.standard_normal((2, cin) + size)
    W = rng.standard_normal((cin, cout // opts["groups"]) + k)
    b = rng.standard_normal(cout)
    guide = np.full((2, 2) + out, 2.5)
    ref = pacnd.conv_transpose(x, W, b, engine=engine, **opts)
    assert_close(pacnd.pac_conv_transpose(x, guide, W, b, engine=engine, **opts), ref)


# =========================================================================== (e) transposed literal
@pytest.mark.parametrize("case", list(CONVT_GEOMS))
def test_conv_transpose_is_literal(case, engine, rng):
    size, out, k, cin, cout, opts = _tgeom(case)
    x = rng.standard_normal((2, cin) + size)
    W = rng.standard_normal((cin, cout // opts["groups"]) + k)
    b = rng.standard_normal(cout)
    got = pacnd.conv_transpose(x, W, b, engine=engine, **opts)
    assert got.shape == (2, cout) + out
    assert_close(got, literal_pac_transpose(x, None, W, b, **opts))


@pytest.mark.parametrize("case", list(CONVT_GEOMS))
@pytest.mark.parametrize("kcase", ["gaussian", "inverse_asym", "channel_wise"])
def test_pac_conv_transpose_is_literal(case, kcase, engine, rng):
    size, out, k, cin, cout, opts = _tgeom(case)
    kopts = dict(KERNEL_OPTS[kcase])
    cg = cin if kopts.get("channel_wise") else 2
    x = rng.standard_normal((2, cin) + size)
    guide = rng.standard_normal((2, cg) + out)
    W = rng.standard_normal((cin, cout // opts["groups"]) + k)
    b = rng.standard_normal(cout)
    mask = (rng.random((2, 1) + size) > 0.3).astype(np.float64)
    api = _api_kernel_opts(kopts)
    for extra in ({}, {"normalize": True}, {"mask": mask, "normalize": True}, {"mask": mask}):
        got = pacnd.pac_conv_transpose(x, guide, W, b, engine=engine, **opts, **api, **extra)
        assert_close(got, literal_pac_transpose(x, guide, W, b, **opts, **kopts, **extra))
    # the transposed adapting kernel, and PAC^T with it precomputed
    kg = {n: opts[n] for n in ("stride", "padding", "dilation", "output_padding")}
    for extra in ({}, {"normalize": True}, {"mask": mask, "normalize": True}):
        K = pacnd.adapting_kernel(guide, k, transposed=True, engine=engine, **kg, **api, **extra)
        Kl = literal_transposed_kernel(guide, x.shape, k, **kg, **kopts, **extra)
        assert_close(K, Kl)
        got = pacnd.pac_conv_transpose(x, None, W, b, adapting=K, engine=engine, **opts)
        assert_close(got, literal_pac_transpose(x, None, W, b, K=Kl, **opts))


def test_transposed_kernel_unnormalised_is_same_padded_forward_kernel(engine, rng):
    guide = rng.standard_normal((2, 2, 8, 10))
    K = pacnd.adapting_kernel(guide, 3, transposed=True, stride=2, padding=1, output_padding=1,
                              engine=engine)
    assert_close(K, pacnd.adapting_kernel(guide, 3, padding=1, engine=engine))


# =========================================================================== (f) dtypes
def _dtype_calls(engine, dt_x, dt_g, dt_w, rng):
    x = rng.standard_normal((2, 2, 5, 6)).astype(dt_x)
    g = rng.standard_normal((2, 2, 5, 6)).astype(dt_g)
    w = rng.standard_normal((3, 2, 3, 3)).astype(dt_w)
    gt = rng.standard_normal((2, 2, 10, 12)).astype(dt_g)
    wt = rng.standard_normal((2, 3, 3, 3)).astype(dt_w)
    calls = {
        "pac_conv": lambda: pacnd.pac_conv(x, g, w, padding=1, engine=engine),
        "pac_conv_transpose": lambda: pacnd.pac_conv_transpose(
            x, gt, wt, stride=2, padding=1, output_padding=1, engine=engine),
        "pac_pool": lambda: pacnd.pac_pool(x, g, 3, padding=1, normalize=True, engine=engine),
        "conv": lambda: pacnd.conv(x, w, padding=1, engine=engine),
        "conv_transpose": lambda: pacnd.conv_transpose(x, wt, stride=2, padding=1,
                                                       output_padding=1, engine=engine),
        "adapting_kernel": lambda: pacnd.adapting_kernel(g, 3, padding=1, engine=engine),
        "pac_conv_vjp": lambda: pacnd.pac_conv_vjp(
            np.ones((2, 3, 5, 6), dt_x), x, g, w, padding=1, engine=engine),
        "pac_conv_transpose_vjp": lambda: pacnd.pac_conv_transpose_vjp(
            np.ones((2, 3, 10, 12), dt_x), x, gt, wt, stride=2, padding=1, output_padding=1,
            engine=engine),
        "pac_pool_vjp": lambda: pacnd.pac_pool_vjp(
            np.ones((2, 2, 5, 6), dt_x), x, g, 3, padding=1, normalize=True, engine=engine),
        "adapting_kernel_vjp": lambda: pacnd.adapting_kernel_vjp(
            np.ones((2, 1, 3, 3, 5, 6), dt_g), g, 3, padding=1, engine=engine),
    }
    return calls


#: which of (input, guide, weight) each call takes
_DTYPE_ARGS = {"pac_conv": (0, 1, 2), "pac_conv_transpose": (0, 1, 2), "pac_pool": (0, 1),
               "conv": (0, 2), "conv_transpose": (0, 2), "adapting_kernel": (1,),
               "pac_conv_vjp": (0, 1, 2), "pac_conv_transpose_vjp": (0, 1, 2),
               "pac_pool_vjp": (0, 1), "adapting_kernel_vjp": (1,)}


@pytest.mark.parametrize("dts", [
    (np.float32, np.float32, np.float32),
    (np.float64, np.float64, np.float64),
    (np.float32, np.float64, np.float32),
    (np.float64, np.float32, np.float32),
    (np.float32, np.float32, np.float64),
], ids=["f32", "f64", "guide_f64", "input_f64", "weight_f64"])
def test_dtypes(dts, engine):
    """float32 in -> float32 out, float64 -> float64, mixed -> float64 (for the
    outputs and every gradient), and float32 results agree with float64."""
    calls = _dtype_calls(engine, *dts, np.random.default_rng(5))
    refs = _dtype_calls(engine, np.float64, np.float64, np.float64, np.random.default_rng(5))
    assert set(calls) == set(_DTYPE_ARGS)
    for name, call in calls.items():
        used = {np.dtype(dts[i]) for i in _DTYPE_ARGS[name]}
        exp = np.dtype(np.float64) if np.dtype(np.float64) in used else np.dtype(np.float32)
        r, r64 = call(), refs[name]()
        outs = list(r.values()) if isinstance(r, dict) else [r]
        outs64 = list(r64.values()) if isinstance(r64, dict) else [r64]
        for o, o64 in zip(outs, outs64):
            assert o.dtype == exp, (name, o.dtype, exp)
            # float64 inputs that were rounded to float32 change results at ~1e-7
            tol = 1e-12 if all(d == np.float64 for d in dts) else 5e-5
            assert_close(o, o64, rtol=tol)


# =========================================================================== random geometries
from strategies import _realise, pac_problems  # noqa: E402

_HYP = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@_HYP
@given(prob=pac_problems(transposed=False))
def test_random_pac_conv_matches_literal(prob, engine):
    x, guide, W, b, extra = _realise(prob, False)
    kopts, geo = prob["kopts"], prob["geo"]
    K = literal_kernel(guide, prob["k"], geo["stride"], geo["padding"], geo["dilation"], **kopts)
    if extra.get("normalize") or "mask" in extra:
        valid = extra.get("mask", np.ones((1, 1) + prob["size"]))
        M = literal_validity(valid, prob["k"], geo["stride"], geo["padding"], geo["dilation"])
        K = normalise(K, M) if extra.get("normalize") else K * M
    got = pacnd.pac_conv(x, guide, W, b, engine=engine, **geo, **_api_kernel_opts(kopts),
                         **extra)
    assert_close(got, literal_pac(x, K, W, bias=b, **geo))


@_HYP
@given(prob=pac_problems(transposed=True))
def test_random_pac_conv_transpose_matches_literal(prob, engine):
    x, guide, W, b, extra = _realise(prob, True)
    kopts, geo = prob["kopts"], prob["geo"]
    got = pacnd.pac_conv_transpose(x, guide, W, b, engine=engine, **geo,
                                   **_api_kernel_opts(kopts), **extra)
    assert_close(got, literal_pac_transpose(x, guide, W, b, **geo, **kopts, **extra))
