"""PAC-CRF on volumes: the 3-D fast path against the 3-D graph path, both paths (2-D and 3-D)
against a naive NumPy mean-field written from the formulas (independent oracle), every
normalisation kind, and ``refine`` on volumes (anisotropic spacing, any number of guide
channels) against the same oracle and on a synthetic labelled volume."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pacnd.crf import PacCRF
from pacnd.crf.model import crf_filter_init


def _shift(a, off):
    """``a[..., i + off]`` over the trailing len(off) axes, zero (and invalid) outside."""
    nd = len(off)
    out = np.zeros_like(a)
    valid = np.zeros(a.shape[-nd:], bool)
    src, dst = [], []
    for o, n in zip(off, a.shape[-nd:]):
        src.append(slice(max(o, 0), n + min(o, 0)))
        dst.append(slice(max(-o, 0), n - max(o, 0)))
    out[(Ellipsis,) + tuple(dst)] = a[(Ellipsis,) + tuple(src)]
    valid[tuple(dst)] = True
    return out, valid


def naive_mean_field(U, f, terms, steps, w_u=1.0):
    """Mean-field of a PAC-CRF at blur 1, straight from DESIGN.md section 2.

    U (L, *S) logits, f (C, *S) features; each term is (W (k,)*nd, dilation, feat_scale,
    Potts weight, normalisation, group) with groups sharing S = sum |W| K over in-image taps.
    """
    nd = f.ndim - 1
    prepared = []
    S = {}
    for W, d, scale, pw, norm, group in terms:
        k = W.shape[0]
        taps = []
        for a in itertools.product(range(k), repeat=nd):
            off = tuple((ai - k // 2) * d for ai in a)
            fs, valid = _shift(f, off)
            dist = (((fs - f) * np.reshape(scale, (-1,) + (1,) * nd)) ** 2).sum(axis=0)
            K = np.where(valid, np.exp(-0.5 * dist), 0.0)
            taps.append((off, W[a] * K))
            key = group if group is not None else id(W)
            S[key] = S.get(key, 0.0) + np.abs(W[a]) * K
        prepared.append((taps, pw, norm, group if group is not None else id(W)))
    logQ = U.copy()
    for _ in range(steps):
        Q = np.exp(logQ - logQ.max(axis=0))
        Q /= Q.sum(axis=0)
        logQ = w_u * U
        for taps, pw, norm, key in prepared:
            n_in = n_out = 1.0
            if norm == "symmetric":
                n_in = n_out = np.maximum(S[key], 1e-12) ** -0.5
            elif norm == "before":
                n_in = 1.0 / np.maximum(S[key], 1e-12)
            elif norm == "after":
                n_out = 1.0 / np.maximum(S[key], 1e-12)
            msg = 0.0
            for off, WK in taps:
                msg = msg + WK * _shift(Q * n_in, off)[0]
            logQ = logQ + pw * n_out * msg
    return logQ


def _crf_and_terms(nd, norms, rng, L=3, C=2, dtype=np.float64):
    specs, terms = [], []
    for j, (k, d, norm, group) in enumerate(norms):
        scale = rng.uniform(0.3, 1.5, C)
        pw = float(rng.uniform(0.5, 3.0))
        specs.append(dict(kernel_size=k, dilation=d, compat="potts", pairwise_weight=pw,
                          feat_scale=tuple(scale), normalize=norm, group=group))
    crf = PacCRF(L, 3, specs, dtype=dtype, ndim=nd, unary_weight=0.9)
    for j, (k, d, norm, group) in enumerate(norms):
        W = rng.uniform(0.1, 2.0, (k,) * nd)
        crf.messengers[j].weight.data[...] = W
        spec = crf.kernels[j]
        terms.append((W, d, np.asarray(spec.feat_scale), spec.pairwise_weight, norm, group))
    return crf, terms


NORMS = {
    "none": [(3, 1, "none", None)],
    "symmetric_group": [(3, 1, "symmetric", 0), (3, 2, "symmetric", 0)],
    "before": [(3, 1, "before", None)],
    "after_and_symmetric": [(3, 2, "after", None), (3, 1, "symmetric", None)],
}


@pytest.mark.parametrize("nd, size", [(2, (9, 11)), (3, (5, 6, 7))])
@pytest.mark.parametrize("norms", list(NORMS))
def test_both_paths_equal_naive_mean_field(nd, size, norms, rng):
    """Independent oracle: the graph and the fast path equal a loop over taps written from
    the formulas (blur 1), for every normalisation kind, in 2-D (float64, to 1e-12) and 3-D
    (float32 against the float64 oracle, to 2e-5 of the scale: volumes run in float32, and
    one dtype keeps the tests' compile time down)."""
    dt = np.float64 if nd == 2 else np.float32
    crf, terms = _crf_and_terms(nd, NORMS[norms], rng, dtype=dt)
    U = rng.normal(size=(1, 3) + size)
    f = rng.normal(size=(1, 2) + size)
    want = naive_mean_field(U[0], f[0], terms, 3, w_u=0.9)
    tol = 1e-12 if nd == 2 else 2e-5 * np.abs(want).max()
    np.testing.assert_allclose(crf(U.astype(dt), f.astype(dt)).data[0], want, rtol=0, atol=tol)
    np.testing.assert_allclose(crf.infer(U.astype(dt), f.astype(dt))[0], want, rtol=0, atol=tol)


CONFIGS_3D = {
    "rings_blur2": [dict(kernel_size=3, blur=2, compat="potts", normalize="symmetric",
                         group=0, feat_scale=0.5),
                    dict(kernel_size=3, dilation=3, blur=2, compat="potts",
                         normalize="symmetric", group=0, feat_scale=0.5),
                    dict(kernel_size=3, blur=2, compat="potts", normalize="symmetric",
                         feat_scale=0.0, pairwise_weight=2.0)],
    "anisotropic_blur": [dict(kernel_size=3, blur=(1, 2, 3), compat="potts",
                              normalize="symmetric", group=0, feat_scale=0.5),
                         dict(kernel_size=3, dilation=2, blur=(1, 2, 3), compat="potts",
                              normalize="symmetric", group=0, feat_scale=0.5),
                         dict(kernel_size=3, blur=(2, 1, 1), compat="potts",
                              normalize="after")],
    "2d_before_blur3": [dict(kernel_size=3, blur=3, compat="2d", normalize="before")],
    "mixed_levels": [dict(kernel_size=3, compat="4d"),
                     dict(kernel_size=3, blur=2, compat="potts", normalize="after"),
                     dict(kernel_size=3, blur=2, compat="none")],
}


@pytest.mark.parametrize("config", list(CONFIGS_3D))
def test_fast_path_3d_equals_graph_path(config, rng):
    """float32 (what volumes run in): agreement to float32 rounding."""
    crf = PacCRF(3, 3, CONFIGS_3D[config], dtype=np.float32, ndim=3, perturbed_init=True,
                 rng=0, learn_pairwise_weights=True)
    u = rng.normal(size=(2, 3, 7, 9, 11)).astype(np.float32)
    f = rng.normal(size=(2, 2, 7, 9, 11)).astype(np.float32)
    g = crf(u, f).data
    tol = 2e-5 * float(np.abs(g).max())
    np.testing.assert_allclose(crf.infer(u, f), g, rtol=0, atol=tol)
    e = np.exp(g - g.max(axis=1, keepdims=True))
    np.testing.assert_allclose(crf.infer(u, f, output="softmax"),
                               e / e.sum(axis=1, keepdims=True), atol=1e-5)
    lab = crf.infer(u, f, output="labels")
    srt = np.sort(g, axis=1)
    clear = (srt[:, -1] - srt[:, -2]) > 4 * tol  # no near-tie between the two best labels
    np.testing.assert_array_equal(lab[clear], g.argmax(axis=1)[clear])


def test_3d_filter_init_and_validation(rng):
    w = crf_filter_init(3, ndim=3)
    assert w.shape == (1, 1, 3, 3, 3) and w[0, 0, 1, 1, 1] == 0
    np.testing.assert_array_equal(w, np.transpose(w, (0, 1, 4, 3, 2)))
    assert crf_filter_init(3, 4, "4d", ndim=3).shape == (4, 4, 3, 3, 3)
    crf = PacCRF(3, 1, [dict(kernel_size=3, compat="potts")], ndim=3)
    assert crf.messengers[0].weight.shape == (1, 1, 3, 3, 3)
    with pytest.raises(ValueError, match="B, L, D, H, W"):
        crf.infer(rng.normal(size=(1, 3, 5, 6)).astype(np.float32),
                  rng.normal(size=(1, 1, 5, 6)).astype(np.float32))


# ------------------------------------------------------------------------------ refine
def synthetic_volume(shape=(20, 28, 32), seed=0, noise=25.0):
    """A labelled volume (background, a ball, a slab) with intensities per label plus noise,
    and probabilities from its labels with blocky label noise and smooth confusion."""
    rng = np.random.default_rng(seed)
    D, H, W = shape
    z, y, x = np.meshgrid(np.arange(D), np.arange(H), np.arange(W), indexing="ij")
    gt = np.zeros(shape, np.int64)
    gt[((z - D / 2) / (D / 3)) ** 2 + ((y - H / 3) / (H / 4)) ** 2
       + ((x - W / 3) / (W / 4)) ** 2 < 1] = 1
    gt[(x > 0.65 * W) & (y > 0.3 * H) & (y < 0.9 * H)] = 2
    vol = np.array([40.0, 120.0, 200.0])[gt] + rng.normal(0, noise, shape)
    score = np.eye(3)[gt] * 1.0
    for _ in range(25):  # blocky label noise
        c = [int(rng.integers(0, n - 3)) for n in shape]
        score[c[0]:c[0] + 4, c[1]:c[1] + 4, c[2]:c[2] + 4] = np.eye(3)[rng.integers(0, 3)]
    score = score + rng.normal(0, 0.35, score.shape)
    e = np.exp(score / 0.3)
    return vol.astype(np.float32), (e / e.sum(axis=3, keepdims=True)).astype(np.float32), gt


def test_refine_volume_improves_a_noisy_labelled_volume():
    from pacnd.crf import refine

    vol, P, gt = synthetic_volume()
    base = (P.argmax(axis=3) == gt).mean()
    out, Q = refine(vol, P, sxy_bilateral=6.0, srgb=30.0, sxy_gaussian=1.5,
                    return_probabilities=True)
    assert out.shape == gt.shape and Q.shape == P.shape and Q.dtype == np.float32
    np.testing.assert_array_equal(out, Q.argmax(axis=3))
    np.testing.assert_allclose(Q.sum(axis=3), 1.0, rtol=1e-5)
    assert (out == gt).mean() > base + 0.04, ((out == gt).mean(), base)
    # labels kind: a label volume plus gt_prob, as for images
    lab = refine(vol, P.argmax(axis=3), kind="labels", n_labels=3, sxy_bilateral=6.0,
                 srgb=30.0, sxy_gaussian=1.5)
    assert (lab == gt).mean() > base


def test_refine_volume_anisotropic_spacing_follows_the_axes():
    """Permuting the axes of the volume, the scores and the spacing permutes the result:
    a strongly anisotropic spacing must act on the axis it belongs to."""
    from pacnd.crf import refine

    vol, P, gt = synthetic_volume((12, 18, 22), seed=1)
    kw = dict(sxy_bilateral=8.0, srgb=30.0, sxy_gaussian=2.0, return_probabilities=True)
    a, Qa = refine(vol, P, spacing=(4.0, 1.0, 1.0), **kw)
    b, Qb = refine(vol.transpose(2, 1, 0), P.transpose(2, 1, 0, 3), spacing=(1.0, 1.0, 4.0),
                   **kw)
    np.testing.assert_allclose(Qb.transpose(2, 1, 0, 3), Qa, atol=2e-5)
    c, Qc = refine(vol, P, spacing=(1.0, 1.0, 4.0), **kw)
    assert np.abs(Qc - Qa).max() > 1e-2  # the spacing's axis matters
    # a multi-channel (two modalities) volume with one std per channel
    two = np.stack([vol, 255.0 - vol], axis=3)
    d = refine(two, P, srgb=(30.0, 30.0 * np.sqrt(1e6)), sxy_bilateral=8.0, sxy_gaussian=2.0,
               spacing=(4.0, 1.0, 1.0))
    np.testing.assert_array_equal(d, a)  # the second channel's std is huge: no effect


def test_refine_volume_validation():
    from pacnd.crf import refine

    vol, P, gt = synthetic_volume((6, 7, 8))
    with pytest.raises(ValueError, match="spatial size 8x7x5"):
        refine(vol, P[:5])
    with pytest.raises(ValueError, match="spacing=\\(1.0, 1.0\\) has 2 entries for a 3-D"):
        refine(vol, P, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="NaN"):
        refine(np.where(gt == 1, np.nan, vol), P)
    with pytest.raises(ValueError, match="the guide must be"):
        refine(vol[..., None, None], P)
    with pytest.raises(ValueError, match="CRF works on 2-D grids"):
        from pacnd.crf import dense_crf_mapping

        refine(vol, P, params=dense_crf_mapping((7, 8), 3))


def test_fast_path_3d_fuzz_geometry():
    """Tiny volumes, dilations reaching far past them, per-axis blur, every normalisation:
    the 3-D fast path equals the graph path (hypothesis, seeded)."""
    from hypothesis import given, seed, settings
    from hypothesis import strategies as st

    @st.composite
    def problems(draw):
        shape = tuple(draw(st.integers(1, 7)) for _ in range(3))
        kernels = []
        for _ in range(draw(st.integers(1, 3))):
            compat = draw(st.sampled_from(("potts", "2d", "4d")))
            shared = compat != "4d"
            kernels.append(dict(
                kernel_size=3, dilation=draw(st.one_of(st.integers(1, 3), st.integers(4, 20))),
                blur=draw(st.sampled_from((1, 2, (1, 2, 3), (3, 1, 2)))), compat=compat,
                normalize=draw(st.sampled_from(("none", "symmetric", "before", "after")))
                if shared else "none", feat_scale=draw(st.sampled_from((None, 0.0, 0.7)))))
        return shape, kernels, draw(st.integers(0, 2 ** 31 - 1))

    @seed(2024)
    @settings(max_examples=10, deadline=None, derandomize=False, database=None)
    @given(problems())
    def run(problem):
        shape, kernels, rs = problem
        rng = np.random.default_rng(rs)
        crf = PacCRF(3, 2, kernels, dtype=np.float32, ndim=3, perturbed_init=True, rng=rs)
        U = rng.normal(size=(1, 3) + shape).astype(np.float32)
        f = rng.normal(size=(1, 2) + shape).astype(np.float32)
        ref = crf(U, f).data
        np.testing.assert_allclose(crf.infer(U, f), ref, rtol=0,
                                   atol=3e-5 * max(1.0, float(np.abs(ref).max())))

    run()
