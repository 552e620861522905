"""The kernels on real ARM code: self-test images built by arm-none-eabi-gcc for the Cortex-M3
(lm3s6965evb) and Cortex-M4F (mps2-an386) boards, run under qemu-system-arm, give exactly
runtime/'s bytes; fixed-mode images contain no floating point; the protocol firmware builds."""
from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest
from _firmware_models import random_inputs, random_model, reference_run
from _selftest import SELFTEST, build_and_run, write_selftest_inputs

from export.c_codegen import write_c_sources
from firmware_host.build import FIRMWARE_DIR, build_firmware, firmware_size
from firmware_host.qemu import qemu_command
from firmware_host.stack import worst_case_stack

SPEC = ((9, 8, 3), [
    dict(op="conv2d", out=8, kernel=(3, 3), padding=(1, 1, 1, 1), relu=True),
    dict(op="conv2d", out=16, kernel=(3, 3), groups=8, padding=(1, 0, 1, 2), stride=(2, 1)),
    dict(op="conv2d", out=6, kernel=(3, 3), dilation=(1, 2), padding=(1, 1, 1, 1)),
    dict(op="avg_pool2d", kernel=(2, 2), padding=(0, 0, 1, 0)),
    dict(op="conv2d", out=6, kernel=(1, 1)),
    dict(op="add", **{"with": 4}),
    dict(op="max_pool2d", kernel=(2, 2), stride=(1, 1)),
    dict(op="fully_connected", out=5),
])
FLOAT_INSN = re.compile(r"\sv(add|sub|mul|div|cvt|mov|ldr|str|fma|cmp|neg|abs|sqrt)\S*\s")
COUNT = 6


def _model_dir(tmp_path_factory, mode, seed):
    rng = np.random.default_rng(seed)
    model = random_model(rng, SPEC[0], SPEC[1], mode, name=f"arm_{mode}")
    directory = tmp_path_factory.mktemp(f"arm_{mode}")
    write_c_sources(model, directory)
    x = random_inputs(rng, model, COUNT)
    write_selftest_inputs(directory / "selftest", x)
    return model, directory, x


@pytest.fixture(scope="module")
def fixed_model(tmp_path_factory, arm_tools):
    return _model_dir(tmp_path_factory, "fixed", 1)


@pytest.fixture(scope="module")
def float_model(tmp_path_factory, arm_tools):
    return _model_dir(tmp_path_factory, "float", 2)


@pytest.mark.parametrize("board,mode", [("lm3s6965evb", "fixed"), ("mps2-an386", "fixed"),
                                        ("mps2-an386", "float"), ("lm3s6965evb", "float")])
def test_selftest_on_board_equals_runtime(board, mode, fixed_model, float_model):
    model, directory, x = fixed_model if mode == "fixed" else float_model
    _, _, got = build_and_run(model, board, directory)
    expected = reference_run(model, x).reshape(len(x), -1)
    assert len(got) == COUNT
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("board", ["lm3s6965evb", "mps2-an386"])
def test_fixed_mode_image_has_no_floating_point(board, fixed_model, float_model):
    _, directory, _ = fixed_model
    elf = build_firmware(directory, board, app=str(SELFTEST),
                         extra_include=directory / "selftest",
                         out_dir=directory / "selftest" / f"{board}-nofloat")
    symbols = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True,
                             check=True).stdout
    code = subprocess.run(["arm-none-eabi-objdump", "-d", str(elf)], capture_output=True,
                          text=True, check=True).stdout
    assert not re.search(r"__aeabi_[fdi]\w*|__(add|sub|mul|div)[sd]f3", symbols), symbols
    assert not FLOAT_INSN.search(code)
    # the checks can fail: the same model in float mode does link float code
    _, float_dir, _ = float_model
    float_elf = build_firmware(float_dir, board, app=str(SELFTEST),
                               extra_include=float_dir / "selftest",
                               out_dir=float_dir / "selftest" / f"{board}-float")
    float_code = subprocess.run(["arm-none-eabi-objdump", "-d", str(float_elf)],
                                capture_output=True, text=True, check=True).stdout
    float_symbols = subprocess.run(["arm-none-eabi-nm", str(float_elf)], capture_output=True,
                                   text=True, check=True).stdout
    assert FLOAT_INSN.search(float_code) or "__aeabi_fmul" in float_symbols


@pytest.mark.parametrize("board", ["lm3s6965evb", "mps2-an386"])
def test_protocol_firmware_builds_with_size(board, fixed_model):
    if not (FIRMWARE_DIR / "src" / "main.c").exists():
        pytest.fail("firmware/src/main.c is missing")
    model, directory, _ = fixed_model
    model.save(directory / "model.tcm")  # build records sizes only in this model's own report
    (directory / "report.json").write_text(json.dumps({"totals": {"flash": 1},
                                                       "hash": model.hash}))
    elf = build_firmware(directory, board)
    assert elf == directory / "firmware" / board / "firmware.elf"
    sizes = firmware_size(elf)
    assert 0 < sizes["flash"] < 256 * 1024 and 0 < sizes["ram"] < 64 * 1024
    assert (elf.parent / "size.json").is_file()
    report = json.loads((directory / "report.json").read_text())
    assert report["firmware"][board] == {**sizes, **worst_case_stack(elf).as_dict()}
    assert report["totals"] == {"flash": 1}
    before = elf.stat().st_mtime_ns
    assert build_firmware(directory, board) == elf  # up to date: not rebuilt
    assert elf.stat().st_mtime_ns == before


def test_qemu_command_follows_the_contract(tmp_path):
    cmd = qemu_command("mps2-an386", tmp_path / "f.elf", 4321)
    text = " ".join(cmd)
    assert cmd[0] == "qemu-system-arm" and "-M mps2-an386" in text
    assert "socket,id=u0,host=127.0.0.1,port=4321,server=on,wait=off,nodelay=on" in text
    assert "-serial chardev:u0" in text and "-icount shift=3" in text
    assert "-semihosting-config enable=on,target=native" in text
    assert "-nographic" in cmd and "-monitor none" in text
