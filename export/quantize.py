"""Float layers + activation ranges -> ``runtime.model.QuantModel``.

Choices (docs/EXPORT.md explains them):
- weights symmetric int8 in [-127, 127], zero point 0, per output channel (default) or per
  tensor; an all-zero channel gets scale 1/127 so its bias keeps full precision;
- activations asymmetric int8, scale and zero point from onnxruntime's ``compute_scale_zp``
  (so they equal what ``quantize_static`` picks for the same range); a tensor whose calibrated
  range is exactly [0, 0] falls back to [-1, 1] and is listed in the model's warnings;
- bias int32 with scale ``float32(x_scale) * float32(w_scale[c])``;
- a fused Relu/Clip becomes ``act_min``/``act_max``; max pool, and in fixed mode average pool,
  keep their input's quantization;
- a layer whose worst-case accumulator could exceed int32 is refused, never wrapped silently.
Requantization and pool/add constants come from runtime/ (``Requant.from_scales`` and the
kernels' constant functions): nothing here re-derives them.
"""
from __future__ import annotations

import math

import numpy as np

from export import tables
from export.graph import FloatGraph, FloatLayer
from runtime import kernels
from runtime.errors import TinyconvError
from runtime.kernels.softmax import OUTPUT_SCALE, OUTPUT_ZERO_POINT
from runtime.model import Layer, QuantModel, TensorSpec
from runtime.requant import INT32_MAX, MODES, Requant

_EMPTY_RANGE_FALLBACK = (-1.0, 1.0)


def activation_qparams(lo: float, hi: float) -> tuple[float, int]:
    """(scale, zero point) of an asymmetric int8 tensor covering [lo, hi] (and 0)."""
    from onnxruntime.quantization.quant_utils import compute_scale_zp

    zp, scale = compute_scale_zp(np.float32(lo), np.float32(hi), np.int8(-128), np.int8(127))
    return float(np.float32(scale)), int(zp)


def clamp_range(clamp: tuple[float, float], scale: float, zero_point: int) -> tuple[int, int]:
    """A fused activation's real-valued clamp, in the output's int8 codes."""
    lo, hi = clamp
    q_lo = -128 if lo == -math.inf else zero_point + int(np.round(lo / scale))
    q_hi = 127 if hi == math.inf else zero_point + int(np.round(hi / scale))
    return max(-128, min(127, q_lo)), max(-128, min(127, q_hi))


