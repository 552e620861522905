"""Static RAM that does not grow with the model's input or weights (issue 13).

- The protocol decodes an INFER frame straight into the arena's input tensor and sends the
  RESULT from the arena: a 96x96x3 model's image (27 KB) has no buffer of its own in the ARM
  ELF, its "buffers" (static RAM outside arena and scratch) are those of a 16x16x1 model, and
  it verifies on lm3s6965evb bit-exactly (== runtime/).
- Kernel scratch holds no copy of a layer's weights past export's WEIGHT_COPY_MAX: a 256->256
  pointwise layer (128 KB of int16 weights) and DS-CNN's one-channel 10x4 x 64 first layer get
  the generic sizes, and compute the same bytes as runtime/ with them (native gcc).
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from _firmware_models import (build_native_runner, compile_kernel_objects, random_inputs,
                              random_model, reference_run, run_native)
from _host_device import conv_pool_dense, export_small_cnn, images
from _tools import require_tool
from export.c_codegen import WEIGHT_COPY_MAX, write_c_sources
from firmware_host.boards import BOARDS
from firmware_host.build import _symbols, build_firmware, measure

BOARD = "lm3s6965evb"
SIDE = 96


@pytest.fixture(scope="module")
def wide_export(tmp_path_factory):
    """96x96x3 -> conv 3x3 stride 4 (8) -> relu -> global average pool -> dense 2."""
    import export
    model = conv_pool_dense("wide_input", (3, SIDE, SIDE), 8, 2, (0.3, 0.1, 0.5, 0.1),
                            pool="GlobalAveragePool", strides=[4, 4], pads=[1, 1, 1, 1])
    out = tmp_path_factory.mktemp("wide") / "export"
    return export.from_onnx(model, images(16, 99, (3, SIDE, SIDE)), requant="fixed",
                            name="wide_input").save(out)


def _probe(export_dir):
    require_tool("arm-none-eabi-gcc")
    probe = build_firmware(export_dir, BOARD, probe_only=True)
    return probe, measure(probe, probe.parent / "obj", BOARDS[BOARD])


def test_no_frame_sized_buffer_in_the_elf(wide_export, tmp_path):
    probe, needs = _probe(wide_export)
    header = (wide_export / "model_data.h").read_text()
    input_size = int(re.search(r"#define TC_INPUT_SIZE (\d+)", header).group(1))
    arena = int(re.search(r"#define TC_ARENA_SIZE (\d+)", header).group(1))
    assert input_size == SIDE * SIDE * 3
    ram = BOARDS[BOARD].ram_origin
    big = {name for name, (address, size) in _symbols(probe).items()
           if ram <= address < ram + BOARDS[BOARD].ram and size >= input_size}
    assert big == {"tc_arena_frame"}, big
    # the planned arena; the 20 bytes of room around it for a frame count among the buffers
    assert needs.arena == arena
    small_probe, small = _probe(export_small_cnn(tmp_path / "small"))
    assert needs.buffers == small.buffers < input_size // 4


def test_a_96x96x3_model_verifies_on_the_board(wide_export):
    require_tool("qemu-system-arm")
    from firmware_host.verify import verify
    result = verify(wide_export, images(2, 5, (3, SIDE, SIDE)), device=BOARD, progress=False)
    assert result.exit_status == 0 and result.target == BOARD
    assert result.images == 2 == result.device_equal_images


def _scratch(model, tmp_path) -> int:
    write_c_sources(model, tmp_path)
    header = (tmp_path / "model_data.h").read_text()
    return int(re.search(r"#define TC_SCRATCH_SIZE (\d+)", header).group(1))


@pytest.fixture(scope="module")
def kernel_objects(tmp_path_factory):
    return compile_kernel_objects(tmp_path_factory.mktemp("objects"), float_enabled=False)


@pytest.mark.parametrize("shape, layer, weight_copy", [
    # pointwise 256 -> 256: the int16 weight pairs would be 256 * 256 * 2 bytes
    ((3, 3, 256), dict(op="conv2d", out=256, kernel=(1, 1)), 256 * 256 * 2),
    # DS-CNN's first layer: the one-channel kernel's doubled weights, 4 * 64 * (40 + 1) bytes
    ((49, 10, 1), dict(op="conv2d", out=64, kernel=(10, 4), stride=(2, 2),
                       padding=(4, 1, 5, 2)), 4 * 64 * 41),
])
def test_scratch_holds_no_large_weight_copy(shape, layer, weight_copy, kernel_objects,
                                            tmp_path):
    rng = np.random.default_rng(3)
    model = random_model(rng, shape, [dict(layer, relu=True)], "fixed")
    scratch = _scratch(model, tmp_path)
    (kh, kw), c = layer["kernel"], shape[2]
    # what remains is CMSIS-NN's kind of buffer: two int16 im2col columns (the per-channel
    # constants and int16 weights are in flash), and a row ring no larger than them
    generic = -(-(2 * kh * kw * c * 2) // 4) * 4
    assert weight_copy > WEIGHT_COPY_MAX and scratch < weight_copy
    assert scratch <= 2 * generic
    exe = build_native_runner(tmp_path, kernel_objects, float_enabled=False)
    x = random_inputs(rng, model, 2)
    np.testing.assert_array_equal(run_native(exe, model, x), reference_run(model, x))
