"""Ship a training run's weights as pacnd's pretrained model for its task and factor.

    python scripts/ship_weights.py runs/depth_x8_pac [--model FILE]

Reads the run's exported ``model.npz`` (or ``--model``: a frozen copy of it), checks
that its recipe is the run's ``recipe.json``, and writes
``pacnd/data/weights/<task>_x<factor>[_<model>][_<protocol>].npz`` (``<model>``: PAC-lite
and DJF, ``pretrained(..., variant=...)``) with ``meta["training"]``: a
one-line summary, the recipe, the step, the training data (the pool minus
``pacnd.data.pool.HELD_OUT``) and the held-out scenes. Replace shipped weights only
after ``benchmarks/upsampling_heldout.py`` showed the run beating them on held-out scenes
(it evaluates a run beside the weights it may replace).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="run folder (recipe.json, model.npz)")
    ap.add_argument("--model", default=None, help="weights file (default RUN/model.npz)")
    ap.add_argument("--eval", default=None,
                    help="upsampling_heldout.py's JSON that evaluated these weights as the run's "
                         "'pac' model: its mean ratios are stored in meta (the demo prints them)")
    args = ap.parse_args(argv)
    sys.path.insert(0, REPO)
    from pacnd.models import load_upsampler, save_upsampler
    from pacnd.models.registry import _file_name, default_protocol

    with open(os.path.join(args.run, "recipe.json"), encoding="utf-8") as f:
        recipe = json.load(f)
    m = load_upsampler(args.model or os.path.join(args.run, "model.npz"))
    if m.meta.get("recipe") != recipe:
        raise SystemExit(f"{args.model or 'model.npz'} was not exported by the run in {args.run}")
    task, factor, protocol = recipe["task"], int(recipe["factor"]), recipe["protocol"]
    step = int(m.meta["step"])
    sources = ", ".join(f"{k} {v:g}" for k, v in recipe["weights"].items())
    pool = "RGB-D" if task == "depth" else "optical-flow"
    synthetic = (f" and {recipe['synthetic']} synthetic scenes (pacnd.data.synthetic_scene)"
                 if recipe.get("synthetic") else "")
    network = {"pac": "", "pac_lite": "PAC-lite network, ", "djf": "DJF network, "}
    summary = (f"{network[recipe['model']]}"
               f"{step} of {recipe['steps']} Adam steps (batch {recipe['batch_size']}, "
               f"{recipe['crop']}x{recipe['crop']} crops at scale {recipe['scale'][0]:g}-"
               f"{recipe['scale'][1]:g}, flips, colour jitter {recipe['color_jitter']:g}; lr "
               f"{recipe['lr']:g}, {recipe['warmup']} warm-up steps, cosine) on the real {pool} "
               f"training pool minus pacnd.data.pool.HELD_OUT{synthetic} (source weights: "
               f"{sources}); "
               + (f"started from the weights of {recipe['init_from']}"
                  if recipe.get("init_from") else f"{recipe['init']} init")
               + (f", the low-res input interpolated {recipe['pre_upsample']}x (bilinear) "
                  f"into the {factor // recipe['pre_upsample']}x network"
                  if recipe.get("pre_upsample", 1) > 1 else "")
               + f", residual over {recipe['residual']}; low-res by "
               f"'{protocol}'; CPU (Numba engine), run folder runs/"
               f"{os.path.basename(os.path.normpath(args.run))}")
    meta = {"task": task, "factor": factor,
            "training": {"summary": summary,
                         "units": "the target's own units (normalised per image internally)",
                         "recipe": recipe, "step": step,
                         "trained_on": m.meta.get("trained_on"),
                         "held_out": "pacnd.data.pool.HELD_OUT groups, Middlebury 2003 Cones "
                                     "(both views), MPI-Sintel alley_1"}}
    if args.eval:
        from pacnd.models.evaluation import summarize

        with open(args.eval, encoding="utf-8") as f:
            res = json.load(f)[f"{task}|{factor}|{protocol}"]
        name = recipe["model"]
        if f"step {step})" not in res["sources"].get(name, ""):
            raise SystemExit(f"{args.eval} did not evaluate step {step} of this run")
        ref = "bicubic" if task == "depth" else "bilinear"
        summ = summarize(res["rows"], references=(ref, "jbu"))["summary"][name]
        meta["training"]["held_out_eval"] = {
            "groups": summ["groups"], f"vs_{ref}": round(summ[f"vs_{ref}"], 4),
            "vs_jbu": round(summ["vs_jbu"], 4),
            "scenes": len({r["scene"] for r in res["rows"]}),
            "where": "benchmarks/results/upsampling_eval.md"}
    variant = "_".join(([] if recipe["model"] == "pac" else [recipe["model"]])
                       + ([] if protocol == default_protocol(task) else [protocol]))
    out = os.path.join(REPO, "pacnd", "data", "weights",
                       _file_name(task, factor, variant or "standard"))
    save_upsampler(out, m, meta=meta)
    print(f"wrote {out} (step {step})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
