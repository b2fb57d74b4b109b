"""First calls on an empty kernel cache (pacnd/engines/cpu/coldstart.py).

In ``PACND_JIT=background`` mode (the default outside the tests) a call whose
kernels are not compiled yet is served by the NumPy reference engine while a
background process compiles them into Numba's cache; later calls run the
kernels. The end-to-end test runs in a child process with a cache directory
of its own; the rest checks the pieces in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import pacnd

cpu = pytest.importorskip("pacnd.engines.cpu")
from pacnd.crf import fast, fast_numpy  # noqa: E402
from pacnd.engines.cpu import coldstart  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    t0 = time.perf_counter()
    import pacnd
    from pacnd.engines.cpu import coldstart
    r = np.random.default_rng(0)
    x, g, w, b = (r.standard_normal(s) for s in ((1, 3, 9, 40), (1, 2, 9, 40), (4, 3, 3, 3), (4,)))
    y1 = pacnd.pac_conv(x, g, w, b, padding=1)
    first = time.perf_counter() - t0
    served_first = dict(coldstart.stats)
    marker = coldstart.marker("dense", "float64")
    deadline = time.monotonic() + 900
    while not coldstart.ready("dense", "float64") and time.monotonic() < deadline:
        time.sleep(0.2)
    y2 = pacnd.pac_conv(x, g, w, b, padding=1)
    ref = pacnd.pac_conv(x, g, w, b, padding=1, engine="numpy")
    coldstart.wait_idle(900)
    print(json.dumps({"first_s": first, "served_first": served_first,
                      "served": dict(coldstart.stats), "marker": marker.exists(),
                      "err1": float(np.abs(y1 - ref).max()),
                      "err2": float(np.abs(y2 - ref).max())}))
""")


