"""Rewrite an ONNX float model as exporters write it into the ``model.onnx`` tinyconv maps.

``clean_model`` inlines functions, folds constants, static subgraphs (export.static_fold) and
data-movement chains (export.movement_fold), removes Identity/Dropout, folds BatchNormalization
and per-channel affine ops into the layer before them (export.onnx_affine_fold), frees a fixed
batch (export.batch) and infers shapes. Kept apart from export.onnx_import, which maps the
result onto device ops, because this step has an output of its own: it is still an ordinary
float ONNX model (onnx.checker passes, onnxruntime runs it), and calibration runs it.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx.inliner
import onnx.version_converter
from onnx import helper, numpy_helper

from export.activation_fold import fuse_hard_sigmoid
from export.batch import free_batch
from export.movement_fold import fold_movement
from export.onnx_affine_fold import _fold_batchnorm, _fold_channel_affine, _fold_linear_affine
from export.onnx_common import _drop_unused_initializers, _initializers, _sole_reader
from export.onnx_import import _check_ops
from export.static_fold import fold_static, static_nodes
from runtime.errors import TinyconvError

MIN_OPSET = 13


def _opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 0


def _check_connected(graph) -> None:
    """Every node input exists and the nodes can be ordered: name the first that fails."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            node = pending[0]
            produced = {o for n in pending for o in n.output}
            missing = [i for i in node.input if i not in available and i not in produced]
            if missing:
                raise TinyconvError(
                    f"node {node.name!r} ({node.op_type}) reads {missing[0]!r}, which no "
                    "initializer, graph input or node provides (missing initializer?)")
            raise TinyconvError(f"the graph has a cycle through node {node.name!r} "
                                f"({node.op_type})")
        for node in ready:
            available.update(node.output)
            ordered.append(node)
            pending.remove(node)
    del graph.node[:]
    graph.node.extend(ordered)


def _name_nodes(graph) -> None:
    used = {n.name for n in graph.node if n.name}
    for index, node in enumerate(graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


def _rename_input(graph, old: str, new: str) -> None:
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = new


def _rename_output(graph, old: str, new: str) -> None:
    for node in graph.node:
        for k, name in enumerate(node.output):
            if name == old:
                node.output[k] = new
    _rename_input(graph, old, new)


def _fold_constants(graph) -> None:
    for node in [n for n in graph.node if n.op_type == "Constant"]:
        attr = node.attribute[0]
        value = helper.get_attribute_value(attr)
        if attr.name == "value":
            array = numpy_helper.to_array(value)
        elif attr.name in ("value_float", "value_int"):
            array = np.array(value, dtype=np.float32 if attr.name == "value_float" else np.int64)
        elif attr.name in ("value_floats", "value_ints"):
            array = np.array(value, dtype=np.float32 if attr.name == "value_floats" else np.int64)
        else:
            raise TinyconvError(f"node {node.name!r} (Constant) uses unsupported attribute "
                                f"{attr.name!r}")
        graph.initializer.append(numpy_helper.from_array(array, node.output[0]))
        graph.node.remove(node)


def _strip_passthrough(graph) -> None:
    """Remove Identity and Dropout (inference mode); keep graph input/output names intact."""
    outputs = {o.name for o in graph.output}
    inputs = {i.name for i in graph.input}
    for node in [n for n in graph.node if n.op_type in ("Identity", "Dropout")]:
        src, dst = node.input[0], node.output[0]
        if len(node.output) > 1 and node.output[1]:
            if any(node.output[1] in n.input for n in graph.node) or node.output[1] in outputs:
                raise TinyconvError(f"node {node.name!r} (Dropout): its mask output is used")
        graph.node.remove(node)
        if dst in outputs:
            if src in inputs or src in outputs:
                raise TinyconvError(f"node {node.name!r} ({node.op_type}) copies a graph input "
                                    "or output to an output; nothing to compute")
            _rename_output(graph, src, dst)
        else:
            _rename_input(graph, dst, src)


def _input_reshapes(graph) -> None:
    """Reshapes of the model input that only change the view. tf2onnx writes the NHWC -> NCHW
    transpose of a one-channel input [N, H, W, 1] as a Reshape to [-1, 1, H, W]: the same bytes,
    so it becomes that Transpose (which the mapper reads as "the model input is NHWC"); with
    ``inputs_as_nchw`` the input is already [N, 1, H, W] and that Reshape does nothing."""
    x = graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in x.type.tensor_type.shape.dim]
    params = _initializers(graph)
    outputs = {o.name for o in graph.output}
    for node in list(graph.node):
        if (node.op_type != "Reshape" or node.input[0] != x.name or node.input[1] not in params
                or node.output[0] in outputs or len(dims) != 4):
            continue
        target = [int(d) for d in params[node.input[1]]]
        if len(target) != 4 or target[0] not in (-1, 0, dims[0]):
            continue
        if target[1:] == dims[1:]:
            graph.node.remove(node)
            _rename_input(graph, node.output[0], x.name)
        elif dims[3] == 1 and target[1:] == [1, dims[1], dims[2]]:
            node.op_type = "Transpose"
            del node.input[1:]
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("perm", [0, 3, 1, 2]))


