"""The models users bring: small tf.keras.applications networks and a PyTorch
MobileNetV2/V3-style block net, through both front ends.

Keras MobileNet (alpha 0.25), MobileNetV2 (alpha 0.35) and MobileNetV3Small (standard and
minimalistic), random weights with non-trivial batch norm statistics (mlperf_tiny._keras_stats),
each converted twice as a user would: by tf2onnx (opset 17) for ``export.from_onnx`` in float
and fixed mode, and by TensorFlow's full-int8 TFLite converter for ``export.from_tflite``.
The PyTorch net (ReLU6, residual Add, 1x1 expand, depthwise, Hardswish, squeeze-excite of
AdaptiveAvgPool + 1x1 convs + Hardsigmoid + Mul) goes through torch.onnx.

What each converter wrote is the premise, checked first: tf2onnx writes Keras' hard sigmoid as
``Clip(x + 3, 0, 6) * (1/6)`` (export/activation_fold.py makes it one HardSigmoid or HardSwish)
and the MobileNet heads as a 1x1 conv, Reshape, Softmax; the TFLite converter writes MobileNetV3's
hard sigmoid gates as a MUL by an int8 constant (a table of TFLM's MUL).

Oracles: the framework for model.onnx and model.q.onnx (float), onnxruntime on model.q.onnx for
every tensor in float mode (``==``), float mode layer by layer for fixed mode (within 1 LSB),
TFLite Micro for every tensor of the .tflite import (``==``), runtime/ for one image through the
native build of the firmware (``==``). A per-channel Rescaling at the input, which the TFLite
converter writes as MUL and ADD by int8 constants, is checked the same way on a small model;
through ONNX such input preprocessing is refused in one line. EfficientNetB0 and NASNetMobile
(20 s and 70 s to convert) are kept out; docs/EXPORT.md says what they do.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pytest
from _export_checks import (assert_fixed_within_one_lsb_of_float,
                            assert_float_mode_equals_onnxruntime, assert_int8_tracks, ort_float)
from _firmware_models import build_native_runner, compile_kernel_objects, run_native

import export
import mlperf_tiny as mt
from export.c_codegen import write_c_sources
from export.tflite_reference import compare
from runtime import kernels

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
pytest.importorskip("tflite_micro")
torch = pytest.importorskip("torch")

N_CALIB, N_TEST = 8, 4
SEED = 11


def _applications(name: str):
    apps = tf.keras.applications
    tf.keras.utils.set_random_seed(SEED)
    if name == "mobilenet":
        model = apps.MobileNet(input_shape=(96, 96, 3), alpha=0.25, weights=None, classes=3)
    elif name == "mobilenet_v2":
        model = apps.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, weights=None, classes=3)
    else:
        model = apps.MobileNetV3Small(input_shape=(64, 64, 3), weights=None, classes=3,
                                      minimalistic=name.endswith("minimalistic"),
                                      include_preprocessing=False)
    return mt._keras_stats(model, SEED)


def torch_block_net(seed: int = SEED):
    """Stem conv + Hardswish, five inverted-residual blocks (1x1 expand, depthwise 3x3, optional
    squeeze-excite, 1x1 project, residual Add when the shape allows), 1x1 conv + Hardswish,
    global average pool, Linear, Softmax: 3x64x64 -> 5."""
    nn = torch.nn
    torch.manual_seed(seed)

    class SqueezeExcite(nn.Module):
        def __init__(self, channels: int, reduced: int):
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.down, self.up = nn.Conv2d(channels, reduced, 1), nn.Conv2d(reduced, channels, 1)
            self.gate = nn.Hardsigmoid()

        def forward(self, x):
            return x * self.gate(self.up(torch.relu(self.down(self.pool(x)))))

    class Block(nn.Module):
        def __init__(self, cin, cout, expand, stride, act, se):
            super().__init__()
            mid = cin * expand
            self.body = nn.Sequential(
                nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), act(),
                nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid),
                act(), *([SqueezeExcite(mid, max(8, mid // 4))] if se else []),
                nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.body(x)
            return x + y if self.residual else y

    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish(),
        Block(16, 16, 1, 1, nn.ReLU6, True), Block(16, 24, 4, 2, nn.ReLU6, False),
        Block(24, 24, 3, 1, nn.ReLU6, False), Block(24, 40, 3, 2, nn.Hardswish, True),
        Block(40, 40, 3, 1, nn.Hardswish, True),
        nn.Conv2d(40, 96, 1), nn.Hardswish(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(96, 5), nn.Softmax(1))
    net.input_shape = (3, 64, 64)
    return mt._torch_stats(net, seed)


KERAS = ("mobilenet", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_small_minimalistic")
ONNX_CASES = KERAS + ("torch_blocks",)
# the .tflite front end on the two that bring new patterns (residual ADD; HARD_SWISH and MUL by
# a constant): MobileNet and the minimalistic V3 go through too, but converting them costs 10 s
TFLITE = ("mobilenet_v2", "mobilenet_v3_small")
# ops the converter must have written: the patterns the export is tested on
PREMISE = {"mobilenet": {"Reshape", "Softmax"}, "mobilenet_v2": {"Add", "Clip"},
           "mobilenet_v3_small": {"Add", "Clip", "Mul", "Softmax"},
           "mobilenet_v3_small_minimalistic": {"Reshape", "Softmax"},
           "torch_blocks": {"HardSwish", "HardSigmoid", "Mul", "Add", "Clip"}}


@dataclass
class Case:
    name: str
    framework: object
    shape: tuple  # the framework's input shape, batch excluded
    results: dict = field(default_factory=dict)  # requant mode -> ExportResult
    source: onnx.ModelProto | None = None
    tflite: bytes | None = None
    tflite_result: object = None

    def inputs(self, count: int, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).uniform(-1, 1, (count, *self.shape)).astype(np.float32)

    def nhwc(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if self.name == "torch_blocks" else x

    def reference(self, x: np.ndarray) -> np.ndarray:
        if self.name == "torch_blocks":
            return mt.torch_float(self.framework, x)
        return mt.keras_float(self.framework, x)


_CACHE: dict = {}


def _case(name: str, tmp_path_factory) -> Case:
    """Each model built, converted and exported once for the module."""
    if name not in _CACHE:
        root = tmp_path_factory.mktemp(name)
        if name == "torch_blocks":
            net = torch_block_net()
            case = Case(name, net, net.input_shape)
            path = mt.torch_to_onnx(net, root / "source.onnx", dynamo=False)
        else:
            model = _applications(name)
            case = Case(name, model, tuple(model.input_shape[1:]))
            path = root / "source.onnx"
            mt.to_onnx(model, path, opset=17)
        case.source = onnx.load(str(path))
        calibration = case.inputs(N_CALIB, seed=1)
        case.results = {mode: export.from_onnx(path, calibration, requant=mode)
                        for mode in ("float", "fixed")}
        _CACHE[name] = case
    return _CACHE[name]


@pytest.fixture(scope="module", params=ONNX_CASES)
def onnx_case(request, tmp_path_factory) -> Case:
    return _case(request.param, tmp_path_factory)


@pytest.fixture(scope="module", params=TFLITE)
def tflite_case(request, tmp_path_factory) -> Case:
    import tflite_models
    case = _case(request.param, tmp_path_factory)
    if case.tflite is None:
        case.tflite = tflite_models.convert(case.framework, samples=8)
        case.tflite_result = export.from_tflite(case.tflite, name=case.name)
    return case


@pytest.fixture(scope="module")
def kernel_objects(tmp_path_factory):
    return compile_kernel_objects(tmp_path_factory.mktemp("kernels"), False)


def test_the_converter_wrote_what_this_test_is_about(onnx_case):
    ops = {node.op_type for node in onnx_case.source.graph.node}
    assert PREMISE[onnx_case.name] <= ops, ops
    graph = onnx_case.results["float"].float_model.graph
    constants = {i.name for i in graph.initializer}
    matmuls = {n.output[0] for n in graph.node if n.op_type == "MatMul"}
    assert not [n.name for n in graph.node if n.op_type in ("Add", "Mul")
                and constants & set(n.input) and not matmuls & set(n.input)]  # all folded
    layers = onnx_case.results["fixed"].model.layers
    functions = {layer.params.get("function") for layer in layers}
    if onnx_case.name == "mobilenet_v3_small":
        assert "HardSigmoid" in {node.op_type for node in graph.node}
    if onnx_case.name in ("mobilenet_v3_small", "torch_blocks"):
        assert {"HardSigmoid", "HardSwish"} <= functions, functions
    assert "softmax" in {layer.op for layer in layers}


def test_model_onnx_reproduces_the_framework(onnx_case):
    result = onnx_case.results["float"]
    onnx.checker.check_model(result.float_model, full_check=True)
    x = onnx_case.inputs(N_TEST, seed=5)
    want = onnx_case.reference(x)
    np.testing.assert_allclose(ort_float(result.float_model, x), want, rtol=1e-4, atol=1e-5)


def test_float_mode_equals_onnxruntime_on_every_tensor(onnx_case):
    x = onnx_case.inputs(N_TEST, seed=5)
    assert_float_mode_equals_onnxruntime(onnx_case.results["float"], x, onnx_case.nhwc(x))


def test_fixed_mode_within_one_lsb_per_layer(onnx_case):
    x = onnx_case.inputs(N_TEST, seed=5)
    assert_fixed_within_one_lsb_of_float(onnx_case.results, onnx_case.nhwc(x))


def test_int8_model_tracks_the_framework(onnx_case):
    x = onnx_case.inputs(N_TEST, seed=5)
    assert_int8_tracks(onnx_case.reference(x), onnx_case.results, x)


def test_tflite_every_tensor_equals_tflm(tflite_case):
    result = tflite_case.tflite_result
    comparison = compare(result.model, tflite_case.tflite, tflite_case.inputs(2, seed=2))
    assert comparison.first is None, comparison.summary()
    assert comparison.tensors == len(result.model.layers) + 1
    if tflite_case.name == "mobilenet_v3_small":  # the hard sigmoid's MUL by 1/6
        functions = {layer.params.get("function") for layer in result.model.layers}
        assert "QLinearMul" in functions


def _native(result, x_float, kernel_objects, directory: Path) -> None:
    """One image through the native firmware build == runtime/ (fixed mode: no float code)."""
    model = result.model
    spec = model.input_spec
    x_q = kernels.quantize(x_float, spec.scale, spec.zero_point)
    write_c_sources(model, directory)
    exe = build_native_runner(directory, kernel_objects, False)
    got = run_native(exe, model, x_q)
    import runtime
    want = runtime.run(model, x_q).reshape(got.shape)
    np.testing.assert_array_equal(got, want)


def test_onnx_fixed_on_native_firmware_equals_runtime(onnx_case, kernel_objects, tmp_path):
    x = onnx_case.nhwc(onnx_case.inputs(1, seed=8))
    _native(onnx_case.results["fixed"], x, kernel_objects, tmp_path)


def test_tflite_on_native_firmware_equals_runtime(tflite_case, kernel_objects, tmp_path):
    _native(tflite_case.tflite_result, tflite_case.inputs(1, seed=8), kernel_objects, tmp_path)


def test_input_preprocessing_is_refused_in_one_line():
    """Keras' Rescaling at the input (MobileNetV3's ``include_preprocessing=True``) as tf2onnx
    writes it: a Mul and an Add by constants on the (transposed) model input."""
    from onnx import TensorProto, helper, numpy_helper

    from runtime.errors import TinyconvError
    inits = [numpy_helper.from_array(np.float32(1 / 127.5), "s"),
             numpy_helper.from_array(np.float32(-1.0), "o"),
             numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")]
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Mul", ["t", "s"], ["m"], name="rescaling/mul"),
             helper.make_node("Add", ["m", "o"], ["a"], name="rescaling/add"),
             helper.make_node("Conv", ["a", "w"], ["y"])]
    graph = helper.make_graph(
        nodes, "pre", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8, 8, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4, 6, 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    with pytest.raises(TinyconvError, match=r"^node 'rescaling/mul' \(Mul\) scales or offsets "
                                            r"the model input .* preprocess on the host$") as err:
        export.from_onnx(model, x)
    assert "\n" not in str(err.value)


def test_tflite_input_rescaling_is_two_tables_equal_to_tflm(kernel_objects, tmp_path):
    """A per-channel Keras Rescaling before a ``same`` conv (the zero padding keeps the
    converter from folding it into the weights) arrives as MUL and ADD by int8 constants, one
    per channel: each a table of TFLM's arithmetic, == TFLM on every tensor and on the device."""
    from test_tflite_import import _builtin_ops
    layers = tf.keras.layers
    tf.keras.utils.set_random_seed(SEED)
    x = tf.keras.Input((12, 12, 3), batch_size=1)
    h = layers.Rescaling(np.array([1 / 100, 1 / 120, 1 / 140], np.float32),
                         offset=np.array([-1.0, -0.5, 0.2], np.float32))(x)
    h = layers.Conv2D(4, 3, padding="same", activation="relu")(h)
    model = tf.keras.Model(x, layers.Dense(3)(layers.GlobalAveragePooling2D()(h)))
    images = np.random.default_rng(4).uniform(0, 255, (10, 12, 12, 3)).astype(np.float32)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([images[i:i + 1]] for i in range(8))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    data = converter.convert()
    assert _builtin_ops(data)[1:3] == ["MUL", "ADD"]
    result = export.from_tflite(data, name="rescaling")
    tabled = [layer.params["attributes"]["constant"] for layer in result.model.layers[:2]]
    assert [layer.params["function"] for layer in result.model.layers[:2]] == \
        ["QLinearMul", "QLinearAdd"] and all(len(set(c)) == 3 for c in tabled)
    comparison = compare(result.model, data, images[8:])
    assert comparison.first is None, comparison.summary()
    assert comparison.tensors == len(result.model.layers) + 1
    _native(result, images[9:], kernel_objects, tmp_path)


