"""Each conv layer's kernel scratch, as export sizes it, against CMSIS-NN's buffer size for the
same layer (tests/cmsis_nn_sizes.py, the independent reference): at most twice as large.

The layers: those of benchmarks/bench_kernels_arm.py and the conv shapes of the MLPerf Tiny
models (ResNet-8, DS-CNN, MobileNetV1 0.25; tests/mlperf_tiny.py builds the real ones, too
slowly for this check). A 1x1 conv without padding needs none, as CMSIS-NN's 1x1 kernels
(tc_conv2d.c keeps its column in the output's unwritten part). Exceptions, each stated in its
kernel's header comment: the one-channel kernel (tc_conv2d_1ch.c), where its packed rows do
not fit its output's tail and then its spare input (they do on the bench layer: held to 2x
there), is held to its packed rows alone (one int32 per input column an output row's windows
read, per window row: nothing that grows with the channels or the weights; the reason in its
header comment). The depthwise 3x3 layers need none on any core, as CMSIS-NN's
arm_depthwise_conv_3x3_s8 (tc_depthwise_conv2d.c finds room for its column buffer, and the M0
and the host read in place)."""
from __future__ import annotations

import cmsis_nn_sizes
import numpy as np
import pytest
from _firmware_models import random_model

from export.c_codegen import layer_scratch


def conv(out, kernel=(3, 3), **kw) -> dict:
    return dict(op="conv2d", out=out, kernel=kernel, **kw)


SAME = dict(padding=(1, 1, 1, 1))
MODELS = {
    "bench": ((28, 28, 1), [conv(8, **SAME), conv(16, **SAME), dict(op="max_pool2d"),
                            conv(32, **SAME), conv(32, groups=32, **SAME),
                            conv(32, kernel=(1, 1))]),
    "resnet8": ((32, 32, 3), [conv(16, **SAME), conv(16, **SAME), conv(16, **SAME),
                              conv(32, stride=(2, 2), padding=(0, 0, 1, 1)), conv(32, **SAME)]),
    "resnet8_deep": ((8, 8, 32), [conv(64, **SAME), conv(64, **SAME),
                                  conv(64, kernel=(1, 1), stride=(2, 2))]),
    "resnet8_shortcut": ((16, 16, 16), [conv(32, kernel=(1, 1), stride=(2, 2))]),
    "dscnn": ((49, 10, 1), [conv(64, kernel=(10, 4), stride=(2, 2), padding=(4, 1, 5, 1)),
                            conv(64, groups=64, **SAME), conv(64, kernel=(1, 1))]),
    "mobilenet": ((96, 96, 3), [conv(8, stride=(2, 2), padding=(0, 0, 1, 1)),
                                conv(8, groups=8, **SAME), conv(16, kernel=(1, 1))]),
    "mobilenet_deep": ((6, 6, 128), [conv(128, groups=128, **SAME),
                                     conv(256, kernel=(1, 1)), conv(256, kernel=(1, 1))]),
}


@pytest.mark.parametrize("name", MODELS)
def test_conv_scratch_within_twice_cmsis_nn(name):
    shape, layers = MODELS[name]
    model = random_model(np.random.default_rng(3), shape, layers, "fixed")
    checked = 0
    for layer, ours in zip(model.layers, layer_scratch(model)):
        if layer.op != "conv2d":
            continue
        m, kh, kw, cg = layer.arrays["weights"].shape
        kernel, theirs = cmsis_nn_sizes.layer_size(model, layer)
        if cg == 1 and layer.params["groups"] == 1:
            out_w = model.tensors[layer.output].shape[1]
            columns = ((out_w - 1) * layer.params["stride"][1] +
                       (kw - 1) * layer.params["dilation"][1] + 1)
            assert ours <= max(2 * theirs, 4 * kh * columns), (layer.name, ours)
            if name == "bench":  # the rows in the output's tail, then in the spare input
                assert ours <= 2 * theirs, (layer.name, ours, kernel, theirs)
            checked += 1
            continue
        assert ours <= 2 * theirs, (layer.name, ours, kernel, theirs)
        checked += 1
    assert checked > 0
