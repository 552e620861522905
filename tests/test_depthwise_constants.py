"""The depthwise 3x3 kernels (tc_depthwise_conv2d.c's column kernel, tc_depthwise_inplace.c)
with the per-channel constants export writes (conv_constants.depthwise_fast, folded_bias:
rq->fast, rq->folded_bias) and without them (a direct caller's rq: the kernels derive the same
on the device), against runtime/ (checked against onnxruntime and the slow reference
elsewhere), compared ==.

The "without" images are the generated sources with the layer table edited: ``fast`` = 0 (the
kernel derives the requantization constants, the bias recovered from the folded one), or
``fast`` = ``folded_bias`` = 0 and the plain bias restored (the caller of before). Edge shapes:
widths 1 to 5, stride 2 either way, padding 0 / 1 / 2 / asymmetric, input height 1 (two tap
rows in the padding), 3, 5 and 6 channels, channel multiplier 2, vertical dilation, a clamp;
and extreme weights and inputs; natively (the in-place kernel) in both requantization modes
and on the Cortex-M0 / M3 / M4 / M55 boards."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from _firmware_models import (build_native_runner, compile_kernel_objects, random_inputs,
                              random_model, reference_run, run_native)
from _selftest import assert_not_saturated, build_and_run, write_selftest_inputs

from export.c_codegen import write_c_sources


def dw(out, groups, **kw) -> dict:
    return dict(op="conv2d", out=out, kernel=(3, 3), groups=groups, **kw)


P1 = dict(padding=(1, 1, 1, 1))
CHAINS = {
    "widths": ((6, 5, 3), [dw(3, 3, **P1), dw(3, 3, stride=(2, 2), **P1),
                           dw(3, 3, padding=(2, 2, 2, 2)), dw(3, 3, padding=(0, 1, 1, 0)),
                           dw(6, 3, padding=(1, 0, 1, 0)), dw(6, 6, stride=(1, 2), **P1)]),
    "edges": ((1, 4, 5), [dw(5, 5, **P1), dw(5, 5, padding=(3, 0, 3, 1)),
                          dw(5, 5, dilation=(2, 1), padding=(2, 2, 2, 0), act_max=40)]),
}
VARIANTS = ("export", "derived", "bias")


def _model(chain: str, mode: str, extreme: bool = False):
    rng = np.random.default_rng(23)
    shape, layers = CHAINS[chain]
    model = random_model(rng, shape, layers, mode, name="dw")
    if extreme:  # weights -128 / 127, a multiplier that keeps the outputs inside int8
        for layer in model.layers:
            a = layer.arrays
            a["weights"][...] = rng.choice(np.array([-128, 127], np.int8), a["weights"].shape)
            a["multiplier"][...] = rng.integers(2**30, 2**31 - 1, a["multiplier"].shape)
            a["shift"][...] = -10
    return model


def _inputs(model, extreme: bool, n: int) -> np.ndarray:
    rng = np.random.default_rng(4)
    if extreme:
        return rng.choice(np.array([-128, 127], np.int8), (n,) + model.input_spec.shape)
    return random_inputs(rng, model, n)


def write_sources(model, directory: Path, variant: str) -> None:
    """The model's sources with its depthwise layers' export constants kept ("export"),
    the fast ones taken out ("derived"), or both taken out and the plain bias back ("bias")."""
    write_c_sources(model, directory)
    if variant == "export":
        return
    path = directory / "model_data.c"
    source = path.read_text()
    arrays, unused = [], []
    for i, layer in enumerate(model.layers):
        source, n = re.subn(rf"\.fast = tc_l{i}_fast\b", ".fast = 0", source)
        assert n == 1, f"layer {i}: no export constants in model_data.c"
        unused.append(f"tc_l{i}_fast")
        if variant == "bias":
            source, n = re.subn(rf"\.folded_bias = tc_l{i}_folded_bias\b", ".folded_bias = 0",
                                source)
            assert n == 1
            unused.append(f"tc_l{i}_folded_bias")
            source, n = re.subn(rf"(\.weights = tc_l{i}_weights,\s*)\.bias = 0",
                                rf"\1.bias = tc_test_bias{i}", source)
            assert n == 1
            values = ", ".join(str(int(v)) for v in layer.arrays["bias"])
            arrays.append(f"static const int32_t tc_test_bias{i}[] = {{{values}}};\n")
    include = '#include "model_data.h"\n'
    # the arrays the table no longer points at, still referenced (-Werror: unused)
    source += f"const void *const tc_test_unused[] = {{{', '.join(unused)}}};\n"
    path.write_text(source.replace(include, include + "".join(arrays), 1))


@pytest.fixture(scope="module")
def kernel_objects(tmp_path_factory):
    root = tmp_path_factory.mktemp("kernels")
    return {mode: compile_kernel_objects(root / mode, mode == "float")
            for mode in ("fixed", "float")}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mode,chain,extreme", [("fixed", "widths", False),
                                                ("fixed", "edges", False),
                                                ("float", "widths", False),
                                                ("fixed", "edges", True)])
def test_natively_equals_runtime(mode, chain, extreme, variant, kernel_objects, tmp_path):
    model = _model(chain, mode, extreme)
    write_sources(model, tmp_path, variant)
    exe = build_native_runner(tmp_path, kernel_objects[mode], mode == "float")
    x = _inputs(model, extreme, 20)
    expected = reference_run(model, x)
    assert_not_saturated(expected.reshape(len(x), -1), model, more_than=3 if extreme else 5)
    np.testing.assert_array_equal(run_native(exe, model, x), expected)


@pytest.mark.parametrize("variant", ["export", "bias"])
@pytest.mark.parametrize("board", ["microbit", "lm3s6965evb", "mps2-an386", "mps3-an547"])
def test_on_board_equals_runtime(board, variant, arm_tools, tmp_path):
    """The widths chain, one image per board and variant (the edges chain on extreme values
    below, in the "derived" variant, on the Cortex-M3 and M4 column kernels)."""
    model = _model("widths", "fixed")
    x = _inputs(model, False, 2)
    write_sources(model, tmp_path, variant)
    write_selftest_inputs(tmp_path / "selftest", x)
    _, _, got = build_and_run(model, board, tmp_path)
    expected = reference_run(model, x).reshape(len(x), -1)
    assert_not_saturated(expected, model, more_than=5)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("board", ["lm3s6965evb", "mps2-an386"])
def test_derived_extreme_on_board_equals_runtime(board, arm_tools, tmp_path):
    model = _model("edges", "fixed", extreme=True)
    x = _inputs(model, True, 2)
    write_sources(model, tmp_path, "derived")
    write_selftest_inputs(tmp_path / "selftest", x)
    _, _, got = build_and_run(model, board, tmp_path)
    expected = reference_run(model, x).reshape(len(x), -1)
    assert_not_saturated(expected, model, more_than=3)
    np.testing.assert_array_equal(got, expected)
