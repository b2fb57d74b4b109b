"""Learning PAC-CRF parameters, and saving/loading them.

:func:`fit_crf` trains a :class:`~pacnd.crf.PacCRF` on images with unaries
and ground-truth labels through :func:`pacnd.train.fit`: each step draws one
(image, unary, labels) sample, a random crop and a random horizontal flip
from the run's seeded Generator, runs mean-field on the graph and minimises
the softmax cross-entropy of the final logQ (pixels with ``ignore_index``
do not count). What is learned is every parameter of the CRF that requires
grad: the unary weight, the spatial filters, the compatibility matrices
('2d'), the pairwise weights (with ``learn_pairwise_weights``) and the guide
scaling (``feat_scale``).

Adam's steps are absolute; the CRF's parameters live on very different
scales (a colour scale ~0.08, far-ring filter taps ~100), so each parameter
gets its own learning rate ``lr * max(mean |p|, floor)`` — Adam on a roughly
relative scale.

:func:`save_crf` / :func:`load_crf` store a CRF as one ``.npz`` (its
constructor configuration as JSON plus its state dict; no pickle), written
atomically. :func:`pacnd.crf.refine` accepts such a file as ``params=``.
"""

from __future__ import annotations

import numbers
import os

import numpy as np

from .. import functional as F
from ..autograd import no_grad
from ..io.checkpoint import load_tree, save_tree
from .model import PacCRF
from .refine import check_image, prepare_unary

__all__ = ["fit_crf", "save_crf", "load_crf", "learnable", "CRF_FORMAT", "crf_loss"]

CRF_FORMAT = "pacnd-paccrf"


def learnable(crf, *, pairwise_weights=True, compat=None, channels=None):
    """A learnable copy of ``crf`` with the same behaviour.

    Parameters
    ----------
    crf : PacCRF
    pairwise_weights : bool
        Make every pairwise weight a learnable parameter.
    compat : None or '2d'
        ``'2d'``: turn 'potts' kernels into '2d' kernels with a learnable
        label-compatibility matrix, initialised to the Potts model
        (``1 - I``, same pairwise weight: the same mean-field updates).
    channels : int, optional
        Number of edge-feature channels: scalar ``feat_scale`` values become
        one learnable scale per channel (same initial value).
    """
    cfg = crf.config()
    cfg["learn_pairwise_weights"] = bool(pairwise_weights)
    state = crf.state_dict()
    kernels = []
    for i, k in enumerate(cfg["pairwise_kernels"]):
        k = dict(k)
        if compat == "2d" and k["compat"] == "potts":
            k["compat"] = "2d"
            state[f"pairwise_weights.{i}"] = -np.asarray(state[f"pairwise_weights.{i}"])
            L = crf.n_labels
            state[f"compat.{i}.weight"] = (1.0 - np.eye(L)).reshape(
                (L, L) + (1,) * crf.ndim).astype(
                crf.dtype)
        elif compat not in (None, "2d"):
            raise ValueError(f"compat={compat!r}; use None or '2d'")
        fs = k.get("feat_scale")
        if channels is not None and fs is not None and np.ndim(fs) == 0:
            k["feat_scale"] = (float(fs),) * int(channels)
            state[f"feat_scales.{i}"] = np.full(int(channels), float(fs), dtype=crf.dtype)
        kernels.append(k)
    cfg["pairwise_kernels"] = kernels
    new = _from_config(cfg)
    new.load_state_dict(state)
    return new


def _from_config(cfg):
    cfg = dict(cfg)
    dtype = cfg.pop("dtype", "float32")
    n = cfg.pop("n_labels")
    steps = cfg.pop("num_steps")
    kernels = [dict(k) for k in cfg.pop("pairwise_kernels")]
    for k in kernels:
        if isinstance(k.get("feat_scale"), list):
            k["feat_scale"] = tuple(k["feat_scale"])
    return PacCRF(n, steps, kernels, dtype=np.dtype(dtype), **cfg)


