"""Image-level filters (``pacnd.filters``), the sample data, the demo and the CLI.

Numerical checks compare against the brute-force loops of ``tests/naive.py``
in float64 to 1e-10 and run on every CPU engine (the ``engine`` fixture).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import naive
import numpy as np
import pytest
from scipy import ndimage

import pacnd.filters as F
from conftest import available_cpu_engines
from pacnd import cli
from pacnd.datasets import data_path, load_cones
from pacnd.demo import make_low_res, run_depth_upsampling_demo

TOL = 1e-10
REPO = Path(__file__).resolve().parents[1]


def close(actual, expected, tol=TOL):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    err = np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-300)
    assert err <= tol, f"relative error {err:.3g} > {tol:g}"


@pytest.fixture
def rng():
    return np.random.default_rng(7)


# =========================================================================== bilateral
@pytest.mark.parametrize("window", ["square", "disk"])
def test_bilateral_rgb_matches_naive(engine, rng, window):
    img = rng.random((9, 11, 3))
    out = F.bilateral(img, sigma_spatial=1.3, sigma_color=0.4, win_size=5, channel_axis=-1,
                      window=window, engine=engine)
    close(out, naive.bilateral(img, img, 1.3, 0.4, 5, window))
    assert out.dtype == np.float64 and out.shape == img.shape


@pytest.mark.parametrize("shape,win", [((13,), 5), ((8, 9), 3), ((5, 6, 4), 3)])
def test_bilateral_gray_1d_2d_3d_matches_naive(engine, rng, shape, win):
    img = rng.random(shape)
    out = F.bilateral(img, sigma_spatial=0.9, sigma_color=0.25, win_size=win, engine=engine)
    close(out, naive.bilateral(img[..., None], img[..., None], 0.9, 0.25, win)[..., 0])


def test_bilateral_window_larger_than_image(engine, rng):
    img = rng.random((4, 3))
    out = F.bilateral(img, sigma_spatial=2.0, sigma_color=0.5, win_size=9, engine=engine)
    close(out, naive.bilateral(img[..., None], img[..., None], 2.0, 0.5, 9)[..., 0])


def test_bilateral_default_sigma_color_is_image_std(engine, rng):
    img = rng.random((7, 8))
    out = F.bilateral(img, sigma_spatial=1.0, engine=engine)
    close(out, naive.bilateral(img[..., None], img[..., None], 1.0, img.std(), 7)[..., 0])


def test_bilateral_laplacian_kernel(engine, rng):
    img = rng.random((6, 7))
    sc = 0.3
    out = F.bilateral(img, sigma_spatial=1.0, sigma_color=sc, win_size=3, kernel="laplacian",
                      engine=engine)
    exp = np.zeros_like(img)
    for i in range(6):
        for j in range(7):
            num = den = 0.0
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    y, x = i + di, j + dj
                    if 0 <= y < 6 and 0 <= x < 7:
                        d2 = ((img[y, x] - img[i, j]) / sc) ** 2
                        w = np.exp(-0.5 * (di * di + dj * dj)) * np.exp(-np.sqrt(d2 + 1e-4))
                        num += w * img[y, x]
                        den += w
            exp[i, j] = num / den
    close(out, exp)


def test_bilateral_preserves_step_edge(engine, rng):
    img = np.zeros((20, 20), np.float32)
    img[:, 10:] = 1
    noisy = img + 0.03 * rng.standard_normal(img.shape).astype(np.float32)
    out = F.bilateral(noisy, sigma_spatial=2, sigma_color=0.2, engine=engine)
    assert out.dtype == np.float32
    assert np.abs(out - img).max() < 0.1
    assert np.abs(out - img).std() < np.abs(noisy - img).std()


def _coords(shape, scale):
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    return [scale * gr for gr in grids]


def test_bilateral_equals_paper_formulation(engine, rng):
    """Spatial term in the guide, W = 1, normalize=True (the PAC paper's construction)."""
    import pacnd

    img = rng.random((9, 10, 2))
    ss, sc, win = 1.4, 0.3, 5
    out = F.bilateral(img, sigma_spatial=ss, sigma_color=sc, win_size=win, channel_axis=-1,
                      engine=engine)
    x = np.moveaxis(img, -1, 0)[None]
    guide = np.concatenate([x[0] / sc, np.stack(_coords(img.shape[:2], 1 / ss))])[None]
    ref = pacnd.pac_conv(np.ascontiguousarray(x), np.ascontiguousarray(guide),
                         np.ones((1, 1, win, win)), shared=True, padding=win // 2,
                         normalize=True, engine=engine)
    close(out, np.moveaxis(ref[0], 0, -1))


@pytest.mark.parametrize("factor,win", [(2, 5), (3, 7), (4, 9)])
def test_jbu_equals_reference_joint_bilateral_module(engine, rng, factor, win):
    """NVlabs/pacnet's JointBilateral baseline: PAC^T with guide (RGB*scale_color,
    y*scale_space, x*scale_space), identity weight, normalize_kernel=True,
    padding 1 + (k - f - 1)//2, output_padding (k - f) % 2."""
    import pacnd

    low = rng.random((3, 4))
    guide = rng.random((3 * factor, 4 * factor, 3))
    ss, sc = 0.6, 0.25
    out = F.joint_bilateral_upsample(low, guide, factor=factor, sigma_spatial=ss,
                                     sigma_color=sc, win_size=win, engine=engine)
    g = np.concatenate([np.moveaxis(guide, -1, 0) / sc,
                        np.stack(_coords(guide.shape[:2], 1 / (ss * factor)))])[None]
    ref = pacnd.pac_conv_transpose(low[None, None], np.ascontiguousarray(g),
                                   np.ones((1, 1, win, win)), stride=factor,
                                   padding=1 + (win - factor - 1) // 2,
                                   output_padding=(win - factor) % 2, normalize=True,
                                   engine=engine)
    close(out, ref[0, 0])


# =========================================================================== joint bilateral
def test_joint_bilateral_matches_naive(engine, rng):
    img = rng.random((8, 10, 3))
    guide = rng.random((8, 10, 2))
    out = F.joint_bilateral(img, guide, sigma_spatial=1.1, sigma_color=0.3, win_size=5,
                            channel_axis=-1, engine=engine)
    close(out, naive.bilateral(img, guide, 1.1, 0.3, 5))


def test_joint_bilateral_gray_image_rgb_guide(engine, rng):
    img = rng.random((7, 9))
    guide = rng.random((7, 9, 3))
    out = F.joint_bilateral(img, guide, sigma_spatial=1.0, sigma_color=0.5, win_size=3,
                            engine=engine)
    close(out, naive.bilateral(img[..., None], guide, 1.0, 0.5, 3)[..., 0])


def test_joint_bilateral_guide_channel_axis_follows_image(engine, rng):
    img = rng.random((2, 7, 9))           # channels first
    guide = rng.random((3, 7, 9))
    out = F.joint_bilateral(img, guide, sigma_spatial=1.0, sigma_color=0.5, win_size=3,
                            channel_axis=0, engine=engine)
    exp = naive.bilateral(np.moveaxis(img, 0, -1), np.moveaxis(guide, 0, -1), 1.0, 0.5, 3)
    close(out, np.moveaxis(exp, -1, 0))


@pytest.mark.parametrize("sigma", [0.8, 1.7])
def test_joint_bilateral_constant_guide_is_normalised_gaussian_blur(engine, rng, sigma):
    img = rng.random((12, 15))
    win = 7
    out = F.joint_bilateral(img, np.full(img.shape, 0.3), sigma_spatial=sigma, sigma_color=0.1,
                            win_size=win, engine=engine)
    t = np.arange(win) - win // 2
    g1 = np.exp(-0.5 * (t / sigma) ** 2)
    w = np.outer(g1, g1)
    num = ndimage.correlate(img, w, mode="constant", cval=0.0)
    den = ndimage.correlate(np.ones_like(img), w, mode="constant", cval=0.0)
    close(out, num / den)


# =========================================================================== JBU
@pytest.mark.parametrize("factor,win", [(2, 5), (3, 7), (4, 9), (4, 5)])
def test_jbu_matches_naive(engine, rng, factor, win):
    low = rng.random((3, 4, 2))
    guide = rng.random((3 * factor, 4 * factor, 3))
    out = F.joint_bilateral_upsample(low, guide, factor=factor, sigma_spatial=0.7,
                                     sigma_color=0.4, win_size=win, channel_axis=-1,
                                     engine=engine)
    close(out, naive.joint_bilateral_upsample(low, guide, factor, 0.7, 0.4, win))


def test_jbu_gray_default_window_and_sigma(engine, rng):
    low = rng.random((3, 3))
    guide = rng.random((6, 6))
    out = F.joint_bilateral_upsample(low, guide, factor=2, sigma_spatial=0.5, engine=engine)
    win = 2 * max(int(np.ceil(3 * 0.5 * 2)), 1) + 1
    exp = naive.joint_bilateral_upsample(low[..., None], guide[..., None], 2, 0.5, guide.std(),
                                         win)
    close(out, exp[..., 0])


def test_jbu_1d_and_3d(engine, rng):
    low = rng.random((5,))
    guide = rng.random((15,))
    out = F.joint_bilateral_upsample(low, guide, factor=3, sigma_spatial=0.8, sigma_color=0.3,
                                     win_size=7, engine=engine)
    close(out, naive.joint_bilateral_upsample(low[:, None], guide[:, None], 3, 0.8, 0.3,
                                              7)[:, 0])
    low3 = rng.random((2, 2, 3))
    guide3 = rng.random((4, 4, 6))
    out3 = F.joint_bilateral_upsample(low3, guide3, factor=2, sigma_spatial=0.8,
                                      sigma_color=0.3, win_size=3, engine=engine)
    close(out3, naive.joint_bilateral_upsample(low3[..., None], guide3[..., None], 2, 0.8, 0.3,
                                               3)[..., 0])


def test_jbu_mask_matches_naive_and_marks_empty_windows(engine, rng):
    low = rng.random((4, 4))
    guide = rng.random((8, 8))
    mask = np.ones((4, 4), bool)
    mask[1, 2] = mask[3, 0] = False
    out = F.joint_bilateral_upsample(low, guide, factor=2, sigma_spatial=0.7, sigma_color=0.3,
                                     win_size=3, mask=mask, engine=engine)
    exp = naive.joint_bilateral_upsample(low[..., None], guide[..., None], 2, 0.7, 0.3, 3,
                                         mask=mask)[..., 0]
    assert np.array_equal(np.isnan(out), np.isnan(exp)) and np.isnan(out).any()
    ok = ~np.isnan(exp)
    close(out[ok], exp[ok])


@pytest.mark.parametrize("factor", [2, 3, 8])
def test_jbu_of_constant_is_constant(engine, rng, factor):
    low = np.full((3, 4, 2), 0.37)
    guide = rng.random((3 * factor, 4 * factor, 3))
    out = F.joint_bilateral_upsample(low, guide, factor=factor, sigma_spatial=1.0,
                                     sigma_color=0.05, channel_axis=-1, engine=engine)
    assert np.abs(out - 0.37).max() < 1e-12


@pytest.mark.parametrize("factor", [2, 3, 4, 5, 8])
def test_jbu_sampling_convention(engine, rng, factor):
    """Low-res sample i sits on high-res pixel i*factor + (factor-1)//2."""
    o = (factor - 1) // 2
    assert F.jbu_sample_offset(factor) == o
    high = rng.random((4 * factor, 3 * factor))
    low = make_low_res(high, factor)
    assert np.array_equal(low, high[o::factor, o::factor])
    flat = np.zeros_like(high)
    # tiny spatial sigma: every output copies its nearest sample, exactly at sample positions
    out = F.joint_bilateral_upsample(low, flat, factor=factor, sigma_spatial=0.05,
                                     sigma_color=1.0, engine=engine)
    assert np.abs(out[o::factor, o::factor] - low).max() < 1e-12
    # each block [i*f, (i+1)*f) holds sample i (for odd factors exactly centred)
    if factor % 2:
        blocks = np.repeat(np.repeat(low, factor, 0), factor, 1)
        assert np.abs(out - blocks).max() < 1e-12
    # a step in the guide between pixels 2f-1 and 2f is reproduced wherever it lies
    guide = np.zeros_like(high)
    guide[:, 2 * factor + o:] = 1.0
    step = guide[o::factor, o::factor].copy()
    up = F.joint_bilateral_upsample(step, guide, factor=factor, sigma_spatial=1.0,
                                    sigma_color=0.05, engine=engine)
    assert np.abs(up - guide).max() < 1e-6


def test_jbu_underflow_falls_back_to_spatial_weights(engine):
    # even factor: no sample at the output pixel itself; with a huge colour jump and a tiny
    # sigma_color all range weights underflow at the odd pixel out
    low = np.array([[1.0, 2.0], [3.0, 4.0]])
    guide = np.zeros((4, 4))
    guide[2, 2] = 1.0
    out = F.joint_bilateral_upsample(low, guide, factor=2, sigma_spatial=0.5, sigma_color=1e-3,
                                     win_size=3, engine=engine)
    assert np.isfinite(out).all()
    w = naive.joint_bilateral_upsample(low[..., None], np.zeros((4, 4, 1)), 2, 0.5, 1.0, 3)
    assert abs(out[2, 2] - w[2, 2, 0]) < 1e-12


# =========================================================================== DPP
DPP_CASES = [
    dict(size=2, stride=2, padding=0, alpha=0.1, lam=1.0),
    dict(size=3, stride=2, padding=1, alpha=0.5, lam=2.0, asym=True),
    dict(size=2, stride=1, padding=1, alpha=0.0, lam=0.7, reference="dpid"),
    dict(size=3, stride=3, padding=0, alpha=1.0, lam=-1.0, eps=1e-2),
    dict(size=1, stride=1, padding=0, alpha=0.2, lam=1.5),
]


@pytest.mark.parametrize("case", DPP_CASES)
def test_dpp_matches_naive(engine, rng, case):
    img = rng.random((7, 8, 2))
    out = F.detail_preserving_pool(img, channel_axis=-1, engine=engine, **case)
    close(out, naive.detail_preserving_pool(img, **case))


def test_dpp_per_channel_params_and_array_reference(engine, rng):
    img = rng.random((2, 6, 7))                         # channels first
    alpha = np.array([0.0, 0.3])
    lam = np.array([1.0, 2.5])
    ref = rng.random((2, 3, 3))
    out = F.detail_preserving_pool(img, size=2, alpha=alpha, lam=lam, reference=ref,
                                   channel_axis=0, engine=engine)
    exp = naive.detail_preserving_pool(np.moveaxis(img, 0, -1), 2, 2, 0, alpha, lam,
                                       reference=np.moveaxis(ref, 0, -1))
    close(out, np.moveaxis(exp, -1, 0))


@pytest.mark.parametrize("shape", [(11,), (5, 6, 4)])
def test_dpp_1d_3d(engine, rng, shape):
    img = rng.random(shape)
    out = F.detail_preserving_pool(img, size=2, stride=2, alpha=0.2, lam=1.3, asym=True,
                                   engine=engine)
    close(out, naive.detail_preserving_pool(img[..., None], 2, 2, 0, 0.2, 1.3, asym=True)[..., 0])


def test_dpp_lam_zero_is_average_pooling(engine, rng):
    img = rng.random((6, 9))
    out = F.detail_preserving_pool(img, size=3, stride=3, alpha=0.4, lam=0.0, engine=engine)
    avg = img.reshape(2, 3, 3, 3).mean(axis=(1, 3))
    close(out, avg)


def test_dpp_magnifies_details(engine):
    img = np.full((4, 4), 0.5)
    img[0, 0] = 1.0
    out = F.detail_preserving_pool(img, size=2, alpha=0.0, lam=2.0, engine=engine)
    assert out[0, 0] > img[:2, :2].mean() + 0.2
    assert np.allclose(out.ravel()[1:], 0.5)


# =========================================================================== dtype / layout
def test_float32_preserved_float16_promoted(engine, rng):
    img = rng.random((6, 7)).astype(np.float32)
    assert F.bilateral(img, sigma_color=0.3, engine=engine).dtype == np.float32
    assert F.bilateral(img.astype(np.float16), sigma_color=0.3, engine=engine).dtype == \
        np.float32
    assert F.detail_preserving_pool(img, engine=engine).dtype == np.float32
    g = rng.random((12, 14))                           # float64 guide is cast to float32
    assert F.joint_bilateral_upsample(img, g, factor=2, sigma_color=0.3,
                                      engine=engine).dtype == np.float32
    assert F.joint_bilateral(img, g[:6, :7], sigma_color=0.3, engine=engine).dtype == np.float32


def test_integer_images_become_float_in_unit_range(engine, rng):
    img8 = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    out = F.bilateral(img8, sigma_spatial=1, sigma_color=0.2, channel_axis=-1, engine=engine)
    assert out.dtype == np.float64
    close(out, F.bilateral(img8 / 255.0, sigma_spatial=1, sigma_color=0.2, channel_axis=-1,
                           engine=engine))
    img16 = rng.integers(0, 65536, (6, 7), dtype=np.uint16)
    close(F.detail_preserving_pool(img16, engine=engine),
          F.detail_preserving_pool(img16 / 65535.0, engine=engine))
    imgi = rng.integers(-100, 100, (6, 7)).astype(np.int8)
    close(F.bilateral(imgi, sigma_color=0.2, engine=engine),
          F.bilateral(imgi / 127.0, sigma_color=0.2, engine=engine))
    b = rng.random((6, 7)) > 0.5
    close(F.bilateral(b, sigma_color=0.5, engine=engine),
          F.bilateral(b.astype(float), sigma_color=0.5, engine=engine))
    # integer guide scaled the same way
    guide8 = rng.integers(0, 256, (6, 7), dtype=np.uint8)
    img = rng.random((6, 7))
    close(F.joint_bilateral(img, guide8, sigma_color=0.1, engine=engine),
          F.joint_bilateral(img, guide8 / 255.0, sigma_color=0.1, engine=engine))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_channel_axis_layout(engine, rng, axis):
    base = rng.random((6, 7, 3))                       # channels last
    img = np.moveaxis(base, -1, axis)
    out = F.bilateral(img, sigma_color=0.3, win_size=3, channel_axis=axis, engine=engine)
    assert out.shape == img.shape
    ref = F.bilateral(base, sigma_color=0.3, win_size=3, channel_axis=-1, engine=engine)
    close(np.moveaxis(out, axis, -1), ref)
    pooled = F.detail_preserving_pool(img, size=2, channel_axis=axis, engine=engine)
    assert np.moveaxis(pooled, axis, -1).shape == (3, 3, 3)


def test_channels_are_filtered_jointly(engine, rng):
    """One weight per pixel pair shared by all channels (not per-channel filtering)."""
    img = rng.random((6, 7, 2))
    joint = F.bilateral(img, sigma_color=0.2, win_size=3, channel_axis=-1, engine=engine)
    sep = np.stack([F.bilateral(img[..., c], sigma_color=0.2, win_size=3, engine=engine)
                    for c in range(2)], axis=-1)
    assert np.abs(joint - sep).max() > 1e-3


# =========================================================================== validation
def _img():
    return np.zeros((8, 8), np.float32)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: F.bilateral(np.zeros((2, 2, 2, 2, 2))), ValueError, "spatial dimension"),
    (lambda: F.bilateral(np.zeros((2, 2, 2, 2, 3)), channel_axis=-1), ValueError,
     "1, 2 or 3 spatial"),
    (lambda: F.bilateral(_img(), channel_axis=2), ValueError, "channel_axis=2 is out of range"),
    (lambda: F.bilateral(_img(), channel_axis=1.0), TypeError, "channel_axis must be an int"),
    (lambda: F.bilateral(_img(), sigma_spatial=0), ValueError, "sigma_spatial=0.0 is invalid"),
    (lambda: F.bilateral(_img(), sigma_spatial=-1), ValueError, "positive"),
    (lambda: F.bilateral(_img(), sigma_spatial="1"), TypeError, "sigma_spatial must be"),
    (lambda: F.bilateral(_img(), sigma_color=0.0), ValueError, "sigma_color=0.0 is invalid"),
    (lambda: F.bilateral(_img(), sigma_color=float("nan")), ValueError, "sigma_color"),
    (lambda: F.bilateral(_img(), win_size=4), ValueError, "win_size=4 is even.*5"),
    (lambda: F.bilateral(_img(), win_size=-3), ValueError, "win_size=-3 is invalid"),
    (lambda: F.bilateral(_img(), win_size=3.0), TypeError, "win_size must be an int"),
    (lambda: F.bilateral(_img(), kernel="box"), ValueError, "kernel='box' is not supported"),
    (lambda: F.bilateral(_img(), window="round"), ValueError, "window='round'"),
    (lambda: F.bilateral(np.full((4, 4), np.nan)), ValueError, "image contains 16 NaN"),
    (lambda: F.bilateral(np.zeros((4, 4), complex)), TypeError, "image has dtype complex128"),
    (lambda: F.bilateral("img"), TypeError, "image must be a NumPy array"),
    (lambda: F.bilateral(np.zeros((0, 4))), ValueError, "image is empty"),
    (lambda: F.joint_bilateral(_img(), np.zeros((8, 9))), ValueError,
     r"guide has shape \(8, 9\)"),
    (lambda: F.joint_bilateral(_img(), np.zeros((8, 9, 3))), ValueError,
     r"spatial size \(8, 9\)"),
    (lambda: F.joint_bilateral(_img(), np.zeros((8, 8, 3, 1))), ValueError,
     "guide has 4 dimensions"),
    (lambda: F.joint_bilateral(_img(), np.full((8, 8), np.inf)), ValueError,
     "guide contains infinite"),
    (lambda: F.joint_bilateral_upsample(_img(), np.zeros((16, 16)), factor=0), ValueError,
     "factor=0 is invalid"),
    (lambda: F.joint_bilateral_upsample(_img(), np.zeros((16, 16)), factor=2.0), TypeError,
     "factor must be a positive int"),
    (lambda: F.joint_bilateral_upsample(_img(), np.zeros((16, 16)), factor=True), TypeError,
     "factor must be a positive int"),
    (lambda: F.joint_bilateral_upsample(_img(), np.zeros((16, 17)), factor=2), ValueError,
     r"must be \(16, 16\)"),
    (lambda: F.joint_bilateral_upsample(_img(), np.zeros((16, 16)), factor=4), ValueError,
     r"must be \(32, 32\)"),
    (lambda: F.joint_bilateral_upsample(_img(), np.zeros((32, 32)), factor=4, win_size=3),
     ValueError, "win_size=3 is smaller than factor=4"),
    (lambda: F.joint_bilateral_upsample(_img(), np.zeros((16, 16)), factor=2, win_size=4),
     ValueError, "win_size=4 is even"),
    (lambda: F.joint_bilateral_upsample(np.full((8, 8), np.nan), np.zeros((16, 16)), factor=2),
     ValueError, "low_res contains NaN.*mask=np.isfinite"),
    (lambda: F.joint_bilateral_upsample(_img(), np.zeros((16, 16)), factor=2,
                                        mask=np.ones((8, 8))), TypeError,
     "mask has dtype float64; give a boolean"),
    (lambda: F.joint_bilateral_upsample(_img(), np.zeros((16, 16)), factor=2,
                                        mask=np.ones((8, 7), bool)), ValueError,
     r"mask has shape \(8, 7\)"),
    (lambda: F.joint_bilateral_upsample(_img(), np.zeros((16, 16)), factor=2,
                                        sigma_spatial=0), ValueError, "sigma_spatial=0.0"),
    (lambda: F.detail_preserving_pool(_img(), size=0), ValueError, "size=0 is invalid"),
    (lambda: F.detail_preserving_pool(_img(), size=2, stride=0), ValueError,
     "stride=0 is invalid"),
    (lambda: F.detail_preserving_pool(_img(), size=3, padding=2), ValueError,
     "padding=2 is larger than size // 2"),
    (lambda: F.detail_preserving_pool(_img(), size=9), ValueError, "larger than the image"),
    (lambda: F.detail_preserving_pool(_img(), alpha=-0.1), ValueError, "alpha=-0.1 must be >= 0"),
    (lambda: F.detail_preserving_pool(_img(), lam=float("inf")), ValueError, "lam=inf must be"),
    (lambda: F.detail_preserving_pool(_img(), lam=np.ones(3)), ValueError,
     r"lam has shape \(3,\)"),
    (lambda: F.detail_preserving_pool(_img(), eps=0), ValueError, "eps=0.0 is invalid"),
    (lambda: F.detail_preserving_pool(_img(), reference="gauss"), ValueError,
     "reference='gauss' is not supported"),
    (lambda: F.detail_preserving_pool(_img(), reference=np.zeros((3, 3))), ValueError,
     r"reference has shape \(3, 3\).*\(4, 4\)"),
    (lambda: F.detail_preserving_pool(_img(), asym=1), TypeError, "asym must be True or False"),
])
def test_validation_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# =========================================================================== data, demo, CLI
def test_load_cones():
    rgb, disp = load_cones()
    assert rgb.shape == (375, 450, 3) and rgb.dtype == np.uint8
    assert disp.shape == (375, 450) and disp.dtype == np.float32
    unknown = np.isnan(disp)
    assert 0.01 < unknown.mean() < 0.06
    assert np.nanmin(disp) > 0 and np.nanmax(disp) <= 255 / 4
    # quarter-pixel steps (PNG value / 4)
    assert np.allclose(disp[~unknown] * 4, np.round(disp[~unknown] * 4))
    assert (data_path("ATTRIBUTION.md")).is_file()
    with pytest.raises(FileNotFoundError, match="available"):
        data_path("nope.png")


