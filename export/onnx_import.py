"""Read an ONNX float model as exporters write it and turn it into a ``FloatGraph``.

Two steps, kept apart because each has its own output:
- ``clean_model`` gives ``model.onnx``: functions inlined, constants and static subgraphs
  folded (export.static_fold), Identity/Dropout removed, BatchNormalization folded into the Conv
  before it, a fixed batch freed (export.batch), shapes inferred. It is still an ordinary float
  ONNX model (onnx.checker passes, onnxruntime runs it), and calibration runs it.
- ``to_graph`` maps that model onto the device's ops, or raises a ``TinyconvError`` naming the
  node and op it cannot map, before anything is written.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import onnx
import onnx.inliner
import onnx.version_converter
from onnx import helper, numpy_helper

from export.batch import free_batch
from export.graph import Boundary, FloatGraph, FloatLayer
from export.movement_fold import fold_movement
from export import import_tensor_ops as tensor_ops
from export.static_fold import fold_static, static_nodes
from export.tables import ONNX_OPS as LOOKUP_OPS
from runtime.errors import TinyconvError

SUPPORTED_OPS = ("Conv", "BatchNormalization", "Relu", "Clip", "MaxPool", "AveragePool",
                 "GlobalAveragePool", "ReduceMean", "Flatten", "Reshape", "Squeeze", "Gemm",
                 "MatMul", "Add", "Mul", "Identity", "Dropout", "Constant", "Transpose",
                 *LOOKUP_OPS, "Softmax", "Concat", "Pad", "Resize", "Upsample", "Sub")
_ACTIVATIONS = ("Relu", "Clip")
MIN_OPSET = 13


def load_model(source) -> onnx.ModelProto:
    """A ModelProto from a path (external data next to it is read too) or a ModelProto."""
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
        return model
    path = Path(source)
    if not path.is_file():
        raise TinyconvError(f"{path}: no such ONNX model file")
    try:
        return onnx.load(os.fspath(path))
    except Exception as exc:  # protobuf DecodeError, missing external data, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TinyconvError(f"{path}: not a readable ONNX model ({reason})") from None


def _opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 0


def _initializers(graph) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in graph.initializer}


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


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


def _fold_batchnorm(graph) -> None:
    params = _initializers(graph)
    outputs = {o.name for o in graph.output}
    by_output = {o: n for n in graph.node for o in n.output}
    for bn in [n for n in graph.node if n.op_type == "BatchNormalization"]:
        conv = by_output.get(bn.input[0])
        users = [n for n in graph.node if bn.input[0] in n.input]
        if len(bn.output) > 1 and any(bn.output[1:]):
            raise TinyconvError(f"node {bn.name!r} (BatchNormalization) is in training mode")
        linear = _linear_before(graph, params, by_output, bn.input[0], outputs)
        if linear is not None and all(name in params for name in bn.input[1:5]):
            gamma, beta, mean, var = (params[name].astype(np.float64) for name in bn.input[1:5])
            factor = gamma / np.sqrt(var + _attrs(bn).get("epsilon", 1e-5))
            weight, bias, absorb = linear
            absorb(weight * factor, (bias - mean) * factor + beta, bn)
            by_output = {o: n for n in graph.node for o in n.output}
            continue
        if conv is None or conv.op_type != "Conv" or len(users) != 1 or bn.input[0] in outputs:
            raise TinyconvError(f"node {bn.name!r} (BatchNormalization) must directly follow a "
                                "Conv or a fully connected layer (Gemm, MatMul) whose output it "
                                "alone reads, so it can be folded")
        try:
            gamma, beta, mean, var = (params[name].astype(np.float64) for name in bn.input[1:5])
            weight = params[conv.input[1]].astype(np.float64)
        except KeyError as exc:
            raise TinyconvError(f"node {bn.name!r} (BatchNormalization): parameter {exc} is not "
                                "an initializer") from None
        eps = _attrs(bn).get("epsilon", 1e-5)
        factor = gamma / np.sqrt(var + eps)
        _absorb_into_conv(graph, params, conv, bn, conv.name,
                          weight * factor.reshape(-1, *([1] * (weight.ndim - 1))),
                          (_conv_bias(params, conv) - mean) * factor + beta)
    _drop_unused_initializers(graph)


def _conv_bias(params: dict, conv) -> np.ndarray:
    """The Conv's bias in float64, zeros when it has none."""
    if len(conv.input) > 2 and conv.input[2]:
        return params[conv.input[2]].astype(np.float64)
    return np.zeros(params[conv.input[1]].shape[0])


