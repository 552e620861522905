"""``model.q.onnx``: the QuantModel as an onnxruntime QOperator graph, a drop-in for model.onnx.

Same input and output names, shapes and float types as ``model.onnx``: QuantizeLinear at the
start, DequantizeLinear at the end, NCHW int8 in between. Every weight, bias and zero point is
the QuantModel's own value (OHWI transposed to OIHW), so in ``float`` requantization mode
onnxruntime computes exactly what runtime/ computes. Op by op:
conv2d -> QLinearConv; fully_connected -> Reshape + 1x1 QLinearConv (the conv's requantization,
which is the runtime's); max_pool2d -> MaxPool on int8; avg_pool2d / global_avg_pool / add ->
com.microsoft QLinearAveragePool / QLinearGlobalAveragePool / QLinearAdd; lookup ->
DequantizeLinear, the activation, QuantizeLinear (what made its float table); softmax ->
com.microsoft QLinearSoftmax; a clamp narrower than
int8 saturation -> Clip on int8. The int8 tensor for QuantModel tensor ``T`` is ``T_quantized``.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.graph import Boundary
from export.tables import CONSTANT_OPS, LOOKUP_OPS, function_nodes
from runtime.model import QuantModel, TensorSpec

SUFFIX = "_quantized"
OPSET = 13


def qname(tensor: str) -> str:
    return tensor + SUFFIX


class _Writer:
    def __init__(self, model: QuantModel, weight_scales: dict, boundary: Boundary):
        self.model, self.weight_scales, self.boundary = model, weight_scales, boundary
        self.nodes: list = []
        self.inits: list = []
        self.names: set[str] = set()
        self.opset = OPSET

    def const(self, hint: str, value) -> str:
        name = hint
        while name in self.names:
            name += "_"
        self.names.add(name)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def qparams(self, spec: TensorSpec) -> list[str]:
        return [self.const(spec.name + "_scale", np.float32(spec.scale)),
                self.const(spec.name + "_zero_point", np.int8(spec.zero_point))]

    def node(self, op, inputs, outputs, name, domain="", **attrs):
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain or None,
                                           **attrs))

    def clamp(self, layer, produced: str) -> None:
        """Apply act_min/act_max where they cut tighter than int8 saturation."""
        lo, hi = layer.params.get("act_min", -128), layer.params.get("act_max", 127)
        target = qname(layer.output)
        if lo == -128 and hi == 127:
            return
        self.node("Clip", [produced, self.const(layer.name + "_act_min", np.int8(lo)),
                           self.const(layer.name + "_act_max", np.int8(hi))],
                  [target], layer.name + "_clamp")

    def out_name(self, layer) -> str:
        lo, hi = layer.params.get("act_min", -128), layer.params.get("act_max", 127)
        return qname(layer.output) if (lo, hi) == (-128, 127) else qname(layer.output) + "_raw"

    def conv_node(self, layer, x: str, weights_oihw: np.ndarray, output: str, **attrs):
        xs = self.model.tensors[layer.inputs[0]]
        ys = self.model.tensors[layer.output]
        w_scale = self.weight_scales[layer.name]
        w_scale = w_scale if w_scale.size > 1 else np.float32(w_scale[0])
        w_zp = np.zeros(np.shape(w_scale), np.int8)
        self.node("QLinearConv",
                  [x, *self.qparams(xs),
                   self.const(layer.name + "_W", weights_oihw.astype(np.int8)),
                   self.const(layer.name + "_W_scale", np.asarray(w_scale, np.float32)),
                   self.const(layer.name + "_W_zero_point", w_zp),
                   *self.qparams(ys),
                   self.const(layer.name + "_B", layer.arrays["bias"].astype(np.int32))],
                  [output], layer.name, **attrs)

    # -- one method per op ----------------------------------------------------------------------

    def w_conv2d(self, layer):
        p = layer.params
        w = layer.arrays["weights"].transpose(0, 3, 1, 2)
        self.conv_node(layer, qname(layer.inputs[0]), w, self.out_name(layer),
                       kernel_shape=list(w.shape[2:]), strides=p["stride"], pads=p["padding"],
                       dilations=p["dilation"], group=p["groups"])

    def w_fully_connected(self, layer):
        source = self.model.tensors[layer.inputs[0]]
        x = qname(layer.inputs[0])
        if len(source.shape) == 3 and source.shape[:2] != (1, 1):
            self.node("Transpose", [x], [layer.name + "_nhwc"], layer.name + "_to_nhwc",
                      perm=[0, 2, 3, 1])
            x = layer.name + "_nhwc"
        column = layer.name + "_column"
        self.node("Reshape", [x, self.const(layer.name + "_column_shape",
                                            np.array([0, -1, 1, 1], np.int64))],
                  [column], layer.name + "_to_column")
        w = layer.arrays["weights"]
        self.conv_node(layer, column, w.reshape(*w.shape, 1, 1), layer.name + "_conv",
                       kernel_shape=[1, 1])
        self.node("Reshape", [layer.name + "_conv", self.const(
            layer.name + "_vector_shape", np.array([0, -1], np.int64))],
            [self.out_name(layer)], layer.name + "_to_vector")

    def w_max_pool2d(self, layer):
        p = layer.params
        self.node("MaxPool", [qname(layer.inputs[0])], [self.out_name(layer)], layer.name,
                  kernel_shape=p["kernel"], strides=p["stride"], pads=p["padding"])

    def w_avg_pool2d(self, layer):
        """QLinearAveragePool counts ceil_mode's extra rows and columns as padding; where they
        must not count, the declared padding becomes an int8 Pad with the zero point (counted
        as pixels, adding 0) and the pool keeps only the uncounted rows and columns."""
        p = layer.params
        x, y = (self.model.tensors[n] for n in (layer.inputs[0], layer.output))
        source, pads = qname(layer.inputs[0]), list(p["padding"])
        include = bool(p["count_include_pad"])
        ceil_bottom, ceil_right = p.get("ceil_pad", (0, 0))
        if include and (ceil_bottom or ceil_right):
            declared = [pads[0], pads[1], pads[2] - ceil_bottom, pads[3] - ceil_right]
            source = layer.name + "_padded"
            self.node("Pad", [qname(layer.inputs[0]), self.const(
                layer.name + "_pads", np.array([0, 0, *declared[:2], 0, 0, *declared[2:]],
                                               np.int64)),
                self.const(layer.name + "_pad_value", np.int8(x.zero_point))],
                [source], layer.name + "_pad")
            pads, include = [0, 0, ceil_bottom, ceil_right], False
        self.node("QLinearAveragePool", [source, *self.qparams(x), *self.qparams(y)],
                  [self.out_name(layer)], layer.name, domain="com.microsoft",
                  kernel_shape=p["kernel"], strides=p["stride"], pads=pads,
                  count_include_pad=int(include))

    def w_global_avg_pool(self, layer):
        x, y = (self.model.tensors[n] for n in (layer.inputs[0], layer.output))
        self.node("QLinearGlobalAveragePool",
                  [qname(layer.inputs[0]), *self.qparams(x), *self.qparams(y)],
                  [self.out_name(layer)], layer.name, domain="com.microsoft", channels_last=0)

    def w_add(self, layer):
        a, b, y = (self.model.tensors[n] for n in (*layer.inputs, layer.output))
        self.node("QLinearAdd",
                  [qname(a.name), *self.qparams(a), qname(b.name), *self.qparams(b),
                   *self.qparams(y)],
                  [self.out_name(layer)], layer.name, domain="com.microsoft")

    def w_lookup(self, layer):
        """DequantizeLinear -> the activation -> QuantizeLinear: exactly the subgraph
        export/tables.py ran in onnxruntime to make a float-mode table."""
        x, y = (self.model.tensors[n] for n in (layer.inputs[0], layer.output))
        function = layer.params["function"]
        if function in CONSTANT_OPS:
            return self.constant_node(layer, x, y)
        self.opset = max(self.opset, LOOKUP_OPS[function])
        inputs = [layer.name + "_x"]
        if "slope" in layer.params:
            slope = np.array(layer.params["slope"], np.float32)
            if slope.size > 1 and len(x.shape) == 3:
                slope = slope.reshape(-1, 1, 1)
            inputs.append(self.const(layer.name + "_slope", slope))
        self.node("DequantizeLinear", [qname(x.name), *self.qparams(x)], inputs[:1],
                  layer.name + "_dequantize")
        self.nodes.extend(function_nodes(function, layer.params["attributes"], inputs,
                                         layer.name + "_y", layer.name))
        self.node("QuantizeLinear", [layer.name + "_y", *self.qparams(y)],
                  [self.out_name(layer)], layer.name + "_quantize")

    def constant_node(self, layer, x, y):
        """An imported QLinearAdd / QLinearMul of a constant, as the source had it."""
        attrs = layer.params["attributes"]
        codes = np.array(attrs["constant"], np.int8)
        if codes.size > 1 and len(x.shape) == 3:
            codes = codes.reshape(-1, 1, 1)
        b = [self.const(layer.name + "_constant", codes),
             self.const(layer.name + "_constant_scale", np.float32(attrs["scale"])),
             self.const(layer.name + "_constant_zero_point", np.int8(attrs["zero_point"]))]
        self.node(layer.params["function"], [qname(x.name), *self.qparams(x), *b,
                                             *self.qparams(y)],
                  [self.out_name(layer)], layer.name, domain="com.microsoft")

    def w_softmax(self, layer):
        """com.microsoft QLinearSoftmax over the channels (axis 1 of NCHW or [N, K]): exactly
        runtime/'s float mode, which mirrors it."""
        x, y = (self.model.tensors[n] for n in (layer.inputs[0], layer.output))
        self.node("QLinearSoftmax", [qname(x.name), *self.qparams(x), *self.qparams(y)],
                  [self.out_name(layer)], layer.name, domain="com.microsoft", axis=1,
                  opset=OPSET)

    # tensor ops (runtime/kernels/tensor_ops.py)

    def w_concat(self, layer):
        """QLinearConcat: onnxruntime maps an input of other quantization through the same
        256-entry table float mode stores (a copy where the quantization is equal)."""
        inputs = [*self.qparams(self.model.tensors[layer.output])]
        for name in layer.inputs:
            inputs += [qname(name), *self.qparams(self.model.tensors[name])]
        self.node("QLinearConcat", inputs, [self.out_name(layer)], layer.name,
                  domain="com.microsoft", axis=1)

    def w_pad(self, layer):
        top, left, bottom, right = layer.params["pads"]
        self.node("Pad", [qname(layer.inputs[0]), self.const(
            layer.name + "_pads", np.array([0, 0, top, left, 0, 0, bottom, right], np.int64)),
            self.const(layer.name + "_value", np.int8(layer.arrays["value"][0]))],
            [self.out_name(layer)], layer.name, mode=layer.params.get("mode", "constant"))

    def w_resize_nearest(self, layer):
        """Two int8 Gathers by the stored row and column indices: exactly what runs."""
        rows = layer.name + "_rows"
        self.node("Gather", [qname(layer.inputs[0]), self.const(
            rows + "_index", layer.arrays["rows"].astype(np.int64))], [rows], rows, axis=2)
        self.node("Gather", [rows, self.const(layer.name + "_cols_index",
                                              layer.arrays["cols"].astype(np.int64))],
                  [self.out_name(layer)], layer.name, axis=3)

    def w_mul(self, layer):
        a, b, y = (self.model.tensors[n] for n in (*layer.inputs, layer.output))
        self.node("QLinearMul",
                  [qname(a.name), *self.qparams(a), qname(b.name), *self.qparams(b),
                   *self.qparams(y)],
                  [self.out_name(layer)], layer.name, domain="com.microsoft")

    def w_sub(self, layer):
        """onnxruntime has no QLinearSub: a quantized Sub runs as DequantizeLinear, float Sub,
        QuantizeLinear (what its QDQ quantizer writes), which float mode computes."""
        a, b, y = (self.model.tensors[n] for n in (*layer.inputs, layer.output))
        floats = []
        for spec in (a, b):
            floats.append(f"{layer.name}_{spec.name}_float")
            self.node("DequantizeLinear", [qname(spec.name), *self.qparams(spec)],
                      [floats[-1]], floats[-1])
        self.node("Sub", floats, [layer.name + "_float"], layer.name)
        self.node("QuantizeLinear", [layer.name + "_float", *self.qparams(y)],
                  [self.out_name(layer)], layer.name + "_quantize")

    def build(self) -> onnx.ModelProto:
        model, boundary = self.model, self.boundary
        x_spec, y_spec = model.input_spec, model.output_spec
        x_in, y_out = boundary.onnx_input.name, boundary.onnx_output.name
        first = qname(model.input) + ("_nhwc" if boundary.input_layout == "NHWC" else "")
        self.node("QuantizeLinear", [x_in, *self.qparams(x_spec)], [first], "quantize_input")
        if boundary.input_layout == "NHWC":
            self.node("Transpose", [first], [qname(model.input)], "input_to_nchw",
                      perm=[0, 3, 1, 2])
        for layer in model.layers:
            getattr(self, "w_" + layer.op)(layer)
            self.clamp(layer, self.out_name(layer))
        onnx_dims = [d.dim_value for d in boundary.onnx_output.type.tensor_type.shape.dim]
        internal_rank = 4 if len(y_spec.shape) == 3 else 2
        dequantized = y_out if len(onnx_dims) == internal_rank else y_out + "_unshaped"
        self.node("DequantizeLinear", [qname(model.output), *self.qparams(y_spec)],
                  [dequantized], "dequantize_output")
        if dequantized != y_out:
            shape = np.array([0] + onnx_dims[1:], np.int64)
            self.node("Reshape", [dequantized, self.const("output_shape", shape)], [y_out],
                      "output_reshape")
        graph = helper.make_graph(self.nodes, model.name, [boundary.onnx_input],
                                  [boundary.onnx_output], self.inits)
        q = helper.make_model(graph, producer_name="tinyconv", opset_imports=[
            helper.make_opsetid("", self.opset), helper.make_opsetid("com.microsoft", 1)])
        q.ir_version = 8
        return q


