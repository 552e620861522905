"""Requantization: from an int32 accumulator back to int8, in the two exact schemes we support.

``fixed`` is the TFLite Micro / CMSIS-NN integer scheme (a Q31 multiplier and a power-of-two
shift per output channel); it needs no FPU. ``float`` is onnxruntime's QLinearConv scheme (a
float32 multiplier, round half to even); it is bit-exact with onnxruntime. The constants are
computed once, here, at export time; every executor (runtime/, the C firmware) only evaluates.
See docs/ARITHMETIC.md for the formulas and why each step is what it is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
MODES = ("fixed", "float")
ROUNDINGS = ("double", "single")


def _as_channel_array(values, dtype, name: str) -> np.ndarray:
    array = np.atleast_1d(np.asarray(values))
    if array.ndim != 1:
        raise ValueError(f"{name} must be a scalar or a 1-D array, got shape {array.shape}")
    if dtype is np.int32:
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
        if array.size and (array.min() < INT32_MIN or array.max() > INT32_MAX):
            raise ValueError(f"{name} does not fit in int32")
    return array.astype(dtype)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: ``real ~= multiplier * 2**(shift - 31)``, multiplier in Q31.

    ``shift > 0`` is a left shift. A multiplier too small to represent becomes (0, 0).
    """
    if not math.isfinite(real) or real < 0:
        raise ValueError(f"requantization scale must be finite and >= 0, got {real!r}")
    if real == 0.0:
        return 0, 0
    fraction, exponent = math.frexp(real)
    q = math.floor(fraction * 2.0**31 + 0.5)  # fraction > 0: half away from zero
    if q == 2**31:
        q //= 2
        exponent += 1
    if exponent < -31:
        return 0, 0
    return int(q), int(exponent)


@dataclass(frozen=True, eq=False)
class Requant:
    """Per-output-channel requantization constants; per-tensor is one value broadcast."""

    mode: str
    multiplier: np.ndarray | None = None  # int32[M], fixed mode
    shift: np.ndarray | None = None  # int32[M], fixed mode, > 0 is a left shift
    scale: np.ndarray | None = None  # float32[M], float mode
    rounding: str = "double"

    @classmethod
    def fixed(cls, multiplier, shift, rounding: str = "double") -> "Requant":
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
        m = _as_channel_array(multiplier, np.int32, "multiplier")
        s = _as_channel_array(shift, np.int32, "shift")
        if m.shape != s.shape and m.size != 1 and s.size != 1:
            raise ValueError(f"multiplier has {m.size} channels but shift has {s.size}")
        m, s = np.broadcast_arrays(m, s)
        if s.size and (s.min() < -31 or s.max() > 30):
            raise ValueError("shift must lie in [-31, 30]")
        return cls("fixed", multiplier=m.copy(), shift=s.copy(), rounding=rounding)

    @classmethod
    def float(cls, scale) -> "Requant":
        s = _as_channel_array(scale, np.float32, "scale")
        if not np.all(np.isfinite(s)) or np.any(s < 0):
            raise ValueError("scale must be finite and >= 0")
        return cls("float", scale=s)

    @classmethod
    def from_scales(cls, x_scale, w_scales, y_scale, mode: str = "fixed",
                    rounding: str = "double") -> "Requant":
        """The constants for ``y = x_scale * w_scale[c] / y_scale * acc``, computed as each
        scheme's reference implementation computes them (double for fixed, float32 for float)."""
        w = np.atleast_1d(np.asarray(w_scales, dtype=np.float32))
        if mode == "fixed":
            pairs = [quantize_multiplier(float(np.float32(x_scale)) * float(ws)
                                         / float(np.float32(y_scale))) for ws in w]
            return cls.fixed([p[0] for p in pairs], [p[1] for p in pairs], rounding)
        if mode == "float":
            real = (np.float32(x_scale) * w) / np.float32(y_scale)
            return cls.float(real.astype(np.float32))
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")

    @property
    def channels(self) -> int:
        return int((self.multiplier if self.mode == "fixed" else self.scale).size)

    def apply(self, acc: np.ndarray) -> np.ndarray:
        """Scale an accumulator (channels on the last axis) to output units, unclamped, before
        the output zero point is added: int64 in fixed mode, integer-valued float32 in float mode.

        ``acc`` holds integers; a float array is accepted when its values are exact integers
        (the fast kernels accumulate in float32/float64 where that is provably exact)."""
        acc = np.asarray(acc)
        if self.mode == "float":
            # float32(acc) rounds like onnxruntime's int32 -> float conversion
            return _scale_and_round(acc.astype(np.float32), self.scale)
        acc = acc.astype(np.int64)
        multiplier = self.multiplier.astype(np.int64)
        shift = self.shift.astype(np.int64)
        if self.rounding == "single":
            total = 31 - shift
            return (acc * multiplier + (np.int64(1) << (total - 1))) >> total
        a = (acc << np.maximum(shift, 0)).astype(np.int32).astype(np.int64)
        high = (a * multiplier + (1 << 30)) >> 31
        high = np.where((a == INT32_MIN) & (multiplier == INT32_MIN), INT32_MAX, high)
        right = np.maximum(-shift, 0)
        mask = (np.int64(1) << right) - 1
        remainder = high & mask
        threshold = (mask >> 1) + (high < 0)
        return (high >> right) + (remainder > threshold)


def _scale_and_round(acc32: np.ndarray, scale) -> np.ndarray:
    """onnxruntime's float requantization ``rint(acc * scale)``, in place on a float32 array."""
    np.multiply(acc32, scale, out=acc32)
    return np.rint(acc32, out=acc32)


def _to_int8(out: np.ndarray, output_zero_point: int, act_range) -> np.ndarray:
    """Add the zero point and clamp in ``out``'s own type (in place), then convert: every value
    is in int8 range before the cast, so no cast ever wraps or saturates."""
    out += out.dtype.type(output_zero_point)
    np.clip(out, act_range[0], act_range[1], out=out)
    return out.astype(np.int8)


def requantize(acc: np.ndarray, rq: Requant, output_zero_point: int,
               act_range: tuple[int, int] = (-128, 127)) -> np.ndarray:
    """int32 accumulators -> int8: scale, add the output zero point, clamp to the activation
    range (a fused ReLU/ReLU6 is just a narrower range)."""
    return _to_int8(rq.apply(acc), int(output_zero_point), act_range)


def requantize_inplace(acc32: np.ndarray, rq: Requant, output_zero_point: int,
                       act_range: tuple[int, int] = (-128, 127), scale=None) -> np.ndarray:
    """Float-mode ``requantize`` of a float32 accumulator (exact integers) that the caller gives
    up: scaled, rounded and clamped in place with no temporaries, which is most of a small
    layer's time. ``scale`` is ``rq.scale`` laid out to broadcast over ``acc32`` (say, tiled
    along a whole output row so every pass runs over one long contiguous row)."""
    if rq.mode != "float" or acc32.dtype != np.float32:
        raise ValueError(f"requantize_inplace needs float mode and a float32 accumulator, got "
                         f"{rq.mode} and {acc32.dtype}")
    out = _scale_and_round(acc32, rq.scale if scale is None else scale)
    return _to_int8(out, int(output_zero_point), act_range)
