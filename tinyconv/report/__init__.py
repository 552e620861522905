"""``tinyconv report``: what quantization costs, and pictures of what the filters see.

For an export directory and a dataset: top-1 accuracy and output SQNR of the float model and of
int8 per-channel vs per-tensor, minmax / percentile / entropy calibration and fixed vs float
requantization (``model.onnx`` re-exported each way), SQNR per layer, the learned first-layer
filters, feature maps after each conv layer (float next to int8) and the model outputs, all in
``REPORT_DIR/index.html``.
"""
from __future__ import annotations

import argparse
from pathlib import Path


HELP = """\
Show what int8 costs for an exported model, as an HTML page in --out: accuracy and output SQNR
of the float model against int8 exports made each way (per-channel or per-tensor weights;
minmax, percentile or entropy calibration; fixed or float requantization), SQNR per layer, the
first layer's filters and the feature maps (float next to int8) for a few inputs."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="accuracy/SQNR tables and pictures of an exported model",
        description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  tinyconv report build/demo/export --input build/demo/test.npz "
               "--labels \\\n      --calibration build/demo/calibration.npz "
               "--out build/demo/report")
    parser.add_argument("dir", type=Path, help="export directory (model.onnx, model.tcm)")
    parser.add_argument("--input", type=Path, required=True,
                        help=".npz with float inputs 'x' (and labels 'y' for --labels)")
    parser.add_argument("--out", type=Path, required=True, help="report directory to write")
    parser.add_argument("--labels", action="store_true", help="report top-1 accuracy against y")
    parser.add_argument("--calibration", type=Path,
                        help=".npz with 'x' to calibrate the re-exports (default: --input)")
    parser.add_argument("--verify", type=Path, metavar="R.json",
                        help="the JSON of `tinyconv verify --json R.json` for this export: "
                             "the device's verdict joins the page")
    parser.add_argument("--images", type=int, default=3,
                        help="how many inputs to picture (default: 3)")
    parser.add_argument("--device",
                        help="also run the pictured inputs on this device: host, lm3s6965evb, "
                             "mps2-an386 (built and started here) or a pyserial URL")
    parser.set_defaults(func=_main)


def _main(args) -> int:
    import runtime
    from tinyconv.report.make import format_layer_table, format_table, make_report

    report = make_report(args.dir, args.input, args.out, labels=args.labels,
                         calibration=args.calibration, pictured=args.images,
                         device=args.device, verify_json=args.verify)
    print(format_table(report.results))
    print()
    print("SQNR per layer (dB), int8 activation vs float activation:")
    print(format_layer_table(report.results, runtime.load(args.dir)))
    print(f"report: wrote {report.out_dir / 'index.html'} and {len(report.files) - 1} images")
    return 0
