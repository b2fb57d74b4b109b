"""Compile every Numba CUDA kernel of pacnd.engines.cuda to PTX (no GPU needed).

``python ptx_compile.py OUT.json`` runs ``numba.cuda.compile_ptx`` for each
kernel, with the argument types it is launched with (float32 and float64),
for sm_80 and sm_90, and writes one record per (kernel, dtype, cc). Run by
``tests/test_gpu_numba.py`` in a subprocess, next to the simulator suite. This
catches what the simulator cannot: typing errors, unsupported Python in
device code, NVVM rejecting the IR.
"""

import json
import sys
import time
import traceback

CCS = ((8, 0), (9, 0))


def main(out_path):
    from numba import cuda

    from pacnd.engines.cuda._signatures import kernel_signatures

    records = []
    for name, kern, dtype, sig in kernel_signatures():
        for cc in CCS:
            rec = {"kernel": name, "dtype": dtype, "cc": f"sm_{cc[0]}{cc[1]}"}
            t = time.time()
            try:
                ptx, resty = cuda.compile_ptx(kern.py_func, sig, cc=cc)
                rec.update(ok=True, target=f".target sm_{cc[0]}{cc[1]}" in ptx,
                           entry=".entry" in ptx, ptx_chars=len(ptx), restype=str(resty))
            except Exception:  # report, keep going
                rec.update(ok=False, error=traceback.format_exc()[-4000:])
            rec["seconds"] = round(time.time() - t, 2)
            records.append(rec)
    with open(out_path, "w") as f:
        json.dump(records, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
