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
           "write_labels", "write_npy"]

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
