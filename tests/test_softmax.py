"""Softmax, int8 in, int8 out at scale 1/256 and zero point -128, in every layer of tinyconv.

Oracles: TensorFlow Lite Micro itself for fixed mode (.tflite files made by TensorFlow's
converter whose only op is SOFTMAX, run in tflite-micro's interpreter, input scales from 1e-7
to 47 so the capped multiplier, left shift 31 and diff_min 0 all occur); onnxruntime's
com.microsoft QLinearSoftmax (what model.q.onnx holds) for float mode; the slow loop in
runtime/reference.py; hand-computed rows; gcc and arm-none-eabi-gcc builds of the C kernel,
natively, under QEMU and behind ``tinyconv verify`` on the host device.

Fixed mode (TFLM's arithmetic) and onnxruntime's QLinearSoftmax are different computations;
measured over 40 input scales (1e-3 .. 1) and 2 .. 500 channels they differ by at most 1 LSB,
on about 2 outputs in a million, so the usual "fixed within 1 LSB of float per layer" holds for
the softmax layer too (asserted below, per layer, on real models).
"""
from __future__ import annotations

import io
import os
import re
import subprocess

import numpy as np
import onnx
import pytest
from _export_checks import (assert_fixed_within_one_lsb_of_float,
                            assert_float_mode_equals_onnxruntime, ort_float)
from _firmware_models import (CFLAGS, FIRMWARE_SRC, build_native_runner, compile_kernel_objects,
                              random_inputs, random_model, reference_run, run_native)
from _selftest import run_on_board
from _tools import require_tool
from test_arm_targets import FLOAT_INSN
from onnx import TensorProto, helper, numpy_helper

import export
import runtime
from export.c_codegen import write_c_sources
from export.qonnx import run_qonnx
from runtime import kernels, reference
from runtime.errors import ModelFileError, TinyconvError
from runtime.kernels.softmax import softmax, softmax_constants

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
MODES = ("fixed", "float")


def edge_rows(channels: int, rng: np.random.Generator, diff_min: int = -255) -> np.ndarray:
    """Rows where softmax has corner cases: equal values, one huge value, extremes, two maxima,
    differences right at diff_min, and random rows of several spreads."""
    c = channels
    rows = [np.full(c, v) for v in (-128, -1, 0, 127)]
    for top, rest in ((127, -128), (-128 + 1, -128), (5, 4), (127, 126)):
        row = np.full(c, rest)
        row[rng.integers(c)] = top
        rows.append(row)
    row = np.full(c, -128)
    row[:2] = 100
    rows.append(row)
    for d in (-diff_min - 1, -diff_min, -diff_min + 1):
        if 0 <= d <= 255:
            rows.append(np.where(np.arange(c) % 2 == 0, 127, 127 - d))
    for spread in (1, 4, 30, 255):
        for _ in range(6):
            top = int(rng.integers(-128 + min(spread, 255), 128))
            rows.append(top - rng.integers(0, spread + 1, c))
    return np.clip(np.array(rows), -128, 127).astype(np.int8)


# -- hand-computed values, both modes ------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_hand_computed_rows(mode):
    """Equal inputs share 256 evenly: 2 channels -> 128 each (code 0), 4 -> 64 (code -64),
    8 -> 32 (-96); a lone maximum far above the rest takes everything: 256 saturates to 127,
    the others 0 (code -128)."""
    for channels, code in ((2, 0), (4, -64), (8, -96)):
        consts = softmax_constants(0.05, channels, mode)
        for v in (-128, 3, 127):
            np.testing.assert_array_equal(softmax(np.full((1, channels), v, np.int8), consts),
                                          np.full((1, channels), code))
    row = np.array([[-128, 127, -128, -128, -128]], np.int8)
    np.testing.assert_array_equal(softmax(row, softmax_constants(0.5, 5, mode)),
                                  [[-128, 127, -128, -128, -128]])
    # two equal maxima 1 apart from a third: e/(2e+1) = 0.4223 -> 108.1 -> -20 at scale 1
    row = np.array([[0, 0, -1]], np.int8)
    np.testing.assert_array_equal(softmax(row, softmax_constants(1.0, 3, mode)), [[-20, -20, -88]])


