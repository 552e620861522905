"""The firmware's protocol engine (tc_protocol.c, tc_cobs.c, tc_crc32.c) against the Python wire
format, compiled natively with AddressSanitizer and UBSan.

tests/c/protocol_driver.c feeds stdin to the engine and writes the replies to stdout; the stub
model (tests/c/stub_model.c) computes ``out[k] = sum(x[k::10]) mod 256``, recomputed here in
numpy, and the stub port makes every RESULT report 7 ticks. Any sanitizer report aborts the
driver with a non-zero status.
"""
from __future__ import annotations

import os
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from firmware_host import wire
from _tools import require_tool

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "firmware" / "src"
TESTC = ROOT / "tests" / "c"
ENGINE = [SRC / "tc_protocol.c", SRC / "tc_cobs.c", SRC / "tc_crc32.c"]
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{TESTC}", f"-I{SRC}"]
INPUT_SIZE, OUTPUT_SIZE = 320, 10  # tests/c/model_data.h
RX_CAPACITY = 8 + INPUT_SIZE + 4


@pytest.fixture(scope="session")
def driver(tmp_path_factory) -> Path:
    gcc = require_tool("gcc")
    exe = tmp_path_factory.mktemp("protocol") / "protocol_driver"
    subprocess.run([gcc, *CFLAGS, "-O1", "-g", "-fsanitize=address,undefined",
                    "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", *map(str, ENGINE),
                    str(TESTC / "protocol_driver.c"), str(TESTC / "stub_model.c"), "-o", str(exe)],
                   check=True, capture_output=True)
    return exe


def run_driver(exe: Path, stream: bytes) -> bytes:
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    proc = subprocess.run([str(exe)], input=stream, capture_output=True, timeout=120, env=env)
    assert proc.returncode == 0 and b"Sanitizer" not in proc.stderr and \
        b"runtime error" not in proc.stderr, proc.stderr.decode(errors="replace")[-3000:]
    return proc.stdout


def replies(raw: bytes) -> list[wire.Frame]:
    """Every reply must be a valid frame: the device never sends garbage."""
    assert raw == b"" or raw.endswith(b"\x00")
    return [wire.decode_frame(part) for part in raw.split(b"\x00")[:-1]]


def stub_model(x: np.ndarray) -> np.ndarray:
    flat = x.astype(np.uint8).astype(np.int64).reshape(-1, OUTPUT_SIZE).sum(axis=0)
    return (flat % 256).astype(np.uint8).astype(np.int8)


def frame(type_, seq, payload=b"", version=1) -> bytes:
    return wire.encode_frame(wire.Frame(type_, seq, payload, version))


def error_of(reply: wire.Frame) -> int:
    assert reply.type == wire.Msg.ERROR
    code, text = wire.parse_error(reply.payload)
    assert 0 < len(text) <= 48 and text.isascii()
    return code


def test_requests_get_byte_identical_replies(driver):
    rng = np.random.default_rng(0)
    images = rng.integers(-128, 127, (5, INPUT_SIZE), dtype=np.int8)
    images[:, 0] = np.clip(images[:, 0], -128, 126)  # 127 first is the stub's failure trigger
    images[1] = 0  # all zeros: the worst case for COBS blocks
    stream = b"\x00" + frame(wire.Msg.RESET, 1) + frame(wire.Msg.INFO, 2)
    stream += b"".join(frame(wire.Msg.INFER, 100 + i, x.tobytes()) for i, x in enumerate(images))
    stream += frame(wire.Msg.RESET, 0xFFFF)
    raw = run_driver(driver, stream)
    got = replies(raw)
    assert [r.seq for r in got] == [1, 2, 100, 101, 102, 103, 104, 0xFFFF]
    assert got[0] == wire.Frame(wire.Msg.RESET_REPLY, 1, struct.pack("<III", 1, 0, 0))
    info = wire.parse_info(got[1].payload)
    assert info == wire.DeviceInfo(1, "fixed", "0123456789abcdef", 1024, 3200, 2.0 ** -7, -128,
                                   2.0 ** -4, 5, (20, 16, 1), (10,), "stub", "stub",
                                   rx_capacity=2048)  # the stub port's tc_port_rx_capacity
    expected = [wire.Frame(wire.Msg.RESULT, 100 + i, struct.pack("<I", 7) + stub_model(x).tobytes())
                for i, x in enumerate(images)]
    assert got[2:7] == expected
    # Accepted since the first RESET: INFO, five INFER and the last RESET itself.
    assert wire.parse_reset(got[7].payload) == (7, 0, 0)
    # The C encoder's bytes are exactly the Python encoder's.
    assert raw == b"".join(wire.encode_frame(r) for r in got)


