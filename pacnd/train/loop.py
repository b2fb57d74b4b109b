"""The training loop: :func:`fit`.

One step: draw a batch, ``model.train()``, ``optimizer.zero_grad()``,
``loss = loss_fn(model, batch)``, ``loss.backward()``, ``optimizer.step()``,
``scheduler.step()`` — then log, evaluate, checkpoint as configured.

Reproducibility. All randomness of a run should come from the ``rng``
Generator that the loop owns (pass it a seed): a ``data`` *sampler*
``data(rng) -> batch`` draws crops, flips, ... from it. A checkpoint stores
the parameters, the optimizer's and the schedule's state, the Generator's
state and the step, so ``fit(..., resume=True)`` continues exactly where the
run stopped: on CPU the resumed run reproduces the uninterrupted one bit for
bit.

``data`` may also be a re-iterable of batches (a list, a Dataset with
``__iter__``); it is cycled, and on resume the batches already consumed in
the current pass are skipped (by count, so the iteration order must be
deterministic).

Outputs in ``log_dir``: ``metrics.csv``/``metrics.jsonl`` (one row per
logged step: step, loss, lr, seconds, and whatever extra metrics
``loss_fn`` returns), ``eval.csv``/``eval.jsonl`` (one row per evaluation),
``curve.png`` (training curve, refreshed at each evaluation and at the end)
and ``checkpoint.npz`` (written atomically: a crash never destroys the last
good one).
"""

from __future__ import annotations

import numbers
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..autograd import Tensor, no_grad
from ..io.checkpoint import load_checkpoint, save_checkpoint
from ..optim import LRScheduler, Optimizer
from .metrics import MetricsLog
from .plot import plot_curves

__all__ = ["fit", "TrainResult"]


@dataclass
class TrainResult:
    """What :func:`fit` returns."""

    step: int
    history: list = field(default_factory=list)
    eval_history: list = field(default_factory=list)
    checkpoint: str | None = None
    resumed_from: int | None = None


class _Batches:
    """Batches from a sampler callable ``data(rng)`` or a cycled re-iterable."""

    def __init__(self, data, rng, start_step):
        self.rng = rng
        if callable(data) and not hasattr(data, "__iter__"):
            self.sampler = data
            return
        if not hasattr(data, "__iter__"):
            raise TypeError(f"data must be a callable data(rng) -> batch or an iterable of "
                            f"batches, got {type(data).__name__}")
        if iter(data) is data:
            raise TypeError("data is a one-shot iterator; pass a re-iterable (list, dataset) "
                            "or a sampler callable data(rng) -> batch so it can be cycled and "
                            "resumed")
        self.sampler = None
        self.data = data
        self.it = iter(data)
        skip = start_step
        if hasattr(data, "__len__") and len(data) > 0:
            skip = start_step % len(data)
        for _ in range(skip):
            self._next_from_iterable()

    def _next_from_iterable(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.data)
            try:
                return next(self.it)
            except StopIteration:
                raise ValueError("data yields no batches") from None

    def next(self):
        if self.sampler is not None:
            return self.sampler(self.rng)
        return self._next_from_iterable()


def _split_loss(out):
    metrics = {}
    if isinstance(out, tuple):
        if len(out) != 2 or not isinstance(out[1], dict):
            raise TypeError("loss_fn must return a loss Tensor or (loss, {name: value})")
        out, metrics = out
    if not isinstance(out, Tensor):
        raise TypeError(f"loss_fn must return a Tensor (with a graph back to the parameters), "
                        f"got {type(out).__name__}")
    if out.size != 1:
        raise ValueError(f"loss_fn returned a Tensor of shape {out.shape}; reduce it to one "
                         f"value (e.g. .mean())")
    return out, metrics


def _float(v):
    if isinstance(v, Tensor):
        return v.item()
    if hasattr(v, "item"):
        return v.item()
    return float(v) if isinstance(v, numbers.Real) else v


def fit(model, loss_fn, optimizer, data, *, steps, scheduler=None, rng=0, eval_fn=None,
        eval_every=0, log_dir=None, checkpoint_every=0, resume=False, log_every=1,
        progress=True, plot=True, desc="train", checkpoint_seconds=0, on_checkpoint=None):
    """Train ``model`` for ``steps`` optimizer steps.

    Parameters
    ----------
    model : pacnd.nn.Module
    loss_fn : callable
        ``loss_fn(model, batch) -> loss`` (a one-element Tensor) or
        ``(loss, {name: value})`` with extra metrics to log.
    optimizer : pacnd.optim.Optimizer
    data : callable or iterable
        A sampler ``data(rng) -> batch`` (recommended: reproducible and
        resumable) or a re-iterable of batches, cycled.
    steps : int
        Total number of steps of the run (a resumed run continues to it).
    scheduler : pacnd.optim.LRScheduler, optional
        Stepped once per step (milestones count steps).
    rng : numpy Generator or int
        The run's random state (an int seeds a new PCG64 Generator).
    eval_fn : callable, optional
        ``eval_fn(model) -> {name: value}``, run under ``no_grad`` in eval
        mode every ``eval_every`` steps and at the end.
    log_dir : str or path, optional
        Where metrics, the curve and the checkpoint go (nothing is written
        without it).
    checkpoint_every : int
        Save ``log_dir/checkpoint.npz`` every that many steps (and at the end).
    checkpoint_seconds : float
        Also save it when this many seconds have passed since the last save
        (long runs that must survive the end of a session; the trajectory does
        not depend on when checkpoints are taken).
    on_checkpoint : callable, optional
        ``on_checkpoint(step)`` after every save (e.g. export the weights).
    resume : bool
        Continue from ``log_dir/checkpoint.npz`` if it exists.
    log_every : int
        Log every that many steps (and the last).
    progress : bool
        Show a tqdm progress bar.
    plot : bool
        Write ``log_dir/curve.png``.

    Returns
    -------
    TrainResult
    """
    from ..engines.cpu import coldstart  # noqa: PLC0415

    # every step on the compiled kernels: while they compile in the background, calls would
    # be served by the reference engine (other rounding), and a resumed run would not repeat
    # the uninterrupted one bit for bit
    before = coldstart.get_mode()
    coldstart.set_mode("eager")
    try:
        return _fit(model, loss_fn, optimizer, data, steps=steps, scheduler=scheduler, rng=rng,
                    eval_fn=eval_fn, eval_every=eval_every, log_dir=log_dir,
                    checkpoint_every=checkpoint_every, resume=resume, log_every=log_every,
                    progress=progress, plot=plot, desc=desc,
                    checkpoint_seconds=checkpoint_seconds, on_checkpoint=on_checkpoint)
    finally:
        coldstart.set_mode(before)


