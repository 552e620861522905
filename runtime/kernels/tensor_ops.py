"""Ops that move, join or combine whole tensors: concat, pad, resize_nearest, mul, sub.

Data movement (concat of equal quantization, pad, resize_nearest) is exact by construction:
the output keeps its input's quantization, so no arithmetic happens at all. Where an input of
concat has another quantization, each code is mapped by a 256-entry table built here once
(fixed: TFLite's int8 requantize; float: onnxruntime's QLinearConcat lookup table), so the
device only indexes. mul and sub requantize per element (docs/ARITHMETIC.md):
- mul fixed: TFLite's int8 MUL, ``zp_y + MBQM((a - zp_a) * (b - zp_b), M, shift)``;
  mul float: onnxruntime's QLinearMul (SSE2 kernel), ``rint(f32(prod) * ratio + zp_y)``.
- sub fixed: TFLite's int8 SUB, ``a - rq(b)`` with add's constants (the rounding of a
  negated ``b`` would differ); sub float: what onnxruntime runs for a quantized Sub, i.e.
  DequantizeLinear, float32 Sub, QuantizeLinear.
"""
from __future__ import annotations

import numpy as np

from runtime.kernels.common import (INT8_MIN, INT8_MAX, _int8, _zero_point, _act_range, _const,
                                    _is_fixed, _scalar_i32, _scalar_f32, _check_mode)
from runtime.kernels.elementwise import add_constants, dequantize, quantize
from runtime.requant import Requant, quantize_multiplier

CODES = np.arange(INT8_MIN, INT8_MAX + 1, dtype=np.int8)  # table index = code + 128


# -- concat --------------------------------------------------------------------------------------

def requantize_table(x_scale, x_zero_point, y_scale, y_zero_point, mode: str) -> np.ndarray:
    """int8 [256]: each input code in the output's quantization. ``fixed``: TFLite's int8
    requantize (``zp_y + MBQM(x - zp_x, M, shift)``, M from ``x_scale / y_scale`` in double);
    ``float``: onnxruntime's QlinearBuildLookupTable (float32 dequantize, QuantizeLinear).
    Equal quantization gives the identity in both modes."""
    _check_mode(mode)
    x_zp = _zero_point("x_zero_point", x_zero_point)
    y_zp = _zero_point("y_zero_point", y_zero_point)
    if mode == "float":
        return quantize(dequantize(CODES, x_scale, x_zp), y_scale, y_zp)
    multiplier, shift = quantize_multiplier(float(np.float32(x_scale)) /
                                            float(np.float32(y_scale)))
    scaled = Requant.fixed(multiplier, shift).apply(CODES.astype(np.int64) - x_zp) + y_zp
    return np.clip(scaled, INT8_MIN, INT8_MAX).astype(np.int8)


def concat_constants(inputs, y_scale, y_zero_point, mode: str) -> dict[str, np.ndarray]:
    """``{"tables": int8 [len(inputs), 256]}`` for ``inputs``, a list of (scale, zero point)."""
    return {"tables": np.stack([requantize_table(s, zp, y_scale, y_zero_point, mode)
                                for s, zp in inputs])}


def concat(xs, consts: dict) -> np.ndarray:
    """Concatenate NHWC int8 tensors along channels, each input mapped through its table."""
    tables = _const(consts, "tables", np.int8)
    if tables.shape != (len(xs), 256):
        raise ValueError(f"tables must be [{len(xs)}, 256], got {tables.shape}")
    parts = []
    for x, table in zip(xs, tables):
        x = _int8("x", x)
        identity = np.array_equal(table, CODES)
        parts.append(x if identity else table[x.astype(np.intp) + 128])
    return np.concatenate(parts, axis=-1)


# -- pad / resize --------------------------------------------------------------------------------

PAD_MODES = ("constant", "reflect", "edge")  # ONNX Pad's modes; C: index in this tuple


def pad(x, pads, value: int, mode: str = "constant") -> np.ndarray:
    """Padding of H and W (``pads`` = top, left, bottom, right): with int8 ``value``, the
    input mirrored without repeating its edge (``reflect``, pads < size) or its edge repeated."""
    x = _int8("x", x, 4)
    top, left, bottom, right = (int(p) for p in pads)
    if min(top, left, bottom, right) < 0 or mode not in PAD_MODES:
        raise ValueError(f"pads must be >= 0 and mode one of {PAD_MODES}, got {list(pads)}, "
                         f"{mode!r}")
    widths = ((0, 0), (top, bottom), (left, right), (0, 0))
    if mode == "constant":
        return np.pad(x, widths, constant_values=int(value))
    if mode == "reflect" and (max(top, bottom) >= x.shape[1] or max(left, right) >= x.shape[2]):
        raise ValueError(f"reflect padding {list(pads)} must be smaller than the input "
                         f"{x.shape[1:3]}")
    return np.pad(x, widths, mode=mode)


def resize_nearest(x, rows, cols) -> np.ndarray:
    """Output pixel (i, j) is input pixel (rows[i], cols[j]): any nearest-neighbour resize,
    its coordinate rule already evaluated (at export) into the two index vectors."""
    x = _int8("x", x, 4)
    rows, cols = np.asarray(rows, np.intp), np.asarray(cols, np.intp)
    if rows.min() < 0 or rows.max() >= x.shape[1] or cols.min() < 0 or cols.max() >= x.shape[2]:
        raise ValueError("resize indices fall outside the input")
    return x[:, rows][:, :, cols]


