"""Recognize chains of data-movement nodes that are really a view or a nearest upsample.

tf2onnx writes Keras 3's UpSampling2D as ``Unsqueeze -> Tile -> Transpose -> Reshape`` (twice,
on NHWC data between Transposes), and converters leave Transpose/Reshape pairs that only
move between NCHW and NHWC. Matching every spelling is fragile; instead each chain is
*evaluated*: onnxruntime runs it on a tensor whose every element holds its own index, and the
result says which input element each output element copies. When that map keeps batch and
channel and repeats rows and columns by integer factors, the chain is a ``Resize`` (nearest,
asymmetric, floor) on the NCHW tensor, or nothing at all when the factors are 1. Anything else
is left as it was (and refused by name later).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

_MOVEMENT = ("Unsqueeze", "Tile", "Transpose", "Reshape", "Squeeze", "Expand")


def _rank4_shape(model, name: str):
    for vi in list(model.graph.value_info) + list(model.graph.output):
        if vi.name == name:
            dims = vi.type.tensor_type.shape.dim
            shape = [d.dim_value if d.HasField("dim_value") else 0 for d in dims]
            return shape if len(shape) == 4 and all(shape[1:]) else None
    return None


def _chains(graph, static: set):
    """(start tensor, nodes, end tensor) for each maximal chain of non-static movement nodes
    that starts at a non-movement node's output; static readers (Shape) do not count."""
    producers = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list] = {}
    for node in graph.node:
        if tuple(node.output) not in static:
            for name in node.input:
                readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    for node in graph.node:
        source = producers.get(node.input[0]) if node.input else None
        if node.op_type not in _MOVEMENT or tuple(node.output) in static or source is None \
                or source.op_type in _MOVEMENT or len(readers.get(node.input[0], [])) != 1:
            continue
        chain, end = [node], node.output[0]
        while end not in outputs and len(readers.get(end, [])) == 1 and \
                readers[end][0].op_type in _MOVEMENT and readers[end][0].input[0] == end:
            chain.append(readers[end][0])
            end = chain[-1].output[0]
        if len(chain) > 1 and end not in outputs:
            yield node.input[0], chain, end


def _index_map(model, start: str, end: str, shape) -> np.ndarray | None:
    """The chain's output for an input [2, C, H, W] holding 0, 1, 2, ... (None on failure)."""
    import onnxruntime as ort
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    nodes, wanted, seen = [], [end], set()
    while wanted:  # the nodes ``end`` depends on, back to ``start`` and the initializers
        name = wanted.pop()
        if name in seen or name == start or name in inits or name not in producers:
            continue
        seen.add(name)
        nodes.append(producers[name])
        wanted.extend(producers[name].input)
    order = {id(n): k for k, n in enumerate(graph.node)}
    nodes = sorted({id(n): n for n in nodes}.values(), key=lambda n: order[id(n)])
    used = {name for n in nodes for name in n.input}
    sub = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info(start, onnx.TensorProto.FLOAT,
                                                       ["N", *shape[1:]])],
        [helper.make_tensor_value_info(end, onnx.TensorProto.FLOAT, None)],
        [inits[name] for name in used if name in inits])
    sub = helper.make_model(sub, opset_imports=model.opset_import)
    sub.ir_version = model.ir_version
    try:
        x = np.arange(2 * int(np.prod(shape[1:])), dtype=np.float32).reshape(2, *shape[1:])
        session = ort.InferenceSession(sub.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        return session.run(None, {start: x})[0]
    except Exception:  # not evaluable in isolation: leave the chain as it is
        return None


def _repeat_factors(y: np.ndarray, shape) -> tuple[int, int] | None:
    """(rh, rw) when ``y`` repeats each row rh times and each column rw times, else None."""
    _, c, h, w = shape
    if y.ndim != 4 or y.shape[0] != 2 or y.shape[1] != c or y.shape[2] % h or y.shape[3] % w:
        return None
    rh, rw = y.shape[2] // h, y.shape[3] // w
    n, ch, row, col = np.meshgrid(np.arange(2), np.arange(c), np.arange(y.shape[2]) // rh,
                                  np.arange(y.shape[3]) // rw, indexing="ij")
    expected = ((n * c + ch) * h + row) * w + col
    return (rh, rw) if np.array_equal(y, expected) else None


def fold_movement(model: onnx.ModelProto, static: set) -> onnx.ModelProto:
    """Replace each movement chain that is a view or an integer nearest upsample (in place of
    ``model.graph``; ``static``: output tuples of static nodes, which stay for static_fold)."""
    graph = model.graph
    chains = list(_chains(graph, static))
    if not chains:
        return model
    inferred = onnx.shape_inference.infer_shapes(model)
    changed = False
    for start, chain, end in chains:
        shape = _rank4_shape(inferred, start)
        y = None if shape is None else _index_map(model, start, end, shape)
        factors, nhwc = None if y is None else _repeat_factors(y, shape), False
        if factors is None and y is not None and y.ndim == 4:  # ends in NHWC (tf2onnx)
            factors, nhwc = _repeat_factors(y.transpose(0, 3, 1, 2), shape), True
        if factors is None:
            continue
        first = list(graph.node).index(chain[0])
        for node in chain:
            graph.node.remove(node)
        changed = True
        name = chain[0].name
        nchw = end + "_nchw" if nhwc else end
        if factors == (1, 1):  # a view: removed with the other Identity nodes
            replacement = [helper.make_node("Identity", [start], [nchw], name=name + "_view")]
        else:
            graph.initializer.append(numpy_helper.from_array(
                np.array([1, 1, *factors], np.float32), name + "_scales"))
            replacement = [helper.make_node(
                "Resize", [start, "", name + "_scales"], [nchw], name=name + "_as_resize",
                mode="nearest", coordinate_transformation_mode="asymmetric",
                nearest_mode="floor")]
        if nhwc:
            replacement.append(helper.make_node("Transpose", [nchw], [end],
                                                name=name + "_to_nhwc", perm=[0, 2, 3, 1]))
        for offset, node in enumerate(replacement):
            graph.node.insert(first + offset, node)
    if changed:
        _drop_dead_nodes(graph)
    return model


def _drop_dead_nodes(graph) -> None:
    """Remove nodes none of whose outputs is read (the replaced chains' shape arithmetic)."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [node for node in graph.node if not any(o in used for o in node.output)]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)
