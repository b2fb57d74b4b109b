"""Shared test configuration for pacnd.

* ``engine``: every test that takes this fixture runs once per available CPU
  engine — ``"numpy"`` (the reference) always, ``"numba"`` when
  :mod:`pacnd.engines.cpu` imports and exposes the engine interface.
  ``PACND_TEST_ENGINES=numpy,numba`` restricts the list (a name that is not
  available then fails loudly instead of silently vanishing).
* ``gpu_engine``: the GPU engines (``"cuda"``, ``"cupy"``); those tests carry
  the ``gpu`` marker.
* ``@pytest.mark.gpu``: skipped with a reason when CuPy does not import or no
  CUDA device is visible.
* Reference cases of the authors' implementation (``../shared/reference`` from
  the repository root): :func:`reference_dir`, :func:`reference_case_names`,
  :func:`load_reference_case`, and the ``reference_case`` fixture, parametrized
  over the non-CRF cases (``op != 'paccrf'``) by :func:`pytest_generate_tests`.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

# The tests exercise the Numba kernels themselves: compile them in-process at their
# first call instead of serving first calls with the reference engine while a background
# process compiles them (pacnd/engines/cpu/coldstart.py; tests/test_coldstart.py tests
# that mode in child processes).
os.environ["PACND_JIT"] = "eager"

ENGINE_INTERFACE = ("adapting_kernel", "adapting_kernel_vjp", "pac_forward", "pac_vjp")
CPU_ENGINES = {"numpy": "pacnd.engines.reference", "numba": "pacnd.engines.cpu"}
GPU_ENGINES = {"cuda": "pacnd.engines.cuda", "cupy": "pacnd.engines.cupy"}


# --------------------------------------------------------------------------- engines
def _engine_status(module_name):
    """(available, reason) for one engine package."""
    try:
        mod = importlib.import_module(module_name)
    except ImportError as exc:  # not written yet / optional dependency missing
        return False, f"{module_name} does not import: {exc}"
    missing = [f for f in ENGINE_INTERFACE if not callable(getattr(mod, f, None))]
    if missing:
        return False, f"{module_name} lacks {missing}"
    return True, ""


@functools.lru_cache(maxsize=None)
def available_cpu_engines():
    """Names of the CPU engines these tests run on."""
    names = [n for n, m in CPU_ENGINES.items() if _engine_status(m)[0]]
    wanted = os.environ.get("PACND_TEST_ENGINES")
    if wanted:
        wanted = [w.strip() for w in wanted.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in CPU_ENGINES]
        if unknown:
            raise pytest.UsageError(f"PACND_TEST_ENGINES names unknown CPU engines {unknown}")
        missing = [w for w in wanted if w not in names]
        if missing:
            reasons = "; ".join(_engine_status(CPU_ENGINES[w])[1] for w in missing)
            raise pytest.UsageError(f"PACND_TEST_ENGINES asks for {missing}: {reasons}")
        names = wanted
    return tuple(names)


@functools.lru_cache(maxsize=None)
def gpu_unavailable_reason():
    """None when CuPy imports and sees a CUDA device, else why GPU tests are skipped."""
    try:
        import cupy  # noqa: PLC0415
    except Exception as exc:  # ImportError, or a CUDA library failing to load
        return f"CuPy is not importable ({type(exc).__name__}: {exc})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"no CUDA device ({type(exc).__name__}: {exc})"
    if n < 1:
        return "no CUDA device visible"
    return None


@pytest.hookimpl(trylast=True)  # after the -k / -m deselection
def pytest_collection_modifyitems(config, items):
    _skip_gpu_tests(items)
    _start_background_runs(config, items)


def _skip_gpu_tests(items):
    gpu_items = [it for it in items if it.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    reason = gpu_unavailable_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"GPU test: {reason}")
    for it in gpu_items:
        it.add_marker(skip)


def _background_modules(items):
    """Test modules with selected tests that read long subprocesses' results
    (a ``runs`` fixture and a ``start_background`` function)."""
    return {it.module for it in items
            if "runs" in getattr(it, "fixturenames", ()) and hasattr(it.module, "start_background")}


def _start_background_runs(config, items):
    """The tests of tests/test_gpu_numba.py (the CUDA simulator and the PTX compile
    in subprocesses) run last and their subprocesses start now, so that the rest of
    the suite runs beside them. Not in pytest-xdist workers (each would start its
    own) nor with ``--collect-only``."""
    mods = _background_modules(items)
    if not mods:
        return
    items[:] = ([it for it in items if it.module not in mods]
                + [it for it in items if it.module in mods])
    if config.option.collectonly or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    for mod in mods:
        mod.start_background()


def pytest_sessionfinish(session, exitstatus):
    """Kill background subprocesses that the session ended without waiting for."""
    for mod in _background_modules(getattr(session, "items", ())):
        mod.stop_background()


@pytest.fixture(params=available_cpu_engines())
def engine(request):
    """Name of a CPU engine; each test using it runs on every available one."""
    return request.param


@pytest.fixture(params=[pytest.param(n, marks=pytest.mark.gpu) for n in GPU_ENGINES])
def gpu_engine(request):
    """Name of a GPU engine (tests using it are marked ``gpu``)."""
    ok, why = _engine_status(GPU_ENGINES[request.param])
    if not ok:
        pytest.skip(f"GPU engine {request.param!r} not available: {why}")
    return request.param


@pytest.fixture(autouse=True)
def _seeded_layer_init():
    """Layers built without ``rng=`` draw their initial weights from pacnd's default
    generator; re-seeding it before each test makes every run of a test see the same
    weights (an unseeded draw once put an output near 0 past a relative tolerance)."""
    from pacnd.nn import init  # noqa: PLC0415

    init.manual_seed(20190616)


@pytest.fixture
def rng():
    """A seeded generator, so every run draws the same data."""
    return np.random.default_rng(20190616)


# --------------------------------------------------------------------------- reference cases
def shared_dir():
    """``<repo>/../shared`` (where CI keeps the authors' reference cases and the sample
    data), or ``$PACND_SHARED_DIR`` where set (a GPU machine gets a copy in the checkout)."""
    env = os.environ.get("PACND_SHARED_DIR")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[1].parent / "shared"


def reference_dir():
    """The authors' reference cases: ``shared_dir() / "reference"``."""
    return shared_dir() / "reference"


