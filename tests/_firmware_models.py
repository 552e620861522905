"""Test helpers for the firmware: small random QuantModels, a reference executor built on
runtime.kernels, and a native build of the C model runner with a stdin/stdout harness.

The models are built directly (no ONNX, no export/), with random int8 weights and requant
constants from ``Requant.from_scales``, so every op, mode and odd shape can be exercised in a
few milliseconds. The reference executor only calls runtime.kernels: the arithmetic lives there.
"""
from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np

import runtime
from export.plan import plan_arena
from runtime import kernels
from runtime.model import Layer, QuantModel, TensorSpec
from runtime.requant import Requant
from _tools import require_tool

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE_SRC = ROOT / "firmware" / "src"
# in its own directory: tests/c/ holds another helper's stub model_data.h
HARNESS = Path(__file__).resolve().parent / "c" / "runner" / "model_harness.c"
KERNEL_SOURCES = ("tc_conv2d.c", "tc_conv2d_1ch.c", "tc_depthwise_conv2d.c",
                  "tc_depthwise_inplace.c",
                  "tc_fully_connected.c", "tc_max_pool2d.c", "tc_avg_pool2d.c",
                  "tc_global_avg_pool.c", "tc_add.c", "tc_lookup.c", "tc_softmax.c",
                  "tc_matmul.c", "tc_concat.c", "tc_pad.c", "tc_mul.c", "tc_resize.c", "tc_sub.c",
                  "tc_model.c")
CFLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")


# -- random models -------------------------------------------------------------------------------

def _hw(shape):
    return shape if len(shape) == 3 else (1, 1, shape[0])


def _out(size, k, s, before, after, d=1):
    return (size + before + after - ((k - 1) * d + 1)) // s + 1


