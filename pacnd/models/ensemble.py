"""Flip self-ensembles of joint upsamplers: ``model.upsample(..., ensemble=4)``.

A learned upsampler's error falls when its result is averaged over mirrored
copies of the same input (the "self-ensemble" of image super-resolution): the
low-res target and the guide are flipped (and, for 8 copies, transposed), the
network runs on each copy, and each result is mapped back before averaging.
On the held-out scenes of ``benchmarks/results/upsampling_eval.md`` the four
flips take the shipped 8x depth network's RMSE from 0.824x to 0.802x JBU's and
the 8x flow network's EPE from 0.567x to 0.478x bilinear's, at four times the
compute. Eight copies (the transposes too) gave no more than four for the first
8x depth weights (0.880x against 0.880x, without border padding): the networks were trained
with flips, not transposes, and a transposed copy alone is worse.

Two details keep the copies consistent with the original:

* **Flow is a vector field.** Mirroring an image left-right negates its
  horizontal flow component (a transpose swaps the components). In the min-max
  normalised units the networks see, negating a channel is ``1 - x``
  (the negated channel's own range is the mirrored one).
* **Centre sampling is not mirror-symmetric for even factors.** The
  ``'center'`` protocol takes low-res sample ``i`` from high-res pixel
  ``i * f + (f - 1) // 2``; after a mirror that sample sits one pixel further
  along (``i * f + f // 2``). The mirrored guide is moved back by that pixel
  (the freed edge pixel repeats its neighbour) and the result forward again;
  the one row or column on the far edge that no copy of the guide covered
  is averaged over the copies that did cover it (the unflipped one at least).
  The area protocols (``'bilinear'``, ``'bicubic'``) sample symmetrically and
  need no shift.

With both, an upsampler that commutes with mirroring (bilinear or bicubic
interpolation on their own sampling grid, JBU) returns the same result with or
without the ensemble, which is what the tests check.
"""

from __future__ import annotations

import numbers

from .._validate import array_module

__all__ = ["Ensembled", "ensemble_size", "ensemble_geometry", "run_ensemble", "VARIANTS"]

#: copies -> (flip rows, flip columns, transpose) of each copy
VARIANTS = {
    1: ((0, 0, 0),),
    2: ((0, 0, 0), (0, 1, 0)),
    4: ((0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 0)),
    8: tuple((fy, fx, tr) for tr in (0, 1) for fy in (0, 1) for fx in (0, 1)),
}
#: copies ``ensemble=True`` means
DEFAULT_SIZE = 4


def ensemble_size(ensemble):
    """``ensemble`` (bool, or 1, 2, 4 or 8 copies) as a number of copies."""
    if isinstance(ensemble, bool):
        return DEFAULT_SIZE if ensemble else 1
    if not isinstance(ensemble, numbers.Integral):
        raise TypeError(f"ensemble must be a bool or an int (1, 2, 4 or 8 mirrored copies), "
                        f"got {type(ensemble).__name__} {ensemble!r}")
    if int(ensemble) not in VARIANTS:
        raise ValueError(f"ensemble={ensemble!r}: choose 1, 2, 4 or 8 mirrored copies (True "
                         f"means {DEFAULT_SIZE}, False 1)")
    return int(ensemble)


