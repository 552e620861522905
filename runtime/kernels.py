"""The int8 kernels: bit-exact, vectorized, and the arithmetic every other executor must match.

Activations are int8 NHWC ``[N, H, W, C]``, conv weights int8 OHWI ``[M, KH, KW, C // groups]``.
Each op exists in two requantization modes (see runtime/requant.py and docs/ARITHMETIC.md):
``fixed`` follows TensorFlow Lite Micro's int8 reference kernels, ``float`` follows
onnxruntime's CPU kernels. The slow loop versions in runtime/reference.py are the oracle for
the code here.

Ops whose constants are not a plain per-channel requantization (average pool, global average
pool, add) take a ``consts`` dict made once by ``avg_pool_constants``,
``global_avg_pool_constants`` or ``add_constants``. That dict is exactly what export/ stores in
``Layer.arrays`` and what the C generator copies: its keys are documented in docs/ARITHMETIC.md.

Speed: integer products summed in float32 are exact while every partial sum stays below 2**24,
so convolutions run as float32 GEMMs (BLAS) whenever a bound computed from the weights proves
it, and split the reduction into exact chunks when it cannot. Depthwise convolutions have no
reduction for a GEMM to exploit; they run as einsums along whole output rows instead, over an
input padded straight into one plane per column phase of the stride, so only kept columns are
computed. Small layers are dominated by per-pass costs, so a plan keeps its padded input buffer
and its row-tiled constants, and float requantization works in place
(benchmarks/bench_runtime.py, docs/PERFORMANCE.md).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import as_strided

from runtime.requant import (INT32_MAX, MODES, BoundedFixed, Float64Fixed, Requant,
                             bounded_fixed, quantize_multiplier, requantize, requantize_inplace)

__all__ = [
    "Requant", "ConvPlan", "plan_conv2d", "conv2d", "conv2d_accumulate", "fully_connected",
    "fully_connected_accumulate", "max_pool2d",
    "avg_pool2d", "avg_pool_constants", "global_avg_pool", "global_avg_pool_constants", "add",
    "add_constants", "quantize", "dequantize", "output_size", "worst_case_accumulator",
]

INT8_MIN, INT8_MAX = -128, 127
_EXACT_F32 = 2**24  # integers below this magnitude are exact in float32
_SCRATCH_BYTES = 1 << 20  # a conv plan keeps its padded input buffer up to this size
_TAP_MAJOR_CHANNELS = 4  # im2col copies tap-major up to this many input channels
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


# -- convolution and fully connected -------------------------------------------------------------

def _exact_chunks(w_abs_sum_max: int, k: int) -> int:
    """How many float32 GEMMs the K reduction must be split into so every partial sum is exact.

    ``|x| <= 128`` for int8 inputs, so a chunk is exact when ``128 * sum|w| < 2**24``."""
    if 128 * w_abs_sum_max < _EXACT_F32:
        return 1
    per_chunk = _EXACT_F32 // (128 * 127) - 1  # worst case |w| = 127 (or 128)
    return -(-k // per_chunk)


@dataclass(eq=False)
class ConvPlan:
    """Weights preprocessed once for ``conv2d``: float32 GEMM matrices, the input zero point
    folded into the bias, and the exactness/overflow analysis. Call it with an int8 input;
    ``accumulate`` gives the int32 accumulators the call requantizes (a plan made with
    ``rq=None`` only accumulates)."""

    weights_shape: tuple[int, int, int, int]
    groups: int
    stride: tuple[int, int]
    dilation: tuple[int, int]
    padding: tuple[int, int, int, int]
    input_zero_point: int
    output_zero_point: int
    act_range: tuple[int, int]
    rq: Requant | None
    matrices: np.ndarray  # float32 [G, KH*KW*Cg, Mg], or [KH, KW, M] for depthwise
    bias: np.ndarray  # int64 [M]: bias - input_zero_point * sum(w) (the input is padded with zp)
    chunks: int
    depthwise: bool
    acc_fits_f32: bool  # every accumulator (bias included) is exact in float32
    fixed: BoundedFixed | Float64Fixed | None = None  # fixed mode, the bias folded in
    _rows: dict = field(default_factory=dict, repr=False)  # output width -> _RowConstants
    _scratch: threading.local = field(default_factory=threading.local, repr=False)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.rq is None:
            raise ValueError("rq is None: this plan only accumulates (call plan.accumulate)")
        if self.fixed is not None:
            acc, rows, shape = self._accumulate(x, with_bias=False)
            return rows.fixed(acc, self._fixed_workspace(rows.fixed, acc.shape)).reshape(shape)
        acc, rows, shape = self._accumulate(x)
        if rows.scale is not None and acc.dtype == np.float32:
            out = requantize_inplace(acc, self.rq, self.output_zero_point, self.act_range,
                                     rows.scale)
        else:
            out = requantize(acc.reshape(-1, shape[3]), self.rq, self.output_zero_point,
                             self.act_range)
        return out.reshape(shape)

    def accumulate(self, x: np.ndarray) -> np.ndarray:
        """int32 ``[N, OH, OW, M]``: ``bias + sum(w * (x - input_zero_point))`` before
        requantization, exactly what the call requantizes (ConvInteger's output)."""
        acc, _, shape = self._accumulate(x)
        return acc.astype(np.int32).reshape(shape)

    def _accumulate(self, x: np.ndarray, with_bias: bool = True):
        """The exact accumulators as float32 or float64 rows ``[N * OH, OW * M]`` (without the
        bias if asked: each partial sum is exact, the bias may not be), the row constants, and
        the output shape."""
        x = _int8("x", x, 4)
        m, kh, kw, cg = self.weights_shape
        if x.shape[3] != cg * self.groups:
            raise ValueError(f"x has {x.shape[3]} channels but w expects {cg} x {self.groups} "
                             f"groups = {cg * self.groups}")
        oh, ow = _spatial(x, (kh, kw), self.stride, self.padding, self.dilation)
        rows = self._row_constants(ow)
        if self.depthwise:
            acc = self._depthwise(x, (oh, ow), rows.weights)
        else:
            acc = self._gemm(self._padded(x), (oh, ow))
        acc = acc.reshape(x.shape[0] * oh, ow * m)  # one output row per line: long inner loops
        if with_bias and self.acc_fits_f32:
            acc += rows.bias
        elif with_bias:
            acc = acc.astype(np.float64) + np.tile(self.bias, ow)
        return acc, rows, (x.shape[0], oh, ow, m)

    def _padded(self, x: np.ndarray) -> np.ndarray:
        """The input padded with its zero point, in float32, for im2col (depthwise pads into
        its own phase-split buffer, ``_DepthwiseFrame``). A small layer keeps this buffer (one per
        thread, for the last input shape) so later calls skip the border and the allocation, a
        good part of their time; large ones are not worth holding on to."""
        scratch = self._scratch
        bordered = scratch.buffer if getattr(scratch, "shape", None) == x.shape else None
        xp = _pad_nhwc(x, self.padding, self.input_zero_point, np.float32, bordered)
        if bordered is None and xp.nbytes <= _SCRATCH_BYTES:
            scratch.shape, scratch.buffer = x.shape, xp
        return xp

    def _fixed_workspace(self, fixed, shape):
        """The work arrays of fixed-mode requantization (a block of rows), kept: one set per
        thread, for the last accumulator shape."""
        scratch = self._scratch
        if getattr(scratch, "fixed_shape", None) != shape:
            scratch.fixed, scratch.fixed_shape = fixed.workspace(shape), shape
        return scratch.fixed

    def _row_constants(self, ow: int) -> "_RowConstants":
        """Bias, scale and depthwise weights tiled along one output row of width ``ow``, made
        once per width: per-channel constants broadcast over a 64-channel axis make numpy run
        64-element inner loops, while a whole row is one long contiguous loop."""
        rows = self._rows.get(ow)
        if rows is None:
            m = self.weights_shape[0]
            scale = self.rq.scale if self.rq is not None and self.rq.mode == "float" else None
            rows = _RowConstants(
                bias=np.tile(self.bias.astype(np.float32), ow),
                scale=None if scale is None else np.tile(np.broadcast_to(scale, (m,)), ow),
                weights=self._phase_weights(ow) if self.depthwise else None,
                fixed=None if self.fixed is None else self.fixed.tile(ow))
            self._rows[ow] = rows
        return rows

    def _columns(self, xp, out_hw):
        """im2col: one GEMM row ``[P, KH*KW*C]`` per output position, copied in one call from
        a strided view. With few channels it is the transpose of a tap-major copy, so the copy
        runs along whole output rows instead of C floats at a time (BLAS takes the transposed
        operand as it is)."""
        _, kh, kw, _ = self.weights_shape
        (n, _, _, c), (oh, ow) = xp.shape, out_hw
        if (kh, kw) == (1, 1) and self.stride == (1, 1):
            return xp.reshape(n * oh * ow, c)
        image, row, pixel, item = xp.strides
        (sh, sw), (dh, dw) = self.stride, self.dilation
        positions = ((n, image), (oh, sh * row), (ow, sw * pixel))
        taps = ((kh, dh * row), (kw, dw * pixel), (c, item))
        tap_major = c <= min(_TAP_MAJOR_CHANNELS, ow // 4)  # measured: faster up to 4 channels
        shape, strides = zip(*(taps + positions if tap_major else positions + taps))
        cols = np.ascontiguousarray(as_strided(xp, shape, strides, writeable=False))
        if tap_major:
            return cols.reshape(kh * kw * c, n * oh * ow).T
        return cols.reshape(n * oh * ow, kh * kw * c)

    def _gemm(self, xp, out_hw):
        cols = self._columns(xp, out_hw)
        g = self.groups
        if g > 1:
            rows = cols.shape[0]
            cg = self.weights_shape[3]
            cols = cols.reshape(rows, -1, g, cg).transpose(2, 0, 1, 3).reshape(g, rows, -1)
        elif self.chunks == 1:
            return np.matmul(cols, self.matrices[0])
        else:
            cols = cols[None]
        k = cols.shape[2]
        if self.chunks == 1:
            acc = np.matmul(cols, self.matrices)
        else:
            step = -(-k // self.chunks)
            acc = np.zeros((g, cols.shape[1], self.matrices.shape[2]), np.float64)
            for start in range(0, k, step):
                acc += np.matmul(cols[:, :, start:start + step],
                                 self.matrices[:, start:start + step])
        if g > 1:
            acc = acc.transpose(1, 0, 2).reshape(acc.shape[1], -1)
        else:
            acc = acc[0]
        return acc

    def _depthwise(self, x, out_hw, phase_weights):
        """One einsum per column phase: numpy's fused multiply-and-sum loop runs along whole
        output rows (OW * M contiguous floats) of the padded input and of the row-tiled
        weights, each row staying in cache while its taps are summed. The loop's cost is
        mostly per row, so it wants rows long and computed only where an output is kept.

        The input is padded straight into a phase-split buffer (``_DepthwiseFrame``): with a
        horizontal stride S, padded column ``px`` is stored in plane ``px % S`` at ``px // S``,
        so the taps of one phase read contiguous runs holding exactly the wanted columns (no
        column computed and then dropped). The channel multiplier is folded into the same copy
        (each input channel repeated k times): output channel m reads input channel m // k at
        the same offset. A small layer keeps its frame (buffer with its border, views, output)
        per thread for the last input shape, so a call writes only the image."""
        scratch = self._scratch
        frame = getattr(scratch, "depthwise", None)
        if frame is None or frame.input_shape != x.shape:
            frame = _DepthwiseFrame.build(self, x.shape, out_hw)
            if frame.nbytes <= _SCRATCH_BYTES:
                scratch.depthwise = frame
        for target, source in frame.copies:
            np.copyto(target, x[source], casting="unsafe")
        acc, (first, *rest) = frame.acc, frame.taps
        np.einsum("nyabj,abj->nyj", first, phase_weights[0], out=acc)
        for taps, weights in zip(rest, phase_weights[1:]):
            acc += np.einsum("nyabj,abj->nyj", taps, weights)
        return acc

    def _phase_weights(self, ow: int) -> tuple[np.ndarray, ...]:
        """Per column phase (``_phase_taps``), its kernel columns' weights tiled along an
        output row: float32 ``[KH, taps in the phase, OW * M]``."""
        return tuple(np.ascontiguousarray(np.tile(self.matrices[:, list(columns)], ow))
                     for _, _, columns in _phase_taps(self.weights_shape[2], self.stride[1],
                                                      self.dilation[1]))


def _phase_taps(kw: int, sw: int, dw: int) -> list[tuple[int, int, tuple[int, ...]]]:
    """Kernel columns grouped by the phase-split plane they read: ``(phase, first offset,
    columns)``. Column kx reads padded column ``ox * sw + kx * dw``, i.e. plane
    ``kx * dw % sw`` at ``ox + kx * dw // sw``; within a plane the offsets step uniformly by
    ``dw // gcd(dw, sw)``, so one strided view covers the plane's taps."""
    planes: dict[int, list[int]] = {}
    for kx in range(kw):
        planes.setdefault(kx * dw % sw, []).append(kx)
    return [(phase, columns[0] * dw // sw, tuple(columns))
            for phase, columns in sorted(planes.items())]


@dataclass(eq=False)
class _DepthwiseFrame:
    """A depthwise plan's per-input-shape state: the phase-split padded buffer (float32
    ``[N, Hp, S, ceil(Wp / S), C * k]``, border filled once with the input zero point), where
    each phase's image columns go (``copies``: target view, source index into ``x``), one
    strided tap view ``[N, OH, KH, taps, OW * M]`` per phase, and the output."""

    input_shape: tuple[int, ...]
    buffer: np.ndarray
    copies: list
    taps: list
    acc: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.buffer.nbytes + self.acc.nbytes

    @classmethod
    def build(cls, plan: "ConvPlan", input_shape, out_hw) -> "_DepthwiseFrame":
        m, kh, kw, _ = plan.weights_shape
        (sh, sw), (dh, dw), (oh, ow) = plan.stride, plan.dilation, out_hw
        n, h, w, c = input_shape
        top, left, bottom, right = plan.padding
        rows = slice(max(-top, 0), h - max(-bottom, 0))  # negative pads crop
        cols = slice(max(-left, 0), w - max(-right, 0))
        h, w = rows.stop - rows.start, cols.stop - cols.start
        top, left, bottom, right = (max(p, 0) for p in plan.padding)
        width = -(-(w + left + right) // sw)
        buffer = np.empty((n, h + top + bottom, sw, width, c, m // c), np.float32)
        zp = plan.input_zero_point
        buffer[:, :top] = zp
        buffer[:, top + h:] = zp
        copies = []
        for phase in range(sw):
            first = left + (phase - left) % sw  # the plane's first image column (padded)
            count = len(range(first, left + w, sw))
            start = first // sw
            plane = buffer[:, top:top + h, phase]
            plane[:, :, :start] = zp
            plane[:, :, start + count:] = zp
            if count:
                source = (slice(None), rows, slice(cols.start + first - left, cols.stop, sw),
                          slice(None), None)
                copies.append((plane[:, :, start:start + count], source))
        image, row, plane_stride, pixel = buffer.strides[:4]
        taps = [np.ndarray((n, oh, kh, len(columns), ow * m), np.float32, buffer,
                           phase * plane_stride + offset * pixel,
                           (image, sh * row, dh * row, dw // math.gcd(dw, sw) * pixel,
                            buffer.itemsize))
                for phase, offset, columns in _phase_taps(kw, sw, dw)]
        return cls(tuple(input_shape), buffer, copies, taps,
                   np.empty((n, oh, ow * m), np.float32))


@dataclass(frozen=True)
class _RowConstants:
    bias: np.ndarray  # float32 [OW * M]
    scale: np.ndarray | None  # float32 [OW * M], float mode
    weights: tuple | None  # depthwise: per column phase, float32 [KH, taps, OW * M]
    fixed: BoundedFixed | Float64Fixed | None = None  # constants tiled along [OW * M]


def plan_conv2d(w, bias, rq: Requant | None, *, input_zero_point, output_zero_point,
                stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1,
                act_range=(INT8_MIN, INT8_MAX)) -> ConvPlan:
    """Check and preprocess a convolution's weights once; the plan then runs any batch.
    ``rq=None`` makes a plan that only accumulates (``ConvPlan.accumulate``)."""
    w = _int8("w", w, 4)
    m, kh, kw, cg = w.shape
    groups = int(groups)
    if groups < 1 or m % groups:
        raise ValueError(f"groups={groups} must divide the {m} output channels of w")
    if bias is None:
        bias = np.zeros(m, np.int32)
    bias = np.asarray(bias)
    if bias.dtype != np.int32 or bias.shape != (m,):
        raise ValueError(f"bias must be int32 [{m}], got {bias.dtype} {bias.shape}")
    if rq is not None and not isinstance(rq, Requant):
        raise ValueError(f"rq must be a Requant, got {type(rq).__name__}")
    if rq is not None and rq.channels not in (1, m):
        raise ValueError(f"rq has {rq.channels} channels, w has {m} output channels")
    zp = _zero_point("input_zero_point", input_zero_point)
    w64 = w.reshape(m, -1).astype(np.int64)
    abs_sum = np.abs(w64).sum(axis=1)
    bias64 = bias.astype(np.int64) - zp * w64.sum(axis=1)
    bound = int(worst_case_accumulator(w, bias).max(initial=0))
    if bound > INT32_MAX:
        raise ValueError(f"w: accumulator could overflow int32 (bound {bound}); "
                         "use fewer input channels or smaller weights")
    depthwise = cg == 1 and groups > 1
    if depthwise:  # [KH, KW, M]; output channel m reads input channel m // (M // groups)
        matrices = np.ascontiguousarray(w[..., 0].transpose(1, 2, 0), dtype=np.float32)
    else:
        mg = m // groups
        matrices = np.ascontiguousarray(
            w.reshape(groups, mg, kh * kw * cg).transpose(0, 2, 1).astype(np.float32))
    max_abs = int(abs_sum.max(initial=0))
    chunks = _exact_chunks(max_abs, kh * kw * cg)
    if depthwise and chunks > 1:  # a depthwise tap sum is tiny; never happens for real kernels
        raise ValueError(f"w: depthwise kernel {kh}x{kw} too large for exact accumulation")
    acc_bound = 128 * max_abs + int(np.abs(bias64).max(initial=0))
    out_zp, act = _zero_point("output_zero_point", output_zero_point), _act_range(act_range)
    fixed = None
    if rq is not None and rq.mode == "fixed":  # |sum(w * x_padded)| <= 128 * sum|w| per channel
        fixed = bounded_fixed(rq, 128 * abs_sum, bias64, out_zp, act)
    return ConvPlan((m, kh, kw, cg), groups, _pair("stride", stride), _pair("dilation", dilation),
                    _pads(padding), zp, out_zp, act, rq, matrices, bias64, chunks, depthwise,
                    chunks == 1 and acc_bound < _EXACT_F32, fixed)


def conv2d(x, w, bias, rq: Requant, *, input_zero_point, output_zero_point, stride=(1, 1),
           padding=(0, 0, 0, 0), dilation=(1, 1), groups=1,
           act_range=(INT8_MIN, INT8_MAX)) -> np.ndarray:
    """int8 NHWC convolution -> int8 ``[N, OH, OW, M]``. ``padding`` is (top, left, bottom,
    right); ``groups == C`` with ``M = C * k`` is depthwise with channel multiplier k."""
    plan = plan_conv2d(w, bias, rq, input_zero_point=input_zero_point,
                       output_zero_point=output_zero_point, stride=stride, padding=padding,
                       dilation=dilation, groups=groups, act_range=act_range)
    return plan(x)


def conv2d_accumulate(x, w, bias, *, input_zero_point, stride=(1, 1), padding=(0, 0, 0, 0),
                      dilation=(1, 1), groups=1) -> np.ndarray:
    """The int32 accumulators ``[N, OH, OW, M]`` that ``conv2d`` requantizes: what
    ConvInteger outputs. Same arguments and checks as ``conv2d``, same code path."""
    plan = plan_conv2d(w, bias, None, input_zero_point=input_zero_point, output_zero_point=0,
                       stride=stride, padding=padding, dilation=dilation, groups=groups)
    return plan.accumulate(x)


def plan_fully_connected(w, bias, rq: Requant | None, *, input_zero_point, output_zero_point,
                         act_range=(INT8_MIN, INT8_MAX)) -> ConvPlan:
    """A fully connected layer is a 1x1 convolution over a 1x1 image with K channels."""
    w = _int8("w", w, 2)
    return plan_conv2d(w[:, None, None, :], bias, rq, input_zero_point=input_zero_point,
                       output_zero_point=output_zero_point, act_range=act_range)


def fully_connected(x, w, bias, rq: Requant, *, input_zero_point, output_zero_point,
                    act_range=(INT8_MIN, INT8_MAX)) -> np.ndarray:
    """``x`` int8 ``[N, ...]`` (flattened in NHWC order), ``w`` int8 ``[M, K]`` -> ``[N, M]``."""
    flat = _features(x, w)
    plan = plan_fully_connected(w, bias, rq, input_zero_point=input_zero_point,
                                output_zero_point=output_zero_point, act_range=act_range)
    return plan(flat).reshape(flat.shape[0], -1)


def fully_connected_accumulate(x, w, bias, *, input_zero_point) -> np.ndarray:
    """The int32 accumulators ``[N, M]`` that ``fully_connected`` requantizes: what
    MatMulInteger outputs (``w`` is ``B`` transposed)."""
    flat = _features(x, w)
    plan = plan_fully_connected(w, bias, None, input_zero_point=input_zero_point,
                                output_zero_point=0)
    return plan.accumulate(flat).reshape(flat.shape[0], -1)


def _features(x, w) -> np.ndarray:
    """``x [N, ...]`` as the 1x1 image ``[N, 1, 1, K]`` a fully connected plan takes."""
    x = _int8("x", x)
    if x.ndim < 2:
        raise ValueError(f"x must be [N, ...] with a batch axis, got shape {x.shape}")
    w = _int8("w", w, 2)
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[1] != w.shape[1]:
        raise ValueError(f"x has {flat.shape[1]} features per sample but w expects {w.shape[1]}")
    return flat[:, None, None, :]


# -- pooling -------------------------------------------------------------------------------------

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
    return np.clip(out, low, high).astype(np.int8)


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
    """TFLite's int8 MEAN: rescale the zero-centered sum, then divide by the count rounding
    half away from zero, then add the output zero point."""
    rq = Requant.fixed(_const(consts, "multiplier", np.int32), _const(consts, "shift", np.int32))
    return _rounding_divide(rq.apply(acc_centered), count) + int(consts["output_zero_point"][0])


def _float_global(raw_sum: np.ndarray, count: int, scale: np.float32, x_zp: int, y_zp: int):
    """onnxruntime's QLinearGlobalAveragePool: ``rint(float32(sum - zp * count) * scale)``."""
    acc = (raw_sum - x_zp * count).astype(np.float32)
    return np.rint(acc * scale) + y_zp


def _taps_within(start: np.ndarray, taps: int, lo: int, hi: int) -> np.ndarray:
    """How many of the taps start, start + 1, ... start + taps - 1 lie in [lo, hi)."""
    return np.clip(start + taps, lo, hi) - np.clip(start, lo, hi)


def avg_pool2d(x, kernel, consts: dict, *, stride, padding=(0, 0, 0, 0),
               count_include_pad: bool = False, ceil_pad=(0, 0),
               act_range=(INT8_MIN, INT8_MAX)) -> np.ndarray:
    """Average pool. ``fixed``: TFLite's rounding division by the count (no rescale when input
    and output quantization are equal). ``float``: onnxruntime's QLinearAveragePool.

    ``ceil_pad`` is the part of the bottom and right ``padding`` that ONNX's ceil_mode added
    for the last window: like the declared padding it adds nothing to the sum, but
    ``count_include_pad`` never counts it (onnxruntime's AveragePool, PyTorch)."""
    x = _int8("x", x, 4)
    kernel, stride, padding = _pair("kernel", kernel), _pair("stride", stride), _pads(padding)
    ceil_pad = tuple(int(v) for v in ceil_pad)
    if not (0 <= ceil_pad[0] <= max(padding[2], 0) and 0 <= ceil_pad[1] <= max(padding[3], 0)):
        raise ValueError(f"ceil_pad {ceil_pad} must lie within the bottom/right padding")
    low, high = _act_range(act_range)
    oh, ow = _spatial(x, kernel, stride, padding)
    x_zp = int(_const(consts, "input_zero_point", np.int32)[0])
    y_zp = int(_const(consts, "output_zero_point", np.int32)[0])
    n, h, w, c = x.shape
    kh, kw = kernel
    top = np.arange(oh) * stride[0] - padding[0]
    left = np.arange(ow) * stride[1] - padding[1]
    rows, cols = _taps_within(top, kh, 0, h), _taps_within(left, kw, 0, w)
    valid = (rows[:, None] * cols[None, :])[None, :, :, None].astype(np.int64)
    count = valid
    if count_include_pad:
        rows = _taps_within(top, kh, -padding[0], h + padding[2] - ceil_pad[0])
        cols = _taps_within(left, kw, -padding[1], w + padding[3] - ceil_pad[1])
        count = (rows[:, None] * cols[None, :])[None, :, :, None].astype(np.int64)

    if _is_fixed(consts):
        rescale = int(_const(consts, "rescale", np.int32)[0])
        if rescale:  # sum of (x - zp); padding contributes 0
            xp = _pad_nhwc(x.astype(np.int32) - x_zp, padding, 0)
        else:  # raw sum as TFLite does; counted padding holds the zero point
            xp = _pad_nhwc(x.astype(np.int32), padding, 0)
        acc = np.zeros((n, oh, ow, c), np.int64)
        for _, _, view in _windows(xp, kernel, stride, (1, 1), (oh, ow)):
            acc += view
        if count_include_pad and not rescale:
            acc += (count - valid) * x_zp
        out = _fixed_mean(acc, count, consts) if rescale else _rounding_divide(acc, count)
        return np.clip(out, low, high).astype(np.int8)

    x_scale = _const(consts, "x_scale", np.float32)[0]
    y_scale = _const(consts, "y_scale", np.float32)[0]
    if (kh, kw) == (h, w) and padding == (0, 0, 0, 0):
        # onnxruntime runs a whole-image window without padding as a global average pool
        raw = x.astype(np.int64).sum(axis=(1, 2), keepdims=True)
        scale = _const(consts, "global_scale", np.float32)[0]
        out = _float_global(raw, h * w, scale, x_zp, y_zp)
        return np.clip(out, low, high).astype(np.int8)
    xf = _pad_nhwc(x_scale * (x.astype(np.float32) - np.float32(x_zp)), padding, 0)
    total = np.zeros((n, oh, ow, c), np.float32)
    for _, _, view in _windows(xf, kernel, stride, (1, 1), (oh, ow)):
        total += view  # row-major tap order, as onnxruntime sums; padding adds +0.0 exactly
    mean = total / count.astype(np.float32)
    out = np.rint(mean / y_scale + np.float32(y_zp))
    return np.clip(out, low, high).astype(np.int8)


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
        consts["multiplier"], consts["shift"] = _fixed_rescale(x_scale, y_scale)
    else:
        consts["scale"] = _global_scale(x_scale, y_scale, count)
    return consts


def global_avg_pool(x, consts: dict, *, act_range=(INT8_MIN, INT8_MAX)) -> np.ndarray:
    """Mean over H and W -> ``[N, 1, 1, C]``. ``fixed``: TFLite's int8 MEAN; ``float``:
    onnxruntime's QLinearGlobalAveragePool."""
    x = _int8("x", x, 4)
    low, high = _act_range(act_range)
    count = x.shape[1] * x.shape[2]
    if int(_const(consts, "count", np.int32)[0]) != count:
        raise ValueError(f"consts were made for {int(consts['count'][0])} positions but x has "
                         f"{x.shape[1]}x{x.shape[2]} = {count}")
    x_zp = int(_const(consts, "input_zero_point", np.int32)[0])
    y_zp = int(_const(consts, "output_zero_point", np.int32)[0])
    raw = x.astype(np.int64).sum(axis=(1, 2), keepdims=True)
    if _is_fixed(consts):
        out = _fixed_mean(raw - x_zp * count, count, consts)
    else:
        out = _float_global(raw, count, _const(consts, "scale", np.float32)[0], x_zp, y_zp)
    return np.clip(out, low, high).astype(np.int8)


# -- add -----------------------------------------------------------------------------------------

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
    offset = np.float32(zps[2]) - (a_ratio * np.float32(zps[0]) + b_ratio * np.float32(zps[1]))
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


# -- quantize / dequantize -----------------------------------------------------------------------

def quantize(x, scale, zero_point) -> np.ndarray:
    """float -> int8 as onnxruntime's QuantizeLinear: ``clamp(rint(x / scale) + zp)`` in float32
    (division, round half to even)."""
    x = np.asarray(x, dtype=np.float32)
    scale = np.float32(scale)
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be finite and > 0, got {scale}")
    zp = _zero_point("zero_point", zero_point)
    q = np.rint(np.clip(x / scale, np.float32(INT8_MIN - zp), np.float32(INT8_MAX - zp)))
    return (q + zp).astype(np.int8)


def dequantize(q, scale, zero_point) -> np.ndarray:
    """int8 -> float32 as onnxruntime's DequantizeLinear: ``float32(q - zp) * scale``."""
    q = _int8("q", q)
    zp = _zero_point("zero_point", zero_point)
    return (q.astype(np.float32) - np.float32(zp)) * np.float32(scale)
