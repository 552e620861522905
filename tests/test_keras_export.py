"""export/ on Keras models converted by tf2onnx, the usual way from Keras to ONNX.

Two small Keras CNNs with random weights and biases (as trained ones have) are converted with
``tf2onnx.convert.from_keras`` (opset 17, dynamic batch), each with what tf2onnx really writes
for them:

- ``flatten``: Conv2D + ReLU, DepthwiseConv2D + BatchNormalization + ReLU(6), MaxPooling2D, a
  stride-2 ``same`` Conv2D, AveragePooling2D, Flatten, Dense. tf2onnx leaves the batch norm after
  the depthwise conv as a Mul and an Add by per-channel constants, and flattens through a
  Transpose to NHWC and a Reshape whose target is computed from the input's Shape;
- ``gap``: Conv2D without bias + BatchNormalization + ReLU (tf2onnx folds it), SeparableConv2D
  (depthwise + pointwise), a 1x1 Conv2D residual Add, GlobalAveragePooling2D (GlobalAveragePool
  + Squeeze), Dense.

Both take NHWC images (a Transpose to NCHW starts the graph). Oracles: Keras itself for the
float model, onnxruntime running the written ``model.q.onnx`` for the int8 model (``float``
mode: ``==``), and runtime/ layer by layer for ``fixed`` mode.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from _export_checks import (assert_fixed_within_one_lsb_of_float,
                            assert_float_mode_equals_onnxruntime, assert_int8_tracks, ort_float)

import export
import runtime
from runtime import kernels

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("CI") == "true":
    import tensorflow as tf  # under CI a missing TensorFlow is a failure, never a skip
    import tf2onnx
else:
    tf = pytest.importorskip("tensorflow", reason="pip install -e '.[keras]'")
    tf2onnx = pytest.importorskip("tf2onnx", reason="pip install -e '.[keras]'")

SEED = 2026
N_CALIB, N_TEST = 16, 24
IMAGE = (16, 16, 3)  # NHWC, as Keras
FLAVOURS = {"flatten": {"Mul", "Add", "Transpose", "Shape", "Reshape", "MatMul"},
            "gap": {"GlobalAveragePool", "Squeeze", "MatMul", "Add"}}


def make_keras(flavour: str):
    layers = tf.keras.layers
    tf.keras.utils.set_random_seed(SEED)
    image = tf.keras.Input(IMAGE, name="image")
    if flavour == "flatten":
        x = layers.Conv2D(8, 3, padding="same", activation="relu")(image)
        x = layers.DepthwiseConv2D(3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU(6.0)(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
        x = layers.AveragePooling2D(2)(x)
        x = layers.Flatten()(x)
    else:
        x = layers.Conv2D(8, 3, padding="same", use_bias=False)(image)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(16, 3, padding="same", activation="relu")(x)
        x = layers.Add()([x, layers.Conv2D(16, 1)(x)])
        x = layers.GlobalAveragePooling2D()(x)
    model = tf.keras.Model(image, layers.Dense(10)(x))
    rng = np.random.default_rng(SEED)
    for layer in model.layers:  # statistics and biases that are not the initial ones
        if isinstance(layer, layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, 8), rng.normal(0, 0.2, 8),
                               rng.normal(0, 0.2, 8), rng.uniform(0.5, 2.0, 8)])
        elif layer.get_weights():
            layer.set_weights([w if w.ndim > 1 else rng.normal(0, 0.1, w.shape).astype(w.dtype)
                               for w in layer.get_weights()])
    return model


def images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, *IMAGE)).astype(np.float32)


@dataclass
class Converted:
    flavour: str
    keras: object
    source: onnx.ModelProto  # as tf2onnx wrote it
    results: dict  # requant mode -> export.ExportResult


@pytest.fixture(scope="session", params=sorted(FLAVOURS))
def converted(request) -> Converted:
    keras = make_keras(request.param)
    signature = (tf.TensorSpec((None, *IMAGE), tf.float32, name="image"),)
    source, _ = tf2onnx.convert.from_keras(keras, input_signature=signature, opset=17)
    calibration = images(N_CALIB, seed=1)
    results = {mode: export.from_onnx(source, calibration, requant=mode)
               for mode in ("float", "fixed")}
    return Converted(request.param, keras, source, results)


def keras_float(keras, x: np.ndarray) -> np.ndarray:
    return np.asarray(keras(x, training=False))


def test_the_converter_wrote_what_this_test_is_about(converted):
    graph = converted.source.graph
    assert FLAVOURS[converted.flavour] <= {node.op_type for node in graph.node}
    first = graph.node[0]
    assert first.op_type == "Transpose" and first.input[0] == graph.input[0].name
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    if converted.flavour == "flatten":
        by_output = {o: n for n in graph.node for o in n.output}
        mul = next(n for n in graph.node if n.op_type == "Mul")
        assert by_output[mul.input[0]].op_type == "Conv"
        reshape = next(n for n in graph.node if n.op_type == "Reshape")
        transpose = by_output[reshape.input[0]]
        perm = next(a.ints for a in transpose.attribute if a.name == "perm")
        assert transpose.op_type == "Transpose" and list(perm) == [0, 2, 3, 1]


def test_model_onnx_reproduces_keras(converted):
    result = converted.results["float"]
    onnx.checker.check_model(result.float_model, full_check=True)
    ops = {node.op_type for node in result.float_model.graph.node}
    assert "Mul" not in ops and "BatchNormalization" not in ops
    x = images(N_TEST, seed=5)
    np.testing.assert_allclose(ort_float(result.float_model, x), keras_float(converted.keras, x),
                               rtol=1e-4, atol=1e-4)


def test_float_mode_int8_equals_onnxruntime_on_every_tensor(converted):
    x = images(N_TEST, seed=5)  # the model's input is NHWC
    y = assert_float_mode_equals_onnxruntime(converted.results["float"], x, x)
    assert y.shape == (N_TEST, 10)


def test_fixed_mode_within_one_lsb_per_layer_of_float(converted):
    assert_fixed_within_one_lsb_of_float(converted.results, images(N_TEST, seed=5))


def test_int8_model_tracks_keras(converted):
    """Also fails if the NHWC flatten's weight columns were permuted as for an NCHW one."""
    x = images(N_TEST, seed=5)
    assert_int8_tracks(keras_float(converted.keras, x), converted.results, x)


