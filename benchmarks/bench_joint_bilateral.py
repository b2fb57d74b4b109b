"""Benchmark: pacnd.filters.joint_bilateral vs OpenCV's ximgproc.jointBilateralFilter.

Same run, same data, same window and sigmas:

* image: the bundled Middlebury "Cones" view resized to 512x512 (PIL bicubic),
  float32 RGB in [0, 1], plus Gaussian noise (sigma 0.05, seeded) — the image
  to filter; guide: the clean image (float32, a separate array, so OpenCV takes
  its joint path and not the plain bilateral one).
* window d = 9 (radius 4), sigma_space = 3 px, sigma_color = 0.1.
  OpenCV uses a round window (taps with r <= 4); pacnd is called with
  ``window='disk'`` (same taps) and, for reference, ``'square'`` (all 81).

Reports median (and min) wall time over repeats — OpenCV and pacnd called
round-robin so that both see the same machine load, after a warm-up call so
that Numba compilation is excluded — the ratio to OpenCV, peak memory of one call (RSS sampled every
~0.5 ms in a fresh process, minus the RSS just before the call; plus the
tracemalloc peak of NumPy allocations) and numerical agreement in the
interior (pixels >= 4 from the border: OpenCV reflects the border, pacnd
normalises over in-image pixels).

Convention differences (read in opencv_contrib
``modules/ximgproc/src/joint_bilateral_filter.cpp``): OpenCV measures the
colour distance of a 3-channel guide as the **L1** sum ``sum_c |dG_c|`` and
uses ``exp(-0.5 * L1^2 / sigma_color^2)`` from a 4096-bins-per-channel lookup
table with linear interpolation; pacnd (like scikit-image) uses the Euclidean
distance. For a 1-channel guide the two definitions coincide, so the gray-guide
configuration measures the pure implementation difference (LUT + float32); for
the RGB guide, brute-force NumPy versions of both formulas show that the
difference is the L1-vs-L2 convention and nothing else.

Run:  python benchmarks/bench_joint_bilateral.py  [--repeats N] [--engines numba,numpy]
Writes benchmarks/results/joint_bilateral.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import threading
import time
import tracemalloc
from pathlib import Path

# time the compiled kernels: compile them in-process at the first (warm-up) call instead
# of serving first calls with the reference engine (pacnd/engines/cpu/coldstart.py)
os.environ.setdefault("PACND_JIT", "eager")

import numpy as np

SIZE = 512
D = 9
RADIUS = D // 2
SIGMA_SPACE = 3.0
SIGMA_COLOR = 0.1
NOISE = 0.05
HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- data
def make_data(size=SIZE):
    from PIL import Image

    from pacnd.datasets import load_cones

    rgb, _ = load_cones()
    img = Image.fromarray(rgb).resize((size, size), Image.BICUBIC)
    clean = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    noisy = clean + np.random.default_rng(0).normal(0, NOISE, clean.shape).astype(np.float32)
    gray = np.ascontiguousarray(clean @ np.array([0.299, 0.587, 0.114], np.float32))
    return np.ascontiguousarray(noisy), np.ascontiguousarray(clean), gray


# --------------------------------------------------------------------------- the two filters
def run_pacnd(image, guide, engine, window="disk"):
    from pacnd.filters import joint_bilateral

    return joint_bilateral(image, guide, sigma_spatial=SIGMA_SPACE, sigma_color=SIGMA_COLOR,
                           win_size=D, channel_axis=-1, window=window, engine=engine)


def run_opencv(image, guide):
    import cv2

    return cv2.ximgproc.jointBilateralFilter(guide, image, D, SIGMA_COLOR, SIGMA_SPACE)


# --------------------------------------------------------------------------- brute force
def _disk_offsets():
    return [(i, j) for i in range(-RADIUS, RADIUS + 1) for j in range(-RADIUS, RADIUS + 1)
            if i * i + j * j <= RADIUS * RADIUS]


def brute_force(image, guide, distance):
    """The joint bilateral formula in float64, round window, reflect-101 border.

    ``distance='l1'``: OpenCV's definition (sum |dG_c|, exact exp instead of the LUT);
    ``'l2'``: pacnd's Euclidean definition. Only the interior is compared, so the
    border rule does not matter.
    """
    img = np.asarray(image, np.float64)
    g = np.asarray(guide, np.float64)
    if g.ndim == 2:
        g = g[..., None]
    pad = ((RADIUS, RADIUS), (RADIUS, RADIUS), (0, 0))
    ip, gp = np.pad(img, pad, mode="reflect"), np.pad(g, pad, mode="reflect")
    H, W = img.shape[:2]
    num = np.zeros_like(img)
    den = np.zeros((H, W, 1))
    for i, j in _disk_offsets():
        gq = gp[RADIUS + i:RADIUS + i + H, RADIUS + j:RADIUS + j + W]
        dg = gq - g
        dist2 = (np.abs(dg).sum(-1) ** 2 if distance == "l1" else (dg ** 2).sum(-1))[..., None]
        w = np.exp(-0.5 * (i * i + j * j) / SIGMA_SPACE ** 2) * np.exp(
            -0.5 * dist2 / SIGMA_COLOR ** 2)
        num += w * ip[RADIUS + i:RADIUS + i + H, RADIUS + j:RADIUS + j + W]
        den += w
    return num / den


def interior(a):
    return a[RADIUS:-RADIUS, RADIUS:-RADIUS]


def diff_stats(a, b):
    d = np.abs(interior(np.asarray(a, np.float64)) - interior(np.asarray(b, np.float64)))
    return {"mean_abs": float(d.mean()), "max_abs": float(d.max())}


# --------------------------------------------------------------------------- timing / memory
def interleaved_times(fns, repeats):
    """Wall times of each function, called round-robin so that all see the same load."""
    for fn in fns:
        fn()  # warm-up (Numba compilation, OpenCV thread pool)
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t0)
    return times


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _memory_child(which, engine, window, guide_kind, queue):
    """In a fresh process: peak RSS increase and tracemalloc peak of one call."""
    image, guide, gray = make_data()
    g = guide if guide_kind == "rgb" else gray
    if which == "pacnd":
        run_pacnd(image[:32, :32], g[:32, :32], engine, window)  # compile on a tiny input
        fn = lambda: run_pacnd(image, g, engine, window)  # noqa: E731
    else:
        run_opencv(image[:32, :32], g[:32, :32])
        fn = lambda: run_opencv(image, g)  # noqa: E731
    base = _rss_bytes()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.0005)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    tracemalloc.start()
    fn()
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak[0] = max(peak[0], _rss_bytes())
    stop.set()
    th.join()
    queue.put({"peak_rss_increase_mib": (peak[0] - base) / 2 ** 20,
               "tracemalloc_peak_mib": traced / 2 ** 20})


def measure_memory(which, engine=None, window="disk", guide_kind="rgb"):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_memory_child, args=(which, engine, window, guide_kind, q))
    p.start()
    res = q.get(timeout=600)
    p.join()
    return res


def numba_breakdown(image, guide, repeats=9):
    """Where one pacnd[numba] call spends its time (wraps engine internals; best effort).

    ``k_tiles``: computing the adapting kernel of every tile
    (``adapting.KernelContext.compute``); ``depthwise``: the K-weighted
    depthwise sums (``pac.dw_forward``); ``rest``: everything else (argument
    checks, layout copies, the ones channel, the final division).
    """
    try:
        from pacnd.engines.cpu import adapting as ad
        from pacnd.engines.cpu import pac as pc
    except ImportError as exc:
        return {"error": str(exc)}
    acc = {}

    def timed(name, f):
        def w(*a, **k):
            t0 = time.perf_counter()
            r = f(*a, **k)
            acc[name] = acc.get(name, 0.0) + time.perf_counter() - t0
            acc[name + "_calls"] = acc.get(name + "_calls", 0) + 1
            return r
        return w

    orig_compute, orig_dw = ad.KernelContext.compute, pc.dw_forward
    ad.KernelContext.compute = timed("k_tiles", orig_compute)
    pc.dw_forward = timed("depthwise", orig_dw)
    try:
        run_pacnd(image, guide, "numba")
        rows = []
        for _ in range(repeats):
            acc.clear()
            t0 = time.perf_counter()
            run_pacnd(image, guide, "numba")
            total = time.perf_counter() - t0
            rows.append((total, acc.get("k_tiles", 0.0), acc.get("depthwise", 0.0),
                         acc.get("k_tiles_calls", 0)))
    finally:
        ad.KernelContext.compute, pc.dw_forward = orig_compute, orig_dw
    total, kt, dw, ntiles = min(rows)  # the least disturbed call
    return {"total_s": total, "k_tiles_s": kt, "depthwise_s": dw,
            "rest_s": total - kt - dw, "tiles": int(ntiles), "calls": repeats}


# --------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--engines", default=None,
                    help="comma-separated pacnd CPU engines (default: the default engine, "
                         "plus numpy with 3 repeats)")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--output", default=str(HERE / "results" / "joint_bilateral.json"))
    args = ap.parse_args(argv)

    import cv2
    import numba

    import pacnd
    from pacnd._dispatch import get_engine

    default_engine = get_engine("cpu")
    engines = (args.engines.split(",") if args.engines else
               [default_engine] + (["numpy"] if default_engine != "numpy" else []))
    image, guide, gray = make_data()
    print(f"joint bilateral, {SIZE}x{SIZE}x3 float32, d={D}, sigma_space={SIGMA_SPACE}, "
          f"sigma_color={SIGMA_COLOR}; OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads), "
          f"numba {numba.__version__} ({numba.get_num_threads()} threads), "
          f"{os.cpu_count()} CPUs")

    rows = []
    results = {"config": {"size": [SIZE, SIZE, 3], "dtype": "float32", "d": D,
                          "sigma_space": SIGMA_SPACE, "sigma_color": SIGMA_COLOR,
                          "noise_sigma": NOISE, "image": "bundled Cones im2 resized to 512x512 "
                          "(PIL bicubic) + N(0, 0.05) noise; guide = clean image",
                          "repeats": args.repeats},
               "environment": {"python": sys.version.split()[0], "numpy": np.__version__,
                               "numba": numba.__version__, "opencv": cv2.__version__,
                               "pacnd": pacnd.__version__, "cpus": os.cpu_count(),
                               "numba_threads": numba.get_num_threads(),
                               "opencv_threads": cv2.getNumThreads(),
                               "machine": platform.machine(), "platform": platform.platform(),
                               "date": datetime.datetime.now().isoformat(timespec="seconds"),
                               "load_average_at_start": os.getloadavg()},
               "runs": []}

    for guide_kind, g in (("rgb", guide), ("gray", gray)):
        fast = [(e, w) for e in engines if e != "numpy" for w in ("disk", "square")]
        fns = [lambda: run_opencv(image, g)] + [
            (lambda e=e, w=w: run_pacnd(image, g, e, w)) for e, w in fast]
        timed = interleaved_times(fns, args.repeats)
        if "numpy" in engines:  # the slow reference: a few runs only
            for w in ("disk", "square"):
                timed_np = interleaved_times([lambda w=w: run_pacnd(image, g, "numpy", w)],
                                             min(args.repeats, 3))
                fast.append(("numpy", w))
                timed.append(timed_np[0])
        all_cv = timed[0]
        t_cv = statistics.median(all_cv)
        out_cv = run_opencv(image, g)
        mem_cv = None if args.no_memory else measure_memory("opencv", guide_kind=guide_kind)
        entry = {"guide": guide_kind, "opencv": {"median_s": t_cv, "min_s": min(all_cv),
                                                 "times_s": all_cv, "memory": mem_cv},
                 "pacnd": {}}
        rows.append((guide_kind, "opencv", "-", t_cv, 1.0, mem_cv, None))
        # numerical references: brute force of both conventions (float64)
        bf_l1 = brute_force(image, g, "l1")
        bf_l2 = brute_force(image, g, "l2")
        entry["opencv"]["vs_bruteforce_l1"] = diff_stats(out_cv, bf_l1)
        for (eng, window), allt in zip(fast, timed[1:]):
            t = statistics.median(allt)
            out = run_pacnd(image, g, eng, window)
            mem = (None if args.no_memory or window != "disk" else
                   measure_memory("pacnd", eng, window, guide_kind))
            rec = {"median_s": t, "min_s": min(allt), "times_s": allt,
                   "ratio_to_opencv": t / t_cv,
                   "ratio_to_opencv_min": min(allt) / min(all_cv), "memory": mem}
            if window == "disk":
                rec["vs_opencv_interior"] = diff_stats(out, out_cv)
                rec["vs_bruteforce_l2"] = diff_stats(out, bf_l2)
                rec["bruteforce_l2_vs_l1_interior"] = diff_stats(bf_l2, bf_l1)
            if eng == "numba" and window == "disk":
                rec["breakdown"] = numba_breakdown(image, g)
            entry["pacnd"][f"{eng}/{window}"] = rec
            rows.append((guide_kind, f"pacnd[{eng}]", window, t, t / t_cv, mem,
                         rec.get("vs_opencv_interior")))
        results["runs"].append(entry)

    print(f"\n{'guide':5} {'method':14} {'window':6} {'median ms':>10} {'x OpenCV':>9} "
          f"{'peak RSS+ MiB':>14} {'traced MiB':>11} {'mean|d| int.':>13} {'max|d| int.':>12}")
    for gk, meth, win, t, ratio, mem, agr in rows:
        m1 = f"{mem['peak_rss_increase_mib']:.1f}" if mem else "-"
        m2 = f"{mem['tracemalloc_peak_mib']:.1f}" if mem else "-"
        a1 = f"{agr['mean_abs']:.2e}" if agr else "-"
        a2 = f"{agr['max_abs']:.2e}" if agr else "-"
        print(f"{gk:5} {meth:14} {win:6} {1e3 * t:10.2f} {ratio:9.2f} {m1:>14} {m2:>11} "
              f"{a1:>13} {a2:>12}")
    print("\nagreement explained (interior, float64 brute force of each convention):")
    for entry in results["runs"]:
        key = f"{engines[0]}/disk"
        p = entry["pacnd"][key]
        print(f"  {entry['guide']:4} guide: OpenCV vs brute-force L1 max|d| "
              f"{entry['opencv']['vs_bruteforce_l1']['max_abs']:.2e}; pacnd vs brute-force L2 "
              f"max|d| {p['vs_bruteforce_l2']['max_abs']:.2e}; L2 vs L1 formulas max|d| "
              f"{p['bruteforce_l2_vs_l1_interior']['max_abs']:.2e} "
              f"(mean {p['bruteforce_l2_vs_l1_interior']['mean_abs']:.2e})")
    for entry in results["runs"]:
        bd = entry["pacnd"].get("numba/disk", {}).get("breakdown")
        if bd and "error" not in bd:
            print(f"  {entry['guide']:4} guide, pacnd[numba] time split: K tiles "
                  f"{1e3 * bd['k_tiles_s']:.1f} ms ({bd['tiles']} tiles), depthwise sums "
                  f"{1e3 * bd['depthwise_s']:.1f} ms, rest {1e3 * bd['rest_s']:.1f} ms "
                  f"(total {1e3 * bd['total_s']:.1f} ms)")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    results["environment"]["load_average_at_end"] = os.getloadavg()
    with open(args.output, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nload average (1, 5, 15 min): start {results['environment']['load_average_at_start']}"
          f", end {results['environment']['load_average_at_end']}")
    print(f"written {args.output}")
    return results


if __name__ == "__main__":
    main()
