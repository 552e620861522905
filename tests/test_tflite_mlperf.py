"""The four MLPerf Tiny architectures as .tflite files, end to end.

Each Keras definition (tests/mlperf_tiny.py, softmax heads included) is converted by TFLite's
full-integer converter (representative dataset, per-channel weights), exported, compared with
TFLM on every element of every tensor, then built and verified under QEMU: ResNet-8 and DS-CNN
on lm3s6965evb (Cortex-M3, 64 KB RAM), MobileNet (one 27 KB image) and the autoencoder (270 KB
of weights) on mps2-an386. verify gates on device == runtime and runtime == TFLM.
"""
from __future__ import annotations

import numpy as np
import pytest

import export
import mlperf_tiny as mt
import tflite_models
from export.tflite_reference import compare

pytest.importorskip("tflite_micro")
pytest.importorskip("tensorflow")

BOARDS = {"resnet8": "lm3s6965evb", "dscnn": "lm3s6965evb", "mobilenet": "mps2-an386",
          "autoencoder": "mps2-an386"}
DEVICE_IMAGES = {"mobilenet": 1}
EXPECT_OPS = {"resnet8": {"CONV_2D", "ADD", "AVERAGE_POOL_2D", "FULLY_CONNECTED", "SOFTMAX"},
              "dscnn": {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "SOFTMAX"},
              "mobilenet": {"CONV_2D", "DEPTHWISE_CONV_2D", "SOFTMAX"},
              "autoencoder": {"FULLY_CONNECTED"}}
_CACHE: dict = {}


@pytest.fixture(scope="module", params=list(BOARDS))
def converted(request):
    """(name, .tflite bytes, ExportResult), converted once per module."""
    name = request.param
    if name not in _CACHE:
        keras_model = getattr(mt, f"keras_{name}")()
        data = tflite_models.convert(keras_model, samples=8)
        _CACHE[name] = (name, data, export.from_tflite(data, name=name))
    return _CACHE[name]


def test_every_tensor_equals_tflm(converted):
    from test_tflite_import import _builtin_ops

    name, data, result = converted
    assert EXPECT_OPS[name] <= set(_builtin_ops(data))
    comparison = compare(result.model, data, mt.inputs(name, 4, seed=2))
    assert comparison.first is None, comparison.summary()
    assert comparison.tensors == len(result.model.layers) + 1


def test_device_equals_runtime_under_qemu(converted, tmp_path):
    from _tools import require_tool
    from firmware_host.verify import verify

    require_tool("qemu-system-arm")
    require_tool("arm-none-eabi-gcc")
    name, data, result = converted
    out = result.save(tmp_path / name)
    count = DEVICE_IMAGES.get(name, 3)
    np.savez(tmp_path / "x.npz", x=mt.inputs(name, count, seed=5))
    verdict = verify(out, tmp_path / "x.npz", device=BOARDS[name], progress=False)
    assert verdict.target == BOARDS[name]
    assert verdict.exit_status == 0, verdict.as_dict()
    assert verdict.images == count == verdict.device_equal_images == verdict.tflm_equal_images