def save_crf(path, crf, *, extra=None):
    """Save a PacCRF (configuration + parameters) as an ``.npz``, atomically.

    Parameters
    ----------
    path : str or path
    crf : PacCRF
    extra : dict, optional
        JSON-like metadata stored alongside (e.g. how it was trained).
    """
    if not isinstance(crf, PacCRF):
        raise TypeError(f"crf must be a PacCRF, got {type(crf).__name__}")
    tree = {"format": CRF_FORMAT, "version": 1, "config": crf.config(),
            "state": crf.state_dict(), "extra": extra}
    return save_tree(path, tree)


def load_crf(path):
    """Load a PacCRF saved by :func:`save_crf`."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"no CRF parameter file at {p!r}")
    try:
        tree = load_tree(p)
    except Exception as exc:  # noqa: BLE001 - empty/truncated/garbage files fail many ways
        raise ValueError(f"{p!r} is not a PAC-CRF parameter file saved by "
                         f"pacnd.crf.save_crf ({exc})") from None
    if not isinstance(tree, dict) or tree.get("format") != CRF_FORMAT:
        raise ValueError(f"{p!r} is not a PAC-CRF parameter file (saved by "
                         f"pacnd.crf.save_crf)")
    crf = _from_config(tree["config"])
    crf.load_state_dict(tree["state"])
    return crf


# ----------------------------------------------------------------------------- data
def _as_samples(images, scores, labels, kind, channel_axis, gt_prob, ignore_index):
    if isinstance(images, np.ndarray):
        images, scores, labels = [images], [scores], [labels]
    images, scores, labels = list(images), list(scores), list(labels)
    if not (len(images) == len(scores) == len(labels)) or not images:
        raise ValueError(f"give as many images ({len(images)}), scores ({len(scores)}) and "
                         f"label maps ({len(labels)}), at least one")
    samples = []
    for i, (img, sc, lab) in enumerate(zip(images, scores, labels)):
        im = check_image(img)
        U, _ = prepare_unary(sc, im.shape[:2], kind=kind, channel_axis=channel_axis,
                             gt_prob=gt_prob)
        lab = np.asarray(lab)
        if lab.shape != im.shape[:2]:
            raise ValueError(f"sample {i}: labels have shape {lab.shape}, the image "
                             f"{im.shape[:2]}")
        if lab.dtype.kind not in "iu":
            raise TypeError(f"sample {i}: labels must be integers, got dtype {lab.dtype}")
        lab = lab.astype(np.int64)
        bad = (lab != ignore_index) & ((lab < 0) | (lab >= U.shape[1]))
        if bad.any():
            raise ValueError(f"sample {i}: label {int(lab[bad][0])} is outside [0, "
                             f"{U.shape[1]}) and not ignore_index={ignore_index}")
        f = np.ascontiguousarray(im.transpose(2, 0, 1)[None])
        samples.append((U, f, lab[None]))
    return samples


def _crop(sample, crop, rng, flip):
    U, f, lab = sample
    H, W = lab.shape[1:]
    if crop is not None:
        ch, cw = min(crop[0], H), min(crop[1], W)
        y = int(rng.integers(0, H - ch + 1))
        x = int(rng.integers(0, W - cw + 1))
        U, f, lab = (U[..., y:y + ch, x:x + cw], f[..., y:y + ch, x:x + cw],
                     lab[..., y:y + ch, x:x + cw])
    if flip and rng.random() < 0.5:
        U, f, lab = U[..., ::-1], f[..., ::-1], lab[..., ::-1]
    return (np.ascontiguousarray(U), np.ascontiguousarray(f), np.ascontiguousarray(lab))


def crf_loss(crf, batch, ignore_index=255):
    """Cross-entropy of the CRF's final logQ against the labels of ``batch``
    (``(unary, edge_feat, labels)``), the loss :func:`fit_crf` minimises."""
    U, f, lab = batch
    logQ = crf(U, f)
    return F.cross_entropy(logQ, lab, axis=1, ignore_index=ignore_index)


def _param_groups(crf, lr, floor):
    groups = []
    for _, p in crf.named_parameters():
        if not p.requires_grad:
            continue
        scale = float(np.abs(np.asarray(p.data, dtype=np.float64)).mean()) if p.size else 1.0
        groups.append({"params": [p], "lr": lr * max(scale, floor)})
    if not groups:
        raise ValueError("the CRF has no learnable parameters (fixed_weighting and no "
                         "spatial filters?)")
    return groups


def fit_crf(crf, images, scores, labels, *, kind="probabilities", steps=100, lr=0.05,
            crop=(192, 192), flip=True, ignore_index=255, channel_axis=-1, gt_prob=0.7,
            rng=0, log_dir=None, progress=False, eval_fn=None, eval_every=0,
            lr_floor=0.05, checkpoint_every=0, resume=False):
    """Learn a PacCRF's parameters from images, unaries and ground truth.

    Parameters
    ----------
    crf : PacCRF
        Trained in place (e.g. ``learnable(dense_crf_mapping(...))``).
    images : sequence of ndarray (H, W, 3)
    scores : sequence of ndarray
        Unary scores per image, as for :func:`~pacnd.crf.refine` (``kind``,
        ``channel_axis``, ``gt_prob``).
    labels : sequence of ndarray (H, W) of int
        Ground-truth labels (``ignore_index`` where unknown).
    steps : int
        Optimizer steps (one sample per step).
    lr : float
        Relative learning rate (see the module doc).
    crop : (int, int) or None
        Random crop size (None: whole images).
    flip : bool
        Random horizontal flips.
    rng : int or Generator
        Seed of the run (samples, crops, flips).
    log_dir, progress, eval_fn, eval_every, checkpoint_every, resume
        Passed to :func:`pacnd.train.fit`.
    lr_floor : float
        Smallest parameter scale used for the learning rate.

    Returns
    -------
    pacnd.train.TrainResult
    """
    from ..optim import Adam  # noqa: PLC0415
    from ..train import fit  # noqa: PLC0415

    if not isinstance(crf, PacCRF):
        raise TypeError(f"crf must be a PacCRF, got {type(crf).__name__}")
    if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a positive int")
    if crop is not None:
        if (not isinstance(crop, (tuple, list)) or len(crop) != 2
                or not all(isinstance(c, numbers.Integral) and c > 0 for c in crop)):
            raise ValueError(f"crop={crop!r} must be None or (height, width) in pixels")
        crop = (int(crop[0]), int(crop[1]))
    samples = _as_samples(images, scores, labels, kind, channel_axis, gt_prob, ignore_index)
    for U, _, _ in samples:
        if U.shape[1] != crf.n_labels:
            raise ValueError(f"the scores have {U.shape[1]} labels, the CRF {crf.n_labels}")
    dt = crf.dtype
    samples = [(U.astype(dt), f.astype(dt), lab) for U, f, lab in samples]

    def data(g):
        i = int(g.integers(0, len(samples)))
        return _crop(samples[i], crop, g, flip)

    def loss_fn(model, batch):
        return crf_loss(model, batch, ignore_index)

    opt = Adam(_param_groups(crf, lr, lr_floor))
    return fit(crf, loss_fn, opt, data, steps=steps, rng=rng, log_dir=log_dir,
               progress=progress, eval_fn=eval_fn, eval_every=eval_every,
               checkpoint_every=checkpoint_every, resume=resume, plot=log_dir is not None)


def evaluate_loss(crf, images, scores, labels, *, kind="probabilities", ignore_index=255,
                  channel_axis=-1, gt_prob=0.7):
    """Mean cross-entropy of the CRF on whole images (no graph)."""
    samples = _as_samples(images, scores, labels, kind, channel_axis, gt_prob, ignore_index)
    total = 0.0
    with no_grad():
        for U, f, lab in samples:
            logQ = crf.infer(U, f, output="log_Q")
            total += float(F.cross_entropy(logQ.astype(np.float64), lab, axis=1,
                                           ignore_index=ignore_index))
    return total / len(samples)
