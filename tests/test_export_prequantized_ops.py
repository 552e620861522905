"""Real models as users bring them, quantized by onnxruntime's ``quantize_static`` with every op
it writes for them: QLinearSoftmax, QLinearConcat, QLinearMul, QLinearSigmoid, QLinearLeakyRelu,
and (MLPerf Tiny's ResNet-8 and DS-CNN with their Softmax, Keras through tf2onnx, not
pre-processed) the batch norms' QLinearMul / QLinearAdd of constants and the Dense's
QLinearMatMul + QLinearAdd. tinyconv keeps onnxruntime's integers;
in float mode a QOperator model then computes exactly what onnxruntime computes on it."""
from __future__ import annotations

import json
import os
from typing import NamedTuple

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quantize_static)

import export
import mlperf_tiny
import runtime
from _host_device import tinyconv
from export.qonnx import run_qonnx
from runtime import kernels
from runtime.kernels.softmax import OUTPUT_SCALE

SIDE = 8
NEW_OPS = {"QLinearSoftmax", "QLinearConcat", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu"}


class Reader(CalibrationDataReader):
    def __init__(self, x):
        self.batches = iter([{"input": x[i:i + 4]} for i in range(0, len(x), 4)])

    def get_next(self):
        return next(self.batches, None)


def torch_net():
    """Two branches (LeakyRelu, Sigmoid) concatenated, a conv, SiLU written as x * sigmoid(x),
    a mean over H, W, a linear layer and Softmax."""
    import torch
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)
            self.c, self.fc = nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.Linear(6, 5)
            self.leaky = nn.LeakyReLU(0.1)

        def forward(self, x):
            y = torch.cat([self.leaky(self.a(x)), torch.sigmoid(self.b(x))], 1)
            y = self.c(y)
            y = (y * torch.sigmoid(y)).mean((2, 3))
            return torch.softmax(self.fc(y), 1)

    torch.manual_seed(3)
    return Net().eval()


def torch_images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, 3, SIDE, SIDE)).astype(np.float32)


class Quantized(NamedTuple):
    path: object  # the model quantize_static wrote
    x: np.ndarray  # test inputs in its input layout
    source: object  # the float model it quantized


