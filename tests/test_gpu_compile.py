"""The CUDA C sources compile with NVRTC the way ``cupy.RawModule`` compiles
them, for sm_80 and sm_90, with every specialisation (name expression) the
CuPy engine uses — no GPU needed. Plus the checks that tie the GPU engines to
the rest of pacnd without a device: the launch-parameter layout shared by
Python and CUDA C, lazy CuPy import, and the error without CuPy.

Needs ``cuda-bindings`` and the NVRTC library (``nvidia-cuda-nvrtc``, pulled
in by ``numba-cuda[cu13]``); the NVRTC tests skip with the reason otherwise.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from pacnd.engines import _gpu_common
from pacnd.engines.cupy import _source


def _nvrtc_reason():
    try:
        from cuda.bindings import nvrtc  # noqa: PLC0415
    except Exception as exc:
        return f"cuda.bindings.nvrtc does not import ({exc}); pip install 'numba-cuda[cu13]'"
    try:
        err, major, minor = nvrtc.nvrtcVersion()
    except Exception as exc:
        return f"the NVRTC library does not load ({exc}); pip install nvidia-cuda-nvrtc"
    return None


NVRTC = _nvrtc_reason()
needs_nvrtc = pytest.mark.skipif(NVRTC is not None, reason=str(NVRTC))
ARCHS = ("80", "90")


@needs_nvrtc
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("filename", sorted(_source.KERNEL_FILES))
def test_cuda_sources_compile_with_nvrtc(filename, arch):
    lowered = _source.nvrtc_compile(filename, arch)
    assert set(lowered) == set(_source.NAME_EXPRESSIONS[filename])
    names = list(lowered.values())
    assert all(names) and len(set(names)) == len(names)
    for ne, mangled in lowered.items():
        assert ne.split("<")[0] in mangled


@needs_nvrtc
def test_unpipelined_variant_compiles(monkeypatch):
    """``config.PIPELINE = False`` compiles the tiled GEMMs with ``-DPAC_PIPELINE=0``."""
    from pacnd.engines.cupy import config  # noqa: PLC0415

    monkeypatch.setattr(config, "PIPELINE", False)
    opts = config.options()
    assert "-DPAC_PIPELINE=0" in opts
    lowered = _source.nvrtc_compile("pac.cu", "90", options=_source.cupy_nvrtc_options("90", opts))
    assert set(lowered) == set(_source.NAME_EXPRESSIONS["pac.cu"])
    monkeypatch.setattr(config, "PIPELINE", True)
    assert "-DPAC_PIPELINE=0" not in config.options()


def test_every_engine_kernel_has_a_specialisation():
    wanted = {k for ks in _source.KERNEL_FILES.values() for k in ks}
    text = "\n".join(_source.load_source(f) for f in _source.KERNEL_FILES)
    for k in wanted:
        assert re.search(rf"__global__ void(?: __launch_bounds__\([^)]*\))?\s+{k}\(", text), k
        for dt in ("float32", "float64"):
            assert _source.name_expression(k, dt) in {e for es in _source.NAME_EXPRESSIONS.values()
                                                      for e in es}


def test_option_set_is_cupys():
    opts = _source.cupy_nvrtc_options("90")
    assert "--std=c++17" in opts
    assert opts[-3:] == ("-ftz=true", "-arch=sm_90", "--device-as-default-execution-space")


@needs_nvrtc
def test_nvrtc_check_catches_a_syntax_error(tmp_path):
    src = _source.load_source("pac.cu")
    broken = src.replace("const int yf = (int)(e % nout);", "const int yf = (int)(e % nout)", 1)
    assert broken != src
    with pytest.raises(_source.NvrtcError, match="error"):
        _source.nvrtc_compile("pac.cu", "80", source=broken)
    # an unknown specialisation is an error too
    with pytest.raises(_source.NvrtcError):
        _source.nvrtc_compile("adapting.cu", "80", name_expressions=["adapting_fwd<int>"])
    # and a broken copy of the file on disk, loaded like the engine loads it
    for f in ("pac_common.cuh", "adapting.cu"):
        (tmp_path / f).write_text((_source.kernels_dir() / f).read_text())
    common = tmp_path / "pac_common.cuh"
    common.write_text(common.read_text().replace("struct PacGeo {", "struct PacGeo {{", 1))
    with pytest.raises(_source.NvrtcError):
        _source.nvrtc_compile("adapting.cu", "90",
                              source=_source.load_source("adapting.cu", tmp_path))


def test_param_layout_matches_cuda_header():
    text = (_source.kernels_dir() / "pac_common.cuh").read_text()
    enum = dict((k, int(v)) for k, v in re.findall(r"\bP_([A-Z0-9_]+)\s*=\s*(\d+)", text))
    py = {("T" if k == "T" else k): v for k, v in _gpu_common.PARAM.items()}
    assert enum.pop("COUNT") == _gpu_common.P_COUNT
    assert enum == py
    assert max(py.values()) + 3 <= _gpu_common.P_COUNT


def test_import_pacnd_does_not_import_cupy():
    code = ("import sys, pacnd, pacnd.engines.cupy, pacnd.engines._gpu_common; "
            "import pacnd.engines.cupy._source; "
            "assert 'cupy' not in sys.modules, 'cupy imported'; print('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


def test_cupy_engine_without_cupy_says_how_to_install():
    from pacnd import _cupy  # noqa: PLC0415
    from pacnd.engines.cupy._backend import backend  # noqa: PLC0415

    try:
        cp = _cupy.cupy_module_or_none()
        n = cp.cuda.runtime.getDeviceCount() if cp is not None else 0
    except Exception:
        n = 0
    if n:
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match=r'pip install "pacnd\[gpu\]"|CUDA GPU'):
        backend()