def _absorb_into_conv(graph, params: dict, conv, node, prefix: str, weight, bias) -> None:
    """``conv`` takes the folded ``weight`` and ``bias`` (stored as float32 initializers
    ``prefix``_folded_W/_B, also in ``params``) and ``node``'s output; ``node`` goes."""
    names = (prefix + "_folded_W", prefix + "_folded_B")
    for name, value in zip(names, (weight, bias)):
        params[name] = value.astype(np.float32)
        graph.initializer.append(numpy_helper.from_array(params[name], name))
    del conv.input[1:]
    conv.input.extend(names)
    conv.output[0] = node.output[0]
    graph.node.remove(node)


def _per_channel(value: np.ndarray, channels: int) -> np.ndarray | None:
    """A constant that broadcasts over an NCHW tensor one value per channel (a scalar counts),
    as that vector; None if it varies along anything else."""
    if value.ndim > 4 or value.size not in (1, channels):
        return None
    shape = (1,) * (4 - value.ndim) + value.shape
    if shape[0] != 1 or shape[2:] != (1, 1):
        return None
    return np.broadcast_to(value.reshape(-1).astype(np.float64), (channels,))


def _fold_channel_affine(graph) -> None:
    """Fold Mul and Add by a per-channel constant into the Conv before them. tf2onnx writes a
    Keras BatchNormalization it could not fold (after a DepthwiseConv2D, say) as such a pair."""
    outputs = {o.name for o in graph.output}
    params = _initializers(graph)
    by_output = {o: n for n in graph.node for o in n.output}
    for node in [n for n in graph.node if n.op_type in ("Mul", "Add")]:
        constant = [k for k, name in enumerate(node.input) if name in params]
        if len(constant) != 1:
            continue
        source = node.input[1 - constant[0]]
        conv = by_output.get(source)
        users = [n for n in graph.node if source in n.input]
        if (conv is None or conv.op_type != "Conv" or len(users) != 1 or source in outputs
                or conv.input[1] not in params):
            continue
        weight = params[conv.input[1]].astype(np.float64)
        factor = _per_channel(params[node.input[constant[0]]], weight.shape[0])
        if factor is None:
            continue
        bias = _conv_bias(params, conv)
        if node.op_type == "Mul":
            weight, bias = weight * factor.reshape(-1, 1, 1, 1), bias * factor
        else:
            bias = bias + factor
        _absorb_into_conv(graph, params, conv, node, node.name, weight, bias)
        by_output[node.output[0]] = conv  # a following Add folds into the same Conv
    _drop_unused_initializers(graph)


def _last_axis(value: np.ndarray, features: int) -> np.ndarray | None:
    """A constant that broadcasts over [..., features] one value per feature (a scalar counts),
    as that vector; None if it varies along anything else or would raise an [N, M] to rank 3."""
    if value.size not in (1, features) or value.ndim > 2 or \
            (value.ndim and value.shape[-1] != value.size):
        return None
    return np.broadcast_to(value.reshape(-1).astype(np.float64), (features,))