def test_keras_model_on_the_host_device(converted, tmp_path):
    """From the Keras model to the device: every device output equals runtime/'s, and in float
    mode onnxruntime's on model.q.onnx."""
    from firmware_host.verify import verify
    x = images(40, seed=8)
    data = tmp_path / "data.npz"
    np.savez(data, x=x, y=np.argmax(keras_float(converted.keras, x), axis=1))
    for mode, result in converted.results.items():
        directory = result.save(tmp_path / mode)
        run = verify(directory, data, labels=True, device="host", progress=False)
        assert run.exit_status == 0 and run.device_equal_images == run.images == 40
        if mode == "float":
            assert run.ort_equal_images == 40
        assert run.correct_device == run.correct_runtime >= 30  # random weights: near ties


def test_keras_model_quantized_by_onnxruntime(converted, tmp_path):
    """onnxruntime's own int8 path for the tf2onnx file: quant_pre_process (which folds the Mul
    and Add into the Conv and turns MatMul + Add into Gemm), then quantize_static in QOperator
    format; tinyconv keeps its integers and, in float mode, computes exactly what onnxruntime
    computes on that file. Without the pre-processing too: the batch norm's QLinearMul and
    QLinearAdd of constants, and the Dense's QLinearMatMul + QLinearAdd, are kept as they are
    (tests/test_export_prequantized_ops.py)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(images(N_CALIB, seed=1)[:, None])

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"image": batch}

    source = tmp_path / "keras.onnx"
    onnx.save(converted.source, str(source))
    prepared = tmp_path / "prepared.onnx"
    quant_pre_process(str(source), str(prepared))
    for path, name in ((prepared, "q.onnx"), (source, "raw_q.onnx")):
        quantize_static(str(path), str(tmp_path / name), Reader(),
                        quant_format=QuantFormat.QOperator, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, per_channel=True)
    x = images(N_TEST, seed=5)
    for name in ("q.onnx", "raw_q.onnx"):
        result = export.from_onnx(tmp_path / name, None, requant="float")
        want = ort_float(onnx.load(str(tmp_path / name)), x)
        spec, out = result.model.input_spec, result.model.output_spec
        y = runtime.run(result.model, kernels.quantize(x, spec.scale, spec.zero_point))
        assert np.array_equal((y.astype(np.float32) - out.zero_point) * np.float32(out.scale),
                              want)
