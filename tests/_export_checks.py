"""Checks every exporter's model goes through (tests/test_torch_export.py,
tests/test_keras_export.py): the float ONNX model run by onnxruntime, float mode == onnxruntime on
model.q.onnx for every tensor, fixed mode within 1 LSB of float layer by layer, and the int8
logits following the framework's own."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

import runtime
from export.qonnx import run_qonnx
from runtime import kernels
from runtime.model import QuantModel


def ort_float(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def run_one_layer(model: QuantModel, index: int, values: dict) -> np.ndarray:
    """Run layer ``index`` alone on given inputs through the runtime's executor."""
    layer = model.layers[index]
    if layer.op == "add":
        p = layer.params
        return kernels.add(values[layer.inputs[0]], values[layer.inputs[1]], layer.arrays,
                           act_range=(p["act_min"], p["act_max"]))
    if len(layer.inputs) > 1:  # mul, sub, concat: the executor's own dispatch
        from runtime.executor import _run_layer
        return _run_layer(model, index, layer, values)
    sub = QuantModel("one", model.requant_mode, model.tensors, [layer], layer.inputs[0],
                     layer.output)
    return runtime.run(sub, values[layer.inputs[0]])


def assert_float_mode_equals_onnxruntime(result, x: np.ndarray, x_nhwc: np.ndarray) -> np.ndarray:
    """``x`` in the model's own layout, ``x_nhwc`` the same images in NHWC; returns the output."""
    model = result.model
    expected = run_qonnx(result.quant_onnx, model, x, collect=True)
    spec = model.input_spec
    x_q = kernels.quantize(x_nhwc, spec.scale, spec.zero_point)
    assert np.array_equal(x_q, expected[model.input])
    y, got = runtime.run(model, x_q, collect=True)
    assert set(got) == set(expected)
    for name in model.tensors:  # per layer, so a mismatch names its layer
        assert np.array_equal(got[name], expected[name]), f"tensor {name} differs"
    assert np.array_equal(y, expected[model.output])
    return y


def assert_fixed_within_one_lsb_of_float(results: dict, x_nhwc: np.ndarray) -> tuple[int, int]:
    """Both modes quantize every tensor alike, except that fixed mode keeps an average pool's
    output at its input's quantization (as the TFLite converter does). Each fixed layer whose
    tensors match float's is within 1 LSB of float's layer on float's inputs; and every fixed
    layer is within 1 LSB of onnxruntime on its own model.q.onnx, fed runtime/'s inputs.
    Returns how many of the compared fixed outputs differ from float's, and of how many."""
    from export.qonnx_check import LayerRunner

    flt, fix = results["float"].model, results["fixed"].model
    pooled = {layer.output: layer.inputs[0] for layer in fix.layers if layer.op == "avg_pool2d"}
    assert list(flt.tensors) == list(fix.tensors)
    for name, t in fix.tensors.items():
        like = fix.tensors[pooled[name]] if name in pooled else flt.tensors[name]
        assert (t.scale, t.zero_point) == (like.scale, like.zero_point), name
    spec = flt.input_spec
    x_q = kernels.quantize(x_nhwc, spec.scale, spec.zero_point)
    _, values = runtime.run(flt, x_q, collect=True)
    moved = {name for name in pooled
             if (flt.tensors[name].scale, flt.tensors[name].zero_point)
             != (fix.tensors[name].scale, fix.tensors[name].zero_point)}
    differing = compared = 0
    for index, layer in enumerate(fix.layers):
        if moved & {*layer.inputs, layer.output}:
            continue
        got = run_one_layer(fix, index, values).astype(np.int16)
        diff = np.abs(got - values[layer.output].astype(np.int16))
        assert diff.max() <= 1, f"layer {layer.name}: fixed and float differ by {diff.max()}"
        differing, compared = differing + int(np.count_nonzero(diff)), compared + diff.size
    _, own = runtime.run(fix, x_q, collect=True)
    lsb = LayerRunner(results["fixed"].quant_onnx, fix).max_lsb(own)
    assert max(lsb.values()) <= 1, f"fixed vs onnxruntime on model.q.onnx: {lsb}"
    return differing, compared


def assert_int8_tracks(reference: np.ndarray, results: dict, x: np.ndarray) -> None:
    """The quantization is sane: model.q.onnx's logits follow the float framework's."""
    for result in results.values():
        quantized = ort_float(result.quant_onnx, x)
        cosine = (reference * quantized).sum() / np.linalg.norm(reference) \
            / np.linalg.norm(quantized)
        assert cosine > 0.98, f"{result.model.requant_mode}: cosine {cosine:.4f}"
