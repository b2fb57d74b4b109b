"""No geometry may make the Numba engine touch memory outside a buffer.

Numba does not check bounds: an index past a row buffer silently corrupts the
heap and the process dies later, somewhere else. tests/fuzz_geometry.py draws
random problems with padding and dilation up to several times the image size
(every op, forward and every vjp, 1-3 spatial dims, and the PAC-CRF fast path)
and compares the Numba engine with the NumPy reference. It runs here in child
processes, started right after collection so that they run beside the suite
(tests/conftest.py), and the tests below run last and read their results:

* ``malloc_check`` — glibc's ``MALLOC_CHECK_=3``: heap corruption aborts the
  child at once (a signal, not a wrong number);
* ``boundscheck`` — ``NUMBA_BOUNDSCHECK=1`` with a cache directory of its own:
  every array index is checked and an out-of-bounds one raises IndexError
  (float64 only: the index arithmetic does not depend on the dtype).

The seed changes every run and is printed; replay a failure with
``PACND_FUZZ_SEED=<seed> pytest tests/test_memory_safety.py`` or
``python tests/fuzz_geometry.py --seed <seed>``. ``PACND_FUZZ_EXAMPLES`` sets
the number of examples (default 400).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import pacnd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TIMEOUT = 1500
SEED = int(os.environ.get("PACND_FUZZ_SEED", random.SystemRandom().randrange(2**31)))
EXAMPLES = int(os.environ.get("PACND_FUZZ_EXAMPLES", "400"))

def _fuzz(*args):
    return [sys.executable, str(HERE / "fuzz_geometry.py"), "--seed", str(SEED), "--examples",
            str(EXAMPLES), *args]


def _libasan():
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    if cxx is None:
        return None
    out = subprocess.run([cxx, "-print-file-name=libasan.so"], capture_output=True, text=True)
    p = out.stdout.strip()
    return p if out.returncode == 0 and os.path.isabs(p) and os.path.exists(p) else None


LIBASAN = _libasan()

RUNS = {
    "malloc_check": dict(env={"MALLOC_CHECK_": "3"}, cmd=_fuzz()),
    "boundscheck": dict(env={"MALLOC_CHECK_": "3", "NUMBA_BOUNDSCHECK": "1"},
                        cmd=_fuzz("--dtypes", "float64"), own_cache=True),
}
#: the CUDA C kernels (host emulation, tests/test_gpu_emulated.py) on the geometry
#: that reaches past the image, compiled with AddressSanitizer: any read or write
#: outside a NumPy buffer aborts the child with a report
ASAN_SELECTION = "far and not f32 and not sanitizer"
if LIBASAN is not None:
    RUNS["cuda_c_asan"] = dict(
        env={"LD_PRELOAD": LIBASAN, "PACND_EMU_SANITIZE": "1",
             "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1:allocator_may_return_null=1"},
        cmd=[sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-rfs",
             "-k", ASAN_SELECTION, str(HERE / "test_gpu_emulated.py")],
        junit=True)


class _Runs:
    def __init__(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="pacnd_fuzz_"))
        self.procs, self.logs = {}, {}
        for name, spec in RUNS.items():
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(
                [str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
            env.update(spec["env"])
            if spec.get("own_cache"):
                env["NUMBA_CACHE_DIR"] = str(self.tmp / "numba_cache")
            self.logs[name] = open(self.tmp / f"{name}.log", "w+")
            cmd = list(spec["cmd"])
            if spec.get("junit"):
                cmd.insert(3, f"--junitxml={self.tmp / (name + '.xml')}")
            self.procs[name] = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=self.logs[name], stderr=subprocess.STDOUT,
                text=True)
        self._results = {}

    def result(self, name):
        if name not in self._results:
            p = self.procs[name]
            try:
                rc = p.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                rc = f"killed after {TIMEOUT} s"
            self.logs[name].seek(0)
            self._results[name] = (rc, self.logs[name].read())
            self.logs[name].close()
        return self._results[name]

    def stop(self):
        for name, p in self.procs.items():
            if p.poll() is None:
                p.kill()
                p.wait()
            self.logs[name].close()


_STARTED = {}


def start_background():
    """Start the fuzz children (tests/conftest.py calls this after collection)."""
    if "runs" not in _STARTED:
        print(f"\nmemory-safety fuzz seed: {SEED} (replay: PACND_FUZZ_SEED={SEED})")
        _STARTED["runs"] = _Runs()


def stop_background():
    r = _STARTED.pop("runs", None)
    if r is not None:
        r.stop()


@pytest.fixture(scope="module")
def runs():
    start_background()
    return _STARTED["runs"]


def _describe(rc):
    if isinstance(rc, int) and rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"rc={rc}"


@pytest.mark.parametrize("name", [n for n in RUNS if not RUNS[n].get("junit")])
def test_fuzzed_geometry_stays_in_bounds(runs, name):
    rc, log = runs.result(name)
    replay = (f"replay: PACND_FUZZ_SEED={SEED} pytest tests/test_memory_safety.py, or "
              f"python tests/fuzz_geometry.py --seed {SEED} --examples {EXAMPLES}")
    assert rc == 0, f"fuzz child {name} failed ({_describe(rc)}); {replay}\n{log[-12000:]}"
    summary = json.loads(log.strip().splitlines()[-1])
    counts = summary["counts"]
    print(name, summary)
    # hypothesis may discard draws (empty outputs); most must have run
    assert counts["ops"] >= EXAMPLES // 2, counts
    assert counts["adapting_kernel"] >= EXAMPLES // 6, counts
    assert counts["crf"] >= EXAMPLES // 10, counts


@pytest.mark.skipif(LIBASAN is None, reason="no libasan for the C++ compiler (g++)")
def test_cuda_c_kernels_under_address_sanitizer(runs):
    """The emulated CUDA C kernels on far-reaching geometry: no access outside a buffer."""
    import xml.etree.ElementTree as ET  # noqa: PLC0415

    rc, log = runs.result("cuda_c_asan")
    assert rc == 0, f"CUDA C kernels under ASan failed ({_describe(rc)}):\n{log[-12000:]}"
    assert "AddressSanitizer" not in log, log[-12000:]
    root = ET.parse(runs.tmp / "cuda_c_asan.xml").getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    tests, skipped = (sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "skipped"))
    assert skipped == 0 and tests >= 16, (tests, skipped, log[-4000:])


# --------------------------------------------------------------------------- fixed cases
def test_issue_example_dilation_past_the_image():
    """The report: 'same' padding with a dilation larger than the image."""
    r = np.random.default_rng(0)
    x, g, w, b = (r.standard_normal(s).astype(np.float32)
                  for s in ((1, 3, 16, 16), (1, 2, 16, 16), (4, 3, 3, 3), (4,)))
    got = pacnd.pac_conv(x, g, w, b, padding=40, dilation=40, engine="numba")
    ref = pacnd.pac_conv(x, g, w, b, padding=40, dilation=40, engine="numpy")
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    grads = pacnd.pac_conv_vjp(np.ones_like(got), x, g, w, b, padding=40, dilation=40,
                               engine="numba")
    gref = pacnd.pac_conv_vjp(np.ones_like(ref), x, g, w, b, padding=40, dilation=40,
                              engine="numpy")
    for n in gref:
        np.testing.assert_allclose(grads[n], gref[n], rtol=1e-4, atol=1e-4, err_msg=n)


def test_jrange_stays_inside_the_segment():
    from pacnd.engines.cpu.indexing import jrange

    rng = np.random.default_rng(0)
    for _ in range(5000):
        base = int(rng.integers(-200, 200))
        step = int(rng.integers(1, 5))
        n = int(rng.integers(1, 30))
        ja = int(rng.integers(0, 20))
        jb = ja + int(rng.integers(0, 20))
        lo, hi = jrange(base, step, n, ja, jb)
        assert ja <= lo <= hi <= jb, (base, step, n, ja, jb, lo, hi)
        want = [j for j in range(ja, jb) if 0 <= base + j * step < n]
        assert list(range(lo, hi)) == want, (base, step, n, ja, jb)