@functools.lru_cache(maxsize=None)
def _case_ops():
    d = reference_dir()
    if not d.is_dir():
        return {}
    ops = {}
    for f in sorted(d.glob("*.npz")):
        with np.load(f, allow_pickle=False) as z:
            ops[f.stem] = str(z["op"])
    return ops


def reference_case_names(ops=None, exclude_ops=("paccrf",)):
    """Stems of the reference .npz files, optionally filtered by their ``op``."""
    return [n for n, op in _case_ops().items()
            if (ops is None or op in ops) and op not in exclude_ops]


def load_reference_case(name):
    """One case as a dict: arrays stay arrays, 0-d entries become Python scalars,
    ``pairwise_kernels`` (CRF) is parsed from JSON; ``name`` is added."""
    out = {"name": name}
    with np.load(reference_dir() / f"{name}.npz", allow_pickle=False) as z:
        for k in z.files:
            v = z[k]
            if v.ndim == 0:
                v = v.item()
            out[k] = v
    if isinstance(out.get("pairwise_kernels"), str):
        out["pairwise_kernels"] = json.loads(out["pairwise_kernels"])
    return out


def pytest_generate_tests(metafunc):
    if "reference_case" in metafunc.fixturenames:
        names = reference_case_names()
        metafunc.parametrize("reference_case", names, ids=names, indirect=True)


@pytest.fixture
def reference_case(request):
    return load_reference_case(request.param)
