"""Slow, obviously-correct loop versions of every kernel: the oracle the fast ones are tested
against. One output element at a time, Python integers, the formulas of docs/ARITHMETIC.md
read straight off the page. Never used to run models.

Requantization is spelled out here too (``requant_scalar``, ``requant_float_scalar``), with
Python integers, in the form the reference libraries write it (gemmlowp's
SaturatingRoundingDoublingHighMul and RoundingDivideByPOT, CMSIS-NN's single rounding), so the
vectorized runtime/requant.py is tested against an independent oracle and not against itself.
Everything around it (indexing, padding, counting, summing, rounding division, the fused
multiply-add of float-mode add) is likewise independent of runtime/kernels.py.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from runtime.requant import Requant


_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


def _wrap_int32(v: int) -> int:
    return (v - _INT32_MIN) % (1 << 32) + _INT32_MIN


def _c_div(a: int, b: int) -> int:
    """C's integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def saturating_rounding_doubling_high_mul(a: int, b: int) -> int:
    """gemmlowp's SRDHM as written there: nudge by the product's sign, divide truncating."""
    if a == b == _INT32_MIN:
        return _INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return _c_div(ab + nudge, 1 << 31)


def rounding_divide_by_pot(x: int, exponent: int) -> int:
    """gemmlowp's RoundingDivideByPOT: ``x / 2**exponent`` rounded half away from zero."""
    assert 0 <= exponent <= 31
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def requant_scalar(acc: int, multiplier: int, shift: int, rounding: str = "double") -> int:
    """One int32 accumulator through fixed-mode requantization (before the output zero point).

    ``double``: TFLite Micro's MultiplyByQuantizedMultiplier, ``shift > 0`` a left shift that
    wraps in int32. ``single``: CMSIS-NN's single rounding, two shifts as CMSIS writes them
    (``(acc * M) >> (T - 1)``, then ``(r + 1) >> 1``), here without any int32 truncation."""
    acc, multiplier, shift = int(acc), int(multiplier), int(shift)
    assert _INT32_MIN <= acc <= _INT32_MAX and _INT32_MIN <= multiplier <= _INT32_MAX
    assert -31 <= shift <= 30
    if rounding == "single":
        total = 31 - shift
        return (((acc * multiplier) >> (total - 1)) + 1) >> 1
    assert rounding == "double"
    left, right = max(shift, 0), max(-shift, 0)
    high = saturating_rounding_doubling_high_mul(_wrap_int32(acc * (1 << left)), multiplier)
    return rounding_divide_by_pot(high, right)


def requant_float_scalar(acc: int, scale) -> int:
    """onnxruntime's float requantization of one accumulator: ``rint(float32(acc) * scale)``,
    the product rounded to float32, then half to even."""
    product = np.float32(np.float32(int(acc)) * np.float32(scale))
    return round(float(product))  # Python's round() is half to even


def _requant_one(acc: int, rq: Requant, channel: int) -> int:
    c = channel % rq.channels
    if rq.mode == "fixed":
        return requant_scalar(acc, rq.multiplier[c], rq.shift[c], rq.rounding)
    return requant_float_scalar(acc, rq.scale[c])


def _clamp(v: int, low: int, high: int) -> int:
    return max(low, min(high, v))


def _out_size(size, k, s, before, after, d=1):
    return (size + before + after - ((k - 1) * d + 1)) // s + 1


def conv2d(x, w, bias, rq, *, input_zero_point, output_zero_point, stride=(1, 1),
           padding=(0, 0, 0, 0), dilation=(1, 1), groups=1, act_range=(-128, 127)):
    acc = conv2d_accumulate(x, w, bias, input_zero_point=input_zero_point, stride=stride,
                            padding=padding, dilation=dilation, groups=groups)
    y = np.zeros(acc.shape, np.int8)
    for index in np.ndindex(acc.shape):
        value = _requant_one(int(acc[index]), rq, index[3]) + int(output_zero_point)
        y[index] = _clamp(value, *act_range)
    return y