def random_model(rng: np.random.Generator, input_shape, spec: list[dict], mode: str,
                 name: str = "test", rounding: str = "double") -> QuantModel:
    """A chain of layers described by ``spec`` (dicts with ``op`` and its attributes; an
    ``add`` names an earlier tensor index in ``with``), arena planned by export.plan."""
    def new_tensor(shape):
        name_ = f"t{len(tensors)}"
        tensors[name_] = TensorSpec(name_, tuple(int(s) for s in shape),
                                    float(np.float32(rng.uniform(0.01, 0.1))),
                                    int(rng.integers(-20, 21)))
        order.append(name_)
        return name_

    tensors: dict[str, TensorSpec] = {}
    order: list[str] = []
    layers = []
    current = new_tensor(input_shape)
    for index, item in enumerate(spec):
        op = item["op"]
        src = tensors[current]
        h, w, c = _hw(src.shape)
        params: dict = {}
        arrays: dict = {}
        inputs = [current]
        relu = item.get("relu", False)
        if op in ("conv2d", "fully_connected"):
            if op == "conv2d":
                kh, kw = item.get("kernel", (3, 3))
                groups = item.get("groups", 1)
                m = item["out"]
                stride = list(item.get("stride", (1, 1)))
                pads = list(item.get("padding", (0, 0, 0, 0)))
                dil = list(item.get("dilation", (1, 1)))
                weights = rng.integers(-127, 128, (m, kh, kw, c // groups), dtype=np.int8)
                shape = (_out(h, kh, stride[0], pads[0], pads[2], dil[0]),
                         _out(w, kw, stride[1], pads[1], pads[3], dil[1]), m)
                params = {"stride": stride, "padding": pads, "dilation": dil, "groups": groups}
                depth = kh * kw * (c // groups)
            else:
                m = item["out"]
                depth = h * w * c
                weights = rng.integers(-127, 128, (m, depth), dtype=np.int8)
                shape = (m,)
            y = new_tensor(shape)
            w_scales = rng.uniform(0.002, 0.02, m).astype(np.float32)
            if item.get("per_tensor"):
                w_scales[:] = w_scales[0]
            # aim the outputs at +-40 so they are spread over int8, not all clamped
            spread = math.sqrt(depth) * 73.0 * 73.0 / 40.0
            tensors[y].scale = float(np.float32(src.scale * float(w_scales.mean()) * spread))
            rq = Requant.from_scales(src.scale, w_scales, tensors[y].scale, mode, rounding)
            arrays = {"weights": weights,
                      "bias": rng.integers(-3000, 3000, m).astype(np.int32)}
            if mode == "fixed":
                arrays["multiplier"], arrays["shift"] = rq.multiplier, rq.shift
                params["rounding"] = rounding
            else:
                arrays["scale"] = rq.scale
        elif op in ("max_pool2d", "avg_pool2d"):
            kh, kw = item.get("kernel", (2, 2))
            stride = list(item.get("stride", (kh, kw)))
            pads = list(item.get("padding", (0, 0, 0, 0)))
            shape = (_out(h, kh, stride[0], pads[0], pads[2]),
                     _out(w, kw, stride[1], pads[1], pads[3]), c)
            y = new_tensor(shape)
            params = {"kernel": [kh, kw], "stride": stride, "padding": pads}
            if op == "max_pool2d" or item.get("same_quant"):
                tensors[y].scale, tensors[y].zero_point = src.scale, src.zero_point
            if op == "avg_pool2d":
                params["count_include_pad"] = bool(item.get("count_include_pad", False))
                if item.get("ceil_pad"):
                    params["ceil_pad"] = list(item["ceil_pad"])
                arrays = kernels.avg_pool_constants(src.scale, src.zero_point, tensors[y].scale,
                                                    tensors[y].zero_point, (kh, kw), mode)
        elif op == "global_avg_pool":
            y = new_tensor((1, 1, c))
            arrays = kernels.global_avg_pool_constants(src.scale, src.zero_point,
                                                       tensors[y].scale, tensors[y].zero_point,
                                                       (h, w), mode)
        elif op == "add":
            other = tensors[order[item["with"]]]
            inputs.append(other.name)
            y = new_tensor(src.shape)
            arrays = kernels.add_constants(src.scale, src.zero_point, other.scale,
                                           other.zero_point, tensors[y].scale,
                                           tensors[y].zero_point, mode)
        elif op == "softmax":
            y = new_tensor(src.shape)
            tensors[y].scale, tensors[y].zero_point = 1.0 / 256.0, -128
            if "scale" in item:  # of a softmax reading the model input: sets its constants
                src.scale = float(np.float32(item["scale"]))
            arrays = kernels.softmax_constants(src.scale, c, mode)
        else:
            raise ValueError(op)
        out = tensors[y]
        params["act_min"] = max(-128, out.zero_point) if relu else -128
        params["act_max"] = int(item.get("act_max", 127))
        layers.append(Layer(op, f"{op}_{index}", inputs, y, params, arrays))
        current = y
    model = QuantModel(name, mode, tensors, layers, order[0], current)
    model.validate()
    return plan_arena(model)


def reference_run(model: QuantModel, x: np.ndarray) -> np.ndarray:
    """runtime/'s output for ``x`` (int8 ``[N, *input shape]``): what the device must equal."""
    return runtime.run(model, x).reshape((x.shape[0],) + tuple(model.output_spec.shape))


# -- native build of the C runner ----------------------------------------------------------------

def compile_kernel_objects(out_dir: Path, float_enabled: bool) -> list[Path]:
    """The model-independent kernel objects (everything but tc_model.c), compiled once."""
    cc = require_tool("gcc")
    out_dir.mkdir(parents=True, exist_ok=True)
    objects = []
    for name in KERNEL_SOURCES:
        if name == "tc_model.c":
            continue
        obj = out_dir / (name[:-2] + ".o")
        subprocess.run([cc, *CFLAGS, "-O2", f"-DTC_ENABLE_FLOAT_REQUANT={int(float_enabled)}",
                        "-I", str(FIRMWARE_SRC), "-c", str(FIRMWARE_SRC / name), "-o", str(obj)],
                       check=True, capture_output=True, text=True)
        objects.append(obj)
    return objects


def build_native_runner(model_dir: Path, kernel_objects: list[Path], float_enabled: bool) -> Path:
    """Link tests/c/model_harness.c, tc_model.c and the model's model_data.c natively."""
    cc = require_tool("gcc")
    exe = model_dir / "harness"
    cmd = [cc, *CFLAGS, "-O2", f"-DTC_ENABLE_FLOAT_REQUANT={int(float_enabled)}",
           "-I", str(FIRMWARE_SRC), "-I", str(model_dir), str(HARNESS),
           str(FIRMWARE_SRC / "tc_model.c"), str(model_dir / "model_data.c"),
           *map(str, kernel_objects), "-o", str(exe)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return exe


def run_native(exe: Path, model: QuantModel, x: np.ndarray) -> np.ndarray:
    result = subprocess.run([str(exe)], input=np.ascontiguousarray(x, np.int8).tobytes(),
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    out = np.frombuffer(result.stdout, np.int8)
    return out.reshape((x.shape[0],) + tuple(model.output_spec.shape))


def random_inputs(rng: np.random.Generator, model: QuantModel, count: int) -> np.ndarray:
    return rng.integers(-128, 128, (count,) + tuple(model.input_spec.shape), dtype=np.int8)
