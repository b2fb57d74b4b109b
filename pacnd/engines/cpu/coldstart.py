"""First results in seconds on an empty kernel cache: compile in the background.

Numba compiles a kernel the first time it runs and caches the machine code on
disk; on an empty cache (a new install, container or CI job) one code path of
this engine takes 10-30 s to compile on 2 cores. So that no first call waits
for that, the engine's entry points ask :func:`use_numba` first:

* a *path* (a group of kernels that one kind of call needs, for one dtype:
  :data:`PATHS`) is **ready** when this process ran it already, or when a
  marker file next to Numba's cache files says that its kernels were compiled
  into that cache (by this process, another one, or ``pacnd warmup``) for
  exactly these sources, this Numba and this CPU (:func:`marker`);
* otherwise the call is served by the NumPy reference engine (same results
  within rounding; its memory grows with the image, so only calls whose
  estimated cost is small are served that way, :func:`cheap_for_reference`),
  and a background process (:func:`main`, a little below the caller's priority, one at a time)
  compiles the missing paths into the cache and writes their markers; the
  next call after that runs the Numba kernels, loaded from the cache in a
  fraction of a second. A call too large for the
  reference waits for the background process (or compiles in-process).

The mode comes from ``PACND_JIT`` (or :func:`set_mode`):

``"background"`` (default)
    as above;
``"eager"``
    never fall back: compile in-process at the first call (the tests, the
    benchmarks and the background process itself run this way).

When the background process fails (it cannot start, the cache is not
writable, a compile error), the engine warns once and compiles in-process.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

__all__ = ["PATHS", "set_mode", "get_mode", "use_numba", "marker", "warm", "ready",
           "cheap_for_reference", "wait_idle", "stats"]

_MODES = ("background", "eager")
_mode = None
_lock = threading.RLock()
_ready = set()                 # (path, dtype name) known to be compiled or loaded here
_queue = []                    # paths waiting for the background process
_worker = None                 # (Popen, [paths], log path)
_failed = False
#: counts of calls served by each engine since import (for tests and benchmarks)
stats = {"numba": 0, "reference": 0, "waited": 0}

#: reference-engine fallback limits: estimated temporaries and multiply-adds of a call
REFERENCE_MAX_BYTES = 256 * 2**20
REFERENCE_MAX_FLOPS = 4e9


def _after_fork_in_child():
    """A forked child does not own its parent's background process."""
    global _worker, _lock
    _worker = None
    _lock = threading.RLock()
    del _queue[:]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def get_mode():
    """The compile mode: ``PACND_JIT`` or :func:`set_mode` (default ``"background"``)."""
    global _mode
    if _mode is None:
        m = os.environ.get("PACND_JIT", "background").strip().lower() or "background"
        if m not in _MODES:
            raise ValueError(f"PACND_JIT={m!r} is not a compile mode; use one of {_MODES}")
        _mode = m
    return _mode


def set_mode(mode):
    """Set the compile mode (``"background"`` or ``"eager"``; ``None``: from ``PACND_JIT``)."""
    global _mode
    if mode is not None and mode not in _MODES:
        raise ValueError(f"mode={mode!r} is not a compile mode; use one of {_MODES}")
    _mode = mode


# --------------------------------------------------------------------------- paths
def _ops():
    from ... import ops  # noqa: PLC0415
    return ops


def _arrays(dt, *shapes):
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s).astype(dt) for s in shapes]


def _dense(dt):
    x, f, w, b = _arrays(dt, (1, 2, 5, 6), (1, 2, 5, 6), (2, 2, 3, 3), (2,))
    _ops().pac_conv(x, f, w, b, padding=1, engine="numba")


def _dense_vjp(dt):
    x, f, w, b, g = _arrays(dt, (1, 2, 5, 6), (1, 2, 5, 6), (2, 2, 3, 3), (2,), (1, 2, 5, 6))
    _ops().pac_conv_vjp(g, x, f, w, b, padding=1, engine="numba")


def _dw_fused(dt):
    x, f, w = _arrays(dt, (1, 2, 5, 6), (1, 2, 5, 6), (1, 1, 3, 3))
    _ops().pac_conv(x, f, w, None, padding=1, shared=True, engine="numba")


def _dw_tiles(dt):
    x, f = _arrays(dt, (1, 2, 5, 6), (1, 2, 5, 6))
    _ops().pac_pool(x, f, 3, padding=1, channel_wise=True, engine="numba")


def _dw_vjp(dt):
    x, f, g = _arrays(dt, (1, 2, 5, 6), (1, 2, 5, 6), (1, 2, 5, 6))
    _ops().pac_pool_vjp(g, x, f, 3, padding=1, channel_wise=True, engine="numba")


