"""Upsample a folder of targets on a scheduler: :func:`upsample_folder`, :func:`upsample_file`.

The Python side of ``pacnd upsample predict --batch``: every guide image
``NAME.png|jpg|...`` in the guide folder is paired with ``NAME.*`` (depth PNG,
``.npy``, ``.pfm``, ``.flo``) in the low-res (or ground-truth) folder; one
task per pair reads both, upsamples with the chosen model (loaded once per
worker process) and writes ``OUT/NAME.npy`` (or ``.png`` / ``.flo``)
atomically. Tasks run on any scheduler of :func:`pacnd.batch.run_batch`.
"""

from __future__ import annotations

import numbers
import os
import tempfile

import numpy as np

__all__ = ["upsample_file", "upsample_folder", "upsample_jobs", "TARGET_EXTS", "task_of",
           "read_target", "resolve_protocol", "check_factor", "model_for", "factor_of_sizes",
           "low_res_of_target"]

_GUIDE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".webp")
#: target files a guide is paired with, in order of preference
TARGET_EXTS = (".png", ".npy", ".pfm", ".flo")
_OUT_EXTS = (".npy", ".png", ".flo")
_MODELS = {}


def _model(task, factor, weights, model, protocol):
    """The model for a spec, built once per process (tasks on a worker share it)."""
    key = (task, factor, weights, model, protocol)
    if key not in _MODELS:
        _MODELS[key] = model_for(task, factor, weights, model, protocol)
    return _MODELS[key]


def upsample_file(guide_path, source_path, out_path, *, source="low", task=None, factor=None,
                  weights=None, model="pac", protocol=None, target_scale=1.0,
                  output_scale=None, ensemble=1):
    """Upsample one target read from files and write the result atomically.

    Parameters
    ----------
    guide_path : str
        High-res RGB guide image.
    source_path : str
        ``source='low'``: the low-res target; ``'target'``: the high-res
        ground truth, from which the low-res input is simulated (depth:
        nearest "center" subsampling; flow: antialiased bilinear).
    out_path : str
        ``.npy``, ``.png`` (depth: 16-bit, value * ``output_scale``; flow:
        colour-coded) or ``.flo``.
    task : {'depth', 'flow'}, optional
        Default: flow for ``.flo`` sources, else depth.
    factor : int, optional
        Default: from the sizes (``'low'``), else 8.
    weights, model, protocol
        As ``pacnd upsample predict`` (``--weights`` / ``--model`` /
        ``--protocol``: how the low-res input is simulated from a target, and
        which shipped weights match it; default the task's).
    target_scale, output_scale : float
        Depth PNG scales (stored value = scale * depth).
    ensemble : int
        Mirrored copies averaged (``--ensemble``; see
        :meth:`pacnd.models.JointUpsampler.upsample`).

    Returns
    -------
    ndarray
        The upsampled target.
    """
    from ..data import fill_unknown  # noqa: PLC0415
    from ..data.io import read_image, write_target  # noqa: PLC0415

    ext = os.path.splitext(out_path)[1].lower()
    if ext not in _OUT_EXTS:
        raise ValueError(f"output {out_path!r} must end in one of {_OUT_EXTS}")
    factor = check_factor(factor)
    task = task_of(source_path, task)
    protocol = resolve_protocol(protocol, task)
    guide = read_image(guide_path)
    H, W = guide.shape[:2]
    src = read_target(source_path, task, target_scale)
    if source == "target":
        factor = factor or 8
        guide, src, low = low_res_of_target(guide, src, factor, protocol, source_path)
    elif source == "low":
        low = src
        factor = factor_of_sizes(guide.shape, low.shape, factor)
    else:
        raise ValueError(f"source={source!r}; choose 'low' or 'target'")
    if not np.isfinite(low).all():
        low = fill_unknown(low)
    m = _model(task, factor, weights, model, protocol)
    out = m.upsample(low, guide, ensemble=ensemble)
    scale = output_scale if output_scale is not None else target_scale
    d = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(out_path) + ".", suffix=ext,
                               dir=d)
    os.close(fd)
    try:
        write_target(tmp, out, scale=scale)
        from ..crf.unary import set_default_mode  # noqa: PLC0415

        set_default_mode(tmp)
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out


