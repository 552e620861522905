"""The one-input-channel conv kernel (firmware/src/tc_conv2d_1ch.c) under QEMU and natively,
== runtime/.

Two output pixels share each 64-bit multiply-accumulate (lanes 2^23 apart). On Cortex-M a 3x3
window without horizontal dilation, with every channel on the fast requantization, takes the
assembly row loop (dot stream entered per channel through a code address, SSAT store for
act_max = 127 and the two-sided clamp otherwise, an odd last pixel as a pair stored onto
itself); other windows, float mode and single rounding take the portable C pair loop; a channel
whose 256 * sum|w| reaches 2^22 (or a window taller than 16) sends the layer to tc_conv2d's
generic path. The specs reach: even and odd output widths, stride 2, vertical and horizontal
dilation, padding on every side (uneven), 5x5 and 1x1 windows, M = 1, 3, 8, 16, 72, both
clamps, negative multipliers, weights and inputs at -128 / 127, a channel at the lanes' bound
and one just past it, and an odd last pixel whose stray store past the output would show."""
from __future__ import annotations

import subprocess
import zlib

import numpy as np
import pytest
from _firmware_models import (CFLAGS, FIRMWARE_SRC, build_native_runner, compile_kernel_objects,
                              random_inputs, random_model, reference_run, require_tool,
                              run_native)
from _selftest import assert_not_saturated, run_on_board

from export.c_codegen import write_c_sources


def conv(**kw) -> dict:
    return dict(op="conv2d", **kw)


SPECS = {
    # even width 10, padding on every side, M = 8: the assembly rows, SSAT store
    "even": ((12, 10, 1), [conv(out=8, kernel=(3, 3), padding=(1, 1, 1, 1), relu=True)]),
    # odd width 6 -> 5 pixels (a last single pixel), stride 2 both ways, uneven padding, M = 3,
    # the two-sided clamp
    "stride_clamp": ((13, 11, 1), [conv(out=3, kernel=(3, 3), stride=(2, 2),
                                        padding=(2, 0, 1, 3), relu=True, act_max=50)]),
    # vertical dilation (a row per window slot), M = 16, odd width 9
    "dilation": ((11, 9, 1), [conv(out=16, kernel=(3, 3), dilation=(2, 1),
                                   padding=(2, 1, 2, 1))]),
    # M = 1 layers through the C windows (5x5, 1x1, horizontal dilation with stride 2), then
    # the assembly rows (M = 16) as the model's output
    "chain": ((12, 11, 1), [conv(out=1, kernel=(5, 5), padding=(2, 2, 2, 2)),
                            conv(out=1, kernel=(1, 1)),
                            conv(out=1, kernel=(3, 3), dilation=(1, 2), stride=(1, 2),
                                 padding=(1, 2, 1, 3)),
                            conv(out=16, kernel=(3, 3), padding=(0, 1, 1, 0))]),
    # the assembly rows with M = 1, odd width, the two-sided clamp
    "m1": ((9, 13, 1), [conv(out=1, kernel=(3, 3), padding=(1, 1, 1, 1),
                             act_max=25)]),
    # odd width 7, M = 1: the arena puts the second conv's output right before the first's,
    # which the add reads, so a store past the last odd pixel shows
    "odd_guard": ((4, 7, 1), [conv(out=1, kernel=(3, 3), padding=(1, 1, 1, 1)),
                              conv(out=1, kernel=(3, 3), padding=(1, 1, 1, 1)),
                              dict(op="add", **{"with": 1})]),
    # the C windows as the model's output: 5x5 (M = 8, odd width) and 1x1 (M = 3)
    "c_5x5": ((9, 11, 1), [conv(out=8, kernel=(5, 5), padding=(2, 1, 2, 3))]),
    "c_1x1": ((7, 6, 1), [conv(out=3, kernel=(1, 1), padding=(1, 0, 0, 1), act_max=25)]),
    # more output channels than the assembly rows push (64): the C windows on Cortex-M
    "m72": ((5, 6, 1), [conv(out=72, kernel=(3, 3), padding=(1, 1, 1, 1))]),
    # a window taller than 16 rows: tc_conv2d's generic path
    "kh17": ((18, 5, 1), [conv(out=3, kernel=(17, 2), padding=(0, 1, 0, 0))]),
    # channels 0 and 2 with negative multipliers (weights and bias negated too)
    "negative": ((12, 9, 1), [conv(out=8, kernel=(3, 3), padding=(1, 1, 1, 1))]),
    # weights and inputs only -128 and 127: the low lane's sums are large and of both signs
    "extreme": ((10, 9, 1), [conv(out=8, kernel=(3, 3), padding=(1, 1, 1, 1))]),
    # a 3 x 43 window: channel 0 at the lanes' bound (129 taps of 127, sum|w| = 16383), the
    # first image -128 everywhere so that the low lane reaches -256 * 16383 = 256 - 2^22
    "bound": ((4, 47, 1), [conv(out=4, kernel=(3, 43), padding=(1, 0, 1, 0))]),
    # the same with one tap -128: sum|w| = 16384, refused, the generic path computes the layer
    "past_bound": ((4, 47, 1), [conv(out=4, kernel=(3, 43), padding=(1, 0, 1, 0))]),
}
COUNT = 6
NEGATED = (0, 2)


