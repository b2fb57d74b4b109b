"""The ``pacnd`` command line (``pacnd ...`` or ``python -m pacnd ...``).

Subcommands are registered in :data:`SUBCOMMANDS`: name -> (module, one-line
help). Each module provides ``configure_parser(parser)`` (adds its
arguments) and ``run_from_args(args) -> int`` (does the work). Modules are
imported when the parser is built; every subcommand also gets the common
``--engine`` option, applied around its run with :func:`pacnd.use_engine`.

To add a subcommand (e.g. ``crf`` or ``upsample``), write those two functions
in its module and add one line to :data:`SUBCOMMANDS`.

Errors a user can fix (bad values, missing files) end with one line
``pacnd <command>: error: <message>`` on stderr and exit status 1; argparse
usage errors exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "build_parser", "SUBCOMMANDS"]

#: name -> (module implementing it, one-line help)
SUBCOMMANDS = {
    "demo": ("pacnd.demo", "joint bilateral upsampling of the bundled depth sample: "
                           "bicubic vs JBU, RMSE and a PNG figure"),
    "upsample": ("pacnd.cli.upsample", "deep joint upsampling of depth / flow: predict, eval, "
                                       "train"),
    "crf": ("pacnd.cli.crf", "refine a segmentation (scores or an annotation) with a PAC-CRF"),
    "warmup": ("pacnd.cli.warmup", "compile the CPU kernels ahead of time (once per install)"),
    "filter": ("pacnd.cli.filter", "bilateral / joint bilateral / JBU / DPP of an image, chunk "
                                   "by chunk for large .zarr/.tif files (Dask)"),
}

_ENGINES = ("numpy", "numba", "cuda", "cupy")


def _version():
    from .. import __version__  # noqa: PLC0415

    return __version__


def build_parser():
    """The argparse parser of the ``pacnd`` command with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="pacnd",
        description="pacnd: pixel-adaptive convolution on NumPy, Numba and CuPy.")
    parser.add_argument("--version", action="version", version=f"pacnd {_version()}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--engine", choices=_ENGINES, default=None,
                        help="compute engine (default: PACND_ENGINE or the built-in default)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (modname, help_) in SUBCOMMANDS.items():
        mod = importlib.import_module(modname)
        p = sub.add_parser(name, help=help_, description=(mod.__doc__ or help_).strip(),
                           parents=[common],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.configure_parser(p)
        p.set_defaults(_run=mod.run_from_args)
    return parser


def _one_line(exc):
    msg = str(exc) or type(exc).__name__
    return " ".join(msg.split())


def main(argv=None):
    """Run the ``pacnd`` command; returns the exit status (0 on success).

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.engine is not None:
            from .._dispatch import use_engine  # noqa: PLC0415

            with use_engine(args.engine):
                return int(args._run(args) or 0)
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"pacnd {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, RuntimeError, ImportError, EOFError,
            MemoryError) as exc:
        print(f"pacnd {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
