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
    """dense + softmax."""
    tf, L = _keras()
    x = tf.keras.Input((6,), batch_size=1)
    y = L.Dense(4, activation="softmax")(x)
    model = tf.keras.Model(x, y)
    _init(model, seed)
    return model


def reduce_max(seed: int = 3):
    """dense + max over the features: REDUCE_MAX, an op the import refuses."""
    tf, L = _keras()
    x = tf.keras.Input((6,), batch_size=1)
    y = L.Lambda(lambda t: tf.reduce_max(t, axis=-1, keepdims=True))(L.Dense(4)(x))
    model = tf.keras.Model(x, y)
    _init(model, seed)
    return model


def _bn_relu(h):
    tf, L = _keras()
    return L.ReLU()(L.BatchNormalization()(h))


def _init_bn(model, seed: int) -> None:
    """Random weights; batch-norm scales and variances kept positive and near 1."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if "batch_normalization" in layer.name:
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) if k in (0, 3)
                               else rng.normal(0, 0.1, w.shape).astype(np.float32)
                               for k, w in enumerate(weights)])
        elif weights:
            layer.set_weights([rng.normal(0, 0.3 if w.ndim > 1 else 0.1, w.shape)
                               .astype(np.float32) for w in weights])


def resnet8(seed: int = 4):
    """MLPerf Tiny image classification's ResNet-8 shape (32x32x3, three residual stacks of
    16/32/64 filters, 8x8 average pool, dense 10), without its softmax head."""
    tf, L = _keras()
    x = tf.keras.Input((32, 32, 3), batch_size=1)
    h = _bn_relu(L.Conv2D(16, 3, padding="same")(x))
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        y = _bn_relu(L.Conv2D(filters, 3, strides=stride, padding="same")(h))
        y = L.BatchNormalization()(L.Conv2D(filters, 3, padding="same")(y))
        if stride != 1:
            h = L.Conv2D(filters, 1, strides=stride)(h)
        h = L.ReLU()(L.Add()([h, y]))
    h = L.AveragePooling2D(pool_size=8)(h)
    model = tf.keras.Model(x, L.Dense(10)(L.Flatten()(h)))
    _init_bn(model, seed)
    return model


def ds_cnn(seed: int = 5):
    """MLPerf Tiny keyword spotting's DS-CNN shape (49x10x1 MFCC, conv 10x4 stride 2, four
    depthwise-separable blocks of 64, average pool, dense 12), softmax left out."""
    tf, L = _keras()
    x = tf.keras.Input((49, 10, 1), batch_size=1)
    h = _bn_relu(L.Conv2D(64, (10, 4), strides=(2, 2), padding="same")(x))
    for _ in range(4):
        h = _bn_relu(L.DepthwiseConv2D(3, padding="same")(h))
        h = _bn_relu(L.Conv2D(64, 1)(h))
    h = L.AveragePooling2D(pool_size=(25, 5))(h)
    model = tf.keras.Model(x, L.Dense(12)(L.Flatten()(h)))
    _init_bn(model, seed)
    return model


def elementwise(seed: int = 6):
    """LOGISTIC, TANH, MUL, SUB, LEAKY_RELU, PRELU, HARD_SWISH, CONCATENATION, then a softmax
    head: the table ops and the elementwise tensor ops of the import."""
    tf, L = _keras()
    x = tf.keras.Input((6, 6, 3), batch_size=1)
    c = L.Conv2D(8, 3, padding="same")(x)
    s = L.Activation("sigmoid")(c)
    t = L.Activation("tanh")(L.Conv2D(8, 1)(x))
    m = L.Multiply()([s, t])
    d = L.Subtract()([c, m])
    leaky = L.LeakyReLU(negative_slope=0.2)(d)
    p = L.PReLU(shared_axes=[1, 2])(L.Conv2D(8, 1)(leaky))
    hs = L.Activation("hard_swish")(L.Conv2D(4, 1)(leaky))
    h = L.Concatenate()([p, hs])
    h = L.Conv2D(6, 3, strides=2)(h)
    h = L.Flatten()(h)
    y = L.Dense(7, activation="softmax")(h)
    model = tf.keras.Model(x, y)
    _init(model, seed)
    return model


def tensor_ops(seed: int = 7):
    """PAD, PADV2 (a non-zero constant), RESIZE_NEAREST_NEIGHBOR (x2 and a resize to 7x5 with
    half-pixel centers), a squeeze-excite MUL broadcast over H and W."""
    tf, L = _keras()
    x = tf.keras.Input((6, 5, 3), batch_size=1)
    h = L.Conv2D(6, 3, padding="same", activation="relu")(x)
    h = L.ZeroPadding2D(((1, 0), (2, 1)))(h)
    h = L.Lambda(lambda t: tf.pad(t, [[0, 0], [1, 1], [0, 2], [0, 0]],
                                  constant_values=0.5))(h)
    h = L.Lambda(lambda t: tf.compat.v1.image.resize_nearest_neighbor(
        t, (16, 18), align_corners=True))(h)
    h = L.Conv2D(8, 3, strides=2)(h)
    h = L.Lambda(lambda t: tf.image.resize(t, (7, 5), method="nearest"))(h)
    g = L.GlobalAveragePooling2D(keepdims=True)(h)
    g = L.Conv2D(8, 1, activation="sigmoid")(g)
    h = L.Multiply()([h, g])
    y = L.Conv2D(4, 3)(h)
    model = tf.keras.Model(x, y)
    _init(model, seed)
    return model


BUILDERS = {"convs": convs, "residual": residual, "squeeze": squeeze, "softmax": softmax,
            "resnet8": resnet8, "ds_cnn": ds_cnn, "elementwise": elementwise,
            "tensor_ops": tensor_ops}


def convert(model, *, int8_io: bool = False, per_tensor: bool = False,
            samples: int = 32) -> bytes:
    """Full-integer int8 quantization by TensorFlow's converter (representative dataset)."""
    import tensorflow as tf

    data = dataset(model, samples, seed=123)
    if model.input_shape[0] is None:  # fix the batch at 1 so Flatten needs no SHAPE ops
        x = tf.keras.Input(model.input_shape[1:], batch_size=1)
        model = tf.keras.Model(x, model(x))
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
