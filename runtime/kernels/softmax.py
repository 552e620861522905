"""Softmax over the last axis (channels), int8 in, int8 out at scale 1/256, zero point -128.

``fixed``: TensorFlow Lite Micro's reference int8 softmax (gemmlowp fixed point): the
difference to the row maximum is scaled by a Q31 multiplier and a left shift into a Q5.26
value, exponentiated with gemmlowp's ``exp_on_negative_values``, summed in Q12.19, inverted
with its Newton-Raphson reciprocal and rounded into the output. Differences below ``diff_min``
give -128 without being looked at. ``float``: onnxruntime's com.microsoft QLinearSoftmax: a
256-entry float32 table of scaled exponentials indexed by ``max - x``, a sequential float32 sum,
``rint(e * 256 / sum)`` in float32. docs/ARITHMETIC.md gives both step by step.

Rows are vectorized; the fixed-point helpers work on int64 arrays holding int32 values.
"""
from __future__ import annotations

import math

import numpy as np

from runtime.kernels.common import _check_mode, _const, _int8, _scalar_i32
from runtime.requant import quantize_multiplier

OUTPUT_SCALE = 1.0 / 256.0
OUTPUT_ZERO_POINT = -128
SCALED_DIFF_INTEGER_BITS = 5
ACCUMULATION_INTEGER_BITS = 12
# sum of exps < 2**28 keeps the final rounding shift within 31 bits (TFLM's RoundingDivideByPOT)
MAX_FIXED_CHANNELS = 511
_I32_MIN, _I32_MAX = -(1 << 31), (1 << 31) - 1
_FLT_MAX = np.float32(np.finfo(np.float32).max)


def softmax_constants(x_scale, channels: int, mode: str) -> dict[str, np.ndarray]:
    """``fixed``: TFLM's Prepare in double (beta 1): ``input_multiplier``,
    ``input_left_shift``, ``diff_min``. ``float``: ``exp_table[d]``, the float32 value
    onnxruntime's QLinearSoftmax builds for an input ``d`` codes below the row maximum."""
    _check_mode(mode)
    scale = float(np.float32(x_scale))
    channels = int(channels)
    if channels < 2:
        raise ValueError(f"softmax over {channels} channel(s) is constant; need at least 2")
    if mode == "fixed":
        if channels > MAX_FIXED_CHANNELS:
            raise ValueError(f"fixed-mode softmax supports at most {MAX_FIXED_CHANNELS} "
                             f"channels, got {channels}")
        cap = float((1 << 31) - 1)
        real = min(scale * float(1 << (31 - SCALED_DIFF_INTEGER_BITS)), cap)
        if not real > 1.0:
            raise ValueError(f"input scale {scale!r} is too small for TFLM's softmax")
        multiplier, shift = quantize_multiplier(real)
        radius = math.floor(((1 << SCALED_DIFF_INTEGER_BITS) - 1) *
                            float(1 << (31 - SCALED_DIFF_INTEGER_BITS)) / float(1 << shift))
        return {"input_multiplier": _scalar_i32(multiplier),
                "input_left_shift": _scalar_i32(shift), "diff_min": _scalar_i32(-radius)}
    # onnxruntime: bit_shift = max(0, log(FLT_MAX / D) - 5) / x_scale, the log in float32
    log = float(np.log(np.float32(_FLT_MAX / np.float32(channels))))
    bit_shift = max(0.0, log - 5.0) / scale
    table = [math.exp((bit_shift - d) * scale) for d in range(256)]
    return {"exp_table": np.array(table, dtype=np.float32)}


# -- gemmlowp fixed point on int64 arrays of int32 values ---------------------------------------

def _srdhm(a, b) -> np.ndarray:
    """SaturatingRoundingDoublingHighMul."""
    a = np.asarray(a, np.int64)
    ab = a * np.int64(b) if np.isscalar(b) else a * np.asarray(b, np.int64)
    v = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    q = np.where(v >= 0, v >> 31, -((-v) >> 31))
    return np.where((a == _I32_MIN) & (np.asarray(b) == _I32_MIN), _I32_MAX, q)


def _rdbp(x, exponent) -> np.ndarray:
    """RoundingDivideByPOT: half away from zero."""
    exponent = np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + ((x & mask) > threshold)


