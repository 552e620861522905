"""Fold the parts of an exported graph that never look at the input's values.

Real exporters compute some constants inside the graph: PyTorch's ``x.view(x.size(0), -1)``
becomes Shape -> Gather -> Unsqueeze -> Concat -> Reshape, and the dynamo exporter without its
optimizer builds a zero bias as Expand(CastLike(0, input), Shape(weight)). None of that is
arithmetic the device does, so it is evaluated once here and replaced by initializers.

"Static" means: computed from initializers only, where Shape/Size may read any tensor's shape
and CastLike any tensor's type. Only the batch dimension of a model may be dynamic, so a static
value either is a constant, or follows the batch size. onnxruntime evaluates the static values
at two batch sizes (one, if the model's batch is fixed) and the two answers tell which is
which. The one batch-dependent value tinyconv accepts is a Reshape's target shape that keeps
the batch in one place (a flatten): it becomes the Reshape's static output shape with -1 where
the batch goes, which is right for every batch size.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from export.batch import retarget_reshape
from runtime.errors import TinyconvError

# Inputs that an op reads only for their shape or element type, never their values.
_METADATA_INPUTS = {"Shape": (0,), "Size": (0,), "CastLike": (1,)}
_PROBE_BATCHES = (2, 3)


def static_nodes(graph) -> list:
    """The nodes (in graph order, which must be topological) whose outputs are static."""
    static = {init.name for init in graph.initializer} | {""}
    found = []
    for node in graph.node:
        metadata = _METADATA_INPUTS.get(node.op_type, ())
        if node.input and all(name in static or k in metadata
                              for k, name in enumerate(node.input)):
            found.append(node)
            static.update(node.output)
    return found


def fold_static(model: onnx.ModelProto) -> None:
    """Replace every static node by initializers, in place (see the module docstring).

    The graph must be topologically ordered, Constant nodes already folded, and its single
    input a float32 image batch whose only dynamic dimension is the batch."""
    graph = model.graph
    folded = static_nodes(graph)
    if not folded:
        return
    produced = {name for node in folded for name in node.output}
    for output in graph.output:
        if output.name in produced:
            raise TinyconvError(f"the model output {output.name!r} does not depend on the "
                                "model input")
    folded_outputs = {tuple(node.output) for node in folded}
    kept = [node for node in graph.node if tuple(node.output) not in folded_outputs]
    readers: dict[str, list] = {}
    for node in kept:
        for name in node.input:
            if name in produced:
                readers.setdefault(name, []).append(node)
    reshapes = [node for node in kept if node.op_type == "Reshape" and len(node.input) > 1
                and node.input[1] in produced]
    batches = _batches(graph.input[0])
    wanted = sorted(readers) + [node.output[0] for node in reshapes]
    runs = [_evaluate(model, wanted, batch) for batch in batches]

    by_batch = {name for name in readers
                if any(not _same(run[name], runs[0][name]) for run in runs[1:])}
    for name in sorted(by_batch):
        for node in readers[name]:
            if not (node.op_type == "Reshape" and list(node.input).index(name) == 1):
                raise TinyconvError(
                    f"node {node.name!r} ({node.op_type}) reads {name!r}, which depends on the "
                    "batch size; only a Reshape's target shape may")
    for name in sorted(set(readers) - by_batch):
        graph.initializer.append(numpy_helper.from_array(runs[0][name], name))
    for node in reshapes:
        if node.input[1] in by_batch:
            _fix_reshape(graph, node, [run[node.output[0]].shape for run in runs], batches)
    del graph.node[:]
    graph.node.extend(kept)


def _batches(input_info) -> tuple[int, ...]:
    batch = input_info.type.tensor_type.shape.dim[0]
    return (batch.dim_value,) if batch.HasField("dim_value") and batch.dim_value > 0 \
        else _PROBE_BATCHES


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and \
        np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")


def _fix_reshape(graph, node, shapes: list[tuple[int, ...]], batches) -> None:
    """Give a Reshape whose target follows the batch size a constant target with -1 there."""
    same_rank = len({len(shape) for shape in shapes}) == 1
    varying = [axis for axis in range(len(shapes[0]))
               if same_rank and len({shape[axis] for shape in shapes}) > 1]
    if len(varying) != 1 or [shape[varying[0]] for shape in shapes] != list(batches):
        raise TinyconvError(f"node {node.name!r} (Reshape) computes a target shape from the "
                            "batch size in a way tinyconv cannot fold (only one axis may "
                            "hold the batch)")
    target = list(shapes[0])
    target[varying[0]] = -1
    retarget_reshape(graph, node, target)


def _evaluate(model: onnx.ModelProto, names: list[str], batch: int) -> dict[str, np.ndarray]:
    """The values of tensors ``names`` in onnxruntime for an all-zero input of ``batch``
    samples (static tensors do not depend on the values, only on the batch size)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    needed = _upstream(probe.graph, names)
    kept = [node for node in probe.graph.node if tuple(node.output) in needed]
    del probe.graph.node[:]
    probe.graph.node.extend(kept)
    used = {name for node in kept for name in node.input}
    inits = [init for init in probe.graph.initializer if init.name in used]
    del probe.graph.initializer[:]
    probe.graph.initializer.extend(inits)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names)
    x = probe.graph.input[0]
    dims = [batch] + [d.dim_value for d in x.type.tensor_type.shape.dim[1:]]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3  # errors only: the probe is an internal step
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        values = session.run(names, {x.name: np.zeros(dims, np.float32)})
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TinyconvError("onnxruntime could not evaluate the model's constant and shape "
                            f"computations: {reason}") from None
    return {name: np.asarray(value) for name, value in zip(names, values)}


def _upstream(graph, names: list[str]) -> set[tuple[str, ...]]:
    """The nodes (by their outputs) that ``names`` depend on: the probe computes only those."""
    producer = {out: node for node in graph.node for out in node.output}
    needed, pending = set(), list(names)
    while pending:
        node = producer.get(pending.pop())
        if node is not None and tuple(node.output) not in needed:
            needed.add(tuple(node.output))
            pending.extend(node.input)
    return needed
