"""The small ONNX graph readers that every import step shares.

Node attributes, initializers as arrays, inferred tensor shapes, constants that hold one value
per channel or feature, and dropping initializers no node reads. They sit below
export.onnx_clean, export.onnx_affine_fold, export.onnx_import, export.onnx_layer_ops and
export.import_tensor_ops, so that each is written once and no step imports another only for a
helper (nor in a cycle).
"""
from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from runtime.errors import TinyconvError


def _initializers(graph) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in graph.initializer}


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _per_channel(value: np.ndarray, channels: int) -> np.ndarray | None:
    """A constant that broadcasts over an NCHW tensor one value per channel (a scalar counts),
    as that vector; None if it varies along anything else."""
    if value.ndim > 4 or value.size not in (1, channels):
        return None
    shape = (1,) * (4 - value.ndim) + value.shape
    if shape[0] != 1 or shape[2:] != (1, 1):
        return None
    return np.broadcast_to(value.reshape(-1).astype(np.float64), (channels,))


def _last_axis(value: np.ndarray, features: int) -> np.ndarray | None:
    """A constant that broadcasts over [..., features] one value per feature (a scalar counts),
    as that vector; None if it varies along anything else or would raise an [N, M] to rank 3."""
    if value.size not in (1, features) or value.ndim > 2 or \
            (value.ndim and value.shape[-1] != value.size):
        return None
    return np.broadcast_to(value.reshape(-1).astype(np.float64), (features,))


def _drop_unused_initializers(graph) -> None:
    used = {i for n in graph.node for i in n.input}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    graph_inputs = [i for i in graph.input if i.name in used or i.name not in
                    {init.name for init in graph.initializer}]
    del graph.input[:]
    graph.input.extend(graph_inputs)


def _shape(model, name: str) -> list[int]:
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        if vi.name == name:
            dims = vi.type.tensor_type.shape.dim
            return [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    raise TinyconvError(f"shape inference could not determine the shape of tensor {name!r}")


def _sole_reader(graph):
    """``only(tensor, op_type)``: the one node that reads ``tensor``, when it is an
    ``op_type`` and the tensor is no graph output, else None. The pattern folds ask it of each
    link of a chain, so that nothing else sees the values they fold away."""
    outputs = {o.name for o in graph.output}
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)

    def only(tensor, op_type):
        found = users.get(tensor, [])
        ok = len(found) == 1 and found[0].op_type == op_type and tensor not in outputs
        return found[0] if ok else None
    return only
