"""Short controlled runs that pick the upsamplers' training recipe (measured, not guessed).

    python scripts/recipe_study.py --pool ../shared/data/train --steps 500 \
        [--variants proposed no_residual ...] [--jobs 2]

Every variant is the shipped recipe (:func:`pacnd.models.recipe.default_recipe`,
8x depth, standard PAC) with one change, trained for ``--steps`` steps on
``--crop`` crops and evaluated every ``--eval-every`` steps on one scene per
held-out group (error relative to bicubic and JBU, averaged over groups). Run
folders go to ``--out`` (default /tmp/pacnd_recipe_study); the table, the JSON
and a PNG of the held-out curves to benchmarks/results/upsampling_recipe_study.*.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(REPO, "benchmarks", "results")

#: variant -> (what it tests, recipe changes)
VARIANTS = {
    "proposed": ("JBU residual, zero-initialised last conv, Adam 1e-3 cosine, per-image "
                 "normalisation, batch 2", {}),
    "no_residual": ("no residual base, the reference's random init",
                    {"residual": None, "init": "reference"}),
    "bilinear_init": ("no residual base, channel 0 a bilinear pass-through (the previous "
                      "shipped recipe's start)", {"residual": None, "init": "bilinear"}),
    "crop_norm": ("min-max normalisation per crop (the reference's training convention)",
                  {"normalize": "crop"}),
    "lr_1e-4": ("learning rate 1e-4 (the reference's)", {"lr": 1e-4}),
    "bicubic_residual": ("bicubic instead of JBU as the residual base",
                         {"residual": "bicubic"}),
    "batch_1": ("batch 1 (the reference's)", {"batch_size": 1}),
    "bilinear_residual": ("bilinear instead of JBU as the residual base",
                          {"residual": "bilinear"}),
    "lr_3e-3": ("learning rate 3e-3", {"lr": 3e-3}),
    "residual_input": ("the JBU base's result also fed to the guidance branch",
                       {"residual_input": True}),
}


def run_one(name, args):
    from pacnd.models.recipe import default_recipe, train_from_pool

    changes = dict(VARIANTS[name][1])
    r = default_recipe("depth", 8, "pac", steps=args.steps, crop=args.crop, warmup=20,
                       eval_every=args.eval_every, checkpoint_seconds=600, **changes)
    train_from_pool(r, args.pool, os.path.join(args.out, name), resume=True, progress=False)


def collect(names, args):
    import numpy as np  # noqa: F401

    rows = {}
    for n in names:
        p = os.path.join(args.out, n, "eval.jsonl")
        if os.path.exists(p):
            with open(p, encoding="utf-8") as f:
                rows[n] = [json.loads(line) for line in f if line.strip()]
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "upsampling_recipe_study.json"), "w",
              encoding="utf-8") as f:
        json.dump({"steps": args.steps, "crop": args.crop, "curves": rows,
                   "variants": {n: VARIANTS[n][0] for n in names}}, f, indent=1)
    lines = [f"# Upsampler recipe study (8x depth, standard PAC, {args.steps} steps, "
             f"{args.crop}-px crops)", "",
             "Held-out error relative to bicubic / JBU (mean over held-out groups, one scene "
             "each; lower is better) at the first evaluation and at the end.", "",
             "| variant | what changes | first vs bicubic | last vs bicubic | last vs JBU | "
             "last step |",
             "|---|---|---:|---:|---:|---:|"]
    for n, rs in rows.items():
        if rs:
            lines.append(f"| {n} | {VARIANTS[n][0]} | {rs[0]['vs_bicubic']:.3f} | "
                         f"{rs[-1]['vs_bicubic']:.3f} | {rs[-1]['vs_jbu']:.3f} | "
                         f"{rs[-1]['step']}{'' if rs[-1]['step'] >= args.steps else ' (stopped)'}"
                         f" |")
    lines += ["", "Every evaluation (vs JBU): " + "; ".join(
        f"{n}: " + ", ".join(f"{r['step']}: {r['vs_jbu']:.4f}" for r in rs)
        for n, rs in rows.items() if rs)]
    with open(os.path.join(RESULTS, "upsampling_recipe_study.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for n, rs in rows.items():
        ax.plot([r["step"] for r in rs], [r["vs_bicubic"] for r in rs], marker="o", label=n)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("held-out RMSE / bicubic")
    ax.set_title("8x depth: recipe variants")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "upsampling_recipe_study.png"), dpi=110)
    print("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", required=True)
    ap.add_argument("--out", default="/tmp/pacnd_recipe_study")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--crop", type=int, default=192)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--jobs", type=int, default=1, help="variants run side by side")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--collect", action="store_true", help="only write the table")
    args = ap.parse_args(argv)
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}; choose from {sorted(VARIANTS)}")
    if args.one:
        run_one(args.one, args)
        return 0
    if not args.collect:
        queue = list(args.variants)
        running = []
        while queue or running:
            while queue and len(running) < args.jobs:
                n = queue.pop(0)
                cmd = [sys.executable, __file__, "--pool", args.pool, "--out", args.out,
                       "--steps", str(args.steps), "--crop", str(args.crop),
                       "--eval-every", str(args.eval_every), "--one", n]
                log = open(os.path.join(args.out, f"{n}.log"), "w") if os.makedirs(
                    args.out, exist_ok=True) is None else None
                running.append((n, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)))
                print(f"started {n}", flush=True)
            n, p = running[0]
            p.wait()
            running.pop(0)
            print(f"finished {n} (rc={p.returncode})", flush=True)
    collect(args.variants, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
