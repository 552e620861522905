"""Convolution (dense, grouped, depthwise) and fully connected: a plan made once per layer,
exact float32 GEMMs."""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import as_strided

from runtime.requant import (INT32_MAX, BoundedFixed, Float64Fixed, Requant, bounded_fixed,
                             clamp_to_int8, float_constants, requantize, requantize_inplace)
from runtime.kernels.common import (INT8_MIN, INT8_MAX, _EXACT_F32, _int8, _pair, _pads,
                                    _zero_point, _act_range, worst_case_accumulator, _pad_nhwc,
                                    _spatial)


_SCRATCH_BYTES = 1 << 20  # a conv plan keeps its padded input buffer up to this size
_TAP_MAJOR_CHANNELS = 4  # im2col copies tap-major up to this many input channels
_BLOCK_CONSTANTS = 1 << 14  # bias and scale are laid out over all output rows up to this size


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
    _geometry: dict = field(default_factory=dict, repr=False)  # x.shape[1:] -> (OH, OW, rows)
    _scratch: threading.local = field(default_factory=threading.local, repr=False)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        fast = getattr(self._scratch, "fast", None)
        if fast is not None and type(x) is np.ndarray and x.shape == fast[0] \
                and x.dtype == np.int8 and fast[1] is not None:
            return fast[1](x)
        out = self._call(x)
        shape = np.shape(x)
        if fast is None or fast[0] != shape:
            self._scratch.fast = (shape, _fast_call(self, shape))
        return out

    def _call(self, x: np.ndarray) -> np.ndarray:
        if self.rq is None:
            raise ValueError("rq is None: this plan only accumulates (call plan.accumulate)")
        if self.fixed is not None:
            acc, rows, shape = self._accumulate(x, with_bias=False)
            return rows.fixed(acc, self._fixed_workspace(rows.fixed, acc.shape)).reshape(shape)
        acc, rows, shape = self._accumulate(x)
        if rows.scale is not None and acc.dtype == np.float32:
            out = requantize_inplace(acc, self.rq, self.output_zero_point, self.act_range,
                                     self._block(rows, acc.shape[0])[1])
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
        m = self.weights_shape[0]
        geometry = self._geometry.get(x.shape[1:])
        if geometry is None:
            geometry = self._geometry[x.shape[1:]] = self._check_geometry(x)
        oh, ow, rows = geometry
        biased = False
        if self.depthwise:
            acc = self._depthwise(x, (oh, ow), rows.weights)
        elif self.groups == 1 and self.chunks == 1:
            acc, biased = self._dense(x, (oh, ow), with_bias)
        else:
            acc = self._gemm(self._padded(x), (oh, ow))
        acc = acc.reshape(x.shape[0] * oh, ow * m)  # one output row per line: long inner loops
        if with_bias and not biased and self.acc_fits_f32:
            acc += self._block(rows, acc.shape[0])[0]
        elif with_bias and not biased:
            acc = acc.astype(np.float64) + np.tile(self.bias, ow)
        return acc, rows, (x.shape[0], oh, ow, m)

    def _block(self, rows: "_RowConstants", count: int) -> tuple:
        """``(bias, scale)`` for ``count`` output rows: laid out over all of them when that is
        small (a flat pass costs about half of one against a row broadcast over the rows,
        which is most of a small layer's bias and scale passes), else one row each."""
        if count * rows.bias.size > _BLOCK_CONSTANTS:
            return rows.bias, rows.scale
        block = rows.blocks.get(count)
        if block is None:
            block = rows.blocks[count] = tuple(
                None if v is None else np.tile(v, (count, 1)) for v in (rows.bias, rows.scale))
        return block

    def _check_geometry(self, x: np.ndarray) -> tuple:
        """``(OH, OW, row constants)`` for inputs shaped like ``x``, checked once per shape."""
        m, kh, kw, cg = self.weights_shape
        if x.shape[3] != cg * self.groups:
            raise ValueError(f"x has {x.shape[3]} channels but w expects {cg} x {self.groups} "
                             f"groups = {cg * self.groups}")
        oh, ow = _spatial(x, (kh, kw), self.stride, self.padding, self.dilation)
        return oh, ow, self._row_constants(ow)

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

    def _dense(self, x, out_hw, with_bias: bool):
        """One float32 GEMM (im2col, ``_columns``) into a kept frame (``_DenseFrame``): a
        small layer's call then only writes the image, copies its columns and multiplies,
        with no allocation, which is most of what batch 1 costs around the GEMM. Returns the
        accumulators and whether they include the bias."""
        scratch = self._scratch
        frames = getattr(scratch, "dense", None)
        if frames is None:
            frames = scratch.dense = {}
        frame = frames.get(with_bias)
        if frame is None or frame.input_shape != x.shape:
            frame = _DenseFrame.build(self, x.shape, out_hw, with_bias)
            if frame is None:  # too large to keep: allocated per call
                return self._gemm(self._padded(x), out_hw), False
            frames[with_bias] = frame
        np.copyto(frame.image, x[frame.source], casting="unsafe")
        if frame.gather is not None:
            np.copyto(frame.gather[0], frame.gather[1])
        return np.matmul(frame.cols, frame.weights, out=frame.acc), frame.biased

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


