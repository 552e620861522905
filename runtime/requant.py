"""Requantization: from an int32 accumulator back to int8, in the two exact schemes we support.

``fixed`` is the TFLite Micro / CMSIS-NN integer scheme (a Q31 multiplier and a power-of-two
shift per output channel); it needs no FPU. ``float`` is onnxruntime's QLinearConv scheme (a
float32 multiplier, round half to even); it is bit-exact with onnxruntime. The constants are
computed once, here, at export time; every executor (runtime/, the C firmware) only evaluates.
See docs/ARITHMETIC.md for the formulas and why each step is what it is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

try:
    from numpy._core.umath import clip as clip_ufunc  # behind ndarray.clip (numpy 2)
except ImportError:  # numpy 1.x
    from numpy.core.umath import clip as clip_ufunc

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

    @cached_property
    def _terms(self) -> "_Terms":
        return _double_rounding_terms(self.shift)

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
        out = np.array(acc, dtype=np.int64)  # a copy we own: every step below is in place
        if self.rounding == "single":
            total = 31 - self.shift.astype(np.int64)
            out *= self.multiplier
            out += np.int64(1) << (total - 1)
            return np.right_shift(out, total, out=out)
        left = np.maximum(self.shift, 0).astype(np.int64)
        if left.any():  # a = wrap_int32(acc << left)
            out = np.left_shift(out, left, out=out).astype(np.int32).astype(np.int64)
        out *= self.multiplier
        if (self.multiplier == INT32_MIN).any():  # SRDHM(INT32_MIN, INT32_MIN) = INT32_MAX
            np.minimum(out, _SATURATED_PRODUCT, out=out)
        terms = self._terms
        out += terms.offset
        if terms.threshold is not None:
            out -= (out < terms.threshold) * _TWO31
        return np.right_shift(out, terms.shift, out=out)


INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_TWO31 = np.int64(1 << 31)
# The one product a * M above 2**62 - 2**31 is INT32_MIN * INT32_MIN = 2**62; capping it here
# gives (2**62 - 2**31 + 2**30) >> 31 = INT32_MAX, SRDHM's saturated value.
_SATURATED_PRODUCT = np.int64(2**62 - 2**31)


@dataclass(frozen=True)
class _Terms:
    offset: np.ndarray  # int64[M]
    threshold: np.ndarray | None  # int64[M], None when no channel divides by a power of two
    shift: np.ndarray  # int64[M]


def _double_rounding_terms(shift: np.ndarray, extra_offset=0) -> _Terms:
    """SRDHM then RoundingDivideByPOT as one floor division by ``2**(31 + r)`` of the product
    ``p = a * M`` (docs/ARITHMETIC.md proves it):
    ``out = (p + 2**30 + 2**(30+r) - 2**31 * [p < -2**30]) >> (31 + r)`` for ``r >= 1``, and
    ``(p + 2**30) >> 31`` for ``r = 0``. With ``t = p + offset``, ``p < -2**30`` is
    ``t < threshold``; ``extra_offset`` (Python ints, say ``zp * 2**(31 + r)``) is added to
    both."""
    offsets, thresholds, shifts = [], [], []
    extra = np.broadcast_to(np.asarray(extra_offset, dtype=object), shift.shape)
    for s, e in zip(shift.tolist(), extra.tolist()):
        r = max(-s, 0)
        offsets.append((1 << 30) + ((1 << (30 + r)) if r else 0) + e)
        thresholds.append((1 << (30 + r)) + e if r else INT64_MIN)
        shifts.append(31 + r)
    return _Terms(np.array(offsets, np.int64),
                  np.array(thresholds, np.int64) if max(shifts, default=31) > 31 else None,
                  np.array(shifts, np.int64))


@dataclass(frozen=True, eq=False)
class BoundedFixed:
    """Fixed-mode requantization straight to int8 of accumulators proven bounded.

    Made by ``bounded_fixed``, which proves per channel that ``acc << left`` cannot wrap and
    that the intermediates fit: the left shift then folds into the multiplier, the two
    roundings are one floor division (``_double_rounding_terms``), and the bias and the output
    zero point fold into the offset. Two int64 passes, ``t = acc * multiplier + offset``; then
    in int32 ``u = t >> 31``, minus 1 where ``u < threshold`` (RoundingDivideByPOT's negative
    ties), ``>> shift``, clamp. Each constant is per channel, or tiled (``tile``) to broadcast
    over whole output rows so every pass is one long loop."""

    multiplier: np.ndarray  # int64
    offset: np.ndarray  # int64
    threshold: np.ndarray | None  # int32, None when no channel rounds twice
    shift: np.ndarray | int  # int32 (or one for all), the division by 2**(31 + shift) after 31 bits
    act_range: tuple[int, int]

    def tile(self, reps: int) -> "BoundedFixed":
        tiled = {name: value if value is None or np.ndim(value) == 0 else np.tile(value, reps)
                 for name, value in (("multiplier", self.multiplier), ("offset", self.offset),
                                     ("threshold", self.threshold), ("shift", self.shift))}
        return BoundedFixed(act_range=self.act_range, **tiled)

    @staticmethod
    def workspace(shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Reusable work arrays for ``__call__`` on accumulators of ``shape``: at most
        ``BLOCK`` elements' worth of rows, so they stay in cache however large the batch."""
        rows = max(1, min(shape[0], BoundedFixed.BLOCK // max(1, shape[-1])))
        block = (rows,) + tuple(shape[1:])
        return np.empty(block, np.int64), np.empty(block, np.int32), np.empty(block, np.bool_)

    BLOCK = 1 << 14

    def __call__(self, acc: np.ndarray, workspace=None) -> np.ndarray:
        """``acc`` (integers, or floats holding exact integers, within the proven bound; the
        constants broadcast over its rows) -> int8, computed a block of rows at a time in
        ``workspace`` if given."""
        workspace = workspace if workspace is not None else self.workspace(acc.shape)
        out = np.empty(acc.shape, np.int8)
        step = workspace[0].shape[0]
        for start in range(0, acc.shape[0], step):
            stop = min(start + step, acc.shape[0])
            self._block(acc[start:stop], out[start:stop],
                        [w[:stop - start] for w in workspace])
        return out

    def _block(self, acc, out, workspace) -> None:
        t, u, below = workspace
        np.multiply(acc, self.multiplier, out=t, dtype=np.int64, casting="unsafe")
        t += self.offset
        np.right_shift(t, 31, out=u, casting="unsafe")  # proven to fit in int32
        if self.threshold is not None:
            np.less(u, self.threshold, out=below)
            u -= below
        np.right_shift(u, self.shift, out=u)
        np.clip(u, self.act_range[0], self.act_range[1], out=out, casting="unsafe")


def bounded_fixed(rq: Requant, acc_bound, bias=None, output_zero_point: int = 0,
                  act_range: tuple[int, int] = (-128, 127),
                  float64: bool = True) -> "BoundedFixed | Float64Fixed | None":
    """Fixed-mode requantization straight to int8 for accumulators ``acc`` with ``|acc[..., c]|
    <= acc_bound[c]`` whose true value is ``acc + bias`` (``bias`` folds into the offset), or
    None when the proof fails for some channel (a left shift that could wrap in int32, an
    intermediate that could overflow int64 or, after the first 31 bits, int32): then use
    ``requantize``. The float64 evaluation (``Float64Fixed``, the faster) where its own bound
    is also proven and ``float64`` is true, else the int64 one (``BoundedFixed``)."""
    channels = _bounded_channels(rq, acc_bound, bias, output_zero_point)
    if channels is None:
        return None
    act = (int(act_range[0]), int(act_range[1]))
    fast = _float64_fixed(channels, act) if float64 else None
    return fast if fast is not None else _int64_fixed(channels, act)


def _bounded_channels(rq: Requant, acc_bound, bias, output_zero_point):
    """Per channel ``(bound, multiplier, offset, threshold or None, shift)`` with ``t = acc *
    multiplier + offset``, ``u = floor(t / 2**31)``, ``y = (u - [u < threshold]) >> shift``
    (the output zero point included), or None where the int64 proof fails. Python integers
    throughout."""
    if rq.mode != "fixed":
        raise ValueError(f"bounded_fixed needs fixed mode, got {rq.mode}")
    bias = 0 if bias is None else bias
    size = max(rq.channels, np.size(acc_bound), np.size(bias))
    columns = [np.broadcast_to(np.asarray(v, dtype=object), (size,)).tolist()
               for v in (rq.multiplier.astype(object), rq.shift.astype(object), acc_bound, bias)]
    zp = int(output_zero_point)
    channels = []
    for m, s, bound, b in zip(*columns):
        m, s, bound, b = int(m), int(s), int(bound), int(b)
        if rq.rounding == "single":  # (acc * M + 2**(T-1)) >> T, T = 31 - s
            total = 31 - s
            multiplier, offset, threshold = m, (1 << (total - 1)) + (zp << total), None
            if total < 31:  # scale up to a division by 2**31: same quotient
                multiplier, offset, total = multiplier << (31 - total), offset << (31 - total), 31
        else:
            left, right = max(s, 0), max(-s, 0)
            if (bound + abs(b)) << left > INT32_MAX:
                return None  # acc << left could wrap (or reach INT32_MIN, where SRDHM saturates)
            multiplier, total = m << left, 31 + right
            offset = (1 << 30) + ((1 << (30 + right)) if right else 0) + (zp << total)
            threshold = ((1 << (30 + right)) + (zp << total)) >> 31 if right else None
        offset += b * multiplier
        if not _fits(bound, multiplier, offset):
            return None
        channels.append((bound, multiplier, offset, threshold, total - 31))
    return channels


def _int64_fixed(channels, act_range) -> BoundedFixed:
    thresholds = [INT32_MIN if c[3] is None else c[3] for c in channels]
    shifts = {c[4] for c in channels}
    return BoundedFixed(
        multiplier=np.array([c[1] for c in channels], np.int64),
        offset=np.array([c[2] for c in channels], np.int64),
        threshold=None if all(c[3] is None for c in channels) else np.array(thresholds, np.int32),
        # one shift for every channel (per-tensor) is a scalar: a faster pass
        shift=shifts.pop() if len(shifts) == 1 else np.array([c[4] for c in channels], np.int32),
        act_range=act_range)


_F64_EXACT = 1 << 53  # every integer of smaller magnitude is a float64


def _float64_fixed(channels, act_range) -> "Float64Fixed | None":
    """``Float64Fixed``'s constants, or None unless every channel proves (docs/ARITHMETIC.md):
    with ``Q`` the least multiple of 256 that makes ``t + Q * 2**(31 + shift)`` non-negative,
    every value ``acc * multiplier + offset + Q * 2**(31 + shift)`` and that constant stay
    below 2**53, so float64 holds each exactly and truncation to int32 is the floor."""
    low, high = act_range
    scales, constants, thresholds, shifts, lows, highs = [], [], [], [], [], []
    for bound, m, offset, threshold, shift in channels:
        need = max(0, -((offset - bound * abs(m)) >> (31 + shift)))
        lift = -(-need // 256) * 256  # Q
        constant = offset + (lift << (31 + shift))
        if bound * abs(m) + abs(constant) >= _F64_EXACT:
            return None
        scales.append(float(m) * 2.0**-31)  # exact: |m| < 2**53, times a power of two
        constants.append(float(constant) * 2.0**-31)
        thresholds.append(INT32_MIN if threshold is None else threshold + (lift << shift))
        shifts.append(shift)
        lows.append(low + lift)
        highs.append(high + lift)
    return Float64Fixed(
        scale=np.array(scales), constant=np.array(constants),
        threshold=None if all(c[3] is None for c in channels) else np.array(thresholds, np.int32),
        shift=np.array(shifts, np.int32) if any(shifts) else None,
        low=np.array(lows, np.int32), high=np.array(highs, np.int32))


@dataclass(frozen=True, eq=False)
class Float64Fixed:
    """``BoundedFixed``'s arithmetic evaluated exactly in float64, for accumulators small
    enough (``_float64_fixed`` proves it): ``y = acc * scale + constant`` is exact (every value
    an integer multiple of 2**-31 below 2**22, lifted non-negative by ``Q``), so its
    truncation to int32 is ``u + Q * 2**shift``, ``u = floor(t / 2**31)``; then in int32 the
    tie correction, ``>> shift`` and the clamp to ``act_range + Q``; ``Q`` is a multiple of
    256, so the cast to int8 drops it. Why: numpy's int64 multiply is scalar code, its float64
    multiply is SIMD; and every constant is laid out over a whole block (``tile``,
    ``_block_constants``), so each pass is one flat contiguous loop."""

    scale: np.ndarray  # float64: multiplier * 2**-31
    constant: np.ndarray  # float64: (offset + Q * 2**(31 + shift)) * 2**-31
    threshold: np.ndarray | None  # int32: threshold + Q * 2**shift; None when none rounds twice
    shift: np.ndarray | None  # int32; None when every shift is 0
    low: np.ndarray  # int32: act_min + Q
    high: np.ndarray  # int32: act_max + Q
    _blocks: dict = field(default_factory=dict, repr=False)  # block length -> flat constants

    BLOCK = 1 << 14

    def tile(self, reps: int) -> "Float64Fixed":
        names = ("scale", "constant", "threshold", "shift", "low", "high")
        return Float64Fixed(**{n: None if getattr(self, n) is None else
                               np.tile(getattr(self, n), reps) for n in names})

    def workspace(self, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Reusable flat work arrays for a block of whole rows of accumulators ``shape``."""
        size = self._block_rows(shape) * int(np.prod(shape[1:], dtype=np.int64))
        return np.empty(size, np.float64), np.empty(size, np.int32), np.empty(size, np.bool_)

    def _block_rows(self, shape) -> int:
        return max(1, min(shape[0], self.BLOCK // max(1, int(np.prod(shape[1:])))))

    def __call__(self, acc: np.ndarray, workspace=None) -> np.ndarray:
        """``acc`` (integers, or floats holding exact integers, within the proven bound; the
        constants cover its last axis) -> int8, a block of rows at a time."""
        workspace = workspace if workspace is not None else self.workspace(acc.shape)
        out = np.empty(acc.shape, np.int8)
        rows = acc.shape[0]
        row = acc.size // rows if rows else 0
        step = max(1, min(rows, workspace[0].size // max(1, row)))
        flat_acc, flat_out = acc.reshape(rows, row), out.reshape(rows, row)
        for start in range(0, rows, step):
            stop = min(start + step, rows)
            size = (stop - start) * row
            self._block(flat_acc[start:stop].reshape(-1), flat_out[start:stop].reshape(-1),
                        workspace, size, self._block_constants(size))
        return out

    def _block_constants(self, size: int) -> tuple:
        constants = self._blocks.get(size)
        if constants is None:
            reps = size // self.scale.size
            constants = self._blocks[size] = tuple(
                None if value is None else np.tile(value, reps) for value in
                (self.scale, self.constant, self.threshold, self.shift, self.low, self.high))
        return constants

    @staticmethod
    def _block(acc, out, workspace, size, constants) -> None:
        y, u, below = workspace[0][:size], workspace[1][:size], workspace[2][:size]
        scale, constant, threshold, shift, low, high = constants
        np.copyto(y, acc)  # exact: integers, |acc| * |m| < 2**53
        np.multiply(y, scale, out=y)
        np.add(y, constant, out=y)
        np.copyto(u, y, casting="unsafe")  # y >= 0: truncation is the floor
        if threshold is not None:
            np.less(u, threshold, out=below)
            np.subtract(u, below, out=u)
        if shift is not None:
            np.right_shift(u, shift, out=u)
        np.minimum(u, high, out=u)  # array bounds: numpy's SIMD loop (a scalar is not)
        np.maximum(u, low, out=u)
        np.copyto(out, u, casting="unsafe")  # minus Q, a multiple of 256


def _fits(bound: int, multiplier: int, offset: int) -> bool:
    """``t = acc * multiplier + offset`` fits int64 for ``|acc| <= bound``, and ``(t >> 31) - 1``
    fits int32."""
    largest = bound * abs(multiplier) + abs(offset)
    return largest <= _INT64_MAX and (largest >> 31) + 2 <= INT32_MAX


def _scale_and_round(acc32: np.ndarray, scale) -> np.ndarray:
    """onnxruntime's float requantization ``rint(acc * scale)``, in place on a float32 array."""
    np.multiply(acc32, scale, out=acc32)
    return np.rint(acc32, out=acc32)


def _to_int8(out: np.ndarray, output_zero_point: int, act_range) -> np.ndarray:
    """Add the zero point and clamp in ``out``'s own type (in place), then convert: every value
    is in int8 range before the cast, so no cast ever wraps or saturates."""
    zero_point, low, high = _constants(out.dtype, output_zero_point, *act_range)
    np.add(out, zero_point, out=out)
    return clamp_to_int8(out, low, high)


def float_constants(*values) -> tuple[np.ndarray, ...]:
    """``values`` as float32 constants for ``clamp_to_int8`` and in-place passes."""
    return _constants(np.dtype(np.float32), *values)


def clamp_to_int8(out: np.ndarray, low, high) -> np.ndarray:
    """``out`` clamped in place to ``[low, high]`` (within int8), then cast to int8. The clip
    ufunc itself: ``ndarray.clip`` and ``np.clip`` are Python wrappers around it that cost
    more than the pass itself on a small layer (bounds as ``_constants`` save a conversion)."""
    clip_ufunc(out, low, high, out=out)
    return out.astype(np.int8)


@lru_cache(maxsize=4096)
def _constants(dtype: np.dtype, *values) -> tuple[np.ndarray, ...]:
    """``values`` as read-only 0-d arrays of ``dtype``: a ufunc takes them as they are, while a
    Python or numpy scalar is converted on every call (measured: ~0.5 us of a 1.4 us pass)."""
    arrays = tuple(np.array(v, dtype) for v in values)
    for array in arrays:
        array.setflags(write=False)
    return arrays


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
