"""Benchmark: the Numba CPU engine on the issue's PAC shapes, against PyTorch.

Cases (float32, B = 1, 32 -> 32 channels, 5x5 kernel, ``--threads`` threads, 2 by default):

* ``pac_conv``: padding 2, 256x256 input, guide 16 channels at 256x256 —
  forward, and forward + backward (vjps for input, weight, bias, guide);
* ``pac_conv_transpose``: 2x upsampling, stride 2, padding 2,
  output_padding 1, 128x128 -> 256x256, guide 16 channels at 256x256 —
  forward, and forward + backward;
* ``pacnd.conv`` / ``pacnd.conv_transpose`` (plain, no K) on the same shapes;
* baselines, when torch imports (a benchmarking aid only, never a pacnd
  dependency): PyTorch ``conv2d`` / ``conv_transpose2d`` of the same shapes
  (forward; forward + ``backward()`` for input, weight, bias), and the
  **reference implementation**'s way of computing PAC (the authors'
  ``pacconv2d`` / ``pacconv_transpose2d`` with ``native_impl=False``:
  full-size unfolded columns times the adapting kernel, one matmul, autograd
  for every gradient incl. the guide; ``benchmarks/torch_pac_net.py``);
* **loaded machine**: ``pac_conv`` and torch ``conv2d`` forward + backward
  again while a second process (a NumPy matmul loop on every core) loads the
  machine; the relative slowdown (loaded / unloaded median) of each.

Method:

* every case runs in its **own fresh subprocess** (so the Numba and
  torch/OpenMP thread pools never share a process, and memory is measured
  from a clean state), with ``PACND_JIT=eager`` (kernels compiled or loaded
  at the warm-up call, never served by the reference engine);
* **time**: ``--rounds`` rounds over all cases (so that pacnd and torch see
  the same changes of machine load; the loaded cases run within each round,
  with the load process started just before them and stopped right after);
  per round and case a fresh subprocess makes a small call of the same op
  (loads the Numba kernels from the on-disk cache, or compiles them, and
  starts the thread pools), one full-size warm-up call, then ``--repeats``
  timed calls. The median (and min) over all rounds is reported; ``ratio`` =
  median / median of the case's torch baseline measured in the same run,
  ``ref_ratio`` = median / median of the reference implementation's row;
* **CPU work** (every case but the reference rows): after its timed calls the
  same process runs ``--repeats`` more calls on one thread and records the
  calling thread's CPU time (``cpu_ms``; ``cpu_ratio`` against the torch
  baseline's) -- wall times on a shared machine swing with other jobs (torch's
  spinning OpenMP threads suffer more than the engine's pool), the single-thread
  work much less;
* **peak working memory** (another subprocess): glibc's mmap threshold is
  fixed at 64 KiB (``mallopt``) so that every array is mapped on allocation
  and unmapped on free — RSS then tracks live memory instead of reusing
  resident heap pages; a small call loads kernels and starts the pools; the
  full-size inputs are made; the peak-RSS counter is reset
  (``echo 5 > /proc/self/clear_refs``), RSS is read, the op runs once at full
  size, and ``VmHWM - RSS_before - output bytes`` is the memory the op needed
  above its inputs and its outputs (forward output and returned gradients).
  RSS sees every allocation — NumPy, Numba's NRT (which ``tracemalloc`` does
  not see), torch/oneDNN scratch. Where clear_refs is not writable the peak
  is sampled from a thread every ~0.5 ms instead (reported as ``mem_method``).

The machine this runs on is shared and noisy (other jobs come and go): the JSON
records the load averages at start and end; compare ratios within one run.

Targets (issue 11): ``pac_conv`` forward <= 1.3x torch ``conv2d`` forward;
forward + backward <= 2.0x torch ``conv2d`` forward + backward and <= 0.1x
the reference implementation's; ``pac_conv_transpose`` forward + backward <=
2.5x torch ``conv_transpose2d``'s; working memory <= 64 MB; under load, no
more relative slowdown than torch's.

Run:   python benchmarks/bench_cpu_pac.py [--quick] [--repeats N] [--rounds N]
Writes benchmarks/results/cpu_pac.json and cpu_pac.md (``--quick`` writes
nothing unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

# time the compiled kernels: compile them in-process at the first (warm-up) call instead
# of serving first calls with the reference engine (pacnd/engines/cpu/coldstart.py)
os.environ.setdefault("PACND_JIT", "eager")

import numpy as np

HERE = Path(__file__).resolve().parent
B, C, K, CG = 1, 32, 5, 16
TARGETS = {"fwd_ratio": 1.3, "fwdbwd_ratio": 2.0, "fwdbwd_ref_ratio": 0.1,
           "transpose_fwdbwd_ratio": 2.5, "mem_mb": 64.0}

# name -> (op, mode, torch baseline case, reference-implementation case)
CASES = {
    "pac_conv fwd": ("pac_conv", "fwd", "torch conv2d fwd", "reference pac_conv fwd"),
    "pac_conv fwd+bwd": ("pac_conv", "fwdbwd", "torch conv2d fwd+bwd",
                         "reference pac_conv fwd+bwd"),
    "pac_conv_transpose fwd": ("pac_conv_transpose", "fwd", "torch conv_transpose2d fwd",
                               "reference pac_conv_transpose fwd"),
    "pac_conv_transpose fwd+bwd": ("pac_conv_transpose", "fwdbwd",
                                   "torch conv_transpose2d fwd+bwd",
                                   "reference pac_conv_transpose fwd+bwd"),
    "conv fwd": ("conv", "fwd", "torch conv2d fwd", None),
    "conv fwd+bwd": ("conv", "fwdbwd", "torch conv2d fwd+bwd", None),
    "conv_transpose fwd": ("conv_transpose", "fwd", "torch conv_transpose2d fwd", None),
    "torch conv2d fwd": ("torch_conv2d", "fwd", None, None),
    "torch conv2d fwd+bwd": ("torch_conv2d", "fwdbwd", None, None),
    "torch conv_transpose2d fwd": ("torch_conv_transpose2d", "fwd", None, None),
    "torch conv_transpose2d fwd+bwd": ("torch_conv_transpose2d", "fwdbwd", None, None),
    "reference pac_conv fwd": ("ref_pac_conv", "fwd", None, None),
    "reference pac_conv fwd+bwd": ("ref_pac_conv", "fwdbwd", None, None),
    "reference pac_conv_transpose fwd": ("ref_pac_conv_transpose", "fwd", None, None),
    "reference pac_conv_transpose fwd+bwd": ("ref_pac_conv_transpose", "fwdbwd", None, None),
}
#: timed again while a second process loads the machine (name -> unloaded twin)
LOADED = {"pac_conv fwd+bwd (loaded)": "pac_conv fwd+bwd",
          "torch conv2d fwd+bwd (loaded)": "torch conv2d fwd+bwd"}
QUICK = ["pac_conv fwd", "pac_conv fwd+bwd", "pac_conv_transpose fwd+bwd", "torch conv2d fwd",
         "torch conv2d fwd+bwd", "torch conv_transpose2d fwd+bwd"]
TORCH_OPS = ("torch_conv2d", "torch_conv_transpose2d", "ref_pac_conv", "ref_pac_conv_transpose")


# --------------------------------------------------------------------------- memory
def _status(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


class PeakRSS:
    """Peak RSS during a block, relative to the RSS at its start (bytes)."""

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.method = "VmHWM after clear_refs"
            self._thread = None
        except OSError:
            self.method = "RSS sampled every 0.5 ms"
            self._stop = False
            self._peak = 0
            self._thread = threading.Thread(target=self._sample, daemon=True)
        self.start = _status("VmRSS")
        if self._thread is not None:
            self._peak = self.start
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop:
            self._peak = max(self._peak, _status("VmRSS"))
            time.sleep(0.0005)

    def __exit__(self, *exc):
        if self._thread is None:
            self.peak = _status("VmHWM")
        else:
            self._stop = True
            self._thread.join()
            self.peak = max(self._peak, _status("VmRSS"))
        self.delta = self.peak - self.start


# --------------------------------------------------------------------------- the ops
def make_inputs(op, scale=1):
    rng = np.random.default_rng(0)
    f32 = np.float32
    transposed = "transpose" in op
    n_in = (128 if transposed else 256) // scale
    n_out = 256 // scale
    x = rng.standard_normal((B, C, n_in, n_in)).astype(f32)
    guide = rng.standard_normal((B, CG, n_out, n_out)).astype(f32)
    w = (rng.standard_normal((C, C, K, K)) / np.sqrt(C * K * K)).astype(f32)
    b = (0.1 * rng.standard_normal(C)).astype(f32)
    g = rng.standard_normal((B, C, n_out, n_out)).astype(f32)
    return x, guide, w, b, g


def make_runner(op, mode, inputs):
    """A callable running the op once and returning the list of its outputs."""
    x, guide, w, b, g = inputs
    if op in TORCH_OPS:
        import torch

        tx, tgd, tw, tb, tg = (torch.from_numpy(a) for a in (x, guide, w, b, g))
        if op == "torch_conv2d":
            def f(x_, g_, w_, b_):
                return torch.nn.functional.conv2d(x_, w_, b_, padding=2)
        elif op == "torch_conv_transpose2d":
            def f(x_, g_, w_, b_):
                return torch.nn.functional.conv_transpose2d(x_, w_, b_, stride=2, padding=2,
                                                            output_padding=1)
        else:
            sys.path.insert(0, str(HERE))
            from torch_pac_net import pac_conv2d, pac_conv_transpose2d

            if op == "ref_pac_conv":
                def f(x_, g_, w_, b_):
                    return pac_conv2d(x_, g_, w_, b_, padding=2)
            else:
                def f(x_, g_, w_, b_):
                    return pac_conv_transpose2d(x_, g_, w_, b_, stride=2, padding=2,
                                                output_padding=1)
        # the reference implementation also differentiates w.r.t. the guide
        with_guide = op.startswith("ref_")
        if mode == "fwd":
            def run():
                with torch.no_grad():
                    return [f(tx, tgd, tw, tb)]
        else:
            def run():
                xs, gs, ws, bs = (t.detach().requires_grad_(True) for t in (tx, tgd, tw, tb))
                gs.requires_grad_(with_guide)
                y = f(xs, gs, ws, bs)
                y.backward(tg)
                return [y.detach(), xs.grad, ws.grad, bs.grad] + ([gs.grad] if with_guide
                                                                   else [])
        return run

    import pacnd

    if op == "pac_conv":
        kw = dict(padding=2)

        def fwd():
            return pacnd.pac_conv(x, guide, w, b, **kw)

        def vjp():
            return pacnd.pac_conv_vjp(g, x, guide, w, b, wrt=("input", "weight", "bias", "guide"),
                                      **kw)
    elif op == "pac_conv_transpose":
        kw = dict(stride=2, padding=2, output_padding=1)

        def fwd():
            return pacnd.pac_conv_transpose(x, guide, w, b, **kw)

        def vjp():
            return pacnd.pac_conv_transpose_vjp(g, x, guide, w, b,
                                                wrt=("input", "weight", "bias", "guide"), **kw)
    elif op == "conv":
        def fwd():
            return pacnd.conv(x, w, b, padding=2)

        def vjp():
            return pacnd.conv_vjp(g, x, w, b, padding=2)
    else:
        kw = dict(stride=2, padding=2, output_padding=1)

        def fwd():
            return pacnd.conv_transpose(x, w, b, **kw)

        def vjp():
            return pacnd.conv_transpose_vjp(g, x, w, b, **kw)
    if mode == "fwd":
        return lambda: [fwd()]
    return lambda: [fwd()] + list(vjp().values())


def _fixed_mmap_threshold():
    """glibc: serve every allocation >= 64 KiB by mmap and give it back on free.

    By default glibc raises its mmap threshold after large frees, so later
    arrays reuse heap pages that are already resident and a peak-RSS delta
    would miss them; a fixed threshold makes RSS track live memory.
    """
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)          # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 * 1024)          # M_TRIM_THRESHOLD
        return libc
    except OSError:
        return None


def child(name, what, repeats, nthreads):
    """Run one case in this (fresh) process; print one JSON line."""
    op, mode = CASES[LOADED.get(name, name)][:2]
    libc = _fixed_mmap_threshold() if what == "mem" else None
    if op in TORCH_OPS:
        import torch
        torch.set_num_threads(nthreads)
        threads = torch.get_num_threads()
    else:
        import numba

        import pacnd.engines.cpu  # noqa: F401 - starts Numba's pool (before anything else does)
        numba.set_num_threads(nthreads)
        threads = numba.get_num_threads()
    # kernels loaded (or compiled), BLAS/OpenMP pools started, on a small problem
    make_runner(op, mode, make_inputs(op, scale=8))()
    inputs = make_inputs(op)
    run = make_runner(op, mode, inputs)
    res = {"case": name, "threads": threads}
    if what == "mem":
        import gc
        gc.collect()
        if libc is not None:
            libc.malloc_trim(0)
        with PeakRSS() as mem:
            outs = run()
        out_bytes = sum(int(o.nbytes) for o in outs if o is not None)
        res.update(peak_rss_delta_mb=mem.delta / 2**20, output_mb=out_bytes / 2**20,
                   working_mb=(mem.delta - out_bytes) / 2**20, mem_method=mem.method)
    else:
        times = []
        run()                                   # full-size warm-up
        for _ in range(repeats):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
        res.update(times_ms=[t * 1e3 for t in times], median_ms=statistics.median(times) * 1e3,
                   min_ms=min(times) * 1e3)
        if what == "time+cpu":
            # the work itself: one thread, CPU time of the calling thread (which runs all
            # of it), so other jobs on the machine change it little
            if op in TORCH_OPS:
                torch.set_num_threads(1)
            else:
                numba.set_num_threads(1)
            run()
            cpu = []
            for _ in range(repeats):
                t = time.thread_time()
                run()
                cpu.append(time.thread_time() - t)
            res["cpu_ms"] = [t * 1e3 for t in cpu]
    print(json.dumps(res))


# --------------------------------------------------------------------------- parent
def have_torch():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def run_child(name, what, repeats, nthreads):
    env = dict(os.environ, PACND_JIT="eager", OMP_NUM_THREADS=str(nthreads),
               NUMBA_NUM_THREADS=str(max(nthreads, 1)))
    proc = subprocess.run([sys.executable, __file__, "--child", name, "--what", what,
                           "--repeats", str(repeats), "--threads", str(nthreads)],
                          capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"case {name!r} ({what}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


LOAD_SCRIPT = """
import os, numpy as np
a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
while True:
    a = (a @ a.T) * np.float32(1e-3)
