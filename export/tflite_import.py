"""A full-integer int8 ``.tflite`` flatbuffer straight into a ``QuantModel`` (no TensorFlow).

Nothing is calibrated or re-quantized: every scale, zero point, weight and bias is the file's,
and the constants are the ones TensorFlow Lite Micro's ``Prepare`` functions compute from them
(docs/EXPORT.md, "TFLite"): per output channel ``QuantizeMultiplier(double(x_scale) *
double(w_scale[c]) / double(y_scale))`` for CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED,
TFLM's add constants, its activation range (``zp + round(f / scale)`` in float32, half away
from zero), and AVERAGE_POOL_2D without rescaling (TFLM's int8 average pool ignores the
quantization). So runtime/'s fixed mode computes what TFLM computes, element for element.

Tensor ``i`` of the file is tensor ``t<i>`` of the model (``TFLITE_PREFIX``), so a per-layer
comparison against TFLM reads TFLM's tensor ``i``. RESHAPE and SQUEEZE move no data: their
output is the same tensor under its producer's name. QUANTIZE / DEQUANTIZE are accepted only at
the model's edges (float input or output); the model itself is int8 in, int8 out.
"""
from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export import tables
from runtime import kernels
from runtime.errors import TinyconvError
from runtime.kernels.pool import mean_multiplier
from runtime.kernels.softmax import OUTPUT_SCALE, OUTPUT_ZERO_POINT
from runtime.model import Layer, QuantModel, TensorSpec
from runtime.requant import Requant, quantize_multiplier

IDENTIFIER = b"TFL3"  # the flatbuffer file identifier, bytes 4..8 of a .tflite file
TFLITE_PREFIX = "t"
_INT8, _INT32, _FLOAT32 = "INT8", "INT32", "FLOAT32"
_ACTIVATIONS = {"NONE": None, "RELU": (0.0, math.inf), "RELU6": (0.0, 6.0),
                "RELU_N1_TO_1": (-1.0, 1.0)}
_HANDLERS = {"CONV_2D": "conv_2d", "DEPTHWISE_CONV_2D": "depthwise_conv_2d",
             "FULLY_CONNECTED": "fully_connected", "MAX_POOL_2D": "max_pool_2d",
             "AVERAGE_POOL_2D": "average_pool_2d", "MEAN": "mean", "ADD": "add",
             "RESHAPE": "view", "SQUEEZE": "view", "RELU": "relu", "RELU6": "relu6",
             "SOFTMAX": "softmax", "LOGISTIC": "lookup", "TANH": "lookup",
             "HARD_SWISH": "lookup", "LEAKY_RELU": "lookup", "PRELU": "prelu",
             "CONCATENATION": "concatenation", "PAD": "pad", "PADV2": "pad", "MUL": "mul",
             "SUB": "sub", "RESIZE_NEAREST_NEIGHBOR": "resize_nearest"}
# TFLite builtin -> the ONNX name export/tables.py knows the op by
_LOOKUPS = {"LOGISTIC": "Sigmoid", "TANH": "Tanh", "HARD_SWISH": "HardSwish",
            "LEAKY_RELU": "LeakyRelu"}
# What a corrupt flatbuffer raises when read (struct.error: offsets outside the file).
_MALFORMED = (struct.error, ValueError, IndexError, KeyError, TypeError, AttributeError,
              ZeroDivisionError, OverflowError)


def is_tflite(path: str | os.PathLike) -> bool:
    """True for a file carrying the TFLite flatbuffer identifier."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return len(head) == 8 and head[4:8] == IDENTIFIER


def _enum_names(enum_class) -> dict[int, str]:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_")}


@dataclass
class _Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    scales: np.ndarray  # float32, empty when unquantized
    zero_points: np.ndarray  # int64
    axis: int
    data: np.ndarray | None  # constant buffer, None for activations


@dataclass
class Imported:
    """What ``read`` makes of a file: the model, its weight scales (for model.q.onnx) and the
    file's float edges (QUANTIZE / DEQUANTIZE kept out of the int8 model)."""

    model: QuantModel
    weight_scales: dict[str, np.ndarray]
    float_input: bool
    float_output: bool
    tensors: dict[int, str]  # TFLite tensor index -> the model tensor holding its bytes
    data: bytes = b""  # the .tflite file


def _round_half_away(value: np.float32) -> int:
    """TfLiteRound (std::round) of a float32."""
    value = float(value)
    return int(math.floor(abs(value) + 0.5)) * (1 if value >= 0 else -1)


def activation_range(activation: str, scale: float, zero_point: int) -> tuple[int, int]:
    """TFLM's CalculateActivationRangeQuantized: ``zp + round(f / scale)`` with the division
    in float32 and std::round (half away from zero), within [-128, 127]."""
    bounds = _ACTIVATIONS[activation]
    if bounds is None:
        return -128, 127

    def q(f: float) -> int:
        return zero_point + _round_half_away(np.float32(f) / np.float32(scale))

    low = max(-128, q(bounds[0]))
    high = 127 if bounds[1] == math.inf else min(127, q(bounds[1]))
    return low, high


