"""The Cortex-M depthwise 3x3 kernel's row plan and store loop under QEMU, == runtime/.

The channel-major kernel plans its output rows in blocks (at most 16 rows, at most 8
arrangements of tap rows in the slots) and stores each row's outputs two at a time after one
single output for an odd count. These chains reach what test_arm_kernel_paths.py's odd-width
models do not: more than 16 output rows (two blocks), a layer whose dilated tap rows need nine
arrangements (a block ended by the arrangement limit), and both an odd and an even count of
outputs per row for the store, each with the SSAT store (act_max = 127) and the two-sided
clamp, and channels with negative multipliers (the Cortex-M4 store assumes multiplier >= 0:
without the guard that keeps them off it, this case fails on mps2-an386). The fused chains
reach the stride-1 pair loops with the store fused (tc_dw3_pairs_store; on the Cortex-M3 its
packed columns and split 64-bit accumulator): odd widths (the last pair redone), even widths,
one pair, no left padding, channel multiplier 2, dilation, both clamps, channels switching
between the packed and int16 columns (negative multipliers), and extreme weights and inputs;
they also reach tc_dw_fused_rows (the row list walked in asm: several copies in a block's first
row, the odd width's last pair) and the Cortex-M4's halfword clamp, whose guard (outputs before
the clamp within int16) the last test needs."""
from __future__ import annotations

import numpy as np
import pytest
from _firmware_models import random_inputs, random_model
from _selftest import assert_not_saturated, run_on_board


def chain(act: dict, last: dict) -> tuple:
    """24 rows of odd width 7 in two blocks, stride 2 down to 12 rows, dilation 4 (taps oy - 4,
    oy, oy + 4: three top, three interior and three bottom arrangements, so the ninth, at
    oy = 10, starts a new block), then stride 2 both ways (the single-output loop, even width
    4)."""
    return ((24, 7, 4), [
        dict(op="conv2d", out=4, kernel=(3, 3), groups=4, padding=(1, 1, 1, 1), **act),
        dict(op="conv2d", out=4, kernel=(3, 3), groups=4, stride=(2, 1), padding=(1, 1, 1, 1),
             **act),
        dict(op="conv2d", out=4, kernel=(3, 3), groups=4, dilation=(4, 1),
             padding=(4, 1, 4, 1), **act),
        dict(op="conv2d", out=4, kernel=(3, 3), groups=4, stride=(2, 2), padding=(1, 1, 1, 1),
             **last),
    ])


def fused_chain(act: dict, last: dict) -> tuple:
    """Stride-1 layers for the fused pair loops (and the Cortex-M3's packed columns): channel
    multiplier 2 with no left padding (the packed copy's other entry) and even width 8, no
    padding at all, dilation 2 with odd height, then widths 4 and 2 (one pair)."""
    return ((12, 8, 4), [
        dict(op="conv2d", out=8, kernel=(3, 3), groups=4, padding=(1, 0, 1, 2), **act),
        dict(op="conv2d", out=8, kernel=(3, 3), groups=8, **act),
        dict(op="conv2d", out=8, kernel=(3, 3), groups=8, dilation=(2, 1),
             padding=(1, 1, 1, 1), **act),
        dict(op="conv2d", out=8, kernel=(3, 3), groups=8, **act),
        dict(op="conv2d", out=8, kernel=(3, 3), groups=8, **last),
    ])


SPECS = {"ssat": chain({}, {}), "clamp": chain(dict(act_max=90), dict(act_max=10)),
         "negative": chain({}, {}), "fused_ssat": fused_chain(dict(relu=True), {}),
         "fused_clamp": fused_chain(dict(act_max=100), dict(act_max=4)),
         "fused_negative": fused_chain({}, {})}
NEGATED = (0, 2)  # "negative": these channels' multipliers, weights and bias negated


def negate_channels(model) -> None:
    """A negative multiplier must leave the Cortex-M4 store (whose sign term assumes
    multiplier >= 0) for the exact one; weights and bias are negated too, so the outputs stay
    the same kind of numbers."""
    for layer in model.layers:
        a = layer.arrays
        for c in NEGATED:
            a["multiplier"][c] = -a["multiplier"][c]
            a["bias"][c] = -a["bias"][c]
            a["weights"][c] = -np.maximum(a["weights"][c], -127)
