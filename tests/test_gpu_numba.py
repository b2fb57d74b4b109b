"""The Numba CUDA engine without a GPU: its kernels under Numba's CUDA simulator,
and every kernel compiled to PTX for sm_80 and sm_90.

Both need a process of their own (the simulator must be switched on before
Numba is imported; the PTX compile is slow). They start right after collection
(tests/conftest.py calls :func:`start_background`; the simulator suite as two
processes, see :data:`SIM_RUNS`) and run beside the rest of the suite; the
tests below run last and read their results:

* ``tests/gpu_sim/sim_numba_kernels.py`` — pytest, ``NUMBA_ENABLE_CUDASIM=1``:
  every option and the authors' reference cases against the NumPy reference;
* ``tests/gpu_sim/ptx_compile.py`` — each kernel compiled to PTX as ``compile_ptx`` does,
  with its launch argument types (float32, float64), sm_80 and sm_90.

Needs the ``numba-cuda`` package (``numba-cuda[cu13]``: NVVM for the PTX);
skipped with the reason when it is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import reference_dir

HERE = Path(__file__).resolve().parent
SIM_DIR = HERE / "gpu_sim"
REPO = HERE.parent
TIMEOUT = 1200


def _numba_cuda_reason():
    try:
        import numba.cuda  # noqa: F401, PLC0415
    except Exception as exc:
        return f"numba.cuda does not import ({exc}); pip install 'numba-cuda[cu13]'"
    try:
        from importlib.metadata import version  # noqa: PLC0415
        version("numba-cuda")
    except Exception:
        return ("the numba-cuda package is not installed (numba's bundled CUDA target is "
                "deprecated); pip install 'numba-cuda[cu13]'")
    return None


REASON = _numba_cuda_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=str(REASON))


def _env(**extra):
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in
                                                        env.get("PYTHONPATH", "").split(os.pathsep)
                                                        if p])
    env.update(extra)
    return env


#: Simulator runs, each in its own process: the authors' reference cases (the
#: largest grids) apart from the option cases, so that the two and the PTX
#: compile share the cores instead of queueing in one process.
SIM_RUNS = {"sim_reference": "reference_cases", "sim_options": "not reference_cases"}


class _Runs:
    """The simulator suites and the PTX compile, started as subprocesses at once.

    Output goes to files, not pipes: a child that fills a 64 KiB pipe buffer while
    the parent waits on it would deadlock."""

    def __init__(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="pacnd_numba_"))
        self.ptx_json = self.tmp / "ptx.json"
        self.logs = {k: open(self.tmp / f"{k}.log", "w+") for k in (*SIM_RUNS, "ptx")}
        self.procs = {}
        for name, selection in SIM_RUNS.items():
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
                 "no:randomly", "-rfs", "--durations=5", "-o",
                 f"faulthandler_timeout={TIMEOUT // 3}", "-k", selection,
                 f"--junitxml={self.tmp / (name + '.xml')}",
                 str(SIM_DIR / "sim_numba_kernels.py")],
                cwd=REPO, env=_env(NUMBA_ENABLE_CUDASIM="1"), stdout=self.logs[name],
                stderr=subprocess.STDOUT, text=True)
        self.procs["ptx"] = subprocess.Popen(
            [sys.executable, str(SIM_DIR / "ptx_compile.py"), str(self.ptx_json)],
            cwd=REPO, env=_env(), stdout=self.logs["ptx"], stderr=subprocess.STDOUT, text=True)
        self._results = None

    def _finish(self, name):
        p = self.procs[name]
        try:
            rc = p.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rc = f"killed after {TIMEOUT} s"
        self.logs[name].seek(0)
        return rc, self.logs[name].read()

    def results(self):
        """``{name: (rc, log)}``, ``"ptx"``: ``(rc, log, json_path)``; waits for them."""
        if self._results is None:
            try:
                out = {name: self._finish(name) for name in SIM_RUNS}
                out["ptx"] = self._finish("ptx") + (self.ptx_json,)
            finally:
                self.stop()
            self._results = out
        return self._results

    def stop(self):
        """Kill what still runs and close the logs."""
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in self.logs.values():
            f.close()


_STARTED = {}


def start_background():
    """Start the subprocesses now (once per process) so that they run beside the
    rest of the suite; tests/conftest.py calls this after collection when a
    selected test uses :func:`runs`, and puts those tests last."""
    if REASON is None and "runs" not in _STARTED:
        _STARTED["runs"] = _Runs()


def stop_background():
    """Kill subprocesses still running (the session ended without waiting for them)."""
    r = _STARTED.pop("runs", None)
    if r is not None:
        r.stop()


@pytest.fixture(scope="module")
def runs():
    start_background()
    return _STARTED["runs"].results()


def _junit_counts(path):
    """(tests, failures, errors, skipped) of a pytest JUnit XML report."""
    import xml.etree.ElementTree as ET  # noqa: PLC0415

    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    return tuple(sum(int(s.get(k, 0)) for s in suites)
                 for k in ("tests", "failures", "errors", "skipped"))


#: fewest tests each simulator run must execute (a suite that silently collects
#: nothing, or skips itself because the simulator is off, must fail)
SIM_MIN_TESTS = {"sim_reference": 5, "sim_options": 30}


@pytest.mark.parametrize("name", list(SIM_RUNS))
def test_numba_kernels_under_simulator(runs, name):
    rc, log = runs[name]
    print(log[-3000:])
    if name == "sim_reference" and not reference_dir().is_dir():
        pytest.skip(f"no reference cases at {reference_dir()}")
    assert rc == 0, f"simulator suite {name} failed (rc={rc}):\n{log[-12000:]}"
    xml = _STARTED["runs"].tmp / f"{name}.xml" if "runs" in _STARTED else None
    assert xml is not None and xml.exists(), f"no JUnit report from {name}:\n{log[-4000:]}"
    tests, failures, errors, skipped = _junit_counts(xml)
    assert failures == 0 and errors == 0, (failures, errors, log[-8000:])
    assert skipped == 0, f"{skipped} simulator tests were skipped:\n{log[-4000:]}"
    assert tests >= SIM_MIN_TESTS[name], f"only {tests} simulator tests ran in {name}"


def _ptx_results(runs):
    rc, log, path = runs["ptx"]
    assert rc == 0 and path.exists(), f"ptx_compile.py failed (rc={rc}):\n{log[-8000:]}"
    return json.loads(path.read_text())


def test_every_numba_kernel_compiles_to_ptx(runs):
    """Every kernel, both dtypes, sm_80 and sm_90 (ptx_compile.py types and lowers a
    kernel once and runs NVVM per capability: checked against compile_ptx on one)."""
    from pacnd.engines.cuda._backend import all_kernels  # noqa: PLC0415

    out = _ptx_results(runs)
    recs = out["records"]
    assert out["crosscheck"]["ok"], out["crosscheck"]
    bad = [r for r in recs if not (r["ok"] and r["target"] and r["entry"])]
    assert not bad, "\n\n".join(f"{r['kernel']} {r['dtype']} {r['cc']}:\n{r.get('error', r)}"
                                for r in bad)
    done = {(r["kernel"], r["dtype"], r["cc"]) for r in recs}
    want = {(k, d, cc) for k in all_kernels() for d in ("float32", "float64")
            for cc in ("sm_80", "sm_90")}
    assert done == want, want ^ done
    print("slowest:", sorted(recs, key=lambda r: -r["seconds"])[:3])


def test_kernel_signatures_match_kernels():
    import inspect  # noqa: PLC0415

    from pacnd.engines.cuda._backend import all_kernels  # noqa: PLC0415
    from pacnd.engines.cuda._signatures import signature  # noqa: PLC0415

    for name, kern in all_kernels().items():
        for k in (kern.values() if isinstance(kern, dict) else [kern]):
            assert len(inspect.signature(k.py_func).parameters) == len(signature(name, "float32"))
