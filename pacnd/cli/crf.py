"""Refine a segmentation or a labelled volume with a PAC-CRF (``pacnd crf``).

    pacnd crf IMAGE SCORES -o OUT.png [--save-probabilities OUT.npy]
    pacnd crf VOLUME.npy|.nii.gz SCORES -o OUT.npy|.nii.gz [--spacing SZ SY SX]
    pacnd crf --batch IMAGE_DIR SCORES_DIR -o OUT_DIR [--save-probabilities]

IMAGE is the guide: an image file (read as RGB), or a ``.npy`` array (an
image (H, W[, C]) or a volume (D, H, W[, C]), any number of channels), or a
NIfTI volume (``.nii``/``.nii.gz``, needs ``nibabel``: ``pip install
'pacnd[nifti]'``; its voxel size is the default ``--spacing``). SCORES is a
``.npy`` (or NIfTI) array of per-pixel probabilities (..., L) (or logits with
``--kind logits``; integer arrays are label maps), or an annotation image (PNG:
each colour one label, black = unknown; turned into probabilities with
``--gt-prob``). The refined labels are written by OUT's extension: an indexed
(palette) PNG for images — with the annotation's colours, else the PASCAL VOC
colour map — or ``.npy`` / ``.nii.gz`` (volumes; NIfTI output keeps a NIfTI
guide's affine); on request also the refined probabilities as ``.npy``.

The CRF parameters are those of the fully-connected CRF (pydensecrf):
Gaussian term ``--sxy-gaussian``/``--compat-gaussian``, bilateral term
``--sxy-bilateral``/``--srgb``/``--compat-bilateral`` (``--srgb`` takes one
std per guide channel, in the guide's units), ``--iterations``; ``--spacing``
makes ``--sxy-*`` physical units (e.g. mm); ``--params FILE`` uses learned
PAC-CRF parameters instead (``pacnd.crf.save_crf``). ``--method convcrf``
runs the ConvCRF baseline.

With ``--batch``, IMAGE_DIR and SCORES_DIR are folders: every guide
``NAME.png|jpg|...|npy|nii.gz`` is paired with ``NAME.npy``, ``NAME.png`` or
``NAME.nii.gz`` in SCORES_DIR and the results go to ``OUT_DIR/NAME.png``
(images from image files) or ``NAME.npy`` / ``NAME.nii.gz`` (array guides),
plus ``NAME.probs.npy`` with ``--save-probabilities``. ``--scheduler``
runs the pairs on Dask (``threads``, ``processes[:N]``, ``local:N``,
``tcp://HOST:PORT``; :mod:`pacnd.batch`) and ``--resume`` skips pairs whose
outputs exist.

Large images and volumes run chunk by chunk (Dask, exact halo;
:mod:`pacnd.cli.chunked`) when IMAGE or SCORES is a ``.zarr`` store, OUT is
``.zarr`` / ``.tif``, or ``--chunks PX`` is given.

Bad input — including empty, truncated or garbage files — ends with a
one-line error and exit status 1; outputs are written atomically (a
temporary file renamed into place), so a failed run leaves no partial file.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from ..crf.batch import stem_and_ext
from ..crf.files import refine_files

__all__ = ["configure_parser", "run_from_args"]

_KINDS = ("auto", "probabilities", "logits", "labels")


def configure_parser(p):
    p.add_argument("image", metavar="IMAGE",
                   help="guide: RGB image, .npy image/volume or NIfTI volume (a folder with "
                        "--batch)")
    p.add_argument("scores", metavar="SCORES",
                   help=".npy / NIfTI scores (..., L), label map or an annotation PNG (a folder "
                        "with --batch)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output labels: .png (images), .npy or .nii.gz (a folder with --batch)")
    p.add_argument("--save-probabilities", nargs="?", const=True, default=None,
                   metavar="NPY", help="also write the refined probabilities (..., L) float32 "
                                       "as .npy (default name: OUT with .probs.npy; with "
                                       "--batch a flag)")
    p.add_argument("--batch", action="store_true",
                   help="IMAGE, SCORES and OUT are folders; pair files by name")
    p.add_argument("--kind", choices=_KINDS, default="auto",
                   help="what SCORES holds (auto: .png -> labels, integer arrays -> labels, "
                        "float arrays -> probabilities)")
    p.add_argument("--channel-axis", type=int, default=-1,
                   help="label axis of .npy scores (default -1: (..., L); 0 for (L, ...))")
    p.add_argument("--gt-prob", type=float, default=0.7,
                   help="probability of an annotated label (labels/annotations; default 0.7)")
    p.add_argument("--n-labels", type=int, default=None,
                   help="number of labels of an integer label map (default: max + 1)")
    g = p.add_argument_group("fully-connected CRF parameters")
    g.add_argument("--sxy-gaussian", type=float, default=3.0)
    g.add_argument("--compat-gaussian", type=float, default=3.0)
    g.add_argument("--sxy-bilateral", type=float, default=80.0)
    g.add_argument("--srgb", type=float, nargs="+", default=[13.0],
                   help="guide std, one number or one per channel (default 13)")
    g.add_argument("--compat-bilateral", type=float, default=10.0)
    g.add_argument("--iterations", type=int, default=5)
    g.add_argument("--spacing", type=float, nargs="+", default=None, metavar="S",
                   help="pixel/voxel size per axis (default: a NIfTI guide's header, else 1); "
                        "--sxy-* are in its units")
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
    from ..batch import add_batch_options  # noqa: PLC0415
    add_batch_options(p)
    from .chunked import add_chunk_options  # noqa: PLC0415
    add_chunk_options(p)


# ------------------------------------------------------------------------------ running
def _crf_kwargs(args):
    srgb = args.srgb[0] if len(args.srgb) == 1 else tuple(args.srgb)
    return dict(sxy_gaussian=args.sxy_gaussian, compat_gaussian=args.compat_gaussian,
                sxy_bilateral=args.sxy_bilateral, srgb=srgb,
                compat_bilateral=args.compat_bilateral, iterations=args.iterations)


def run_from_args(args):
    kw = dict(kind=args.kind, channel_axis=args.channel_axis, gt_prob=args.gt_prob,
              n_labels=args.n_labels, method=args.method, prob_tol=args.prob_tol,
              spacing=None if args.spacing is None else tuple(args.spacing),
              **_crf_kwargs(args))
    params = None
    if args.params is not None:
        from ..crf.learn import load_crf  # noqa: PLC0415

        params = load_crf(args.params)
    if not args.batch:
        from .chunked import run_chunked_crf, wants_chunked  # noqa: PLC0415

        if wants_chunked(args, (args.image, args.scores), (args.output, args.save_probabilities
                                                           if args.save_probabilities is not True
                                                           else None)):
            return run_chunked_crf(args, kw, params)  # .zarr/.tif: chunk by chunk (Dask)
        out_npy = args.save_probabilities
        if out_npy is True:
            stem, ext = stem_and_ext(args.output)
            out_npy = stem + (".probs.npy" if ext == ".npy" else ".npy")
        t = time.perf_counter()
        labels = refine_files(args.image, args.scores, args.output, out_npy, params=params,
                              **kw)
        if not args.quiet:
            print(f"wrote {args.output} ({'x'.join(map(str, labels.shape[::-1]))}, "
                  f"{len(np.unique(labels))} labels used){' and ' + out_npy if out_npy else ''}"
                  f" in {time.perf_counter() - t:.2f} s", file=sys.stderr)
        return 0
    if args.save_probabilities not in (None, True):
        raise ValueError("with --batch, --save-probabilities is a flag (the .npy files go next "
                         "to the PNGs in the output folder)")
    from ..crf.batch import refine_folder  # noqa: PLC0415

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
    from . import main

    sys.exit(main(["crf"] + sys.argv[1:]))
