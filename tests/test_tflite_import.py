"""TFLite int8 models in: runtime/ equals TensorFlow Lite Micro on every element of every tensor.

The .tflite files are made here by TensorFlow's converter (full-integer quantization with a
representative dataset) from small Keras CNNs (tests/tflite_models.py). The oracle is TFLM
itself (the tflite-micro package: the real interpreter, reference kernels), read tensor by
tensor; LiteRT's optimized kernels are measured, not gated on. One model is also built for the
host device and verified there: device == runtime on every image.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import export
import runtime
from export import tflite_import
from export.tflite_reference import compare, tflm_tensors
from runtime.errors import TinyconvError
from runtime.inputs import quantize_input
import tflite_models

pytest.importorskip("tflite_micro")
pytest.importorskip("tensorflow")

# (model, int8 I/O, per-tensor weights): each op with float and int8 edges, both weight kinds.
CASES = [("convs", False, False), ("convs", True, True), ("residual", False, True),
         ("residual", True, False), ("squeeze", False, False), ("squeeze", True, True)]
IMAGES = 24


def _case_id(case) -> str:
    name, int8_io, per_tensor = case
    return f"{name}-{'int8' if int8_io else 'float'}io-{'tensor' if per_tensor else 'channel'}"


@pytest.fixture(scope="module")
def converted() -> dict:
    """Each case's .tflite bytes, converted once per module."""
    models = {}
    for case in CASES:
        name, int8_io, per_tensor = case
        keras_model = tflite_models.BUILDERS[name]()
        models[case] = tflite_models.convert(keras_model, int8_io=int8_io,
                                             per_tensor=per_tensor)
    return models


def _inputs(model, count: int = IMAGES, seed: int = 7) -> np.ndarray:
    """Float NHWC samples, a little wider than the calibration range (saturation too)."""
    shape = model.input_spec.shape
    return np.random.default_rng(seed).uniform(-1.3, 1.3, (count, *shape)).astype(np.float32)


def _builtin_ops(data: bytes) -> list[str]:
    import tflite

    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    fb = tflite.Model.GetRootAsModel(data, 0)
    graph = fb.Subgraphs(0)
    ops = []
    for i in range(graph.OperatorsLength()):
        code = fb.OperatorCodes(graph.Operators(i).OpcodeIndex())
        ops.append(names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())])
    return ops


def test_the_models_cover_every_op_of_the_import(converted):
    seen = {op for data in converted.values() for op in _builtin_ops(data)}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D",
            "MAX_POOL_2D", "ADD", "RESHAPE", "MEAN", "RELU", "QUANTIZE",
            "DEQUANTIZE"} <= seen


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_every_tensor_equals_tflm(converted, case):
    data = converted[case]
    imported = tflite_import.read(data, name="m")
    model = imported.model
    model.validate()
    assert imported.float_input == (not case[1]) and imported.float_output == (not case[1])
    x = _inputs(model)
    x_q = quantize_input(model, x)
    ours = runtime.run(model, x_q, collect=True)[1]
    theirs = tflm_tensors(data, model, x if imported.float_input else None, x_q)
    assert set(theirs) == set(ours)
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    # RESHAPE / SQUEEZE outputs are views: TFLM's copies hold the same bytes.
    from tflite_micro.python.tflite_micro import runtime as tflm

    interpreter = tflm.Interpreter.from_bytes(
        data, intrepreter_config=tflm.InterpreterConfig.kPreserveAllTensors)
    details = interpreter.get_input_details(0)
    sample = x[:1] if imported.float_input else x_q[:1]
    interpreter.set_input(sample.reshape(tuple(details["shape"])), 0)
    interpreter.invoke()
    for index, name in imported.tensors.items():
        view = interpreter.GetTensor(index, 0)["tensor_data"]
        np.testing.assert_array_equal(view.reshape(-1), ours[name][0].reshape(-1),
                                      err_msg=f"TFLite tensor {index} (view of {name})")
    # The output tensor TFLM gives a float model before DEQUANTIZE, dequantized, is its output.
    out = interpreter.get_output(0).reshape(-1)
    spec = model.output_spec
    expect = runtime.kernels.dequantize(ours[model.output][0], spec.scale, spec.zero_point)
    if imported.float_output:
        np.testing.assert_array_equal(out, expect.reshape(-1))
    else:
        np.testing.assert_array_equal(out, ours[model.output][0].reshape(-1))


