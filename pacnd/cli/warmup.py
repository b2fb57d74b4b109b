"""Compile the CPU engine's kernels ahead of time (``pacnd warmup``).

Numba compiles each kernel the first time it runs and caches it on disk next
to the installed package; every later process loads the cached kernels in
well under a second. Without this command, first calls on an empty cache are
served by the NumPy reference engine while a background process compiles the
kernels (:mod:`pacnd.engines.cpu.coldstart`), so nothing waits long, but the
first calls run slower than compiled code. Run this once after installing (or
when building an image) to compile every CPU code path up front.
"""

from __future__ import annotations

import time

__all__ = ["configure_parser", "run_from_args"]


def configure_parser(parser):
    parser.add_argument("--dtype", choices=("float32", "float64", "both"), default="both",
                        help="dtypes to compile for (default: both)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_from_args(args):
    from ..engines import cpu  # noqa: PLC0415

    dtypes = ("float32", "float64") if args.dtype == "both" else (args.dtype,)
    t0 = time.perf_counter()
    cpu.warmup(dtypes, progress=not args.quiet)
    print(f"pacnd warmup: CPU kernels for {', '.join(dtypes)} ready "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0