def conv2d_accumulate(x, w, bias, *, input_zero_point, stride=(1, 1), padding=(0, 0, 0, 0),
                      dilation=(1, 1), groups=1):
    """The int32 accumulators (int64 array) ``conv2d`` requantizes."""
    n_, h, wd, c = x.shape
    m, kh, kw, cg = w.shape
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = stride, dilation, padding
    oh, ow = _out_size(h, kh, sh, pt, pb, dh), _out_size(wd, kw, sw, pl, pr, dw)
    mg = m // groups
    y = np.zeros((n_, oh, ow, m), np.int64)
    for n in range(n_):
        for oy in range(oh):
            for ox in range(ow):
                for o in range(m):
                    g = o // mg
                    acc = 0 if bias is None else int(bias[o])
                    for ky in range(kh):
                        for kx in range(kw):
                            iy, ix = oy * sh - pt + ky * dh, ox * sw - pl + kx * dw
                            if not (0 <= iy < h and 0 <= ix < wd):
                                continue  # padding: contributes (zp - zp) * w = 0
                            for ci in range(cg):
                                acc += int(w[o, ky, kx, ci]) * (
                                    int(x[n, iy, ix, g * cg + ci]) - int(input_zero_point))
                    assert -2**31 <= acc < 2**31
                    y[n, oy, ox, o] = acc
    return y


def fully_connected(x, w, bias, rq, *, input_zero_point, output_zero_point,
                    act_range=(-128, 127)):
    acc = fully_connected_accumulate(x, w, bias, input_zero_point=input_zero_point)
    y = np.zeros(acc.shape, np.int8)
    for (n, o), a in np.ndenumerate(acc):
        y[n, o] = _clamp(_requant_one(int(a), rq, o) + int(output_zero_point), *act_range)
    return y


def fully_connected_accumulate(x, w, bias, *, input_zero_point):
    """The int32 accumulators (int64 array) ``fully_connected`` requantizes."""
    flat = x.reshape(x.shape[0], -1)
    y = np.zeros((flat.shape[0], w.shape[0]), np.int64)
    for n in range(flat.shape[0]):
        for o in range(w.shape[0]):
            acc = 0 if bias is None else int(bias[o])
            for k in range(w.shape[1]):
                acc += int(w[o, k]) * (int(flat[n, k]) - int(input_zero_point))
            y[n, o] = acc
    return y


def _window(x, n, oy, ox, ch, kernel, stride, padding):
    """The values of the taps inside the image, in row-major order, and the tap count."""
    (kh, kw), (sh, sw), (pt, pl, _, _) = kernel, stride, padding
    values = []
    for ky in range(kh):
        for kx in range(kw):
            iy, ix = oy * sh - pt + ky, ox * sw - pl + kx
            if 0 <= iy < x.shape[1] and 0 <= ix < x.shape[2]:
                values.append(int(x[n, iy, ix, ch]))
    return values


def _pool(x, kernel, stride, padding, fn, positions=False):
    n_, h, w, c = x.shape
    oh = _out_size(h, kernel[0], stride[0], padding[0], padding[2])
    ow = _out_size(w, kernel[1], stride[1], padding[1], padding[3])
    y = np.zeros((n_, oh, ow, c), np.int8)
    for n in range(n_):
        for oy in range(oh):
            for ox in range(ow):
                for ch in range(c):
                    values = _window(x, n, oy, ox, ch, kernel, stride, padding)
                    y[n, oy, ox, ch] = fn(values, oy, ox) if positions else fn(values)
    return y


def max_pool2d(x, kernel, *, stride, padding=(0, 0, 0, 0), act_range=(-128, 127)):
    return _pool(x, kernel, stride, padding, lambda v: _clamp(max(v, default=-128), *act_range))


