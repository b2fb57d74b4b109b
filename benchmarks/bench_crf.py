"""PAC-CRF post-processing and pacnd.densecrf vs the fully-connected CRF (pydensecrf2) and a
ConvCRF baseline.

Run: ``python benchmarks/bench_crf.py`` (writes ``benchmarks/results/crf.{json,md,png}``;
``crf.md`` also gathers the targets of ``crf_tuning.json`` and ``crf_volume.json`` when
``benchmarks/tune_crf.py`` and ``benchmarks/bench_crf_volume.py`` have run). Needs the
sample data (``../shared/data`` or ``$PACND_SHARED_DIR/data``) and, for the
fully-connected CRF, ``pip install pydensecrf2`` (the ``bench`` extra; without it those
rows are left out).

Protocols
---------
VOC 2007 (4 images with ground truth, 21 classes). Unaries come from the ground
truth by the three seeded protocols of ``crf_protocols.py``: ``blocky`` label
noise (the first benchmark's protocol), ``coarse`` CNN-like scores (8-16 px
output stride, blurred boundaries, confused regions) and ``both``; test seeds
0-5 for every image and protocol (72 cases; ``--seeds``). Runs before 2026-12-06
used seeds 0 and 1 only: with two held-out images that is 4 cases per protocol,
and an mIoU cell moved by more than a point between seed pairs (the 'both'
protocol: refine 0.8055 vs ConvCRF 0.8168 on seeds 0-1, 0.771 vs 0.757 on 2-3),
so the held-out tables pool six seeds and also show seeds 0-1 for comparison.
``refine``'s defaults were
chosen by ``benchmarks/tune_crf.py`` on 2007_000033 and 2007_000129 (seeds
100-103): the **held-out** rows use only 2007_000332 and 2007_000346; rows over
all four images are marked as such. Metrics: pixel accuracy and mIoU over the
classes of the ground truth (confusion matrices summed over the cases). The
learned PAC-CRF is trained leave-one-image-out on blocky unaries (seeds 100+ of
the other three images, 192x192 crops) and reported on blocky only.

pydensecrf examples (3 photos with rough colour annotations, black = unknown,
no ground truth): unaries from the annotations with gt_prob 0.7 (pydensecrf's
own example); what is measured is agreement with the fully-connected CRF's
result ``out*.png``.

Methods: ``dense`` (pydensecrf2 ``DenseCRF2D`` with ``addPairwiseGaussian`` /
``addPairwiseBilateral``), ``dense_generic`` (pydensecrf2 ``DenseCRF`` with
``create_pairwise_*`` features), ``densecrf`` / ``densecrf_generic`` (the same
two scripts with ``import pacnd.densecrf as dcrf``), ``pac`` (``refine``'s
defaults), ``convcrf`` (``convcrf_refine``), ``pac_learned``; all with the
fully-connected CRF's standard parameters (sxy 3/80, srgb 13, compat 3/10, 5
iterations).

Timing: methods alternate on every case (same machine load), 3 rounds, median
wall time and process CPU time per image; pacnd runs on Numba's threads,
pydensecrf2 on one. Memory: every method once more in a fresh process on one
500x375 image (after a warm-up call), peak resident memory minus the resident
memory before the call.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

# time the compiled kernels: compile them in-process at the first (warm-up) call instead
# of serving first calls with the reference engine (pacnd/engines/cpu/coldstart.py)
os.environ.setdefault("PACND_JIT", "eager")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "benchmarks"))

from crf_protocols import PROTOCOLS, make_unary  # noqa: E402

from pacnd.crf import (convcrf_refine, dense_crf_mapping, fit_crf,  # noqa: E402
                       labels_from_annotation, learnable, read_label_image, refine,
                       unary_from_labels)

DATA = Path(os.environ.get("PACND_SHARED_DIR") or ROOT.parent / "shared") / "data"
VOC = DATA / "voc2007"
PDE = DATA / "pydensecrf_examples"
OUT = ROOT / "benchmarks" / "results"
L_VOC = 21


# ----------------------------------------------------------------------------- data
def _rgb(path):
    from PIL import Image

    with Image.open(path) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB")))


def load_voc():
    from PIL import Image

    out = []
    for f in sorted(VOC.glob("*_0img.png")):
        with Image.open(str(f).replace("_0img", "_5labels")) as im:
            gt = np.asarray(im).astype(np.int64)
        out.append((f.name[:11], _rgb(f), gt))
    return out


def corrupt(gt, seed, L=L_VOC):
    """Blocky-label-noise probabilities (the learning folds' unaries)."""
    return make_unary("blocky", gt, seed, L)


TUNED_ON = ("2007_000033", "2007_000129")


def load_pde():
    out = []
    for i in (1, 2, 3):
        img = _rgb(PDE / f"im{i}.png")
        anno = read_label_image(PDE / f"anno{i}.png")
        labels, colors = labels_from_annotation(anno)
        ref_rgb = read_label_image(PDE / f"out{i}.png")
        ref = np.full(labels.shape, -1, np.int64)
        for li, c in enumerate(colors):
            ref[(ref_rgb == c).all(axis=2)] = li
        out.append((f"im{i}", img, anno, labels, colors, ref))
    return out


# ----------------------------------------------------------------------------- metrics
def confusion(pred, gt, L):
    ok = (gt >= 0) & (gt < L)
    return np.bincount(gt[ok] * L + pred[ok], minlength=L * L).reshape(L, L)


def scores_of(C, gt_classes_only=False):
    """(pixel accuracy, mIoU) of a confusion matrix (rows: truth). mIoU averages the classes
    that occur in the truth or a prediction (a spurious class scores 0), or with
    ``gt_classes_only`` the classes of the truth only."""
    inter = np.diag(C).astype(np.float64)
    union = C.sum(0) + C.sum(1) - inter
    ok = (C.sum(1) > 0) if gt_classes_only else (union > 0)
    return float(inter.sum() / C.sum()), float((inter[ok] / union[ok]).mean())


# ----------------------------------------------------------------------------- methods
def _crf_labels(mod, utils, img, P, style, iterations=5):
    """pydensecrf's standard example on probabilities P (H, W, L), with ``mod`` either
    pydensecrf.densecrf or pacnd.densecrf (and its utils): 2-D API or generic API."""
    H, W, L = P.shape
    U = np.ascontiguousarray(utils.unary_from_softmax(np.ascontiguousarray(
        P.transpose(2, 0, 1))))
    rgb = np.array(img, dtype=np.uint8, order="C")  # pydensecrf needs a writable buffer
    if style == "2d":
        d = mod.DenseCRF2D(W, H, L)
        d.setUnaryEnergy(U)
        d.addPairwiseGaussian(sxy=3, compat=3)
        d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=rgb, compat=10)
    else:
        d = mod.DenseCRF(H * W, L)
        d.setUnaryEnergy(U)
        d.addPairwiseEnergy(utils.create_pairwise_gaussian((3, 3), (H, W)), compat=3)
        d.addPairwiseEnergy(utils.create_pairwise_bilateral((80, 80), (13, 13, 13), rgb,
                                                            chdim=2), compat=10)
    return np.argmax(d.inference(iterations), axis=0).reshape(H, W)


