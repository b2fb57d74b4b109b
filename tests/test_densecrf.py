"""pacnd.densecrf: the drop-in for pydensecrf.

* pydensecrf's own tests (``../shared/peers/pydensecrf/tests``, MIT) run unchanged but for
  the imports (``pydensecrf.densecrf`` -> ``pacnd.densecrf``, ``pydensecrf.utils`` ->
  ``pacnd.densecrf.utils``), read from the peer's folder and executed here;
* its issue reproductions: #29 (wrong unary shape) raises a clear ValueError, #26 (non-RGB
  guidance through create_pairwise_bilateral) gives the issue's solution;
* its example script ``examples/inference.py`` runs unchanged but for the imports and agrees
  with the fully-connected CRF's ``out1.png`` on >= 95 % of the pixels;
* exact identities that need no peer: no pairwise term -> softmax(-U); stepInference x n ==
  inference(n); Potts w == vector -w == matrix -w I (pydensecrf's compatibility signs);
  a matrix acts symmetrised; the generic and the 2-D API agree; DenseCRF on 2-D/3-D grids ==
  pacnd.crf.refine with the same parameters; KL without pairwise terms;
* every input pydensecrf crashes on or misreads raises ValueError/TypeError;
* where pydensecrf2 is installed (the ``bench`` extra), side by side with it.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess
import sys
import types
import unittest

import numpy as np
import pytest
from conftest import shared_dir

import pacnd.densecrf as dcrf
from pacnd.densecrf import utils

PEER = shared_dir() / "peers" / "pydensecrf"
PDE = shared_dir() / "data" / "pydensecrf_examples"
needs_peer = pytest.mark.skipif(not PEER.is_dir(), reason=f"peer files not found at {PEER}")
needs_pde = pytest.mark.skipif(not PDE.is_dir(), reason=f"sample data not found at {PDE}")
HAVE_PYDENSECRF = importlib.util.find_spec("pydensecrf") is not None
needs_pydensecrf = pytest.mark.skipif(not HAVE_PYDENSECRF,
                                      reason="pydensecrf2 is not installed (bench extra)")

SWAPS = [("import pydensecrf.densecrf as dcrf", "import pacnd.densecrf as dcrf"),
         ("import pydensecrf.utils as utils", "import pacnd.densecrf.utils as utils"),
         ("from pydensecrf.utils import", "from pacnd.densecrf.utils import")]


def swapped_source(path):
    """The peer's file with its pydensecrf imports pointed at pacnd (nothing else changed)."""
    src = path.read_text()
    for a, b in SWAPS:
        src = src.replace(a, b)
    assert "pydensecrf" not in src.replace("pydensecrf.", "").replace("pydensecrf ", ""), \
        "an import was left pointing at pydensecrf"
    assert "import pydensecrf" not in src and "from pydensecrf" not in src
    return src


def load_peer_module(name):
    path = PEER / "tests" / f"{name}.py"
    mod = types.ModuleType(f"peer_{name}")
    mod.__file__ = str(path)
    exec(compile(swapped_source(path), str(path), "exec"), mod.__dict__)
    return mod


def _peer_tests():
    if not PEER.is_dir():
        return []
    out = []
    for name in ("test_dcrf", "test_utils"):
        src = (PEER / "tests" / f"{name}.py").read_text()
        out += [(name, line.split("(")[0].split()[-1]) for line in src.splitlines()
                if line.lstrip().startswith("def test_")]
    return out


@needs_peer
@pytest.mark.parametrize("module, test", _peer_tests(), ids=[f"{m}::{t}" for m, t in
                                                          _peer_tests()])
def test_peer_suite_with_swapped_imports(module, test):
    mod = load_peer_module(module)
    fn = getattr(mod, test, None)
    if fn is not None:
        fn()
        return
    # unittest-style (test_utils.py): run the TestCase method
    cases = [c for c in vars(mod).values()
             if inspect.isclass(c) and issubclass(c, unittest.TestCase) and hasattr(c, test)]
    assert cases, test
    result = unittest.TextTestRunner(stream=open(os.devnull, "w")).run(cases[0](test))
    assert result.wasSuccessful(), result.failures + result.errors


