"""tc_fully_connected (no scratch, raw int8 inputs, four rows per pass) == runtime/, natively
and on the QEMU boards (Cortex-M3, M4, M0, M55).

A probe (tests/c/runner/fc_probe.c) calls the kernel directly over cases that reach every
branch: depths 1..17 (inputs left to the C tail after the assembly's groups of eight: k % 8 of
0..7; below 8 no assembly at all), 24 / 31 / 40 (the M4 loop entered at its third group and
going round) and 1568 / 1571, out_channels 1..9 (every remainder of the four-row passes:
4 + 2 + 1 rows), weight rows and inputs at every byte alignment, weights and inputs all -128,
all 127 or alternating, input zero points 0 (what export leaves after folding it into the bias)
and nonzero (the kernel's own row sums), no bias, a bias at the accumulator's int32 bound, the
127 and two-sided clamps, and the double, single and float requantizations. Then whole
models, which take export's folded bias."""
from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
from _firmware_models import (CFLAGS, FIRMWARE_SRC, HARNESS, random_inputs, random_model,
                              require_tool)
from _selftest import assert_not_saturated, run_on_board

from export.c_codegen import write_c_sources
from export.conv_constants import folded_bias
from firmware_host.build import build_firmware
from firmware_host.qemu import run_semihosted
from runtime import kernels
from runtime.requant import Requant

PROBE = HARNESS.parent / "fc_probe.c"
BOARDS = ["lm3s6965evb", "mps2-an386", "microbit", "mps3-an547"]
INT32_MAX = 2**31 - 1
MODES = ("double", "single", "float")
EXTREMES = 160  # length of each all -128 / all 127 / alternating segment of the blobs