def _linear_before(graph, params: dict, by_output: dict, tensor: str, outputs: set):
    """``(weight [K, M], bias [M], absorb)`` in float64 when ``tensor`` is the output of a fully
    connected layer (Gemm; MatMul; MatMul + constant Add, as tf2onnx writes a Dense) that only
    one node reads, else None. ``absorb(weight, bias, node)`` makes the layer compute that and
    write ``node``'s output, and removes ``node``."""
    def single(name):
        return name not in outputs and sum(name in n.input for n in graph.node) == 1

    node = by_output.get(tensor)
    if node is None or not single(tensor):
        return None
    if node.op_type == "Gemm" and node.input[1] in params and not _attrs(node).get("transA"):
        attrs = _attrs(node)
        weight = params[node.input[1]].astype(np.float64) * attrs.get("alpha", 1.0)
        weight = weight.T if attrs.get("transB", 0) else weight
        bias = np.zeros(weight.shape[1])
        if len(node.input) > 2 and node.input[2]:
            c = params.get(node.input[2])
            bias = None if c is None else _last_axis(c, weight.shape[1])
            if bias is None:
                return None
            bias = bias * attrs.get("beta", 1.0)

        def absorb(w, b, follower):
            for name, value in (("transB", 0), ("alpha", 1.0), ("beta", 1.0)):
                _set_attr(node, name, value)
            _absorb_into_conv(graph, params, node, follower, follower.name, w, b)
        return weight, bias, absorb
    add = None
    if node.op_type == "Add":
        constant = [k for k, name in enumerate(node.input) if name in params]
        matmul = by_output.get(node.input[1 - constant[0]]) if len(constant) == 1 else None
        if matmul is None or matmul.op_type != "MatMul" or not single(matmul.output[0]):
            return None
        add, node = node, matmul
    if node.op_type != "MatMul" or node.input[1] not in params or params[node.input[1]].ndim != 2:
        return None
    weight = params[node.input[1]].astype(np.float64)
    bias = np.zeros(weight.shape[1])
    if add is not None:
        bias = _last_axis(params[add.input[constant[0]]], weight.shape[1])
        if bias is None:
            return None

    def absorb_matmul(w, b, follower):
        names = (follower.name + "_folded_W", follower.name + "_folded_B")
        for name, value in zip(names, (w, b)):
            params[name] = value.astype(np.float32)
            graph.initializer.append(numpy_helper.from_array(params[name], name))
        node.input[1] = names[0]
        if add is None:  # a bias Add of its own, so that the MatMul + Add pattern holds
            bias_add = helper.make_node("Add", [node.output[0], names[1]], [follower.output[0]],
                                        name=follower.name + "_bias")
            graph.node.insert(list(graph.node).index(follower), bias_add)
        else:
            add.input[constant[0]] = names[1]
            add.output[0] = follower.output[0]
        graph.node.remove(follower)
    return weight, bias, absorb_matmul


def _set_attr(node, name: str, value) -> None:
    for attr in node.attribute:
        if attr.name == name:
            node.attribute.remove(attr)
            break
    node.attribute.append(helper.make_attribute(name, value))


def _fold_linear_affine(graph) -> None:
    """Fold Mul and Add by a per-feature constant into the fully connected layer before them.
    tf2onnx writes a Keras Dense + BatchNormalization as MatMul, Add (the bias), Mul, Add."""
    outputs = {o.name for o in graph.output}
    params = _initializers(graph)
    for node in [n for n in graph.node if n.op_type in ("Mul", "Add")]:
        constant = [k for k, name in enumerate(node.input) if name in params]
        if len(constant) != 1:
            continue
        by_output = {o: n for n in graph.node for o in n.output}
        source = node.input[1 - constant[0]]
        if node.op_type == "Add" and getattr(by_output.get(source), "op_type", "") == "MatMul":
            continue  # a Dense's own bias: the MatMul + Add the mapper reads
        linear = _linear_before(graph, params, by_output, source, outputs)
        if linear is None:
            continue
        weight, bias, absorb = linear
        factor = _last_axis(params[node.input[constant[0]]], weight.shape[1])
        if factor is None:
            continue
        if node.op_type == "Mul":
            absorb(weight * factor, bias * factor, node)
        else:
            absorb(weight, bias + factor, node)
    _drop_unused_initializers(graph)


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
    outputs = {o.name for o in graph.output}
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    by_output = {o: n for n in graph.node for o in n.output}

    def only(tensor, op_type):
        found = users.get(tensor, [])
        ok = len(found) == 1 and found[0].op_type == op_type and tensor not in outputs
        return found[0] if ok else None

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


def _drop_unused_initializers(graph) -> None:
    used = {i for n in graph.node for i in n.input}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    graph_inputs = [i for i in graph.input if i.name in used or i.name not in
                    {init.name for init in graph.initializer}]
    del graph.input[:]
    graph.input.extend(graph_inputs)


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


# -- mapping onto device ops -----------------------------------------------------------------