def _tflite_round_div(acc: int, count: int) -> int:
    return _c_div(acc + count // 2, count) if acc > 0 else _c_div(acc - count // 2, count)


def _to_f32(v) -> np.float32:
    return np.float32(v)


def _round_half_even(v: float) -> int:
    return int(round(float(v)))  # Python's round() is half to even


def _counted_taps(x, kernel, stride, padding, ceil_pad) -> dict:
    """Per output position, the window taps inside the declared padding (the ceil_mode rows and
    columns at the bottom and right excluded), tap by tap."""
    h, w = x.shape[1:3]
    oh = _out_size(h, kernel[0], stride[0], padding[0], padding[2])
    ow = _out_size(w, kernel[1], stride[1], padding[1], padding[3])
    return {(oy, ox): sum(1 for ky in range(kernel[0]) for kx in range(kernel[1])
                          if -padding[0] <= oy * stride[0] - padding[0] + ky
                          < h + padding[2] - ceil_pad[0]
                          and -padding[1] <= ox * stride[1] - padding[1] + kx
                          < w + padding[3] - ceil_pad[1])
            for oy in range(oh) for ox in range(ow)}


def avg_pool2d(x, kernel, consts, *, stride, padding=(0, 0, 0, 0), count_include_pad=False,
               ceil_pad=(0, 0), act_range=(-128, 127)):
    x_zp = int(consts["input_zero_point"][0])
    y_zp = int(consts["output_zero_point"][0])
    area = kernel[0] * kernel[1]
    counted = _counted_taps(x, kernel, stride, padding, ceil_pad)
    if "multiplier" in consts:
        rq = Requant.fixed(consts["multiplier"], consts["shift"])

        def fixed(values, oy, ox):
            count = counted[oy, ox] if count_include_pad else len(values)
            if consts["rescale"][0]:
                acc = sum(v - x_zp for v in values)
                value = _tflite_round_div(_requant_one(acc, rq, 0), count) + y_zp
            else:
                acc = sum(values) + x_zp * (count - len(values))
                value = _tflite_round_div(acc, count)
            return _clamp(value, *act_range)
        return _pool(x, kernel, stride, padding, fixed, positions=True)

    x_scale, y_scale = _to_f32(consts["x_scale"][0]), _to_f32(consts["y_scale"][0])
    whole = tuple(kernel) == x.shape[1:3] and tuple(padding) == (0, 0, 0, 0)

    def floating(values, oy, ox):
        if whole:
            acc = _to_f32(sum(values) - x_zp * area)
            return _clamp(_round_half_even(acc * consts["global_scale"][0]) + y_zp, *act_range)
        total = _to_f32(0.0)
        for v in values:
            total = _to_f32(total + _to_f32(x_scale * _to_f32(v - x_zp)))
        count = counted[oy, ox] if count_include_pad else len(values)
        mean = _to_f32(total / _to_f32(count))
        value = _to_f32(_to_f32(mean / y_scale) + _to_f32(y_zp))
        return _clamp(_round_half_even(value), *act_range)
    return _pool(x, kernel, stride, padding, floating, positions=True)


def global_avg_pool(x, consts, *, act_range=(-128, 127)):
    n_, h, w, c = x.shape
    x_zp = int(consts["input_zero_point"][0])
    y_zp = int(consts["output_zero_point"][0])
    count = h * w
    y = np.zeros((n_, 1, 1, c), np.int8)
    for n in range(n_):
        for ch in range(c):
            acc = sum(int(x[n, i, j, ch]) - x_zp for i in range(h) for j in range(w))
            if "multiplier" in consts:  # TFLM's MEAN: the count is folded into the multiplier
                rq = Requant.fixed(consts["multiplier"], consts["shift"])
                value = _requant_one(acc, rq, 0) + y_zp
            else:
                value = _round_half_even(_to_f32(acc) * consts["scale"][0]) + y_zp
            y[n, 0, 0, ch] = _clamp(value, *act_range)
    return y


def _round_to_f32(value: Fraction) -> np.float32:
    """Round an exact rational to the nearest float32, ties to even (normal range)."""
    if value == 0:
        return np.float32(0.0)
    sign = -1 if value < 0 else 1
    value = abs(value)
    exponent = value.numerator.bit_length() - value.denominator.bit_length()
    while Fraction(2) ** exponent > value:
        exponent -= 1
    while Fraction(2) ** (exponent + 1) <= value:
        exponent += 1
    ulp = Fraction(2) ** (exponent - 23)
    mantissa = round(value / ulp)  # Fraction.__round__: half to even
    return np.float32(sign * float(mantissa * ulp))


def _fma(a, b, c) -> np.float32:
    return _round_to_f32(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))


def add(a, b, consts, *, act_range=(-128, 127)):
    y = np.zeros(a.shape, np.int8)
    for index in np.ndindex(a.shape):
        va, vb = int(a[index]), int(b[index])
        if "multiplier" in consts:
            shift = int(consts["left_shift"][0])
            total = 0
            for prefix, v in (("a_", va), ("b_", vb)):
                rq = Requant.fixed(consts[prefix + "multiplier"], consts[prefix + "shift"])
                total += _requant_one((v - int(consts[prefix + "zero_point"][0])) * 2**shift, rq, 0)
            out_rq = Requant.fixed(consts["multiplier"], consts["shift"])
            value = _requant_one(total, out_rq, 0) + int(consts["output_zero_point"][0])
        else:
            partial = _fma(vb, consts["b_scale"][0], consts["offset"][0])
            value = _round_half_even(_fma(va, consts["a_scale"][0], partial))
        y[index] = _clamp(_clamp(value, -128, 127), *act_range)
    return y


