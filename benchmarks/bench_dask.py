"""Benchmark: pacnd on Dask — batch throughput, 16384^2 zarr images, CRF halo agreement.

Three parts (each writes ``benchmarks/results/dask_<part>.json`` and prints a table):

``batch``
    ``pacnd crf --batch`` over 16 real photos (PASCAL VOC 2007 and the
    pydensecrf examples, ~500x375, their rough annotations / ground-truth
    label maps as unaries), serial (``--scheduler threads``) vs ``local:2``
    (a LocalCluster with 2 single-threaded worker processes, Numba using one
    core each). Rounds are interleaved (serial, local:2, local:2, serial,
    ...); medians of the wall time of the whole command (cluster start
    included) and of the in-run rate the command reports; peak RSS of every
    worker process (sampled every 20 ms).
``zarr``
    A 16384x16384 RGB uint8 zarr image (a mosaic of the real photos, tiled
    and flipped) and a 3-label uint8 label map (the image quantised, with
    blocky noise): ``pacnd filter joint-bilateral`` (guide = the image,
    sigma_spatial 1, 7x7 window, uint8 output) and ``pacnd crf`` (the
    fully-connected CRF's default mapping, exact halo of 683 px), chunk by
    chunk, on ``threads`` and ``local:2``; time, peak RSS per worker and of
    the client process.
``halo``
    ``pacnd.crf.refine`` on a 2048x2048 mosaic: the in-memory call vs block-
    wise runs with chunks of 512 and halos from the exact one down to 1/8 of
    it: label agreement, largest probability difference, time.

Run:  python benchmarks/bench_dask.py {batch,zarr,halo,all} [--rounds N] [--size N]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DATA = Path(os.environ.get("PACND_SHARED_DATA", HERE.parent.parent.parent / "shared" / "data"))
if not DATA.is_dir():
    DATA = Path("/work/shared/data")


def machine():
    return {"when": datetime.datetime.now().isoformat(timespec="seconds"),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_before": os.getloadavg(), "python": platform.python_version()}


# --------------------------------------------------------------------------- memory sampling
class PeakRSS:
    """Peak RSS of every process below ``pid`` (and of ``pid``), sampled every 20 ms."""

    def __init__(self, pid):
        import psutil

        self.root = psutil.Process(pid)
        self.peaks = {}
        self.names = {}
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self.stop.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
            except psutil.Error:
                procs = []
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    # classified on every sample: a just-spawned worker still shows its
                    # parent's command line for a moment
                    cmd = " ".join(p.cmdline())
                    self.names[p.pid] = ("worker" if "spawn_main" in cmd else
                                         "tracker" if "resource_tracker" in cmd else
                                         "client")
                    self.peaks[p.pid] = max(self.peaks.get(p.pid, 0), rss)
                except psutil.Error:
                    pass
            time.sleep(0.02)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join()

    def summary(self):
        mib = 2 ** 20
        workers = sorted((v / mib for p, v in self.peaks.items() if self.names[p] == "worker"),
                         reverse=True)
        client = max([v / mib for p, v in self.peaks.items() if self.names[p] == "client"],
                     default=0.0)
        return {"worker_peak_mib": [round(w, 1) for w in workers],
                "client_peak_mib": round(client, 1)}


def run_cli(args, env=None):
    """Run ``pacnd ARGS`` in a subprocess: (seconds, stderr, memory summary)."""
    cmd = [sys.executable, "-m", "pacnd"] + [str(a) for a in args]
    e = dict(os.environ, OPENBLAS_NUM_THREADS="1", **(env or {}))
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
    with PeakRSS(p.pid) as mem:
        out, err = p.communicate()
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{err[-2000:]}")
    return dt, err, mem.summary()


# --------------------------------------------------------------------------- data
def photos():
    """The real photos with their unaries: [(name, rgb, scores PNG array)]."""
    from PIL import Image

    out = []
    voc = DATA / "voc2007"
    for f in sorted(voc.glob("*_0img.png")):
        stem = f.name[:-len("_0img.png")]
        lab = np.asarray(Image.open(voc / f"{stem}_5labels.png"))
        out.append((f"voc{stem}", np.asarray(Image.open(f).convert("RGB")), lab))
    pde = DATA / "pydensecrf_examples"
    for i in (1, 2, 3):
        out.append((f"pde{i}", np.asarray(Image.open(pde / f"im{i}.png").convert("RGB")),
                    np.asarray(Image.open(pde / f"anno{i}.png").convert("RGB"))))
    return out


def batch_folder(d, n=16):
    """``n`` (image, scores) pairs: the photos, repeated (mirrored) under new names. VOC
    ground truth becomes a blocky-noise label map .npy (the common protocol), annotations
    stay PNGs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    img_dir, sc_dir = d / "img", d / "scores"
    img_dir.mkdir(parents=True)
    sc_dir.mkdir()
    ph = photos()
    for k in range(n):
        name, rgb, sc = ph[k % len(ph)]
        flip = (k // len(ph)) % 2 == 1
        rgb = rgb[:, ::-1] if flip else rgb
        sc = sc[:, ::-1] if flip else sc
        Image.fromarray(np.ascontiguousarray(rgb)).save(img_dir / f"{k:02d}_{name}.png")
        if sc.ndim == 3:
            Image.fromarray(np.ascontiguousarray(sc)).save(sc_dir / f"{k:02d}_{name}.png")
        else:
            lab = sc.astype(np.int64)
            lab[lab == 255] = 0
            noisy = lab.copy()
            H, W = lab.shape
            for _ in range(12):                           # blocky label noise
                y, x = rng.integers(0, H - 32), rng.integers(0, W - 32)
                noisy[y:y + 32, x:x + 32] = rng.integers(0, 21)
            np.save(sc_dir / f"{k:02d}_{name}.npy", noisy)
    return img_dir, sc_dir


def mosaic(size, tile=1024, seed=0):
    """Lazy ``size x size`` RGB uint8 mosaic of the photos (each resized to ``tile``)."""
    import dask.array as da
    from PIL import Image

    tiles = [np.asarray(Image.fromarray(rgb).resize((tile, tile), Image.BICUBIC))
             for _, rgb, _ in photos()]
    rng = np.random.default_rng(seed)
    n = size // tile
    pick = rng.integers(0, len(tiles), size=(n, n))
    flips = rng.integers(0, 4, size=(n, n))

    def block(block_id=None):
        i, j = block_id[:2]
        t = tiles[pick[i, j]]
        f = flips[i, j]
        t = t[::-1] if f & 1 else t
        t = t[:, ::-1] if f & 2 else t
        return np.ascontiguousarray(t)

    return da.map_blocks(block, chunks=((tile,) * n, (tile,) * n, (3,)), dtype=np.uint8,
                         meta=np.empty((0, 0, 0), np.uint8))


def labels_of(img, seed=0):
    """3 labels from the image (grey quantised at 1/16 resolution) with blocky noise."""
    def block(b, block_id=None):
        g = b.astype(np.float32).mean(axis=2)[8::16, 8::16]
        lab = np.digitize(g, [85, 170]).astype(np.uint8)
        rng = np.random.default_rng(seed + 7919 * block_id[0] + block_id[1])
        noise = rng.random(lab.shape) < 0.15
        lab[noise] = rng.integers(0, 3, size=int(noise.sum()))
        return lab.repeat(16, 0).repeat(16, 1)

    return img.map_blocks(block, drop_axis=2, dtype=np.uint8, meta=np.empty((0, 0), np.uint8))


# --------------------------------------------------------------------------- parts
def bench_batch(rounds, workdir):
    import logging

    from distributed import LocalCluster

    img_dir, sc_dir = batch_folder(workdir / "batch")
    n = len(os.listdir(img_dir))
    common = ["crf", "--batch", img_dir, sc_dir, "--kind", "labels", "--keep-going"]
    # a standing 2-worker cluster, as a multi-node user would keep one (tcp:// address)
    lc = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", silence_logs=logging.ERROR)
    try:
        addr = lc.scheduler_address
        run_cli(common + ["-o", workdir / "warm", "-q"])                     # Numba cache
        run_cli(common + ["-o", workdir / "warm2", "-q", "--scheduler", addr])  # warm workers
        modes = {"threads": "threads", "local:2": "local:2", "tcp (standing 2 workers)": addr}
        runs = {m: [] for m in modes}
        for r in range(rounds):
            order = list(modes) if r % 2 == 0 else list(modes)[::-1]
            for m in order:
                out = workdir / f"out_{list(modes).index(m)}_{r}"
                with PeakRSS(os.getpid()) as standing:
                    dt, err, mem = run_cli(common + ["-o", out, "--scheduler", modes[m]])
                if m.startswith("tcp"):
                    mem["worker_peak_mib"] = standing.summary()["worker_peak_mib"]
                line = [ln for ln in err.splitlines() if ln.startswith("refined")][-1]
                rate = float(re.search(r"\(([\d.]+) images/s", line).group(1))
                runs[m].append({"wall_s": dt, "in_run_images_per_s": rate, **mem})
                print(f"  round {r} {m:25s} {dt:6.2f} s  {n / dt:5.2f} img/s (command)  "
                      f"{rate:5.2f} img/s (in run)  workers {mem['worker_peak_mib']} MiB",
                      flush=True)
    finally:
        lc.close()
    ref = workdir / "out_0_0"
    same = all(all(open(ref / f, "rb").read() == open(workdir / f"out_{k}_0" / f, "rb").read()
                   for f in os.listdir(ref)) for k in (1, 2))
    res = {"images": n, "rounds": rounds, "outputs_identical": same, "runs": runs,
           "median": {s: {"wall_s": statistics.median(r["wall_s"] for r in v),
                          "images_per_s_command": statistics.median(n / r["wall_s"] for r in v),
                          "images_per_s_in_run": statistics.median(r["in_run_images_per_s"]
                                                                   for r in v)}
                      for s, v in runs.items()}}
    print(f"batch of {n}: " + "; ".join(
        f"{s}: {m['images_per_s_command']:.2f} img/s command, {m['images_per_s_in_run']:.2f} "
        f"in run" for s, m in res["median"].items()) + f"; outputs identical: {same}")
    return res


ZARR_RUNS = ("joint_bilateral:2048:threads", "joint_bilateral:2048:local:2",
             "joint_bilateral:1024:local:2", "crf:2048:threads", "crf:2048:local:2")


def bench_zarr(size, workdir, runs):
    from pacnd.dask import save_array

    d = workdir / "zarr"
    d.mkdir(parents=True, exist_ok=True)
    img = mosaic(size)
    t = time.perf_counter()
    if not (d / "image.zarr").exists():
        save_array(img.rechunk(2048), d / "image.zarr", overwrite=True)
        save_array(labels_of(img).rechunk(2048), d / "labels.zarr", overwrite=True)
    t_write = time.perf_counter() - t
    print(f"  {size}x{size} RGB mosaic + labels ready ({t_write:.1f} s)", flush=True)
    res = {"size": size, "image_mib": size * size * 3 / 2 ** 20, "write_inputs_s": t_write,
           "runs": []}
    for spec in runs:
        op, c, sched = spec.split(":", 2)
        c = int(c)
        out = d / f"{op}_{c}_{sched.replace(':', '')}.zarr"
        if op == "joint_bilateral":
            args = ["filter", "joint-bilateral", d / "image.zarr", "--guide",
                    d / "image.zarr", "-o", out, "--output-dtype", "uint8"]
        else:
            args = ["crf", d / "image.zarr", d / "labels.zarr", "-o", out, "--kind",
                    "labels", "--n-labels", "3"]
        dt, err, mem = run_cli(args + ["--chunks", c, "--scheduler", sched,
                                       "--overwrite"])
        row = {"op": op, "chunks": c, "scheduler": sched, "seconds": dt,
               "mpix_per_s": size * size / dt / 1e6, **mem}
        res["runs"].append(row)
        print(f"  {op:16s} chunks {c:5d} {sched:8s} {dt:7.1f} s  "
              f"{row['mpix_per_s']:6.2f} Mpx/s  workers {mem['worker_peak_mib']} MiB  "
              f"client {mem['client_peak_mib']} MiB", flush=True)
        shutil.rmtree(out, ignore_errors=True)
    return res


def bench_halo(size, chunk, workdir):
    import dask
    import dask.array as da

    from pacnd.crf import dense_crf_mapping, refine
    from pacnd.dask import crf_halo
    import pacnd.dask.crf as dcrf

    img = np.asarray(mosaic(size, tile=512).compute())
    lab = np.asarray(labels_of(da.from_array(img, chunks=(512, 512, 3))).compute())
    exact = crf_halo(dense_crf_mapping((size, size), 3))
    t = time.perf_counter()
    ref_l, ref_p = refine(img, lab, kind="labels", n_labels=3, return_probabilities=True)
    t_mem = time.perf_counter() - t
    rows = [{"halo": "in memory", "seconds": t_mem}]
    print(f"  in memory {size}x{size}: {t_mem:.1f} s; exact halo {exact} px", flush=True)
    for h in (exact, exact // 2, exact // 4, exact // 8):
        x = da.from_array(img, chunks=(chunk, chunk, 3))
        t = time.perf_counter()
        lab_d, prob_d = dcrf.refine(x, lab, kind="labels", n_labels=3, halo=h,
                                    return_probabilities=True)
        with dask.config.set(scheduler="threads", num_workers=1):
            lab_d, prob_d = dask.compute(lab_d, prob_d)
        dt = time.perf_counter() - t
        agree = float((lab_d == ref_l).mean())
        diff = np.abs(prob_d - ref_p)
        dp, mp = float(diff.max()), float(diff.mean())
        rows.append({"halo": h, "seconds": dt, "label_agreement": agree,
                     "max_prob_diff": dp, "mean_prob_diff": mp,
                     "region_area_factor": ((chunk + 2 * h) / chunk) ** 2})
        print(f"  halo {h:4d}: labels agree {100 * agree:.4f} %, max |dP| {dp:.2e}, "
              f"mean |dP| {mp:.1e}, {dt:.1f} s", flush=True)
    return {"size": size, "chunk": chunk, "exact_halo": exact, "rows": rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=("batch", "zarr", "halo", "all"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--runs", nargs="+", default=list(ZARR_RUNS), metavar="OP:CHUNK:SCHED",
                    help="zarr runs (op joint_bilateral or crf)")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="pacnd_bench_dask_"))
    parts = ["batch", "zarr", "halo"] if args.part == "all" else [args.part]
    try:
        for part in parts:
            print(f"{part}:", flush=True)
            info = machine()
            if part == "batch":
                res = bench_batch(args.rounds, work)
            elif part == "zarr":
                res = bench_zarr(args.size, work, args.runs)
            else:
                res = bench_halo(2048, 512, work)
            info["load_after"] = os.getloadavg()
            with open(RESULTS / f"dask_{part}.json", "w", encoding="utf-8") as f:
                json.dump({"machine": info, **res}, f, indent=1)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