def _fast_call(plan: ConvPlan, shape: tuple):
    """``plan(x)`` for int8 inputs of ``shape`` as one closure over the kept frame and row
    constants, or None: the same passes in the same order as ``ConvPlan._call`` (float mode,
    float32 accumulators), without the per-call lookups and checks, which cost about a
    quarter of a small layer's time at batch 1. Made after a first full call with this
    shape (which built the frame and checked the input)."""
    if plan.fixed is not None or plan.rq is None or plan.rq.mode != "float" \
            or not plan.acc_fits_f32 or len(shape) != 4 or shape[1:] not in plan._geometry:
        return None
    oh, ow, rows = plan._geometry[shape[1:]]
    scratch, m = plan._scratch, plan.weights_shape[0]
    out_shape, count = (shape[0], oh, ow, m), shape[0] * oh
    bias, scale = plan._block(rows, count)
    if plan.depthwise:
        frame = getattr(scratch, "depthwise", None)
        if frame is None or frame.input_shape != shape:
            return None
        copies, acc = frame.copies, frame.acc
        (first, *rest), (w_first, *w_rest) = frame.taps, rows.weights
        rest = list(zip(rest, w_rest))

        def accumulate(x):
            for target, source in copies:
                np.copyto(target, x[source], casting="unsafe")
            np.einsum("nyabj,abj->nyj", first, w_first, out=acc)
            for taps, weights in rest:
                np.add(acc, np.einsum("nyabj,abj->nyj", taps, weights), out=acc)
        biased = False
    elif plan.groups == 1 and plan.chunks == 1:
        frame = getattr(scratch, "dense", {}).get(True)
        if frame is None or frame.input_shape != shape:
            return None
        image, source, gather, cols, weights, acc = (frame.image, frame.source, frame.gather,
                                                     frame.cols, frame.weights, frame.acc)

        def accumulate(x):
            np.copyto(image, x[source], casting="unsafe")
            if gather is not None:
                np.copyto(gather[0], gather[1])
            np.matmul(cols, weights, out=acc)
        biased = frame.biased
    else:
        return None
    rows_acc = acc.reshape(count, ow * m)
    if not np.shares_memory(rows_acc, acc):
        return None
    zero_point, low, high = float_constants(plan.output_zero_point, *plan.act_range)

    def call(x):
        accumulate(x)
        if not biased:
            np.add(rows_acc, bias, out=rows_acc)
        np.multiply(rows_acc, scale, out=rows_acc)
        np.rint(rows_acc, out=rows_acc)
        np.add(rows_acc, zero_point, out=rows_acc)
        return clamp_to_int8(rows_acc, low, high).reshape(out_shape)
    return call


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


