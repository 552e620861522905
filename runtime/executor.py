"""Run a ``QuantModel`` over a batch of int8 inputs with runtime/'s kernels.

Per-model work is done once per model object, not once per call (a dataset streamed in batches,
or one image at a time, pays for it once): the layer order with each tensor's last reader
(``_Schedule``), and each layer's prepared work (``_Prepared``: a conv / fc layer's
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
from runtime.model import Layer, QuantModel


@dataclass(eq=False)
class _Prepared:
    """One layer's per-model work, valid while ``key`` equals the layer's ``_key``: its
    arrays by identity (``arrays`` holds them, so their ids cannot be recycled), a copy of its
    params, and its tensors' zero points and shapes. ``value`` is what the layer's op made
    from them (a ``ConvPlan``, ...), made on first use."""

    key: tuple
    arrays: tuple
    value: object = None


@dataclass(eq=False)
class _Schedule:
    """The model's layer order compiled once: per layer, the tensors no later layer reads
    (dropped after it, so large batches keep only live activations), and the cache of each
    layer's ``_Prepared``."""

    key: list
    layers: list[Layer]  # held, so the ids in ``key`` cannot be recycled
    dead: list[tuple[str, ...]]
    prepared: dict[int, _Prepared] = field(default_factory=dict)


_schedules: dict[int, _Schedule] = {}


def _key(model: QuantModel, layer: Layer) -> tuple:
    """What a layer's prepared work depends on, compared with one ``==``: array ids (they
    are read-only, and held by ``_Prepared``), everything else by value."""
    tensors = model.tensors
    return (layer.op, tuple(layer.arrays), tuple(map(id, layer.arrays.values())), layer.params,
            [(tensors[n].zero_point, tensors[n].shape) for n in layer.inputs],
            tensors[layer.output].zero_point, tensors[layer.output].shape)


def _schedule(model: QuantModel) -> _Schedule:
    graph = [model.input, model.output] + [(id(layer), layer.output, tuple(layer.inputs))
                                           for layer in model.layers]
    schedule = _schedules.get(id(model))
    if schedule is not None and schedule.key == graph:
        return schedule
    if schedule is None:
        weakref.finalize(model, _schedules.pop, id(model), None)
    dead, live = [], {model.output}
    for layer in reversed(model.layers):  # a tensor dies after the last layer that reads it
        names = dict.fromkeys(list(layer.inputs) + [layer.output])
        dead.append(tuple(n for n in names if n not in live))
        live.update(layer.inputs)
    _schedules[id(model)] = schedule = _Schedule(graph, list(model.layers), dead[::-1])
    return schedule


def _validate(model: QuantModel, schedule: _Schedule) -> None:
    """Drop the prepared work of every layer changed since it was made, and make the arrays
    of each such layer read-only (``QuantModel.freeze``, done here once per change rather
    than on every call)."""
    prepared = schedule.prepared
    for index, layer in enumerate(model.layers):
        entry = prepared.get(index)
        key = _key(model, layer)
        if entry is not None and entry.key == key:
            continue
        for array in layer.arrays.values():
            if isinstance(array, np.ndarray):
                array.setflags(write=False)
        prepared[index] = _Prepared(copy.deepcopy(key), tuple(layer.arrays.values()))


_running = threading.local()  # (model, schedule) that ``run`` has validated, while it runs


def _prepared(model: QuantModel, index: int, layer: Layer, make):
    """The layer's cached ``make()``, made once per model and layer (``run`` has checked the
    layer is unchanged since; a layer run on its own is checked here)."""
    running = getattr(_running, "state", None)
    if running is not None and running[0] is model:
        schedule = running[1]
    else:
        schedule = _schedule(model)
        _validate(model, schedule)
    entry = schedule.prepared[index]
    if entry.value is None:
        entry.value = make()
    return entry.value


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
    raise ValueError(f"layer {layer.name!r}: unknown op {layer.op!r}")


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
    _validate(model, schedule)
    values = {model.input: x}
    n = x.shape[0]
    tensors = model.tensors
    outer, _running.state = getattr(_running, "state", None), (model, schedule)
    try:
        for index, layer in enumerate(model.layers):
            out = _run_layer(model, index, layer, values)
            values[layer.output] = out.reshape((n,) + tuple(tensors[layer.output].shape))
            if not collect:
                for name in schedule.dead[index]:
                    del values[name]
    finally:
        _running.state = outer
    y = values[model.output]
    return (y, values) if collect else y