@needs_peer
def test_peer_tests_were_found():
    names = [t for _, t in _peer_tests()]
    assert {"test_call_dcrf2d", "test_call_dcrf", "test_call_dcrf_eq_dcrf2d",
            "test_compact_wrong", "test_unary"} <= set(names)


@needs_peer
def test_issue29_wrong_unary_shape_raises_clear_error():
    with pytest.raises(ValueError, match=r"unary energy: need \(5, 253368\).*got \(5, 3400\)"):
        load_peer_module("issue29")


@needs_peer
def test_issue26_non_rgb_guidance_gives_the_solution(monkeypatch):
    """4-channel guidance through create_pairwise_bilateral + addPairwiseEnergy: the square of
    the guide image becomes label 0 and the rest label 1 (the issue's solution image)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setattr(plt, "show", lambda *a, **k: None)
    mod = load_peer_module("issue26")
    plt.close("all")
    want = np.ones((512, 512), np.int64)
    want[150:362, 150:362] = 0
    assert (mod.map_soln == want).mean() > 0.995
    # and the unary alone gives the disc, not the square (the CRF did the work)
    assert (mod.map_soln_Unary == want).mean() < 0.97


CV2_SHIM = '''"""A stand-in for OpenCV's imread/imwrite (BGR order, as cv2), backed by PIL."""
import numpy as np
from PIL import Image


def imread(path, flags=1):
    with Image.open(path) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB"))[:, :, ::-1])


def imwrite(path, img, params=None):
    Image.fromarray(np.ascontiguousarray(np.asarray(img)[:, :, ::-1])).save(path)
    return True
