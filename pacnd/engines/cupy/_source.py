"""CUDA C sources of the CuPy engine, their specialisations and compiler options.

The kernels live in the top-level ``kernels/`` folder of the repository (or
``pacnd/kernels/`` in an installed wheel). Each ``.cu`` file includes
``pac_common.cuh``; :func:`load_source` inlines that header (with ``#line``
markers) so that the text handed to NVRTC — and hashed by CuPy's kernel
cache — is self-contained.

Every specialisation is a template instance named by an NVRTC *name
expression*, e.g. ``"pac_fwd_tiled<float>"``; :data:`NAME_EXPRESSIONS` lists
all of them per file. Nothing here imports CuPy.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

__all__ = ["KERNEL_FILES", "NAME_EXPRESSIONS", "USER_OPTIONS", "kernels_dir", "load_source",
           "name_expression", "cupy_nvrtc_options", "nvrtc_compile", "NvrtcError"]

#: kernel templates per source file
KERNEL_FILES = {
    "adapting.cu": ("adapting_fwd", "adapting_zinv", "adapting_bwd_d2", "adapting_bwd_guide"),
    "pac.cu": ("pac_fwd_direct", "pac_bwd_input_direct", "pac_bwd_weight_direct",
               "pac_bwd_kernel_direct", "pac_fwd_tiled", "pac_bwd_input_tiled",
               "pac_bwd_weight_tiled", "pac_bwd_kernel_tiled"),
}
CTYPES = {"float32": "float", "float64": "double"}

#: the options pacnd passes to ``cupy.RawModule`` (CuPy adds its own, see
#: :func:`cupy_nvrtc_options`)
USER_OPTIONS = ("--std=c++17",)

_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.M)


def name_expression(kernel, dtype):
    """``'pac_fwd_tiled<float>'`` for kernel ``pac_fwd_tiled`` and float32."""
    return f"{kernel}<{CTYPES[str(dtype)]}>"


#: every specialisation compiled, per file
NAME_EXPRESSIONS = {f: tuple(name_expression(k, dt) for k in ks for dt in CTYPES)
                    for f, ks in KERNEL_FILES.items()}


def kernels_dir():
    """Folder holding the ``.cu`` sources (``PACND_KERNELS_DIR`` overrides)."""
    env = os.environ.get("PACND_KERNELS_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for cand in (here.parents[2] / "kernels", here.parents[3] / "kernels"):
        if (cand / "pac.cu").is_file():
            return cand
    raise FileNotFoundError(
        "pacnd's CUDA sources (kernels/pac.cu) were not found next to the package; reinstall "
        "pacnd or set PACND_KERNELS_DIR to the folder that holds them")


def _inline(path, seen):
    text = path.read_text()

    def repl(m):
        inc = path.parent / m.group(1)
        if inc in seen:
            return f"// {m.group(1)} already included\n"
        seen.add(inc)
        return f'#line 1 "{inc.name}"\n{_inline(inc, seen)}\n#line {text[:m.start()].count(chr(10)) + 2} "{path.name}"\n'

    return _INCLUDE.sub(repl, text)


@functools.lru_cache(maxsize=None)
def _cached_source(path_str, mtime):
    path = Path(path_str)
    return f'#line 1 "{path.name}"\n' + _inline(path, {path})


def load_source(filename, directory=None):
    """Text of ``kernels/<filename>`` with its local includes inlined."""
    path = Path(directory or kernels_dir()) / filename
    return _cached_source(str(path), path.stat().st_mtime_ns)


# --------------------------------------------------------------------------- NVRTC
def _cuda_include_dirs():
    """CUDA headers CuPy would add with ``-I`` (wheel, CUDA_PATH or the nvcc install)."""
    dirs = []
    try:
        import nvidia  # noqa: PLC0415 - namespace package of the NVIDIA wheels
        for base in nvidia.__path__:
            d = Path(base) / "cu13" / "include"
            if d.is_dir():
                dirs.append(str(d))
                break
    except ImportError:
        pass
    if not dirs:
        for cand in (os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
            if cand and (Path(cand) / "include").is_dir():
                dirs.append(str(Path(cand) / "include"))
                break
    return dirs


def cupy_nvrtc_options(arch, options=USER_OPTIONS, *, use_cupy=True):
    """The option list ``cupy.RawModule(options=options)`` hands to NVRTC for ``arch``.

    CuPy (13/14, ``cupy/_core/core.pyx`` and ``cupy/cuda/compiler.py``)
    assembles: its bundled CCCL include dirs, the user options (``--std=c++14``
    added when none is given), ``-I`` its own headers and the CUDA headers, then
    ``-ftz=true``, ``-arch=sm_XX`` (cubin) and
    ``--device-as-default-execution-space``. When CuPy imports, its own
    ``assemble_cupy_compiler_options`` is used for the first part.
    """
    arch = str(arch).replace("sm_", "").replace("compute_", "")
    opts = None
    if use_cupy:
        try:
            from pacnd._cupy import cupy_module_or_none  # noqa: PLC0415
            cp = cupy_module_or_none()
            if cp is not None:
                from cupy._core import core as _core  # noqa: PLC0415
                opts = tuple(_core.assemble_cupy_compiler_options(tuple(options)))
        except Exception:  # CuPy present but its NVRTC/CUDA headers are not: fall back
            opts = None
    if opts is None:
        opts = tuple(options)
        if not any("-std=" in o for o in opts):
            opts += ("--std=c++14",)
        opts += tuple(f"-I{d}" for d in _cuda_include_dirs())
    return opts + ("-ftz=true", f"-arch=sm_{arch}", "--device-as-default-execution-space")


class NvrtcError(RuntimeError):
    """NVRTC rejected a source; the message holds the compiler log."""


def nvrtc_compile(filename, arch, *, source=None, name_expressions=None, options=None):
    """Compile ``kernels/<filename>`` (or ``source``) to a cubin for ``arch`` with
    NVRTC, the way ``cupy.RawModule`` does, without a GPU.

    Returns ``{name_expression: lowered (mangled) name}``; raises
    :class:`NvrtcError` with the log when compilation fails, or a name
    expression does not resolve. Needs ``cuda-bindings`` and the NVRTC library
    (``nvidia-cuda-nvrtc``).
    """
    from cuda.bindings import nvrtc  # noqa: PLC0415

    if source is None:
        source = load_source(filename)
    if name_expressions is None:
        name_expressions = NAME_EXPRESSIONS[filename]
    if options is None:
        options = cupy_nvrtc_options(arch)

    def check(res, what):
        err = res[0]
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise NvrtcError(f"{what} failed: {err}")
        return res[1:]

    (prog,) = check(nvrtc.nvrtcCreateProgram(source.encode(), filename.encode(), 0, [], []),
                    "nvrtcCreateProgram")
    try:
        for ne in name_expressions:
            check(nvrtc.nvrtcAddNameExpression(prog, ne.encode()), f"nvrtcAddNameExpression({ne})")
        opts = [o.encode() for o in options]
        res = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        if res[0] != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            (size,) = check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
            log = b" " * size
            check(nvrtc.nvrtcGetProgramLog(prog, log), "nvrtcGetProgramLog")
            raise NvrtcError(f"NVRTC could not compile {filename} for sm_{arch} with options "
                             f"{list(options)}:\n{log.decode(errors='replace')}")
        (size,) = check(nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize")
        if size <= 0:
            raise NvrtcError(f"NVRTC produced an empty cubin for {filename}")
        lowered = {}
        for ne in name_expressions:
            (name,) = check(nvrtc.nvrtcGetLoweredName(prog, ne.encode()),
                            f"nvrtcGetLoweredName({ne})")
            lowered[ne] = name.decode() if isinstance(name, bytes) else str(name)
        return lowered
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
