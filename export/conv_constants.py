"""Per-channel constants of the firmware's conv2d kernels, computed once at export.

The pair-column and one-channel conv kernels (firmware/src/tc_conv2d.c, tc_conv2d_1ch.c)
requantize most outputs with ``tc_requant_double_fast`` and read columns of raw inputs, whose
input zero point lives in the bias instead. Both need per-channel constants that depend only on
the layer's own constants; computing them here puts them in flash (model_data.c) instead of in
kernel scratch, and the device no longer spends a pass over the weights on them at every
inference. The layout is the C one: ``tc_requant_fast`` {fast, multiplier, offset, right} per
channel (firmware/src/tc_requant.h), then the folded biases.
"""
from __future__ import annotations

import numpy as np

from runtime.requant import Requant

# firmware/src/tc_requant.h: the accumulator bound and right shift within which the fast double
# rounding equals TFLite's (docs/ARITHMETIC.md, "The fast double rounding")
FAST_ACC_LIMIT = 1 << 29
FAST_MAX_RIGHT = 21
# int8 inputs minus a zero point in [-128, 127] lie within +-255
_INPUT_SPAN = 255


def _wrap32(values) -> np.ndarray:
    """int32 two's-complement wrap of integer values (as the device's uint32 arithmetic)."""
    v = np.asarray(values, dtype=np.int64) & 0xFFFFFFFF
    return np.where(v >= 1 << 31, v - (1 << 32), v).astype(np.int32)


def _acc_bound(weights: np.ndarray, bias) -> np.ndarray:
    """|bias| + 255 * sum|w| per output channel: no accumulator of the channel is larger."""
    m = weights.shape[0]
    b = np.zeros(m, np.int64) if bias is None else np.asarray(bias, np.int64)
    return np.abs(b) + _INPUT_SPAN * np.abs(weights.reshape(m, -1).astype(np.int64)).sum(axis=1)


def fast_requant(weights: np.ndarray, bias, rq: Requant, output_zero_point: int) -> np.ndarray:
    """``tc_requant_fast`` per output channel, shape (m, 4) int32: {fast, multiplier, offset,
    right}. A channel is fast when the model rounds twice (TFLite's scheme), its right shift is
    in [1, 21] and every accumulator it can produce, |bias| + 255 * sum|w|, stays below 2^29;
    the others keep fast = 0 and take the generic requantization."""
    m = weights.shape[0]
    bound = _acc_bound(weights, bias)
    double = rq.mode == "fixed" and rq.rounding == "double"
    if double:
        multiplier = np.broadcast_to(np.asarray(rq.multiplier, np.int64), (m,))
        shift = np.broadcast_to(np.asarray(rq.shift, np.int64), (m,))
    else:
        multiplier = shift = np.zeros(m, np.int64)
    fast = double & (shift <= -1) & (shift >= -FAST_MAX_RIGHT) & (bound < FAST_ACC_LIMIT)
    right = np.where(fast, -shift, 1)
    offset = (np.int64(1) << (right - 1)) + np.int64(output_zero_point) * (np.int64(1) << right)
    return np.stack([fast.astype(np.int64), multiplier, _wrap32(offset), right], axis=1
                    ).astype(np.int32)


# firmware/src/tc_depthwise.h: the flags of a depthwise channel's tc_requant_fast.fast
DW_FAST, DW_FAST_HALVES = 1, 2


def depthwise_fast(weights: np.ndarray, bias, rq: Requant, output_zero_point: int
                   ) -> np.ndarray:
    """The depthwise kernels' ``tc_requant_fast`` per channel (tc_depthwise.h): fast_requant's,
    with fast a set of flags. DW_FAST: fast_requant's fast and a multiplier >= 0 (the
    Cortex-M4 store loop's sign term needs it). DW_FAST_HALVES besides: every requantized
    output before the clamp lies in int16, so the Cortex-M4 fused store may clamp halfwords;
    bounded by the high multiply of 2 * bound (at most bound * multiplier / 2^31 + 1), the
    offset's half, the sign and the shift, then the zero point."""
    f = fast_requant(weights, bias, rq, output_zero_point).astype(np.int64)
    fast = (f[:, 0] != 0) & (f[:, 1] >= 0)
    bound = np.where(fast, _acc_bound(weights, bias), 0)
    right = f[:, 3]
    high = ((bound * f[:, 1]) >> 31) + 1
    halves = fast & (((high + (np.int64(1) << (right - 1)) + 1) >> right)
                     + abs(int(output_zero_point)) + 1 < 32768)
    f[:, 0] = np.where(fast, DW_FAST, 0) | np.where(halves, DW_FAST_HALVES, 0)
    return f.astype(np.int32)