def _corrupt_crc(encoded: bytes) -> bytes:
    raw = bytearray(wire.cobs_decode(encoded[:-1]))
    raw[-1] ^= 0x01
    return wire.cobs_encode(bytes(raw)) + b"\x00"


def _raw_frame(body: bytes) -> bytes:
    return wire.cobs_encode(body + struct.pack("<I", zlib.crc32(body))) + b"\x00"


def test_every_error_reply(driver):
    failing = np.zeros(INPUT_SIZE, dtype=np.int8)
    failing[0] = 127
    cases = [
        (_corrupt_crc(frame(wire.Msg.INFO, 11)), 11, wire.ErrorCode.CORRUPT),
        (frame(wire.Msg.INFER, 12, bytes(RX_CAPACITY)), 12, wire.ErrorCode.TOO_LONG),
        (frame(wire.Msg.INFO, 13, version=2), 13, wire.ErrorCode.BAD_VERSION),
        (frame(0x42, 14), 14, wire.ErrorCode.BAD_TYPE),
        (frame(wire.Msg.INFER, 15, bytes(INPUT_SIZE - 1)), 15, wire.ErrorCode.BAD_LENGTH),
        (frame(wire.Msg.INFO, 16, b"x"), 16, wire.ErrorCode.BAD_LENGTH),
        (frame(wire.Msg.RESET, 17, b"xy"), 17, wire.ErrorCode.BAD_LENGTH),
        (_raw_frame(struct.pack("<BBHI", 1, 1, 18, 5)), 18, wire.ErrorCode.BAD_LENGTH),
        (frame(wire.Msg.INFER, 19, failing.tobytes()), 19, wire.ErrorCode.MODEL),
        (frame(wire.Msg.RESULT, 20, bytes(14)), 20, wire.ErrorCode.BAD_TYPE),
    ]
    for stream, seq, code in cases:
        (reply,) = replies(run_driver(driver, stream))
        assert reply.seq == seq and error_of(reply) == code, (seq, code)


def test_untrustworthy_frames_are_dropped_silently(driver):
    short = wire.cobs_encode(bytes([1, 1, 5, 0, 0, 0, 0])) + b"\x00"  # < header + CRC
    truncated = frame(wire.Msg.INFO, 3)[:-3] + b"\x00"  # ends inside a COBS block
    info = frame(wire.Msg.INFO, 4)
    stream = short + truncated + b"\x00\x00" + info + frame(wire.Msg.RESET, 5)
    got = replies(run_driver(driver, stream))
    assert [r.seq for r in got] == [4, 5]
    assert wire.parse_reset(got[1].payload) == (2, 2, 0)  # INFO and RESET; short, truncated


