"""GPU benchmark of pac_conv on both GPU engines (needs a CUDA GPU and CuPy).

Problem (the reference layer of the design brief): B=4, 64 -> 64 channels,
5x5 kernel, 512x512, guide with 16 channels, float32, padding 2. For each of
``cupy`` (CUDA C), ``cupy:nopipeline`` (the same with the tiled GEMMs' register
prefetch off, ``config.PIPELINE = False``: an A/B of that choice in one run) and
``cuda`` (Numba): forward, and forward + backward (gradients of input, weight,
bias and guide); next to torch ``conv2d`` (cuDNN, TF32 off) when torch imports
— a plain convolution, the floor a PAC layer can hope for.

Reported per run: median time (CUDA events) and its ratio to cuDNN's, peak GPU
memory above the inputs and outputs (a CuPy memory hook) and its fraction of
the reference implementation's unfold buffers (2*B*C*k^2*H*W floats; target
<= 10%), and the achieved fraction of the FP32 and memory-bandwidth rooflines
(useful work: 2*B*Cout*Cin*k^2*H*W flops for the convolution forward, 3x that
for forward + backward; bytes: inputs + outputs once). Writes
``benchmarks/results/gpu_pac_<device>.json`` and prints a table.

    python benchmarks/bench_gpu_pac.py [--repeat 10] [--small]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

# time the compiled kernels: compile them in-process at the first (warm-up) call instead
# of serving first calls with the reference engine (pacnd/engines/cpu/coldstart.py)
os.environ.setdefault("PACND_JIT", "eager")

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gpu_common import (device_name, device_tag, peak_extra_bytes, peaks_of, time_gpu,
                        torch_peak_extra_bytes)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--small", action="store_true", help="a 128x128 problem (quick check)")
    ap.add_argument("--engines", default="cupy,cupy:nopipeline,cuda",
                    help="engines; 'cupy:nopipeline' = the CuPy engine with "
                         "config.PIPELINE off (tiled GEMMs without register prefetch)")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(HERE.parent))
    import pacnd
    from pacnd._cupy import require_gpu

    cp = require_gpu("cupy")
    B, C, K, CG = 4, 64, 5, 16
    H = W = 128 if args.small else 512
    rng = np.random.default_rng(0)
    x = cp.asarray(rng.standard_normal((B, C, H, W), dtype=np.float32))
    f = cp.asarray(rng.standard_normal((B, CG, H, W), dtype=np.float32))
    w = cp.asarray(rng.standard_normal((C, C, K, K), dtype=np.float32) / (C * K * K) ** 0.5)
    b = cp.asarray(rng.standard_normal(C, dtype=np.float32))
    go = cp.asarray(rng.standard_normal((B, C, H, W), dtype=np.float32))
    dev_name = device_name(cp)
    tflops, tbs = peaks_of(dev_name)
    flops_fwd = 2.0 * B * C * C * K * K * H * W
    in_bytes = sum(a.nbytes for a in (x, f, w, b))
    out_bytes = x.nbytes

    rows = []

    def record(engine, what, fn, flops, io_bytes, extra_bytes):
        peak = peak_extra_bytes(cp, fn)
        med, best = time_gpu(cp, fn, args.repeat)
        row = {"engine": engine, "op": what, "median_s": med, "min_s": best,
               "peak_extra_MiB": max(peak - extra_bytes, 0) / 2**20,
               "gflops": flops / med / 1e9,
               "fp32_roofline": (flops / med / 1e12 / tflops) if tflops else None,
               "bw_roofline": (io_bytes / med / 1e12 / tbs) if tbs else None}
        rows.append(row)
        print(f"{engine:>16} {what:<16} {med * 1e3:9.2f} ms  {row['gflops']:9.1f} GFLOP/s  "
              f"peak extra {row['peak_extra_MiB']:8.1f} MiB"
              + (f"  {100 * row['fp32_roofline']:5.1f}% FP32" if tflops else "")
              + (f"  {100 * row['bw_roofline']:5.1f}% BW" if tbs else ""), flush=True)

    from pacnd.engines.cupy import config as cupy_config  # noqa: PLC0415

    for engine in [e for e in args.engines.split(",") if e]:
        name, _, variant = engine.partition(":")
        if variant not in ("", "nopipeline") or (variant and name != "cupy"):
            raise SystemExit(f"unknown engine variant {engine!r}")
        cupy_config.PIPELINE = variant != "nopipeline"
        with pacnd.use_engine(name):
            t0 = time.time()
            pacnd.pac_conv(x, f, w, b, padding=2)
            pacnd.pac_conv_vjp(go, x, f, w, b, padding=2)
            cp.cuda.Device().synchronize()
            print(f"{engine}: first call (compile) {time.time() - t0:.1f} s", flush=True)
            record(engine, "pac_conv fwd", lambda: pacnd.pac_conv(x, f, w, b, padding=2),
                   flops_fwd, in_bytes + out_bytes, out_bytes)

            def fwd_bwd():
                out = pacnd.pac_conv(x, f, w, b, padding=2)
                g = pacnd.pac_conv_vjp(go, x, f, w, b, padding=2)
                return out, g

            grads_bytes = x.nbytes + f.nbytes + w.nbytes + b.nbytes
            record(engine, "pac_conv fwd+bwd", fwd_bwd, 3 * flops_fwd,
                   in_bytes + out_bytes + go.nbytes + grads_bytes, out_bytes + grads_bytes)
    cupy_config.PIPELINE = True

    try:
        import torch

        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        tx = torch.as_tensor(x, device="cuda").requires_grad_(True)
        tw = torch.as_tensor(w, device="cuda").requires_grad_(True)
        tb = torch.as_tensor(b, device="cuda").requires_grad_(True)
        tgo = torch.as_tensor(go, device="cuda")

        def tfwd():
            with torch.no_grad():
                return torch.nn.functional.conv2d(tx, tw, tb, padding=2)

        def tfb():
            out = torch.nn.functional.conv2d(tx, tw, tb, padding=2)
            return torch.autograd.grad(out, (tx, tw, tb), tgo)

        for what, fn, fl in (("conv2d fwd", tfwd, flops_fwd), ("conv2d fwd+bwd", tfb,
                                                               3 * flops_fwd)):
            peak = torch_peak_extra_bytes(fn)
            med, best = time_gpu(cp, fn, args.repeat)
            row = {"engine": "torch", "op": what, "median_s": med, "min_s": best,
                   "peak_extra_MiB": peak / 2**20, "gflops": fl / med / 1e9,
                   "fp32_roofline": (fl / med / 1e12 / tflops) if tflops else None,
                   "bw_roofline": None}
            rows.append(row)
            print(f" torch {what:<16} {med * 1e3:9.2f} ms  {row['gflops']:9.1f} GFLOP/s  "
                  f"peak {row['peak_extra_MiB']:8.1f} MiB", flush=True)
    except ImportError:
        print("torch not importable: no cuDNN comparison")

    # the reference implementation's unfold path holds B*C*k^2*H*W floats twice
    # (the unfolded input and its product with K); target: pacnd's extra <= 10% of it
    unfold_mib = 2 * B * C * K * K * H * W * 4 / 2**20
    base = {r["op"].split()[-1]: r["median_s"] for r in rows if r["engine"] == "torch"}
    print(f"\nreference unfold working memory: {unfold_mib:.0f} MiB")
    for r in rows:
        r["unfold_reference_MiB"] = unfold_mib
        r["peak_extra_vs_unfold"] = r["peak_extra_MiB"] / unfold_mib
        if r["engine"] != "torch" and r["op"].split()[-1] in base:
            r["time_vs_cudnn"] = r["median_s"] / base[r["op"].split()[-1]]
            print(f"{r['engine']:>16} {r['op']:<16} {r['time_vs_cudnn']:6.2f}x cuDNN conv2d, "
                  f"peak extra {100 * r['peak_extra_vs_unfold']:5.1f}% of unfold")
    tag = device_tag(dev_name)
    out = HERE / "results" / f"gpu_pac_{tag}{'_small' if args.small else ''}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "device": dev_name, "peak_fp32_tflops": tflops, "peak_bw_tbs": tbs,
        "problem": {"B": B, "Cin": C, "Cout": C, "k": K, "H": H, "W": W, "guide": CG,
                    "dtype": "float32", "padding": 2},
        "host": platform.node(), "cupy": cp.__version__, "pacnd": pacnd.__version__,
        "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