# -- runtime == slow reference ---------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_runtime_equals_slow_reference(mode):
    rng = np.random.default_rng(17 if mode == "fixed" else 18)
    for scale in list(np.geomspace(1e-4, 0.6, 14)) + [30.0, 47.0]:
        channels = int(rng.integers(2, 70))
        consts = softmax_constants(scale, channels, mode)
        diff_min = int(consts["diff_min"][0]) if mode == "fixed" else -255
        x = edge_rows(channels, rng, diff_min)
        np.testing.assert_array_equal(softmax(x, consts), reference.softmax(x, consts))
    x = rng.integers(-128, 128, (3, 4, 5, 9), dtype=np.int8)  # any leading shape
    consts = softmax_constants(0.1, 9, mode)
    np.testing.assert_array_equal(softmax(x, consts), reference.softmax(x, consts))


# -- fixed mode == TensorFlow Lite Micro ---------------------------------------------------------

TFLM_BATCH = 64
# (channels, calibration range): input scales from ~1e-7 to ~47 (capped multiplier)
TFLM_CASES = [(2, 0.6), (37, 30.0), (16, 6000.0), (5, 1e-5), (300, 20.0)]


def _tflite_softmax(channels: int, spread: float) -> bytes:
    tf = pytest.importorskip("tensorflow")
    inp = tf.keras.Input(shape=(channels,), batch_size=TFLM_BATCH)
    keras = tf.keras.Model(inp, tf.keras.layers.Softmax()(inp))
    converter = tf.lite.TFLiteConverter.from_keras_model(keras)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(channels)

    def representative():
        for _ in range(4):
            yield [rng.uniform(-spread, spread, (TFLM_BATCH, channels)).astype(np.float32)]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def _read_tflite(blob: bytes) -> tuple[list[str], float, float, tuple[float, int]]:
    """(op names, softmax beta, input scale, (output scale, output zero point))."""
    import tflite

    model = tflite.Model.GetRootAsModel(blob, 0)
    graph = model.Subgraphs(0)
    ops = [tflite.opcode2name(model.OperatorCodes(graph.Operators(i).OpcodeIndex())
                              .BuiltinCode()) for i in range(graph.OperatorsLength())]
    table = graph.Operators(0).BuiltinOptions()
    options = tflite.SoftmaxOptions()
    options.Init(table.Bytes, table.Pos)
    x_q = graph.Tensors(graph.Inputs(0)).Quantization()
    y_q = graph.Tensors(graph.Outputs(0)).Quantization()
    return ops, options.Beta(), x_q.Scale(0), (y_q.Scale(0), y_q.ZeroPoint(0))


@pytest.mark.parametrize("case", TFLM_CASES, ids=[f"{c}ch-{r:g}" for c, r in TFLM_CASES])
def test_fixed_mode_equals_tflite_micro(case):
    from tflite_micro.python.tflite_micro import runtime as tflm

    blob = _tflite_softmax(*case)
    ops, beta, x_scale, y_quant = _read_tflite(blob)
    assert ops == ["SOFTMAX"] and beta == 1.0
    assert y_quant == (1.0 / 256.0, -128)
    channels = case[0]
    consts = softmax_constants(x_scale, channels, "fixed")
    rng = np.random.default_rng(channels)
    rows = np.concatenate([edge_rows(channels, rng, int(consts["diff_min"][0])),
                           rng.integers(-128, 128, (4 * TFLM_BATCH, channels))]).astype(np.int8)
    rows = np.concatenate([rows, rows[:-len(rows) % TFLM_BATCH]])
    interpreter = tflm.Interpreter.from_bytes(blob, arena_size=1 << 20)
    expected = []
    for batch in rows.reshape(-1, TFLM_BATCH, channels):
        interpreter.set_input(batch, 0)
        interpreter.invoke()
        expected.append(interpreter.get_output(0).copy())
    expected = np.concatenate(expected)
    # extreme scales make rows one-hot or uniform: few distinct outputs, by nature
    assert np.unique(expected).size > (20 if 1e-3 < x_scale < 1 else 0)
    np.testing.assert_array_equal(softmax(rows, consts), expected)