def dense_crf(img, P, iterations=5, style="2d"):
    import pydensecrf.densecrf as dcrf
    import pydensecrf.utils as utils

    return _crf_labels(dcrf, utils, img, P, style, iterations)


def pacnd_densecrf(img, P, iterations=5, style="2d"):
    import pacnd.densecrf as dcrf
    from pacnd.densecrf import utils

    return _crf_labels(dcrf, utils, img, P, style, iterations)


def have_dense():
    import importlib.util

    try:
        return importlib.util.find_spec("pydensecrf.densecrf") is not None
    except ImportError:
        return False


def timed(fn, *args, **kw):
    t, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t, time.process_time() - c


def set_threads(n):
    import numba

    numba.set_num_threads(n)


# ----------------------------------------------------------------------------- learning
def train_folds(voc, steps, lr, log, cache=None):
    """Leave-one-image-out learned PAC-CRFs: {held-out name: (PacCRF, first, last loss)}.

    With ``cache`` (a folder), trained models are saved there and re-used by a later run
    with the same steps and lr (e.g. to re-time on a quieter machine)."""
    from pacnd.crf import load_crf, save_crf

    models = {}
    for k, (name, img, gt) in enumerate(voc):
        cpath = None if cache is None else Path(cache) / f"fold_{name}_{steps}_{lr}.npz"
        if cpath is not None and cpath.exists():
            from pacnd.io import load_tree

            extra = load_tree(cpath)["extra"]
            models[name] = (load_crf(cpath), extra["first"], extra["last"])
            log(f"  fold {k} (held out {name}): loaded from {cpath}")
            continue
        imgs, scs, labs = [], [], []
        for j, (n2, img2, gt2) in enumerate(voc):
            if n2 == name:
                continue
            for s in range(4):
                imgs.append(img2)
                scs.append(corrupt(gt2, 100 + 10 * j + s))
                labs.append(gt2)
        crf = learnable(dense_crf_mapping((375, 500), L_VOC), channels=3)
        t = time.perf_counter()
        res = fit_crf(crf, imgs, scs, labs, steps=steps, lr=lr, crop=(192, 192), rng=k,
                      ignore_index=255)
        first = float(np.mean([r["loss"] for r in res.history[:20]]))
        last = float(np.mean([r["loss"] for r in res.history[-20:]]))
        log(f"  fold {k} (held out {name}): {steps} steps in {time.perf_counter() - t:.0f} s, "
            f"train loss {first:.4f} -> {last:.4f}")
        models[name] = (crf, first, last)
        if cpath is not None:
            cpath.parent.mkdir(parents=True, exist_ok=True)
            save_crf(cpath, crf, extra={"first": first, "last": last})
    return models