def _pairs(guide_dir, source_dir):
    for dname, what in ((guide_dir, "guide"), (source_dir, "target")):
        if not os.path.isdir(dname):
            raise NotADirectoryError(f"--batch: {what} folder {dname!r} does not exist or is "
                                     f"not a folder")
    pairs, missing = [], []
    for name in sorted(os.listdir(guide_dir)):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in _GUIDE_EXTS or name.startswith("."):
            continue
        gp = os.path.join(guide_dir, name)
        for e in TARGET_EXTS:
            sp = os.path.join(source_dir, stem + e)
            if os.path.isfile(sp) and os.path.abspath(sp) != os.path.abspath(gp):
                pairs.append((stem, gp, sp))
                break
        else:
            missing.append(name)
    if not pairs:
        raise ValueError(f"--batch: no guide in {guide_dir!r} has a target ({{name}}"
                         f"{'|'.join(TARGET_EXTS)}) in {source_dir!r}")
    return pairs, missing


def upsample_jobs(guide_dir, source_dir, out_dir, *, source="low", out_format=None,
                  task=None, **kwargs):
    """The :class:`pacnd.batch.Job` s of a folder pair and the guides without a target."""
    from ..batch import Job  # noqa: PLC0415

    pairs, missing = _pairs(os.fspath(guide_dir), os.fspath(source_dir))
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(f"--batch: output {out_dir!r} exists and is not a folder")
    if out_format is not None and "." + out_format.lstrip(".") not in _OUT_EXTS:
        raise ValueError(f"format {out_format!r}: choose npy, png or flo")
    jobs = []
    for stem, gp, sp in pairs:
        t = task_of(sp, task)
        ext = ("." + out_format.lstrip(".")) if out_format else (
            ".flo" if t == "flow" else ".npy")
        op = os.path.join(out_dir, stem + ext)
        jobs.append(Job(stem, (op,), (gp, sp, op), dict(kwargs, source=source, task=t)))
    return jobs, missing


def upsample_folder(guide_dir, source_dir, out_dir, *, source="low", out_format=None,
                    scheduler="threads", resume=False, keep_going=False, progress=True,
                    engine=None, on_error=None, memory_limit=None, **kwargs):
    """Upsample every (guide, target) pair of two folders into ``out_dir``.

    Parameters
    ----------
    guide_dir, source_dir, out_dir : str or path
        Folders (pairs matched by stem).
    source : {'low', 'target'}
        What ``source_dir`` holds (see :func:`upsample_file`).
    out_format : {'npy', 'png', 'flo'}, optional
        Output type (default: ``.flo`` for flow, ``.npy`` for depth).
    scheduler, resume, keep_going, progress, engine, on_error, memory_limit
        See :func:`pacnd.batch.run_batch`.
    **kwargs
        ``task``, ``factor``, ``weights``, ``model``, ``protocol``,
        ``target_scale``, ``output_scale``, ``ensemble`` of :func:`upsample_file`.

    Returns
    -------
    report : pacnd.batch.BatchReport
    missing : list of str
        Guides without a target.
    """
    from ..batch import run_batch  # noqa: PLC0415

    jobs, missing = upsample_jobs(guide_dir, source_dir, out_dir, source=source,
                                  out_format=out_format, **kwargs)
    report = run_batch(upsample_file, jobs, scheduler=scheduler, resume=resume,
                       keep_going=keep_going, progress=progress, desc="pacnd upsample",
                       engine=engine, on_error=on_error, memory_limit=memory_limit)
    return report, missing


# --------------------------------------------------------- file-level helpers (``pacnd upsample``)
def task_of(path, task=None):
    """The task of a target file: ``task`` when given, else flow for ``.flo``, depth otherwise."""
    if task is not None:
        if task not in ("depth", "flow"):
            raise ValueError(f"task {task!r} is invalid: use 'depth' or 'flow'")
        return task
    return "flow" if str(path).lower().endswith(".flo") else "depth"


