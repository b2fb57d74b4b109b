"""Batches of files on a scheduler: one task per file, per-file errors, resume, progress.

:func:`run_batch` runs a function once per :class:`Job` (a file to process)
on one of these schedulers (:func:`parse_scheduler`):

``threads``
    In this process, one file after another (the default: each file's
    kernels already use every core). Without ``keep_going`` the first
    failing file stops the batch (the files before it are kept).
``processes`` or ``processes:N``
    Dask's multiprocessing scheduler with N worker processes (default: the
    number of cores).
``local:N``
    A ``dask.distributed.LocalCluster`` with N single-threaded worker
    processes, started for the batch and shut down after it; each task's
    Numba kernels get ``cores // N`` threads.
``tcp://HOST:PORT`` (or ``tls://``)
    An existing ``dask.distributed`` scheduler (``dask scheduler`` /
    ``dask worker`` on other machines, which must see the same paths).

On every scheduler but ``threads`` all files run: a file that fails is
reported with its name and the error, the others finish. On the
distributed schedulers a task whose worker dies (killed, out of memory) is
rerun on another worker (Dask's ``allowed-failures``, 3 by default) before
it counts as failed. Outputs are written atomically by the job functions
(temporary file renamed into place), so ``resume=True`` can skip every job
whose outputs all exist. Progress is a tqdm bar over finished files.

Used by ``pacnd crf --batch`` and ``pacnd upsample predict --batch``
(:func:`add_batch_options`), and from Python through
:func:`pacnd.crf.batch.refine_folder` and
:func:`pacnd.models.batch.upsample_folder`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass, field

__all__ = ["Job", "BatchReport", "run_batch", "parse_scheduler", "add_batch_options",
           "SCHEDULER_HELP"]

SCHEDULER_HELP = ("threads (default: this process, one file after another), processes[:N] "
                  "(Dask's multiprocessing scheduler), local:N (a dask.distributed "
                  "LocalCluster with N worker processes) or a scheduler address "
                  "tcp://HOST:PORT")


@dataclass(frozen=True)
class Job:
    """One file's task.

    Attributes
    ----------
    name : str
        What the reports call it (the file's stem).
    outputs : tuple of str
        The files it writes (``resume`` skips the job when all exist).
    args, kwargs
        Passed to the batch function.
    """

    name: str
    outputs: tuple
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass
class BatchReport:
    """What :func:`run_batch` did.

    Attributes
    ----------
    done, skipped : list of str
        Jobs that ran successfully / were skipped (``resume``).
    failed : dict
        ``{name: error message}``.
    seconds : float
        Wall time of the run (without skipped jobs' zero time).
    scheduler : str
    """

    done: list
    skipped: list
    failed: dict
    seconds: float
    scheduler: str

    @property
    def rate(self):
        """Finished files per second."""
        return len(self.done) / self.seconds if self.seconds > 0 else 0.0


def parse_scheduler(spec):
    """``spec`` -> ``(kind, value)``: ``('threads', None)``, ``('processes', N or None)``,
    ``('local', N)`` or ``('address', 'tcp://...')`` (ValueError naming the forms)."""
    if not isinstance(spec, str):
        raise TypeError(f"scheduler must be a string ({SCHEDULER_HELP}), got {spec!r}")
    s = spec.strip()
    if s == "threads":
        return "threads", None
    m = re.fullmatch(r"(processes|local)(?::(\d+))?", s)
    if m:
        n = int(m.group(2)) if m.group(2) is not None else None
        if n is not None and n < 1:
            raise ValueError(f"scheduler {spec!r}: the number of workers must be >= 1")
        if m.group(1) == "local" and n is None:
            raise ValueError(f"scheduler {spec!r}: give the number of worker processes, e.g. "
                             f"local:2")
        return m.group(1), n
    if re.fullmatch(r"(tcp|tls|inproc|ucx)://[^\s]+", s):
        return "address", s
    raise ValueError(f"scheduler {spec!r} is not understood; use {SCHEDULER_HELP}")


def add_batch_options(p, *, keep_going=False):
    """Add ``--scheduler``, ``--resume`` (and ``--keep-going``) to a batch command's parser."""
    g = p.add_argument_group("batch execution (--batch)")
    g.add_argument("--scheduler", default="threads", metavar="SPEC",
                   help=f"where the files run: {SCHEDULER_HELP}; every scheduler but threads "
                        f"runs all files and reports each failure")
    g.add_argument("--resume", action="store_true",
                   help="skip files whose outputs already exist (outputs are written "
                        "atomically, so an existing one is complete)")
    if keep_going:
        g.add_argument("--keep-going", action="store_true",
                       help="threads: report a failing file and continue (exit status 1 at "
                            "the end)")
    return g


# --------------------------------------------------------------------------- the task
def _run_job(job, func, engine, threads):
    """Run one job; ``(name, None)`` or ``(name, 'Error: message')``."""
    if threads:
        with contextlib.suppress(Exception):
            import numba  # noqa: PLC0415

            numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        if engine is not None:
            from ._dispatch import use_engine  # noqa: PLC0415

            with use_engine(engine):
                func(*job.args, **job.kwargs)
        else:
            func(*job.args, **job.kwargs)
    except Exception as exc:  # noqa: BLE001 - reported per file, the batch goes on
        return job.name, _message(exc)
    return job.name, None


def _message(exc):
    msg = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (ValueError, TypeError, OSError)):
        return msg
    return f"{type(exc).__name__}: {msg}"


def _prefixed(exc, name):
    """``exc`` with the job name in front of its message (same type when possible)."""
    try:
        return type(exc)(f"{name}: {exc}")
    except Exception:  # noqa: BLE001 - an exception type with another signature
        return RuntimeError(f"{name}: {exc}")


# --------------------------------------------------------------------------- schedulers
def _bar(total, progress, desc):
    from tqdm.auto import tqdm  # noqa: PLC0415

    return tqdm(total=total, desc=desc, unit="img", disable=not progress, file=sys.stderr)


def _threads(func, jobs, engine, keep_going, bar, report_error):
    failed, done = {}, []
    for job in jobs:
        if keep_going:
            name, err = _run_job(job, func, engine, None)
        else:
            try:
                if engine is not None:
                    from ._dispatch import use_engine  # noqa: PLC0415

                    with use_engine(engine):
                        func(*job.args, **job.kwargs)
                else:
                    func(*job.args, **job.kwargs)
                name, err = job.name, None
            except (ValueError, TypeError, OSError, EOFError, MemoryError) as exc:
                raise _prefixed(exc, job.name) from None
        if err is None:
            done.append(name)
        else:
            failed[name] = err
            report_error(name, err, bar)
        bar.update(1)
    return done, failed


def _processes(func, jobs, engine, n, bar, report_error):
    import dask  # noqa: PLC0415
    from dask.callbacks import Callback  # noqa: PLC0415

    n = n or os.cpu_count() or 1
    threads = max(1, (os.cpu_count() or 1) // n)
    tasks = [dask.delayed(_run_job, pure=False)(job, func, engine, threads) for job in jobs]
    keys = {t.key for t in tasks}

    class _Progress(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if key in keys:
                name, err = result
                if err is not None:
                    report_error(name, err, bar)
                bar.update(1)

    with _Progress():
        results = dask.compute(*tasks, scheduler="processes", num_workers=n)
    done = [name for name, err in results if err is None]
    failed = {name: err for name, err in results if err is not None}
    return done, failed


@contextlib.contextmanager
def distributed_client(kind, value, *, memory_limit=None):
    """A ``distributed.Client`` for ``('local', N)`` (a LocalCluster started and shut down
    here) or ``('address', 'tcp://...')`` (connect only), and the Numba threads per task."""
    from .dask import require_module  # noqa: PLC0415

    distributed = require_module("distributed", f"the {kind} scheduler")
    import logging  # noqa: PLC0415

    cluster = None
    if kind == "local":
        cluster = distributed.LocalCluster(
            n_workers=value, threads_per_worker=1, processes=True, dashboard_address=":0",
            memory_limit=memory_limit if memory_limit is not None else "auto",
            silence_logs=logging.ERROR)
        threads = max(1, (os.cpu_count() or 1) // value)
    else:
        threads = None
    try:
        try:
            client = distributed.Client(cluster if cluster is not None else value,
                                        timeout="20s", set_as_default=False)
        except OSError as exc:
            raise OSError(f"cannot reach the Dask scheduler at {value}: {exc}") from None
        try:
            yield client, threads
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


def _distributed(func, jobs, engine, kind, value, bar, report_error, memory_limit):
    from distributed import as_completed  # noqa: PLC0415

    done, failed = [], {}
    with distributed_client(kind, value, memory_limit=memory_limit) as (client, threads):
        token = uuid.uuid4().hex[:8]
        keys = [f"pacnd-{re.sub(r'[^A-Za-z0-9_.-]', '_', j.name)}-{i}-{token}"
                for i, j in enumerate(jobs)]
        task = functools.partial(_run_job, func=func, engine=engine, threads=threads)
        futures = client.map(task, jobs, key=keys, pure=False)
        names = {f.key: j.name for f, j in zip(futures, jobs)}
        for fut in as_completed(futures, loop=client.loop):
            try:
                name, err = fut.result()
            except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: its worker kept dying
                name, err = names[fut.key], f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            if err is None:
                done.append(name)
            else:
                failed[name] = err
                report_error(name, err, bar)
            bar.update(1)
    return done, failed


def run_batch(func, jobs, *, scheduler="threads", resume=False, keep_going=False,
              progress=True, desc="pacnd", engine=None, on_error=None, memory_limit=None):
    """Run ``func(*job.args, **job.kwargs)`` for every job on a scheduler.

    Parameters
    ----------
    func : callable
        A module-level function (it is pickled for process schedulers) that
        writes the job's outputs atomically.
    jobs : sequence of Job
    scheduler : str
        See :func:`parse_scheduler` (the module doc lists the choices).
    resume : bool
        Skip jobs whose outputs all exist.
    keep_going : bool
        ``threads`` only: continue after a failing file (other schedulers
        always do).
    progress : bool
        Show a tqdm bar (stderr).
    desc : str
        The bar's label.
    engine : str, optional
        PAC engine every task runs under (:func:`pacnd.use_engine`).
    on_error : callable, optional
        ``on_error(name, message)`` for each failure as it happens (default:
        print ``desc: error: name: message`` to stderr).
    memory_limit : str or int, optional
        ``local:N``: memory limit per worker (e.g. ``'2GiB'``; default Dask's
        ``'auto'``).

    Returns
    -------
    BatchReport
    """
    kind, value = parse_scheduler(scheduler)
    jobs = list(jobs)
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"jobs must have distinct names; repeated: {dup}")
    skipped = [j.name for j in jobs if resume and j.outputs and
               all(os.path.exists(o) for o in j.outputs)]
    todo = [j for j in jobs if j.name not in set(skipped)]

    def report_error(name, err, bar):
        if on_error is not None:
            on_error(name, err)
        else:
            bar.write(f"{desc}: error: {name}: {err}", file=sys.stderr)

    t0 = time.perf_counter()
    bar = _bar(len(todo), progress, desc)
    try:
        if not todo:
            done, failed = [], {}
        elif kind == "threads":
            done, failed = _threads(func, todo, engine, keep_going, bar, report_error)
        elif kind == "processes":
            done, failed = _processes(func, todo, engine, value, bar, report_error)
        else:
            done, failed = _distributed(func, todo, engine, kind, value, bar, report_error,
                                        memory_limit)
    finally:
        bar.close()
    order = {n: i for i, n in enumerate(names)}
    return BatchReport(sorted(done, key=order.get), skipped,
                       dict(sorted(failed.items(), key=lambda kv: order[kv[0]])),
                       time.perf_counter() - t0, scheduler)
