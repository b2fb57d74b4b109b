"""Deep joint upsampling benchmarks: accuracy table, JBU tuning, CPU time and memory.

    python benchmarks/bench_upsampling.py --eval [--models-dir DIR]
        (results/upsampling_single_scene.md; the held-out evaluation over many scenes,
        results/upsampling_eval.md, is benchmarks/upsampling_heldout.py's)
        RMSE (depth, Middlebury 2003 Cones view 2 = im2/disp2, never trained on)
        and EPE (flow, MPI-Sintel clean alley_1 frame 2, never trained on) at
        4x / 8x / 16x for bicubic, bilinear, JBU, DJF, PAC and PAC-lite.
        Learned models are read from DIR (default benchmarks/results/upsampling_models/,
        written by scripts/train_pretrained.py) or, for the standard PAC, from the
        weights shipped in pacnd/data/weights/.
    python benchmarks/bench_upsampling.py --tune-jbu
        Grid search of the JBU parameters on training data only (Cones view 6,
        synthetic flow scenes).
    python benchmarks/bench_upsampling.py --memory
        Standard 8x network, CPU: inference on one 480x640 image (time, peak
        memory) and one training step on a 256x256 crop (time, peak memory),
        each measured in a fresh child process (peak RSS above the post-warm-up
        baseline, via /proc/self/clear_refs + VmHWM; plus the tracemalloc peak
        of NumPy allocations).

Protocol (the reference's): depth low-res by nearest "center" subsampling,
unknown low-res samples filled with the nearest known one, RMSE in disparity
pixels over known ground-truth pixels with a 6-pixel border left out; flow
low-res by antialiased bilinear downsampling, EPE in pixels over valid pixels
(Sintel's invalid mask), no border. Images are centre-cropped to a multiple of
16 (Cones 368x448, alley_1 432x1024) so every factor sees the same pixels.
Results go to benchmarks/results/upsampling_*.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# time the compiled kernels: compile them in-process at the first (warm-up) call instead
# of serving first calls with the reference engine (pacnd/engines/cpu/coldstart.py)
os.environ.setdefault("PACND_JIT", "eager")

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
DATA = os.environ.get("PACND_SHARED_DATA", os.path.join(os.path.dirname(REPO), "shared", "data"))
CONES = os.path.join(DATA, "middlebury2003", "cones")
ALLEY = os.path.join(DATA, "sintel", "alley_1")
FACTORS = (4, 8, 16)


# ------------------------------------------------------------------------------- data
def cones_view(view):
    from pacnd.data.io import read_image, read_middlebury_disparity

    return (read_image(os.path.join(CONES, f"im{view}.png")),
            read_middlebury_disparity(os.path.join(CONES, f"disp{view}.png")))


def alley():
    from pacnd.data.io import read_flow, read_image

    rgb = read_image(os.path.join(ALLEY, "frame_0002.png"))
    flow = read_flow(os.path.join(ALLEY, "gt_frame_0002.flo"))
    inv = os.path.join(ALLEY, "gt_invalid_frame_0002.png")
    if os.path.exists(inv):
        from PIL import Image
        with Image.open(inv) as im:
            bad = np.asarray(im) > 0
        flow = flow.copy()
        flow[bad] = np.nan
    return rgb, flow


def examples(task, factor):
    from pacnd.data import JointUpsamplingPairs

    pair = cones_view(2) if task == "depth" else alley()
    ds = JointUpsamplingPairs([pair], factor, kind=task, crop=None)
    return list(ds.examples(multiple=16))


# ------------------------------------------------------------------------------- eval
def _learned(models_dir, name, task, factor):
    from pacnd.models import load_upsampler, pretrained

    p = os.path.join(models_dir, f"{task}_x{factor}_{name}.npz")
    if os.path.exists(p):
        return load_upsampler(p), os.path.relpath(p, REPO)
    if name == "pac":
        try:
            return pretrained(task, factor), f"pacnd/data/weights/{task}_x{factor}.npz"
        except FileNotFoundError:
            return None, None
    return None, None


def run_eval(models_dir, factors=FACTORS, tasks=("depth", "flow")):
    from pacnd.models import baseline, evaluate_upsampler

    rows = []
    for task in tasks:
        for factor in factors:
            exs = examples(task, factor)
            H, W = exs[0]["raw"].shape[-2:]
            for name in ("bicubic", "bilinear", "jbu", "djf", "pac_lite", "pac"):
                if name in ("bicubic", "bilinear", "jbu"):
                    model, src = baseline(name, task, factor), "training-free"
                else:
                    model, src = _learned(models_dir, name, task, factor)
                    if model is None:
                        continue
                t0 = time.perf_counter()
                val = evaluate_upsampler(model, exs, kind=task)
                secs = time.perf_counter() - t0
                rows.append({"task": task, "factor": factor, "model": name,
                             "metric": "rmse" if task == "depth" else "epe", "value": val,
                             "seconds": round(secs, 2), "image": f"{W}x{H}", "weights": src,
                             "params": model.num_parameters(),
                             "trained": (model.meta.get("training", {}) or {}).get("summary")
                             if getattr(model, "meta", None) else None})
                print(f"{task:5s} x{factor:<2d} {name:9s} {rows[-1]['metric'].upper()} "
                      f"{val:8.4f}   ({secs:.1f} s)", flush=True)
    return rows


def write_eval(rows):
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "upsampling_single_scene.json"), "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1)
    names = {"bicubic": "Bicubic", "bilinear": "Bilinear", "jbu": "JBU", "djf": "DJF",
             "pac_lite": "PAC-lite", "pac": "PAC"}
    lines = ["# Deep joint upsampling: accuracy", "",
             "Depth: RMSE (disparity px) on Middlebury 2003 Cones **view 2** (im2/disp2, "
             "368x448 centre crop, 6-px border out, known pixels only) — the learned models "
             "saw view 6 and synthetic scenes, never view 2. Flow: EPE (px) on MPI-Sintel "
             "clean **alley_1** frame 2 (432x1024 centre crop, valid pixels) — the flow "
             "models were trained on synthetic scenes only.", ""]
    for task in ("depth", "flow"):
        sub = [r for r in rows if r["task"] == task]
        if not sub:
            continue
        facs = sorted({r["factor"] for r in sub})
        metric = "RMSE" if task == "depth" else "EPE"
        lines += [f"## {task} ({metric}, lower is better)", "",
                  "| method | params | " + " | ".join(f"{f}x" for f in facs) + " |",
                  "|---|---:|" + "---:|" * len(facs)]
        for name in names:
            vals = {r["factor"]: r for r in sub if r["model"] == name}
            if not vals:
                continue
            ps = sorted({v["params"] for v in vals.values()})
            params = " / ".join(f"{vals[f]['params']:,}" for f in facs if f in vals) \
                if len(ps) > 1 else f"{ps[0]:,}"
            cells = [f"{vals[f]['value']:.3f}" if f in vals else "—" for f in facs]
            lines.append(f"| {names[name]} | {params} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Figures (`pacnd upsample predict ... --figure`): "
              "`upsampling_depth_x8_cones2.png`, `upsampling_depth_x16_cones2.png`, "
              "`upsampling_flow_x8_alley1.png`.", "",
              "JBU: normalised PAC^T with a Gaussian on (RGB/sigma_color, y/s, x/s), parameters "
              "tuned on training data only (`upsampling_jbu_tuning.json`). Bicubic/bilinear "
              "sample positions follow the low-res convention (depth: 'center', flow: "
              "'area').", "", "## How the learned models were trained", ""]
    seen = set()
    for r in rows:
        key = (r["task"], r["factor"], r["model"])
        if r.get("trained") and key not in seen:
            seen.add(key)
            lines.append(f"- {names[r['model']]} {r['task']} x{r['factor']} "
                         f"(`{r['weights']}`): {r['trained']}")
    lines.append("")
    with open(os.path.join(RESULTS, "upsampling_single_scene.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


# ------------------------------------------------------------------------------- JBU tuning
def tune_jbu(factors=FACTORS):
    from pacnd.models import JointBilateralUpsample, evaluate_upsampler
    from pacnd.data import JointUpsamplingPairs, synthetic_scene

    grid_s = (0.5, 0.75, 1.0, 1.5)
    grid_c = (0.03, 0.05, 0.1, 0.2)
    out = {}
    flows = [synthetic_scene(1000 + s, (256, 256), "flow") for s in range(4)]
    for task in ("depth", "flow"):
        pairs = [cones_view(6)] if task == "depth" else flows
        out[task] = {}
        for factor in factors:
            exs = list(JointUpsamplingPairs(pairs, factor, kind=task, crop=None).examples(
                multiple=16))
            best = None
            for ss in grid_s:
                for sc in grid_c:
                    m = JointBilateralUpsample(factor, sigma_spatial=ss, sigma_color=sc)
                    v = evaluate_upsampler(m, exs, kind=task)
                    if best is None or v < best[0]:
                        best = (v, ss, sc)
            out[task][factor] = {"sigma_spatial": best[1], "sigma_color": best[2],
                                 "train_metric": best[0]}
            print(f"{task} x{factor}: sigma_spatial={best[1]} sigma_color={best[2]} "
                  f"(training-data {'RMSE' if task == 'depth' else 'EPE'} {best[0]:.4f})",
                  flush=True)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "upsampling_jbu_tuning.json"), "w", encoding="utf-8") as f:
        json.dump({"grid": {"sigma_spatial": grid_s, "sigma_color": grid_c}, "best": out}, f,
                  indent=1)
    return out


# ------------------------------------------------------------------------------- memory
_CHILD = r'''
import gc, json, os, sys, time, tracemalloc
import numpy as np

def rss():
    with open("/proc/self/status") as f:
        d = dict(l.split(":", 1) for l in f if ":" in l)
    return int(d["VmRSS"].split()[0]) * 1024, int(d["VmHWM"].split()[0]) * 1024

def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

import pacnd
from pacnd import functional as F
from pacnd.autograd import Tensor, no_grad
from pacnd.models import PacJointUpsample, upsampling_loss
mode, H, W, engine = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
m = PacJointUpsample(8, rng=0)
rng = np.random.default_rng(0)
if engine == "torch":
    # the same network in PyTorch, computed the reference implementation's way
    import torch
    sys.path.insert(0, os.path.join(os.getcwd(), "benchmarks"))
    from torch_pac_net import check_against, from_pacnd
    check_against(m, rng.random((1, 1, 8, 8)).astype(np.float32),
                  rng.random((1, 3, 64, 64)).astype(np.float32))
    tm = from_pacnd(m)
else:
    pacnd.set_engine(engine)

def batch(h, w):
    return {"low": rng.random((1, 1, h // 8, w // 8)).astype(np.float32),
            "guide": rng.random((1, 3, h, w)).astype(np.float32),
            "target": rng.random((1, 1, h, w)).astype(np.float32),
            "mask": np.ones((1, 1, h, w), np.float32)}

def run_torch(b):
    t = {k: torch.from_numpy(v) for k, v in b.items()}
    if mode == "forward":
        with torch.no_grad():
            return tm(t["low"], t["guide"])
    tm.zero_grad(set_to_none=True)
    d = (tm(t["low"], t["guide"]) - t["target"]) * t["mask"]
    loss = (d[..., 6:-6, 6:-6] ** 2).mean()
    loss.backward()
    return loss

def run(b):
    if engine == "torch":
        return run_torch(b)
    if mode == "forward":
        with no_grad():
            return m(b["low"], b["guide"])
    for p in m.parameters():
        p.grad = None
    loss, _ = upsampling_loss(m, b, border=6)
    loss.backward()
    return loss

run(batch(64, 64))          # JIT warm-up on a small input
b = batch(H, W)
gc.collect()
base, _ = rss()
reset_peak()
tracemalloc.start()
times = []
for i in range(int(sys.argv[5])):
    t0 = time.perf_counter()
    out = run(b)
    times.append(time.perf_counter() - t0)
    del out
    gc.collect()
_, np_peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
_, hwm = rss()
print(json.dumps({"mode": mode, "H": H, "W": W, "engine": engine,
                  "seconds": times, "seconds_best": min(times),
                  "peak_rss_above_baseline_MB": (hwm - base) / 2**20,
                  "tracemalloc_peak_MB": np_peak / 2**20,
                  "baseline_rss_MB": base / 2**20}))
'''


def _torch_available():
    try:
        import torch  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def run_memory(engine="numba", repeats=3):
    """Each row in a fresh child process: pacnd on ``engine`` and, where PyTorch is
    installed, the same network in PyTorch computed the reference's way
    (``benchmarks/torch_pac_net.py``: full-size unfold columns), same machine,
    same run."""
    res = []
    libs = [engine] + (["torch"] if _torch_available() else [])
    if len(libs) == 1:
        print("PyTorch is not installed: no baseline rows (pip install torch)", flush=True)
    for mode, H, W in (("forward", 480, 640), ("train_step", 256, 256),
                       ("forward+backward", 480, 640)):
        m = "train" if mode != "forward" else "forward"
        for lib in libs:
            r = subprocess.run([sys.executable, "-c", _CHILD, m, str(H), str(W), lib,
                                str(repeats)], capture_output=True, text=True, cwd=REPO,
                               timeout=1800)
            if r.returncode != 0:
                raise RuntimeError(r.stderr)
            row = json.loads(r.stdout.strip().splitlines()[-1])
            row["mode"] = mode
            row["library"] = "pytorch (reference method)" if lib == "torch" else "pacnd"
            res.append(row)
            print(f"{row['library']:27s} {mode:17s} {W}x{H}: best {row['seconds_best']:.2f} s, "
                  f"peak RSS +{row['peak_rss_above_baseline_MB']:.0f} MB", flush=True)
    for r in res:
        if r["library"] == "pacnd":
            base = [b for b in res if b["mode"] == r["mode"] and b["library"] != "pacnd"]
            if base:
                r["time_ratio_vs_pytorch"] = r["seconds_best"] / base[0]["seconds_best"]
                r["memory_ratio_vs_pytorch"] = (r["peak_rss_above_baseline_MB"]
                                                / base[0]["peak_rss_above_baseline_MB"])
    info = {"machine": f"{os.cpu_count()} CPU cores",
            "numba_threads": os.environ.get("NUMBA_NUM_THREADS", "default"),
            "model": "PacJointUpsample(8) standard, 221,937 parameters", "rows": res,
            "reference_anchor": "the authors' PyTorch code needs ~2.5 GB forward and ~4.4 GB "
                                "forward+backward for a 480x640 image"}
    try:
        with open("/proc/loadavg", encoding="utf-8") as f:
            info["load_average_after"] = f.read().split()[:3]
    except OSError:
        pass
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "upsampling_memory.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    lines = ["# Deep joint upsampling: CPU time and memory", "",
             f"Standard 8x PAC network (221,937 parameters), engine `{engine}`, "
             f"{info['machine']}; load average after the runs: "
             f"{' '.join(info.get('load_average_after', ['?']))}. Peak memory = peak RSS "
             "above the post-warm-up baseline (fresh child process per row); the reference "
             "PyTorch code needs ~2.5 GB forward / ~4.4 GB forward+backward at 480x640.", "",
             "| what | input | library | time (best of runs) | peak memory | "
             "time / PyTorch | memory / PyTorch |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in res:
        tr = r.get("time_ratio_vs_pytorch")
        mr = r.get("memory_ratio_vs_pytorch")
        lines.append(f"| {r['mode']} | {r['W']}x{r['H']} | {r['library']} | "
                     f"{r['seconds_best']:.2f} s | {r['peak_rss_above_baseline_MB']:.0f} MB | "
                     f"{'' if tr is None else f'{tr:.2f}x'} | "
                     f"{'' if mr is None else f'{mr:.2f}x'} |")
    lines += ["", "PyTorch rows: `benchmarks/torch_pac_net.py`, the same network and weights "
              "computed the way the authors' `pac.py` does it (zero-inserted input unfolded into "
              "full-size columns, times K, one matmul; autograd backward), checked to match "
              "pacnd's output before timing; PyTorch uses all cores."]
    with open(os.path.join(RESULTS, "upsampling_memory.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval", action="store_true")
    ap.add_argument("--tune-jbu", action="store_true")
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--models-dir", default=os.path.join(RESULTS, "upsampling_models"))
    ap.add_argument("--factors", type=int, nargs="+", default=list(FACTORS))
    ap.add_argument("--tasks", nargs="+", default=["depth", "flow"])
    ap.add_argument("--engine", default="numba")
    args = ap.parse_args(argv)
    if not (args.eval or args.tune_jbu or args.memory):
        ap.error("choose --eval, --tune-jbu and/or --memory")
    if args.tune_jbu:
        tune_jbu(args.factors)
    if args.eval:
        write_eval(run_eval(args.models_dir, args.factors, args.tasks))
    if args.memory:
        run_memory(args.engine)


if __name__ == "__main__":
    main()
