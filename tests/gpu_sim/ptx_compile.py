"""Compile every Numba CUDA kernel of pacnd.engines.cuda to PTX (no GPU needed).

``python ptx_compile.py OUT.json`` compiles each kernel to PTX as
``numba.cuda.compile_ptx`` does, with the argument types it is launched with
(float32 and float64), for sm_80 and sm_90 (typed and lowered once, NVVM run
per capability), and writes one record per (kernel, dtype, cc). Run by
``tests/test_gpu_numba.py`` in a subprocess, next to the simulator suite. This
catches what the simulator cannot: typing errors, unsupported Python in
device code, NVVM rejecting the IR.
"""

import json
import re
import sys
import time
import traceback

CCS = ((8, 0), (9, 0))


def _lowered(kern, sig):
    """A function ``cc -> PTX`` for one kernel and signature, and its return type.

    Typing and lowering (about 95 % of a ``compile_ptx`` call) do not depend on the
    target: where numba-cuda's internal compile step is there, the kernel is lowered
    once and its NVVM IR compiled for each compute capability; otherwise (another
    numba-cuda) ``compile_ptx`` runs per capability."""
    from numba import cuda
    from numba.cuda import compiler

    fixup = getattr(compiler, "_compile_pyfunc_with_fixup", None)
    if fixup is None:
        def ptx_for(cc):
            return cuda.compile_ptx(kern.py_func, sig, cc=cc)[0]
        return ptx_for, None
    lib, resty = fixup(kern.py_func, sig, device=False, abi="numba", cc=CCS[0])

    def ptx_for(cc):
        codes = lib.get_asm_strs(cc=cc)
        if len(codes) != 1:
            raise RuntimeError(f"{len(codes)} PTX modules for one kernel")
        return codes[0]
    return ptx_for, resty


def main(out_path):
    from pacnd.engines.cuda._signatures import kernel_signatures

    records = []
    for name, kern, dtype, sig in kernel_signatures():
        t = time.time()
        try:
            ptx_for, resty = _lowered(kern, sig)
            lowered = None
        except Exception:  # report for every capability, keep going
            lowered = traceback.format_exc()[-4000:]
        for cc in CCS:
            rec = {"kernel": name, "dtype": dtype, "cc": f"sm_{cc[0]}{cc[1]}"}
            try:
                if lowered is not None:
                    raise RuntimeError(lowered)
                ptx = ptx_for(cc)
                rec.update(ok=True, target=f".target sm_{cc[0]}{cc[1]}" in ptx,
                           entry=".entry" in ptx, ptx_chars=len(ptx), restype=str(resty))
            except Exception:  # report, keep going
                rec.update(ok=False, error=traceback.format_exc()[-4000:])
            rec["seconds"] = round(time.time() - t, 2)   # the first: lowering included
            t = time.time()
            records.append(rec)
    with open(out_path, "w") as f:
        json.dump({"records": records, "crosscheck": crosscheck(records)}, f, indent=1)


def _normalised(ptx):
    """PTX with the names that differ between two compiles of one kernel (mangled
    symbols with their version counter, numbered shared arrays) replaced."""
    return re.sub(r"_cudapy_smem_\d+", "SMEM", re.sub(r"_ZN\w+", "SYM", ptx))


def crosscheck(records):
    """The shortcut of :func:`_lowered` against ``compile_ptx`` on the kernel that
    compiled fastest, for the capability it was not lowered for: the PTX must be the
    same but for symbol names."""
    from numba import cuda

    from pacnd.engines.cuda._signatures import kernel_signatures

    lowered_for = f"sm_{CCS[0][0]}{CCS[0][1]}"      # those records' seconds hold the lowering
    ok = [r for r in records if r["ok"] and r["cc"] == lowered_for]
    if not ok:
        return {"ok": False, "error": "no kernel compiled"}
    first = min(ok, key=lambda r: r["seconds"])
    cc = CCS[-1]
    for name, kern, dtype, sig in kernel_signatures():
        if (name, dtype) == (first["kernel"], first["dtype"]):
            ptx_for, _ = _lowered(kern, sig)
            same = _normalised(ptx_for(cc)) == _normalised(
                cuda.compile_ptx(kern.py_func, sig, cc=cc)[0])
            return {"ok": same, "kernel": name, "dtype": dtype, "cc": f"sm_{cc[0]}{cc[1]}"}
    return {"ok": False, "error": f"{first['kernel']} not found again"}


if __name__ == "__main__":
    main(sys.argv[1])
