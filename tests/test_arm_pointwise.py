"""The Cortex-M4 1x1 conv path under QEMU, == runtime/ on both boards.

A 1x1 conv with one group and a channel count that is a multiple of four builds its pair
columns straight from the input (when padded: from the row ring or im2col) and, on the M4,
reads its row pairs from the int16 weights export wrote into flash (tc_dot_rows_s16_asm).
These chains reach that path's branches: 1, 2, 3 and 4 groups of four (the four-group loop
entered at each place), an odd output channel count (the last row from the int8 weights), more
than 32 output channels (a second chunk of rows, whose int16 weights start r0 * k in), an odd
pixel count and odd widths (pairs across two output rows, a last single pixel), padding and
stride 2; and 1x1 convs beside it (channel counts not a multiple of four) that keep the
generic path. Each with the SSAT store (act_max = 127) and a ReLU6-like two-sided clamp, in
fixed and float mode. The M3 runs the same models on its own paths."""
from __future__ import annotations

import numpy as np
import pytest
from _firmware_models import random_inputs, random_model
from _selftest import assert_not_saturated, run_on_board


def chain(act: dict, last: dict) -> tuple:
    """5 x 7 pixels (odd), 8 channels in."""
    return ((5, 7, 8), [
        dict(op="conv2d", out=16, kernel=(1, 1), **act),  # K = 8: 2 groups of four
        dict(op="conv2d", out=37, kernel=(1, 1), **act),  # K = 16: 4 groups; 37 rows, 2 chunks
        dict(op="conv2d", out=12, kernel=(1, 1), **act),  # K = 37: not a multiple of four
        dict(op="conv2d", out=9, kernel=(1, 1), stride=(2, 2), padding=(1, 1, 1, 1),
             **act),  # K = 12: 3 groups, padded, stride 2
        dict(op="conv2d", out=4, kernel=(3, 3), padding=(1, 1, 1, 1), **act),  # K = 81
        dict(op="conv2d", out=7, kernel=(1, 1), padding=(0, 1, 0, 1), **last),  # K = 4: 1 group
    ])


SPECS = {"ssat": chain({}, {}), "clamp": chain(dict(act_max=90), dict(act_max=6))}
COUNT = 3


@pytest.mark.parametrize("mode", ["fixed", "float"])
@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("board", ["lm3s6965evb", "mps2-an386"])
def test_pointwise_on_board_equals_runtime(board, spec, mode, arm_tools, tmp_path):
    rng = np.random.default_rng(23)
    shape, layers = SPECS[spec]
    model = random_model(rng, shape, layers, mode, name="pw")
    x = random_inputs(rng, model, COUNT)
    got, expected = run_on_board(model, x, board, tmp_path)
    lo, hi = assert_not_saturated(expected, model, more_than=7)
    if spec == "clamp":
        assert np.mean(expected == hi) >= 0.05, "nothing clamped at act_max"
    assert np.array_equal(got, expected)
