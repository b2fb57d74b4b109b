"""Refine a segmentation with a PAC-CRF (``pacnd crf``).

    pacnd crf IMAGE SCORES -o OUT.png [--save-probabilities OUT.npy]
    pacnd crf --batch IMAGE_DIR SCORES_DIR -o OUT_DIR [--save-probabilities]

SCORES is a ``.npy`` array of per-pixel probabilities (H, W, L) (or logits
with ``--kind logits``; integer arrays are label maps), or an annotation
image (PNG: each colour one label, black = unknown; turned into
probabilities with ``--gt-prob``). The refined labels are written as an
indexed (palette) PNG — with the annotation's colours, else the PASCAL VOC
colour map — and, on request, the refined probabilities as ``.npy``.

The CRF parameters are those of the fully-connected CRF (pydensecrf):
Gaussian term ``--sxy-gaussian``/``--compat-gaussian``, bilateral term
``--sxy-bilateral``/``--srgb``/``--compat-bilateral``, ``--iterations``;
``--params FILE`` uses learned PAC-CRF parameters instead
(``pacnd.crf.save_crf``). ``--method convcrf`` runs the ConvCRF baseline.

With ``--batch``, IMAGE_DIR and SCORES_DIR are folders: every image
``NAME.png|jpg|...`` is paired with ``NAME.npy`` or ``NAME.png`` in
SCORES_DIR and the results go to ``OUT_DIR/NAME.png`` (and ``NAME.npy``).

Bad input ends with a one-line error and exit status 1; outputs are
written atomically (a temporary file renamed into place), so a failed run
leaves no partial file.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

__all__ = ["configure_parser", "run_from_args", "refine_files"]

_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".webp")
_KINDS = ("auto", "probabilities", "logits", "labels")


def configure_parser(p):
    p.add_argument("image", metavar="IMAGE", help="RGB image (or a folder with --batch)")
    p.add_argument("scores", metavar="SCORES",
                   help=".npy scores (H, W, L) or an annotation PNG (or a folder with --batch)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output labels .png (a folder with --batch)")
    p.add_argument("--save-probabilities", nargs="?", const=True, default=None,
                   metavar="NPY", help="also write the refined probabilities (H, W, L) float32 "
                                       "as .npy (default name: OUT with .npy; with --batch a "
                                       "flag)")
    p.add_argument("--batch", action="store_true",
                   help="IMAGE, SCORES and OUT are folders; pair files by name")
    p.add_argument("--kind", choices=_KINDS, default="auto",
                   help="what SCORES holds (auto: .png -> labels, integer .npy -> labels, "
                        "float .npy -> probabilities)")
    p.add_argument("--channel-axis", type=int, default=-1,
                   help="label axis of .npy scores (default -1: (H, W, L); 0 for (L, H, W))")
    p.add_argument("--gt-prob", type=float, default=0.7,
                   help="probability of an annotated label (labels/annotations; default 0.7)")
    p.add_argument("--n-labels", type=int, default=None,
                   help="number of labels of an integer label map (default: max + 1)")
    g = p.add_argument_group("fully-connected CRF parameters")
    g.add_argument("--sxy-gaussian", type=float, default=3.0)
    g.add_argument("--compat-gaussian", type=float, default=3.0)
    g.add_argument("--sxy-bilateral", type=float, default=80.0)
    g.add_argument("--srgb", type=float, default=13.0)
    g.add_argument("--compat-bilateral", type=float, default=10.0)
    g.add_argument("--iterations", type=int, default=5)
    p.add_argument("--method", choices=("pac", "convcrf"), default="pac",
                   help="pac: dilated PAC-CRF approximating the dense CRF (default); "
                        "convcrf: the ConvCRF baseline")
    p.add_argument("--params", default=None, metavar="NPZ",
                   help="learned PAC-CRF parameters (pacnd.crf.save_crf) instead of the "
                        "dense-CRF mapping")
    p.add_argument("--prob-tol", type=float, default=1e-3,
                   help="tolerance of the probabilities' sum-to-one check (default 1e-3)")
    p.add_argument("--keep-going", action="store_true",
                   help="--batch: report a bad pair and continue (exit status 1 at the end)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    from .batch import add_batch_options  # noqa: PLC0415
    add_batch_options(p)
    from .dask.cli import add_chunk_options  # noqa: PLC0415
    add_chunk_options(p)


# ------------------------------------------------------------------------------ reading
def _read_image(path):
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path!r} does not exist") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise OSError(f"cannot read image {path!r}: {exc}") from None


def _read_scores(path, kind):
    ext = os.path.splitext(path)[1].lower()
    if not os.path.exists(path):
        raise FileNotFoundError(f"scores {path!r} do not exist")
    if ext == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise OSError(f"cannot read scores {path!r}: {exc}") from None
        if kind == "auto":
            kind = "labels" if arr.dtype.kind in "iub" else "probabilities"
        return arr, kind
    if ext in _IMAGE_EXTS:
        if kind not in ("auto", "labels"):
            raise ValueError(f"scores {path!r} is an image (an annotation); --kind {kind} "
                             f"needs a .npy array")
        from .crf.unary import read_label_image  # noqa: PLC0415

        try:
            return read_label_image(path), "labels"
        except OSError as exc:
            raise OSError(f"cannot read annotation {path!r}: {exc}") from None
    raise ValueError(f"scores {path!r}: unsupported file type {ext or '(none)'}; give a .npy "
                     f"array or an annotation PNG")


# ------------------------------------------------------------------------------ writing
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


def _write_outputs(out_png, labels, colors, out_npy=None, probs=None):
    """Write the .npy (if any) and the .png atomically; on failure remove what this call
    wrote, so a run leaves both outputs or neither."""
    from .crf.unary import set_default_mode, write_label_image  # noqa: PLC0415
    from .io.checkpoint import atomic_write  # noqa: PLC0415

    written = []
    try:
        if out_npy is not None:
            atomic_write(out_npy, lambda f: np.save(f, probs.astype(np.float32)))
            set_default_mode(out_npy)
            written.append(out_npy)
        write_label_image(out_png, labels, colors)
        written.append(out_png)
    except BaseException:
        for w in written:
            try:
                os.unlink(w)
            except OSError:
                pass
        raise


# ------------------------------------------------------------------------------ running
def _crf_kwargs(args):
    return dict(sxy_gaussian=args.sxy_gaussian, compat_gaussian=args.compat_gaussian,
                sxy_bilateral=args.sxy_bilateral, srgb=args.srgb,
                compat_bilateral=args.compat_bilateral, iterations=args.iterations)


def refine_files(image_path, scores_path, out_png, out_npy=None, *, kind="auto",
                 channel_axis=-1, gt_prob=0.7, n_labels=None, method="pac", params=None,
                 prob_tol=1e-3, **crf_kwargs):
    """Refine one image's scores read from files; write the label PNG (and the .npy).

    Returns the labels (H, W).
    """
    from .crf.refine import (_run, check_image, convcrf_mapping,  # noqa: PLC0415
                             dense_crf_mapping, prepare_unary)
    from .crf.model import PacCRF  # noqa: PLC0415
    from .crf.learn import load_crf  # noqa: PLC0415

    if not str(out_png).lower().endswith(".png"):
        raise ValueError(f"output {out_png!r} must end in .png (labels are written as an "
                         f"indexed PNG)")
    if out_npy is not None and not str(out_npy).lower().endswith(".npy"):
        raise ValueError(f"probabilities output {out_npy!r} must end in .npy")
    _check_writable(out_png)
    if out_npy is not None:
        _check_writable(out_npy)
    image = _read_image(image_path)
    scores, kind = _read_scores(scores_path, kind)
    img = check_image(image)
    # validate now (clear errors naming the files); refine re-uses the result
    try:
        U, colors = prepare_unary(scores, img.shape[:2], kind=kind, channel_axis=channel_axis,
                                  n_labels=n_labels, gt_prob=gt_prob, prob_tol=prob_tol)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{scores_path}: {exc}") from None
    L = U.shape[1]
    if params is not None:
        crf = params if isinstance(params, PacCRF) else load_crf(params)
    elif method == "convcrf":
        kw = {k: v for k, v in crf_kwargs.items() if k != "sxy_bilateral"}
        crf = convcrf_mapping(L, **kw)
    else:
        crf = dense_crf_mapping(img.shape[:2], L, **crf_kwargs)
    U_logits = U[0].transpose(1, 2, 0)
    res = _run(crf, img, U_logits, "logits", -1, None, gt_prob, 1e-5, out_npy is not None,
               None)
    labels, probs = res if out_npy is not None else (res, None)
    if colors is None and L > 256:
        raise ValueError(f"{L} labels do not fit a palette PNG (at most 256)")
    _write_outputs(out_png, labels, colors, out_npy, probs)
    return labels


def _pairs(image_dir, scores_dir):
    for d, what in ((image_dir, "image"), (scores_dir, "scores")):
        if not os.path.isdir(d):
            raise NotADirectoryError(f"--batch: {what} folder {d!r} does not exist or is not a "
                                     f"folder")
    pairs, missing = [], []
    for name in sorted(os.listdir(image_dir)):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in _IMAGE_EXTS or name.startswith("."):
            continue
        for cand in (stem + ".npy", stem + ".png"):
            sp = os.path.join(scores_dir, cand)
            if os.path.isfile(sp) and os.path.abspath(sp) != os.path.abspath(
                    os.path.join(image_dir, name)):
                pairs.append((stem, os.path.join(image_dir, name), sp))
                break
        else:
            missing.append(name)
    if not pairs:
        raise ValueError(f"--batch: no image in {image_dir!r} has scores ({{name}}.npy or "
                         f"{{name}}.png) in {scores_dir!r}")
    return pairs, missing


def run_from_args(args):
    kw = dict(kind=args.kind, channel_axis=args.channel_axis, gt_prob=args.gt_prob,
              n_labels=args.n_labels, method=args.method, prob_tol=args.prob_tol,
              **_crf_kwargs(args))
    params = None
    if args.params is not None:
        from .crf.learn import load_crf  # noqa: PLC0415

        params = load_crf(args.params)
    if not args.batch:
        from .dask.cli import run_chunked_crf, wants_chunked  # noqa: PLC0415

        if wants_chunked(args, (args.image, args.scores), (args.output, args.save_probabilities
                                                           if args.save_probabilities is not True
                                                           else None)):
            return run_chunked_crf(args, kw, params)  # .zarr/.tif: chunk by chunk (Dask)
        out_npy = args.save_probabilities
        if out_npy is True:
            out_npy = os.path.splitext(args.output)[0] + ".npy"
        t = time.perf_counter()
        labels = refine_files(args.image, args.scores, args.output, out_npy, params=params,
                              **kw)
        if not args.quiet:
            print(f"wrote {args.output} ({labels.shape[1]}x{labels.shape[0]}, "
                  f"{len(np.unique(labels))} labels used){' and ' + out_npy if out_npy else ''}"
                  f" in {time.perf_counter() - t:.2f} s", file=sys.stderr)
        return 0
    if args.save_probabilities not in (None, True):
        raise ValueError("with --batch, --save-probabilities is a flag (the .npy files go next "
                         "to the PNGs in the output folder)")
    from .crf.batch import refine_folder  # noqa: PLC0415

    report, missing = refine_folder(
        args.image, args.scores, args.output, scheduler=args.scheduler, resume=args.resume,
        keep_going=args.keep_going, save_probabilities=bool(args.save_probabilities),
        progress=not args.quiet, engine=getattr(args, "engine", None), params=params, **kw)
    if not args.quiet:
        _summary(report, missing)
    return 1 if report.failed else 0


def _summary(report, missing):
    n = len(report.done) + len(report.failed)
    extra = f"; {len(report.skipped)} already done (--resume)" if report.skipped else ""
    extra += f"; {len(report.failed)} failed: {', '.join(report.failed)}" if report.failed \
        else ""
    extra += f"; {len(missing)} image(s) without scores skipped" if missing else ""
    print(f"refined {len(report.done)}/{n} image(s) in {report.seconds:.2f} s "
          f"({report.rate:.2f} images/s, scheduler {report.scheduler}){extra}",
          file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    from .cli import main

    sys.exit(main(["crf"] + sys.argv[1:]))
