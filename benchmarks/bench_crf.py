"""PAC-CRF post-processing vs the fully-connected CRF (pydensecrf) and a ConvCRF baseline.

Run: ``python benchmarks/bench_crf.py`` (writes ``benchmarks/results/crf.{json,md,png}``).
Needs the sample data (``../shared/data``) and, for the fully-connected CRF,
``pip install pydensecrf2`` (a benchmark-only dependency; without it that
column is left out).

Protocols
---------
VOC 2007 (4 images with ground truth, 21 classes). Unaries are made from the
ground truth, seeded (``corrupt``):

1. one-hot labels, area-averaged onto a grid 8x coarser (ceil);
2. blocky label noise: random squares of 1-3 coarse cells (8-24 px) are set
   to one label — half of them a label present in the image, half any of
   the 21 — until 10 % of the coarse cells are covered;
3. bilinear upsampling back to full size (boundaries off by up to ~4 px,
   small parts lost), plus i.i.d. Gaussian noise (sigma 0.1) per pixel and
   label;
4. softmax with temperature 0.25 -> probabilities.

Test unaries use seeds 0 and 1 for every image (8 cases). Metrics: pixel
accuracy and mIoU from the confusion matrix summed over the 8 cases (classes
that occur in the ground truth or a prediction). The learned PAC-CRF is
trained leave-one-image-out (4 folds): on the other 3 images with unaries of
seeds 100+ (4 per image), random 192x192 crops and flips, and evaluated on
the held-out image's test unaries only.

pydensecrf examples (3 photos with rough colour annotations, black =
unknown, no ground truth). Unaries from the annotations with gt_prob 0.7
(pydensecrf's own example). There is nothing true to compare with, so what is
measured is agreement with the fully-connected CRF's result ``out*.png``
(pixel agreement and mIoU against it): how well each method reproduces the
dense CRF that users of these parameters expect.

Timing: each method runs on every image in turn (methods alternated so they
see the same machine load), 3 repeats, median wall time; process CPU time
(all threads) too. pacnd's kernels use Numba's threads (2 here);
pydensecrf is single-threaded — the PAC-CRF is also timed with one thread.
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

from pacnd.crf import (convcrf_refine, dense_crf_mapping, fit_crf,  # noqa: E402
                       labels_from_annotation, learnable, read_label_image, refine,
                       unary_from_labels)

DATA = ROOT.parent / "shared" / "data"
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


def corrupt(gt, seed, L=L_VOC, factor=8, noise_frac=0.1, pixel_noise=0.1, T=0.25):
    """Seeded corrupted-ground-truth probabilities (H, W, L) float32 (see the module doc)."""
    rng = np.random.default_rng(seed)
    H, W = gt.shape
    h, w = -(-H // factor), -(-W // factor)
    valid = (gt >= 0) & (gt < L)
    onehot = np.zeros((L, h * factor, w * factor))
    yy, xx = np.nonzero(valid)
    onehot[gt[valid], yy, xx] = 1
    coarse = onehot.reshape(L, h, factor, w, factor).sum(axis=(2, 4))
    s = coarse.sum(axis=0, keepdims=True)
    coarse = np.where(s > 0, coarse / np.maximum(s, 1), 1.0 / L)
    present = np.unique(gt[valid])
    covered = np.zeros((h, w), bool)
    while covered.mean() < noise_frac:
        sz = int(rng.integers(1, 4))
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        lab = rng.choice(present) if rng.random() < 0.5 else int(rng.integers(0, L))
        coarse[:, y:y + sz, x:x + sz] = 0
        coarse[lab, y:y + sz, x:x + sz] = 1
        covered[y:y + sz, x:x + sz] = True

    def table(n_in, n_out):
        src = np.clip((np.arange(n_out) + 0.5) / factor - 0.5, 0, n_in - 1)
        i0 = np.floor(src).astype(int)
        return i0, np.minimum(i0 + 1, n_in - 1), src - i0

    y0, y1, ly = table(h, H)
    x0, x1, lx = table(w, W)
    c = coarse[:, y0] * (1 - ly)[None, :, None] + coarse[:, y1] * ly[None, :, None]
    score = c[:, :, x0] * (1 - lx) + c[:, :, x1] * lx
    score = score + rng.normal(0, pixel_noise, score.shape)
    z = score / T
    e = np.exp(z - z.max(axis=0, keepdims=True))
    P = e / e.sum(axis=0, keepdims=True)
    return np.ascontiguousarray(P.transpose(1, 2, 0), dtype=np.float32)


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
def dense_crf(img, P, iterations=5):
    import pydensecrf.densecrf as dcrf

    H, W, L = P.shape
    d = dcrf.DenseCRF2D(W, H, L)
    U = -np.log(np.clip(P, 1e-5, None)).transpose(2, 0, 1).reshape(L, -1)
    d.setUnaryEnergy(np.ascontiguousarray(U, dtype=np.float32))
    d.addPairwiseGaussian(sxy=3, compat=3)
    rgb = np.array(img, dtype=np.uint8, order="C")  # pydensecrf needs a writable buffer
    d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=rgb, compat=10)
    Q = np.asarray(d.inference(iterations)).reshape(L, H, W)
    return Q.argmax(axis=0)


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
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300, help="training steps per fold")
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--model-cache", default=None,
                    help="folder to save/re-use the learned fold models")
    args = ap.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_lines = []

    def log(msg):
        print(msg, flush=True)
        log_lines.append(msg)

    dense_ok = have_dense()
    voc = load_voc()
    cases = [(name, img, gt, seed, corrupt(gt, seed)) for name, img, gt in voc for seed in (0, 1)]
    log(f"VOC: {len(voc)} images, {len(cases)} test cases; pydensecrf: "
        f"{'yes' if dense_ok else 'NOT INSTALLED'}")

    log("learning (leave-one-image-out) ...")
    models = train_folds(voc, args.steps, args.lr, log, args.model_cache)

    methods = {
        "pac": lambda img, P, name: refine(img, P),
        "pac_reach1": lambda img, P, name: refine(img, P, reach=1.0),
        "pac_learned": lambda img, P, name: refine(img, P, params=models[name][0]),
        "convcrf": lambda img, P, name: convcrf_refine(img, P),
    }
    if dense_ok:
        methods = {"dense": lambda img, P, name: dense_crf(img, P), **methods}
    # warm up (JIT caches)
    for fn in methods.values():
        fn(cases[0][1], cases[0][4], cases[0][0])

    conf = {m: np.zeros((L_VOC, L_VOC), np.int64) for m in ["unary", *methods]}
    per_image = {m: [] for m in conf}
    times = {m: [] for m in methods}
    cpu = {m: [] for m in methods}
    preds = {}
    for name, img, gt, seed, P in cases:
        u = P.argmax(axis=2)
        conf["unary"] += confusion(u, gt, L_VOC)
        per_image["unary"].append(float((u == gt).mean()))
        for rep in range(args.repeats):
            for m, fn in methods.items():
                lab, dt, dc = timed(fn, img, P, name)
                times[m].append((img.shape[:2], dt))
                cpu[m].append(dc)
                if rep == 0:
                    conf[m] += confusion(lab, gt, L_VOC)
                    per_image[m].append(float((lab == gt).mean()))
                    preds[(name, seed, m)] = lab
    # one-thread timing of the training-free PAC-CRF (pydensecrf is single-threaded)
    set_threads(1)
    t1 = []
    for name, img, gt, seed, P in cases:
        for _ in range(args.repeats):
            t1.append(timed(refine, img, P)[1])
    import numba
    set_threads(numba.config.NUMBA_NUM_THREADS)

    voc_res = {}
    for m in conf:
        acc, miou = scores_of(conf[m])
        row = {"pixel_accuracy": acc, "mIoU": miou,
               "mIoU_gt_classes": scores_of(conf[m], gt_classes_only=True)[1],
               "per_image_accuracy": per_image[m]}
        if m in times:
            ts = np.array([t for _, t in times[m]])
            big = np.array([t for s, t in times[m] if s == (375, 500)])
            row.update(median_ms=float(np.median(ts) * 1e3),
                       median_ms_500x375=float(np.median(big) * 1e3) if big.size else None,
                       median_cpu_ms=float(np.median(cpu[m]) * 1e3))
        voc_res[m] = row
    voc_res["pac"]["median_ms_1thread"] = float(np.median(t1) * 1e3)
    for m, r in voc_res.items():
        log(f"VOC {m:12s} acc {r['pixel_accuracy']:.4f} mIoU {r['mIoU']:.4f} "
            f"(GT classes {r['mIoU_gt_classes']:.4f})"
            + (f"  {r['median_ms']:.0f} ms (cpu {r['median_cpu_ms']:.0f} ms)"
               if "median_ms" in r else ""))

    # ------------------------------------------------------------------ pydensecrf examples
    pde = load_pde()
    pde_methods = {
        "unary": lambda img, anno, n: unary_from_labels(
            labels_from_annotation(anno)[0], n, 0.7).argmax(axis=2),
        "pac": lambda img, anno, n: refine(img, anno, kind="labels"),
        "pac_reach1": lambda img, anno, n: refine(img, anno, kind="labels", reach=1.0),
        "convcrf": lambda img, anno, n: convcrf_refine(img, anno, kind="labels"),
    }
    if dense_ok:
        pde_methods["dense_rerun"] = lambda img, anno, n: dense_crf(
            img, unary_from_labels(labels_from_annotation(anno)[0], n, 0.7))
    pde_res = {}
    pde_preds = {}
    for m, fn in pde_methods.items():
        agree = []
        for name, img, anno, labels, colors, ref in pde:
            n = len(colors)
            lab = fn(img, anno, n)
            pde_preds[(name, m)] = lab
            agree.append(float((lab == ref).mean()))
            C = confusion(lab, ref, n)
            _, miou = scores_of(C)
            agree[-1] = (agree[-1], miou)
        pde_res[m] = {"agreement": [a for a, _ in agree], "mIoU_vs_dense": [b for _, b in agree],
                      "mean_agreement": float(np.mean([a for a, _ in agree])),
                      "mean_mIoU_vs_dense": float(np.mean([b for _, b in agree]))}
        log(f"pydensecrf examples {m:12s} agreement with out*.png "
            f"{pde_res[m]['mean_agreement']:.4f} (per image "
            f"{', '.join(f'{a:.4f}' for a in pde_res[m]['agreement'])})")

    # ------------------------------------------------------------------ batch throughput
    from pacnd.cli import main as cli_main

    tmp = Path(tempfile.mkdtemp(prefix="bench_crf_"))
    try:
        (tmp / "img").mkdir()
        (tmp / "sc").mkdir()
        n_batch = 0
        for name, img, gt, seed, P in cases:
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
    for name, seed in (("2007_000129", 0), ("2007_000346", 0)):
        img = next(i for n, i, g in voc if n == name)
        gt = next(g for n, i, g in voc if n == name)
        P = next(p for n, i, g, s, p in cases if n == name and s == seed)
        row = [(name, img, None), ("unary %.3f" % (P.argmax(2) == gt).mean(), P.argmax(2), None)]
        for m, title in (("dense", "dense CRF"), ("pac", "PAC-CRF (no training)"),
                         ("pac_learned", "PAC-CRF (learned)"), ("convcrf", "ConvCRF-style")):
            if (name, seed, m) in preds:
                lab = preds[(name, seed, m)]
                row.append((f"{title} {(lab == gt).mean():.3f}", lab, None))
        row.append(("ground truth", gt, None))
        rows.append(row)
    name, img, anno, labels, colors, ref = pde[1]
    row = [(name, img, None), ("annotation (black: unknown)", labels, colors),
           ("dense CRF out2.png", ref, colors)]
    row.append((f"PAC-CRF {(pde_preds[(name, 'pac')] == ref).mean():.3f}",
                pde_preds[(name, "pac")], colors))
    row.append((f"ConvCRF-style {(pde_preds[(name, 'convcrf')] == ref).mean():.3f}",
                pde_preds[(name, "convcrf")], colors))
    rows.append(row)
    figure(rows, out_dir / "crf.png")

    # ------------------------------------------------------------------ results
    import numba

    dense_ms = voc_res.get("dense", {}).get("median_ms")
    res = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "numba_threads": numba.config.NUMBA_NUM_THREADS,
                    "load_average_at_end": os.getloadavg()},
        "protocol": __doc__,
        "voc": voc_res,
        "learning": {"steps": args.steps, "lr": args.lr, "crop": [192, 192],
                     "folds": {k: {"train_loss_first20": v[1], "train_loss_last20": v[2]}
                               for k, v in models.items()}},
        "pydensecrf_examples": pde_res,
        "batch": batch,
        "speed_ratio_pac_vs_dense": (voc_res["pac"]["median_ms"] / dense_ms) if dense_ms
        else None,
    }
    with open(out_dir / "crf.json", "w") as f:
        json.dump(res, f, indent=1)
    write_markdown(res, out_dir / "crf.md", log_lines)
    return 0


NAMES = {"unary": "unaries (argmax)", "dense": "fully-connected CRF (pydensecrf2)",
         "pac": "**PAC-CRF, training-free** (`refine`, defaults)",
         "pac_reach1": "PAC-CRF, training-free, `reach=1`",
         "pac_learned": "**PAC-CRF, learned** (leave-one-image-out)",
         "convcrf": "ConvCRF-style baseline (`convcrf_refine`)",
         "dense_rerun": "fully-connected CRF, re-run here"}


def write_markdown(res, path, log_lines):
    v = res["voc"]
    lines = ["# PAC-CRF post-processing: accuracy and speed", "",
             "Written by `benchmarks/bench_crf.py` (protocols in its docstring). "
             f"Machine: {res['machine']['cpus']} CPUs (shared; load average at the end "
             f"{', '.join(f'{x:.1f}' for x in res['machine']['load_average_at_end'])}), "
             f"Numba threads {res['machine']['numba_threads']}.", "",
             "## VOC 2007, corrupted ground-truth unaries (4 images x 2 seeds, 21 classes)", "",
             "| method | pixel acc | mIoU | mIoU (GT classes) | median time / image | CPU time "
             "| 500x375 image |",
             "|---|---|---|---|---|---|---|"]
    for m, r in v.items():
        t = f"{r['median_ms']:.0f} ms" if "median_ms" in r else "-"
        c = f"{r['median_cpu_ms']:.0f} ms" if "median_cpu_ms" in r else "-"
        b = (f"{r['median_ms_500x375']:.0f} ms" if r.get("median_ms_500x375") else "-")
        lines.append(f"| {NAMES.get(m, m)} | {r['pixel_accuracy']:.4f} | {r['mIoU']:.4f} | "
                     f"{r['mIoU_gt_classes']:.4f} | {t} | {c} | {b} |")
    if res.get("speed_ratio_pac_vs_dense"):
        lines += ["", f"Training-free PAC-CRF time / fully-connected CRF time: "
                      f"**{res['speed_ratio_pac_vs_dense']:.2f}** (median wall time, 2 threads; "
                      f"with one Numba thread the PAC-CRF takes "
                      f"{v['pac']['median_ms_1thread']:.0f} ms)."]
    lines += ["", "Per-image accuracy (seed 0, seed 1 of each image):", ""]
    for m, r in v.items():
        lines.append(f"- {m}: " + ", ".join(f"{a:.3f}" for a in r["per_image_accuracy"]))
    lines += ["", "## pydensecrf examples: agreement with the fully-connected CRF's output", "",
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
              f"**{b['images_per_second']:.2f} images/s** ({b['note']}).", "",
              "## Learning", "",
              f"{res['learning']['steps']} Adam steps per fold (relative lr "
              f"{res['learning']['lr']}), 192x192 crops; training loss (mean of first / last 20 "
              "steps):", ""]
    for k, f in res["learning"]["folds"].items():
        lines.append(f"- held out {k}: {f['train_loss_first20']:.4f} -> "
                     f"{f['train_loss_last20']:.4f}")
    lines += ["", "Figure: `crf.png` (rows: two VOC images, one pydensecrf example).", "",
              "## Log", "", "```"] + log_lines + ["```", ""]
    Path(path).write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