def _blob(rng, size):
    """Random int8 values, then the three extreme segments."""
    extremes = [np.full(EXTREMES, -128), np.full(EXTREMES, 127),
                np.tile([-128, 127], EXTREMES // 2)]
    return np.concatenate([rng.integers(-128, 128, size)] + extremes).astype(np.int8)


def make_cases(rng):
    shapes = [(d, m) for d in range(1, 18) for m in range(1, 10)]
    shapes += [(d, m) for d in (24, 31, 40, 1568, 1571) for m in range(1, 10)]
    w_blob = _blob(rng, 1571 * 9 + 8)
    x_blob = _blob(rng, 1571 + 8)
    random_w, random_x = len(w_blob) - 3 * EXTREMES, len(x_blob) - 3 * EXTREMES
    bias, mult, shift, scale = [], [], [], []
    cases, refs = [], []
    for index, (depth, m) in enumerate(shapes):
        extreme = depth * m <= EXTREMES and index % 3 == 0
        if extreme:  # an extreme segment each for weights and inputs
            w_off = random_w + EXTREMES * int(rng.integers(0, 3))
            x_off = random_x + EXTREMES * int(rng.integers(0, 3)) + int(rng.integers(0, 4))
        else:
            w_off = int(rng.integers(0, random_w - depth * m + 1))
            x_off = int(rng.integers(0, random_x - depth + 1))
        w = w_blob[w_off:w_off + depth * m].reshape(m, depth)
        x = x_blob[x_off:x_off + depth]
        in_zp = 0 if rng.random() < 0.5 else int(rng.integers(-128, 128))
        out_zp = int(rng.integers(-30, 31))
        act = (-128, 127) if rng.random() < 0.5 else (max(-128, out_zp), out_zp + 40)
        mode = MODES[int(rng.integers(0, 3))]
        bound = kernels.worst_case_accumulator(w)
        kind = rng.random()
        if kind < 0.2:
            b = None
        elif kind < 0.4:  # as large as the accumulator's int32 bound allows
            b = ((INT32_MAX - bound) * rng.choice([-1, 1], m)).astype(np.int32)
        else:
            b = rng.integers(-3000, 3001, m).astype(np.int32)
        x_scale = 0.05
        w_scales = rng.uniform(0.002, 0.02, m).astype(np.float32)
        y_scale = x_scale * float(w_scales.mean()) * np.sqrt(depth) * 73.0 * 73.0 / 40.0
        rq = Requant.from_scales(x_scale, w_scales, y_scale,
                                 "float" if mode == "float" else "fixed",
                                 "double" if mode == "float" else mode)
        rq_off = len(mult)
        if mode == "float":
            scale += rq.scale.tolist()
            mult += [0] * m
            shift += [0] * m
        else:
            mult += rq.multiplier.tolist()
            shift += rq.shift.tolist()
            scale += [0.0] * m
        b_off = -1 if b is None else len(bias)
        if b is not None:
            bias += b.tolist()
        cases.append([depth, m, w_off, x_off, b_off, {"double": 0, "single": 1, "float": 2}[mode],
                      rq_off, in_zp, out_zp, act[0], act[1]])
        refs.append(kernels.fully_connected(x[None], w, b, rq, input_zero_point=in_zp,
                                            output_zero_point=out_zp, act_range=act)[0])
    return cases, refs, (w_blob, x_blob, bias or [0], mult, shift, scale)


def _c_array(ctype, name, values, fmt=str):
    body = ",".join(fmt(v) for v in values)
    return f"static const {ctype} {name}[{len(values)}] = {{{body}}};\n"


def _c_i32(v):
    return "(-2147483647 - 1)" if int(v) == -2**31 else str(int(v))


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fc_probe")
    cases, refs, (w, x, bias, mult, shift, scale) = make_cases(np.random.default_rng(13))
    header = ("#include <stdint.h>\n"
              f"#define TC_FC_CASES {len(cases)}\n#define TC_FC_MAX_OUT 9\n"
              + _c_array("int8_t", "tc_fc_w", w.tolist())
              + _c_array("int8_t", "tc_fc_x", x.tolist())
              + _c_array("int32_t", "tc_fc_bias", bias, _c_i32)
              + _c_array("int32_t", "tc_fc_multiplier", mult, _c_i32)
              + _c_array("int32_t", "tc_fc_shift", shift, _c_i32)
              + _c_array("float", "tc_fc_scale", scale, lambda v: float(np.float32(v)).hex() + "f")
              + f"static const int32_t tc_fc_cases[{len(cases)}][11] = {{\n"
              + ",\n".join("{" + ",".join(map(_c_i32, c)) + "}" for c in cases) + "};\n")
    (directory / "inc").mkdir()
    (directory / "inc" / "fc_cases.h").write_text(header)
    # a float-mode model, so that the board images are built with the float requantization
    model = random_model(np.random.default_rng(0), (4, 4, 1),
                         [dict(op="conv2d", out=2, kernel=(3, 3))], "float", name="fcprobe")
    write_c_sources(model, directory)
    return directory, cases, refs


def parse(text, cases, refs):
    lines = re.findall(r"^o ([0-9a-f]*)$", text, re.M)
    assert "done" in text.splitlines() and len(lines) == len(cases), text[-500:]
    got = [np.frombuffer(bytes.fromhex(h), np.int8) for h in lines]
    bad = [(c[:2], c[7]) for c, g, r in zip(cases, got, refs) if not np.array_equal(g, r)]
    assert not bad, f"{len(bad)} cases differ, e.g. (depth, out), input zp: {bad[:5]}"
    # the cases test something: most outputs are not clamped
    flat = np.concatenate(refs)
    assert np.mean((flat > -128) & (flat < 127)) > 0.5 and np.unique(flat).size > 100


def test_fc_kernel_native_equals_runtime(probe):
    directory, cases, refs = probe
    exe = directory / "fc_probe"
    subprocess.run([require_tool("gcc"), *CFLAGS, "-O2", "-I", str(FIRMWARE_SRC),
                    "-I", str(directory / "inc"), str(PROBE),
                    str(FIRMWARE_SRC / "tc_fully_connected.c"), str(FIRMWARE_SRC / "tc_matmul.c"),
                    "-o", str(exe)], check=True)
    parse(subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout,
          cases, refs)


@pytest.mark.parametrize("board", BOARDS)
def test_fc_kernel_on_board_equals_runtime(board, probe, arm_tools):
    directory, cases, refs = probe
    elf = build_firmware(directory, board, app=str(PROBE), extra_include=directory / "inc",
                         out_dir=directory / board)
    run = run_semihosted(board, elf, timeout=120)
    assert run.exit_code == 0, run.output[-500:]
    parse(run.output, cases, refs)


# whole models: the input zero point folded into the bias by export, out_channels 9 (4 + 4 + 1)
# and 6 (4 + 2), depth 1568 then 9, a two-sided clamp on the last
MODEL_SPEC = ((7, 7, 32), [dict(op="fully_connected", out=9, relu=True),
                           dict(op="fully_connected", out=6, act_max=25)])


@pytest.mark.parametrize("board,mode", [("lm3s6965evb", "fixed"), ("mps2-an386", "fixed"),
                                        ("microbit", "fixed"), ("mps2-an386", "float")])
def test_fc_model_on_board_equals_runtime(board, mode, arm_tools, tmp_path):
    rng = np.random.default_rng(5)
    model = random_model(rng, *MODEL_SPEC, mode, name="fc")
    assert all(model.tensors[l.inputs[0]].zero_point != 0 for l in model.layers)
    x = random_inputs(rng, model, 6)
    got, expected = run_on_board(model, x, board, tmp_path)
    assert_not_saturated(expected, model, more_than=5)
    assert np.array_equal(got, expected)


def test_export_folds_the_input_zero_point_into_the_bias(tmp_path):
    model = random_model(np.random.default_rng(5), *MODEL_SPEC, "fixed", name="fc")
    write_c_sources(model, tmp_path)
    source = (tmp_path / "model_data.c").read_text()
    for index, layer in enumerate(model.layers):
        zp = model.tensors[layer.inputs[0]].zero_point
        w = layer.arrays["weights"].astype(np.int64)
        expected = layer.arrays["bias"] - zp * w.sum(axis=1)  # by hand, int64
        body = re.search(rf"tc_l{index}_bias\[\d+\] TC_ALIGN = \{{([^}}]*)\}}", source).group(1)
        assert [int(v) for v in body.replace(",", " ").split()] == expected.tolist()
    assert "#define TC_SCRATCH_SIZE 4" in (tmp_path / "model_data.h").read_text()


def test_a_folded_bias_past_int32_wraps_and_the_sums_still_agree():
    """The device adds the folded bias to an int32 sum that wraps: a folded bias past int32 is
    stored wrapped, and bias + sum w * (x - zp) (which fits) comes out the same mod 2^32."""
    w = np.full((2, 3), 127, np.int8)
    bias = np.array([0, 2**31 - 382], np.int32)
    assert folded_bias(w, bias, -1).tolist() == [381, 2**31 - 1]
    folded = folded_bias(w, bias, -2)
    assert folded.tolist() == [762, 2**31 + 380 - 2**32]  # by hand: 2**31 - 382 + 2 * 381
    x = np.array([-128, -128, -128], np.int64)
    exact = bias.astype(np.int64) + (w.astype(np.int64) * (x + 2)).sum(axis=1)
    device = (folded.astype(np.int64) + (w.astype(np.int64) * x).sum(axis=1) + 2**31) % 2**32 \
        - 2**31
    assert device.tolist() == exact.tolist()
