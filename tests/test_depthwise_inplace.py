"""The depthwise 3x3 read in place (firmware/src/tc_depthwise_inplace.c, no scratch) against
runtime/ (itself checked against onnxruntime and the slow reference elsewhere), compared ==.

It is the path of the host build and of the Cortex-M0 (microbit); the Thumb-2 boards run the
column kernel on the same models, with its columns in the room it finds (no scratch either). Edge shapes:
widths 1 to 5, odd widths, stride 2 either way, no padding, padding 2 (outputs whose window
starts in the padding), asymmetric padding, input height 1 (two tap rows outside the image),
channel counts 3 and 5, channel multiplier 2, vertical dilation, extreme weights and inputs,
both requantization modes, and the generated header's scratch (none on any core); and the
Cortex-M0's 32-bit high multiply (tc_mulh_round_halves) against Python's integers."""
from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
from _firmware_models import (CFLAGS, FIRMWARE_SRC, build_native_runner,
                              compile_kernel_objects, random_inputs, random_model, reference_run,
                              require_tool, run_native)
from _selftest import assert_not_saturated, run_on_board

from export.c_codegen import write_c_sources


def dw(out, groups, **kw) -> dict:
    return dict(op="conv2d", out=out, kernel=(3, 3), groups=groups, **kw)


P1 = dict(padding=(1, 1, 1, 1))
# single layers (input shape, layer): what each one reaches is in its name
LAYERS = {
    "w5_pad1_c3": ((6, 5, 3), dw(3, 3, **P1)),
    "w4_pad1_c5_relu": ((4, 4, 5), dw(5, 5, relu=True, **P1)),
    "w3_stride2": ((6, 5, 3), dw(3, 3, stride=(2, 2), **P1)),
    "w2_stride_w2": ((5, 4, 4), dw(4, 4, stride=(1, 2), padding=(1, 0, 1, 1))),
    "w1_no_pad": ((4, 3, 5), dw(5, 5)),
    "w1_from_w1": ((3, 1, 4), dw(4, 4, **P1)),
    "w5_pad2": ((5, 3, 3), dw(3, 3, padding=(2, 2, 2, 2))),
    "w4_asymmetric": ((5, 5, 4), dw(4, 4, padding=(0, 2, 1, 0))),
    "h1": ((1, 4, 4), dw(4, 4, **P1)),
    "multiplier2": ((4, 5, 3), dw(6, 3, padding=(1, 0, 1, 0))),
    "dilation_h2": ((7, 5, 4), dw(4, 4, dilation=(2, 1), padding=(2, 1, 2, 1))),
    "clamp": ((5, 7, 4), dw(4, 4, act_max=25, **P1)),
}


@pytest.fixture(scope="module")
def kernel_objects(tmp_path_factory):
    root = tmp_path_factory.mktemp("kernels")
    return {mode: compile_kernel_objects(root / mode, mode == "float")
            for mode in ("fixed", "float")}


def _model(name: str, mode: str, seed: int = 0):
    shape, layer = LAYERS[name]
    return random_model(np.random.default_rng(seed), shape, [layer], mode, name="dw")


@pytest.mark.parametrize("mode", ["fixed", "float"])
@pytest.mark.parametrize("name", LAYERS)
def test_in_place_layer_natively_equals_runtime(name, mode, kernel_objects, tmp_path):
    model = _model(name, mode)
    write_c_sources(model, tmp_path)
    exe = build_native_runner(tmp_path, kernel_objects[mode], mode == "float")
    x = random_inputs(np.random.default_rng(1), model, 40)
    expected = reference_run(model, x)
    assert np.unique(expected).size > 3, "outputs saturated: the case tests nothing"
    np.testing.assert_array_equal(run_native(exe, model, x), expected)


def _extreme(model, rng) -> None:
    """Weights -128 / 127 and a multiplier that keeps the outputs inside int8."""
    for layer in model.layers:
        a = layer.arrays
        a["weights"][...] = rng.choice(np.array([-128, 127], np.int8), a["weights"].shape)
        a["multiplier"][...] = rng.integers(2**30, 2**31 - 1, a["multiplier"].shape)
        a["shift"][...] = -10


def test_in_place_extreme_weights_and_inputs_natively(kernel_objects, tmp_path):
    rng = np.random.default_rng(5)
    model = random_model(rng, (5, 7, 5), [dw(5, 5, **P1)], "fixed", name="dw")
    _extreme(model, rng)
    write_c_sources(model, tmp_path)
    exe = build_native_runner(tmp_path, kernel_objects["fixed"], False)
    x = rng.choice(np.array([-128, 127], np.int8), (20,) + model.input_spec.shape)
    expected = reference_run(model, x)
    assert_not_saturated(expected, model, more_than=7)
    np.testing.assert_array_equal(run_native(exe, model, x), expected)


