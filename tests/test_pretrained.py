"""The shipped joint-upsampling weights: they load and run, and their quality on
held-out scenes they never saw (the bundled Middlebury 2003 Cones view 2 for depth,
RubberWhale for flow) is pinned to the values measured when they were shipped."""

from __future__ import annotations

import numpy as np
import pytest
from test_models import STANDARD, _pair

from pacnd.models import (DJF, PacJointUpsample, PacJointUpsampleLite, available_pretrained,
                          pretrained)


SHIPPED = [("depth", 4), ("depth", 8), ("depth", 16), ("flow", 4), ("flow", 8), ("flow", 16)]


@pytest.mark.parametrize("task,factor", SHIPPED)
def test_pretrained_loads_and_runs(task, factor):
    assert (task, factor, "standard") in available_pretrained()
    m = pretrained(task, factor=factor)
    assert isinstance(m, PacJointUpsample) and m.factor == factor
    assert m.num_parameters() == STANDARD[factor // m.pre_upsample]   # 16x: the 8x body
    assert "training" in m.meta
    rng = np.random.default_rng(0)
    low, guide = _pair(rng, 2, 3, factor, channels=2 if task == "flow" else None)
    out = m.upsample(low, guide)
    assert out.shape[:2] == (2 * factor, 3 * factor) and np.isfinite(out).all()


def test_pretrained_missing():
    with pytest.raises(FileNotFoundError, match="available: .*depth x8"):
        pretrained("depth", factor=32)
    with pytest.raises(ValueError):
        pretrained("normals", factor=8)


def test_pretrained_depth_x8_on_held_out_cones():
    """The shipped 8x depth weights on the bundled Cones view 2 (whole scene, the held-out
    protocol of benchmarks/upsampling_heldout.py; no view of Cones was trained on).
    Measured when they were shipped (step 3000 of runs/depth_x8_pac_relative_3: the
    JBU-based weights moved onto a bicubic residual base, fine-tuned 4000 steps, then two
    cycles with the relative loss): RMSE 1.3220 px as ``model.upsample`` runs them (1.3353
    without its border padding), JBU 1.2155, bicubic 1.7142 -- 0.771x bicubic, 1.088x JBU
    on this scene. The Middlebury scenes, where JBU is strong, are where the bicubic base
    gives ground (the JBU-based weights: 1.2442 here); over the 13 held-out groups it leads
    them (0.824x against 0.885x JBU). Pinned to within 1 %: a changed engine, loader, low-res
    protocol or weight file shows up here."""
    from pacnd.datasets import load_cones
    from pacnd.models import baseline
    from pacnd.models.evaluation import evaluate_scenes, scene_examples
    from pacnd.models.training import predict_batch, rmse

    rgb, disp = load_cones()
    exs = scene_examples([("cones2", "middlebury2003/cones", rgb, disp)], 8,
                         lowres_mode="center")
    model = pretrained("depth", 8)
    rows = evaluate_scenes({"pac": model, "jbu": baseline("jbu", "depth", 8),
                            "bicubic": baseline("bicubic", "depth", 8)}, exs, task="depth")
    err = {r["model"]: r["error"] for r in rows}
    assert err["pac"] == pytest.approx(1.3220, rel=0.01)
    # the evaluation runs the network as model.upsample does (mirror-padded borders)
    b = exs[0]["batch"]
    low = b["low"][0, 0] * (b["hi"][0, 0] - b["lo"][0, 0]) + b["lo"][0, 0]
    want = rmse(model.upsample(low, b["guide"][0].transpose(1, 2, 0)), b["raw"][0, 0],
                border=6)
    assert err["pac"] == pytest.approx(want, rel=1e-5)
    bare = evaluate_scenes({"pac": model}, exs, task="depth", user_padding=False)[0]["error"]
    assert bare == pytest.approx(1.3353, rel=0.01)
    with pytest.raises(ValueError, match="pad=-1"):
        predict_batch(model, b, pad=-1)
    assert err["jbu"] == pytest.approx(1.2155, rel=0.01)
    assert err["bicubic"] == pytest.approx(1.7142, rel=0.01)
    assert err["pac"] / err["bicubic"] < 0.8
    assert model.residual_config()["residual"] == "bicubic"
    assert model.meta["training"]["held_out_eval"]["vs_jbu"] < 0.85


def _cones_centre_errors(model, factor):
    """RMSE (px) of ``model``, JBU and bicubic on the bundled Cones view 2 (never trained
    on), centre protocol, scored as benchmarks/upsampling_heldout.py scores it."""
    from pacnd.datasets import load_cones
    from pacnd.models import baseline
    from pacnd.models.evaluation import evaluate_scenes, scene_examples

    rgb, disp = load_cones()
    exs = scene_examples([("cones2", "middlebury2003/cones", rgb, disp)], factor,
                         lowres_mode="center")
    rows = evaluate_scenes({"pac": model, "jbu": baseline("jbu", "depth", factor),
                            "bicubic": baseline("bicubic", "depth", factor)}, exs,
                           task="depth")
    return {r["model"]: r["error"] for r in rows}


def test_pretrained_depth_x16_on_held_out_cones():
    """The shipped 16x depth weights: the 8x network on a 2x-interpolated input
    (``pre_upsample=2``) over a bicubic residual base, started from the bicubic-based 8x
    weights, fine-tuned at 16x (runs/depth_x16_pac_resbicubic, 1500 steps), then 1500 steps
    of the relative loss (runs/depth_x16_pac_relative). Measured when shipped on the bundled
    Cones view 2 (never trained on): RMSE 1.9134 px, JBU 1.7366, bicubic 2.3570. On this
    Middlebury scene JBU stays ahead, as at 8x (before the relative cycle: 1.9663; the
    JBU-based 16x weights: 1.7757 px here); over the 13 held-out groups the weights lead it
    (0.903x JBU; before the relative cycle 0.921x, the JBU-based ones 0.940x). Pinned to
    within 1 %."""
    m = pretrained("depth", 16)
    assert m.pre_upsample == 2 and m.num_ups == 3 and m.num_parameters() == STANDARD[8]
    assert m.residual_config()["residual"] == "bicubic"
    err = _cones_centre_errors(m, 16)
    assert err["pac"] == pytest.approx(1.9134, rel=0.01)
    assert err["jbu"] == pytest.approx(1.7366, rel=0.01)
    assert err["bicubic"] == pytest.approx(2.3570, rel=0.01)
    assert err["pac"] < 0.85 * err["bicubic"]
    assert m.meta["training"]["held_out_eval"]["vs_jbu"] < 0.91


def test_pretrained_depth_x4_on_held_out_cones():
    """The shipped 4x depth weights (the paper's 4x network over a bicubic residual base,
    then a cycle with the relative loss: runs/depth_x4_pac_relative step 3000) on the
    bundled Cones view 2, centre protocol. Measured when shipped: RMSE 0.9156 px, JBU 0.9435,
    bicubic 1.1791 (before the relative cycle: 0.9650, behind JBU); over the 13 held-out
    groups the weights are 0.803x bicubic and 0.765x JBU. Pinned to within 1 %."""
    m = pretrained("depth", 4)
    assert m.num_parameters() == STANDARD[4] and m.residual_config()["residual"] == "bicubic"
    err = _cones_centre_errors(m, 4)
    assert err["pac"] == pytest.approx(0.9156, rel=0.01)
    assert err["pac"] < err["jbu"]
    assert err["jbu"] == pytest.approx(0.9435, rel=0.01)
    assert err["bicubic"] == pytest.approx(1.1791, rel=0.01)
    assert err["pac"] < 0.85 * err["bicubic"]
    held = m.meta["training"]["held_out_eval"]
    assert held["vs_bicubic"] < 0.81 and held["vs_jbu"] < 0.77


#: the bicubic-protocol weights on Cones view 2 with antialiased bicubic low-res inputs,
#: measured when shipped: factor -> RMSE (px) of (the weights, bicubic, the shipped
#: centre-protocol weights on these inputs: re-measured whenever those are replaced), and the
#: held-out vs_bicubic bound.
#: 8x: runs/depth_x8_pac_bicubic_relative step 3000 (the former bicubic-protocol weights,
#: fine-tuned from the centre ones, moved onto a bicubic residual base, then 3000 steps of the
#: relative loss): 0.701x / 0.621x bicubic / JBU over the 13 held-out groups (before the
#: relative loss: 1.2701 px here, 0.727x / 0.643x; the JBU-based weights before them:
#: 1.2165 px, 0.859x / 0.747x). 4x: runs/depth_x4_pac_bicubic_relative step 2000 (the centre 4x
#: weights fine-tuned on bicubic inputs, then 2000 steps of the relative loss): 0.695x /
#: 0.539x (before the relative loss: 0.7570 px here, 0.732x / 0.566x). 16x:
#: runs/depth_x16_pac_bicubic_resbicubic step 1000 (the bicubic-protocol 8x network on a
#: 2x-interpolated input, fine-tuned at 16x): 0.813x / 0.760x.
BICUBIC_PROTOCOL_PINS = {4: (0.7302, 0.9512, 0.9677, 0.72), 8: (1.2292, 1.4103, 1.3196, 0.72),
                         16: (1.7025, 1.9206, 1.7730, 0.83)}


@pytest.mark.parametrize("factor", sorted(BICUBIC_PROTOCOL_PINS))
def test_pretrained_depth_bicubic_protocol_on_held_out_cones(factor):
    """The bicubic-protocol depth weights (``pretrained(..., protocol='bicubic')``) on
    the bundled Cones view 2 (never trained on), pinned to within 1 %
    (:data:`BICUBIC_PROTOCOL_PINS`); they must beat bicubic and the centre weights there."""
    from pacnd.datasets import load_cones
    from pacnd.models import baseline
    from pacnd.models.evaluation import evaluate_scenes, scene_examples
    from pacnd.models.ensemble import ensemble_geometry

    pac, bic, centre, held = BICUBIC_PROTOCOL_PINS[factor]
    assert ("depth", factor, "bicubic") in available_pretrained()
    m = pretrained("depth", factor, protocol="bicubic")
    assert m.meta["training"]["recipe"]["protocol"] == "bicubic"
    assert m.residual_config()["residual_sampling"] == "area"
    assert ensemble_geometry(m, 1) == (0, False)     # symmetric grid: mirrored copies unshifted
    rgb, disp = load_cones()
    exs = scene_examples([("cones2", "middlebury2003/cones", rgb, disp)], factor,
                         lowres_mode="bicubic")
    rows = evaluate_scenes({"pac": m, "centre": pretrained("depth", factor),
                            "bicubic": baseline("bicubic", "depth", factor,
                                                protocol="bicubic")},
                           exs, task="depth")
    err = {r["model"]: r["error"] for r in rows}
    assert err["pac"] == pytest.approx(pac, rel=0.01)
    assert err["bicubic"] == pytest.approx(bic, rel=0.01)
    assert err["centre"] == pytest.approx(centre, rel=0.01)
    assert err["pac"] < 0.91 * err["bicubic"] and err["pac"] < 0.97 * err["centre"]
    assert m.residual_config()["residual"] == "bicubic"
    assert m.meta["training"]["held_out_eval"]["vs_bicubic"] < held


def test_pretrained_depth_x8_comparison_networks_on_held_out_cones():
    """The 8x PAC-lite and DJF weights, trained as the shipped PAC weights are: 8000 steps
    over JBU (runs/depth_x8_pac_lite, runs/depth_x8_djf; DJF at lr 2e-4), then a cycle over
    bicubic with the relative loss (runs/depth_x8_pac_lite_relative, runs/depth_x8_djf_relative),
    on the bundled Cones view 2. Measured when shipped: RMSE 1.5096 (PAC-lite) and 1.4819 (DJF)
    px (the bicubic base gives ground on Middlebury, where JBU is strong: 1.2637 and 1.2557
    over JBU); over the 13 held-out groups they reach 0.906x and 0.929x JBU (PAC 0.824x), the
    paper's order. Pinned to within 1 %."""
    from pacnd.datasets import load_cones
    from pacnd.models.evaluation import evaluate_scenes, scene_examples

    have = available_pretrained()
    assert ("depth", 8, "pac_lite") in have and ("depth", 8, "djf") in have
    m = {v: pretrained("depth", 8, variant=v) for v in ("pac_lite", "djf")}
    assert isinstance(m["pac_lite"], PacJointUpsampleLite) and isinstance(m["djf"], DJF)
    assert m["pac_lite"].num_parameters() == 56_273 and m["djf"].num_parameters() == 56_323
    rgb, disp = load_cones()
    exs = scene_examples([("cones2", "middlebury2003/cones", rgb, disp)], 8,
                         lowres_mode="center")
    err = {r["model"]: r["error"] for r in evaluate_scenes(m, exs, task="depth")}
    assert err["pac_lite"] == pytest.approx(1.5096, rel=0.01)
    assert err["djf"] == pytest.approx(1.4819, rel=0.01)
    held = {v: m[v].meta["training"]["held_out_eval"]["vs_jbu"] for v in m}
    assert held["pac_lite"] < held["djf"] < 1
    assert all(m[v].residual_config()["residual"] == "bicubic" for v in m)
    pac = pretrained("depth", 8).meta["training"]["held_out_eval"]["vs_jbu"]
    assert pac < held["pac_lite"]


#: shipped flow weights on the held-out Middlebury RubberWhale (pool group
#: middleburyflow/rubberwhale, never trained on): factor -> EPE of (PAC, bilinear, JBU),
#: measured when shipped (benchmarks/results/upsampling_eval.md)
FLOW_PINS = {4: (0.0327, 0.04791, 0.04414), 8: (0.05133, 0.09734, 0.08219),
             16: (0.12367, 0.19348, 0.16384)}


@pytest.mark.parametrize("factor", sorted(FLOW_PINS))
def test_pretrained_flow_on_held_out_rubberwhale(factor):
    """The shipped flow weights on a held-out real scene (bilinear low-res protocol, EPE
    over the known pixels), as benchmarks/upsampling_heldout.py runs them. Pinned to
    within 1 %; PAC must stay well ahead of bilinear and JBU."""
    from conftest import shared_dir

    from pacnd.models import baseline
    from pacnd.models.evaluation import evaluate_scenes, scene_examples
    from pacnd.models.recipe import heldout_scenes

    scenes = [s for s in heldout_scenes(shared_dir() / "data" / "train", "flow", per_group=1,
                                        extra=False)
              if s[1] == "middleburyflow/rubberwhale"]
    assert len(scenes) == 1
    exs = scene_examples(scenes, factor, lowres_mode="bilinear")
    models = {"pac": pretrained("flow", factor),
              "bilinear": baseline("bilinear", "flow", factor, protocol="bilinear"),
              "jbu": baseline("jbu", "flow", factor, protocol="bilinear")}
    err = {r["model"]: r["error"] for r in evaluate_scenes(models, exs, task="flow")}
    pac, bil, jbu = FLOW_PINS[factor]
    assert err["pac"] == pytest.approx(pac, rel=0.01)
    assert err["bilinear"] == pytest.approx(bil, rel=0.01)
    assert err["jbu"] == pytest.approx(jbu, rel=0.01)
    assert err["pac"] < 0.8 * min(err["bilinear"], err["jbu"])
