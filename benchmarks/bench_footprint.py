"""Static RAM and flash of the MLPerf Tiny models on the ARM boards, beside TFLite Micro's arena.

    python benchmarks/bench_footprint.py [--models resnet8 dscnn mobilenet autoencoder]
        [--boards lm3s6965evb mps2-an386] [--root TINYCONV_TREE]

Each Keras model of tests/mlperf_tiny.py (logits: no final Softmax) is converted to ONNX and
exported in fixed mode, then its firmware is linked once with the board's limits lifted (the
build's own `make probe`) and measured from the ELF (firmware_host/build.py `measure`):
flash, static RAM = arena + kernel scratch + other buffers (stack not included). The same model,
converted to an int8 .tflite by the TensorFlow Lite converter, is loaded by the tflite-micro
Python interpreter in a child process, whose RecordingMicroAllocator reports the arena it used
(total, and "head": activations and kernel scratch). ``--root`` measures another checkout's
firmware and exporter (e.g. the one before a change) with this script's models.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
TFLM_CHILD = """
import sys
from tflite_micro.python.tflite_micro import runtime as tflm
interpreter = tflm.Interpreter.from_bytes(open(sys.argv[1], "rb").read())
sys.stdout.flush()
interpreter.print_allocations()
"""


def tflm_arena(keras_model, calibration, path: Path) -> tuple[int, int]:
    """(total, head) bytes of TFLM's arena for the int8 conversion of ``keras_model``."""
    import numpy as np
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None].astype(np.float32)]
                                                for x in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with contextlib.redirect_stdout(sys.stderr):  # the converter's chatter
        path.write_bytes(converter.convert())
    done = subprocess.run([sys.executable, "-c", TFLM_CHILD, str(path)], capture_output=True,
                          text=True, check=True)
    found = dict(re.findall(r"Arena allocation (total|head) (\d+) bytes",
                            done.stdout + done.stderr))
    return int(found["total"]), int(found["head"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+",
                        default=["resnet8", "dscnn", "mobilenet", "autoencoder"])
    parser.add_argument("--boards", nargs="+", default=["lm3s6965evb", "mps2-an386"])
    parser.add_argument("--root", type=Path, default=HERE,
                        help="the tinyconv checkout whose exporter and firmware are measured")
    parser.add_argument("--no-tflm", action="store_true", help="skip TFLM's arena")
    args = parser.parse_args()
    sys.path[:0] = [str(args.root.resolve()), str(HERE / "tests")]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import export
    import mlperf_tiny as mt
    from firmware_host import build
    from firmware_host.boards import BOARDS

    print(f"{'model':<12} {'board':<12} {'flash':>8} {'static RAM':>10} {'arena':>8} "
          f"{'scratch':>8} {'buffers':>8} {'TFLM arena':>10} {'TFLM head':>9}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_footprint_") as tmp:
        tmp = Path(tmp)
        for name in args.models:
            builder = getattr(mt, f"keras_{name}")
            model = builder() if name == "autoencoder" else builder(softmax=False)
            calibration = mt.inputs(name, 8, seed=1)
            onnx_path = tmp / f"{name}.onnx"
            with contextlib.redirect_stdout(sys.stderr):
                mt.to_onnx(model, onnx_path)
            out = tmp / name
            export.from_onnx(onnx_path, calibration, requant="fixed").save(out)
            tflm = ("-", "-") if args.no_tflm else tflm_arena(model, calibration,
                                                              tmp / f"{name}.tflite")
            for board in args.boards:
                fw = tmp / f"{name}_{board}"
                build._make(["make", "-s", "-C", str(args.root / "firmware"), f"TARGET={board}",
                             f"MODEL_DIR={out}", f"OUT={fw}", "probe"], board)
                needs = build.measure(fw / "probe.elf", fw / "obj", BOARDS[board])
                print(f"{name:<12} {board:<12} {needs.flash:>8} {needs.static_ram:>10} "
                      f"{needs.arena:>8} {needs.scratch:>8} {needs.buffers:>8} "
                      f"{tflm[0]:>10} {tflm[1]:>9}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