def _adapting(dt):
    (f,) = _arrays(dt, (1, 2, 5, 6))
    ops = _ops()
    K = ops.adapting_kernel(f, 3, padding=1, engine="numba")
    ops.adapting_kernel_vjp(K, f, 3, padding=1, engine="numba")


def _crf(dt):
    from ...crf import fast  # noqa: PLC0415
    fast.warm(dt)


#: path name -> (warm function (runs the path's kernels on tiny arrays), a module whose
#: Numba cache directory holds the marker)
PATHS = {
    "dense": (_dense, "pacnd.engines.cpu.dense"),
    "dense_vjp": (_dense_vjp, "pacnd.engines.cpu.dense_vjp"),
    "dw_fused": (_dw_fused, "pacnd.engines.cpu.depthwise"),
    "dw_tiles": (_dw_tiles, "pacnd.engines.cpu.depthwise"),
    "dw_vjp": (_dw_vjp, "pacnd.engines.cpu.depthwise"),
    "adapting": (_adapting, "pacnd.engines.cpu.adapting"),
    "crf": (_crf, "pacnd.crf.fast"),
}
#: paths worth compiling next once a path was asked for (training needs the backward)
FOLLOW = {"dense": ("dense_vjp",), "dw_fused": ("dw_vjp",), "dw_tiles": ("dw_vjp",)}


# --------------------------------------------------------------------------- markers
def _cache_dir(module):
    """The directory where Numba caches the kernels of ``module`` (pacnd's locator)."""
    import importlib  # noqa: PLC0415

    from numba.core import caching  # noqa: PLC0415

    from . import _cache  # noqa: PLC0415
    _cache.install()
    mod = importlib.import_module(module)
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl")
    for cls in impl._locator_classes:
        loc = cls.from_function(_probe_function, mod.__file__)
        if loc is not None:
            loc.ensure_cache_path()
            return Path(loc.get_cache_path())
    raise RuntimeError(f"no Numba cache location for {module}")


def _probe_function():  # pragma: no cover - only its identity is used
    pass


def _key():
    """What the compiled kernels depend on: sources (and their stamps), Numba, the CPU."""
    import numba  # noqa: PLC0415
    from numba.core.registry import cpu_target  # noqa: PLC0415

    from . import _cache  # noqa: PLC0415
    h = hashlib.sha1()
    h.update(_cache.source_hash().encode())
    for f in _cache.source_files():
        st = f.stat()
        h.update(f"{f.name}:{st.st_mtime_ns}:{st.st_size};".encode())
    h.update(numba.__version__.encode())
    h.update(repr(cpu_target.target_context.codegen().magic_tuple()).encode())
    h.update(sys.version.encode())
    for var in ("NUMBA_BOUNDSCHECK", "NUMBA_OPT", "NUMBA_FASTMATH", "NUMBA_CPU_NAME",
                "NUMBA_CPU_FEATURES"):
        h.update(f"{var}={os.environ.get(var, '')};".encode())
    return h.hexdigest()[:16]


_key_cache = {}


def marker(path, dtype):
    """The marker file of ``path`` for ``dtype`` (it need not exist)."""
    dt = np.dtype(dtype).name
    module = PATHS[path][1]
    if module not in _key_cache:
        _key_cache[module] = (_cache_dir(module), _key())
    d, key = _key_cache[module]
    return d / f"pacnd-compiled-{path}-{dt}-{key}"


def _write_marker(path, dtype):
    m = marker(path, dtype)
    tmp = m.with_name(m.name + f".{os.getpid()}.tmp")
    tmp.write_text(f"compiled {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    os.replace(tmp, m)


def warm(path, dtype):
    """Compile (or load) ``path``'s kernels for ``dtype`` in this process; write its marker."""
    dt = np.dtype(dtype)
    old = _mode
    set_mode("eager")
    try:
        PATHS[path][0](dt)
    finally:
        set_mode(old)
    with _lock:
        _ready.add((path, dt.name))
    try:
        _write_marker(path, dt)
    except OSError:
        pass


def ready(path, dtype):
    """Whether ``path`` for ``dtype`` runs compiled code without compiling (in-process
    or marked in the cache)."""
    key = (path, np.dtype(dtype).name)
    if key in _ready:
        return True
    try:
        ok = marker(path, dtype).exists()
    except Exception:  # no cache location
        return False
    if ok:
        with _lock:
            _ready.add(key)
    return ok


# --------------------------------------------------------------------------- background
def _start_worker_locked():
    global _worker
    if _worker is not None or not _queue:
        return
    todo = list(dict.fromkeys(_queue))
    del _queue[:]
    env = dict(os.environ)
    env.update(PACND_JIT="eager", NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    pkg_root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join([pkg_root] + [p for p in env.get("PYTHONPATH", "")
                                                      .split(os.pathsep) if p])
    log = tempfile.NamedTemporaryFile(prefix="pacnd-compile-", suffix=".log", delete=False)
    env["PACND_JIT_LOG"] = log.name          # the process removes it when all went well
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from pacnd.engines.cpu import coldstart; "
             "sys.exit(coldstart.main(sys.argv[1:]))"] + [f"{p}:{d}" for p, d in todo],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            close_fds=True)
    except OSError as exc:
        log.close()
        _fail(f"could not start the background compile process ({exc})")
        return
    log.close()
    _worker = (proc, todo, log.name)


