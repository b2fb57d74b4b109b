"""Reproduce the pretrained joint-upsampling weights shipped in pacnd/data/weights/.

    python scripts/train_pretrained.py                 # the four shipped models (5 recipes)
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
  benchmarks/results/upsampling_models/{task}_x{factor}_{model}.npz (not in the wheel; read by
  benchmarks/bench_upsampling.py --eval)

Data: depth — Middlebury 2003 "Cones" **view 6** (im6.png / disp6.png,
disparity = PNG / 4, 0 = unknown) mixed with synthetic RGB-D scenes
(:func:`pacnd.data.synthetic_scene`); view 2 is held out for
evaluation. Flow — synthetic RGB-flow scenes only (MPI-Sintel alley_1 is held
out). The shared data folder defaults to ../shared/data next to the repository
(override with PACND_SHARED_DATA).

How the shipped files were made: ``python scripts/train_pretrained.py --device gpu
--pool 1000`` (the four recipes run as four parallel processes on one NVIDIA H100
with pacnd's CuPy engine, ~4 min each; the GPU gradients were first checked
against the Numba CPU engine, ``scripts/check_gpu_gradients.py``), then
``python scripts/train_pretrained.py --only depth_x16_finetune`` on the CPU
(800 steps on 352-px crops continuing depth_x16, 16.8 min; the 16x network
needs more low-res context than a 256-px crop gives). The same command without ``--device gpu`` runs
the identical recipe on the CPU (pacnd's Numba engine) — about 0.7 s per step on
2 free cores, i.e. ~35 min per model. ``--pool N`` pre-generates N synthetic
scenes in parallel processes (scene i is ``synthetic_scene(12345 + i)``) and
takes random crops of them; without it every crop comes from a fresh scene.

The recipe is ~3 orders of magnitude shorter than the paper's (5000 epochs of
NYU v2 at lr 1e-4): 3000 steps of 256x256 crops at lr 1e-3. The PAC networks
start from ``init='bilinear'`` (the same architecture and parameters, channel 0
initialised as a bilinear pass-through) so that short runs start from a
sensible upsampler.
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
EVAL_MODELS = os.path.join(REPO, "benchmarks", "results", "upsampling_models")
WEIGHTS = os.path.join(REPO, "pacnd", "data", "weights")
LOGS = os.path.join(REPO, "benchmarks", "results", "upsampling_runs")

#: name -> recipe. ``ship``: written to pacnd/data/weights.
COMMON = dict(crop=256, batch_size=1, lr=1e-3, milestones=(0.7, 0.9), init="bilinear", seed=0,
              steps=3000)
RECIPES = {
    "depth_x8": dict(task="depth", factor=8, model="pac", synthetic_ratio=0.2, ship=True),
    "depth_x4": dict(task="depth", factor=4, model="pac", synthetic_ratio=0.2, ship=True),
    "depth_x16": dict(task="depth", factor=16, model="pac", synthetic_ratio=0.2, ship=True),
    "flow_x8": dict(task="flow", factor=8, model="pac", synthetic_ratio=1.0, ship=True),
    # 16x: a 256-px crop is a 16x16 low-res input, too little context; continue the
    # depth_x16 run on 352-px crops (22x22 low-res; Cones is 375x450) at a lower learning rate
    "depth_x16_finetune": dict(task="depth", factor=16, model="pac", synthetic_ratio=0.2,
                               ship=True, init_from="depth_x16", crop=352, steps=800, lr=2e-4),
}
for _f in (4, 8, 16):
    for _m in ("pac_lite", "djf"):
        RECIPES[f"depth_x{_f}_{_m}"] = dict(task="depth", factor=_f, model=_m, steps=1200,
                                            synthetic_ratio=0.2, ship=False)
        RECIPES[f"flow_x{_f}_{_m}"] = dict(task="flow", factor=_f, model=_m, steps=1200,
                                           synthetic_ratio=1.0, ship=False)
for _f in (4, 16):
    RECIPES[f"flow_x{_f}_pac"] = dict(task="flow", factor=_f, model="pac", steps=1200,
                                      synthetic_ratio=1.0, ship=False)


def _recipe(name):
    r = dict(COMMON)
    r.update(RECIPES[name])
    return r


def _scene(args):
    from pacnd.data import synthetic_scene

    seed, kind, size = args
    return synthetic_scene(seed, (size, size), kind)


def scene_pool(kind, n, size, *, seed=12345, jobs=None):
    """``n`` synthetic scenes (scene i = ``synthetic_scene(seed + i)``), made in
    parallel processes: the same list whatever the number of processes."""
    if n <= 0:
        return None
    import multiprocessing as mp

    jobs = jobs or os.cpu_count() or 1
    work = [(seed + i, kind, size) for i in range(n)]
    if jobs == 1:
        return [_scene(w) for w in work]
    with mp.get_context("fork").Pool(jobs) as pool:
        return pool.map(_scene, work, chunksize=8)


class PoolSource:
    """Synthetic source drawing uniformly from a pre-generated scene pool
    (``JointUpsamplingPairs`` then takes a random crop of the scene)."""

    def __init__(self, scenes):
        self.scenes = scenes

    def __call__(self, rng):
        return self.scenes[int(rng.integers(len(self.scenes)))]

    def __repr__(self):
        return f"PoolSource({len(self.scenes)} scenes)"


def train_one(name, *, resume=False, progress=True, device="cpu", pool=0, out_root=None,
              overrides=None):
    """Train one recipe; returns (model, record)."""
    from pacnd.data.io import read_image, read_middlebury_disparity
    from pacnd.models import build_model, save_upsampler, train_upsampler
    from pacnd.models.training import DEFAULT_BORDER
    from pacnd.data import JointUpsamplingPairs, SyntheticScenes

    r = _recipe(name)
    r.update(overrides or {})
    task, factor, crop = r["task"], r["factor"], r["crop"]
    runs, weights, models, logs = RUNS, WEIGHTS, EVAL_MODELS, LOGS
    if out_root:
        runs, weights, models, logs = (os.path.join(out_root, d) for d in
                                       ("runs", "weights", "models", "logs"))
    pairs, real = [], []
    if task == "depth" and r["synthetic_ratio"] < 1:
        pairs = [(read_image(os.path.join(CONES, "im6.png")),
                  read_middlebury_disparity(os.path.join(CONES, "disp6.png")))]
        real = ["Middlebury 2003 Cones view 6 (im6.png, disp6.png / 4)"]
    if pool:
        source = PoolSource(scene_pool(task, pool, crop + 64))
        synth_desc = f"a pool of {pool} synthetic {task} scenes ({crop + 64}x{crop + 64})"
    else:
        source = SyntheticScenes(task, (crop, crop))
        synth_desc = f"synthetic {task} scenes drawn on the fly"
    data = JointUpsamplingPairs(pairs, factor, kind=task, crop=crop, batch_size=r["batch_size"],
                                synthetic=source, synthetic_ratio=r["synthetic_ratio"])
    kw = {"init": r["init"]} if r["model"] in ("pac", "pac_lite") else {}
    base_record = None
    if r.get("init_from"):
        from pacnd.models import load_upsampler

        base = _recipe(r["init_from"])
        path = os.path.join(weights if base["ship"] else models,
                            f"{task}_x{factor}.npz" if base["ship"] else
                            f"{task}_x{factor}_{base['model']}.npz")
        model = load_upsampler(path)
        base_record = (model.meta or {}).get("training")
    else:
        model = build_model(r["model"], factor, 2 if task == "flow" else 1, rng=r["seed"], **kw)
    sampler = data
    if device == "gpu":
        import cupy as cp

        import pacnd
        pacnd.set_engine("cupy")
        model.map_arrays(cp.asarray)

        def sampler(rng):
            return {k: cp.asarray(v) for k, v in data(rng).items()}
    log_dir = os.path.join(runs, name)
    border = DEFAULT_BORDER[task]
    t0 = time.perf_counter()
    res = train_upsampler(model, sampler, steps=r["steps"], lr=r["lr"],
                          milestones=r["milestones"], border=border, log_dir=log_dir,
                          checkpoint_every=250, resume=resume, seed=r["seed"],
                          progress=progress, desc=name, log_every=10)
    secs = time.perf_counter() - t0
    if device == "gpu":
        model.map_arrays(lambda a: a.get())
    where = ("one NVIDIA H100 (pacnd's CuPy engine)" if device == "gpu"
             else f"CPU ({os.cpu_count()} cores, "
                  f"{os.environ.get('NUMBA_NUM_THREADS', os.cpu_count())} Numba threads)")
    summary = (f"{r['steps']} Adam steps (batch {r['batch_size']}, {crop}x{crop} random crops "
               f"with flips, lr {r['lr']:g}, x0.1 at {int(r['milestones'][0] * 100)}% and "
               f"{int(r['milestones'][1] * 100)}%) on "
               + (" + ".join(real + [synth_desc]) if real else synth_desc)
               + (f", {int(round(100 * r['synthetic_ratio']))}% of the crops synthetic"
                  if real else "")
               + f"; {secs / 60:.1f} min on {where}")
    if base_record:
        summary = (f"{r['init_from']} ({base_record.get('summary')}), then " + summary)
    record = {
        "summary": summary, "recipe": {k: (list(v) if isinstance(v, tuple) else v)
                                       for k, v in r.items()},
        "real_data": real, "synthetic": synth_desc,
        "held_out": ("Middlebury 2003 Cones view 2" if task == "depth"
                     else "MPI-Sintel alley_1"),
        "device": where, "wall_seconds": round(secs, 1),
        "final_loss_mean_last_50_logged": sum(x["loss"] for x in res.history[-50:])
        / max(1, len(res.history[-50:])),
        "command": f"python scripts/train_pretrained.py --only {name}"
                   + (" --device gpu" if device == "gpu" else "")
                   + (f" --pool {pool}" if pool else "")
                   + "".join(f" --{k} {v}" for k, v in (overrides or {}).items()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
    }
    if base_record:
        record["started_from"] = base_record
    meta = {"task": task, "factor": factor, "training": record,
            "units": "the target's own units (min-max normalised internally)"}
    model.meta = meta
    out = os.path.join(weights if r["ship"] else models,
                       f"{task}_x{factor}.npz" if r["ship"] else
                       f"{task}_x{factor}_{r['model']}.npz")
    save_upsampler(out, model, meta=meta)
    keep = os.path.join(logs, name)
    os.makedirs(keep, exist_ok=True)
    for f in ("metrics.csv", "curve.png"):
        if os.path.exists(os.path.join(log_dir, f)):
            shutil.copy(os.path.join(log_dir, f), os.path.join(keep, f))
    with open(os.path.join(keep, "record.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    print(f"{name}: {summary} -> {out}", flush=True)
    return model, record


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=sorted(RECIPES), default=None)
    ap.add_argument("--eval-models", action="store_true",
                    help="also train the (unshipped) models of the evaluation table")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                    help="gpu: train with pacnd's CuPy engine (needs CuPy and a CUDA GPU)")
    ap.add_argument("--pool", type=int, default=0, metavar="N",
                    help="pre-generate N synthetic scenes in parallel and sample crops from "
                         "them (0: draw a new scene for every crop)")
    ap.add_argument("--steps", type=int, default=None, metavar="N",
                    help="override the recipes' step count (smoke tests)")
    ap.add_argument("--crop", type=int, default=None, metavar="PX",
                    help="override the recipes' crop size")
    ap.add_argument("--out-root", default=None, metavar="DIR",
                    help="write weights/, models/, runs/, logs/ under DIR instead of the "
                         "repository")
    args = ap.parse_args(argv)
    names = args.only or [n for n in RECIPES if RECIPES[n]["ship"] or args.eval_models]
    overrides = {k: v for k, v in (("steps", args.steps), ("crop", args.crop)) if v is not None}
    for n in names:
        train_one(n, resume=args.resume, progress=not args.no_progress, device=args.device,
                  pool=args.pool, out_root=args.out_root, overrides=overrides)


if __name__ == "__main__":
    main()
