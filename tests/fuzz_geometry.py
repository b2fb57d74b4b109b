"""Memory-safety fuzz of the Numba engine: extreme geometry against the NumPy reference.

Run as a child process by tests/test_memory_safety.py (glibc's ``MALLOC_CHECK_=3``
aborts on the first heap corruption; a second run under ``NUMBA_BOUNDSCHECK=1``
turns any out-of-bounds index into an IndexError), or by hand to replay a seed::

    python tests/fuzz_geometry.py --seed 1234 --examples 200 [--dtypes float64]

Hypothesis draws every public op (pac_conv, pac_conv_transpose, pac_pool, conv,
conv_transpose, adapting_kernel; 1-3 spatial dims) with padding and dilation up
to several times the image size, strides, output_padding, groups, shared
filters, masks, normalisation, channel-wise kernels and precomputed K, and
checks the forward and every vector-Jacobian product of the Numba engine
against the reference; then the PAC-CRF fast path against its graph path on
small images with large dilations. Prints one JSON line of counts at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# the Numba kernels themselves: compiled in-process at their first call, never served by
# the reference engine while a background process compiles them (engines/cpu/coldstart.py)
os.environ["PACND_JIT"] = "eager"

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from parity import check_kernel_parity, check_parity, kernel_problems, problems  # noqa: E402

COUNTS = {"ops": 0, "adapting_kernel": 0, "crf": 0}


def _settings(n):
    return settings(max_examples=n, derandomize=False, database=None, deadline=None,
                    print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def fuzz_ops(n, dtypes, s):
    @seed(s)
    @_settings(n)
    @given(prob=problems(extreme=True), data=st.data())
    def run(prob, data):
        allowed = prob["wrt_allowed"]
        wrt = data.draw(st.sampled_from([allowed, allowed, (allowed[-1],), ("input",)]))
        dtype = data.draw(st.sampled_from(dtypes))
        check_parity(prob, wrt, np.dtype(dtype).type)
        COUNTS["ops"] += 1
    run()


def fuzz_kernel(n, s):
    @seed(s)
    @_settings(n)
    @given(problem=kernel_problems(extreme=True))
    def run(problem):
        check_kernel_parity(problem)
        COUNTS["adapting_kernel"] += 1
    run()


@st.composite
def crf_problems(draw):
    """A PacCRF on a tiny image with dilations that reach past it."""
    H, W = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    L = draw(st.integers(2, 4))
    kernels = []
    for _ in range(draw(st.integers(1, 3))):
        compat = draw(st.sampled_from(("potts", "2d", "4d", "none")))
        shared = compat in ("potts", "2d")
        kernels.append(dict(kernel_size=draw(st.sampled_from((3, 5))),
                            dilation=draw(st.one_of(st.integers(1, 3), st.integers(1, 40))),
                            blur=draw(st.sampled_from((1, 1, 2, 4))), compat=compat,
                            normalize=draw(st.sampled_from(("none", "symmetric")))
                            if shared else "none",
                            feat_scale=None if compat == "none"
                            else draw(st.sampled_from((None, 0.5)))))
    return H, W, L, kernels, draw(st.integers(0, 2**31 - 1))


def fuzz_crf(n, s):
    from pacnd.crf import PacCRF  # noqa: PLC0415

    @seed(s)
    @_settings(n)
    @given(problem=crf_problems())
    def run(problem):
        H, W, L, kernels, rs = problem
        rng = np.random.default_rng(rs)
        crf = PacCRF(L, 3, kernels, dtype=np.float64, perturbed_init=True, rng=rs)
        U = rng.standard_normal((1, L, H, W))
        f = rng.standard_normal((1, 3, H, W))
        ref = crf(U, f).data
        got = crf.infer(U, f)
        scale = max(1.0, float(np.abs(ref).max()))
        assert float(np.abs(got - ref).max()) <= 1e-10 * scale
        COUNTS["crf"] += 1
    run()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--examples", type=int, default=100)
    ap.add_argument("--dtypes", default="float64,float32")
    ap.add_argument("--parts", default="ops,kernel,crf")
    a = ap.parse_args(argv)
    dtypes = tuple(a.dtypes.split(","))
    parts = a.parts.split(",")
    print(f"fuzz_geometry: seed {a.seed}, {a.examples} examples, dtypes {dtypes}", flush=True)
    if "ops" in parts:
        fuzz_ops(a.examples, dtypes, a.seed)
    if "kernel" in parts:
        fuzz_kernel(max(1, a.examples // 3), a.seed)
    if "crf" in parts:
        fuzz_crf(max(1, a.examples // 5), a.seed)
    print(json.dumps({"seed": a.seed, "counts": COUNTS}), flush=True)


if __name__ == "__main__":
    main()