def test_fixed_constants_follow_tflm_prepare_for_any_scale():
    """Multiplier and shift from beta * scale * 2^26 (capped at 2^31 - 1), diff_min =
    -floor(31 * 2^26 / 2^shift), as TFLM's Prepare computes them in double."""
    for scale in (1e-7, 3e-3, 0.02, 0.1, 0.99, 1.0, 16.0, 31.9, 32.0, 100.0):
        c = softmax_constants(scale, 10, "fixed")
        real = min(float(np.float32(scale)) * 2.0**26, 2.0**31 - 1)
        mult, shift = int(c["input_multiplier"][0]), int(c["input_left_shift"][0])
        assert 2**30 <= mult < 2**31 and 0 <= shift <= 31
        assert abs(mult * 2.0**(shift - 31) - real) <= 2.0**(shift - 32)
        assert int(c["diff_min"][0]) == -int(31 * 2**26 // 2**shift)
    with pytest.raises(ValueError, match="too small"):
        softmax_constants(1e-9, 10, "fixed")
    with pytest.raises(ValueError, match="at most 511"):
        softmax_constants(0.1, 512, "fixed")
    with pytest.raises(ValueError, match="at least 2"):
        softmax_constants(0.1, 1, "float")


# -- float mode == onnxruntime's QLinearSoftmax --------------------------------------------------

def _qlinear_softmax(channels: int, scale: float, zero_point: int) -> onnx.ModelProto:
    node = helper.make_node("QLinearSoftmax", ["x", "xs", "xz", "ys", "yz"], ["y"],
                            domain="com.microsoft", axis=-1, opset=13)
    inits = [numpy_helper.from_array(np.array(scale, np.float32), "xs"),
             numpy_helper.from_array(np.array(zero_point, np.int8), "xz"),
             numpy_helper.from_array(np.array(1 / 256, np.float32), "ys"),
             numpy_helper.from_array(np.array(-128, np.int8), "yz")]
    graph = helper.make_graph(
        [node], "sm", [helper.make_tensor_value_info("x", TensorProto.INT8, [None, channels])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, [None, channels])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                   helper.make_opsetid("com.microsoft", 1)])


def test_float_mode_equals_onnxruntime_qlinear_softmax():
    import onnxruntime as ort

    rng = np.random.default_rng(3)
    for scale in np.geomspace(1e-3, 0.6, 12):
        for channels in (2, 3, 10, 100, 1000):
            model = _qlinear_softmax(channels, float(scale), int(rng.integers(-20, 20)))
            session = ort.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
            x = np.concatenate([edge_rows(channels, rng), rng.integers(
                -128, 128, (200, channels))]).astype(np.int8)
            expected = session.run(None, {"x": x})[0]
            got = softmax(x, softmax_constants(scale, channels, "float"))
            np.testing.assert_array_equal(got, expected, err_msg=f"{scale} {channels}")


# -- C == runtime: native, ARM builds, QEMU --------------------------------------------------------

C_SPECS = {
    "vector": ((24,), [dict(op="fully_connected", out=10), dict(op="softmax")]),
    "channels": ((3, 4, 5), [dict(op="conv2d", out=12, kernel=(1, 1)), dict(op="softmax")]),
    "small_scale": ((7,), [dict(op="softmax", scale=4e-3)]),
    "huge_scale": ((9,), [dict(op="softmax", scale=40.0)]),
    "wide": ((257,), [dict(op="softmax", scale=0.03)]),
}


@pytest.fixture(scope="module")
def kernel_objects(tmp_path_factory):
    root = tmp_path_factory.mktemp("kernels")
    return {mode: compile_kernel_objects(root / mode, mode == "float") for mode in MODES}


def _inputs(rng, model, count):
    x = random_inputs(rng, model, count)
    if len(model.input_spec.shape) == 1:
        edges = edge_rows(model.input_spec.shape[0], rng)
        x[:len(edges)] = edges[:count]
    return x


@pytest.mark.parametrize("name", sorted(C_SPECS))
@pytest.mark.parametrize("mode", MODES)
def test_c_kernel_equals_runtime(name, mode, kernel_objects, tmp_path):
    rng = np.random.default_rng([sorted(C_SPECS).index(name), MODES.index(mode)])
    shape, spec = C_SPECS[name]
    model = random_model(rng, shape, spec, mode)
    write_c_sources(model, tmp_path)
    exe = build_native_runner(tmp_path, kernel_objects[mode], mode == "float")
    x = _inputs(rng, model, 150)
    expected = reference_run(model, x)
    assert np.unique(expected).size > 3
    np.testing.assert_array_equal(run_native(exe, model, x), expected)


