"""``pacnd crf``: end to end in a subprocess (palette PNG, optional .npy, batch mode with a
progress bar) and every error path (exit status 1, one-line message, no partial output)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import reference_dir

from pacnd.cli import main

PDE = reference_dir().parent / "data" / "pydensecrf_examples"
needs_pde = pytest.mark.skipif(not PDE.is_dir(), reason=f"sample data not found at {PDE}")


def _save_png(path, arr, mode=None):
    from PIL import Image

    Image.fromarray(arr).save(path)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pacnd", "crf", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture
def sample(tmp_path):
    """A small image and matching probabilities / logits / annotation on disk."""
    rng = np.random.default_rng(3)
    img = np.zeros((30, 40, 3), np.uint8)
    img[:, 20:] = (200, 40, 40)
    img = np.clip(img.astype(int) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
    truth = np.zeros((30, 40), int)
    truth[:, 20:] = 1
    P = np.full((30, 40, 3), 0.15, np.float32)
    P[np.arange(30)[:, None], np.arange(40)[None], truth] = 0.7
    flip = rng.random((30, 40)) < 0.15
    P[flip] = P[flip][:, [1, 0, 2]]
    _save_png(tmp_path / "img.png", img)
    np.save(tmp_path / "probs.npy", P)
    anno = np.zeros((30, 40, 3), np.uint8)
    anno[5:25, 2:15] = (0, 128, 0)
    anno[5:25, 25:38] = (128, 0, 0)
    _save_png(tmp_path / "anno.png", anno)
    return tmp_path, img, P, truth


def test_cli_end_to_end_probabilities(sample):
    d, img, P, truth = sample
    r = _cli(d / "img.png", d / "probs.npy", "-o", d / "out.png", "--save-probabilities")
    assert r.returncode == 0, r.stderr
    from PIL import Image

    with Image.open(d / "out.png") as im:
        assert im.mode == "P"
        labels = np.asarray(im)
    assert labels.shape == truth.shape
    assert (labels == truth).mean() > (P.argmax(2) == truth).mean()
    Q = np.load(d / "out.npy")
    assert Q.shape == P.shape and Q.dtype == np.float32
    np.testing.assert_array_equal(Q.argmax(axis=2), labels)
    assert "wrote" in r.stderr
    # no temporary files left behind
    assert sorted(os.listdir(d)) == ["anno.png", "img.png", "out.npy", "out.png", "probs.npy"]


def test_cli_annotation_keeps_colours(sample):
    d, img, P, truth = sample
    r = _cli(d / "img.png", d / "anno.png", "-o", d / "seg.png", "--gt-prob", "0.8", "-q")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    from PIL import Image

    with Image.open(d / "seg.png") as im:
        rgb = np.asarray(im.convert("RGB"))
    assert not os.path.exists(d / "seg.npy")
    left = rgb[:, :18].reshape(-1, 3)
    right = rgb[:, 22:].reshape(-1, 3)
    assert (left == (0, 128, 0)).all(axis=1).mean() > 0.9
    assert (right == (128, 0, 0)).all(axis=1).mean() > 0.9


@needs_pde
def test_cli_batch_mode(tmp_path):
    imgs, scores, out = tmp_path / "images", tmp_path / "scores", tmp_path / "out"
    imgs.mkdir()
    scores.mkdir()
    for i in (1, 2, 3):
        os.symlink(PDE / f"im{i}.png", imgs / f"im{i}.png")
        os.symlink(PDE / f"anno{i}.png", scores / f"im{i}.png")
    (imgs / "notes.txt").write_text("not an image")
    r = _cli("--batch", imgs, scores, "-o", out, "--save-probabilities")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == ["im1.npy", "im1.png", "im2.npy", "im2.png",
                                      "im3.npy", "im3.png"]
    assert "refined 3/3 image(s)" in r.stderr and "images/s" in r.stderr
    assert "3/3" in r.stderr  # the tqdm bar


def _png(path):
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


def test_cli_params_file_is_used(sample):
    """--params runs the CRF stored in the file: a mapping unlike the default one (weak
    colour term, 8 iterations, no Gaussian term) gives refine(..., params=that CRF)'s labels,
    which differ from the default run's (so an ignored --params fails this test)."""
    d, img, P, truth = sample
    from pacnd.crf import dense_crf_mapping, refine, save_crf

    other = dense_crf_mapping((30, 40), 3, compat_bilateral=1.0, compat_gaussian=0.0,
                              srgb=20.0, sxy_bilateral=10.0, iterations=8)
    save_crf(d / "crf.npz", other)
    assert main(["crf", str(d / "img.png"), str(d / "probs.npy"), "-o", str(d / "a.png"),
                 "-q", "--params", str(d / "crf.npz")]) == 0
    assert main(["crf", str(d / "img.png"), str(d / "probs.npy"), "-o", str(d / "b.png"),
                 "-q"]) == 0
    want = refine(img, P, params=other)
    default = refine(img, P)
    assert (want != default).sum() > 20  # the two CRFs really disagree on this input
    np.testing.assert_array_equal(_png(d / "a.png"), want)
    np.testing.assert_array_equal(_png(d / "b.png"), default)


