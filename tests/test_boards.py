"""The boards table and the fit check: every board of firmware_host/boards.py is what its
port's board.mk, linker script and C file say and what QEMU 7.2 offers; the four newer boards
(netduinoplus2, mps2-an500, microbit, mps3-an547) give runtime/'s exact bytes in the self-test
image and under `verify` over their emulated UART; the Cortex-M0 image holds only ARMv6-M
instructions; a model that does not fit a board is refused before linking with one line of
numbers, checked against arm-none-eabi-size and the model's own plan, and a link that fails
anyway reports the linker's own words."""
from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
from _firmware_models import random_inputs, random_model, reference_run
from _selftest import build_and_run, run_on_board, write_selftest_inputs
from _tools import require_tool
from test_arm_targets import SPEC
from test_stack_usage import MARGIN

from export.c_codegen import write_c_sources
from firmware_host.boards import BOARDS
from firmware_host.build import FIRMWARE_DIR, FitError, _compiler_message, build_firmware
from firmware_host.stack import worst_case_stack
from firmware_host.verify import verify
from tinyconv.cli import main

NEW_BOARDS = ("netduinoplus2", "mps2-an500", "microbit", "mps3-an547")
PORTS = FIRMWARE_DIR / "ports"
_SIZE = {"K": 1024, "M": 1024 * 1024}


def _ld_region(text: str, region: str) -> tuple[int, int]:
    m = re.search(region + r" \(\w+\)\s*: ORIGIN = (0x[0-9A-Fa-f]+), LENGTH = "
                  r"DEFINED\(tc_fit_probe\) \? 256M : (\d+)([KM])", text)
    assert m, f"no {region} region"
    return int(m.group(1), 16), int(m.group(2)) * _SIZE[m.group(3)]


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_table_agrees_with_the_port_files(name):
    board = BOARDS[name]
    mk = (PORTS / name / "board.mk").read_text()
    mcu = re.search(r"^MCU := (.*)$", mk, re.M).group(1).split()
    assert f"-mcpu={board.core}" in mcu and "-mthumb" in mcu
    assert ("-mfloat-abi=hard" in mcu) == board.has_fpu
    ld = (PORTS / name / f"{name}.ld").read_text()
    assert _ld_region(ld, "FLASH") == (board.flash_origin, board.flash)
    assert _ld_region(ld, "RAM") == (board.ram_origin, board.ram)
    # its own port file, or the tc_board.h that sets up a shared driver (ports/cmsdk)
    port = "".join(p.read_text() for p in sorted((PORTS / name).glob("*.[ch]")))
    assert re.search(rf'(tc_port_target_name\[\] =|#define TC_BOARD_NAME) "{name}"', port)
    assert int(re.search(r"#define (?:TC_)?CLOCK_HZ (\d+)u", port).group(1)) == board.clock_hz


def test_qemu_offers_every_board():
    require_tool("qemu-system-arm")
    machines = subprocess.run(["qemu-system-arm", "-M", "help"], capture_output=True,
                              text=True, check=True).stdout
    listed = {line.split()[0] for line in machines.splitlines()[1:] if line.strip()}
    assert set(BOARDS) <= listed


@pytest.fixture(scope="module")
def selftest(arm_tools, tmp_path_factory):
    """One self-test image per board for a model through every kernel, built and run once:
    ``selftest(board) -> (elf, QEMU's output, device outputs, runtime/ outputs)``."""
    rng = np.random.default_rng(3)
    model = random_model(rng, SPEC[0], SPEC[1], "fixed", name="boards_fixed")
    x = random_inputs(rng, model, 3)
    directory = tmp_path_factory.mktemp("boards_selftest")
    write_c_sources(model, directory)
    write_selftest_inputs(directory / "selftest", x)
    expected = reference_run(model, x).reshape(len(x), -1)
    done = {}

    def image(board: str):
        if board not in done:
            done[board] = *build_and_run(model, board, directory), expected
        return done[board]
    return image