# ----------------------------------------------------------------------------- figure
def figure(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pacnd.crf import default_palette

    pal = default_palette(256)
    ncol = max(len(r) for r in rows)
    fig, ax = plt.subplots(len(rows), ncol, figsize=(2.6 * ncol, 2.3 * len(rows)))
    for i, row in enumerate(rows):
        for j in range(ncol):
            a = ax[i, j]
            a.axis("off")
            if j >= len(row):
                continue
            title, arr, colors = row[j]
            if arr.ndim == 3:
                a.imshow(arr)
            else:
                # label l -> VOC colour of l + 1 for the annotation rows (l = 0 would be
                # black); unknown (-1) -> black
                shift = 0 if colors is None else 1
                a.imshow(pal[np.where(arr < 0, 0, arr + shift)])
            a.set_title(title, fontsize=8)
    plt.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def method_table(dense_ok, models=None):
    m = {}
    if dense_ok:
        m["dense"] = lambda img, P, name: dense_crf(img, P)
        m["dense_generic"] = lambda img, P, name: dense_crf(img, P, style="generic")
    m["densecrf"] = lambda img, P, name: pacnd_densecrf(img, P)
    m["densecrf_generic"] = lambda img, P, name: pacnd_densecrf(img, P, style="generic")
    m["pac"] = lambda img, P, name: refine(img, P)
    m["convcrf"] = lambda img, P, name: convcrf_refine(img, P)
    if models:
        m["pac_learned"] = lambda img, P, name: refine(img, P, params=models[name][0])
    return m


MEM_CHILD = r"""
import sys, json, time, numpy as np
sys.path.insert(0, {root!r}); sys.path.insert(0, {bench!r})
import bench_crf as B
img = np.load({img!r}); P = np.load({probs!r})
fn = B.method_table(True)[{method!r}]
fn(img[:64, :64].copy(), np.ascontiguousarray(P[:64, :64]) / P[:64, :64].sum(-1, keepdims=True),
   "")
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
base = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
t = time.perf_counter()
fn(img, P, "")
print(json.dumps(dict(seconds=time.perf_counter() - t, peak_bytes=status("VmHWM") - base)))
"""


def peak_memory(methods, img, P, log):
    """Working memory of one call per method, each in a fresh process."""
    import subprocess

    out = {}
    with tempfile.TemporaryDirectory(prefix="bench_crf_mem_") as tmp:
        np.save(Path(tmp) / "img.npy", img)
        np.save(Path(tmp) / "probs.npy", P)
        for m in methods:
            if m == "pac_learned":
                continue
            code = MEM_CHILD.format(root=str(ROOT), bench=str(ROOT / "benchmarks"),
                                    img=str(Path(tmp) / "img.npy"),
                                    probs=str(Path(tmp) / "probs.npy"), method=m)
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
            if r.returncode == 0:
                out[m] = json.loads(r.stdout.strip().splitlines()[-1])
                log(f"memory {m:16s} {out[m]['peak_bytes'] / 2 ** 20:.0f} MB")
            else:
                log(f"memory {m}: failed: {r.stderr.strip().splitlines()[-1:]}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300, help="training steps per fold")
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=6,
                    help="test seeds 0..N-1 per image and protocol (timing rounds on 0 and 1)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--model-cache", default=None,
                    help="folder to save/re-use the learned fold models")
    ap.add_argument("--no-learning", action="store_true", help="skip the learned PAC-CRF")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite crf.md from crf.json (e.g. after bench_crf_volume.py)")
    args = ap.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.render:
        res = json.loads((out_dir / "crf.json").read_text())
        write_markdown(res, out_dir / "crf.md", res.get("log", []), out_dir)
        return 0
    log_lines = []

    def log(msg):
        print(msg, flush=True)
        log_lines.append(msg)

    dense_ok = have_dense()
    voc = load_voc()
    cases = [(proto, name, img, gt, seed, make_unary(proto, gt, seed))
             for proto in PROTOCOLS for name, img, gt in voc for seed in range(args.seeds)]
    log(f"VOC: {len(voc)} images, {len(cases)} test cases ({', '.join(PROTOCOLS)}); "
        f"pydensecrf: {'yes' if dense_ok else 'NOT INSTALLED'}")
    models = {}
    if not args.no_learning:
        log("learning (leave-one-image-out, blocky unaries) ...")
        models = train_folds(voc, args.steps, args.lr, log, args.model_cache)
    methods = method_table(dense_ok, models)
    for fn in methods.values():  # warm up (JIT caches)
        fn(cases[0][2], cases[0][5], cases[0][1])

    def subset(name):
        return "tuned" if name in TUNED_ON else "held"

    conf = {}
    per_image = {}
    times = {m: [] for m in methods}
    cpu = {m: [] for m in methods}
    preds = {}

    def add(m, proto, name, lab, gt, seed):
        keys = [(m, proto, subset(name)), (m, proto, "all")]
        if seed < 2 and subset(name) == "held":   # the earlier runs' two seeds, for comparison
            keys.append((m, proto, "held_seeds01"))
        for key in keys:
            conf.setdefault(key, np.zeros((L_VOC, L_VOC), np.int64))
            conf[key] += confusion(lab, gt, L_VOC)
        per_image.setdefault((m, proto), []).append(float((lab == gt).mean()))

    for proto, name, img, gt, seed, P in cases:
        add("unary", proto, name, P.argmax(axis=2), gt, seed)
        for rep in range(args.repeats if seed < 2 else 1):
            for m, fn in methods.items():
                if m == "pac_learned" and proto != "blocky":
                    continue
                lab, dt, dc = timed(fn, img, P, name)
                times[m].append((proto, dt))
                cpu[m].append(dc)
                if rep == 0:
                    add(m, proto, name, lab, gt, seed)
                    preds[(name, seed, proto, m)] = lab
    voc_res = {}
    for (m, proto, sub), C in conf.items():
        acc, miou_gt = scores_of(C, gt_classes_only=True)
        voc_res.setdefault(m, {}).setdefault(proto, {})[sub] = {
            "pixel_accuracy": acc, "mIoU_gt_classes": miou_gt, "mIoU": scores_of(C)[1]}
    for m in methods:
        voc_res[m]["median_ms"] = float(np.median([t for _, t in times[m]]) * 1e3)
        voc_res[m]["median_cpu_ms"] = float(np.median(cpu[m]) * 1e3)
    for m in voc_res:
        for proto in PROTOCOLS:
            if proto in voc_res[m]:
                r = voc_res[m][proto]["held"]
                log(f"VOC held-out {proto:6s} {m:16s} acc {r['pixel_accuracy']:.4f} mIoU "
                    f"{r['mIoU_gt_classes']:.4f}")
        if "median_ms" in voc_res[m]:
            log(f"VOC time {m:16s} {voc_res[m]['median_ms']:.0f} ms (cpu "
                f"{voc_res[m]['median_cpu_ms']:.0f} ms)")
    ratios = {}
    if dense_ok:
        for a, b in (("densecrf", "dense"), ("densecrf_generic", "dense_generic"),
                     ("pac", "dense"), ("convcrf", "dense")):
            ratios[f"{a}/{b}"] = voc_res[a]["median_ms"] / voc_res[b]["median_ms"]
            ratios[f"{a}/{b} cpu"] = voc_res[a]["median_cpu_ms"] / voc_res[b]["median_cpu_ms"]
        log("time ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    big = next(c for c in cases if c[2].shape[:2] == (375, 500) and c[0] == "blocky")
    memory = peak_memory([m for m in methods], big[2], big[5], log)

    # ------------------------------------------------------------------ pydensecrf examples
    pde = load_pde()

    def ann_probs(anno, n):
        return unary_from_labels(labels_from_annotation(anno)[0], n, 0.7)

    pde_methods = {
        "unary": lambda img, anno, n: ann_probs(anno, n).argmax(axis=2),
        "pac": lambda img, anno, n: refine(img, anno, kind="labels"),
        "densecrf": lambda img, anno, n: pacnd_densecrf(img, ann_probs(anno, n)),
        "densecrf_generic": lambda img, anno, n: pacnd_densecrf(img, ann_probs(anno, n),
                                                                style="generic"),
        "convcrf": lambda img, anno, n: convcrf_refine(img, anno, kind="labels"),
    }
    if dense_ok:
        pde_methods["dense_rerun"] = lambda img, anno, n: dense_crf(img, ann_probs(anno, n))
    pde_res, pde_preds = {}, {}
    for m, fn in pde_methods.items():
        agree = []
        for name, img, anno, labels, colors, ref in pde:
            n = len(colors)
            lab = fn(img, anno, n)
            pde_preds[(name, m)] = lab
            agree.append((float((lab == ref).mean()), scores_of(confusion(lab, ref, n))[1]))
        pde_res[m] = {"agreement": [a for a, _ in agree], "mIoU_vs_dense": [b for _, b in agree],
                      "mean_agreement": float(np.mean([a for a, _ in agree])),
                      "mean_mIoU_vs_dense": float(np.mean([b for _, b in agree]))}
        log(f"pydensecrf examples {m:16s} agreement with out*.png "
            f"{pde_res[m]['mean_agreement']:.4f} (per image "
            f"{', '.join(f'{a:.4f}' for a in pde_res[m]['agreement'])})")

    # ------------------------------------------------------------------ batch throughput
    from pacnd.cli import main as cli_main

    tmp = Path(tempfile.mkdtemp(prefix="bench_crf_"))
    try:
        (tmp / "img").mkdir()
        (tmp / "sc").mkdir()
        n_batch = 0
        for proto, name, img, gt, seed, P in cases:
            if proto != "blocky":
                continue
            stem = f"{name}_{seed}"
            os.symlink(VOC / f"{name}_0img.png", tmp / "img" / f"{stem}.png")
            np.save(tmp / "sc" / f"{stem}.npy", P)
            n_batch += 1
        cli_main(["crf", "--batch", str(tmp / "img"), str(tmp / "sc"), "-o", str(tmp / "o0"),
                  "-q"])  # warm
        t = time.perf_counter()
        rc = cli_main(["crf", "--batch", str(tmp / "img"), str(tmp / "sc"), "-o",
                       str(tmp / "o1"), "-q"])
        dt = time.perf_counter() - t
        assert rc == 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    batch = {"images": n_batch, "seconds": dt, "images_per_second": n_batch / dt,
             "note": "pacnd crf --batch over VOC images + .npy probabilities (21 labels, "
                     "~16 MB each), reading and writing included"}
    log(f"batch: {n_batch} images in {dt:.2f} s = {n_batch / dt:.2f} images/s")

    # ------------------------------------------------------------------ figure
    rows = []
    for name, proto in (("2007_000332", "blocky"), ("2007_000346", "coarse")):
        img = next(i for n, i, g in voc if n == name)
        gt = next(g for n, i, g in voc if n == name)
        P = next(c[5] for c in cases if c[1] == name and c[4] == 0 and c[0] == proto)
        row = [(f"{name} ({proto})", img, None),
               ("unary %.3f" % (P.argmax(2) == gt).mean(), P.argmax(2), None)]
        for m, title in (("dense", "dense CRF"), ("densecrf", "pacnd.densecrf"),
                         ("pac", "refine"), ("convcrf", "ConvCRF-style")):
            if (name, 0, proto, m) in preds:
                lab = preds[(name, 0, proto, m)]
                row.append((f"{title} {(lab == gt).mean():.3f}", lab, None))
        row.append(("ground truth", gt, None))
        rows.append(row)
    name, img, anno, labels, colors, ref = pde[0]
    row = [(name, img, None), ("annotation (black: unknown)", labels, colors),
           ("dense CRF out1.png", ref, colors)]
    for m, title in (("densecrf", "pacnd.densecrf"), ("pac", "refine")):
        row.append((f"{title} {(pde_preds[(name, m)] == ref).mean():.3f}",
                    pde_preds[(name, m)], colors))
    rows.append(row)
    figure(rows, out_dir / "crf.png")

    # ------------------------------------------------------------------ results
    import numba

    res = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "numba_threads": numba.config.NUMBA_NUM_THREADS,
                    "load_average_at_end": os.getloadavg()},
        "protocol": __doc__,
        "seeds": args.seeds,
        "voc": voc_res,
        "per_image_accuracy": {f"{m}/{p}": v for (m, p), v in per_image.items()},
        "time_ratios": ratios,
        "memory_one_image": memory,
        "learning": {"steps": args.steps, "lr": args.lr, "crop": [192, 192],
                     "folds": {k: {"train_loss_first20": v[1], "train_loss_last20": v[2]}
                               for k, v in models.items()}},
        "pydensecrf_examples": pde_res,
        "batch": batch,
        "log": log_lines,
    }
    with open(out_dir / "crf.json", "w") as f:
        json.dump(res, f, indent=1)
    write_markdown(res, out_dir / "crf.md", log_lines, out_dir)
    return 0


