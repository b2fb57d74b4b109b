"""A training sampler that mixes sources of real pairs, with the augmentation real imagery needs.

:class:`MixedPairs` is a sampler for :func:`pacnd.train.fit` (``pairs(rng) ->
batch``, all randomness from the Generator it is given, so runs resume bit for
bit). Each batch item:

1. picks a source with probability proportional to its weight, then a pair
   of that source uniformly;
2. picks a random scale ``s`` (``scale`` range; raised where the image is
   smaller than the crop) and a random window of ``crop / s`` pixels, resized
   to ``crop``: the guide with Pillow's antialiased bilinear filter, the target
   with nearest neighbour (no values invented across depth edges or holes);
3. flips left-right with probability 1/2 (flow: u negated), and jitters the
   guide's brightness, contrast, saturation and per-channel gain by up to
   ``color_jitter``;
4. makes the low-res input with the protocol (``lowres_mode``) and normalises
   input and target by the **whole image's** low-res range
   (``normalize='image'``, computed once per pair: what :meth:`upsample` does at
   inference) or by the crop's (``'crop'``, the reference implementation's
   training convention).

Unknown target pixels stay NaN (masked out of the loss); crops with less than
``min_known`` known pixels are redrawn.
"""

from __future__ import annotations

import numbers

import numpy as np

from .lowres import crop_to_multiple, fill_unknown, make_low_res, minmax_range
from .pairs import collate, prepare_example

__all__ = ["MixedPairs"]

NORMALIZE = ("image", "crop")


def _resize_guide(g, size):
    from PIL import Image  # noqa: PLC0415

    if g.shape[:2] == tuple(size):
        return g
    return np.asarray(Image.fromarray(g).resize((size[1], size[0]), Image.BILINEAR))


def _resize_nearest(t, size):
    H, W = t.shape[:2]
    yi = np.minimum(((np.arange(size[0]) + 0.5) * H / size[0]).astype(np.int64), H - 1)
    xi = np.minimum(((np.arange(size[1]) + 0.5) * W / size[1]).astype(np.int64), W - 1)
    return t[yi][:, xi]


def _jitter(g, rng, amount):
    if amount <= 0:
        return g
    x = g.astype(np.float32) / 255.0
    lo, hi = 1.0 - amount, 1.0 + amount
    b, c, s = rng.uniform(lo, hi, 3)
    gain = rng.uniform(1.0 - amount / 2, 1.0 + amount / 2, 3).astype(np.float32)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * np.float32(s)                 # saturation
    m = np.float32(x.mean())
    x = (x - m) * np.float32(c) + m                       # contrast
    x = x * np.float32(b) * gain                          # brightness, white balance
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


