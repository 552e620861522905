"""A 1x1 conv without padding needs no scratch (like CMSIS-NN's arm_convolve_1x1_s8), natively
and under QEMU, == runtime/.

tc_conv2d.c keeps such a layer's pair column in the last bytes of its output, which no pixel
before them writes; the pixels whose outputs reach that place take the caller's buffer when the
model's scratch (sized by another layer) holds the column, else the input's pixels already
read when no later layer reads the input, else tc_matmul_pair_raw on the raw inputs. Helium (tc_conv2d_mve.c) reads the four pixels where they lie, at any stride. The specs
reach: widths 1 to 5, stride 2 both ways and one way, pairs across two rows and a last single
pixel, channel counts not a multiple of four (no fast column), odd row counts and more than 32
rows, an output smaller than one column (every pixel without a column), a model whose scratch
holds the column (from a 3x3 layer) and models whose scratch does not, an input that nothing
reads later (its pixels already read hold the column) and one an add reads again, and rows of
extreme weights (+-127, -128)."""
from __future__ import annotations

import numpy as np
import pytest
from _firmware_models import (build_native_runner, compile_kernel_objects, random_inputs,
                              random_model, reference_run, run_native)
from _selftest import run_on_board

from export.c_codegen import layer_scratch, write_c_sources


def pw(out, **kw) -> dict:
    return dict(op="conv2d", out=out, kernel=(1, 1), **kw)


SPECS = {
    # no other layer: TC_SCRATCH_SIZE is 4, the last pixels of each layer go without a column
    "odd": ((3, 5, 12), [pw(12, relu=True),  # width 5, 15 pixels
                         pw(10, stride=(2, 2)),  # 2 x 3
                         pw(6),  # k = 10
                         pw(5, stride=(1, 2)),  # 2 x 2, k = 6
                         pw(7)]),  # k = 5
    # 2 pixels of width 1, output smaller than a column; 37 rows: two chunks, an odd last row
    "tiny": ((2, 1, 40), [pw(37)]),
    "wide": ((2, 4, 4), [pw(16, relu=True),  # width 4, k = 4
                         pw(7)]),  # k = 16, an odd row count
    # the second layer's input is read by nothing after it: once the output has no room, the
    # input pixels already read hold the column (tc_conv_params.input_spare)
    "spare": ((3, 3, 8), [pw(64, relu=True), pw(64)]),
    # the second layer's input is read again by the add: not spare (the first's, the model's
    # input, is)
    "residual": ((3, 3, 8), [pw(16, relu=True), pw(16), dict(op="add", **{"with": 1})]),
    # a 3x3 layer sizes the scratch: the 1x1 layers' last pixels take it
    "scratch": ((4, 3, 8), [dict(op="conv2d", out=8, kernel=(3, 3), padding=(1, 1, 1, 1)),
                            pw(32, relu=True),  # width 3
                            pw(8, stride=(2, 2))]),  # 2 x 2, k = 32
}
INPUTS = 4


def make_case(spec: str, mode: str, extreme: bool = False):
    rng = np.random.default_rng(5)
    shape, layers = SPECS[spec]
    model = random_model(rng, shape, layers, mode, name="pw0")
    if extreme:  # rows of +127, of -128 and alternating: the widest sums the kernels take
        layer = model.layers[-1]
        w = layer.arrays["weights"].copy()
        w[0], w[1] = 127, -128
        w[2].reshape(-1)[::2] = -128
        w[2].reshape(-1)[1::2] = 127
        layer.arrays["weights"] = w
    return model, random_inputs(rng, model, INPUTS)


CASES = [(s, False) for s in SPECS] + [("odd", True)]
IDS = [s + ("-extreme" if e else "") for s, e in CASES]
# on the boards (each a firmware build): the M3 and M0 take the in-place loop for every pixel
# or their C one, the M4 its column and the in-place loop for the last pixels, the M55 Helium
BOARD_CASES = [("odd", True), ("tiny", False), ("spare", False), ("residual", False)]


def test_pointwise_layers_need_no_scratch():
    for spec in SPECS:
        model, _ = make_case(spec, "fixed")
        for layer, scratch in zip(model.layers, layer_scratch(model)):
            if layer.op == "conv2d" and layer.arrays["weights"].shape[1:3] == (1, 1):
                assert scratch == 0, (spec, layer.name, scratch)


def test_only_a_dead_input_is_spare():
    """iparams[0] (tc_conv_params.input_spare) is set for a 1x1 layer whose input no later
    layer reads, the model's input included (each run writes it anew), and for no other: not a
    tensor an add reads later."""
    from export.c_codegen import _layer_entry, _Writer
    expect = {"spare": [1, 1], "residual": [1, 0], "odd": [1, 1, 1, 1, 1]}
    for spec, flags in expect.items():
        model, _ = make_case(spec, "fixed")
        got = [_layer_entry(model, i, layer, _Writer())[0]["iparams"][0]
               for i, layer in enumerate(model.layers) if layer.op == "conv2d"]
        assert got == flags, (spec, got)


@pytest.fixture(scope="module")
def kernel_objects(tmp_path_factory):
    root = tmp_path_factory.mktemp("kernels")
    return {mode: compile_kernel_objects(root / mode, mode == "float")
            for mode in ("fixed", "float")}


def check(expected, got):
    assert len(np.unique(expected)) > 8, "outputs saturated"
    assert np.array_equal(got, expected), f"{(got != expected).sum()} of {got.size} differ"


@pytest.mark.parametrize("mode", ["fixed", "float"])
@pytest.mark.parametrize("spec,extreme", CASES, ids=IDS)
def test_pointwise_native_equals_runtime(spec, extreme, mode, kernel_objects, tmp_path):
    model, x = make_case(spec, mode, extreme)
    write_c_sources(model, tmp_path)
    exe = build_native_runner(tmp_path, kernel_objects[mode], mode == "float")
    got = run_native(exe, model, x).reshape(len(x), -1)
    check(reference_run(model, x).reshape(len(x), -1), got)


@pytest.mark.parametrize("spec,extreme", BOARD_CASES,
                         ids=["odd-extreme", "tiny", "spare", "residual"])
@pytest.mark.parametrize("board", ["lm3s6965evb", "mps2-an386", "mps3-an547", "microbit"])
def test_pointwise_on_board_equals_runtime(board, spec, extreme, arm_tools, tmp_path):
    model, x = make_case(spec, "fixed", extreme)
    got, expected = run_on_board(model, x, board, tmp_path)
    check(expected, got)


@pytest.mark.parametrize("spec,mode", [("scratch", "fixed"), ("odd", "float")])
def test_pointwise_m4_equals_runtime(spec, mode, arm_tools, tmp_path):
    """The M4 with the model's scratch holding the column; float requantization."""
    model, x = make_case(spec, mode)
    got, expected = run_on_board(model, x, "mps2-an386", tmp_path)
    check(expected, got)