def _mutate(rng: np.random.Generator, data: bytes) -> bytes:
    data = bytearray(data)
    kind = rng.integers(0, 6)
    if kind == 0 and data:  # bit flips
        for _ in range(rng.integers(1, 4)):
            i = rng.integers(0, len(data))
            data[i] ^= 1 << rng.integers(0, 8)
    elif kind == 1 and data:  # truncate
        del data[rng.integers(0, len(data)):]
    elif kind == 2 and data:  # drop a byte
        del data[rng.integers(0, len(data))]
    elif kind == 3 and data:  # duplicate a slice
        i = rng.integers(0, len(data))
        data[i:i] = data[i:i + rng.integers(1, 40)]
    elif kind == 4:  # random garbage, sometimes long
        data = bytearray(rng.integers(0, 256, rng.integers(0, 2000), dtype=np.uint8).tobytes())
    else:  # a valid-CRC frame with a random header
        body = struct.pack("<BBHI", rng.integers(0, 3), rng.integers(0, 256),
                           rng.integers(0, 65536), rng.integers(0, 2 ** 32))
        body += rng.integers(0, 256, rng.integers(0, 400), dtype=np.uint8).tobytes()
        data = bytearray(_raw_frame(body))
    return bytes(data)


def test_random_and_mutated_frames_never_crash_the_engine(driver):
    rng = np.random.default_rng(1234)
    valid = [frame(wire.Msg.INFO, 1), frame(wire.Msg.RESET, 2),
             frame(wire.Msg.INFER, 3, rng.integers(-128, 127, INPUT_SIZE, dtype=np.int8).tobytes()),
             frame(wire.Msg.INFER, 4, bytes(INPUT_SIZE)),
             frame(wire.Msg.INFER, 5, bytes(INPUT_SIZE * 3))]
    pieces = [_mutate(rng, valid[rng.integers(0, len(valid))]) for _ in range(3000)]
    tail = frame(wire.Msg.INFO, 0xBEEF)
    raw = run_driver(driver, b"".join(pieces) + b"\x00" + tail)
    got = replies(raw)  # every reply is a well-formed frame
    assert len(got) > 100
    assert got[-1].seq == 0xBEEF and got[-1].type == wire.Msg.INFO_REPLY  # still serving
    for reply in got:
        assert reply.type in (wire.Msg.INFO_REPLY, wire.Msg.RESULT, wire.Msg.RESET_REPLY,
                              wire.Msg.ERROR)


def test_engine_builds_for_cortex_m_without_warnings(tmp_path):
    arm_gcc = require_tool("arm-none-eabi-gcc")
    for source in ENGINE:
        subprocess.run([arm_gcc, "-mcpu=cortex-m3", "-mthumb", "-Os", *CFLAGS, "-c", str(source),
                        "-o", str(tmp_path / (source.stem + ".o"))], check=True,
                       capture_output=True)


def test_frames_that_fail_their_checks_never_leak_into_a_result(driver):
    """Frames decode straight into the model's input tensor: a corrupt, truncated, oversized or
    short INFER between two good ones leaves garbage there, but every RESULT the device reports
    is the model of exactly the image its own (good) frame carried."""
    rng = np.random.default_rng(7)
    images = rng.integers(-128, 127, (4, INPUT_SIZE), dtype=np.int8)
    images[:, 0] = np.clip(images[:, 0], -128, 126)
    junk = rng.integers(-128, 127, INPUT_SIZE, dtype=np.int8).tobytes()
    bad = [_corrupt_crc(frame(wire.Msg.INFER, 50, junk)),
           frame(wire.Msg.INFER, 51, junk + b"\x05" * 9),      # too long: refused
           frame(wire.Msg.INFER, 52, junk[:-3]),                # one tensor minus 3 bytes
           frame(wire.Msg.INFER, 53, junk)[:200] + b"\x00"]     # cut off inside a block
    stream = b"\x00"
    for i, x in enumerate(images):
        stream += bad[i] + frame(wire.Msg.INFER, 100 + i, x.tobytes())
    got = [r for r in replies(run_driver(driver, stream)) if r.type == wire.Msg.RESULT]
    assert got == [wire.Frame(wire.Msg.RESULT, 100 + i,
                              struct.pack("<I", 7) + stub_model(x).tobytes())
                   for i, x in enumerate(images)]
