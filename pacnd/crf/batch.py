"""Refine a folder of segmentations on a scheduler: :func:`refine_folder`.

The Python side of ``pacnd crf --batch``: every guide
``NAME.png|jpg|...|npy|nii.gz`` in the image folder is paired with
``NAME.npy``, ``NAME.png`` or ``NAME.nii.gz`` in the scores folder, and one
task per pair (:func:`pacnd.crf.files.refine_files`) writes ``OUT/NAME.png``
(image files) or ``OUT/NAME.npy`` / ``OUT/NAME.nii.gz`` (array guides, e.g.
volumes) atomically, plus the probabilities (``NAME.npy``, or
``NAME.probs.npy`` next to ``.npy`` labels); the tasks run on any scheduler of
:func:`pacnd.batch.run_batch` (threads, processes, a ``LocalCluster``, a
cluster's address).
"""

from __future__ import annotations

import os

from .files import IMAGE_EXTS, ext_of

__all__ = ["refine_folder", "crf_jobs", "stem_and_ext"]

_GUIDE_EXTS = IMAGE_EXTS + (".npy", ".nii", ".nii.gz")


def stem_and_ext(name):
    """``(stem, extension)`` of a file name (``.nii.gz`` counts as one extension)."""
    ext = ext_of(name)
    return name[:len(name) - len(ext)], ext


def _pairs(image_dir, scores_dir):
    for d, what in ((image_dir, "image"), (scores_dir, "scores")):
        if not os.path.isdir(d):
            raise NotADirectoryError(f"--batch: {what} folder {d!r} does not exist or is not a "
                                     f"folder")
    pairs, missing = [], []
    for name in sorted(os.listdir(image_dir)):
        stem, ext = stem_and_ext(name)
        if ext not in _GUIDE_EXTS or name.startswith("."):
            continue
        for cand in (stem + ".npy", stem + ".png", stem + ".nii.gz", stem + ".nii"):
            sp = os.path.join(scores_dir, cand)
            if os.path.isfile(sp) and os.path.abspath(sp) != os.path.abspath(
                    os.path.join(image_dir, name)):
                out_ext = {".npy": ".npy", ".nii": ".nii.gz", ".nii.gz": ".nii.gz"}.get(
                    ext, ".png")
                pairs.append((stem, os.path.join(image_dir, name), sp, out_ext))
                break
        else:
            missing.append(name)
    if not pairs:
        raise ValueError(f"--batch: no image in {image_dir!r} has scores ({{name}}.npy, "
                         f"{{name}}.png or {{name}}.nii.gz) in {scores_dir!r}")
    return pairs, missing


def crf_jobs(image_dir, scores_dir, out_dir, *, save_probabilities=False, **kwargs):
    """The :class:`pacnd.batch.Job` s of a folder pair, and the images without scores.

    Parameters
    ----------
    image_dir, scores_dir, out_dir : str or path
    save_probabilities : bool
        Also write the refined probabilities (``NAME.npy``; ``NAME.probs.npy``
        when the labels are ``NAME.npy``).
    **kwargs
        Passed to :func:`pacnd.crf.files.refine_files` (``kind``, CRF
        parameters, ``params``, ...).

    Returns
    -------
    jobs : list of Job
    missing : list of str
        Image files without scores.
    """
    from ..batch import Job  # noqa: PLC0415

    pairs, missing = _pairs(os.fspath(image_dir), os.fspath(scores_dir))
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(f"--batch: output {out_dir!r} exists and is not a folder")
    jobs = []
    for stem, ip, sp, out_ext in pairs:
        out = os.path.join(out_dir, stem + out_ext)
        out_npy = (os.path.join(out_dir, stem + (".probs.npy" if out_ext == ".npy" else ".npy"))
                   if save_probabilities else None)
        outs = (out,) + ((out_npy,) if out_npy else ())
        jobs.append(Job(stem, outs, (ip, sp, out, out_npy), dict(kwargs)))
    return jobs, missing


def refine_folder(image_dir, scores_dir, out_dir, *, scheduler="threads", resume=False,
                  keep_going=False, save_probabilities=False, progress=True, engine=None,
                  on_error=None, memory_limit=None, **kwargs):
    """Refine every (image, scores) pair of two folders into ``out_dir``.

    Parameters
    ----------
    image_dir, scores_dir, out_dir : str or path
        Folders (pairs matched by file stem).
    scheduler, resume, keep_going, progress, engine, on_error, memory_limit
        See :func:`pacnd.batch.run_batch`.
    save_probabilities : bool
        Also write the refined probabilities (see :func:`crf_jobs`).
    **kwargs
        Options of :func:`pacnd.crf.files.refine_files`: ``kind``,
        ``channel_axis``, ``gt_prob``, ``n_labels``, ``method``, ``params``,
        ``prob_tol``, ``spacing`` and the dense-CRF parameters (``sxy_bilateral``,
        ...).

    Returns
    -------
    report : pacnd.batch.BatchReport
    missing : list of str
        Images without scores (not processed).
    """
    from ..batch import run_batch  # noqa: PLC0415
    from .files import refine_files  # noqa: PLC0415

    jobs, missing = crf_jobs(image_dir, scores_dir, out_dir,
                             save_probabilities=save_probabilities, **kwargs)
    report = run_batch(refine_files, jobs, scheduler=scheduler, resume=resume,
                       keep_going=keep_going, progress=progress, desc="pacnd crf",
                       engine=engine, on_error=on_error, memory_limit=memory_limit)
    return report, missing