def _poll_locked():
    """Collect a finished background process; start the next one."""
    global _worker
    if _worker is None:
        _start_worker_locked()
        return
    proc, todo, log = _worker
    rc = proc.poll()
    if rc is None:
        return
    _worker = None
    missing = [(p, d) for p, d in todo if not ready(p, d)]
    if rc != 0 or missing:
        try:
            tail = Path(log).read_text()[-3000:]
        except OSError:
            tail = ""
        _fail(f"the background compile process failed (exit status {rc}; paths not compiled: "
              f"{missing})\n{tail}")
    else:
        try:
            os.unlink(log)
        except OSError:
            pass
    _start_worker_locked()


def _fail(msg):
    global _failed
    if not _failed:
        warnings.warn(f"pacnd: {msg}; compiling the CPU kernels in this process instead "
                      "(set PACND_JIT=eager to do so from the start).", RuntimeWarning,
                      stacklevel=4)
    _failed = True
    del _queue[:]


def _request_locked(paths, dt):
    for p in paths:
        for q in (p,) + FOLLOW.get(p, ()):
            if not ready(q, dt) and (q, dt.name) not in _queue and not (
                    _worker is not None and (q, dt.name) in _worker[1]):
                _queue.append((q, dt.name))
    _poll_locked()


def wait_idle(timeout=None):
    """Wait until no background compile process runs and none is queued; returns whether
    that happened within ``timeout`` seconds."""
    t0 = time.monotonic()
    while True:
        with _lock:
            _poll_locked()
            if _worker is None and not _queue:
                return True
        if timeout is not None and time.monotonic() - t0 > timeout:
            return False
        time.sleep(0.05)


def _wait_for(paths, dt):
    """Block until the background process has compiled ``paths`` (or stopped)."""
    while True:
        with _lock:
            _poll_locked()
            if all(ready(p, dt) for p in paths):
                return
            busy = _worker is not None and any((p, dt.name) in _worker[1] for p in paths)
            if not busy:
                return
        time.sleep(0.05)


def cheap_for_reference(nbytes, flops):
    """Whether the reference engine may serve a call needing about ``nbytes`` of
    temporaries and ``flops`` multiply-adds (a second or two at most)."""
    return nbytes <= REFERENCE_MAX_BYTES and flops <= REFERENCE_MAX_FLOPS


def use_numba(paths, dtype, nbytes=0, flops=0):
    """Whether a call needing ``paths`` (for ``dtype``) should run the Numba kernels now.

    ``False`` means: serve it with the reference engine (the paths are being
    compiled in the background). ``nbytes``/``flops`` estimate the reference
    engine's cost of the call; a call too large for it waits for the
    background compile instead.
    """
    dt = np.dtype(dtype)
    if all((p, dt.name) in _ready for p in paths):
        stats["numba"] += 1
        return True
    if get_mode() == "eager" or _failed:
        with _lock:
            _ready.update((p, dt.name) for p in paths)
        stats["numba"] += 1
        return True
    with _lock:
        if all(ready(p, dt) for p in paths):
            stats["numba"] += 1
            return True
        _request_locked(paths, dt)
        if _failed:
            _ready.update((p, dt.name) for p in paths)
            stats["numba"] += 1
            return True
    if cheap_for_reference(nbytes, flops):
        stats["reference"] += 1
        return False
    stats["waited"] += 1
    _wait_for(paths, dt)
    with _lock:
        _ready.update((p, dt.name) for p in paths)   # compiled, or compile here
    stats["numba"] += 1
    return True


# --------------------------------------------------------------------------- the process
def main(argv=None):
    """Background process: compile the given ``path:dtype`` items, writing their markers."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        os.nice(2)     # a little below the caller: not so low that a busy machine starves it
    except (AttributeError, OSError):
        pass
    set_mode("eager")
    from . import start_threads  # noqa: F401,PLC0415 - the engine, imported as usual
    for item in argv:
        path, _, dt = item.partition(":")
        t0 = time.perf_counter()
        warm(path, dt)
        marker(path, dt).stat()          # written (raises when the cache is not writable)
        print(f"compiled {path} {dt} in {time.perf_counter() - t0:.1f} s", flush=True)
    log = os.environ.get("PACND_JIT_LOG")
    if log:
        try:
            os.unlink(log)
        except OSError:
            pass
    return 0

