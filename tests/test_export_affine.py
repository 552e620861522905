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


# -- after a fully connected layer (a Keras Dense + BatchNormalization; PyTorch Linear +
# BatchNorm1d), on a rank-2 [N, K] model input ---------------------------------------------

K, M = 6, 5


def _fc_model(nodes: list, constants: dict, output: str) -> onnx.ModelProto:
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (K, M)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.5, (M, K)).astype(np.float32), "wt"),
             numpy_helper.from_array(rng.normal(0, 0.1, M).astype(np.float32), "b")]
    inits += [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in constants.items()]
    graph = helper.make_graph(
        nodes, "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", K])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", M])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


_mk = helper.make_node
_BN = {"gamma": np.linspace(0.5, 1.5, M), "beta": np.linspace(-0.3, 0.3, M),
       "mean": np.linspace(0.2, -0.2, M), "var": np.linspace(0.5, 2.0, M)}


@pytest.mark.parametrize("nodes,constants,output", [
    ([_mk("MatMul", ["x", "w"], ["mm"], name="mm"), _mk("Add", ["mm", "b"], ["d"], name="bias"),
      _mk("Mul", ["d", "s"], ["m"], name="scale"), _mk("Add", ["m", "t"], ["y"], name="shift")],
     {"s": np.linspace(-2, 2, M), "t": np.linspace(0, 1, M)}, "y"),  # tf2onnx's Dense + BN
    ([_mk("MatMul", ["x", "w"], ["mm"], name="mm"), _mk("Mul", ["s", "mm"], ["m"], name="scale"),
      _mk("Relu", ["m"], ["y"], name="relu")], {"s": np.linspace(0.5, 2, M).reshape(1, M)}, "y"),
    ([_mk("Gemm", ["x", "wt", "b"], ["g"], name="gemm", transB=1, alpha=0.5, beta=2.0),
      _mk("Mul", ["g", "s"], ["m"], name="scale"), _mk("Add", ["m", "t"], ["y"], name="shift")],
     {"s": np.float32(1.5), "t": np.linspace(0, 1, M)}, "y"),
    ([_mk("Gemm", ["x", "wt", "b"], ["g"], name="gemm", transB=1),
      _mk("BatchNormalization", ["g", "gamma", "beta", "mean", "var"], ["n"], name="bn"),
      _mk("Relu", ["n"], ["y"], name="relu")], _BN, "y"),  # the TorchScript exporter's
    ([_mk("MatMul", ["x", "w"], ["mm"], name="mm"),
      _mk("BatchNormalization", ["mm", "gamma", "beta", "mean", "var"], ["y"], name="bn")],
     _BN, "y"),
], ids=["matmul_bias_mul_add", "matmul_mul", "gemm_alpha_beta", "gemm_bn", "matmul_bn"])
def test_affine_after_a_linear_layer_folds_into_it(nodes, constants, output):
    rng = np.random.default_rng(3)
    source = _fc_model(nodes, constants, output)
    result = export.from_onnx(source, rng.normal(size=(8, K)).astype(np.float32))
    ops = [node.op_type for node in result.float_model.graph.node]
    assert not {"Mul", "BatchNormalization"} & set(ops) and len(result.model.layers) == 1, ops
    x = rng.normal(size=(5, K)).astype(np.float32)
    np.testing.assert_allclose(_run(result.float_model, x), _run(source, x), rtol=1e-5,
                               atol=1e-5)


def test_batch_norm_after_a_shared_linear_output_is_refused_by_name():
    nodes = [_mk("MatMul", ["x", "w"], ["mm"], name="mm"),
             _mk("BatchNormalization", ["mm", "gamma", "beta", "mean", "var"], ["n"], name="bn"),
             _mk("Add", ["n", "mm"], ["y"], name="sum")]
    with pytest.raises(TinyconvError, match="node 'bn' \\(BatchNormalization\\) must directly "
                                            "follow a Conv or a fully connected layer"):
        export.from_onnx(_fc_model(nodes, _BN, "y"), np.zeros((2, K), np.float32))
