"""The training loop: learning a known target, logs, checkpoints, bit-exact resume."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

import pacnd.functional as F
from pacnd import nn, optim, train
from pacnd.autograd import Tensor
from pacnd.nn import init

SPATIAL = init.gaussian_kernel((3, 3), sigma=0.8)[None, None]  # the filter to learn


def joint_bilateral_sampler(rng):
    """Random images and random 2-channel guides."""
    return rng.standard_normal((2, 1, 12, 12)), 2 * rng.random((2, 2, 12, 12))


def joint_bilateral_loss(model, batch):
    """Target: a fixed joint bilateral filter (Gaussian spatial weights and a
    Gaussian range kernel on the guide, normalised)."""
    x, g = batch
    target = F.pac_conv(x, g, SPATIAL, padding=1, normalize=True)
    out = model(Tensor(x), Tensor(g))
    return F.mse_loss(out, target), {"w_err": float(np.abs(model.weight.data - SPATIAL).max())}


def test_pac_layer_learns_a_bilateral_filter(tmp_path):
    model = nn.PacConv2d(1, 1, 3, padding=1, bias=False, normalize_kernel=True,
                         dtype=np.float64, rng=0)
    opt = optim.Adam(model.parameters(), lr=0.02)
    sched = optim.MultiStepLR(opt, [200], gamma=0.1)
    val = [joint_bilateral_sampler(np.random.default_rng(s)) for s in range(3)]

    def evaluate(m):
        return {"val_mse": np.mean([joint_bilateral_loss(m, v)[0].item() for v in val])}

    res = train.fit(model, joint_bilateral_loss, opt, joint_bilateral_sampler, steps=300,
                    scheduler=sched, rng=1, eval_fn=evaluate, eval_every=100, log_dir=tmp_path,
                    progress=False)
    np.testing.assert_allclose(model.weight.data, SPATIAL, atol=1e-5)
    assert res.history[-1]["loss"] < 1e-12
    assert res.eval_history[-1]["val_mse"] < 1e-12
    assert res.history[0]["loss"] > 1e6 * res.history[-1]["loss"]

    # logs: CSV and JSON lines per step, eval rows, a curve
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows] == list(range(1, 301))
    assert {"step", "loss", "lr", "w_err", "seconds", "elapsed"} <= set(rows[0])
    assert rows[0]["lr"] == 0.02 and rows[-1]["lr"] == pytest.approx(0.002)
    with open(tmp_path / "metrics.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 300 and float(table[-1]["loss"]) == pytest.approx(rows[-1]["loss"])
    evals = [json.loads(line) for line in open(tmp_path / "eval.jsonl")]
    assert [r["step"] for r in evals] == [100, 200, 300]
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------ resume
IMAGE = np.random.default_rng(42).random((1, 1, 20, 20)).astype(np.float32)


def crop_sampler(rng):
    """Random 8x8 crop and horizontal flip of a fixed image (all randomness from rng)."""
    y, x = rng.integers(0, 13, size=2)
    crop = IMAGE[:, :, y:y + 8, x:x + 8]
    if rng.random() < 0.5:
        crop = crop[..., ::-1]
    return np.ascontiguousarray(crop)


def make_run(seed):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, rng=seed), nn.ReLU(),
                          nn.PacConv2d(4, 1, 3, padding=1, kernel_type="inv_0.5_-1", rng=seed))
    model[2].guide_source = nn.GuideFrom(model, nn.GuideFrom.INPUT)
    opt = optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
    sched = optim.MultiStepLR(opt, [5], gamma=0.5)
    return model, opt, sched


def denoise_loss(model, x):
    noisy = x + 0.1 * np.sin(7 * x)
    return F.mse_loss(model(Tensor(noisy)), x)


def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path):
    model_a, opt_a, sched_a = make_run(0)
    res_a = train.fit(model_a, denoise_loss, opt_a, crop_sampler, steps=8, scheduler=sched_a,
                      rng=7, log_dir=tmp_path / "a", checkpoint_every=4, progress=False)

    model_b, opt_b, sched_b = make_run(0)
    train.fit(model_b, denoise_loss, opt_b, crop_sampler, steps=4, scheduler=sched_b, rng=7,
              log_dir=tmp_path / "b", checkpoint_every=4, progress=False)
    # a fresh process would rebuild everything from scratch, with another init
    model_c, opt_c, sched_c = make_run(123)
    res_c = train.fit(model_c, denoise_loss, opt_c, crop_sampler, steps=8, scheduler=sched_c,
                      rng=999, log_dir=tmp_path / "b", checkpoint_every=4, resume=True,
                      progress=False)
    assert res_c.resumed_from == 4 and res_c.step == 8
    for (n, p), (_, q) in zip(model_a.named_parameters(), model_c.named_parameters()):
        assert p.dtype == np.float32
        np.testing.assert_array_equal(p.data, q.data, err_msg=n)
    for p, q in zip(model_a.parameters(), model_c.parameters()):
        for k in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(opt_a.state[id(p)][k], opt_c.state[id(q)][k])
    assert [r["loss"] for r in res_a.history] == [r["loss"] for r in res_c.history]
    assert opt_a.param_groups[0]["lr"] == opt_c.param_groups[0]["lr"] == 5e-3
    a = train.load_checkpoint(tmp_path / "a" / "checkpoint.npz")
    c = train.load_checkpoint(tmp_path / "b" / "checkpoint.npz")
    assert a["rng"] == c["rng"] and a["step"] == c["step"] == 8


def test_crash_during_checkpoint_then_resume(tmp_path, monkeypatch):
    model_a, opt_a, sched_a = make_run(0)
    train.fit(model_a, denoise_loss, opt_a, crop_sampler, steps=9, scheduler=sched_a, rng=3,
              progress=False)

    model, opt, sched = make_run(0)
    real_replace = os.replace
    calls = []

    def flaky_replace(src, dst):
        calls.append(dst)
        if str(dst).endswith("checkpoint.npz") and len(calls) >= 2:
            raise OSError("disk full (simulated) after writing the temp file")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(OSError, match="simulated"):
        train.fit(model, denoise_loss, opt, crop_sampler, steps=9, scheduler=sched, rng=3,
                  log_dir=tmp_path, checkpoint_every=3, progress=False)
    monkeypatch.undo()
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    assert train.load_checkpoint(tmp_path / "checkpoint.npz")["step"] == 3
    logged = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
    assert logged == list(range(1, 7))  # steps 4-6 ran before the failed save

    model, opt, sched = make_run(5)
    res = train.fit(model, denoise_loss, opt, crop_sampler, steps=9, scheduler=sched, rng=0,
                    log_dir=tmp_path, checkpoint_every=3, resume=True, progress=False)
    assert res.resumed_from == 3
    logged = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
    assert logged == list(range(1, 10))  # rows past the checkpoint were replaced
    for p, q in zip(model_a.parameters(), model.parameters()):
        np.testing.assert_array_equal(p.data, q.data)


def test_iterable_data_is_cycled_and_skipped_on_resume(tmp_path):
    batches = [crop_sampler(np.random.default_rng(s)) for s in range(3)]
    model_a, opt_a, _ = make_run(0)
    train.fit(model_a, denoise_loss, opt_a, batches, steps=7, rng=0, progress=False)
    model_b, opt_b, _ = make_run(0)
    train.fit(model_b, denoise_loss, opt_b, batches, steps=5, rng=0, log_dir=tmp_path,
              checkpoint_every=5, progress=False)
    model_c, opt_c, _ = make_run(1)
    train.fit(model_c, denoise_loss, opt_c, batches, steps=7, rng=0, log_dir=tmp_path,
              checkpoint_every=5, resume=True, progress=False)
    for p, q in zip(model_a.parameters(), model_c.parameters()):
        np.testing.assert_array_equal(p.data, q.data)


def test_fit_errors():
    model, opt, _ = make_run(0)
    with pytest.raises(ValueError, match="reduce it to one value"):
        train.fit(model, lambda m, b: m(Tensor(b)), opt, crop_sampler, steps=1, progress=False)
    with pytest.raises(TypeError, match="one-shot iterator"):
        train.fit(model, denoise_loss, opt, iter([IMAGE]), steps=1, progress=False)
    with pytest.raises(ValueError, match="need a log_dir"):
        train.fit(model, denoise_loss, opt, crop_sampler, steps=1, resume=True, progress=False)
    with pytest.raises(TypeError, match="loss_fn must return a Tensor"):
        train.fit(model, lambda m, b: 1.0, opt, crop_sampler, steps=1, progress=False)
    with pytest.raises(ValueError, match="steps=-1"):
        train.fit(model, denoise_loss, opt, crop_sampler, steps=-1, progress=False)


def test_train_step_benchmark_smoke():
    """benchmarks/bench_train_step.py runs (tiny crop, in-process) and the graph
    step computes the same loss as the hand-written direct step."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train_step.py"
    spec = importlib.util.spec_from_file_location("bench_train_step", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rep = bench.run(size=12, repeat=2, subprocesses=False, quiet=True)
    assert rep["graph"]["loss"] == pytest.approx(rep["direct"]["loss"], rel=1e-5)
    assert rep["graph"]["median_s"] > 0 and rep["direct"]["traced_peak_bytes"] > 0


def test_fit_runs_every_step_on_compiled_kernels(tmp_path, monkeypatch):
    """While kernels compile in the background, small calls are served by the reference
    engine (other rounding): fit switches to eager compiles for its duration, so a resumed
    run repeats the uninterrupted one whatever the cache held, and restores the mode."""
    from pacnd.engines.cpu import coldstart

    seen = []
    monkeypatch.setattr(coldstart, "_mode", "background")

    def loss(model, batch):
        seen.append(coldstart.get_mode())
        return denoise_loss(model, batch)

    model, opt, sched = make_run(0)
    train.fit(model, loss, opt, crop_sampler, steps=2, scheduler=sched, rng=7, progress=False)
    assert seen and set(seen) == {"eager"}
    assert coldstart.get_mode() == "background"
