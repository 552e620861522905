"""Overflow at export: a layer whose worst-case int32 accumulator could exceed 2**31 - 1 is
refused with a message naming it, never exported to wrap silently on the device.

The boundary is computed by hand: int8 weights of a channel whose weights are all equal
quantize to 127 each (symmetric, per channel), an input minus its zero point is at most 255 in
magnitude, so a fan-in of K costs 127 * 255 * K plus |bias|. INT32_MAX / (127 * 255) =
66311.06: K = 66311 fits (1912 to spare), K = 66312 does not; a 3x3 conv has fan-in 9 * C, so
C = 7367 fits and C = 7368 does not.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import export
from runtime.errors import TinyconvError
from tinyconv.cli import main

INT32_MAX = 2**31 - 1
assert 127 * 255 * 66311 + 1912 == INT32_MAX


def gemm_model(k: int, bias: float = 0.0) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"], name="flatten"),
         helper.make_node("Gemm", ["f", "w", "b"], ["y"], name="wide_fc", transB=1)], "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(np.full((1, k), 0.5, np.float32), "w"),
         numpy_helper.from_array(np.full(1, bias, np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def conv_model(channels: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="wide_conv")], "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.full((2, channels, 3, 3), -0.25, np.float32), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def calibration(shape) -> np.ndarray:
    """Inputs spanning exactly [0, 1]: scale 1/255, zero point -128, so |x - zp| reaches 255."""
    x = np.random.default_rng(0).uniform(0, 1, (3, *shape)).astype(np.float32)
    x[0] = 0.0
    x[1] = 1.0
    return x


@pytest.mark.parametrize("k, fits", [(66311, True), (66312, False)])
def test_fully_connected_fan_in_boundary(k, fits):
    model = gemm_model(k)
    if fits:
        layer = export.from_onnx(model, calibration((k, 1, 1))).model.layers[0]
        assert np.all(layer.arrays["weights"] == 127)
        assert 127 * 255 * k <= INT32_MAX
    else:
        with pytest.raises(TinyconvError, match=r"layer 'wide_fc'.*overflow int32"):
            export.from_onnx(model, calibration((k, 1, 1)))


@pytest.mark.parametrize("channels, fits", [(7367, True), (7368, False)])
def test_conv_fan_in_boundary(channels, fits):
    model = conv_model(channels)
    if fits:
        layer = export.from_onnx(model, calibration((channels, 3, 3))).model.layers[0]
        assert np.all(layer.arrays["weights"] == -127)
    else:
        with pytest.raises(TinyconvError, match=r"layer 'wide_conv'.*overflow int32"):
            export.from_onnx(model, calibration((channels, 3, 3)))


def test_bias_counts_toward_the_worst_case():
    # K = 66311 leaves 1912 for |bias|. The bias scale is x_scale * w_scale =
    # (1/255) * (0.5/127) = 1/64770, so a bias of 0.01 quantizes to about 648: fits; 0.05 to
    # about 3239: too much.
    k = 66311
    x = calibration((k, 1, 1))
    fits = export.from_onnx(gemm_model(k, bias=0.01), x).model.layers[0]
    assert abs(int(fits.arrays["bias"][0]) - 648) <= 2
    with pytest.raises(TinyconvError, match=r"layer 'wide_fc'.*overflow int32"):
        export.from_onnx(gemm_model(k, bias=0.05), x)


def test_cli_refuses_and_writes_nothing(tmp_path, capsys):
    k = 66312
    onnx.save(gemm_model(k), tmp_path / "wide.onnx")
    np.savez(tmp_path / "calib.npz", x=calibration((k, 1, 1)))
    out = tmp_path / "build" / "wide"
    code = main(["export", str(tmp_path / "wide.onnx"), "--calibration",
                 str(tmp_path / "calib.npz"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "overflow int32" in err and "Traceback" not in err
    assert not out.exists()
    assert not (tmp_path / "build").exists() or not any((tmp_path / "build").iterdir())
