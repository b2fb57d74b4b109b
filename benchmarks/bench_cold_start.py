"""Benchmark: seconds from ``import pacnd`` to the first result on an empty kernel cache.

Entry points (each in a new process with a fresh ``NUMBA_CACHE_DIR``, float32):

* ``pac_conv``: ``pacnd.pac_conv`` on x (1, 32, 128, 128), guide (1, 16, 128, 128), 5x5;
* ``crf.refine``: ``pacnd.crf.refine`` of a 240x320 RGB image with 5-label probabilities
  (the dense-CRF default parameters);
* ``joint_bilateral``: ``pacnd.filters.joint_bilateral`` of a 256x256x3 image with an RGB
  guide, sigma_spatial 2, sigma_color 0.1;
* ``backward``: ``pac_conv`` through Tensors (input, guide, weight, bias require grad) and
  ``backward()`` of the sum of squares: the first gradients.

Per entry point and mode, a fresh cache directory and a new process that times
``import pacnd`` and the first call (``first_s`` = from before the import to the first
result); then, still in that process, it waits until every kernel is compiled
(``compiled_after_s``, background mode) and times the same call again
(``steady_ms``, median of 3). ``first_cpu_s`` is the CPU time the process had used by its
first result (interpreter start included): on a busy machine wall times stretch, this much
less. A second new process on the now-filled cache times the
first result again (``warm_cache_first_s``: kernels loaded from disk).

The sources are copied to a temporary directory first, so the run measures one version of
them whatever happens to the checkout meanwhile. Modes: ``background`` (the default of pacnd: first calls served by the reference engine
while a background process compiles the kernels, pacnd/engines/cpu/coldstart.py) and
``eager`` (``PACND_JIT=eager``: compile in-process at the first call, as pacnd did before).
``--before DIR`` also runs the entry points with the pacnd source tree in ``DIR`` (e.g. a
checkout of the commit before this work) in its default mode.

The machine is shared and noisy: the JSON records the load averages; compile times grow
with the load (they are CPU-bound, single-threaded).

Run:   python benchmarks/bench_cold_start.py [--entries pac_conv,backward] [--before DIR]
Writes benchmarks/results/cold_start.json and cold_start.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ENTRIES = ("pac_conv", "crf.refine", "joint_bilateral", "backward")
TARGET_S = 5.0

CHILD = r'''
import json, statistics, sys, time
t0 = time.perf_counter()
import numpy as np
import pacnd
t_import = time.perf_counter() - t0
which, wait = sys.argv[1], sys.argv[2] == "1"
r = np.random.default_rng(0)
f = lambda *s: r.standard_normal(s).astype(np.float32)
if which == "pac_conv":
    a = (f(1, 32, 128, 128), f(1, 16, 128, 128), f(32, 32, 5, 5) / 30, f(32))
    def call():
        return pacnd.pac_conv(*a, padding=2)
elif which == "crf.refine":
    img = (r.random((240, 320, 3)) * 255).astype(np.uint8)
    p = r.random((240, 320, 5)).astype(np.float32)
    p /= p.sum(-1, keepdims=True)
    def call():
        return pacnd.crf.refine(img, p)
elif which == "joint_bilateral":
    im, gd = r.random((256, 256, 3)).astype(np.float32), r.random((256, 256, 3)).astype(np.float32)
    def call():
        return pacnd.filters.joint_bilateral(im, gd, sigma_spatial=2, sigma_color=0.1,
                                             channel_axis=-1)
else:
    arrays = (f(1, 32, 128, 128), f(1, 16, 128, 128), f(32, 32, 5, 5) / 30, f(32))
    def call():
        x, g, w, b = (pacnd.Tensor(a, requires_grad=True) for a in arrays)
        y = pacnd.pac_conv(x, g, w, b, padding=2)
        (y * y).sum().backward()
        return g.grad
call()
t_first = time.perf_counter() - t0
out = {"import_s": t_import, "first_s": t_first, "first_cpu_s": time.process_time()}
try:
    from pacnd.engines.cpu import coldstart
    out["served_first"] = dict(coldstart.stats)
except ImportError:
    coldstart = None
if wait:
    if coldstart is not None:
        coldstart.wait_idle()
        out["compiled_after_s"] = time.perf_counter() - t0
    call()                                   # (loads the kernels just compiled)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    out["steady_ms"] = statistics.median(times) * 1e3
    if coldstart is not None:
        out["served"] = dict(coldstart.stats)
print(json.dumps(out))
'''


def run(entry, mode, cache, src, wait):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(src))
    env.pop("PACND_JIT", None)
    if mode == "eager":
        env["PACND_JIT"] = "eager"
    proc = subprocess.run([sys.executable, "-c", CHILD, entry, "1" if wait else "0"], env=env,
                          capture_output=True, text=True, timeout=3600, cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise RuntimeError(f"{entry} ({mode}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(entry, mode, src):
    with tempfile.TemporaryDirectory(prefix="pacnd_cold_") as tmp:
        res = run(entry, mode, Path(tmp) / "cache", src, wait=True)
        res["warm_cache_first_s"] = run(entry, mode, Path(tmp) / "cache", src,
                                        wait=False)["first_s"]
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", default=",".join(ENTRIES))
    ap.add_argument("--modes", default="background,eager")
    ap.add_argument("--before", default=None,
                    help="a pacnd source tree to measure too (its default mode)")
    ap.add_argument("--out", default=str(HERE / "results" / "cold_start.json"))
    args = ap.parse_args(argv)
    entries = [e for e in args.entries.split(",") if e]
    # a snapshot of the sources: editing the checkout during the run changes nothing here
    snap = Path(tempfile.mkdtemp(prefix="pacnd_src_"))
    shutil.copytree(REPO / "pacnd", snap / "pacnd", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    runs = [(m, snap) for m in args.modes.split(",") if m]
    if args.before:
        runs.append(("before", Path(args.before).resolve()))
    load0 = os.getloadavg()
    print(f"load average at start: {load0[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    results = {}
    for entry in entries:
        for mode, src in runs:
            r = measure(entry, "background" if mode == "before" else mode, src)
            results.setdefault(entry, {})[mode] = r
            done = r.get("compiled_after_s", r["first_s"])
            print(f"  {entry:16s} {mode:10s} first result {r['first_s']:6.1f} s, compiled after "
                  f"{done:6.1f} s, steady {r['steady_ms']:8.1f} ms, warm cache "
                  f"{r['warm_cache_first_s']:5.1f} s", flush=True)
    load1 = os.getloadavg()
    lines = ["| entry point | mode | first result s | its CPU s | all kernels compiled s "
             "| steady ms | warm-cache first result s |", "|---|---|---:|---:|---:|---:|---:|"]
    for entry, modes in results.items():
        for mode, r in modes.items():
            lines.append(f"| {entry} | {mode} | {r['first_s']:.1f} | {r['first_cpu_s']:.1f} | "
                         f"{r.get('compiled_after_s', r['first_s']):.1f} | {r['steady_ms']:.1f} "
                         f"| {r['warm_cache_first_s']:.1f} |")
    table = "\n".join(lines)
    print()
    print(table)
    checks = {f"{e}: first result <= {TARGET_S:.0f} s (background)":
              results[e]["background"]["first_s"] <= TARGET_S
              for e in results if "background" in results[e]}
    for k, v in checks.items():
        print(f"  [{'ok' if v else 'MISSED'}] {k}")
    import numba
    import numpy as np
    out = {"entries": entries, "target_s": TARGET_S, "checks": checks, "results": results,
           "environment": {"python": platform.python_version(), "numpy": np.__version__,
                           "numba": numba.__version__, "cpus": os.cpu_count(),
                           "platform": platform.platform(),
                           "date": datetime.datetime.now().isoformat(timespec="seconds"),
                           "load_average_at_start": load0, "load_average_at_end": load1,
                           "before": args.before},
           "method": "fresh NUMBA_CACHE_DIR per entry point and mode, a new process each; "
                     "first_s from before `import pacnd` to the first result"}
    shutil.rmtree(snap, ignore_errors=True)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    path.with_suffix(".md").write_text(
        f"# First result on an empty kernel cache (`benchmarks/bench_cold_start.py`)\n\n"
        f"{out['environment']['date']}, {os.cpu_count()} CPUs, load average {load0[0]:.1f} at "
        f"start, {load1[0]:.1f} at end (a shared machine; compile times grow with the load)."
        f"\n\n{table}\n\n" + "\n".join(f"- [{'ok' if v else 'MISSED'}] {k}"
                                        for k, v in checks.items()) + "\n")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