def _check_png(path, min_size=(100, 50)):
    from PIL import Image

    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1]


def test_demo_end_to_end_reduced(engine, tmp_path, capsys):
    out = tmp_path / "demo.png"
    res = run_depth_upsampling_demo(out, factor=4, crop=(64, 96), engine=engine)
    assert res["output"] == os.fspath(out)
    _check_png(out)
    assert res["jbu"].shape == res["ground_truth"].shape == (64, 96)
    assert np.isfinite(res["rmse_bicubic"]) and np.isfinite(res["rmse_jbu"])
    assert res["rmse_jbu"] < res["rmse_bicubic"]
    assert res["pac"].shape == (64, 96) and np.isfinite(res["rmse_pac"])
    text = capsys.readouterr().out
    assert "bicubic" in text and "RMSE" in text and "figure written" in text
    assert "PAC network (pretrained)" in text


def test_demo_without_weights_for_the_factor_says_so(capsys):
    res = run_depth_upsampling_demo(None, factor=3, crop=(60, 60))
    assert res["pac"] is None and "rmse_pac" not in res
    assert "no pretrained PAC network for x3" in capsys.readouterr().out
    res = run_depth_upsampling_demo(None, factor=4, crop=(64, 64), learned=False, verbose=False)
    assert res["pac"] is None


def test_demo_rejects_bad_factor():
    with pytest.raises(ValueError, match="factor=1 is invalid"):
        run_depth_upsampling_demo(None, factor=1)
    with pytest.raises(ValueError, match="too small for factor=64"):
        run_depth_upsampling_demo(None, factor=64, crop=(100, 100))


def test_cli_errors_are_one_line(capsys):
    assert cli.main(["demo", "--factor", "0", "-o", os.devnull]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pacnd demo: error: factor=0 is invalid") and "\n" not in err
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--factor", "eight"])
    assert e.value.code == 2
    assert "invalid int value" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main([])
    assert e.value.code == 2


def test_python_m_pacnd_demo(tmp_path):
    """README command (1): the full demo through ``python -m pacnd``.

    It runs on the default engine; when only the slow NumPy reference is
    available (or forced by PACND_ENGINE=numpy) a crop keeps it quick.
    """
    out = tmp_path / "tmp.png"
    env = dict(os.environ)
    env.pop("PACND_ENGINE", None)
    cmd = [sys.executable, "-m", "pacnd", "demo", "-o", str(out)]
    if "numba" not in available_cpu_engines():
        cmd += ["--crop", "96", "128"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "RMSE" in proc.stdout
    _check_png(out, (800, 150))