COUNT = 3


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("board", ["lm3s6965evb", "mps2-an386"])
def test_depthwise_blocks_and_even_widths_on_board_equal_runtime(board, spec, arm_tools,
                                                                  tmp_path):
    rng = np.random.default_rng(11)
    shape, layers = SPECS[spec]
    model = random_model(rng, shape, layers, "fixed", name="dw")
    if spec.endswith("negative"):
        negate_channels(model)
        assert (model.layers[-1].arrays["multiplier"] < 0).sum() == len(NEGATED)
    x = random_inputs(rng, model, COUNT)
    got, expected = run_on_board(model, x, board, tmp_path)
    lo, hi = assert_not_saturated(expected, model, more_than=7)
    if spec.endswith("clamp"):
        assert np.mean(expected == hi) >= 0.05, "nothing clamped at act_max"
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("board", ["lm3s6965evb", "mps2-an386"])
def test_depthwise_extreme_weights_and_inputs_on_board_equal_runtime(board, arm_tools, tmp_path):
    """Weights -128 / 127 and inputs -128 / 127, odd and even widths: the largest sums the
    Cortex-M3's packed 64-bit accumulator must keep apart (|sum| <= 9 * 256 * 128 per output),
    with a multiplier and shift that keep the outputs inside int8."""
    rng = np.random.default_rng(5)
    model = random_model(rng, (5, 7, 8), [
        dict(op="conv2d", out=8, kernel=(3, 3), groups=8, padding=(1, 1, 1, 1)),
        dict(op="conv2d", out=8, kernel=(3, 3), groups=8, padding=(1, 0, 1, 1)),
    ], "fixed", name="dw")
    for layer in model.layers:
        a = layer.arrays
        a["weights"][...] = rng.choice(np.array([-128, 127], np.int8), a["weights"].shape)
        a["multiplier"][...] = rng.integers(2**30, 2**31 - 1, a["multiplier"].shape)
        a["shift"][...] = -10 if layer is model.layers[0] else -8
    x = rng.choice(np.array([-128, 127], np.int8), (COUNT,) + model.input_spec.shape)
    got, expected = run_on_board(model, x, board, tmp_path)
    assert_not_saturated(expected, model, more_than=7)
    assert np.array_equal(got, expected)


WIDE = (1, 2)  # channels whose outputs before the clamp leave int16


@pytest.mark.parametrize("act_max", [127, 60])
@pytest.mark.parametrize("board", ["lm3s6965evb", "mps2-an386"])
def test_depthwise_outputs_beyond_int16_before_the_clamp_on_board_equal_runtime(
        board, act_max, arm_tools, tmp_path):
    """The Cortex-M4's fused store clamps a pair's outputs as the halfwords of one register, so
    a channel whose outputs before the clamp can leave int16 (here weights +-127, multiplier near
    2^31 and shift -1: |acc| / 2 up to ~146000, over 2^15 for about one output in five) must take
    the other store; without the guard this case fails on mps2-an386. Odd and even widths."""
    rng = np.random.default_rng(21)
    model = random_model(rng, (5, 7, 4), [
        dict(op="conv2d", out=4, kernel=(3, 3), groups=4, padding=(1, 1, 1, 1), act_max=act_max),
        dict(op="conv2d", out=4, kernel=(3, 3), groups=4, padding=(1, 0, 1, 1), act_max=act_max),
    ], "fixed", name="dw")
    for layer in model.layers:
        a = layer.arrays
        for c in WIDE:
            a["weights"][c] = rng.choice(np.array([-127, 127], np.int8), a["weights"][c].shape)
            a["multiplier"][c] = 2**31 - 1 - c
            a["shift"][c] = -1
    x = rng.choice(np.array([-128, 127], np.int8), (COUNT,) + model.input_spec.shape)
    got, expected = run_on_board(model, x, board, tmp_path)
    narrow = expected.reshape(COUNT, -1, 4)[:, :, [0, 3]]
    lo, hi = model.layers[-1].params["act_min"], act_max
    assert np.unique(narrow[(narrow > lo) & (narrow < hi)]).size > 10, "outputs saturated"
    assert np.array_equal(got, expected)


# The input read again by a residual add (not spare) and no caller's scratch: the column
# buffer lives in the output rows not yet written, and the rows left without room for it take
# the direct loop; at two rows no output row holds it and the whole layer does.
RESIDUAL = {"tail_then_direct": (12, 9, 8), "direct_only": (2, 7, 4)}


@pytest.mark.parametrize("shape", RESIDUAL)
@pytest.mark.parametrize("board", ["lm3s6965evb", "mps2-an386"])
def test_depthwise_input_read_later_on_board_equal_runtime(board, shape, arm_tools, tmp_path):
    rng = np.random.default_rng(17)
    c = RESIDUAL[shape][2]
    model = random_model(rng, RESIDUAL[shape], [
        dict(op="conv2d", out=c, kernel=(3, 3), groups=c, padding=(1, 1, 1, 1), relu=True),
        dict(op="add", **{"with": 0}),
    ], "fixed", name="dw")
    x = random_inputs(rng, model, COUNT)
    got, expected = run_on_board(model, x, board, tmp_path)
    assert_not_saturated(expected, model, more_than=7)
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("board", ["lm3s6965evb", "mps2-an386"])
def test_depthwise_columns_in_an_arena_gap_on_board_equal_runtime(board, arm_tools, tmp_path):
    """After a wide layer and a pool, the arena (sized for the wide layer) has a gap no tensor
    alive at the depthwise layer uses: export hands it the gap (export/plan.py free_gap) for
    its columns, as no other layer asks for scratch."""
    rng = np.random.default_rng(23)
    model = random_model(rng, (8, 8, 4), [
        dict(op="conv2d", out=16, kernel=(1, 1), relu=True),
        dict(op="max_pool2d", kernel=(2, 2)),
        dict(op="conv2d", out=16, kernel=(3, 3), groups=16, padding=(1, 1, 1, 1)),
    ], "fixed", name="dw")
    x = random_inputs(rng, model, COUNT)
    got, expected = run_on_board(model, x, board, tmp_path)
    assert_not_saturated(expected, model, more_than=7)
    assert np.array_equal(got, expected)
