"""Write the trained numpy ConvNet as a float ONNX model (NCHW, opset 13), with onnx.helper.

The graph mirrors ``convnet.ConvNet.forward`` node for node, so onnxruntime's logits equal the
numpy model's up to float32 rounding. Tensor names say what each activation is
(``conv1_relu``, ``pool1``, ...); the report shows them per layer.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime.model import write_atomic
from tinyconv.demo.convnet import ConvNet

OPSET = 13
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def to_onnx(net: ConvNet, side: int = 16, name: str = "digits_convnet") -> onnx.ModelProto:
    """The network as a checked ONNX model with a symbolic batch axis ``N``."""
    p = net.params
    initializers = [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k)
                    for k, v in p.items()]
    pool = dict(kernel_shape=[2, 2], strides=[2, 2])
    same_3x3 = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
    nodes = [
        helper.make_node("Conv", [INPUT_NAME, "conv1.weight", "conv1.bias"], ["conv1"],
                         name="conv1", **same_3x3),
        helper.make_node("Relu", ["conv1"], ["conv1_relu"], name="relu1"),
        helper.make_node("MaxPool", ["conv1_relu"], ["pool1"], name="pool1", **pool),
        helper.make_node("Conv", ["pool1", "conv2.weight", "conv2.bias"], ["conv2"],
                         name="conv2", **same_3x3),
        helper.make_node("Relu", ["conv2"], ["conv2_relu"], name="relu2"),
        helper.make_node("MaxPool", ["conv2_relu"], ["pool2"], name="pool2", **pool),
        helper.make_node("Flatten", ["pool2"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], [OUTPUT_NAME], name="fc",
                         transB=1),
    ]
    classes = p["fc.weight"].shape[0]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 1, side, side])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", classes])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="tinyconv.demo")
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    onnx.checker.check_model(model, full_check=True)
    return model


def save_onnx(net: ConvNet, path: str | os.PathLike, side: int = 16) -> Path:
    """Write ``to_onnx(net)`` atomically to ``path``."""
    path = Path(path)
    write_atomic(path, to_onnx(net, side).SerializeToString())
    return path


def onnxruntime_logits(model: onnx.ModelProto | str | os.PathLike, x: np.ndarray) -> np.ndarray:
    """Float logits from onnxruntime (one thread, so runs are reproducible)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: np.asarray(x, np.float32)})[0]
