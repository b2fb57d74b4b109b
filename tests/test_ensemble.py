"""Flip self-ensembles (``model.upsample(..., ensemble=N)``, :mod:`pacnd.models.ensemble`).

Oracles: upsamplers that commute with mirroring (JBU, interpolation on its own
sampling grid) return the same result with and without the ensemble, which only
holds if the centre-sampling shift is right; a random network's ensemble equals
the average of ``upsample`` calls on inputs mirrored by hand in the target's own
units (flow components negated / swapped by hand), which checks the vector
handling and the normalised-space negation.
"""

import numpy as np
import pytest

from pacnd.datasets import load_cones
from pacnd.models import baseline, build_model
from pacnd.models.ensemble import ensemble_geometry, ensemble_size


@pytest.fixture(scope="module")
def cones():
    g, d = load_cones()
    g = np.ascontiguousarray(g[40:136, 60:180])
    d = np.nan_to_num(d[40:136, 60:180], nan=20.0).astype(np.float32)
    return g, d


def _close(out, ref, rtol=2e-5):
    scale = float(np.abs(ref).max())
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=0, atol=rtol * scale)


def test_ensemble_size_validation():
    assert ensemble_size(False) == 1 and ensemble_size(True) == 4
    assert [ensemble_size(n) for n in (1, 2, 4, 8)] == [1, 2, 4, 8]
    assert ensemble_size(np.int64(8)) == 8
    for bad in (0, 3, 16, -4):
        with pytest.raises(ValueError, match="choose 1, 2, 4 or 8"):
            ensemble_size(bad)
    for bad in (4.0, "4", None):
        with pytest.raises(TypeError, match="ensemble must be a bool or an int"):
            ensemble_size(bad)


def test_upsample_rejects_bad_ensemble(cones):
    g, d = cones
    m = baseline("jbu", "depth", 4)
    with pytest.raises(ValueError, match="ensemble=3"):
        m.upsample(d[1::4, 1::4], g, ensemble=3)


def test_geometry_from_model_metadata():
    m = build_model("pac_lite", 8, rng=0)
    assert ensemble_geometry(m, 1) == (1, False)           # nothing said: centre sampling
    m.meta = {"task": "flow"}                               # flow's protocol: area, vector
    m.channels = 2
    assert ensemble_geometry(m, 2) == (0, True)
    m.meta = {"task": "depth", "training": {"recipe": {"protocol": "bicubic"}}}
    assert ensemble_geometry(m, 1) == (0, False)
    m.meta = {"recipe": {"task": "depth", "protocol": "bicubic"}}   # a run's model.npz
    assert ensemble_geometry(m, 1) == (0, False)
    m.meta = {"recipe": {"task": "flow", "protocol": "bilinear"}}
    assert ensemble_geometry(m, 2) == (0, True)
    assert ensemble_geometry(build_model("djf", 5, rng=0), 1) == (0, False)   # odd factor
    m = build_model("djf", 4, 2, rng=0)                    # bare 2-channel model: flow
    assert ensemble_geometry(m, 2) == (1, True)