# -- mul -----------------------------------------------------------------------------------------

def mul_constants(a_scale, a_zero_point, b_scale, b_zero_point, y_scale, y_zero_point,
                  mode: str) -> dict[str, np.ndarray]:
    """Constants for ``mul`` (docs/ARITHMETIC.md)."""
    _check_mode(mode)
    consts = {"a_zero_point": _scalar_i32(_zero_point("a_zero_point", a_zero_point)),
              "b_zero_point": _scalar_i32(_zero_point("b_zero_point", b_zero_point)),
              "output_zero_point": _scalar_i32(_zero_point("y_zero_point", y_zero_point))}
    a_scale, b_scale, y_scale = (np.float32(s) for s in (a_scale, b_scale, y_scale))
    if mode == "fixed":  # TFLite's mul.cc: the real multiplier in double
        multiplier, shift = quantize_multiplier(float(a_scale) * float(b_scale) / float(y_scale))
        consts.update(multiplier=_scalar_i32(multiplier), shift=_scalar_i32(shift))
    else:  # onnxruntime's MlasQLinearMulKernel: ScaleA * ScaleB / ScaleC in float32
        consts["scale"] = _scalar_f32(a_scale * b_scale / y_scale)
    return consts


def broadcast_operand(a_shape, b) -> np.ndarray:
    """``b`` [N, ...] laid out against ``a`` [N, H, W, C]: the same shape, one value per
    channel ``[N, 1, 1, C]``, or one value ``[N, 1, 1, 1]``."""
    if b.shape[1:] not in (tuple(a_shape[1:]), (1, 1, a_shape[-1]), (1, 1, 1)):
        raise ValueError(f"b of shape {b.shape} does not broadcast over a of shape {a_shape}")
    return b


def mul(a, b, consts: dict, *, act_range=(INT8_MIN, INT8_MAX)) -> np.ndarray:
    """Elementwise int8 product, ``b`` broadcast over H, W (and C) as ``broadcast_operand``."""
    a = _int8("a", a, 4)
    b = broadcast_operand(a.shape, _int8("b", b, 4))
    low, high = _act_range(act_range)
    zp_a, zp_b, zp_y = (int(_const(consts, k, np.int32)[0])
                        for k in ("a_zero_point", "b_zero_point", "output_zero_point"))
    prod = (a.astype(np.int32) - zp_a) * (b.astype(np.int32) - zp_b)
    if _is_fixed(consts):
        rq = Requant.fixed(_const(consts, "multiplier", np.int32), _const(consts, "shift",
                                                                          np.int32))
        out = rq.apply(prod) + zp_y
    else:
        scaled = prod.astype(np.float32) * _const(consts, "scale", np.float32)[0]
        out = np.rint(scaled + np.float32(zp_y))
    return np.clip(np.clip(out, INT8_MIN, INT8_MAX), low, high).astype(np.int8)


# -- sub -----------------------------------------------------------------------------------------

def sub_constants(a_scale, a_zero_point, b_scale, b_zero_point, y_scale, y_zero_point,
                  mode: str) -> dict[str, np.ndarray]:
    """Constants for ``sub``: add's in fixed mode (TFLite prepares SUB as ADD); the three
    zero points and scales in float mode."""
    if mode == "fixed":
        return add_constants(a_scale, a_zero_point, b_scale, b_zero_point, y_scale,
                             y_zero_point, mode)
    _check_mode(mode)
    return {"a_zero_point": _scalar_i32(_zero_point("a_zero_point", a_zero_point)),
            "b_zero_point": _scalar_i32(_zero_point("b_zero_point", b_zero_point)),
            "output_zero_point": _scalar_i32(_zero_point("y_zero_point", y_zero_point)),
            "a_scale": _scalar_f32(a_scale), "b_scale": _scalar_f32(b_scale),
            "y_scale": _scalar_f32(y_scale)}


def sub(a, b, consts: dict, *, act_range=(INT8_MIN, INT8_MAX)) -> np.ndarray:
    """Elementwise ``a - b`` of int8 tensors of one shape, each with its own quantization."""
    a, b = _int8("a", a), _int8("b", b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    low, high = _act_range(act_range)
    zp = {k: int(_const(consts, k, np.int32)[0])
          for k in ("a_zero_point", "b_zero_point", "output_zero_point")}
    if _is_fixed(consts):
        shift = int(_const(consts, "left_shift", np.int32)[0])
        scaled = []
        for prefix, x in (("a_", a), ("b_", b)):
            rq = Requant.fixed(_const(consts, prefix + "multiplier", np.int32),
                               _const(consts, prefix + "shift", np.int32))
            scaled.append(rq.apply((x.astype(np.int64) - zp[prefix + "zero_point"]) << shift))
        rq = Requant.fixed(_const(consts, "multiplier", np.int32),
                           _const(consts, "shift", np.int32))
        out = np.clip(rq.apply(scaled[0] - scaled[1]) + zp["output_zero_point"],
                      INT8_MIN, INT8_MAX)
        return np.clip(out, low, high).astype(np.int8)
    diff = (dequantize(a, _const(consts, "a_scale", np.float32)[0], zp["a_zero_point"])
            - dequantize(b, _const(consts, "b_scale", np.float32)[0], zp["b_zero_point"]))
    out = quantize(diff, _const(consts, "y_scale", np.float32)[0], zp["output_zero_point"])
    return np.clip(out, low, high).astype(np.int8)