def test_first_call_is_served_while_the_kernels_compile(tmp_path):
    env = dict(os.environ, PACND_JIT="background", NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                          text=True, timeout=1800, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["served_first"] == {"numba": 0, "reference": 1, "waited": 0}, res
    assert res["served"]["numba"] >= 1, res                     # the second call: compiled
    assert res["marker"] and res["err1"] < 1e-12 and res["err2"] < 1e-12, res


@pytest.fixture
def background(monkeypatch):
    """Background mode in this process, with no real background process."""
    monkeypatch.setattr(coldstart, "_mode", "background")
    monkeypatch.setattr(coldstart, "_ready", set())
    monkeypatch.setattr(coldstart, "_queue", [])
    monkeypatch.setattr(coldstart, "_worker", None)
    monkeypatch.setattr(coldstart, "_failed", False)
    started = []

    class Running:
        def poll(self):
            return None

    def start():
        if coldstart._worker is None and coldstart._queue:
            started.extend(coldstart._queue)
            coldstart._worker = (Running(), list(coldstart._queue), "")
            coldstart._queue.clear()

    monkeypatch.setattr(coldstart, "_start_worker_locked", start)
    monkeypatch.setattr(coldstart, "ready", lambda path, dt: (path, np.dtype(dt).name)
                        in coldstart._ready)
    return started


def test_cold_paths_are_served_by_the_reference_and_queued(background):
    rng = np.random.default_rng(0)
    x, g, w = rng.standard_normal((1, 2, 6, 7)), rng.standard_normal((1, 2, 6, 7)), \
        rng.standard_normal((3, 2, 3, 3))
    before = dict(coldstart.stats)
    y = pacnd.pac_conv(x, g, w, padding=1)
    assert coldstart.stats["reference"] == before["reference"] + 1
    np.testing.assert_array_equal(y, pacnd.pac_conv(x, g, w, padding=1, engine="numpy"))
    # the forward's path and the backward's (asked for ahead) are queued
    assert background == [("dense", "float64"), ("dense_vjp", "float64")]
    pacnd.pac_conv_vjp(y, x, g, w, padding=1)             # already being compiled
    assert background == [("dense", "float64"), ("dense_vjp", "float64")]
    pacnd.pac_pool(x, g, 3, padding=1)                      # queued behind the running process
    assert coldstart._queue == [("dw_fused", "float64"), ("dw_vjp", "float64")]
    assert coldstart.stats["reference"] == before["reference"] + 3


def test_large_calls_do_not_fall_back(background, monkeypatch):
    waited = []
    monkeypatch.setattr(coldstart, "_wait_for", lambda paths, dt: waited.append(paths))
    monkeypatch.setattr(coldstart, "REFERENCE_MAX_BYTES", 1000)
    rng = np.random.default_rng(0)
    x, g, w = rng.standard_normal((1, 2, 16, 16)), rng.standard_normal((1, 2, 16, 16)), \
        rng.standard_normal((3, 2, 3, 3))
    before = dict(coldstart.stats)
    pacnd.pac_conv(x, g, w, padding=1)
    assert waited == [("dense",)]
    assert coldstart.stats["numba"] == before["numba"] + 1


def test_a_failed_background_process_means_compiling_here(background, monkeypatch):
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    monkeypatch.setattr(coldstart, "_worker", (proc, [("dense", "float64")], "/nonexistent"))
    with pytest.warns(RuntimeWarning, match="background compile process failed"):
        assert coldstart.use_numba(("dense",), np.float64)
    assert coldstart._failed
    assert coldstart.use_numba(("dw_vjp",), np.float32)     # and from then on


def test_eager_mode_never_falls_back(monkeypatch):
    monkeypatch.setattr(coldstart, "_mode", "eager")
    assert coldstart.use_numba(("crf",), np.float32, nbytes=1, flops=1)


def test_mode_from_the_environment(monkeypatch):
    monkeypatch.setattr(coldstart, "_mode", None)
    monkeypatch.setenv("PACND_JIT", "sometimes")
    with pytest.raises(ValueError, match="PACND_JIT='sometimes'"):
        coldstart.get_mode()
    monkeypatch.setenv("PACND_JIT", "Eager")
    assert coldstart.get_mode() == "eager"


def test_markers_name_path_dtype_and_sources(monkeypatch):
    m32 = coldstart.marker("dense", "float32")
    assert m32 != coldstart.marker("dense", "float64") != coldstart.marker("dense_vjp", "float64")
    assert m32.name.startswith("pacnd-compiled-dense-float32-")
    from pacnd.engines.cpu import _cache
    monkeypatch.setattr(_cache, "source_hash", lambda: "changed sources")
    monkeypatch.setattr(coldstart, "_key_cache", {})
    assert coldstart.marker("dense", "float32") != m32


def test_uncachable_overload_warns_through_the_pacnd_locator():
    """Numba warns (and does not cache) when a compile result is uncachable (e.g. it
    holds dynamic globals, as NUMBA_OPT=0 builds of these kernels do); its warning
    reads the locator's ``_py_file``, which pacnd's locator must carry."""
    from types import SimpleNamespace

    from numba.core import caching
    from numba.core.errors import NumbaWarning

    from pacnd.engines.cpu import dense

    py_func = next(v.py_func for v in vars(dense).values() if hasattr(v, "py_func"))
    impl = caching.CompileResultCacheImpl(py_func)
    assert type(impl.locator).__name__ == "PacndCacheLocator"
    assert impl.locator._py_file == py_func.__code__.co_filename
    cres = SimpleNamespace(lifted=(), library=SimpleNamespace(has_dynamic_globals=True),
                           fndesc=SimpleNamespace(qualname="kernel"))
    with pytest.warns(NumbaWarning, match="Cannot cache compiled function"):
        assert impl.check_cachable(cres) is False


def test_warm_marks_a_path(tmp_path):
    coldstart.warm("dw_fused", "float64")
    assert coldstart.marker("dw_fused", "float64").exists()
    assert coldstart.ready("dw_fused", "float64")


# --------------------------------------------------------------------------- CRF twins
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_crf_served_on_the_graph_while_compiling(dt, monkeypatch):
    """While the fast path's kernels compile, mean_field runs the graph path (2-D and 3-D,
    every output, labels last) and scores_to_unary its NumPy twin: same results."""
    from pacnd.crf import PacCRF

    rng = np.random.default_rng(1)
    kernels = [dict(kernel_size=5, dilation=2, blur=1, compat="potts", normalize="symmetric"),
               dict(kernel_size=3, dilation=1, blur=2, compat="2d"),
               dict(kernel_size=3, dilation=3, blur=4, compat="4d")]
    P = rng.random((7, 9, 4)).astype(dt)
    P /= P.sum(-1, keepdims=True)
    calls = []
    results = {}
    for served in (False, True):
        if served:
            def refuse(paths, dtype, nbytes=0, flops=0):
                calls.append((paths, nbytes, flops))
                return False
            monkeypatch.setattr(coldstart, "use_numba", refuse)
        for nd, shape in ((2, (11, 13)), (3, (5, 7, 6))):
            U = rng.standard_normal((2, 3) + shape).astype(dt) if not served else \
                results[False, nd, "U"]
            f = rng.standard_normal((2, 3) + shape).astype(dt) if not served else \
                results[False, nd, "f"]
            results[served, nd, "U"], results[served, nd, "f"] = U, f
            for ks in (kernels[:1], kernels[:2] if nd == 3 else kernels):
                crf = PacCRF(3, 2, ks, dtype=dt, perturbed_init=True, rng=3, ndim=nd)
                for output in ("log_Q", "softmax", "labels", "log_softmax"):
                    results[served, nd, len(ks), output] = fast.mean_field(crf, U, f,
                                                                         output=output)
                results[served, nd, len(ks), "last"] = fast.mean_field(
                    crf, U, f, output="softmax", labels_last=True)
        results[served, "scores"] = fast.scores_to_unary(P, True)
    crf_calls = [c for c in calls if c[0] == ("crf",)]   # (the graph's ops ask too)
    # every mean_field call asked, with a cost estimate (scores_to_unary asks without one)
    assert sum(c[1] > 0 and c[2] > 0 for c in crf_calls) == 20
    tol = 2e-5 if dt == np.float32 else 1e-12
    for key, got in results.items():
        if not key[0] or key[-1] in ("U", "f"):
            continue
        want = results[(False,) + key[1:]]
        if key[-1] == "scores":
            np.testing.assert_allclose(got[0], want[0], rtol=tol, atol=tol)
            np.testing.assert_allclose(got[1], want[1], rtol=tol)
        elif key[-1] == "labels":
            assert got.dtype == want.dtype and (got == want).mean() > 0.99
        else:
            assert got.dtype == want.dtype and got.shape == want.shape, key
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 10)


def test_crf_twin_has_the_kernels_arguments():
    import inspect
    for name in fast_numpy.__all__:
        kernel = getattr(fast, "_" + name).kernel
        assert list(inspect.signature(getattr(fast_numpy, name)).parameters) == \
            list(inspect.signature(kernel.py_func).parameters), name


def test_no_warning_when_everything_is_compiled():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert coldstart.use_numba(("dense",), np.float64)
