"""How well the upsamplers fit their own training scenes, beside the held-out ones.

    python benchmarks/upsampling_fit.py [--pool ../shared/data/train] [--factor 8]
        [--protocol center] [--per-source 3] [--run pac=runs/DIR ...]

A diagnostic for the gap between a learned upsampler and its target: evaluated
on whole *training* scenes (the first image of up to ``--per-source`` groups of
every training source, the same way :mod:`upsampling_heldout` evaluates the
held-out ones), a network that is much better there than on held-out scenes is
limited by its data (generalisation); one that is about as good on both is
limited by its fit (capacity, steps). Reports, per source, the mean ratio to
bicubic on training groups and, from ``upsampling_eval.json``, on held-out
groups of the same source. Writes ``benchmarks/results/upsampling_fit.{md,json}``.
These numbers are *not* held-out results and are never reported as such.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
RESULTS = os.path.join(HERE, "results")
DEFAULT_POOL = os.path.join(os.path.dirname(REPO), "shared", "data", "train")


def training_scenes(pool, task, per_source):
    """``(name, group, rgb, target)`` of the first image of the first ``per_source``
    training groups of each source (groups in name order)."""
    from pacnd.data.pool import scan_pool, split

    train, _ = split(scan_pool(pool, task), task)
    first = {}
    for it in train:
        first.setdefault(it.group, it)
    by_source = defaultdict(list)
    for g in sorted(first):
        by_source[first[g].source].append(first[g])
    out = []
    for src in sorted(by_source):
        for it in by_source[src][:per_source]:
            g, t = it.load()
            out.append((it.name, it.group, g, t))
    return out


def per_source_ratios(rows, model, ref="bicubic"):
    """source -> mean over its groups of ``model``'s error over ``ref``'s."""
    from pacnd.models.evaluation import summarize

    pg = summarize(rows, references=(ref,))["per_group"]
    groups = sorted({r["group"] for r in rows})
    out = defaultdict(list)
    for g in groups:
        a, b = pg.get(f"{g}|{model}"), pg.get(f"{g}|{ref}")
        if a is not None and b:
            out[g.split("/")[0]].append(a / b)
    return {s: sum(v) / len(v) for s, v in out.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", default=DEFAULT_POOL)
    ap.add_argument("--task", default="depth", choices=("depth", "flow"))
    ap.add_argument("--factor", type=int, default=8)
    ap.add_argument("--protocol", default=None)
    ap.add_argument("--per-source", type=int, default=3)
    ap.add_argument("--run", action="append", default=[], metavar="MODEL=DIR",
                    help="evaluate DIR/model.npz under the name MODEL (default: the shipped "
                         "standard weights as 'pac')")
    ap.add_argument("--results", default=RESULTS)
    args = ap.parse_args(argv)
    if args.per_source < 1:
        raise SystemExit(f"--per-source {args.per_source}: give 1 or more")
    from pacnd.models import baseline, load_upsampler, pretrained
    from pacnd.models.evaluation import evaluate_scenes, format_table, scene_examples, summarize
    from pacnd.models.recipe import INTERPOLATION
    from pacnd.models.registry import default_protocol

    protocol = args.protocol or default_protocol(args.task)
    ref = INTERPOLATION[args.task]
    models = {n: baseline(n, args.task, args.factor, protocol=protocol) for n in (ref, "jbu")}
    sources = {}
    for spec in args.run:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise SystemExit(f"--run {spec!r}: write MODEL=DIR")
        models[name] = load_upsampler(os.path.join(folder, "model.npz"))
        sources[name] = f"{folder} (step {models[name].meta.get('step')})"
    if not args.run:
        models["pac"] = pretrained(args.task, args.factor, protocol=protocol)
        sources["pac"] = "shipped weights"
    scenes = training_scenes(args.pool, args.task, args.per_source)
    exs = scene_examples(scenes, args.factor, lowres_mode=protocol)
    t0 = time.perf_counter()
    rows = evaluate_scenes(models, exs, task=args.task)
    print(f"{len(exs)} training scenes, {len(models)} models, {time.perf_counter() - t0:.0f} s")

    held = {}
    p = os.path.join(args.results, "upsampling_eval.json")
    key = f"{args.task}|{args.factor}|{protocol}"
    if os.path.exists(p):
        with open(p, encoding="utf-8") as f:
            held = json.load(f).get(key, {})
    learned = [m for m in models if m not in (ref, "jbu")]
    summ = summarize(rows, references=(ref, "jbu"))["summary"]
    lines = [f"# Fit on training scenes vs held out: {args.task} x{args.factor}, "
             f"protocol `{protocol}`", "",
             "Whole **training** scenes (the first image of up to "
             f"{args.per_source} groups per training source), evaluated as the held-out "
             "ones are. Not a held-out result: a diagnostic of whether a network is limited "
             "by its fit (as good on held-out scenes as on its own) or by its data. Produced "
             "by `benchmarks/upsampling_fit.py`.", "",
             format_table(rows, models=list(models), references=(ref, "jbu")), "",
             "Models: " + "; ".join(f"{m}: {s}" for m, s in sources.items()), "",
             f"## Mean ratio to {ref}, per source", "",
             "| source | " + " | ".join(f"{m} train | {m} held out" for m in learned) + " |",
             "|---|" + "---:|---:|" * len(learned)]
    train_src = {m: per_source_ratios(rows, m, ref) for m in learned}
    held_src = {m: per_source_ratios(held.get("rows", []), m, ref) if m in
                held.get("sources", {}) else {} for m in learned}
    for s in sorted(set().union(*[set(v) for v in train_src.values()],
                                *[set(v) for v in held_src.values()])):
        cells = []
        for m in learned:
            for d in (train_src[m], held_src[m]):
                cells.append(f"{d[s]:.3f}" if s in d else "")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    cells = []
    for m in learned:
        cells.append(f"**{summ[m][f'vs_{ref}']:.3f}**")
        h = (summarize(held["rows"], references=(ref,))["summary"].get(m, {}).get(f"vs_{ref}")
             if held.get("rows") else None)
        cells.append("" if h is None else f"**{h:.3f}**")
    lines.append("| **all groups** | " + " | ".join(cells) + " |")
    os.makedirs(args.results, exist_ok=True)
    base = os.path.join(args.results, f"upsampling_fit_{args.task}_x{args.factor}_{protocol}")
    with open(base + ".json", "w", encoding="utf-8") as f:
        json.dump({"rows": rows, "sources": sources, "train_per_source": train_src,
                   "heldout_per_source": held_src}, f, indent=1)
    with open(base + ".md", "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
