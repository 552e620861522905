"""The worst-case stack that firmware_host/stack.py computes, against the high-water mark the
self-test image measures under QEMU (it paints the free stack and reports the deepest word
changed), for a model through every kernel: conv (one-channel first layer, pair columns), the
depthwise 3x3, 1x1, both pools, add, global pool and fully connected.

The bound must hold (measured <= computed) and be tight: computed - measured <= MARGIN. What
the run cannot reach: the exception frame and the deepest handler (36 + 16 bytes here: no
fault, no UART byte), and branches of the kernels this model's shapes do not take."""
from __future__ import annotations

import re

import numpy as np
import pytest
from _firmware_models import random_inputs, random_model
from _selftest import run_on_board

from firmware_host import stack
from firmware_host.qemu import run_semihosted
from firmware_host.stack import INDIRECT, StackBound, Unbounded, deepest, worst_case_stack

MARGIN = 512
SPEC = ((12, 12, 1), [
    dict(op="conv2d", out=8, kernel=(3, 3), padding=(1, 1, 1, 1), relu=True),
    dict(op="conv2d", out=8, kernel=(3, 3), groups=8, padding=(1, 1, 1, 1), relu=True),
    dict(op="conv2d", out=8, kernel=(1, 1)),
    dict(op="add", **{"with": 1}),
    dict(op="max_pool2d", kernel=(2, 2)),
    dict(op="conv2d", out=12, kernel=(3, 3), padding=(1, 1, 1, 1), relu=True),
    dict(op="avg_pool2d", kernel=(2, 2)),
    dict(op="global_avg_pool"),
    dict(op="fully_connected", out=5),
])


def test_deepest_chain_of_a_hand_made_graph():
    frames = {"reset": 8, "main": 16, "a": 100, "b": 40, "c": 70, "leaf": 4, INDIRECT: 0}
    calls = {"reset": {"main"}, "main": {"a", "b"}, "a": {"leaf"}, "b": {"c", INDIRECT},
             "c": {"leaf"}, INDIRECT: {"leaf"}}
    assert deepest("reset", frames, calls) == (8 + 16 + 40 + 70 + 4,
                                               ("reset", "main", "b", "c", "leaf"))
    assert deepest("a", frames, calls) == (104, ("a", "leaf"))
    calls["leaf"] = {"b"}
    with pytest.raises(Unbounded) as e:
        deepest("reset", frames, calls)
    assert e.value.function in ("b", "leaf")
    bound = StackBound(None, (), "recursion in b")
    assert bound.describe() == "stack (worst case) unbounded (recursion in b)"


def test_frames_of_assembly_prologues():
    assert stack._sp_change("f", "push", "{r4, r5, r6, r7, r8, r9, sl, fp, lr}") == 36
    assert stack._sp_change("f", "push", "{r4-r11, lr}") == 36
    assert stack._sp_change("f", "stmdb", "sp!, {r4, r5, r6, lr}") == 16
    assert stack._sp_change("f", "vpush", "{d8-d9}") == 16
    assert stack._sp_change("f", "sub", "sp, #24") == 24
    assert stack._sp_change("f", "sub.w", "sp, sp, #1808") == 1808
    assert stack._sp_change("f", "ldmia.w", "sp!, {r4, r5, pc}") == -12
    assert stack._sp_change("f", "ldmia.w", "r1!, {r6, r7}") == 0
    assert stack._sp_change("f", "str", "r3, [sp, #8]") == 0
    with pytest.raises(Exception, match="cannot size the frame of f"):
        stack._sp_change("f", "mov", "sp, r7")


@pytest.mark.parametrize("board", ["lm3s6965evb", "mps2-an386"])
def test_measured_stack_within_the_computed_bound(board, arm_tools, tmp_path):
    rng = np.random.default_rng(5)
    model = random_model(rng, SPEC[0], SPEC[1], "fixed", name="stack")
    got, expected = run_on_board(model, random_inputs(rng, model, 2), board, tmp_path)
    assert np.array_equal(got, expected)
    elf = tmp_path / "selftest" / board / "firmware.elf"
    run = run_semihosted(board, elf, timeout=60)
    measured = int(re.search(r"^stack (\d+)$", run.output, re.M).group(1))
    bound = worst_case_stack(elf)
    assert bound.bytes is not None, bound.describe()
    assert measured <= bound.bytes <= measured + MARGIN, (measured, bound.describe())
    assert bound.chain[:3] == ("tc_reset_handler", "main", "tc_model_run_timed")
    # the asm kernels have no .su: their frames come from their prologues
    frames = stack.read_disassembly(elf).frames
    assert frames["tc_dw3_pairs"] == 36  # push {r4-r11, lr}
    if board == "mps2-an386":
        assert frames["tc_dot_rows_s16_asm"] == 36 + 24  # and sub sp, sp, #24


def test_an_image_links_only_the_kernels_its_model_uses(arm_tools, tmp_path):
    """model_data.h's TC_MODEL_OPS keeps unused kernels out of the image: smaller flash, and a
    worst-case stack without the depthwise kernel's 1.8 kB frame."""
    rng = np.random.default_rng(6)
    spec = ((12, 12, 1), [dict(op="conv2d", out=8, kernel=(3, 3), padding=(1, 1, 1, 1)),
                          dict(op="conv2d", out=8, kernel=(3, 3), relu=True),
                          dict(op="max_pool2d", kernel=(2, 2)),
                          dict(op="fully_connected", out=5)])
    model = random_model(rng, spec[0], spec[1], "fixed", name="few_ops")
    got, expected = run_on_board(model, random_inputs(rng, model, 2), "lm3s6965evb", tmp_path)
    assert np.array_equal(got, expected)
    linked = set(stack.read_disassembly(tmp_path / "selftest" / "lm3s6965evb" /
                                        "firmware.elf").frames)
    assert {"tc_conv2d", "tc_conv2d_1ch", "tc_max_pool2d", "tc_fully_connected"} <= linked
    assert not linked & {"tc_depthwise_conv2d", "tc_avg_pool2d", "tc_global_avg_pool", "tc_add"}
    bound = worst_case_stack(tmp_path / "selftest" / "lm3s6965evb" / "firmware.elf")
    assert "tc_depthwise_conv2d" not in bound.chain and bound.bytes < 1500
