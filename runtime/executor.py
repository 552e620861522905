"""Run a ``QuantModel`` over a batch of int8 inputs with runtime/'s kernels.

Each conv / fc layer's weights are preprocessed once per model object (a
``kernels.ConvPlan``), not once per call: a dataset streamed in batches pays for it once. A plan
is reused only while everything it was made from is unchanged: the very same array objects
(held by the cache, so their identities cannot be recycled), the layer's params and the zero
points of its tensors. In-place edits are not looked for; instead ``run`` makes the model's
arrays read-only (``QuantModel.freeze``), so a QuantModel is immutable once run: an in-place
edit raises, and replacing an array or a param is re-planned.
"""
from __future__ import annotations

import weakref

import numpy as np

from runtime import kernels
from runtime.errors import ModelFileError
from runtime.model import Layer, QuantModel

_plans: dict[int, dict[int, tuple[tuple, kernels.ConvPlan]]] = {}


def _model_plans(model: QuantModel) -> dict:
    key = id(model)
    if key not in _plans:
        _plans[key] = {}
        weakref.finalize(model, _plans.pop, key, None)
    return _plans[key]


def _plan_inputs(model: QuantModel, layer: Layer) -> tuple:
    """Everything a layer's plan depends on; arrays by identity (they are read-only)."""
    return (layer.op, tuple(sorted(layer.arrays.items())), repr(sorted(layer.params.items())),
            model.tensors[layer.inputs[0]].zero_point, model.tensors[layer.output].zero_point)


def _same(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and len(a[1]) == len(b[1]) and all(
        ka == kb and va is vb for (ka, va), (kb, vb) in zip(a[1], b[1])) and a[2:] == b[2:]


def _plan(model: QuantModel, index: int, layer: Layer) -> kernels.ConvPlan:
    cache = _model_plans(model)
    key = _plan_inputs(model, layer)
    cached = cache.get(index)
    if cached is not None and _same(cached[0], key):
        return cached[1]
    p = layer.params
    common = dict(input_zero_point=model.tensors[layer.inputs[0]].zero_point,
                  output_zero_point=model.tensors[layer.output].zero_point,
                  act_range=(p.get("act_min", -128), p.get("act_max", 127)))
    try:
        if layer.op == "conv2d":
            plan = kernels.plan_conv2d(layer.arrays["weights"], layer.arrays.get("bias"),
                                       layer.requant(), stride=p.get("stride", (1, 1)),
                                       padding=p.get("padding", (0, 0, 0, 0)),
                                       dilation=p.get("dilation", (1, 1)),
                                       groups=p.get("groups", 1), **common)
        else:
            plan = kernels.plan_fully_connected(layer.arrays["weights"],
                                                layer.arrays.get("bias"), layer.requant(),
                                                **common)
    except ValueError as exc:  # constants the kernels refuse (e.g. int32 overflow possible)
        raise ModelFileError(f"layer {layer.name!r} ({layer.op}): {exc}") from None
    cache[index] = (key, plan)
    return plan


def _run_layer(model: QuantModel, index: int, layer: Layer, values: dict) -> np.ndarray:
    p = layer.params
    act = (p.get("act_min", -128), p.get("act_max", 127))
    x = values[layer.inputs[0]]
    if layer.op == "conv2d":
        return _plan(model, index, layer)(x)
    if layer.op == "fully_connected":
        flat = x.reshape(x.shape[0], -1)
        return _plan(model, index, layer)(flat[:, None, None, :]).reshape(x.shape[0], -1)
    if layer.op == "max_pool2d":
        return kernels.max_pool2d(x, p["kernel"], stride=p.get("stride", p["kernel"]),
                                  padding=p.get("padding", (0, 0, 0, 0)), act_range=act)
    if layer.op == "avg_pool2d":
        return kernels.avg_pool2d(x, p["kernel"], layer.arrays,
                                  stride=p.get("stride", p["kernel"]),
                                  padding=p.get("padding", (0, 0, 0, 0)),
                                  count_include_pad=bool(p.get("count_include_pad", False)),
                                  ceil_pad=p.get("ceil_pad", (0, 0)),
                                  act_range=act)
    if layer.op == "global_avg_pool":
        return kernels.global_avg_pool(x, layer.arrays, act_range=act)
    if layer.op == "add":
        return kernels.add(x, values[layer.inputs[1]], layer.arrays, act_range=act)
    if layer.op == "lookup":
        return kernels.lookup(x, layer.arrays["table"], act_range=act)
    if layer.op == "softmax":
        return kernels.softmax(x, layer.arrays)
    if layer.op in _TENSOR_OPS:
        return _TENSOR_OPS[layer.op](layer, [values[name] for name in layer.inputs], act)
    raise ValueError(f"layer {layer.name!r}: unknown op {layer.op!r}")


_TENSOR_OPS = {  # runtime/kernels/tensor_ops.py: (layer, inputs, act_range) -> output
    "concat": lambda layer, xs, act: kernels.concat(xs, layer.arrays),
    "pad": lambda layer, xs, act: kernels.pad(xs[0], layer.params["pads"],
                                              int(layer.arrays["value"][0]),
                                              layer.params.get("mode", "constant")),
    "resize_nearest": lambda layer, xs, act: kernels.resize_nearest(
        xs[0], layer.arrays["rows"], layer.arrays["cols"]),
    "mul": lambda layer, xs, act: kernels.mul(*xs, layer.arrays, act_range=act),
    "sub": lambda layer, xs, act: kernels.sub(*xs, layer.arrays, act_range=act),
}


def run(model: QuantModel, x_int8: np.ndarray, *, collect: bool = False):
    """Execute ``model`` on ``x_int8`` ``[N, *input_shape]``; returns the int8 output
    ``[N, *output_shape]``, and with ``collect=True`` also a dict of every tensor by name
    (the input included), for per-layer comparison."""
    x = np.asarray(x_int8)
    spec = model.input_spec
    if x.dtype != np.int8:
        raise ValueError(f"x_int8 must be int8, got {x.dtype}")
    if tuple(x.shape[1:]) != tuple(spec.shape):
        raise ValueError(f"x_int8 must be [N, {', '.join(map(str, spec.shape))}], "
                         f"got shape {x.shape}")
    model.freeze()
    values = {model.input: x}
    for index, layer in enumerate(model.layers):
        out = _run_layer(model, index, layer, values)
        values[layer.output] = out.reshape((x.shape[0],) + tuple(model.tensors[layer.output].shape))
        if not collect:
            _release(model, index, values)
    y = values[model.output]
    return (y, values) if collect else y


def _release(model: QuantModel, index: int, values: dict) -> None:
    """Drop tensors no later layer reads, so large batches keep only live activations."""
    later = {name for layer in model.layers[index + 1:] for name in layer.inputs}
    for name in [n for n in values if n not in later and n != model.output]:
        del values[name]
