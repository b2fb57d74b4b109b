"""Joint-upsampling models: parameter counts, shapes, the upsample() interface,
baselines against oracles, training steps and resume (the shipped weights:
``test_pretrained.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from pacnd.filters import joint_bilateral_upsample
from pacnd.models import (DJF, Bicubic, Bilinear, JointBilateralUpsample, PacJointUpsample,
                          PacJointUpsampleLite, build_model, load_upsampler, save_upsampler,
                          train_upsampler, upsampling_loss)
from pacnd.models.networks import fold_channels, repeat_for_channels, unfold_channels
from pacnd.data import JointUpsamplingPairs, SyntheticScenes

#: the reference's counts; factor 2 is one 2x stage fewer than 4x: one PAC^T layer
#: (32*32*25 + 32) and 16 guide channels (32*16*25 + 16) = 38,448 parameters less
STANDARD = {2: 145_041, 4: 183_489, 8: 221_937, 16: 260_385}
LITE = {4: 55_509, 8: 56_273, 16: 55_777}


# ------------------------------------------------------------------------ parameter counts
@pytest.mark.parametrize("factor", [4, 8, 16])
@pytest.mark.parametrize("channels", [1, 2])
def test_parameter_counts(factor, channels):
    assert PacJointUpsample(factor, channels, rng=0).num_parameters() == STANDARD[factor]
    assert PacJointUpsampleLite(factor, channels, rng=0).num_parameters() == LITE[factor]
    assert DJF(factor, channels, rng=0).num_parameters() == 56_323
    assert JointBilateralUpsample(factor).num_parameters() == 0
    assert Bicubic(factor).num_parameters() == 0


def test_reference_state_dict_names():
    names = list(PacJointUpsample(8, rng=0).state_dict())
    assert names[:2] == ["branch_t.conv1.weight", "branch_t.conv1.bias"]
    for n in ("branch_g.conv3.weight", "up_convts.0.weight", "up_convts.2.bias",
              "branch_f.conv2.weight"):
        assert n in names
    assert "branch_joint.conv3.weight" in DJF(8, rng=0).state_dict()


def test_bad_factors():
    with pytest.raises(ValueError, match="power of 2"):
        PacJointUpsample(6)
    with pytest.raises(ValueError, match="lite"):
        PacJointUpsampleLite(2)
    with pytest.raises(TypeError):
        PacJointUpsample(8.0)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("unet", 8)


# ------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("factor", [2, 4, 8, 16])
@pytest.mark.parametrize("channels", [1, 2])
def test_forward_shapes(factor, channels):
    rng = np.random.default_rng(factor)
    h, w = 3, 4
    low = rng.random((2, channels, h, w)).astype(np.float32)
    guide = rng.random((2, 3, h * factor, w * factor)).astype(np.float32)
    models = [PacJointUpsample(factor, rng=0), DJF(factor, rng=0),
              JointBilateralUpsample(factor), Bicubic(factor), Bilinear(factor),
              Bilinear(factor, sampling="center")]
    if factor in (4, 8, 16):
        models.append(PacJointUpsampleLite(factor, rng=0))
    for m in models:
        out = np.asarray(m(low, guide))
        assert out.shape == (2, channels, h * factor, w * factor), type(m).__name__
        assert np.isfinite(out).all()


def test_channel_folding_is_per_channel():
    """Each flow channel goes through the single-channel network on its own."""
    rng = np.random.default_rng(0)
    m = PacJointUpsample(4, rng=1)
    low = rng.random((2, 2, 4, 5)).astype(np.float32)
    guide = rng.random((2, 3, 16, 20)).astype(np.float32)
    both = np.asarray(m(low, guide))
    for b in range(2):
        for c in range(2):
            one = np.asarray(m(low[b:b + 1, c:c + 1], guide[b:b + 1]))
            np.testing.assert_allclose(both[b, c], one[0, 0], rtol=1e-5, atol=1e-6)
    x, C = fold_channels(low)
    assert x.shape == (4, 1, 4, 5) and C == 2
    np.testing.assert_array_equal(np.asarray(unfold_channels(x, C)), low)
    g = np.asarray(repeat_for_channels(guide, 2))
    np.testing.assert_array_equal(g[1], guide[0])
    np.testing.assert_array_equal(g[2], guide[1])


# ------------------------------------------------------------------------ upsample()
def _pair(rng, h=6, w=7, factor=4, channels=None):
    low = rng.random((h, w) if channels is None else (h, w, channels)) * 40 + 10
    guide = (rng.random((h * factor, w * factor, 3)) * 255).astype(np.uint8)
    return low, guide


@pytest.mark.parametrize("model", [PacJointUpsample(4, rng=0), DJF(4, rng=0),
                                   JointBilateralUpsample(4), Bicubic(4)],
                         ids=["pac", "djf", "jbu", "bicubic"])
def test_upsample_constant_target_stays_constant(model):
    guide = (np.random.default_rng(0).random((24, 28, 3)) * 255).astype(np.uint8)
    out = model.upsample(np.full((6, 7), 3.25), guide)
    assert out.shape == (24, 28) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.float32(3.25))
    out2 = model.upsample(np.stack([np.full((6, 7), -1.0), np.full((6, 7), 2.0)], -1), guide)
    assert out2.shape == (24, 28, 2)
    np.testing.assert_array_equal(out2[..., 0], np.float32(-1))
    np.testing.assert_array_equal(out2[..., 1], np.float32(2))


def test_upsample_minmax_normalisation_inverse():
    """upsample() == denormalise(model(normalise(low))): affine maps of the
    target commute with it, for any network."""
    rng = np.random.default_rng(1)
    m = PacJointUpsample(4, rng=3)
    low, guide = _pair(rng)
    out = m.upsample(low, guide, pad=0)
    lo, hi = low.min(), low.max()
    raw = np.asarray(m(((low - lo) / (hi - lo)).astype(np.float32)[None, None],
                       (guide.astype(np.float32) / 255).transpose(2, 0, 1)[None]))[0, 0]
    np.testing.assert_allclose(out, raw * (hi - lo) + lo, rtol=1e-5, atol=1e-4)
    # scale/shift equivariance
    out2 = m.upsample(low * 3.0 - 7.0, guide, pad=0)
    np.testing.assert_allclose(out2, out * 3.0 - 7.0, rtol=1e-4, atol=1e-3)
    # float guide in [0, 1] == uint8 guide
    np.testing.assert_allclose(m.upsample(low, guide / 255.0, pad=0), out, rtol=1e-5,
                               atol=1e-4)


def test_upsample_border_padding():
    """By default learned networks run on mirror-padded inputs (cropped back);
    pad=k equals running the network on the padded arrays by hand."""
    rng = np.random.default_rng(11)
    m = PacJointUpsample(4, rng=3)
    assert m.border_pad() == 3 and Bicubic(4).border_pad() == 0
    low, guide = _pair(rng)
    out = m.upsample(low, guide)
    np.testing.assert_array_equal(out, m.upsample(low, guide, pad=3))
    lo, hi = low.min(), low.max()
    lp = np.pad((low - lo) / (hi - lo), 3, mode="symmetric").astype(np.float32)
    gp = np.pad(guide.astype(np.float32) / 255, ((12, 12), (12, 12), (0, 0)), mode="symmetric")
    raw = np.asarray(m(lp[None, None], gp.transpose(2, 0, 1)[None]))[0, 0, 12:-12, 12:-12]
    np.testing.assert_allclose(out, raw * (hi - lo) + lo, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="pad="):
        m.upsample(low, guide, pad=-1)


def test_upsample_flow_channels():
    rng = np.random.default_rng(2)
    m = PacJointUpsample(4, 2, rng=0)
    low, guide = _pair(rng, channels=2)
    out = m.upsample(low, guide)
    assert out.shape == (24, 28, 2)
    for c in range(2):
        np.testing.assert_allclose(out[..., c], m.upsample(low[..., c], guide), rtol=1e-5,
                                   atol=1e-4)


def test_upsample_validation():
    rng = np.random.default_rng(3)
    m = JointBilateralUpsample(4)
    low, guide = _pair(rng)
    with pytest.raises(ValueError, match="size mismatch.*upsamples by 4.*8x"):
        m.upsample(low[:3, :3], guide[:24, :24])
    with pytest.raises(ValueError, match="size mismatch"):
        m.upsample(low, guide[:-1])
    bad = low.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN.*fill_unknown"):
        m.upsample(bad, guide)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        m.upsample(low, guide[..., 0])
    with pytest.raises(ValueError, match="alpha"):
        m.upsample(low, np.concatenate([guide, guide[..., :1]], -1))
    with pytest.raises(ValueError, match=r"\[0, 1\].*255"):
        m.upsample(low, guide.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(h, w\)"):
        m.upsample(low[None, None], guide)
    with pytest.raises(TypeError):
        m.upsample("low", guide)


# ------------------------------------------------------------------------ baselines
@pytest.mark.parametrize("factor", [2, 4, 8])
def test_jbu_equals_filters_joint_bilateral_upsample(factor):
    rng = np.random.default_rng(factor)
    low = rng.random((5, 6)).astype(np.float32)
    guide = rng.random((5 * factor, 6 * factor, 3)).astype(np.float32)
    m = JointBilateralUpsample(factor, sigma_spatial=0.8, sigma_color=0.2)
    out = np.asarray(m(low[None, None], guide.transpose(2, 0, 1)[None]))[0, 0]
    ref = joint_bilateral_upsample(low, guide, factor=factor, sigma_spatial=0.8,
                                   sigma_color=0.2, win_size=m.kernel_size)
    np.testing.assert_allclose(out, ref, rtol=2e-5, atol=2e-6)


def test_jbu_naive_oracle():
    """JBU against a direct weighted average over the low-res samples."""
    rng = np.random.default_rng(5)
    f, h, w = 4, 4, 5
    low = rng.random((h, w))
    guide = rng.random((h * f, w * f, 3))
    m = JointBilateralUpsample(f, kernel_size=9, scale_space=0.3, scale_color=4.0)
    out = np.asarray(m(low[None, None].astype(np.float32),
                       guide.transpose(2, 0, 1)[None].astype(np.float32)))[0, 0]
    o = (f - 1) // 2
    ref = np.zeros((h * f, w * f))
    for y in range(h * f):
        for x in range(w * f):
            num = den = 0.0
            for i in range(h):
                for j in range(w):
                    qy, qx = i * f + o, j * f + o
                    if abs(qy - y) > 4 or abs(qx - x) > 4:
                        continue
                    d2 = (0.3 ** 2) * ((qy - y) ** 2 + (qx - x) ** 2) + \
                        (4.0 ** 2) * ((guide[qy, qx] - guide[y, x]) ** 2).sum()
                    k = np.exp(-0.5 * d2)
                    num += k * low[i, j]
                    den += k
            ref[y, x] = num / den
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_interpolation_baselines_reproduce_samples():
    rng = np.random.default_rng(6)
    f = 4
    low = rng.random((5, 6)).astype(np.float32)
    g = np.zeros((1, 3, 20, 24), np.float32)
    o = (f - 1) // 2
    for cls in (Bicubic, Bilinear):
        out = np.asarray(cls(f, sampling="center")(low[None, None], g))[0, 0]
        np.testing.assert_allclose(out[o::f, o::f], low, atol=1e-5)
    # Bilinear 'area' is PyTorch's align_corners=False: a linear ramp stays linear inside
    ramp = np.arange(6, dtype=np.float32)[None, None, None, :].repeat(5, axis=2)
    out = np.asarray(Bilinear(f)(ramp, g))[0, 0]
    np.testing.assert_allclose(out[0, 2:-2], (np.arange(2, 22) + 0.5) / f - 0.5, atol=1e-5)


# ------------------------------------------------------------------------ save / load
def test_save_load_roundtrip(tmp_path):
    rng = np.random.default_rng(7)
    low, guide = _pair(rng)
    for m in (PacJointUpsample(4, rng=0), PacJointUpsampleLite(4, rng=0), DJF(4, rng=0),
              JointBilateralUpsample(4, sigma_spatial=0.6), Bicubic(4, sampling="area")):
        p = save_upsampler(tmp_path / f"{m.kind}.npz", m, meta={"note": "x"})
        m2 = load_upsampler(p)
        assert type(m2) is type(m) and m2.meta == {"note": "x"}
        np.testing.assert_array_equal(m2.upsample(low, guide), m.upsample(low, guide))
    with pytest.raises(FileNotFoundError):
        load_upsampler(tmp_path / "nope.npz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a pacnd upsampler"):
        load_upsampler(tmp_path / "plain.npz")


def _bilinear_2x(x):
    """2x bilinear upsampling, align_corners=False, edges repeated (by hand: output
    2i sits 1/4 sample before input i, output 2i + 1 1/4 after)."""
    def along(a, axis):
        prev = np.concatenate([np.take(a, [0], axis), np.take(a, range(a.shape[axis] - 1),
                                                               axis)], axis)
        nxt = np.concatenate([np.take(a, range(1, a.shape[axis]), axis),
                              np.take(a, [-1], axis)], axis)
        out = np.stack([0.75 * a + 0.25 * prev, 0.75 * a + 0.25 * nxt], axis + 1)
        shape = list(a.shape)
        shape[axis] *= 2
        return out.reshape(shape)
    return along(along(np.asarray(x, np.float64), 2), 3)


def test_pre_upsample_runs_the_smaller_network_on_an_interpolated_input(tmp_path):
    """PacJointUpsample(8, pre_upsample=2) is the 4x network (same parameters) on the
    2x-interpolated target, plus its residual base at 8x on the original target."""
    from pacnd.autograd import Tensor, no_grad

    rng = np.random.default_rng(3)
    low = rng.random((2, 2, 5, 6)).astype(np.float32)
    guide = rng.random((2, 3, 40, 48)).astype(np.float32)
    m = PacJointUpsample(8, 2, residual="jbu", pre_upsample=2, rng=0)
    body = PacJointUpsample(4, 2, rng=1)
    assert m.num_parameters() == STANDARD[4] and m.num_ups == 2
    assert list(m.state_dict()) == list(body.state_dict())
    sd = m.state_dict()
    for k, v in sd.items():                     # make the last conv non-zero (he init: 0)
        v[...] = rng.standard_normal(v.shape).astype(v.dtype) * 0.05
    m.load_state_dict(sd)
    body.load_state_dict(sd)
    with no_grad():
        got = np.asarray(m(low, guide))
        want = (np.asarray(body(_bilinear_2x(low).astype(np.float32), guide))
                + np.asarray(JointBilateralUpsample(8)(low, guide)))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    m2 = load_upsampler(save_upsampler(tmp_path / "m.npz", m))
    assert m2.pre_upsample == 2 and m2.factor == 8
    with no_grad():
        np.testing.assert_array_equal(np.asarray(m2(low, guide)), got)
    x = Tensor(low, requires_grad=True)         # differentiable through the interpolation
    (m(x, guide) ** 2).sum().backward()
    assert np.isfinite(x.grad).all() and np.abs(x.grad).max() > 0
    assert "pre_upsample" not in PacJointUpsample(8, rng=0).config   # old files unchanged
    for bad in (3, 0, 8, 16):
        with pytest.raises(ValueError, match="pre_upsample"):
            PacJointUpsample(8, pre_upsample=bad)
    for bad in (2.0, True):
        with pytest.raises(TypeError, match="pre_upsample"):
            PacJointUpsample(8, pre_upsample=bad)


# ------------------------------------------------------------------------ training
def _sampler(factor=4, crop=32, kind="depth"):
    return JointUpsamplingPairs([], factor, kind=kind, crop=crop,
                                synthetic=SyntheticScenes(kind, (crop, crop)), batch_size=2)


def test_training_steps_reduce_the_loss(tmp_path):
    data = _sampler()
    batch = data(np.random.default_rng(0))
    m = PacJointUpsampleLite(4, rng=0)
    before = upsampling_loss(m, batch, border=2)[0].item()
    train_upsampler(m, lambda rng: batch, steps=25, lr=1e-3, milestones=(), border=2,
                    progress=False)
    after = upsampling_loss(m, batch, border=2)[0].item()
    assert after < 0.5 * before


def test_masked_loss_ignores_unknown_pixels():
    """The loss is the mean squared error over exactly the known pixels inside the
    border, whatever unknown pixels hold (an independent NumPy computation)."""
    data = _sampler()
    batch = data(np.random.default_rng(1))
    m = PacJointUpsampleLite(4, rng=0)
    out = np.asarray(m(batch["low"], batch["guide"]), dtype=np.float64)
    b2 = dict(batch)
    b2["mask"] = batch["mask"].copy()
    b2["mask"][..., :4, :] = 0
    b2["mask"][1, :, 10:20, 5:9] = 0
    b2["target"] = batch["target"].copy()
    b2["target"][b2["mask"] == 0] = 1e6   # unknown pixels may hold anything
    for border in (0, 3):
        sl = (Ellipsis, slice(border, out.shape[-2] - border),
              slice(border, out.shape[-1] - border))
        known = b2["mask"][sl] > 0
        d = (out[sl] - b2["target"][sl].astype(np.float64))[known]
        want = float(np.mean(d * d))
        got, metrics = upsampling_loss(m, b2, border=border)
        np.testing.assert_allclose(got.item(), want, rtol=1e-5)
        np.testing.assert_allclose(metrics["rmse_n"], np.sqrt(want), rtol=1e-5)
    # all pixels known: the plain MSE
    d = out - batch["target"]
    np.testing.assert_allclose(upsampling_loss(m, batch, border=0)[0].item(),
                               float(np.mean(d * d)), rtol=1e-5)


def test_relative_loss_divides_each_sample_by_the_reference():
    """loss='relative': the mean over samples of mse_i / (mse_ref_i + floor), the
    reference (bicubic) on the same known pixels (an independent NumPy computation);
    its gradient matches the float64 finite differences of that formula."""
    data = _sampler()
    batch = data(np.random.default_rng(2))
    batch["mask"] = batch["mask"].copy()
    batch["mask"][0, :, 5:15, 3:20] = 0
    m = PacJointUpsampleLite(4, rng=0)
    ref = Bicubic(4)
    out = np.asarray(m(batch["low"], batch["guide"]), dtype=np.float64)
    r = np.asarray(ref(batch["low"], batch["guide"]), dtype=np.float64)
    t = batch["target"].astype(np.float64)
    for border, floor in ((0, 1e-4), (3, 0.05)):
        sl = (slice(border, out.shape[-2] - border), slice(border, out.shape[-1] - border))
        want = []
        for i in range(len(out)):
            k = batch["mask"][i][(Ellipsis, *sl)] > 0
            e = (out[i][(Ellipsis, *sl)] - t[i][(Ellipsis, *sl)])[k]
            er = (r[i][(Ellipsis, *sl)] - t[i][(Ellipsis, *sl)])[k]
            want.append(np.mean(e * e) / (np.mean(er * er) + floor))
        got, metrics = upsampling_loss(m, batch, border=border, reference=ref, floor=floor)
        np.testing.assert_allclose(got.item(), np.mean(want), rtol=1e-5)
        plain = upsampling_loss(m, batch, border=border)[0].item()
        np.testing.assert_allclose(metrics["rmse_n"], np.sqrt(plain), rtol=1e-5)
    # the gradient: d/d(out) of the formula, through a model that returns its parameter
    from pacnd.autograd import Tensor

    class Echo:
        def __init__(self, y):
            self.y = Tensor(y, requires_grad=True)

        def __call__(self, low, guide):
            return self.y

    b64 = {k: (v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in batch.items()}
    echo = Echo(out.copy())
    loss, _ = upsampling_loss(echo, b64, border=2, reference=ref, floor=1e-3)
    loss.backward()

    def f(y):
        return upsampling_loss(lambda lo, g: Tensor(y), b64, border=2, reference=ref,
                               floor=1e-3)[0].item()

    rng = np.random.default_rng(0)
    for _ in range(5):
        idx = tuple(rng.integers(0, s) for s in out.shape)
        y1, y2 = out.copy(), out.copy()
        y1[idx] += 1e-6
        y2[idx] -= 1e-6
        fd = (f(y1) - f(y2)) / 2e-6
        np.testing.assert_allclose(echo.y.grad[idx], fd, rtol=1e-5, atol=1e-9)


def test_relative_loss_validates():
    batch = _sampler()(np.random.default_rng(0))
    m = PacJointUpsampleLite(4, rng=0)
    with pytest.raises(TypeError, match="reference"):
        upsampling_loss(m, batch, reference="bicubic")
    for bad in (0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="floor"):
            upsampling_loss(m, batch, reference=Bicubic(4), floor=bad)


def test_training_resume_is_bit_exact(tmp_path):
    def run(d, steps, resume=False):
        m = PacJointUpsampleLite(4, rng=0)
        train_upsampler(m, _sampler(crop=16), steps=steps, lr=1e-3, milestones=(3,), border=1,
                        log_dir=d, checkpoint_every=2, resume=resume, progress=False, seed=3)
        return m

    full = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    resumed = run(tmp_path / "b", 4, resume=True)
    for (k, v), (_, w) in zip(full.state_dict().items(), resumed.state_dict().items()):
        np.testing.assert_array_equal(np.asarray(v), np.asarray(w), err_msg=k)
    assert (tmp_path / "b" / "metrics.csv").exists()


def test_bilinear_init_is_a_bilinear_upsampler():
    """init='bilinear' keeps the architecture and makes the untrained network a
    cascade of PyTorch 2x bilinear (align_corners=False) upsamplings away from
    the borders."""
    rng = np.random.default_rng(8)
    for factor in (2, 4, 8):
        m = PacJointUpsample(factor, rng=0, init="bilinear")
        assert m.num_parameters() == STANDARD[factor]
        low = rng.random((1, 1, 12, 13)).astype(np.float32)
        guide = np.zeros((1, 3, 12 * factor, 13 * factor), np.float32)
        out = np.asarray(m(low, guide))[0, 0]
        ref = low
        for _ in range(int(np.log2(factor))):
            ref = np.asarray(Bilinear(2)(ref, None))
        ref = ref[0, 0]
        b = 2 * factor + 8   # the guide convs see zero padding within 6 px of the border
        np.testing.assert_allclose(out[b:-b, b:-b], ref[b:-b, b:-b], atol=1e-4)
    with pytest.raises(ValueError, match="init="):
        PacJointUpsample(4, init="zeros")
