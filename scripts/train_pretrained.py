"""Reproduce the pretrained joint-upsampling weights shipped in pacnd/data/weights/.

    python scripts/train_pretrained.py                 # the four shipped models
    python scripts/train_pretrained.py --eval-models   # + the models of the evaluation table
    python scripts/train_pretrained.py --only depth_x8 --resume

Each run trains one network with :func:`pacnd.models.train_upsampler` (the
reference protocol on pacnd.train.fit: Adam, x0.1 learning-rate steps at 70 %
and 90 % of the run, random crops with horizontal flips, min-max normalisation
by the low-res input's range, MSE with a 6-pixel border for depth), logging to
out/upsampling_runs/<name>/ (metrics.csv/jsonl, curve.png, checkpoint.npz —
``--resume`` continues bit-exactly), then writes the weights with their
training record (``model.meta['training']``):

- shipped standard PAC networks -> pacnd/data/weights/{task}_x{factor}.npz
- evaluation-only models (PAC-lite, DJF, flow PAC 4x/16x) ->
  out/upsampling_models/{task}_x{factor}_{model}.npz (not shipped; read by
  benchmarks/bench_upsampling.py --eval)

Data: depth — Middlebury 2003 "Cones" **view 6** (im6.png / disp6.png,
disparity = PNG / 4, 0 = unknown) mixed with synthetic RGB-D scenes
(:func:`pacnd.upsampling_data.synthetic_scene`); view 2 is held out for
evaluation. Flow — synthetic RGB-flow scenes only (MPI-Sintel alley_1 is held
out). The shared data folder defaults to ../shared/data next to the repository
(override with PACND_SHARED_DATA).

Budget: this machine has 2 shared CPU cores, so the runs are ~3 orders of
magnitude shorter than the paper's (5000 epochs of NYU v2), with smaller crops
and a larger learning rate; the networks start from ``init='bilinear'`` (the
same architecture and parameters, channel 0 initialised as a bilinear
pass-through) so that short runs start from a sensible upsampler.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

DATA = os.environ.get("PACND_SHARED_DATA", os.path.join(os.path.dirname(REPO), "shared", "data"))
CONES = os.path.join(DATA, "middlebury2003", "cones")
RUNS = os.path.join(REPO, "out", "upsampling_runs")
EVAL_MODELS = os.path.join(REPO, "out", "upsampling_models")
WEIGHTS = os.path.join(REPO, "pacnd", "data", "weights")
LOGS = os.path.join(REPO, "benchmarks", "results", "upsampling_runs")

#: name -> recipe. ``ship``: written to pacnd/data/weights.
COMMON = dict(crop=128, batch_size=1, lr=1e-3, milestones=(0.7, 0.9), init="bilinear", seed=0)
RECIPES = {
    "depth_x8": dict(task="depth", factor=8, model="pac", steps=1500, synthetic_ratio=0.2,
                     ship=True),
    "depth_x4": dict(task="depth", factor=4, model="pac", steps=1000, synthetic_ratio=0.2,
                     ship=True),
    "depth_x16": dict(task="depth", factor=16, model="pac", steps=1000, synthetic_ratio=0.2,
                      crop=192, ship=True),
    "flow_x8": dict(task="flow", factor=8, model="pac", steps=1500, synthetic_ratio=1.0,
                    ship=True),
}
for _f in (4, 8, 16):
    for _m in ("pac_lite", "djf"):
        RECIPES[f"depth_x{_f}_{_m}"] = dict(task="depth", factor=_f, model=_m, steps=600,
                                            synthetic_ratio=0.2,
                                            crop=192 if _f == 16 else 128, ship=False)
        RECIPES[f"flow_x{_f}_{_m}"] = dict(task="flow", factor=_f, model=_m, steps=600,
                                           synthetic_ratio=1.0, ship=False)
for _f in (4, 16):
    RECIPES[f"flow_x{_f}_pac"] = dict(task="flow", factor=_f, model="pac", steps=600,
                                      synthetic_ratio=1.0, crop=192 if _f == 16 else 128,
                                      ship=False)


def _recipe(name):
    r = dict(COMMON)
    r.update(RECIPES[name])
    return r


def train_one(name, *, resume=False, progress=True):
    """Train one recipe; returns (model, record)."""
    from pacnd.data_io import read_image, read_middlebury_disparity
    from pacnd.models import build_model, save_upsampler, train_upsampler
    from pacnd.models.training import DEFAULT_BORDER
    from pacnd.upsampling_data import JointUpsamplingPairs, SyntheticScenes

    r = _recipe(name)
    task, factor, crop = r["task"], r["factor"], r["crop"]
    pairs, real = [], []
    if task == "depth" and r["synthetic_ratio"] < 1:
        pairs = [(read_image(os.path.join(CONES, "im6.png")),
                  read_middlebury_disparity(os.path.join(CONES, "disp6.png")))]
        real = ["Middlebury 2003 Cones view 6 (im6.png, disp6.png / 4)"]
    data = JointUpsamplingPairs(pairs, factor, kind=task, crop=crop, batch_size=r["batch_size"],
                                synthetic=SyntheticScenes(task, (crop, crop)),
                                synthetic_ratio=r["synthetic_ratio"])
    kw = {"init": r["init"]} if r["model"] in ("pac", "pac_lite") else {}
    model = build_model(r["model"], factor, 2 if task == "flow" else 1, rng=r["seed"], **kw)
    log_dir = os.path.join(RUNS, name)
    border = DEFAULT_BORDER[task]
    t0 = time.perf_counter()
    res = train_upsampler(model, data, steps=r["steps"], lr=r["lr"], milestones=r["milestones"],
                          border=border, log_dir=log_dir, checkpoint_every=100, resume=resume,
                          seed=r["seed"], progress=progress, desc=name)
    secs = time.perf_counter() - t0
    total = sum(row.get("seconds", 0.0) for row in res.history)
    summary = (f"{r['steps']} Adam steps (batch {r['batch_size']}, {crop}x{crop} crops, lr "
               f"{r['lr']:g} x0.1 at {int(r['milestones'][0] * 100)}%/"
               f"{int(r['milestones'][1] * 100)}%) on "
               + (" + ".join(real + [f"synthetic {task} scenes"]) if real
                  else f"synthetic {task} scenes only")
               + (f" ({int(round(100 * r['synthetic_ratio']))}% synthetic)" if real else "")
               + f"; {total / 60:.1f} CPU-minutes of steps on 2 shared cores")
    record = {
        "summary": summary, "recipe": {k: (list(v) if isinstance(v, tuple) else v)
                                       for k, v in r.items()},
        "real_data": real, "held_out": ("Middlebury 2003 Cones view 2" if task == "depth"
                                        else "MPI-Sintel alley_1"),
        "step_seconds_total": round(total, 1), "wall_seconds_this_session": round(secs, 1),
        "final_loss_mean_last_50": sum(x["loss"] for x in res.history[-50:])
        / max(1, len(res.history[-50:])),
        "command": f"python scripts/train_pretrained.py --only {name}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
    }
    meta = {"task": task, "factor": factor, "training": record,
            "units": "the target's own units (min-max normalised internally)"}
    model.meta = meta
    out = os.path.join(WEIGHTS if r["ship"] else EVAL_MODELS,
                       f"{task}_x{factor}.npz" if r["ship"] else f"{name.split('_', 2)[0]}_x"
                       f"{factor}_{r['model']}.npz")
    save_upsampler(out, model, meta=meta)
    # keep the small logs (not the checkpoint) with the benchmark results
    keep = os.path.join(LOGS, name)
    os.makedirs(keep, exist_ok=True)
    for f in ("metrics.csv", "curve.png"):
        if os.path.exists(os.path.join(log_dir, f)):
            shutil.copy(os.path.join(log_dir, f), os.path.join(keep, f))
    with open(os.path.join(keep, "record.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    print(f"{name}: {summary} -> {os.path.relpath(out, REPO)}", flush=True)
    return model, record


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=sorted(RECIPES), default=None)
    ap.add_argument("--eval-models", action="store_true",
                    help="also train the (unshipped) models of the evaluation table")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    names = args.only or [n for n in RECIPES if RECIPES[n]["ship"] or args.eval_models]
    for n in names:
        train_one(n, resume=args.resume, progress=not args.no_progress)


if __name__ == "__main__":
    main()
