"""GPU benchmark of the graph-level workloads: the joint-upsampling network's
training step and PAC-CRF (needs CuPy and a CUDA GPU).

Rows, for each GPU engine (``cupy``: CUDA C RawKernels, ``cuda``: Numba CUDA),
float32, parameters moved with ``model.map_arrays(cupy.asarray)``:

``upsampling train step``
    :class:`pacnd.models.PacJointUpsample` (8x, the standard network),
    B=4 crops of 256x256: forward, :func:`pacnd.models.upsampling_loss`,
    backward, Adam step.
``upsampling fwd+bwd 480x640``
    the same network on one 480x640 image, forward + backward (the size at
    which the authors' code needs ~4.4 GB on the GPU).
``PAC-CRF inference``
    :func:`pacnd.crf.dense_crf_mapping` (21 labels, 5 mean-field steps, the
    fully-connected CRF's defaults) on a 512x384 image, the graph path under
    ``no_grad``.
``PAC-CRF learning step``
    the learnable copy (:func:`pacnd.crf.learnable`) on a 192x192 crop (the
    crop :func:`pacnd.crf.fit_crf` uses): forward, :func:`pacnd.crf.learn.crf_loss`
    (cross-entropy), backward, Adam step.

Baselines in the same run: for the upsampling network, the same network and
weights in PyTorch on the same GPU computed the way the authors' reference
implementation does it (``benchmarks/torch_pac_net.py``: zero-inserted input
unfolded into full-size columns, autograd backward; TF32 off; its output is
checked against pacnd's first); for PAC-CRF, pacnd's CPU paths on this
machine's cores (inference: the fast path :meth:`PacCRF.infer`; learning step:
the graph path on NumPy), whose results the GPU's are checked against.

Per row: median and best time (CUDA events; wall clock for CPU rows), peak
GPU memory drawn above what the inputs and parameters hold (a CuPy memory hook;
``torch.cuda.max_memory_allocated`` for PyTorch), and the ratio to the row's
baseline. Writes ``benchmarks/results/gpu_graph_<device>.json`` and prints a
table; progress goes to stdout as it runs.

    python benchmarks/bench_gpu_graph.py [--repeat 5] [--engines cupy,cuda] [--small]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

# time the compiled kernels: compile them in-process at the first (warm-up) call instead
# of serving first calls with the reference engine (pacnd/engines/cpu/coldstart.py)
os.environ.setdefault("PACND_JIT", "eager")

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from gpu_common import (device_name, device_tag, peak_extra_bytes,  # noqa: E402
                        time_gpu, torch_peak_extra_bytes)

N_LABELS = 21


def _time_cpu(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def _rel_err(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


# ------------------------------------------------------------------ upsampling
def upsampling_batch(rng, B, H, W, factor=8):
    """A random batch in the layout of :func:`pacnd.models.upsampling_loss`."""
    return {"low": rng.random((B, 1, H // factor, W // factor), dtype=np.float32),
            "guide": rng.random((B, 3, H, W), dtype=np.float32),
            "target": rng.random((B, 1, H, W), dtype=np.float32),
            "mask": np.ones((B, 1, H, W), np.float32)}


def pacnd_upsampling_step(cp, batch, train):
    """A closure running one upsampling step on the GPU (fresh model per call of
    this factory, weights of seed 0)."""
    from pacnd.models import PacJointUpsample, upsampling_loss  # noqa: PLC0415
    from pacnd.optim import Adam  # noqa: PLC0415

    m = PacJointUpsample(8, rng=0).map_arrays(cp.asarray)
    gb = {k: cp.asarray(v) for k, v in batch.items()}
    opt = Adam(m.parameters(), lr=1e-4)

    def step():
        for p in m.parameters():
            p.grad = None
        loss, _ = upsampling_loss(m, gb, border=6)
        loss.backward()
        if train:
            opt.step()
        return loss

    return step


def torch_upsampling_step(batch, train):
    """The same step in PyTorch on the GPU, computed the reference's way."""
    import torch  # noqa: PLC0415
    from torch_pac_net import from_pacnd  # noqa: PLC0415

    from pacnd.models import PacJointUpsample  # noqa: PLC0415

    tm = from_pacnd(PacJointUpsample(8, rng=0)).cuda()
    tb = {k: torch.as_tensor(v, device="cuda") for k, v in batch.items()}
    opt = torch.optim.Adam(tm.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        d = (tm(tb["low"], tb["guide"]) - tb["target"]) * tb["mask"]
        loss = (d[..., 6:-6, 6:-6] ** 2).mean()
        loss.backward()
        if train:
            opt.step()
        return loss

    return tm, step


def check_torch_matches(cp, batch):
    """Relative difference of the PyTorch rebuild's output from pacnd's, on the GPU."""
    import torch  # noqa: PLC0415
    from torch_pac_net import from_pacnd  # noqa: PLC0415

    from pacnd.autograd import no_grad  # noqa: PLC0415
    from pacnd.models import PacJointUpsample  # noqa: PLC0415

    m = PacJointUpsample(8, rng=0)
    tm = from_pacnd(m).cuda()
    m.map_arrays(cp.asarray)
    with no_grad():
        ref = cp.asnumpy(m(cp.asarray(batch["low"]), cp.asarray(batch["guide"])).data)
    with torch.no_grad():
        got = tm(torch.as_tensor(batch["low"], device="cuda"),
                 torch.as_tensor(batch["guide"], device="cuda")).cpu().numpy()
    return _rel_err(got, ref)


def torch_row(what, fn, repeat, cp):
    peak = torch_peak_extra_bytes(fn)
    med, best = time_gpu(cp, fn, repeat)
    return {"library": "pytorch (reference method)", "engine": "torch", "workload": what,
            "median_s": med, "min_s": best, "peak_extra_MiB": peak / 2**20}


# ------------------------------------------------------------------ PAC-CRF
def crf_inputs(rng, H, W):
    """Unary logits (1, L, H, W), an RGB image (1, 3, H, W) on 0..255 and labels."""
    lab = np.zeros((H, W), np.int64)
    for _ in range(12):  # blocky label map, noisy unaries around it
        y, x = rng.integers(0, H), rng.integers(0, W)
        lab[y:y + H // 3, x:x + W // 3] = rng.integers(0, N_LABELS)
    img = (lab[None] * 11 % 256 + rng.normal(0, 12, (3, H, W))).clip(0, 255)
    U = rng.normal(0, 1, (N_LABELS, H, W))
    U[lab, np.arange(H)[:, None], np.arange(W)] += 1.5
    return (U[None].astype(np.float32), img[None].astype(np.float32), lab[None])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--engines", default="cupy,cuda")
    ap.add_argument("--small", action="store_true", help="quarter-size problems (quick check)")
    ap.add_argument("--out", default=None, help="JSON path (default: results/gpu_graph_<device>.json)")
    args = ap.parse_args(argv)

    import pacnd  # noqa: PLC0415
    from pacnd._cupy import require_gpu  # noqa: PLC0415
    from pacnd.autograd import no_grad  # noqa: PLC0415
    from pacnd.crf import dense_crf_mapping, learnable  # noqa: PLC0415
    from pacnd.crf.learn import crf_loss  # noqa: PLC0415
    from pacnd.optim import Adam  # noqa: PLC0415

    cp = require_gpu("cupy")
    dev = device_name(cp)
    engines = [e for e in args.engines.split(",") if e]
    div = 2 if args.small else 1
    rng = np.random.default_rng(0)
    rows = []

    def show(r):
        rows.append(r)
        print(f"{r['library'] + ' ' + r['engine']:<34} {r['workload']:<28} "
              f"{r['median_s'] * 1e3:10.1f} ms  (best {r['min_s'] * 1e3:9.1f})  "
              f"peak extra {r.get('peak_extra_MiB', float('nan')):8.1f} MiB", flush=True)

    # ---------------------------------------------------------- upsampling
    work = {"upsampling train step": (upsampling_batch(rng, 4, 256 // div, 256 // div), True),
            "upsampling fwd+bwd 480x640": (upsampling_batch(rng, 1, 480 // div, 640 // div),
                                           False)}
    try:
        import torch  # noqa: PLC0415

        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        have_torch = torch.cuda.is_available()
    except ImportError:
        have_torch = False
    checks = {}
    for engine in engines:
        with pacnd.use_engine(engine):
            if have_torch:
                checks[f"torch vs pacnd {engine}"] = check_torch_matches(
                    cp, upsampling_batch(np.random.default_rng(1), 1, 64, 64))
                print(f"PyTorch rebuild vs pacnd ({engine}): relative difference "
                      f"{checks[f'torch vs pacnd {engine}']:.1e}", flush=True)
            for what, (batch, train) in work.items():
                t0 = time.time()
                step = pacnd_upsampling_step(cp, batch, train)
                step()
                cp.cuda.Device().synchronize()
                print(f"{engine}: {what}: first call {time.time() - t0:.1f} s", flush=True)
                held = sum(a.nbytes for a in batch.values())
                peak = peak_extra_bytes(cp, step)
                med, best = time_gpu(cp, step, args.repeat)
                show({"library": "pacnd", "engine": engine, "workload": what, "median_s": med,
                      "min_s": best, "peak_extra_MiB": peak / 2**20,
                      "inputs_MiB": held / 2**20})
    if have_torch:
        for what, (batch, train) in work.items():
            _, step = torch_upsampling_step(batch, train)
            show(torch_row(what, step, args.repeat, cp))
    else:
        print("PyTorch with CUDA is not available: no reference-method baseline rows")

    # ---------------------------------------------------------- PAC-CRF
    H, W = 384 // div, 512 // div
    U, img, lab = crf_inputs(rng, H, W)
    ch = cw = 192 // div
    Uc, fc, lc = (np.ascontiguousarray(a[..., :ch, :cw]) for a in (U, img, lab))
    crf_cpu = dense_crf_mapping((H, W), N_LABELS)
    t0 = time.time()
    want = crf_cpu.infer(U, img, output="log_Q")
    print(f"CPU fast path: first call {time.time() - t0:.1f} s", flush=True)
    med, best = _time_cpu(lambda: crf_cpu.infer(U, img, output="log_Q"), args.repeat)
    show({"library": f"pacnd CPU fast path ({os.cpu_count()} cores)", "engine": "numba",
          "workload": "PAC-CRF inference", "median_s": med, "min_s": best})

    def crf_train_step(crf, batch):
        opt = Adam([p for p in crf.parameters() if p.requires_grad], lr=1e-3)

        def step():
            crf.zero_grad()
            loss = crf_loss(crf, batch)
            loss.backward()
            opt.step()
            return loss

        return step

    learn_cpu = learnable(dense_crf_mapping((ch, cw), N_LABELS))
    cpu_step = crf_train_step(learn_cpu, (Uc, fc, lc))
    med, best = _time_cpu(cpu_step, max(1, args.repeat // 2))
    show({"library": f"pacnd CPU graph ({os.cpu_count()} cores)", "engine": "numba",
          "workload": "PAC-CRF learning step", "median_s": med, "min_s": best})
    learn_ref = learnable(dense_crf_mapping((ch, cw), N_LABELS))
    loss_ref = float(crf_loss(learn_ref, (Uc, fc, lc)).item())

    gU, gimg = cp.asarray(U), cp.asarray(img)
    gbatch = tuple(cp.asarray(a) for a in (Uc, fc, lc))
    for engine in engines:
        with pacnd.use_engine(engine):
            crf = dense_crf_mapping((H, W), N_LABELS).map_arrays(cp.asarray)

            def infer(crf=crf):
                with no_grad():
                    return crf(gU, gimg)

            t0 = time.time()
            got = cp.asnumpy(infer().data)
            checks[f"PAC-CRF logQ {engine} vs CPU"] = _rel_err(got, want)
            print(f"{engine}: PAC-CRF inference: first call {time.time() - t0:.1f} s, "
                  f"relative difference from the CPU fast path "
                  f"{checks[f'PAC-CRF logQ {engine} vs CPU']:.1e}", flush=True)
            peak = peak_extra_bytes(cp, infer)
            med, best = time_gpu(cp, infer, args.repeat)
            show({"library": "pacnd", "engine": engine, "workload": "PAC-CRF inference",
                  "median_s": med, "min_s": best, "peak_extra_MiB": peak / 2**20})

            learn = learnable(dense_crf_mapping((ch, cw), N_LABELS)).map_arrays(cp.asarray)
            loss0 = float(crf_loss(learn, gbatch).item())
            checks[f"PAC-CRF loss {engine} vs CPU"] = abs(loss0 - loss_ref) / abs(loss_ref)
            step = crf_train_step(learn, gbatch)
            step()  # compile the backward kernels
            peak = peak_extra_bytes(cp, step)
            med, best = time_gpu(cp, step, args.repeat)
            show({"library": "pacnd", "engine": engine, "workload": "PAC-CRF learning step",
                  "median_s": med, "min_s": best, "peak_extra_MiB": peak / 2**20})

    # ---------------------------------------------------------- ratios, table
    for r in rows:
        if r["library"] != "pacnd":
            continue
        base = [b for b in rows if b["workload"] == r["workload"] and b["library"] != "pacnd"]
        if base:
            r["baseline"] = base[0]["library"]
            r["time_vs_baseline"] = r["median_s"] / base[0]["median_s"]
            if base[0].get("peak_extra_MiB"):
                r["memory_vs_baseline"] = r["peak_extra_MiB"] / base[0]["peak_extra_MiB"]
    print(f"\n{dev}: pacnd against the baseline of each workload (same run)")
    print(f"{'workload':<28} {'engine':<6} {'median ms':>10} {'baseline':>10} {'time x':>7} "
          f"{'peak MiB':>9} {'mem x':>6}")
    for r in rows:
        if r["library"] == "pacnd":
            b = r.get("time_vs_baseline")
            mx = r.get("memory_vs_baseline")
            bm = r["median_s"] / b if b else float("nan")
            print(f"{r['workload']:<28} {r['engine']:<6} {r['median_s'] * 1e3:10.1f} "
                  f"{bm * 1e3:10.1f} {b if b else float('nan'):7.2f} "
                  f"{r['peak_extra_MiB']:9.1f} {mx if mx else float('nan'):6.3f}")
    print("checks (relative differences):", json.dumps(checks))
    out = Path(args.out) if args.out else (
        HERE / "results" / f"gpu_graph_{device_tag(dev)}{'_small' if args.small else ''}.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "device": dev, "host": platform.node(), "cpu_cores": os.cpu_count(),
        "cupy": cp.__version__, "pacnd": pacnd.__version__, "small": args.small,
        "checks": checks, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
