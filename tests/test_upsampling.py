"""Joint-upsampling data: readers/writers, low-res conventions, pairs and crops,
the synthetic generator, and the ``pacnd upsample`` command line."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from pacnd.data.io import (colorize, flow_to_color, read_depth, read_flow, read_image,
                           read_middlebury_disparity, read_target, write_depth, write_flow,
                           write_image, write_target)
from pacnd.data import (JointUpsamplingPairs, SyntheticScenes, crop_to_multiple,
                                   fill_unknown, make_low_res, minmax_range, prepare_example,
                                   random_crop, synthetic_scene)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------ readers / writers
def test_flo_roundtrip_both_ways(tmp_path):
    rng = np.random.default_rng(0)
    flow = (rng.standard_normal((7, 11, 2)) * 5).astype(np.float32)
    flow[2, 3] = np.nan
    p = write_flow(tmp_path / "f.flo", flow)
    raw = np.fromfile(p, np.uint8)
    assert raw[:4].tobytes() == b"PIEH"
    assert np.frombuffer(raw[4:12].tobytes(), "<i4").tolist() == [11, 7]
    back = read_flow(p)
    np.testing.assert_array_equal(back, flow)   # NaN -> 1e10 -> NaN
    # a file written by hand (the format's definition) reads back
    q = tmp_path / "hand.flo"
    with open(q, "wb") as f:
        f.write(b"PIEH")
        np.array([3, 2], "<i4").tofile(f)
        np.arange(12, dtype="<f4").tofile(f)
    np.testing.assert_array_equal(read_flow(q), np.arange(12, dtype=np.float32).reshape(2, 3, 2))
    np.save(tmp_path / "f.npy", flow)
    np.testing.assert_array_equal(read_flow(tmp_path / "f.npy"), flow)


def test_flo_errors(tmp_path):
    p = tmp_path / "bad.flo"
    p.write_bytes(b"XXXX" + b"\0" * 8)
    with pytest.raises(ValueError, match="not a .flo"):
        read_flow(p)
    q = tmp_path / "short.flo"
    with open(q, "wb") as f:
        f.write(b"PIEH")
        np.array([10, 10], "<i4").tofile(f)
        np.zeros(5, "<f4").tofile(f)
    with pytest.raises(ValueError, match="truncated"):
        read_flow(q)
    with pytest.raises(FileNotFoundError):
        read_flow(tmp_path / "none.flo")


def test_depth_png_16bit_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    d = (rng.random((9, 13)) * 60).astype(np.float32)
    d[0, 0] = np.nan
    p = write_depth(tmp_path / "d.png", d, scale=1000.0)
    from PIL import Image
    with Image.open(p) as im:
        assert np.asarray(im).dtype == np.uint16 or im.mode.startswith("I")
    back = read_depth(p, scale=1000.0)
    assert np.isnan(back[0, 0])
    np.testing.assert_allclose(back[1:], d[1:], atol=0.5e-3 + 1e-6)
    with pytest.raises(ValueError, match="16-bit range"):
        write_depth(tmp_path / "x.png", d, scale=1e4)
    # 8-bit
    p8 = write_depth(tmp_path / "d8.png", np.full((4, 4), 2.0), scale=4.0, bits=8)
    np.testing.assert_array_equal(read_depth(p8, scale=4.0), 2.0)
    # npy keeps float32 exactly
    np.testing.assert_array_equal(read_depth(write_depth(tmp_path / "d.npy", d)), d)


def test_middlebury_disparity_convention(tmp_path):
    from PIL import Image
    raw = np.array([[0, 4, 8], [255, 1, 0]], np.uint8)
    Image.fromarray(raw).save(tmp_path / "disp.png")
    d = read_middlebury_disparity(tmp_path / "disp.png")
    assert np.isnan(d[0, 0]) and np.isnan(d[1, 2])
    np.testing.assert_array_equal(d[0, 1:], [1.0, 2.0])
    assert d[1, 0] == 63.75 and d[1, 1] == 0.25
    # the bundled Cones disparity agrees with pacnd.datasets.load_cones
    from pacnd.datasets import data_path, load_cones
    np.testing.assert_array_equal(read_middlebury_disparity(data_path("cones_disp2.png")),
                                  load_cones()[1])


def test_image_roundtrip_and_target_dispatch(tmp_path):
    rng = np.random.default_rng(2)
    rgb = (rng.random((5, 6, 3)) * 255).astype(np.uint8)
    p = write_image(tmp_path / "a.png", rgb)
    np.testing.assert_array_equal(read_image(p), rgb)
    write_image(tmp_path / "g.png", rgb[..., 0])
    assert read_image(tmp_path / "g.png").shape == (5, 6, 3)
    flow = rng.standard_normal((5, 6, 2)).astype(np.float32)
    write_target(tmp_path / "t.flo", flow)
    np.testing.assert_array_equal(read_target(tmp_path / "t.flo"), flow)
    write_target(tmp_path / "t.npy", flow)
    np.testing.assert_array_equal(read_target(tmp_path / "t.npy"), flow)
    write_target(tmp_path / "c.png", flow)
    assert read_image(tmp_path / "c.png").shape == (5, 6, 3)
    with pytest.raises(ValueError, match="not an image"):
        (tmp_path / "junk.png").write_bytes(b"hello")
        read_image(tmp_path / "junk.png")


def test_flow_colour_wheel():
    # the four axis directions at full magnitude (Middlebury convention)
    flow = np.array([[[1, 0], [-1, 0], [0, 1], [0, -1], [0, 0]]], np.float32)
    c = flow_to_color(flow, max_flow=1.0)
    assert tuple(c[0, 4]) == (255, 255, 255)           # zero motion is white
    assert c[0, 0, 0] == 255 and c[0, 0, 1] < 10        # right (+u): red
    assert c[0, 1, 2] == 255 and c[0, 1, 0] < 10        # left (-u): cyan-blue
    assert c[0, 2, 0] == 255 and c[0, 2, 2] == 0        # down (+v): orange-yellow
    assert c[0, 3, 2] == 255 and c[0, 3, 1] == 0        # up (-v): blue-violet
    nan = flow_to_color(np.full((1, 1, 2), np.nan, np.float32))
    assert tuple(nan[0, 0]) == (0, 0, 0)
    assert colorize(np.array([[0.0, np.nan]])).shape == (1, 2, 3)


# ------------------------------------------------------------------------ low-res
def test_low_res_center_convention():
    a = np.arange(16 * 24, dtype=np.float32).reshape(16, 24)
    for f in (2, 4, 8):
        o = (f - 1) // 2
        np.testing.assert_array_equal(make_low_res(a, f, "center"), a[o::f, o::f])
        np.testing.assert_array_equal(make_low_res(a, f, "last"), a[f - 1::f, f - 1::f])
    with pytest.raises(ValueError, match="multiple of factor"):
        make_low_res(a[:15], 4)
    with pytest.raises(ValueError, match="mode"):
        make_low_res(a, 4, "area51")


def test_low_res_bilinear_convention():
    # a linear ramp is reproduced at the block centres (antialiasing keeps linear functions)
    # (away from the mirrored borders: the Gaussian prefilter reaches 4 sigma = 14 px)
    yy, xx = np.mgrid[0:32, 0:96].astype(np.float64)
    ramp = np.stack([2 * xx + 1, -yy], -1)
    low = make_low_res(ramp, 8, "bilinear")
    assert low.shape == (4, 12, 2)
    c = (np.arange(12) + 0.5) * 8 - 0.5
    np.testing.assert_allclose(low[:, 2:-2, 0], np.broadcast_to(2 * c[2:-2] + 1, (4, 8)),
                               rtol=1e-6)
    # constant stays constant; NaN ignored by the normalised filter
    const = np.full((16, 16), 3.0)
    const[5, 5] = np.nan
    np.testing.assert_allclose(make_low_res(const, 4, "bilinear"), 3.0)
    # factor 2 without prefilter blur = 2x2 block means (sigma = 0.5 here though)
    a = np.random.default_rng(0).random((8, 8))
    assert make_low_res(a, 2, "bilinear").shape == (4, 4)


def test_fill_unknown_and_crop():
    a = np.array([[1.0, np.nan, 3.0], [np.nan, np.nan, np.nan]])
    f = fill_unknown(a)
    assert np.isfinite(f).all() and f[0, 0] == 1 and f[0, 2] == 3
    with pytest.raises(ValueError):
        fill_unknown(np.full((2, 2), np.nan))
    assert crop_to_multiple(np.zeros((375, 450)), 8, multiple=16).shape == (368, 448)


def test_minmax_range_flat_channels():
    low = np.stack([np.full((3, 3), 2.0), np.arange(9.0).reshape(3, 3)], -1)
    lo, hi = minmax_range(low)
    np.testing.assert_array_equal(lo, [1.5, 0.0])
    np.testing.assert_array_equal(hi, [2.5, 8.0])


def test_prepare_example_conventions():
    rng = np.random.default_rng(3)
    g = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
    t = rng.random((16, 16)).astype(np.float32) * 10
    t[0, 0] = np.nan
    ex = prepare_example(g, t, 4)
    assert ex["low"].shape == (1, 1, 4, 4) and ex["guide"].shape == (1, 3, 16, 16)
    assert ex["low"].min() == 0 and ex["low"].max() == 1
    assert ex["mask"][0, 0, 0, 0] == 0 and ex["target"][0, 0, 0, 0] == 0
    np.testing.assert_allclose(ex["guide"][0].transpose(1, 2, 0), g / 255.0, atol=1e-7)
    back = ex["target"][0, 0] * (ex["hi"][0, 0] - ex["lo"][0, 0]) + ex["lo"][0, 0]
    np.testing.assert_allclose(back[1:], t[1:], rtol=1e-5)


def test_random_crop_flip_negates_u():
    rng = np.random.default_rng(4)
    g = (rng.random((20, 20, 3)) * 255).astype(np.uint8)
    flow = rng.standard_normal((20, 20, 2)).astype(np.float32)
    seen_flip = False
    for s in range(20):
        gc, fc = random_crop(np.random.default_rng(s), g, flow, (8, 8), flip=True, flow=True)
        r = np.random.default_rng(s)
        i, j = int(r.integers(0, 13)), int(r.integers(0, 13))
        if r.random() < 0.5:
            seen_flip = True
            np.testing.assert_array_equal(fc[..., 0], -flow[i:i + 8, j:j + 8, 0][:, ::-1])
            np.testing.assert_array_equal(fc[..., 1], flow[i:i + 8, j:j + 8, 1][:, ::-1])
            np.testing.assert_array_equal(gc, g[i:i + 8, j:j + 8][:, ::-1])
        else:
            np.testing.assert_array_equal(fc, flow[i:i + 8, j:j + 8])
    assert seen_flip


def test_pairs_sampler_and_folders(tmp_path):
    rng = np.random.default_rng(5)
    os.makedirs(tmp_path / "rgb")
    os.makedirs(tmp_path / "gt")
    for k in range(2):
        write_image(tmp_path / "rgb" / f"im{k}.png",
                    (rng.random((40, 48, 3)) * 255).astype(np.uint8))
        write_depth(tmp_path / "gt" / f"im{k}.png", rng.random((40, 48)) * 50 + 1, scale=100)
    ds = JointUpsamplingPairs.from_folders(tmp_path / "rgb", tmp_path / "gt", 8, crop=32,
                                           target_scale=100, batch_size=3)
    assert len(ds) == 2
    b1 = ds(np.random.default_rng(0))
    b2 = ds(np.random.default_rng(0))
    for k in b1:
        np.testing.assert_array_equal(b1[k], b2[k])
    assert b1["low"].shape == (3, 1, 4, 4) and b1["target"].shape == (3, 1, 32, 32)
    exs = list(ds.examples())
    assert exs[0]["target"].shape == (1, 1, 40, 48)
    with pytest.raises(ValueError, match="multiple of factor"):
        JointUpsamplingPairs(ds.pairs, 8, crop=30)
    with pytest.raises(FileNotFoundError):
        JointUpsamplingPairs.from_folders(tmp_path / "gt", tmp_path / "rgb2", 8)


# ------------------------------------------------------------------------ synthetic
@pytest.mark.parametrize("kind", ["depth", "flow"])
def test_synthetic_determinism_and_shapes(kind):
    a = synthetic_scene(np.random.default_rng(42), (48, 64), kind)
    b = synthetic_scene(42, (48, 64), kind)
    c = synthetic_scene(43, (48, 64), kind)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    assert a[0].shape == (48, 64, 3) and a[0].dtype == np.uint8
    assert a[1].shape == ((48, 64) if kind == "depth" else (48, 64, 2))
    assert a[1].dtype == np.float32 and np.isfinite(a[1]).all()
    if kind == "depth":
        assert a[1].min() > 0


def test_synthetic_target_edges_follow_colour_edges():
    """Where the target jumps, the colour changes too (most of the time)."""
    hits = total = 0
    for s in range(5):
        rgb, d = synthetic_scene(s, (64, 64), "depth")
        jump = np.abs(np.diff(d, axis=1)) > 0.05 * (d.max() - d.min())
        col = np.abs(np.diff(rgb.astype(float), axis=1)).sum(-1) > 6
        hits += (jump & col).sum()
        total += jump.sum()
    assert total > 0 and hits / total > 0.6


def test_synthetic_pairs_sampler():
    ds = JointUpsamplingPairs([], 4, kind="flow", crop=32,
                              synthetic=SyntheticScenes("flow", (32, 32)))
    b = ds(np.random.default_rng(0))
    assert b["low"].shape == (1, 2, 8, 8) and b["guide"].shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="nothing to sample"):
        JointUpsamplingPairs([], 4)


# ------------------------------------------------------------------------ CLI
def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "pacnd", "upsample", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def cones_files(tmp_path_factory):
    from pacnd.datasets import data_path
    d = tmp_path_factory.mktemp("cones")
    rgb = read_image(data_path("cones_im2.png"))[100:228, 150:278]
    disp = read_middlebury_disparity(data_path("cones_disp2.png"))[100:228, 150:278]
    write_image(d / "rgb.png", rgb)
    write_depth(d / "disp.png", disp, scale=4.0, bits=8)
    write_depth(d / "low.png", make_low_res(np.nan_to_num(disp, nan=20.0), 8), scale=4.0,
                bits=8)
    return d


def test_cli_predict_end_to_end(cones_files, tmp_path):
    d = cones_files
    r = _cli("predict", "--guide", str(d / "rgb.png"), "--target", str(d / "disp.png"),
             "--target-scale", "4", "--factor", "8", "-o", str(tmp_path / "out.npy"),
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "RMSE" in r.stdout and "PAC" in r.stdout
    out = np.load(tmp_path / "out.npy")
    assert out.shape == (128, 128)
    # the CLI's result is the Python API's, bit for bit, and so is its printed RMSE
    from pacnd.data import fill_unknown
    from pacnd.models import pretrained, rmse

    gt = read_depth(d / "disp.png", scale=4)
    low = fill_unknown(make_low_res(gt, 8, "center"))
    want = pretrained("depth", 8).upsample(low, read_image(d / "rgb.png"))
    np.testing.assert_array_equal(out, want)
    line = next(x for x in r.stdout.splitlines() if x.strip().startswith("PAC"))
    assert float(line.split()[-1]) == pytest.approx(rmse(want, gt, border=6), abs=1e-4)
    fig = tmp_path / "out_compare.png"
    assert fig.exists() and read_image(fig).shape[1] > 600
    # from a low-res file, factor inferred, 16-bit PNG output
    r = _cli("predict", "--guide", str(d / "rgb.png"), "--low", str(d / "low.png"),
             "--target-scale", "4", "-o", str(tmp_path / "o.png"), "--no-figure",
             "--model", "jbu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert read_depth(tmp_path / "o.png", scale=4).shape == (128, 128)


def test_cli_predict_ensemble_is_the_api(cones_files, tmp_path):
    from pacnd.models import pretrained

    d = cones_files
    r = _cli("predict", "--guide", str(d / "rgb.png"), "--low", str(d / "low.png"),
             "--target-scale", "4", "--ensemble", "2", "--no-figure", "--no-baselines",
             "-o", str(tmp_path / "e.npy"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    low = read_depth(d / "low.png", scale=4)
    m = pretrained("depth", 8)
    want = m.upsample(low, read_image(d / "rgb.png"), ensemble=2)
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), want)
    assert np.abs(want - m.upsample(low, read_image(d / "rgb.png"))).max() > 1e-3
    r = _cli("predict", "--guide", str(d / "rgb.png"), "--low", str(d / "low.png"),
             "--ensemble", "3", "-o", str(tmp_path / "x.npy"), cwd=tmp_path)
    assert r.returncode != 0 and "--ensemble" in r.stderr


def test_cli_predict_flow(tmp_path):
    rgb, flow = synthetic_scene(0, (64, 64), "flow")
    write_image(tmp_path / "f.png", rgb)
    write_flow(tmp_path / "gt.flo", flow)
    r = _cli("predict", "--guide", str(tmp_path / "f.png"), "--target", str(tmp_path / "gt.flo"),
             "-o", str(tmp_path / "up.flo"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "EPE" in r.stdout
    assert read_flow(tmp_path / "up.flo").shape == (64, 64, 2)
    assert (tmp_path / "up_compare.png").exists()


@pytest.mark.parametrize("args,needle", [
    (["predict", "--guide", "missing.png", "--low", "x.npy"], "no such file"),
    (["predict", "--guide", "{rgb}", "--low", "{low}", "--factor", "4"], "size mismatch"),
    (["predict", "--guide", "{rgb}", "--target", "{disp}", "--factor", "6"], "ships no"),
    (["train", "--out", "o", "--synthetic-ratio", "0"], "no training data"),
])
def test_cli_errors_are_one_line(cones_files, tmp_path, args, needle):
    d = cones_files
    args = [a.format(rgb=d / "rgb.png", low=d / "low.png", disp=d / "disp.png") for a in args]
    r = _cli(*args, cwd=tmp_path)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pacnd upsample: error:"), r.stderr
    assert needle in lines[0]


@pytest.mark.parametrize("call,exc,needle", [
    (lambda B: B.check_factor(8.0), TypeError, "--factor 8.0 is a float"),
    (lambda B: B.check_factor(True), TypeError, "is a bool"),
    (lambda B: B.check_factor(1), ValueError, "--factor 1 is invalid"),
    (lambda B: B.task_of("x.npy", "normals"), ValueError, "task 'normals' is invalid"),
    (lambda B: B.resolve_protocol("center", "flow"), ValueError, "is a depth protocol"),
    (lambda B: B.resolve_protocol("bilinear", "depth"), ValueError, "is the flow protocol"),
    (lambda B: B.upsample_file("g.png", "t.npy", "o.npy", source="target", factor=8.0),
     TypeError, "--factor 8.0"),
])
def test_file_helpers_reject_bad_values(call, exc, needle):
    """The helpers ``pacnd upsample`` and the folder batches share (pacnd.models.batch)."""
    import pacnd.models.batch as B

    with pytest.raises(exc, match=needle.replace(".", r"\.")):
        call(B)


def test_file_helpers_defaults():
    import pacnd.models.batch as B

    assert B.check_factor(None) is None and B.check_factor(np.int64(4)) == 4
    assert B.task_of("a/b.FLO") == "flow" and B.task_of("a.png") == "depth"
    assert B.task_of("a.flo", "depth") == "depth"
    assert B.resolve_protocol(None, "depth") == "center"
    assert B.resolve_protocol(None, "flow") == "bilinear"
    assert B.resolve_protocol("bicubic", "depth") == "bicubic"


def test_cli_train_default_lr_per_model(tmp_path):
    """Without --lr, DJF trains at 2e-4 (its ReLUs die at the PAC networks' 1e-3) and
    PAC-lite at 1e-3; the weights' training record holds the rate used."""
    from pacnd.models import load_upsampler

    rgb, d = synthetic_scene(1, (64, 64), "depth")
    write_image(tmp_path / "rgb.png", rgb)
    np.save(tmp_path / "d.npy", d)
    for model, want in (("djf", 2e-4), ("pac_lite", 1e-3)):
        out = tmp_path / model
        r = _cli("train", "--out", str(out), "--factor", "4", "--model", model, "--crop", "32",
                 "--steps", "1", "--no-progress", "--pair", str(tmp_path / "rgb.png"),
                 str(tmp_path / "d.npy"), cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert load_upsampler(out / "model.npz").meta["history"][-1]["lr"] == want


def test_cli_train_eval_resume(tmp_path):
    rgb, d = synthetic_scene(1, (64, 64), "depth")
    write_image(tmp_path / "rgb.png", rgb)
    np.save(tmp_path / "d.npy", d)
    common = ["--out", str(tmp_path / "run"), "--factor", "4", "--model", "pac_lite",
              "--crop", "32", "--checkpoint-every", "1", "--no-progress",
              "--pair", str(tmp_path / "rgb.png"), str(tmp_path / "d.npy")]
    r = _cli("train", *common, "--steps", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = _cli("train", *common, "--steps", "3", "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    import json
    rows = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    assert [x["step"] for x in rows] == [1, 2, 3]
    r = _cli("eval", "--pair", str(tmp_path / "rgb.png"), str(tmp_path / "d.npy"),
             "--factor", "4", "--models", "bicubic", "jbu",
             f"mine={tmp_path / 'run' / 'model.npz'}", "--json", str(tmp_path / "e.json"),
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(json.load(open(tmp_path / "e.json"))) == 3
