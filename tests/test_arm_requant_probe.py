"""The fast double rounding as the Cortex-M boards execute it, against runtime/requant.py.

tc_requant_double_fast's rounding high multiply is inline assembly (SMMULR on the M4, SMULL plus
the rounding bit on the M3) and the conv kernels requantize through tc_store_fast_rows, an
assembly loop per board; the host build runs neither. A semihosted probe image runs both on
each QEMU board over edge vectors: exact ties of both signs (and their neighbours) for every
admitted right shift 1..21, the accumulator limit +-(2^29 - 1), INT32_MIN / INT32_MAX and
negative multipliers, every zero point's extremes, plus random cases."""
from __future__ import annotations

import re

import numpy as np
import pytest

from _firmware_models import HARNESS, random_model
from export.c_codegen import write_c_sources
from firmware_host.build import build_firmware
from firmware_host.qemu import run_semihosted
from runtime.requant import Requant

PROBE = HARNESS.parent / "requant_probe_arm.c"
LIMIT = 2**29 - 1
MULTIPLIERS = (2**30, 2**31 - 1, -2**31, -(2**31 - 1), 1518500250, -2**30 - 7)


def edge_cases() -> list[tuple[int, int, int, int]]:
    cases = []
    for right in range(1, 22):
        accs = {0, 1, -1, LIMIT, -LIMIT}
        for j in (0, 1, 3, 1000):
            tie = j * 2**right + 2**(right - 1)  # a tie of the second rounding at multiplier 0.5
            for v in (2 * tie - 1, 2 * tie, 2 * tie + 1, tie, tie + 1):
                if abs(v) <= LIMIT:
                    accs.update((v, -v))
        for m in MULTIPLIERS:
            for i, acc in enumerate(sorted(accs)):
                cases.append((acc, m, -right, (-128, 127, 0, -1)[i % 4]))
    rng = np.random.default_rng(11)
    for _ in range(600):
        cases.append((int(rng.integers(-LIMIT, LIMIT + 1)), int(rng.integers(-2**31, 2**31)),
                      int(rng.integers(-21, 0)), int(rng.integers(-128, 128))))
    return cases


# outside the proof: the probe must refuse them (fast = 0), not compute them
REFUSED = [(2**29, 2**30, -3, 0), (-2**29, 2**30, -3, 0), (100, 2**30, 0, 0),
           (100, 2**30, 4, 0), (100, 2**30, -22, 0)]


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory, arm_tools):
    directory = tmp_path_factory.mktemp("arm_probe")
    model = random_model(np.random.default_rng(0), (4, 4, 1),
                         [dict(op="conv2d", out=2, kernel=(3, 3))], "fixed", name="probe")
    write_c_sources(model, directory)
    cases = edge_cases() + REFUSED
    rows = ",\n".join("    {%d, %d, %d, %d}" % tuple(c) for c in cases)
    (directory / "probe").mkdir()
    (directory / "probe" / "probe_cases.h").write_text(
        "#include <stdint.h>\n"
        f"#define TC_PROBE_COUNT {len(cases)}\n"
        f"static const int32_t tc_probe_cases[{len(cases)}][4] = {{\n"
        + rows.replace("-2147483648", "(-2147483647 - 1)") + "\n};\n")
    return directory, cases


@pytest.mark.parametrize("board", ["lm3s6965evb", "mps2-an386"])
def test_fast_requant_on_board_equals_runtime(board, probe_dir):
    directory, cases = probe_dir
    elf = build_firmware(directory, board, app=str(PROBE), extra_include=directory / "probe",
                         out_dir=directory / "probe" / board)
    run = run_semihosted(board, elf, timeout=60)
    assert run.exit_code == 0 and "done" in run.output.splitlines(), run.output
    fields = re.findall(r"^([0-9a-f ]+)$", run.output, re.M)
    got = np.array([int(v, 16) for line in fields for v in line.split()],
                   np.int64).reshape(-1, 4)
    assert got.shape[0] == len(cases)
    admitted, refused = got[:-len(REFUSED)], got[-len(REFUSED):]
    assert refused[:, 0].tolist() == [0] * len(REFUSED)
    assert admitted[:, 0].all(), "a case inside the proven range was refused or stored wrong"
    expected = np.array([Requant.fixed(m, s).apply(np.array([a]))[0] + z
                         for a, m, s, z in cases[:-len(REFUSED)]], np.int64)
    value = admitted[:, 1].astype(np.uint32).view(np.int32).astype(np.int64)
    assert np.array_equal(value, expected)
    assert np.array_equal(admitted[:, 2], expected & 0xFF)
    assert np.array_equal(admitted[:, 3], np.clip(expected, -128, 127) & 0xFF)
    # by hand: 3 * 0.5 / 2 = 0.75 -> 1 and -3 -> -1 (right 1, multiplier 0.5, zero point -128)
    hand = {(a, z): v for (a, m, s, z), v in zip(cases, value) if m == 2**30 and s == -1}
    assert hand[(3, -128)] == -127 and hand[(-3, 0)] == -1
