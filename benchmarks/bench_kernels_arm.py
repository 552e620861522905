"""Instructions per MAC of each conv / fully connected layer on the QEMU boards.

    .venv/bin/python benchmarks/bench_kernels_arm.py [--mode fixed|float] [--boards a,b,...]

Builds the firmware self-test image (firmware/selftest/) for a small CNN with random int8
weights, runs it under qemu-system-arm with -icount shift=3 on lm3s6965evb (Cortex-M3) and
mps2-an386 (Cortex-M4, SMLAD path) by default, or on the boards named (any of
firmware_host/boards.py: netduinoplus2, mps2-an500, microbit, mps3-an547 too), and reads the
per-layer tick counts the image reports. The ports convert SysTick counts to guest
instructions (resolution 10 on lm3s, 5 on mps2), so the figures are executed instructions, not
cycles. Outputs are also checked against runtime/.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout, not the installed one

from _firmware_models import random_inputs, random_model, reference_run  # noqa: E402
from export.c_codegen import write_c_sources  # noqa: E402
from firmware_host.build import FIRMWARE_DIR, build_firmware, firmware_size  # noqa: E402
from firmware_host.qemu import run_semihosted  # noqa: E402
from runtime.model import layer_macs  # noqa: E402

DEFAULT_BOARDS = "lm3s6965evb,mps2-an386"
SPEC = ((28, 28, 1), [
    dict(op="conv2d", out=8, kernel=(3, 3), padding=(1, 1, 1, 1), relu=True),
    dict(op="conv2d", out=16, kernel=(3, 3), padding=(1, 1, 1, 1), relu=True),
    dict(op="max_pool2d", kernel=(2, 2)),
    dict(op="conv2d", out=32, kernel=(3, 3), padding=(1, 1, 1, 1), relu=True),
    dict(op="conv2d", out=32, kernel=(3, 3), groups=32, padding=(1, 1, 1, 1), relu=True),
    dict(op="conv2d", out=32, kernel=(1, 1), relu=True),
    dict(op="max_pool2d", kernel=(2, 2)),
    dict(op="fully_connected", out=10),
])
# The bench's depthwise layer alone: no other layer's scratch for its column buffer to use, so
# it takes the room it finds (the output rows not yet written, then the input rows read).
ALONE = ((14, 14, 32), [SPEC[1][4]])
INPUTS = 2


def describe(model, layer) -> str:
    src = model.tensors[layer.inputs[0]].shape
    dst = model.tensors[layer.output].shape
    what = layer.op
    if layer.op == "conv2d":
        w = layer.arrays["weights"].shape
        what = f"conv {w[1]}x{w[2]}" + (" depthwise" if layer.params["groups"] > 1 else "")
    return f"{what} {'x'.join(map(str, src))} -> {'x'.join(map(str, dst))}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("fixed", "float"), default="fixed")
    parser.add_argument("--boards", default=DEFAULT_BOARDS,
                        help=f"comma-separated boards (default: {DEFAULT_BOARDS})")
    parser.add_argument("--side", type=int, default=SPEC[0][0],
                        help=f"input height and width (default: {SPEC[0][0]}; 20 fits the "
                             "microbit's 16 KB of RAM)")
    parser.add_argument("--depthwise-alone", action="store_true",
                        help="the depthwise layer alone, 14x14x32 (no caller's scratch)")
    args = parser.parse_args()
    boards = tuple(args.boards.split(","))
    from firmware_host.boards import BOARDS

    if not set(boards) <= set(BOARDS):
        parser.error(f"unknown board(s) {', '.join(sorted(set(boards) - set(BOARDS)))}; "
                     f"choose from {', '.join(BOARDS)}")
    rng = np.random.default_rng(0)
    shape, spec = ALONE if args.depthwise_alone else ((args.side, args.side, 1), SPEC[1])
    model = random_model(rng, shape, spec, args.mode, name="bench")
    x = random_inputs(rng, model, INPUTS)
    expected = reference_run(model, x).reshape(INPUTS, -1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_c_sources(model, work)
        rows = ",\n".join("{" + ", ".join(map(str, r.reshape(-1))) + "}" for r in x)
        (work / "selftest_inputs.h").write_text(
            f"#define TC_SELFTEST_COUNT {INPUTS}\nstatic const int8_t "
            f"tc_selftest_inputs[{INPUTS}][TC_INPUT_SIZE] = {{\n{rows}\n}};\n")
        for board in boards:
            elf = build_firmware(work, board, app=str(FIRMWARE_DIR / "selftest" /
                                                      "selftest_main.c"),
                                 extra_include=work, out_dir=work / board)
            run = run_semihosted(board, elf, timeout=300)
            if run.exit_code != 0:
                print(run.output)
                return 1
            lines = re.findall(r"^out ([0-9a-f]+) ticks ([0-9 ]+)$", run.output, re.M)
            outputs = np.stack([np.frombuffer(bytes.fromhex(h), np.int8) for h, _ in lines])
            if not np.array_equal(outputs, expected):
                print(f"{board}: device output differs from runtime/")
                return 1
            ticks = np.array([[int(v) for v in t.split()] for _, t in lines])
            results[board] = (ticks[-1], firmware_size(elf))

    print(f"instructions per MAC, {args.mode} mode, QEMU -icount shift=3 "
          f"(outputs == runtime/ on {INPUTS} inputs)")
    print(f"{'layer':44} {'MACs':>8} " + " ".join(f"{b:>12}" for b in boards))
    for index, layer in enumerate(model.layers):
        n = layer_macs(model, layer)
        cells = []
        for board in boards:
            ticks = results[board][0][index + 1]
            cells.append(f"{ticks / n:12.2f}" if n else f"{ticks:>9} ins")
        print(f"{describe(model, layer):44} {n:8} " + " ".join(cells))
    total_macs = model.total_macs
    print(f"{'whole inference':44} {total_macs:8} " +
          " ".join(f"{results[b][0][0] / total_macs:12.2f}" for b in boards))
    for board in boards:
        size = results[board][1]
        print(f"{board}: self-test image flash {size['flash']} B, RAM {size['ram']} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