def make_case(spec: str, mode: str, rounding: str = "double"):
    rng = np.random.default_rng(zlib.crc32(f"{spec} {mode} {rounding}".encode()))
    shape, layers = SPECS[spec]
    model = random_model(rng, shape, layers, mode, name="first", rounding=rounding)
    x = random_inputs(rng, model, COUNT)
    a = model.layers[-1].arrays
    if spec == "odd_guard":
        t = model.tensors
        assert t["t2"].offset + t["t2"].size == t["t1"].offset
    if spec == "negative":
        for c in NEGATED:
            a["weights"][c] = -np.maximum(a["weights"][c], -127)
            a["bias"][c] = -a["bias"][c]
            if mode == "fixed":  # float scales must be >= 0
                a["multiplier"][c] = -a["multiplier"][c]
    elif spec == "extreme":
        a["weights"][...] = rng.choice(np.array([-128, 127], np.int8), a["weights"].shape)
        x = rng.choice(np.array([-128, 127], np.int8), x.shape)
    elif spec in ("bound", "past_bound"):
        a["weights"][0] = 127
        if spec == "past_bound":
            a["weights"][0, 1, 20, 0] = -128
        x[0] = -128
        w0 = a["weights"][0].astype(np.int64)
        assert np.abs(w0).sum() == (16384 if spec == "past_bound" else 16383)
        if spec == "bound":  # output row 1's windows lie inside the first image, all -128
            assert 2 * int(w0.sum()) * -128 == -2**22 + 256
    return model, x


def check(spec: str, model, expected: np.ndarray, got: np.ndarray) -> None:
    if spec in ("extreme", "bound", "past_bound"):
        # these outputs saturate in part; enough of them must still differ
        assert np.unique(expected).size > 20
    else:
        _, hi = assert_not_saturated(expected, model, more_than=7)
        if hi < 127:
            assert np.mean(expected == hi) >= 0.05, "nothing clamped at act_max"
    assert np.array_equal(got, expected), f"{(got != expected).sum()} of {got.size} differ"


@pytest.mark.parametrize("mode", ["fixed", "float"])
@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("board", ["lm3s6965evb", "mps2-an386"])
def test_first_layer_on_board_equals_runtime(board, spec, mode, arm_tools, tmp_path):
    model, x = make_case(spec, mode)
    got, expected = run_on_board(model, x, board, tmp_path)
    check(spec, model, expected, got)


@pytest.fixture(scope="module")
def kernel_objects(tmp_path_factory):
    root = tmp_path_factory.mktemp("kernels")
    return {mode: compile_kernel_objects(root / mode, mode == "float")
            for mode in ("fixed", "float")}


