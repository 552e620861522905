"""The Helium (MVE) kernels of the Cortex-M55 (mps3-an547) under QEMU, == runtime/.

tc_conv2d_mve.c (four im2col columns of raw int8, VMLADAVA / VADDVA in a tail-predicated
loop, four channels requantized per vector), the 1x1 stride-1 case that reads its columns from
the input, tc_fully_connected_mve.c and tc_max_pool2d_mve.c (padded, clamped, 18 and 20
channels: one whole block of 16 and a partial one). Channel counts and depths are not multiples of 16 (the
loop's last block is partial) and some are below 16 (one partial block only); output channel
counts are not multiples of four (the last group of channels is predicated), pixel counts not
multiples of four (the last columns are left out of the store); 1..9 fully connected outputs;
weights with -128 and 127, inputs at both ends, input zero points -128 and 127; per-channel
shifts from left 3 to right 31 with multipliers up to 2^31 - 1 (the vector double rounding's
every branch). Fixed mode with double rounding (the vector requantization) and with single
rounding, and float mode (both scalar on the M55) must be right too. The vector rounding is
also compared with the scalar C one on edge values (tests/c/mve/requant_main.c)."""
from __future__ import annotations

import re
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from _firmware_models import random_inputs, random_model
from _selftest import assert_not_saturated, run_on_board

from export.c_codegen import write_c_sources
from firmware_host.build import build_firmware
from firmware_host.qemu import run_semihosted

BOARD = "mps3-an547"
COUNT = 4
CONV = ((7, 9, 5), [
    dict(op="conv2d", out=12, kernel=(3, 3), padding=(1, 1, 1, 1), relu=True),  # k = 45
    dict(op="conv2d", out=18, kernel=(1, 1)),  # k = 12: the direct 1x1 path, 63 pixels
    dict(op="max_pool2d", kernel=(3, 3), stride=(1, 1), padding=(1, 1, 1, 1), act_max=100),
    dict(op="conv2d", out=6, kernel=(3, 3), groups=3, dilation=(1, 2),
         padding=(1, 2, 1, 2)),  # grouped and dilated: k = 54
    dict(op="conv2d", out=33, kernel=(1, 1), stride=(2, 2), padding=(0, 1, 0, 1)),  # im2col
    dict(op="conv2d", out=7, kernel=(2, 3), padding=(1, 0, 0, 1)),  # k = 198 = 12 * 16 + 6
    dict(op="conv2d", out=17, kernel=(4, 4), stride=(2, 3), padding=(2, 2, 2, 2)),
])
FC = ((1, 3, 67), [  # depth 201 = 12 * 16 + 9, then every depth and out count 1..9
    dict(op="fully_connected", out=3), dict(op="fully_connected", out=9),
    dict(op="fully_connected", out=1), dict(op="fully_connected", out=5),
    dict(op="fully_connected", out=2), dict(op="fully_connected", out=7),
    dict(op="fully_connected", out=4), dict(op="fully_connected", out=6),
    dict(op="fully_connected", out=8), dict(op="fully_connected", out=30),
])
MIXED = ((6, 6, 16), [  # 16-channel blocks with nothing left over, then conv into fc
    dict(op="conv2d", out=16, kernel=(1, 1), relu=True),
    dict(op="conv2d", out=20, kernel=(3, 3), padding=(1, 1, 1, 1), act_max=60),
    dict(op="max_pool2d", kernel=(2, 2)),
    dict(op="fully_connected", out=19, act_max=90),
])
SPECS = {"conv": CONV, "fc": FC, "mixed": MIXED}


def _extremes(model, rng) -> None:
    """Weights at both int8 ends, and on the fixed double path a spread of shifts: left shifts
    with small multipliers, right shifts up to 31, and the largest multiplier."""
    for layer in model.layers:
        if "weights" not in layer.arrays:
            continue
        w = layer.arrays["weights"].reshape(-1)
        w[rng.choice(w.size, max(1, w.size // 20), replace=False)] = -128
        w[rng.choice(w.size, max(1, w.size // 20), replace=False)] = 127
        if model.requant_mode == "fixed" and layer.params.get("rounding") == "double":
            shift, mult = layer.arrays["shift"], layer.arrays["multiplier"]
            m = shift.size
            if m > 2:
                shift[0], mult[0] = 1, 1 << 30  # a left shift: acc itself, rounded
                shift[1], mult[1] = -31, 2**31 - 1  # the longest right shift
                shift[2] = 0  # no shift at all: no rounding step


def _model(spec: str, mode: str, rounding: str = "double", zero_point: int | None = None):
    rng = np.random.default_rng(zlib.crc32(repr((spec, mode, rounding, zero_point)).encode()))
    shape, layers = SPECS[spec]
    model = random_model(rng, shape, layers, mode, name=f"mve_{spec}", rounding=rounding)
    if zero_point is not None:
        model.tensors[model.input].zero_point = zero_point
    _extremes(model, rng)
    x = random_inputs(rng, model, COUNT)
    x[0, ::2] = -128
    x[0, 1::2] = 127
    return model, x


CASES = [("conv", "fixed", "double", None), ("conv", "fixed", "double", -128),
         ("fc", "fixed", "double", 127), ("mixed", "fixed", "double", None),
         ("conv", "fixed", "single", None), ("fc", "float", "double", None),
         ("mixed", "float", "double", 5)]


@pytest.mark.parametrize("spec,mode,rounding,zero_point", CASES)
def test_mve_kernels_equal_runtime(spec, mode, rounding, zero_point, arm_tools, tmp_path):
    """... and the image holds the MVE kernels, not the scalar ones the hooks leave out."""
    model, x = _model(spec, mode, rounding, zero_point)
    got, expected = run_on_board(model, x, BOARD, tmp_path)
    assert_not_saturated(expected, model, more_than=5)
    np.testing.assert_array_equal(got, expected)
    elf = tmp_path / "selftest" / BOARD / "firmware.elf"
    names = set(subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True,
                               check=True).stdout.split())
    assert "tc_matmul_pair" not in names and "tc_matmul_column" not in names
    ops = {layer.op for layer in model.layers}
    assert ("tc_max_pool2d_mve" in names) == ("max_pool2d" in ops)
    assert ("tc_fully_connected_mve" in names) == ("fully_connected" in ops)
    assert ("tc_mve_dot4_rows" in names) == ("conv2d" in ops)


REQUANT_MAIN = Path(__file__).resolve().parent / "c" / "mve" / "requant_main.c"


def test_vector_rounding_equals_the_scalar_one_on_edge_values(arm_tools, tmp_path):
    """tc_mve_requant_double against tc_requant_fixed_double (itself == runtime/, tested in
    test_requant.py) on the M55: accumulators at and around INT32_MIN / INT32_MAX, exact
    halves of every right shift, multipliers 0, 1, 2^30, 2^31 - 1 and INT32_MIN, every shift
    in [-31, 30], plus pseudo-random ones; the program prints how many differ."""
    rng = np.random.default_rng(0)
    model = random_model(rng, (2, 2, 4), [dict(op="conv2d", out=4, kernel=(1, 1))], "fixed")
    write_c_sources(model, tmp_path)
    elf = build_firmware(tmp_path, BOARD, app=str(REQUANT_MAIN), out_dir=tmp_path / "rq")
    run = run_semihosted(BOARD, elf, timeout=60)
    assert run.exit_code == 0, run.output
    match = re.search(r"^checked (\d+) differ (\d+)$", run.output, re.M)
    assert match, run.output
    assert int(match.group(1)) > 100_000
    assert int(match.group(2)) == 0, run.output
