"""pacnd.crf.refine: the training-free post-processor, the dense-CRF -> PAC-CRF mapping,
the ConvCRF baseline, the "unary from labels" recipe and input validation."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import reference_dir

from pacnd.crf import (convcrf_refine, dense_crf_mapping, labels_from_annotation,
                       read_label_image, refine, unary_from_labels)
from pacnd.crf.refine import auto_blur, ring_kernels, voronoi_weights

DATA = reference_dir().parent / "data"
PDE = DATA / "pydensecrf_examples"
VOC = DATA / "voc2007"
needs_pde = pytest.mark.skipif(not PDE.is_dir(), reason=f"sample data not found at {PDE}")
needs_voc = pytest.mark.skipif(not VOC.is_dir(), reason=f"sample data not found at {VOC}")


def _rgb(path):
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# ------------------------------------------------------------------------------ recipe
def test_unary_from_labels_recipe():
    lab = np.array([[0, 1, -1], [2, 2, 0]])
    P = unary_from_labels(lab, 3, gt_prob=0.7)
    assert P.shape == (2, 3, 3) and P.dtype == np.float32
    np.testing.assert_allclose(P[0, 0], [0.7, 0.15, 0.15])
    np.testing.assert_allclose(P[0, 1], [0.15, 0.7, 0.15])
    np.testing.assert_allclose(P[0, 2], [1 / 3] * 3)          # unknown: uniform
    np.testing.assert_allclose(P.sum(axis=2), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="gt_prob"):
        unary_from_labels(lab, 3, gt_prob=1.0)
    with pytest.raises(ValueError, match="n_labels=2"):
        unary_from_labels(lab, 2)


def test_labels_from_annotation_order_and_unknown():
    anno = np.zeros((2, 3, 3), np.uint8)
    anno[0, 0] = (0, 128, 0)       # code 32768
    anno[0, 1] = (64, 64, 0)       # code 16448 -> label 0
    anno[1, 2] = (0, 128, 0)
    labels, colors = labels_from_annotation(anno)
    np.testing.assert_array_equal(colors, [[64, 64, 0], [0, 128, 0]])
    np.testing.assert_array_equal(labels, [[1, 0, -1], [-1, -1, 1]])


@needs_pde
def test_annotation_and_label_map_give_the_same_result():
    img = _rgb(PDE / "im3.png")
    anno = read_label_image(PDE / "anno3.png")
    labels, colors = labels_from_annotation(anno)
    a = refine(img, anno, kind="labels")
    b = refine(img, labels, kind="labels", n_labels=len(colors))
    c = refine(img, unary_from_labels(labels, len(colors), 0.7))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


# ------------------------------------------------------------------------------ quality
@needs_pde
@pytest.mark.parametrize("i", [1, 2, 3])
def test_refine_pydensecrf_example_improves_over_unaries(i):
    """Annotation -> unaries (gt_prob 0.7) -> refine: closer to the fully-connected CRF's
    own result (out*.png) than the unaries' argmax, and far from trivial."""
    img = _rgb(PDE / f"im{i}.png")
    anno = read_label_image(PDE / f"anno{i}.png")
    labels, colors = labels_from_annotation(anno)
    ref_rgb = read_label_image(PDE / f"out{i}.png")
    ref = np.full(labels.shape, -1)
    for li, c in enumerate(colors):
        ref[(ref_rgb == c).all(axis=2)] = li
    P = unary_from_labels(labels, len(colors), 0.7)
    out, Q = refine(img, anno, kind="labels", return_probabilities=True)
    assert out.shape == labels.shape and out.dtype.kind == "i"
    assert Q.shape == P.shape and Q.dtype == np.float32
    np.testing.assert_allclose(Q.sum(axis=2), 1.0, rtol=1e-4)
    np.testing.assert_array_equal(out, Q.argmax(axis=2))
    base = (P.argmax(axis=2) == ref).mean()
    got = (out == ref).mean()
    assert got > base + 0.04, (base, got)
    assert got > 0.9


