"""Engine selection: the one dispatch point (pacnd._dispatch)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pacnd
import pacnd.engines.reference as reference
from pacnd import _dispatch


@pytest.fixture(autouse=True)
def clean_dispatch_state(monkeypatch):
    """Every test starts from the built-in defaults and leaves no trace."""
    monkeypatch.delenv("PACND_ENGINE", raising=False)
    saved = dict(_dispatch._configured)
    pacnd.set_engine(None)
    yield
    _dispatch._configured.clear()
    _dispatch._configured.update(saved)


def _numba_engine_importable():
    try:
        importlib.import_module("pacnd.engines.cpu")
    except ImportError:
        return False
    return True


@pytest.fixture
def spy(monkeypatch):
    """Replace pac_forward of the reference engine by a recorder that still computes."""
    calls = []
    real = reference.pac_forward

    def recorder(*args, **kwargs):
        calls.append("numpy")
        return real(*args, **kwargs)

    monkeypatch.setattr(reference, "pac_forward", recorder)
    return calls


@pytest.fixture
def no_numba_engine(monkeypatch):
    """Make ``import pacnd.engines.cpu`` fail, as on a machine without Numba."""
    monkeypatch.setitem(sys.modules, "pacnd.engines.cpu", None)


def _call(**kw):
    r = np.random.default_rng(0)
    x = r.standard_normal((1, 2, 4, 5))
    g = r.standard_normal((1, 1, 4, 5))
    w = r.standard_normal((2, 2, 3, 3))
    return pacnd.pac_conv(x, g, w, padding=1, **kw)


# --------------------------------------------------------------------------- defaults
def test_builtin_defaults():
    assert pacnd.get_engine() == "numba"
    assert pacnd.get_engine("cpu") == "numba"
    assert pacnd.get_engine("gpu") == "cupy"


def test_default_for_numpy_arrays_is_numba_when_it_imports():
    mod = _dispatch.select_engine([np.zeros(3)])
    if _numba_engine_importable():
        assert mod is importlib.import_module("pacnd.engines.cpu")
    else:
        assert mod is reference


def test_default_falls_back_to_numpy_without_numba(no_numba_engine, spy):
    assert _dispatch.select_engine([np.zeros(3)]) is reference
    out = _call()
    assert spy == ["numpy"] and out.shape == (1, 2, 4, 5)


def test_explicit_numba_without_numba_is_an_error(no_numba_engine):
    with pytest.raises(RuntimeError, match="engine 'numba' is not available"):
        _call(engine="numba")


def test_select_engine_with_no_arrays_is_cpu():
    assert _dispatch.select_engine([None, None], "numpy") is reference


# --------------------------------------------------------------------------- choosing
def test_engine_argument(spy):
    _call(engine="numpy")
    assert spy == ["numpy"]


def test_engine_argument_overrides_configuration(spy, no_numba_engine):
    pacnd.set_engine("numba")
    _call(engine="numpy")
    assert spy == ["numpy"]


def test_use_engine_context_manager(spy):
    with pacnd.use_engine("numpy"):
        assert pacnd.get_engine("cpu") == "numpy"
        assert pacnd.get_engine("gpu") == "cupy"
        _call()
    assert spy == ["numpy"]
    assert pacnd.get_engine("cpu") == "numba"


def test_use_engine_restores_on_error_and_nests():
    pacnd.set_engine("numpy")
    with pytest.raises(KeyError):
        with pacnd.use_engine("numba"):
            assert pacnd.get_engine() == "numba"
            raise KeyError("boom")
    assert pacnd.get_engine() == "numpy"
    with pacnd.use_engine("numba"):
        with pacnd.use_engine("numpy"):
            assert pacnd.get_engine() == "numpy"
        assert pacnd.get_engine() == "numba"
    assert pacnd.get_engine() == "numpy"


def test_use_engine_gpu_name_leaves_cpu_alone():
    with pacnd.use_engine("cuda"):
        assert pacnd.get_engine("gpu") == "cuda"
        assert pacnd.get_engine("cpu") == "numba"
    assert pacnd.get_engine("gpu") == "cupy"


def test_set_engine(spy):
    pacnd.set_engine("numpy")
    assert pacnd.get_engine() == "numpy"
    _call()
    assert spy == ["numpy"]
    pacnd.set_engine("cupy")
    assert pacnd.get_engine("gpu") == "cupy" and pacnd.get_engine("cpu") == "numpy"
    pacnd.set_engine(None)
    assert pacnd.get_engine("cpu") == "numba" and pacnd.get_engine("gpu") == "cupy"


@pytest.mark.parametrize("bad", ["torch", "Numba", "", "gpu"])
def test_unknown_engine_names(bad):
    with pytest.raises(ValueError, match="is not known"):
        pacnd.set_engine(bad)
    with pytest.raises(ValueError, match="is not known"):
        with pacnd.use_engine(bad):
            pass  # pragma: no cover
    with pytest.raises(ValueError, match="is not known"):
        _call(engine=bad)


def test_env_var(monkeypatch, spy):
    monkeypatch.setenv("PACND_ENGINE", "numpy")
    assert pacnd.get_engine("cpu") == "numpy"
    assert pacnd.get_engine("gpu") == "cupy"
    _call()
    assert spy == ["numpy"]
    # set_engine / use_engine take precedence over the environment
    with pacnd.use_engine("numba"):
        assert pacnd.get_engine() == "numba"
    pacnd.set_engine("numba")
    assert pacnd.get_engine() == "numba"


def test_env_var_gpu_engine_only_affects_gpu(monkeypatch):
    monkeypatch.setenv("PACND_ENGINE", "cuda")
    assert pacnd.get_engine("gpu") == "cuda"
    assert pacnd.get_engine("cpu") == "numba"


def test_env_var_unknown(monkeypatch):
    monkeypatch.setenv("PACND_ENGINE", "fast")
    with pytest.raises(ValueError, match="PACND_ENGINE='fast'"):
        pacnd.get_engine()
    with pytest.raises(ValueError, match="PACND_ENGINE"):
        _call()
    # an explicit engine does not consult the environment
    assert _call(engine="numpy").shape == (1, 2, 4, 5)


@pytest.mark.parametrize("name", ["cuda", "cupy"])
def test_gpu_engine_with_numpy_arrays(name):
    with pytest.raises(ValueError, match=rf"engine='{name}' runs on the GPU.*NumPy"):
        _call(engine=name)
    with pytest.raises(ValueError, match=rf"engine='{name}'"):
        pacnd.adapting_kernel(np.zeros((1, 1, 5, 5)), 3, engine=name)
    with pytest.raises(ValueError, match=rf"engine='{name}'"):
        pacnd.conv_vjp(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 3, 3)),
                       engine=name)


def test_set_gpu_engine_does_not_affect_numpy_arrays(spy, no_numba_engine):
    pacnd.set_engine("cuda")
    _call()
    assert spy == ["numpy"]


def test_mixed_devices_are_refused():
    class FakeCupyArray:  # looks like a CuPy array to the dispatcher (no CuPy needed)
        pass

    FakeCupyArray.__module__ = "cupy._core.core"
    with pytest.raises(ValueError, match="different devices"):
        _dispatch.select_engine([np.zeros(2), FakeCupyArray()], "numpy")


# --------------------------------------------------------------------------- imports
def _run_python(code):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_import_does_not_import_cupy():
    out = _run_python("""
        import sys
        import pacnd
        import pacnd.ops, pacnd._dispatch, pacnd.engines, pacnd.engines.reference
        import numpy as np
        x = np.ones((1, 1, 5, 5))
        pacnd.pac_conv(x, x, np.ones((1, 1, 3, 3)), engine="numpy")
        pacnd.pac_conv_vjp(np.ones((1, 1, 3, 3)), x, x, np.ones((1, 1, 3, 3)), engine="numpy")
        bad = sorted(m for m in sys.modules if m == "cupy" or m.startswith("cupy.")
                     or m.startswith("cupyx"))
        print("CUPY:", bad)
    """)
    assert "CUPY: []" in out, out


def test_numba_engine_does_not_import_cupy():
    if not _numba_engine_importable():
        pytest.skip("pacnd.engines.cpu does not import")
    out = _run_python("""
        import sys
        import pacnd.engines.cpu
        print("CUPY:", sorted(m for m in sys.modules if m.split(".")[0] in ("cupy", "cupyx")))
    """)
    assert "CUPY: []" in out, out


def test_import_pacnd_does_not_load_gpu_engines():
    """The GPU engine modules are only imported when a GPU engine is selected."""
    out = _run_python("""
        import sys
        import pacnd
        import numpy as np
        x = np.ones((1, 1, 5, 5))
        pacnd.pac_conv(x, x, np.ones((1, 1, 3, 3)), engine="numpy")
        print("LOADED:", sorted(m for m in sys.modules
                                if m.startswith(("pacnd.engines.cuda", "pacnd.engines.cupy"))))
    """)
    assert "LOADED: []" in out, out
