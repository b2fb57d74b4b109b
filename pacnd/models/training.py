"""Training and evaluating joint upsamplers with :func:`pacnd.train.fit`.

The protocol is the reference implementation's (``task_jointUpsampling``):
Adam, a step learning-rate schedule (x0.1 at 70 % and 90 % of the run, the
reference's 3500/4500 of 5000 epochs), batches of random crops with
horizontal flips (:class:`pacnd.data.JointUpsamplingPairs`),
guide = RGB/255, low-res input and target min-max normalised by the low-res
input's range, MSE on the normalised target with a border cropped (6 pixels
for depth, 0 for flow). Unknown target pixels (NaN, e.g. Middlebury
occlusions) are left out of the loss and of the metrics.

Metrics: depth RMSE (per image, in the target's units, then averaged),
flow EPE (mean end-point error over known pixels, per image then averaged).
"""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from .._validate import array_module
from ..autograd import Tensor, no_grad
from ..autograd.tensor import as_array

__all__ = ["upsampling_loss", "predict_batch", "evaluate_upsampler", "train_upsampler",
           "rmse", "epe", "DEFAULT_BORDER"]

#: pixels cropped from each side for the loss and the metrics
DEFAULT_BORDER = {"depth": 6, "flow": 0}


def _crop(a, border):
    if border <= 0:
        return a
    return a[..., border:a.shape[-2] - border, border:a.shape[-1] - border]


def upsampling_loss(model, batch, *, border=6, reference=None, floor=1e-4):
    """MSE between the model's output and the normalised target over known
    pixels, ``border`` pixels cropped from each side.

    Parameters
    ----------
    model : callable
        ``model(low, guide)`` returning a Tensor of the target's shape.
    batch : dict
        ``low``, ``guide``, ``target`` and ``mask`` (1 = known target pixel).
    border : int
        Pixels left out on each side.
    reference : callable, optional
        A training-free upsampler ``reference(low, guide) -> array`` (e.g.
        :class:`~pacnd.models.Bicubic`). With it the loss is *relative*: the
        mean over the batch's samples of ``mse_i / (mse_ref_i + floor)``, each
        sample's MSE divided by the reference's on the same pixels, which is
        what a held-out score of RMSE ratios to that reference averages; a
        scene the reference already gets nearly right is not drowned by one
        with large errors. Without it: plain MSE over all known pixels.
    floor : float
        Added to each ``mse_ref_i`` (normalised units squared, > 0), so that a
        sample the reference fits almost exactly gets a bounded weight.

    Returns ``(loss, {"rmse_n": ...})`` for :func:`pacnd.train.fit`
    (``rmse_n``: the plain RMSE in normalised units, whichever the loss).
    """
    if reference is not None and not callable(reference):
        raise TypeError(f"reference must be a callable upsampler or None, got {reference!r}")
    if not (isinstance(floor, (int, float, np.floating)) and not isinstance(floor, bool)
            and math.isfinite(floor) and floor > 0):
        raise ValueError(f"floor={floor!r} must be a finite number > 0")
    out = model(Tensor(batch["low"]), Tensor(batch["guide"]))
    if tuple(out.shape) != tuple(batch["target"].shape):
        raise ValueError(f"the model returned {tuple(out.shape)} for a target of "
                         f"{tuple(batch['target'].shape)}")
    out = _crop(out, border)
    xp = array_module(batch["target"])
    t = xp.ascontiguousarray(_crop(batch["target"], border))
    m = xp.ascontiguousarray(_crop(batch["mask"], border))
    n = float(m.sum())
    if n == 0:
        raise ValueError("no known target pixel in the batch (after the border crop)")
    if reference is None:
        if float(m.min()) == 1.0:
            loss = F.mse_loss(out, Tensor(t))
        else:
            d = (out - Tensor(t)) * Tensor(m)
            loss = F.sum(d * d) * (1.0 / n)
        return loss, {"rmse_n": math.sqrt(max(loss.item(), 0.0))}
    axes = tuple(range(1, t.ndim))
    with no_grad():
        ref = as_array(reference(batch["low"], batch["guide"]))
    ref = xp.asarray(_crop(ref, border), dtype=t.dtype)
    n_i = _host(m).sum(axis=axes)
    dr = (ref - t) * m
    sse_ref = _host((dr * dr).sum(axis=axes))
    known = n_i > 0
    w = np.zeros_like(n_i)
    w[known] = 1.0 / (n_i[known] * (sse_ref[known] / n_i[known] + floor) * known.sum())
    d = (out - Tensor(t)) * Tensor(m)
    sse = F.sum(d * d, axis=axes)
    loss = F.sum(sse * Tensor(xp.asarray(w, dtype=t.dtype)))
    plain = float(_host(as_array(sse)).sum()) / n
    return loss, {"rmse_n": math.sqrt(max(plain, 0.0))}