@needs_voc
def test_refine_voc_corrupted_unaries_improves_accuracy():
    img = _rgb(VOC / "2007_000346_0img.png")
    from PIL import Image

    gt = np.asarray(Image.open(VOC / "2007_000346_5labels.png")).astype(np.int64)
    rng = np.random.default_rng(0)
    L = 21
    onehot = np.eye(L, dtype=np.float32)[gt]
    # blocky label noise on a coarse grid + pixel noise, then a temperature softmax
    noisy = onehot.copy()
    for _ in range(40):
        y, x = rng.integers(0, gt.shape[0] - 16), rng.integers(0, gt.shape[1] - 16)
        noisy[y:y + 16, x:x + 16] = np.eye(L, dtype=np.float32)[rng.integers(0, L)]
    s = noisy + rng.normal(0, 0.3, noisy.shape).astype(np.float32)
    e = np.exp((s - s.max(axis=2, keepdims=True)) / 0.4)
    P = e / e.sum(axis=2, keepdims=True)
    base = (P.argmax(axis=2) == gt).mean()
    for out in (refine(img, P), convcrf_refine(img, P),
                refine(img, np.log(P), kind="logits")):
        assert (out == gt).mean() > base + 0.03
    # logits and probabilities give the same result (P is well above the clip floor)
    np.testing.assert_array_equal(refine(img, P), refine(img, np.log(P), kind="logits"))


# ------------------------------------------------------------------------------ mapping
def test_mapping_structure():
    assert auto_blur(40) == 3 and auto_blur(10) == 1 and auto_blur(1000) == 8
    assert ring_kernels(1.5) == [(3, 1)]
    assert ring_kernels(40) == [(5, 1), (5, 3), (5, 9), (3, 27)]
    assert ring_kernels(10, 3) == [(3, 1), (3, 2), (3, 4), (3, 8)]
    crf = dense_crf_mapping((375, 500), 21)
    ks = crf.kernels
    # defaults: Gaussian std sxy / 2 truncated at sxy, on a 3-pixel grid
    assert [(k.kernel_size, k.dilation) for k in ks] == [(5, 1), (5, 3), (5, 9), (3, 27),
                                                        (3, 1)]
    assert all(k.blur == 3 and k.compat == "potts" and k.normalize == "symmetric" for k in ks)
    assert [k.group for k in ks] == [0, 0, 0, 0, 1]
    assert [k.pairwise_weight for k in ks] == [10.0] * 4 + [3.0]
    assert ks[0].feat_scale == pytest.approx(1 / 13) and ks[4].feat_scale == 0.0
    assert crf.num_steps == 5
    # the bilateral term's taps are the quadrature of a Gaussian with std 40 px
    W = [crf.messengers[i].weight.data[0, 0] for i in range(4)]
    np.testing.assert_allclose(W[0][1:4, 1:4], np.exp(-((np.arange(-1, 2) * 3.0)[:, None] ** 2
                                                        + (np.arange(-1, 2) * 3.0) ** 2)
                                                       / (2 * 40.0 ** 2)), rtol=1e-6)
    # the literal mapping (std = sxy, 4-pixel grid) is still available
    lit = dense_crf_mapping((375, 500), 21, sxy_scale=1.0, blur=4)
    assert [(k.kernel_size, k.dilation, k.blur) for k in lit.kernels] == [
        (5, 1, 4), (5, 3, 4), (5, 9, 4), (3, 27, 4), (3, 1, 4)]
    # dropping a term
    assert len(dense_crf_mapping((100, 100), 3, compat_gaussian=0).kernels) == 4


def test_voronoi_weights_are_a_quadrature():
    """The tap weights sum to the Gaussian mass of the covered square, interior taps keep
    their own offset's Gaussian, border taps collect their Voronoi cell, and a position
    shared by two rings is counted once."""
    rings = [(5, 1), (5, 3)]
    w = voronoi_weights(rings, 2, 7.0)
    R = 2 * 3 + 1
    o = np.arange(-R, R + 1) * 2.0
    total = np.exp(-(o[:, None] ** 2 + o[None, :] ** 2) / (2 * 49)).sum()
    assert sum(x.sum() for x in w) == pytest.approx(total)
    g = np.exp(-((np.arange(-2, 3) * 2.0)[:, None] ** 2 + (np.arange(-2, 3) * 2.0) ** 2)
               / (2 * 49))
    np.testing.assert_allclose(w[0][1:4, 1:4], g[1:4, 1:4])  # interior taps: own offset only
    assert (w[0] >= g - 1e-12).all()
    assert w[1][2, 2] == 0  # the centre belongs to the inner kernel


# ------------------------------------------------------------------------------ validation
@pytest.fixture
def small():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    P = rng.dirichlet(np.ones(3), (20, 24)).astype(np.float32)
    return img, P


def test_refine_small_runs_and_channel_axis(small):
    img, P = small
    a = refine(img, P)
    b = refine(img, np.moveaxis(P, 2, 0), channel_axis=0)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (20, 24)
    assert refine(img, P, iterations=0).tolist() == P.argmax(axis=2).tolist()


