"""Elementwise activations as 256-entry tables (the ``lookup`` op, export/tables.py).

Oracles, all independent of the code under test:
- float mode: onnxruntime on model.q.onnx (DequantizeLinear -> op -> QuantizeLinear), on all
  256 input codes of every op, and on whole PyTorch and Keras (tf2onnx) models, every tensor;
- fixed mode: TensorFlow Lite Micro itself (the ``tflite_micro`` interpreter) running a
  full-integer .tflite made by TensorFlow's converter, for LOGISTIC, TANH, HARD_SWISH,
  LEAKY_RELU and PRELU, on all 256 codes;
- the device: the C runner built natively, the host device over a pty (verify) and both ARM
  boards under QEMU, each == runtime/.
"""
from __future__ import annotations

import io
import os
import re
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import export
import runtime
from _export_checks import assert_float_mode_equals_onnxruntime, run_one_layer
from _firmware_models import build_native_runner, compile_kernel_objects, run_native
from export import tables
from export.c_codegen import write_c_sources
from export.plan import plan_arena
from export.qonnx import run_qonnx
from runtime import kernels
from runtime.errors import ModelFileError, TinyconvError
from runtime.model import Layer, QuantModel, TensorSpec

CODES = np.arange(-128, 128)
CHANNELS = 3
# (ONNX op, attributes, PRelu slope or None)
CASES = [
    ("Sigmoid", {}, None), ("Tanh", {}, None), ("HardSigmoid", {"alpha": 0.25, "beta": 0.4}, None),
    ("HardSwish", {}, None), ("LeakyRelu", {"alpha": 0.15}, None),
    ("PRelu", {}, [0.3]), ("PRelu", {}, [0.1, -0.4, 1.3]), ("Elu", {"alpha": 0.7}, None),
    ("Selu", {}, None), ("Softplus", {}, None), ("Softsign", {}, None), ("Gelu", {}, None),
    ("Gelu", {"approximate": "tanh"}, None), ("Exp", {}, None), ("Neg", {}, None),
    ("Abs", {}, None), ("Swish", {}, None),
]
# |TFLM table - onnxruntime table| at the same quantization, all 256 codes: at most one rounding
# apart (measured over 300 random scales: 0 for Sigmoid and Tanh, 1 for HardSwish and
# LeakyRelu). PRelu adds the error of TFLite's int8 alpha (fixed_bound).
FIXED_BOUND = {"Sigmoid": 1, "Tanh": 1, "HardSwish": 1, "LeakyRelu": 1}


def fixed_bound(function: str, x: TensorSpec, y: TensorSpec, slope=None) -> int:
    """FIXED_BOUND, and for PRelu 1 LSB plus the largest x * (alpha's rounding error)."""
    if function != "PRelu":
        return FIXED_BOUND.get(function, 0)
    _, alpha_scale, _ = tables.quantize_slope(np.asarray(slope, np.float32))
    largest = 256 * x.scale
    return 1 + int(np.ceil(largest * alpha_scale / 2 / y.scale))


def _case_id(case):
    op, attrs, slope = case
    return op + "".join(f"_{k}={v}" for k, v in attrs.items()) + (
        f"_slope{len(slope)}" if slope else "")


def one_op_model(op: str, attrs: dict, slope) -> onnx.ModelProto:
    """x [N, 3, 1, 256] -> op -> y, float, as an exporter would write it."""
    inits, inputs = [], ["x"]
    if slope is not None:
        value = np.array(slope, np.float32)
        inits.append(numpy_helper.from_array(
            value.reshape(-1, 1, 1) if value.size > 1 else value, "slope"))
        inputs.append("slope")
    nodes = [helper.make_node(op, inputs, ["y"], name=op.lower(), **attrs)]
    if op == "Swish":  # SiLU as exporters write it: x * Sigmoid(x)
        nodes = [helper.make_node("Sigmoid", ["x"], ["s"], name="sigmoid"),
                 helper.make_node("Mul", ["x", "s"], ["y"], name="mul")]
    shape = ["N", CHANNELS, 1, 256]
    graph = helper.make_graph(nodes, "one_op",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(
        "", max(13, tables.LOOKUP_OPS[op]))])


