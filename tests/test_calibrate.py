"""Calibration over datasets of any size, for every method, against the ONNX reference evaluator."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from export.calibrate import METHODS, calibrate


def conv_relu_model():
    weights = np.random.default_rng(0).normal(size=(4, 1, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
        "conv_relu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4, 6, 6])],
        [numpy_helper.from_array(weights, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("count", [37, 64, 5])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_takes_any_number_of_images(method, count, capsys):
    model = conv_relu_model()
    x = np.random.default_rng(count).normal(size=(count, 1, 8, 8)).astype(np.float32)
    ranges = calibrate(model, x, method)
    z = ReferenceEvaluator(model).run(None, {"x": x})[0]
    low, high = ranges["z"]
    assert low == 0.0
    assert 0.5 * z.max() < high <= z.max() * (1 + 1e-5)
    if method == "minmax":
        assert high == pytest.approx(float(z.max()), rel=1e-6)
    assert capsys.readouterr().out == ""


def test_entropy_clips_outliers_that_minmax_keeps():
    """Two values at +-40 in data within +-1: minmax must keep them, the entropy calibrator
    (KL divergence over a 2048-bin histogram) must cut the range to a few times the bulk."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = np.random.default_rng(0).uniform(-1, 1, (64, 1, 8, 8)).astype(np.float32)
    x[3, 0, 2, 2], x[9, 0, 5, 1] = 40.0, -40.0
    minmax, entropy = calibrate(model, x, "minmax")["x"], calibrate(model, x, "entropy")["x"]
    assert minmax == (-40.0, 40.0)
    scale = {k: (hi - lo) / 255 for k, (lo, hi) in (("minmax", minmax), ("entropy", entropy))}
    assert scale["entropy"] < scale["minmax"] / 4  # the outliers are clipped...
    assert entropy[0] <= -1.0 and entropy[1] >= 1.0  # ...the data is not