def test_cli_convcrf_runs_the_baseline(sample):
    """--method convcrf gives convcrf_refine's labels (not the default mapping's)."""
    d, img, P, truth = sample
    from pacnd.crf import convcrf_refine, refine

    assert main(["crf", str(d / "img.png"), str(d / "probs.npy"), "-o", str(d / "c.png"),
                 "-q", "--method", "convcrf", "--compat-bilateral", "1"]) == 0
    want = convcrf_refine(img, P, compat_bilateral=1.0)
    assert (want != refine(img, P, compat_bilateral=1.0)).sum() > 3
    np.testing.assert_array_equal(_png(d / "c.png"), want)


# ------------------------------------------------------------------------------ errors
def _bad_inputs(d, P):
    np.save(d / "small.npy", P[:20])
    np.save(d / "neg.npy", np.where(np.arange(3) == 0, -0.2, 0.6).astype(np.float32)
            * np.ones((30, 40, 1), np.float32))
    np.save(d / "sum.npy", P * 2)
    Pn = P.copy()
    Pn[1, 1, 1] = np.nan
    np.save(d / "nan.npy", Pn)
    (d / "broken.png").write_bytes(b"this is not a PNG")
    (d / "afile").write_text("x")
    from pacnd.crf import dense_crf_mapping, save_crf

    save_crf(d / "crf5.npz", dense_crf_mapping((30, 40), 5))


ERRORS = [
    ("size", ["img.png", "small.npy", "-o", "o.png"], "spatial size 40x20"),
    ("label count", ["img.png", "probs.npy", "-o", "o.png", "--params", "crf5.npz"],
     "learned for 5"),
    ("n-labels", ["img.png", "probs.npy", "-o", "o.png", "--n-labels", "4"], "n_labels=4"),
    ("negative", ["img.png", "neg.npy", "-o", "o.png"], "must be >= 0"),
    ("sum", ["img.png", "sum.npy", "-o", "o.png"], "sum to 1"),
    ("nan", ["img.png", "nan.npy", "-o", "o.png"], "NaN"),
    ("unreadable image", ["broken.png", "probs.npy", "-o", "o.png"], "cannot read image"),
    ("missing image", ["nope.png", "probs.npy", "-o", "o.png"], "does not exist"),
    ("missing scores", ["img.png", "nope.npy", "-o", "o.png"], "do not exist"),
    ("scores type", ["img.png", "afile", "-o", "o.png"], "unsupported file type"),
    ("unwritable", ["img.png", "probs.npy", "-o", "afile/o.png"], "not a writable folder"),
    ("not png", ["img.png", "probs.npy", "-o", "o.jpg"], "must end in .png"),
    ("npy name", ["img.png", "probs.npy", "-o", "o.png", "--save-probabilities", "o.txt"],
     "must end in .npy"),
    ("bad param", ["img.png", "probs.npy", "-o", "o.png", "--srgb", "0"], "srgb=0"),
    ("bad iterations", ["img.png", "probs.npy", "-o", "o.png", "--iterations", "-2"],
     "iterations=-2"),
    ("bad params file", ["img.png", "probs.npy", "-o", "o.png", "--params", "probs.npy"],
     "not a PAC-CRF parameter file"),
    ("batch no dir", ["--batch", "img.png", "probs.npy", "-o", "out"], "not a folder"),
    ("annotation kind", ["img.png", "anno.png", "-o", "o.png", "--kind", "logits"],
     "needs a .npy"),
]


@pytest.mark.parametrize("what, args, match", ERRORS, ids=[e[0] for e in ERRORS])
def test_cli_errors(sample, capsys, monkeypatch, what, args, match):
    d, img, P, truth = sample
    _bad_inputs(d, P)
    before = set(os.listdir(d))
    monkeypatch.chdir(d)
    rc = main(["crf", *args])
    err = capsys.readouterr().err
    assert rc == 1, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("pacnd crf: error:") and match in lines[0], lines[0]
    assert set(os.listdir(d)) == before  # nothing written, no temporary file left