DW_FLAG_BITS = 2
_DW_PER_WORD = 32 // DW_FLAG_BITS


def depthwise_flags(weights: np.ndarray, bias, rq: Requant, output_zero_point: int
                    ) -> np.ndarray:
    """depthwise_fast's flags, all the kernels read from flash: two bits a channel, sixteen
    channels an int32 word (channel m in word m // 16 at bit 2 * (m % 16)). The multiplier and
    shift are the layer's own arrays already and offset / right follow from the shift and the
    output zero point, so the kernels derive those at channel start (tc_depthwise.h
    tc_dw_fast): 1 bit per channel of new information instead of 16 bytes."""
    flags = depthwise_fast(weights, bias, rq, output_zero_point)[:, 0].astype(np.int64)
    padded = np.zeros(-(-len(flags) // _DW_PER_WORD) * _DW_PER_WORD, np.int64)
    padded[:len(flags)] = flags
    at = DW_FLAG_BITS * np.arange(_DW_PER_WORD, dtype=np.int64)
    return _wrap32((padded.reshape(-1, _DW_PER_WORD) << at).sum(axis=1))


def folded_bias(weights: np.ndarray, bias, input_zero_point: int) -> np.ndarray:
    """bias - input_zero_point * sum(w) per output channel, wrapped like int32: the bias of a
    column that holds the raw inputs (and the zero point in the padding)."""
    m = weights.shape[0]
    b = np.zeros(m, np.int64) if bias is None else np.asarray(bias, np.int64)
    return _wrap32(b - np.int64(input_zero_point) * weights.reshape(m, -1).astype(np.int64)
                   .sum(axis=1))


def weights_s16_pairs(weights: np.ndarray) -> np.ndarray:
    """The weights of a conv whose windows hold a multiple of four values, as the Cortex-M4 dot
    loop over row pairs reads them (tc_matmul.h, tc_matmul_pair_s16): for each pair of output
    channels and group of four values, the first channel's four then the second's, each in the
    pair-swapped order x0 x2 x1 x3 of the column (what SXTB16 of a word, then of the word
    rotated by 8, gives). An odd last channel is left out (the loop reads it as int8); no
    channel pair or a window not made of groups of four gives an empty array."""
    m = weights.shape[0] & ~1
    k = int(np.prod(weights.shape[1:]))
    if m == 0 or k % 4:
        return np.zeros(0, np.int16)
    w = weights[:m].reshape(m // 2, 2, k // 4, 4)[..., [0, 2, 1, 3]]
    return w.transpose(0, 2, 1, 3).astype(np.int16).reshape(-1)


# firmware/src/tc_conv2d_1ch.c: two pixels' sums share one word 2^23 apart, exact while
# 256 * sum|w| < 2^22 per channel
ONE_CHANNEL_SUM_LIMIT = (1 << 22) // 256


def one_channel_table(weights: np.ndarray, fast: np.ndarray, folded: np.ndarray,
                      act_max: int, stride_w: int) -> list | None:
    """The one-channel conv kernel's table (tc_conv2d_1ch.c), word by word: an int, or the name
    of the kernel's code label whose address the word holds. flags (1: every channel fast),
    per channel the doubled weights and tc_1ch_next (tc_1ch_last for the last), 8 * M (the
    bytes of the sums the row loop pushes), the floor {3 * M, 8 * stride_w, five zeros,
    tc_1ch_pair_end}, then per channel {right, C, C, multiplier, offset, store} with
    C = 2 * folded bias * multiplier + 2^31 split into its low and high words. None when a
    channel's 256 * sum|w| reaches 2^22 (the lanes would mix: the kernel is not used)."""
    m = weights.shape[0]
    w = weights.reshape(m, -1).astype(np.int64)
    if int(np.abs(w).sum(axis=1).max()) >= ONE_CHANNEL_SUM_LIMIT:
        return None
    table: list = [int(np.all(fast[:, 0] != 0))]
    for ch in range(m):
        table += [2 * int(v) for v in w[ch]]
        table.append("tc_1ch_next" if ch + 1 < m else "tc_1ch_last")
    table += [8 * m, 3 * m, 8 * stride_w] + [0] * 5 + ["tc_1ch_pair_end"]
    store = "tc_1ch_store" if act_max == 127 else "tc_1ch_store_clamp"
    for ch in range(m):
        _, multiplier, offset, right = (int(v) for v in fast[ch])
        c = int(_wrap32(int(folded[ch]) * 2)) * multiplier + (1 << 31)
        low, high = int(_wrap32(c)), c >> 32
        table += [right, low, high, low, high, multiplier, offset, store]
    return table
