"""``tinyconv export``: the command-line face of ``export.from_onnx``."""
from __future__ import annotations

import argparse
import sys

from runtime.requant import MODES

EXAMPLE = """examples:
  tinyconv export net.onnx --calibration calib.npz --out build/net --requant float
  tinyconv export net.tflite --out build/net      (full-integer int8 TFLite, as quantized)

CALIBRATION is an .npz with an array x of float32 inputs in the model's own input layout
(NCHW for PyTorch exports, NHWC for Keras/tf2onnx). DIR receives model.onnx, model.q.onnx,
model.tcm, model_data.c/.h and report.json, all or nothing."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="quantize an ONNX model to int8 and write the device artifacts",
        description="Import an ONNX float model, calibrate it, quantize it to int8 and write "
        "every artifact the device flow needs.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL.onnx",
                        help="ONNX model (float), or a full-integer int8 .tflite file")
    parser.add_argument("--calibration", metavar="DATA.npz",
                        help="calibration inputs: array x in the model's input layout "
                        "(required unless onnxruntime already quantized the model)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--requant", choices=MODES, default="fixed",
                        help="fixed: integer multiplier+shift, no FPU (default); float: "
                        "float32 scales, bit-exact with onnxruntime")
    parser.add_argument("--per-tensor", action="store_true",
                        help="one weight scale per layer instead of one per output channel")
    parser.add_argument("--calibration-method", choices=("minmax", "percentile", "entropy"),
                        default="minmax", help="how activation ranges are chosen (default minmax)")
    parser.add_argument("--name", help="model name (default: the file name)")
    parser.add_argument("--uint8-calibration", action="store_true",
                        help="the model really takes 0..255 values: calibrate on uint8 data "
                        "as it is (without this flag uint8 calibration data is refused)")
    parser.add_argument("--target", metavar="BOARD",
                        help="also check that the firmware fits this board's flash and RAM "
                        "(links it once; exit 2 with the numbers when it does not)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from export.api import from_onnx, from_tflite
    from export.tflite_import import is_tflite

    if args.target:
        from firmware_host.boards import board

        board(args.target)  # a typo is named before the export, not after it is written
    if is_tflite(args.model):
        _check_tflite_options(args)
        result = from_tflite(args.model, name=args.name)
        out = result.save(args.out)
        _show(result)
        print(f"model.q.onnx: {result.report['model_q_onnx']}")
        print(f"wrote {out}")
        return 0
    result = from_onnx(args.model, args.calibration, requant=args.requant,
                       per_channel=not args.per_tensor, method=args.calibration_method,
                       name=args.name, uint8_calibration=args.uint8_calibration)
    out = result.save(args.out)
    _show(result)
    print(f"wrote {out}")
    if args.target:
        from firmware_host.boards import board
        from firmware_host.build import build_firmware, measure

        fits = board(args.target)
        probe = build_firmware(out, fits.name, probe_only=True)
        needs = measure(probe, probe.parent / "obj", fits)
        print(f"fits {fits.name}: flash {needs.flash:,} of {fits.flash:,} B, RAM "
              f"{needs.ram:,} of {fits.ram:,} B (with the worst-case stack)")
    return 0


def _show(result) -> None:
    """The table on stdout; its warnings on stderr, where scripts and CI logs look for them."""
    for line in result.table().splitlines():
        if line.startswith("warning: "):
            print(f"tinyconv export: {line}", file=sys.stderr)
        else:
            print(line)


def _check_tflite_options(args) -> None:
    """A .tflite file is quantized already: options that would re-quantize it are refused."""
    from runtime.errors import TinyconvError

    if args.calibration:
        raise TinyconvError(f"{args.model} is an int8 TFLite model: its scales are used as they "
                            "are, so --calibration does not apply")
    if args.requant != "fixed" or args.per_tensor or args.calibration_method != "minmax":
        raise TinyconvError(f"{args.model} is an int8 TFLite model: it runs TFLite Micro's "
                            "fixed-point arithmetic as quantized; --requant float, --per-tensor "
                            "and --calibration-method do not apply")
