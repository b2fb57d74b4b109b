"""Benchmark: the Numba CPU engine on the issue's PAC shapes, against PyTorch.

Cases (float32, B = 1, 32 -> 32 channels, 5x5 kernel):

* ``pac_conv``: padding 2, 256x256 input, guide 16 channels at 256x256 —
  forward, and forward + backward (vjps for input, weight, bias, guide);
* ``pac_conv_transpose``: 2x upsampling, stride 2, padding 2,
  output_padding 1, 128x128 -> 256x256, guide 16 channels at 256x256 —
  forward, and forward + backward;
* ``pacnd.conv`` / ``pacnd.conv_transpose`` (plain, no K) on the same shapes;
* baseline: PyTorch ``conv2d`` / ``conv_transpose2d`` of the same shapes
  (forward; forward + ``backward()`` for input, weight, bias), when torch
  imports. Torch is a benchmarking aid only, never a pacnd dependency.

Method:

* every case runs in its **own fresh subprocess** (so the Numba/OpenMP and
  torch/OpenMP thread pools never share a process, and memory is measured
  from a clean state);
* **time**: ``--rounds`` rounds over all cases (so that pacnd and torch see
  the same changes of machine load); per round and case a fresh subprocess
  makes a small call of the same op (loads the Numba kernels from the on-disk
  cache, or compiles them, and starts the thread pools), one full-size
  warm-up call, then ``--repeats`` timed calls. The median (and min) over all
  rounds is reported; ``ratio`` = median / median of the case's torch
  baseline measured in the same run;
* **peak working memory** (another subprocess): glibc's mmap threshold is
  fixed at 64 KiB (``mallopt``) so that every array is mapped on allocation
  and unmapped on free — RSS then tracks live memory instead of reusing
  resident heap pages; a small call loads kernels and starts the pools; the
  full-size inputs are made; the peak-RSS counter is reset
  (``echo 5 > /proc/self/clear_refs``), RSS is read, the op runs once at full
  size, and ``VmHWM - RSS_before - output bytes`` is the memory the op needed
  above its inputs and its outputs (forward output and returned gradients).
  RSS sees every allocation — NumPy, Numba's NRT (which ``tracemalloc`` does
  not see), OpenBLAS buffers, torch/oneDNN scratch. Where clear_refs is not
  writable the peak is sampled from a thread every ~0.5 ms instead (reported
  as ``mem_method``).

Machine load: OpenBLAS's multi-threaded GEMM synchronises its threads several
times per call; when any other process competes for the cores (even a niced
one) each GEMM waits for descheduled threads. On the 2-core VM with one
background training job, a lone NumPy 32x800x2304 sgemm took ~32-44 ms
instead of ~0.6 ms, and pac_conv forward ~0.9 s instead of ~30 ms (torch's
oneDNN degrades far less). Compare numbers only from runs on an idle machine
(the JSON records the load averages and the BLAS/OpenMP environment; the
script warns when the machine is busy), or run with ``OPENBLAS_NUM_THREADS=1``
on a shared machine.

Targets (from the issue): pac_conv forward <= 2x torch conv2d forward,
forward + backward <= 3x torch conv2d forward + backward, working memory
<= 64 MB. Anchor on this machine type quoted in the issue: torch conv2d 25 ms
forward / 100 ms forward + backward; the authors' reference PAC 341 ms /
1777 ms with 1.17 GB. Both the in-run ratios and the anchor are printed.

Run:   python benchmarks/bench_cpu_pac.py [--quick] [--repeats N]
Writes benchmarks/results/cpu_pac.json (``--quick`` writes nothing unless
``--out`` is given).
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
ANCHOR = {"torch_fwd_ms": 25.0, "torch_fwdbwd_ms": 100.0, "ref_pac_fwd_ms": 341.0,
          "ref_pac_fwdbwd_ms": 1777.0, "ref_pac_mem_mb": 1170.0}
TARGETS = {"fwd_ratio": 2.0, "fwdbwd_ratio": 3.0, "mem_mb": 64.0}

# name -> (op, mode, baseline case)
CASES = {
    "pac_conv fwd": ("pac_conv", "fwd", "torch conv2d fwd"),
    "pac_conv fwd+bwd": ("pac_conv", "fwdbwd", "torch conv2d fwd+bwd"),
    "pac_conv_transpose fwd": ("pac_conv_transpose", "fwd", "torch conv_transpose2d fwd"),
    "pac_conv_transpose fwd+bwd": ("pac_conv_transpose", "fwdbwd",
                                   "torch conv_transpose2d fwd+bwd"),
    "conv fwd": ("conv", "fwd", "torch conv2d fwd"),
    "conv fwd+bwd": ("conv", "fwdbwd", "torch conv2d fwd+bwd"),
    "conv_transpose fwd": ("conv_transpose", "fwd", "torch conv_transpose2d fwd"),
    "torch conv2d fwd": ("torch_conv2d", "fwd", None),
    "torch conv2d fwd+bwd": ("torch_conv2d", "fwdbwd", None),
    "torch conv_transpose2d fwd": ("torch_conv_transpose2d", "fwd", None),
    "torch conv_transpose2d fwd+bwd": ("torch_conv_transpose2d", "fwdbwd", None),
}
QUICK = ["pac_conv fwd", "pac_conv fwd+bwd", "pac_conv_transpose fwd", "conv fwd",
         "torch conv2d fwd", "torch conv2d fwd+bwd"]


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
    transposed = op in ("pac_conv_transpose", "conv_transpose", "torch_conv_transpose2d")
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
    if op.startswith("torch"):
        import torch

        tx, tw, tb, tg = (torch.from_numpy(a) for a in (x, w, b, g))
        if op == "torch_conv2d":
            def f(x_, w_, b_):
                return torch.nn.functional.conv2d(x_, w_, b_, padding=2)
        else:
            def f(x_, w_, b_):
                return torch.nn.functional.conv_transpose2d(x_, w_, b_, stride=2, padding=2,
                                                            output_padding=1)
        if mode == "fwd":
            def run():
                with torch.no_grad():
                    return [f(tx, tw, tb)]
        else:
            def run():
                xs, ws, bs = (t.detach().requires_grad_(True) for t in (tx, tw, tb))
                y = f(xs, ws, bs)
                y.backward(tg)
                return [y.detach(), xs.grad, ws.grad, bs.grad]
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


def child(name, what, repeats):
    """Run one case in this (fresh) process; print one JSON line."""
    op, mode, _ = CASES[name]
    libc = _fixed_mmap_threshold() if what == "mem" else None
    if op.startswith("torch"):
        import torch
        threads = torch.get_num_threads()
    else:
        import numba

        import pacnd.engines.cpu  # noqa: F401 - starts Numba's pool (before anything else does)
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
    print(json.dumps(res))


# --------------------------------------------------------------------------- parent
def have_torch():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def run_child(name, what, repeats):
    proc = subprocess.run([sys.executable, __file__, "--child", name, "--what", what,
                           "--repeats", str(repeats)],
                          capture_output=True, text=True, env=dict(os.environ), timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"case {name!r} ({what}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(res):
    t = res["times_ms"]
    res["median_ms"] = statistics.median(t)
    res["min_ms"] = min(t)
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer cases and repeats (smoke run)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per round and case")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds over all cases (each case in a fresh process per round)")
    ap.add_argument("--out", default=None, help="JSON path (default results/cpu_pac.json)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--what", default="time", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.what, args.repeats or 5)
        return 0
    repeats = args.repeats or (3 if args.quick else 5)
    names = list(QUICK if args.quick else CASES)
    torch_ok = have_torch()
    if not torch_ok:
        names = [n for n in names if not n.startswith("torch")]
        print("torch does not import: no baseline; ratios are left out")
    rounds = args.rounds or (1 if args.quick else 3)
    load0 = os.getloadavg()
    if load0[0] > 0.5 * (os.cpu_count() or 1):
        print(f"WARNING: the machine is busy (load average {load0[0]:.1f} on {os.cpu_count()} "
              "CPUs); multi-threaded BLAS timings will be far off (see the module doc)")
    results = {}
    for name in names:
        results[name] = run_child(name, "mem", 1)
        results[name]["times_ms"] = []
        print(f"  memory {name:32s} working {results[name]['working_mb']:7.1f} MB", flush=True)
    # time in rounds over all cases, so that every case sees the same changes of machine load
    for rnd in range(rounds):
        for name in names:
            r = run_child(name, "time", repeats)
            results[name]["times_ms"] += r["times_ms"]
            results[name]["threads"] = r["threads"]
            print(f"  round {rnd + 1}/{rounds} {name:32s} median {r['median_ms']:8.1f} ms",
                  flush=True)
    for r in results.values():
        summarize(r)
    for name, r in results.items():
        base = CASES[name][2]
        if base and base in results:
            r["baseline"] = base
            r["ratio"] = r["median_ms"] / results[base]["median_ms"]
            r["ratio_min"] = r["min_ms"] / results[base]["min_ms"]
    # ------------------------------------------------------------------ table
    print()
    print(f"{'case':32s} {'median ms':>10s} {'min ms':>9s} {'ratio':>7s} {'work MB':>8s}  baseline")
    for name, r in results.items():
        ratio = f"{r['ratio']:.2f}x" if "ratio" in r else "-"
        print(f"{name:32s} {r['median_ms']:10.1f} {r['min_ms']:9.1f} {ratio:>7s} "
              f"{r['working_mb']:8.1f}  {r.get('baseline', '')}")
    checks = {}
    if "pac_conv fwd" in results:
        r = results["pac_conv fwd"]
        checks["pac_conv fwd <= 50 ms (2x anchor torch 25 ms)"] = r["median_ms"] <= 2 * ANCHOR[
            "torch_fwd_ms"]
        if "ratio" in r:
            checks["pac_conv fwd <= 2x torch (this run)"] = r["ratio"] <= TARGETS["fwd_ratio"]
    if "pac_conv fwd+bwd" in results:
        r = results["pac_conv fwd+bwd"]
        checks["pac_conv fwd+bwd <= 300 ms (3x anchor torch 100 ms)"] = r["median_ms"] <= 3 * \
            ANCHOR["torch_fwdbwd_ms"]
        if "ratio" in r:
            checks["pac_conv fwd+bwd <= 3x torch (this run)"] = r["ratio"] <= TARGETS[
                "fwdbwd_ratio"]
    pac = [r for n, r in results.items() if not n.startswith("torch")]
    checks["working memory <= 64 MB (every pacnd case)"] = all(
        r["working_mb"] <= TARGETS["mem_mb"] for r in pac)
    print()
    for k, v in checks.items():
        print(f"  [{'ok' if v else 'MISSED'}] {k}")
    out = {
        "config": {"batch": B, "channels": C, "kernel": K, "guide_channels": CG,
                   "dtype": "float32", "conv": "256x256, padding 2",
                   "conv_transpose": "128x128 -> 256x256, stride 2, padding 2, output_padding 1",
                   "repeats_per_round": repeats, "rounds": rounds, "quick": args.quick},
        "environment": dict(versions(), load_average_at_start=load0,
                            load_average_at_end=os.getloadavg()),
        "anchor_from_issue": ANCHOR, "targets": TARGETS, "checks": checks,
        "results": results,
        "method": "fresh subprocess per case and round (rounds interleave the cases); median "
                  "wall time over all rounds after a full-size warm-up per process; working "
                  "memory = peak RSS during one full-size call minus RSS before it minus output "
                  "bytes (inputs allocated before; glibc mmap threshold fixed at 64 KiB)",
    }
    path = args.out or (None if args.quick else str(HERE / "results" / "cpu_pac.json"))
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as fh:
            json.dump(out, fh, indent=2)
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