def test_depthwise_asks_no_scratch_on_any_core(tmp_path):
    """A model of depthwise layers alone (3x3 and 5x5) asks 4 bytes of scratch (the floor) on
    every kind of core: the Thumb-2 column kernel finds its own room (the chains below run it
    on the Cortex-M3 and M4 boards with that floor)."""
    model = random_model(np.random.default_rng(0), (6, 6, 3),
                         [dw(3, 3, **P1), dict(op="conv2d", out=3, kernel=(5, 5), groups=3,
                                              padding=(2,) * 4)], "fixed", name="dw")
    write_c_sources(model, tmp_path)
    header = (tmp_path / "model_data.h").read_text()
    assert re.findall(r"#define TC_SCRATCH_SIZE (\d+)", header) == ["4"], header


# chains for the boards (one image each): every layer of LAYERS but the float-only ones
CHAINS = {
    "widths": ((6, 5, 3), [dw(3, 3, **P1), dw(3, 3, stride=(2, 2), **P1),
                           dw(3, 3, padding=(2, 2, 2, 2)), dw(3, 3, padding=(0, 1, 1, 0)),
                           dw(6, 3, padding=(1, 0, 1, 0)), dw(6, 6, stride=(1, 2), **P1)]),
    "edges": ((1, 4, 5), [dw(5, 5, **P1), dw(5, 5, padding=(3, 0, 3, 1)),
                          dw(5, 5, dilation=(2, 1), padding=(2, 2, 2, 0), relu=True)]),
}


@pytest.mark.parametrize("chain", CHAINS)
@pytest.mark.parametrize("board", ["microbit", "lm3s6965evb", "mps2-an386"])
def test_chain_on_board_equals_runtime(board, chain, arm_tools, tmp_path):
    rng = np.random.default_rng(13)
    shape, layers = CHAINS[chain]
    model = random_model(rng, shape, layers, "fixed", name="dw")
    x = random_inputs(rng, model, 2)
    got, expected = run_on_board(model, x, board, tmp_path)
    assert_not_saturated(expected, model, more_than=5)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("board", ["microbit", "mps2-an386"])
def test_extreme_weights_on_board_equal_runtime(board, arm_tools, tmp_path):
    rng = np.random.default_rng(5)
    model = random_model(rng, (5, 7, 5), [dw(5, 5, **P1), dw(5, 5, padding=(1, 0, 1, 1))],
                         "fixed", name="dw")
    _extreme(model, rng)
    x = rng.choice(np.array([-128, 127], np.int8), (2,) + model.input_spec.shape)
    got, expected = run_on_board(model, x, board, tmp_path)
    assert_not_saturated(expected, model, more_than=5)
    np.testing.assert_array_equal(got, expected)


PROBE = r"""
#include <stdio.h>
#include "tc_requant.h"
int main(void)
{
    long a, b;
    while (scanf("%ld %ld", &a, &b) == 2) {
        const int32_t m = (int32_t)b;
        printf("%ld\n", (long)tc_mulh_round_halves((int32_t)a, m >> 16, m & 0xffff));
    }
    return 0;
}
"""


def test_high_multiply_in_halves_equals_the_64_bit_one(tmp_path):
    """The Cortex-M0's rounding high multiply from 32-bit products, against Python's integers:
    (a * b + 2^31) >> 32 over edge values and random pairs of the whole int32 range."""
    (tmp_path / "probe.c").write_text(PROBE)
    exe = tmp_path / "probe"
    subprocess.run([require_tool("gcc"), *CFLAGS, "-O2", "-I", str(FIRMWARE_SRC),
                    str(tmp_path / "probe.c"), "-o", str(exe)], check=True)
    rng = np.random.default_rng(9)
    edges = [-2**31, -2**31 + 1, -2**30, -65537, -65536, -32769, -32768, -1, 0, 1, 32767,
             32768, 65535, 65536, 2**30, 2**31 - 1]
    a = np.concatenate([np.repeat(edges, len(edges)), rng.integers(-2**31, 2**31, 20000)])
    b = np.concatenate([np.tile(edges, len(edges)), rng.integers(-2**31, 2**31, 20000)])
    out = subprocess.run([str(exe)], input="".join(f"{x} {y}\n" for x, y in zip(a, b)),
                         capture_output=True, text=True, check=True).stdout.split()
    expected = [(int(x) * int(y) + 2**31) >> 32 for x, y in zip(a, b)]
    assert [int(v) for v in out] == expected