class MixedPairs:
    """Random crops from several weighted sources (see the module docstring).

    Parameters
    ----------
    sources : dict of str -> list of (guide, target)
        Pairs per source: ``guide`` (H, W, 3) uint8, ``target`` (H, W) or
        (H, W, C) float, NaN where unknown.
    factor : int
    kind : {'depth', 'flow'}
    weights : dict of str -> float, optional
        Sampling weight per source (default: equal).
    lowres_mode : str, optional
        :func:`pacnd.data.make_low_res` mode (default 'center' depth,
        'bilinear' flow).
    crop : int
        Crop size (multiple of ``factor``).
    batch_size : int
    scale : (float, float)
        Range of the random rescaling factor.
    color_jitter : float
        Relative range of the guide's colour jitter (0 = off).
    flip : bool
    normalize : {'image', 'crop'}
    min_known : float
    """

    def __init__(self, sources, factor, *, kind="depth", weights=None, lowres_mode=None,
                 crop=256, batch_size=1, scale=(0.5, 1.0), color_jitter=0.1, flip=True,
                 normalize="image", min_known=0.5):
        if kind not in ("depth", "flow"):
            raise ValueError(f"kind={kind!r}; choose 'depth' or 'flow'")
        if not isinstance(factor, numbers.Integral) or factor < 1:
            raise ValueError(f"factor={factor!r} must be a positive int")
        if normalize not in NORMALIZE:
            raise ValueError(f"normalize={normalize!r}; choose one of {NORMALIZE}")
        if int(crop) % int(factor):
            raise ValueError(f"crop={crop} must be a multiple of factor={factor}")
        lo_s, hi_s = (float(v) for v in scale)
        if not 0 < lo_s <= hi_s:
            raise ValueError(f"scale={scale!r} must be (low, high) with 0 < low <= high")
        self.factor, self.kind, self.crop = int(factor), kind, int(crop)
        self.lowres_mode = lowres_mode or ("center" if kind == "depth" else "bilinear")
        self.batch_size, self.scale = int(batch_size), (lo_s, hi_s)
        self.color_jitter, self.flip = float(color_jitter), bool(flip)
        self.normalize, self.min_known = normalize, float(min_known)
        self.names = sorted(k for k, v in sources.items() if len(v))
        if not self.names:
            raise ValueError("no source holds any pair")
        w = dict(weights or {})
        unknown = set(w) - set(sources)
        if unknown:
            raise ValueError(f"weights name unknown sources {sorted(unknown)}; sources are "
                             f"{sorted(sources)}")
        p = np.array([float(w.get(n, 1.0)) for n in self.names])
        if (p < 0).any() or p.sum() <= 0:
            raise ValueError(f"weights must be non-negative with a positive sum, got {w}")
        self.probs = p / p.sum()
        self.pairs = {n: [self._check(g, t) for g, t in sources[n]] for n in self.names}
        self.ranges = {n: [self._range(t) for _, t in self.pairs[n]] for n in self.names}

    def _check(self, g, t):
        g = np.asarray(g)
        t = np.asarray(t, dtype=np.float32)
        if g.ndim != 3 or g.shape[2] != 3 or g.dtype != np.uint8:
            raise ValueError(f"a guide must be (H, W, 3) uint8, got {g.dtype} {g.shape}")
        if t.shape[:2] != g.shape[:2]:
            raise ValueError(f"guide {g.shape[:2]} and target {t.shape[:2]} differ in size")
        if t.ndim == 2:
            t = t[..., None]
        return g, t

    def _range(self, t):
        low = make_low_res(crop_to_multiple(t, self.factor), self.factor, self.lowres_mode)
        return minmax_range(fill_unknown(low))

    def __repr__(self):
        srcs = ", ".join(f"{n}: {len(self.pairs[n])} ({p:.2f})"
                         for n, p in zip(self.names, self.probs))
        return (f"MixedPairs({self.kind}, x{self.factor}, crop {self.crop}, "
                f"{self.lowres_mode}, normalize={self.normalize!r}; {srcs})")

    def _window(self, rng, H, W):
        c = self.crop
        s_min = max(self.scale[0], c / min(H, W))
        s = float(rng.uniform(s_min, max(s_min, self.scale[1])))
        n = min(int(round(c / s)), H, W)
        i = int(rng.integers(0, H - n + 1))
        j = int(rng.integers(0, W - n + 1))
        return i, j, n

    def _one(self, rng):
        for _ in range(50):
            src = self.names[int(rng.choice(len(self.names), p=self.probs))]
            k = int(rng.integers(len(self.pairs[src])))
            g, t = self.pairs[src][k]
            i, j, n = self._window(rng, *t.shape[:2])
            c = (self.crop, self.crop)
            gc = _resize_guide(np.ascontiguousarray(g[i:i + n, j:j + n]), c)
            tc = _resize_nearest(t[i:i + n, j:j + n], c)
            flipped = self.flip and rng.random() < 0.5
            if flipped:
                gc, tc = gc[:, ::-1], tc[:, ::-1].copy()
                if self.kind == "flow":
                    tc[..., 0] = -tc[..., 0]
            gc = _jitter(np.ascontiguousarray(gc), rng, self.color_jitter)
            if np.isfinite(tc).all(axis=2).mean() < self.min_known:
                continue
            low = make_low_res(tc, self.factor, self.lowres_mode)
            if not np.isfinite(low).any():
                continue
            vr = None
            if self.normalize == "image":
                lo, hi = (np.array(v, dtype=np.float64) for v in self.ranges[src][k])
                if flipped and self.kind == "flow":   # the image's range of -u
                    lo[0], hi[0] = -hi[0], -lo[0]
                vr = (lo, hi)
            return prepare_example(gc, tc, self.factor, low=low, value_range=vr)
        raise RuntimeError(f"50 crops in a row had less than {self.min_known:.0%} known target "
                           f"pixels; lower min_known or check the data")

    def __call__(self, rng):
        """A batch of ``batch_size`` crops (the sampler interface of :func:`pacnd.train.fit`)."""
        return collate([self._one(rng) for _ in range(self.batch_size)])
