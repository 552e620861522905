"""256-entry tables for int8 -> int8 elementwise ops, computed once on the host at export.

An elementwise op on int8 has only 256 possible inputs, so the device needs no arithmetic at
all: ``y = table[x + 128]`` (one row per channel for PRelu with a per-channel slope). The
tables are built here, in terms of quantization parameters only, so any front end (ONNX now, a
TFLite reader later) can call ``table(op, attrs, x_q, y_q, mode, slope)``:

- ``float`` mode: onnxruntime itself evaluates DequantizeLinear -> op -> QuantizeLinear over
  the 256 codes, the very subgraph model.q.onnx holds, so the table equals onnxruntime by
  construction.
- ``fixed`` mode: TensorFlow Lite Micro's int8 integer algorithms for the ops it has
  (LOGISTIC, TANH, HARD_SWISH, LEAKY_RELU, PRELU), evaluated code by code; every other op uses
  the float table (a table needs no FPU on the device either way).

ONNX op names are the vocabulary (``Sigmoid``, ``LeakyRelu``, ...); ``attrs`` are the ONNX
attributes. docs/ARITHMETIC.md describes each algorithm.
"""
from __future__ import annotations

import math

import numpy as np

from runtime.reference import (_c_div, _wrap_int32 as _wrap, rounding_divide_by_pot,
                               requant_scalar, saturating_rounding_doubling_high_mul as _srdhm)
from runtime.requant import quantize_multiplier

CODES = np.arange(-128, 128, dtype=np.int8)
# The ONNX ops a table computes, with the opset that has their current definition.
LOOKUP_OPS = {"Sigmoid": 13, "Tanh": 13, "HardSigmoid": 13, "HardSwish": 14, "LeakyRelu": 13,
              "PRelu": 13, "Elu": 13, "Selu": 13, "Softplus": 13, "Softsign": 13, "Gelu": 20,
              "Exp": 13, "Neg": 13, "Abs": 13, "Swish": 13}
# Functions that are a pattern of ONNX nodes rather than one op: Swish (SiLU) is x * Sigmoid(x).
_PATTERNS = {"Swish": "Sigmoid"}
ONNX_OPS = tuple(op for op in LOOKUP_OPS if op not in _PATTERNS)
# An already-quantized source's Add / Mul of an activation and an int8 constant (one per
# channel): ``attrs`` holds ``constant`` (codes), ``scale`` and ``zero_point``.
CONSTANT_OPS = ("QLinearAdd", "QLinearMul")
TFLM_OPS = ("Sigmoid", "Tanh", "HardSwish", "LeakyRelu", "PRelu")
# TFLite's fixed output quantization of LOGISTIC and TANH, which its algorithms assume.
FIXED_OUTPUT = {"Sigmoid": (1.0 / 256.0, -128), "Tanh": (1.0 / 128.0, 0)}
_I32_MIN, _I32_MAX = -(1 << 31), (1 << 31) - 1


def table(op: str, attrs: dict, x_q: tuple[float, int], y_q: tuple[float, int], mode: str,
          slope: np.ndarray | None = None) -> np.ndarray:
    """int8[256] (or int8[C, 256] for a per-channel ``slope`` or constant) indexed by
    ``x + 128``.

    ``x_q``/``y_q`` are (scale, zero point); ``slope`` is PRelu's float slope (C values)."""
    if op in CONSTANT_OPS:
        return constant_table(op, attrs, x_q, y_q, mode)
    if mode == "fixed" and op in TFLM_OPS:
        if op == "PRelu":
            return tflm_prelu(x_q, y_q, *quantize_slope(slope))
        return _TFLM[op](attrs, x_q, y_q)
    return float_table(op, attrs, x_q, y_q, slope)


def constant_table(op: str, attrs: dict, x_q, y_q, mode: str) -> np.ndarray:
    """QLinearAdd / QLinearMul of every code and each channel's int8 constant, computed by
    runtime/'s own add and mul kernels: onnxruntime's arithmetic in float mode (so the table
    equals the source's node), TFLite's ADD / MUL in fixed mode."""
    from runtime import kernels

    b = np.asarray(attrs["constant"], np.int8).reshape(-1, 1)
    a = np.broadcast_to(CODES, (b.shape[0], 256)).copy()
    b = np.broadcast_to(b, a.shape).copy()
    quant = (*x_q, attrs["scale"], attrs["zero_point"], *y_q)
    if op == "QLinearAdd":
        y = kernels.add(a, b, kernels.add_constants(*quant, mode))
    else:
        y = kernels.mul(a[None, None], b[None, None], kernels.mul_constants(*quant, mode))[0, 0]
    return y[0].copy() if y.shape[0] == 1 else y