NAMES = {"unary": "unaries (argmax)", "dense": "fully-connected CRF, pydensecrf2 `DenseCRF2D`",
         "dense_generic": "fully-connected CRF, pydensecrf2 `DenseCRF` + `create_pairwise_*`",
         "densecrf": "**pacnd.densecrf** `DenseCRF2D` (same script)",
         "densecrf_generic": "**pacnd.densecrf** `DenseCRF` + `create_pairwise_*`",
         "pac": "**`refine`, defaults**",
         "pac_learned": "PAC-CRF, learned (leave-one-image-out)",
         "convcrf": "ConvCRF-style baseline (`convcrf_refine`)",
         "dense_rerun": "fully-connected CRF, re-run here"}


def _ok(flag):
    return "met" if flag else "**not met**"


def _held(v, sub):
    """``get(method, protocol, 0 | 1)``: pixel accuracy / mIoU of ``v[method][protocol][sub]``."""
    return lambda m, p, k: v[m][p][sub][("pixel_accuracy", "mIoU_gt_classes")[k]]


def _refine_cells(get):
    """Table cells 'protocol metric refine vs dense / convcrf' for every protocol and
    metric, and whether refine is >= both everywhere; ``get(method, protocol, k)`` gives
    accuracy (k=0) or mIoU (k=1), refine's under the name 'pac'."""
    cells, ok = [], True
    for p in PROTOCOLS:
        for k, short in ((0, "acc"), (1, "mIoU")):
            a, d, c = (get(m, p, k) for m in ("pac", "dense", "convcrf"))
            good = a >= max(d, c)
            ok &= good
            cells.append(f"{p} {short} {a:.4f} vs {d:.4f} / {c:.4f}{'' if good else ' (below)'}")
    return cells, ok


