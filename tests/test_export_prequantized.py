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
from export.onnx_import import clean_model, load_model
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
    x = images(10)
    y_q, y = _run(result, x)
    assert np.array_equal(y_q, run_qonnx(result.quant_onnx, result.model, x))
    # onnxruntime runs the QDQ graph with its own fused kernels: within one output step
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    lsb = result.model.output_spec.scale
    assert np.abs(session.run(None, {"input": x})[0] - y).max() <= lsb * 1.001
    inits = {i.name: numpy_helper.to_array(i) for i in source.graph.initializer}
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