def every_code(spec: TensorSpec) -> np.ndarray:
    """Float inputs [1, 3, 1, 256] whose quantization is each int8 code once per channel."""
    x = ((CODES - spec.zero_point) * np.float64(spec.scale)).astype(np.float32)
    return np.broadcast_to(x, (1, CHANNELS, 1, 256)).copy()


# -- every op, every code ------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("mode", ["float", "fixed"])
def test_every_code_of_every_op(case, mode):
    """float: runtime == onnxruntime on model.q.onnx for all 256 codes. fixed: the same for
    ops TFLM lacks (their table is the float one); TFLM's ops within FIXED_BOUND of it."""
    op, attrs, slope = case
    rng = np.random.default_rng(len(op))
    calibration = rng.uniform(-5.0, 4.0, (8, CHANNELS, 1, 256)).astype(np.float32)
    result = export.from_onnx(one_op_model(op, attrs, slope), calibration, requant=mode)
    model = result.model
    assert [layer.op for layer in model.layers] == ["lookup"]
    x = every_code(model.input_spec)
    x_nhwc = x.transpose(0, 2, 3, 1)
    x_q = kernels.quantize(x_nhwc, model.input_spec.scale, model.input_spec.zero_point)
    assert np.array_equal(x_q[0, 0, :, 0], CODES)
    if mode == "float" or op not in tables.TFLM_OPS:
        assert_float_mode_equals_onnxruntime(result, x, x_nhwc)
        return
    if op in tables.FIXED_OUTPUT:
        out = model.output_spec
        assert (out.scale, out.zero_point) == tables.FIXED_OUTPUT[op]
    got = runtime.run(model, x_q).astype(int)
    expected = run_qonnx(result.quant_onnx, model, x).astype(int)
    assert np.abs(got - expected).max() <= fixed_bound(op, model.input_spec, model.output_spec,
                                                       slope)


@pytest.mark.parametrize("op", sorted(tables.TFLM_OPS))
def test_fixed_tables_are_near_float_tables_at_random_scales(op):
    """The bound the whole-model tests use, over 30 random quantizations."""
    from export.quantize import activation_qparams

    rng = np.random.default_rng(11)
    worst = 0
    for _ in range(30):
        lo, hi = -rng.uniform(0.5, 12), rng.uniform(0.5, 12)
        x = TensorSpec("x", (1,), *activation_qparams(lo, hi))
        y = TensorSpec("y", (1,), *tables.FIXED_OUTPUT.get(op, activation_qparams(lo / 3, hi)))
        attrs = {"alpha": float(rng.uniform(0.01, 0.5))}
        slope = rng.uniform(-1, 1, 4).astype(np.float32) if op == "PRelu" else None
        args = (attrs if op == "LeakyRelu" else {}, (x.scale, x.zero_point),
                (y.scale, y.zero_point))
        fixed = tables.table(op, *args, "fixed", slope).astype(int)
        diff = np.abs(fixed - tables.table(op, *args, "float", slope).astype(int)).max()
        assert diff <= fixed_bound(op, x, y, slope)
        worst = max(worst, diff)
    assert worst >= (1 if op in ("HardSwish", "LeakyRelu", "PRelu") else 0)


def test_per_channel_table_has_a_row_per_channel():
    result = export.from_onnx(one_op_model("PRelu", {}, [0.1, -0.4, 1.3]),
                              np.linspace(-3, 3, 2 * CHANNELS * 256, dtype=np.float32).reshape(
                                  2, CHANNELS, 1, 256), requant="float")
    table = result.model.layers[0].arrays["table"]
    assert table.shape == (CHANNELS, 256)
    assert len({row.tobytes() for row in table}) == CHANNELS


# -- fixed mode: TFLite Micro itself -------------------------------------------------------------