def to_qonnx(model: QuantModel, weight_scales: dict, boundary: Boundary) -> onnx.ModelProto:
    """The QOperator ONNX model computing ``model`` (see the module docstring)."""
    return _Writer(model, weight_scales, boundary).build()


def run_qonnx(q: onnx.ModelProto, model: QuantModel, x: np.ndarray,
              collect: bool = False) -> dict[str, np.ndarray] | np.ndarray:
    """Run model.q.onnx in onnxruntime on float input ``x`` (the model's ONNX layout).

    Returns the int8 output in NHWC (the runtime's layout), or with ``collect=True`` every
    QuantModel tensor's int8 value keyed by its name, so a mismatch points at its layer."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(q)
    wanted = [model.output] if not collect else list(model.tensors)
    for name in wanted:
        rank = 4 if len(model.tensors[name].shape) == 3 else 2
        probe.graph.output.append(helper.make_tensor_value_info(
            qname(name), TensorProto.INT8, [None] * rank))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(probe.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = [qname(n) for n in wanted]
    values = session.run(names, {q.graph.input[0].name: x.astype(np.float32)})
    result = {}
    for name, value in zip(wanted, values):
        result[name] = value.transpose(0, 2, 3, 1) if value.ndim == 4 else value
    return result if collect else result[model.output]
