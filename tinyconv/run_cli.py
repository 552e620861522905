"""``tinyconv run``: execute an exported model over a dataset with runtime/."""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

import runtime
from runtime import kernels
from runtime.errors import TinyconvError
from runtime.inputs import quantize_input, refuse_int8_values, saturated, saturation_warning
from runtime.dataset import NpzArray, label_classes, read_labels
from runtime.model import check_writable, write_atomic

EXAMPLE = """example:
  tinyconv run build/digits --input data/digits_test.npz --output out.npz --labels
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="run the quantized model in the bit-exact numpy runtime",
        description="Run DIR/model.tcm over every input of DATA.npz (array 'x'; float inputs "
        "are quantized with the model's input scale, int8 inputs, with --int8-codes, are "
        "taken as the quantized codes they are) and "
        "write y_q (int8) and y (dequantized float32) to OUT.npz.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", metavar="DIR", help="export directory (or a .tcm file)")
    parser.add_argument("--input", required=True, metavar="DATA.npz",
                        help="npz with an array 'x' (and 'y' labels for --labels)")
    parser.add_argument("--output", required=True, metavar="OUT.npz")
    parser.add_argument("--labels", action="store_true", help="print top-1 accuracy against 'y'")
    parser.add_argument("--per-layer", action="store_true",
                        help="also write every intermediate int8 tensor, named layer/<tensor>")
    parser.add_argument("--against", choices=("tflm",),
                        help="with --per-layer, for an export holding model.tflite (a .tflite "
                        "source, or a fixed-mode model TFLite Micro computes exactly): compare "
                        "every tensor with TFLite Micro (DIR/model.tflite) and name the first "
                        "that differs; LiteRT's output is reported too")
    parser.add_argument("--batch-size", type=int, default=256, metavar="N")
    parser.add_argument("--int8-codes", action="store_true",
                        help="'x' is int8 holding the model's quantized input codes (without "
                             "this flag int8 inputs are refused: int8 pixels would be misread)")
    parser.set_defaults(func=main)


def main(args) -> int:
    from runtime.progress import progress

    model = runtime.load(args.model_dir)
    if args.batch_size < 1:
        raise TinyconvError("--batch-size must be >= 1")
    if args.against and not args.per_layer:
        raise TinyconvError("--against tflm compares layer by layer: add --per-layer")
    check_writable(args.output)
    from export.api import check_output

    check_output(args.output, reads=[args.input], export_dir=args.model_dir)
    inputs = NpzArray(args.input, "x")
    if len(inputs) == 0:
        raise TinyconvError(f"{args.input}: array 'x' holds no inputs")
    refuse_int8_values(inputs.dtype, args.int8_codes, args.input)
    labels = None
    if args.labels:
        labels, note = read_labels(args.input, len(inputs), label_classes(model))
        if note:
            print(f"tinyconv run: note: {note}", file=sys.stderr)
    outputs, layers = [], {}
    clipped = float_values = 0
    batches = inputs.batches(args.batch_size)
    for batch in progress(batches, total=len(inputs), label="tinyconv run", size=len):
        x = quantize_input(model, batch)
        if np.issubdtype(batch.dtype, np.floating):
            clipped += int(saturated(model, batch).sum())
            float_values += batch.size
        if args.per_layer:
            y_q, values = runtime.run(model, x, collect=True)
            for name, value in values.items():
                layers.setdefault(name, []).append(value)
        else:
            y_q = runtime.run(model, x)
        outputs.append(y_q)
    out_spec = model.output_spec
    y_q = np.concatenate(outputs)
    arrays = {"y_q": y_q, "y": kernels.dequantize(y_q, out_spec.scale, out_spec.zero_point)}
    for name, parts in layers.items():
        arrays[f"layer/{name}"] = np.concatenate(parts)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(Path(args.output), buffer.getvalue())
    print(f"tinyconv run: {len(y_q)} inputs -> {args.output}")
    if float_values:
        print(f"input saturation: {100 * clipped / float_values:.2f} % of input values clipped "
              f"({clipped} of {float_values})")
        warning = saturation_warning(clipped, float_values)
        if warning:
            print(f"tinyconv run: warning: {warning}", file=sys.stderr)
    if args.against:
        return _against_tflm(args, model)
    if labels is not None:
        accuracy = float((y_q.argmax(axis=1) == labels).mean())
        print(f"top-1 accuracy: {accuracy:.4f} ({len(labels)} labelled inputs)")
    return 0


def _against_tflm(args, model) -> int:
    """Exit status 1 when runtime/ and TFLM differ anywhere."""
    from export.tflite_reference import compare

    source = Path(args.model_dir)
    source = (source if source.is_dir() else source.parent) / "model.tflite"
    if not source.is_file():
        raise TinyconvError(f"--against tflm needs {source} (written by `tinyconv export` "
                            "for a .tflite, or a fixed-mode model TFLM computes exactly; "
                            "report.json's tflm entry says why not)")
    x = np.concatenate(list(NpzArray(args.input, "x").batches(1 << 16)))
    result = compare(model, source.read_bytes(), x)
    print(result.summary())
    return 0 if result.first is None else 1