def _unreadable_files(d):
    """Files that cannot be read in every way a file can be broken."""
    npy = (d / "probs.npy").read_bytes()
    png = (d / "img.png").read_bytes()
    (d / "empty.npy").write_bytes(b"")
    (d / "header.npy").write_bytes(npy[:20])          # cut inside the header
    (d / "data.npy").write_bytes(npy[:300])           # cut inside the data
    (d / "garbage.npy").write_bytes(bytes(range(256)) * 3)
    (d / "zip.npy").write_bytes(b"PK\x03\x04" + bytes(60))  # an archive renamed
    np.save(d / "object.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (d / "empty.png").write_bytes(b"")
    (d / "cut.png").write_bytes(png[:len(png) // 2])
    (d / "params_empty.npz").write_bytes(b"")
    (d / "params_cut.npz").write_bytes(b"PK\x03\x04" + bytes(10))
    os.mkdir(d / "folder.npy")


UNREADABLE = [
    (["img.png", "empty.npy"], "cannot read scores"),
    (["img.png", "header.npy"], "cannot read scores"),
    (["img.png", "data.npy"], "cannot read scores"),
    (["img.png", "garbage.npy"], "cannot read scores"),
    (["img.png", "zip.npy"], "cannot read scores"),
    (["img.png", "object.npy"], "cannot read scores"),
    (["img.png", "folder.npy"], "is a folder"),
    (["empty.png", "probs.npy"], "cannot read image"),
    (["cut.png", "probs.npy"], "cannot read image"),
    (["img.png", "empty.png"], "cannot read annotation"),
    (["img.png", "cut.png"], "cannot read annotation"),
    (["img.png", "probs.npy", "--params", "params_empty.npz"], "not a PAC-CRF parameter file"),
    (["img.png", "probs.npy", "--params", "params_cut.npz"], "not a PAC-CRF parameter file"),
]


@pytest.mark.parametrize("args, match", UNREADABLE, ids=["-".join(a[:2] + a[3:])
                                                        for a, _ in UNREADABLE])
def test_cli_unreadable_inputs_give_one_line(sample, capsys, monkeypatch, args, match):
    """Empty, truncated, garbage, pickled or folder inputs: one error line, status 1."""
    d, img, P, truth = sample
    _unreadable_files(d)
    monkeypatch.chdir(d)
    rc = main(["crf", *args, "-o", "o.png"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 1 and len(lines) == 1, err
    assert lines[0].startswith("pacnd crf: error:") and match in lines[0], lines[0]
    assert not os.path.exists(d / "o.png")


def test_cli_error_in_subprocess_and_failed_write_leaves_nothing(sample):
    d, img, P, truth = sample
    _bad_inputs(d, P)
    r = _cli(d / "img.png", d / "sum.npy", "-o", d / "o.png")
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "sum to 1" in r.stderr
    assert not os.path.exists(d / "o.png")
    # the .npy goes first; if the PNG then fails the .npy is removed again
    os.mkdir(d / "o2.png")
    r = _cli(d / "img.png", d / "probs.npy", "-o", d / "o2.png", "--save-probabilities",
             d / "o2.npy")
    assert r.returncode == 1 and "is a folder" in r.stderr
    assert not os.path.exists(d / "o2.npy")


def test_cli_batch_keep_going(sample, tmp_path, capsys):
    d, img, P, truth = sample
    _bad_inputs(d, P)
    imgs, scores, out = tmp_path / "i", tmp_path / "s", tmp_path / "o"
    imgs.mkdir()
    scores.mkdir()
    for name, sc in (("a", "probs.npy"), ("b", "sum.npy"), ("c", "probs.npy")):
        os.symlink(d / "img.png", imgs / f"{name}.png")
        os.symlink(d / sc, scores / f"{name}.npy")
    rc = main(["crf", "--batch", str(imgs), str(scores), "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "b: " in err and "sum to 1" in err
    assert sorted(os.listdir(out)) == ["a.png"]          # stopped at b
    rc = main(["crf", "--batch", str(imgs), str(scores), "-o", str(out), "-q",
               "--keep-going"])
    assert rc == 1
    assert sorted(os.listdir(out)) == ["a.png", "c.png"]


# ------------------------------------------------------------------------------ volumes
@pytest.fixture
def volume(tmp_path):
    from test_crf_volume import synthetic_volume

    vol, P, gt = synthetic_volume((10, 14, 16), seed=2)
    np.save(tmp_path / "vol.npy", vol)
    np.save(tmp_path / "probs.npy", P)
    return tmp_path, vol, P, gt


def test_cli_volume_npy(volume):
    d, vol, P, gt = volume
    from pacnd.crf import refine

    kw = ["--sxy-bilateral", "6", "--srgb", "30", "--sxy-gaussian", "1.5", "--spacing", "2",
          "1", "1"]
    r = _cli(d / "vol.npy", d / "probs.npy", "-o", d / "seg.npy", "--save-probabilities", *kw)
    assert r.returncode == 0, r.stderr
    want, Q = refine(vol, P, sxy_bilateral=6.0, srgb=30.0, sxy_gaussian=1.5,
                     spacing=(2.0, 1.0, 1.0), return_probabilities=True)
    got = np.load(d / "seg.npy")
    assert got.dtype == np.uint8 and got.shape == gt.shape
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(np.load(d / "seg.probs.npy"), Q, atol=1e-6)
    assert "wrote" in r.stderr and "16x14x10" in r.stderr
    # a volume cannot go to a PNG
    rc = main(["crf", str(d / "vol.npy"), str(d / "probs.npy"), "-o", str(d / "seg.png"),
               "-q"])
    assert rc == 1 and not os.path.exists(d / "seg.png")


def test_cli_volume_nifti(volume, capsys):
    """NIfTI guide (voxel size from the header) and scores -> NIfTI labels with the guide's
    affine; the result equals refine() with the header's spacing."""
    nib = pytest.importorskip("nibabel")
    d, vol, P, gt = volume
    from pacnd.crf import refine

    affine = np.diag([2.5, 0.8, 0.8, 1.0])
    affine[:3, 3] = (10, -20, 5)
    nib.save(nib.Nifti1Image(vol, affine), d / "vol.nii.gz")
    nib.save(nib.Nifti1Image(P, affine), d / "probs.nii.gz")
    kw = ["--sxy-bilateral", "6", "--srgb", "30", "--sxy-gaussian", "1.5", "-q"]
    assert main(["crf", str(d / "vol.nii.gz"), str(d / "probs.nii.gz"), "-o",
                 str(d / "seg.nii.gz"), *kw]) == 0
    out = nib.load(d / "seg.nii.gz")
    np.testing.assert_allclose(out.affine, affine)
    want = refine(vol, P, sxy_bilateral=6.0, srgb=30.0, sxy_gaussian=1.5,
                  spacing=(2.5, 0.8, 0.8))
    np.testing.assert_array_equal(np.asarray(out.dataobj), want)
    iso = refine(vol, P, sxy_bilateral=6.0, srgb=30.0, sxy_gaussian=1.5)
    assert (iso != want).any()  # the header's spacing was used
    # broken NIfTI files: one line, status 1
    (d / "cut.nii.gz").write_bytes((d / "vol.nii.gz").read_bytes()[:200])
    (d / "empty.nii").write_bytes(b"")
    for bad in ("cut.nii.gz", "empty.nii"):
        rc = main(["crf", str(d / bad), str(d / "probs.nii.gz"), "-o", str(d / "o.nii.gz"),
                   "-q"])
        err = capsys.readouterr().err.strip()
        assert rc == 1 and err.count("\n") == 0 and "cannot read image" in err, err


def test_cli_volume_chunked_and_batch_resume(volume, capsys):
    """The two features together: a volume refined chunk by chunk (Dask, exact halo) into a
    .zarr equals refine() on the whole volume; a folder of volumes on a scheduler with
    --resume writes NAME.npy / NAME.probs.npy and redoes only what is missing."""
    pytest.importorskip("dask")
    zarr = pytest.importorskip("zarr")
    d, vol, P, gt = volume
    from pacnd.crf import refine

    kw = ["--sxy-bilateral", "6", "--srgb", "30", "--sxy-gaussian", "1.5", "--iterations", "2"]
    sp = ["--spacing", "2", "1", "1"]
    assert main(["crf", str(d / "vol.npy"), str(d / "probs.npy"), "-o", str(d / "seg.zarr"),
                 "--chunks", "6", "-q", *kw, *sp]) == 0
    want = refine(vol, P, sxy_bilateral=6.0, srgb=30.0, sxy_gaussian=1.5, iterations=2,
                  spacing=(2.0, 1.0, 1.0))
    np.testing.assert_array_equal(np.asarray(zarr.open_array(str(d / "seg.zarr"), mode="r")),
                                  want)
    imgs, scores, out = d / "imgs", d / "scores", d / "out"
    imgs.mkdir()
    scores.mkdir()
    for name, k in (("a", 0), ("b", 1)):
        np.save(imgs / f"{name}.npy", vol + 10 * k)
        np.save(scores / f"{name}.npy", P)
    args = ["crf", "--batch", str(imgs), str(scores), "-o", str(out), "--save-probabilities",
            "--scheduler", "threads", *kw]
    assert main(args + ["-q"]) == 0
    assert sorted(os.listdir(out)) == ["a.npy", "a.probs.npy", "b.npy", "b.probs.npy"]
    np.testing.assert_array_equal(np.load(out / "a.npy"),
                                  refine(vol, P, sxy_bilateral=6.0, srgb=30.0,
                                         sxy_gaussian=1.5, iterations=2))
    os.remove(out / "b.probs.npy")
    capsys.readouterr()
    assert main(args + ["--resume"]) == 0
    err = capsys.readouterr().err
    assert "1 already done (--resume)" in err and "refined 1/1" in err
    assert sorted(os.listdir(out)) == ["a.npy", "a.probs.npy", "b.npy", "b.probs.npy"]