@pytest.mark.parametrize("board", NEW_BOARDS)
def test_selftest_on_new_board_equals_runtime(board, selftest):
    """conv, grouped conv, dilated conv, pools, add and fully connected in one image; the
    stack the image used stays within the computed worst case (also on the Cortex-M0, whose
    large frames are set from a register, and at the M55's 0x1000_0000 addresses)."""
    elf, output, got, expected = selftest(board)
    assert got.shape == expected.shape == (3, expected.shape[1])
    np.testing.assert_array_equal(got, expected)
    measured = int(re.search(r"^stack (\d+)$", output, re.M).group(1))
    bound = worst_case_stack(elf)
    assert bound.bytes is not None, bound.describe()
    assert measured <= bound.bytes <= measured + MARGIN, (measured, bound.describe())


def test_float_mode_on_the_m7_double_precision_fpu(arm_tools, tmp_path):
    rng = np.random.default_rng(4)
    model = random_model(rng, SPEC[0], SPEC[1], "float", name="boards_float")
    got, expected = run_on_board(model, random_inputs(rng, model, 2), "mps2-an500", tmp_path)
    np.testing.assert_array_equal(got, expected)


# Thumb instructions an ARMv6-M core runs as 32-bit encodings; every other 32-bit encoding
# (Thumb-2: smlal, ssat, smlad, ldr.w, it blocks ...) would fault on the Cortex-M0.
V6M_WIDE = {"bl", "dmb", "dsb", "isb", "mrs", "msr"}


def _wide_instructions(elf) -> tuple[set[str], str]:
    text = subprocess.run(["arm-none-eabi-objdump", "-d", str(elf)], capture_output=True,
                          text=True, check=True).stdout
    # a tab before the mnemonic: constants in .text dump as spaced halfwords, no tab
    return set(re.findall(r"^\s*[0-9a-f]+:\s+[0-9a-f]{4} [0-9a-f]{4} *\t(\w+)", text,
                          re.M)), text


def test_cortex_m0_image_is_armv6m_only(selftest):
    wide, text = _wide_instructions(selftest("microbit")[0])
    assert wide and wide <= V6M_WIDE, wide - V6M_WIDE
    assert not re.search(r"\s(smla|smul|ssat|usat|sxtb16|smmul|it[te]*)\w*\s", text)
    # the same model on the Cortex-M3 does use Thumb-2 (the check can fail)
    assert _wide_instructions(selftest("lm3s6965evb")[0])[0] - V6M_WIDE


@pytest.fixture(scope="module")
def demo_export(tmp_path_factory):
    """The demo's ConvNet (16x16 digits, two convs, dense; its initial weights: training
    changes no shape or size) and a few test images."""
    import export
    from tinyconv.demo import convnet, data, onnx_writer

    digits = data.load_digits()
    net = convnet.ConvNet.initialize(seed=1)
    root = tmp_path_factory.mktemp("demo")
    path = onnx_writer.save_onnx(net, root / "digits.onnx")
    result = export.from_onnx(str(path), digits.x_train[:128], requant="fixed", name="digits")
    return result.save(root / "export"), digits.x_test[:8]


@pytest.mark.parametrize("board", NEW_BOARDS)
def test_demo_model_verifies_on_new_board(board, demo_export, arm_tools):
    require_tool("qemu-system-arm")
    directory, x = demo_export
    result = verify(directory, x, device=board, progress=False)
    assert result.exit_status == 0 and result.target == board
    assert result.images == len(x) == result.device_equal_images
    assert result.ticks_unit == "instructions" and result.ticks_per_mac > 0


# -- the fit check ---------------------------------------------------------------------------

def _too_big(tmp_path, shape, layers, name):
    rng = np.random.default_rng(7)
    model = random_model(rng, shape, layers, "fixed", name=name)
    write_c_sources(model, tmp_path)
    return model


def _used(elf) -> tuple[int, int]:
    """Bytes of lm3s6965evb's flash (from 0) and RAM (from 0x20000000) the image's loadable
    segments reach, from readelf's program headers."""
    out = subprocess.run(["arm-none-eabi-readelf", "-lW", str(elf)], capture_output=True,
                         text=True, check=True).stdout
    flash = ram = 0
    for line in out.splitlines():
        f = line.split()
        if f and f[0] == "LOAD":
            virt, phys, file_size, mem_size = (int(v, 16) for v in f[2:6])
            if phys < 0x20000000 and file_size:
                flash = max(flash, phys + file_size)
            if virt >= 0x20000000:
                ram = max(ram, virt + mem_size - 0x20000000)
    return flash, ram