def quantize(source, path, calibration, x, fmt: str, per_channel: bool) -> Quantized:
    quantize_static(str(source), str(path), Reader(calibration),
                    quant_format=getattr(QuantFormat, fmt), per_channel=per_channel,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return Quantized(path, x, source)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> Quantized."""
    import torch
    folder = tmp_path_factory.mktemp("prequant_ops")
    source = folder / "torch.onnx"
    torch.onnx.export(torch_net(), (torch.from_numpy(torch_images(2, 0)),), str(source),
                      dynamo=False, opset_version=17, input_names=["input"],
                      output_names=["output"], dynamic_axes={"input": {0: "N"}})
    paths = {}
    for fmt in ("QOperator", "QDQ"):
        for per_channel in (True, False):
            paths[f"torch_{fmt}_{per_channel}"] = quantize(
                source, folder / f"torch_{fmt}_{per_channel}.onnx", torch_images(16, 1),
                torch_images(40, 5), fmt, per_channel)
    # ResNet-8 with its final Softmax, as tf2onnx writes it and without quant_pre_process: the
    # batch norms stay Mul + Add, the Dense stays MatMul + Add
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    keras = folder / "resnet8.onnx"
    mlperf_tiny.to_onnx(mlperf_tiny.keras_resnet8(softmax=True), keras)
    calibration = mlperf_tiny.inputs("resnet8", 16, seed=1)
    x = mlperf_tiny.inputs("resnet8", 40, seed=5)
    paths["resnet8_QOperator"] = quantize(keras, folder / "r8_qop.onnx", calibration, x,
                                          "QOperator", True)
    paths["resnet8_QDQ"] = quantize(keras, folder / "r8_qdq.onnx", calibration, x, "QDQ", False)
    # DS-CNN: depthwise convs, each batch norm a constant's QLinearMul + QLinearAdd; per tensor
    keras = folder / "dscnn.onnx"
    mlperf_tiny.to_onnx(mlperf_tiny.keras_dscnn(softmax=True), keras)
    paths["dscnn_QOperator"] = quantize(
        keras, folder / "ds_qop.onnx", mlperf_tiny.inputs("dscnn", 16, seed=1),
        mlperf_tiny.inputs("dscnn", 20, seed=5), "QOperator", False)
    return paths


@pytest.fixture(scope="module")
def exports(models):
    return {name: export.from_onnx(path, None, requant="float")
            for name, (path, _, _) in models.items()}


def run(result, x):
    """runtime/'s int8 output and its dequantized value, for float input in the ONNX layout."""
    spec = result.model.input_spec
    nhwc = x.transpose(0, 2, 3, 1) if result.model.metadata["input_layout"] == "NCHW" else x
    y = runtime.run(result.model, kernels.quantize(nhwc, spec.scale, spec.zero_point))
    out = result.model.output_spec
    return y, kernels.dequantize(y, out.scale, out.zero_point)


def session(path, fused: bool = True):
    options = ort.SessionOptions()
    if not fused:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def int8_tensors(model: onnx.ModelProto) -> dict[str, str]:
    """onnxruntime's int8 activations -> the tensor names tinyconv gives them: QLinear* nodes'
    outputs keep their names, a QuantizeLinear's output is its float input's."""
    return {n.output[0]: n.input[0] if n.op_type == "QuantizeLinear" else n.output[0]
            for n in model.graph.node
            if n.op_type.startswith("QLinear") or n.op_type in ("QGemm", "QuantizeLinear")}


QOPERATOR = ["torch_QOperator_True", "torch_QOperator_False", "resnet8_QOperator",
             "dscnn_QOperator"]


def test_onnxruntime_writes_the_ops_under_test(models):
    """So that the tests below cannot pass by onnxruntime no longer writing these ops."""
    ops = {n.op_type for n in onnx.load(models["torch_QOperator_True"].path).graph.node}
    assert NEW_OPS <= ops
    keras = onnx.load(models["resnet8_QOperator"].path)
    inits = {i.name for i in keras.graph.initializer}
    ops = [(n.op_type, n.input[3] in inits) for n in keras.graph.node
           if n.op_type in ("QLinearMul", "QLinearAdd")]
    assert ("QLinearMul", True) in ops and ("QLinearAdd", True) in ops  # with a constant
    assert {"QLinearMatMul", "QLinearSoftmax"} <= {n.op_type for n in keras.graph.node}


@pytest.mark.parametrize("name", QOPERATOR)
def test_qoperator_equals_onnxruntime_on_every_tensor(models, exports, name):
    """The output, and every int8 activation onnxruntime computes that tinyconv also holds
    (a constant's QLinearAdd / QLinearMul is one layer: both sides have its output)."""
    path, x, _ = models[name]
    result = exports[name]
    source = onnx.load(path)
    y_q, y = run(result, x)
    assert np.array_equal(y, session(path).run(None, {"input": x})[0])
    assert np.array_equal(y_q, run_qonnx(result.quant_onnx, result.model, x))
    shared = {q: t for q, t in int8_tensors(source).items() if t in result.model.tensors}
    # every layer's output but the last (renamed to the graph output, compared above)
    assert len(shared) >= len(result.model.layers) - 1
    source.graph.output.extend(helper.make_tensor_value_info(q, TensorProto.INT8, None)
                               for q in shared)
    want = dict(zip(shared, session(source.SerializeToString()).run(list(shared),
                                                                    {"input": x})))
    spec = result.model.input_spec
    nhwc = x.transpose(0, 2, 3, 1) if result.model.metadata["input_layout"] == "NCHW" else x
    _, got = runtime.run(result.model, kernels.quantize(nhwc, spec.scale, spec.zero_point),
                         collect=True)
    for q, tensor in shared.items():
        expected = want[q]
        if expected.ndim == 4:
            expected = expected.transpose(0, 2, 3, 1)
        np.testing.assert_array_equal(got[tensor].reshape(expected.shape), expected,
                                      err_msg=tensor)


def _single_node_model(source: onnx.ModelProto, node, x_shape) -> bytes:
    """``node`` alone, with its initializers, reading an int8 input of ``x_shape``."""
    inits = [i for i in source.graph.initializer if i.name in node.input]
    x = node.input[2] if node.op_type == "QLinearConcat" else node.input[0]
    graph = helper.make_graph(
        [node], "one", [helper.make_tensor_value_info(x, TensorProto.INT8, x_shape)],
        [helper.make_tensor_value_info(node.output[0], TensorProto.INT8, None)], inits)
    model = helper.make_model(graph, opset_imports=list(source.opset_import))
    return model.SerializeToString()


@pytest.mark.parametrize("name", QOPERATOR)
def test_every_table_equals_onnxruntime_on_all_256_codes(models, exports, name):
    """Each lookup layer (QLinearSigmoid, QLinearLeakyRelu, a constant's QLinearAdd /
    QLinearMul) against the source's own node, run by onnxruntime on every int8 code of every
    channel."""
    source = onnx.load(models[name].path)
    nodes = {n.name: n for n in source.graph.node}
    checked = 0
    for layer in exports[name].model.layers:
        if layer.op != "lookup":
            continue
        node = nodes[layer.name]
        table = layer.arrays["table"].reshape(-1, 256)
        channels = exports[name].model.tensors[layer.output].shape[-1]
        codes = np.broadcast_to(np.arange(-128, 128, dtype=np.int8), (channels, 256))
        rank4 = len(exports[name].model.tensors[layer.output].shape) == 3
        x = codes[None, :, None, :] if rank4 else np.ascontiguousarray(codes.T)
        y = session(_single_node_model(source, node, list(x.shape))).run(
            None, {node.input[0]: np.ascontiguousarray(x)})[0]
        y = y[0, :, 0, :] if rank4 else y.T
        np.testing.assert_array_equal(np.broadcast_to(table, y.shape), y, err_msg=layer.name)
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("name", ["torch_QDQ_True", "torch_QDQ_False", "resnet8_QDQ"])
def test_qdq_within_steps_of_onnxruntime(models, exports, name):
    """model.q.onnx equals runtime/ exactly. onnxruntime's session on the QDQ graph is not a
    bit-exact reference: where it leaves DequantizeLinear -> float op -> QuantizeLinear (the
    Softmax, the constants' Mul / Add, and everything with fusion off) it rounds float32
    results where the QLinear kernels tinyconv follows round their own way; one step at a
    layer can grow by a step or two over ResNet-8's requantizing layers. Its Softmax is
    calibrated to 1/255, tinyconv's is 1/256 (a warning says so): up to one more step.
    Measured here: at most 3.7 steps of 1/256, mean 0.3; the bound keeps a margin, the mean
    catches a systematic error (a wrong scale or zero point moves most outputs)."""
    path, x, _ = models[name]
    result = exports[name]
    y_q, y = run(result, x)
    assert np.array_equal(y_q, run_qonnx(result.quant_onnx, result.model, x))
    assert any("Softmax" in w and "1/256" in w for w in result.model.metadata["warnings"])
    assert result.model.output_spec.scale == np.float32(OUTPUT_SCALE)
    for fused in (True, False):
        steps = np.abs(session(path, fused).run(None, {"input": x})[0] - y) / OUTPUT_SCALE
        assert steps.max() <= 5.001 and steps.mean() <= 0.5, (fused, steps.max(), steps.mean())


@pytest.mark.parametrize("name", QOPERATOR + ["torch_QDQ_True", "resnet8_QDQ"])
def test_model_onnx_is_the_float_model_the_quantized_one_stands_for(models, exports, name):
    """model.onnx has the Relus onnxruntime folded into the quantization ranges back: it
    follows the float model that was quantized as closely as the int8 model does (without
    them ResNet-8's probabilities are off by up to 0.98), and adding them changes no integer
    (the tests above)."""
    path, x, source = models[name]
    original = session(source).run(None, {"input": x})[0]
    quantized = session(path).run(None, {"input": x})[0]
    dequantized = session(exports[name].float_model.SerializeToString()).run(
        None, {"input": x})[0]
    assert np.abs(dequantized - original).max() <= 2 * np.abs(quantized - original).max() + 0.01


def test_swish_of_a_quantized_sigmoid_stays_two_layers(exports):
    """x * sigmoid(x) is one table for a float model; onnxruntime requantized the sigmoid's
    output, so here it is a table and a mul (else one step apart from onnxruntime)."""
    ops = [layer.op for layer in exports["torch_QOperator_True"].model.layers]
    assert ops.count("lookup") == 3 and ops.count("mul") == 1


def test_unsupported_com_microsoft_op_is_one_line(models, tmp_path):
    """QLinearReduceMean (onnxruntime has it; tinyconv does not import it) through the CLI."""
    source = onnx.load(models["torch_QOperator_True"].path)
    for node in source.graph.node:
        if node.op_type == "QLinearSigmoid":
            node.op_type = "QLinearReduceMean"
            node.attribute.extend([helper.make_attribute("axes", [2, 3]),
                                   helper.make_attribute("keepdims", 1)])
            name = node.name
            break
    path = tmp_path / "bad.onnx"
    onnx.save(source, path)
    done = tinyconv("export", path, "--out", tmp_path / "out", "--requant", "float", "-q")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert name in lines[0] and "QLinearReduceMean" in lines[0]


@pytest.mark.parametrize("name", ["torch_QOperator_True", "resnet8_QOperator"])
def test_verify_on_the_host_device(models, tmp_path, name):
    """tinyconv export + verify, as a user runs them: the host device equals runtime/ and
    onnxruntime on model.q.onnx for every image (ResNet-8: per-channel tables on feature maps
    and on the Dense's vector)."""
    path, x, _ = models[name]
    out = tmp_path / "export"
    done = tinyconv("export", path, "--out", out, "--requant", "float", "-q")
    assert done.returncode == 0, done.stderr
    data = tmp_path / "data.npz"
    np.savez(data, x=x[:8])
    report = tmp_path / "report.json"
    done = tinyconv("verify", out, "--input", data, "--device", "host", "--json", report, "-q")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(report.read_text())
    assert summary["exit_status"] == 0
    assert summary["images"] == summary["device_equal_images"] == summary["ort_equal_images"] == 8
