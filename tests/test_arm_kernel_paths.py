"""The Cortex-M fast paths of the conv kernels under QEMU, == runtime/ on both boards.

tc_matmul's hand-written 2x2 loops (plain Thumb-2 on the Cortex-M3, SMLAD on the M4), the
pair-column im2col (SIMD fill on the M4, whole-window runs for interior pixels, scalar heads
and tails when runs are not multiples of four) and the hoisted requantization each take a
different branch depending on the shape: this model's layers are chosen to reach every one of
them (K % 4 of 0, 1, 2 and 3; an odd channel count for the 1 x 2 tail; an odd pixel count for
the single-pixel tail; windows wholly inside the image and clipped ones; groups; dilation).
The depthwise layers reach the channel-major 3x3 kernel's pair and single-output loops, its
row-slot reuse under vertical dilation, padded tap rows and columns, and the direct loop. The
"_clamp" models have a ReLU6-like act range, so that the store loops' two-sided clamp (not the
SSAT one for act_max = 127) is checked on outputs that really exceed act_max."""
from __future__ import annotations

import numpy as np
import pytest
from _firmware_models import random_inputs, random_model
from _selftest import assert_not_saturated, run_on_board

SPEC = ((7, 9, 1), [
    dict(op="conv2d", out=8, kernel=(3, 3), padding=(1, 1, 1, 1), relu=True),  # K = 9, 63 px
    dict(op="conv2d", out=5, kernel=(3, 3), padding=(1, 1, 1, 1)),  # K = 72, odd rows
    dict(op="conv2d", out=6, kernel=(3, 3)),  # K = 45, every window inside
    dict(op="conv2d", out=6, kernel=(3, 3), groups=2, padding=(1, 1, 1, 1), act_max=90),
    dict(op="conv2d", out=6, kernel=(3, 3), groups=6, padding=(1, 1, 1, 1), relu=True),
    dict(op="conv2d", out=7, kernel=(1, 1)),  # K = 6
    dict(op="conv2d", out=4, kernel=(3, 3), dilation=(1, 2), stride=(2, 1),
         padding=(1, 2, 1, 2)),  # K = 63
    dict(op="fully_connected", out=3),
])
# Depthwise 3x3, the channel-major kernel: a chain whose last layer is the model's output, so
# that an error in any layer shows. Multiplier 1, stride 1 (pair loop, odd width and channel
# count, padding on every side); multiplier 2 with vertical dilation 2, then 3 (row slots y % 3
# and (y / 3) % 3); horizontal dilation (the direct loop); stride 2 with uneven padding (the
# single-output loop).
DW_SPEC = ((6, 9, 7), [
    dict(op="conv2d", out=7, kernel=(3, 3), groups=7, padding=(1, 1, 1, 1), relu=True),
    dict(op="conv2d", out=14, kernel=(3, 3), groups=7, dilation=(2, 1), padding=(2, 1, 2, 1)),
    dict(op="conv2d", out=14, kernel=(3, 3), groups=14, dilation=(3, 1), padding=(3, 0, 3, 2),
         act_max=70),
    dict(op="conv2d", out=14, kernel=(3, 3), groups=14, dilation=(1, 2), padding=(1, 2, 1, 2)),
    dict(op="conv2d", out=14, kernel=(3, 3), groups=14, stride=(2, 2), padding=(1, 2, 2, 1)),
])
# Channel counts that are multiples of four: the im2col of raw inputs (input zero point folded
# into the bias, padding holding the zero point), whole-row runs, per-tap runs under groups and
# dilation. The conv outputs are the model's output and there are enough of them (7 x 9 x 6 x
# COUNTS["raw"]) that an accumulator off by one shows: planted once in the store loop, it
# changed ~1% of them.
RAW_SPEC = ((7, 9, 8), [
    dict(op="conv2d", out=8, kernel=(3, 3), padding=(1, 1, 1, 1), relu=True),
    dict(op="conv2d", out=6, kernel=(3, 3), groups=2, dilation=(1, 2), padding=(1, 2, 1, 2)),
])
# The row ring (one group, no dilation, channels a multiple of four): rows converted once and
# copied into the pair column. Even output widths (every pair from the ring), rows wholly in
# the top padding (kh = 2, pad_top = 2), stride 2 down (a ring slot kept across output rows),
# right padding beyond the windows' last column, 1x1, a window wholly in the left padding,
# stride 2 across; RAW_SPEC's odd width covers pairs that straddle two output rows.
RING_SPEC = ((8, 10, 4), [
    dict(op="conv2d", out=8, kernel=(3, 3), padding=(1, 1, 1, 1), relu=True),
    dict(op="conv2d", out=12, kernel=(2, 3), stride=(2, 1), padding=(2, 0, 1, 2)),
    dict(op="conv2d", out=8, kernel=(1, 1), act_max=100),
    dict(op="conv2d", out=6, kernel=(3, 3), stride=(1, 2), padding=(0, 3, 0, 1)),
])
# ReLU6-like act ranges (act_min the output zero point, act_max far below 127): the two-sided
# clamp of the store loops (tc_dw_store_row, tc_store_fast_rows; tc_store_channel and the
# exact paths for single rounding and float) rather than SSAT. Each is the model's output, and
# its act_max sits where CLAMPED_AT_MAX of the outputs reach it: a wrong upper bound, planted
# once in either assembly loop, changed every output clamped there.
DW_CLAMP_SPEC = ((6, 9, 7), [
    dict(op="conv2d", out=7, kernel=(3, 3), groups=7, padding=(1, 1, 1, 1), relu=True,
         act_max=30),
])
CONV_CLAMP_SPEC = ((7, 9, 4), [
    dict(op="conv2d", out=8, kernel=(3, 3), padding=(1, 1, 1, 1), relu=True, act_max=35),
])
SPECS = {"conv": SPEC, "depthwise": DW_SPEC, "raw": RAW_SPEC, "ring": RING_SPEC,
         "depthwise_clamp": DW_CLAMP_SPEC, "conv_clamp": CONV_CLAMP_SPEC}
COUNTS = {"conv": 3, "depthwise": 3, "raw": 16, "ring": 8, "depthwise_clamp": 3,
          "conv_clamp": 3}
CLAMPED_AT_MAX = (0.10, 0.40)
CASES = [("lm3s6965evb", "fixed", "double"), ("mps2-an386", "fixed", "double"),
         ("lm3s6965evb", "fixed", "single"), ("mps2-an386", "fixed", "single"),
         ("lm3s6965evb", "float", "double"), ("mps2-an386", "float", "double")]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("board,mode,rounding", CASES)
def test_conv_fast_paths_on_board_equal_runtime(board, mode, rounding, spec, arm_tools,
                                                tmp_path):
    rng = np.random.default_rng(7)
    shape, layers = SPECS[spec]
    model = random_model(rng, shape, layers, mode, name="paths", rounding=rounding)
    x = random_inputs(rng, model, COUNTS[spec])
    got, expected = run_on_board(model, x, board, tmp_path)
    # some outputs may be clamped (the clamp cases need them), but not (nearly) all of them
    lo, hi = assert_not_saturated(expected, model)
    if spec.endswith("_clamp"):
        at_max = np.mean(expected == hi)
        assert CLAMPED_AT_MAX[0] <= at_max <= CLAMPED_AT_MAX[1], at_max
        assert np.mean(expected == lo) >= 0.05, "nothing clamped at act_min"
    assert np.array_equal(got, expected)