def nearest_sources(size: int, out: int, align: bool, half: bool) -> np.ndarray:
    """TFLM's GetNearestNeighbor: the input row (column) of each of ``out`` output rows."""
    scale = (np.float32(size - 1) / np.float32(out - 1) if align and out > 1
             else np.float32(size) / np.float32(out))
    at = (np.arange(out, dtype=np.float32) + np.float32(0.5 if half else 0.0)) * scale
    index = (np.sign(at) * np.floor(np.abs(at) + np.float32(0.5)) if align
             else np.floor(at)).astype(np.int64)
    index = np.minimum(index, size - 1)
    return np.maximum(index, 0) if half else index


def same_padding(size, kernel, stride, dilation) -> tuple[list[int], tuple[int, int]]:
    """TFLite's SAME as explicit (top, left, bottom, right), and the output size."""
    pads, out = [0, 0, 0, 0], []
    for axis in (0, 1):
        effective = (kernel[axis] - 1) * dilation[axis] + 1
        n = -(-size[axis] // stride[axis])
        total = max((n - 1) * stride[axis] + effective - size[axis], 0)
        pads[axis], pads[axis + 2] = total // 2, total - total // 2
        out.append(n)
    return pads, tuple(out)


class _Reader:
    def __init__(self, data: bytes, source: str):
        import tflite

        self.tflite, self.source = tflite, source
        if len(data) < 8 or data[4:8] != IDENTIFIER:
            raise TinyconvError(f"{source}: not a TFLite flatbuffer (no 'TFL3' identifier)")
        try:
            self.fb = tflite.Model.GetRootAsModel(data, 0)
            if self.fb.SubgraphsLength() != 1:
                raise TinyconvError(f"{source}: {self.fb.SubgraphsLength()} subgraphs; tinyconv "
                                    "takes a model with exactly one")
            self.graph = self.fb.Subgraphs(0)
            self.tensors = [self._tensor(i) for i in range(self.graph.TensorsLength())]
            self.op_names = _enum_names(tflite.BuiltinOperator)
            self.ops = [self._operator(i) for i in range(self.graph.OperatorsLength())]
        except TinyconvError:
            raise
        except Exception as exc:  # a truncated or corrupt flatbuffer fails anywhere inside
            raise TinyconvError(f"{source}: unreadable TFLite flatbuffer ({exc})") from None
        self.act_names = _enum_names(tflite.ActivationFunctionType)
        self.pad_names = _enum_names(tflite.Padding)

    def _operator(self, index: int) -> tuple:
        """(operator table, builtin name, input tensors (None: omitted), output tensors)."""
        op = self.graph.Operators(index)
        code = self.fb.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        ins = [self.tensors[int(k)] if k >= 0 else None
               for k in (op.InputsAsNumpy() if op.InputsLength() else [])]
        outs = [self.tensors[int(k)] for k in (op.OutputsAsNumpy() if op.OutputsLength() else [])]
        return op, self.op_names.get(builtin, f"CUSTOM({builtin})"), ins, outs

    def _tensor(self, index: int) -> _Tensor:
        t = self.graph.Tensors(index)
        dtype = _enum_names(self.tflite.TensorType)[t.Type()]
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        q = t.Quantization()
        scales, zps, axis = np.zeros(0, np.float32), np.zeros(0, np.int64), 0
        if q is not None and q.ScaleLength():
            scales = q.ScaleAsNumpy().astype(np.float32)
            zps = (q.ZeroPointAsNumpy().astype(np.int64) if q.ZeroPointLength()
                   else np.zeros(scales.size, np.int64))
            axis = q.QuantizedDimension()
        data = None
        buffer = self.fb.Buffers(t.Buffer())
        if buffer is not None and buffer.DataLength():
            raw = buffer.DataAsNumpy().tobytes()
            np_type = {_INT8: np.int8, _INT32: np.int32, _FLOAT32: np.float32}.get(dtype)
            if np_type is not None:
                data = np.frombuffer(raw, np.dtype(np_type).newbyteorder("<")).astype(
                    np_type).reshape(shape)
        name = t.Name().decode("utf-8", "replace") if t.Name() else f"tensor{index}"
        return _Tensor(index, name, shape, dtype, scales, zps, axis, data)


class _Importer:
    def __init__(self, reader: _Reader, name: str):
        self.r, self.name = reader, name
        self.specs: dict[str, TensorSpec] = {}
        self.layers: list[Layer] = []
        self.alias: dict[int, str] = {}  # TFLite tensor -> model tensor name
        self.weight_scales: dict[str, np.ndarray] = {}
        self.producer: dict[str, Layer] = {}
        self.op_index = 0
        self.op_name = ""

    # -- helpers -------------------------------------------------------------------------------

    def refuse(self, why: str) -> TinyconvError:
        return TinyconvError(f"{self.r.source}: operator {self.op_index} ({self.op_name}): {why}")

    def act_quant(self, t: _Tensor) -> tuple[float, int]:
        if t.dtype != _INT8:
            raise self.refuse(f"tensor {t.index} ({t.name!r}) is {t.dtype}; tinyconv takes "
                              "int8 activations (full-integer quantization)")
        if t.scales.size != 1:
            raise self.refuse(f"tensor {t.index} ({t.name!r}) is not quantized per tensor")
        return float(t.scales[0]), int(t.zero_points[0])

    def sample_shape(self, t: _Tensor) -> tuple[int, ...]:
        """The per-sample shape: batch 1 dropped, (H, W, C) or (K,)."""
        shape = t.shape
        if not shape or shape[0] != 1:
            raise self.refuse(f"tensor {t.index} ({t.name!r}) has shape {list(shape)}; "
                              "tinyconv takes batch 1 (convert with a fixed batch size of 1)")
        rest = shape[1:]
        if len(rest) == 3:
            return rest
        return (int(np.prod(rest, dtype=np.int64)),)

    def spec(self, t: _Tensor) -> str:
        """The model tensor for an int8 activation, declared on first use."""
        if t.index in self.alias:
            return self.alias[t.index]
        scale, zp = self.act_quant(t)
        name = f"{TFLITE_PREFIX}{t.index}"
        self.specs[name] = TensorSpec(name, self.sample_shape(t), scale, zp)
        self.alias[t.index] = name
        return name

    def const(self, t: _Tensor, what: str) -> np.ndarray:
        if t.data is None:
            raise self.refuse(f"{what} (tensor {t.index}, {t.name!r}) must be a constant")
        return t.data

    def weights(self, t: _Tensor, axis: int, channels: int) -> np.ndarray:
        """int8 symmetric weight scales (float32, per channel or per tensor)."""
        if t.dtype != _INT8:
            raise self.refuse(f"weights (tensor {t.index}) are {t.dtype}, not int8")
        if np.any(t.zero_points != 0):
            raise self.refuse("weights with a non-zero zero point; tinyconv needs symmetric "
                              "weights")
        if t.scales.size not in (1, channels) or (t.scales.size > 1 and t.axis != axis):
            raise self.refuse(f"weights quantized with {t.scales.size} scales along axis "
                              f"{t.axis}; expected 1 or {channels} along axis {axis}")
        return t.scales

    def bias(self, t: _Tensor | None, channels: int) -> np.ndarray:
        if t is None:
            return np.zeros(channels, np.int32)
        if t.dtype != _INT32:
            raise self.refuse(f"bias (tensor {t.index}) is {t.dtype}, not int32")
        return self.const(t, "the bias").reshape(channels).astype(np.int32)

    def activation(self, options, y: _Tensor) -> dict:
        fused = self.r.act_names.get(options.FusedActivationFunction(), "?")
        if fused not in _ACTIVATIONS:
            raise self.refuse(f"fused activation {fused} is not supported")
        scale, zp = self.act_quant(y)
        low, high = activation_range(fused, scale, zp)
        return {"act_min": low, "act_max": high}

    def padding(self, code: int, size, kernel, stride, dilation) -> tuple[list, tuple]:
        """TFLite's SAME / VALID as explicit (top, left, bottom, right) and the output size."""
        kind = self.r.pad_names.get(code, "?")
        if kind == "SAME":
            return same_padding(size, kernel, stride, dilation)
        if kind != "VALID":
            raise self.refuse(f"padding {kind} is not supported")
        return [0, 0, 0, 0], tuple((size[axis] - (kernel[axis] - 1) * dilation[axis] - 1)
                                   // stride[axis] + 1 for axis in (0, 1))

    def add_layer(self, op: str, inputs: list[str], y: _Tensor, params: dict,
                  arrays: dict) -> Layer:
        output = self.spec(y)
        layer = Layer(op, f"op{self.op_index}_{self.op_name.lower()}", inputs, output, params,
                      arrays)
        self.layers.append(layer)
        self.producer[output] = layer
        return layer

    def weighted(self, op: str, x: _Tensor, y: _Tensor, w_q: np.ndarray, w_scales,
                 bias: np.ndarray, params: dict) -> None:
        x_name = self.spec(x)
        xs = self.specs[x_name]
        y_scale, _ = self.act_quant(y)
        worst = kernels.worst_case_accumulator(w_q, bias)
        if worst.max() > np.iinfo(np.int32).max:
            raise self.refuse(f"worst-case accumulator {int(worst.max())} could overflow int32")
        rq = Requant.from_scales(xs.scale, w_scales, y_scale, "fixed")
        arrays = {"weights": np.ascontiguousarray(w_q, np.int8), "bias": bias,
                  "multiplier": rq.multiplier.astype(np.int32),
                  "shift": rq.shift.astype(np.int32)}
        layer = self.add_layer(op, [x_name], y, params, arrays)
        self.weight_scales[layer.name] = np.asarray(w_scales, np.float32)

    # -- one method per builtin operator ---------------------------------------------------------

    def conv_2d(self, op, ins, outs) -> None:
        x, w, b = ins[0], ins[1], ins[2] if len(ins) > 2 else None
        y = outs[0]
        opts = self._options(op, self.r.tflite.Conv2DOptions)
        w_q = self.const(w, "the filter")
        h, wd, c = self.sample_shape(x)
        if w_q.shape[3] != c:
            raise self.refuse(f"grouped convolution (filter depth {w_q.shape[3]}, input "
                              f"channels {c}) is not supported")
        stride = (opts.StrideH(), opts.StrideW())
        dilation = (opts.DilationHFactor(), opts.DilationWFactor())
        pads, _ = self.padding(opts.Padding(), (h, wd), w_q.shape[1:3], stride, dilation)
        params = {"stride": list(stride), "padding": pads, "dilation": list(dilation),
                  "groups": 1, **self.activation(opts, y)}
        m = w_q.shape[0]
        self.weighted("conv2d", x, y, w_q, self.weights(w, 0, m), self.bias(b, m), params)

    def depthwise_conv_2d(self, op, ins, outs) -> None:
        """TFLite's filter is [1, KH, KW, C * multiplier], output channel ``c * mult + j``
        reading input channel ``c``: a grouped conv with C groups, weights OHWI [C*mult, KH,
        KW, 1]."""
        x, w, b = ins[0], ins[1], ins[2] if len(ins) > 2 else None
        y = outs[0]
        opts = self._options(op, self.r.tflite.DepthwiseConv2DOptions)
        filt = self.const(w, "the filter")
        h, wd, c = self.sample_shape(x)
        m = filt.shape[3]
        if filt.shape[0] != 1 or m % c:
            raise self.refuse(f"filter shape {list(filt.shape)} does not fit {c} input channels")
        stride = (opts.StrideH(), opts.StrideW())
        dilation = (opts.DilationHFactor(), opts.DilationWFactor())
        pads, _ = self.padding(opts.Padding(), (h, wd), filt.shape[1:3], stride, dilation)
        params = {"stride": list(stride), "padding": pads, "dilation": list(dilation),
                  "groups": c, **self.activation(opts, y)}
        w_q = filt.transpose(3, 1, 2, 0)
        self.weighted("conv2d", x, y, w_q, self.weights(w, 3, m), self.bias(b, m), params)

    def fully_connected(self, op, ins, outs) -> None:
        x, w, b = ins[0], ins[1], ins[2] if len(ins) > 2 else None
        y = outs[0]
        opts = self._options(op, self.r.tflite.FullyConnectedOptions)
        if opts.WeightsFormat() != 0:
            raise self.refuse("shuffled weights are not supported")
        w_q = self.const(w, "the weights")
        depth = int(np.prod(self.sample_shape(x)))
        if w_q.ndim != 2 or w_q.shape[1] != depth:
            raise self.refuse(f"weights {list(w_q.shape)} do not match an input of {depth} "
                              "values (batch 1)")
        m = w_q.shape[0]
        if int(np.prod(y.shape)) != m:
            raise self.refuse(f"output shape {list(y.shape)} is not one sample of {m} values")
        self.weighted("fully_connected", x, y, w_q, self.weights(w, 0, m), self.bias(b, m),
                      self.activation(opts, y))

    def _pool(self, op, ins, outs, kind: str) -> None:
        x, y = ins[0], outs[0]
        opts = self._options(op, self.r.tflite.Pool2DOptions)
        h, wd, c = self.sample_shape(x)
        kernel = (opts.FilterHeight(), opts.FilterWidth())
        stride = (opts.StrideH(), opts.StrideW())
        pads, _ = self.padding(opts.Padding(), (h, wd), kernel, stride, (1, 1))
        params = {"kernel": list(kernel), "stride": list(stride), "padding": pads,
                  **self.activation(opts, y)}
        x_name = self.spec(x)
        xs = self.specs[x_name]
        if kind == "max_pool2d":
            if self.act_quant(y) != (np.float32(xs.scale), xs.zero_point):
                raise self.refuse("output quantization differs from the input's")
            self.add_layer(kind, [x_name], y, params, {})
            return
        params["count_include_pad"] = False
        # TFLM's int8 average pool divides the raw sum and never rescales: constants made
        # with the input's quantization on both sides are exactly that (rescale = 0).
        arrays = kernels.avg_pool_constants(xs.scale, xs.zero_point, xs.scale, xs.zero_point,
                                            kernel, "fixed")
        self.add_layer(kind, [x_name], y, params, arrays)

    def max_pool_2d(self, op, ins, outs) -> None:
        self._pool(op, ins, outs, "max_pool2d")

    def average_pool_2d(self, op, ins, outs) -> None:
        self._pool(op, ins, outs, "avg_pool2d")

    def mean(self, op, ins, outs) -> None:
        """TFLM's int8 MEAN over H and W folds the division into the multiplier:
        ``m' = (m << r) // count``, ``shift' = shift - r`` with ``r = min(floor(log2(count)),
        32, 31 + shift)``, then ``y = MBQM(sum(x - x_zp), m', shift') + y_zp``. That is a
        depthwise convolution with all-one H x W weights and those constants, exactly."""
        x, y = ins[0], outs[0]
        axes = sorted(int(a) % 4 for a in np.atleast_1d(self.const(ins[1], "the axes")))
        if len(x.shape) != 4 or axes != [1, 2]:
            raise self.refuse(f"MEAN over axes {axes} of a {len(x.shape)}-D tensor; tinyconv "
                              "takes the mean over H and W of an NHWC tensor")
        h, wd, c = self.sample_shape(x)
        x_name = self.spec(x)
        xs = self.specs[x_name]
        y_scale, _ = self.act_quant(y)
        multiplier, shift = mean_multiplier(xs.scale, y_scale, h * wd)
        arrays = {"weights": np.ones((c, h, wd, 1), np.int8), "bias": np.zeros(c, np.int32),
                  "multiplier": np.full(c, multiplier, np.int32),
                  "shift": np.full(c, shift, np.int32)}
        params = {"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": c,
                  "act_min": -128, "act_max": 127}
        layer = self.add_layer("conv2d", [x_name], y, params, arrays)
        self.specs[layer.output].shape = (1, 1, c)  # keep_dims or not: the same bytes
        # model.q.onnx: QLinearConv scale x_scale * w_scale / y_scale with w_scale = 1 / count
        self.weight_scales[layer.name] = np.full(c, np.float32(1.0) / np.float32(h * wd))

    def add(self, op, ins, outs) -> None:
        a, b, y = ins[0], ins[1], outs[0]
        if a.data is not None or b.data is not None:
            return self._constant_table(op, ins, outs, "QLinearAdd", self.r.tflite.AddOptions)
        if a.shape != b.shape or a.shape != y.shape:
            raise self.refuse(f"broadcasting add {list(a.shape)} + {list(b.shape)} is not "
                              "supported")
        opts = self._options(op, self.r.tflite.AddOptions)
        names = [self.spec(a), self.spec(b)]
        sa, sb = (self.specs[n] for n in names)
        y_scale, y_zp = self.act_quant(y)
        arrays = kernels.add_constants(sa.scale, sa.zero_point, sb.scale, sb.zero_point,
                                       y_scale, y_zp, "fixed")
        self.add_layer("add", names, y, self.activation(opts, y), arrays)

    def view(self, op, ins, outs) -> None:
        """RESHAPE / SQUEEZE: the same bytes; fully connected flattens anything, and a view
        of the model input reshapes the input itself."""
        x, y = ins[0], outs[0]
        if self.act_quant(x) != self.act_quant(y):
            raise self.refuse("input and output quantization differ")
        name = self.spec(x)
        spec = self.specs[name]
        new_shape = self.sample_shape(y)
        if name not in self.producer and not any(name in l.inputs for l in self.layers):
            spec.shape = new_shape  # the model input (or nothing read it yet in its old shape)
        self.alias[y.index] = name

    def relu(self, op, ins, outs, kind: str = "RELU") -> None:
        """TFLM's int8 RELU / RELU6 requantizes, ``y = clamp(MBQM(x - x_zp, m, shift) + y_zp)``
        with ``QuantizeMultiplier(double(x_scale) / double(y_scale))``: a depthwise 1x1
        convolution with weight 1 and those constants, exactly."""
        x, y = ins[0], outs[0]
        x_name = self.spec(x)
        xs = self.specs[x_name]
        if len(xs.shape) != 3:
            raise self.refuse(f"activation of a tensor of shape {list(xs.shape)}; tinyconv "
                              "takes it on an (H, W, C) feature map")
        y_scale, y_zp = self.act_quant(y)
        c = xs.shape[2]
        multiplier, shift = quantize_multiplier(float(np.float32(xs.scale)) /
                                                float(np.float32(y_scale)))
        low, high = activation_range(kind, y_scale, y_zp)
        arrays = {"weights": np.ones((c, 1, 1, 1), np.int8), "bias": np.zeros(c, np.int32),
                  "multiplier": np.full(c, multiplier, np.int32),
                  "shift": np.full(c, shift, np.int32)}
        params = {"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": c,
                  "act_min": low, "act_max": high}
        layer = self.add_layer("conv2d", [x_name], y, params, arrays)
        self.specs[layer.output].shape = xs.shape
        self.weight_scales[layer.name] = np.full(c, np.float32(1.0))

    def relu6(self, op, ins, outs) -> None:
        self.relu(op, ins, outs, "RELU6")

    # -- softmax, tables, tensor ops (runtime/kernels/softmax.py, lookup.py, tensor_ops.py) -----

    def softmax(self, op, ins, outs) -> None:
        """TFLM's int8 softmax over the last axis, beta 1, output at (1/256, -128)."""
        x, y = ins[0], outs[0]
        beta = self._options(op, self.r.tflite.SoftmaxOptions).Beta()
        if beta != 1.0:
            raise self.refuse(f"beta {beta}; tinyconv's softmax takes beta 1")
        x_name = self.spec(x)
        xs = self.specs[x_name]
        y_scale, y_zp = self.act_quant(y)
        if (np.float32(y_scale), y_zp) != (np.float32(OUTPUT_SCALE), OUTPUT_ZERO_POINT):
            raise self.refuse(f"output at scale {y_scale}, zero point {y_zp}; TFLM's int8 "
                              "softmax outputs 1/256, -128")
        try:
            arrays = kernels.softmax_constants(xs.scale, xs.shape[-1], "fixed")
        except ValueError as exc:
            raise self.refuse(str(exc)) from None
        layer = self.add_layer("softmax", [x_name], y, {}, arrays)
        self.specs[layer.output].shape = xs.shape

    def _table_layer(self, x: _Tensor, y: _Tensor, table: np.ndarray, params: dict) -> None:
        x_name = self.spec(x)
        xs = self.specs[x_name]
        layer = self.add_layer("lookup", [x_name], y, params, {"table": table})
        self.specs[layer.output].shape = xs.shape

    def lookup(self, op, ins, outs) -> None:
        """LOGISTIC, TANH, HARD_SWISH, LEAKY_RELU: the 256 codes through TFLM's own integer
        algorithm (export/tables.py), from the file's scales and zero points."""
        x, y = ins[0], outs[0]
        function = _LOOKUPS[self.op_name]
        attrs = {}
        if self.op_name == "LEAKY_RELU":
            attrs["alpha"] = float(self._options(op, self.r.tflite.LeakyReluOptions).Alpha())
        x_q, y_q = self.act_quant(x), self.act_quant(y)
        fixed = tables.FIXED_OUTPUT.get(function)
        if fixed is not None and (np.float32(y_q[0]), y_q[1]) != (np.float32(fixed[0]),
                                                                   fixed[1]):
            raise self.refuse(f"output at scale {y_q[0]}, zero point {y_q[1]}; TFLM's int8 "
                              f"{self.op_name} outputs {fixed[0]}, {fixed[1]}")
        try:
            table = tables.table(function, attrs, x_q, y_q, "fixed")
        except ValueError as exc:
            raise self.refuse(str(exc)) from None
        self._table_layer(x, y, table, {"function": function, "attributes": attrs})

    def prelu(self, op, ins, outs) -> None:
        """TFLM's int8 PRELU with the file's int8 alpha: one table row per channel."""
        x, alpha, y = ins[0], ins[1], outs[0]
        a_q = self.const(alpha, "alpha")
        channels = x.shape[-1]
        if alpha.dtype != _INT8 or alpha.scales.size != 1:
            raise self.refuse("alpha must be int8, quantized per tensor")
        if a_q.size not in (1, channels) or (a_q.size > 1 and a_q.shape[-1] != channels):
            raise self.refuse(f"alpha of shape {list(a_q.shape)}; tinyconv takes one alpha or "
                              "one per channel (shared over H and W)")
        a_scale, a_zp = float(alpha.scales[0]), int(alpha.zero_points[0])
        table = tables.tflm_prelu(self.act_quant(x), self.act_quant(y), a_q.reshape(-1),
                                  a_scale, a_zp)
        slope = ((a_q.reshape(-1).astype(np.float32) - a_zp) * np.float32(a_scale)).tolist()
        self._table_layer(x, y, table, {"function": "PRelu", "attributes": {},
                                        "slope": slope})

    def concatenation(self, op, ins, outs) -> None:
        """Along channels, inputs at the output's quantization: TFLM copies bytes."""
        y = outs[0]
        opts = self._options(op, self.r.tflite.ConcatenationOptions)
        if len(y.shape) != 4 or opts.Axis() % 4 != 3:
            raise self.refuse(f"concatenation along axis {opts.Axis()} of a {len(y.shape)}-D "
                              "tensor; tinyconv concatenates NHWC tensors along channels")
        if self.activation(opts, y) != {"act_min": -128, "act_max": 127}:
            raise self.refuse("a fused activation on CONCATENATION is not supported")
        y_q = self.act_quant(y)
        names = []
        for x in ins:
            if x.data is not None:
                raise self.refuse("concatenating a constant is not supported")
            if self.act_quant(x) != y_q:
                raise self.refuse(f"input tensor {x.index} is quantized unlike the output")
            names.append(self.spec(x))
        arrays = kernels.concat_constants([y_q] * len(names), y_q[0], y_q[1], "fixed")
        self.add_layer("concat", names, y, {}, arrays)

    def pad(self, op, ins, outs) -> None:
        """PAD fills with the zero point, PADV2 with its int8 constant; H and W only."""
        x, y = ins[0], outs[0]
        paddings = self.const(ins[1], "the paddings").reshape(-1, 2)
        if len(x.shape) != 4 or paddings.shape != (4, 2) or paddings[[0, 3]].any():
            raise self.refuse(f"paddings {paddings.tolist()}; tinyconv pads H and W of an NHWC "
                              "tensor")
        x_q = self.act_quant(x)
        if self.act_quant(y) != x_q:
            raise self.refuse("output quantization differs from the input's")
        value = x_q[1]
        if len(ins) > 2 and ins[2] is not None:
            given = self.const(ins[2], "the constant value")
            if ins[2].dtype != _INT8 or given.size != 1:
                raise self.refuse("the constant value must be one int8")
            value = int(given.reshape(-1)[0])
        pads = [int(paddings[1, 0]), int(paddings[2, 0]), int(paddings[1, 1]),
                int(paddings[2, 1])]
        self.add_layer("pad", [self.spec(x)], y, {"pads": pads},
                       {"value": np.array([value], np.int8)})

    def resize_nearest(self, op, ins, outs) -> None:
        """The output's source rows and columns as TFLM's GetNearestNeighbor computes them
        (float32 scale, floor, or round with align_corners; half-pixel offset 0.5)."""
        x, y = ins[0], outs[0]
        opts = self._options(op, self.r.tflite.ResizeNearestNeighborOptions)
        align, half = bool(opts.AlignCorners()), bool(opts.HalfPixelCenters())
        if self.act_quant(y) != self.act_quant(x):
            raise self.refuse("output quantization differs from the input's")
        h, wd, _ = self.sample_shape(x)
        oh, ow, _ = self.sample_shape(y)

        arrays = {"rows": nearest_sources(h, oh, align, half).astype(np.int32),
                  "cols": nearest_sources(wd, ow, align, half).astype(np.int32)}
        self.add_layer("resize_nearest", [self.spec(x)], y, {}, arrays)

    def _binary(self, op, ins, outs, options_class) -> tuple[list[str], tuple, dict]:
        a, b, y = ins[0], ins[1], outs[0]
        if a.data is not None or b.data is not None:
            raise self.refuse("a constant operand is not supported (only two activations)")
        opts = self._options(op, options_class)
        names = [self.spec(a), self.spec(b)]
        y_q = self.act_quant(y)
        return names, y_q, self.activation(opts, y)

    def mul(self, op, ins, outs) -> None:
        """TFLM's int8 MUL (``QuantizeMultiplier(double(sa) * double(sb) / double(sy))``);
        an operand of shape (1, 1, C) or (1, 1, 1) is broadcast (put second: MUL commutes)."""
        if ins[0].data is not None or ins[1].data is not None:
            return self._constant_table(op, ins, outs, "QLinearMul", self.r.tflite.MulOptions)
        names, y_q, act = self._binary(op, ins, outs, self.r.tflite.MulOptions)
        if self.specs[names[0]].size < self.specs[names[1]].size:
            names.reverse()
        a, b = (self.specs[n] for n in names)
        if len(a.shape) != 3 or b.shape not in (a.shape, (1, 1, a.shape[2]), (1, 1, 1)):
            raise self.refuse(f"MUL of {list(a.shape)} and {list(b.shape)}; tinyconv takes "
                              "(H, W, C) times the same, (1, 1, C) or (1, 1, 1)")
        arrays = kernels.mul_constants(a.scale, a.zero_point, b.scale, b.zero_point, *y_q,
                                       "fixed")
        self.add_layer("mul", names, outs[0], act, arrays)

    def _constant_table(self, op, ins, outs, function: str, options_class) -> None:
        """An activation times or plus an int8 constant, one value or one per channel (the
        converter's MobileNetV3 hard sigmoid ``x * 1/6``, a Keras Rescaling at the input): per
        channel an int8 -> int8 function, tabulated by TFLM's own MUL / ADD arithmetic
        (export/tables.py), then clamped to the fused activation's range as TFLM clamps."""
        k = 0 if ins[0].data is not None else 1
        c, x, y = ins[k], ins[1 - k], outs[0]
        if x.data is not None:
            raise self.refuse("both operands are constants")
        codes = self.const(c, "the constant operand")
        channels = x.shape[-1] if len(x.shape) else 1
        if c.dtype != _INT8 or c.scales.size != 1:
            raise self.refuse("the constant operand must be int8, quantized per tensor")
        if codes.size not in (1, channels) or (codes.size > 1 and codes.shape[-1] != channels):
            raise self.refuse(f"a constant of shape {list(codes.shape)}; tinyconv takes one "
                              "value or one per channel")
        flat = codes.reshape(-1)
        flat = flat if np.any(flat != flat[0]) else flat[:1]
        attrs = {"constant": [int(v) for v in flat], "scale": float(c.scales[0]),
                 "zero_point": int(c.zero_points[0])}
        act = self.activation(self._options(op, options_class), y)
        table = tables.table(function, attrs, self.act_quant(x), self.act_quant(y), "fixed")
        table = np.clip(table, act["act_min"], act["act_max"]).astype(np.int8)
        self._table_layer(x, y, table, {"function": function, "attributes": attrs})

    def sub(self, op, ins, outs) -> None:
        """TFLM's int8 SUB: ADD's constants (left shift 20), ``a - b``; same shapes."""
        names, y_q, act = self._binary(op, ins, outs, self.r.tflite.SubOptions)
        a, b = (self.specs[n] for n in names)
        if a.shape != b.shape:
            raise self.refuse(f"broadcasting SUB {list(a.shape)} - {list(b.shape)} is not "
                              "supported")
        arrays = kernels.sub_constants(a.scale, a.zero_point, b.scale, b.zero_point, *y_q,
                                       "fixed")
        self.add_layer("sub", names, outs[0], act, arrays)

    def _options(self, op, options_class):
        table = op.BuiltinOptions()
        if table is None:
            raise self.refuse("builtin options are missing")
        options = options_class()
        options.Init(table.Bytes, table.Pos)
        return options

    # -- the graph -------------------------------------------------------------------------------

    def run(self) -> Imported:
        g, tensors = self.r.graph, self.r.tensors
        if g.InputsLength() != 1 or g.OutputsLength() != 1:
            raise TinyconvError(f"{self.r.source}: {g.InputsLength()} inputs and "
                                f"{g.OutputsLength()} outputs; tinyconv takes one of each")
        graph_in, graph_out = int(g.Inputs(0)), int(g.Outputs(0))
        float_input = tensors[graph_in].dtype == _FLOAT32
        float_output = tensors[graph_out].dtype == _FLOAT32
        model_in, model_out = graph_in, graph_out
        for index, (op, builtin, ins, outs) in enumerate(self.r.ops):
            self.op_index, self.op_name = index, builtin
            if builtin == "QUANTIZE" and ins[0].index == graph_in and float_input:
                model_in = outs[0].index
                continue
            if builtin == "DEQUANTIZE" and outs[0].index == graph_out and float_output:
                model_out = ins[0].index
                continue
            if builtin in ("QUANTIZE", "DEQUANTIZE"):
                raise self.refuse("QUANTIZE / DEQUANTIZE are supported only at the model's "
                                  "float input and output")
            if builtin not in _HANDLERS:
                raise self.refuse("not supported: tinyconv has no layer for this operator")
            handler = getattr(self, _HANDLERS[builtin])
            if len(outs) != 1:
                raise self.refuse(f"{len(outs)} outputs; tinyconv takes one")
            try:
                handler(op, ins, outs)
            except _MALFORMED as exc:
                raise self.refuse(f"malformed operator ({exc})") from None
        if not self.layers:
            raise TinyconvError(f"{self.r.source}: no layer to run")
        input_name = self.alias.get(model_in) or self.spec(tensors[model_in])
        output_name = self.alias.get(model_out)
        if output_name is None:
            raise TinyconvError(f"{self.r.source}: nothing computes the output tensor")
        used = {input_name} | {l.output for l in self.layers}
        specs = {k: v for k, v in self.specs.items() if k in used}
        metadata = {"source_format": "tflite", "float_input": float_input,
                    "float_output": float_output, "input_layout": "NHWC",
                    "prequantized": True, "calibration_method": None}
        model = QuantModel(self.name, "fixed", specs, self.layers, input_name, output_name,
                           metadata=metadata)
        views = {t: n for t, n in self.alias.items() if n in used}
        return Imported(model, self.weight_scales, float_input, float_output, views)


def read(source: str | os.PathLike | bytes, name: str | None = None) -> Imported:
    """The QuantModel of a .tflite file (path or bytes); arena not yet planned."""
    if isinstance(source, (bytes, bytearray)):
        data, label = bytes(source), "model.tflite"
    else:
        label = str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise TinyconvError(f"cannot read {source}: {exc.strerror}") from None
    if name is None:
        name = Path(label).stem
    try:
        imported = _Importer(_Reader(data, label), name).run()
    except _MALFORMED as exc:  # the flatbuffer is read lazily: corruption shows up anywhere
        raise TinyconvError(f"{label}: malformed TFLite model ({exc})") from None
    imported.model.metadata["source"] = label
    imported.data = data
    return imported


def to_qonnx_or_reason(imported: Imported):
    """(model.q.onnx, None), or (None, why not) when a layer has no onnxruntime equivalent.

    Its edges are float: QuantizeLinear of an NHWC input, DequantizeLinear of the output
    (NCHW for a feature map, as every model.q.onnx). Its requantization is onnxruntime's
    float arithmetic, so it approximates the fixed-mode integers (as for an ONNX export
    with ``--requant fixed``)."""
    import onnx
    from onnx import TensorProto, helper

    from export.graph import Boundary
    from export.qonnx import _Writer, to_qonnx

    model = imported.model
    missing = sorted({l.op for l in model.layers if not hasattr(_Writer, "w_" + l.op)})
    if missing:
        return None, f"onnxruntime has no equivalent for {', '.join(missing)}"
    x_shape = list(model.input_spec.shape)
    y_shape = list(model.output_spec.shape)
    if len(y_shape) == 3:
        y_shape = [y_shape[2], y_shape[0], y_shape[1]]
    boundary = Boundary(
        helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *x_shape]),
        helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", *y_shape]),
        "NHWC" if len(x_shape) == 3 else "NCHW")
    q = to_qonnx(model, imported.weight_scales, boundary)
    onnx.checker.check_model(q)
    return q, None