"""


class MachineLoad:
    """A second process keeping every core busy (a NumPy matmul loop, one BLAS thread per
    core) while the block runs."""

    def __enter__(self):
        n = str(os.cpu_count() or 1)
        env = dict(os.environ, OPENBLAS_NUM_THREADS=n, OMP_NUM_THREADS=n, MKL_NUM_THREADS=n)
        self.proc = subprocess.Popen([sys.executable, "-c", LOAD_SCRIPT], env=env)
        time.sleep(1.0)                          # BLAS threads up and running
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def summarize(res):
    t = res["times_ms"]
    res["median_ms"] = statistics.median(t)
    res["min_ms"] = min(t)
    if res.get("cpu_ms"):
        res["cpu_median_ms"] = statistics.median(res["cpu_ms"])
    return res


def cpu_model():
    """The CPU's model name and its vector extensions (Linux), else the platform's
    processor string."""
    name, simd = platform.processor() or None, []
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    simd = [f for f in ("avx512f", "avx2", "fma") if f in flags]
                    break
    except OSError:
        pass
    return f"{name} ({', '.join(simd)})" if simd else name


def versions():
    import numba
    out = {"python": platform.python_version(), "numpy": np.__version__,
           "numba": numba.__version__, "cpus": os.cpu_count(), "machine": platform.machine(),
           "cpu_model": cpu_model(), "platform": platform.platform(),
           "date": datetime.datetime.now().isoformat(timespec="seconds")}
    out["env"] = {k: v for k, v in os.environ.items()
                  if k.startswith(("OPENBLAS", "OMP_", "GOMP", "NUMBA_", "MKL_", "PACND"))}
    try:
        import torch
        out["torch"] = torch.__version__
    except ImportError:
        out["torch"] = None
    try:
        import pacnd
        out["pacnd"] = getattr(pacnd, "__version__", None)
        from pacnd.engines import cpu
        out["tile_bytes"] = cpu.TILE_BYTES
    except ImportError:
        pass
    return out


def _fmt_table(results, loaded):
    lines = ["| case | median ms | min ms | vs torch | vs reference | 1-thread CPU ms "
             "| CPU vs torch | working MB | baseline |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in results.items():
        ratio = f"{r['ratio']:.2f}x" if "ratio" in r else "-"
        rref = f"{r['ref_ratio']:.3f}x" if "ref_ratio" in r else "-"
        mem = f"{r['working_mb']:.1f}" if "working_mb" in r else "-"
        cpu = f"{r['cpu_median_ms']:.1f}" if "cpu_median_ms" in r else "-"
        rcpu = f"{r['cpu_ratio']:.2f}x" if "cpu_ratio" in r else "-"
        lines.append(f"| {name} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | {ratio} | {rref} "
                     f"| {cpu} | {rcpu} | {mem} | {r.get('baseline', '')} |")
    if loaded:
        lines += ["", "| under load | unloaded median ms | loaded median ms | slowdown |",
                  "|---|---:|---:|---:|"]
        for name, v in loaded.items():
            lines.append(f"| {name} | {v['unloaded_ms']:.1f} | {v['loaded_ms']:.1f} | "
                         f"{v['slowdown']:.2f}x |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer cases and repeats (smoke run)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per round and case")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds over all cases (each case in a fresh process per round)")
    ap.add_argument("--threads", type=int, default=2, help="threads for pacnd and torch (2)")
    ap.add_argument("--no-load", action="store_true", help="skip the loaded-machine rows")
    ap.add_argument("--out", default=None, help="JSON path (default results/cpu_pac.json)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--what", default="time", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.what, args.repeats or 5, args.threads)
        return 0
    repeats = args.repeats or (3 if args.quick else 5)
    names = list(QUICK if args.quick else CASES)
    torch_ok = have_torch()
    if not torch_ok:
        names = [n for n in names if CASES[n][0] not in TORCH_OPS]
        print("torch does not import: no baselines; ratios are left out")
    loaded_names = [] if (args.no_load or not torch_ok) else list(LOADED)
    rounds = args.rounds or (1 if args.quick else 5)
    load0 = os.getloadavg()
    print(f"load average at start: {load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f} on "
          f"{os.cpu_count()} CPUs; {args.threads} threads per case")
    results = {}
    for name in names:
        results[name] = run_child(name, "mem", 1, args.threads)
        results[name]["times_ms"] = []
        print(f"  memory {name:38s} working {results[name]['working_mb']:8.1f} MB", flush=True)
    for name in loaded_names:
        results[name] = {"case": name, "times_ms": []}
    # time in rounds over all cases, so that every case sees the same changes of machine load
    for rnd in range(rounds):
        for name in names:
            cpu_work = not name.startswith("reference")
            r = run_child(name, "time+cpu" if cpu_work else "time", repeats, args.threads)
            results[name]["times_ms"] += r["times_ms"]
            if cpu_work:
                results[name].setdefault("cpu_ms", []).extend(r["cpu_ms"])
            results[name]["threads"] = r["threads"]
            print(f"  round {rnd + 1}/{rounds} {name:38s} median {r['median_ms']:8.1f} ms",
                  flush=True)
        if loaded_names:
            with MachineLoad():
                for name in loaded_names:
                    r = run_child(name, "time", repeats, args.threads)
                    results[name]["times_ms"] += r["times_ms"]
                    results[name]["threads"] = r["threads"]
                    print(f"  round {rnd + 1}/{rounds} {name:38s} median "
                          f"{r['median_ms']:8.1f} ms", flush=True)
    for r in results.values():
        summarize(r)
    for name, r in results.items():
        if name in LOADED:
            continue
        base, ref = CASES[name][2:]
        if base and base in results:
            r["baseline"] = base
            r["ratio"] = r["median_ms"] / results[base]["median_ms"]
            r["ratio_min"] = r["min_ms"] / results[base]["min_ms"]
            if "cpu_median_ms" in r and "cpu_median_ms" in results[base]:
                r["cpu_ratio"] = r["cpu_median_ms"] / results[base]["cpu_median_ms"]
        if ref and ref in results:
            r["reference"] = ref
            r["ref_ratio"] = r["median_ms"] / results[ref]["median_ms"]
    loaded = {}
    for name in loaded_names:
        twin = LOADED[name]
        if twin in results:
            loaded[name] = {"unloaded_ms": results[twin]["median_ms"],
                            "loaded_ms": results[name]["median_ms"],
                            "slowdown": results[name]["median_ms"] / results[twin]["median_ms"]}
    # ------------------------------------------------------------------ table
    table = _fmt_table(results, loaded)
    print()
    print(table)
    checks = {}

    def ratio_check(label, name, key, target):
        if name in results and key in results[name]:
            checks[label] = results[name][key] <= target

    ratio_check("pac_conv fwd <= 1.3x torch conv2d fwd", "pac_conv fwd", "ratio",
                TARGETS["fwd_ratio"])
    ratio_check("pac_conv fwd+bwd <= 2.0x torch conv2d fwd+bwd", "pac_conv fwd+bwd", "ratio",
                TARGETS["fwdbwd_ratio"])
    ratio_check("pac_conv fwd+bwd <= 0.1x the reference implementation", "pac_conv fwd+bwd",
                "ref_ratio", TARGETS["fwdbwd_ref_ratio"])
    ratio_check("pac_conv_transpose fwd+bwd <= 2.5x torch conv_transpose2d fwd+bwd",
                "pac_conv_transpose fwd+bwd", "ratio", TARGETS["transpose_fwdbwd_ratio"])
    # the same targets on the single-thread CPU work (little affected by other jobs)
    ratio_check("1-thread CPU work: pac_conv fwd <= 1.3x torch conv2d fwd", "pac_conv fwd",
                "cpu_ratio", TARGETS["fwd_ratio"])
    ratio_check("1-thread CPU work: pac_conv fwd+bwd <= 2.0x torch conv2d fwd+bwd",
                "pac_conv fwd+bwd", "cpu_ratio", TARGETS["fwdbwd_ratio"])
    ratio_check("1-thread CPU work: pac_conv_transpose fwd+bwd <= 2.5x torch's",
                "pac_conv_transpose fwd+bwd", "cpu_ratio", TARGETS["transpose_fwdbwd_ratio"])
    pac = [r for n, r in results.items()
           if n not in LOADED and CASES[n][0] not in TORCH_OPS and "working_mb" in r]
    checks["working memory <= 64 MB (every pacnd case)"] = all(
        r["working_mb"] <= TARGETS["mem_mb"] for r in pac)
    if len(loaded) == 2:
        pac_l, torch_l = (loaded[n]["slowdown"] for n in LOADED)
        checks["under load: pac_conv's slowdown <= torch conv2d's"] = pac_l <= torch_l
    print()
    for k, v in checks.items():
        print(f"  [{'ok' if v else 'MISSED'}] {k}")
    load1 = os.getloadavg()
    out = {
        "config": {"batch": B, "channels": C, "kernel": K, "guide_channels": CG,
                   "dtype": "float32", "conv": "256x256, padding 2",
                   "conv_transpose": "128x128 -> 256x256, stride 2, padding 2, output_padding 1",
                   "threads": args.threads, "repeats_per_round": repeats, "rounds": rounds,
                   "quick": args.quick},
        "environment": dict(versions(), load_average_at_start=load0,
                            load_average_at_end=load1),
        "targets": TARGETS, "checks": checks, "loaded_machine": loaded, "results": results,
        "method": "fresh subprocess per case and round (rounds interleave the cases; the "
                  "loaded cases run in every round with a NumPy matmul process on every core "
                  "started just before them); median wall time over all rounds after a "
                  "full-size warm-up per process; working memory = peak RSS during one "
                  "full-size call minus RSS before it minus output bytes (inputs allocated "
                  "before; glibc mmap threshold fixed at 64 KiB)",
    }
    path = args.out or (None if args.quick else str(HERE / "results" / "cpu_pac.json"))
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as fh:
            json.dump(out, fh, indent=2)
        md = Path(path).with_suffix(".md")
        md.write_text(
            f"# pacnd CPU engine vs PyTorch (`benchmarks/bench_cpu_pac.py`)\n\n"
            f"{out['environment']['date']}, {out['environment']['cpu_model']}, "
            f"{os.cpu_count()} CPUs, {args.threads} threads, float32; load average "
            f"{load0[0]:.1f} at start, {load1[0]:.1f} at end (a shared machine: compare "
            f"ratios within the run). Medians over {rounds} rounds x {repeats} calls, each "
            f"case in a fresh process per round.\n\n{table}\n\n"
            + "\n".join(f"- [{'ok' if v else 'MISSED'}] {k}" for k, v in checks.items())
            + "\n")
        print(f"\nwrote {path} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
