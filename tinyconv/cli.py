"""The ``tinyconv`` command: one subcommand per step of the flow.

Each subcommand lives in the module that does the work and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to a callable taking the parsed arguments and returning
an exit status. Subcommand modules import heavy or optional dependencies (onnxruntime, matplotlib) inside
their functions, so ``tinyconv --help`` stays quick and a missing optional extra only breaks the
subcommand that needs it.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from runtime.errors import TinyconvError

SUBCOMMAND_MODULES = (
    "export.cli",          # export
    "runtime.cli",         # run
    "firmware_host.build",   # build
    "firmware_host.verify",  # verify
    "tinyconv.demo",       # demo
    "tinyconv.report",     # report
    "tinyconv.bench",      # bench
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinyconv",
        description="Export a trained CNN to int8, run it bit-exactly on the host, "
        "and verify a microcontroller over serial.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except TinyconvError as exc:
        print(f"tinyconv {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tinyconv {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
