"""The four MLPerf Tiny v1.0 reference models, as their authors define them, for tests and
benchmarks.

The Keras builders follow the published definitions in mlcommons/tiny
(benchmark/training/*/): ResNet-8 for CIFAR-10 (``resnet_v1_eembc``, 32x32x3, 16/32/64 filters
as in v1.0; later revisions of that file widened the default to 26), DS-CNN for keyword
spotting (49x10x1 MFCCs, a 10x4 stride-2 conv and four depthwise-separable blocks of 64),
MobileNetV1 alpha 0.25 for visual wake words (96x96x3, 2 classes) and the anomaly-detection
autoencoder (640 -> 4x128 -> 8 -> 4x128 -> 640, Dense + BatchNormalization + ReLU). The PyTorch
builders are the same architectures written the way a PyTorch user would (symmetric padding
where Keras pads ``same`` asymmetrically; the shapes match).

Weights are untrained but seeded, and every batch norm gets statistics and an affine part that
are not the identity, so that the exporter's folds are really exercised. TensorFlow and torch
are imported only when a builder needs them.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

SEED = 2026
# model -> (Keras NHWC input shape, PyTorch input shape, classes or output width)
SHAPES = {
    "resnet8": ((32, 32, 3), (3, 32, 32), 10),
    "dscnn": ((49, 10, 1), (1, 49, 10), 12),
    "mobilenet": ((96, 96, 3), (3, 96, 96), 2),
    "autoencoder": ((640,), (640,), 640),
}


def inputs(name: str, count: int, seed: int, layout: str = "keras") -> np.ndarray:
    """Small deterministic float inputs in the framework's layout (``keras``: NHWC, ``torch``:
    NCHW); the same images in both layouts for the same seed."""
    keras_shape = SHAPES[name][0]
    x = np.random.default_rng(seed).normal(size=(count, *keras_shape)).astype(np.float32)
    if layout == "torch" and x.ndim == 4:
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


# --- Keras (tf2onnx) --------------------------------------------------------------------------

def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    return tf


def _keras_stats(model, seed: int):
    """Non-trivial batch norm statistics and biases (the initial ones are 0/1)."""
    layers = _tf().keras.layers
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.6, 1.4, n), rng.normal(0, 0.2, n),
                               rng.normal(0, 0.2, n), rng.uniform(0.5, 2.0, n)])
        elif layer.get_weights():
            layer.set_weights([w if w.ndim > 1 else rng.normal(0, 0.1, w.shape).astype(w.dtype)
                               for w in layer.get_weights()])
    return model


def _keras_input(name: str, seed: int):
    """The model's input, after the seed is set: every builder then draws its layers' initial
    weights in the order it creates them, so the same seed gives the same model."""
    tf = _tf()
    tf.keras.utils.set_random_seed(seed)
    return tf.keras.Input(SHAPES[name][0])


def _keras_model(inputs_, outputs, seed: int):
    return _keras_stats(_tf().keras.Model(inputs_, outputs), seed)


def _l2():
    """The reference models' kernel regularizer (training only; it changes no weight here)."""
    return _tf().keras.regularizers.l2(1e-4)


def _bn_relu(x):
    """BatchNormalization + ReLU, which follows nearly every conv and dense layer of the four."""
    layers = _tf().keras.layers
    return layers.Activation("relu")(layers.BatchNormalization()(x))


def _separable(x, filters: int, stride: int = 1, initializer: str = "glorot_uniform"):
    """DS-CNN's and MobileNet's block: depthwise 3x3 + BN + ReLU, pointwise + BN + ReLU."""
    layers = _tf().keras.layers
    x = _bn_relu(layers.DepthwiseConv2D(3, strides=stride, padding="same",
                                        depthwise_initializer=initializer,
                                        depthwise_regularizer=_l2())(x))
    return _bn_relu(layers.Conv2D(filters, 1, padding="same", kernel_initializer=initializer,
                                  kernel_regularizer=_l2())(x))


def _head(x, classes: int, softmax: bool):
    layers = _tf().keras.layers
    return layers.Dense(classes, activation="softmax" if softmax else None,
                        kernel_initializer="he_normal")(x)


