"""Readers, writers and visualisation for joint-upsampling data.

- RGB images: :func:`read_image` / :func:`write_image` (PNG, JPEG, ... via
  Pillow; always ``(H, W, 3)`` uint8 RGB out).
- Depth / disparity maps: :func:`read_depth` / :func:`write_depth` (8- and
  16-bit PNG with a scale and an "unknown" value, ``.npy``, ``.pfm``),
  :func:`read_middlebury_disparity` (Middlebury 2001-2006 PNGs: value / scale,
  0 = unknown).
- Optical flow: :func:`read_flow` / :func:`write_flow` (Middlebury ``.flo``,
  ``.npy``).
- Visualisation: :func:`flow_to_color` (the Middlebury colour wheel of Baker
  et al.), :func:`colorize` (a matplotlib colour map, grey where unknown).

Unknown samples are NaN in every float array these functions return.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["read_image", "write_image", "read_depth", "write_depth",
           "read_middlebury_disparity", "read_flow", "write_flow", "read_target",
           "write_target", "flow_to_color", "colorize", "FLO_MAGIC"]

#: the float32 tag that starts every Middlebury ``.flo`` file ("PIEH")
FLO_MAGIC = 202021.25


def _path(path, name="path"):
    try:
        return os.fspath(path)
    except TypeError:
        raise TypeError(f"{name} must be a str or path-like, got {type(path).__name__}") from None


def _ext(path):
    return os.path.splitext(path)[1].lower()


def _open_image(path):
    from PIL import Image  # noqa: PLC0415

    path = _path(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    try:
        return Image.open(path)
    except Exception as exc:  # PIL.UnidentifiedImageError and friends
        raise ValueError(f"{path!r} is not an image Pillow can read ({exc})") from None


# -------------------------------------------------------------------------- RGB images
def read_image(path):
    """Read an image as ``(H, W, 3)`` uint8 RGB (grey, palette and RGBA
    images are converted; 16-bit images are scaled to 8 bits)."""
    with _open_image(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            a = np.asarray(im).astype(np.float64)
            a = np.clip(np.round(a / 257.0), 0, 255).astype(np.uint8)
            return np.ascontiguousarray(np.stack([a] * 3, axis=-1))
        return np.ascontiguousarray(np.asarray(im.convert("RGB")))


def write_image(path, image):
    """Write an RGB (``(H, W, 3)``) or grey (``(H, W)``) image: uint8, or
    float in ``[0, 1]`` (clipped, rounded)."""
    from PIL import Image  # noqa: PLC0415

    a = np.asarray(image)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(f"image must be (H, W), (H, W, 3) or (H, W, 4), got {a.shape}")
    if a.dtype != np.uint8:
        if a.dtype.kind != "f":
            raise TypeError(f"image must be uint8 or float in [0, 1], got {a.dtype}")
        a = np.clip(np.round(np.nan_to_num(a) * 255.0), 0, 255).astype(np.uint8)
    path = _path(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(np.ascontiguousarray(a)).save(path)
    return path


# -------------------------------------------------------------------------- depth maps
def _read_pfm(path):
    with open(path, "rb") as f:
        header = f.readline().decode("latin-1").strip()
        if header not in ("Pf", "PF"):
            raise ValueError(f"{path!r} is not a PFM file (header {header!r})")
        dims = f.readline().decode("latin-1").split()
        while not dims:
            dims = f.readline().decode("latin-1").split()
        w, h = int(dims[0]), int(dims[1])
        scale = float(f.readline().decode("latin-1").strip())
        dtype = "<f4" if scale < 0 else ">f4"
        c = 3 if header == "PF" else 1
        data = np.fromfile(f, dtype=dtype, count=w * h * c)
    if data.size != w * h * c:
        raise ValueError(f"{path!r} is truncated: expected {w * h * c} floats, got {data.size}")
    data = data.reshape(h, w, c)[::-1].astype(np.float32)
    data[np.isinf(data)] = np.nan
    return data[..., 0] if c == 1 else data


def read_depth(path, *, scale=1.0, unknown=0):
    """Read a depth (or disparity) map as float32 ``(H, W)``.

    Parameters
    ----------
    path : str or path-like
        ``.png`` (8- or 16-bit grey), ``.npy`` (2-D array) or ``.pfm``.
    scale : float, optional
        PNG only: stored value = ``scale * depth`` (e.g. 1000 for
        millimetres -> metres, 4 for Middlebury 2003 disparities, 256 for
        KITTI).
    unknown : int or None, optional
        PNG only: stored value meaning "unknown" (NaN in the result); None
        keeps every value.

    Returns
    -------
    ndarray of float32, shape (H, W)
        NaN where unknown (and where a ``.npy``/``.pfm`` holds NaN/inf).
    """
    path = _path(path)
    ext = _ext(path)
    if ext == ".npy":
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such file: {path!r}")
        a = np.load(path, allow_pickle=False)
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[..., 0]
        if a.ndim != 2:
            raise ValueError(f"{path!r} holds an array of shape {a.shape}; a depth map is (H, W)")
        a = a.astype(np.float32)
        a[~np.isfinite(a)] = np.nan
        return a
    if ext == ".pfm":
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such file: {path!r}")
        a = _read_pfm(path)
        if a.ndim != 2:
            raise ValueError(f"{path!r} is a 3-channel PFM; a depth map has one channel")
        return a
    if ext == ".flo":
        raise ValueError(f"{path!r} is an optical-flow file; read it with read_flow")
    with _open_image(path) as im:
        raw = np.asarray(im)
    if raw.ndim == 3:
        if raw.shape[2] in (3, 4) and np.array_equal(raw[..., 0], raw[..., 1]) \
                and np.array_equal(raw[..., 0], raw[..., 2]):
            raw = raw[..., 0]
        else:
            raise ValueError(f"{path!r} is a colour image ({raw.shape}); a depth map PNG is a "
                             f"single-channel 8- or 16-bit image")
    d = raw.astype(np.float32) / np.float32(scale)
    if unknown is not None:
        d[raw == unknown] = np.nan
    return d


def write_depth(path, depth, *, scale=1.0, bits=16, unknown=0):
    """Write a depth map (float ``(H, W)``, NaN = unknown).

    ``.npy`` stores the float32 array as it is. ``.png`` stores
    ``round(scale * depth)`` as an unsigned ``bits``-bit integer (8 or 16);
    NaN becomes ``unknown``. Values that do not fit raise ``ValueError``
    (pick a smaller ``scale``).
    """
    path = _path(path)
    d = np.asarray(depth, dtype=np.float64)
    if d.ndim == 3 and d.shape[2] == 1:
        d = d[..., 0]
    if d.ndim != 2:
        raise ValueError(f"depth must be (H, W), got {d.shape}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    ext = _ext(path)
    if ext == ".npy":
        np.save(path, d.astype(np.float32))
        return path
    if ext != ".png":
        raise ValueError(f"cannot write depth to {path!r}: use .png or .npy")
    if bits not in (8, 16):
        raise ValueError(f"bits={bits!r}; PNG depth maps are 8- or 16-bit")
    from PIL import Image  # noqa: PLC0415

    top = (1 << bits) - 1
    known = np.isfinite(d)
    q = np.zeros(d.shape, np.float64)
    q[known] = np.round(d[known] * scale)
    if known.any() and (q[known].min() < 0 or q[known].max() > top):
        raise ValueError(f"depth * scale spans [{q[known].min():g}, {q[known].max():g}], outside "
                         f"the {bits}-bit range [0, {top}]; choose another scale")
    q[~known] = unknown
    arr = q.astype(np.uint16 if bits == 16 else np.uint8)
    im = Image.fromarray(arr) if bits == 8 else Image.fromarray(arr, mode=None)
    im.save(path)
    return path


def read_middlebury_disparity(path, *, scale=4.0):
    """A Middlebury (2001-2006) ground-truth disparity PNG in pixels: stored
    value / ``scale`` (4 for the 2003 "Cones"/"Teddy" full-size maps), NaN
    where the value is 0 (unknown / occluded)."""
    return read_depth(path, scale=scale, unknown=0)


# -------------------------------------------------------------------------- optical flow
def read_flow(path):
    """Read optical flow as float32 ``(H, W, 2)`` (u, v in pixels).

    ``.flo`` (Middlebury: "PIEH" tag, width, height, row-major interleaved
    float32 u, v, little-endian) or ``.npy``. Components above ``1e9`` in
    magnitude (the format's "unknown") become NaN.
    """
    path = _path(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    ext = _ext(path)
    if ext == ".npy":
        f = np.load(path, allow_pickle=False).astype(np.float32)
        if f.ndim != 3 or f.shape[2] != 2:
            raise ValueError(f"{path!r} holds an array of shape {f.shape}; flow is (H, W, 2)")
    elif ext == ".flo":
        with open(path, "rb") as fh:
            tag = np.fromfile(fh, "<f4", count=1)
            if tag.size != 1 or tag[0] != np.float32(FLO_MAGIC):
                raise ValueError(f"{path!r} is not a .flo file (bad tag; expected 202021.25)")
            wh = np.fromfile(fh, "<i4", count=2)
            if wh.size != 2 or wh.min() < 1 or wh.max() > 100000:
                raise ValueError(f"{path!r}: invalid .flo size {wh.tolist()}")
            w, h = int(wh[0]), int(wh[1])
            data = np.fromfile(fh, "<f4", count=2 * w * h)
        if data.size != 2 * w * h:
            raise ValueError(f"{path!r} is truncated: {w}x{h} flow needs {2 * w * h} floats, "
                             f"found {data.size}")
        f = data.reshape(h, w, 2).astype(np.float32)
    else:
        raise ValueError(f"cannot read flow from {path!r}: use .flo or .npy")
    f[~np.isfinite(f) | (np.abs(f) > 1e9)] = np.nan
    return f


def write_flow(path, flow):
    """Write optical flow ``(H, W, 2)`` to ``.flo`` (NaN -> 1e10, the
    format's "unknown") or ``.npy``."""
    path = _path(path)
    f = np.asarray(flow, dtype=np.float32)
    if f.ndim != 3 or f.shape[2] != 2:
        raise ValueError(f"flow must be (H, W, 2), got {f.shape}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    ext = _ext(path)
    if ext == ".npy":
        np.save(path, f)
        return path
    if ext != ".flo":
        raise ValueError(f"cannot write flow to {path!r}: use .flo or .npy")
    f = np.where(np.isfinite(f), f, np.float32(1e10)).astype("<f4")
    h, w = f.shape[:2]
    with open(path, "wb") as fh:
        np.array([FLO_MAGIC], "<f4").tofile(fh)
        np.array([w, h], "<i4").tofile(fh)
        np.ascontiguousarray(f).tofile(fh)
    return path


# ---------------------------------------------------------------- generic (by extension)
def read_target(path, *, kind=None, scale=1.0):
    """Read a target map: flow for ``.flo`` (or ``kind='flow'``), depth
    otherwise (see :func:`read_depth`; ``scale`` applies to PNGs)."""
    path = _path(path)
    ext = _ext(path)
    if kind == "flow" or ext == ".flo":
        return read_flow(path)
    if ext == ".npy":
        a = np.load(path, allow_pickle=False) if os.path.isfile(path) else None
        if a is not None and a.ndim == 3 and a.shape[2] == 2:
            return read_flow(path)
    return read_depth(path, scale=scale)


def write_target(path, target, *, scale=1.0):
    """Write a result: ``.flo`` / ``.npy`` / ``.png`` (depth, 16-bit,
    ``scale``) according to the extension and the array's shape."""
    t = np.asarray(target)
    ext = _ext(_path(path))
    if t.ndim == 3 and t.shape[2] == 2:
        if ext == ".png":
            return write_image(path, flow_to_color(t))
        return write_flow(path, t)
    if t.ndim == 3 and t.shape[2] == 1:
        t = t[..., 0]
    return write_depth(path, t, scale=scale)


# --------------------------------------------------------------------------- visualisation
def _color_wheel():
    """The Middlebury flow colour wheel of Baker et al. (55 hues: RY 15,
    YG 6, GC 4, CB 11, BM 13, MR 6), rows of RGB in 0..255."""
    rows = []
    # (length, channel that ramps, up or down, channel held at 255)
    for n, ramp, up, held in ((15, 1, True, 0), (6, 0, False, 1), (4, 2, True, 1),
                              (11, 1, False, 2), (13, 0, True, 2), (6, 2, False, 0)):
        seg = np.zeros((n, 3))
        r = np.floor(255 * np.arange(n) / n)
        seg[:, ramp] = r if up else 255 - r
        seg[:, held] = 255
        rows.append(seg)
    return np.concatenate(rows, axis=0)


def flow_to_color(flow, *, max_flow=None):
    """Colour-code optical flow with the standard Middlebury colour wheel.

    Hue is the direction, saturation the magnitude relative to
    ``max_flow`` (default: the largest finite magnitude); unknown (NaN)
    vectors are black. Returns ``(H, W, 3)`` uint8.
    """
    f = np.asarray(flow, dtype=np.float64)
    if f.ndim != 3 or f.shape[2] != 2:
        raise ValueError(f"flow must be (H, W, 2), got {f.shape}")
    u, v = f[..., 0], f[..., 1]
    bad = ~(np.isfinite(u) & np.isfinite(v))
    u = np.where(bad, 0, u)
    v = np.where(bad, 0, v)
    rad = np.sqrt(u * u + v * v)
    if max_flow is None:
        max_flow = float(rad.max()) if rad.size else 1.0
    max_flow = max(float(max_flow), np.finfo(float).eps)
    u, v, rad = u / max_flow, v / max_flow, rad / max_flow
    wheel = _color_wheel()
    ncols = wheel.shape[0]
    a = np.arctan2(-v, -u) / np.pi
    fk = (a + 1) / 2 * (ncols - 1)
    k0 = np.floor(fk).astype(int)
    k1 = (k0 + 1) % ncols
    t = (fk - k0)[..., None]
    col = ((1 - t) * wheel[k0] + t * wheel[k1]) / 255.0
    r = rad[..., None]
    small = r <= 1
    col = np.where(small, 1 - r * (1 - col), col * 0.75)
    out = np.floor(255 * col).astype(np.uint8)
    out[bad] = 0
    return out


def colorize(values, *, vmin=None, vmax=None, cmap="magma", unknown=(128, 128, 128)):
    """Map a scalar field to ``(H, W, 3)`` uint8 with a matplotlib colour
    map; NaN pixels get the ``unknown`` colour."""
    import matplotlib  # noqa: PLC0415

    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"values must be (H, W), got {a.shape}")
    known = np.isfinite(a)
    if vmin is None:
        vmin = float(a[known].min()) if known.any() else 0.0
    if vmax is None:
        vmax = float(a[known].max()) if known.any() else 1.0
    span = vmax - vmin if vmax > vmin else 1.0
    t = np.clip((np.where(known, a, vmin) - vmin) / span, 0, 1)
    rgba = matplotlib.colormaps[cmap](t)
    out = np.round(rgba[..., :3] * 255).astype(np.uint8)
    out[~known] = np.array(unknown, np.uint8)
    return out
