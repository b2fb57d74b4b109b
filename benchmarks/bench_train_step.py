"""One Adam training step of a small PAC network: time, peak memory, graph overhead.

Network: 3 ``PacConv2d`` layers, 32 -> 32 channels, 5x5, padding 2, ReLU
between them, all guided by the same 3-channel image; MSE loss; float32;
input crop ``size x size`` (default 256), batch 1, CPU.

Two ways to run the same step:

``graph``   ``model(x, g)``, ``mse_loss``, ``loss.backward()``, ``Adam.step()``
            (pacnd.nn / pacnd.autograd / pacnd.optim);
``direct``  the same arithmetic written by hand on arrays: ``pacnd.pac_conv``
            forward, ``pacnd.pac_conv_vjp`` backward asking for the same
            gradients, the same fused ``adam_update`` — no Tensors, no graph.

The graph's overhead is ``(graph - direct) / direct`` of the median step time
(target < 5%); the steps of both variants are interleaved in one process so
that load from other processes hits both alike. For memory each variant runs
in its own subprocess so that its high water mark is its own: ``peak RSS`` is
the increase of the process's resident set during a measured step (VmHWM
reset through /proc/self/clear_refs after warm-up, Linux), ``traced`` the
peak of NumPy/Python allocations during a step
(tracemalloc; allocations inside Numba kernels are not traced).

Usage::

    python benchmarks/bench_train_step.py [--size 256] [--repeat 3] [--engine numba]

prints a table and writes ``benchmarks/results/train_step.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc

# time the compiled kernels: compile them in-process at the first (warm-up) call instead
# of serving first calls with the reference engine (pacnd/engines/cpu/coldstart.py)
os.environ.setdefault("PACND_JIT", "eager")

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CH, GUIDE_CH, K, LAYERS = 32, 3, 5, 3


def _data(size):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, CH, size, size)).astype(np.float32)
    g = rng.random((1, GUIDE_CH, size, size)).astype(np.float32)
    t = rng.standard_normal((1, CH, size, size)).astype(np.float32)
    return x, g, t


def _weights():
    from pacnd import nn

    return [nn.PacConv2d(CH, CH, K, padding=K // 2, rng=i) for i in range(LAYERS)]


def make_graph_step(size):
    import pacnd.functional as F
    from pacnd import nn, optim

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(_weights())

        def forward(self, x, g):
            for i, layer in enumerate(self.layers):
                x = layer(x, g)
                if i < LAYERS - 1:
                    x = F.relu(x)
            return x

    model = Net()
    opt = optim.Adam(model.parameters(), lr=1e-4)
    x, g, t = _data(size)

    def step():
        opt.zero_grad()
        loss = F.mse_loss(model(x, g), t)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def make_direct_step(size):
    import pacnd
    from pacnd.optim import adam_update

    layers = _weights()
    params = [(l.weight.data, l.bias.data) for l in layers]
    state = [[np.zeros_like(a), np.zeros_like(a)] for wb in params for a in wb]
    x, g, t = _data(size)
    count = [0]

    def step():
        acts = [x]
        for i, (w, b) in enumerate(params):
            y = pacnd.pac_conv(acts[-1], g, w, b, padding=K // 2)
            if i < LAYERS - 1:
                y = np.maximum(y, 0)
            acts.append(y)
        diff = acts[-1] - t
        loss = float((diff * diff).mean())
        grad = (2.0 / diff.size) * diff
        grads = []
        for i in range(LAYERS - 1, -1, -1):
            w, b = params[i]
            wrt = ("input", "weight", "bias") if i > 0 else ("weight", "bias")
            res = pacnd.pac_conv_vjp(grad, acts[i], g, w, b, padding=K // 2, wrt=wrt)
            grads.append((i, res["weight"], res["bias"]))
            if i > 0:
                grad = np.where(acts[i] > 0, res["input"], 0)
        count[0] += 1
        for i, gw, gb in grads:
            for j, (p, gp) in enumerate(((params[i][0], gw), (params[i][1], gb))):
                m, v = state[2 * i + j]
                adam_update(p, gp, m, v, lr=1e-4, beta1=0.9, beta2=0.999, eps=1e-8,
                            weight_decay=0.0, decoupled=False, step=count[0])
        return loss

    return step


def _rss_kib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _set_engine(engine):
    import pacnd

    if engine:
        pacnd.set_engine(engine)
    return pacnd.get_engine("cpu")


def timing_worker(size, repeat, engine):
    """Both variants in one process, steps interleaved (direct, graph, direct,
    ...) so that load from other processes affects both alike."""
    name = _set_engine(engine)
    steps = {"direct": make_direct_step(size), "graph": make_graph_step(size)}
    out = {"engine": name}
    for v, st in steps.items():
        t0 = time.perf_counter()
        st()  # warm-up (JIT compilation, first allocations)
        out[v] = {"warmup_s": time.perf_counter() - t0, "times_s": []}
    for _ in range(repeat):
        for v, st in steps.items():
            t0 = time.perf_counter()
            out[v]["loss"] = st()
            out[v]["times_s"].append(time.perf_counter() - t0)
    for v in steps:
        out[v]["median_s"] = statistics.median(out[v]["times_s"])
    return out


def memory_worker(variant, size, engine):
    """Peak memory of one step of one variant (its own process)."""
    _set_engine(engine)
    step = (make_graph_step if variant == "graph" else make_direct_step)(size)
    step()  # warm-up
    hwm_ok = _reset_hwm()
    rss0 = _rss_kib("VmRSS")
    step()
    hwm = _rss_kib("VmHWM")
    peak_rss = (hwm - rss0) * 1024 if (hwm_ok and hwm is not None and rss0 is not None) else None
    tracemalloc.start()
    step()
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"peak_rss_bytes": peak_rss, "traced_peak_bytes": traced}


def _sub(args):
    cmd = [sys.executable, os.path.abspath(__file__)] + args
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"benchmark worker {args} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(size=256, repeat=3, engine=None, subprocesses=True, out=None, quiet=False):
    """Run both variants; return (and optionally write) the results dict."""
    eng = ["--engine", engine] if engine else []
    common = ["--size", str(size), "--repeat", str(repeat)] + eng
    if subprocesses:
        timing = _sub(["--worker", "timing"] + common)
        mem = {v: _sub(["--worker", v] + common) for v in ("direct", "graph")}
    else:
        timing = timing_worker(size, repeat, engine)
        mem = {v: memory_worker(v, size, engine) for v in ("direct", "graph")}
    d = {**timing["direct"], **mem["direct"]}
    g = {**timing["graph"], **mem["graph"]}
    overhead = (g["median_s"] - d["median_s"]) / d["median_s"]
    per_round = [(tg - td) / td for td, tg in zip(d["times_s"], g["times_s"])]
    report = {
        "benchmark": "train_step",
        "network": f"{LAYERS} x PacConv2d({CH}->{CH}, {K}x{K}, padding {K // 2}) + ReLU, "
                   f"guide {GUIDE_CH} ch, MSE, Adam",
        "crop": [size, size], "batch": 1, "dtype": "float32", "repeat": repeat,
        "engine": timing["engine"],
        "machine": {"python": platform.python_version(), "numpy": np.__version__,
                    "cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg")
                    else None},
        "direct": d, "graph": g, "graph_overhead": overhead,
        "graph_overhead_per_round": per_round,
        "activation_bytes_one_layer": CH * size * size * 4,
    }
    if not quiet:
        mb = 1 / 2**20

        def fmt(v):
            return "n/a" if v is None else f"{v * mb:8.1f}"

        print(f"one Adam step, {report['network']}, {size}x{size} float32, engine "
              f"{timing['engine']}, median of {repeat} (interleaved)")
        print(f"{'variant':<8} {'time [s]':>9} {'warm-up [s]':>12} {'peak RSS [MiB]':>15} "
              f"{'traced [MiB]':>13}")
        for name, r in (("direct", d), ("graph", g)):
            print(f"{name:<8} {r['median_s']:9.3f} {r['warmup_s']:12.2f} "
                  f"{fmt(r['peak_rss_bytes']):>15} {fmt(r['traced_peak_bytes']):>13}")
        print(f"graph overhead: {100 * overhead:+.2f}% of the median (target < 5%); per round "
              f"{', '.join(f'{100 * o:+.1f}%' for o in per_round)}; one activation = "
              f"{report['activation_bytes_one_layer'] * mb:.1f} MiB")
    if out:
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as f:
            json.dump(report, f, indent=2)
    return report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--engine", default=None, help="CPU engine (default: pacnd's default)")
    ap.add_argument("--worker", choices=("timing", "graph", "direct"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "train_step.json"))
    args = ap.parse_args(argv)
    if args.worker == "timing":
        print(json.dumps(timing_worker(args.size, args.repeat, args.engine)))
        return
    if args.worker:
        print(json.dumps(memory_worker(args.worker, args.size, args.engine)))
        return
    run(args.size, args.repeat, args.engine, out=args.out)


if __name__ == "__main__":
    main()
