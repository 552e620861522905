"""A fixed-mode ``QuantModel`` as an int8 ``.tflite`` flatbuffer that TFLite Micro runs.

Why: TFLM is the outside oracle for fixed mode, and its arena is the figure tinyconv's memory
plan is measured against (issue 13). A model from ONNX has no .tflite of its own, so this
writes one from the QuantModel, the one source of truth: its tensors' scales and zero points,
its int8 weights and int32 biases. Nothing is re-quantized. TFLM derives its constants from
the scales again when it prepares each operator, so every layer is written only when TFLM's
derivation gives back exactly the constants runtime/ evaluates (the multipliers and shifts,
the add / mul tables, the activation range of the fused activation, the lookup table); a
layer that TFLM would compute differently, or that has no TFLite operator, is refused with
one line naming the layer and why (``Unwritable``). ``check=False`` writes the nearest
operator instead and lists the differences: the arena of such a file is still TFLM's arena
for the same graph, but the file is no oracle.

Weight scales are not stored in the QuantModel; the export's are used when given, otherwise
each channel's float32 scale is recovered from its multiplier and shift (the float32 value
whose TFLM multiplier is the stored one; every multiplier export makes has one).
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field

import numpy as np

from export import tables
from export.tflite_import import activation_range, nearest_sources, same_padding
from runtime import kernels
from runtime.errors import TinyconvError
from runtime.kernels.softmax import OUTPUT_SCALE, OUTPUT_ZERO_POINT
from runtime.model import Layer, QuantModel, TensorSpec
from runtime.requant import quantize_multiplier

_FUSED = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")
_LOOKUPS = {"Sigmoid": "LOGISTIC", "Tanh": "TANH", "HardSwish": "HARD_SWISH",
            "LeakyRelu": "LEAKY_RELU"}
_ALIGN = 16


class Unwritable(TinyconvError):
    """The model (a layer of it) has no exact TFLite equivalent."""


@dataclass
class Written:
    """The flatbuffer, the TFLite tensor index of each model tensor (for a comparison tensor by
    tensor), and, with ``check=False``, the layers TFLM computes differently."""

    data: bytes
    tensor_index: dict[str, int]
    differences: list[str] = field(default_factory=list)


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str  # "INT8" / "INT32"
    scales: list[float] | None = None
    zero_points: list[int] | None = None
    axis: int = 0
    data: bytes | None = None


@dataclass
class _Op:
    builtin: str
    inputs: list[int]
    outputs: list[int]
    options: str | None = None  # the tflite options table, e.g. "Conv2DOptions"
    fields: dict = field(default_factory=dict)


class _Writer:
    def __init__(self, model: QuantModel, weight_scales: dict | None, check: bool):
        if model.requant_mode != "fixed":
            raise Unwritable(f"model {model.name!r} uses {model.requant_mode} requantization; "
                             "TFLite Micro computes fixed mode only")
        self.model, self.weight_scales, self.check = model, weight_scales or {}, check
        self.tensors: list[_Tensor] = []
        self.index: dict[str, int] = {}
        self.ops: list[_Op] = []
        self.differences: list[str] = []
        self.layer: Layer | None = None

    # -- helpers -------------------------------------------------------------------------------

    def refuse(self, why: str) -> Unwritable:
        return Unwritable(f"layer {self.layer.name!r} ({self.layer.op}): {why}")

    def differs(self, why: str) -> None:
        """TFLM would compute this layer differently: refused, or noted (``check=False``)."""
        if self.check:
            raise self.refuse(why)
        self.differences.append(f"layer {self.layer.name!r} ({self.layer.op}): {why}")

    def add_tensor(self, tensor: _Tensor) -> int:
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def act(self, name: str) -> int:
        """The int8 activation tensor of model tensor ``name`` (batch 1 added)."""
        if name not in self.index:
            spec = self.model.tensors[name]
            self.index[name] = self.add_tensor(_Tensor(
                name, (1, *spec.shape), "INT8", [float(np.float32(spec.scale))],
                [int(spec.zero_point)]))
        return self.index[name]

    def temp(self, like: TensorSpec, shape, suffix: str) -> int:
        return self.add_tensor(_Tensor(f"{like.name}/{suffix}", tuple(shape), "INT8",
                                       [float(np.float32(like.scale))], [int(like.zero_point)]))

    def const(self, name: str, array: np.ndarray, dtype: str, scales=None, zero_points=None,
              axis: int = 0) -> int:
        array = np.ascontiguousarray(array)
        return self.add_tensor(_Tensor(name, tuple(array.shape), dtype, scales, zero_points,
                                       axis, array.astype(array.dtype.newbyteorder("<"))
                                       .tobytes()))

    def output(self, op: _Op, natural_shape) -> None:
        """``op`` writes the layer's output; a RESHAPE follows where TFLite's shape of it
        differs from the model's (the same bytes)."""
        spec = self.model.tensors[self.layer.output]
        if tuple(natural_shape) == (1, *spec.shape):
            op.outputs = [self.act(spec.name)]
            self.ops.append(op)
            return
        tmp = self.temp(spec, natural_shape, "natural")
        op.outputs = [tmp]
        self.ops.append(op)
        shape = self.const(f"{spec.name}/shape", np.array((1, *spec.shape), np.int32), "INT32")
        self.ops.append(_Op("RESHAPE", [tmp, shape], [self.act(spec.name)], "ReshapeOptions",
                            {"NewShape": np.array((1, *spec.shape), np.int32)}))

    def fused(self) -> str:
        """The fused activation whose TFLM range is the layer's ``act_min``/``act_max``."""
        y = self.model.tensors[self.layer.output]
        want = (self.layer.params.get("act_min", -128), self.layer.params.get("act_max", 127))
        for name in _FUSED:
            if activation_range(name, y.scale, y.zero_point) == tuple(want):
                return name
        self.differs(f"its clamp [{want[0]}, {want[1]}] is no TFLite fused activation's range")
        return "NONE"

    def same_quantization(self, a: str, b: str) -> bool:
        sa, sb = self.model.tensors[a], self.model.tensors[b]
        return np.float32(sa.scale) == np.float32(sb.scale) and sa.zero_point == sb.zero_point

    def constants_equal(self, expected: dict, what: str) -> None:
        arrays = self.layer.arrays
        for key, value in expected.items():
            if key not in arrays or not np.array_equal(np.asarray(arrays[key]), value):
                self.differs(f"its {key} is not the {what} TFLM derives from the scales")
                return

    def padding(self, in_hw, kernel, stride, dilation, fill: int | None) -> tuple[str, int]:
        """(SAME / VALID, input tensor): explicit padding TFLite cannot express becomes a PAD
        before a VALID window, filled with ``fill`` (None: no fill is equal, refuse)."""
        pads = list(self.layer.params.get("padding", [0, 0, 0, 0]))
        x = self.act(self.layer.inputs[0])
        if pads == [0, 0, 0, 0]:
            return "VALID", x
        if pads == same_padding(in_hw, kernel, stride, dilation)[0]:
            return "SAME", x
        if fill is None:
            self.differs(f"padding {pads} is neither TFLite's SAME nor VALID")
            return "SAME", x
        spec = self.model.tensors[self.layer.inputs[0]]
        h, w, c = spec.shape
        padded = self.temp(spec, (1, h + pads[0] + pads[2], w + pads[1] + pads[3], c), "padded")
        self.pad_op(x, padded, pads, fill)
        return "VALID", padded

    def pad_op(self, x: int, y: int, pads, fill: int) -> None:
        paddings = np.array([[0, 0], [pads[0], pads[2]], [pads[1], pads[3]], [0, 0]], np.int32)
        spec = self.tensors[x]
        p = self.const(f"{spec.name}/paddings", paddings, "INT32")
        if fill == spec.zero_points[0]:
            self.ops.append(_Op("PAD", [x, p], [y], "PadOptions"))
            return
        v = self.const(f"{spec.name}/pad_value", np.array([fill], np.int8), "INT8",
                       spec.scales, spec.zero_points)
        self.ops.append(_Op("PADV2", [x, p, v], [y], "PadV2Options"))

    def weight_scales_of(self, layer: Layer, x: TensorSpec, y: TensorSpec) -> np.ndarray:
        """float32 per-channel weight scales whose TFLM multipliers are the layer's."""
        m = layer.arrays["multiplier"].astype(np.int64)
        s = layer.arrays["shift"].astype(np.int64)
        given = self.weight_scales.get(layer.name)
        if given is not None:
            given = np.broadcast_to(np.asarray(given, np.float32), m.shape)
            if all(_tflm_multiplier(x.scale, w, y.scale) == (int(mi), int(si))
                   for w, mi, si in zip(given, m, s)):
                return np.array(given, np.float32)
        out = []
        for mi, si in zip(m.tolist(), s.tolist()):
            w = _recover_scale(x.scale, y.scale, mi, si)
            if w is None:
                self.differs(f"multiplier {mi} (shift {si}) is no float32 weight scale's "
                             "TFLM multiplier")
                w = np.float32(mi * 2.0 ** (si - 31) * y.scale / x.scale)
            out.append(w)
        return np.array(out, np.float32)

    # -- one method per op -----------------------------------------------------------------------

    def conv2d(self, layer: Layer) -> None:
        x, y = (self.model.tensors[n] for n in (layer.inputs[0], layer.output))
        p = layer.params
        if p.get("rounding", "double") != "double":
            self.differs("single-rounding requantization; TFLM rounds twice")
        w = layer.arrays["weights"]
        m, kh, kw, cg = w.shape
        h, wd, c = x.shape
        groups = p.get("groups", 1)
        depthwise = groups == c and cg == 1 and groups > 1
        if groups != 1 and not depthwise:
            raise self.refuse(f"grouped convolution ({groups} groups of {cg} channels) has no "
                              "TFLite operator")
        w_scales = self.weight_scales_of(layer, x, y)
        act = self.fused()
        stride, dilation = list(p.get("stride", [1, 1])), list(p.get("dilation", [1, 1]))
        padding, x_index = self.padding((h, wd), (kh, kw), stride, dilation, x.zero_point)
        bias_scales = [float(np.float32(x.scale) * s) for s in w_scales]
        b = self.const(f"{layer.name}/bias", layer.arrays["bias"].astype(np.int32), "INT32",
                       bias_scales, [0] * m)
        fields = {"Padding": padding, "StrideH": stride[0], "StrideW": stride[1],
                  "DilationHFactor": dilation[0], "DilationWFactor": dilation[1],
                  "FusedActivationFunction": act}
        if depthwise:
            f = self.const(f"{layer.name}/filter", w.transpose(3, 1, 2, 0), "INT8",
                           w_scales.tolist(), [0] * m, axis=3)
            fields["DepthMultiplier"] = m // c
            op = _Op("DEPTHWISE_CONV_2D", [x_index, f, b], [], "DepthwiseConv2DOptions", fields)
        else:
            f = self.const(f"{layer.name}/filter", w, "INT8", w_scales.tolist(), [0] * m)
            op = _Op("CONV_2D", [x_index, f, b], [], "Conv2DOptions", fields)
        self.output(op, (1, *y.shape))

    def fully_connected(self, layer: Layer) -> None:
        x, y = (self.model.tensors[n] for n in (layer.inputs[0], layer.output))
        w = layer.arrays["weights"]
        w_scales = self.weight_scales_of(layer, x, y)
        act = self.fused()
        m = w.shape[0]
        f = self.const(f"{layer.name}/weights", w, "INT8", w_scales.tolist(), [0] * m)
        b = self.const(f"{layer.name}/bias", layer.arrays["bias"].astype(np.int32), "INT32",
                       [float(np.float32(x.scale) * s) for s in w_scales], [0] * m)
        op = _Op("FULLY_CONNECTED", [self.act(x.name), f, b], [], "FullyConnectedOptions",
                 {"FusedActivationFunction": act})
        self.output(op, (1, m))

    def _pool(self, layer: Layer, builtin: str, fill: int | None) -> None:
        x, y = (self.model.tensors[n] for n in (layer.inputs[0], layer.output))
        p = layer.params
        kernel, stride = list(p["kernel"]), list(p["stride"])
        if any(p.get("ceil_pad", [0, 0])):
            self.differs("ceil-mode windows are not TFLite's")
        act = self.fused()
        padding, x_index = self.padding(x.shape[:2], kernel, stride, (1, 1), fill)
        op = _Op(builtin, [x_index], [], "Pool2DOptions",
                 {"Padding": padding, "StrideH": stride[0], "StrideW": stride[1],
                  "FilterHeight": kernel[0], "FilterWidth": kernel[1],
                  "FusedActivationFunction": act})
        if self.same_quantization(x.name, y.name):
            self.output(op, (1, *y.shape))
            return
        self.differs("its output is quantized unlike its input; TFLM's int8 pools do not "
                     "rescale")
        pooled = self.temp(x, (1, *y.shape), "pooled")  # TFLM refuses a pool that rescales
        op.outputs = [pooled]
        self.ops.append(op)
        self.output(_Op("QUANTIZE", [pooled], []), (1, *y.shape))

    def max_pool2d(self, layer: Layer) -> None:
        self._pool(layer, "MAX_POOL_2D", -128)  # -128 never wins over a tap of the image

    def avg_pool2d(self, layer: Layer) -> None:
        p = layer.params
        if p.get("count_include_pad") and any(p.get("padding", [0])):
            self.differs("it counts padding; TFLM's average divides by the taps in the image")
        rescale = int(np.asarray(layer.arrays.get("rescale", [0])).reshape(-1)[0])
        x = self.model.tensors[layer.inputs[0]]
        if rescale and list(p["kernel"]) == list(x.shape[:2]) and not any(p["padding"]):
            if not _mean_agrees(layer, x, self.model.tensors[layer.output]):
                self.differs("it rescales the sum, then divides; TFLM's MEAN folds the "
                             "division into its multiplier, and the two round some sums apart")
            self._mean(layer)  # the operator a converter writes for a global average
            return
        if rescale:
            self.differs("it rescales the sum before dividing; TFLM's AVERAGE_POOL_2D does "
                         "not rescale")
        self._pool(layer, "AVERAGE_POOL_2D", None)

    def global_avg_pool(self, layer: Layer) -> None:
        """MEAN over H and W: runtime/'s fixed global_avg_pool is TFLM's MEAN arithmetic, so
        the layer's constants must be the ones TFLM derives from the two scales."""
        x, y = (self.model.tensors[n] for n in (layer.inputs[0], layer.output))
        expected = kernels.global_avg_pool_constants(x.scale, x.zero_point, y.scale,
                                                     y.zero_point, x.shape[:2], "fixed")
        self.constants_equal(expected, "MEAN constant")
        self._mean(layer)

    def _mean(self, layer: Layer) -> None:
        x, y = (self.model.tensors[n] for n in (layer.inputs[0], layer.output))
        if self.fused() != "NONE":
            self.differs("a clamp after MEAN is not TFLite's")
        axes = self.const(f"{layer.name}/axes", np.array([1, 2], np.int32), "INT32")
        op = _Op("MEAN", [self.act(x.name), axes], [], "ReducerOptions", {"KeepDims": True})
        self.output(op, (1, 1, 1, x.shape[2]))

    def _binary(self, layer: Layer, builtin: str, constants, options: str) -> None:
        a, b, y = (self.model.tensors[n] for n in (*layer.inputs, layer.output))
        self.constants_equal(constants(a.scale, a.zero_point, b.scale, b.zero_point, y.scale,
                                       y.zero_point, "fixed"), f"{builtin} constant")
        act = self.fused()
        op = _Op(builtin, [self.act(a.name), self.act(b.name)], [], options,
                 {"FusedActivationFunction": act})
        self.output(op, (1, *a.shape))

    def add(self, layer: Layer) -> None:
        self._binary(layer, "ADD", kernels.add_constants, "AddOptions")

    def sub(self, layer: Layer) -> None:
        self._binary(layer, "SUB", kernels.sub_constants, "SubOptions")

    def mul(self, layer: Layer) -> None:
        self._binary(layer, "MUL", kernels.mul_constants, "MulOptions")

    def concat(self, layer: Layer) -> None:
        """CONCATENATION copies bytes; an input quantized unlike the output is requantized
        first by a QUANTIZE (int8 to int8: TFLM's requantize, the table's own formula)."""
        y = self.model.tensors[layer.output]
        expected = kernels.concat_constants(
            [(self.model.tensors[n].scale, self.model.tensors[n].zero_point)
             for n in layer.inputs], y.scale, y.zero_point, "fixed")
        self.constants_equal(expected, "requantization table")
        inputs = []
        for name in layer.inputs:
            x = self.act(name)
            if not self.same_quantization(name, y.name):
                spec = self.model.tensors[name]
                q = self.add_tensor(_Tensor(f"{name}/as_{y.name}", (1, *spec.shape), "INT8",
                                            [float(np.float32(y.scale))], [int(y.zero_point)]))
                self.ops.append(_Op("QUANTIZE", [x], [q]))
                x = q
            inputs.append(x)
        op = _Op("CONCATENATION", inputs, [], "ConcatenationOptions",
                 {"Axis": 3, "FusedActivationFunction": "NONE"})
        self.output(op, (1, *y.shape))

    def pad(self, layer: Layer) -> None:
        x, y = (self.model.tensors[n] for n in (layer.inputs[0], layer.output))
        if layer.params.get("mode", "constant") != "constant":
            raise self.refuse(f"{layer.params['mode']} padding has no exact TFLite operator")
        value = int(np.asarray(layer.arrays["value"]).reshape(-1)[0])
        self.pad_op(self.act(x.name), self.act(y.name), layer.params["pads"], value)

    def resize_nearest(self, layer: Layer) -> None:
        x, y = (self.model.tensors[n] for n in (layer.inputs[0], layer.output))
        rows, cols = (np.asarray(layer.arrays[k]) for k in ("rows", "cols"))
        for align, half in ((False, False), (False, True), (True, False), (True, True)):
            if all(np.array_equal(nearest_sources(size, out, align, half), index)
                   for size, out, index in zip(x.shape[:2], y.shape[:2], (rows, cols))):
                break
        else:
            self.differs("its source rows and columns are not TFLite's nearest neighbours")
            align = half = False
        size = self.const(f"{layer.name}/size", np.array(y.shape[:2], np.int32), "INT32")
        op = _Op("RESIZE_NEAREST_NEIGHBOR", [self.act(x.name), size], [],
                 "ResizeNearestNeighborOptions",
                 {"AlignCorners": align, "HalfPixelCenters": half})
        self.output(op, (1, *y.shape))

    def softmax(self, layer: Layer) -> None:
        x, y = (self.model.tensors[n] for n in (layer.inputs[0], layer.output))
        if (np.float32(y.scale), y.zero_point) != (np.float32(OUTPUT_SCALE), OUTPUT_ZERO_POINT):
            self.differs("its output is not at TFLM's 1/256, -128")
        self.constants_equal(kernels.softmax_constants(x.scale, x.shape[-1], "fixed"),
                             "softmax constant")
        op = _Op("SOFTMAX", [self.act(x.name)], [], "SoftmaxOptions", {"Beta": 1.0})
        self.output(op, (1, *y.shape))

    def lookup(self, layer: Layer) -> None:
        x, y = (self.model.tensors[n] for n in (layer.inputs[0], layer.output))
        function = layer.params.get("function")
        builtin = _LOOKUPS.get(function)
        if builtin is None:
            raise self.refuse(f"{function} has no TFLite operator")
        attrs = dict(layer.params.get("attributes", {}))
        table = np.asarray(layer.arrays["table"])
        expected = tables.table(function, attrs, (x.scale, x.zero_point),
                                (y.scale, y.zero_point), "fixed")
        if not np.array_equal(table, expected):
            self.differs(f"its table is not TFLM's {builtin}")
        fields, options = {}, None
        if builtin == "LEAKY_RELU":
            options, fields = "LeakyReluOptions", {"Alpha": float(attrs.get("alpha", 0.01))}
        self.output(_Op(builtin, [self.act(x.name)], [], options, fields), (1, *y.shape))

    # -- the graph -------------------------------------------------------------------------------

    def run(self) -> Written:
        self.act(self.model.input)
        for layer in self.model.layers:
            self.layer = layer
            method = getattr(self, layer.op, None)
            if method is None:
                raise self.refuse("has no TFLite operator")
            method(layer)
        data = _Flatbuffer(self.tensors, self.ops, self.act(self.model.input),
                           self.act(self.model.output), self.model.name).build()
        return Written(data, dict(self.index), self.differences)


