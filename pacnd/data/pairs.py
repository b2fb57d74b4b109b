"""(guide, target) pairs for training and evaluating joint upsamplers.

:func:`prepare_example` turns one high-res pair into what the networks see
(the reference's ``AssembleJointUpsamplingInputs``): low-res input made with
:func:`~pacnd.data.make_low_res`, unknown low-res samples filled
with the nearest known one, guide = RGB / 255, low-res input and target
min-max normalised per channel by the **low-res input's** range.

:class:`JointUpsamplingPairs` holds pairs in memory (from arrays, from
folders with :meth:`JointUpsamplingPairs.from_folders`, or a synthetic
source) and is a sampler for :func:`pacnd.train.fit`: ``pairs(rng)`` draws a
batch of random crops (with random horizontal flips; flow's u is negated when
flipped) from the Generator it is given. :meth:`JointUpsamplingPairs.examples`
yields whole images (centre-cropped to a multiple of the factor) for
evaluation.

A batch is a dict of arrays: ``low`` (B, C, h, w), ``guide`` (B, 3, H, W),
``target`` (B, C, H, W) normalised with unknown pixels set to 0, ``mask``
(B, C, H, W) 1 where the target is known, ``lo``/``hi`` (B, C) the
normalisation range, and ``raw`` (B, C, H, W) the target in its units (NaN
where unknown).
"""

from __future__ import annotations

import glob
import numbers
import os

import numpy as np

from .lowres import crop_to_multiple, fill_unknown, make_low_res, minmax_range

__all__ = ["prepare_example", "collate", "JointUpsamplingPairs", "random_crop"]


def _as_target(target):
    t = np.asarray(target, dtype=np.float32)
    if t.ndim == 2:
        t = t[..., None]
    if t.ndim != 3:
        raise ValueError(f"target must be (H, W) or (H, W, C), got {np.shape(target)}")
    return t


def _as_rgb(guide):
    g = np.asarray(guide)
    if g.ndim != 3 or g.shape[2] != 3:
        raise ValueError(f"guide must be (H, W, 3), got {g.shape}")
    if g.dtype == np.uint8:
        return g
    if g.dtype.kind == "f":
        return np.clip(np.round(g * 255), 0, 255).astype(np.uint8)
    raise TypeError(f"guide must be uint8 or float in [0, 1], got {g.dtype}")


def prepare_example(guide, target, factor, *, lowres_mode="center", low=None,
                    value_range=None):
    """One high-res pair -> a batch of one (see the module docstring).

    ``guide`` (H, W, 3) uint8 or float in [0, 1]; ``target`` (H, W[, C]) in
    its units, NaN where unknown; ``H``, ``W`` multiples of ``factor``.
    ``low`` overrides the generated low-res input; ``value_range`` ``(lo, hi)``
    (per channel) the normalisation range (default: the low-res input's
    min-max range, :func:`pacnd.data.minmax_range`).
    """
    g = _as_rgb(guide)
    t = _as_target(target)
    if g.shape[:2] != t.shape[:2]:
        raise ValueError(f"guide {g.shape[:2]} and target {t.shape[:2]} differ in size")
    if low is None:
        low = make_low_res(t, factor, lowres_mode)
    low = _as_target(low)
    if not np.isfinite(low).any():
        raise ValueError("every low-res sample is unknown")
    low = fill_unknown(low)
    if value_range is None:
        lo, hi = minmax_range(low)
    else:
        lo, hi = (np.broadcast_to(np.asarray(v, dtype=np.float64), (low.shape[2],)).copy()
                  for v in value_range)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all() and (hi > lo).all()):
            raise ValueError(f"value_range={value_range!r} must be finite with hi > lo per "
                             f"channel")
    scale = (hi - lo).astype(np.float32)
    lo32 = lo.astype(np.float32)
    low_n = (low - lo32) / scale
    known = np.isfinite(t)
    t_n = np.where(known, (t - lo32) / scale, 0).astype(np.float32)
    return {
        "low": np.ascontiguousarray(low_n.transpose(2, 0, 1)[None], dtype=np.float32),
        "guide": np.ascontiguousarray(g.transpose(2, 0, 1)[None], dtype=np.float32)
        / np.float32(255),
        "target": np.ascontiguousarray(t_n.transpose(2, 0, 1)[None]),
        "mask": np.ascontiguousarray(known.transpose(2, 0, 1)[None].astype(np.float32)),
        "lo": lo[None], "hi": hi[None],
        "raw": np.ascontiguousarray(t.transpose(2, 0, 1)[None]),
    }


