"""The firmware's semihosted self-test image: a model and its inputs compiled in, run once under
QEMU, each output printed. The QEMU kernel tests compare it with runtime/ through this."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from _firmware_models import reference_run

from export.c_codegen import write_c_sources
from firmware_host.build import FIRMWARE_DIR, build_firmware
from firmware_host.qemu import run_semihosted

SELFTEST = FIRMWARE_DIR / "selftest" / "selftest_main.c"


def write_selftest_inputs(directory: Path, x: np.ndarray) -> None:
    rows = ",\n".join("    {" + ", ".join(map(str, row.reshape(-1))) + "}" for row in x)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "selftest_inputs.h").write_text(
        f"#define TC_SELFTEST_COUNT {len(x)}\n"
        f"static const int8_t tc_selftest_inputs[{len(x)}][TC_INPUT_SIZE] = {{\n{rows}\n}};\n")


def parse_selftest(text: str, output_size: int) -> list[np.ndarray]:
    outputs = [np.frombuffer(bytes.fromhex(m.group(1)), np.int8)
               for m in re.finditer(r"^out ([0-9a-f]+) ticks", text, re.M)]
    assert "done" in text.splitlines(), text
    assert all(o.size == output_size for o in outputs)
    return outputs


def run_on_board(model, x: np.ndarray, board: str, directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(device outputs, runtime/ outputs)``, both ``[N, output size]``, for inputs ``x``."""
    write_c_sources(model, directory)
    write_selftest_inputs(directory / "selftest", x)
    _, _, got = build_and_run(model, board, directory)
    return got, reference_run(model, x).reshape(len(x), -1)


def build_and_run(model, board: str, directory: Path) -> tuple[Path, str, np.ndarray]:
    """The self-test image of the sources and inputs already in ``directory``, built for
    ``board`` and run under QEMU: ``(elf, its output, device outputs [N, output size])``."""
    elf = build_firmware(directory, board, app=str(SELFTEST), extra_include=directory / "selftest",
                         out_dir=directory / "selftest" / board)
    run = run_semihosted(board, elf, timeout=60)
    assert run.exit_code == 0, run.output
    return elf, run.output, np.stack(parse_selftest(run.output, model.output_spec.size))


def assert_not_saturated(expected: np.ndarray, model, more_than: int | None = None) -> tuple[int, int]:
    """Some outputs may be clamped, but a quarter must lie strictly inside the last layer's
    activation range, with more than ``more_than`` distinct values (by default
    ``min(20, a third of them)``), or the case tests nothing. Returns the range."""
    act = model.layers[-1].params
    lo, hi = act["act_min"], act["act_max"]
    inside = expected[(expected > lo) & (expected < hi)]
    assert inside.size >= expected.size // 4, "outputs saturated"
    if more_than is None:
        more_than = min(20, inside.size // 3)
    assert np.unique(inside).size > more_than, "outputs saturated"
    return lo, hi