def keras_resnet8(softmax: bool = True, seed: int = SEED):
    """``resnet_v1_eembc`` of image_classification/keras_model.py: three stacks of 16, 32, 64
    filters, the last two with a stride-2 3x3 conv and a 1x1 stride-2 shortcut."""
    layers = _tf().keras.layers

    def conv(filters, kernel, stride=1):
        return layers.Conv2D(filters, kernel, strides=stride, padding="same",
                             kernel_initializer="he_normal", kernel_regularizer=_l2())

    inputs_ = _keras_input("resnet8", seed)
    x = _bn_relu(conv(16, 3)(inputs_))
    for stack, filters in enumerate((16, 32, 64)):
        stride = 1 if stack == 0 else 2
        y = _bn_relu(conv(filters, 3, stride)(x))
        y = layers.BatchNormalization()(conv(filters, 3)(y))
        if stack:
            x = conv(filters, 1, 2)(x)
        x = layers.Activation("relu")(layers.add([x, y]))
    x = layers.AveragePooling2D(pool_size=int(min(x.shape[1:3])))(x)
    outputs = _head(layers.Flatten()(x), SHAPES["resnet8"][2], softmax)
    return _keras_model(inputs_, outputs, seed)


def keras_dscnn(softmax: bool = True, seed: int = SEED):
    """``ds_cnn`` of keyword_spotting/keras_model.py: a 10x4 stride-2 ``same`` conv of 64, four
    depthwise 3x3 + pointwise 64 blocks (each followed by BN + ReLU), dropout, an average pool of
    (24, 5) over the 25x5 map, flatten, Dense(12)."""
    layers = _tf().keras.layers
    shape, classes = SHAPES["dscnn"][0], SHAPES["dscnn"][2]
    inputs_ = _keras_input("dscnn", seed)
    x = layers.Conv2D(64, (10, 4), strides=(2, 2), padding="same",
                      kernel_regularizer=_l2())(inputs_)
    x = layers.Dropout(0.2)(_bn_relu(x))
    for _ in range(4):
        x = _separable(x, 64)
    x = layers.Dropout(0.4)(x)
    x = layers.AveragePooling2D(pool_size=(shape[0] // 2, shape[1] // 2))(x)
    outputs = layers.Dense(classes, activation="softmax" if softmax else None)(layers.Flatten()(x))
    return _keras_model(inputs_, outputs, seed)


# MobileNetV1 alpha 0.25: (pointwise filters, depthwise stride) of the 13 separable blocks
MOBILENET_BLOCKS = ((16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (128, 1),
                    (128, 1), (128, 1), (128, 1), (256, 2), (256, 1))


def keras_mobilenet(softmax: bool = True, seed: int = SEED):
    """``mobilenet_v1`` of visual_wake_words/vww_model.py: a 3x3 stride-2 conv of 8, thirteen
    depthwise 3x3 + pointwise blocks (BN + ReLU after each conv), average pool over the 3x3
    map, flatten, Dense(2)."""
    layers = _tf().keras.layers
    inputs_ = _keras_input("mobilenet", seed)
    x = _bn_relu(layers.Conv2D(8, 3, strides=2, padding="same", kernel_initializer="he_normal",
                               kernel_regularizer=_l2())(inputs_))
    for filters, stride in MOBILENET_BLOCKS:
        x = _separable(x, filters, stride, "he_normal")
    x = layers.AveragePooling2D(pool_size=x.shape[1:3])(x)
    outputs = _head(layers.Flatten()(x), SHAPES["mobilenet"][2], softmax)
    return _keras_model(inputs_, outputs, seed)


def keras_autoencoder(seed: int = SEED):
    """``get_model`` of anomaly_detection/keras_model.py: 640 -> 4 x (Dense 128 + BN + ReLU) ->
    Dense 8 + BN + ReLU -> 4 x (Dense 128 + BN + ReLU) -> Dense 640 (linear)."""
    layers = _tf().keras.layers
    inputs_ = x = _keras_input("autoencoder", seed)
    for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        x = _bn_relu(layers.Dense(units)(x))
    outputs = layers.Dense(SHAPES["autoencoder"][2])(x)
    return _keras_model(inputs_, outputs, seed)


def to_onnx(keras_model, path: str | os.PathLike | None = None, opset: int = 17,
            nchw: bool = False):
    """Convert with tf2onnx as a user would (dynamic batch; ``nchw``: tf2onnx's
    ``inputs_as_nchw``, the input becomes NCHW); returns the ModelProto and saves it to
    ``path`` when given."""
    tf = _tf()
    import onnx
    import tf2onnx
    shape = tuple(keras_model.inputs[0].shape[1:])
    signature = (tf.TensorSpec((None, *shape), tf.float32, name="input"),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = tf2onnx.convert.from_keras(keras_model, input_signature=signature,
                                              opset=opset,
                                              inputs_as_nchw=["input"] if nchw else None)
    if path is not None:
        onnx.save(model, str(path))
    return model


def keras_float(keras_model, x: np.ndarray) -> np.ndarray:
    return np.asarray(keras_model(x, training=False))


# --- PyTorch ----------------------------------------------------------------------------------

def _torch_stats(net, seed: int):
    """Seeded weights were drawn by the constructor; batch norms get non-trivial statistics."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(n, generator=gen) * 0.8 + 0.6)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.2)
    return net.eval()


def _torch_net(name: str, softmax: bool, seed: int):
    import torch
    nn = torch.nn
    torch.manual_seed(seed)

    def conv_bn(cin, cout, kernel, stride=1, padding=0, groups=1, relu=True):
        mods = [nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups), nn.BatchNorm2d(cout)]
        return nn.Sequential(*mods, nn.ReLU()) if relu else nn.Sequential(*mods)

    def separable(cin, cout, stride=1):
        return [conv_bn(cin, cin, 3, stride, 1, groups=cin), conv_bn(cin, cout, 1)]

    class ResNet8(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = conv_bn(3, 16, 3, padding=1)
            self.blocks = nn.ModuleList()
            self.shortcuts = nn.ModuleList()
            cin = 16
            for stack, filters in enumerate((16, 32, 64)):
                stride = 1 if stack == 0 else 2
                self.blocks.append(nn.Sequential(conv_bn(cin, filters, 3, stride, 1),
                                                 conv_bn(filters, filters, 3, 1, 1, relu=False)))
                self.shortcuts.append(nn.Conv2d(cin, filters, 1, 2) if stack else nn.Identity())
                cin = filters
            self.pool = nn.AvgPool2d(8)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = self.stem(x)
            for block, shortcut in zip(self.blocks, self.shortcuts):
                x = torch.relu(shortcut(x) + block(x))
            return self.fc(torch.flatten(self.pool(x), 1))

    class Classifier(nn.Module):
        """``features`` -> average pool -> flatten -> dense: DS-CNN and MobileNet."""

        def __init__(self, features, pool, width, classes):
            super().__init__()
            self.features = nn.Sequential(*features)
            self.pool = nn.AvgPool2d(pool)
            self.fc = nn.Linear(width, classes)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.features(x)), 1))

    def dscnn():
        layers_ = [conv_bn(1, 64, (10, 4), 2, (5, 1))]  # 25x5, as Keras' ``same``
        for _ in range(4):
            layers_ += separable(64, 64)
        return Classifier([*layers_, nn.Dropout(0.4)], (24, 5), 64, 12)

    def mobilenet():
        layers_, cin = [conv_bn(3, 8, 3, 2, 1)], 8
        for filters, stride in MOBILENET_BLOCKS:
            layers_ += separable(cin, filters, stride)
            cin = filters
        return Classifier(layers_, 3, 256, 2)

    class AutoEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            mods, width = [], 640
            for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
                mods += [nn.Linear(width, units), nn.BatchNorm1d(units), nn.ReLU()]
                width = units
            self.body = nn.Sequential(*mods, nn.Linear(width, 640))

        def forward(self, x):
            return self.body(x)

    builders = {"resnet8": ResNet8, "dscnn": dscnn, "mobilenet": mobilenet,
                "autoencoder": AutoEncoder}
    net = builders[name]()
    if softmax:
        net = nn.Sequential(net, nn.Softmax(dim=1))
    net.input_shape = SHAPES[name][1]  # for torch_to_onnx's example
    return _torch_stats(net, seed)


def torch_resnet8(softmax: bool = True, seed: int = SEED):
    return _torch_net("resnet8", softmax, seed)


def torch_dscnn(softmax: bool = True, seed: int = SEED):
    return _torch_net("dscnn", softmax, seed)


def torch_mobilenet(softmax: bool = True, seed: int = SEED):
    return _torch_net("mobilenet", softmax, seed)


def torch_autoencoder(seed: int = SEED):
    return _torch_net("autoencoder", False, seed)


def torch_to_onnx(net, path: str | os.PathLike, dynamo: bool, opset: int = 17) -> Path:
    """Export with PyTorch's TorchScript (``dynamo=False``) or dynamo exporter, dynamic batch;
    the dynamo exporter's weights go to ``path.data``."""
    import torch
    path = Path(path)
    shape = net.input_shape
    example = (torch.from_numpy(np.random.default_rng(0).normal(size=(2, *shape))
                                .astype(np.float32)),)
    names = dict(input_names=["input"], output_names=["output"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not dynamo:
            torch.onnx.export(net, example, str(path), dynamo=False, opset_version=opset,
                              dynamic_axes={"input": {0: "N"}, "output": {0: "N"}}, **names)
            return path
        program = torch.onnx.export(net, example, dynamo=True, opset_version=max(opset, 18),
                                    dynamic_shapes=({0: torch.export.Dim("N")},),
                                    verbose=False, **names)
    program.save(str(path), external_data=True)
    return path


def torch_float(net, x: np.ndarray) -> np.ndarray:
    import torch
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()