def targets(res, out_dir):
    """Lines of the targets table (issue 13) from this run and the tuning/volume results."""
    v = res["voc"]
    lines = ["## Targets", "", "| target | measured (same run) | |", "|---|---|---|"]
    if "dense" in v:
        for a, b in (("densecrf", "dense"), ("densecrf_generic", "dense_generic")):
            accs = [(p, v[a][p]["all"]["pixel_accuracy"], v[b][p]["all"]["pixel_accuracy"])
                    for p in PROTOCOLS]
            ok_acc = all(x >= y for _, x, y in accs)
            r = res["time_ratios"][f"{a}/{b}"]
            rc = res["time_ratios"][f"{a}/{b} cpu"]
            lines.append(
                f"| {NAMES[a]}: pixel accuracy >= pydensecrf2's | " + "; ".join(
                    f"{p} {x:.4f} vs {y:.4f}" for p, x, y in accs) + f" (4 images) | "
                f"{_ok(ok_acc)} |")
            lines.append(f"| {NAMES[a]}: time <= 0.25x pydensecrf2's | {r:.2f}x wall "
                         f"({v[a]['median_ms']:.0f} vs {v[b]['median_ms']:.0f} ms), {rc:.2f}x "
                         f"CPU | {_ok(r <= 0.25)} |")
        cells, ok = _refine_cells(_held(v, "held"))
        lines.append("| `refine` defaults >= fully-connected CRF and ConvCRF-style, every "
                     "protocol, held-out images 2007_000332, 2007_000346 (accuracy and mIoU; "
                     f"this run, seeds 0-{res.get('seeds', 2) - 1}) | " + "; ".join(cells)
                     + f" | {_ok(ok)} |")
        if "held_seeds01" in v["pac"][PROTOCOLS[0]]:
            cells, ok = _refine_cells(_held(v, "held_seeds01"))
            lines.append("| the same, seeds 0-1 only (the earlier runs' cases: 4 per protocol) | "
                         + "; ".join(cells) + f" | {_ok(ok)} |")
    tun = Path(out_dir) / "crf_tuning.json"
    if tun.exists():
        t = json.loads(tun.read_text())
        for fold, fr in t["folds"].items():
            h = fr["held_out_results"]
            if fold == "A" or "shipped" not in h:
                continue
            cells, ok = _refine_cells(
                lambda m, p, k, h=h: h["shipped" if m == "pac" else m][p][k])
            lines.append(f"| the same on fold {fold}'s held-out images {', '.join(fr['held_out'])}"
                         f" (tune_crf.py; these were fold A's tuning images, other seeds) | "
                         + "; ".join(cells) + f" | {_ok(ok)} |")
    vol = Path(out_dir) / "crf_volume.json"
    if vol.exists():
        r = json.loads(vol.read_text())
        if "dense" in r["accuracy"]:
            for m in ("refine", "densecrf"):
                a = r["accuracy"][m]
                d = r["accuracy"]["dense"]
                ok_acc = all(a[p][0] >= d[p][0] for p in a)
                ratio = r["time_ratio_vs_dense"][m]
                lines.append(f"| volumes ({m}): voxel accuracy >= pydensecrf2 N-D, time <= "
                             f"0.25x | " + "; ".join(f"{p} {a[p][0]:.4f} vs {d[p][0]:.4f}"
                                                    for p in a)
                             + f"; time {ratio:.2f}x | {_ok(ok_acc)} / {_ok(ratio <= 0.25)} |")
        big = [s for s in r["scale"] if s["shape"] == [256, 256, 256]]
        for s in big:
            if "error" in s:
                lines.append(f"| 256^3, 8 labels, {s['method']} | failed: {s['error']} | |")
            else:
                lines.append(f"| 256^3, 8 labels, bounded memory ({s['method']}) | "
                             f"{s['seconds']:.0f} s, working memory "
                             f"{s['peak_bytes'] / 2 ** 30:.2f} GB beside "
                             f"{s['inputs_bytes'] / 2 ** 30:.2f} GB of inputs | "
                             f"{'met' if s['method'] != 'dense' else 'reference'} |")
        lines.append("| volumes: a real labelled volume | none available offline (nibabel's "
                     "test anatomy has no labels) | **not met** |")
    return lines + [""]


