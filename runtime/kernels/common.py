"""Argument checks, padding and window helpers, and constant-dict helpers shared by the kernels."""
from __future__ import annotations

import numpy as np

from runtime.requant import MODES, quantize_multiplier

INT8_MIN, INT8_MAX = -128, 127
_EXACT_F32 = 2**24  # integers below this magnitude are exact in float32
ADD_LEFT_SHIFT = 20  # TFLite's headroom for int8 add: inputs are scaled up by 2**20 first


# -- argument checking ---------------------------------------------------------------------------

def _int8(name: str, array, ndim: int | None = None) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.int8:
        raise ValueError(f"{name} must be int8, got {array.dtype}")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {array.shape}")
    return array


def _pair(name: str, value) -> tuple[int, int]:
    if isinstance(value, (tuple, list)) and len(value) == 2:  # the usual case, without numpy
        values = (int(value[0]), int(value[1]))
    else:
        values = tuple(int(v) for v in np.broadcast_to(np.asarray(value), (2,)))
    if min(values) < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return values


def _pads(padding) -> tuple[int, int, int, int]:
    pads = tuple(int(p) for p in padding)
    if len(pads) != 4:
        raise ValueError(f"padding must be (top, left, bottom, right), got {padding!r}")
    return pads


def _zero_point(name: str, value) -> int:
    value = int(value)
    if not INT8_MIN <= value <= INT8_MAX:
        raise ValueError(f"{name} must lie in [-128, 127], got {value}")
    return value


def _act_range(act_range) -> tuple[int, int]:
    low, high = (int(v) for v in act_range)
    if not INT8_MIN <= low <= high <= INT8_MAX:
        raise ValueError(f"act_range must satisfy -128 <= min <= max <= 127, got {act_range!r}")
    return low, high


def _clamp_to_int8(out: np.ndarray, low: int, high: int) -> np.ndarray:
    """``np.clip(out, low, high).astype(np.int8)`` for a temporary the caller gives up: in
    place, through the method (``np.clip``'s wrapper costs microseconds a call, most of a
    small layer's clamp; ``np.maximum`` against a scalar is not vectorized)."""
    out.clip(low, high, out=out)
    return out.astype(np.int8)


def worst_case_accumulator(w: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """Per output channel, the largest |accumulator| any int8 input can produce: every
    ``x - input_zero_point`` lies in [-255, 255]. export/ refuses a layer whose bound exceeds
    int32 and the kernels refuse to plan one, from this one formula."""
    w64 = np.asarray(w).reshape(len(w), -1).astype(np.int64)
    bound = 255 * np.abs(w64).sum(axis=1)
    if bias is not None:
        bound += np.abs(np.asarray(bias, dtype=np.int64))
    return bound


def output_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int,
                dilation: int = 1) -> int:
    """Output length along one axis (floor mode; ceil mode is extra padding after)."""
    span = (kernel - 1) * dilation + 1
    return (size + pad_before + pad_after - span) // stride + 1


def _pad_nhwc(x: np.ndarray, pads, value, dtype=None,
              bordered: np.ndarray | None = None) -> np.ndarray:
    """Pad (or, for negative pads, crop) H and W with ``value``, converting to ``dtype``.
    Only the border is filled, so the image is written exactly once; a
    ``bordered`` array from an earlier call with the same shapes already has its border, and
    only the image is written into it."""
    top, left, bottom, right = pads
    x = x[:, max(-top, 0):x.shape[1] - max(-bottom, 0), max(-left, 0):x.shape[2] - max(-right, 0)]
    top, left, bottom, right = (max(p, 0) for p in pads)
    n, h, w, c = x.shape
    shape = (n, h + top + bottom, w + left + right, c)
    if bordered is None:
        out = np.empty(shape, dtype or x.dtype)
        out[:, :top] = value
        out[:, top + h:] = value
        out[:, top:top + h, :left] = value
        out[:, top:top + h, left + w:] = value
    else:
        out = bordered.reshape(shape)
    np.copyto(out[:, top:top + h, left:left + w], x, casting="unsafe")
    return out


def _windows(xp: np.ndarray, kernel, stride, dilation, out_hw):
    """Yield ``(ky, kx, view)``: the input tap (ky, kx) of every output position, as a strided
    view ``[N, OH, OW, C]`` of the padded input, in row-major tap order."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = ky * dh, kx * dw
            yield ky, kx, xp[:, y0:y0 + (oh - 1) * sh + 1:sh, x0:x0 + (ow - 1) * sw + 1:sw, :]


def _spatial(x, kernel, stride, padding, dilation=(1, 1)):
    kh, kw = kernel
    pt, pl, pb, pr = padding
    oh = output_size(x.shape[1], kh, stride[0], pt, pb, dilation[0])
    ow = output_size(x.shape[2], kw, stride[1], pl, pr, dilation[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"kernel {kernel} does not fit input {x.shape[1:3]} with padding "
                         f"{padding} (output would be {oh}x{ow})")
    return oh, ow


# -- constant dicts --------------------------------------------------------------------------------

def _const(consts: dict, key: str, dtype) -> np.ndarray:
    try:
        value = np.asarray(consts[key])
    except KeyError:
        raise ValueError(f"consts is missing {key!r} (make it with the *_constants function)")
    if value.dtype != dtype:
        raise ValueError(f"consts[{key!r}] must be {np.dtype(dtype).name}, got {value.dtype}")
    return value


def _is_fixed(consts: dict) -> bool:
    return "multiplier" in consts


def _scalar_i32(value) -> np.ndarray:
    return np.array([int(value)], np.int32)


def _scalar_f32(value) -> np.ndarray:
    return np.array([value], np.float32)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _fixed_rescale(x_scale, y_scale) -> tuple[np.ndarray, np.ndarray]:
    multiplier, shift = quantize_multiplier(float(np.float32(x_scale)) / float(np.float32(y_scale)))
    return _scalar_i32(multiplier), _scalar_i32(shift)


def _same_quantization(x_scale, x_zp, y_scale, y_zp) -> bool:
    return np.float32(x_scale) == np.float32(y_scale) and int(x_zp) == int(y_zp)
