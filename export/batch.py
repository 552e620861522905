"""Free the batch dimension, so ``model.onnx`` and ``model.q.onnx`` take any number of samples.

``torch.onnx.export`` without dynamic axes (the default of both exporters) fixes the batch at
the size of the example input, and the TorchScript exporter then bakes it into Reshape targets
(``x.view(x.size(0), -1)`` becomes a Reshape to [2, 256]). The device and runtime/ work one
sample at a time, and calibration, ``tinyconv verify`` and users hand onnxruntime batches of
any size, so the imported model's batch becomes the symbolic ``N``: on the input, on the output,
and in every Reshape, which must keep the batch on axis 0 (a flatten) and gets the target
``[-1, ...]``.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from runtime.errors import TinyconvError

BATCH = "N"


def retarget_reshape(graph, node, target) -> None:
    """Point Reshape ``node`` at a constant target shape of its own (-1: the batch)."""
    name = node.output[0] + "_target_shape"
    graph.initializer.append(numpy_helper.from_array(np.array(target, np.int64), name))
    node.input[1] = name
    for attr in node.attribute:
        if attr.name == "allowzero":
            attr.i = 0


def free_batch(model: onnx.ModelProto) -> None:
    """Make a fixed batch dimension symbolic, in place (a model whose batch is free is kept)."""
    graph = model.graph
    dim = graph.input[0].type.tensor_type.shape.dim[0]
    if not dim.HasField("dim_value"):
        return
    batch = dim.dim_value
    reshapes = [node for node in graph.node if node.op_type == "Reshape"]
    if reshapes:
        shapes = _shapes(model)
        for node in reshapes:
            source, target = shapes.get(node.input[0]), shapes.get(node.output[0])
            if not (source and target and source[0] == batch and target[0] == batch
                    and all(d > 0 for d in target)):
                raise TinyconvError(
                    f"node {node.name!r} (Reshape) turns {source} into {target}, which does not "
                    f"keep the model's batch of {batch} on axis 0; tinyconv needs a per-sample "
                    "Reshape (a flatten)")
            retarget_reshape(graph, node, [-1, *target[1:]])
    for value in (graph.input[0], *graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == batch:
            dims[0].dim_param = BATCH  # replaces dim_value (a oneof)


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:
        raise TinyconvError(f"the ONNX model is not valid: {str(exc).splitlines()[0]}") from None
    graph = inferred.graph
    return {value.name: [d.dim_value if d.HasField("dim_value") else -1
                         for d in value.type.tensor_type.shape.dim]
            for value in (*graph.value_info, *graph.input, *graph.output)
            if value.type.tensor_type.HasField("shape")}