def quantize_slope(slope: np.ndarray) -> tuple[np.ndarray, float, int]:
    """PRelu's alpha as TFLite stores it: int8, one symmetric scale for every channel."""
    slope = np.asarray(slope, np.float32).reshape(-1)
    peak = float(np.abs(slope).max())
    scale = float(np.float32(peak / 127.0)) if peak > 0 else 1.0
    q = np.clip(np.round(slope.astype(np.float64) / scale), -127, 127).astype(np.int8)
    return q, scale, 0


# -- float mode: onnxruntime evaluates the op ------------------------------------------------


def float_table(op: str, attrs: dict, x_q, y_q, slope=None) -> np.ndarray:
    """onnxruntime's DequantizeLinear -> ``op`` -> QuantizeLinear on every code (and channel)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    channels = 1 if slope is None else int(np.asarray(slope).size)
    x = np.broadcast_to(CODES, (1, channels, 1, 256)).copy()
    inits = [numpy_helper.from_array(np.float32(x_q[0]), "xs"),
             numpy_helper.from_array(np.int8(x_q[1]), "xz"),
             numpy_helper.from_array(np.float32(y_q[0]), "ys"),
             numpy_helper.from_array(np.int8(y_q[1]), "yz")]
    op_inputs = ["xf"]
    if slope is not None:
        inits.append(numpy_helper.from_array(
            np.asarray(slope, np.float32).reshape(channels, 1, 1), "slope"))
        op_inputs.append("slope")
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"]),
             *function_nodes(op, attrs, op_inputs, "yf", "f"),
             helper.make_node("QuantizeLinear", ["yf", "ys", "yz"], ["y"])]
    shape = [1, channels, 1, 256]
    graph = helper.make_graph(nodes, "lut", [helper.make_tensor_value_info(
        "x", TensorProto.INT8, shape)], [helper.make_tensor_value_info(
            "y", TensorProto.INT8, shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", LOOKUP_OPS[op])])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(model.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        y = session.run(["y"], {"x": x})[0].reshape(channels, 256)
    except Exception as exc:  # onnxruntime's own errors: bad attributes, unknown op version
        raise ValueError(f"onnxruntime cannot evaluate it ({str(exc).splitlines()[0]})") \
            from None
    return y[0].copy() if channels == 1 else y.copy()


def function_nodes(function: str, attrs: dict, inputs: list[str], output: str, name: str):
    """The float ONNX node(s) computing ``function`` (model.q.onnx writes the same)."""
    from onnx import helper

    if function in _PATTERNS:
        gate = name + "_gate"
        return [helper.make_node(_PATTERNS[function], inputs[:1], [gate], name=gate, **attrs),
                helper.make_node("Mul", [inputs[0], gate], [output], name=name)]
    return [helper.make_node(function, inputs, [output], name=name, **attrs)]


# -- gemmlowp fixed point on int32, as TFLM's integer kernels use it ---------------------------


def _mul_pot(x: int, exponent: int) -> int:
    """SaturatingRoundingMultiplyByPOT."""
    if exponent >= 0:
        return max(_I32_MIN, min(_I32_MAX, x << exponent))
    return rounding_divide_by_pot(x, -exponent)


def _half_sum(a: int, b: int) -> int:
    """RoundingHalfSum: (a + b) / 2 rounded away from zero, in 64 bits."""
    total = a + b
    return _c_div(total + (1 if total >= 0 else -1), 2)


def _exp_quarter(a: int) -> int:
    """exp(a) for a Q0.31 ``a`` in [-1/4, 0): a Taylor series around -1/8."""
    constant, third = 1895147668, 715827883
    x = _wrap(a + (1 << 28))
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    poly = _mul_pot(_wrap(_srdhm(_wrap(_mul_pot(x4, -2) + x3), third) + x2), -1)
    return _wrap(constant + _srdhm(constant, _wrap(x + poly)))


_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
           (2, 39332535), (3, 720401), (4, 242))


def _exp_negative(a: int, integer_bits: int) -> int:
    """exp(a) in Q0.31 for a <= 0 with ``integer_bits`` integer bits."""
    fractional = 31 - integer_bits
    quarter = 1 << (fractional - 2)
    shifted = _wrap((a & (quarter - 1)) - quarter)
    result = _exp_quarter(_mul_pot(shifted, integer_bits))
    remainder = _wrap(shifted - a)
    for exponent, multiplier in _BARREL:
        if integer_bits > exponent and remainder & (1 << (fractional + exponent)):
            result = _srdhm(result, multiplier)
    return _I32_MAX if a == 0 else result


def _newton_reciprocal(a: int) -> int:
    """Q2.29 approximation of 1 / ((1 + a) / 2) for a Q0.31 ``a`` in (0, 1)."""
    half = _half_sum(a, _I32_MAX)
    x = _wrap(1515870810 + _srdhm(half, -1010580540))
    for _ in range(3):
        one_minus = _wrap((1 << 29) - _srdhm(half, x))
        x = _wrap(x + _mul_pot(_srdhm(x, one_minus), 2))
    return x


def _logistic(a: int, integer_bits: int) -> int:
    """gemmlowp's logistic: Q0.31 of 1 / (1 + exp(-a)), via the positive half."""
    if a == 0:
        return 1 << 30
    positive = _mul_pot(_newton_reciprocal(_exp_negative(-abs(a), integer_bits)), 1)
    return positive if a > 0 else _wrap(_I32_MAX - positive)


