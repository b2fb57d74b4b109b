"""Both GPU engines (``"cuda"``: Numba CUDA, ``"cupy"``: CUDA C RawKernels) on a
real GPU, through the public ops with CuPy arrays, against the NumPy reference.

Marked ``gpu``: skipped with the reason where CuPy or a CUDA device is missing
(tests/conftest.py). What runs here:

* every option config and random shapes/options (tests/gpu_sim/cases.py),
  float64 to 1e-10 and float32 to 1e-5 (relative to the largest value);
  both engines on each of their paths (auto, direct, tiled);
* the authors' reference cases (float64, 1e-10);
* outputs poisoned: every buffer the engines allocate starts as NaN, so an
  element a kernel fails to write fails the comparison;
* repeated runs bitwise identical (no races; every reduction is deterministic);
* working memory bounded (no B*C*T*H*W buffer) on a mid-size layer.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "gpu_sim"))

import cases  # noqa: E402

import pacnd  # noqa: E402
from pacnd.engines import reference  # noqa: E402

pytestmark = pytest.mark.gpu

TOL = {np.float64: 1e-10, np.float32: 1e-5}
CONFIGS = {**cases.CONFIGS, **cases.TILED_CONFIGS}
RANDOM = cases.random_configs(16, seed=42)


def _cupy():
    from pacnd._cupy import cupy_module  # noqa: PLC0415
    return cupy_module()


class _PoisonCupy:
    """CuPy, with ``empty`` / ``empty_like`` returning NaN-filled arrays."""

    def __init__(self, cp):
        self._cp = cp

    def __getattr__(self, name):
        return getattr(self._cp, name)

    def empty(self, shape, dtype=float):
        return self._cp.full(shape, np.nan, dtype=dtype)

    def empty_like(self, a, dtype=None):
        return self._cp.full(a.shape, np.nan, dtype=dtype or a.dtype)


@pytest.fixture
def poisoned(monkeypatch):
    """Make both engines allocate NaN-filled buffers."""
    cp = _cupy()
    from pacnd.engines.cuda import _backend as nb  # noqa: PLC0415
    from pacnd.engines.cupy import _backend as cb  # noqa: PLC0415

    monkeypatch.setattr(nb.NumbaBackend, "array_module", staticmethod(lambda a: _PoisonCupy(cp)))
    monkeypatch.setattr(cb.CupyBackend, "array_module", lambda self, a: _PoisonCupy(cp))


@pytest.fixture(params=["auto", "direct", "tiled"])
def cupy_path(request, monkeypatch):
    from pacnd.engines.cupy import config  # noqa: PLC0415
    monkeypatch.setattr(config, "PATH", request.param)
    return request.param


@pytest.fixture(params=["auto", "direct", "tiled"])
def cuda_path(request, monkeypatch):
    from pacnd.engines.cuda import config  # noqa: PLC0415
    monkeypatch.setattr(config, "PATH", request.param)
    return request.param


def _to_gpu(arrs):
    cp = _cupy()
    return {k: (cp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in arrs.items()}


def _run_gpu(engine, cfg, arrs):
    with pacnd.use_engine(engine):
        return {n: fn() for n, fn in cases.calls(cfg, _to_gpu(arrs)).items()}


def _check(engine, cfg, dtype, seed=0):
    arrs = cases.make_inputs(cfg, dtype, seed=seed)
    want = cases.run_all(reference, cfg, {k: (v.astype(np.float64) if isinstance(v, np.ndarray)
                                              else v) for k, v in arrs.items()})
    got = _run_gpu(engine, cfg, arrs)
    for v in got.values():
        for a in (v.values() if isinstance(v, dict) else [v]):
            assert type(a).__module__.split(".")[0] == "cupy" and a.dtype == dtype
    errs = cases.compare(got, want)
    assert max(errs.values()) <= TOL[dtype], errs
    return got


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cuda_engine(name, dtype, poisoned, cuda_path):
    _check("cuda", CONFIGS[name], dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cupy_engine(name, dtype, poisoned, cupy_path):
    _check("cupy", CONFIGS[name], dtype)


@pytest.mark.parametrize("engine", ["cuda", "cupy"])
@pytest.mark.parametrize("name", sorted(RANDOM))
def test_random_configs(name, engine, poisoned):
    _check(engine, RANDOM[name], np.float64, seed=1)
    _check(engine, RANDOM[name], np.float32, seed=2)


@pytest.mark.parametrize("engine", ["cuda", "cupy"])
@pytest.mark.parametrize("name", cases.reference_case_names())
def test_reference_cases(name, engine, poisoned):
    case = cases.load_reference_case(name)
    case = {k: (_cupy().asarray(v) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
            for k, v in case.items()}
    fns, expected = cases.reference_calls(case)
    with pacnd.use_engine(engine):
        got = {n: fn() for n, fn in fns.items()}
    got["vjp"] = {k: v for k, v in got["vjp"].items() if k in expected["vjp"]}
    expected = {k: ({g: cases._np(e) for g, e in v.items()} if isinstance(v, dict)
                    else cases._np(v)) for k, v in expected.items()}
    errs = cases.compare(got, expected)
    assert max(errs.values()) <= 1e-10, errs


@pytest.mark.parametrize("engine", ["cuda", "cupy"])
def test_repeated_runs_identical(engine, cupy_path):
    cfg = dict(op="conv", B=2, cin=32, cout=48, size=(37, 29), k=(5, 5), cg=4, padding=2,
               stride=1, normalize=True)
    arrs = cases.make_inputs(cfg, np.float32)
    a = _run_gpu(engine, cfg, arrs)
    b = _run_gpu(engine, cfg, arrs)
    for k in a:
        for g in (a[k] if isinstance(a[k], dict) else [None]):
            va = cases._np(a[k][g] if g else a[k])
            vb = cases._np(b[k][g] if g else b[k])
            np.testing.assert_array_equal(va, vb, err_msg=f"{engine} {k}.{g}")


@pytest.mark.parametrize("engine", ["cuda", "cupy"])
def test_working_memory_is_bounded(engine):
    """Peak extra GPU memory of forward + backward stays far below one B*C*T*H*W buffer."""
    cp = _cupy()
    B, C, H, W, k, cg = 2, 32, 96, 96, 5, 8
    rng = np.random.default_rng(0)
    x = cp.asarray(rng.standard_normal((B, C, H, W), dtype=np.float32))
    f = cp.asarray(rng.standard_normal((B, cg, H, W), dtype=np.float32))
    w = cp.asarray(rng.standard_normal((C, C, k, k), dtype=np.float32))
    go = cp.asarray(rng.standard_normal((B, C, H, W), dtype=np.float32))
    with pacnd.use_engine(engine):
        pacnd.pac_conv_vjp(go, x, f, w, padding=2)  # compile / warm up
        cp.cuda.Device().synchronize()
        pool = cp.get_default_memory_pool()
        pool.free_all_blocks()
        base = pool.used_bytes()
        hook = _PeakHook()
        with hook:
            out = pacnd.pac_conv(x, f, w, padding=2)
            g = pacnd.pac_conv_vjp(go, x, f, w, padding=2)
        cp.cuda.Device().synchronize()
    del out, g
    full = B * C * k * k * H * W * 4
    bt = B * k * k * H * W * 4
    extra = hook.peak - base
    results = x.nbytes + f.nbytes + w.nbytes + x.nbytes  # out, grad_input, grad_guide, ...
    assert extra <= results + 4 * bt + (8 << 20), (extra, full)
    assert extra < full / 4


class _PeakHook:
    """CuPy memory hook tracking the peak of bytes held from the pool."""

    def __init__(self):
        cp = _cupy()

        class Hook(cp.cuda.MemoryHook):
            name = "pacnd_peak"

            def __init__(self, outer):
                self.outer = outer

            def malloc_postprocess(self, device_id, size, mem_size, mem_ptr, pmem_id):
                o = self.outer
                o.cur += mem_size
                o.peak = max(o.peak, o.cur)

            def free_postprocess(self, device_id, mem_size, mem_ptr, pmem_id):
                self.outer.cur -= mem_size

        self.cur = _cupy().get_default_memory_pool().used_bytes()
        self.peak = self.cur
        self._hook = Hook(self)

    def __enter__(self):
        self._hook.__enter__()
        return self

    def __exit__(self, *exc):
        return self._hook.__exit__(*exc)
