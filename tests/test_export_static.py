"""Static subgraphs (export/static_fold.py) and the fixed batch (export/batch.py) on small graphs
built with onnx.helper in the shapes PyTorch's exporters write them; the oracle is onnxruntime
running the source model. tests/test_torch_export.py runs the exporters themselves."""
from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import export
from export.onnx_clean import clean_model
from runtime.errors import TinyconvError

mk = helper.make_node


def conv_then(nodes: list, batch="N", inits=(), opset: int = 13, k: int = 64
              ) -> onnx.ModelProto:
    """input [batch, 2, 4, 4] -> Conv (4 channels, 'c') -> ``nodes`` -> 'flat' [*, k] -> Gemm
    to 3 ('y')."""
    rng = np.random.default_rng(3)
    graph = helper.make_graph(
        [mk("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]), *nodes,
         mk("Gemm", ["flat", "fc_w", "fc_b"], ["y"], name="fc", transB=1)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
        [numpy_helper.from_array(rng.normal(size=(4, 2, 3, 3)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b"),
         numpy_helper.from_array(rng.normal(size=(3, k)).astype(np.float32), "fc_w"),
         numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "fc_b"), *inits])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def const(name, *values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def view_batch_minus_one(scale_batch: int = 1) -> tuple[list, list]:
    """``x.view(x.size(0) * scale_batch, -1)`` as the TorchScript exporter writes it."""
    nodes = [mk("Shape", ["c"], ["shape"], name="shape"),
             mk("Gather", ["shape", "zero"], ["n"], name="gather", axis=0),
             mk("Unsqueeze", ["n", "axes"], ["n1"], name="unsqueeze"),
             mk("Mul", ["n1", "k"], ["nk"], name="times"),
             mk("Concat", ["nk", "minus_one"], ["target"], name="concat", axis=0),
             mk("Reshape", ["c", "target"], ["flat"], name="view")]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"), const("axes", 0),
             const("k", scale_batch), const("minus_one", -1)]
    return nodes, inits


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def images(count: int) -> np.ndarray:
    return np.random.default_rng(count).normal(size=(count, 2, 4, 4)).astype(np.float32)


def test_shape_arithmetic_is_folded_and_the_batch_stays_free():
    nodes, inits = view_batch_minus_one()
    source = conv_then(nodes, inits=inits)
    cleaned = clean_model(source)
    assert [n.op_type for n in cleaned.graph.node] == ["Conv", "Reshape", "Gemm"]
    target = {t.name: t for t in cleaned.graph.initializer}[cleaned.graph.node[1].input[1]]
    assert list(numpy_helper.to_array(target)) == [-1, 64]
    for count in (1, 2, 5):
        np.testing.assert_allclose(run(cleaned, images(count)), run(source, images(count)),
                                   rtol=1e-6, atol=1e-6)


def test_a_constant_built_from_shapes_and_types_is_folded():
    """dynamo without its optimizer: a zero bias as Expand(CastLike(0, x), Shape(w)[:1])."""
    nodes = [mk("Shape", ["w"], ["w_shape"], name="w_shape", start=0, end=1),
             mk("CastLike", ["zero"], ["zero_f"], name="cast"),
             mk("Expand", ["zero_f", "w_shape"], ["bias0"], name="expand"),
             mk("Conv", ["c", "w2", "bias0"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             mk("Flatten", ["c2"], ["flat"], name="flatten")]
    nodes[1].input.append("x")  # CastLike reads x for its type only
    w2 = np.random.default_rng(5).normal(size=(4, 4, 3, 3)).astype(np.float32)
    source = conv_then(nodes, inits=[numpy_helper.from_array(np.array(0, np.int64), "zero"),
                                     numpy_helper.from_array(w2, "w2")], opset=18)
    cleaned = clean_model(source)
    assert [n.op_type for n in cleaned.graph.node] == ["Conv", "Conv", "Flatten", "Gemm"]
    bias = {t.name: t for t in cleaned.graph.initializer}[cleaned.graph.node[1].input[2]]
    assert np.array_equal(numpy_helper.to_array(bias), np.zeros(4, np.float32))
    np.testing.assert_allclose(run(cleaned, images(3)), run(source, images(3)), rtol=1e-6,
                               atol=1e-6)


def test_a_fixed_batch_is_freed_from_the_reshape_target():
    """torch.onnx.export's default: batch fixed at the example's 2, Reshape to [2, -1]."""
    reshape = [mk("Reshape", ["c", "target"], ["flat"], name="view")]
    source = conv_then(reshape, batch=2, inits=[const("target", 2, -1)])
    result = export.from_onnx(source, images(5), requant="float")  # 5: not a multiple of 2
    cleaned = result.float_model
    for model in (cleaned, result.quant_onnx):
        for value in (model.graph.input[0], model.graph.output[0]):
            assert value.type.tensor_type.shape.dim[0].dim_param == "N"
    x = images(4)
    expected = np.concatenate([run(source, x[:2]), run(source, x[2:])])
    np.testing.assert_allclose(run(cleaned, x), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(run(cleaned, x[:1]), expected[:1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case,message", [
    ("batch_times_two", "node 'view' (Reshape) computes a target shape from the batch size"),
    ("batch_in_add", "node 'add' (Add) reads 'n_f', which depends on the batch size"),
    ("fixed_batch_mixed", "node 'view' (Reshape) turns [2, 4, 4, 4] into [4, 32]"),
])
def test_what_cannot_be_made_per_sample_is_refused_by_name(case, message):
    if case == "batch_times_two":
        nodes, inits = view_batch_minus_one(scale_batch=2)
        model = conv_then(nodes, inits=inits, k=32)
    elif case == "batch_in_add":  # c + x.size(0)
        nodes = [mk("Shape", ["c"], ["shape"], name="shape"),
                 mk("Gather", ["shape", "zero"], ["n"], name="gather", axis=0),
                 mk("Cast", ["n"], ["n_f"], name="cast", to=TensorProto.FLOAT),
                 mk("Add", ["c", "n_f"], ["sum"], name="add"),
                 mk("Flatten", ["sum"], ["flat"], name="flatten")]
        model = conv_then(nodes, inits=[numpy_helper.from_array(np.array(0, np.int64), "zero")])
    else:
        model = conv_then([mk("Reshape", ["c", "target"], ["flat"], name="view")], batch=2,
                          inits=[const("target", 4, 32)], k=32)
        model.graph.output[0].type.tensor_type.ClearField("shape")
    with pytest.raises(TinyconvError, match="^" + re.escape(message)):
        clean_model(model)