@pytest.mark.parametrize("factor", [4, 8, 5])
@pytest.mark.parametrize("size", [2, 4, 8])
def test_mirror_equivariant_upsamplers_are_unchanged(cones, factor, size):
    """JBU on centre samples: exact only with the one-pixel shift for even factors."""
    g, d = cones
    H, W = (d.shape[0] // factor) * factor, (d.shape[1] // factor) * factor
    g, d = g[:H, :W], d[:H, :W]
    o = (factor - 1) // 2
    low = d[o::factor, o::factor]
    m = baseline("jbu", "depth", factor)
    ref = m.upsample(low, g)
    _close(m.upsample(low, g, ensemble=size), ref)
    if factor % 2 == 0:   # without the shift the mirrored copies disagree
        from pacnd.models import ensemble as ens

        m.meta = {"training": {"recipe": {"protocol": "bicubic"}}}   # claims no shift
        off = m.upsample(low, g, ensemble=size)
        assert float(np.abs(off - ref).max()) > 1e-3 * float(np.abs(ref).max())
        assert ens.ensemble_geometry(m, 1)[0] == 0


def test_area_sampled_flow_interpolation_is_unchanged(cones):
    g, d = cones
    low = np.stack([d[1::4, 1::4] / 7, 3 - d[1::4, 1::4] / 5], axis=-1)
    m = baseline("bilinear", "flow", 4)
    m.meta = {"task": "flow"}
    _close(m.upsample(low, g, ensemble=8), m.upsample(low, g))


def _by_hand(m, low, g, variants, vector):
    """The ensemble from user-level upsample calls on inputs mirrored in their own units."""
    outs = []
    for fy, fx, tr in variants:
        lo, gg = low.copy(), g
        if fx:
            lo, gg = lo[:, ::-1], gg[:, ::-1]
            if vector:
                lo[..., 0] *= -1
        if fy:
            lo, gg = lo[::-1], gg[::-1]
            if vector:
                lo[..., 1] *= -1
        if tr:
            lo, gg = lo.swapaxes(0, 1), gg.swapaxes(0, 1)
            if vector:
                lo = lo[..., ::-1]
        y = m.upsample(np.ascontiguousarray(lo), np.ascontiguousarray(gg)).copy()
        if tr:
            y = y.swapaxes(0, 1)
            if vector:
                y = y[..., ::-1]
        if fy:
            y = y[::-1].copy()
            if vector:
                y[..., 1] *= -1
        if fx:
            y = y[:, ::-1].copy()
            if vector:
                y[..., 0] *= -1
        outs.append(y)
    return np.mean(outs, axis=0)


@pytest.mark.parametrize("task", ["flow", "depth"])
def test_network_ensemble_is_the_mean_of_mirrored_calls(cones, task):
    from pacnd.models.ensemble import VARIANTS

    g, d = cones
    m = build_model("pac_lite", 4, 2 if task == "flow" else 1, rng=4, residual="bilinear")
    # area-sampled protocols (flow's default, bicubic): mirrored copies need no shift
    m.meta = {"task": task, "training": {"recipe": {"protocol": "bilinear" if task == "flow"
                                                    else "bicubic"}}}
    if task == "flow":
        low = np.stack([d[1::4, 1::4] / 9 - 2, np.sin(d[1::4, 1::4] / 11)], axis=-1)
    else:
        low = d[1::4, 1::4]
    ref = m.upsample(low, g)
    for size in (2, 8):
        out = m.upsample(low, g, ensemble=size)
        _close(out, _by_hand(m, low if low.ndim == 3 else low[..., None], g, VARIANTS[size],
                             task == "flow")[..., slice(None) if task == "flow" else 0])
        assert float(np.abs(out - ref).max()) > 1e-4 * float(np.abs(ref).max())  # not a no-op


def test_batch_predict_passes_the_ensemble_on(cones, tmp_path):
    from pacnd.cli import main
    from pacnd.data import fill_unknown, make_low_res
    from pacnd.data.io import read_image, write_depth, write_image
    from pacnd.models import pretrained

    g, d = cones
    gdir, tdir = tmp_path / "g", tmp_path / "t"
    gdir.mkdir()
    tdir.mkdir()
    write_image(gdir / "a.png", g[:88, :112])
    write_depth(tdir / "a.png", d[:88, :112], scale=4.0, bits=8)
    rc = main(["upsample", "predict", "--batch", "--guide", str(gdir), "--target", str(tdir),
               "--target-scale", "4", "--factor", "8", "--ensemble", "2", "-q",
               "-o", str(tmp_path / "out")])
    assert rc == 0
    from pacnd.data.io import read_depth

    low = fill_unknown(make_low_res(read_depth(tdir / "a.png", scale=4), 8, "center"))
    want = pretrained("depth", 8).upsample(low, read_image(gdir / "a.png"), ensemble=2)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "a.npy"), want)


def test_ensembled_batches_equal_upsample(cones):
    from pacnd.data.pairs import prepare_example
    from pacnd.models.ensemble import Ensembled
    from pacnd.models.training import predict_batch

    g, d = cones
    g, d = g[:96, :112], d[:96, :112]
    m = build_model("pac_lite", 8, rng=5, residual="jbu")
    b = prepare_example(g, d, 8, lowres_mode="center")
    want = m.upsample(d[3::8, 3::8], g, pad=0, ensemble=4)
    _close(predict_batch(Ensembled(m, 4), b)[0, 0], want)
    assert Ensembled(m, True).num_parameters() == m.num_parameters()
    with pytest.raises(TypeError, match="JointUpsampler"):
        Ensembled(lambda a, b: a, 2)
