"""export/conv_constants.py == the firmware's own definition of the same constants.

The conv kernels used to derive them on the device at every layer's set-up; export writes them
into model_data.c now. tc_requant.h's tc_requant_fast_prepare (the depthwise kernels' fallback) is
the C statement of which channels may take the fast double rounding and with which offset;
this compiles it natively and compares every field ==, with the folded bias computed in C by
wrapping uint32 arithmetic, on random layers and on the edges: right shifts 0, 1, 21 and 22, a
left shift, accumulator bounds just below and at 2^29, single rounding, float mode, extreme
zero points and biases that wrap. And the 1x1 int16 weights export writes are linked only into
the images whose dot loop reads them. The depthwise constants (depthwise_fast, with the int16
flag) likewise == tc_depthwise.h's derivation for callers that pass none, and so does the
kernels' reading of the flags packed two bits a channel (depthwise_flags)."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
from _firmware_models import CFLAGS, FIRMWARE_SRC, require_tool

from export import conv_constants
from runtime.requant import Requant

PROBE = r"""
#include <stdio.h>
#include "tc_requant.h"
#include "cases.h"
int main(void)
{
    int32_t i, r, t;
    for (i = 0; i < CASES; i++) {
        tc_requant_params rq = {MODE, multiplier[i], shift[i], 0, 0, 0};
        for (r = 0; r < ROWS; r++) {
            const int8_t *w = weights[i] + r * K;
            int64_t bound = bias[i][r] < 0 ? -(int64_t)bias[i][r] : bias[i][r];
            uint32_t folded = (uint32_t)bias[i][r];
            tc_requant_fast f;
            for (t = 0; t < K; t++) {
                bound += 255 * (w[t] < 0 ? -w[t] : w[t]);
                folded -= (uint32_t)input_zp[i] * (uint32_t)(int32_t)w[t];
            }
            f = tc_requant_fast_prepare(&rq, r, bound, output_zp[i]);
            printf("%ld %ld %ld %ld %ld\n", (long)f.fast, (long)f.multiplier, (long)f.offset,
                   (long)f.right, (long)(int32_t)folded);
        }
    }
    return 0;
}
"""
ROWS, K = 6, 12


def c_array(ctype: str, name: str, values) -> str:
    rows = ",\n".join("{" + ", ".join(str(int(v)) for v in np.ravel(row)) + "}"
                      for row in values)
    return f"static const {ctype} {name}[][{np.asarray(values[0]).size}] = {{\n{rows}\n}};\n"


def run_probe(tmp_path, source: str, cases, mode: str, rounding: str, defines: str,
              *arrays: str) -> np.ndarray:
    """Compile a C probe over the cases (their weights, bias, multiplier, shift and zero points
    as arrays in cases.h, plus ``arrays``) and return the integers it prints, a row a line."""
    cc = require_tool("gcc")
    c_mode = {"double": 0, "single": 1}[rounding] if mode == "fixed" else 2
    header = [f"#define CASES {len(cases)}\n#define ROWS {ROWS}\n{defines}#define MODE {c_mode}\n",
              c_array("int8_t", "weights", [c[0].reshape(-1) for c in cases]),
              c_array("int32_t", "bias", [np.where(c[1] == -2**31, 0, c[1]) for c in cases]),
              c_array("int32_t", "multiplier", [c[2] for c in cases]),
              c_array("int32_t", "shift", [c[3] for c in cases]), *arrays,
              "static const int32_t input_zp[] = {" + ", ".join(str(c[4]) for c in cases)
              + "};\n",
              "static const int32_t output_zp[] = {" + ", ".join(str(c[5]) for c in cases)
              + "};\n"]
    (tmp_path / "cases.h").write_text("#include <stdint.h>\n" + "".join(header))
    (tmp_path / "probe.c").write_text(source)
    exe = tmp_path / "probe"
    subprocess.run([cc, *CFLAGS, "-O2", f"-DTC_ENABLE_FLOAT_REQUANT={int(mode == 'float')}",
                    "-I", str(FIRMWARE_SRC), "-I", str(tmp_path), str(tmp_path / "probe.c"),
                    "-o", str(exe)], check=True)
    return np.array([[int(v) for v in line.split()] for line in subprocess.run(
        [str(exe)], capture_output=True, text=True, check=True).stdout.splitlines()])


def make_cases(rng):
    cases = []
    for i in range(40):
        weights = rng.integers(-128, 128, (ROWS, 1, 3, 4), dtype=np.int8)
        bias = rng.integers(-2**31, 2**31, ROWS, dtype=np.int64) if i % 4 == 0 else \
            rng.integers(-5000, 5000, ROWS)
        multiplier = rng.integers(2**30, 2**31, ROWS)
        shift = rng.choice([-23, -22, -21, -20, -8, -1, 0, 1, 3], ROWS)
        cases.append((weights, bias, multiplier, shift, int(rng.integers(-128, 128)),
                      int(rng.choice([-128, 127, int(rng.integers(-128, 128))]))))
    # accumulator bounds at 2^29 - 1 and 2^29: |bias| + 255 * sum|w|
    weights = np.full((ROWS, 1, 3, 4), 100, np.int8)
    edge = 2**29 - 255 * 100 * K
    cases.append((weights, np.array([edge - 1, edge, -(edge - 1), -edge, 0, 1]),
                  np.full(ROWS, 2**30), np.full(ROWS, -5), -128, 127))
    return cases


@pytest.mark.parametrize("mode,rounding", [("fixed", "double"), ("fixed", "single"),
                                           ("float", "double")])
def test_export_constants_equal_the_c_definition(mode, rounding, tmp_path):
    cases = make_cases(np.random.default_rng(5))
    got = run_probe(tmp_path, PROBE, cases, mode, rounding, f"#define K {K}\n")
    expected = []
    for weights, bias, multiplier, shift, izp, ozp in cases:
        bias = np.where(bias == -2**31, 0, bias)
        rq = Requant.fixed(multiplier, shift, rounding) if mode == "fixed" else \
            Requant.float(np.full(ROWS, 0.01, np.float32))
        fast = conv_constants.fast_requant(weights, bias, rq, ozp)
        folded = conv_constants.folded_bias(weights, bias, izp)
        expected.append(np.column_stack([fast, folded]))
    expected = np.concatenate(expected)
    assert (expected[:, 0] == 1).any() == (mode == "fixed" and rounding == "double")
    if mode == "fixed" and rounding == "double":
        assert 0 < expected[:, 0].sum() < len(expected)  # both kinds of channel
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("board,holds", [("mps2-an386", True), ("lm3s6965evb", False),
                                         ("microbit", False), ("host", False)])
def test_int16_pointwise_weights_only_in_dsp_images(board, holds, arm_tools, tmp_path):
    """The 1x1 layer's int16 weights are in the Cortex-M4 image's flash, and not in the
    Cortex-M3, Cortex-M0 or host image (whose dot loops do not read them)."""
    from _firmware_models import random_inputs, random_model
    from _selftest import SELFTEST, write_selftest_inputs

    from export.c_codegen import write_c_sources
    from firmware_host.build import build_firmware
    rng = np.random.default_rng(2)
    model = random_model(rng, (4, 4, 8), [dict(op="conv2d", out=8, kernel=(1, 1))], "fixed")
    write_c_sources(model, tmp_path)
    assert "tc_l0_weights_s16" in (tmp_path / "model_data.c").read_text()
    write_selftest_inputs(tmp_path / "selftest", random_inputs(rng, model, 1))
    if board == "host":
        image, nm = build_firmware(tmp_path, board, out_dir=tmp_path / board), "nm"
    else:
        image = build_firmware(tmp_path, board, app=str(SELFTEST),
                               extra_include=tmp_path / "selftest",
                               out_dir=tmp_path / "selftest" / board)
        nm = "arm-none-eabi-nm"
    symbols = subprocess.run([require_tool(nm), str(image)], capture_output=True, text=True,
                             check=True).stdout
    assert ("tc_l0_weights_s16" in symbols) == holds
    assert "tc_l0_fast" in symbols and "tc_l0_folded_bias" in symbols


DW_PROBE = r"""
#include <stdio.h>
#include "tc_depthwise.h"
#include "cases.h"
int main(void)
{
    int32_t i, r;
    for (i = 0; i < CASES; i++) {
        tc_requant_params rq = {MODE, multiplier[i], shift[i], 0, 0, 0}, from = rq;
        from.fast = (const tc_requant_fast *)(const void *)flags[i];
        for (r = 0; r < ROWS; r++) {
            const int8_t *w = weights[i] + r * 9;
            const tc_requant_fast f = tc_dw_fast(&rq, r, w, bias[i], input_zp[i], output_zp[i]);
            const tc_requant_fast g = tc_dw_fast(&from, r, w, bias[i], 0, output_zp[i]);
            printf("%ld %ld %ld %ld %ld ", (long)f.fast, (long)f.multiplier, (long)f.offset,
                   (long)f.right, (long)tc_dw_folded_bias(&rq, r, w, bias[i], input_zp[i]));
            printf("%ld %ld %ld %ld\n", (long)g.fast, (long)(g.fast ? g.multiplier : 0),
                   (long)(g.fast ? g.offset : 0), (long)(g.fast ? g.right : 0));
        }
    }
    return 0;
}
"""


def make_depthwise_cases(rng):
    """Depthwise layers (nine weights a channel): random ones, and the edges of the int16
    output bound (small and large multipliers, output zero points -128 and 127, right shifts 1
    and 21) and of the accumulator bound 2^29."""
    cases = []
    for i in range(60):
        weights = rng.integers(-128, 128, (ROWS, 3, 3, 1), dtype=np.int8)
        bias = rng.integers(-2**31, 2**31, ROWS, dtype=np.int64) if i % 5 == 0 else \
            rng.integers(-2**20, 2**20, ROWS) if i % 5 == 1 else rng.integers(-5000, 5000, ROWS)
        multiplier = rng.integers(2**30, 2**31, ROWS)
        shift = rng.choice([-22, -21, -20, -12, -8, -4, -2, -1, 0, 1], ROWS)
        cases.append((weights, bias, multiplier, shift, int(rng.integers(-128, 128)),
                      int(rng.choice([-128, 127, int(rng.integers(-128, 128))]))))
    weights = np.full((ROWS, 3, 3, 1), -128, np.int8)
    edge = 2**29 - 255 * 128 * 9
    cases.append((weights, np.array([edge - 1, edge, -(edge - 1), -edge, 0, 1]),
                  np.full(ROWS, 2**31 - 1), np.full(ROWS, -1), 127, -128))
    # biases whose bound puts the largest output before the clamp (about bound / 2^right / 2
    # + |output zero point| with a multiplier of 2^30) on every value around 2^15: both sides
    # of the int16 bound, exactly
    for right in (1, 2, 3):
        for ozp in (0, -128, 127):
            edge = (2**15 - abs(ozp)) * 2**(right + 1) - 255 * 27
            for start in range(edge - 4 * 2**right, edge + 4 * 2**right, ROWS):
                cases.append((np.full((ROWS, 3, 3, 1), 3, np.int8),
                              np.arange(start, start + ROWS), np.full(ROWS, 2**30),
                              np.full(ROWS, -right), 0, ozp))
    return cases


@pytest.mark.parametrize("mode,rounding", [("fixed", "double"), ("fixed", "single"),
                                           ("float", "double")])
def test_depthwise_constants_equal_the_c_definition(mode, rounding, tmp_path):
    """conv_constants.depthwise_fast and folded_bias == what the depthwise kernels derive on
    the device for a caller that passes none (tc_depthwise.h: tc_dw_fast, tc_dw_folded_bias),
    the flags included: both kinds of channel and both answers of the int16 bound occur."""
    cases = make_depthwise_cases(np.random.default_rng(7))

    def requant(case):
        return Requant.fixed(case[2], case[3], rounding) if mode == "fixed" else \
            Requant.float(np.full(ROWS, 0.01, np.float32))

    flags = c_array("int32_t", "flags", [conv_constants.depthwise_flags(
        c[0], np.where(c[1] == -2**31, 0, c[1]), requant(c), c[5]) for c in cases])
    got = run_probe(tmp_path, DW_PROBE, cases, mode, rounding, "", flags)
    expected = []
    for case in cases:
        weights, bias, izp, ozp = case[0], np.where(case[1] == -2**31, 0, case[1]), *case[4:]
        rq = requant(case)
        f = conv_constants.depthwise_fast(weights, bias, rq, ozp)
        # the kernels' reading of the packed flags: the same fast channels, with the same
        # constants as derived on the device (the others are not read)
        fast = (f[:, :1] != 0)
        expected.append(np.column_stack([f, conv_constants.folded_bias(weights, bias, izp),
                                         np.where(fast, f, 0)]))
    expected = np.concatenate(expected)
    flags = set(expected[:, 0].tolist())
    if mode == "fixed" and rounding == "double":
        assert flags == {0, conv_constants.DW_FAST,
                         conv_constants.DW_FAST | conv_constants.DW_FAST_HALVES}
    else:
        assert flags == {0}
    np.testing.assert_array_equal(got, expected)
