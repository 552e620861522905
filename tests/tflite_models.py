"""Small Keras CNNs converted by TensorFlow's own converter to full-integer int8 .tflite files.

Each builder returns a Keras model with random weights (non-zero biases); ``convert``
quantizes it with a representative dataset (per-channel weights unless ``per_tensor``), so the
files are what a TensorFlow user ships to a microcontroller. TensorFlow is needed here
(tests) only, never by export/.
"""
from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _keras():
    import tensorflow as tf

    return tf, tf.keras.layers


def _init(model, seed: int) -> None:
    """Random weights with non-zero biases (Keras initializes biases to zero)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights([rng.normal(0, 0.4 if w.ndim > 1 else 0.2, w.shape)
                               .astype(np.float32) for w in weights])


def convs(seed: int = 0):
    """conv (SAME, stride 2, relu), depthwise x2 (VALID, relu6), max pool, avg pool (SAME),
    1x1 conv, global average (MEAN over H, W), ReLU
    (standalone: MEAN has no fused activation), dense: CONV_2D, DEPTHWISE_CONV_2D, MAX_POOL_2D,
    AVERAGE_POOL_2D, MEAN, RELU, FULLY_CONNECTED."""
    tf, L = _keras()
    x = tf.keras.Input((16, 16, 3), batch_size=1)
    h = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    h = L.DepthwiseConv2D(3, depth_multiplier=2, padding="valid", activation="relu6")(h)
    h = L.MaxPooling2D(2, strides=1, padding="same")(h)
    h = L.AveragePooling2D(3, strides=2, padding="same")(h)
    h = L.Conv2D(12, 1)(h)
    h = L.GlobalAveragePooling2D(keepdims=True)(h)
    h = L.ReLU()(h)
    h = L.Flatten()(h)
    y = L.Dense(5)(h)
    model = tf.keras.Model(x, y)
    _init(model, seed)
    return model


def residual(seed: int = 1):
    """conv, conv, residual ADD (+ReLU, fused), max pool, Flatten (RESHAPE), ReLU6 (standalone
    unless the converter fuses it), dense with relu, dense: ADD, RESHAPE, activations."""
    tf, L = _keras()
    x = tf.keras.Input((8, 8, 2), batch_size=1)
    a = L.Conv2D(6, 3, padding="same")(x)
    b = L.Conv2D(6, 3, padding="same", activation="relu")(a)
    h = L.Add()([a, b])
    h = L.ReLU()(h)
    h = L.MaxPooling2D(2)(h)
    h = L.Flatten()(h)
    h = L.ReLU(max_value=6.0)(h)
    h = L.Dense(16, activation="relu")(h)
    y = L.Dense(4)(h)
    model = tf.keras.Model(x, y)
    _init(model, seed)
    return model


def squeeze(seed: int = 2):
    """conv to a 1x1 map, then tf.squeeze of H and W as the model output (the converter
    writes it as a RESHAPE of the output)."""
    tf, L = _keras()
    x = tf.keras.Input((5, 5, 4), batch_size=1)
    h = L.Conv2D(10, 5, activation="relu")(x)
    y = L.Lambda(lambda t: tf.squeeze(t, axis=[1, 2]))(h)
    model = tf.keras.Model(x, y)
    _init(model, seed)
    return model




def dataset(model, count: int, seed: int) -> np.ndarray:
    shape = tuple(model.input_shape[1:])
    return np.random.default_rng(seed).uniform(-1, 1, (count, *shape)).astype(np.float32)


def softmax(seed: int = 3):
    """dense + softmax: an op this import refuses (for the refusal test)."""
    tf, L = _keras()
    x = tf.keras.Input((6,), batch_size=1)
    y = L.Dense(4, activation="softmax")(x)
    model = tf.keras.Model(x, y)
    _init(model, seed)
    return model


BUILDERS = {"convs": convs, "residual": residual, "squeeze": squeeze, "softmax": softmax}


def convert(model, *, int8_io: bool = False, per_tensor: bool = False,
            samples: int = 32) -> bytes:
    """Full-integer int8 quantization by TensorFlow's converter (representative dataset)."""
    import tensorflow as tf

    data = dataset(model, samples, seed=123)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([data[i:i + 1]] for i in range(len(data)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    if per_tensor:
        converter._experimental_disable_per_channel = True
    return converter.convert()


def build(name: str, **options) -> bytes:
    return convert(BUILDERS[name](), **options)