def _tflite(tf, model, ranges, shape) -> bytes:
    def representative():
        rng = np.random.default_rng(0)
        for _ in range(8):
            yield [rng.uniform(lo, hi, (1, *shape)).astype(np.float32) for lo, hi in ranges]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


@pytest.fixture(scope="module")
def tflm_models():  # one user, so that pytest-xdist builds it once
    """Full-integer .tflite files made by TensorFlow's converter: two int8 inputs [1, 1, 256, 3]
    with different scales, each into LOGISTIC, TANH, HARD_SWISH and LEAKY_RELU; and PRELU with
    one alpha per channel, and with one alpha (each alone: beside other outputs the converter
    writes PReLU as RELU, MUL and ADD)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = pytest.importorskip("tensorflow")
    from ai_edge_litert.interpreter import Interpreter

    keras = tf.keras
    shape = (1, 256, CHANNELS)
    inputs = [keras.Input(shape, batch_size=1, name=f"in{k}") for k in range(2)]
    outputs = []
    for x in inputs:
        outputs += [keras.layers.Activation("sigmoid")(x), keras.layers.Activation("tanh")(x),
                    keras.layers.Activation("hard_swish")(x), keras.layers.LeakyReLU(0.2)(x)]
    models = [(keras.Model(inputs, outputs), ((-6.0, 5.0), (-2.5, 9.0)))]
    for axes, alpha in (([1, 2], [0.1, -0.3, 0.7]), ([1, 2, 3], 0.25)):
        x = keras.Input(shape, batch_size=1)
        prelu = keras.layers.PReLU(shared_axes=axes,
                                   alpha_initializer=keras.initializers.Constant(alpha))
        models.append((keras.Model(x, prelu(x)), ((-5.0, 4.0),)))
    built = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for model, ranges in models:
            flatbuffer = _tflite(tf, model, ranges, shape)
            built.append((flatbuffer, Interpreter(model_content=flatbuffer)))
    return built


def _quant(detail) -> tuple[float, int]:
    scale, zero_point = detail["quantization"]
    return float(scale), int(zero_point)


def test_fixed_tables_equal_tflite_micro_on_every_code(tflm_models):
    from tflite_micro.python.tflite_micro import runtime as tflm

    onnx_ops = {"LOGISTIC": "Sigmoid", "TANH": "Tanh", "HARD_SWISH": "HardSwish",
                "LEAKY_RELU": "LeakyRelu"}
    codes = np.broadcast_to(CODES.astype(np.int8)[:, None], (256, CHANNELS))
    checked = []
    for flatbuffer, reader in tflm_models:
        tensors = {d["index"]: d for d in reader.get_tensor_details()}
        outputs = [d["index"] for d in reader.get_output_details()]
        interpreter = tflm.Interpreter.from_bytes(flatbuffer)
        for k in range(len(reader.get_input_details())):
            interpreter.set_input(codes.reshape(1, 1, 256, CHANNELS).copy(), k)
        interpreter.invoke()
        for op in reader._get_ops_details():
            name, (source, *rest), (target,) = op["op_name"], op["inputs"], op["outputs"]
            x_q, y_q = _quant(tensors[source]), _quant(tensors[target])
            got = interpreter.get_output(outputs.index(target)).reshape(256, CHANNELS).T
            if name == "PRELU":
                alpha_q = reader.get_tensor(rest[0]).reshape(-1)
                table = tables.tflm_prelu(x_q, y_q, alpha_q, *_quant(tensors[rest[0]]))
            else:
                table = tables.table(onnx_ops[name], {"alpha": 0.2}, x_q, y_q, "fixed")
            rows = np.broadcast_to(table, (CHANNELS, 256)) if table.ndim == 1 else table
            np.testing.assert_array_equal(rows, got, err_msg=f"{name} at {x_q} -> {y_q}")
            checked.append((name, table.shape[0] if table.ndim == 2 else 1))
    assert sorted(checked) == sorted([(n, 1) for n in onnx_ops] * 2 + [("PRELU", 3),
                                                                      ("PRELU", 1)])
    # export quantizes a PRelu slope exactly as TFLite quantized these alphas
    for (_, reader), slope in zip(tflm_models[1:], ([0.1, -0.3, 0.7], [0.25])):
        (detail,) = [d for d in reader.get_tensor_details()
                     if d["dtype"] == np.int8 and len(d["shape"]) == 3]
        q, scale, zero_point = tables.quantize_slope(np.array(slope, np.float32))
        np.testing.assert_array_equal(q, reader.get_tensor(detail["index"]).reshape(-1))
        assert (np.float32(scale), zero_point) == (np.float32(detail["quantization"][0]),
                                                   detail["quantization"][1])


# -- runtime == C ---------------------------------------------------------------------------------


def table_model(mode: str, seed: int) -> QuantModel:
    """input (5, 4, 3) -> one table with a clamp -> one table per channel -> vector table."""
    rng = np.random.default_rng(seed)
    specs = {name: TensorSpec(name, shape, 0.05, int(rng.integers(-10, 10))) for name, shape in
             (("x", (5, 4, 3)), ("a", (5, 4, 3)), ("b", (5, 4, 3)))}
    layers = [
        Layer("lookup", "shared", ["x"], "a", {"act_min": -100, "act_max": 90},
              {"table": rng.integers(-128, 128, 256).astype(np.int8)}),
        Layer("lookup", "per_channel", ["a"], "b", {},
              {"table": rng.integers(-128, 128, (3, 256)).astype(np.int8)}),
    ]
    model = QuantModel(f"tables_{mode}", mode, specs, layers, "x", "b")
    model.validate()
    return plan_arena(model)


@pytest.mark.parametrize("mode", ["fixed", "float"])
def test_c_runner_equals_runtime(mode, tmp_path):
    model = table_model(mode, 3)
    objects = compile_kernel_objects(tmp_path / "obj", mode == "float")
    write_c_sources(model, tmp_path)
    exe = build_native_runner(tmp_path, objects, mode == "float")
    x = np.random.default_rng(4).integers(-128, 128, (6, 5, 4, 3), dtype=np.int8)
    x[0].reshape(-1)[:] = np.resize(CODES, 60)  # every code reaches the tables
    expected = runtime.run(model, x)
    assert np.array_equal(run_native(exe, model, x), expected)
    shared = model.layers[0].arrays["table"]
    assert expected.min() >= -128 and np.array_equal(
        runtime.run(QuantModel("one", mode, model.tensors, model.layers[:1], "x", "a"), x),
        np.clip(shared[x.astype(int) + 128], -100, 90))


def test_model_checks_name_the_table_problem():
    model = table_model("fixed", 5)
    model.layers[1].arrays["table"] = np.zeros((2, 256), np.int8)
    with pytest.raises(ModelFileError, match=r"'per_channel' \(lookup\): array 'table' has "
                                             r"shape \(2, 256\)"):
        model.validate()


def test_prelu_with_a_spatial_slope_is_refused_in_one_line():
    model = one_op_model("PRelu", {}, [0.1, 0.2, 0.3])
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(
        np.full((CHANNELS, 1, 256), 0.2, np.float32), "slope"))
    with pytest.raises(TinyconvError, match=r"node 'prelu' has op PRelu with a slope of shape "
                                            r"\[3, 1, 256\]") as info:
        export.from_onnx(model, np.zeros((2, CHANNELS, 1, 256), np.float32))
    assert "\n" not in str(info.value)


# -- whole models: PyTorch and Keras --------------------------------------------------------------


def torch_model() -> onnx.ModelProto:
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
            self.c3, self.prelu = nn.Conv2d(8, 8, 1), nn.PReLU(8)
            self.fc = nn.Linear(8, 5)
            with torch.no_grad():
                self.prelu.weight.copy_(torch.linspace(-0.5, 0.6, 8))

        def forward(self, x):
            x = torch.sigmoid(self.c1(x))
            x = nn.functional.hardswish(self.c2(x))
            x = self.prelu(nn.functional.leaky_relu(self.c3(x), 0.1))
            x = nn.functional.silu(torch.tanh(x)).mean((2, 3))
            return nn.functional.elu(self.fc(x))

    torch.manual_seed(0)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Net().eval(), torch.randn(1, 3, 8, 8), buffer, opset_version=17,
                          dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return onnx.load_from_string(buffer.getvalue())


def keras_model() -> onnx.ModelProto:
    tf = pytest.importorskip("tensorflow")
    tf2onnx = pytest.importorskip("tf2onnx")
    keras = tf.keras
    keras.utils.set_random_seed(1)
    x = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(8, 3, padding="same", activation="sigmoid")(x)
    y = keras.layers.Conv2D(8, 3, padding="same", activation="tanh")(y)
    y = keras.layers.LeakyReLU(0.2)(keras.layers.Conv2D(8, 1)(y))
    y = keras.layers.PReLU(shared_axes=[1, 2], alpha_initializer=keras.initializers.Constant(
        np.linspace(-0.3, 0.4, 8)))(y)
    y = keras.layers.Activation("swish")(keras.layers.Activation("elu")(y))
    y = keras.layers.GlobalAveragePooling2D()(y)
    model = keras.Model(x, keras.layers.Dense(5, activation="softsign")(y))
    signature = (tf.TensorSpec((None, 8, 8, 3), tf.float32, name="image"),)
    source, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=17)
    return source


FRONT_ENDS = {"torch": (torch_model, "NCHW"), "keras": (keras_model, "NHWC")}


@pytest.fixture(scope="module", params=sorted(FRONT_ENDS))
def exported(request):
    make, layout = FRONT_ENDS[request.param]
    source = make()
    rng = np.random.default_rng(7)
    shape = (3, 8, 8) if layout == "NCHW" else (8, 8, 3)
    calibration = rng.standard_normal((16, *shape)).astype(np.float32)
    x = rng.standard_normal((12, *shape)).astype(np.float32)
    results = {mode: export.from_onnx(source, calibration, requant=mode, name=request.param)
               for mode in ("float", "fixed")}
    return request.param, source, results, x, layout


def _nhwc(x, layout):
    return x.transpose(0, 2, 3, 1) if layout == "NCHW" else x


def test_whole_model_uses_tables(exported):
    name, source, results, _, _ = exported
    functions = [layer.params.get("function") for layer in results["float"].model.layers
                 if layer.op == "lookup"]
    wanted = {"torch": ["Sigmoid", "HardSwish", "LeakyRelu", "PRelu", "Tanh", "Swish", "Elu"],
              "keras": ["Sigmoid", "Tanh", "LeakyRelu", "PRelu", "Elu", "Swish", "Softsign"]}[name]
    assert functions == wanted


def test_whole_model_float_mode_equals_onnxruntime_per_tensor(exported):
    _, _, results, x, layout = exported
    assert_float_mode_equals_onnxruntime(results["float"], x, _nhwc(x, layout))


def test_whole_model_fixed_mode_per_layer_against_onnxruntime(exported):
    """Each fixed-mode layer, fed onnxruntime's int8 input for it (model.q.onnx of the fixed
    model), is within 1 LSB of onnxruntime for conv / pool / fc, and within FIXED_BOUND for a
    TFLM table; a float table is equal."""
    _, _, results, x, _ = exported
    result = results["fixed"]
    model = result.model
    values = run_qonnx(result.quant_onnx, model, x, collect=True)
    for index, layer in enumerate(model.layers):
        got = run_one_layer(model, index, values).astype(int)
        diff = int(np.abs(got - values[layer.output].astype(int)).max())
        function = layer.params.get("function")
        bound = 1 if layer.op != "lookup" else fixed_bound(
            function, model.tensors[layer.inputs[0]], model.tensors[layer.output],
            layer.params.get("slope"))
        assert diff <= bound, f"layer {layer.name} ({function or layer.op}): {diff} LSB"


def test_whole_model_on_the_host_device(exported, tmp_path):
    from firmware_host.verify import verify

    _, _, results, x, _ = exported
    data = tmp_path / "data.npz"
    np.savez(data, x=x)
    for mode, result in results.items():
        directory = result.save(tmp_path / mode)
        run = verify(directory, data, device="host", progress=False)
        assert run.exit_status == 0 and run.device_equal_images == run.images == len(x)
        if mode == "float":
            assert run.ort_equal_images == len(x)


@pytest.mark.parametrize("board,mode", [("lm3s6965evb", "fixed"), ("mps2-an386", "float")])
def test_whole_model_on_arm_boards(exported, board, mode, tmp_path, arm_tools):
    from _selftest import run_on_board

    _, _, results, x, layout = exported
    model = results[mode].model
    spec = model.input_spec
    x_q = kernels.quantize(_nhwc(x[:4], layout), spec.scale, spec.zero_point)
    got, expected = run_on_board(model, x_q, board, tmp_path)
    assert np.array_equal(got, expected)
    if mode == "fixed":  # tables need no float: none is linked
        import subprocess

        (elf,) = tmp_path.rglob("firmware.elf")
        symbols = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True,
                                 text=True, check=True).stdout
        assert "tc_lookup" in symbols
        assert not re.search(r"__aeabi_[fd]\w*|__(add|sub|mul|div)[sd]f3", symbols)


@pytest.mark.parametrize("rows", [None, 4])
def test_kernel_equals_slow_reference_loop(rows):
    from runtime import reference

    rng = np.random.default_rng(rows or 1)
    table = rng.integers(-128, 128, (256,) if rows is None else (rows, 256)).astype(np.int8)
    x = rng.integers(-128, 128, (3, 5, 2, 4), dtype=np.int8)
    for act in ((-128, 127), (-50, 60)):
        np.testing.assert_array_equal(kernels.lookup(x, table, act_range=act),
                                      reference.lookup(x, table, act_range=act))


def test_an_activation_onnxruntime_rejects_is_one_clear_line():
    model = one_op_model("Gelu", {"approximate": "cubic"}, None)  # onnx.checker lets it pass
    with pytest.raises(TinyconvError, match="'gelu'") as info:
        export.from_onnx(model, np.zeros((2, CHANNELS, 1, 256), np.float32))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"^onnxruntime cannot evaluate it \(.*cubic[^\n]*$"):
        tables.table("Gelu", {"approximate": "cubic"}, (0.1, 0), (0.1, 0), "float")


@pytest.mark.parametrize("mode", ["float", "fixed"])
def test_a_clip_after_an_activation_is_folded_into_its_table(mode):
    model = one_op_model("Tanh", {}, None)
    model.graph.node[0].output[0] = "t"
    model.graph.initializer.extend([numpy_helper.from_array(np.float32(-0.2), "lo"),
                                    numpy_helper.from_array(np.float32(0.5), "hi")])
    model.graph.node.append(helper.make_node("Clip", ["t", "lo", "hi"], ["y"], name="clip"))
    calibration = np.random.default_rng(2).uniform(-3, 3, (4, CHANNELS, 1, 256))
    result = export.from_onnx(model, calibration.astype(np.float32), requant=mode)
    (layer,) = result.model.layers
    y = result.model.output_spec
    low, high = layer.params["act_min"], layer.params["act_max"]
    assert (low, high) == (y.zero_point + round(-0.2 / y.scale), y.zero_point + round(0.5 / y.scale))
    assert layer.arrays["table"].min() == low and layer.arrays["table"].max() == high
    x = every_code(result.model.input_spec)
    x_nhwc = x.transpose(0, 2, 3, 1)
    if mode == "float":
        assert_float_mode_equals_onnxruntime(result, x, x_nhwc)


def test_hard_swish_scales_tflm_refuses_are_refused():
    """TFLM's HARD_SWISH needs output scale >= input scale / 128 (a non-positive exponent)."""
    assert tables.table("HardSwish", {}, (0.05, 0), (0.05 / 127, 0), "fixed").shape == (256,)
    with pytest.raises(ValueError, match="TFLM refuses it"):
        tables.table("HardSwish", {}, (0.05, 0), (0.05 / 129, 0), "fixed")
