"""Max, average and global average pooling."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from runtime.requant import Requant, clamp_to_int8, float_constants, quantize_multiplier
from runtime.kernels.common import (INT8_MIN, INT8_MAX, _int8, _pair, _pads, _zero_point,
                                    _act_range, _clamp_to_int8, _pad_nhwc, _windows, _spatial,
                                    _const, _is_fixed, _scalar_i32, _scalar_f32, _check_mode,
                                    _fixed_rescale, _same_quantization)


def max_pool2d(x, kernel, *, stride, padding=(0, 0, 0, 0),
               act_range=(INT8_MIN, INT8_MAX)) -> np.ndarray:
    """Max over the window's taps inside the image (padding never wins). Output quantization
    equals the input's, in both modes."""
    x = _int8("x", x, 4)
    kernel, stride, padding = _pair("kernel", kernel), _pair("stride", stride), _pads(padding)
    low, high = _act_range(act_range)
    out_hw = _spatial(x, kernel, stride, padding)
    xp = _pad_nhwc(x, padding, INT8_MIN)
    out = None
    for _, _, view in _windows(xp, kernel, stride, (1, 1), out_hw):
        out = view.copy() if out is None else np.maximum(out, view, out=out)
    return _clamp_to_int8(out, low, high)


def avg_pool_constants(x_scale, x_zero_point, y_scale, y_zero_point, kernel,
                       mode: str) -> dict[str, np.ndarray]:
    """Constants for ``avg_pool2d`` (see docs/ARITHMETIC.md for each key)."""
    _check_mode(mode)
    kh, kw = _pair("kernel", kernel)
    consts = {"input_zero_point": _scalar_i32(_zero_point("x_zero_point", x_zero_point)),
              "output_zero_point": _scalar_i32(_zero_point("y_zero_point", y_zero_point))}
    if mode == "fixed":
        consts["multiplier"], consts["shift"] = _fixed_rescale(x_scale, y_scale)
        consts["rescale"] = _scalar_i32(
            not _same_quantization(x_scale, x_zero_point, y_scale, y_zero_point))
    else:
        consts["x_scale"] = _scalar_f32(x_scale)
        consts["y_scale"] = _scalar_f32(y_scale)
        consts["global_scale"] = _global_scale(x_scale, y_scale, kh * kw)
    return consts


def _global_scale(x_scale, y_scale, count: int) -> np.ndarray:
    """onnxruntime's ``x_scale / (y_scale * count)``, in float32, in that order."""
    return _scalar_f32(np.float32(x_scale) / (np.float32(y_scale) * np.float32(count)))


