"""``model.q.onnx`` as an independent check of runtime/: which model.tcm it belongs to, and
onnxruntime's answer for every layer given runtime/'s own inputs to that layer.

A whole-model comparison in fixed requantization mode cannot gate a verdict: onnxruntime
requantizes in float, runtime/ with integer multipliers, so the two may differ by 1 LSB per layer
and those differences compound through the network. Fed each layer's runtime/ inputs, the bound
is 1 LSB for every layer, whatever the depth; a weight changed in model.q.onnx shows as a layer
far beyond it.
"""
from __future__ import annotations

import hashlib

import numpy as np
import onnx
from onnx import TensorProto, helper

from export.qonnx import qname
from runtime.errors import TinyconvError
from runtime.model import QuantModel

MODEL_HASH = "tinyconv.model_hash"  # model.tcm's hash, the model this graph was exported from
GRAPH_SHA256 = "tinyconv.graph_sha256"  # of the serialized graph, to notice edits after export
FED = "fed:"


def graph_digest(q: onnx.ModelProto) -> str:
    return hashlib.sha256(q.graph.SerializeToString(deterministic=True)).hexdigest()


def stamp(q: onnx.ModelProto, model: QuantModel) -> onnx.ModelProto:
    """Record in ``q.metadata_props`` which model.tcm it computes and a digest of its graph."""
    onnx.helper.set_model_props(q, {MODEL_HASH: model.hash, GRAPH_SHA256: graph_digest(q)})
    return q


def check_matches(q: onnx.ModelProto, model: QuantModel, path) -> bool:
    """Raise TinyconvError when ``q`` was exported from another model or edited since; False
    when it carries no stamp (an export from before stamps existed), True when it matches."""
    props = {p.key: p.value for p in q.metadata_props}
    if MODEL_HASH not in props:
        return False
    if props[MODEL_HASH] != model.hash:
        raise TinyconvError(f"{path} was exported from model {props[MODEL_HASH]}, but "
                            f"model.tcm is {model.hash}: export again")
    if props.get(GRAPH_SHA256) != graph_digest(q):
        raise TinyconvError(f"{path} has been changed since it was exported (its graph no "
                            "longer matches the digest stored in it): export again")
    return True


def _rank(model: QuantModel, tensor: str) -> int:
    return 4 if len(model.tensors[tensor].shape) == 3 else 2


class LayerRunner:
    """One onnxruntime session computing every layer of ``q`` from fed int8 inputs."""

    def __init__(self, q: onnx.ModelProto, model: QuantModel):
        import onnxruntime as ort

        self.model = model
        self.fed = sorted({t for layer in model.layers for t in layer.inputs})
        self.outputs = [layer.output for layer in model.layers]
        renamed = {qname(t): FED + t for t in self.fed}
        nodes = []
        for node in q.graph.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            for i, name in enumerate(copy.input):
                copy.input[i] = renamed.get(name, name)
            nodes.append(copy)
        needed = {qname(t) for t in self.outputs}
        kept = []
        for node in reversed(nodes):  # the nodes the wanted outputs depend on
            if any(o in needed for o in node.output):
                kept.append(node)
                needed.update(node.input)
        graph = helper.make_graph(
            kept[::-1], "layers",
            [helper.make_tensor_value_info(FED + t, TensorProto.INT8, [None] * _rank(model, t))
             for t in self.fed],
            [helper.make_tensor_value_info(qname(t), TensorProto.INT8,
                                           [None] * _rank(model, t)) for t in self.outputs],
            [i for i in q.graph.initializer if i.name in needed])
        probe = helper.make_model(graph, opset_imports=q.opset_import)
        probe.ir_version = q.ir_version
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(probe.SerializeToString(), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # a damaged model.q.onnx is the user's problem
            raise TinyconvError(f"model.q.onnx cannot be run layer by layer: {exc}") from None

    def max_lsb(self, values: dict[str, np.ndarray]) -> dict[str, int]:
        """Per layer, the largest |onnxruntime - runtime/| in LSB, given ``values`` (every
        tensor as runtime.run(collect=True) returns them, NHWC)."""
        feeds = {FED + t: _to_onnx(values[t]) for t in self.fed}
        got = self.session.run([qname(t) for t in self.outputs], feeds)
        diffs = {}
        for layer, value in zip(self.model.layers, got):
            want = _to_onnx(values[layer.output]).astype(np.int16)
            diffs[layer.name] = int(np.max(np.abs(value.astype(np.int16) - want), initial=0))
        return diffs


def _to_onnx(value: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(value.transpose(0, 3, 1, 2) if value.ndim == 4 else value)
