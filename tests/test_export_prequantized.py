"""Models quantized by onnxruntime's quantize_static (QDQ and QOperator, per-channel and
per-tensor) are imported with their scales, zero points and integers as they are."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quantize_static)

import export
import runtime
from export.onnx_clean import clean_model
from export.onnx_import import load_model
from export.qonnx import run_qonnx
from runtime import kernels
from test_export import cnn, images


class Reader(CalibrationDataReader):
    def __init__(self, x):
        self.batches = iter([{"input": x[i:i + 4]} for i in range(0, len(x), 4)])

    def get_next(self):
        return next(self.batches, None)


@pytest.fixture(scope="module")
def ort_quantized(tmp_path_factory):
    """(format, per_channel) -> path of a model quantized by onnxruntime."""
    folder = tmp_path_factory.mktemp("ortq")
    # onnxruntime wants BN folded first; tinyconv's model.onnx is exactly that float model
    onnx.save(clean_model(load_model(cnn("gap_gemm"))), folder / "float.onnx")
    paths = {}
    for fmt in ("QDQ", "QOperator"):
        for per_channel in (True, False):
            path = folder / f"{fmt}_{per_channel}.onnx"
            quantize_static(folder / "float.onnx", path, Reader(images(16, seed=1)),
                            quant_format=getattr(QuantFormat, fmt), per_channel=per_channel,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
            paths[fmt, per_channel] = path
    return paths


def _run(result, x):
    spec = result.model.input_spec
    y = runtime.run(result.model, kernels.quantize(x.transpose(0, 2, 3, 1), spec.scale,
                                                   spec.zero_point))
    out = result.model.output_spec
    return y, kernels.dequantize(y, out.scale, out.zero_point)


@pytest.mark.parametrize("per_channel", [True, False])
def test_qoperator_model_imported_bit_exact(ort_quantized, per_channel):
    path = ort_quantized["QOperator", per_channel]
    source = onnx.load(path)
    result = export.from_onnx(path, None, requant="float")
    assert result.model.metadata["prequantized"]
    x = images(10)
    y_q, y = _run(result, x)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert np.array_equal(y, session.run(None, {"input": x})[0])
    assert np.array_equal(y_q, run_qonnx(result.quant_onnx, result.model, x))
    # scales, zero points and weights are onnxruntime's, untouched
    inits = {i.name: numpy_helper.to_array(i) for i in source.graph.initializer}
    convs = [n for n in source.graph.node if n.op_type == "QLinearConv"]
    layers = {layer.name: layer for layer in result.model.layers}
    assert len(convs) == 5
    for node in convs:
        spec = result.model.tensors[node.output[0]]
        assert spec.scale == float(inits[node.input[6]]) and spec.zero_point == inits[node.input[7]]
        layer = layers[node.name]
        assert np.array_equal(layer.arrays["weights"], inits[node.input[3]].transpose(0, 2, 3, 1))
        assert np.array_equal(layer.arrays["bias"], inits[node.input[8]])


@pytest.mark.parametrize("per_channel", [True, False])
def test_qdq_model_imported(ort_quantized, per_channel):
    path = ort_quantized["QDQ", per_channel]
    source = onnx.load(path)
    result = export.from_onnx(path, None, requant="float")
    x = images(200)  # enough that the fused session's 2-LSB cases show on this machine too
    y_q, y = _run(result, x)
    # What is defined: model.q.onnx, built from the imported integers, equals runtime/ exactly,
    assert np.array_equal(y_q, run_qonnx(result.quant_onnx, result.model, x))
    # and those integers are the QDQ graph's own: every conv's int8 weights, as they are.
    inits = {i.name: numpy_helper.to_array(i) for i in source.graph.initializer}
    dequantized = {n.output[0]: inits[n.input[0]] for n in source.graph.node
                   if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    convs = {layer.name: layer for layer in result.model.layers if layer.op == "conv2d"}
    checked = 0
    for node in source.graph.node:
        if node.op_type == "Conv" and node.name in convs and node.input[1] in dequantized:
            want = dequantized[node.input[1]].transpose(0, 2, 3, 1)
            assert np.array_equal(convs[node.name].arrays["weights"], want)
            checked += 1
    assert checked == len(convs) > 0
    # onnxruntime's own session on the QDQ graph is not a bit-exact reference: fused, it runs
    # int8 kernels chosen per CPU (2 LSB apart from runtime/ on an AMD EPYC); unfused, as here,
    # it runs the graph as ONNX defines it, DequantizeLinear -> float32 Conv -> QuantizeLinear.
    # Each layer then rounds float32 sums where runtime/ has exact int32 ones, so a layer may
    # land one step apart, and a step at a layer's input can move its output by one more, over
    # the model's 5 requantizing layers. Hence a loose bound, plus a mean that catches a
    # systematic error (a wrong scale or zero point moves most outputs, not a few).
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    steps = np.abs(session.run(None, {"input": x})[0] - y) / result.model.output_spec.scale
    assert steps.max() <= 4.001 and steps.mean() <= 0.5
    quantize_nodes = [n for n in source.graph.node if n.op_type == "QuantizeLinear"]
    matched = 0
    for node in quantize_nodes:
        if node.input[0] in result.model.tensors:
            spec = result.model.tensors[node.input[0]]
            assert spec.scale == float(inits[node.input[1]])
            assert spec.zero_point == int(inits[node.input[2]])
            matched += 1
    assert matched >= 8


def test_uint8_activations_are_refused(ort_quantized, tmp_path):
    folder = ort_quantized["QDQ", True].parent
    path = tmp_path / "u8.onnx"
    quantize_static(folder / "float.onnx", path, Reader(images(8, seed=1)),
                    quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    with pytest.raises(runtime.TinyconvError, match="needs int8 activations"):
        export.from_onnx(path, None)