def predict_batch(model, batch, *, pad=0):
    """The model's output for a batch, mapped back to the target's units:
    ``(B, C, H, W)`` float32.

    ``pad``: low-res samples of mirror padding added on each side before the
    model runs (the guide by ``pad * factor`` pixels) and cropped after, as
    :meth:`~pacnd.models.JointUpsampler.upsample` does (its default is the
    model's ``border_pad()``).
    """
    if not isinstance(pad, int) or isinstance(pad, bool) or pad < 0:
        raise ValueError(f"pad={pad!r} must be a non-negative int (low-res samples)")
    from ._interface import mirror_crop, mirror_pad  # noqa: PLC0415

    low, guide = mirror_pad(batch["low"], batch["guide"], pad)
    with no_grad():
        out = as_array(model(low, guide))
    out = mirror_crop(out, pad, batch["guide"].shape[-1] // batch["low"].shape[-1])
    if type(out).__module__.split(".")[0] == "cupy":
        out = out.get()
    lo = batch["lo"][..., None, None]
    hi = batch["hi"][..., None, None]
    return (np.asarray(out, dtype=np.float64) * (hi - lo) + lo).astype(np.float32)


def _host(a):
    """A NumPy float64 copy of a NumPy or CuPy array."""
    return np.asarray(a.get() if hasattr(a, "get") else a, dtype=np.float64)


def rmse(pred, truth, *, border=0):
    """RMSE over known pixels (finite ``truth``) of (…, C, H, W) arrays (or
    (H, W[, C]) when ``channel_last``-shaped 2-D/3-D images are given, border
    applied to the first two axes)."""
    p, t = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    if border:
        p, t = _crop(p, border), _crop(t, border)
    k = np.isfinite(t)
    return float(np.sqrt(np.mean((p[k] - t[k]) ** 2)))


def epe(pred, truth, *, border=0):
    """Mean end-point error of flow (…, 2, H, W) over pixels where both
    components of ``truth`` are known."""
    p, t = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    if border:
        p, t = _crop(p, border), _crop(t, border)
    d = np.sqrt(((p - t) ** 2).sum(axis=-3))
    k = np.isfinite(t).all(axis=-3)
    return float(d[k].mean())


def evaluate_upsampler(model, examples, *, kind="depth", border=None):
    """Average RMSE (depth) or EPE (flow) of ``model`` over ``examples``
    (batches of one, e.g. ``JointUpsamplingPairs.examples()``), in the
    target's units, ``border`` pixels cropped (default 6 depth, 0 flow)."""
    if border is None:
        border = DEFAULT_BORDER[kind]
    vals = []
    for ex in examples:
        pred = predict_batch(model, ex)
        truth = ex["raw"]
        vals.append(rmse(pred, truth, border=border) if kind == "depth"
                    else epe(pred, truth, border=border))
    if not vals:
        raise ValueError("no evaluation examples")
    return float(np.mean(vals))


def train_upsampler(model, data, *, steps, lr=1e-4, milestones=(0.7, 0.9), gamma=0.1,
                    border=6, log_dir=None, eval_examples=None, eval_kind="depth",
                    eval_every=0, checkpoint_every=0, resume=False, seed=0, progress=True,
                    log_every=1, desc="train"):
    """Train a joint upsampler with the reference protocol on
    :func:`pacnd.train.fit`.

    Parameters
    ----------
    model : JointUpsampler
    data : callable
        Sampler ``data(rng) -> batch``
        (:class:`~pacnd.data.JointUpsamplingPairs`).
    steps : int
        Optimizer steps (batches).
    lr : float
        Initial Adam learning rate (the reference: 1e-4).
    milestones : sequence of float or int
        Where the learning rate is multiplied by ``gamma``: fractions of
        ``steps`` (floats < 1) or step numbers.
    border : int
        Pixels left out of the loss on each side.
    log_dir, checkpoint_every, resume, progress, log_every
        As in :func:`pacnd.train.fit` (metrics CSV/JSON, curve PNG,
        ``checkpoint.npz``, bit-exact resume).
    eval_examples : list of batches, optional
        Evaluated (RMSE or EPE per ``eval_kind``) every ``eval_every`` steps
        and at the end.
    seed : int
        Seeds the run's Generator (crops, flips, synthetic scenes).

    Returns
    -------
    pacnd.train.TrainResult
    """
    from ..optim import Adam, MultiStepLR  # noqa: PLC0415
    from ..train import fit  # noqa: PLC0415

    ms = sorted({int(round(m * steps)) if isinstance(m, float) and m < 1 else int(m)
                 for m in milestones})
    opt = Adam(model.parameters(), lr=lr)
    sched = MultiStepLR(opt, [m for m in ms if m > 0], gamma=gamma)
    eval_fn = None
    if eval_examples:
        metric = "rmse" if eval_kind == "depth" else "epe"

        def eval_fn(m):
            return {metric: evaluate_upsampler(m, eval_examples, kind=eval_kind)}

    def loss_fn(m, batch):
        return upsampling_loss(m, batch, border=border)

    return fit(model, loss_fn, opt, data, steps=steps, scheduler=sched, rng=seed,
               eval_fn=eval_fn, eval_every=eval_every, log_dir=log_dir,
               checkpoint_every=checkpoint_every, resume=resume, log_every=log_every,
               progress=progress, desc=desc)
