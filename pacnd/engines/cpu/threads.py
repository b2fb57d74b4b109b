"""Start Numba's thread pool so that it does not fight the BLAS threads.

The engine alternates Numba ``parallel`` kernels with NumPy's BLAS (OpenBLAS
has its own threads). Numba's default OpenMP layer (GNU libgomp) lets idle
workers busy-wait for ``GOMP_SPINCOUNT`` (300 000 spins, several ms) after
every parallel region; on a machine whose cores are all used by both pools,
each following GEMM then waits for those spinning threads to be descheduled.
Measured on 2 cores: a ~10 us kernel followed by a 0.5 ms GEMM took 8 ms per
pair with the default policy, 0.53 ms with passive waiting.

:func:`start_threads` therefore launches Numba's pool with
``OMP_WAIT_POLICY=PASSIVE`` in the environment (libgomp reads it once, when
it is loaded) and restores the environment right after, so other OpenMP
runtimes loaded later are not affected. It does nothing when the user set
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` (their choice wins) or when the
layer is not OpenMP. When Numba's OpenMP pool was already started by other
code (with libgomp's default busy-waiting), it warns once: the engine then
runs, but kernels that follow BLAS calls can be much slower on machines whose
cores are all busy.
"""

from __future__ import annotations

import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

__all__ = ["start_threads", "parallel_for"]

_WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def start_threads():
    """Launch Numba's threading layer with passive OpenMP waiting (see module doc)."""
    try:
        from numba.np.ufunc import parallel  # noqa: PLC0415
    except ImportError:  # pragma: no cover - numba without parallel support
        return
    if any(v in os.environ for v in _WAIT_VARS):
        return
    if getattr(parallel, "_is_initialized", True):
        try:
            layer = parallel.threading_layer()
        except Exception:  # pragma: no cover
            return
        if layer == "omp":
            warnings.warn(
                "Numba's OpenMP thread pool was started before pacnd's CPU engine was imported, "
                "with libgomp's default busy-waiting; PAC kernels that follow BLAS calls may run "
                "much slower on machines whose cores are all busy. Import pacnd (or "
                "pacnd.engines.cpu) before running other Numba parallel code, or set "
                "OMP_WAIT_POLICY=PASSIVE in the environment before starting Python.",
                RuntimeWarning, stacklevel=3)
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        parallel._launch_threads()
    except Exception:  # pragma: no cover - leave the error to the first parallel call
        pass
    finally:
        os.environ.pop("OMP_WAIT_POLICY", None)


_pool = None
_pool_lock = threading.Lock()


def _forget_pool():
    """In a forked child the pool's threads do not exist: start a new pool on demand."""
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _executor():
    global _pool
    with _pool_lock:
        if _pool is None:
            import numba  # noqa: PLC0415
            _pool = ThreadPoolExecutor(max_workers=numba.config.NUMBA_NUM_THREADS,
                                       thread_name_prefix="pacnd")
        return _pool


def parallel_for(fn, n, *args):
    """``fn(u0, u1, *args)`` over the work units ``[0, n)``, split across threads.

    ``fn`` is an ``njit(nogil=True)`` function that processes units
    ``[u0, u1)`` serially; the units are cut into one contiguous range per
    thread, the calling thread runs the first and a Python thread pool the
    others (``numba.get_num_threads()`` threads in all), so the call honours
    ``numba.set_num_threads`` like ``prange`` does. Compared with a ``prange``
    kernel this skips Numba's parfor compilation passes (seconds per kernel on
    a cold cache); the dispatch costs tens of microseconds per call.
    """
    import numba  # noqa: PLC0415
    nt = min(numba.get_num_threads(), n)
    if nt <= 1:
        fn(0, n, *args)
        return
    bounds = [n * i // nt for i in range(nt + 1)]
    pool = _executor()
    futures = [pool.submit(fn, bounds[i], bounds[i + 1], *args) for i in range(1, nt)]
    fn(bounds[0], bounds[1], *args)
    for f in futures:
        f.result()