def _shl_sat(x, bits: int) -> np.ndarray:
    return np.clip(x << bits, _I32_MIN, _I32_MAX)


def _exp_quarter(a) -> np.ndarray:
    """exp on [-1/4, 0) in Q0.31: Taylor series around -1/8."""
    x = a + (1 << 28)
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    poly = _rdbp(_srdhm(_rdbp(x4, 2) + x3, 715827883) + x2, 1)
    return 1895147668 + _srdhm(x + poly, 1895147668)


_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
           (2, 39332535), (3, 720401), (4, 242))


def _exp_on_negative(a) -> np.ndarray:
    """gemmlowp's exp_on_negative_values: Q5.26 in (-32, 0] -> Q0.31."""
    frac = 31 - SCALED_DIFF_INTEGER_BITS
    quarter = 1 << (frac - 2)
    shifted = (a & (quarter - 1)) - quarter
    result = _exp_quarter(_shl_sat(shifted, SCALED_DIFF_INTEGER_BITS))
    remainder = shifted - a
    for exponent, multiplier in _BARREL:
        result = np.where(remainder & (1 << (frac + exponent)), _srdhm(result, multiplier),
                          result)
    return np.where(a == 0, _I32_MAX, result)


def _reciprocal(total) -> tuple[np.ndarray, np.ndarray]:
    """TFLite's GetReciprocal of a Q12.19 sum: (Q0.31 scale, num_bits_over_unit)."""
    headroom = 32 - np.frexp(total.astype(np.float64))[1].astype(np.int64)
    bits_over_unit = ACCUMULATION_INTEGER_BITS - headroom
    a = ((total << headroom) & 0xFFFFFFFF) - (1 << 31)
    half = (a + _I32_MAX + 1) >> 1  # RoundingHalfSum(a, One), a + One >= 0
    x = 1515870810 + _srdhm(half, -1010580540)
    for _ in range(3):
        x = x + _shl_sat(_srdhm(x, (1 << 29) - _srdhm(half, x)), 2)
    return _shl_sat(x, 1), bits_over_unit


def _fixed_rows(x: np.ndarray, consts: dict) -> np.ndarray:
    multiplier = int(_const(consts, "input_multiplier", np.int32)[0])
    shift = int(_const(consts, "input_left_shift", np.int32)[0])
    diff_min = int(_const(consts, "diff_min", np.int32)[0])
    diff = x.astype(np.int64) - x.max(axis=1, keepdims=True)
    kept = diff >= diff_min
    exps = _exp_on_negative(_srdhm(np.where(kept, diff, 0) << shift, multiplier))
    total = np.where(kept, _rdbp(exps, ACCUMULATION_INTEGER_BITS), 0).sum(axis=1, keepdims=True)
    scale, bits_over_unit = _reciprocal(total)
    out = _rdbp(_srdhm(scale, exps), bits_over_unit + 31 - 8) + OUTPUT_ZERO_POINT
    return np.where(kept, np.clip(out, -128, 127), -128)


def _float_rows(x: np.ndarray, consts: dict) -> np.ndarray:
    table = _const(consts, "exp_table", np.float32)
    exps = table[x.max(axis=1, keepdims=True).astype(np.int32) - x]
    total = np.add.accumulate(exps, axis=1)[:, -1:]  # left to right, as the device adds them
    exps *= np.float32(256.0)
    exps /= total
    np.rint(exps, out=exps)
    exps += np.float32(OUTPUT_ZERO_POINT)  # >= -128: the quotients are >= 0
    return np.minimum(exps, np.float32(127.0), out=exps)


def softmax(x, consts: dict) -> np.ndarray:
    """int8 softmax of ``x`` ``[..., C]`` over its last axis (constants: ``softmax_constants``)."""
    x = _int8("x", x)
    if x.ndim < 1 or x.shape[-1] < 2:
        raise ValueError(f"x must have at least 2 channels on its last axis, got {x.shape}")
    rows = x.reshape(-1, x.shape[-1])
    if "exp_table" in consts:
        out = _float_rows(rows, consts)
    else:
        out = _fixed_rows(rows, consts)
    return out.astype(np.int8).reshape(x.shape)