def lookup(x, table, *, act_range=(-128, 127)):
    """One value at a time: the table row of the value's channel (the last axis), at x + 128."""
    x = np.asarray(x)
    out = np.empty(x.shape, np.int8)
    for index in np.ndindex(x.shape):
        row = table if table.ndim == 1 else table[index[-1]]
        out[index] = _clamp(int(row[int(x[index]) + 128]), *act_range)
    return out
# -- softmax ---------------------------------------------------------------------------------------

def _sat_mul_pot(x: int, exponent: int) -> int:
    """gemmlowp's SaturatingRoundingMultiplyByPOT on int32."""
    if exponent <= 0:
        return rounding_divide_by_pot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    if x > threshold:
        return _INT32_MAX
    if x < -threshold:
        return _INT32_MIN
    return x * 2**exponent


def _fp_exp_quarter(a: int) -> int:
    """exp(a / 2**31) for a in [-2**29, 0): gemmlowp's Taylor polynomial around -1/8."""
    mul = saturating_rounding_doubling_high_mul
    x = a + 2**28
    x2 = mul(x, x)
    x3 = mul(x2, x)
    x4 = mul(x2, x2)
    inner = _sat_mul_pot(mul(_sat_mul_pot(x4, -2) + x3, 715827883) + x2, -1)
    return 1895147668 + mul(1895147668, x + inner)


def _fp_exp_on_negative(a: int) -> int:
    """exp of a Q5.26 value in (-32, 0], as Q0.31 (gemmlowp's exp_on_negative_values)."""
    if a == 0:
        return _INT32_MAX
    quarter = 2**24
    reduced = (a & (quarter - 1)) - quarter  # in [-1/4, 0), a = reduced - remainder
    result = _fp_exp_quarter(_sat_mul_pot(reduced, 5))
    remainder = reduced - a
    for bit, multiplier in enumerate((1672461947, 1302514674, 790015084, 290630308, 39332535,
                                      720401, 242)):
        if remainder & 2**(24 + bit):  # exp(-2**(bit - 2))
            result = saturating_rounding_doubling_high_mul(result, multiplier)
    return result


def _fp_reciprocal(total: int) -> tuple[int, int]:
    """1 / total for a Q12.19 total >= 1: TFLite's GetReciprocal (Newton-Raphson in Q2.29)."""
    mul = saturating_rounding_doubling_high_mul
    headroom = 32 - total.bit_length()
    a = ((total << headroom) % 2**32) - 2**31
    half = _c_div(a + _INT32_MAX + 1, 2)  # RoundingHalfSum(a, 1.0)
    x = 1515870810 + mul(half, -1010580540)  # 48/17 - 32/17 * half
    for _ in range(3):
        x = x + _sat_mul_pot(mul(x, 2**29 - mul(half, x)), 2)
    return _sat_mul_pot(x, 1), 12 - headroom


def softmax(x, consts):
    """Softmax over the last axis, one row and one element at a time."""
    y = np.zeros(x.shape, np.int8)
    for row in np.ndindex(x.shape[:-1]):
        values = [int(v) for v in x[row]]
        top = max(values)
        if "exp_table" in consts:  # float32 scalar operations, one IEEE rounding each
            table = [np.float32(v) for v in consts["exp_table"]]
            total = np.float32(0.0)
            for v in values:
                total = np.float32(total + table[top - v])
            for c, v in enumerate(values):
                quotient = np.float32(np.float32(table[top - v] * np.float32(256.0)) / total)
                y[row + (c,)] = _clamp(_round_half_even(quotient) - 128, -128, 127)
            continue
        multiplier = int(consts["input_multiplier"][0])
        shift = int(consts["input_left_shift"][0])
        diff_min = int(consts["diff_min"][0])
        exps = {}
        for c, v in enumerate(values):
            if v - top >= diff_min:
                scaled = saturating_rounding_doubling_high_mul((v - top) * 2**shift, multiplier)
                exps[c] = _fp_exp_on_negative(scaled)
        total = sum(rounding_divide_by_pot(e, 12) for e in exps.values())  # Q0.31 -> Q12.19
        scale, bits_over_unit = _fp_reciprocal(total)
        for c in range(len(values)):
            if c not in exps:
                y[row + (c,)] = -128
                continue
            q = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(scale, exps[c]),
                                       bits_over_unit + 31 - 8)
            y[row + (c,)] = _clamp(q - 128, -128, 127)
    return y


