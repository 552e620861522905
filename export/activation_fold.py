"""tf2onnx writes Keras' ``hard_sigmoid`` (MobileNetV3) as ``Clip(x + 3, 0, 6) * (1/6)``: an
Add and a Mul by constants that tinyconv has no layer for. The chain is one elementwise
function of ``x``, so it becomes the one ONNX HardSigmoid (alpha 1/6, beta 1/2) it computes
(a table; its ``hard_swish``, ``x * that``, then maps to one HardSwish table, in
export/onnx_import.py). HardSigmoid exists in every opset, HardSwish only from 14. The float
result is the same function; float32 rounding of the two forms may differ in the last bit,
far below one int8 step."""
from __future__ import annotations

import numpy as np
from onnx import helper

from export.onnx_common import _drop_unused_initializers, _initializers, _sole_reader


def _scalar(params: dict, name: str) -> float | None:
    value = params.get(name)
    if value is None or value.size != 1 or value.dtype.kind != "f":
        return None
    return float(value.reshape(-1)[0])


def fuse_hard_sigmoid(graph) -> None:
    """Replace every ``Mul(Clip(Add(x, 3), 0, 6), 1/6)`` by HardSigmoid."""
    params = _initializers(graph)
    only = _sole_reader(graph)

    def other(node, name):
        rest = [i for i in node.input if i != name]
        return rest[0] if len(rest) == 1 else None

    for add in [n for n in graph.node if n.op_type == "Add"]:
        three = [i for i in add.input if _scalar(params, i) == 3.0]
        clip = only(add.output[0], "Clip")
        mul = clip and only(clip.output[0], "Mul")
        if len(three) != 1 or mul is None or len(clip.input) != 3:
            continue
        x = other(add, three[0])
        sixth = _scalar(params, other(mul, clip.output[0]) or "")
        if (x is None or x in params or sixth is None
                or np.float32(sixth) != np.float32(1.0 / 6.0)
                or (_scalar(params, clip.input[1]), _scalar(params, clip.input[2])) != (0.0, 6.0)):
            continue
        index = list(graph.node).index(mul)
        graph.node.insert(index, helper.make_node("HardSigmoid", [x], [mul.output[0]],
                                                  name=mul.name, alpha=sixth, beta=0.5))
        for node in (add, clip, mul):
            graph.node.remove(node)
    _drop_unused_initializers(graph)