def test_constants_are_tflm_prepare_constants(converted):
    """Spot check against values computed here from the file's own scales, TFLM's way."""
    imported = tflite_import.read(converted[("convs", False, False)])
    model = imported.model
    first = model.layers[0]
    x, y = model.tensors[first.inputs[0]], model.tensors[first.output]
    w_scales = imported.weight_scales[first.name]
    for c, ws in enumerate(w_scales):
        real = float(np.float32(x.scale)) * float(ws) / float(np.float32(y.scale))
        mantissa, exponent = np.frexp(real)
        q = int(np.floor(mantissa * 2.0**31 + 0.5))
        if q == 2**31:
            q, exponent = q // 2, exponent + 1
        assert (first.arrays["multiplier"][c], first.arrays["shift"][c]) == (q, exponent)
    # MEAN: the division by H*W folded into the multiplier (checked end to end above).
    mean = next(l for l in model.layers if l.name.endswith("_mean"))
    count = int(np.prod(mean.arrays["weights"].shape[1:3]))
    assert count == 9 and np.all(mean.arrays["weights"] == 1)


def test_per_layer_comparison_names_the_first_tensor_that_differs(converted):
    result = export.from_tflite(converted[("residual", True, False)], name="r")
    model = result.model
    x = _inputs(model)
    good = compare(model, result.tflite, x)
    assert good.first is None and good.inputs == IMAGES
    assert 0 <= good.litert_exact <= 1 and good.litert_largest >= 0
    print(good.summary())
    # Break the second convolution's bias in one channel: that layer's output is named.
    layer = model.layers[1]
    bias = layer.arrays["bias"].copy()
    bias[2] += 5000
    layer.arrays = dict(layer.arrays, bias=bias)
    bad = compare(model, result.tflite, x, litert=False)
    assert bad.first is not None and bad.first.tensor == layer.output
    assert bad.first.layer == layer.name and bad.first.count > 0
    assert layer.output in bad.summary()


def test_export_writes_every_artifact(converted, tmp_path):
    result = export.from_tflite(converted[("convs", False, False)], name="convs")
    out = result.save(tmp_path / "convs")
    names = sorted(p.name for p in out.iterdir())
    assert names == [".tinyconv-export.json", "model.q.onnx", "model.tcm", "model.tflite",
                     "model_data.c", "model_data.h", "report.json"]
    report = json.loads((out / "report.json").read_text())
    assert report["model_q_onnx"] == "written" and report["hash"] == result.model.hash
    assert runtime.load(out).hash == result.model.hash
    # model.q.onnx in onnxruntime: float requantization, so close to, not equal to, TFLM.
    from export.qonnx import run_qonnx

    x = _inputs(result.model, 64)
    y = runtime.run(result.model, quantize_input(result.model, x)).astype(int)
    y_ort = run_qonnx(result.quant_onnx, result.model, x).reshape(y.shape).astype(int)
    assert np.abs(y - y_ort).max() <= 4


