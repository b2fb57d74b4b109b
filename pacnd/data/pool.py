"""A catalogue of a folder of real (guide, target) pairs: decoding, scene groups, splits.

The training pool the shipped upsamplers learn from (``shared/data/train`` in
the project: ``depth/<name>/rgb.* + depth.*`` and ``flow/<name>/frame1.* +
flow.*``, each with a ``meta.json``) holds many sources, each with its own
encoding. :func:`scan_pool` lists it as :class:`PoolItem` s that know how to
decode themselves (:meth:`PoolItem.load`: RGB uint8 and the target in
physical units, NaN where unknown); :data:`SOURCES` says how each name prefix
is decoded and which *physical scene group* it belongs to.

Splits are by scene group, never by crop or view: several RGB-D-D captures
were taken on the same day in the same place, Middlebury 2006 has families of
scenes built from the same objects (``bowling1``/``bowling2``, ...), NYU's
test frames 1000-1002 are neighbours in one sequence. :data:`HELD_OUT` is the
fixed held-out set of the shipped weights (whole groups from several sources);
:func:`split` applies it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["PoolItem", "SOURCES", "HELD_OUT", "EXCLUDED", "scan_pool", "split", "source_of",
           "group_of"]


# ------------------------------------------------------------------------- decoders
def _first(folder, stem):
    for p in sorted(Path(folder).glob(stem + ".*")):
        if p.suffix.lower() != ".json":
            return p
    raise FileNotFoundError(f"no {stem}.* in {os.fspath(folder)!r}")


def _png_scaled(scale, invalid=(0,)):
    def dec(path):
        from .encodings import read_png  # noqa: PLC0415

        a = read_png(path)
        if a.ndim != 2:
            raise ValueError(f"{os.fspath(path)!r}: expected a single-channel depth PNG")
        d = a.astype(np.float32) / np.float32(scale)
        for v in invalid:
            d[a == v] = np.nan
        return d
    return dec


def _dec_depth(kind):
    from . import encodings as E  # noqa: PLC0415
    from .io import read_depth  # noqa: PLC0415

    return {
        "mm": lambda p: E.read_mm_depth(p, invalid=(0, 65535)),
        "sunrgbd": E.read_sunrgbd_depth,
        "tum": E.read_tum_depth,
        "kitti": E.read_kitti_disparity,
        "tsukuba": lambda p: E.read_palette_disparity(p, scale=16.0),
        "tiff": lambda p: E.read_float_tiff(p, unknown=0.0),
        "float": lambda p: read_depth(p),          # .npy metres / .pfm disparity
        "hypersim": lambda p: E.read_mm_depth(p, invalid=(0, 65504)),
        "relative16": _png_scaled(1.0, invalid=()),
        "png1": _png_scaled(1.0),
        "png2": _png_scaled(2.0),
        "png3": _png_scaled(3.0),
    }[kind]


def _dec_flow(kind):
    from . import encodings as E  # noqa: PLC0415
    from .io import read_flow  # noqa: PLC0415

    return {"flo": read_flow, "kitti": E.read_kitti_flow}[kind]


#: name prefix -> (source, target encoding, real capture). First match wins.
SOURCES = [
    ("depth", "tayyab_rgbdd_", "rgbdd", "mm", True),
    ("depth", "rgbdd_", "rgbdd", "mm", True),
    ("depth", "mb2006_", "middlebury2006", None, True),   # png2 (half size) / png3 (*_dct)
    ("depth", "mb2005_", "middlebury2005", "png1", True),
    ("depth", "mb2001_tsukuba", "middlebury2001", "tsukuba", True),
    ("depth", "mb2001_", "middlebury2001", "png3", True),
    ("depth", "mb2014_", "middlebury2014", "float", True),
    ("depth", "nyu_", "nyuv2", "float", True),
    ("depth", "lu_", "lu2014", "png1", True),
    ("depth", "open3d_sun", "sunrgbd", "sunrgbd", True),
    ("depth", "open3d_tum", "tum", "tum", True),
    ("depth", "open3d_redwood", "redwood", "mm", True),
    ("depth", "tayyab_diml", "diml", "mm", True),
    ("depth", "tayyab_diode", "diode", "mm", True),
    ("depth", "esanet", "esanet", "mm", True),
    ("depth", "kitti2015", "kitti", "kitti", True),
    ("depth", "scared", "scared", "tiff", True),
    ("depth", "sceneflow", "sceneflow", "float", False),
    ("depth", "tayyab_hypersim", "hypersim", "hypersim", False),
    ("depth", "tayyab_sintel", "sintel_depth", "relative16", False),
    ("flow", "flyingchairs_", "flyingchairs", "flo", False),
    ("flow", "kitti2012_", "kitti", "kitti", True),
    ("flow", "mbflow_", "middleburyflow", "flo", True),
    ("flow", "sintel_", "sintel", "flo", False),
    ("flow", "yosemite", "yosemite", "flo", False),
]


def source_of(kind, name):
    """``(source, encoding, real)`` of a pool entry (by name prefix)."""
    for k, prefix, src, enc, real in SOURCES:
        if k == kind and name.startswith(prefix):
            if src == "middlebury2006":
                enc = "png3" if name.endswith("_dct") else "png2"
            return src, enc, real
    raise ValueError(f"pool entry {kind}/{name} matches no known source prefix; add it to "
                     f"pacnd.data.pool.SOURCES")


def group_of(kind, name, scene_id):
    """The physical scene group a pair belongs to (what splits keep together)."""
    src, _, _ = source_of(kind, name)
    if src == "rgbdd":
        m = re.match(r"rgbdd_(\d{8})", name)
        return f"rgbdd/{m.group(1)}" if m else "rgbdd/tayyab"
    if src == "middlebury2006":          # families built from the same objects
        fam = re.sub(r"\d*(_dct)?$", "", name[len("mb2006_"):])
        return f"middlebury2006/{fam}"
    if src == "nyuv2":
        return "nyuv2/test1000-1002"     # neighbouring frames of one sequence
    if src == "redwood":
        return "redwood/open3d_seq"
    if src == "middleburyflow":
        fam = re.sub(r"\d*$", "", name[len("mbflow_"):])
        return f"middleburyflow/{fam}"
    if src == "sintel":                 # sintel_<scene>[_<n>]_f<frame>
        scene = re.sub(r"(X|_\d+)?_f\d+$", "", name[len("sintel_"):])
        return f"sintel/{scene}"
    return scene_id


#: Scene groups held out from training (evaluation only), per task. Written
#: down once and never tuned on: whole groups from several sources.
HELD_OUT = {
    "depth": ("middlebury2006/bowling", "middlebury2006/rocks", "middlebury2005/reindeer",
              "middlebury2014/motorcycle", "nyuv2/test1000-1002", "lu2014/RGBD_05",
              "lu2014/RGBD_06", "tum_rgbd/open3d_sample", "diode/sample", "rgbdd/20200517",
              "rgbdd/20200708", "rgbdd/20200719"),
    "flow": ("sintel/temple", "sintel/bandage", "middleburyflow/rubberwhale",
             "middleburyflow/urban", "flyingchairs/0000008"),
}

#: Sources left out of training and evaluation, and why.
EXCLUDED = {
    "kitti": "sparse LiDAR ground truth (15-30 % of pixels): a point-sampled low-res input "
             "of it is mostly holes, which is not the joint-upsampling problem",
}


# ------------------------------------------------------------------------- items
@dataclass(frozen=True)
class PoolItem:
    """One pair of the pool (see the module docstring)."""

    kind: str            # 'depth' or 'flow'
    name: str
    source: str
    group: str
    real: bool
    folder: Path
    encoding: str
    meta: dict = field(default_factory=dict, compare=False, repr=False)

    def load(self):
        """``(rgb uint8 (H, W, 3), target float32 (H, W) or (H, W, 2))``, NaN unknown."""
        from .io import read_image  # noqa: PLC0415

        if self.kind == "depth":
            rgb = read_image(_first(self.folder, "rgb"))
            t = _dec_depth(self.encoding)(_first(self.folder, "depth"))
        else:
            rgb = read_image(_first(self.folder, "frame1"))
            t = _dec_flow(self.encoding)(_first(self.folder, "flow"))
            inv = self.folder / "invalid.png"
            if inv.is_file():                  # Sintel: 255 = invalid
                from .encodings import read_mask  # noqa: PLC0415
                t = t.copy()
                t[read_mask(inv, keep=(255,))] = np.nan
        if rgb.shape[:2] != t.shape[:2]:
            raise ValueError(f"{self.folder}: RGB {rgb.shape[:2]} and target {t.shape[:2]} "
                             f"differ in size")
        t = np.asarray(t, np.float32)
        t[~np.isfinite(t)] = np.nan
        return rgb, t


def scan_pool(root, kind=None):
    """Every pair under ``root`` (``depth/`` and ``flow/`` folders), sorted by name.

    Parameters
    ----------
    root : str or path
        The pool folder.
    kind : {'depth', 'flow'}, optional
        Only that task's pairs.
    """
    root = Path(os.fspath(root))
    if not root.is_dir():
        raise FileNotFoundError(f"no pool folder at {os.fspath(root)!r}")
    kinds = ("depth", "flow") if kind is None else (kind,)
    if any(k not in ("depth", "flow") for k in kinds):
        raise ValueError(f"kind={kind!r}; choose 'depth' or 'flow'")
    items = []
    for k in kinds:
        d = root / k
        if not d.is_dir():
            continue
        for sub in sorted(d.iterdir()):
            mf = sub / "meta.json"
            if not mf.is_file():
                continue
            meta = json.loads(mf.read_text())
            src, enc, real = source_of(k, sub.name)
            scene = meta.get("scene_id", f"{src}/{sub.name}")
            items.append(PoolItem(k, sub.name, src, group_of(k, sub.name, scene),
                                  bool(meta.get("real_capture", real)), sub, enc, meta))
    if not items:
        raise FileNotFoundError(f"{os.fspath(root)!r} holds no pairs (expected "
                                f"depth/<name>/meta.json or flow/<name>/meta.json)")
    return items


def split(items, kind):
    """``(train, held_out)``: :data:`HELD_OUT` groups apart, :data:`EXCLUDED` sources dropped."""
    held = set(HELD_OUT[kind])
    train, test = [], []
    for it in items:
        if it.kind != kind or it.source in EXCLUDED:
            continue
        (test if it.group in held else train).append(it)
    missing = held - {it.group for it in test}
    if missing:
        raise ValueError(f"held-out groups {sorted(missing)} are not in the pool; the split "
                         f"is fixed (pacnd.data.pool.HELD_OUT)")
    return train, test