def write_markdown(res, path, log_lines, out_dir=OUT):
    v = res["voc"]
    ld = ", ".join(f"{x:.1f}" for x in res["machine"]["load_average_at_end"])
    lines = ["# PAC-CRF post-processing and pacnd.densecrf: accuracy and speed", "",
             "Written by `benchmarks/bench_crf.py` (protocols in its docstring). Machine: "
             f"{res['machine']['cpus']} CPUs, shared with other jobs (load average at the end "
             f"{ld}), Numba threads {res['machine']['numba_threads']}. Volumes: "
             "`crf_volume.md`; how refine's defaults were chosen: `crf_tuning.md`.", ""]
    lines += targets(res, out_dir)
    lines += ["### Reading these numbers", "",
              ("* The machine is a 2-core VM; this run had it to itself (other jobs paused), "
               "so pacnd used both Numba threads (wall time) while pydensecrf2 runs on one: "
               "the CPU-time ratios include the second thread's overhead. On a loaded machine "
               "(load average ~50, 2026-12-06 morning) the same comparison gave 0.28x wall."
               if res["machine"]["load_average_at_end"][0] < 3 else
               "* The machine is a 2-core VM shared with other jobs; the load average during "
               "these runs was far above 2, so absolute times are several times those of a "
               "quiet machine and Numba's second thread rarely helped. Ratios come from the "
               "same run with the methods interleaved; CPU-time ratios are given too."),
              "* `refine`'s defaults were chosen on two images (`crf_tuning.md`; both folds of "
              "the search picked the same setting up to the ring width). Over the ConvCRF-style "
              "baseline the margins are small. On fold A's held-out images with the two test "
              "seeds of earlier runs the defaults fell short on one of six cells (mIoU, 'both' "
              "protocol: 0.8055 vs 0.8168); with six seeds (this table) they pass all six, and "
              "on fold B's held-out images they pass all six. Four images show "
              "that the new mapping is about as good as the best baseline on these protocols "
              "and clearly better than the fully-connected CRF, not that it is better in "
              "general.",
              "* `pacnd.densecrf` maps the fully-connected CRF literally (its purpose is to "
              "reproduce pydensecrf), so its accuracy sits between the fully-connected CRF and "
              "`refine`.", ""]
    if not res["learning"]["folds"]:
        lines += ["(The learned PAC-CRF was skipped in this run, `--no-learning`: leave-one-image-"
                  "out training takes ~35 min on this loaded machine; the last run with it is in "
                  "the history of this file.)", ""]
    for sub, title in (("held", "held-out images 2007_000332, 2007_000346"),
                       ("all", "all four images (2007_000033 and 2007_000129 were used for "
                               "tuning refine, with other seeds)")):
        lines += [f"## VOC 2007, corrupted ground truth, {title}", "",
                  f"Pixel accuracy / mIoU over the ground-truth classes (seeds 0-"
                  f"{res.get('seeds', 2) - 1}).", "",
                  "| method | " + " | ".join(PROTOCOLS) + " | median time / image | CPU time |",
                  "|---|" + "---|" * len(PROTOCOLS) + "---|---|"]
        for m, r in v.items():
            cells = [f"{r[p][sub]['pixel_accuracy']:.4f} / {r[p][sub]['mIoU_gt_classes']:.4f}"
                     if p in r else "-" for p in PROTOCOLS]
            t = f"{r['median_ms']:.0f} ms" if "median_ms" in r else "-"
            c = f"{r['median_cpu_ms']:.0f} ms" if "median_cpu_ms" in r else "-"
            lines.append(f"| {NAMES.get(m, m)} | " + " | ".join(cells) + f" | {t} | {c} |")
        lines.append("")
    if res["time_ratios"]:
        lines += ["Time ratios (median wall / CPU, same run, methods interleaved): "
                  + ", ".join(f"{k} {x:.2f}" for k, x in res["time_ratios"].items()) + ".", ""]
    if res["memory_one_image"]:
        lines += ["Working memory of one call on a 500x375 image with 21 labels (fresh process): "
                  + ", ".join(f"{NAMES.get(m, m)} {r['peak_bytes'] / 2 ** 20:.0f} MB"
                              for m, r in res["memory_one_image"].items()) + ".", ""]
    lines += ["## pydensecrf examples: agreement with the fully-connected CRF's output", "",
              "Unaries from the colour annotations (gt_prob 0.7). No ground truth exists: the "
              "numbers are pixel agreement (and mIoU) with `out*.png`, the dense CRF's own "
              "result.", "",
              "| method | mean agreement | per image | mean mIoU vs out*.png |",
              "|---|---|---|---|"]
    for m, r in res["pydensecrf_examples"].items():
        lines.append(f"| {NAMES.get(m, m)} | {r['mean_agreement']:.4f} | "
                     f"{', '.join(f'{a:.4f}' for a in r['agreement'])} | "
                     f"{r['mean_mIoU_vs_dense']:.4f} |")
    b = res["batch"]
    lines += ["", "## Batch throughput", "",
              f"`pacnd crf --batch`: {b['images']} VOC images in {b['seconds']:.2f} s = "
              f"**{b['images_per_second']:.2f} images/s** ({b['note']}).", ""]
    if res["learning"]["folds"]:
        lines += ["## Learning", "",
                  f"{res['learning']['steps']} Adam steps per fold (relative lr "
                  f"{res['learning']['lr']}), 192x192 crops; training loss (mean of first / "
                  "last 20 steps):", ""]
        for k, f in res["learning"]["folds"].items():
            lines.append(f"- held out {k}: {f['train_loss_first20']:.4f} -> "
                         f"{f['train_loss_last20']:.4f}")
    lines += ["", "Figure: `crf.png` (rows: two held-out VOC images, one pydensecrf example).",
              "", "## Log", "", "```"] + log_lines + ["```", ""]
    Path(path).write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