def _tflm_multiplier(x_scale, w_scale, y_scale) -> tuple[int, int]:
    """TFLM's per-channel multiplier: QuantizeMultiplier(double(x) * double(w) / double(y))."""
    return quantize_multiplier(float(np.float32(x_scale)) * float(np.float32(w_scale))
                               / float(np.float32(y_scale)))


def _recover_scale(x_scale, y_scale, multiplier: int, shift: int) -> np.float32 | None:
    """The float32 weight scale nearest ``multiplier * 2**(shift - 31) * y / x`` whose TFLM
    multiplier is ``(multiplier, shift)``: a float32 has 24 bits and a multiplier 31, so the
    estimate is within an ulp or two of it."""
    if multiplier == 0:
        return None
    estimate = np.float32(multiplier * 2.0 ** (shift - 31) * float(np.float32(y_scale))
                          / float(np.float32(x_scale)))
    candidates = [estimate]
    up = down = estimate
    for _ in range(4):
        up, down = np.nextafter(up, np.float32(np.inf)), np.nextafter(down, np.float32(0))
        candidates += [up, down]
    for w in candidates:
        if w > 0 and _tflm_multiplier(x_scale, w, y_scale) == (multiplier, shift):
            return np.float32(w)
    return None


def _mean_agrees(layer: Layer, x: TensorSpec, y: TensorSpec) -> bool:
    """A rescaling whole-image avg_pool2d (rescale, then divide) and TFLM's MEAN agree on
    every possible centered sum."""
    from runtime.kernels.pool import mean_multiplier
    from runtime.requant import Requant

    count = x.shape[0] * x.shape[1]
    sums = np.arange(-255 * count, 255 * count + 1, dtype=np.int64)
    sums = sums[(sums >= (-128 - x.zero_point) * count) & (sums <= (127 - x.zero_point) * count)]
    m, s = int(layer.arrays["multiplier"][0]), int(layer.arrays["shift"][0])
    scaled = Requant.fixed(m, s).apply(sums)
    half = count // 2
    runtime_out = np.where(scaled > 0, (scaled + half) // count, -((half - scaled) // count))
    try:
        tflm_out = Requant.fixed(*mean_multiplier(x.scale, y.scale, count)).apply(sums)
    except ValueError:  # a shift beyond TFLM's range
        return False
    low, high = -128 - y.zero_point, 127 - y.zero_point
    return bool(np.array_equal(np.clip(runtime_out, low, high), np.clip(tflm_out, low, high)))


@functools.lru_cache(maxsize=None)
def _schema(table: str):
    """The ``tflite`` package's module of ``table`` (the package re-exports the class under
    the same name, without the builder functions)."""
    return importlib.import_module(f"tflite.{table}")


class _Flatbuffer:
    """The tflite schema's tables, built with the ``tflite`` package's generated functions."""

    def __init__(self, tensors, ops, graph_input: int, graph_output: int, name: str):
        import flatbuffers
        import tflite

        size = sum(len(t.data) + _ALIGN for t in tensors if t.data) + 256 * (len(tensors) + 16)
        self.fb, self.tfl = flatbuffers.Builder(size), tflite  # sized once: no regrowth
        self.tensors, self.ops, self.name = tensors, ops, name
        self.io = (graph_input, graph_output)

    def _vector(self, values, dtype) -> int:
        return self.fb.CreateNumpyVector(np.asarray(values, dtype))

    def _bytes(self, data: bytes) -> int:
        """A uint8 vector aligned to 16 bytes (TFLM reads int32 biases in place)."""
        fb = self.fb
        fb.StartVector(1, len(data), _ALIGN)
        fb.head = fb.head - len(data)
        fb.Bytes[fb.head:fb.head + len(data)] = data
        return fb.EndVector()

    def _table(self, module: str, fields: dict) -> int:
        """A table of the schema from ``fields`` (enum values given by name)."""
        tfl, fb = self.tfl, self.fb
        mod = _schema(module)
        offsets = {k: self._vector(v, v.dtype) for k, v in fields.items()
                   if isinstance(v, np.ndarray)}
        getattr(mod, "Start")(fb)
        for key, value in fields.items():
            if key in offsets:
                value = offsets[key]
            elif key == "Padding":
                value = getattr(tfl.Padding, value)
            elif key == "FusedActivationFunction":
                value = getattr(tfl.ActivationFunctionType, value)
            getattr(mod, "Add" + key)(fb, value)
        return getattr(mod, "End")(fb)

    def _tensor(self, t: _Tensor, buffer: int) -> int:
        tfl, fb = self.tfl, self.fb
        qp_table = _schema("QuantizationParameters")
        tensor_table = _schema("Tensor")
        name = fb.CreateString(t.name)
        shape = self._vector(t.shape, np.int32)
        quant = None
        if t.scales is not None:
            scale = self._vector(t.scales, np.float32)
            zp = self._vector(t.zero_points, np.int64)
            qp_table.Start(fb)
            qp_table.AddScale(fb, scale)
            qp_table.AddZeroPoint(fb, zp)
            qp_table.AddQuantizedDimension(fb, t.axis)
            quant = qp_table.End(fb)
        tensor_table.Start(fb)
        tensor_table.AddShape(fb, shape)
        tensor_table.AddType(fb, getattr(tfl.TensorType, t.dtype))
        tensor_table.AddBuffer(fb, buffer)
        tensor_table.AddName(fb, name)
        if quant is not None:
            tensor_table.AddQuantization(fb, quant)
        return tensor_table.End(fb)

    def _offsets_vector(self, start, offsets) -> int:
        start(self.fb, len(offsets))
        for offset in reversed(offsets):
            self.fb.PrependUOffsetTRelative(offset)
        return self.fb.EndVector()

    def build(self) -> bytes:
        tfl, fb = self.tfl, self.fb
        code_table = _schema("OperatorCode")
        op_table = _schema("Operator")
        graph_table = _schema("SubGraph")
        model_table = _schema("Model")
        buffers, tensor_offsets = [self._buffer(None)], []
        for t in self.tensors:
            index = 0
            if t.data is not None:
                buffers.append(self._buffer(t.data))
                index = len(buffers) - 1
            tensor_offsets.append(self._tensor(t, index))
        codes = sorted({op.builtin for op in self.ops}, key=lambda b: getattr(
            tfl.BuiltinOperator, b))
        code_offsets = []
        for builtin in codes:
            value = getattr(tfl.BuiltinOperator, builtin)
            code_table.Start(fb)
            code_table.AddDeprecatedBuiltinCode(fb, min(value, 127))
            code_table.AddBuiltinCode(fb, value)
            code_table.AddVersion(fb, 1)
            code_offsets.append(code_table.End(fb))
        op_offsets = []
        for op in self.ops:
            options = self._table(op.options, op.fields) if op.options else None
            inputs = self._vector(op.inputs, np.int32)
            outputs = self._vector(op.outputs, np.int32)
            op_table.Start(fb)
            op_table.AddOpcodeIndex(fb, codes.index(op.builtin))
            op_table.AddInputs(fb, inputs)
            op_table.AddOutputs(fb, outputs)
            if options is not None:
                op_table.AddBuiltinOptionsType(fb, getattr(tfl.BuiltinOptions, op.options))
                op_table.AddBuiltinOptions(fb, options)
            op_offsets.append(op_table.End(fb))
        tensors = self._offsets_vector(graph_table.StartTensorsVector, tensor_offsets)
        operators = self._offsets_vector(graph_table.StartOperatorsVector, op_offsets)
        graph_in = self._vector([self.io[0]], np.int32)
        graph_out = self._vector([self.io[1]], np.int32)
        name = fb.CreateString(self.name)
        graph_table.Start(fb)
        graph_table.AddTensors(fb, tensors)
        graph_table.AddInputs(fb, graph_in)
        graph_table.AddOutputs(fb, graph_out)
        graph_table.AddOperators(fb, operators)
        graph_table.AddName(fb, name)
        subgraph = graph_table.End(fb)
        subgraphs = self._offsets_vector(model_table.StartSubgraphsVector, [subgraph])
        code_vector = self._offsets_vector(model_table.StartOperatorCodesVector, code_offsets)
        buffer_vector = self._offsets_vector(model_table.StartBuffersVector, buffers)
        description = fb.CreateString("tinyconv export/tflite_writer.py")
        model_table.Start(fb)
        model_table.AddVersion(fb, 3)
        model_table.AddOperatorCodes(fb, code_vector)
        model_table.AddSubgraphs(fb, subgraphs)
        model_table.AddDescription(fb, description)
        model_table.AddBuffers(fb, buffer_vector)
        fb.Finish(model_table.End(fb), file_identifier=b"TFL3")
        return bytes(fb.Output())

    def _buffer(self, data: bytes | None) -> int:
        fb = self.fb
        buffer_table = _schema("Buffer")
        vector = self._bytes(data) if data else None
        buffer_table.Start(fb)
        if vector is not None:
            buffer_table.AddData(fb, vector)
        return buffer_table.End(fb)


def write(model: QuantModel, weight_scales: dict | None = None, *, check: bool = True
          ) -> Written:
    """The .tflite of a fixed-mode ``model``; ``weight_scales`` (layer name -> float32 scales,
    as export keeps them) are optional. Raises ``Unwritable`` naming the first layer TFLite
    cannot express, or (``check``) that TFLM would compute differently."""
    return _Writer(model, weight_scales, check).run()


def write_or_reason(model: QuantModel, weight_scales: dict | None = None, *,
                    check: bool = True) -> tuple[Written | None, str | None]:
    """(written, None), or (None, the one-line reason it cannot be)."""
    try:
        return write(model, weight_scales, check=check), None
    except Unwritable as exc:
        return None, str(exc)
