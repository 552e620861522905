"""The conv kernel's row ring in strips and its 1x1 pair path (firmware/src/tc_conv2d.c),
natively and under QEMU, == runtime/.

The ring holds kh input rows of a strip of T output columns (T even, the widest the scratch
holds), each strip walked from the top output row to the bottom one; an odd last output
column is computed two rows at a time by im2col. Export sizes the ring so that column and ring
stay within 2x CMSIS-NN's buffer (T = 2 for 3x3 windows); a layer whose model has more scratch
(sized by a larger layer) takes wider strips. The specs reach, as ``test_specs_reach_the_strips``
checks: T = 2 on output widths 1 (no strip: im2col only), 2, 3, 4 and 5, stride 2 across with
uneven padding, and T = 12 on widths 12, 13, 14 and 15 (one strip plus the odd column, two
strips, two strips plus the odd column). A 1x1 layer whose windows all lie inside the image
fills the pair column straight from the input instead (stride 1 and 2, an odd pixel count, a
pair spanning two rows); one with padding before or after takes the ring or im2col."""
from __future__ import annotations

import numpy as np
import pytest
from _firmware_models import (build_native_runner, compile_kernel_objects, random_inputs,
                              random_model, reference_run, run_native)
from _selftest import assert_not_saturated, run_on_board

from export.c_codegen import layer_scratch, write_c_sources


def conv(out, kernel=(3, 3), **kw) -> dict:
    return dict(op="conv2d", out=out, kernel=kernel, **kw)


SPECS = {
    # 8 input channels: strips of 2 (short chains: a long one shrinks its output's spread)
    "t2_543": ((7, 5, 8), [conv(8, padding=(1, 1, 1, 1), relu=True),  # width 5
                           conv(8, padding=(1, 0, 1, 1)),  # width 4
                           conv(8, padding=(1, 0, 1, 1))]),  # width 3
    "t2_213": ((7, 3, 8), [conv(8, padding=(1, 0, 1, 1), relu=True),  # width 2
                           conv(8, padding=(1, 0, 1, 1)),  # width 1: no strip
                           conv(8, stride=(1, 2), padding=(1, 2, 1, 4))]),  # 3, stride 2
    # 8 -> 4 channels (strips of 2) sizes the scratch, which holds strips of 12 for 4 -> 4
    "t12_1412": ((4, 15, 8), [conv(4, padding=(1, 1, 1, 1), relu=True),  # width 15
                              conv(4, padding=(1, 0, 1, 1)),  # width 14
                              conv(4, stride=(2, 1), padding=(1, 0, 1, 0))]),  # width 12
    "t12_1513": ((4, 15, 8), [conv(4, padding=(1, 1, 1, 1), relu=True),  # width 15
                              conv(4, padding=(1, 1, 1, 1)),  # width 15
                              conv(4, padding=(1, 0, 1, 0))]),  # width 13
    # 1x1, 8 channels: 35 pixels (pairs spanning rows, a last single one), stride 2 both
    # ways, then padding before (not the 1x1 path)
    "pointwise": ((5, 7, 8), [conv(8, kernel=(1, 1), relu=True),
                              conv(12, kernel=(1, 1), stride=(2, 2)),
                              conv(8, kernel=(1, 1), padding=(1, 0, 0, 1))]),
    # stride 2 down only (12 pixels), then padding reached only after the image (not the 1x1
    # path), then stride 2 across
    "pointwise_pad_after": ((7, 3, 4), [conv(8, kernel=(1, 1), stride=(2, 1), relu=True),
                                        conv(4, kernel=(1, 1), padding=(0, 0, 1, 1)),
                                        conv(8, kernel=(1, 1), stride=(1, 2))]),
}
INPUTS = 8


def kernel_strip(model, layer, scratch: int) -> int:
    """The strip width tc_conv2d's ring takes for ``layer`` given ``scratch`` bytes (the rule of
    tc_ring_strip, restated to show what the specs reach)."""
    m, kh, kw, c = layer.arrays["weights"].shape
    stride_w = layer.params.get("stride", [1, 1])[1]
    out_w = model.tensors[layer.output].shape[1]
    column = -(-(2 * kh * kw * c * 2) // 4) * 4
    columns = ((scratch - column) // kh - 4) // (2 * c)
    if out_w < 2 or columns < kw:
        return 0
    return min(((columns - kw) // stride_w + 1) & ~1, out_w & ~1)


def make_case(spec: str, mode: str):
    rng = np.random.default_rng(11)
    shape, layers = SPECS[spec]
    model = random_model(rng, shape, layers, mode, name="strips")
    return model, random_inputs(rng, model, INPUTS)


def test_specs_reach_the_strips():
    reached = set()
    for spec in SPECS:
        model, _ = make_case(spec, "fixed")
        scratch = -(-max(layer_scratch(model)) // 4) * 4
        for layer in model.layers:
            out_w = model.tensors[layer.output].shape[1]
            reached.add((kernel_strip(model, layer, scratch), out_w))
    assert {(0, 1), (2, 2), (2, 3), (2, 4), (2, 5), (12, 12), (12, 13), (12, 14),
            (12, 15)} <= reached, reached


@pytest.fixture(scope="module")
def kernel_objects(tmp_path_factory):
    root = tmp_path_factory.mktemp("kernels")
    return {mode: compile_kernel_objects(root / mode, mode == "float")
            for mode in ("fixed", "float")}


def check(model, expected, got):
    assert_not_saturated(expected, model)
    assert np.array_equal(got, expected), f"{(got != expected).sum()} of {got.size} differ"


@pytest.mark.parametrize("mode", ["fixed", "float"])
@pytest.mark.parametrize("spec", SPECS)
def test_strips_native_equal_runtime(spec, mode, kernel_objects, tmp_path):
    model, x = make_case(spec, mode)
    write_c_sources(model, tmp_path)
    exe = build_native_runner(tmp_path, kernel_objects[mode], mode == "float")
    got = run_native(exe, model, x).reshape(len(x), -1)
    check(model, reference_run(model, x).reshape(len(x), -1), got)


@pytest.mark.parametrize("mode", ["fixed", "float"])
@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("board", ["lm3s6965evb", "mps2-an386"])
def test_strips_on_board_equal_runtime(board, spec, mode, arm_tools, tmp_path):
    model, x = make_case(spec, mode)
    got, expected = run_on_board(model, x, board, tmp_path)
    check(model, expected, got)
