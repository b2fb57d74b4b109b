"""Sample data bundled with pacnd (see ``pacnd/data/ATTRIBUTION.md``)."""

from __future__ import annotations

from importlib import resources

import numpy as np

__all__ = ["load_cones", "data_path"]


def data_path(name):
    """Path of a bundled data file, e.g. ``data_path('cones_im2.png')``.

    Raises
    ------
    FileNotFoundError
        If no such file is bundled (the message lists the available ones).
    """
    root = resources.files("pacnd") / "data"
    path = root / name
    if not path.is_file():
        have = sorted(p.name for p in root.iterdir() if p.is_file())
        raise FileNotFoundError(f"pacnd bundles no data file {name!r}; available: {have}")
    return path


def _read_png(name):
    from PIL import Image  # noqa: PLC0415 - pillow only needed for the sample data

    with resources.as_file(data_path(name)) as p, Image.open(p) as im:
        return np.asarray(im).copy()


def load_cones():
    """The Middlebury 2003 "Cones" left view and its ground-truth disparity.

    Returns
    -------
    rgb : ndarray of uint8, shape (375, 450, 3)
        The left view (``im2.png``).
    disparity : ndarray of float32, shape (375, 450)
        Ground-truth disparity of that view **in pixels** (the PNG stores
        ``4 * disparity``); **NaN where unknown** (PNG value 0: occlusions and
        pixels without ground truth, about 3 % of the image).

    Notes
    -----
    Data: D. Scharstein and R. Szeliski, "High-accuracy stereo depth maps
    using structured light", CVPR 2003 — see ``pacnd/data/ATTRIBUTION.md``.

    Examples
    --------
    >>> from pacnd.datasets import load_cones
    >>> rgb, disp = load_cones()
    >>> rgb.shape, rgb.dtype, disp.shape, disp.dtype
    ((375, 450, 3), dtype('uint8'), (375, 450), dtype('float32'))
    """
    rgb = _read_png("cones_im2.png")
    raw = _read_png("cones_disp2.png")
    if rgb.ndim == 3 and rgb.shape[2] == 4:
        rgb = rgb[..., :3]
    disparity = raw.astype(np.float32) / np.float32(4.0)
    disparity[raw == 0] = np.nan
    return np.ascontiguousarray(rgb), disparity
