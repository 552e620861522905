"""The one-channel conv's packed rows without scratch (firmware/src/tc_conv2d_1ch.c), natively
and under QEMU, == runtime/.

When the caller's buffer cannot hold the rows, they live in the last bytes of the layer's own
output until the output rows reach them, then move once to input rows no later window reads;
export asks no scratch for such a layer (TC_SCRATCH_SIZE is then 4, too small for the rows and
for the generic path's column, so a right answer proves the tail ran). It needs the input to
be spare (nothing reads it after the layer; the model's input qualifies). Where it cannot (the
output smaller than the rows, the input read again, too few input rows before the move),
export asks the rows in scratch as before; where another layer's scratch holds them, the
kernel takes that buffer. The specs reach widths 1..5, odd widths (the odd last pixel), stride
2 with uneven padding and the two-sided clamp, vertical dilation with a 5x5 window (the C
pairs), both modes; several images per run show that every run has its input back."""
from __future__ import annotations

import zlib

import numpy as np
import pytest
from _firmware_models import (build_native_runner, compile_kernel_objects, random_inputs,
                              random_model, reference_run, run_native)
from _selftest import run_on_board

from export.c_codegen import layer_scratch, write_c_sources


def conv(out, kernel=(3, 3), **kw) -> dict:
    return dict(op="conv2d", out=out, kernel=kernel, **kw)


SAME = dict(padding=(1, 1, 1, 1))
# name -> (input shape, layers, the first layer's packed rows in bytes if export asks them)
SPECS = {
    # the bench layer 28x28x1 -> 8: 348 B of rows move at output row 26
    "bench": ((28, 28, 1), [conv(8, relu=True, **SAME)], None),
    # the microbit's bench (--side 20): 252 B of rows move at output row 18
    "bench20": ((20, 20, 1), [conv(8, relu=True, **SAME)], None),
    "w1": ((48, 1, 1), [conv(8, **SAME)], None),
    "w2": ((48, 2, 1), [conv(8, relu=True, **SAME)], None),
    "w3": ((40, 3, 1), [conv(8, act_max=40, **SAME)], None),
    "w4": ((36, 4, 1), [conv(5, **SAME)], None),
    "w5": ((36, 5, 1), [conv(3, **SAME)], None),
    # 21 x 5 x 3 output, rows of 11 columns: the two-sided clamp, stride 2 both ways
    "stride2": ((40, 9, 1), [conv(3, stride=(2, 2), padding=(2, 0, 1, 3), relu=True,
                                  act_max=50)], None),
    # 5x5 with vertical dilation: a row per window slot, the portable C pairs
    "dilated": ((40, 9, 1), [conv(6, kernel=(5, 5), dilation=(2, 1), padding=(4, 2, 4, 2))],
                None),
    # the rows (3 x 31 words) outgrow the 3 x 15 x 1 output
    "small_output": ((6, 30, 1), [conv(1, stride=(2, 2), padding=(0, 0, 1, 1))], 372),
    # the input is read again by the add: not spare, the rows in scratch
    "input_read": ((20, 20, 1), [conv(1, **SAME), dict(op="add", **{"with": 0})], 252),
    # a later layer's scratch holds the rows: the kernel takes the caller's buffer
    "scratch_large": ((20, 20, 1), [conv(8, **SAME), conv(16, **SAME)], None),
}
COUNT = 3
BOARDS = {"lm3s6965evb": ["bench", "w1", "stride2", "dilated", "input_read"],
          "mps2-an386": ["bench", "w2", "w5", "stride2"],
          "microbit": ["bench20", "w4", "stride2"],
          "mps3-an547": ["bench", "w3", "dilated"]}


def make_case(spec: str, mode: str):
    rng = np.random.default_rng(zlib.crc32(f"{spec} {mode}".encode()))
    shape, layers, _ = SPECS[spec]
    model = random_model(rng, shape, layers, mode, name="tail")
    return model, random_inputs(rng, model, COUNT)


@pytest.mark.parametrize("spec", SPECS)
def test_export_asks_the_rows_only_where_the_tail_cannot_hold_them(spec):
    model, _ = make_case(spec, "fixed")
    rows = SPECS[spec][2]
    assert layer_scratch(model)[0] == (0 if rows is None else rows)
    if spec == "scratch_large":
        assert layer_scratch(model)[1] > 4 * 3 * 21  # the 8 -> 16 conv's column and ring


@pytest.fixture(scope="module")
def kernel_objects(tmp_path_factory):
    root = tmp_path_factory.mktemp("kernels")
    return {mode: compile_kernel_objects(root / mode, mode == "float")
            for mode in ("fixed", "float")}


def check(model, x, got) -> None:
    expected = reference_run(model, x).reshape(len(x), -1)
    assert np.unique(expected).size > 10, "outputs saturated"
    assert np.array_equal(got.reshape(len(x), -1), expected), \
        f"{(got.reshape(expected.shape) != expected).sum()} of {expected.size} differ"


@pytest.mark.parametrize("mode", ["fixed", "float"])
@pytest.mark.parametrize("spec", SPECS)
def test_tail_native_equals_runtime(spec, mode, kernel_objects, tmp_path):
    model, x = make_case(spec, mode)
    write_c_sources(model, tmp_path)
    exe = build_native_runner(tmp_path, kernel_objects[mode], mode == "float")
    check(model, x, run_native(exe, model, x))


@pytest.mark.parametrize("board,spec", [(b, s) for b, specs in BOARDS.items() for s in specs])
def test_tail_on_board_equals_runtime(board, spec, arm_tools, tmp_path):
    model, x = make_case(spec, "fixed")
    got, _ = run_on_board(model, x, board, tmp_path)
    check(model, x, got)
