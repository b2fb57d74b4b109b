"""Dask arrays in, Dask arrays out: every filter, PAC-CRF refinement and the upsamplers.

The oracle is the in-memory call on the whole image: filters agree to 1e-5
relative, CRF labels are identical and probabilities agree to 1e-5, the
upsamplers to 1e-5 relative. Chunks are chosen smaller than the halo, with odd
shapes, and channels / labels split across chunks. Each test also checks that
the call is lazy (nothing computed before ``.compute()``), and the halo tests
check that a halo one notch smaller than the derived one is *not* exact (so
the equality tests can fail).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import dask
import dask.array as da
import numpy as np
import pytest
from conftest import shared_dir
from PIL import Image

import pacnd
from pacnd import filters
from pacnd.crf import PacCRF, convcrf_refine, refine
from pacnd.dask import crf_halo, upsample_halo
import pacnd.dask.crf as dask_crf
from pacnd.dask.upsample import upsample as dask_upsample

DATA = str(shared_dir() / "data")          # $PACND_SHARED_DIR or <repo>/../shared
PDE = os.path.join(DATA, "pydensecrf_examples")
CONES = os.path.join(DATA, "middlebury2003", "cones")


def _close(out, ref, rtol=1e-5):
    out, ref = np.asarray(out), np.asarray(ref)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    scale = max(float(np.abs(ref).max()), 1e-30)
    err = float(np.abs(out.astype(np.float64) - ref).max()) / scale
    assert err <= rtol, f"max relative difference {err:.3g} > {rtol}"


class _Counter:
    """A Dask source that counts how many chunks were read (laziness checks)."""

    def __init__(self):
        self.n = 0
        self.lock = threading.Lock()

    def wrap(self, a, chunks):
        def read(block):
            with self.lock:
                self.n += 1
            return block
        return da.from_array(a, chunks=chunks).map_blocks(
            read, dtype=a.dtype, meta=np.empty((0,) * a.ndim, a.dtype))


@pytest.fixture(scope="module")
def rgb():
    img = np.asarray(Image.open(os.path.join(PDE, "im1.png")).convert("RGB"))
    return np.ascontiguousarray(img[:96, :120])


# --------------------------------------------------------------------------- filters
def test_joint_bilateral_lazy_small_odd_chunks_channels_split(rgb):
    img = rgb[:48, :60].astype(np.float32) / 255
    guide = np.ascontiguousarray(rgb[:48, :60, ::-1])             # uint8 guide, 3 channels
    ref = filters.joint_bilateral(img, guide, sigma_spatial=2.0, channel_axis=-1)  # win 13
    c = _Counter()
    x = c.wrap(img, (5, 7, 2))                                    # chunks < halo 6, C split
    g = da.from_array(guide, chunks=(11, 13, 1))                  # other chunks, C split
    out = filters.joint_bilateral(x, g, sigma_spatial=2.0, channel_axis=-1)
    assert isinstance(out, da.Array) and c.n == 0                 # lazy
    assert out.chunks[:2] == x.chunks[:2] and out.chunks[2] == (3,)  # channels merged
    _close(out.compute(), ref)
    assert c.n > 0


def test_bilateral_channel_first_and_3d(rgb):
    img = np.moveaxis(rgb, -1, 0).astype(np.float64) / 255         # (3, H, W)
    ref = filters.bilateral(img, sigma_spatial=1.5, sigma_color=0.2, channel_axis=0)
    out = filters.bilateral(da.from_array(img, chunks=(1, 9, 10)), sigma_spatial=1.5,
                            sigma_color=0.2, channel_axis=0, window="disk")
    ref_disk = filters.bilateral(img, sigma_spatial=1.5, sigma_color=0.2, channel_axis=0,
                                 window="disk")
    _close(out.compute(), ref_disk)
    assert not np.allclose(ref, ref_disk)                       # the option reached the blocks
    vol = np.random.default_rng(1).random((11, 13, 12)).astype(np.float32)
    ref = filters.bilateral(vol, sigma_spatial=1.0, win_size=5)   # sigma_color: global std
    _close(filters.bilateral(da.from_array(vol, chunks=(4, 5, 3)), sigma_spatial=1.0,
                             win_size=5).compute(), ref)


def test_bilateral_halo_is_needed(rgb):
    """A block that saw one pixel less than the window's reach would differ."""
    img = rgb[..., 0].astype(np.float32) / 255
    ref = filters.bilateral(img, sigma_spatial=3.0, win_size=7, sigma_color=0.1)
    from pacnd.dask import filters as dfilters
    from pacnd.dask.regions import Region, map_regions, axis_halo

    x = da.from_array(img, chunks=(13, 17))

    def short(block, reg):
        out = filters.bilateral(reg, sigma_spatial=3.0, win_size=7, sigma_color=0.1)
        return out[block.core(0, {0: 0, 1: 1})]
    bad = map_regions(short, [Region(x, lambda b: tuple(axis_halo(s, e, 2, n) for (s, e), n
                                                        in zip(b, img.shape)))],
                      x.chunks, dtype=np.float32).compute()
    assert np.abs(bad - ref).max() > 1e-3
    _close(dfilters.bilateral(x, sigma_spatial=3.0, win_size=7, sigma_color=0.1).compute(),
           ref)


