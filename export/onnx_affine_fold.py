"""Fold the affine ops that exporters leave after a Conv or a fully connected layer into it.

BatchNormalization, and Mul / Add by a constant holding one value per output channel or
feature, scale and shift what the layer before them already computes as ``w x + b``: folded
into its weights and bias (float64 arithmetic, stored as float32), they leave one layer with
one requantization. Kept apart from export.onnx_clean's other passes because these are the
clean-ups that compute new weights.
"""
from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from export.onnx_common import (_attrs, _drop_unused_initializers, _initializers, _last_axis,
                                _per_channel)
from runtime.errors import TinyconvError


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