def test_cli_export_and_run_against_tflm(converted, tmp_path, capsys):
    from tinyconv.cli import main

    source = tmp_path / "net.tflite"
    source.write_bytes(converted[("convs", True, True)])
    assert main(["export", str(source), "--out", str(tmp_path / "out")]) == 0
    assert "model.q.onnx: written" in capsys.readouterr().out
    model = runtime.load(tmp_path / "out")
    np.savez(tmp_path / "x.npz", x=_inputs(model, 8))
    status = main(["run", str(tmp_path / "out"), "--input", str(tmp_path / "x.npz"),
                   "--output", str(tmp_path / "y.npz"), "--per-layer", "--against", "tflm"])
    out = capsys.readouterr().out
    assert status == 0 and "runtime == TFLM: every element of" in out and "LiteRT" in out
    assert main(["export", str(source), "--out", str(tmp_path / "o2"), "--calibration",
                 str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--calibration does not apply" in err[0]


def test_unsupported_op_is_refused_in_one_line_naming_it(converted):
    data = tflite_models.convert(tflite_models.reduce_max())
    with pytest.raises(TinyconvError, match=r"operator \d+ \(REDUCE_MAX\): not supported"):
        tflite_import.read(data)


def test_float_model_and_non_tflite_bytes_are_refused():
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(tflite_models.squeeze())
    with pytest.raises(TinyconvError, match=r"operator 0 \(CONV_2D\).*FLOAT32.*int8"):
        tflite_import.read(converter.convert())
    with pytest.raises(TinyconvError, match="not a TFLite flatbuffer"):
        tflite_import.read(b"\0" * 64)
    with pytest.raises(TinyconvError, match="unreadable TFLite flatbuffer"):
        tflite_import.read(b"\x10\0\0\0TFL3" + b"\xff" * 20)


def test_activation_range_rounds_half_away_in_float32():
    # zp + round(0 / s) = zp; 6 / 0.04 = 150 -> clamped; exact half: 6 / 4 = 1.5 -> 2.
    assert tflite_import.activation_range("RELU", 0.1, -5) == (-5, 127)
    assert tflite_import.activation_range("RELU6", 0.04, -128) == (-128, 22)
    assert tflite_import.activation_range("RELU6", 4.0, 0) == (0, 2)
    assert tflite_import.activation_range("RELU6", 4.0, -3) == (-3, -1)
    assert tflite_import.activation_range("NONE", 1.0, 0) == (-128, 127)


def test_device_equals_runtime_on_the_host_device(converted, tmp_path):
    """One TFLite model built for the host device and verified: device == runtime."""
    from _tools import require_tool
    from firmware_host.verify import verify

    require_tool("gcc")
    result = export.from_tflite(converted[("residual", False, True)], name="residual")
    out = result.save(tmp_path / "residual")
    x = _inputs(result.model, 40, seed=11)
    np.savez(tmp_path / "data.npz", x=x)
    verdict = verify(out, tmp_path / "data.npz", device="host", progress=False)
    assert verdict.exit_status == 0
    assert verdict.images == 40 == verdict.device_equal_images
    assert compare(result.model, result.tflite, x, litert=False).first is None


def test_float_input_quantizes_ties_away_from_zero_like_tflite_quantize():
    x = np.array([0.25, -0.25, 0.75, 0.2], np.float32)  # / 0.5: 0.5, -0.5, 1.5, 0.4
    np.testing.assert_array_equal(runtime.kernels.quantize(x, 0.5, 3, "away"), [4, 2, 5, 3])
    np.testing.assert_array_equal(runtime.kernels.quantize(x, 0.5, 3), [3, 3, 5, 3])


@pytest.mark.parametrize("name, int8_io", [("resnet8", False), ("ds_cnn", True)])
def test_mlperf_tiny_shapes_equal_tflm(name, int8_io):
    """Two MLPerf Tiny architectures (batch norm folded by the converter, residual adds,
    depthwise-separable blocks, large average pools): every tensor == TFLM."""
    data = tflite_models.convert(tflite_models.BUILDERS[name](), int8_io=int8_io, samples=16)
    result = export.from_tflite(data, name=name)
    x = _inputs(result.model, 4, seed=3)
    comparison = compare(result.model, data, x, litert=False)
    assert comparison.first is None, comparison.summary()
    assert comparison.tensors == len(result.model.layers) + 1


def test_device_equals_runtime_under_qemu(converted, tmp_path):
    """The model with every op (MEAN and RELU as depthwise convolutions, depth multiplier 2)
    on the Cortex-M3 board under QEMU: device == runtime on every image."""
    from _tools import require_tool
    from firmware_host.verify import verify

    require_tool("qemu-system-arm")
    require_tool("arm-none-eabi-gcc")
    result = export.from_tflite(converted[("convs", True, True)], name="convs")
    out = result.save(tmp_path / "convs")
    x_q = quantize_input(result.model, _inputs(result.model, 12, seed=13))
    verdict = verify(out, x_q, device="lm3s6965evb", progress=False)
    assert verdict.exit_status == 0 and verdict.target == "lm3s6965evb"
    assert verdict.images == 12 == verdict.device_equal_images


def test_corrupt_files_are_refused_with_one_line_never_a_traceback(converted):
    """Byte flips and truncations of a real file: exported, or refused with TinyconvError."""
    data = converted[("convs", False, False)]
    rng = np.random.default_rng(1)
    refused = 0
    for _ in range(300):
        b = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        if rng.random() < 0.1:
            b = b[:int(rng.integers(8, len(b)))]
        try:
            export.from_tflite(bytes(b))
        except TinyconvError as exc:
            refused += 1
            assert "\n" not in str(exc)
    assert refused > 0