def _tanh(a: int, integer_bits: int) -> int:
    """gemmlowp's tanh: Q0.31 of (1 - exp(-2|a|)) / (1 + exp(-2|a|)), signed."""
    if a == 0:
        return 0
    t = _mul_pot(_wrap(_newton_reciprocal(_exp_negative(-abs(a), integer_bits + 1))
                       - (1 << 29)), 2)
    return t if a > 0 else _wrap(-t)


# -- fixed mode: TFLM's int8 kernels ---------------------------------------------------------


def _input_stage(x_scale: float) -> tuple[int, int, int]:
    """LOGISTIC/TANH: multiplier and left shift to Q4.27, and the saturation radius."""
    real = float(np.float32(x_scale)) * float(1 << 27)
    fraction, shift = math.frexp(real)
    multiplier = int(math.floor(fraction * (1 << 31) + 0.5))
    radius = math.floor(15.0 * (1 << 27) / (1 << shift) if shift >= 0 else
                        15.0 * (1 << 27) * (1 << -shift))
    return multiplier, shift, radius


def _sigmoid_or_tanh(x_q, fn, out_shift: int, out_zp: int) -> np.ndarray:
    multiplier, shift, radius = _input_stage(x_q[0])
    out = []
    for code in range(-128, 128):
        value = code - int(x_q[1])
        if value <= -radius:
            out.append(-128)
        elif value >= radius:
            out.append(127)
        else:
            y = rounding_divide_by_pot(fn(requant_scalar(value, multiplier, shift), 4), out_shift)
            out.append(max(-128, min(127, y + out_zp)))
    return np.array(out, np.int8)


def tflm_logistic(attrs, x_q, y_q) -> np.ndarray:
    """TFLM LOGISTIC int8 (output scale 1/256, zero point -128)."""
    return _sigmoid_or_tanh(x_q, _logistic, 23, -128)


def tflm_tanh(attrs, x_q, y_q) -> np.ndarray:
    """TFLM TANH int8 (output scale 1/128, zero point 0)."""
    return _sigmoid_or_tanh(x_q, _tanh, 24, 0)


def _to_int16_multiplier(multiplier: int) -> int:
    """DownScaleInt32ToInt16Multiplier."""
    if multiplier >= _I32_MAX - (1 << 15):
        return (1 << 15) - 1
    return (multiplier + (1 << 15)) >> 16


def _srdhm16(a: int, b: int) -> int:
    if a == b == -(1 << 15):
        return (1 << 15) - 1
    ab = a * b
    nudge = (1 << 14) if ab >= 0 else 1 - (1 << 14)
    return int((ab + nudge) / (1 << 15))