def test_joint_bilateral_upsample_dask(rgb):
    guide = rgb[:90, :120]
    f = (3, 4)
    low = guide[1::3, 1::4, 1].astype(np.float32) / 255 + 0.1     # (30, 30)
    mask = np.ones(low.shape, bool)
    mask[5:9, 3:20] = False
    ref = filters.joint_bilateral_upsample(low, guide, factor=f, sigma_spatial=1.0, mask=mask)
    c = _Counter()
    out = filters.joint_bilateral_upsample(c.wrap(low, (4, 7)), da.from_array(guide, chunks=(
        25, 31, 3)), factor=f, sigma_spatial=1.0, mask=da.from_array(mask, chunks=(6, 6)))
    assert c.n == 0 and out.chunks[0] == tuple(3 * k for k in (4,) * 7 + (2,))
    _close(out.compute(), ref)
    # channels (a flow-like target) split over chunks
    low2 = np.stack([low, 1 - low], axis=-1)
    ref = filters.joint_bilateral_upsample(low2, guide, factor=f, channel_axis=-1,
                                           sigma_color=0.1)
    out = filters.joint_bilateral_upsample(da.from_array(low2, chunks=(7, 5, 1)), guide,
                                           factor=f, channel_axis=-1, sigma_color=0.1)
    _close(out.compute(), ref)


@pytest.mark.parametrize("kw", [dict(size=2), dict(size=3, stride=2, padding=1),
                                dict(size=3, stride=1, padding=1, reference="dpid"),
                                dict(size=4, stride=3, padding=2, reference="dpid", asym=True,
                                     lam=-1.0)])
def test_detail_preserving_pool_dask(rgb, kw):
    img = rgb.astype(np.float32) / 255
    ref = filters.detail_preserving_pool(img, channel_axis=-1, **kw)
    out = filters.detail_preserving_pool(da.from_array(img, chunks=(7, 9, 2)),
                                         channel_axis=-1, **kw)
    assert isinstance(out, da.Array)
    _close(out.compute(), ref)


def test_detail_preserving_pool_array_reference(rgb):
    img = rgb[..., 0].astype(np.float64) / 255
    refimg = filters.detail_preserving_pool(img, size=3, stride=2, reference="dpid") * 0.9
    ref = filters.detail_preserving_pool(img, size=3, stride=2, reference=refimg)
    out = filters.detail_preserving_pool(da.from_array(img, chunks=(10, 11)), size=3, stride=2,
                                         reference=da.from_array(refimg, chunks=(6, 7)))
    _close(out.compute(), ref)


