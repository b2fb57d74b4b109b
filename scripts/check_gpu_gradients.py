"""Check the joint-upsampling networks' loss and parameter gradients on the GPU
(pacnd's CuPy engine) against the Numba CPU engine, before training on a GPU.

    python scripts/check_gpu_gradients.py        # needs CuPy and a CUDA GPU

For each (task, factor, model) below: one synthetic 64x64 batch, the same
initial weights on both engines, the loss and every parameter gradient
compared (relative to that parameter's largest CPU gradient; parameters whose
gradient is < 1e-6 of the largest are skipped). Exit status 0 when every
relative error is < 1e-3 and the losses agree to 1e-5.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pacnd  # noqa: E402
from pacnd.data import JointUpsamplingPairs, SyntheticScenes  # noqa: E402
from pacnd.models import build_model  # noqa: E402
from pacnd.models.training import upsampling_loss  # noqa: E402

CASES = (("depth", 8, "pac"), ("depth", 16, "pac"), ("flow", 8, "pac"),
         ("depth", 4, "pac_lite"), ("flow", 8, "djf"))


def check(kind, factor, name, cp):
    data = JointUpsamplingPairs([], factor, kind=kind, crop=64,
                                synthetic=SyntheticScenes(kind, (64, 64)))
    batch = data(np.random.default_rng(0))
    kw = {"init": "bilinear"} if name.startswith("pac") else {}
    with pacnd.use_engine("numba"):
        mc = build_model(name, factor, rng=0, **kw)
        lc = upsampling_loss(mc, batch)[0]
        lc.backward()
    with pacnd.use_engine("cupy"):
        mg = build_model(name, factor, rng=0, **kw).map_arrays(cp.asarray)
        lg = upsampling_loss(mg, {k: cp.asarray(v) for k, v in batch.items()})[0]
        lg.backward()
    gmax = max(float(np.abs(p.grad).max()) for p in mc.parameters())
    worst = 0.0
    for (_, p), (_, q) in zip(mc.named_parameters(), mg.named_parameters()):
        a = float(np.abs(p.grad).max())
        if a < 1e-6 * gmax:
            continue
        worst = max(worst, float(np.abs(cp.asnumpy(q.grad) - p.grad).max()) / a)
    print(f"{kind} x{factor} {name}: loss cpu {lc.item():.6g} gpu {lg.item():.6g}, "
          f"worst relative gradient error {worst:.2e}", flush=True)
    return worst < 1e-3 and abs(lc.item() - lg.item()) < 1e-5 * abs(lc.item()) + 1e-7


def main():
    import cupy as cp  # noqa: PLC0415

    ok = all([check(*c, cp) for c in CASES])
    print("GPU gradient check", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