def _fuse_decomposed_prelu(graph) -> None:
    """tf2onnx writes a Keras PReLU as ``Relu(x) + Relu(Neg(x)) * c`` with ``c = -alpha``:
    make it the one PRelu (slope ``-c``) it computes, bit for bit (negation is exact)."""
    params = _initializers(graph)
    only = _sole_reader(graph)
    by_output = {o: n for n in graph.node for o in n.output}

    for neg in [n for n in graph.node if n.op_type == "Neg"]:
        x = neg.input[0]
        relu_neg = only(neg.output[0], "Relu")
        mul = relu_neg and only(relu_neg.output[0], "Mul")
        add = mul and only(mul.output[0], "Add")
        if add is None:
            continue
        constant = [name for name in mul.input if name != relu_neg.output[0]]
        positive = by_output.get([i for i in add.input if i != mul.output[0]][0])
        if (len(constant) != 1 or constant[0] not in params or positive is None
                or positive.op_type != "Relu" or positive.input[0] != x
                or only(positive.output[0], "Add") is None):
            continue
        slope = add.name + "_slope"
        graph.initializer.append(numpy_helper.from_array(-params[constant[0]], slope))
        index = list(graph.node).index(add)
        graph.node.insert(index, helper.make_node("PRelu", [x, slope], [add.output[0]],
                                                  name=add.name))
        for node in (neg, relu_neg, mul, add, positive):
            graph.node.remove(node)
    _drop_unused_initializers(graph)


def clean_model(model: onnx.ModelProto, prequantized: bool = False) -> onnx.ModelProto:
    """The float model as tinyconv imports it (written as ``model.onnx``). A ``prequantized``
    source (export.qimport) keeps its Mul / Add by constants: each requantizes on its own."""
    if _opset(model) < MIN_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, MIN_OPSET)
        except Exception as exc:
            raise TinyconvError(f"ONNX opset {_opset(model)} could not be upgraded to "
                                f"{MIN_OPSET}: {str(exc).splitlines()[0]}") from None
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    graph = model.graph
    # Initializers may be listed as graph inputs (old exporters); they are constants here.
    init_names = {i.name for i in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in init_names]
    if len(real_inputs) != 1 or len(graph.output) != 1:
        raise TinyconvError(f"the model must have exactly one input and one output, it has "
                            f"{len(real_inputs)} and {len(graph.output)}")
    del graph.input[:]
    graph.input.extend(real_inputs)
    _name_nodes(graph)
    _check_connected(graph)
    _fold_constants(graph)
    fold_movement(model, {tuple(node.output) for node in static_nodes(graph)})
    _check_ops(graph, exempt=static_nodes(graph))
    _check_input(graph.input[0])
    fold_static(model)
    _strip_passthrough(graph)
    _input_reshapes(graph)
    _fold_batchnorm(graph)
    _fuse_decomposed_prelu(graph)
    fuse_hard_sigmoid(graph)
    if not prequantized:
        _fold_channel_affine(graph)
        _fold_linear_affine(graph)
    del graph.value_info[:]
    free_batch(model)
    _drop_unused_initializers(graph)
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
        onnx.checker.check_model(model)
    except Exception as exc:
        raise TinyconvError(f"the ONNX model is not valid: {str(exc).splitlines()[0]}") from None
    return model


def _check_input(value_info) -> None:
    tensor = value_info.type.tensor_type
    if tensor.elem_type != onnx.TensorProto.FLOAT:
        raise TinyconvError(f"model input {value_info.name!r} must be float32, it is "
                            f"{onnx.TensorProto.DataType.Name(tensor.elem_type)}")
    dims = tensor.shape.dim
    if len(dims) not in (2, 4):
        raise TinyconvError(f"model input {value_info.name!r} must be an image batch of rank 4 "
                            f"or a batch of vectors [N, K], it has rank {len(dims)}")
    for axis, dim in enumerate(dims[1:], start=1):
        if not dim.HasField("dim_value") or dim.dim_value <= 0:
            raise TinyconvError(
                f"model input {value_info.name!r} has a dynamic dimension {axis} "
                f"({dim.dim_param or '?'}); only the batch dimension may be dynamic: re-export "
                "with a fixed image size")
