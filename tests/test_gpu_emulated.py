"""The CUDA C kernels of ``kernels/`` run on the CPU (host emulation, no GPU).

``tests/gpu_sim/cuda_emu.py`` compiles ``kernels/*.cu`` as host C++ with a
small shim (``cuda_host_emu.h``: one std::thread per CUDA thread, a barrier
for ``__syncthreads``) and drives them through the CuPy engine's own driver
(:mod:`pacnd.engines._gpu_common`) on NumPy arrays. This checks the logic of
every CUDA C kernel — direct and tiled (implicit GEMM, shared-memory staging,
split reductions) — against the NumPy reference: every option, forward and
transposed geometry, 1-D/2-D/3-D, float64 and float32, the authors' reference
cases, outputs pre-filled with NaN (each element must be written) and repeated
runs (bitwise identical). What it cannot check — NVRTC's compiler, warp
scheduling, real memory limits — is covered by the NVRTC compile tests and by
the ``gpu``-marked tests on a real device.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "gpu_sim"))

import cases  # noqa: E402
import cuda_emu  # noqa: E402

from pacnd.engines import reference  # noqa: E402

pytestmark = pytest.mark.skipif(cuda_emu.compiler() is None,
                                reason="no C++ compiler (g++) for the host emulation")

TOL = {np.float64: 1e-10, np.float32: 2e-5}


def engine(path="auto", **kw):
    return cuda_emu.EmuEngine(cuda_emu.EmuBackend(path=path, **kw))


@pytest.mark.parametrize("path", ["direct", "tiled"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", sorted(cases.CONFIGS) + sorted(cases.TILED_CONFIGS))
def test_cuda_c_matches_reference(name, dtype, path):
    cfg = {**cases.CONFIGS, **cases.TILED_CONFIGS}[name]
    arrs = cases.make_inputs(cfg, dtype)
    eng = engine(path, chunk_elements=40)  # channel-wise dL/dK in several chunks
    want = cases.run_all(reference, cfg, arrs)
    got = cases.run_all(eng, cfg, arrs)
    errs = cases.compare(got, want)
    assert max(errs.values()) <= TOL[dtype], errs
    if path == "tiled" and name in cases.TILED_CONFIGS:
        assert any(k.endswith("_tiled") for k in eng.be.launched), eng.be.launched


@pytest.mark.parametrize("name", sorted(cases.TILED_CONFIGS))
def test_cuda_c_tiled_without_pipelining(name):
    """The tiled GEMMs built with ``PAC_PIPELINE=0`` (the CuPy engine's
    ``config.PIPELINE = False``: no register prefetch) give the same results."""
    cfg = cases.TILED_CONFIGS[name]
    arrs = cases.make_inputs(cfg, np.float64)
    eng = engine("tiled", chunk_elements=40, defines=("PAC_PIPELINE=0",))
    errs = cases.compare(cases.run_all(eng, cfg, arrs), cases.run_all(reference, cfg, arrs))
    assert max(errs.values()) <= 1e-10, errs
    assert any(k.endswith("_tiled") for k in eng.be.launched), eng.be.launched


RANDOM = cases.random_configs(24, seed=2019)


@pytest.mark.parametrize("path", ["direct", "tiled"])
@pytest.mark.parametrize("name", sorted(RANDOM))
def test_cuda_c_random_configs(name, path):
    cfg = RANDOM[name]
    arrs = cases.make_inputs(cfg, np.float64, seed=3)
    errs = cases.compare(cases.run_all(engine(path, chunk_elements=30), cfg, arrs),
                         cases.run_all(reference, cfg, arrs))
    assert max(errs.values()) <= 1e-10, (cfg, errs)


def test_auto_path_picks_tiled_kernels_for_wide_layers():
    cfg = cases.TILED_CONFIGS["tiled_conv2d_norm"]
    eng = engine("auto")
    cases.run_all(eng, cfg, cases.make_inputs(cfg))
    assert {"pac_fwd_tiled", "pac_bwd_input_tiled", "pac_bwd_weight_tiled",
            "pac_bwd_kernel_tiled"} <= set(eng.be.launched)
    eng = engine("auto")
    cfg = cases.CONFIGS["pool2d_dpp"]
    cases.run_all(eng, cfg, cases.make_inputs(cfg))
    assert not any(k.endswith("_tiled") for k in eng.be.launched)


@pytest.mark.parametrize("name", cases.reference_case_names())
def test_cuda_c_reference_cases(name):
    errs = cases.run_reference_case(engine("auto"), cases.load_reference_case(name))
    assert max(errs.values()) <= 1e-10, errs


@pytest.mark.parametrize("path", ["direct", "tiled"])
def test_cuda_c_repeatable(path):
    """Two runs give bitwise identical results (no races, deterministic reductions)."""
    cfg = cases.TILED_CONFIGS["tiled_conv2d_groups_stride"]
    arrs = cases.make_inputs(cfg, np.float32)
    a = cases.run_all(engine(path), cfg, arrs)
    b = cases.run_all(engine(path), cfg, arrs)
    for k in a:
        va, vb = a[k], b[k]
        if isinstance(va, dict):
            for g in va:
                np.testing.assert_array_equal(va[g], vb[g], err_msg=f"{k}.{g}")
        else:
            np.testing.assert_array_equal(va, vb, err_msg=k)


def test_divider_matches_integer_division(tmp_path):
    """``PacDivider`` (kernels/pac_common.cuh: n / d as a multiply-high and a shift,
    used by the tiled gathers) equals integer division: every n < 5000 for every
    d <= 600, and n near the top of the int range."""
    from pacnd.engines.cupy._source import kernels_dir  # noqa: PLC0415

    src = tmp_path / "div.cpp"
    src.write_text('''#include "cuda_host_emu.h"
#include "pac_common.cuh"
#include <cstdio>
int main() {
    long bad = 0, n_checked = 0;
    const int big[] = {2147483647, 2147483646, 2147483000, 1 << 30, (1 << 30) - 1, 123456789};
    for (int d = 1; d <= 600; ++d) {
        PacDivider q;
        q.init(d);
        for (int n = 0; n < 5000; ++n, ++n_checked) bad += q.div(n) != n / d;
        for (int n : big) { bad += q.div(n) != n / d; ++n_checked; }
    }
    const int ds[] = {1 << 20, 1000003, 2147483647, 1 << 30, 65537};
    for (int d : ds) {
        PacDivider q;
        q.init(d);
        for (int n : big) { bad += q.div(n) != n / d; ++n_checked; }
    }
    std::printf("%ld %ld\\n", bad, n_checked);
    return 0;
}
''')
    exe = tmp_path / "div"
    res = subprocess.run([cuda_emu.compiler(), "-std=c++20", "-O1", "-pthread",
                          f"-I{cuda_emu.HERE}", f"-I{kernels_dir()}", str(src), "-o", str(exe)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-4000:]
    bad, checked = map(int, subprocess.run([str(exe)], capture_output=True, text=True,
                                           check=True).stdout.split())
    assert checked > 3_000_000 and bad == 0, (bad, checked)
