"""Readers of the training pool's encodings, the pool catalogue and splits, the mixed
sampler, the bicubic low-res protocol, the residual networks and the recipe runner."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from pacnd.data import encodings as E
from pacnd.data.lowres import make_low_res
from pacnd.data.mixture import MixedPairs
from pacnd.data.pool import HELD_OUT, group_of, scan_pool, source_of, split

from conftest import shared_dir  # noqa: E402

POOL = shared_dir() / "data" / "train"


# --------------------------------------------------------------------------- PNG encoder
def _png_bytes(a, filters):
    """An independent PNG writer: ``a`` (H, W, C) uint16/uint8, row filter ``filters[y]``."""
    a = np.asarray(a)
    H, W, C = a.shape
    depth = 16 if a.dtype == np.uint16 else 8
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[C]
    if depth == 16:
        raw = a.astype(">u2").tobytes()
    else:
        raw = a.astype(np.uint8).tobytes()
    row = W * C * depth // 8
    bpp = C * depth // 8
    rows = [np.frombuffer(raw[y * row:(y + 1) * row], dtype=np.uint8).astype(np.int64)
            for y in range(H)]
    out = bytearray()
    prev = np.zeros(row, dtype=np.int64)
    for y, cur in enumerate(rows):
        f = filters[y % len(filters)]
        left = np.concatenate([np.zeros(bpp, np.int64), cur[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int64), prev[:-bpp]])
        if f == 0:
            enc = cur
        elif f == 1:
            enc = cur - left
        elif f == 2:
            enc = cur - prev
        elif f == 3:
            enc = cur - (left + prev) // 2
        else:
            p = left + prev - upleft
            pa, pb, pc = np.abs(p - left), np.abs(p - prev), np.abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
            enc = cur - pred
        out.append(f)
        out += (enc & 0xFF).astype(np.uint8).tobytes()
        prev = cur

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", W, H, depth, ctype, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(out)))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [3, 4])
def test_read_png_decodes_16bit_colour_with_every_filter(tmp_path, channels):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 65536, (9, 13, channels)).astype(np.uint16)
    p = tmp_path / "x.png"
    p.write_bytes(_png_bytes(a, [0, 1, 2, 3, 4]))
    np.testing.assert_array_equal(E.read_png(p), a)


def test_read_png_rejects_garbage(tmp_path):
    p = tmp_path / "bad.png"
    p.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="not a PNG"):
        E.read_png(p)
    with pytest.raises(FileNotFoundError):
        E.read_png(tmp_path / "missing.png")


def test_kitti_flow_decoding(tmp_path):
    u = np.array([[0.0, -1.5], [100.25, 3.0]])
    v = np.array([[2.0, 0.5], [-7.0, 0.0]])
    valid = np.array([[1, 1], [1, 0]])
    a = np.stack([u * 64 + 2 ** 15, v * 64 + 2 ** 15, valid], axis=-1).astype(np.uint16)
    p = tmp_path / "flow.png"
    p.write_bytes(_png_bytes(a, [4, 1]))
    f = E.read_kitti_flow(p)
    np.testing.assert_array_equal(f[..., 0][valid == 1], u[valid == 1])
    np.testing.assert_array_equal(f[..., 1][valid == 1], v[valid == 1])
    assert np.isnan(f[1, 1]).all()


def test_depth_encodings(tmp_path):
    from PIL import Image

    mm = np.array([[0, 1000], [2345, 65535]], dtype=np.uint16)
    rot = ((mm << 3) | (mm >> 13)).astype(np.uint16)      # SUN RGB-D stores mm rotated left
    Image.fromarray(rot).save(tmp_path / "sun.png")
    d = E.read_sunrgbd_depth(tmp_path / "sun.png")
    assert np.isnan(d[0, 0])
    np.testing.assert_allclose(d[0, 1], 1.0)
    np.testing.assert_allclose(d[1, 0], 2.345, rtol=1e-6)
    Image.fromarray(mm).save(tmp_path / "tum.png")
    np.testing.assert_allclose(E.read_tum_depth(tmp_path / "tum.png")[0, 1], 0.2)
    d = E.read_mm_depth(tmp_path / "tum.png", invalid=(0, 65535))
    assert np.isnan(d[0, 0]) and np.isnan(d[1, 1]) and d[1, 0] == np.float32(2.345)
    Image.fromarray(mm).save(tmp_path / "k.png")
    np.testing.assert_allclose(E.read_kitti_disparity(tmp_path / "k.png")[0, 1], 1000 / 256)
    pal = Image.fromarray(np.array([[0, 80], [160, 16]], dtype=np.uint8), mode="P")
    pal.putpalette([i % 256 for i in range(768)][::-1])          # colours unrelated to indices
    pal.save(tmp_path / "tsukuba.png")
    d = E.read_palette_disparity(tmp_path / "tsukuba.png")
    assert np.isnan(d[0, 0]) and d[0, 1] == 5 and d[1, 0] == 10 and d[1, 1] == 1
    Image.fromarray(np.array([[0.0, 1.5], [np.inf, 3.25]], np.float32), mode="F").save(
        tmp_path / "d.tiff")
    d = E.read_float_tiff(tmp_path / "d.tiff")
    assert np.isnan(d[0, 0]) and np.isnan(d[1, 0]) and d[1, 1] == np.float32(3.25)


# --------------------------------------------------------------------------- pool
def test_groups_keep_physical_scenes_together():
    assert group_of("depth", "rgbdd_20200517164450", "rgbdd/20200517164450") == "rgbdd/20200517"
    assert group_of("depth", "mb2006_bowling1", "x") == "middlebury2006/bowling"
    assert group_of("depth", "mb2006_rocks2_dct", "x") == "middlebury2006/rocks"
    assert group_of("depth", "nyu_test1001", "nyuv2/test_1001") == "nyuv2/test1000-1002"
    assert group_of("flow", "sintel_ambush_4_f0006", "x") == "sintel/ambush"
    assert group_of("flow", "sintel_ambushX_f0003", "x") == "sintel/ambush"
    assert group_of("flow", "mbflow_urban3", "x") == "middleburyflow/urban"
    assert source_of("depth", "mb2006_wood1_dct")[1] == "png3"
    assert source_of("depth", "mb2006_aloe")[1] == "png2"
    with pytest.raises(ValueError, match="no known source"):
        source_of("depth", "mystery_scene")


@pytest.mark.skipif(not POOL.is_dir(), reason=f"no training pool at {POOL}")
@pytest.mark.parametrize("task", ["depth", "flow"])
def test_real_pool_split_is_by_group_and_decodes(task):
    items = scan_pool(POOL, task)
    train, test = split(items, task)
    assert {it.group for it in train}.isdisjoint({it.group for it in test})
    assert {it.group for it in test} == set(HELD_OUT[task])
    assert not any(it.source == "kitti" for it in train + test)
    for it in (test[0], train[0], train[-1]):
        rgb, t = it.load()
        assert rgb.dtype == np.uint8 and rgb.shape[2] == 3 and rgb.shape[:2] == t.shape[:2]
        known = np.isfinite(t)
        assert known.mean() > 0.5 and (np.nanmin(t) >= 0 if task == "depth" else True)


# --------------------------------------------------------------------------- sampler
def _sources(kind):
    rng = np.random.default_rng(1)
    out = {}
    for s, n in (("a", 2), ("b", 1)):
        pairs = []
        for _ in range(n):
            g = rng.integers(0, 256, (40, 56, 3)).astype(np.uint8)
            t = rng.random((40, 56, 2 if kind == "flow" else 1)).astype(np.float32) * 10 - 3
            t[:3, :5] = np.nan
            pairs.append((g, t if kind == "flow" else t[..., 0]))
        out[s] = pairs
    return out


def test_mixed_pairs_is_deterministic_and_normalises_by_image():
    mp = MixedPairs(_sources("depth"), 4, crop=32, batch_size=3, weights={"a": 1, "b": 0})
    b1 = mp(np.random.default_rng(5))
    b2 = mp(np.random.default_rng(5))
    for k in b1:
        np.testing.assert_array_equal(b1[k], b2[k])
    assert b1["low"].shape == (3, 1, 8, 8) and b1["guide"].shape == (3, 3, 32, 32)
    # weight 0: never source b; per-image ranges: every item uses its image's range
    ranges = [tuple(np.round(np.ravel(r), 6)) for r in mp.ranges["a"]]
    for lo, hi in zip(b1["lo"][:, 0], b1["hi"][:, 0]):
        assert (round(float(lo), 6), round(float(hi), 6)) in ranges
    known = b1["mask"] > 0
    t = b1["raw"][known]
    np.testing.assert_allclose(b1["target"][known],
                               ((t - b1["lo"][:, :, None, None].repeat(32, 2).repeat(32, 3)[known])
                                / (b1["hi"] - b1["lo"])[:, :, None, None].repeat(32, 2)
                                .repeat(32, 3)[known]), rtol=1e-5, atol=1e-6)


def test_mixed_pairs_flow_flip_negates_u_and_its_range():
    src = _sources("flow")
    mp = MixedPairs(src, 4, kind="flow", crop=32, scale=(1.0, 1.0), color_jitter=0,
                    weights={"b": 1, "a": 0})
    g, t = src["b"][0]
    lo, hi = mp.ranges["b"][0]
    seen = set()
    for seed in range(12):
        b = mp(np.random.default_rng(seed))
        flipped = b["lo"][0, 0] != lo[0]
        seen.add(bool(flipped))
        if flipped:
            np.testing.assert_allclose([b["lo"][0, 0], b["hi"][0, 0]], [-hi[0], -lo[0]])
            assert b["lo"][0, 1] == lo[1]
            # the crop's u values are negated image values
            u = b["raw"][0, 0][np.isfinite(b["raw"][0, 0])]
            assert np.isin(u, -t[..., 0]).all()
    assert seen == {True, False}


def test_mixed_pairs_validates():
    with pytest.raises(ValueError, match="unknown sources"):
        MixedPairs(_sources("depth"), 4, crop=32, weights={"zzz": 1})
    with pytest.raises(ValueError, match="multiple of factor"):
        MixedPairs(_sources("depth"), 8, crop=36)
    with pytest.raises(ValueError, match="normalize"):
        MixedPairs(_sources("depth"), 4, crop=32, normalize="per-pixel")


# --------------------------------------------------------------------------- bicubic
def test_bicubic_low_res_reproduces_constants_and_ramps():
    H, W, f = 64, 48, 8
    np.testing.assert_allclose(make_low_res(np.full((H, W), 2.5), f, "bicubic"), 2.5,
                               rtol=1e-6)
    yy, xx = np.mgrid[:H, :W].astype(np.float64)
    ramp = 0.3 * yy - 0.7 * xx + 4
    lo = make_low_res(ramp, f, "bicubic")
    cy = (np.arange(H // f) + 0.5) * f - 0.5
    cx = (np.arange(W // f) + 0.5) * f - 0.5
    want = 0.3 * cy[:, None] - 0.7 * cx[None, :] + 4
    # away from the mirrored borders a cubic kernel reproduces linear functions exactly
    np.testing.assert_allclose(lo[2:-2, 2:-2], want[2:-2, 2:-2], rtol=1e-5, atol=1e-4)
    holes = ramp.copy()
    holes[10:12, 10:12] = np.nan
    lo_h = make_low_res(holes, f, "bicubic")
    assert np.isfinite(lo_h).all()
    np.testing.assert_allclose(lo_h[3:, 3:], lo[3:, 3:], rtol=1e-6)


# --------------------------------------------------------------------------- models
@pytest.mark.parametrize("name", ["pac", "pac_lite", "djf"])
def test_residual_network_starts_as_its_base(name, tmp_path):
    from pacnd.models import baseline, build_model, load_upsampler, save_upsampler

    plain = build_model(name, 8, rng=0)
    m = build_model(name, 8, rng=0, init="zero_last", residual="jbu")
    assert m.num_parameters() == plain.num_parameters()
    assert set(m.state_dict()) == set(plain.state_dict())
    rng = np.random.default_rng(2)
    x = rng.random((2, 1, 6, 5)).astype(np.float32)
    g = rng.random((2, 3, 48, 40)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(m(x, g)), np.asarray(baseline("jbu", "depth", 8)(x, g)))
    save_upsampler(tmp_path / "m.npz", m)
    m2 = load_upsampler(tmp_path / "m.npz")
    assert m2.residual == "jbu" and type(m2) is type(m)
    np.testing.assert_array_equal(np.asarray(m2(x, g)), np.asarray(m(x, g)))


def test_residual_input_network(tmp_path):
    """residual_input=True: the base's result is extra guide channels of the network (the
    untrained model is still its base; the network's output depends on the base), saved and
    reloaded with the option; refused without a base or for other channel counts."""
    from pacnd.models import baseline, build_model, load_upsampler, save_upsampler
    from pacnd.models.recipe import Recipe, build_from_recipe

    rng = np.random.default_rng(4)
    x = rng.random((1, 1, 6, 5)).astype(np.float32)
    g = rng.random((1, 3, 48, 40)).astype(np.float32)
    jbu = np.asarray(baseline("jbu", "depth", 8)(x, g))
    m = build_model("pac", 8, rng=0, init="he", residual="jbu", residual_input=True)
    assert m.branch_g[0].weight.shape[1] == 4   # RGB + the base
    np.testing.assert_array_equal(np.asarray(m(x, g)), jbu)
    r = build_model("pac", 8, rng=0, residual="jbu", residual_input=True)  # random last conv
    plain = build_model("pac", 8, rng=0, residual="jbu")
    assert r.num_parameters() == plain.num_parameters() + 32 * 25
    y = np.asarray(r(x, g))
    assert not np.allclose(y, jbu)
    # the base enters the network: perturbing what the guide branch sees of it changes y
    r2 = build_model("pac", 8, rng=0, residual="jbu", residual_input=True)
    r2.branch_g[0].weight.data[:, 3] += 0.5
    assert not np.allclose(np.asarray(r2(x, g)), y)
    save_upsampler(tmp_path / "m.npz", r)
    back = load_upsampler(tmp_path / "m.npz")
    assert back.residual_input and back.residual == "jbu"
    np.testing.assert_array_equal(np.asarray(back(x, g)), y)
    with pytest.raises(ValueError, match="residual_input"):
        build_model("pac", 8, residual_input=True)
    with pytest.raises(ValueError, match="1-channel"):
        r(np.concatenate([x, x], axis=1), g)
    with pytest.raises(ValueError, match="residual_input"):
        Recipe(residual=None, residual_input=True)
    rec = Recipe(residual_input=True, steps=10)
    assert rec.to_json()["residual_input"] is True
    assert "residual_input" not in Recipe(steps=10).to_json()  # older recipes compare equal
    assert build_from_recipe(rec).residual_input


def test_cosine_schedule():
    from pacnd import nn
    from pacnd.optim import CosineLR, SGD

    opt = SGD(nn.Conv2d(1, 1, 1).parameters(), lr=2.0)
    s = CosineLR(opt, 10, warmup=2, final=0.1)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(12):
        s.step()
        lrs.append(opt.param_groups[0]["lr"])
    np.testing.assert_allclose(lrs[:3], [1.0, 2.0, 2.0])
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))
    np.testing.assert_allclose(lrs[10:], 0.2)
    with pytest.raises(ValueError, match="warmup"):
        CosineLR(opt, 5, warmup=5)


def test_recipe_default_lr_per_model():
    """A recipe without lr takes its network's (DJF 2e-4: at 1e-3 it collapsed); an explicit
    one is kept; JSON round trips; a bad one is refused by name."""
    from pacnd.models.recipe import DEFAULT_LR, Recipe

    assert Recipe(model="djf").lr == DEFAULT_LR["djf"] == 2e-4
    assert Recipe(model="pac").lr == Recipe(model="pac_lite").lr == 1e-3
    assert Recipe(model="djf", lr=5e-4).lr == 5e-4
    r = Recipe(model="djf")
    assert Recipe(**r.to_json()) == r and r.to_json()["lr"] == 2e-4
    with pytest.raises(ValueError, match="lr=-0.001"):
        Recipe(lr=-1e-3)
    with pytest.raises(ValueError, match="lr=nan"):
        Recipe(lr=float("nan"))
    with pytest.raises(TypeError, match="lr must be a number, got '1e-3'"):
        Recipe(lr="1e-3")
    with pytest.raises(TypeError, match="lr must be a number"):
        Recipe(lr=True)


def test_recipe_loss(tmp_path, monkeypatch):
    """Recipe.loss: 'mse' (default; absent from the JSON, so older run folders still
    resume) or 'relative', whose run logs the mean of each sample's MSE over bicubic's
    (not the plain MSE); bad values are refused by name."""
    import json

    from pacnd.models import recipe as R

    r = R.Recipe()
    assert r.loss == "mse" and "loss" not in r.to_json() and "loss_floor" not in r.to_json()
    rel = R.Recipe(loss="relative", loss_floor=1e-3)
    assert rel.to_json()["loss"] == "relative" and R.Recipe(**rel.to_json()) == rel
    with pytest.raises(ValueError, match="loss='l2'"):
        R.Recipe(loss="l2")
    for bad in (0, -1e-4, float("inf"), True):
        with pytest.raises(ValueError, match="loss_floor"):
            R.Recipe(loss="relative", loss_floor=bad)

    monkeypatch.setattr(R, "pool_sources",
                        lambda root, task, items=None, synthetic=0: _sources("depth"))
    logs = {}
    for loss in ("mse", "relative"):
        rr = R.default_recipe("depth", 4, "pac_lite", steps=2, warmup=1, crop=32, batch_size=2,
                              eval_every=0, weights={"a": 1.0, "b": 1.0}, loss=loss)
        R.train_from_pool(rr, "unused", tmp_path / loss, progress=False, eval_per_group=0)
        with open(tmp_path / loss / "metrics.jsonl") as f:
            logs[loss] = [json.loads(line) for line in f]
    # the first step sees the same batch and weights: equal plain RMSE, another loss
    a, b = logs["mse"][0], logs["relative"][0]
    np.testing.assert_allclose(a["loss"], a["rmse_n"] ** 2, rtol=1e-5)
    np.testing.assert_allclose(a["rmse_n"], b["rmse_n"], rtol=1e-6)
    assert abs(b["loss"] - b["rmse_n"] ** 2) > 0.1 * b["rmse_n"] ** 2


def test_recipe_synthetic_scenes(monkeypatch):
    """``Recipe.synthetic=N`` adds N deterministic synthetic scenes as the source
    'synthetic' (weighted like any other); the count and its weight come together."""
    from pacnd.data import synthetic_scene
    from pacnd.models import recipe as R

    r = R.Recipe(task="flow", factor=4, synthetic=3, weights={"sintel": 1.0, "synthetic": 1.0})
    assert R.Recipe(**r.to_json()) == r and r.to_json()["synthetic"] == 3
    assert "synthetic" not in R.Recipe(task="flow").to_json()    # old run recipes compare equal
    monkeypatch.setattr("pacnd.data.pool.scan_pool", lambda root, task: [])
    monkeypatch.setattr("pacnd.data.pool.split", lambda items, kind: ([], []))
    src = R.pool_sources("unused", "flow", synthetic=2)
    assert list(src) == ["synthetic"] and len(src["synthetic"]) == 2
    g, t = synthetic_scene(R.SYNTHETIC_SEED + 1, R.SYNTHETIC_SHAPE, "flow")
    np.testing.assert_array_equal(src["synthetic"][1][0], g)
    np.testing.assert_array_equal(src["synthetic"][1][1], t)
    with pytest.raises(ValueError, match="weights lack the source 'synthetic'"):
        R.Recipe(task="flow", synthetic=5)
    with pytest.raises(ValueError, match="weights name the source 'synthetic'"):
        R.Recipe(task="flow", weights={"sintel": 1.0, "synthetic": 1.0})
    for bad in (-1, 2.5, True, "8"):
        with pytest.raises(ValueError, match=f"synthetic={bad!r}"):
            R.Recipe(task="flow", synthetic=bad, weights={"synthetic": 1.0})
    assert R.synthetic_mix({"a": 2.0, "b": 2.0}, 0) == {}
    w = R.default_weights("flow")
    assert w == R.FLOW_WEIGHTS and w is not R.FLOW_WEIGHTS
    assert R.default_weights("depth") == R.DEPTH_WEIGHTS == R.Recipe().weights
    with pytest.raises(ValueError, match="task='normals'"):
        R.default_weights("normals")
    with pytest.raises(ValueError, match="positive sum"):
        R.synthetic_mix({"a": 0.0}, 0.5)


def _capture_pool_recipes(monkeypatch):
    """Replace ``train_from_pool`` with a stub; the list it returns collects the
    recipes the CLI would have trained."""
    from pacnd.models import recipe as R
    from pacnd.train import TrainResult

    got = []

    def fake(r, pool, out, **kw):
        got.append(r)
        return TrainResult(step=0)

    monkeypatch.setattr(R, "train_from_pool", fake)
    return got


def test_cli_pool_synthetic_ratio(tmp_path, monkeypatch, capsys):
    """``pacnd upsample train --pool --synthetic-ratio R`` trains the pool recipe with a
    fraction R of synthetic crops (the real sources' weights scaled by 1 - R); a ratio
    outside [0, 1] is refused by name."""
    from pacnd.cli import main
    from pacnd.models import recipe as R

    got = _capture_pool_recipes(monkeypatch)
    args = ["upsample", "train", "--pool", "unused", "--task", "flow", "--factor", "4",
            "--crop", "32", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(args + ["--synthetic-ratio", "0.25"]) == 0
    r = got[-1]
    assert r.synthetic == R.SYNTHETIC_SCENES and r.weights["synthetic"] == 0.25
    real = sum(R.FLOW_WEIGHTS.values())
    for k, v in R.FLOW_WEIGHTS.items():
        assert r.weights[k] == pytest.approx(0.75 * v / real)
    assert main(args) == 0 and got[-1].synthetic == 0 and got[-1].weights == R.FLOW_WEIGHTS
    capsys.readouterr()
    assert main(args + ["--synthetic-ratio", "1.5"]) == 1
    assert "synthetic ratio=1.5" in capsys.readouterr().err


def test_recipe_runs_resume_bit_for_bit(tmp_path, monkeypatch):
    """A run killed after two of four steps and resumed ends where the uninterrupted
    run ends, bit for bit; a different recipe does not resume."""
    from pacnd.models import load_upsampler
    from pacnd.models import recipe as R
    from pacnd.models import registry

    monkeypatch.setattr(R, "pool_sources",
                        lambda root, task, items=None, synthetic=0: _sources("depth"))
    r = R.default_recipe("depth", 4, "pac_lite", steps=4, warmup=1, crop=32, batch_size=2,
                         eval_every=0, weights={"a": 1.0, "b": 1.0}, checkpoint_seconds=1e-9)
    R.train_from_pool(r, "unused", tmp_path / "straight", progress=False, eval_per_group=0)

    real_save = registry.save_upsampler

    def killed_after_two(path, model, meta=None):
        real_save(path, model, meta=meta)
        if meta["step"] == 2:
            raise KeyboardInterrupt("session ended")

    monkeypatch.setattr(registry, "save_upsampler", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        R.train_from_pool(r, "unused", tmp_path / "split", progress=False, eval_per_group=0)
    monkeypatch.setattr(registry, "save_upsampler", real_save)
    other = R.Recipe(**{**r.to_json(), "lr": 5e-4})
    with pytest.raises(ValueError, match="another recipe"):
        R.train_from_pool(other, "unused", tmp_path / "split", resume=True, progress=False,
                          eval_per_group=0)
    res = R.train_from_pool(r, "unused", tmp_path / "split", resume=True, progress=False,
                            eval_per_group=0)
    assert res.resumed_from == 2 and res.step == 4
    a = np.load(tmp_path / "straight" / "checkpoint.npz")
    b = np.load(tmp_path / "split" / "checkpoint.npz")
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    m = load_upsampler(tmp_path / "straight" / "model.npz")
    assert m.meta["step"] == 4 and m.meta["recipe"]["model"] == "pac_lite"


def test_recipe_init_from_continues_a_run(tmp_path, monkeypatch):
    """init_from starts a run from another run's weights (relative to ``root``): the second
    run's step-0 model is the first run's final one; another network is refused."""
    from pacnd.models import load_upsampler
    from pacnd.models import recipe as R

    monkeypatch.setattr(R, "pool_sources",
                        lambda root, task, items=None, synthetic=0: _sources("depth"))
    kw = dict(steps=2, warmup=1, crop=32, batch_size=2, eval_every=0,
              weights={"a": 1.0, "b": 1.0})
    first = R.default_recipe("depth", 4, "pac_lite", **kw)
    R.train_from_pool(first, "unused", tmp_path / "one", progress=False, eval_per_group=0)
    trained = load_upsampler(tmp_path / "one" / "model.npz")
    second = R.default_recipe("depth", 4, "pac_lite", init_from="one/model.npz", **kw)
    assert second.to_json()["init_from"] == "one/model.npz"
    assert "init_from" not in first.to_json()
    start = R.build_from_recipe(second, root=tmp_path)
    fresh = R.build_from_recipe(first)
    sd, st, sf = start.state_dict(), trained.state_dict(), fresh.state_dict()
    for k in sd:
        np.testing.assert_array_equal(np.asarray(sd[k]), np.asarray(st[k]), err_msg=k)
    assert any(not np.array_equal(np.asarray(sd[k]), np.asarray(sf[k])) for k in sd)
    res = R.train_from_pool(second, "unused", tmp_path / "two", progress=False,
                            eval_per_group=0, root=tmp_path)
    assert res.step == 2
    other = R.default_recipe("depth", 4, "djf", init_from="one/model.npz", **kw)
    with pytest.raises(ValueError, match="another network"):
        R.build_from_recipe(other, root=tmp_path)
    # another residual base (parameter-free): the same learned layers on it
    rebased = R.build_from_recipe(R.default_recipe("depth", 4, "pac_lite", residual="bicubic",
                                                   init_from="one/model.npz", **kw),
                                  root=tmp_path)
    assert rebased.residual_config()["residual"] == "bicubic"
    for k, v in rebased.state_dict().items():
        np.testing.assert_array_equal(np.asarray(v), np.asarray(st[k]), err_msg=k)
    # another protocol: the same learned layers, the residual base on the area grid
    moved = R.build_from_recipe(R.default_recipe("depth", 4, "pac_lite", protocol="bicubic",
                                                 init_from="one/model.npz", **kw), root=tmp_path)
    assert moved.residual_config()["residual_sampling"] == "area"
    for k, v in moved.state_dict().items():
        np.testing.assert_array_equal(np.asarray(v), np.asarray(st[k]), err_msg=k)
    with pytest.raises(TypeError, match="init_from"):
        R.default_recipe("depth", 4, "pac_lite", init_from=3, **kw)
    with pytest.raises(FileNotFoundError):
        R.build_from_recipe(R.default_recipe("depth", 4, "pac_lite", init_from="nope.npz",
                                             **kw), root=tmp_path)


def test_recipe_pre_upsample_starts_from_the_smaller_factor(tmp_path):
    """pre_upsample: a 16x (here 8x) run starts from 8x (here 4x) weights of the same
    network; the JSON keeps it only when set; bad values are refused."""
    from pacnd.models import PacJointUpsample, save_upsampler
    from pacnd.models import recipe as R

    small = PacJointUpsample(4, residual="jbu", rng=5)
    save_upsampler(tmp_path / "x4.npz", small)
    r = R.default_recipe("depth", 8, "pac", pre_upsample=2, init_from="x4.npz", crop=64)
    assert r.to_json()["pre_upsample"] == 2
    assert "pre_upsample" not in R.default_recipe("depth", 8, "pac").to_json()
    assert R.Recipe(**r.to_json()) == r
    m = R.build_from_recipe(r, root=tmp_path)
    assert m.factor == 8 and m.pre_upsample == 2
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(np.asarray(v), np.asarray(small.state_dict()[k]),
                                      err_msg=k)
    with pytest.raises(ValueError, match="another network"):  # a correction vs the target
        R.build_from_recipe(R.default_recipe("depth", 4, "pac", residual=None,
                                             init_from="x4.npz", crop=64), root=tmp_path)
    with pytest.raises(ValueError, match="another network"):  # the base fed to the guide
        R.build_from_recipe(R.default_recipe("depth", 4, "pac", residual_input=True,
                                             init_from="x4.npz", crop=64), root=tmp_path)
    with pytest.raises(ValueError, match="another network"):     # 8x body: 3 PAC^T layers
        R.build_from_recipe(R.default_recipe("depth", 8, "pac", init_from="x4.npz"),
                            root=tmp_path)
    for bad in (3, 8, 0):
        with pytest.raises(ValueError, match="pre_upsample"):
            R.default_recipe("depth", 8, "pac", pre_upsample=bad)
    with pytest.raises(ValueError, match="pre_upsample"):
        R.default_recipe("depth", 8, "pac_lite", pre_upsample=2)
    with pytest.raises(TypeError, match="pre_upsample"):
        R.default_recipe("depth", 8, "pac", pre_upsample=2.0)


def test_cli_pool_pre_upsample_and_init(tmp_path, monkeypatch, capsys):
    """``pacnd upsample train --pool --pre-upsample 2 --init W`` trains the pool recipe
    from those weights with the input interpolated 2x; --pre-upsample needs --pool."""
    from pacnd.cli import main
    from pacnd.models import PacJointUpsample, load_upsampler, save_upsampler

    got = _capture_pool_recipes(monkeypatch)
    save_upsampler(tmp_path / "x4.npz", PacJointUpsample(4, residual="jbu", rng=2))
    args = ["upsample", "train", "--task", "depth", "--factor", "8", "--crop", "64",
            "--out", str(tmp_path / "run"), "--no-progress", "--pre-upsample", "2"]
    assert main(args + ["--pool", "unused", "--init", str(tmp_path / "x4.npz")]) == 0
    r = got[-1]
    assert r.pre_upsample == 2 and r.init_from == str(tmp_path / "x4.npz")
    m = load_upsampler(tmp_path / "run" / "model.npz")
    assert m.factor == 8 and m.pre_upsample == 2
    capsys.readouterr()
    assert main(args) == 1
    assert "--pre-upsample 2 trains with the pool recipe" in capsys.readouterr().err


def test_cli_pool_loss(tmp_path, monkeypatch, capsys):
    """``pacnd upsample train --pool --loss relative`` sets the recipe's loss (default
    'mse'); --loss relative needs --pool."""
    from pacnd.cli import main

    got = _capture_pool_recipes(monkeypatch)
    args = ["upsample", "train", "--task", "depth", "--factor", "4", "--crop", "32",
            "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(args + ["--pool", "unused"]) == 0 and got[-1].loss == "mse"
    assert main(args + ["--pool", "unused", "--loss", "relative"]) == 0
    assert got[-1].loss == "relative"
    capsys.readouterr()
    assert main(args + ["--loss", "relative"]) == 1
    assert "--loss relative trains with the pool recipe" in capsys.readouterr().err
