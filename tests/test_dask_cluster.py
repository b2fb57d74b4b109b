"""Batches and out-of-core runs on real Dask clusters (worker processes).

One 2-worker ``LocalCluster`` serves the module (started once, shut down in
the fixture's teardown). The oracle of every batch is the serial run
(``--scheduler threads``): outputs must be byte-identical. Also: a corrupt
input fails alone with its name in the message; a worker killed mid-batch
(SIGKILL from inside a task) does not lose a file; ``--resume`` redoes only
missing outputs; ``local:2`` and ``processes:2`` start and stop their own
workers; a zarr image larger than a worker's memory limit is filtered chunk
by chunk within that limit.
"""

from __future__ import annotations

import filecmp
import logging
import os
import signal
import threading
import time

import dask
import dask.array as da
import numpy as np
import psutil
import pytest
from conftest import shared_dir
from distributed import Client, LocalCluster
from PIL import Image

from pacnd import filters
from pacnd.batch import parse_scheduler, run_batch
from pacnd.cli import main

DATA = str(shared_dir() / "data")          # $PACND_SHARED_DIR or <repo>/../shared
PDE = os.path.join(DATA, "pydensecrf_examples")
CONES = os.path.join(DATA, "middlebury2003", "cones")


@pytest.fixture(scope="module")
def cluster():
    with dask.config.set({"distributed.scheduler.allowed-failures": 3}):
        lc = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=":0", silence_logs=logging.ERROR)
    client = Client(lc, set_as_default=False)
    try:
        yield lc, client
    finally:
        client.close()
        lc.close()


@pytest.fixture(scope="module")
def crf_folders(tmp_path_factory):
    """Six 96x128 crops of the pydensecrf examples (annotation PNGs and probability .npy
    scores), one corrupt image; and the serial run's outputs."""
    d = tmp_path_factory.mktemp("crf")
    img, sc = d / "img", d / "sc"
    img.mkdir()
    sc.mkdir()
    rng = np.random.default_rng(0)
    for i in (1, 2, 3):
        im = Image.open(os.path.join(PDE, f"im{i}.png")).convert("RGB")
        an = Image.open(os.path.join(PDE, f"anno{i}.png")).convert("RGB")
        for k in range(2):
            box = (k * 60, 10, k * 60 + 128, 106)
            name = f"p{i}{k}"
            im.crop(box).save(img / f"{name}.png")
            if k == 0:
                an.crop(box).save(sc / f"{name}.png")
            else:
                P = rng.dirichlet(np.ones(3) * 0.7, size=(96, 128)).astype(np.float32)
                np.save(sc / f"{name}.npy", P)
    (img / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    an.crop((0, 0, 128, 96)).save(sc / "bad.png")
    serial = d / "serial"
    rc = main(["crf", "--batch", str(img), str(sc), "-o", str(serial), "-q", "--keep-going",
               "--save-probabilities", "--iterations", "3"])
    assert rc == 1 and len(os.listdir(serial)) == 12
    return img, sc, serial


def _same_outputs(a, b):
    names = sorted(os.listdir(a))
    assert names == sorted(os.listdir(b))
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)


def test_parse_scheduler():
    assert parse_scheduler("threads") == ("threads", None)
    assert parse_scheduler("processes:3") == ("processes", 3)
    assert parse_scheduler("local:2") == ("local", 2)
    assert parse_scheduler("tcp://10.0.0.1:8786") == ("address", "tcp://10.0.0.1:8786")
    for bad in ("local", "local:0", "cluster", "tcp:/x", "threads:2"):
        with pytest.raises(ValueError, match="scheduler"):
            parse_scheduler(bad)


def test_crf_batch_on_cluster_matches_serial_and_reports_bad_file(cluster, crf_folders,
                                                                  tmp_path, capsys):
    lc, _ = cluster
    img, sc, serial = crf_folders
    out = tmp_path / "out"
    rc = main(["crf", "--batch", str(img), str(sc), "-o", str(out), "--save-probabilities",
               "--iterations", "3", "--scheduler", lc.scheduler_address])
    err = capsys.readouterr().err
    assert rc == 1
    assert "pacnd crf: error: bad: cannot read image" in err and "bad.png" in err
    assert "refined 6/7 image(s)" in err and "1 failed: bad" in err and "7/7" in err
    _same_outputs(serial, out)


def test_worker_killed_mid_batch_loses_nothing(cluster, crf_folders, tmp_path):
    lc, client = cluster
    img, sc, serial = crf_folders
    from pacnd.crf.files import refine_files
    from pacnd.crf.batch import crf_jobs

    marker = str(tmp_path / "killed-pid")

    def flaky(image_path, *args, **kwargs):
        # the first attempt at p21 kills its own worker process (no cleanup, no reply)
        if image_path.endswith("p21.png") and not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return refine_files(image_path, *args, **kwargs)

    jobs, _ = crf_jobs(img, sc, tmp_path / "out", save_probabilities=True, iterations=3)
    jobs = [j for j in jobs if j.name != "bad"]
    report = run_batch(flaky, jobs, scheduler=lc.scheduler_address, progress=False)
    assert os.path.exists(marker)
    killed = int(open(marker).read())
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == "zombie"
    assert report.failed == {} and sorted(report.done) == sorted(j.name for j in jobs)
    ref = tmp_path / "ref"
    ref.mkdir()
    for name in os.listdir(serial):
        if not name.startswith("bad"):
            os.link(serial / name, ref / name)
    _same_outputs(ref, tmp_path / "out")
    client.wait_for_workers(2, timeout=60)                        # the nanny restarted it