@pytest.mark.parametrize("bad, kwargs, exc, match", [
    ("image_2d_wrong", {}, ValueError, "the guide must be"),
    ("image_rgba", {}, ValueError, "alpha"),
    ("image_str", {}, TypeError, "image must be"),
    ("size", {}, ValueError, "spatial size 24x19"),
    ("negative", {}, ValueError, "must be >= 0"),
    ("sum", {}, ValueError, "sum to 1"),
    ("nan", {}, ValueError, "NaN"),
    ("one_label", {}, ValueError, "at least 2"),
    ("ok", {"kind": "probs"}, ValueError, "kind='probs'"),
    ("ok", {"sxy_bilateral": 0}, ValueError, "sxy_bilateral=0"),
    ("ok", {"srgb": -1}, ValueError, "srgb=-1"),
    ("ok", {"iterations": -1}, ValueError, "iterations=-1"),
    ("ok", {"iterations": 2.5}, TypeError, "iterations must be an int"),
    ("ok", {"compat_bilateral": float("nan")}, ValueError, "compat_bilateral"),
    ("ok", {"method": "dense"}, ValueError, "method='dense'"),
    ("ok", {"params": 3}, TypeError, "params must be"),
    ("ok", {"params": "/nonexistent/crf.npz"}, FileNotFoundError, "no CRF parameter file"),
    ("ok", {"n_labels": 4}, ValueError, "n_labels=4"),
    ("ok", {"return_probabilities": "yes"}, TypeError, "return_probabilities"),
    ("ok", {"channel_axis": 5}, ValueError, "channel_axis=5"),
    ("float_labels", {"kind": "labels"}, TypeError, "integers"),
    ("int_labels", {"kind": "labels", "gt_prob": 1.5}, ValueError, "gt_prob=1.5"),
    ("ok", {"kind": "labels"}, TypeError, "must hold integers"),
    ("ok", {"spacing": (1, 0)}, ValueError, "spacing"),
    ("ok", {"spacing": (1, 1, 1)}, ValueError, "3 entries for a 2-D grid"),
    ("ok", {"srgb": (13, 13)}, ValueError, "srgb has 2 entries"),
    ("probs_5d", {}, ValueError, "\\(D, H, W, L\\)"),
    ("int_labels", {"kind": "labels", "n_labels": 2}, ValueError, "labels holds 2"),
])
def test_refine_validation(small, bad, kwargs, exc, match):
    img, P = small
    if bad == "image_2d_wrong":
        img = img[..., 0].reshape(-1)
    elif bad == "probs_5d":
        P = P[None, None]
    elif bad == "image_rgba":
        img = np.dstack([img, img[..., :1]])
    elif bad == "image_str":
        img = "image.png"
    elif bad == "size":
        P = P[:19]
    elif bad == "negative":
        P = P.copy()
        P[0, 0] = [-0.5, 1.0, 0.5]
    elif bad == "sum":
        P = P * 1.1
    elif bad == "nan":
        P = P.copy()
        P[3, 3, 1] = np.nan
    elif bad == "one_label":
        P = np.ones((20, 24, 1), np.float32)
    elif bad == "float_labels":
        P = P[..., 0]
    elif bad == "int_labels":
        P = P.argmax(axis=2)
    with pytest.raises(exc, match=match):
        refine(img, P, **kwargs)


def test_grey_and_multichannel_guides(small):
    """Any number of guide channels: a grey guide equals the same grey stacked 3 times with
    srgb scaled by sqrt(3) (the squared distance triples), and per-channel srgb equals
    pre-scaled channels (an exact identity of the adapting kernel)."""
    img, P = small
    grey = img[..., 0]
    a, Qa = refine(grey, P, return_probabilities=True)
    b, Qb = refine(np.dstack([grey] * 3), P, srgb=13 * np.sqrt(3), return_probabilities=True)
    np.testing.assert_allclose(Qa, Qb, atol=1e-5)
    np.testing.assert_array_equal(a, b)
    five = np.concatenate([img, img[..., :2]], axis=2).astype(np.float32)
    c, Qc = refine(five, P, srgb=(10, 20, 30, 40, 50), return_probabilities=True)
    scaled = five / np.array([10, 20, 30, 40, 50], np.float32)
    d, Qd = refine(scaled, P, srgb=1.0, return_probabilities=True)
    np.testing.assert_allclose(Qc, Qd, atol=1e-5)
    assert not np.allclose(Qa, Qc, atol=1e-3)  # the extra channels do change the result


def test_refine_warns_on_unit_scale_float_image(small):
    img, P = small
    with pytest.warns(UserWarning, match="0..255"):
        refine(img.astype(np.float32) / 255.0, P)
