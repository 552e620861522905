"""Models already quantized by onnxruntime (``quantize_static``, QDQ or QOperator format).

Such a model is turned back into the float model it stands for (weights dequantized, Q/DQ pairs
and QLinear* ops replaced by their float ops) plus two tables the quantizer then uses *as they
are*: the (scale, zero point) of every activation tensor, and the integer constants (weights,
biases, an elementwise Add / Mul's operand) with their scales and zero points. So the float
path (clean, map, plan, write) is the only path, and the integers onnxruntime chose are kept
bit for bit; each quantized node stays a layer of its own, with its own requantization.

onnxruntime drops Relu/Clip from QDQ graphs when activations are asymmetric: the clamp is then
in the quantization range of the conv's output, which is exactly how tinyconv applies it too.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from runtime.errors import TinyconvError

# com.microsoft's one-input QLinear ops -> the float op each stands for
_UNARY = {"QLinearSigmoid": "Sigmoid", "QLinearLeakyRelu": "LeakyRelu",
          "QLinearSoftmax": "Softmax"}
# float ops whose int8 output onnxruntime saturates at the low end of its range
_CLAMPED = ("Conv", "Gemm", "MatMul", "Add", "Mul", "AveragePool", "GlobalAveragePool")
_QOPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "QGemm",
         "QLinearAdd", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearMul",
         "QLinearConcat", *_UNARY}


def is_quantized(model: onnx.ModelProto) -> bool:
    return any(node.op_type in _QOPS for node in model.graph.node)


def _attr(node, name: str, default):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name),
                default)


class _Dequantizer:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.params = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        self.quant: dict[str, tuple[float, int]] = {}
        # float initializer -> (integers, scales, zero points)
        self.ints: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.new_nodes: list = []
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                          13)

    def value(self, node, index: int) -> np.ndarray:
        name = node.input[index] if index < len(node.input) else ""
        if name not in self.params:
            raise TinyconvError(f"node {node.name!r} ({node.op_type}): input {index} ({name!r}) "
                                "must be a constant initializer")
        return self.params[name]

    def qparams(self, node, scale_index: int, tensor: str) -> None:
        """Record a tensor's (scale, zero point), insisting on per-tensor int8."""
        scale = self.value(node, scale_index)
        zp = (self.value(node, scale_index + 1) if len(node.input) > scale_index + 1
              and node.input[scale_index + 1] else np.zeros((), np.uint8))
        if zp.dtype != np.int8:
            raise TinyconvError(
                f"node {node.name!r} ({node.op_type}) quantizes {tensor!r} to {zp.dtype}; "
                "tinyconv needs int8 activations (quantize_static(..., "
                "activation_type=QuantType.QInt8))")
        if scale.size != 1 or zp.size != 1:
            raise TinyconvError(f"node {node.name!r} ({node.op_type}): activation {tensor!r} "
                                "must be quantized per tensor")
        self.quant[tensor] = (float(np.float32(scale.reshape(-1)[0])), int(zp.reshape(-1)[0]))

    def add_float(self, name: str, q: np.ndarray, scale: np.ndarray, zp=None, axis: int = 0,
                  node=None) -> str:
        """A float initializer ``name`` for integer ``q``; the integers are remembered with
        their scales and zero points (only an elementwise constant may have a non-zero one)."""
        scale = np.asarray(scale, np.float32)
        zp = np.zeros(1, np.int32) if zp is None else np.asarray(zp).astype(np.int32)
        shape = [1] * q.ndim
        if scale.size > 1:
            shape[axis] = scale.size
        zp_shape = shape if zp.size > 1 else [1] * q.ndim
        real = ((q.astype(np.float32) - zp.reshape(zp_shape).astype(np.float32))
                * scale.reshape(shape)).astype(np.float32)
        self.graph.initializer.append(numpy_helper.from_array(real, name))
        self.params[name] = real
        self.ints[name] = (q, scale.reshape(-1), zp.reshape(-1))
        return name

    def rename(self, old: str, new: str) -> None:
        for node in list(self.graph.node) + self.new_nodes:
            for k, n in enumerate(node.input):
                if n == old:
                    node.input[k] = new
            for k, n in enumerate(node.output):
                if n == old:
                    node.output[k] = new

    def run(self) -> onnx.ModelProto:
        outputs = {o.name for o in self.graph.output}
        for node in list(self.graph.node):
            handler = getattr(self, "n_" + node.op_type, None)
            if handler is None:
                self.new_nodes.append(node)
                continue
            handler(node, outputs)
        self.restore_relus()
        del self.graph.node[:]
        self.graph.node.extend(self.new_nodes)
        del self.graph.value_info[:]
        return self.model

    def restore_relus(self) -> None:
        """onnxruntime drops a Relu into the range of the tensor before it (zero point -128:
        nothing below 0 is representable). The float model gets it back, so that model.onnx
        computes what the quantized one stands for; tinyconv fuses it into the layer, where
        its clamp is code -128 and changes no integer."""
        readers: dict[str, list] = {}
        for node in self.new_nodes:
            for name in node.input:
                readers.setdefault(name, []).append(node.op_type)
        nodes = []
        for node in self.new_nodes:
            nodes.append(node)
            y = node.output[0]
            if (node.op_type not in _CLAMPED or self.quant.get(y, (0, 0))[1] != -128
                    or {"Relu", "Clip"} & set(readers.get(y, []))):
                continue
            node.output[0] = y + "_before_relu"
            nodes.append(helper.make_node("Relu", [node.output[0]], [y], name=node.name + "_relu"))
        self.new_nodes = nodes

    # -- one handler per quantized op -----------------------------------------------------------

    def n_DequantizeLinear(self, node, outputs):
        src, dst = node.input[0], node.output[0]
        if src in self.params:  # a constant: weights or bias
            q = self.params[src]
            zp = self.value(node, 2) if len(node.input) > 2 and node.input[2] else None
            axis = {a.name: helper.get_attribute_value(a) for a in node.attribute}.get("axis", 1)
            self.add_float(dst, q, self.value(node, 1), zp, axis % max(q.ndim, 1), node)
            return
        self.qparams(node, 1, dst)
        self.quant.setdefault(src, self.quant[dst])
        if dst in outputs:
            self.rename(src, dst)
        else:
            self.rename(dst, src)

    def n_QuantizeLinear(self, node, outputs):
        src, dst = node.input[0], node.output[0]
        if src in self.params:
            raise TinyconvError(f"node {node.name!r} (QuantizeLinear) quantizes a constant at "
                                "run time; save the model with pre-quantized weights")
        self.qparams(node, 1, src)
        self.rename(dst, src)

    def n_QLinearConv(self, node, outputs):
        x, y = node.input[0], node.output[0]
        self.qparams(node, 1, x)
        self.qparams(node, 6, y)
        x_scale = np.float32(self.quant[x][0])
        w_scale = self.value(node, 4).astype(np.float32)
        w = self.add_float(node.name + "_W", self.value(node, 3), w_scale, self.value(node, 5),
                           0, node)
        inputs = [x, w]
        if len(node.input) > 8 and node.input[8]:
            inputs.append(self.add_float(node.name + "_B", self.value(node, 8),
                                         x_scale * w_scale, node=node))
        self.new_nodes.append(helper.make_node("Conv", inputs, [y], name=node.name))
        self.new_nodes[-1].attribute.extend(node.attribute)

    def n_QGemm(self, node, outputs):
        if len(node.input) < 8 or not node.input[7]:
            raise TinyconvError(f"node {node.name!r} (QGemm) has a float output; tinyconv "
                                "needs an int8 output")
        x, y = node.input[0], node.output[0]
        self.qparams(node, 1, x)
        self.qparams(node, 7, y)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w_scale = self.value(node, 4).astype(np.float32)
        axis = 0 if attrs.get("transB", 0) else 1
        w = self.add_float(node.name + "_W", self.value(node, 3), w_scale, self.value(node, 5),
                           axis, node)
        inputs = [x, w]
        if node.input[6]:
            inputs.append(self.add_float(node.name + "_B", self.value(node, 6),
                                         np.float32(self.quant[x][0]) * w_scale, node=node))
        self.new_nodes.append(helper.make_node(
            "Gemm", inputs, [y], name=node.name, alpha=float(attrs.get("alpha", 1.0)),
            transB=int(attrs.get("transB", 0))))

    def n_QLinearMatMul(self, node, outputs):
        x, y = node.input[0], node.output[0]
        self.qparams(node, 1, x)
        self.qparams(node, 6, y)
        w = self.add_float(node.name + "_W", self.value(node, 3), self.value(node, 4),
                           self.value(node, 5), 1, node)
        self.new_nodes.append(helper.make_node("MatMul", [x, w], [y], name=node.name))

    def _binary(self, node, op: str):
        """QLinearAdd / QLinearMul: two activations, or one and an int8 constant (tf2onnx's
        Dense bias after a QLinearMatMul, an unfolded batch norm's scale and shift), which
        stays an integer constant with its own scale and zero point."""
        names = [node.input[0], node.input[3]]
        if all(name in self.params for name in names):
            raise TinyconvError(f"node {node.name!r} ({node.op_type}) has two constant inputs")
        for k, (index, name) in enumerate(((1, names[0]), (4, names[1]))):
            if name in self.params:
                names[k] = self.add_float(node.name + "_C", self.params[name],
                                          self.value(node, index), self.value(node, index + 1),
                                          node=node)
            else:
                self.qparams(node, index, name)
        self.qparams(node, 6, node.output[0])
        self.new_nodes.append(helper.make_node(op, names, [node.output[0]], name=node.name))

    def n_QLinearAdd(self, node, outputs):
        self._binary(node, "Add")

    def n_QLinearMul(self, node, outputs):
        self._binary(node, "Mul")

    def n_QLinearConcat(self, node, outputs):
        """Inputs: Y scale, Y zero point, then (X, X scale, X zero point) per input."""
        y, xs = node.output[0], node.input[2::3]
        self.qparams(node, 0, y)
        for k, x in enumerate(xs):
            if x in self.params:
                raise TinyconvError(f"node {node.name!r} (QLinearConcat) concatenates a "
                                    "constant; only activations are supported")
            self.qparams(node, 3 + 3 * k, x)
        self.new_nodes.append(helper.make_node("Concat", xs, [y], name=node.name))
        self.new_nodes[-1].attribute.extend(node.attribute)

    def _unary(self, node, outputs):
        """X, X scale, X zero point, Y scale, Y zero point; the float op keeps the attributes
        it has (QLinearSoftmax's ``opset`` is only which Softmax definition ``axis`` means)."""
        x, y = node.input[0], node.output[0]
        self.qparams(node, 1, x)
        self.qparams(node, 3, y)
        op = _UNARY[node.op_type]
        attrs = [a for a in node.attribute if a.name != "opset"]
        if op == "Softmax" and (_attr(node, "opset", 13) >= 13) != (self.opset >= 13):
            raise TinyconvError(f"node {node.name!r} (QLinearSoftmax): its opset attribute "
                                f"{_attr(node, 'opset', 13)} and the model's opset {self.opset} "
                                "define Softmax's axis differently (before 13 it flattens)")
        self.new_nodes.append(helper.make_node(op, [x], [y], name=node.name))
        self.new_nodes[-1].attribute.extend(attrs)

    n_QLinearSigmoid = n_QLinearLeakyRelu = n_QLinearSoftmax = _unary

    def _pool(self, node, op):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.pop("channels_last", 0):
            raise TinyconvError(f"node {node.name!r} ({node.op_type}) is channels_last")
        x, y = node.input[0], node.output[0]
        self.qparams(node, 1, x)
        self.qparams(node, 3, y)
        self.new_nodes.append(helper.make_node(op, [x], [y], name=node.name, **attrs))

    def n_QLinearAveragePool(self, node, outputs):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("ceil_mode", 0) and attrs.get("count_include_pad", 0):
            raise TinyconvError(
                f"node {node.name!r} (QLinearAveragePool) has ceil_mode=1 and "
                "count_include_pad=1: onnxruntime's QLinearAveragePool then counts the ceil "
                "windows' overhang in the divisor, its AveragePool does not; tinyconv follows "
                "AveragePool, so it cannot reproduce this node")
        self._pool(node, "AveragePool")

    def n_QLinearGlobalAveragePool(self, node, outputs):
        self._pool(node, "GlobalAveragePool")


def dequantize_model(model: onnx.ModelProto):
    """(float model, activation quantization by tensor, integer constants by float name)."""
    for node in model.graph.node:
        if node.domain == "com.microsoft" and node.op_type not in _QOPS:
            raise TinyconvError(f"node {node.name!r} has op {node.op_type} (domain "
                                "com.microsoft), which tinyconv does not support")
        if node.domain == "com.microsoft":
            node.domain = ""  # the float ops it becomes are standard ones
    d = _Dequantizer(model)
    float_model = d.run()
    standard = [o for o in float_model.opset_import if o.domain in ("", "ai.onnx")]
    del float_model.opset_import[:]
    float_model.opset_import.extend(standard)
    return float_model, d.quant, d.ints