def test_a_fully_connected_layer_too_big_for_flash_is_refused_with_numbers(arm_tools, tmp_path,
                                                                             capsys):
    # 1024 -> 260 weights: 266,240 B of int8 constants, more than lm3s6965evb's 256 KB flash
    model = _too_big(tmp_path, (1, 1, 1024), [dict(op="fully_connected", out=260)], "big_fc")
    assert main(["build", str(tmp_path), "--target", "lm3s6965evb"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    used_flash, used_ram = _used(tmp_path / "firmware" / "lm3s6965evb" / "probe.elf")
    m = re.search(r"model needs ([\d,]+) B flash, ([\d,]+) B RAM \(arena ([\d,]+), scratch "
                  r"([\d,]+), buffers ([\d,]+), stack ([\d,]+)\); lm3s6965evb has 262,144 / "
                  r"65,536: does not fit, flash over by ([\d,]+) B$", err)
    assert m, err
    flash, ram, arena, scratch, buffers, stack, over = (int(g.replace(",", ""))
                                                        for g in m.groups())
    assert flash == used_flash > 1024 * 260 and over == flash - 262_144
    assert arena == model.arena_size and ram == used_ram + stack
    assert arena + scratch + buffers == used_ram and 0 < stack < 4096
    assert not (tmp_path / "firmware" / "lm3s6965evb" / "firmware.elf").exists()


def test_an_arena_too_big_for_ram_is_refused_and_the_linker_words_are_kept(arm_tools, tmp_path):
    # a 96x96x8 activation (73,728 B) in the arena: more than lm3s6965evb's 64 KB of RAM
    model = _too_big(tmp_path, (96, 96, 1), [dict(op="conv2d", out=8, kernel=(3, 3),
                                                  padding=(1, 1, 1, 1))], "big_arena")
    with pytest.raises(FitError) as caught:
        build_firmware(tmp_path, "lm3s6965evb")
    message = str(caught.value)
    _, used_ram = _used(tmp_path / "firmware" / "lm3s6965evb" / "probe.elf")
    stack = int(re.search(r"stack ([\d,]+)\)", message).group(1).replace(",", ""))
    over = used_ram + stack - 65_536
    assert f"arena {model.arena_size:,}," in message
    assert message.endswith(f"does not fit, RAM over by {over:,} B") and over > 0
    # the real link, run by hand, fails in the linker's words, and those are what we report
    done = subprocess.run(["make", "-s", "-C", str(FIRMWARE_DIR), "TARGET=lm3s6965evb",
                           f"MODEL_DIR={tmp_path}", f"OUT={tmp_path / 'firmware' / 'lm3s'}"],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "ld returned 1" in done.stderr
    said = _compiler_message(done.stderr + done.stdout)
    assert re.search(r"region `RAM' overflowed by \d+ bytes", said), said
    assert int(re.search(r"overflowed by (\d+)", said).group(1)) == used_ram - 65_536


def _dense_onnx(path, inputs: int, outputs: int) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(8)
    w = numpy_helper.from_array(rng.standard_normal((outputs, inputs)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(outputs, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]),
         helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)], "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 1, inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, outputs])], [w, b])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def test_export_with_a_target_checks_the_fit_early(arm_tools, tmp_path, capsys):
    x = np.random.default_rng(9).random((16, 1, 1, 1024), np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    _dense_onnx(tmp_path / "big.onnx", 1024, 260)
    args = ["export", str(tmp_path / "big.onnx"), "--calibration", str(tmp_path / "calib.npz"),
            "--quiet"]
    assert main(args + ["--out", str(tmp_path / "a"), "--target", "microbit"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model needs" in err, err
    assert re.search(r"microbit has 262,144 / 16,384: does not fit, flash over by [\d,]+ B$",
                     err), err
    assert main(args + ["--out", str(tmp_path / "b"), "--target", "netduinoplus2"]) == 0
    assert re.search(r"^fits netduinoplus2: flash [\d,]+ of 1,048,576 B", capsys.readouterr().out,
                     re.M)
