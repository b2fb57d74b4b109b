#!/usr/bin/env bash
# Everything that needs a CUDA GPU, as one prepared run for a lent GPU machine.
#
# Nothing is installed: the machine's python3 must already hold CuPy, numba-cuda,
# PyTorch (the cuDNN / reference-method baselines), pytest, pytest-xdist and
# hypothesis; pacnd runs from the checkout (PYTHONPATH). The authors' reference
# cases are read from $PACND_SHARED_DIR (default: .device/ in the checkout, since
# ../shared does not travel). Before the call, from the repository root:
#
#   mkdir -p .device && cp -r ../shared/reference .device/ && \
#     grep -qx '/.device/' .git/info/exclude || echo /.device/ >> .git/info/exclude
#
# then run  bash scripts/device_check.sh [bench|tests|all]  with .device carried.
#
# Stages (``all`` = bench then tests; benchmarks first, alone on the GPU):
#   bench  benchmarks/bench_gpu_pac.py (pac_conv vs cuDNN conv2d, both engines) and
#          benchmarks/bench_gpu_graph.py (upsampling training step, PAC-CRF)
#   tests  every test marked ``gpu`` (both engines against the NumPy reference, the
#          reference cases, poisoned outputs, repeat runs, memory bounds, the
#          autodiff graph / layers / Adam / PAC-CRF on CuPy), 8 pytest workers
# Logs, JUnit XML and result JSON go to $OUT (or ./device_out); the result JSON
# also lands in benchmarks/results/ of the checkout on that machine.
# Time limits per stage (seconds): BENCH_LIMIT (default 280), TESTS_LIMIT (280).
set -uo pipefail
stage=${1:-all}
out=${OUT:-device_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PACND_SHARED_DIR=${PACND_SHARED_DIR:-$PWD/.device}
status=0

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    python3 - <<'EOF'
import importlib
for m in ("numpy", "scipy", "numba", "numba_cuda", "cupy", "torch", "pytest", "xdist"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"))
    except Exception as exc:  # report, do not stop
        print(m, "MISSING:", type(exc).__name__, exc)
EOF
    ls "$PACND_SHARED_DIR/reference" 2>/dev/null | wc -l | sed 's/^/reference cases: /'
} 2>&1 | tee "$out/device.txt"

if [[ $stage == bench || $stage == all ]]; then
    timeout "${BENCH_LIMIT:-280}" bash -c '
        python3 benchmarks/bench_gpu_pac.py --repeat 10 &&
        python3 benchmarks/bench_gpu_graph.py --repeat 5' 2>&1 | tee "$out/bench.log"
    rc=${PIPESTATUS[0]}
    echo "bench: rc=$rc" | tee -a "$out/bench.log"
    [[ $rc == 0 ]] || status=1
    cp benchmarks/results/gpu_*.json "$out/" 2>/dev/null
fi

if [[ $stage == tests || $stage == all ]]; then
    workers=()
    python3 -c "import xdist" 2>/dev/null && workers=(-n 8)
    timeout "${TESTS_LIMIT:-280}" python3 -m pytest -m gpu -q -p no:cacheprovider "${workers[@]}" \
        --durations=15 --junitxml="$out/gpu_tests.xml" -o faulthandler_timeout=300 tests \
        2>&1 | tee "$out/gpu_tests.log"
    rc=${PIPESTATUS[0]}
    echo "tests: rc=$rc" | tee -a "$out/gpu_tests.log"
    [[ $rc == 0 ]] || status=1
fi
exit $status
