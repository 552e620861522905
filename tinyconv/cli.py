"""The ``tinyconv`` command: one subcommand per step of the flow.

Each subcommand lives in the module that does the work, or in tinyconv/ when it joins layers
(``export --target`` links firmware; ``run --against tflm`` uses export's TFLite Micro
comparison), so that no package imports from one above it (tests/test_layering.py). It exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking the
parsed arguments and returning an exit status. Subcommand modules import heavy or optional
dependencies (onnxruntime, matplotlib) inside their functions, so ``tinyconv --help`` stays
quick and a missing optional extra only breaks the subcommand that needs it. Errors a user can
act on (TinyconvError, and a folder that cannot be written) end as one line on stderr and exit
status 2.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

SUBCOMMAND_MODULES = (
    "tinyconv.export_cli",   # export
    "tinyconv.run_cli",      # run
    "firmware_host.build",   # build
    "firmware_host.verify",  # verify
    "tinyconv.demo",       # demo
    "tinyconv.report",     # report
    "tinyconv.bench",      # bench
)


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as installed

    try:
        return installed("tinyconv")
    except PackageNotFoundError:  # run from a checkout that was never pip-installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinyconv",
        description="Export a trained CNN to int8, run it bit-exactly on the host, "
        "and verify a microcontroller over serial.",
        epilog="example: tinyconv demo; then `tinyconv COMMAND --help` for each step",
    )
    parser.add_argument("--version", action="version", version=f"tinyconv {version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    for sub in subparsers.choices.values():
        sub.add_argument("-q", "--quiet", action="store_true",
                         help="no progress bars or stage lines on stderr")
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, a cancelled CI job, ``kill``), unwound like Ctrl-C: the devices
    this process started (QEMU runs in its own session and would outlive it) are stopped, and
    temporary files are removed."""


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the unwinding itself is bounded
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Only the standard library is imported before this runs, so that a Ctrl-C while the
    subcommands' modules load (numpy, onnx: a second or so) is one line, not a traceback."""
    try:
        parser = build_parser()
    except KeyboardInterrupt:
        print("tinyconv: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from runtime.progress import set_quiet

    set_quiet(getattr(args, "quiet", False))
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        return _run(args)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _run(args) -> int:
    from runtime.errors import TinyconvError

    try:
        return int(args.func(args) or 0)
    except TinyconvError as exc:
        print(f"tinyconv {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a folder that cannot be written, a disk that is full, ...
        where = f": {exc.filename}" if exc.filename else ""
        print(f"tinyconv {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(f"tinyconv {args.command}: {'terminated' if terminated else 'interrupted'}",
              file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
