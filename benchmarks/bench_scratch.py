"""Kernel scratch per conv layer: tinyconv's beside CMSIS-NN's buffer size for the same layer.

    .venv/bin/python benchmarks/bench_scratch.py [--models bench resnet8 dscnn mobilenet
        autoencoder] [--root TINYCONV_TREE]

"bench" is the model of benchmarks/bench_kernels_arm.py (28x28x1, random int8 weights); the
others are the Keras models of tests/mlperf_tiny.py (logits), exported in fixed mode as
benchmarks/bench_footprint.py does. tinyconv's figure is what export/c_codegen.py sizes
TC_SCRATCH_SIZE for (the largest layer's); CMSIS-NN's is its wrapper's get_buffer_size for
the DSP build (tests/cmsis_nn_sizes.py states the rules). ``--root`` sizes the scratch with
another checkout's exporter (e.g. the one before a change).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]

import cmsis_nn_sizes  # noqa: E402


def layer_scratch(model) -> list[int]:
    """Each layer's scratch as the exporter on sys.path sizes it (older ones lack
    c_codegen.layer_scratch; their _layer_entry returns the same figure)."""
    from export import c_codegen
    if hasattr(c_codegen, "layer_scratch"):
        return c_codegen.layer_scratch(model)
    return [c_codegen._layer_entry(model, i, layer, c_codegen._Writer())[1]
            for i, layer in enumerate(model.layers)]


def tinyconv_kernel(model, layer, scratch: int) -> str:
    m, kh, kw, cg = layer.arrays["weights"].shape
    in_c = model.tensors[layer.inputs[0]].shape[-1]
    groups = int(layer.params.get("groups", 1))
    if groups == in_c and cg == 1 and groups > 1:
        return "depthwise"
    if groups == 1 and cg == 1 and scratch > cmsis_nn_sizes.convolve_s8(kh, kw, cg) * 2:
        return "one-channel"
    return "pair column, 1x1" if kh == kw == 1 else "pair column"


def rows(model):
    """(layer description, tinyconv kernel, tinyconv bytes, CMSIS-NN kernel, CMSIS-NN bytes)."""
    for layer, scratch in zip(model.layers, layer_scratch(model)):
        if layer.op != "conv2d":
            continue
        w = layer.arrays["weights"].shape
        src = "x".join(map(str, model.tensors[layer.inputs[0]].shape))
        dst = "x".join(map(str, model.tensors[layer.output].shape))
        stride = layer.params.get("stride", [1, 1])
        what = f"{w[1]}x{w[2]}/{stride[0]} {src} -> {dst}"
        kernel, size = cmsis_nn_sizes.layer_size(model, layer)
        yield what, tinyconv_kernel(model, layer, scratch), scratch, kernel, size


def bench_model():
    from _firmware_models import random_model
    from bench_kernels_arm import SPEC
    return random_model(np.random.default_rng(0), SPEC[0], SPEC[1], "fixed", name="bench")


def mlperf_model(name: str, tmp: Path):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import export
    import mlperf_tiny as mt
    builder = getattr(mt, f"keras_{name}")
    keras_model = builder() if name == "autoencoder" else builder(softmax=False)
    with contextlib.redirect_stdout(sys.stderr):
        mt.to_onnx(keras_model, tmp / f"{name}.onnx")
    return export.from_onnx(tmp / f"{name}.onnx", mt.inputs(name, 8, seed=1),
                            requant="fixed").model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+",
                        default=["bench", "resnet8", "dscnn", "mobilenet", "autoencoder"])
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the tinyconv checkout whose exporter sizes the scratch")
    args = parser.parse_args()
    sys.path.insert(0, str(args.root.resolve()))
    print(f"{'model':<11} {'layer':<34} {'tinyconv kernel':<17} {'bytes':>6} "
          f"{'CMSIS-NN kernel (DSP)':<24} {'bytes':>6} {'ratio':>6}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_scratch_") as tmp:
        for name in args.models:
            model = bench_model() if name == "bench" else mlperf_model(name, Path(tmp))
            for what, kernel, ours, cmsis_kernel, theirs in rows(model):
                ratio = f"{ours / theirs:6.2f}" if theirs else "   inf" if ours else "     -"
                print(f"{name:<11} {what:<34} {kernel:<17} {ours:>6} {cmsis_kernel:<24} "
                      f"{theirs:>6} {ratio}", flush=True)
            print(f"{name:<11} {'TC_SCRATCH_SIZE (all layers)':<34} {'':<17} "
                  f"{max(layer_scratch(model)):>6}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