FUSED = ["Conv", "HardSigmoid", "Mul", "Conv"]


@pytest.mark.parametrize("three,sixth,opset,fused", [(3.0, 1 / 6, 13, FUSED),
                                                     (3.0, 1 / 6, 17, FUSED),
                                                     (2.0, 1 / 6, 17, None),
                                                     (3.0, 0.2, 17, None)])
def test_only_the_exact_hard_swish_chain_is_fused(three, sixth, opset, fused):
    """``x * Clip(x + 3, 0, 6) * (1/6)`` becomes ``x * HardSigmoid(x)`` (valid in opset 13,
    which has no HardSwish) with the same outputs, and one HardSwish table; another offset or
    factor is another function, left alone (and refused by name)."""
    from onnx import TensorProto, helper, numpy_helper

    from runtime.errors import TinyconvError
    rng = np.random.default_rng(2)
    arrays = {"w": rng.normal(size=(4, 2, 3, 3)), "v": rng.normal(size=(3, 4, 1, 1)),
              "three": np.array(three), "lo": np.array(0.0), "hi": np.array(6.0),
              "sixth": np.array(sixth)}
    mk = helper.make_node
    nodes = [mk("Conv", ["x", "w"], ["c"]), mk("Add", ["c", "three"], ["a"], name="plus"),
             mk("Clip", ["a", "lo", "hi"], ["r"]), mk("Mul", ["r", "sixth"], ["g"]),
             mk("Mul", ["c", "g"], ["s"]), mk("Conv", ["s", "v"], ["y"])]
    graph = helper.make_graph(
        nodes, "hswish", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3, 6, 6])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in arrays.items()])
    source = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    x = rng.normal(0, 2, (6, 2, 8, 8)).astype(np.float32)
    if fused is None:
        with pytest.raises(TinyconvError, match="^node 'plus' has op Add with a constant"):
            export.from_onnx(source, x)
        return
    result = export.from_onnx(source, x)
    assert [node.op_type for node in result.float_model.graph.node] == fused
    assert [(layer.op, layer.params.get("function")) for layer in result.model.layers] == \
        [("conv2d", None), ("lookup", "HardSwish"), ("conv2d", None)]
    np.testing.assert_allclose(ort_float(result.float_model, x), ort_float(source, x),
                               rtol=1e-5, atol=1e-5)