def _fit(model, loss_fn, optimizer, data, *, steps, scheduler, rng, eval_fn, eval_every, log_dir,
         checkpoint_every, resume, log_every, progress, plot, desc, checkpoint_seconds,
         on_checkpoint):
    from ..nn import Module

    if not isinstance(model, Module):
        raise TypeError(f"model must be a pacnd.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a pacnd.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    if scheduler is not None and not isinstance(scheduler, LRScheduler):
        raise TypeError(f"scheduler must be a pacnd.optim.LRScheduler, got "
                        f"{type(scheduler).__name__}")
    for name, v in (("steps", steps), ("eval_every", eval_every),
                    ("checkpoint_every", checkpoint_every), ("log_every", log_every)):
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{name}={v!r} must be a non-negative int")
    if log_every < 1:
        raise ValueError("log_every must be at least 1")
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        rng = np.random.default_rng(int(rng))
    elif not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator or an int seed, got {rng!r}")
    if not isinstance(checkpoint_seconds, numbers.Real) or checkpoint_seconds < 0:
        raise ValueError(f"checkpoint_seconds={checkpoint_seconds!r} must be a non-negative "
                         f"number")
    if (resume or checkpoint_every or checkpoint_seconds) and log_dir is None:
        raise ValueError("resume and checkpoint_every need a log_dir for the checkpoint")

    ckpt_path = None if log_dir is None else os.path.join(os.fspath(log_dir), "checkpoint.npz")
    start = 0
    resumed_from = None
    if resume and os.path.exists(ckpt_path):
        info = load_checkpoint(ckpt_path, model=model, optimizer=optimizer,
                               scheduler=scheduler, rng=rng)
        start = resumed_from = int(info["step"])
        if scheduler is None and info.get("scheduler") is not None:
            raise ValueError("the checkpoint holds a schedule's state but no scheduler was given")
    log = MetricsLog(log_dir, "metrics", resume_step=start if resume else None)
    evlog = MetricsLog(log_dir, "eval", resume_step=start if resume else None)
    batches = _Batches(data, rng, start)

    def evaluate(step):
        model.eval()
        try:
            with no_grad():
                res = eval_fn(model)
        finally:
            model.train()
        if not isinstance(res, dict):
            raise TypeError(f"eval_fn must return a dict of metrics, got {type(res).__name__}")
        row = {"step": step, **{k: _float(v) for k, v in res.items()}}
        evlog.log(row)
        return row

    last_save = [time.monotonic()]

    def save(step):
        save_checkpoint(ckpt_path, model=model, optimizer=optimizer, scheduler=scheduler,
                        rng=rng, step=step)
        last_save[0] = time.monotonic()
        if on_checkpoint is not None:
            on_checkpoint(step)

    def draw():
        if log_dir is not None and plot:
            plot_curves(os.path.join(os.fspath(log_dir), "curve.png"), log.rows, evlog.rows,
                        title=desc)

    from tqdm.auto import tqdm

    bar = tqdm(total=steps, initial=min(start, steps), desc=desc, disable=not progress,
               dynamic_ncols=True, leave=True)
    t_start = time.perf_counter()
    step = start
    try:
        for step in range(start + 1, steps + 1):
            t0 = time.perf_counter()
            batch = batches.next()
            model.train()
            optimizer.zero_grad()
            loss, metrics = _split_loss(loss_fn(model, batch))
            loss.backward()
            optimizer.step()
            lr = optimizer.param_groups[0]["lr"]
            if scheduler is not None:
                scheduler.step()
            loss_value = loss.item()
            last = step == steps
            if step % log_every == 0 or last:
                row = {"step": step, "loss": loss_value, "lr": lr,
                       **{k: _float(v) for k, v in metrics.items()},
                       "seconds": time.perf_counter() - t0,
                       "elapsed": time.perf_counter() - t_start}
                log.log(row)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4g}", lr=f"{lr:.2g}", refresh=False)
            if eval_fn is not None and ((eval_every and step % eval_every == 0) or last):
                evaluate(step)
                draw()
            periodic = checkpoint_every or checkpoint_seconds
            if ckpt_path is not None and (
                    (checkpoint_every and step % checkpoint_every == 0) or (last and periodic)
                    or (checkpoint_seconds
                        and time.monotonic() - last_save[0] >= checkpoint_seconds)):
                save(step)
        if start >= steps and eval_fn is not None and not evlog.rows:
            evaluate(step)
        if eval_fn is None:
            draw()
    finally:
        bar.close()
    return TrainResult(step=max(step, start), history=log.rows, eval_history=evlog.rows,
                       checkpoint=ckpt_path if (checkpoint_every or checkpoint_seconds)
                       else None,
                       resumed_from=resumed_from)