@dataclass(eq=False)
class _DenseFrame:
    """A dense plan's per-input-shape state: the padded float32 input (border filled once
    with the input zero point; ``image`` is where ``x[source]`` goes), the GEMM's column
    matrix ``cols`` (the padded input itself for a 1x1 stride-1 kernel, else a kept buffer
    that ``gather`` fills: target view, strided source view, laid out as ``_columns``
    chooses), its ``weights`` and the accumulator ``[P, M]``.

    ``biased``: the columns end with a column of ones and the weights with the bias row, so
    the GEMM adds the bias (exact: every partial sum is within the plan's float32 bound,
    ``acc_fits_f32``), which saves a pass over the accumulator."""

    input_shape: tuple[int, ...]
    image: np.ndarray
    source: tuple
    gather: tuple | None
    cols: np.ndarray
    weights: np.ndarray
    acc: np.ndarray
    biased: bool

    @classmethod
    def build(cls, plan: "ConvPlan", input_shape, out_hw, with_bias: bool
              ) -> "_DenseFrame | None":
        """The frame, or None if it would take more than ``_SCRATCH_BYTES``."""
        m, kh, kw, c = plan.weights_shape
        n, h, w, _ = input_shape
        (oh, ow), (sh, sw), (dh, dw) = out_hw, plan.stride, plan.dilation
        top, left, bottom, right = plan.padding
        padded_size = n * (h + max(top, 0) + max(bottom, 0)) * (w + max(left, 0) + max(right, 0))
        pointwise = (kh, kw) == (1, 1) and plan.stride == (1, 1)
        columns = 0 if pointwise else kh * kw
        if 4 * (padded_size * (c + 1) + n * oh * ow * (m + columns * c + 1)) > _SCRATCH_BYTES:
            return None
        biased = int(with_bias and plan.acc_fits_f32)
        source = (slice(None), slice(max(-top, 0), h - max(-bottom, 0)),
                  slice(max(-left, 0), w - max(-right, 0)))
        h, w = source[1].stop - source[1].start, source[2].stop - source[2].start
        top, left, bottom, right = (max(p, 0) for p in plan.padding)
        k, positions = kh * kw * c, n * oh * ow
        padded = np.empty((n, h + top + bottom, w + left + right, c + pointwise * biased),
                          np.float32)
        padded.fill(plan.input_zero_point)
        image = padded[:, top:top + h, left:left + w, :c]
        gather = None
        if pointwise:
            padded[..., c:] = 1
            cols = padded.reshape(positions, c + biased)
        else:
            image_s, row, pixel, item = padded.strides
            where = ((n, image_s), (oh, sh * row), (ow, sw * pixel))
            taps = ((kh, dh * row), (kw, dw * pixel), (c, item))
            tap_major = c <= min(_TAP_MAJOR_CHANNELS, ow // 4)  # as _columns
            shape, strides = zip(*(taps + where if tap_major else where + taps))
            windows = np.ndarray(shape, np.float32, padded, 0, strides)
            if tap_major:
                buffer = np.ones((k + biased, positions), np.float32)
                target, cols = buffer[:k].reshape(shape), buffer.T
            else:
                buffer = np.ones((positions, k + biased), np.float32)
                target, cols = buffer[:, :k].reshape(shape), buffer
            if not np.shares_memory(target, buffer):
                raise AssertionError("the column buffer's target must be a view")
            gather = (target, windows)
        weights = plan.matrices[0]
        if biased:
            weights = np.concatenate([weights, plan.bias.astype(np.float32)[None]])
        acc = np.empty((positions, m), np.float32)
        return cls(tuple(input_shape), image, source, gather, cols, weights, acc, bool(biased))


@dataclass(frozen=True)
class _RowConstants:
    bias: np.ndarray  # float32 [OW * M]
    scale: np.ndarray | None  # float32 [OW * M], float mode
    weights: tuple | None  # depthwise: per column phase, float32 [KH, taps, OW * M]
    fixed: BoundedFixed | Float64Fixed | None = None  # constants tiled along [OW * M]
    blocks: dict = field(default_factory=dict)  # rows -> (bias, scale) over that many rows


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
