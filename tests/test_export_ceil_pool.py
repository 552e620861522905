"""AveragePool with ceil_mode=1 through export: the last window of each axis overhangs the
declared padding, and with count_include_pad=1 its divisor counts the declared padding but not
the overhang (onnxruntime's AveragePool, PyTorch's AvgPool2d(ceil_mode=True)).

model.q.onnx must reproduce that with onnxruntime's QLinearAveragePool, which would count the
overhang: float mode == onnxruntime on every tensor; the pooled int8 values must stay within a
couple of steps of the float model's own AveragePool output (a divisor of 9 instead of 6 at the
border would be off by a third); shapes onnxruntime would compute differently from ONNX shape
inference, and onnxruntime-quantized pools whose divisor tinyconv cannot reproduce, are refused
with a message."""
from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import export
import runtime
from export.qonnx import run_qonnx
from runtime.errors import TinyconvError
from runtime.inputs import float_output_to_nhwc

H = 8  # 3x3 stride-2 windows with 1 declared pad: the fifth overhangs by one


def _model(pool_attrs: dict, size: int = H) -> onnx.ModelProto:
    rng = np.random.default_rng(5)
    mk = helper.make_node
    nodes = [mk("Conv", ["input", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             mk("Relu", ["c"], ["r"], name="relu"),
             mk("AveragePool", ["r"], ["pool"], name="pool", **pool_attrs),
             mk("AveragePool", ["pool"], ["pool2"], name="pool2", kernel_shape=[2, 2],
                strides=[2, 2], ceil_mode=1),
             mk("GlobalAveragePool", ["pool2"], ["gap"], name="gap"),
             mk("Flatten", ["gap"], ["flat"], name="flatten"),
             mk("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1)]
    inits = [numpy_helper.from_array(rng.normal(0, 0.4, (6, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.1, 6).astype(np.float32), "b"),
             numpy_helper.from_array(rng.normal(0, 0.3, (5, 6)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(rng.normal(0, 0.1, 5).astype(np.float32), "fc_b")]
    graph = helper.make_graph(
        nodes, "ceil", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                      ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


POOL = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1,
            count_include_pad=1)


def _images(count: int, seed: int, size: int = H) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, 3, size, size)).astype(np.float32)


@pytest.fixture(scope="module")
def exports():
    return {mode: export.from_onnx(_model(POOL), _images(32, 1), requant=mode)
            for mode in ("float", "fixed")}


def test_ceil_overhang_is_recorded(exports):
    pool = next(layer for layer in exports["float"].model.layers if layer.name == "pool")
    assert pool.params["padding"] == [1, 1, 2, 2]
    assert pool.params["ceil_pad"] == [1, 1]
    assert pool.params["count_include_pad"] is True
    assert exports["float"].model.tensors[pool.output].shape == (5, 5, 6)


def test_float_mode_equals_onnxruntime_on_every_tensor(exports):
    result = exports["float"]
    x = _images(20, 2)
    expected = run_qonnx(result.quant_onnx, result.model, x, collect=True)
    x_q = expected[result.model.input]
    _, got = runtime.run(result.model, x_q, collect=True)
    for name in result.model.tensors:
        assert np.array_equal(got[name], expected[name]), f"tensor {name} differs"


@pytest.mark.parametrize("mode", ["float", "fixed"])
def test_pooled_values_follow_the_float_model(exports, mode):
    result = exports[mode]
    model = result.model
    probe = _model(POOL)
    probe.graph.output.append(helper.make_tensor_value_info("pool", TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    x = _images(20, 3)
    pool = next(layer for layer in model.layers if layer.name == "pool")
    want = float_output_to_nhwc(model, session.run(["pool"], {"input": x})[0], pool.output)
    spec = model.tensors[pool.output]
    x_q = runtime.kernels.quantize(x.transpose(0, 2, 3, 1), model.input_spec.scale,
                                   model.input_spec.zero_point)
    _, values = runtime.run(model, x_q, collect=True)
    got = (values[pool.output].astype(np.float32) - spec.zero_point) * spec.scale
    assert want.shape == got.shape
    assert np.abs(got - want).max() <= 3 * spec.scale


def test_window_starting_in_the_padding_is_refused():
    # 5 + 2 - 2 = 5, ceil(5 / 2) + 1 = 4 windows by shape inference; the fourth would start at
    # 6 - 1 = 5, in the end padding, and onnxruntime drops it
    model = _model(dict(kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
                   size=5)
    with pytest.raises(TinyconvError, match="starts in the padding"):
        export.from_onnx(model, _images(4, 1, size=5))


def _qoperator_pool(count_include_pad: int) -> onnx.ModelProto:
    mk = helper.make_node
    nodes = [mk("QuantizeLinear", ["input", "s", "z"], ["xq"], name="q"),
             mk("QLinearAveragePool", ["xq", "s", "z", "s", "z"], ["yq"], name="qpool",
                domain="com.microsoft", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                ceil_mode=1, count_include_pad=count_include_pad),
             mk("DequantizeLinear", ["yq", "s", "z"], ["output"], name="dq")]
    inits = [numpy_helper.from_array(np.float32(0.05), "s"),
             numpy_helper.from_array(np.int8(0), "z")]
    graph = helper.make_graph(
        nodes, "q", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, H, H])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 5, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                   helper.make_opsetid("com.microsoft", 1)])


def test_quantized_pool_counting_the_overhang_is_refused():
    with pytest.raises(TinyconvError, match="qpool.*ceil_mode=1 and count_include_pad=1"):
        export.from_onnx(_qoperator_pool(1), None)


def test_quantized_ceil_pool_without_counted_padding_equals_onnxruntime():
    source = _qoperator_pool(0)
    result = export.from_onnx(source, None, requant="float")
    session = ort.InferenceSession(source.SerializeToString(), providers=["CPUExecutionProvider"])
    x = _images(6, 4)[:1]
    want = session.run(None, {"input": x})[0]
    y = run_qonnx(result.quant_onnx, result.model, x)
    assert np.array_equal(y, runtime.run(result.model, runtime.kernels.quantize(
        x.transpose(0, 2, 3, 1), 0.05, 0)))
    got = (y.astype(np.float32) * 0.05).transpose(0, 3, 1, 2)
    assert np.array_equal(got, want)


def test_pytorch_avgpool_ceil_mode(tmp_path):
    """PyTorch's AvgPool2d(ceil_mode=True) keeps count_include_pad=True by default; its own
    exporter writes the ONNX node this module is about."""
    if os.environ.get("CI") == "true":
        import torch
    else:
        torch = pytest.importorskip("torch", reason="torch is not installed")
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True),
                              torch.nn.Flatten(), torch.nn.Linear(6 * 5 * 5, 5)).eval()
    path = tmp_path / "ceil.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.from_numpy(_images(2, 0)),), str(path), dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["logits"])
    pool = next(n for n in onnx.load(str(path)).graph.node if n.op_type == "AveragePool")
    attrs = {a.name: helper.get_attribute_value(a) for a in pool.attribute}
    assert attrs.get("ceil_mode") == 1 and attrs.get("count_include_pad") == 1
    result = export.from_onnx(str(path), _images(32, 1), requant="float")
    layer = next(x for x in result.model.layers if x.op == "avg_pool2d")
    assert layer.params["ceil_pad"] == [1, 1]
    x = _images(12, 2)
    expected = run_qonnx(result.quant_onnx, result.model, x, collect=True)
    _, got = runtime.run(result.model, expected[result.model.input], collect=True)
    for name in result.model.tensors:
        assert np.array_equal(got[name], expected[name]), f"tensor {name} differs"
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    out = result.model.output_spec
    logits = (got[result.model.output].astype(np.float32) - out.zero_point) * out.scale
    assert np.abs(logits - want).max() < 0.1 * np.abs(want).max()
