"""Readers for the depth and flow encodings of public RGB-D / optical-flow data sets.

Each returns float32 in physical units with NaN where the value is unknown:

- :func:`read_png` — any non-interlaced PNG at its full bit depth, including the
  16-bit RGB (48-bit) PNGs that Pillow truncates to 8 bits (KITTI flow);
- :func:`read_kitti_flow` — KITTI 2012/2015 flow PNG: ``u = (R - 2**15) / 64``,
  ``v = (G - 2**15) / 64``, ``B`` = valid;
- :func:`read_kitti_disparity` — KITTI disparity PNG: ``uint16 / 256``, 0 = no
  ground truth;
- :func:`read_mm_depth` — 16-bit PNG depth in millimetres (Kinect, RealSense,
  RGB-D-D, Redwood, DIML): metres, 0 (and optionally a saturation value) unknown;
- :func:`read_sunrgbd_depth` — SUN RGB-D's bit-rotated 16-bit depth
  (``mm = (v >> 3) | (v << 13)``), metres;
- :func:`read_tum_depth` — TUM RGB-D: ``uint16 / 5000`` metres;
- :func:`read_palette_disparity` — palette PNGs whose *indices* encode disparity
  (Middlebury 2001 Tsukuba: index / 16);
- :func:`read_float_tiff` — single-channel float TIFF (e.g. SCARED disparity);
- :func:`read_mask` — a mask PNG as booleans (values in ``keep``).

PFM, ``.npy`` (metres), Middlebury 8-bit disparity PNGs and ``.flo`` are read by
:mod:`pacnd.data.io` (:func:`~pacnd.data.io.read_depth`,
:func:`~pacnd.data.io.read_flow`).
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

__all__ = ["read_png", "read_kitti_flow", "read_kitti_disparity", "read_mm_depth",
           "read_sunrgbd_depth", "read_tum_depth", "read_palette_disparity", "read_float_tiff",
           "read_mask"]

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def _check_file(path):
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"path must be a str or path-like, got {type(path).__name__}") from None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    return path


def _unfilter(raw, h, row_bytes, bpp):
    """Undo PNG's per-row filters (types 0-4) on the decompressed stream."""
    stride = row_bytes + 1
    if raw.size != h * stride:
        raise ValueError(f"PNG data holds {raw.size} bytes, expected {h * stride}")
    rows = raw.reshape(h, stride)
    ftype = rows[:, 0]
    if ftype.max(initial=0) > 4:
        raise ValueError(f"PNG uses an unknown row filter type {int(ftype.max())}")
    out = np.zeros((h, row_bytes), dtype=np.uint8)
    prev = np.zeros(row_bytes, dtype=np.int64)
    for y in range(h):
        cur = rows[y, 1:].astype(np.int64)
        f = ftype[y]
        if f == 1:      # Sub: running sum along each byte lane
            cur = np.cumsum(cur.reshape(-1, bpp), axis=0).reshape(-1) & 0xFF
        elif f == 2:    # Up
            cur = (cur + prev) & 0xFF
        elif f in (3, 4):
            cur = _unfilter_row_sequential(cur, prev, bpp, int(f))
        out[y] = cur
        prev = cur
    return out


def _unfilter_row_sequential(cur, prev, bpp, f):
    """Average (3) and Paeth (4) rows: each byte depends on the byte ``bpp`` to its
    left, so the row is walked one pixel (``bpp`` byte lanes at once) at a time."""
    cur = cur.reshape(-1, bpp)
    up = prev.reshape(-1, bpp)
    res = np.empty_like(cur)
    left = np.zeros(bpp, dtype=np.int64)
    upleft = np.zeros(bpp, dtype=np.int64)
    for i in range(cur.shape[0]):
        u = up[i]
        if f == 3:
            v = (cur[i] + ((left + u) >> 1)) & 0xFF
        else:
            p = left + u - upleft
            pa, pb, pc = np.abs(p - left), np.abs(p - u), np.abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, u, upleft))
            v = (cur[i] + pred) & 0xFF
        res[i] = v
        left, upleft = v, u
    return res.reshape(-1)