def _rounding_divide(acc: np.ndarray, count) -> np.ndarray:
    """TFLite's integer average: divide rounding half away from zero (C truncating division)."""
    half = count // 2
    return np.where(acc > 0, (acc + half) // count, -((half - acc) // count))


def _fixed_mean(acc_centered: np.ndarray, count, consts: dict) -> np.ndarray:
    """A rescaling ``avg_pool2d`` (TFLite's older integer mean): rescale the zero-centered sum,
    then divide by the count rounding half away from zero, then add the output zero point."""
    rq = Requant.fixed(_const(consts, "multiplier", np.int32), _const(consts, "shift", np.int32))
    return _rounding_divide(rq.apply(acc_centered), count) + int(consts["output_zero_point"][0])


def _float_global(raw_sum: np.ndarray, count: int, scale: np.float32, x_zp: int, y_zp: int):
    """onnxruntime's QLinearGlobalAveragePool: ``rint(float32(sum - zp * count) * scale)``."""
    acc = (raw_sum - x_zp * count).astype(np.float32)
    return np.rint(acc * scale) + y_zp


def _spatial_sum(x: np.ndarray) -> np.ndarray:
    """int64 ``[N, 1, 1, C]``: the sum over H and W. A float32 product with a ones vector
    (BLAS) where every partial sum is exact (``H * W * 128 < 2**24``): numpy's integer
    reduction over two leading axes runs several times slower on a small map."""
    n, h, w, c = x.shape
    if h * w * 128 >= 1 << 24:
        return x.sum(axis=(1, 2), keepdims=True, dtype=np.int64)
    total = np.matmul(np.ones(h * w, np.float32), x.reshape(n, h * w, c).astype(np.float32))
    return total.astype(np.int64).reshape(n, 1, 1, c)


_WINDOW_BYTES = 1 << 22  # the window copies are made this many bytes at a time


def _sequential_window_sums(xf: np.ndarray, kernel, stride, out_hw) -> np.ndarray:
    """Each window's float32 sum taken tap by tap in row-major order, as onnxruntime sums
    (padding adds +0.0 exactly), in one numpy call instead of a pass per tap: the windows are
    copied tap-major, ``[taps, outputs]`` (or, when a window is one contiguous block of whole
    rows, read in place), and reduced over the outer axis, which numpy does
    as one elementwise add of each tap row into the running row, in order. (A reduction whose
    inner loop runs along the taps would be summed pairwise, a different rounding: with one
    output value the taps would be the only axis, so that case keeps the per-tap loop.)"""
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_hw
    n, _, _, c = xf.shape
    image, row, pixel, item = xf.strides
    taps = np.ndarray((kh, kw, n, oh, ow, c), np.float32, xf, 0,
                      (row, pixel, image, sh * row, sw * pixel, item))
    total = np.empty((n, oh, ow, c), np.float32)
    if oh * ow * c < 2:
        total.fill(0)
        for view in taps.reshape(kh * kw, n, oh, ow, c):
            total += view
        return total
    if ow == 1 and kw * pixel == row and c >= 8:  # a window's taps are one contiguous block
        blocks = np.ndarray((n, oh, kh * kw, c), np.float32, xf, 0, (image, sh * row, pixel, item))
        return np.add.reduce(blocks, axis=2, out=total.reshape(n, oh, c)).reshape(total.shape)
    step = max(1, _WINDOW_BYTES // max(1, taps[:, :, :1].size * 4))  # images per chunk
    for start in range(0, n, step):
        chunk = taps[:, :, start:start + step]
        rows = np.ascontiguousarray(chunk).reshape(kh * kw, -1)  # [taps, outputs]
        np.add.reduce(rows, axis=0, out=total[start:start + step].reshape(-1))
    return total


def _window_counts(shape, kernel, stride, padding, ceil_pad, out_hw, count_include_pad):
    """int64 ``[1, OH, OW, 1]``: per window, the taps inside the image (``valid``) and the
    divisor (``count``: those, plus the declared padding if counted)."""
    (_, h, w, _), (kh, kw), (oh, ow) = shape, kernel, out_hw
    top = np.arange(oh) * stride[0] - padding[0]
    left = np.arange(ow) * stride[1] - padding[1]
    rows, cols = _taps_within(top, kh, 0, h), _taps_within(left, kw, 0, w)
    valid = (rows[:, None] * cols[None, :])[None, :, :, None].astype(np.int64)
    if not count_include_pad:
        return valid, valid
    rows = _taps_within(top, kh, -padding[0], h + padding[2] - ceil_pad[0])
    cols = _taps_within(left, kw, -padding[1], w + padding[3] - ceil_pad[1])
    return valid, (rows[:, None] * cols[None, :])[None, :, :, None].astype(np.int64)


def _taps_within(start: np.ndarray, taps: int, lo: int, hi: int) -> np.ndarray:
    """How many of the taps start, start + 1, ... start + taps - 1 lie in [lo, hi)."""
    return np.minimum(np.maximum(start + taps, lo), hi) - np.minimum(np.maximum(start, lo), hi)


def avg_pool2d(x, kernel, consts: dict, *, stride, padding=(0, 0, 0, 0),
               count_include_pad: bool = False, ceil_pad=(0, 0),
               act_range=(INT8_MIN, INT8_MAX)) -> np.ndarray:
    """Average pool. ``fixed``: TFLite's rounding division by the count (no rescale when input
    and output quantization are equal). ``float``: onnxruntime's QLinearAveragePool.

    ``ceil_pad`` is the part of the bottom and right ``padding`` that ONNX's ceil_mode added
    for the last window: like the declared padding it adds nothing to the sum, but
    ``count_include_pad`` never counts it (onnxruntime's AveragePool, PyTorch)."""
    return plan_avg_pool2d(kernel, consts, stride=stride, padding=padding,
                           count_include_pad=count_include_pad, ceil_pad=ceil_pad,
                           act_range=act_range)(x)


def plan_avg_pool2d(kernel, consts: dict, *, stride, padding=(0, 0, 0, 0),
                    count_include_pad: bool = False, ceil_pad=(0, 0),
                    act_range=(INT8_MIN, INT8_MAX)) -> "AvgPoolPlan":
    """``avg_pool2d``'s arguments checked and its constants read once (the executor keeps the
    plan per layer: at batch 1 this is a good part of a small pool's time)."""
    kernel, stride, padding = _pair("kernel", kernel), _pair("stride", stride), _pads(padding)
    ceil_pad = tuple(int(v) for v in ceil_pad)
    if not (0 <= ceil_pad[0] <= max(padding[2], 0) and 0 <= ceil_pad[1] <= max(padding[3], 0)):
        raise ValueError(f"ceil_pad {ceil_pad} must lie within the bottom/right padding")
    low, high = _act_range(act_range)
    x_zp = int(_const(consts, "input_zero_point", np.int32)[0])
    y_zp = int(_const(consts, "output_zero_point", np.int32)[0])
    if _is_fixed(consts):
        _const(consts, "multiplier", np.int32)
        _const(consts, "shift", np.int32)
        floats = None
    else:
        floats = tuple(_const(consts, key, np.float32)[0] for key in ("x_scale", "y_scale"))
        floats += (_const(consts, "global_scale", np.float32)[0]  # whole-image windows only
                   if "global_scale" in consts else None,)
    return AvgPoolPlan(kernel, stride, padding, bool(count_include_pad), ceil_pad, low, high,
                       x_zp, y_zp, consts, floats, float_constants(low, high),
                       () if floats is None else float_constants(x_zp, floats[0], floats[1], y_zp))


@dataclass(eq=False)
class AvgPoolPlan:
    """``avg_pool2d`` with its arguments checked: call it with an int8 ``[N, H, W, C]``."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    count_include_pad: bool
    ceil_pad: tuple[int, int]
    low: int
    high: int
    x_zp: int
    y_zp: int
    consts: dict
    floats: tuple | None  # float mode: x_scale, y_scale, global_scale (float32)
    float_bounds: tuple = ()  # float mode: low and high as float32 0-d arrays
    float_steps: tuple = ()  # float mode: x_zp, x_scale, y_scale, y_zp as float32 0-d arrays
    _shapes: dict = field(default_factory=dict, repr=False)  # x.shape[1:] -> (OH, OW, counts)

    def __call__(self, x) -> np.ndarray:
        x = _int8("x", x, 4)
        geometry = self._shapes.get(x.shape[1:])
        if geometry is None:
            geometry = self._shapes[x.shape[1:]] = self._geometry(x)
        oh, ow, valid, count = geometry
        kernel, padding, x_zp, y_zp = self.kernel, self.padding, self.x_zp, self.y_zp
        n, h, w, c = x.shape
        if self.floats is None:
            rescale = int(_const(self.consts, "rescale", np.int32)[0])
            if rescale:  # sum of (x - zp); padding contributes 0
                xp = _pad_nhwc(x.astype(np.int32) - x_zp, padding, 0)
            else:  # raw sum as TFLite does; counted padding holds the zero point
                xp = _pad_nhwc(x.astype(np.int32), padding, 0)
            acc = np.zeros((n, oh, ow, c), np.int64)
            for _, _, view in _windows(xp, kernel, self.stride, (1, 1), (oh, ow)):
                acc += view
            if self.count_include_pad and not rescale:
                acc += (count - valid) * x_zp
            out = (_fixed_mean(acc, count, self.consts) if rescale
                   else _rounding_divide(acc, count))
            return _clamp_to_int8(out, self.low, self.high)
        x_scale, y_scale, global_scale = self.floats
        low, high = self.float_bounds
        if count is None:  # onnxruntime runs a whole-image window without padding as a global
            if global_scale is None:
                _const(self.consts, "global_scale", np.float32)  # raises: names the key
            out = _float_global(_spatial_sum(x), h * w, global_scale, x_zp, y_zp)
            return clamp_to_int8(out, low, high)
        x_zp, x_scale, y_scale, y_zp = self.float_steps
        xf = x.astype(np.float32)
        np.subtract(xf, x_zp, out=xf)
        np.multiply(xf, x_scale, out=xf)
        if padding != (0, 0, 0, 0):
            xf = _pad_nhwc(xf, padding, 0)
        out = _sequential_window_sums(xf, kernel, self.stride, (oh, ow))
        np.divide(out, count, out=out)  # the mean; then as onnxruntime: rint(mean / y_scale + zp)
        np.divide(out, y_scale, out=out)
        np.add(out, y_zp, out=out)
        np.rint(out, out=out)
        return clamp_to_int8(out, low, high)

    def _geometry(self, x: np.ndarray) -> tuple:
        """``(OH, OW, valid taps, count)`` for inputs shaped like ``x``; float mode's count is
        float32, or None for a whole-image window (a global average)."""
        (oh, ow), kernel, padding = _spatial(x, self.kernel, self.stride, self.padding), \
            self.kernel, self.padding
        if (kernel == x.shape[1:3] and padding == (0, 0, 0, 0)
                and self.floats is not None):
            return oh, ow, None, None
        if padding == (0, 0, 0, 0):  # every window lies inside the image
            valid = count = np.int64(kernel[0] * kernel[1])
        else:
            valid, count = _window_counts(x.shape, kernel, self.stride, padding, self.ceil_pad,
                                          (oh, ow), self.count_include_pad)
        if self.floats is not None:
            count = np.asarray(count, np.float32)
        return oh, ow, valid, count


def global_avg_pool_constants(x_scale, x_zero_point, y_scale, y_zero_point, spatial,
                              mode: str) -> dict[str, np.ndarray]:
    """Constants for ``global_avg_pool`` over an input of ``spatial = (H, W)``."""
    _check_mode(mode)
    height, width = _pair("spatial", spatial)
    count = height * width
    consts = {"input_zero_point": _scalar_i32(_zero_point("x_zero_point", x_zero_point)),
              "output_zero_point": _scalar_i32(_zero_point("y_zero_point", y_zero_point)),
              "count": _scalar_i32(count)}
    if mode == "fixed":
        multiplier, shift = mean_multiplier(x_scale, y_scale, count)
        consts["multiplier"], consts["shift"] = _scalar_i32(multiplier), _scalar_i32(shift)
    else:
        consts["scale"] = _global_scale(x_scale, y_scale, count)
    return consts


def mean_multiplier(x_scale, y_scale, count: int) -> tuple[int, int]:
    """TFLite Micro's int8 MEAN constants: QuantizeMultiplier(double(x_scale) / double(y_scale))
    with the division by ``count`` folded into the multiplier. The multiplier is widened by
    ``r`` bits (at most log2(count), 32, and what keeps the shift >= -31) before the integer
    division, so ``sum * multiplier * 2**(shift - 31)`` is the mean in one requantization:
    no division on the device, and exactly TFLM's result."""
    multiplier, shift = quantize_multiplier(float(np.float32(x_scale)) /
                                            float(np.float32(y_scale)))
    r = min(int(count).bit_length() - 1, 32, 31 + shift)
    return int((multiplier << r) // int(count)), shift - r


def global_avg_pool(x, consts: dict, *, act_range=(INT8_MIN, INT8_MAX)) -> np.ndarray:
    """Mean over H and W -> ``[N, 1, 1, C]``. ``fixed``: TFLite Micro's int8 MEAN (the
    zero-centered sum requantized once by ``mean_multiplier``'s constants); ``float``:
    onnxruntime's QLinearGlobalAveragePool."""
    x = _int8("x", x, 4)
    low, high = _act_range(act_range)
    count = x.shape[1] * x.shape[2]
    if int(_const(consts, "count", np.int32)[0]) != count:
        raise ValueError(f"consts were made for {int(consts['count'][0])} positions but x has "
                         f"{x.shape[1]}x{x.shape[2]} = {count}")
    x_zp = int(_const(consts, "input_zero_point", np.int32)[0])
    y_zp = int(_const(consts, "output_zero_point", np.int32)[0])
    raw = _spatial_sum(x)
    if _is_fixed(consts):
        rq = Requant.fixed(_const(consts, "multiplier", np.int32),
                           _const(consts, "shift", np.int32))
        out = rq.apply(raw - x_zp * count) + y_zp
    else:
        out = _float_global(raw, count, _const(consts, "scale", np.float32)[0], x_zp, y_zp)
    return _clamp_to_int8(out, low, high)
