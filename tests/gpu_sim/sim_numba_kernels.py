"""Numba CUDA kernels of pacnd.engines.cuda under Numba's CUDA simulator.

Run by ``tests/test_gpu_numba.py`` in its own process with
``NUMBA_ENABLE_CUDASIM=1`` (the simulator must be chosen before Numba is
imported); not collected by a plain ``pytest`` run (the file name does not
start with ``test_``). Launches are shrunk (4 threads per block, at most 3
blocks: every grid-stride loop and block reduction runs over several blocks)
and the problems are tiny: a simulated thread costs ~0.1-0.5 ms.

The simulator runs a block's threads as Python threads, and every device-function
call takes a lock (it swaps the module's ``cuda`` global); with the default 5 ms
GIL switch interval the threads convoy on that lock and one launch can take
anywhere from 0.5 s to minutes. A 10 us switch interval and 4 threads per block
make the run steady (a few seconds per case). The short interval also exposes a
race in the simulator's shared-array allocation, fixed here by
``tests/gpu_sim/sim_fixes.py``.

Outputs are allocated NaN-filled (every element must be written) and compared
with the NumPy reference engine: every option (tests/gpu_sim/cases.py) and
the authors' reference cases, float64 to 1e-10 and float32 to 2e-5.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cases  # noqa: E402

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("run through tests/test_gpu_numba.py (needs NUMBA_ENABLE_CUDASIM=1 before Numba "
                "is imported)", allow_module_level=True)

from numba import config as numba_config  # noqa: E402

sys.setswitchinterval(1e-5)

import sim_fixes  # noqa: E402

sim_fixes.install()

from pacnd.engines import cuda as cuda_engine  # noqa: E402
from pacnd.engines import reference  # noqa: E402
from pacnd.engines.cuda import _backend, config  # noqa: E402
from pacnd.engines.cuda import pac as cuda_pac  # noqa: E402

config.THREADS = 4
config.MAX_BLOCKS = 3
config.TARGET_THREADS = 64
config.MIN_SPLIT = 8
config.CHUNK_ELEMENTS = 40  # channel-wise dL/dK in several chunks
config.PATH = "direct"  # the tiled kernels only where asked for below
config.TILE, config.TILE_K = 8, 4  # tiled kernels on 8 x 8 tiles: 4 threads a block
cuda_pac.set_tile(config.TILE, config.TILE_K)
_backend.NumbaBackend.array_module = staticmethod(lambda a: cases.PoisonNumpy())

SIM_CONFIGS = sorted(cases.CONFIGS)
F32_CONFIGS = ["conv2d_stride_dil_norm", "conv2d_cw_inverse_per_channel_norm",
               "convT2d_s2_op1_norm", "pool2d_dpp", "conv3d_norm"]


def test_simulator_is_on():
    from pacnd.engines.cuda.pac import pac_fwd_direct  # noqa: PLC0415

    assert numba_config.ENABLE_CUDASIM
    assert "simulator" in type(pac_fwd_direct).__module__


def test_shared_array_is_one_array_per_block(monkeypatch):
    """Threads switched between the simulator's check and store of a shared array
    still get one array (sim_fixes); without the fix each makes its own."""
    import threading  # noqa: PLC0415
    import time  # noqa: PLC0415

    from numba.cuda.simulator.kernelapi import FakeCUDAShared  # noqa: PLC0415

    monkeypatch.setattr(sim_fixes, "_between_check_and_store", lambda: time.sleep(0.002))
    shared, got, start = FakeCUDAShared(0), [], threading.Barrier(4)

    def thread():
        start.wait()
        got.append(shared.array(8, np.float64))

    threads = [threading.Thread(target=thread) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and all(a is got[0] for a in got)


@pytest.mark.parametrize("name", SIM_CONFIGS)
def test_numba_kernels_match_reference(name):
    cfg = cases.CONFIGS[name]
    arrs = cases.make_inputs(cfg, np.float64)
    errs = cases.compare(cases.run_all(cuda_engine, cfg, arrs),
                         cases.run_all(reference, cfg, arrs))
    assert max(errs.values()) <= 1e-10, errs


RANDOM = cases.random_configs(4, seed=7)


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_numba_kernels_random_configs(name):
    cfg = RANDOM[name]
    arrs = cases.make_inputs(cfg, np.float64, seed=5)
    errs = cases.compare(cases.run_all(cuda_engine, cfg, arrs),
                         cases.run_all(reference, cfg, arrs))
    assert max(errs.values()) <= 1e-10, (cfg, errs)


@pytest.mark.parametrize("name", F32_CONFIGS)
def test_numba_kernels_float32(name):
    cfg = cases.CONFIGS[name]
    arrs = cases.make_inputs(cfg, np.float32)
    got = cases.run_all(cuda_engine, cfg, arrs)
    for v in got.values():
        for a in (v.values() if isinstance(v, dict) else [v]):
            assert a.dtype == np.float32
    errs = cases.compare(got, cases.run_all(reference, cfg, arrs))
    assert max(errs.values()) <= 2e-5, errs


#: small problems for the tiled kernels: one or two 64-wide tiles, several k-chunks,
#: several weight-gradient splits
TILED_SIM = {
    "conv_norm_guide": dict(op="conv", B=1, cin=5, cout=6, size=(5, 7), k=(3, 3), cg=2,
                            padding=1, normalize=True),
    "conv_groups_stride_K": dict(op="conv", B=2, cin=4, cout=6, groups=2, size=(7, 6),
                                 k=(3, 3), stride=2, padding=1, adapting=1),
    "convT_mask": dict(op="convT", B=1, cin=3, cout=2, size=(3, 4), k=(3, 3), cg=1, stride=2,
                       padding=1, output_padding=1, mask=True),
    "plain_conv": dict(op="plain", B=1, cin=3, cout=70, size=(4, 5), k=(3, 3), padding=1),
}
TILED_KERNELS = {"pac_fwd_tiled", "pac_bwd_input_tiled", "pac_bwd_weight_tiled",
                 "pac_bwd_kernel_tiled"}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", sorted(TILED_SIM))
def test_numba_tiled_kernels(name, dtype, monkeypatch):
    """The tiled kernels (implicit GEMMs, shared-memory staging, fused K in the
    forward, split weight-gradient reduction, in-block dL/dK reduction): forward
    and every gradient against the NumPy reference; outputs NaN-poisoned. Tiles
    of 8 x 8 (config.TILE): many blocks, k-chunks and row tiles on small problems."""
    monkeypatch.setattr(config, "PATH", "tiled")
    monkeypatch.setattr(config, "TARGET_THREADS", 512 * 4)  # several weight-gradient splits
    launched = []
    orig = _backend.NumbaBackend.launch

    grids = {}

    def spy(self, kname, dtype, grid, *a, **k):
        launched.append(kname)
        grids[kname] = grid
        return orig(self, kname, dtype, grid, *a, **k)

    monkeypatch.setattr(_backend.NumbaBackend, "launch", spy)
    cfg = TILED_SIM[name]
    arrs = cases.make_inputs(cfg, dtype)
    got = cases.run_all(cuda_engine, cfg, arrs)
    want_tiled = TILED_KERNELS - ({"pac_bwd_kernel_tiled"} if cfg["op"] == "plain" else set())
    assert want_tiled <= set(launched), launched
    assert grids["pac_bwd_weight_tiled"][2] > 1, grids  # the split reduction
    assert not any(k.endswith("_direct") and k.startswith("pac_") for k in launched), launched
    for v in got.values():
        for a in (v.values() if isinstance(v, dict) else [v]):
            assert a.dtype == dtype
    arrs64 = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f"
                  else v) for k, v in arrs.items()}
    errs = cases.compare(got, cases.run_all(reference, cfg, arrs64))
    assert max(errs.values()) <= (1e-10 if dtype == np.float64 else 2e-5), errs


@pytest.mark.parametrize("name", cases.reference_case_names())
def test_numba_kernels_reference_cases(name):
    errs = cases.run_reference_case(cuda_engine, cases.load_reference_case(name))
    assert max(errs.values()) <= 1e-10, errs


def test_numba_kernels_repeatable():
    cfg = cases.CONFIGS["conv2d_groups_mask_norm"]
    arrs = cases.make_inputs(cfg, np.float32)
    a = cases.run_all(cuda_engine, cfg, arrs)
    b = cases.run_all(cuda_engine, cfg, arrs)
    for k in a:
        for g in (a[k] if isinstance(a[k], dict) else [None]):
            va = a[k][g] if g else a[k]
            vb = b[k][g] if g else b[k]
            np.testing.assert_array_equal(va, vb, err_msg=f"{k}.{g}")