def quantize_weights(weights: np.ndarray, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights (axis 0 is the output channel) and their float32 scales."""
    flat = np.abs(weights.reshape(weights.shape[0], -1).astype(np.float64))
    peak = flat.max(axis=1) if per_channel else np.array([flat.max()])
    scales = np.where(peak > 0, peak / 127.0, 1.0 / 127.0).astype(np.float32)
    per_row = scales if per_channel else np.repeat(scales, weights.shape[0])
    q = np.round(weights / per_row.reshape(-1, *([1] * (weights.ndim - 1))).astype(np.float64))
    return np.clip(q, -127, 127).astype(np.int8), scales


class _Quantizer:
    def __init__(self, graph: FloatGraph, ranges: dict, mode: str, per_channel: bool):
        if mode not in MODES:
            raise TinyconvError(f"unknown requantization mode {mode!r}; choose one of "
                                f"{', '.join(MODES)}")
        self.graph, self.ranges, self.mode, self.per_channel = graph, ranges, mode, per_channel
        self.tensors: dict[str, TensorSpec] = {}
        self.weight_scales: dict[str, np.ndarray] = {}  # layer name -> float32 w_scale
        self.warnings: list[str] = []

    def spec(self, name: str) -> TensorSpec:
        if name in self.tensors:
            return self.tensors[name]
        shape = tuple(int(d) for d in self.graph.shapes[name])
        if name in self.graph.quantization:
            scale, zp = self.graph.quantization[name]
        else:
            if name not in self.ranges:
                raise TinyconvError(f"tensor {name!r} has no quantization: the model does not "
                                    "give one and calibration (if any) did not reach it")
            lo, hi = self.ranges[name]
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise TinyconvError(f"tensor {name!r} reached NaN/infinity during calibration")
            if lo == 0.0 and hi == 0.0:
                self.warnings.append(f"tensor {name!r} was all zeros on the calibration data; "
                                     f"using the range {list(_EMPTY_RANGE_FALLBACK)}")
                lo, hi = _EMPTY_RANGE_FALLBACK
            scale, zp = activation_qparams(lo, hi)
        spec = TensorSpec(name, shape, float(np.float32(scale)), int(zp))
        self.tensors[name] = spec
        return spec

    def run(self, name: str, metadata: dict) -> QuantModel:
        self.spec(self.graph.input)
        layers, names = [], set()
        for layer in self.graph.layers:
            q = getattr(self, "q_" + layer.op)(layer)
            if q.name in names:
                raise TinyconvError(f"two layers are both named {q.name!r}")
            names.add(q.name)
            layers.append(q)
        metadata = dict(metadata, warnings=self.warnings) if self.warnings else metadata
        model = QuantModel(name, self.mode, self.tensors, layers, self.graph.input,
                           self.graph.output, metadata=metadata)
        model.validate()
        return model

    def output_spec(self, layer: FloatLayer, like: TensorSpec | None = None) -> TensorSpec:
        if like is not None:  # a pool: the output shares its input's quantization
            self.tensors[layer.output] = TensorSpec(
                layer.output, tuple(self.graph.shapes[layer.output]), like.scale, like.zero_point)
        return self.spec(layer.output)

    def act_params(self, layer: FloatLayer, y: TensorSpec) -> dict:
        act_min, act_max = clamp_range(layer.clamp, y.scale, y.zero_point)
        if act_min > act_max:
            raise TinyconvError(f"layer {layer.name!r}: its activation clamp {layer.clamp} is "
                                "empty in the output's int8 range")
        return {"act_min": act_min, "act_max": act_max}

    def requant_arrays(self, layer, x: TensorSpec, w_scales, y: TensorSpec) -> dict:
        try:
            rq = Requant.from_scales(x.scale, w_scales, y.scale, self.mode)
        except ValueError as exc:
            raise TinyconvError(f"layer {layer.name!r}: cannot requantize ({exc})") from None
        if self.mode == "fixed":
            return {"multiplier": rq.multiplier, "shift": rq.shift}
        return {"scale": rq.scale}

    def weighted(self, layer: FloatLayer, x: TensorSpec, y: TensorSpec) -> dict:
        """int8 weights, int32 bias and requantization constants of a conv / fc layer."""
        if layer.weights_q is not None:
            w_q, w_scales, bias_q = layer.weights_q, layer.weight_scales, layer.bias_q
        else:
            if not (np.all(np.isfinite(layer.weights)) and np.all(np.isfinite(layer.bias))):
                raise TinyconvError(f"layer {layer.name!r}: weights or bias hold NaN/infinity")
            w_q, w_scales = quantize_weights(layer.weights, self.per_channel)
            bias_scale = np.float32(x.scale) * w_scales.astype(np.float32)
            bias_real = np.round(layer.bias.astype(np.float64) / bias_scale.astype(np.float64))
            if np.any(np.abs(bias_real) > INT32_MAX):
                raise TinyconvError(f"layer {layer.name!r}: bias too large for int32 at scale "
                                    "x_scale * w_scale (input range or weights near zero?)")
            bias_q = bias_real.astype(np.int32)
        worst = kernels.worst_case_accumulator(w_q, bias_q)
        if worst.max() > INT32_MAX:
            raise TinyconvError(f"layer {layer.name!r}: worst-case accumulator {int(worst.max())} "
                                "could overflow int32; split the layer or reduce its fan-in")
        arrays = {"weights": np.ascontiguousarray(w_q, dtype=np.int8),
                  "bias": np.asarray(bias_q, dtype=np.int32)}
        arrays.update(self.requant_arrays(layer, x, w_scales, y))
        self.weight_scales[layer.name] = np.asarray(w_scales, dtype=np.float32)
        return arrays

    # -- one method per op ----------------------------------------------------------------------

    def q_conv2d(self, layer: FloatLayer) -> Layer:
        x, y = self.spec(layer.inputs[0]), self.output_spec(layer)
        params = dict(layer.params, **self.act_params(layer, y))
        return Layer("conv2d", layer.name, layer.inputs, layer.output, params,
                     self.weighted(layer, x, y))

    def q_fully_connected(self, layer: FloatLayer) -> Layer:
        x, y = self.spec(layer.inputs[0]), self.output_spec(layer)
        return Layer("fully_connected", layer.name, layer.inputs, layer.output,
                     self.act_params(layer, y), self.weighted(layer, x, y))

    def q_max_pool2d(self, layer: FloatLayer) -> Layer:
        x = self.spec(layer.inputs[0])
        y = self.output_spec(layer, like=x)
        params = dict(layer.params, **self.act_params(layer, y))
        return Layer("max_pool2d", layer.name, layer.inputs, layer.output, params)

    def q_avg_pool2d(self, layer: FloatLayer) -> Layer:
        """fixed: the output keeps its input's quantization, as the TFLite converter keeps it
        (TFLite Micro's int8 AVERAGE_POOL_2D cannot rescale): a rounding division, no
        requantization. float: the output's own calibrated range, as onnxruntime's."""
        x = self.spec(layer.inputs[0])
        y = self.output_spec(layer, like=x if self.mode == "fixed" else None)
        params = dict(layer.params, **self.act_params(layer, y))
        arrays = kernels.avg_pool_constants(x.scale, x.zero_point, y.scale, y.zero_point,
                                            layer.params["kernel"], self.mode)
        return Layer("avg_pool2d", layer.name, layer.inputs, layer.output, params, arrays)

    def q_global_avg_pool(self, layer: FloatLayer) -> Layer:
        x, y = self.spec(layer.inputs[0]), self.output_spec(layer)
        arrays = kernels.global_avg_pool_constants(x.scale, x.zero_point, y.scale, y.zero_point,
                                                   x.shape[:2], self.mode)
        return Layer("global_avg_pool", layer.name, layer.inputs, layer.output,
                     self.act_params(layer, y), arrays)

    def q_add(self, layer: FloatLayer) -> Layer:
        a, b = (self.spec(n) for n in layer.inputs)
        y = self.output_spec(layer)
        arrays = kernels.add_constants(a.scale, a.zero_point, b.scale, b.zero_point, y.scale,
                                       y.zero_point, self.mode)
        return Layer("add", layer.name, layer.inputs, layer.output,
                     self.act_params(layer, y), arrays)

    def q_lookup(self, layer: FloatLayer) -> Layer:
        """A table of the activation (export/tables.py), with any fused clamp applied to it.
        In fixed mode Sigmoid / Tanh take TFLite's fixed output quantization, which TFLM's
        algorithms assume."""
        function, attrs = layer.params["function"], layer.params["attributes"]
        x = self.spec(layer.inputs[0])
        if self.mode == "fixed" and function in tables.FIXED_OUTPUT:
            scale, zp = tables.FIXED_OUTPUT[function]
            self.tensors[layer.output] = TensorSpec(
                layer.output, tuple(self.graph.shapes[layer.output]), scale, zp)
        y = self.output_spec(layer)
        slope = np.array(layer.params["slope"], np.float32) if "slope" in layer.params else None
        try:
            table = tables.table(function, attrs, (x.scale, x.zero_point),
                                 (y.scale, y.zero_point), self.mode, slope)
        except ValueError as exc:
            raise TinyconvError(f"layer {layer.name!r} ({function}): {exc}") from None
        params = dict(layer.params, **self.act_params(layer, y))
        table = np.clip(table, params["act_min"], params["act_max"]).astype(np.int8)
        return Layer("lookup", layer.name, layer.inputs, layer.output, params,
                     {"table": table})
    def q_softmax(self, layer: FloatLayer) -> Layer:
        """Output at TFLite's fixed quantization (1/256, -128): probabilities in [0, 1)."""
        x = self.spec(layer.inputs[0])
        given = self.graph.quantization.get(layer.output)
        if given is not None and (np.float32(given[0]), given[1]) != (
                np.float32(OUTPUT_SCALE), OUTPUT_ZERO_POINT):
            # onnxruntime's QDQ quantizer calibrates it to 1/255: one output step at most apart
            self.warnings.append(f"layer {layer.name!r} (Softmax): the source quantizes its "
                                 f"output at scale {given[0]}, zero point {given[1]}; tinyconv's "
                                 "softmax outputs scale 1/256, zero point -128")
        self.tensors[layer.output] = TensorSpec(
            layer.output, tuple(self.graph.shapes[layer.output]),
            float(np.float32(OUTPUT_SCALE)), OUTPUT_ZERO_POINT)
        y = self.spec(layer.output)
        if self.act_params(layer, y) != {"act_min": -128, "act_max": 127}:
            raise TinyconvError(f"layer {layer.name!r}: a clamp after Softmax is not supported")
        try:
            arrays = kernels.softmax_constants(x.scale, x.shape[-1], self.mode)
        except ValueError as exc:
            raise TinyconvError(f"layer {layer.name!r} (Softmax): {exc}") from None
        return Layer("softmax", layer.name, layer.inputs, layer.output, {}, arrays)


    # tensor ops (runtime/kernels/tensor_ops.py): data movement keeps its input's quantization

    def q_concat(self, layer: FloatLayer) -> Layer:
        xs = [self.spec(n) for n in layer.inputs]
        y = self.output_spec(layer)
        arrays = kernels.concat_constants([(x.scale, x.zero_point) for x in xs], y.scale,
                                          y.zero_point, self.mode)
        return Layer("concat", layer.name, layer.inputs, layer.output, {}, arrays)

    def q_pad(self, layer: FloatLayer) -> Layer:
        x = self.spec(layer.inputs[0])
        self.output_spec(layer, like=x)
        value = kernels.quantize(np.float32(layer.params["value"]), x.scale, x.zero_point)
        params = {"pads": list(layer.params["pads"])}
        if layer.params.get("mode", "constant") != "constant":
            params["mode"] = layer.params["mode"]
        return Layer("pad", layer.name, layer.inputs, layer.output, params,
                     {"value": value.reshape(1)})

    def q_resize_nearest(self, layer: FloatLayer) -> Layer:
        self.output_spec(layer, like=self.spec(layer.inputs[0]))
        arrays = {k: np.asarray(layer.params[k], np.int32) for k in ("rows", "cols")}
        return Layer("resize_nearest", layer.name, layer.inputs, layer.output, {}, arrays)

    def _binary(self, layer: FloatLayer, constants) -> Layer:
        a, b = (self.spec(n) for n in layer.inputs)
        y = self.output_spec(layer)
        arrays = constants(a.scale, a.zero_point, b.scale, b.zero_point, y.scale, y.zero_point,
                           self.mode)
        return Layer(layer.op, layer.name, layer.inputs, layer.output,
                     self.act_params(layer, y), arrays)

    def q_mul(self, layer: FloatLayer) -> Layer:
        return self._binary(layer, kernels.mul_constants)

    def q_sub(self, layer: FloatLayer) -> Layer:
        return self._binary(layer, kernels.sub_constants)


def quantize(graph: FloatGraph, ranges: dict[str, tuple[float, float]], *, mode: str = "fixed",
             per_channel: bool = True, name: str = "model", metadata: dict | None = None
             ) -> tuple[QuantModel, dict[str, np.ndarray]]:
    """The QuantModel of ``graph`` (arena not yet planned: see export.plan), and the float32
    weight scales of its conv / fc layers, which model.q.onnx needs and the device does not."""
    quantizer = _Quantizer(graph, ranges, mode, per_channel)
    model = quantizer.run(name, metadata or {})
    return model, quantizer.weight_scales