# -- tensor ops (runtime/kernels/tensor_ops.py) ----------------------------------------------------

def _f32(v) -> np.float32:
    return np.float32(v)


def requantize_code(code: int, x_scale, x_zp: int, y_scale, y_zp: int, mode: str) -> int:
    """One int8 code in another quantization: TFLite's requantize (fixed) or onnxruntime's
    float32 dequantize + QuantizeLinear (float), saturated to int8."""
    if mode == "fixed":
        from runtime.requant import quantize_multiplier
        m, s = quantize_multiplier(float(_f32(x_scale)) / float(_f32(y_scale)))
        return _clamp(requant_scalar(code - x_zp, m, s) + y_zp, -128, 127)
    real = _f32(_f32(code - x_zp) * _f32(x_scale))
    q = _f32(real / _f32(y_scale))
    return _clamp(_round_half_even(float(q)) + y_zp, -128, 127)


def concat(xs, specs, y_spec, mode: str):
    """Channel concat; ``specs``: (scale, zero point) per input, ``y_spec`` the output's."""
    n_, h, w = xs[0].shape[:3]
    total = sum(x.shape[3] for x in xs)
    y = np.zeros((n_, h, w, total), np.int8)
    for n in range(n_):
        for i in range(h):
            for j in range(w):
                k = 0
                for x, (scale, zp) in zip(xs, specs):
                    for ch in range(x.shape[3]):
                        y[n, i, j, k] = requantize_code(int(x[n, i, j, ch]), scale, zp,
                                                        y_spec[0], y_spec[1], mode)
                        k += 1
    return y


def _source_index(i: int, size: int, mode: str):
    """The input index an output index (relative to the input's start) reads, None for the
    constant."""
    if 0 <= i < size:
        return i
    if mode == "edge":
        return 0 if i < 0 else size - 1
    if mode == "reflect":
        return -i if i < 0 else 2 * (size - 1) - i
    return None


def pad(x, pads, value: int, mode: str = "constant"):
    top, left, bottom, right = pads
    n_, h, w, c = x.shape
    y = np.zeros((n_, h + top + bottom, w + left + right, c), np.int8)
    for n, i, j, ch in np.ndindex(y.shape):
        si, sj = _source_index(i - top, h, mode), _source_index(j - left, w, mode)
        y[n, i, j, ch] = value if si is None or sj is None else x[n, si, sj, ch]
    return y


def mul(a, b, consts, *, act_range=(-128, 127)):
    y = np.zeros(a.shape, np.int8)
    za, zb, zy = (int(consts[k][0]) for k in ("a_zero_point", "b_zero_point",
                                              "output_zero_point"))
    for n, i, j, ch in np.ndindex(a.shape):
        bi, bj, bc = (min(i, b.shape[1] - 1), min(j, b.shape[2] - 1), min(ch, b.shape[3] - 1))
        prod = (int(a[n, i, j, ch]) - za) * (int(b[n, bi, bj, bc]) - zb)
        if "multiplier" in consts:
            value = requant_scalar(prod, int(consts["multiplier"][0]),
                                   int(consts["shift"][0])) + zy
        else:
            value = _round_half_even(float(_f32(_f32(_f32(prod) * consts["scale"][0]) + zy)))
        y[n, i, j, ch] = _clamp(_clamp(value, -128, 127), *act_range)
    return y


def sub(a, b, consts, *, act_range=(-128, 127)):
    y = np.zeros(a.shape, np.int8)
    za, zb, zy = (int(consts[k][0]) for k in ("a_zero_point", "b_zero_point",
                                              "output_zero_point"))
    for index in np.ndindex(a.shape):
        va, vb = int(a[index]), int(b[index])
        if "multiplier" in consts:
            shift = int(consts["left_shift"][0])
            sa = requant_scalar((va - za) << shift, int(consts["a_multiplier"][0]),
                                int(consts["a_shift"][0]))
            sb = requant_scalar((vb - zb) << shift, int(consts["b_multiplier"][0]),
                                int(consts["b_shift"][0]))
            value = requant_scalar(sa - sb, int(consts["multiplier"][0]),
                                   int(consts["shift"][0])) + zy
        else:
            fa = _f32(_f32(va - za) * consts["a_scale"][0])
            fb = _f32(_f32(vb - zb) * consts["b_scale"][0])
            q = _f32(_f32(fa - fb) / consts["y_scale"][0])
            value = _round_half_even(float(q)) + zy
        y[index] = _clamp(_clamp(value, -128, 127), *act_range)
    return y