def read_png(path):
    """A PNG's samples at full bit depth: ``(H, W)`` or ``(H, W, C)``, uint8 or uint16.

    Greyscale, grey+alpha, RGB and RGBA, 8 or 16 bits, non-interlaced (what
    data sets store depth and flow in). Palette images return their indices.
    """
    path = _check_file(path)
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:8] != _PNG_SIG:
        raise ValueError(f"{path!r} is not a PNG file")
    pos, idat, ihdr = 8, [], None
    while pos + 8 <= len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        if len(body) != n:
            raise ValueError(f"{path!r} is truncated (chunk {kind!r})")
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + n
    if ihdr is None or not idat:
        raise ValueError(f"{path!r} has no image data")
    w, h, depth, ctype, _, _, interlace = ihdr
    if interlace:
        raise ValueError(f"{path!r} is interlaced (Adam7); re-save it without interlacing")
    if ctype == 3:
        chans = 1
    elif ctype in _CHANNELS:
        chans = _CHANNELS[ctype]
    else:
        raise ValueError(f"{path!r} has PNG colour type {ctype}, which is not supported")
    if depth not in (8, 16) and not (ctype == 3 and depth == 8):
        raise ValueError(f"{path!r} has {depth}-bit samples; 8- and 16-bit PNGs are supported")
    if depth == 8 or chans == 1:
        # Pillow reads these at full depth (and fast); only multi-channel 16-bit PNGs
        # (which it truncates to 8 bits) need the decoder below
        from PIL import Image  # noqa: PLC0415

        with Image.open(path) as im:
            return np.asarray(im).copy()
    bpp = chans * depth // 8
    try:
        raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    except zlib.error as exc:
        raise ValueError(f"{path!r}: corrupt image data ({exc})") from None
    rows = _unfilter(raw, h, w * bpp, bpp)
    if depth == 16:
        a = rows.reshape(h, w * chans, 2)
        img = (a[..., 0].astype(np.uint16) << 8) | a[..., 1].astype(np.uint16)
    else:
        img = rows
    img = img.reshape(h, w, chans)
    return img[..., 0] if chans == 1 else img


def read_kitti_flow(path):
    """KITTI flow PNG (16-bit RGB) as float32 ``(H, W, 2)`` in pixels; NaN where
    ``B`` (valid) is 0."""
    a = read_png(path)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint16:
        raise ValueError(f"{os.fspath(path)!r} is not a KITTI flow PNG (16-bit RGB), got "
                         f"{a.dtype} {a.shape}")
    f = (a[..., :2].astype(np.float32) - np.float32(2 ** 15)) / np.float32(64)
    f[a[..., 2] == 0] = np.nan
    return f


def _grey16(path, what):
    a = read_png(path)
    if a.ndim != 2:
        raise ValueError(f"{os.fspath(path)!r} is not a single-channel PNG ({what}), got shape "
                         f"{a.shape}")
    return a


def read_kitti_disparity(path):
    """KITTI disparity PNG: ``uint16 / 256`` pixels, NaN where 0 (no ground truth)."""
    a = _grey16(path, "KITTI disparity")
    d = a.astype(np.float32) / np.float32(256)
    d[a == 0] = np.nan
    return d


def read_mm_depth(path, *, invalid=(0,)):
    """16-bit depth PNG in millimetres -> metres; stored values in ``invalid`` are NaN."""
    a = _grey16(path, "depth in mm")
    d = a.astype(np.float32) / np.float32(1000)
    for v in invalid:
        d[a == v] = np.nan
    return d


def read_sunrgbd_depth(path):
    """SUN RGB-D depth PNG (16-bit, rotated right by 3 bits) -> metres, NaN where 0."""
    a = _grey16(path, "SUN RGB-D depth").astype(np.uint16)
    mm = (a >> np.uint16(3)) | (a << np.uint16(13))
    d = mm.astype(np.float32) / np.float32(1000)
    d[a == 0] = np.nan
    return d


def read_tum_depth(path):
    """TUM RGB-D depth PNG: ``uint16 / 5000`` metres, NaN where 0."""
    a = _grey16(path, "TUM depth")
    d = a.astype(np.float32) / np.float32(5000)
    d[a == 0] = np.nan
    return d


def read_palette_disparity(path, *, scale=16.0):
    """Disparity stored as the palette *indices* of a PNG (index / ``scale``),
    NaN where the index is 0 (Middlebury 2001 Tsukuba: scale 16)."""
    from PIL import Image  # noqa: PLC0415

    path = _check_file(path)
    with Image.open(path) as im:
        if im.mode not in ("P", "L"):
            raise ValueError(f"{path!r} is a {im.mode} image, not a palette/grey disparity map")
        a = np.asarray(im)
    d = a.astype(np.float32) / np.float32(scale)
    d[a == 0] = np.nan
    return d


def read_float_tiff(path, *, unknown=0.0):
    """Single-channel float TIFF (Pillow mode ``F``) as float32; values equal to
    ``unknown`` (and NaN/inf) are NaN."""
    from PIL import Image  # noqa: PLC0415

    path = _check_file(path)
    with Image.open(path) as im:
        if im.mode != "F":
            raise ValueError(f"{path!r} is a {im.mode} TIFF, not a 32-bit float one")
        d = np.asarray(im, dtype=np.float32).copy()
    bad = ~np.isfinite(d)
    if unknown is not None:
        bad |= d == unknown
    d[bad] = np.nan
    return d


def read_mask(path, *, keep=(255,)):
    """A mask image as bool ``(H, W)``: True where the stored value is in ``keep``."""
    a = read_png(path)
    if a.ndim == 3:
        a = a[..., 0]
    return np.isin(a, np.asarray(keep))