def _sat16(v: int) -> int:
    return max(-(1 << 15), min((1 << 15) - 1, v))


def hard_swish_params(x_q, y_q) -> tuple[int, int, int, int]:
    """TFLM HARD_SWISH's int16 multipliers and exponents, computed in float32 as it does."""
    hires = np.float32(1.0 / 128.0) * np.float32(x_q[0])
    out_m, out_e = quantize_multiplier(float(hires / np.float32(y_q[0])))
    relu_m, relu_e = quantize_multiplier(float(hires / np.float32(3.0 / 32768.0)))
    if out_e > 0:
        raise ValueError("HardSwish output scale is below input scale / 128; TFLM refuses it")
    return _to_int16_multiplier(out_m), out_e, _to_int16_multiplier(relu_m), relu_e


def tflm_hard_swish(attrs, x_q, y_q) -> np.ndarray:
    """TFLM HARD_SWISH int8: int16 fixed point, a 'reluish' gate times the rescaled input."""
    out_m, out_e, relu_m, relu_e = hard_swish_params(x_q, y_q)
    out = []
    for code in range(-128, 128):
        hires = _sat16(128 * (code - int(x_q[1])))
        scaled = _srdhm16(hires, out_m)
        reluish = hires
        if relu_e > 0:
            reluish = _sat16(reluish * (1 << (relu_e - 1)))
        reluish = _srdhm16(reluish, relu_m)
        if relu_e > 0:
            reluish = _sat16(reluish * 2)
        if relu_e < 0:
            reluish = rounding_divide_by_pot(reluish, -relu_e)
        reluish = (reluish + (1 << 15)) >> 1
        if reluish == scaled == -(1 << 15):
            pre = (1 << 15) - 1
        else:
            pre = int(reluish * scaled / (1 << 15))
        y = rounding_divide_by_pot(pre, -out_e) + int(y_q[1])
        out.append(max(-128, min(127, y)))
    return np.array(out, np.int8)


def _two_slopes(x_zp: int, y_zp: int, identity: tuple[int, int],
                negative: list[tuple[int, int, int]]) -> np.ndarray:
    """LEAKY_RELU / PRELU: one requantization for x >= 0, another (times an int8 alpha) below."""
    rows = []
    for alpha, multiplier, shift in negative:
        row = []
        for code in range(-128, 128):
            value = code - x_zp
            if value >= 0:
                y = requant_scalar(value, *identity)
            else:
                y = requant_scalar(value * alpha, multiplier, shift)
            row.append(max(-128, min(127, y + y_zp)))
        rows.append(row)
    return np.array(rows, np.int8)


def tflm_leaky_relu(attrs, x_q, y_q) -> np.ndarray:
    """TFLM LEAKY_RELU int8: ratios computed in float32 as its Prepare does."""
    alpha = np.float32(attrs.get("alpha", 0.01))
    xs, ys = np.float32(x_q[0]), np.float32(y_q[0])
    identity = quantize_multiplier(float(xs / ys))
    negative = quantize_multiplier(float(xs * alpha / ys))
    return _two_slopes(int(x_q[1]), int(y_q[1]), identity, [(1, *negative)])[0]


def tflm_prelu(x_q, y_q, alpha_q: np.ndarray, alpha_scale: float, alpha_zp: int) -> np.ndarray:
    """TFLM PRELU int8 with an int8 alpha (``alpha_q`` per channel, one scale and zero point).

    One row per channel; a single alpha gives int8[256]."""
    xs, ys, als = (float(np.float32(v)) for v in (x_q[0], y_q[0], alpha_scale))
    identity = quantize_multiplier(xs / ys)
    negative = quantize_multiplier(xs * als / ys)
    alphas = np.asarray(alpha_q).reshape(-1)
    rows = _two_slopes(int(x_q[1]), int(y_q[1]), identity,
                       [(int(a) - int(alpha_zp), *negative) for a in alphas])
    return rows[0] if alphas.size == 1 else rows


_TFLM = {"Sigmoid": tflm_logistic, "Tanh": tflm_tanh, "HardSwish": tflm_hard_swish,
         "LeakyRelu": tflm_leaky_relu}
