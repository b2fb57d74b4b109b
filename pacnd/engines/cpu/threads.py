"""The engine's thread pool: dynamic work claiming for ``nogil`` kernels.

:func:`parallel_for` runs an ``njit(nogil=True)`` function on
``numba.get_num_threads()`` threads (the caller and a Python thread pool);
the threads claim work units from an atomic counter (:func:`claim`), so the
split adapts to threads that the OS deschedules on a busy machine, and the
caller never waits for a thread that has not started. Every dense and
depthwise kernel of the engine runs this way: one pool, no OpenMP regions
and no BLAS threads interleaved with them.

:func:`start_threads` launches Numba's own threading layer (used by
``prange`` code elsewhere, e.g. the PAC-CRF fast path) with
``OMP_WAIT_POLICY=PASSIVE`` in the environment (libgomp reads it once, when
it is loaded) and restores the environment right after, so other OpenMP
runtimes loaded later are not affected: libgomp's default lets idle workers
busy-wait for ``GOMP_SPINCOUNT`` (300 000 spins, several ms) after every
parallel region, which starves BLAS threads and other work on machines whose
cores are all busy (measured on 2 cores: a ~10 us kernel followed by a 0.5 ms
GEMM took 8 ms per pair with the default policy, 0.53 ms with passive
waiting). It does nothing when the user set ``OMP_WAIT_POLICY`` or
``GOMP_SPINCOUNT`` (their choice wins) or when the layer is not OpenMP; when
Numba's OpenMP pool was already started by other code, it warns once.
"""

from __future__ import annotations

import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["start_threads", "parallel_for", "claim", "fetch_add", "SLOTS", "sum_slots"]

#: Accumulating kernels (weight gradients, alpha/lam sums) claim *slots* rather than
#: units: slot ``s`` processes units ``s, s + S, s + 2 S, ...`` in that order into its own
#: partial sums, and the slots are added in slot order. Which thread runs which slot
#: changes from call to call; the result does not -- every sum is bit-identical from run to
#: run and for any thread count (training resumes bit for bit). ``S`` is this many (fewer
#: when one slot's sums are large, see :func:`sum_slots`).
SLOTS = 16

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


# --------------------------------------------------------------------------- work claiming
@intrinsic
def fetch_add(typingctx, arr, idx, val):
    """Atomically ``old = arr[idx]; arr[idx] += val``; returns ``old`` (sequentially
    consistent; ``arr`` a C-contiguous int64 array, no bounds check)."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64
            and isinstance(idx, types.Integer) and isinstance(val, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        i = context.cast(builder, args[1], sig.args[1], types.intp)
        v = context.cast(builder, args[2], sig.args[2], types.int64)
        ptr = builder.gep(ary.data, [i])
        return builder.atomic_rmw("add", ptr, v, "seq_cst")

    return types.int64(arr, idx, val), codegen


@njit(cache=True)
def claim(ctl, tid):
    """The next unclaimed work unit of a :func:`parallel_for` call (``>= n`` when none is
    left); marks thread ``tid`` as having claimed work."""
    if ctl[1 + tid] == 0:
        fetch_add(ctl, 1 + tid, 1)
    return fetch_add(ctl, 0, 1)


def sum_slots(nbytes, budget):
    """Slots for per-slot partial sums of ``nbytes`` each: :data:`SLOTS`, fewer (at least
    one) when they would exceed ``budget`` bytes together (the engine passes its tile
    budget). Depends on the shapes and the budget only, never on the thread count, so
    results do not either."""
    return int(max(1, min(SLOTS, budget // max(int(nbytes), 1))))


def parallel_for(fn, n, *args):
    """``fn(tid, ctl, n, *args)`` on ``numba.get_num_threads()`` threads, units ``[0, n)``
    claimed one at a time.

    ``fn`` is an ``njit(nogil=True)`` function that loops
    ``u = claim(ctl, tid)`` while ``u < n`` and processes unit ``u``; ``tid``
    (0 for the calling thread, ``1 .. nt-1`` for the pool's) indexes per-thread
    scratch. Units are claimed dynamically (an atomic counter), so a thread the
    OS deschedules -- a busy machine -- holds up at most the unit it is in: the
    others take the rest. The calling thread runs ``fn`` too and then waits only
    for the pool threads that claimed work; one that has not started by then
    finds nothing left and returns at once. Compared with a ``prange`` kernel
    this skips Numba's parfor compilation passes (seconds per kernel on a cold
    cache) and OpenMP's wake-ups; the dispatch costs tens of microseconds per
    call. Honours ``numba.set_num_threads`` like ``prange`` does.
    """
    import numba  # noqa: PLC0415
    nt = max(1, min(numba.get_num_threads(), n))
    ctl = np.zeros(1 + nt, dtype=np.int64)       # [next unit, claimed-by flag per thread]
    if nt <= 1:
        fn(0, ctl, n, *args)
        return
    pool = _executor()
    futures = [pool.submit(fn, i, ctl, n, *args) for i in range(1, nt)]
    fn(0, ctl, n, *args)
    for i, f in enumerate(futures, start=1):
        if ctl[1 + i] != 0 or f.done():
            f.result()
