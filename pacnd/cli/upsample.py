"""Deep joint upsampling of depth maps and optical flow (``pacnd upsample``).

  pacnd upsample predict --guide IMG (--low LOW | --target GT) [-o OUT]
      upsample one target with a PAC network (shipped weights by default),
      write the result (.png / .npy / .flo) and a side-by-side PNG
      (guide, low-res, bicubic, JBU, PAC, ground truth when given)
  pacnd upsample eval --pair IMG GT [--pair ...] --factor 4 8 16
      RMSE (depth) / EPE (flow) of bicubic, bilinear, JBU and PAC models
  pacnd upsample train --out DIR [--pair IMG GT ...] [--synthetic-ratio R]
      train a model (progress bar, metrics CSV/JSON, curve PNG,
      checkpoints, --resume), then write DIR/model.npz

Depth PNG targets are read as value / --target-scale with 0 = unknown
(Middlebury 2003 disparities: --target-scale 4); .flo files are flow.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

__all__ = ["configure_parser", "run_from_args"]

_MODEL_CHOICES = ("pac", "pac_lite", "djf", "jbu", "bicubic", "bilinear")


# ----------------------------------------------------------------------------- parser
def configure_parser(parser):
    """Arguments of ``pacnd upsample`` (called by :mod:`pacnd.cli`)."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = sub.add_parser("predict", help="upsample one image and write the result and a figure",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--guide", required=True, metavar="IMG", help="high-res RGB guide image")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--low", metavar="FILE", help="low-res target to upsample")
    src.add_argument("--target", metavar="FILE",
                     help="high-res ground truth: the low-res input is simulated from it "
                          "(depth: nearest 'center' subsampling; flow: antialiased bilinear) "
                          "and the errors are reported")
    _common_model_args(p)
    p.add_argument("-o", "--output", default=None, metavar="OUT",
                   help="result file: .npy, .png (depth: 16-bit, value*--output-scale; flow: "
                        "colour-coded) or .flo (default: upsampled.npy / upsampled.flo)")
    p.add_argument("--output-scale", type=float, default=None, metavar="S",
                   help="PNG depth output stores value*S (default: --target-scale)")
    p.add_argument("--figure", default=None, metavar="FIG.png",
                   help="side-by-side PNG (default: <output stem>_compare.png)")
    p.add_argument("--no-figure", action="store_true", help="write no figure")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip bicubic and JBU in the figure")
    p.add_argument("--batch", action="store_true",
                   help="--guide and --low/--target are folders (pairs matched by file "
                        "stem), -o is the output folder (NAME.npy, or --format); no figures")
    p.add_argument("--format", choices=("npy", "png", "flo"), default=None,
                   help="--batch: output type (default: flo for flow, npy for depth)")
    from ..batch import add_batch_options  # noqa: PLC0415
    add_batch_options(p, keep_going=True)
    p.add_argument("-q", "--quiet", action="store_true", help="--batch: no progress or summary")
    p.set_defaults(_action=_predict)

    e = sub.add_parser("eval", help="RMSE / EPE of baselines and models on image pairs",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("--pair", nargs=2, action="append", required=True,
                   metavar=("IMG", "GT"), help="guide image and high-res ground truth "
                                               "(repeatable)")
    e.add_argument("--task", choices=("depth", "flow"), default=None,
                   help="default: flow for .flo targets, else depth")
    e.add_argument("--factor", type=int, nargs="+", default=[8], metavar="N")
    e.add_argument("--models", nargs="+", default=["bicubic", "bilinear", "jbu", "pac"],
                   metavar="M", help=f"any of {', '.join(_MODEL_CHOICES)} (pac = the shipped "
                                     f"weights) and NAME=WEIGHTS.npz")
    e.add_argument("--target-scale", type=float, default=1.0, metavar="S",
                   help="depth PNG: stored value = S * depth")
    e.add_argument("--border", type=int, default=None, metavar="PX",
                   help="pixels left out on each side (default: 6 depth, 0 flow)")
    e.add_argument("--protocol", choices=("center", "bicubic", "bilinear"), default=None,
                   help="low-res protocol (default: center for depth, bilinear for flow); "
                        "selects the matching shipped weights")
    e.add_argument("--multiple", type=int, default=16, metavar="M",
                   help="centre-crop images to a multiple of M (the same crop for every "
                        "factor)")
    e.add_argument("--json", default=None, metavar="OUT.json", help="also write the table")
    e.set_defaults(_action=_eval)

    t = sub.add_parser("train", help="train a joint-upsampling network",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--out", required=True, metavar="DIR",
                   help="run directory: metrics.csv/jsonl, curve.png, checkpoint.npz, "
                        "model.npz")
    t.add_argument("--task", choices=("depth", "flow"), default="depth")
    t.add_argument("--factor", type=int, default=8, metavar="N")
    t.add_argument("--model", choices=("pac", "pac_lite", "djf"), default="pac")
    t.add_argument("--pool", default=None, metavar="DIR",
                   help="train on a pool folder (depth/<name>/, flow/<name>/ with meta.json; "
                        "the project's shared/data/train) with the shipped weights' recipe: "
                        "source mixing, augmentation, per-image normalisation, a residual "
                        "base, held-out evaluation (pacnd.models.recipe); --pair/--guide-dir "
                        "are then not used")
    t.add_argument("--protocol", choices=("center", "bicubic", "bilinear"), default=None,
                   help="low-res protocol (default: center for depth, bilinear for flow)")
    t.add_argument("--residual", choices=("jbu", "bicubic", "bilinear", "none"), default="jbu",
                   help="--pool: training-free upsampler the network's output is added to")
    t.add_argument("--pair", nargs=2, action="append", default=[], metavar=("IMG", "GT"),
                   help="training pair (repeatable)")
    t.add_argument("--guide-dir", default=None, metavar="DIR",
                   help="training guides; targets of the same stem in --target-dir")
    t.add_argument("--target-dir", default=None, metavar="DIR")
    t.add_argument("--synthetic-ratio", type=float, default=None, metavar="R",
                   help="fraction of synthetic scenes per batch item (default: 0.5 with real "
                        "pairs, 1 without; --pool: 0, else that fraction of the crops comes "
                        "from 256 synthetic scenes)")
    t.add_argument("--eval-pair", nargs=2, action="append", default=[], metavar=("IMG", "GT"),
                   help="held-out pair evaluated during training (repeatable)")
    t.add_argument("--target-scale", type=float, default=1.0, metavar="S")
    t.add_argument("--crop", type=int, default=128, metavar="PX",
                   help="training crop (the reference: 256)")
    t.add_argument("--batch-size", type=int, default=1, metavar="B")
    t.add_argument("--steps", type=int, default=2000, metavar="N")
    t.add_argument("--lr", type=float, default=None, metavar="LR",
                   help="initial Adam learning rate (default: 1e-3 for pac and pac_lite, "
                        "2e-4 for djf, whose ReLUs die at 1e-3; the reference: 1e-4 over "
                        "5000 epochs)")
    t.add_argument("--milestones", type=float, nargs="*", default=[0.7, 0.9], metavar="M",
                   help="learning rate x0.1 at these fractions of --steps")
    t.add_argument("--border", type=int, default=None, metavar="PX",
                   help="loss border crop (default: 6 depth, 0 flow)")
    t.add_argument("--init", default=None, metavar="WEIGHTS.npz",
                   help="start from these weights (fine-tuning)")
    t.add_argument("--pre-upsample", type=int, default=1, metavar="P",
                   help="--pool, PAC: interpolate the low-res input P times (a power of 2) "
                        "and run the factor/P network on it (e.g. --factor 16 --pre-upsample 2 "
                        "--init 8x-weights.npz: how the shipped 16x depth weights started)")
    t.add_argument("--loss", choices=("mse", "relative"), default="mse",
                   help="--pool: 'mse' over all known pixels, or 'relative': each crop's MSE "
                        "over the interpolation baseline's (bicubic depth, bilinear flow), "
                        "which is what the held-out ratios average")
    t.add_argument("--start", choices=("bilinear", "reference"), default="bilinear",
                   help="PAC networks: 'reference' random init, or 'bilinear' (the same, with "
                        "channel 0 a bilinear pass-through: better for short runs)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--eval-every", type=int, default=0, metavar="N")
    t.add_argument("--checkpoint-every", type=int, default=100, metavar="N")
    t.add_argument("--resume", action="store_true",
                   help="continue from DIR/checkpoint.npz (bit-exact)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(_action=_train)


def _common_model_args(p):
    p.add_argument("--task", choices=("depth", "flow"), default=None,
                   help="default: flow for .flo targets, else depth")
    p.add_argument("--factor", type=int, default=None, metavar="N",
                   help="upsampling factor (default: from the sizes with --low, else 8)")
    p.add_argument("--weights", default=None, metavar="WEIGHTS.npz",
                   help="a model written by 'pacnd upsample train' (default: the shipped "
                        "pretrained PAC network for the task and factor)")
    p.add_argument("--model", choices=_MODEL_CHOICES, default="pac",
                   help="without --weights: pac = shipped weights, or a baseline")
    p.add_argument("--target-scale", type=float, default=1.0, metavar="S",
                   help="depth PNG: stored value = S * depth, 0 = unknown (Middlebury 2003: 4)")
    p.add_argument("--protocol", choices=("center", "bicubic", "bilinear"), default=None,
                   help="how the low-res input is (or, with --target, is simulated to be) made: "
                        "depth 'center' (nearest subsampling, the paper's; default) or "
                        "'bicubic' (antialiased bicubic downsampling); flow 'bilinear'. "
                        "Selects the matching shipped weights")
    p.add_argument("--ensemble", type=int, choices=(1, 2, 4, 8), default=1, metavar="N",
                   help="average over N mirrored copies of the input (1, 2, 4 or 8; N times "
                        "the compute, a lower error for the learned networks; default 1)")


def run_from_args(args):
    """Run ``pacnd upsample ACTION`` from parsed arguments."""
    return args._action(args)


# ----------------------------------------------------------------------------- predict
def _predict_batch(args):
    from ..models.batch import upsample_folder  # noqa: PLC0415

    if args.output is None:
        raise ValueError("--batch needs -o OUT_DIR (the output folder)")
    source = "low" if args.low is not None else "target"
    report, missing = upsample_folder(
        args.guide, args.low if args.low is not None else args.target, args.output,
        source=source, out_format=args.format, scheduler=args.scheduler, resume=args.resume,
        keep_going=args.keep_going, progress=not args.quiet,
        engine=getattr(args, "engine", None), task=args.task, factor=args.factor,
        weights=args.weights, model=args.model, protocol=getattr(args, "protocol", None),
        target_scale=args.target_scale, output_scale=args.output_scale,
        ensemble=args.ensemble)
    if not args.quiet:
        n = len(report.done) + len(report.failed)
        extra = f"; {len(report.skipped)} already done (--resume)" if report.skipped else ""
        extra += (f"; {len(report.failed)} failed: {', '.join(report.failed)}"
                  if report.failed else "")
        extra += f"; {len(missing)} guide(s) without a target skipped" if missing else ""
        print(f"upsampled {len(report.done)}/{n} image(s) in {report.seconds:.2f} s "
              f"({report.rate:.2f} images/s, scheduler {report.scheduler}){extra}",
              file=sys.stderr)
    return 1 if report.failed else 0


def _predict(args):
    from ..models import baseline  # noqa: PLC0415
    from ..models.batch import (check_factor, factor_of_sizes,  # noqa: PLC0415
                                low_res_of_target, model_for, read_target, resolve_protocol,
                                task_of)
    if args.batch:
        return _predict_batch(args)
    from ..data.io import read_image, write_target  # noqa: PLC0415
    from ..models import DEFAULT_BORDER, epe, rmse  # noqa: PLC0415
    from ..models.visualize import comparison_figure  # noqa: PLC0415
    from ..data import fill_unknown  # noqa: PLC0415

    factor = check_factor(args.factor)
    guide = read_image(args.guide)
    H, W = guide.shape[:2]
    gt = None
    if args.target is not None:
        task = task_of(args.target, args.task)
        protocol = resolve_protocol(getattr(args, "protocol", None), task)
        factor = factor or 8
        gt = read_target(args.target, task, args.target_scale)
        model = model_for(task, factor, args.weights, args.model, protocol)
        guide, gt, low = low_res_of_target(guide, gt, factor, protocol, args.target)
        if guide.shape[:2] != (H, W):
            print(f"note: centre-cropped to {guide.shape[1]}x{guide.shape[0]} (a multiple of "
                  f"{factor})", file=sys.stderr)
    else:
        task = task_of(args.low, args.task)
        protocol = resolve_protocol(getattr(args, "protocol", None), task)
        low = read_target(args.low, task, args.target_scale)
        factor = factor_of_sizes(guide.shape, low.shape, factor)
        model = model_for(task, factor, args.weights, args.model, protocol)
    if not np.isfinite(low).all():
        n = int((~np.isfinite(low)).sum())
        print(f"note: {n} unknown low-res samples filled with the nearest known value",
              file=sys.stderr)
        low = fill_unknown(low)
    t0 = time.perf_counter()
    out = model.upsample(low, guide, engine=args.engine, ensemble=args.ensemble)
    secs = time.perf_counter() - t0
    label = "PAC" if model.kind == "pac" else model.kind.upper().replace("_", "-")
    results = {f"{label}": out}
    if not args.no_baselines:
        for name in ("bicubic", "jbu"):
            if name != model.kind:
                b = baseline(name, task, factor, protocol=protocol)
                results[name if name != "jbu" else "JBU"] = b.upsample(low, guide)
        results = {k: results[k] for k in sorted(results, key=lambda k: k == label)}
    metrics = {}
    border = DEFAULT_BORDER[task]
    if gt is not None:
        for k, v in results.items():
            if task == "depth":
                metrics[k] = rmse(v, gt, border=border)
            else:
                metrics[k] = epe(v.transpose(2, 0, 1), gt.transpose(2, 0, 1), border=border)
    out_path = args.output or ("upsampled.flo" if task == "flow" else "upsampled.npy")
    scale = args.output_scale if args.output_scale is not None else args.target_scale
    write_target(out_path, out, scale=scale)
    print(f"pacnd upsample: {task} {low.shape[1]}x{low.shape[0]} -> {W}x{H} (x{factor}) with "
          f"{label} in {secs:.2f} s -> {out_path}")
    if metrics:
        unit = "RMSE" if task == "depth" else "EPE"
        if border:
            print(f"  ({unit} over known pixels, {border}-pixel border left out)")
        for k, v in metrics.items():
            print(f"  {k:10s} {unit} {v:.4f}")
    if not args.no_figure:
        fig = args.figure or (os.path.splitext(out_path)[0] + "_compare.png")
        comparison_figure(fig, guide, low, results, factor=factor, ground_truth=gt, kind=task,
                          metrics=metrics, title=f"pacnd: {task} x{factor}")
        print(f"  figure: {fig}")
    return 0


# ----------------------------------------------------------------------------- eval
def _eval(args):
    from ..models import baseline, evaluate_upsampler, load_upsampler  # noqa: PLC0415
    from ..models.batch import (check_factor, model_for, resolve_protocol,  # noqa: PLC0415
                                task_of)
    from ..data import JointUpsamplingPairs, load_pair  # noqa: PLC0415

    task = task_of(args.pair[0][1], args.task)
    protocol = resolve_protocol(getattr(args, "protocol", None), task)
    pairs = [load_pair(g, t, kind=task if task == "flow" else None,
                       target_scale=args.target_scale) for g, t in args.pair]
    rows = []
    for factor in args.factor:
        check_factor(factor)
        ds = JointUpsamplingPairs(pairs, factor, kind=task, crop=None, lowres_mode=protocol)
        exs = list(ds.examples(multiple=max(args.multiple, factor)))
        for spec in args.models:
            if "=" in spec:
                name, path = spec.split("=", 1)
                model = load_upsampler(path)
                if model.factor != factor:
                    continue
            elif spec in ("pac", "pac_lite", "djf"):
                name, model = spec, model_for(task, factor, None, spec, protocol)
            elif spec in ("bicubic", "bilinear", "jbu"):
                name, model = spec, baseline(spec, task, factor, protocol=protocol)
            else:
                raise ValueError(f"--models {spec!r}: use one of pac, pac_lite, djf, bicubic, "
                                 f"bilinear, jbu or NAME=WEIGHTS.npz")
            t0 = time.perf_counter()
            val = evaluate_upsampler(model, exs, kind=task, border=args.border)
            rows.append({"task": task, "factor": factor, "protocol": protocol, "model": name,
                         "rmse" if task == "depth" else "epe": val,
                         "seconds": time.perf_counter() - t0})
            print(f"{task} x{factor:<3d} {name:14s} {'RMSE' if task == 'depth' else 'EPE'} "
                  f"{val:.4f}", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    return 0


# ----------------------------------------------------------------------------- train
def _train_pool(args):
    from ..models import save_upsampler  # noqa: PLC0415
    from ..models.recipe import (build_from_recipe, default_recipe,  # noqa: PLC0415
                                default_weights, synthetic_mix, train_from_pool)

    if args.pair or args.guide_dir:
        raise ValueError("--pool trains with the pool recipe; drop --pair/--guide-dir")
    start = {} if args.init is None else {"init_from": os.path.abspath(args.init)}
    mix = {} if args.synthetic_ratio is None else synthetic_mix(
        default_weights(args.task), args.synthetic_ratio)
    r = default_recipe(args.task, args.factor, args.model, protocol=args.protocol, **mix,
                       steps=args.steps, lr=args.lr, crop=args.crop,
                       batch_size=args.batch_size, seed=args.seed,
                       residual=None if args.residual == "none" else args.residual,
                       init="zero_last" if args.residual != "none" else "reference",
                       eval_every=args.eval_every or 250, pre_upsample=args.pre_upsample,
                       loss=args.loss, **start)
    res = train_from_pool(r, args.pool, args.out, resume=args.resume,
                          progress=not args.no_progress)
    path = os.path.join(args.out, "model.npz")
    if not os.path.exists(path):   # a run with nothing left to do writes the weights too
        save_upsampler(path, build_from_recipe(r))
    msg = f"pacnd upsample train: {res.step} steps; weights -> {path}"
    if res.eval_history:
        last = res.eval_history[-1]
        msg += "; held-out " + ", ".join(f"{k} {v:.3f}" for k, v in last.items() if k != "step")
    print(msg)
    return 0


def _train(args):
    from ..models.batch import check_factor  # noqa: PLC0415
    if args.pool:
        check_factor(args.factor)
        return _train_pool(args)
    if args.pre_upsample != 1:
        raise ValueError(f"--pre-upsample {args.pre_upsample} trains with the pool recipe: "
                         f"give --pool DIR too (or drop it)")
    if args.loss != "mse":
        raise ValueError(f"--loss {args.loss} trains with the pool recipe: give --pool DIR "
                         f"too (or drop it)")
    from ..models import build_model, evaluate_upsampler, load_upsampler  # noqa: PLC0415
    from ..models import save_upsampler, train_upsampler  # noqa: PLC0415
    from ..models.recipe import DEFAULT_LR  # noqa: PLC0415
    from ..models.training import DEFAULT_BORDER  # noqa: PLC0415
    from ..data import JointUpsamplingPairs, SyntheticScenes, load_pair  # noqa

    check_factor(args.factor)
    task = args.task
    kind = task
    pairs = [load_pair(g, t, kind=task if task == "flow" else None,
                       target_scale=args.target_scale) for g, t in args.pair]
    if args.guide_dir or args.target_dir:
        if not (args.guide_dir and args.target_dir):
            raise ValueError("--guide-dir and --target-dir go together")
        pairs += JointUpsamplingPairs.from_folders(
            args.guide_dir, args.target_dir, args.factor, kind=kind,
            target_scale=args.target_scale, crop=None).pairs
    ratio = args.synthetic_ratio
    if ratio is None:
        ratio = 0.5 if pairs else 1.0
    if not 0 <= ratio <= 1:
        raise ValueError(f"--synthetic-ratio {ratio} must be in [0, 1]")
    if not pairs and ratio == 0:
        raise ValueError("no training data: give --pair / --guide-dir, or a --synthetic-ratio "
                         "above 0")
    if args.crop % args.factor:
        raise ValueError(f"--crop {args.crop} must be a multiple of --factor {args.factor}")
    synth = SyntheticScenes(kind, (args.crop, args.crop)) if ratio > 0 else None
    data = JointUpsamplingPairs(pairs, args.factor, kind=kind, crop=args.crop,
                                batch_size=args.batch_size, synthetic=synth,
                                synthetic_ratio=ratio)
    if args.init:
        model = load_upsampler(args.init)
        if model.factor != args.factor:
            raise ValueError(f"--init {args.init!r} upsamples by {model.factor}, not "
                             f"{args.factor}")
        model.train()
    else:
        kw = {"init": args.start} if args.model in ("pac", "pac_lite") else {}
        model = build_model(args.model, args.factor, 2 if task == "flow" else 1,
                            rng=args.seed, **kw)
    evs = []
    if args.eval_pair:
        ep = [load_pair(g, t, kind=task if task == "flow" else None,
                        target_scale=args.target_scale) for g, t in args.eval_pair]
        evs = list(JointUpsamplingPairs(ep, args.factor, kind=kind, crop=None).examples(
            multiple=16 if args.factor <= 16 else args.factor))
    border = DEFAULT_BORDER[task] if args.border is None else args.border
    lr = DEFAULT_LR.get(model.kind, DEFAULT_LR["pac"]) if args.lr is None else args.lr
    t0 = time.perf_counter()
    res = train_upsampler(model, data, steps=args.steps, lr=lr,
                          milestones=args.milestones, border=border, log_dir=args.out,
                          eval_examples=evs, eval_kind=task, eval_every=args.eval_every,
                          checkpoint_every=args.checkpoint_every, resume=args.resume,
                          seed=args.seed, progress=not args.no_progress,
                          desc=f"{args.model} {task} x{args.factor}")
    secs = time.perf_counter() - t0
    meta = dict(model.meta or {})
    meta.setdefault("history", [])
    meta["history"].append({
        "task": task, "factor": args.factor, "steps": args.steps, "lr": lr,
        "milestones": list(args.milestones), "crop": args.crop, "batch_size": args.batch_size,
        "synthetic_ratio": ratio, "pairs": [list(p) for p in args.pair],
        "seed": args.seed, "init": args.init, "border": border,
        "seconds_this_session": round(secs, 1)})
    path = save_upsampler(os.path.join(args.out, "model.npz"), model, meta=meta)
    msg = f"pacnd upsample train: {res.step} steps; weights -> {path}"
    if evs:
        val = evaluate_upsampler(model, evs, kind=task, border=border)
        msg += f"; held-out {'RMSE' if task == 'depth' else 'EPE'} {val:.4f}"
    print(msg)
    return 0
