"""Synthetic RGB-D and RGB-flow scenes for pre-training joint upsamplers.

A scene is a stack of layers painted back to front over a background: each
layer is a random shape (ellipse, rotated rectangle, convex polygon or a
blob of thresholded smooth noise) with its own smooth surface (a slanted
plane plus a gentle bump for depth; an affine motion for flow) and its own
texture (base colour, colour gradient, smooth colour noise, optionally
stripes or checks, fine grain). So target edges follow colour edges, while
texture adds colour edges with no target edge — what a joint upsampler must
learn to tell apart. The RGB image is slightly blurred and noisy (camera-like);
the target is sharp.

Everything comes from the ``numpy.random.Generator`` passed in: the same seed
gives the same scene, bit for bit.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["synthetic_scene", "SyntheticScenes"]


def _bspline_matrix(n_out, n_in):
    """(n_out, n_in) weights of cubic B-spline interpolation of ``n_in``
    control values spread over ``n_out`` samples (edges clamped)."""
    pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    i0 = np.floor(pos).astype(int)
    t = pos - i0
    w = np.stack([(1 - t) ** 3, 3 * t ** 3 - 6 * t ** 2 + 4, -3 * t ** 3 + 3 * t ** 2 + 3 * t + 1,
                  t ** 3], axis=1) / 6.0
    m = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    for k in range(4):
        np.add.at(m, (rows, np.clip(i0 + k - 1, 0, n_in - 1)), w[:, k])
    return m


def _smooth_noise(rng, shape, cells, channels=1):
    """Smooth random field (about unit variance): a coarse Gaussian grid,
    cubic-B-spline interpolated (separable, two matrix products)."""
    H, W = shape
    gh = max(2, int(cells))
    gw = max(2, int(round(cells * W / max(H, 1))))
    coarse = rng.standard_normal((gh, gw, channels)) * 1.7
    ry, rx = _bspline_matrix(H, gh), _bspline_matrix(W, gw)
    tmp = np.tensordot(ry, coarse, axes=(1, 0))               # (H, gw, c)
    out = np.matmul(tmp.transpose(0, 2, 1), rx.T)               # (H, c, W)
    return out.transpose(0, 2, 1)


def _shape_mask(rng, yy, xx, H, W):
    kind = rng.choice(4, p=(0.3, 0.25, 0.25, 0.2))
    cy, cx = rng.uniform(-0.1, 1.1) * H, rng.uniform(-0.1, 1.1) * W
    size = rng.uniform(0.08, 0.45) * min(H, W)
    th = rng.uniform(0, np.pi)
    c, s = np.cos(th), np.sin(th)
    dy, dx = yy - cy, xx - cx
    u, v = c * dx + s * dy, -s * dx + c * dy
    if kind == 0:  # ellipse
        a, b = size, size * rng.uniform(0.3, 1.0)
        return (u / a) ** 2 + (v / b) ** 2 <= 1
    if kind == 1:  # rotated rectangle
        a, b = size, size * rng.uniform(0.15, 1.0)
        return (np.abs(u) <= a) & (np.abs(v) <= b)
    if kind == 2:  # convex polygon: intersection of half-planes
        n = rng.integers(3, 7)
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        m = np.ones(yy.shape, bool)
        for t in angles:
            r = size * rng.uniform(0.5, 1.0)
            m &= (np.cos(t) * dx + np.sin(t) * dy) <= r
        return m
    # blob: thresholded smooth noise inside a disk
    field = _smooth_noise(rng, (H, W), rng.uniform(3, 8))[..., 0]
    return (field > rng.uniform(0.2, 0.8)) & ((dy / (1.6 * size)) ** 2 + (dx / (1.6 * size)) ** 2
                                              <= 1)


def _texture(rng, yy, xx, H, W):
    base = rng.uniform(0.05, 0.95, 3)
    grad = rng.normal(0, 0.25, (2, 3))
    tex = base + (yy / H - 0.5)[..., None] * grad[0] + (xx / W - 0.5)[..., None] * grad[1]
    amp = rng.uniform(0.0, 0.25)
    if amp > 0.02:
        tex = tex + amp * _smooth_noise(rng, (H, W), rng.uniform(2, 12), 3)
    r = rng.random()
    if r < 0.3:  # stripes or checks: colour edges with no depth edge
        period = rng.uniform(4, 30)
        th = rng.uniform(0, np.pi)
        ph = (np.cos(th) * xx + np.sin(th) * yy) / period
        pat = (np.floor(ph) % 2).astype(np.float64)
        if rng.random() < 0.4:
            ph2 = (-np.sin(th) * xx + np.cos(th) * yy) / period
            pat = (pat + np.floor(ph2)) % 2
        tex = tex + rng.uniform(0.05, 0.4) * (pat[..., None] - 0.5) * rng.choice((-1, 1), 3)
    elif r < 0.45:  # painted spots
        spots = _smooth_noise(rng, (H, W), rng.uniform(6, 20))[..., 0] > rng.uniform(0.5, 1.2)
        tex = np.where(spots[..., None], rng.uniform(0, 1, 3), tex)
    grain = rng.uniform(0, 0.05)
    if grain > 0.005:
        tex = tex + grain * rng.standard_normal((H, W, 1), dtype=np.float32)
    return tex


def _depth_surface(rng, yy, xx, H, W, near):
    """A positive depth-like surface: slanted plane plus a gentle bump."""
    d = near + rng.normal(0, 0.3) * (yy / H - 0.5) + rng.normal(0, 0.3) * (xx / W - 0.5)
    if rng.random() < 0.5:
        d = d + rng.uniform(0, 0.08) * _smooth_noise(rng, (H, W), rng.uniform(1.5, 4))[..., 0]
    if rng.random() < 0.25:  # curved (cylinder/sphere-like)
        cy, cx = rng.uniform(0, H), rng.uniform(0, W)
        r2 = ((yy - cy) / H) ** 2 + ((xx - cx) / W) ** 2 * rng.uniform(0, 1)
        d = d + rng.uniform(-0.4, 0.4) * r2
    return d


def _flow_motion(rng, yy, xx, H, W, scale):
    """An affine motion field (u, v): translation, rotation, zoom, shear."""
    t = rng.normal(0, scale, 2)
    A = rng.normal(0, 0.02 * scale / 4, (2, 2))
    cy, cx = rng.uniform(0, H), rng.uniform(0, W)
    dy, dx = yy - cy, xx - cx
    u = t[0] + A[0, 0] * dx + A[0, 1] * dy
    v = t[1] + A[1, 0] * dx + A[1, 1] * dy
    return np.stack([u, v], axis=-1)


def synthetic_scene(rng, shape=(256, 256), kind="depth", *, n_layers=None, flow_scale=None):
    """One random scene: an RGB guide and a piecewise-smooth target whose
    edges follow colour edges.

    Parameters
    ----------
    rng : numpy Generator or int
        All randomness comes from it (an int seeds a new Generator).
    shape : (int, int), optional
        Image size ``(H, W)``.
    kind : {'depth', 'flow'}, optional
        ``'depth'``: positive depth-like values (nearer layers smaller),
        shape ``(H, W)``. ``'flow'``: layered affine motion ``(H, W, 2)`` in
        pixels.
    n_layers : int, optional
        Number of foreground layers (default: random in 2..9).
    flow_scale : float, optional
        Typical motion magnitude in pixels (default: random in 1..12).

    Returns
    -------
    rgb : ndarray of uint8, shape (H, W, 3)
    target : ndarray of float32, shape (H, W) or (H, W, 2)
    """
    from scipy import ndimage  # noqa: PLC0415

    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        rng = np.random.default_rng(int(rng))
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator or an int seed, got {rng!r}")
    if kind not in ("depth", "flow"):
        raise ValueError(f"kind={kind!r}; choose 'depth' or 'flow'")
    H, W = (int(s) for s in shape)
    if H < 8 or W < 8:
        raise ValueError(f"shape={shape!r} is too small (at least 8x8)")
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    if n_layers is None:
        n_layers = int(rng.integers(2, 10))
    if flow_scale is None:
        flow_scale = float(rng.uniform(1, 12))

    rgb = _texture(rng, yy, xx, H, W)
    if kind == "depth":
        target = _depth_surface(rng, yy, xx, H, W, near=rng.uniform(2.0, 3.0))
        nears = np.sort(rng.uniform(0.5, 2.0, n_layers))[::-1]  # far to near
    else:
        target = _flow_motion(rng, yy, xx, H, W, flow_scale * 0.5)
    for i in range(n_layers):
        m = _shape_mask(rng, yy, xx, H, W)
        if not m.any():
            continue
        tex = _texture(rng, yy, xx, H, W)
        if rng.random() < 0.15:  # camouflage: a colour close to what is behind
            mean_behind = rgb[m].mean(axis=0)
            tex = tex - tex[m].mean(axis=0) + mean_behind + rng.normal(0, 0.04, 3)
        rgb = np.where(m[..., None], tex, rgb)
        if kind == "depth":
            surf = _depth_surface(rng, yy, xx, H, W, near=nears[i])
            target = np.where(m, surf, target)
        else:
            mot = _flow_motion(rng, yy, xx, H, W, flow_scale)
            target = np.where(m[..., None], mot, target)
    # shading from the depth slope adds intensity variation that follows the surface
    if kind == "depth" and rng.random() < 0.5:
        gy, gx = np.gradient(target)
        shade = 1.0 + rng.uniform(0, 6) * (gx * rng.normal() + gy * rng.normal())
        rgb = rgb * np.clip(shade, 0.6, 1.4)[..., None]
    blur = rng.uniform(0.3, 1.0)
    rgb = ndimage.gaussian_filter(rgb, (blur, blur, 0), mode="nearest")
    rgb = rgb + rng.uniform(0, 0.02) * rng.standard_normal(rgb.shape)
    rgb = np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)
    if kind == "depth":
        target = target * rng.uniform(0.5, 60)  # arbitrary units: training min-max normalises
    return rgb, target.astype(np.float32)


class SyntheticScenes:
    """A source of synthetic (guide, target) pairs for
    :class:`~pacnd.data.JointUpsamplingPairs`-style sampling:
    ``scenes(rng)`` draws one scene of ``shape``.

    Parameters
    ----------
    kind : {'depth', 'flow'}
    shape : (int, int)
    **kwargs
        Passed to :func:`synthetic_scene`.
    """

    def __init__(self, kind="depth", shape=(256, 256), **kwargs):
        if kind not in ("depth", "flow"):
            raise ValueError(f"kind={kind!r}; choose 'depth' or 'flow'")
        self.kind, self.shape, self.kwargs = kind, tuple(shape), kwargs

    def __call__(self, rng):
        return synthetic_scene(rng, self.shape, self.kind, **self.kwargs)

    def __repr__(self):
        return f"SyntheticScenes(kind={self.kind!r}, shape={self.shape})"
