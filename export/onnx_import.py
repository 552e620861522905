"""Read an ONNX model, and map a cleaned one (export.onnx_clean) onto the device's ops.

``to_graph`` turns the model into a ``FloatGraph``, or raises a ``TinyconvError`` naming the
node and op it cannot map, before anything is written. ``SUPPORTED_OPS`` lists what it maps
(export.onnx_clean refuses anything else early). Its ``_Mapper`` walks the graph and holds what
the walk learns (aliases, fused activations, shapes, layout); the handlers of Conv, pooling and
fully connected layers are in export.onnx_layer_ops, those of data movement and of
elementwise ops of two activations in export.import_tensor_ops.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import onnx

from export.graph import Boundary, FloatGraph, FloatLayer
from export import import_tensor_ops as tensor_ops
from export import onnx_layer_ops as layer_ops
from export.onnx_common import _attrs, _initializers, _last_axis, _per_channel, _shape
from export.tables import ONNX_OPS as LOOKUP_OPS
from runtime.errors import TinyconvError

SUPPORTED_OPS = ("Conv", "BatchNormalization", "Relu", "Clip", "MaxPool", "AveragePool",
                 "GlobalAveragePool", "ReduceMean", "Flatten", "Reshape", "Squeeze", "Gemm",
                 "MatMul", "Add", "Mul", "Identity", "Dropout", "Constant", "Transpose",
                 *LOOKUP_OPS, "Softmax", "Concat", "Pad", "Resize", "Upsample", "Sub")
_ACTIVATIONS = ("Relu", "Clip")


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
        layer_ops.map_conv(self, node)

    def op_MaxPool(self, node):
        layer_ops.map_pool(self, node, "max_pool2d")

    def op_AveragePool(self, node):
        layer_ops.map_pool(self, node, "avg_pool2d")

    def op_GlobalAveragePool(self, node):
        layer_ops.map_global_average_pool(self, node)

    def op_ReduceMean(self, node):
        layer_ops.map_reduce_mean(self, node)

    def op_Flatten(self, node):
        layer_ops.map_flatten(self, node)

    def op_Reshape(self, node):
        layer_ops.map_reshape(self, node)

    def op_Squeeze(self, node):
        layer_ops.map_squeeze(self, node)

    def op_Gemm(self, node):
        layer_ops.map_gemm(self, node)

    def op_MatMul(self, node):
        layer_ops.map_matmul(self, node)

    def op_Add(self, node):
        if self.prequantized and any(i in self.ints for i in node.input):
            return self.constant_lookup(node)
        if any(i in self.params for i in node.input):
            self.refuse_preprocessing(node)
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
            self.refuse_preprocessing(node)
            raise self.unsupported(node, " that is not a per-channel constant scale right "
                                         "after a Conv whose output it alone reads (folded into "
                                         "the Conv)")
        tensor_ops.map_mul(self, node)

    def refuse_preprocessing(self, node) -> None:
        """A constant scale or offset of the model input itself is the network's input
        preprocessing (Keras' Rescaling layer, ``include_preprocessing=True``): say so."""
        inputs = [i for i in node.input if i not in self.params]
        if len(inputs) == 1 and self.src(inputs[0]) == self.model.graph.input[0].name:
            raise TinyconvError(
                f"node {node.name!r} ({node.op_type}) scales or offsets the model input by a "
                "constant (input preprocessing such as Keras' Rescaling), which tinyconv cannot "
                "map; export the model without it and preprocess on the host")

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
        if (node.op_type == "HardSigmoid" and mul is not None and mul.op_type == "Mul"
                and sorted(mul.input) == sorted([node.input[0], output])
                and not self.prequantized and _is_hard_swish_gate(params["attributes"])):
            params["function"], params["attributes"] = "HardSwish", {}  # any opset
            output = mul.output[0]
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
        layer = self.emit(node, "softmax", [node.input[0]], node.output[0])
        # after a 1x1 conv head flattened by a Reshape (Keras MobileNet), keep the conv's shape
        self.shapes[layer.output] = self.shapes[self.src(node.input[0])]


def _is_hard_swish_gate(attrs: dict) -> bool:
    """HardSigmoid(alpha 1/6, beta 1/2): times its input it is HardSwish (tf2onnx's Keras
    hard swish, PyTorch's Hardswish below opset 14)."""
    return (np.float32(attrs.get("alpha", 0.2)) == np.float32(1.0 / 6.0)
            and np.float32(attrs.get("beta", 0.5)) == np.float32(0.5))


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