def read_target(path, task, scale=1.0):
    """Read a depth map (PNG / PFM / .npy; stored value = ``scale`` * depth) or a flow field."""
    from ..data.io import read_depth, read_flow  # noqa: PLC0415

    if task == "flow":
        return read_flow(path)
    return read_depth(path, scale=scale)


def resolve_protocol(protocol, task):
    """The low-res protocol (``None``: the task's default), checked against the task."""
    from .registry import default_protocol  # noqa: PLC0415

    p = protocol or default_protocol(task)
    if task == "flow" and p != "bilinear":
        raise ValueError(f"--protocol {p} is a depth protocol; flow low-res inputs are made by "
                         f"antialiased bilinear downsampling (--protocol bilinear)")
    if task == "depth" and p == "bilinear":
        raise ValueError("--protocol bilinear is the flow protocol; depth uses 'center' or "
                         "'bicubic'")
    return p


def check_factor(f):
    """``None`` (from the sizes), or an int >= 2."""
    if f is None:
        return None
    if isinstance(f, bool) or not isinstance(f, numbers.Integral):
        raise TypeError(f"--factor {f!r} is a {type(f).__name__}: use an int >= 2 (4, 8 or 16)")
    if f < 2:
        raise ValueError(f"--factor {f} is invalid: use an int >= 2 (4, 8 or 16)")
    return int(f)


def factor_of_sizes(guide_shape, low_shape, factor=None):
    """The upsampling factor of a (guide, low-res) pair: ``factor`` checked against the
    sizes, or (``None``) derived from them."""
    (H, W), (h, w) = guide_shape[:2], low_shape[:2]
    if factor is None:
        if H % h or W % w or H // h != W // w:
            raise ValueError(f"the guide ({W}x{H}) is not an integer multiple of the "
                             f"low-res input ({w}x{h}); pass --factor and matching files")
        factor = H // h
    if (H, W) != (h * factor, w * factor):
        raise ValueError(f"size mismatch: with --factor {factor} a {w}x{h} low-res input "
                         f"needs a {w * factor}x{h * factor} guide, got {W}x{H}")
    return factor


def low_res_of_target(guide, target, factor, protocol, target_name="the target"):
    """Simulate the low-res input from a high-res target of the guide's size.

    Both are centre-cropped to a multiple of ``factor`` first when they are not one.

    Returns
    -------
    guide, target, low : ndarray
        The (cropped) guide and target, and the low-res input made by ``protocol``.
    """
    from ..data import crop_to_multiple, make_low_res  # noqa: PLC0415

    H, W = guide.shape[:2]
    if target.shape[:2] != (H, W):
        raise ValueError(f"the guide is {W}x{H} but the target {target_name!r} is "
                         f"{target.shape[1]}x{target.shape[0]}; they must be the same size")
    if H % factor or W % factor:
        guide = crop_to_multiple(guide, factor)
        target = crop_to_multiple(target, factor)
    return guide, target, make_low_res(target, factor, protocol)


def model_for(task, factor, weights=None, model="pac", protocol=None):
    """The upsampler ``pacnd upsample --weights/--model`` names.

    ``weights`` (a saved upsampler) wins; else ``model`` ``'pac'``, ``'pac_lite'`` or
    ``'djf'`` loads the shipped weights for (task, factor, protocol), and any other name a
    training-free baseline (:func:`pacnd.models.baseline`).
    """
    from . import baseline, load_upsampler, pretrained  # noqa: PLC0415

    if weights:
        m = load_upsampler(weights)
        if m.factor != factor:
            raise ValueError(f"the weights {weights!r} upsample by {m.factor}, not by "
                             f"{factor}; pass --factor {m.factor} or other weights")
        return m
    if model == "pac":
        return pretrained(task, factor, protocol=protocol)
    if model in ("pac_lite", "djf"):
        return pretrained(task, factor, variant=model, protocol=protocol)
    return baseline(model, task, factor, protocol=protocol)