'''


def _rgb(path):
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@needs_peer
@needs_pde
@pytest.mark.parametrize("i, floor", [(1, 0.95), (3, 0.95)])
def test_example_script_runs_unchanged_and_agrees_with_the_dense_crf(tmp_path, i, floor):
    """pydensecrf's examples/inference.py with only its imports swapped (OpenCV's
    imread/imwrite stand-in when OpenCV is not installed) reproduces the fully-connected CRF's
    out{i}.png on >= 95 % of the pixels (the DenseCRF + create_pairwise_* path)."""
    script = tmp_path / "inference.py"
    script.write_text(swapped_source(PEER / "examples" / "inference.py"))
    env = dict(os.environ)
    if importlib.util.find_spec("cv2") is None and importlib.util.find_spec("skimage") is None:
        (tmp_path / "shim").mkdir()
        (tmp_path / "shim" / "cv2.py").write_text(CV2_SHIM)
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "shim")]
                                            + sys.path)
    out = tmp_path / f"out{i}.png"
    r = subprocess.run([sys.executable, str(script), str(PDE / f"im{i}.png"),
                        str(PDE / f"anno{i}.png"), str(out)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("KL-divergence at") == 5
    kl = [float(ln.split(":")[1]) for ln in r.stdout.splitlines() if "KL-divergence" in ln]
    assert kl[-1] < kl[0]  # mean-field lowers the KL divergence
    got, ref = _rgb(out), _rgb(PDE / f"out{i}.png")
    assert got.shape == ref.shape
    agree = (got == ref).all(axis=2).mean()
    assert agree >= floor, agree


# ------------------------------------------------------------------------------ identities
@pytest.fixture
def scene():
    rng = np.random.default_rng(5)
    H, W, L = 24, 30, 3
    img = np.zeros((H, W, 3), np.uint8)
    img[:, W // 2:] = (200, 60, 20)
    img[H // 3: 2 * H // 3, 5:12] = (30, 160, 220)
    img = np.clip(img + rng.integers(-15, 15, img.shape), 0, 255).astype(np.uint8)
    P = rng.dirichlet(np.ones(L) * 0.7, (H, W)).transpose(2, 0, 1).astype(np.float32)
    return img, P, utils.unary_from_softmax(P)


def _crf2d(img, U, compat=10.0, **kw):
    H, W = img.shape[:2]
    d = dcrf.DenseCRF2D(W, H, U.shape[0])
    d.setUnaryEnergy(U)
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=20, srgb=13, rgbim=img, compat=compat, **kw)
    return d


def _softmax0(z):
    e = np.exp(z - z.max(axis=0))
    return e / e.sum(axis=0)


def test_no_pairwise_is_softmax_of_minus_unary(scene):
    img, P, U = scene
    d = dcrf.DenseCRF(U.shape[1], 3)
    d.setUnaryEnergy(U)
    Q = d.inference(5)
    assert isinstance(Q, np.ndarray) and Q.dtype == np.float32 and Q.shape == U.shape
    np.testing.assert_allclose(Q, _softmax0(-U.astype(np.float64)), rtol=1e-6)
    np.testing.assert_array_equal(np.array(Q), Q)
    q = Q.astype(np.float64)
    np.testing.assert_allclose(d.klDivergence(Q), (q * np.log(q)).sum() + (U * q).sum(),
                               rtol=1e-6)
    e = dcrf.DenseCRF(10, 4)  # no unary either: uniform, as pydensecrf
    np.testing.assert_allclose(e.inference(3), 0.25)


def test_step_inference_equals_inference(scene):
    img, P, U = scene
    d = _crf2d(img, U)
    Q, t1, t2 = d.startInference()
    np.testing.assert_allclose(Q, _softmax0(-U.astype(np.float64)), rtol=1e-6)
    kl = [d.klDivergence(Q)]
    for n in range(1, 6):
        d.stepInference(Q, t1, t2)
        kl.append(d.klDivergence(Q))
        np.testing.assert_allclose(Q, d.inference(n), atol=2e-5)
    np.testing.assert_allclose(_softmax0(t1.astype(np.float64)), Q, atol=1e-5)
    np.testing.assert_allclose(t1 - t2, -U, atol=1e-4)  # tmp1 = logits, tmp2 = pairwise part
    assert kl[-1] < kl[0]


def test_compatibility_signs_follow_pydensecrf(scene):
    """pydensecrf: Potts w adds +w msg, a vector v adds -v msg, a matrix M adds -M_sym msg
    (M_sym = (M + M^T) / 2). So Potts w == vector -w == matrix -w I, and M == M_sym."""
    img, P, U = scene
    a = _crf2d(img, U, compat=4.0).inference(5)
    b = _crf2d(img, U, compat=np.full(3, -4.0, np.float32)).inference(5)
    c = _crf2d(img, U, compat=-4.0 * np.eye(3, dtype=np.float32)).inference(5)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(a, c, atol=1e-5)
    M = np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32)
    m1 = _crf2d(img, U, compat=M).inference(5)
    m2 = _crf2d(img, U, compat=((M + M.T) / 2).astype(np.float32)).inference(5)
    np.testing.assert_allclose(m1, m2, atol=1e-5)
    assert np.abs(m1 - a).max() > 1e-2
    # kernel types only matter for learning
    k = _crf2d(img, U, compat=4.0, kernel=dcrf.FULL_KERNEL).inference(5)
    np.testing.assert_array_equal(k, a)


def test_normalisations_are_distinct_and_generic_api_matches_2d(scene):
    img, P, U = scene
    H, W = img.shape[:2]
    res = {}
    for norm in (dcrf.NO_NORMALIZATION, dcrf.NORMALIZE_BEFORE, dcrf.NORMALIZE_AFTER,
                 dcrf.NORMALIZE_SYMMETRIC):
        q2 = _crf2d(img, U, normalization=norm).inference(3)
        d = dcrf.DenseCRF(H * W, 3)
        d.setUnaryEnergy(U)
        d.addPairwiseEnergy(utils.create_pairwise_gaussian((3, 3), (H, W)), compat=3)
        d.addPairwiseEnergy(utils.create_pairwise_bilateral((20, 20), 13, img, chdim=2),
                            compat=10.0, normalization=norm)
        np.testing.assert_allclose(d.inference(3), q2, atol=1e-5)
        res[int(norm)] = q2
    qs = list(res.values())
    assert all(np.abs(qs[i] - qs[j]).max() > 1e-3 for i in range(4) for j in range(i))


def test_dense_crf_on_grids_equals_refine(scene):
    """DenseCRF with create_pairwise_* features runs the same PAC-CRF as refine() with the same
    parameters and mapping options: on images (2-D) and on volumes (3-D, anisotropic sdims =
    spacing); on images DenseCRF's literal default mapping is refine(sxy_scale=1,
    cells_per_std=20)."""
    from pacnd.crf import refine
    from test_crf_volume import synthetic_volume

    img, P, U = scene
    H, W = img.shape[:2]
    for opts in ({}, dict(sxy_scale=0.5, cells_per_std=12.0)):
        d = dcrf.DenseCRF(H * W, 3, **opts)
        d.setUnaryEnergy(U)
        d.addPairwiseEnergy(utils.create_pairwise_bilateral((20, 20), (13, 13, 13), img,
                                                            chdim=2), compat=10)
        d.addPairwiseEnergy(utils.create_pairwise_gaussian((3, 3), (H, W)), compat=3)
        ropts = opts or dict(sxy_scale=1.0, cells_per_std=20.0)
        _, Q = refine(img, P.transpose(1, 2, 0), sxy_bilateral=20, return_probabilities=True,
                      **ropts)
        np.testing.assert_allclose(d.inference(5).reshape(3, H, W), Q.transpose(2, 0, 1),
                                   atol=1e-4)
    vol, Pv, gt = synthetic_volume((8, 12, 14), seed=3)
    shape = vol.shape
    d = dcrf.DenseCRF(vol.size, 3)  # on volumes both presets are the same
    d.setUnaryEnergy(utils.unary_from_softmax(np.moveaxis(Pv, -1, 0)))
    d.addPairwiseEnergy(utils.create_pairwise_bilateral((3.0, 6.0, 6.0), 30.0, vol), compat=10)
    d.addPairwiseEnergy(utils.create_pairwise_gaussian((0.75, 1.5, 1.5), shape), compat=3)
    _, Qv = refine(vol, Pv, sxy_bilateral=6.0, sxy_gaussian=1.5, srgb=30.0,
                   spacing=(2.0, 1.0, 1.0), return_probabilities=True)
    np.testing.assert_allclose(d.inference(5).reshape((3,) + shape), np.moveaxis(Qv, -1, 0),
                               atol=1e-4)
    assert (d.inference(5).argmax(0).reshape(shape) == gt).mean() > \
        (Pv.argmax(-1) == gt).mean() + 0.03


def test_features_in_pydensecrf_2d_order_and_one_dimensional_grids():
    """Coordinates may come in any order (DenseCRF2D uses x before y) and the grid may be 1-D."""
    rng = np.random.default_rng(2)
    H, W = 9, 13
    U = utils.unary_from_softmax(rng.dirichlet(np.ones(2), (H, W)).transpose(2, 0, 1))
    yx = utils.create_pairwise_gaussian((2, 3), (H, W))
    xy = np.ascontiguousarray(yx[::-1])  # (x / 3, y / 2), pydensecrf 2-D order
    out = []
    for f in (yx, xy):
        d = dcrf.DenseCRF(H * W, 2)
        d.setUnaryEnergy(U)
        d.addPairwiseEnergy(f, compat=5)
        out.append(d.inference(4))
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)
    line = dcrf.DenseCRF(50, 2)
    u = utils.unary_from_softmax(rng.dirichlet(np.ones(2), 50).T)
    line.setUnaryEnergy(u)
    line.addPairwiseEnergy(utils.create_pairwise_gaussian((2,), (50,)), compat=5)
    assert line.inference(3).shape == (2, 50)


# ------------------------------------------------------------------------------ validation
def _good():
    rng = np.random.default_rng(1)
    H, W = 8, 10
    img = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    U = utils.unary_from_softmax(rng.dirichlet(np.ones(3), (H, W)).transpose(2, 0, 1))
    return H, W, img, U


BAD = {
    "unary float64": (lambda d, H, W, img, U: d.setUnaryEnergy(U.astype(np.float64)),
                      ValueError, "float32"),
    "unary not contiguous": (lambda d, H, W, img, U: d.setUnaryEnergy(
        np.asfortranarray(U)), ValueError, "C-contiguous"),
    "unary transposed shape": (lambda d, H, W, img, U: d.setUnaryEnergy(
        np.ascontiguousarray(U.T)), ValueError, r"need \(3, 80\)"),
    "unary 3-D": (lambda d, H, W, img, U: d.setUnaryEnergy(U.reshape(3, H, W)), ValueError,
                  "reshape"),
    "unary NaN": (lambda d, H, W, img, U: d.setUnaryEnergy(np.where(U > 1, np.nan, U).astype(
        np.float32)), ValueError, "NaN"),
    "unary list": (lambda d, H, W, img, U: d.setUnaryEnergy(U.tolist()), TypeError, "array"),
    "features wrong N": (lambda d, H, W, img, U: d.addPairwiseEnergy(
        utils.create_pairwise_gaussian((3, 3), (H, W + 1)), compat=3), ValueError,
        r"need \(\?, 80\)"),
    "features not a grid": (lambda d, H, W, img, U: d.addPairwiseEnergy(
        np.random.default_rng(0).normal(size=(2, H * W)).astype(np.float32), compat=3),
        ValueError, "grid"),
    "features other grid": (lambda d, H, W, img, U: d.addPairwiseEnergy(
        utils.create_pairwise_gaussian((3, 3), (W, H)), compat=3), ValueError,
        r"grid of shape \(10, 8\).*\(8, 10\)"),
    "features NaN": (lambda d, H, W, img, U: d.addPairwiseEnergy(
        np.full((2, H * W), np.nan, np.float32), compat=3), ValueError, "NaN"),
    "features float64": (lambda d, H, W, img, U: d.addPairwiseEnergy(
        utils.create_pairwise_gaussian((3, 3), (H, W)).astype(np.float64), compat=3),
        ValueError, "float32"),
    "compat float64": (lambda d, H, W, img, U: d.addPairwiseGaussian(
        3, np.ones(3)), ValueError, "float32"),
    "compat wrong length": (lambda d, H, W, img, U: d.addPairwiseGaussian(
        3, np.ones(4, np.float32)), ValueError, r"vector \(3,\)"),
    "compat 3-D": (lambda d, H, W, img, U: d.addPairwiseGaussian(
        3, np.ones((3, 3, 3), np.float32)), ValueError, "not meaningful"),
    "compat list": (lambda d, H, W, img, U: d.addPairwiseGaussian(3, [1.0, 2.0, 3.0]),
                    TypeError, "compat must be"),
    "compat NaN": (lambda d, H, W, img, U: d.addPairwiseGaussian(3, float("nan")),
                   ValueError, "finite"),
    "kernel unknown": (lambda d, H, W, img, U: d.addPairwiseGaussian(3, 3, kernel=5),
                       ValueError, "kernel=5"),
    "normalization unknown": (lambda d, H, W, img, U: d.addPairwiseGaussian(
        3, 3, normalization=7), ValueError, "normalization=7"),
    "sxy negative": (lambda d, H, W, img, U: d.addPairwiseGaussian(-3, 3), ValueError,
                     "positive"),
    "sxy three": (lambda d, H, W, img, U: d.addPairwiseGaussian((3, 3, 3), 3), ValueError,
                  "3 entries"),
    "rgbim float": (lambda d, H, W, img, U: d.addPairwiseBilateral(
        80, 13, img.astype(np.float32), 10), ValueError, "uint8"),
    "rgbim size": (lambda d, H, W, img, U: d.addPairwiseBilateral(80, 13, img[:-1], 10),
                   ValueError, r"need \(8, 10, 3\)"),
    "rgbim 4 channels": (lambda d, H, W, img, U: d.addPairwiseBilateral(
        80, 13, np.dstack([img, img[..., :1]]), 10), ValueError, "only works for RGB"),
    "rgbim view": (lambda d, H, W, img, U: d.addPairwiseBilateral(
        80, 13, img[:, :, ::-1], 10), ValueError, "C-contiguous"),
    "inference negative": (lambda d, H, W, img, U: d.inference(-1), ValueError, "niter=-1"),
    "inference float": (lambda d, H, W, img, U: d.inference(2.5), TypeError, "niter"),
    "step wrong Q": (lambda d, H, W, img, U: d.stepInference(np.zeros((3, 5), np.float32),
                                                              *d.startInference()[1:]),
                     ValueError, r"need \(3, 80\)"),
    "step read-only Q": (lambda d, H, W, img, U: d.stepInference(
        np.broadcast_to(np.float32(1 / 3), (3, 80)), *d.startInference()[1:]), ValueError,
        "read-only"),
    "kl wrong dtype": (lambda d, H, W, img, U: d.klDivergence(d.inference(1).astype(
        np.float64)), ValueError, "float32"),
    "setUnary wrong type": (lambda d, H, W, img, U: d.setUnary(U), TypeError, "ConstUnary"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_raise(case):
    H, W, img, U = _good()
    fn, exc, match = BAD[case]
    d = dcrf.DenseCRF2D(W, H, 3)
    d.setUnaryEnergy(U)
    with pytest.raises(exc, match=match):
        fn(d, H, W, img, U)


def test_constructor_and_utils_validation():
    with pytest.raises(ValueError, match="nlabels=1"):
        dcrf.DenseCRF(10, 1)
    with pytest.raises(TypeError, match="nvar"):
        dcrf.DenseCRF(10.0, 2)
    with pytest.raises(ValueError, match="sxy_scale"):
        dcrf.DenseCRF(10, 2, sxy_scale=0)
    with pytest.raises(ValueError, match="sdims has 2 entries but there are 3 axes"):
        utils.create_pairwise_gaussian((3, 3), (4, 5, 6))
    with pytest.raises(ValueError, match="schan has 2 entries but there are 3 channels"):
        utils.create_pairwise_bilateral((3, 3), (1, 2), np.zeros((4, 5, 3)), chdim=2)
    with pytest.raises(ValueError, match="chdim=3"):
        utils.create_pairwise_bilateral((3, 3), 1, np.zeros((4, 5, 3)), chdim=3)
    with pytest.raises(ValueError, match="labels holds 4"):
        utils.unary_from_labels(np.array([0, 1, 4]), 3, 0.7)
    with pytest.raises(ValueError, match="labels holds -1"):
        utils.unary_from_labels(np.array([0, -1]), 3, 0.7, zero_unsure=False)
    with pytest.raises(ValueError, match="gt_prob=1"):
        utils.unary_from_labels(np.array([1, 2]), 3, 1)
    with pytest.raises(ValueError, match="NaN"):
        utils.unary_from_softmax(np.array([[0.5, np.nan], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="scale=0"):
        utils.unary_from_softmax(np.full((2, 3), 0.5), scale=0)
    np.testing.assert_allclose(utils.unary_from_softmax(np.array([[0.0, 1.0], [1.0, 0.0]])),
                               -np.log([[1e-5, 1.0], [1.0, 1e-5]]), rtol=1e-6)
    f = utils.create_pairwise_bilateral((2, 4), (10, 20, 30), np.ones((3, 5, 3)) * 60, chdim=2)
    assert f.shape == (5, 15) and f.dtype == np.float32
    np.testing.assert_allclose(f[:, 7], [1 / 2, 2 / 4, 6, 3, 2])  # point (1, 2)


# ------------------------------------------------------------------------------ pydensecrf2
@needs_pydensecrf
@needs_pde
@pytest.mark.parametrize("style", ["2d", "generic"])
def test_side_by_side_with_pydensecrf(style):
    """Both pydensecrf styles on the example photos: labels agree with pydensecrf2's on most
    pixels (the same threshold as the example script's out*.png, which pydensecrf made)."""
    import pydensecrf.densecrf as pd

    from pacnd.crf import labels_from_annotation, read_label_image

    for i in (1, 3):
        img = np.array(_rgb(PDE / f"im{i}.png"), order="C")  # pydensecrf: writable
        labels, colors = labels_from_annotation(read_label_image(PDE / f"anno{i}.png"))
        L = len(colors)
        U = utils.unary_from_labels(labels + 1, L, 0.7, zero_unsure=True)
        H, W = labels.shape
        Q = []
        for mod in (dcrf, pd):
            if style == "2d":
                d = mod.DenseCRF2D(W, H, L)
                d.setUnaryEnergy(U)
                d.addPairwiseGaussian(sxy=3, compat=3)
                d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=img, compat=10)
            else:
                d = mod.DenseCRF(H * W, L)
                d.setUnaryEnergy(U)
                d.addPairwiseEnergy(utils.create_pairwise_gaussian((3, 3), (H, W)), compat=3)
                d.addPairwiseEnergy(utils.create_pairwise_bilateral((80, 80), 13, img, chdim=2),
                                    compat=10)
            Q.append(np.array(d.inference(5)))
        assert Q[0].shape == Q[1].shape
        assert (Q[0].argmax(0) == Q[1].argmax(0)).mean() > 0.95
