"""``tinyconv run``: execute an exported model over a dataset with runtime/."""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

import runtime
from runtime import kernels
from runtime.errors import TinyconvError
from runtime.inputs import quantize_input
from runtime.model import write_atomic

EXAMPLE = """example:
  tinyconv run build/digits --input data/digits_test.npz --output out.npz --labels
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="run the quantized model in the bit-exact numpy runtime",
        description="Run DIR/model.tcm over every input of DATA.npz (array 'x'; float inputs "
        "are quantized with the model's input scale, int8 inputs are taken as they are) and "
        "write y_q (int8) and y (dequantized float32) to OUT.npz.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", metavar="DIR", help="export directory (or a .tcm file)")
    parser.add_argument("--input", required=True, metavar="DATA.npz",
                        help="npz with an array 'x' (and 'y' labels for --labels)")
    parser.add_argument("--output", required=True, metavar="OUT.npz")
    parser.add_argument("--labels", action="store_true", help="print top-1 accuracy against 'y'")
    parser.add_argument("--per-layer", action="store_true",
                        help="also write every intermediate int8 tensor, named layer/<tensor>")
    parser.add_argument("--batch-size", type=int, default=256, metavar="N")
    parser.set_defaults(func=main)


def load_inputs(path: Path, model) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path) as data:
            if "x" not in data:
                raise TinyconvError(f"{path}: no array 'x' (found {', '.join(data.files)})")
            return data["x"], (data["y"] if "y" in data else None)
    except (OSError, ValueError) as exc:
        raise TinyconvError(f"cannot read {path}: {exc}") from None


def main(args) -> int:
    from tinyconv.progress import progress

    model = runtime.load(args.model_dir)
    if args.batch_size < 1:
        raise TinyconvError("--batch-size must be >= 1")
    x, labels = load_inputs(Path(args.input), model)
    if args.labels and labels is None:
        raise TinyconvError(f"{args.input}: --labels needs an array 'y'")
    x = quantize_input(model, x)
    if args.labels and len(np.asarray(labels).reshape(-1)) != len(x):
        raise TinyconvError(f"{len(np.asarray(labels).reshape(-1))} labels for {len(x)} inputs")
    outputs, layers = [], {}
    starts = range(0, len(x), args.batch_size)
    for start in progress(starts, label="tinyconv run"):
        batch = x[start:start + args.batch_size]
        if args.per_layer:
            y_q, values = runtime.run(model, batch, collect=True)
            for name, value in values.items():
                layers.setdefault(name, []).append(value)
        else:
            y_q = runtime.run(model, batch)
        outputs.append(y_q)
    out_spec = model.output_spec
    y_q = np.concatenate(outputs) if outputs else np.zeros((0,) + tuple(out_spec.shape), np.int8)
    arrays = {"y_q": y_q, "y": kernels.dequantize(y_q, out_spec.scale, out_spec.zero_point)}
    for name, parts in layers.items():
        arrays[f"layer/{name}"] = np.concatenate(parts)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(Path(args.output), buffer.getvalue())
    print(f"tinyconv run: {len(y_q)} inputs -> {args.output}")
    if args.labels:
        labels = np.asarray(labels).reshape(-1)
        accuracy = float((y_q.reshape(len(y_q), -1).argmax(axis=1) == labels).mean())
        print(f"top-1 accuracy: {accuracy:.4f} ({len(labels)} labelled inputs)")
    return 0
