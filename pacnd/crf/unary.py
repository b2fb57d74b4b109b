"""Unaries from labels and annotations, and label images (palette PNGs).

The fully-connected CRF's standard example (pydensecrf) turns a rough colour
annotation into unaries like this, and pacnd follows it exactly:

- every distinct non-black colour is one label, numbered in the order of the
  colour code ``r + (g << 8) + (b << 16)`` (what ``np.unique`` gives);
  pure black ``(0, 0, 0)`` means "unknown";
- a known pixel gets probability ``gt_prob`` on its label and
  ``(1 - gt_prob) / (L - 1)`` on every other label; an unknown pixel gets the
  uniform ``1 / L``.
"""

from __future__ import annotations

import numbers
import os

import numpy as np

__all__ = ["labels_from_annotation", "unary_from_labels", "read_label_image",
           "write_label_image", "default_palette", "colors_to_palette"]


def _code(rgb):
    rgb = np.asarray(rgb)
    return (rgb[..., 0].astype(np.uint32) | (rgb[..., 1].astype(np.uint32) << 8)
            | (rgb[..., 2].astype(np.uint32) << 16))


def labels_from_annotation(annotation):
    """Labels from a colour annotation (black = unknown).

    Parameters
    ----------
    annotation : ndarray (H, W, 3) of uint8
        One colour per label; pure black marks unknown pixels.

    Returns
    -------
    labels : ndarray (H, W) of int64
        Label index per pixel, -1 where unknown.
    colors : ndarray (L, 3) of uint8
        The colour of each label (label i has ``colors[i]``).
    """
    a = np.asarray(annotation)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"annotation has shape {a.shape}; expected an (H, W, 3) RGB image "
                         f"(read palette PNGs with pacnd.crf.read_label_image or convert them "
                         f"to RGB first)")
    if a.dtype != np.uint8:
        if a.dtype.kind not in "iu" or a.min() < 0 or a.max() > 255:
            raise TypeError(f"annotation must be uint8 RGB colours, got dtype {a.dtype}; "
                            f"convert with annotation.astype(np.uint8)")
        a = a.astype(np.uint8)
    a = a[..., :3]
    codes, inverse = np.unique(_code(a), return_inverse=True)
    labels = inverse.reshape(a.shape[:2]).astype(np.int64)
    if codes[0] == 0:  # black: unknown
        labels -= 1
        codes = codes[1:]
    colors = np.stack([codes & 255, (codes >> 8) & 255, (codes >> 16) & 255], axis=1)
    return labels, colors.astype(np.uint8)


def unary_from_labels(labels, n_labels, gt_prob=0.7, *, unknown=-1, dtype=np.float32):
    """Probabilities (*S, L) from a label map (the "unary from labels" recipe).

    Parameters
    ----------
    labels : ndarray (H, W) or (D, H, W) of int
        Label per pixel; ``unknown`` (default -1, any negative value counts)
        where unknown.
    n_labels : int
        Number of labels L (>= 2).
    gt_prob : float
        Probability of the annotated label, in (0, 1); the others share
        ``1 - gt_prob`` evenly. Unknown pixels are uniform.

    Returns
    -------
    ndarray (*S, L)
    """
    lab = np.asarray(labels)
    if lab.ndim not in (2, 3):
        raise ValueError(f"labels has shape {lab.shape}; expected an (H, W) map or a "
                         f"(D, H, W) volume of label indices")
    if lab.dtype.kind not in "iu":
        raise TypeError(f"labels must hold integers, got dtype {lab.dtype}")
    if not isinstance(n_labels, numbers.Integral) or isinstance(n_labels, bool) or n_labels < 2:
        raise ValueError(f"n_labels={n_labels!r} must be an int >= 2")
    if not isinstance(gt_prob, numbers.Real) or not 0.0 < float(gt_prob) < 1.0:
        raise ValueError(f"gt_prob={gt_prob!r} must be a number strictly between 0 and 1 "
                         f"(pydensecrf's example uses 0.7)")
    lab = lab.astype(np.int64)
    unk = (lab < 0) | (lab == unknown)
    bad = ~unk & (lab >= n_labels)
    if bad.any():
        raise ValueError(f"labels holds {int(lab[bad].max())} but n_labels={n_labels}; labels "
                         f"must be in [0, {n_labels}) or {unknown} for unknown")
    gt_prob = float(gt_prob)
    P = np.full(lab.shape + (n_labels,), (1.0 - gt_prob) / (n_labels - 1), dtype=dtype)
    idx = np.nonzero(~unk)
    P[idx + (lab[idx],)] = gt_prob
    P[unk] = 1.0 / n_labels
    return P


# ------------------------------------------------------------------------ label images
def default_palette(n):
    """The PASCAL VOC colour map for ``n`` labels (ndarray (n, 3) uint8)."""
    out = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out[i] = (r, g, b)
    return out


def colors_to_palette(colors):
    """A 768-entry PIL palette list from (n, 3) colours (rest black)."""
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    if len(colors) > 256:
        raise ValueError(f"a palette PNG holds at most 256 labels, got {len(colors)}")
    pal = np.zeros((256, 3), dtype=np.uint8)
    pal[:len(colors)] = colors
    return pal.ravel().tolist()


def write_label_image(path, labels, colors=None):
    """Write labels (H, W) as an indexed (palette) PNG, atomically.

    Parameters
    ----------
    path : str or path
    labels : ndarray (H, W) of int in [0, 256)
    colors : ndarray (n, 3) of uint8, optional
        Colour of each label (default: the PASCAL VOC colour map).
    """
    from PIL import Image  # noqa: PLC0415

    from ..io.checkpoint import atomic_write  # noqa: PLC0415

    lab = np.asarray(labels)
    if lab.ndim != 2 or lab.dtype.kind not in "iu":
        raise ValueError(f"labels must be an (H, W) integer map, got shape {lab.shape} dtype "
                         f"{lab.dtype}")
    if lab.size and (lab.min() < 0 or lab.max() > 255):
        raise ValueError(f"labels range over [{lab.min()}, {lab.max()}]; a palette PNG holds "
                         f"labels 0..255")
    n = int(lab.max()) + 1 if lab.size else 1
    if colors is None:
        colors = default_palette(max(n, 1))
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    if len(colors) < n:
        raise ValueError(f"colors has {len(colors)} entries but the labels go up to {n - 1}")
    h, w = lab.shape
    im = Image.frombytes("P", (w, h), np.ascontiguousarray(lab, dtype=np.uint8).tobytes())
    im.putpalette(colors_to_palette(colors))
    atomic_write(path, lambda f: im.save(f, format="PNG"))
    set_default_mode(path)
    return os.fspath(path)


def set_default_mode(path):
    """Give a file written through a temporary file the permissions a plain ``open`` would
    (``0o666`` minus the umask; temporary files are created ``0o600``)."""
    mask = os.umask(0)
    os.umask(mask)
    try:
        os.chmod(path, 0o666 & ~mask)
    except OSError:  # pragma: no cover - e.g. a filesystem without modes
        pass


def read_label_image(path):
    """Read a label/annotation image as RGB colours (H, W, 3) uint8 (palette PNGs are
    expanded through their palette)."""
    from PIL import Image  # noqa: PLC0415

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