def test_filter_errors_with_dask_inputs(rgb):
    x = da.from_array(rgb.astype(np.float32), chunks=32)
    with pytest.raises(ValueError, match="win_size=4 is even"):
        filters.bilateral(x, win_size=4, channel_axis=-1)
    with pytest.raises(ValueError, match="guide has shape"):
        filters.joint_bilateral(x, np.zeros((5, 5)), channel_axis=-1)
    with pytest.raises(ValueError, match="is empty"):
        filters.bilateral(da.zeros((0, 4), chunks=1))
    with pytest.raises(TypeError, match="mask has dtype"):
        filters.joint_bilateral_upsample(x[:10, :10], rgb[:20, :20], factor=2, channel_axis=-1,
                                         mask=np.ones((10, 10)))
    bad = x.copy()
    bad[3, 3, 0] = np.nan
    out = filters.bilateral(bad, channel_axis=-1)                 # lazy: raised when computed
    with pytest.raises(ValueError, match="NaN"):
        out.compute()


# --------------------------------------------------------------------------- CRF
def _probs(shape, L, seed=0):
    return np.random.default_rng(seed).dirichlet(np.ones(L) * 0.6, size=shape).astype(
        np.float32)


_CRFS = {
    "dilated potts, shared normaliser, blur 2": lambda: PacCRF(3, 2, [
        dict(kernel_size=5, dilation=2, blur=2, compat="potts", feat_scale=1 / 13,
             normalize="symmetric", group=0, pairwise_weight=3),
        dict(kernel_size=3, dilation=1, blur=2, compat="potts", feat_scale=1 / 13,
             normalize="symmetric", group=0, pairwise_weight=3)]),
    "blur levels 3/1/2 with 2d, 4d and none": lambda: PacCRF(3, 2, [
        dict(kernel_size=3, dilation=2, blur=3, compat="2d", feat_scale=0.05),
        dict(kernel_size=5, dilation=1, blur=1, compat="4d", feat_scale=0.1),
        dict(kernel_size=3, dilation=1, blur=2, compat="none")]),
}


def test_crf_halo_formula():
    # rho = (5 // 2) * 2 * 2 = 8 px; step 1: max(8, 8 + 8) + (2*2 - 1) = 19; step 2: 8 + 19 + 3
    crf = PacCRF(2, 2, [dict(kernel_size=5, dilation=2, blur=2, compat="potts",
                             normalize="symmetric")])
    assert crf_halo(crf) == 30
    assert crf_halo(PacCRF(2, 0, [dict(kernel_size=5)])) == 0
    # it follows the mapping refine builds, whatever its defaults: every step adds at least
    # the widest kernel's reach, at most twice it (normalisers) plus the upsampling's cells
    m = pacnd.crf.dense_crf_mapping((2000, 2000), 3)
    reach = max(s.padding * s.blur for s in m.kernels)
    b = max(s.blur for s in m.kernels)
    steps = m.num_steps
    assert steps * reach <= crf_halo(m) <= steps * (2 * reach + 2 * b)
    assert crf_halo(pacnd.crf.dense_crf_mapping((2000, 2000), 3, iterations=steps + 2)) \
        >= crf_halo(m) + 2 * reach