@pytest.mark.parametrize("cpu", [("-mcpu=cortex-m3", "-mfloat-abi=soft"),
                                 ("-mcpu=cortex-m4", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")])
@pytest.mark.parametrize("float_enabled", [0, 1])
def test_c_kernel_builds_for_arm(cpu, float_enabled, tmp_path):
    cc = require_tool("arm-none-eabi-gcc")
    subprocess.run([cc, *CFLAGS, "-O2", "-mthumb", *cpu,
                    f"-DTC_ENABLE_FLOAT_REQUANT={float_enabled}", "-I", str(FIRMWARE_SRC), "-c",
                    str(FIRMWARE_SRC / "tc_softmax.c"), "-o", str(tmp_path / "sm.o")],
                   check=True, capture_output=True, text=True)


@pytest.mark.parametrize("board,mode", [("lm3s6965evb", "fixed"), ("mps2-an386", "float"),
                                        ("mps2-an386", "fixed"), ("lm3s6965evb", "float")])
def test_qemu_equals_runtime(board, mode, tmp_path):
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    rng = np.random.default_rng(5)
    model = random_model(rng, (16,), [dict(op="fully_connected", out=10), dict(op="softmax")],
                         mode, name=f"softmax_{mode}")
    x = _inputs(rng, model, 6)
    got, expected = run_on_board(model, x, board, tmp_path)
    assert np.unique(expected).size > 3
    np.testing.assert_array_equal(got, expected)
    (elf,) = tmp_path.rglob("firmware.elf")
    symbols = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True,
                             check=True).stdout
    assert "tc_softmax" in symbols
    if mode == "fixed":  # the fixed-point softmax pulls in no floating point
        code = subprocess.run(["arm-none-eabi-objdump", "-d", str(elf)], capture_output=True,
                              text=True, check=True).stdout
        assert not re.search(r"__aeabi_[fd]\w*|__(add|sub|mul|div)[sd]f3", symbols)
        assert not FLOAT_INSN.search(code)


# -- model checks ----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_model_checks_refuse_wrong_softmax(mode):
    rng = np.random.default_rng(9)
    model = random_model(rng, (12,), [dict(op="softmax")], mode)
    layer, out = model.layers[0], model.tensors[model.output]
    key = "diff_min" if mode == "fixed" else "exp_table"
    original = layer.arrays[key]
    layer.arrays[key] = original[::-1].copy() if mode == "float" else original + 1
    with pytest.raises(ModelFileError, match=f"'{key}'"):
        model.validate()
    layer.arrays[key] = original
    out.zero_point = -127
    with pytest.raises(ModelFileError, match="1/256 and -128"):
        model.validate()


# -- real models: PyTorch and Keras (tf2onnx) ------------------------------------------------------

def _torch_models():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    nn = torch.nn
    classifier = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 12, 3), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 10), nn.Softmax(dim=1)).eval()
    per_pixel = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 5, 1),
                              nn.Softmax(dim=1)).eval()
    models = {}
    for name, net, opset in (("classifier", classifier, 13), ("per_pixel", per_pixel, 13),
                             ("per_pixel_opset11", per_pixel, 11)):
        buffer = io.BytesIO()
        torch.onnx.export(net, torch.zeros(1, 3, 10, 10), buffer, dynamo=False,
                          opset_version=opset, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
        models[name] = onnx.load_from_string(buffer.getvalue())
    # below opset 13 PyTorch moves the channels last around the Softmax and back
    ops = [(n.op_type, [list(a.ints) or a.i for a in n.attribute])
           for n in models["per_pixel_opset11"].graph.node[-3:]]
    assert ops == [("Transpose", [[0, 3, 2, 1]]), ("Softmax", [3]),
                   ("Transpose", [[0, 3, 2, 1]])], ops
    return models


def _keras_model():
    tf = pytest.importorskip("tensorflow")
    tf2onnx = pytest.importorskip("tf2onnx")
    layers = tf.keras.layers
    tf.keras.utils.set_random_seed(7)
    image = tf.keras.Input((10, 10, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(image)
    x = layers.GlobalAveragePooling2D()(x)
    keras = tf.keras.Model(image, layers.Dense(6, activation="softmax")(x))
    signature = (tf.TensorSpec((None, 10, 10, 3), tf.float32, name="image"),)
    source, _ = tf2onnx.convert.from_keras(keras, input_signature=signature, opset=17)
    return source


@pytest.fixture(scope="module")
def real_models():
    """name -> (ONNX model, calibration/test images in its layout, the same in NHWC)."""
    rng = np.random.default_rng(1)
    nchw = rng.normal(size=(40, 3, 10, 10)).astype(np.float32) * 2
    models = {name: (m, nchw, nchw.transpose(0, 2, 3, 1)) for name, m in _torch_models().items()}
    nhwc = nchw.transpose(0, 2, 3, 1).copy()
    models["keras"] = (_keras_model(), nhwc, nhwc)
    exported = {}
    for name, (model, x, x_nhwc) in models.items():
        assert "Softmax" in {node.op_type for node in model.graph.node[-2:]}
        exported[name] = ({mode: export.from_onnx(model, x[:24], requant=mode) for mode in MODES},
                          x, x_nhwc)
    return exported


@pytest.mark.parametrize("name", ["classifier", "per_pixel", "per_pixel_opset11", "keras"])
def test_real_model_both_modes(real_models, name):
    results, x, x_nhwc = real_models[name]
    assert results["float"].model.layers[-1].op == "softmax"
    y = assert_float_mode_equals_onnxruntime(results["float"], x, x_nhwc)
    assert np.unique(y).size > 5
    assert_fixed_within_one_lsb_of_float(results, x_nhwc)
    # the fixed model's output against onnxruntime on its own model.q.onnx
    fixed = results["fixed"]
    diff = np.abs(run_qonnx(fixed.quant_onnx, fixed.model, x).astype(np.int16)
                  - runtime.run(fixed.model, kernels.quantize(
                      x_nhwc, fixed.model.input_spec.scale, fixed.model.input_spec.zero_point)))
    # measured: 1 (classifier, keras), 2 (per_pixel): upstream 1-LSB differences (fixed vs
    # float requantization in conv/fc) reach the softmax, whose own step adds at most 1
    assert diff.max() <= 2, diff.max()
    # model.q.onnx computes probabilities near the float model's
    probs = ort_float(results["float"].float_model, x)
    np.testing.assert_allclose(ort_float(results["float"].quant_onnx, x), probs, atol=0.08)


@pytest.mark.parametrize("mode", MODES)
def test_verify_on_host_device(real_models, mode, tmp_path):
    from firmware_host.verify import verify

    results, x, _ = real_models["classifier"]
    directory = results[mode].save(tmp_path / mode)
    result = verify(directory, x[:20], device="host", progress=False)
    assert result.exit_status == 0 and result.images == 20 == result.device_equal_images
    if mode == "float":
        assert result.ort_equal_images == 20 and result.ort_max_lsb == 0
    else:
        assert result.ort_max_lsb <= 2


# -- refusals --------------------------------------------------------------------------------------

@pytest.mark.parametrize("rank,axis", [(2, 0), (4, 2), (4, -1)])
def test_softmax_off_the_channel_axis_is_refused_in_one_line(rank, axis):
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"], name="conv")]
    if rank == 2:
        nodes += [helper.make_node("GlobalAveragePool", ["h"], ["g"], name="gap"),
                  helper.make_node("Flatten", ["g"], ["f"], name="flat"),
                  helper.make_node("Gemm", ["f", "m"], ["h2"], name="fc")]
    nodes.append(helper.make_node("Softmax", [nodes[-1].output[0]], ["y"], name="sm", axis=axis))
    inits = [numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w"),
             numpy_helper.from_array(np.ones((4, 4), np.float32), "m")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [None, 4, 3, 3])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [None, 4] if rank == 2 else [None, 4, 3, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = np.random.default_rng(0).normal(size=(4, 4, 3, 3)).astype(np.float32)
    with pytest.raises(TinyconvError) as info:
        export.from_onnx(model, x)
    message = str(info.value)
    assert "'sm'" in message and "Softmax" in message and "axis" in message
    assert "\n" not in message


def test_a_source_quantizing_the_softmax_output_otherwise_is_warned(real_models, tmp_path):
    """onnxruntime's quantize_static puts a QDQ softmax output at 1/255 (its [0, 1] range);
    tinyconv's softmax outputs TFLite's 1/256, so that tensor takes 1/256 and the report's
    warnings say so (at most about one output step from the source's; measured in
    tests/test_export_prequantized_ops.py)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    results, x, _ = real_models["classifier"]
    onnx.save(results["float"].float_model, tmp_path / "float.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": x[i:i + 4]} for i in range(0, 16, 4)])

        def get_next(self):
            return next(self.batches, None)
    quantize_static(tmp_path / "float.onnx", tmp_path / "qdq.onnx", Reader(),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8)
    result = export.from_onnx(tmp_path / "qdq.onnx", x[:8])
    [message] = [w for w in result.model.metadata["warnings"] if "Softmax" in w]
    assert "1/256" in message and "0.0039215" in message and "\n" not in message
    assert result.model.output_spec.scale == np.float32(1 / 256)
    assert message in result.table()
