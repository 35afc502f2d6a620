"""``neonatal-brain``: the one command-line tool.

Each package contributes its sub-commands through a ``register(subparsers)``
function in its ``cli`` module; the handlers import heavy dependencies (torch,
MONAI) only when they run, so ``neonatal-brain --help`` stays fast.

The process gets :func:`NeonatalBrainLib.runtime.configure_process_memory` (numpy without
huge-page advice, glibc reusing freed large blocks): same results, less kernel time.

Exit status: 0 success, 2 bad input or refused overwrite (message on stderr,
no traceback), 130 interrupted.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .imageio import InputError
from .outputs import OutputExistsError
from .progress import OperationCancelled
from .runtime import configure_process_memory

#: Modules whose ``register(subparsers)`` adds sub-commands, in help order.
COMMAND_MODULES = (
    "NeonatalBrainLib.phantom.cli",
    "NeonatalVesselsLib.cli",
    "NeonatalClassifyLib.cli",
    "NeonatalBrainLib.stats.cli",
    "NeonatalBrainLib.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neonatal-brain",
        description="Neonatal brain MRI biomarkers: vessel metrics on SWI, deep grey-matter "
                    "injury classification on T1, and the digital neonatal phantom.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_process_memory()     # large arrays reused instead of re-mapped (see NeonatalBrainLib.runtime)
    try:
        result = args.func(args)
    except (InputError, OutputExistsError, FileNotFoundError, ValueError) as exc:
        print(f"neonatal-brain {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, OperationCancelled):
        print(f"neonatal-brain {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