def collate(examples):
    """Stack batches of one (same sizes) into one batch."""
    return {k: np.concatenate([e[k] for e in examples], axis=0) for k in examples[0]}


def random_crop(rng, guide, target, crop, *, flip=True, flow=False):
    """A random ``crop`` (h, w) of a pair, flipped left-right with
    probability 1/2 when ``flip`` (negating u when ``flow``)."""
    H, W = target.shape[:2]
    ch, cw = crop
    if ch > H or cw > W:
        raise ValueError(f"crop {crop} is larger than the image {H}x{W}")
    i = int(rng.integers(0, H - ch + 1))
    j = int(rng.integers(0, W - cw + 1))
    g = guide[i:i + ch, j:j + cw]
    t = target[i:i + ch, j:j + cw]
    if flip and rng.random() < 0.5:
        g = g[:, ::-1]
        t = t[:, ::-1]
        if flow:
            t = t.copy()
            t[..., 0] = -t[..., 0]
    return np.ascontiguousarray(g), np.ascontiguousarray(t)


class JointUpsamplingPairs:
    """In-memory (guide, target) pairs and a random-crop batch sampler.

    Parameters
    ----------
    pairs : list of (guide, target), optional
        ``guide`` (H, W, 3) uint8, ``target`` (H, W) or (H, W, C), NaN where
        unknown.
    factor : int
        Upsampling factor.
    kind : {'depth', 'flow'}, optional
        Sets the low-res convention (``'center'`` / ``'bilinear'``) unless
        ``lowres_mode`` is given, and flips negate u for flow.
    crop : int or (int, int) or None, optional
        Training crop (multiple of ``factor``); None uses whole images
        (centre-cropped to a multiple of ``factor``).
    flip : bool, optional
        Random horizontal flips.
    batch_size : int, optional
    synthetic : callable, optional
        ``synthetic(rng) -> (guide, target)`` (e.g.
        :class:`~pacnd.data.SyntheticScenes`); each batch item
        comes from it with probability ``synthetic_ratio`` (1 when there
        are no pairs).
    synthetic_ratio : float, optional
    min_known : float, optional
        Redraw crops whose target is known on less than this fraction.
    """

    def __init__(self, pairs=(), factor=8, *, kind="depth", lowres_mode=None, crop=256,
                 flip=True, batch_size=1, synthetic=None, synthetic_ratio=0.5, min_known=0.5):
        if kind not in ("depth", "flow"):
            raise ValueError(f"kind={kind!r}; choose 'depth' or 'flow'")
        if not isinstance(factor, numbers.Integral) or factor < 1:
            raise ValueError(f"factor={factor!r} must be a positive int")
        self.factor = int(factor)
        self.kind = kind
        self.lowres_mode = lowres_mode or ("center" if kind == "depth" else "bilinear")
        if crop is not None:
            crop = (int(crop), int(crop)) if isinstance(crop, numbers.Integral) else \
                tuple(int(c) for c in crop)
            if crop[0] % self.factor or crop[1] % self.factor:
                raise ValueError(f"crop={crop} must be a multiple of factor={self.factor}")
        self.crop = crop
        self.flip = bool(flip)
        self.batch_size = int(batch_size)
        self.pairs = []
        for g, t in pairs:
            g, t = _as_rgb(g), np.asarray(t, dtype=np.float32)
            if g.shape[:2] != t.shape[:2]:
                raise ValueError(f"a pair's guide {g.shape[:2]} and target {t.shape[:2]} differ "
                                 f"in size")
            if crop is not None and (t.shape[0] < crop[0] or t.shape[1] < crop[1]):
                raise ValueError(f"an image of {t.shape[0]}x{t.shape[1]} is smaller than the "
                                 f"crop {crop}")
            self.pairs.append((g, t))
        self.synthetic = synthetic
        self.synthetic_ratio = 1.0 if not self.pairs else float(synthetic_ratio)
        if synthetic is None:
            self.synthetic_ratio = 0.0
            if not self.pairs:
                raise ValueError("no pairs and no synthetic source: nothing to sample")
        self.min_known = float(min_known)

    def __len__(self):
        return len(self.pairs)

    def __repr__(self):
        return (f"JointUpsamplingPairs({len(self.pairs)} pairs, factor={self.factor}, "
                f"kind={self.kind!r}, crop={self.crop}, synthetic={self.synthetic!r})")

    @classmethod
    def from_folders(cls, guide_dir, target_dir, factor=8, *, kind="depth", target_scale=1.0,
                     guide_glob="*.png", **kwargs):
        """Pairs matched by file stem: every image in ``guide_dir`` (matching
        ``guide_glob``) with the file of the same stem in ``target_dir``
        (``.flo``, ``.npy``, ``.pfm`` or ``.png``; PNG values divided by
        ``target_scale``, 0 = unknown)."""
        from .io import read_image, read_target  # noqa: PLC0415

        guides = sorted(glob.glob(os.path.join(os.fspath(guide_dir), guide_glob)))
        if not guides:
            raise FileNotFoundError(f"no {guide_glob} images in {os.fspath(guide_dir)!r}")
        pairs = []
        for gp in guides:
            stem = os.path.splitext(os.path.basename(gp))[0]
            cands = [os.path.join(os.fspath(target_dir), stem + e)
                     for e in (".flo", ".npy", ".pfm", ".png")]
            tp = next((c for c in cands if os.path.isfile(c)), None)
            if tp is None:
                raise FileNotFoundError(f"no target for {gp!r} in {os.fspath(target_dir)!r} "
                                        f"(looked for {stem}.flo/.npy/.pfm/.png)")
            pairs.append((read_image(gp), read_target(tp, kind=kind if kind == "flow" else None,
                                                      scale=target_scale)))
        return cls(pairs, factor, kind=kind, **kwargs)

    # ------------------------------------------------------------------ sampling
    def _one(self, rng):
        for _ in range(20):
            if self.synthetic is not None and rng.random() < self.synthetic_ratio:
                g, t = self.synthetic(rng)
                if self.crop is not None and t.shape[:2] != self.crop:
                    g, t = random_crop(rng, g, t, self.crop, flip=False)
                elif self.crop is None:
                    g, t = crop_to_multiple(g, self.factor), crop_to_multiple(t, self.factor)
            else:
                g, t = self.pairs[int(rng.integers(len(self.pairs)))]
                if self.crop is not None:
                    g, t = random_crop(rng, g, t, self.crop, flip=self.flip,
                                       flow=self.kind == "flow")
                else:
                    g, t = crop_to_multiple(g, self.factor), crop_to_multiple(t, self.factor)
                    if self.flip and rng.random() < 0.5:
                        g, t = g[:, ::-1], t[:, ::-1].copy()
                        if self.kind == "flow":
                            t[..., 0] = -t[..., 0]
            known = np.isfinite(t)
            if known.mean() < self.min_known:
                continue
            low = make_low_res(t, self.factor, self.lowres_mode)
            if not np.isfinite(low).any():
                continue
            return prepare_example(g, t, self.factor, low=low)
        raise RuntimeError(f"20 crops in a row had less than {self.min_known:.0%} known "
                           f"target pixels; lower min_known or check the data")

    def __call__(self, rng):
        """A random batch (sampler interface of :func:`pacnd.train.fit`)."""
        return collate([self._one(rng) for _ in range(self.batch_size)])

    def examples(self, *, multiple=None):
        """Each stored pair whole (centre-cropped to a multiple of
        ``multiple``, default the factor) as a batch of one."""
        m = multiple or self.factor
        for g, t in self.pairs:
            g, t = crop_to_multiple(g, self.factor, multiple=m), \
                crop_to_multiple(t, self.factor, multiple=m)
            yield prepare_example(g, t, self.factor, lowres_mode=self.lowres_mode)