def test_resume_on_processes_redoes_only_missing(crf_folders, tmp_path, capsys):
    img, sc, serial = crf_folders
    out = tmp_path / "out"
    out.mkdir()
    for name in os.listdir(serial):
        if not name.startswith(("p30", "bad")):
            os.link(serial / name, out / name)
    before = {n: os.stat(out / n).st_ino for n in os.listdir(out)}
    rc = main(["crf", "--batch", str(img), str(sc), "-o", str(out), "--save-probabilities",
               "--iterations", "3", "--scheduler", "processes:2", "--resume"])
    err = capsys.readouterr().err
    assert rc == 1 and "5 already done (--resume)" in err and "refined 1/2" in err
    assert {n: os.stat(out / n).st_ino for n in before} == before  # untouched
    _same_outputs(serial, out)


def test_upsample_batch_local_cluster_matches_serial(tmp_path, capsys):
    gdir, tdir = tmp_path / "guides", tmp_path / "targets"
    gdir.mkdir()
    tdir.mkdir()
    g = np.asarray(Image.open(os.path.join(CONES, "im2.png")).convert("RGB"))
    d = np.asarray(Image.open(os.path.join(CONES, "disp2.png")))
    for k in range(3):
        Image.fromarray(g[k * 40:k * 40 + 96, k * 50:k * 50 + 128]).save(gdir / f"c{k}.png")
        Image.fromarray(d[k * 40:k * 40 + 96, k * 50:k * 50 + 128]).save(tdir / f"c{k}.png")
    (tdir / "c3.png").write_bytes(b"junk")
    Image.fromarray(g[:96, :128]).save(gdir / "c3.png")
    args = ["upsample", "predict", "--batch", "--guide", str(gdir), "--target", str(tdir),
            "--target-scale", "4", "--factor", "8"]
    assert main(args + ["-o", str(tmp_path / "serial"), "-q", "--keep-going"]) == 1
    rc = main(args + ["-o", str(tmp_path / "l2"), "--scheduler", "local:2"])
    err = capsys.readouterr().err
    assert rc == 1 and "pacnd upsample: error: c3:" in err and "upsampled 3/4" in err
    _same_outputs(tmp_path / "serial", tmp_path / "l2")
    assert sorted(os.listdir(tmp_path / "l2")) == ["c0.npy", "c1.npy", "c2.npy"]


def _worker_peak(client, stop, peak):
    pids = list(client.run(os.getpid).values())
    procs = [psutil.Process(p) for p in pids]
    while not stop.is_set():
        for p in procs:
            try:
                peak[0] = max(peak[0], p.memory_info().rss)
            except psutil.Error:
                pass
        time.sleep(0.01)


@pytest.mark.slow  # the costliest new test: ~20 s on a quiet 2-core machine
def test_zarr_image_larger_than_worker_memory(tmp_path):
    """A 768 MiB zarr image filtered by one worker whose memory limit is 320 MiB (Dask's
    nanny kills a worker above 95% of it; the idle worker with pacnd loaded holds about
    210 MiB): each block reads its region from the file, so the worker holds a few
    regions, never the image."""
    from pacnd.dask import open_array, save_array

    H, W, C, c = 12288, 512, 16, 256
    tile = np.random.default_rng(0).random((c, c, C))
    x = da.map_blocks(lambda block_id=None: tile + 0.01 * (3 * block_id[0] + block_id[1]),
                      chunks=((c,) * (H // c), (c,) * (W // c), (C,)), dtype=np.float64,
                      meta=np.empty((0, 0, 0)))
    guide = x[..., 0] * 0.5 + x[..., 1] * 0.5
    src, gsrc, dst = (str(tmp_path / n) for n in ("big.zarr", "guide.zarr", "out.zarr"))
    save_array(x, src, compression="none")
    save_array(guide, gsrc, compression="none")
    limit = 320 * 2 ** 20
    assert x.nbytes > 2.3 * limit
    cfg = {"distributed.worker.memory.target": False, "distributed.worker.memory.spill": False,
           "distributed.worker.memory.pause": False,
           "distributed.worker.memory.terminate": 0.95}
    with dask.config.set(cfg):
        lc = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                          memory_limit=limit, dashboard_address=":0",
                          silence_logs=logging.ERROR)
    client = Client(lc, set_as_default=False)
    watchdog = threading.Timer(240, lc.close)        # a stuck run fails instead of hanging
    stop, peak = threading.Event(), [0]
    try:
        watchdog.start()
        th = threading.Thread(target=_worker_peak, args=(client, stop, peak))
        th.start()
        out = filters.joint_bilateral(open_array(src), open_array(gsrc), win_size=3,
                                      sigma_color=0.3, channel_axis=-1).astype(np.float32)
        try:
            with client.as_current(), dask.config.set(scheduler="dask.distributed"):
                save_array(out, dst, compression="none")
        finally:
            stop.set()
            th.join()
    finally:
        watchdog.cancel()
        client.close()
        lc.close()
    assert 0 < peak[0] < 0.95 * limit < x.nbytes / 2.3           # far below the image
    res, g = open_array(dst), guide
    rng = np.random.default_rng(0)
    for k in range(3):                                           # spot checks, with margins
        y, xx = int(rng.integers(0, H - 64)), int(rng.integers(0, W - 64))
        y, xx = (y, xx) if k else (c - 32, c - 32)               # one on a chunk corner
        y0, x0 = max(0, y - 8), max(0, xx - 8)
        ref = filters.joint_bilateral(x[y0:y + 72, x0:xx + 72].compute(),
                                      g[y0:y + 72, x0:xx + 72].compute(), win_size=3,
                                      sigma_color=0.3, channel_axis=-1)
        got = res[y:y + 64, xx:xx + 64].compute()
        np.testing.assert_array_equal(
            got, ref[y - y0:y - y0 + 64, xx - x0:xx - x0 + 64].astype(np.float32))
