"""Run a ``QuantModel`` over a batch of int8 inputs with runtime/'s kernels.

Per-model work is done once per model object, not once per call (a dataset streamed in batches,
or one image at a time, pays for it once): the layer order with each tensor's last reader
(``_Schedule``), and each layer's prepared work (a conv / fc layer's
``kernels.ConvPlan``, ...). Prepared work is reused only while everything it was made from is
unchanged: the very same array objects (held by the cache, so their identities cannot be
recycled), the layer's params and its tensors' zero points and shapes; a call checks that in a
few microseconds per layer. In-place edits are not looked for; instead ``run`` makes the
model's arrays read-only (as ``QuantModel.freeze`` does), so a QuantModel is immutable once
run: an in-place edit raises, and replacing an array or a param is re-planned.
"""
from __future__ import annotations

import copy
import threading
import weakref
from dataclasses import dataclass, field

import numpy as np

from runtime import kernels
from runtime.errors import ModelFileError
from runtime.kernels.elementwise import add_lookup, add_table
from runtime.kernels.pool import plan_avg_pool2d
from runtime.model import Layer, QuantModel


@dataclass(eq=False)
class _Schedule:
    """A model compiled once: per layer, the tensors no later layer reads (dropped after it,
    so large batches keep only live activations), and each layer's prepared work
    (``prepared[index]``: a ``ConvPlan``, ...; made on first use).

    ``graph`` is the model's structure and its tensors' zero points and shapes: a change
    there makes a new schedule. ``layers`` is, per layer, what its prepared work was made
    from: its arrays by identity (``arrays`` holds them, so their ids cannot be recycled)
    and a copy of its params; a change there drops that layer's prepared work. Both are
    compared with one ``==`` per call."""

    graph: list
    layers: list
    arrays: list  # held, with ``holds``: the objects whose ids the keys compare
    holds: list
    dead: list[tuple[str, ...]]
    shapes: list[tuple[int, ...]]  # each layer's output shape, per sample
    prepared: dict[int, object] = field(default_factory=dict)
    steps: dict[int, object] = field(default_factory=dict)  # index -> step(values) -> output


_schedules: dict[int, _Schedule] = {}


def _graph_key(model: QuantModel) -> list:
    return [model.input, model.output,
            [(name, t.zero_point, t.shape) for name, t in model.tensors.items()],
            [(id(layer), layer.output, tuple(layer.inputs)) for layer in model.layers]]


def _layer_keys(model: QuantModel) -> list:
    return [(layer.op, tuple(layer.arrays), tuple(map(id, layer.arrays.values())), layer.params)
            for layer in model.layers]


def _schedule(model: QuantModel) -> _Schedule:
    """The model's schedule, checked against the model: a few microseconds per layer."""
    schedule = _schedules.get(id(model))
    graph = _graph_key(model)
    if schedule is None or schedule.graph != graph:
        if schedule is None:
            weakref.finalize(model, _schedules.pop, id(model), None)
        dead, live = [], {model.output}
        for layer in reversed(model.layers):  # a tensor dies after the last layer reading it
            names = dict.fromkeys(list(layer.inputs) + [layer.output])
            dead.append(tuple(n for n in names if n not in live))
            live.update(layer.inputs)
        schedule = _Schedule(copy.deepcopy(graph), [None] * len(model.layers),
                             [None] * len(model.layers), list(model.layers), dead[::-1],
                             [tuple(model.tensors[layer.output].shape)
                              for layer in model.layers])
        _schedules[id(model)] = schedule
    keys = _layer_keys(model)
    if keys != schedule.layers:
        _refresh(model, schedule, keys)
    return schedule


def _refresh(model: QuantModel, schedule: _Schedule, keys: list) -> None:
    """Drop the prepared work of every layer changed since it was made, and make the arrays
    of each such layer read-only (``QuantModel.freeze``, done once per change rather than on
    every call)."""
    for index, (layer, key) in enumerate(zip(model.layers, keys)):
        if schedule.layers[index] == key:
            continue
        for array in layer.arrays.values():
            if isinstance(array, np.ndarray):
                array.setflags(write=False)
        schedule.layers[index] = copy.deepcopy(key)
        schedule.arrays[index] = tuple(layer.arrays.values())
        schedule.prepared.pop(index, None)
        schedule.steps.pop(index, None)