def _shape(model, name: str) -> list[int]:
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        if vi.name == name:
            dims = vi.type.tensor_type.shape.dim
            return [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    raise TinyconvError(f"shape inference could not determine the shape of tensor {name!r}")


def _nhwc(onnx_shape: list[int], name: str) -> tuple[int, ...]:
    per_sample = onnx_shape[1:]
    if any(d <= 0 for d in per_sample):
        raise TinyconvError(f"tensor {name!r} has a dynamic shape {onnx_shape}; only the batch "
                            "dimension may be dynamic")
    if len(per_sample) == 3:
        c, h, w = per_sample
        return (h, w, c)
    if len(per_sample) == 1:
        return tuple(per_sample)
    raise TinyconvError(f"tensor {name!r} has rank {len(onnx_shape)}; tinyconv handles NCHW "
                        "feature maps and [N, K] vectors")


def _auto_pad(attrs) -> str:
    auto = attrs.get("auto_pad", b"NOTSET")
    return auto.decode() if isinstance(auto, bytes) else auto


def _pads(node, attrs, in_hw, kernel, stride, dilation, out_hw) -> list[int]:
    """Explicit [top, left, bottom, right] padding, whatever auto_pad/ceil_mode said."""
    auto = _auto_pad(attrs)
    pads = [0, 0, 0, 0]
    if auto == "NOTSET":
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
    for axis in range(2):
        need = (out_hw[axis] - 1) * stride[axis] + (kernel[axis] - 1) * dilation[axis] + 1
        total = max(0, need - in_hw[axis])
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            small = total // 2
            begin = small if auto == "SAME_UPPER" else total - small
            pads[axis], pads[axis + 2] = begin, total - begin
        elif auto == "NOTSET" and pads[axis] + pads[axis + 2] < total:
            pads[axis + 2] = total - pads[axis]  # ceil_mode: one more window at the end
        elif auto not in ("NOTSET", "VALID"):
            raise TinyconvError(f"node {node.name!r} ({node.op_type}): unknown auto_pad {auto!r}")
    return [int(p) for p in pads]


def _check_ceil_windows(node, in_hw, kernel, stride, padding, out_hw) -> None:
    """onnxruntime drops a ceil_mode window that would start in the end padding; ONNX shape
    inference may still count it, and then the graph's shapes are not what runs."""
    for axis in range(2):
        last_start = (out_hw[axis] - 1) * stride[axis]
        if last_start >= in_hw[axis] + padding[axis]:
            raise TinyconvError(
                f"node {node.name!r} ({node.op_type}): with ceil_mode=1 its last window along "
                f"{'HW'[axis]} starts in the padding; onnxruntime drops that window but the "
                f"model's shape {out_hw} counts it (pad the input instead of using ceil_mode)")


class _Mapper:
    def __init__(self, model: onnx.ModelProto, ints: dict | None = None):
        self.model = model
        # already-quantized source: float initializer -> (integers, scales, zero points)
        self.ints = ints or {}
        self.prequantized = ints is not None  # its every tensor has its own quantization
        graph = model.graph
        self.params = _initializers(graph)
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.graph_output = graph.output[0].name
        self.alias: dict[str, str] = {}  # ONNX tensor -> IR tensor (flatten, NHWC transpose)
        self.fused: set[str] = set()  # nodes already absorbed into a layer
        self.layers: list[FloatLayer] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.layout = "NCHW"
        self.nhwc_order: set[str] = set()  # flattened tensors already in NHWC order
        self.folded_pads: dict[str, list[int]] = {}  # Pad output -> the Conv padding it adds

    def const(self, node, index: int) -> np.ndarray:
        name = node.input[index] if index < len(node.input) else ""
        if name not in self.params:
            raise TinyconvError(f"node {node.name!r} ({node.op_type}): input {index} "
                                f"({name!r}) must be a constant initializer")
        array = self.params[name]
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise TinyconvError(f"node {node.name!r} ({node.op_type}): initializer {name!r} "
                                "holds NaN or infinity")
        return array

    def src(self, name: str) -> str:
        return self.alias.get(name, name)

    def only_consumer(self, tensor: str):
        users = self.consumers.get(tensor, [])
        if len(users) == 1 and tensor != self.graph_output:
            return users[0]
        return None

    def unsupported(self, node, why: str = ""):
        return TinyconvError(
            f"node {node.name!r} has op {node.op_type}{why}, which tinyconv cannot map; "
            f"supported ops: {', '.join(SUPPORTED_OPS)}")

    def emit(self, node, op, inputs, output, fuse: bool = True, **kw) -> FloatLayer:
        """Add a layer, absorbing any Relu/Clip chain that alone follows it into its clamp
        (unless ``fuse`` is false: data movement keeps its input's codes, with no clamp)."""
        lo, hi = -math.inf, math.inf
        while fuse and (nxt := self.only_consumer(output)) is not None and \
                nxt.op_type in _ACTIVATIONS:
            a_lo, a_hi = self.activation_range(nxt)
            lo, hi = max(lo, a_lo), min(hi, a_hi)
            self.fused.add(nxt.name)
            output = nxt.output[0]
        layer = FloatLayer(op, node.name, [self.src(i) for i in inputs], output,
                           clamp=(lo, hi), **kw)
        self.shapes[output] = _nhwc(_shape(self.model, output), output)
        self.layers.append(layer)
        return layer

    def activation_range(self, node) -> tuple[float, float]:
        if node.op_type == "Relu":
            return 0.0, math.inf
        lo = float(self.const(node, 1)) if len(node.input) > 1 and node.input[1] else -math.inf
        hi = float(self.const(node, 2)) if len(node.input) > 2 and node.input[2] else math.inf
        return lo, hi

    def run(self) -> FloatGraph:
        graph = self.model.graph
        x = graph.input[0].name
        self.shapes[x] = _nhwc(_shape(self.model, x), x)
        for node in graph.node:
            if node.name in self.fused:
                continue
            handler = getattr(self, "op_" + node.op_type, None)
            if handler is None and node.op_type in LOOKUP_OPS:
                handler = self.op_lookup
            if handler is None:
                raise self.unsupported(node)
            handler(node)
        output = self.src(self.graph_output)
        if output not in self.shapes:
            raise TinyconvError(f"the model output {self.graph_output!r} is not computed by any "
                                "supported layer")
        if not self.layers:
            raise TinyconvError("the model has no layer tinyconv can run (no Conv, Gemm, ...)")
        boundary = Boundary(graph.input[0], graph.output[0], self.layout)
        return FloatGraph(x, output, self.shapes, self.layers, boundary, aliases=self.alias)

    # -- one handler per ONNX op ---------------------------------------------------------------

    def op_Transpose(self, node):
        x = graph_input = self.model.graph.input[0].name
        perm = list(_attrs(node).get("perm", []))
        flatten = self.only_consumer(node.output[0])
        if (perm == [0, 2, 3, 1] and flatten is not None
                and flatten.op_type in ("Flatten", "Reshape", "ReduceMean")):
            # tf2onnx: a Keras Flatten (or a mean over H, W) reads the feature map in NHWC
            # order, the device's own
            self.alias[node.output[0]] = self.src(node.input[0])
            self.nhwc_order.add(node.output[0])
            return
        if self._channel_softmax(node, perm):
            return
        if node.input[0] != graph_input or perm != [0, 3, 1, 2] or self.layers:
            raise self.unsupported(node, " (only NHWC->NCHW right after the input, or "
                                         "NCHW->NHWC right before a flatten or a mean over "
                                         "H, W, is supported)")
        # tf2onnx/Keras: the model input is NHWC, exactly the device layout.
        h, w, c = _shape(self.model, x)[1:]
        self.shapes[x] = (h, w, c)
        self.alias[node.output[0]] = x
        self.layout = "NHWC"

    def _channel_softmax(self, node, perm: list) -> bool:
        """PyTorch below opset 13: a Transpose that moves the channels last, Softmax over that
        axis, the inverse Transpose. That is the device's softmax over the channels; the
        Transposes vanish."""
        softmax = self.only_consumer(node.output[0])
        if len(perm) != 4 or perm[0] != 0 or perm[3] != 1 or softmax is None or \
                softmax.op_type != "Softmax" or int(_attrs(softmax).get("axis", -1)) not in (3, -1):
            return False
        back = self.only_consumer(softmax.output[0])
        if back is None or back.op_type != "Transpose" or \
                list(_attrs(back).get("perm", [])) != [int(i) for i in np.argsort(perm)]:
            return False
        self.fused.update((softmax.name, back.name))
        self.emit(softmax, "softmax", [node.input[0]], back.output[0])
        return True

    def op_Conv(self, node):
        attrs = _attrs(node)
        weight = self.const(node, 1).astype(np.float32)
        if weight.ndim != 4:
            raise self.unsupported(node, f" with a {weight.ndim - 2}-D kernel")
        bias = (self.const(node, 2).astype(np.float32) if len(node.input) > 2 and node.input[2]
                else np.zeros(weight.shape[0], np.float32))
        stride = list(attrs.get("strides", [1, 1]))
        dilation = list(attrs.get("dilations", [1, 1]))
        kernel = list(weight.shape[2:])
        in_hw = _shape(self.model, node.input[0])[2:]
        out_hw = _shape(self.model, node.output[0])[2:]
        pads = _pads(node, attrs, in_hw, kernel, stride, dilation, out_hw)
        pads = [p + q for p, q in zip(pads, self.folded_pads.get(node.input[0], [0] * 4))]
        self.emit(node, "conv2d", [node.input[0]], node.output[0],
                  params={"stride": stride, "padding": pads, "dilation": dilation,
                          "groups": int(attrs.get("group", 1))},
                  weights=np.ascontiguousarray(weight.transpose(0, 2, 3, 1)), bias=bias,
                  **self.integers(node, lambda w: w.transpose(0, 2, 3, 1), weight.shape[0]))

    def integers(self, node, to_device_layout, channels: int) -> dict:
        """Integer weights and bias of an already-quantized source, in the device layout."""
        if node.input[1] not in self.ints:
            return {}
        w_q, w_scales, w_zp = self.ints[node.input[1]]
        if np.any(w_zp != 0):
            raise TinyconvError(f"node {node.name!r} ({node.op_type}): weights with a non-zero "
                                "zero point; tinyconv needs symmetric weights")
        bias = node.input[2] if len(node.input) > 2 else ""
        bias_q = self.ints[bias][0] if bias in self.ints else np.zeros(channels, np.int32)
        return {"weights_q": np.ascontiguousarray(to_device_layout(w_q)).astype(np.int8),
                "weight_scales": w_scales.astype(np.float32),
                "bias_q": np.broadcast_to(bias_q.reshape(-1), (channels,)).astype(np.int32)}

    def _pool(self, node, op):
        attrs = _attrs(node)
        kernel = list(attrs["kernel_shape"])
        stride = list(attrs.get("strides", [1, 1]))
        if list(attrs.get("dilations", [1, 1])) != [1, 1]:
            raise self.unsupported(node, " with dilations")
        in_hw = _shape(self.model, node.input[0])[2:]
        out_hw = _shape(self.model, node.output[0])[2:]
        params = {"kernel": kernel, "stride": stride}
        padding = _pads(node, attrs, in_hw, kernel, stride, [1, 1], out_hw)
        if attrs.get("ceil_mode", 0):
            _check_ceil_windows(node, in_hw, kernel, stride, padding, out_hw)
        if op == "avg_pool2d":
            params["count_include_pad"] = bool(attrs.get("count_include_pad", 0))
            declared = list(attrs.get("pads", [0, 0, 0, 0]))
            ceil_pad = [padding[2] - declared[2], padding[3] - declared[3]]
            if attrs.get("ceil_mode", 0) and _auto_pad(attrs) == "NOTSET" and any(ceil_pad):
                params["ceil_pad"] = ceil_pad
        params["padding"] = padding
        if len(node.output) > 1 and node.output[1]:
            raise self.unsupported(node, " with an Indices output")
        self.emit(node, op, [node.input[0]], node.output[0], params=params)

    def op_MaxPool(self, node):
        self._pool(node, "max_pool2d")

    def op_AveragePool(self, node):
        self._pool(node, "avg_pool2d")

    def op_GlobalAveragePool(self, node):
        self.emit(node, "global_avg_pool", [node.input[0]], node.output[0])

    def op_ReduceMean(self, node):
        attrs = _attrs(node)
        axes = (list(self.const(node, 1)) if len(node.input) > 1 and node.input[1]
                else list(attrs.get("axes", [])))
        rank = len(_shape(self.model, node.input[0]))
        spatial = [1, 2] if node.input[0] in self.nhwc_order else [2, 3]  # NHWC: tf2onnx
        if spatial == [1, 2] and attrs.get("keepdims", 1):
            raise self.unsupported(node, " with keepdims=1 on an NHWC tensor")
        if rank != 4 or sorted(int(a) % 4 for a in axes) != spatial:
            raise self.unsupported(node, f" over axes {axes} (only H, W: a global average pool)")
        self.emit(node, "global_avg_pool", [node.input[0]], node.output[0])
        if not attrs.get("keepdims", 1):
            self.shapes[self.layers[-1].output] = (1, 1, self.shapes[self.layers[-1].output][0])

    def _flatten(self, node):
        out = _shape(self.model, node.output[0])
        if len(out) != 2:
            raise self.unsupported(node, f" to shape {out} (only [N, K] before a Gemm/MatMul)")
        self.alias[node.output[0]] = self.src(node.input[0])
        if node.input[0] in self.nhwc_order:
            self.nhwc_order.add(node.output[0])

    def op_Flatten(self, node):
        if _attrs(node).get("axis", 1) != 1:
            raise self.unsupported(node, " with axis != 1")
        self._flatten(node)

    def op_Reshape(self, node):
        if tensor_ops.is_view(self, node):
            return
        self._flatten(node)

    def op_Squeeze(self, node):
        self._flatten(node)

    def _fully_connected(self, node, weight_km: np.ndarray, bias: np.ndarray, output: str,
                         transposed: bool = False):
        source = self.src(node.input[0])
        shape = self.shapes[source]
        k = int(np.prod(shape))
        if weight_km.shape[0] != k:
            raise TinyconvError(f"node {node.name!r} ({node.op_type}): weight has "
                                f"{weight_km.shape[0]} rows for {k} inputs")

        def to_device_layout(w_km):  # [M, K], K in the NHWC order the device reads
            w = w_km.T
            if len(shape) == 3 and node.input[0] not in self.nhwc_order:
                h, wd, c = shape
                w = w.reshape(-1, c, h, wd).transpose(0, 2, 3, 1).reshape(-1, k)
            return w

        weight = to_device_layout(weight_km).astype(np.float32)
        m = weight.shape[0]
        ints = self.integers(node, lambda w: to_device_layout(w.T if transposed else w), m)
        self.emit(node, "fully_connected", [node.input[0]], output,
                  weights=np.ascontiguousarray(weight),
                  bias=np.broadcast_to(bias.astype(np.float32).reshape(-1), (m,)).copy(), **ints)

    def op_Gemm(self, node):
        attrs = _attrs(node)
        if attrs.get("transA", 0):
            raise self.unsupported(node, " with transA=1")
        b = self.const(node, 1).astype(np.float64)
        b = b.T if attrs.get("transB", 0) else b  # [K, M]
        c = (self.const(node, 2).astype(np.float64) if len(node.input) > 2 and node.input[2]
             else np.zeros(b.shape[1]))
        self._fully_connected(node, b * attrs.get("alpha", 1.0), c * attrs.get("beta", 1.0),
                              node.output[0], transposed=bool(attrs.get("transB", 0)))

    def op_MatMul(self, node):
        b = self.const(node, 1)
        add = self.only_consumer(node.output[0])
        bias, output = np.zeros(b.shape[-1], np.float32), node.output[0]
        if add is not None and add.op_type == "Add" and not self.prequantized:
            other = 1 if add.input[0] == node.output[0] else 0
            if add.input[other] in self.params:
                bias = self.const(add, other)
                output = add.output[0]
                self.fused.add(add.name)
        if b.ndim != 2 or bias.size != b.shape[1]:
            raise self.unsupported(node, " that is not a [N, K] x [K, M] (+ [M]) linear layer")
        self._fully_connected(node, b, bias, output)

    def op_Add(self, node):
        if self.prequantized and any(i in self.ints for i in node.input):
            return self.constant_lookup(node)
        if any(i in self.params for i in node.input):
            raise self.unsupported(node, " with a constant operand (only residual Add of two "
                                   "activations, MatMul + Add, or a per-channel bias right "
                                   "after a Conv)")
        a, b = node.input
        if _shape(self.model, a) != _shape(self.model, b):
            raise self.unsupported(node, " with broadcasting")
        self.emit(node, "add", [a, b], node.output[0])

    def op_Relu(self, node):
        raise self.unsupported(node, " not directly after Conv/Gemm/pool/Add")

    def op_Mul(self, node):
        if self.prequantized and any(i in self.ints for i in node.input):
            return self.constant_lookup(node)
        if any(i in self.params for i in node.input):
            raise self.unsupported(node, " that is not a per-channel constant scale right "
                                         "after a Conv whose output it alone reads (folded into "
                                         "the Conv)")
        tensor_ops.map_mul(self, node)

    def op_Sub(self, node):
        tensor_ops.map_sub(self, node)

    def op_Concat(self, node):
        tensor_ops.map_concat(self, node)

    def op_Pad(self, node):
        tensor_ops.map_pad(self, node)

    def op_Resize(self, node):
        tensor_ops.map_resize(self, node)

    op_Upsample = op_Resize

    op_Clip = op_Relu

    def op_lookup(self, node):
        """An elementwise activation: a 256-entry table (export/tables.py) at quantization."""
        params = {"function": node.op_type, "attributes": {
            k: (v.decode() if isinstance(v, bytes) else v) for k, v in _attrs(node).items()}}
        output = node.output[0]
        mul = self.only_consumer(output)
        if (node.op_type == "Sigmoid" and mul is not None and mul.op_type == "Mul"
                and sorted(mul.input) == sorted([node.input[0], output])
                and not self.prequantized):  # a source's requantized sigmoid output stays
            params["function"], output = "Swish", mul.output[0]  # x * sigmoid(x): SiLU
            self.fused.add(mul.name)
        if node.op_type == "PRelu":
            shape = _shape(self.model, node.input[0])
            slope = self.const(node, 1)
            channels = shape[1]
            per_channel = (_per_channel(slope, channels) if len(shape) == 4 else
                           np.broadcast_to(slope.reshape(-1), (channels,))
                           if slope.ndim <= 1 and slope.size in (1, channels) else None)
            if per_channel is None:
                raise self.unsupported(node, f" with a slope of shape {list(slope.shape)} "
                                             "(only a scalar or one value per channel)")
            values = np.asarray(per_channel, np.float32)
            params["slope"] = [float(v) for v in (values[:1] if np.all(values == values[0])
                                                  else values)]
        self.emit(node, "lookup", [node.input[0]], output, params=params)

    def constant_lookup(self, node):
        """A source's QLinearAdd / QLinearMul of an activation and an int8 constant: per
        channel an int8 -> int8 function, so a table (export/tables.py CONSTANT_OPS)."""
        k = 0 if node.input[0] in self.ints else 1
        x, (codes, scale, zp) = node.input[1 - k], self.ints[node.input[k]]
        shape = _shape(self.model, x)
        vector = (_per_channel(codes, shape[1]) if len(shape) == 4 else
                  _last_axis(codes, shape[-1]) if len(shape) == 2 else None)
        if vector is None or codes.dtype != np.int8 or scale.size != 1 or zp.size != 1:
            raise self.unsupported(node, f" of an int8 constant of shape {list(codes.shape)} "
                                   "(only a per-tensor quantized scalar or per-channel vector)")
        flat = vector if np.any(vector != vector[0]) else vector[:1]
        attrs = {"constant": [int(v) for v in flat], "scale": float(scale[0]),
                 "zero_point": int(zp[0])}
        self.emit(node, "lookup", [x], node.output[0],
                  params={"function": "QLinear" + node.op_type, "attributes": attrs})

    def op_Softmax(self, node):
        """Softmax over the channels: axis 1 (or -1) of an [N, K] vector, axis 1 of an NCHW
        feature map (the device's last, NHWC, axis)."""
        rank = len(_shape(self.model, node.input[0]))
        axis = int(_attrs(node).get("axis", -1))
        if rank not in (2, 4) or axis % rank != 1 or self.src(node.input[0]) not in self.shapes:
            raise TinyconvError(f"node {node.name!r} (Softmax): axis {axis} of a rank-{rank} "
                                "tensor is not the channel axis; only a softmax over the "
                                "channels (axis 1 of [N, K] or NCHW) is supported")
        self.emit(node, "softmax", [node.input[0]], node.output[0])


def _check_ops(graph, exempt=()) -> None:
    """Name the first node whose op tinyconv cannot run (``exempt``: nodes folded away)."""
    skip = {tuple(node.output) for node in exempt}
    for node in graph.node:
        if tuple(node.output) in skip:
            continue
        if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED_OPS:
            raise TinyconvError(
                f"node {node.name!r} has op {node.op_type}"
                f"{' (domain ' + node.domain + ')' if node.domain else ''}, which tinyconv "
                f"does not support; supported ops: {', '.join(SUPPORTED_OPS)}")


def to_graph(model: onnx.ModelProto, ints: dict | None = None) -> FloatGraph:
    """Map a cleaned float model onto device ops (raises TinyconvError for anything else).

    ``ints`` (from export.qimport) holds the integer weights of an already-quantized source."""
    _check_ops(model.graph)
    return _Mapper(model, ints).run()
