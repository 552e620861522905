"""Elementwise add, and quantize / dequantize at the model's edges."""
from __future__ import annotations

import numpy as np

from runtime.requant import Requant, clip_ufunc, float_constants, quantize_multiplier
from runtime.kernels.common import (INT8_MIN, INT8_MAX, ADD_LEFT_SHIFT, _int8, _zero_point,
                                    _act_range, _const, _is_fixed, _scalar_i32, _scalar_f32,
                                    _check_mode)


def add_constants(a_scale, a_zero_point, b_scale, b_zero_point, y_scale, y_zero_point,
                  mode: str) -> dict[str, np.ndarray]:
    """Constants for ``add`` (see docs/ARITHMETIC.md for each key)."""
    _check_mode(mode)
    zps = [_zero_point(n, v) for n, v in (("a_zero_point", a_zero_point),
                                          ("b_zero_point", b_zero_point),
                                          ("y_zero_point", y_zero_point))]
    a_scale, b_scale, y_scale = (np.float32(s) for s in (a_scale, b_scale, y_scale))
    if mode == "fixed":  # TFLite's PrepareGeneralSubOp / add.cc, in double
        twice_max = 2.0 * max(float(a_scale), float(b_scale))
        consts = {"a_zero_point": _scalar_i32(zps[0]), "b_zero_point": _scalar_i32(zps[1]),
                  "output_zero_point": _scalar_i32(zps[2]),
                  "left_shift": _scalar_i32(ADD_LEFT_SHIFT)}
        for prefix, real in (("a_", float(a_scale) / twice_max), ("b_", float(b_scale) / twice_max),
                             ("", twice_max / ((1 << ADD_LEFT_SHIFT) * float(y_scale)))):
            multiplier, shift = quantize_multiplier(real)
            consts[prefix + "multiplier"] = _scalar_i32(multiplier)
            consts[prefix + "shift"] = _scalar_i32(shift)
        return consts
    a_ratio = a_scale / y_scale  # float32, as onnxruntime's QLinearAdd computes them
    b_ratio = b_scale / y_scale
    # onnxruntime's compiled kernel contracts a_ratio * a_zp + (b_ratio * b_zp) into one FMA
    b_part = b_ratio * np.float32(zps[1])
    offset = np.float32(zps[2]) - fma_f32(np.float32([a_ratio]), np.float32(zps[0]),
                                          np.float32([b_part]))[0]
    return {"a_scale": _scalar_f32(a_ratio), "b_scale": _scalar_f32(b_ratio),
            "offset": _scalar_f32(offset)}


def fma_f32(a: np.ndarray, b, c) -> np.ndarray:
    """float32 fused multiply-add ``a * b + c`` with one rounding, like the FMA instruction.

    The product of two float32 is exact in float64; the float64 sum is made round-to-odd (its
    exact error is found by TwoSum), and a round-to-odd result with 29 spare bits rounds to
    float32 exactly as the single-rounded FMA would."""
    p = np.asarray(a, np.float32).astype(np.float64) * np.float64(np.float32(b))
    c = np.asarray(c, np.float32).astype(np.float64)
    s = p + c
    t = s - p
    err = (p - (s - t)) + (c - t)
    even = (s.view(np.int64) & 1) == 0
    fix = (err != 0) & even
    if fix.any():
        s = np.where(fix, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
    return s.astype(np.float32)


def add(a, b, consts: dict, *, act_range=(INT8_MIN, INT8_MAX)) -> np.ndarray:
    """Elementwise int8 add with its own input and output quantization. ``fixed``: TFLite's
    int8 add (inputs scaled up by ``2**left_shift``, rescaled, summed, rescaled). ``float``:
    onnxruntime's QLinearAdd as its AVX2 kernel computes it (two fused multiply-adds)."""
    a = _int8("a", a)
    b = _int8("b", b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    low, high = _act_range(act_range)
    if _is_fixed(consts):
        shift = int(_const(consts, "left_shift", np.int32)[0])
        scaled = []
        for prefix, x in (("a_", a), ("b_", b)):
            zp = int(_const(consts, prefix + "zero_point", np.int32)[0])
            rq = Requant.fixed(_const(consts, prefix + "multiplier", np.int32),
                               _const(consts, prefix + "shift", np.int32))
            scaled.append(rq.apply((x.astype(np.int64) - zp) << shift))
        total = scaled[0] + scaled[1]
        out_rq = Requant.fixed(_const(consts, "multiplier", np.int32),
                               _const(consts, "shift", np.int32))
        out = out_rq.apply(total) + int(_const(consts, "output_zero_point", np.int32)[0])
        return np.clip(out, low, high).astype(np.int8)
    partial = fma_f32(b.astype(np.float32), _const(consts, "b_scale", np.float32)[0],
                      _const(consts, "offset", np.float32)[0])
    value = fma_f32(a.astype(np.float32), consts["a_scale"][0], partial)
    out = np.rint(value)
    return np.clip(out, low, high).astype(np.int8)


def add_table(consts: dict, *, act_range=(INT8_MIN, INT8_MAX)) -> np.ndarray:
    """``add`` of every pair of int8 codes, computed once by ``add`` itself: int8 ``[65536]``
    at ``(a as uint8) * 256 + (b as uint8)``. An int8 add has only 65536 distinct inputs, so
    a layer's whole arithmetic (either mode) is this table, and a call becomes an index and a
    lookup (``add_lookup``), several times faster than evaluating it."""
    codes = np.arange(256, dtype=np.uint8).view(np.int8)  # in uint8 order: 0..127, -128..-1
    return add(np.repeat(codes, 256), np.tile(codes, 256), consts, act_range=act_range)


def add_lookup(a, b, table: np.ndarray) -> np.ndarray:
    """``add(a, b, consts)`` through ``table = add_table(consts)``."""
    a = _int8("a", a)
    b = _int8("b", b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    index = a.view(np.uint8).astype(np.uint16)
    index <<= 8
    index |= b.view(np.uint8)
    return table.take(index)


# -- quantize / dequantize -----------------------------------------------------------------------

def quantize(x, scale, zero_point, rounding: str = "even") -> np.ndarray:
    """float -> int8 as onnxruntime's QuantizeLinear: ``clamp(rint(x / scale) + zp)`` in float32
    (division, round half to even). ``rounding="away"``: TFLite's QUANTIZE (std::round of the
    float32 quotient, half away from zero), for models that came from a .tflite file."""
    x = np.asarray(x, dtype=np.float32)
    scale = np.float32(scale)
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be finite and > 0, got {scale}")
    zp = _zero_point("zero_point", zero_point)
    q = np.asarray(np.divide(x, scale))  # the one temporary (x's layout): then all in place
    clip_ufunc(q, *float_constants(INT8_MIN - zp, INT8_MAX - zp), out=q)
    if rounding == "even":
        np.rint(q, out=q)
    else:
        q = np.copysign(np.floor(np.abs(q) + np.float32(0.5)), q)
    q += np.float32(zp)
    return q.astype(np.int8)


def dequantize(q, scale, zero_point) -> np.ndarray:
    """int8 -> float32 as onnxruntime's DequantizeLinear: ``float32(q - zp) * scale``."""
    q = _int8("q", q)
    zp = _zero_point("zero_point", zero_point)
    return (q.astype(np.float32) - np.float32(zp)) * np.float32(scale)