@pytest.mark.parametrize("mode,rounding", [("fixed", "double"), ("fixed", "single"),
                                           ("float", "double")])
@pytest.mark.parametrize("spec", SPECS)
def test_first_layer_native_equals_runtime(spec, mode, rounding, kernel_objects, tmp_path):
    model, x = make_case(spec, mode, rounding)
    write_c_sources(model, tmp_path)
    exe = build_native_runner(tmp_path, kernel_objects[mode], mode == "float")
    got = run_native(exe, model, x).reshape(len(x), -1)
    check(spec, model, reference_run(model, x).reshape(len(x), -1), got)


BOUND_PROBE = r"""
#include <stdio.h>
#include "model_data.h"
#include "tc_kernels.h"
static int32_t scratch[4096];
int main(void)
{
    static int8_t input[4 * 47], weights[129], output[4 * 5];
    const tc_layer_t *l = &tc_layers[0];
    const int32_t multiplier = 1 << 30, shift = -8;
    /* bias 0, zero points 0: fast, multiplier, 2^(8 - 1), right 8 */
    static const tc_requant_fast fast = {1, 1 << 30, 128, 8};
    static const int32_t folded = 0;
    tc_requant_params rq = {TC_RQ_FIXED_DOUBLE, &multiplier, &shift, 0, &fast, &folded};
    tc_conv_params p = {0, 0, 1, 1, 1, 0, 1, 1, 1, -128, 127, 0, 0, 0};
    tc_filter_dims f = {1, 3, 43, 1};
    tc_dims in = {4, 47, 1}, out = {4, 5, 1};
    tc_context ctx = {scratch, (int32_t)sizeof scratch};
    int i, taken, none, small;
    p.table_1ch = (const tc_kernel_word *)(const void *)l->table_1ch;
    for (i = 0; i < 20; i++) output[i] = 55;
    ctx.size = tc_conv2d_1ch_get_buffer_size(&p, &f, &out) - 4;
    small = tc_conv2d_1ch(&ctx, &p, &rq, &in, input, &f, weights, 0, &out, output);
    ctx.size = (int32_t)sizeof scratch;
    p.table_1ch = 0;
    none = tc_conv2d_1ch(&ctx, &p, &rq, &in, input, &f, weights, 0, &out, output);
    for (i = 0; i < 20; i++) if (output[i] != 55) none = -1;
    p.table_1ch = (const tc_kernel_word *)(const void *)l->table_1ch;
    taken = tc_conv2d_1ch(&ctx, &p, &rq, &in, input, &f, weights, 0, &out, output);
    printf("%d %d %d %d\n", l->table_1ch != 0, small, none, taken);
    return 0;
}
"""


@pytest.mark.parametrize("spec", ["bound", "past_bound"])
def test_lane_bound_and_scratch_decide_the_path(spec, tmp_path):
    """Export writes the kernel's table at sum|w| = 16383 and none at 16384; without a table,
    or with a buffer one word short, the kernel refuses (generic path) without writing any
    output."""
    cc = require_tool("gcc")
    model, _ = make_case(spec, "fixed")
    write_c_sources(model, tmp_path)
    src = tmp_path / "bound.c"
    src.write_text(BOUND_PROBE)
    exe = tmp_path / "bound"
    subprocess.run([cc, *CFLAGS, "-O2", "-I", str(FIRMWARE_SRC), "-I", str(tmp_path), str(src),
                    str(tmp_path / "model_data.c"), str(FIRMWARE_SRC / "tc_conv2d_1ch.c"),
                    str(FIRMWARE_SRC / "tc_matmul.c"), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    table = "1" if spec == "bound" else "0"
    # TC_ERR_UNSUPPORTED (2) short of buffer and without a table; TC_OK (0) with the table
    assert out == [table, "2", "2", "0" if spec == "bound" else "2"]
