"""Reading guides and scores, writing labels: the files ``pacnd crf`` works with.

* guides: images (PNG, JPEG, ... read as RGB), ``.npy`` arrays (an image
  (H, W[, C]) or a volume (D, H, W[, C])) and NIfTI volumes ``.nii`` /
  ``.nii.gz`` (through the optional ``nibabel``: ``pip install pacnd[nifti]``;
  the voxel size in the header becomes the default ``spacing``);
* scores: ``.npy`` (probabilities, logits or integer label maps), annotation
  images (2-D, colours = labels), NIfTI (label volumes or 4-D probabilities);
* labels: an indexed PNG (images), ``.npy`` or NIfTI (same affine as a NIfTI
  guide), written atomically.

Every way a file can be unreadable — missing, a folder, empty, truncated,
garbage, pickled data — is an ``OSError`` that names the file.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["IMAGE_EXTS", "VOLUME_EXTS", "ext_of", "load_npy", "read_guide", "read_scores",
           "write_labels", "write_npy", "refine_files"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".webp")
VOLUME_EXTS = (".npy", ".nii", ".nii.gz")
LABEL_EXTS = (".png", ".npy", ".nii", ".nii.gz")


def ext_of(path):
    """The file extension, lower case (``.nii.gz`` counts as one)."""
    p = str(path).lower()
    return ".nii.gz" if p.endswith(".nii.gz") else os.path.splitext(p)[1]


def _exists(path, what):
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what} {path!r} is a folder, not a file")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} {path!r} does not exist")


def _unreadable(path, what, exc, kind):
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return OSError(f"cannot read {what} {path!r}: not a readable {kind} "
                   f"({type(exc).__name__}: {msg})")


def load_npy(path, what):
    """``np.load`` of a ``.npy`` file (no pickles) whose every failure — missing, empty,
    truncated or garbage file, pickled object data — is an ``OSError`` naming the file."""
    _exists(path, what)
    try:
        if os.path.getsize(path) == 0:
            raise EOFError("the file is empty")
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - every way a file can be unreadable
        raise _unreadable(path, what, exc, ".npy array") from None
    if not isinstance(arr, np.ndarray):
        raise OSError(f"cannot read {what} {path!r}: it holds a {type(arr).__name__} "
                      f"(an .npz archive?), not one .npy array")
    return arr


def _nibabel():
    try:
        import nibabel  # noqa: PLC0415
    except ImportError:
        raise OSError("reading NIfTI files needs nibabel: pip install nibabel (or "
                      "pip install 'pacnd[nifti]')") from None
    return nibabel


def load_nifti(path, what):
    """(array, image object) of a NIfTI file; failures are OSErrors naming the file."""
    _exists(path, what)
    nib = _nibabel()
    try:
        if os.path.getsize(path) == 0:
            raise EOFError("the file is empty")
        im = nib.load(path)
        arr = np.asarray(im.dataobj)
    except Exception as exc:  # noqa: BLE001 - truncated gzip, bad header, ...
        raise _unreadable(path, what, exc, "NIfTI file") from None
    return arr, im


def read_guide(path):
    """(guide array, info) of an image, ``.npy`` or NIfTI file.

    ``info`` is a dict: ``'nifti'`` (the image object, for its affine) and
    ``'spacing'`` (the header's voxel size) for NIfTI guides.
    """
    ext = ext_of(path)
    if ext == ".npy":
        return load_npy(path, "image"), {}
    if ext in (".nii", ".nii.gz"):
        arr, im = load_nifti(path, "image")
        zooms = tuple(float(z) for z in im.header.get_zooms()[:min(arr.ndim, 3)])
        return arr, {"nifti": im, "spacing": zooms}
    _exists(path, "image")
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")), {}
    except (UnidentifiedImageError, OSError) as exc:
        raise OSError(f"cannot read image {path!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises SyntaxError, DecompressionBomb...
        raise OSError(f"cannot read image {path!r}: {type(exc).__name__}: {exc}") from None


def read_scores(path, kind):
    """(scores array, kind) of a ``.npy``, NIfTI or annotation-image file; ``kind='auto'``
    becomes 'labels' for integer arrays and images, 'probabilities' for float arrays."""
    ext = ext_of(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"scores {path!r} do not exist")
    if ext in (".npy", ".nii", ".nii.gz"):
        arr = load_npy(path, "scores") if ext == ".npy" else load_nifti(path, "scores")[0]
        if kind == "auto":
            kind = "labels" if arr.dtype.kind in "iub" else "probabilities"
        return arr, kind
    if ext in IMAGE_EXTS:
        if kind not in ("auto", "labels"):
            raise ValueError(f"scores {path!r} is an image (an annotation); --kind {kind} "
                             f"needs a .npy array")
        _exists(path, "annotation")
        from .unary import read_label_image  # noqa: PLC0415

        try:
            return read_label_image(path), "labels"
        except Exception as exc:  # noqa: BLE001 - PIL's many ways to fail on a bad file
            raise OSError(f"cannot read annotation {path!r}: {exc}") from None
    raise ValueError(f"scores {path!r}: unsupported file type {ext or '(none)'}; give a .npy "
                     f"array, a NIfTI volume or an annotation PNG")


def _label_dtype(n):
    return np.uint8 if n <= 256 else np.uint16 if n <= 65536 else np.int32


def write_npy(path, arr):
    """``np.save`` atomically, with a plain file's permissions."""
    from ..io.checkpoint import atomic_write  # noqa: PLC0415
    from .unary import set_default_mode  # noqa: PLC0415

    atomic_write(path, lambda f: np.save(f, arr))
    set_default_mode(path)


def write_labels(path, labels, n_labels, colors=None, nifti=None):
    """Write labels by the extension of ``path``: ``.png`` (2-D, indexed, ``colors`` or the
    VOC map), ``.npy`` (smallest unsigned dtype that holds ``n_labels``) or ``.nii[.gz]``
    (with ``nifti``'s affine and header when given)."""
    ext = ext_of(path)
    lab = np.asarray(labels)
    if ext == ".png":
        if lab.ndim != 2:
            raise ValueError(f"output {path!r}: a PNG holds 2-D labels but these are "
                             f"{lab.ndim}-D {lab.shape}; write .npy or .nii.gz for volumes")
        if colors is None and n_labels > 256:
            raise ValueError(f"{n_labels} labels do not fit a palette PNG (at most 256); write "
                             f".npy instead")
        from .unary import write_label_image  # noqa: PLC0415

        return write_label_image(path, lab, colors)
    dt = _label_dtype(n_labels)
    if ext == ".npy":
        write_npy(path, lab.astype(dt))
        return path
    nib = _nibabel()
    from ..io.checkpoint import atomic_write  # noqa: PLC0415
    from .unary import set_default_mode  # noqa: PLC0415

    if nifti is not None:
        img = nib.Nifti1Image(lab.astype(dt), nifti.affine, nifti.header)
        img.set_data_dtype(dt)
    else:
        img = nib.Nifti1Image(lab.astype(dt), np.eye(4))
    data = img.to_bytes()
    if ext == ".nii.gz":
        import gzip  # noqa: PLC0415

        data = gzip.compress(data, compresslevel=6)
    atomic_write(path, lambda f: f.write(data))
    set_default_mode(path)
    return path


def _check_writable(path):
    directory = os.path.dirname(os.path.abspath(path)) or "."
    probe = directory
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {path!r}: {probe!r} is not a writable folder")
    if os.path.isdir(path):
        raise IsADirectoryError(f"output {path!r} is a folder; give a file name ending in .png")


def _write_outputs(out, labels, n_labels, colors, nifti, out_npy=None, probs=None):
    """Write the .npy (if any) and the labels atomically; on failure remove what this call
    wrote, so a run leaves both outputs or neither."""
    written = []
    try:
        if out_npy is not None:
            write_npy(out_npy, probs.astype(np.float32))
            written.append(out_npy)
        write_labels(out, labels, n_labels, colors, nifti)
        written.append(out)
    except BaseException:
        for w in written:
            try:
                os.unlink(w)
            except OSError:
                pass
        raise


def refine_files(image_path, scores_path, out_path, out_npy=None, *, kind="auto",
                 channel_axis=-1, gt_prob=0.7, n_labels=None, method="pac", params=None,
                 prob_tol=1e-3, spacing=None, **crf_kwargs):
    """Refine one image's (or volume's) scores read from files; write the labels (and the
    probabilities .npy) atomically: both outputs or neither.

    Parameters
    ----------
    image_path : str
        The guide: an image file, a ``.npy`` image or volume, or NIfTI.
    scores_path : str
        ``.npy`` / NIfTI probabilities, logits or labels, or an annotation PNG.
    out_path : str
        The labels: ``.png`` (2-D), ``.npy`` or ``.nii.gz``.
    out_npy : str, optional
        Where to write the refined probabilities (``.npy``).
    kind, channel_axis, gt_prob, n_labels, prob_tol
        How the scores are read (:func:`pacnd.crf.refine`).
    method : {'pac', 'convcrf'}
        The fully-connected CRF's PAC-CRF mapping, or the ConvCRF baseline.
    params : str or PacCRF, optional
        Learned PAC-CRF parameters (:func:`pacnd.crf.save_crf`) used instead.
    spacing : tuple of float, optional
        Physical pixel size (default: a NIfTI guide's voxel size).
    **crf_kwargs
        The fully-connected CRF's parameters (``sxy_gaussian``, ``srgb``, ...).

    Returns
    -------
    ndarray
        The labels, (H, W) or (D, H, W).
    """
    from .learn import load_crf  # noqa: PLC0415
    from .model import PacCRF  # noqa: PLC0415
    from .refine import (convcrf_mapping, dense_crf_mapping,  # noqa: PLC0415
                             prepare_inputs, run_crf)

    if ext_of(out_path) not in LABEL_EXTS:
        raise ValueError(f"output {out_path!r} must end in .png (labels are written as an "
                         f"indexed PNG) or, for volumes, .npy or .nii.gz")
    if out_npy is not None and ext_of(out_npy) != ".npy":
        raise ValueError(f"probabilities output {out_npy!r} must end in .npy")
    _check_writable(out_path)
    if out_npy is not None:
        _check_writable(out_npy)
    image, info = read_guide(image_path)
    scores, kind = read_scores(scores_path, kind)
    # validate now (clear errors naming the files)
    try:
        img, U, colors = prepare_inputs(image, scores, kind, channel_axis, n_labels, gt_prob,
                                        1e-5, prob_tol)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{scores_path}: {exc}") from None
    size = img.shape[:-1]
    if ext_of(out_path) == ".png" and len(size) != 2:
        raise ValueError(f"output {out_path!r}: a PNG holds 2-D labels but the scores are a "
                         f"volume {size}; write .npy or .nii.gz")
    if spacing is None:
        spacing = info.get("spacing")
        if spacing is not None and len(spacing) != len(size):
            spacing = None
    L = U.shape[1]
    if params is not None:
        crf = params if isinstance(params, PacCRF) else load_crf(params)
    elif method == "convcrf":
        kw = {k: v for k, v in crf_kwargs.items() if k != "sxy_bilateral"}
        crf = convcrf_mapping(L, ndim=len(size), **kw)
    else:
        crf = dense_crf_mapping(size, L, spacing=spacing, n_channels=img.shape[-1],
                                **crf_kwargs)
    res = run_crf(crf, img, U, out_npy is not None, None)
    labels, probs = res if out_npy is not None else (res, None)
    _write_outputs(out_path, labels, L, colors, info.get("nifti"), out_npy, probs)
    return labels