def ensemble_geometry(model, channels):
    """``(shift, vector)`` for a model's ensemble on a ``channels``-channel target.

    ``shift``: high-res pixels a mirrored copy's guide moves (1 for the
    ``'center'`` protocol with an even factor, else 0); the protocol is the one
    the model was trained for (the recipe in its ``meta``: ``meta["training"]
    ["recipe"]`` of shipped weights, ``meta["recipe"]`` of a run's
    ``model.npz``; else the task's default;
    ``'center'`` when nothing says). ``vector``: whether the target is a 2-D
    vector field (flow: the model's task is ``'flow'``, or without a task in
    its ``meta`` a 2-channel model) whose components mirror with the image.
    """
    from .registry import default_protocol  # noqa: PLC0415

    meta = getattr(model, "meta", None) or {}
    # shipped weights: meta["training"]["recipe"]; a run's model.npz: meta["recipe"]
    recipe = (meta.get("training") or {}).get("recipe") or meta.get("recipe") or {}
    task = meta.get("task") or recipe.get("task")
    protocol = recipe.get("protocol") or meta.get("protocol")
    if protocol is None:
        protocol = default_protocol(task) if task in ("depth", "flow") else "center"
    f = model.factor
    shift = f - 1 - 2 * ((f - 1) // 2) if protocol == "center" else 0
    if task is None:
        vector = model.channels == 2
    else:
        vector = task == "flow"
    return shift, bool(vector and channels == 2)


def _shift(a, axis, s, xp):
    """``out[j] = a[j + s]`` along ``axis`` (last element repeated); ``s < 0``: back."""
    if s == 0:
        return a
    n = a.shape[axis]
    idx = xp.arange(n) + s
    idx = xp.clip(idx, 0, n - 1)
    return xp.take(a, idx, axis=axis)


def _mirror_vector(x, fy, fx, tr):
    """Negate / swap the normalised components of a (B, 2, h, w) vector field
    for a copy flipped (``fy``, ``fx``) then transposed (``tr``)."""
    x = x.copy()
    if fx:
        x[:, 0] = 1 - x[:, 0]
    if fy:
        x[:, 1] = 1 - x[:, 1]
    if tr:
        x = x[:, ::-1]
    return x


def _unmirror_vector(y, fy, fx, tr):
    y = y[:, ::-1] if tr else y
    y = y.copy()
    if fx:
        y[:, 0] = 1 - y[:, 0]
    if fy:
        y[:, 1] = 1 - y[:, 1]
    return y


def run_ensemble(run, x, g, *, size, shift=0, vector=False):
    """Average ``run`` over mirrored copies of its inputs.

    Parameters
    ----------
    run : callable
        ``run(x, g) -> y``: the network on normalised arrays, ``x`` (B, C, h, w),
        ``g`` (B, 3, H, W), ``y`` (B, C, H, W) (NumPy or CuPy).
    x, g : ndarray
        The normalised low-res target and guide.
    size : int
        Copies (1, 2, 4 or 8; :data:`VARIANTS`).
    shift : int
        High-res pixels a mirrored guide moves (:func:`ensemble_geometry`).
    vector : bool
        ``x`` is a 2-component vector field (flow).

    Returns
    -------
    ndarray, (B, C, H, W)
    """
    if size == 1:
        return run(x, g)
    xp = array_module(x)
    total = count = None
    for fy, fx, tr in VARIANTS[size]:
        xv, gv = x, g
        if fx:
            xv, gv = xv[..., ::-1], _shift(gv[..., ::-1], -1, shift, xp)
        if fy:
            xv, gv = xv[..., ::-1, :], _shift(gv[..., ::-1, :], -2, shift, xp)
        if tr:
            xv, gv = xv.swapaxes(-1, -2), gv.swapaxes(-1, -2)
        if vector:
            xv = _mirror_vector(xv, fy, fx, tr)
        y = xp.asarray(run(xp.ascontiguousarray(xv), xp.ascontiguousarray(gv)))
        if vector:
            y = _unmirror_vector(y, fy, fx, tr)
        if tr:
            y = y.swapaxes(-1, -2)
        H, W = y.shape[-2:]
        valid = xp.ones((H, W), dtype=y.dtype)
        if fy:
            y = _shift(y, -2, -shift, xp)[..., ::-1, :]
            if shift:
                valid[H - shift:] = 0
        if fx:
            y = _shift(y, -1, -shift, xp)[..., ::-1]
            if shift:
                valid[:, W - shift:] = 0
        if total is None:
            total, count = y * valid, valid.copy()
        else:
            total += y * valid
            count += valid
    return total / count


class Ensembled:
    """A network called on normalised batches, averaged over mirrored copies.

    ``Ensembled(model, 4)(low, guide)`` is what ``model.upsample(...,
    ensemble=4)`` computes inside, for code that calls models on batches
    (:func:`pacnd.models.training.predict_batch`, the held-out evaluation).

    Parameters
    ----------
    model : pacnd.models.JointUpsampler
    size : bool or int
        As ``ensemble`` of :meth:`~pacnd.models.JointUpsampler.upsample`.
    """

    def __init__(self, model, size=True):
        from ._interface import JointUpsampler  # noqa: PLC0415

        if not isinstance(model, JointUpsampler):
            raise TypeError(f"model must be a pacnd.models.JointUpsampler, got "
                            f"{type(model).__name__}")
        self.model = model
        self.size = ensemble_size(size)
        self.factor = model.factor
        self.meta = model.meta

    def border_pad(self):
        """The wrapped model's default mirror padding (low-res samples)."""
        return self.model.border_pad()

    def num_parameters(self):
        """The wrapped model's parameter count."""
        return self.model.num_parameters()

    def __call__(self, low, guide):
        from ..autograd import no_grad  # noqa: PLC0415
        from ..autograd.tensor import as_array  # noqa: PLC0415

        def run(a, b):
            return as_array(self.model(a, b))

        low, guide = as_array(low), as_array(guide)
        shift, vector = ensemble_geometry(self.model, low.shape[1])
        with no_grad():
            return run_ensemble(run, low, guide, size=self.size, shift=shift, vector=vector)