@pytest.mark.parametrize("name", sorted(_CRFS))
def test_refine_dask_equals_in_memory(rgb, name):
    crf = _CRFS[name]()
    P = _probs(rgb.shape[:2], 3)
    ref_l, ref_p = refine(rgb, P, params=crf, return_probabilities=True)
    c = _Counter()
    h = crf_halo(crf)
    assert 13 < h < rgb.shape[1] / 2                              # chunks below the halo
    lab, prob = refine(c.wrap(rgb, (13, 17, 2)), da.from_array(P, chunks=(23, 19, 2)),
                       params=crf, return_probabilities=True)
    assert c.n == 0 and lab.dtype == np.int64 and prob.chunks[2] == (3,)
    lab, prob = dask.compute(lab, prob)
    np.testing.assert_array_equal(lab, ref_l)
    _close(prob, ref_p)
    # a block that sees less than the derived halo is not exact
    lab2, prob2 = dask_crf.refine(da.from_array(rgb, chunks=(13, 17, 3)), P, params=crf,
                                  halo=h // 2, return_probabilities=True)
    assert float(np.abs(prob2.compute() - ref_p).max()) > 1e-4


def test_refine_defaults_labels_and_label_axis(rgb):
    """The public calls with the dense-CRF mapping / ConvCRF; annotations, label maps,
    (L, H, W) scores with the label axis split."""
    ann = np.asarray(Image.open(os.path.join(PDE, "anno1.png")).convert("RGB"))[:96, :120]
    kw = dict(sxy_bilateral=20.0, iterations=1)
    ref = refine(rgb, ann, kind="labels", **kw)
    out = refine(da.from_array(rgb, chunks=(31, 37, 3)), da.from_array(ann, chunks=(20, 20, 3)),
                 kind="labels", **kw)
    np.testing.assert_array_equal(out.compute(), ref)
    lm = np.random.default_rng(2).integers(-1, 4, size=rgb.shape[:2])
    ref = convcrf_refine(rgb, lm, kind="labels", iterations=2)
    out = convcrf_refine(da.from_array(rgb, chunks=(17, 23, 3)), lm, kind="labels",
                         iterations=2)
    np.testing.assert_array_equal(out.compute(), ref)
    logits = np.log(_probs(rgb.shape[:2], 4, seed=3)).transpose(2, 0, 1).copy()  # (L, H, W)
    ref_l, ref_p = convcrf_refine(rgb, logits, kind="logits", channel_axis=0,
                                  return_probabilities=True)
    lab, prob = convcrf_refine(rgb, da.from_array(logits, chunks=(3, 25, 29)), kind="logits",
                               channel_axis=0, return_probabilities=True)
    np.testing.assert_array_equal(lab.compute(), ref_l)
    _close(prob.compute(), ref_p)


def test_refine_dask_volume_per_axis_halo():
    """Volumes (the crf branch's (D, H, W[, C]) guides, spacing, per-axis blur) block by
    block: identical labels, probabilities; one halo per axis, each needed."""
    rng = np.random.default_rng(4)
    size = (13, 29, 31)
    vol = rng.normal(100, 30, size=size + (2,)).astype(np.float32)
    vol[:, :14] += 80
    P = _probs(size, 3, seed=5)
    kw = dict(spacing=(2.0, 1.0, 1.0), sxy_bilateral=6.0, srgb=(30.0, 40.0), sxy_gaussian=2.0,
              iterations=2, blur=(1, 2, 3))
    crf = pacnd.crf.dense_crf_mapping(size, 3, n_channels=2, **kw)
    assert crf.ndim == 3 and any(isinstance(k.blur, tuple) for k in crf.kernels)
    h = crf_halo(crf, per_axis=True)
    assert len(h) == 3 and len(set(h)) > 1 and crf_halo(crf) == max(h)
    ref_l, ref_p = refine(vol, P, return_probabilities=True, **kw)
    c = _Counter()
    lab, prob = refine(c.wrap(vol, (5, 11, 9, 1)), da.from_array(P, chunks=(6, 10, 12, 2)),
                       return_probabilities=True, **kw)
    assert c.n == 0 and lab.shape == size and prob.chunks[3] == (3,)
    lab, prob = dask.compute(lab, prob)
    np.testing.assert_array_equal(lab, ref_l)
    _close(prob, ref_p)
    half = tuple(x // 2 for x in h)
    p2 = dask_crf.refine(da.from_array(vol, chunks=(5, 11, 9, 2)), P, halo=half,
                         return_probabilities=True, **kw)[1]
    assert float(np.abs(p2.compute() - ref_p).max()) > 1e-4
    # a one-channel volume guide and a label volume (NumPy scores next to a Dask guide)
    lv = rng.integers(-1, 3, size=size)
    ref = refine(vol[..., 0], lv, kind="labels", srgb=30.0, iterations=1)
    out = refine(da.from_array(vol[..., 0], chunks=(6, 14, 15)), lv, kind="labels", srgb=30.0,
                 iterations=1)
    np.testing.assert_array_equal(out.compute(), ref)
    with pytest.raises(ValueError, match="spatial size"):
        refine(da.from_array(vol, chunks=8), _probs((13, 29, 30), 3))


def test_refine_dask_errors(rgb):
    x = da.from_array(rgb, chunks=32)
    with pytest.raises(ValueError, match="spatial size"):
        refine(x, _probs((10, 10), 3))
    with pytest.raises(ValueError, match="at least 2"):
        refine(x, da.ones(rgb.shape[:2] + (1,)))
    with pytest.raises(ValueError, match="halo"):
        dask_crf.refine(x, _probs(rgb.shape[:2], 3), halo=-1)
    bad = _probs(rgb.shape[:2], 3) * 2                            # do not sum to 1
    out = refine(x, bad)
    with pytest.raises(ValueError, match="sum to 1"):
        out.compute()


# --------------------------------------------------------------------------- upsampling
@pytest.fixture(scope="module")
def cones():
    g = np.asarray(Image.open(os.path.join(CONES, "im2.png")).convert("RGB"))
    d = np.asarray(Image.open(os.path.join(CONES, "disp2.png"))).astype(np.float32)
    d[d == 0] = 40.0
    return g, d / 4


def _models():
    """name -> (model, high-res crop, low-res chunks): chunks and crops chosen so that blocks
    have interior edges (region smaller than the image) at a modest cost."""
    from pacnd.models import baseline, build_model, pretrained

    # the shipped 8x weights sit on a bicubic base: its spline prefilter's 40-sample halo
    # needs a wide crop for a block edge inside the image
    return {"pac x8 (shipped)": (pretrained("depth", 8), (192, 448), (12, 12)),
            "pac-lite x4": (build_model("pac_lite", 4, rng=0), (160, 192), (20, 24)),
            "djf x4": (build_model("djf", 4, rng=1), (96, 160), (12, 20)),
            "jbu x4": (baseline("jbu", "depth", 4), (96, 120), (7, 9)),
            "bicubic x4": (baseline("bicubic", "depth", 4), (256, 400), (23, 31)),
            "bilinear x4": (baseline("bilinear", "flow", 4), (96, 120), (7, 9)),
            "pac-lite x4, residual JBU base": (build_model("pac_lite", 4, rng=2, residual="jbu"),
                                               (160, 192), (20, 24)),
            "pac x8, input interpolated 2x into a 4x body": (
                build_model("pac", 8, rng=4, residual="jbu", pre_upsample=2),
                (160, 192), (8, 10)),
            "pac x4, JBU base fed to the network": (
                build_model("pac", 4, rng=3, residual="jbu", residual_input=True),
                (160, 192), (20, 24))}


@pytest.mark.parametrize("name", list(_models()))
def test_upsample_dask_equals_in_memory(cones, name):
    model, (H, W), chunks = _models()[name]
    g, d = cones
    g, d = g[:H, :W], d[:H, :W]
    f = model.factor
    low = d[(f - 1) // 2::f, (f - 1) // 2::f]
    halo = upsample_halo(model)
    assert any(n > c + halo for n, c in zip(low.shape, chunks))  # blocks with inner edges
    ref = model.upsample(low, g)
    out = model.upsample(da.from_array(low, chunks=chunks), da.from_array(g, chunks=(50, 70, 3)))
    assert isinstance(out, da.Array) and out.chunks[0][0] == chunks[0] * f
    _close(out.compute(), ref)
    if name == "pac-lite x4":  # a halo below the receptive field is not exact
        short = dask_upsample(model, da.from_array(low, chunks=chunks), g, halo=2)
        assert float(np.abs(short.compute() - ref).max()) > 1e-4 * float(np.abs(ref).max())


@pytest.mark.parametrize("name", ["pac-lite x4, residual JBU base", "jbu x4"])
def test_upsample_dask_ensemble_equals_in_memory(cones, name):
    """Mirrored copies move the guide by a pixel (centre sampling): the halo covers it."""
    model, (H, W), chunks = _models()[name]
    g, d = cones
    g, d = g[:H, :W], d[:H, :W]
    low = d[1::4, 1::4]
    ref = model.upsample(low, g, ensemble=4)
    out = model.upsample(da.from_array(low, chunks=chunks), g, ensemble=4)
    _close(out.compute(), ref)
    with pytest.raises(ValueError, match="ensemble=5"):
        dask_upsample(model, da.from_array(low, chunks=chunks), g, ensemble=5)


def test_upsample_dask_two_channels_split(cones):
    from pacnd.models import baseline

    g, d = cones
    g = g[:96, :128]
    model = baseline("jbu", "flow", 4)
    low = np.stack([d[1:96:4, 1:128:4] / 10, -d[1:96:4, 1:128:4] / 7 + 1], axis=-1)
    ref = model.upsample(low, g)
    out = model.upsample(da.from_array(low, chunks=(9, 11, 1)), g)
    assert out.chunks[2] == (2,)
    _close(out.compute(), ref)
    with pytest.raises(ValueError, match="size mismatch"):
        model.upsample(da.from_array(low), g[:90])


# --------------------------------------------------------------------------- I/O
def test_open_and_save_zarr_tiff_npy(tmp_path, rgb):
    from pacnd.dask import open_array, save_array

    x = da.from_array(rgb.astype(np.float32) / 255, chunks=(32, 48, 3))
    ref = filters.bilateral(rgb.astype(np.float32) / 255, sigma_color=0.1, channel_axis=-1)
    for ext in (".zarr", ".tif", ".npy"):
        p = str(tmp_path / ("out" + ext))
        save_array(filters.bilateral(x, sigma_color=0.1, channel_axis=-1), p)
        back = open_array(p, chunks=40)
        assert back.chunks[0][0] == 40
        _close(back.compute(), ref)
        # blocks of a file-backed array read their regions (block + halo) from the file
        src = open_array(p, chunks=(23, 29, 3))
        twice = filters.bilateral(src, sigma_color=0.1, channel_axis=-1)
        keys = [k for k in twice.__dask_graph__() if isinstance(k, tuple)]
        assert keys and not any(str(k[0]) == src.name for k in keys)
        _close(twice.compute(), filters.bilateral(ref, sigma_color=0.1, channel_axis=-1))
        with pytest.raises(FileExistsError, match="overwrite"):
            save_array(x, p)
    with pytest.raises(FileNotFoundError):
        open_array(str(tmp_path / "missing.zarr"))
    (tmp_path / "bad.tif").write_bytes(b"not a tiff")
    with pytest.raises(OSError, match="cannot read TIFF"):
        open_array(str(tmp_path / "bad.tif"))


def test_save_array_is_atomic(tmp_path, rgb):
    from pacnd.dask import save_array

    bad = rgb.astype(np.float32).copy()
    bad[50, 50, 0] = np.nan
    out = filters.bilateral(da.from_array(bad, chunks=32), channel_axis=-1)
    for ext in (".zarr", ".npy", ".tif"):
        with pytest.raises(ValueError, match="NaN"):
            save_array(out, str(tmp_path / ("x" + ext)))
    assert os.listdir(tmp_path) == []                             # no partial output left


def test_without_dask_import_works_and_errors_name_the_extra(tmp_path):
    code = ("import sys; sys.modules['dask'] = None; sys.modules['dask.array'] = None\n"
            "import numpy as np, pacnd\n"
            "pacnd.filters.bilateral(np.zeros((8, 8)))\n"
            "try:\n    pacnd.dask.open_array('x.zarr')\n"
            "except ImportError as e:\n    print('ERR', e)\n"
            "from pacnd.cli import main\n"
            "sys.exit(main(['filter', 'bilateral', 'a.zarr', '-o', 'b.zarr']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 1, r.stderr
    assert 'ERR' in r.stdout and 'pacnd[dask]' in r.stdout
    assert 'pacnd[dask]' in r.stderr


@pytest.mark.gpu
def test_cupy_chunks_run_on_the_gpu(rgb):
    import cupy

    img = rgb.astype(np.float32) / 255
    ref = filters.joint_bilateral(img, img, sigma_spatial=2.0, channel_axis=-1)
    x = da.from_array(cupy.asarray(img), chunks=(40, 50, 3), asarray=False)
    out = filters.joint_bilateral(x, x, sigma_spatial=2.0, channel_axis=-1)
    assert type(out._meta).__module__.startswith("cupy")
    res = out.compute()
    assert type(res).__module__.startswith("cupy")
    _close(cupy.asnumpy(res), ref, rtol=1e-4)