_running = threading.local()  # (model, schedule) that ``run`` has validated, while it runs


def _prepared(model: QuantModel, index: int, layer: Layer, make):
    """The layer's cached ``make()``, made once per model and layer (``run`` has checked the
    layer is unchanged since; a layer run on its own is checked here)."""
    running = getattr(_running, "state", None)
    schedule = running[1] if running is not None and running[0] is model else _schedule(model)
    value = schedule.prepared.get(index)
    if value is None:
        value = schedule.prepared[index] = make()
    return value


def _plan(model: QuantModel, index: int, layer: Layer) -> kernels.ConvPlan:
    return _prepared(model, index, layer, lambda: _make_plan(model, layer))


def _make_plan(model: QuantModel, layer: Layer) -> kernels.ConvPlan:
    p = layer.params
    common = dict(input_zero_point=model.tensors[layer.inputs[0]].zero_point,
                  output_zero_point=model.tensors[layer.output].zero_point,
                  act_range=(p.get("act_min", -128), p.get("act_max", 127)))
    try:
        if layer.op == "conv2d":
            return kernels.plan_conv2d(layer.arrays["weights"], layer.arrays.get("bias"),
                                       layer.requant(), stride=p.get("stride", (1, 1)),
                                       padding=p.get("padding", (0, 0, 0, 0)),
                                       dilation=p.get("dilation", (1, 1)),
                                       groups=p.get("groups", 1), **common)
        return kernels.plan_fully_connected(layer.arrays["weights"], layer.arrays.get("bias"),
                                            layer.requant(), **common)
    except ValueError as exc:  # constants the kernels refuse (e.g. int32 overflow possible)
        raise ModelFileError(f"layer {layer.name!r} ({layer.op}): {exc}") from None


def _step(model: QuantModel, index: int, layer: Layer):
    """The layer's work as ``step(values) -> output``, made once per model and layer: a conv
    or pool layer's call goes straight to its kept plan (the dispatch below costs a few
    microseconds a layer, a good part of a small layer at batch 1)."""
    def make():
        name = layer.inputs[0]
        if layer.op == "conv2d":
            plan = _plan(model, index, layer)
            return lambda values: plan(values[name])
        if layer.op == "avg_pool2d":
            pool = _pool_plan(model, index, layer)
            return lambda values: pool(values[name])
        return lambda values: _run_layer(model, index, layer, values)

    schedule = _running.state[1]
    step = schedule.steps.get(index)
    if step is None:
        step = schedule.steps[index] = make()
    return step


def _pool_plan(model: QuantModel, index: int, layer: Layer):
    p = layer.params
    return _prepared(model, index, layer, lambda: plan_avg_pool2d(
        p["kernel"], layer.arrays, stride=p.get("stride", p["kernel"]),
        padding=p.get("padding", (0, 0, 0, 0)),
        count_include_pad=bool(p.get("count_include_pad", False)),
        ceil_pad=p.get("ceil_pad", (0, 0)), act_range=(p.get("act_min", -128),
                                                       p.get("act_max", 127))))


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
        return _pool_plan(model, index, layer)(x)
    if layer.op == "global_avg_pool":
        return kernels.global_avg_pool(x, layer.arrays, act_range=act)
    if layer.op == "add":
        table = _prepared(model, index, layer, lambda: add_table(layer.arrays, act_range=act))
        return add_lookup(x, values[layer.inputs[1]], table)
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
    schedule = _schedule(model)
    values = {model.input: x}
    n = x.shape[0]
    outer, _running.state = getattr(_running, "state", None), (model, schedule)
    try:
        steps, shapes, dead = schedule.steps, schedule.shapes, schedule.dead
        for index, layer in enumerate(model.layers):
            step = steps.get(index) or _step(model, index, layer)
            out = step(values)
            if out.shape[1:] != shapes[index]:
                out = out.reshape((n,) + shapes[index])
            values[layer.output] = out
            if not collect:
                for name in dead[index]:
                    del values[name]
    finally:
        _running.state = outer
    y = values[model.output]
    return (y, values) if collect else y
