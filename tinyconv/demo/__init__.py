"""``tinyconv demo``: the whole story on real data in under two minutes.

Train a small ConvNet in numpy on scikit-learn's digits (8 random 3x3 filters that SGD turns
into stroke detectors), write it as ONNX, calibrate and quantize it to int8, build a device,
stream the test split to it over serial and show that it computes exactly what the host does.
The training code lives here, not in runtime/: the runtime only ever executes int8.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from firmware_host.boards import TARGETS as DEVICES
from tinyconv.demo.convnet import TrainConfig

DEFAULT_OUT = Path("build/demo")


HELP = """\
The whole flow in about two minutes, on real data: trains a small ConvNet on the scikit-learn
digits (in numpy), exports it to int8, builds the firmware, runs it on a device (a local
process, or a board under QEMU with --device) and checks over serial that every answer equals
the host's. Everything it writes is in --out, ready to look at or to reuse with the other
commands."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="train a digits ConvNet, quantize it, verify it on a device",
        description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  tinyconv demo\n  tinyconv demo --device lm3s6965evb "
               "--out build/demo-qemu")
    parser.add_argument("--device", choices=DEVICES, default="host",
                        help="where the int8 model runs (default: host, a local process "
                             "behind a pseudo-terminal; the others run under qemu-system-arm)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output directory (default: {DEFAULT_OUT})")
    parser.add_argument("--requant", choices=("fixed", "float"), default="fixed",
                        help="requantization scheme: fixed (integer-only, default) or float "
                             "(onnxruntime's, needs an FPU)")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed,
                        help=f"training seed (default: {TrainConfig.seed}; the trained weights "
                             "are cached per seed)")
    parser.add_argument("--retrain", action="store_true",
                        help="train again even when cached weights exist")
    parser.set_defaults(func=_main)


def _main(args) -> int:
    from runtime.errors import TinyconvError
    from tinyconv.demo.pipeline import run

    if args.seed < 0:
        raise TinyconvError(f"--seed must be a non-negative integer, got {args.seed}")

    return run(args.out, device=args.device, requant=args.requant,
               config=TrainConfig(seed=args.seed), retrain=args.retrain)
