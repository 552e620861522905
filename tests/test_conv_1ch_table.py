"""The one-channel conv kernel (firmware/src/tc_conv2d_1ch.c) reading the table export writes to
flash (export/conv_constants.py one_channel_table), == runtime/ natively and under QEMU.

On Thumb-2 the table holds code addresses (the threaded row loop jumps through them, so a
missing Thumb bit would fault); on the Cortex-M0 and the host the same words are 0 and the
portable C pairs run. The shapes are the row loop's edges: output widths 1 to 5 (odd widths end
in a pair stored onto itself), stride 2 with uneven padding, vertical dilation, channel counts
that are not a multiple of 4, both clamps, and weights and inputs only -128 / 127."""
from __future__ import annotations

import zlib

import numpy as np
import pytest
from _firmware_models import (build_native_runner, compile_kernel_objects, random_inputs,
                              random_model, reference_run, run_native)
from _selftest import assert_not_saturated, run_on_board

from export.c_codegen import write_c_sources


def conv(out, **kw) -> dict:
    return dict(op="conv2d", out=out, kernel=(3, 3), **kw)


SPECS = {
    # output widths 5, 4, 3, 2 (stride 2 along x) and 1 (stride 2 both ways), M = 5 last
    "widths": ((9, 5, 1), [conv(1, padding=(1, 1, 1, 1)), conv(1, padding=(0, 1, 1, 0)),
                           conv(1, padding=(1, 0, 1, 1)),
                           conv(1, stride=(1, 2), padding=(1, 1, 1, 1)),
                           conv(5, stride=(2, 2), padding=(2, 1, 1, 0))]),
    # stride 2, uneven padding, M = 7, the two-sided clamp
    "stride2": ((7, 9, 1), [conv(7, stride=(2, 2), padding=(0, 2, 2, 1), relu=True,
                                 act_max=60)]),
    # vertical dilation, even width 6, M = 6
    "dilation": ((6, 6, 1), [conv(6, dilation=(2, 1), padding=(2, 1, 2, 1))]),
    # weights and inputs only -128 and 127, M = 3, width 4
    "extreme": ((5, 4, 1), [conv(3, padding=(1, 1, 1, 1))]),
}
COUNT = 4
BOARDS = ["lm3s6965evb", "mps2-an386", "mps3-an547", "microbit"]


def make_case(spec: str):
    rng = np.random.default_rng(zlib.crc32(spec.encode()))
    shape, layers = SPECS[spec]
    model = random_model(rng, shape, layers, "fixed", name="onech")
    x = random_inputs(rng, model, COUNT)
    if spec == "extreme":
        a = model.layers[-1].arrays
        a["weights"][...] = rng.choice(np.array([-128, 127], np.int8), a["weights"].shape)
        x = rng.choice(np.array([-128, 127], np.int8), x.shape)
    return model, x


def check(spec: str, model, tmp_path, expected: np.ndarray, got: np.ndarray) -> None:
    source = (tmp_path / "model_data.c").read_text()
    assert source.count("one-channel kernel's table") == len(model.layers)
    if spec == "extreme":
        assert np.unique(expected).size > 10
    else:
        assert_not_saturated(expected, model, more_than=5)
    assert np.array_equal(got, expected), f"{(got != expected).sum()} of {got.size} differ"


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("board", BOARDS)
def test_table_kernel_on_board_equals_runtime(board, spec, arm_tools, tmp_path):
    model, x = make_case(spec)
    got, expected = run_on_board(model, x, board, tmp_path)
    check(spec, model, tmp_path, expected, got)


@pytest.fixture(scope="module")
def kernel_objects(tmp_path_factory):
    return compile_kernel_objects(tmp_path_factory.mktemp("kernels"), False)


@pytest.mark.parametrize("spec", SPECS)
def test_table_kernel_native_equals_runtime(spec, kernel_objects, tmp_path):
    model, x = make_case(spec)
    write_c_sources(model, tmp_path)
    exe = build_native_runner(tmp_path, kernel_objects, False)
    got = run_native(exe, model, x).reshape(len(x), -1)
    check(spec, model, tmp_path, reference_run(model, x).reshape(len(x), -1), got)
