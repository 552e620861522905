"""Mul and Add by constants after a Conv: folded into the Conv when the constant is one value
per output channel (or one value), refused with the node's name otherwise. tf2onnx writes a
Keras batch norm it could not fold that way (tests/test_keras_export.py has the real thing)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import export
from runtime.errors import TinyconvError

C = 4


def _model(tail: list, constants: dict) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    mk = helper.make_node
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (C, 2, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.1, C).astype(np.float32), "b")]
    inits += [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in constants.items()]
    graph = helper.make_graph(
        [mk("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]), *tail,
         mk("GlobalAveragePool", [tail[-1].output[0]], ["y"], name="gap")],
        "affine", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", C, 1, 1])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("scale_shape,shift_shape", [((1, C, 1, 1), (C, 1, 1)), ((), (1,)),
                                                     ((C, 1, 1), ())])
def test_per_channel_mul_and_add_fold_into_the_conv(scale_shape, shift_shape):
    rng = np.random.default_rng(1)
    scale = rng.uniform(-2, 2, scale_shape)
    shift = rng.normal(0, 0.5, shift_shape)
    mk = helper.make_node
    source = _model([mk("Mul", ["c", "scale"], ["m"], name="scale"),
                     mk("Add", ["shift", "m"], ["a"], name="shift"),
                     mk("Relu", ["a"], ["r"], name="relu")], {"scale": scale, "shift": shift})
    result = export.from_onnx(source, rng.normal(size=(8, 2, 6, 6)).astype(np.float32))
    assert [node.op_type for node in result.float_model.graph.node] == \
        ["Conv", "Relu", "GlobalAveragePool"]
    x = rng.normal(size=(5, 2, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(_run(result.float_model, x), _run(source, x), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("tail,constants,message", [
    ([helper.make_node("Mul", ["c", "k"], ["m"], name="spatial")], {"k": np.ones((1, C, 6, 6))},
     "node 'spatial' has op Mul that is not a per-channel constant"),
    ([helper.make_node("Sub", ["c", "k"], ["m"], name="minus")], {"k": np.ones((C, 1, 1))},
     "node 'minus' has op Sub with a constant operand"),
    ([helper.make_node("Relu", ["c"], ["r"], name="relu"),
      helper.make_node("Add", ["r", "k"], ["a"], name="late")], {"k": np.ones((C, 1, 1))},
     "node 'late' has op Add with a constant operand"),
])
def test_other_constant_arithmetic_is_refused_by_name(tail, constants, message):
    with pytest.raises(TinyconvError, match=message):
        export.from_onnx(_model(tail, constants), np.zeros((2, 2, 6, 6), np.float32))
