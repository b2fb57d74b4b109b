"""Held-out evaluation of the joint upsamplers: whole scenes from several sources.

    python benchmarks/upsampling_heldout.py [--pool ../shared/data/train] [--tasks depth flow]
        [--factors 4 8 16] [--per-group 4] [--figures] [--update] [--run pac=runs/DIR]

Scenes: every group of :data:`pacnd.data.pool.HELD_OUT` (the first ``--per-group``
images of each: RGB-D-D days hold 8-16 captures) plus Middlebury 2003 Cones view 2
(bundled with pacnd) for depth and MPI-Sintel alley_1 for flow -- none of them, nor
any other view of their scenes, was trained on. Protocols: depth ``center`` (nearest
subsampling, the paper's) and ``bicubic`` (antialiased bicubic downsampling); flow
``bilinear``. Models: bicubic, bilinear, JBU (default parameters) and, when present,
the learned networks of ``runs/<task>_x<factor>_<model>[_<protocol>]/model.npz``
(falling back to the weights shipped in ``pacnd/data/weights``).

Metrics per scene (depth RMSE in the scene's units, 6-px border out; flow EPE in
pixels; known pixels only), then per scene group (captures of one place count
once), then each model's error relative to bicubic (flow: bilinear) and JBU,
averaged over groups. Writes ``benchmarks/results/upsampling_eval.{md,json}`` and,
with ``--figures``, side-by-side PNGs of one held-out scene per task.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
RUNS = os.path.join(REPO, "runs")
DEFAULT_POOL = os.path.join(os.path.dirname(REPO), "shared", "data", "train")
PROTOCOLS = {"depth": ("center", "bicubic"), "flow": ("bilinear",)}
LEARNED = ("djf", "pac_lite", "pac")
NAMES = {"bicubic": "Bicubic", "bilinear": "Bilinear", "jbu": "JBU", "djf": "DJF",
         "pac_lite": "PAC-lite", "pac": "PAC"}
NAMES.update({n + "_shipped": NAMES[n] + " (shipped)" for n in LEARNED})
NAMES.update({n + "_ens": NAMES[n] + " (flip ensemble)" for n in LEARNED})
#: mirrored copies averaged for the extra "<model>_ens" columns (--ensemble; 1: none)
ENSEMBLE = 1


def shipped_model(task, factor, name, protocol):
    """(the weights shipped in pacnd/data/weights, "shipped weights") or (None, None)."""
    from pacnd.models import pretrained

    try:
        variant = "standard" if name == "pac" else name
        return pretrained(task, factor, variant=variant, protocol=protocol), "shipped weights"
    except FileNotFoundError:
        return None, None


#: model name -> run folder evaluated as that model instead of runs/<task>_x<factor>_<name>
#: (--run; one task, factor and protocol per invocation)
OVERRIDES = {}


def learned_model(task, factor, name, protocol):
    """(model, where it came from) or (None, None)."""
    from pacnd.models import load_upsampler, pretrained
    from pacnd.models.registry import default_protocol

    suffix = "" if protocol == default_protocol(task) else f"_{protocol}"
    folder = f"{task}_x{factor}_{name}{suffix}"
    p = RUNS and os.path.join(RUNS, folder, "model.npz")
    if name in OVERRIDES:
        p = os.path.join(OVERRIDES[name], "model.npz")
        folder = os.path.basename(os.path.normpath(OVERRIDES[name]))
        if not os.path.exists(p):
            raise SystemExit(f"--run {name}={OVERRIDES[name]}: no model.npz there")
    if p and os.path.exists(p):
        m = load_upsampler(p)
        return m, f"runs/{folder} (step {m.meta.get('step')})"
    try:
        variant = "standard" if name == "pac" else name
        return pretrained(task, factor, variant=variant, protocol=protocol), "shipped weights"
    except FileNotFoundError:
        return None, None


def evaluate(pool, task, factor, protocol, per_group, scenes=None):
    from pacnd.models import baseline
    from pacnd.models.evaluation import evaluate_scenes, scene_examples
    from pacnd.models.recipe import heldout_scenes

    scenes = scenes or heldout_scenes(pool, task, per_group=per_group)
    exs = scene_examples(scenes, factor, lowres_mode=protocol)
    models = {n: baseline(n, task, factor, protocol=protocol)
              for n in ("bicubic", "bilinear", "jbu")}
    sources = {n: "training-free" for n in models}
    for n in LEARNED:
        m, src = learned_model(task, factor, n, protocol)
        if m is not None:
            models[n], sources[n] = m, src
            if src != "shipped weights":   # the run beside the weights it may replace
                m, src = shipped_model(task, factor, n, protocol)
                if m is not None:
                    models[n + "_shipped"], sources[n + "_shipped"] = m, src
            if ENSEMBLE > 1:
                from pacnd.models.ensemble import Ensembled

                models[n + "_ens"] = Ensembled(models[n], ENSEMBLE)
                sources[n + "_ens"] = (f"{sources[n]}, averaged over {ENSEMBLE} mirrored copies "
                                       f"(upsample(..., ensemble={ENSEMBLE}))")
    t0 = time.perf_counter()
    rows = evaluate_scenes(models, exs, task=task)
    for r in rows:
        r.update(task=task, factor=factor, protocol=protocol)
    print(f"{task} x{factor} {protocol}: {len(exs)} scenes, {len(models)} models, "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return rows, sources, {n: m.num_parameters() for n, m in models.items()}


def write(results):
    from pacnd.models.evaluation import format_table, summarize

    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "upsampling_eval.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    lines = ["# Deep joint upsampling: held-out scenes", "",
             "Whole scenes that no model saw in training, from several sources "
             "(`pacnd.data.pool.HELD_OUT` + Middlebury 2003 Cones view 2 for depth, "
             "MPI-Sintel alley_1 for flow; the training pool's other groups are the training "
             "data). Depth: RMSE in each scene's own units (disparity px, mm, m), 6-px border "
             "out; flow: EPE in px. Known pixels only. Per scene group (several captures of "
             "one place count once); the last rows average each model's error relative to "
             "bicubic (flow: bilinear) and to JBU over the groups. Produced by "
             "`benchmarks/upsampling_heldout.py`. The same networks on whole *training* "
             "scenes (fit against data, not a held-out result): "
             "`upsampling_fit_<task>_x<factor>_<protocol>.md` (`benchmarks/upsampling_fit.py`).",
             ""]
    summary = []
    for key, res in results.items():
        task, factor, protocol = key.split("|")
        ref = "bicubic" if task == "depth" else "bilinear"
        models = [m for m in ("bicubic", "bilinear", "jbu")
                  + tuple(x for n in LEARNED for x in (n, n + "_ens", n + "_shipped"))
                  if m in res["sources"]]
        lines += [f"## {task} x{factor}, protocol `{protocol}`", "",
                  format_table(res["rows"], models=models, references=(ref, "jbu")), "",
                  "Models: " + "; ".join(f"{NAMES[m]} ({res['params'][m]:,} parameters): "
                                         f"{res['sources'][m]}" for m in models), ""]
        s = summarize(res["rows"], references=(ref, "jbu"))["summary"]
        for m in models:
            summary.append((task, factor, protocol, m, s[m].get(f"vs_{ref}"), s[m].get("vs_jbu")))
    lines += ["## Summary: mean ratio over held-out groups", "",
              "| task | factor | protocol | model | vs bicubic/bilinear | vs JBU |",
              "|---|---:|---|---|---:|---:|"]
    for t, f, p, m, a, b in summary:
        lines.append(f"| {t} | {f} | {p} | {NAMES[m]} | {a:.3f} | {b:.3f} |")
    with open(os.path.join(RESULTS, "upsampling_eval.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def figures(pool, factor=8):
    """One held-out scene per task: guide, low-res, bicubic/bilinear, JBU, PAC, truth."""
    from pacnd.data.lowres import crop_to_multiple, make_low_res
    from pacnd.models import baseline
    from pacnd.models.recipe import heldout_scenes
    from pacnd.models.visualize import comparison_figure
    from pacnd.models.training import epe, rmse

    picks = {"depth": "mb2005_reindeer", "flow": "sintel_alley_1"}
    for task, name in picks.items():
        sc = [s for s in heldout_scenes(pool, task, per_group=1) if s[0] == name]
        if not sc:
            continue
        _, _, g, t = sc[0]
        g, t = crop_to_multiple(g, factor, multiple=16), crop_to_multiple(t, factor, multiple=16)
        protocol = PROTOCOLS[task][0]
        low = make_low_res(t, factor, protocol)
        from pacnd.data import fill_unknown
        low = fill_unknown(low)
        ref = "bicubic" if task == "depth" else "bilinear"
        res = {NAMES[ref]: baseline(ref, task, factor, protocol).upsample(low, g),
               "JBU": baseline("jbu", task, factor, protocol).upsample(low, g)}
        m, src = learned_model(task, factor, "pac", protocol)
        if m is not None:
            res["PAC"] = m.upsample(low, g)
        metric = {}
        for k, v in res.items():
            metric[k] = (rmse(v, t, border=6) if task == "depth"
                         else epe(v.transpose(2, 0, 1), t.transpose(2, 0, 1)))
        path = os.path.join(RESULTS, f"upsampling_{task}_x{factor}_heldout_{name}.png")
        comparison_figure(path, g, low, res, factor=factor, ground_truth=t, kind=task,
                          metrics=metric, title=f"held out: {name} ({task} x{factor})")
        print("figure:", path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", default=DEFAULT_POOL)
    ap.add_argument("--tasks", nargs="+", default=["depth", "flow"])
    ap.add_argument("--factors", nargs="+", type=int, default=[4, 8, 16])
    ap.add_argument("--protocols", nargs="+", default=None)
    ap.add_argument("--per-group", type=int, default=4)
    ap.add_argument("--figures", action="store_true")
    ap.add_argument("--ensemble", type=int, choices=(1, 2, 4, 8), default=1,
                    help="also report each learned model averaged over this many mirrored "
                         "copies (model.upsample(..., ensemble=N))")
    ap.add_argument("--results", default=None, help="folder for the .md/.json/.png outputs "
                    "(default benchmarks/results)")
    ap.add_argument("--runs", default=None, help="folder of run folders holding model.npz "
                    "(default runs/; 'none': shipped weights only)")
    ap.add_argument("--run", action="append", default=[], metavar="MODEL=DIR",
                    help="evaluate DIR/model.npz as MODEL (pac, pac_lite, djf) instead of "
                         "runs/<task>_x<factor>_<MODEL>; needs a single task, factor and "
                         "protocol")
    ap.add_argument("--update", action="store_true",
                    help="keep the other sections of the existing upsampling_eval.json and "
                         "replace only the task/factor/protocol sections evaluated now")
    args = ap.parse_args(argv)
    global RESULTS, RUNS, ENSEMBLE
    ENSEMBLE = args.ensemble
    if args.results:
        RESULTS = args.results
    if args.runs:
        RUNS = None if args.runs == "none" else args.runs
    for spec in args.run:
        name, sep, folder = spec.partition("=")
        if not sep or name not in LEARNED or not folder:
            raise SystemExit(f"--run {spec!r}: write MODEL=DIR with MODEL one of {LEARNED}")
        if len(args.tasks) != 1 or len(args.factors) != 1 or len(args.protocols or ()) != 1:
            raise SystemExit("--run needs one --tasks, one --factors and one --protocols value")
        OVERRIDES[name] = folder
    from pacnd.models.recipe import heldout_scenes

    results = {}
    old = os.path.join(RESULTS, "upsampling_eval.json")
    if args.update and os.path.exists(old):
        with open(old, encoding="utf-8") as f:
            results = json.load(f)      # sections evaluated below replace theirs in place
    for task in args.tasks:
        scenes = heldout_scenes(args.pool, task, per_group=args.per_group)
        for protocol in args.protocols or PROTOCOLS[task]:
            if protocol not in PROTOCOLS[task]:
                continue
            for factor in args.factors:
                rows, sources, params = evaluate(args.pool, task, factor, protocol,
                                                 args.per_group, scenes)
                results[f"{task}|{factor}|{protocol}"] = {"rows": rows, "sources": sources,
                                                          "params": params}
    write(results)
    if args.figures:
        figures(args.pool)
    return 0


if __name__ == "__main__":
    sys.exit(main())
