"""Writes the committed seed corpus of tests/c/fuzz_protocol.c: one file per crashing shape.

Run from the repository root: ``python tests/fuzz_corpus/make_corpus.py``. A file starting with
0x00 is fed raw; one starting with 0x01 is chunks of [flags, length / 2, body] that the harness
CRCs (flags bit 0), COBS-encodes (bit 1) and delimits (bit 2). The stub model takes 320 bytes.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

from firmware_host import wire

HERE = Path(__file__).resolve().parent
INPUT = 320
RX = 8 + INPUT + 4


def frame(type_, seq, payload=b"", version=1) -> bytes:
    return wire.encode_frame(wire.Frame(type_, seq, payload, version))


def raw(body: bytes) -> bytes:
    return wire.cobs_encode(body + struct.pack("<I", zlib.crc32(body))) + b"\0"


def header(type_, seq, length, version=1) -> bytes:
    return struct.pack("<BBHI", version, type_, seq, length)


def chunk(flags: int, body: bytes) -> bytes:
    body = body + b"\xaa" * (len(body) % 2)
    return bytes([flags, len(body) // 2]) + body


RAW = {
    "empty": b"",
    "delimiters_only": b"\0" * 16,
    "info": frame(wire.Msg.INFO, 1),
    "reset": frame(wire.Msg.RESET, 2),
    "infer_zeros": frame(wire.Msg.INFER, 3, bytes(INPUT)),
    "infer_ones": frame(wire.Msg.INFER, 4, b"\x01" * INPUT),
    "infer_model_error": frame(wire.Msg.INFER, 5, b"\x7f" + bytes(INPUT - 1)),
    "oversized_infer": frame(wire.Msg.INFER, 6, bytes(2 * INPUT)),
    "exactly_rx_capacity_plus_one": raw(header(wire.Msg.INFER, 7, INPUT + 1) + bytes(INPUT + 1)),
    "huge_length_field": raw(header(wire.Msg.INFER, 8, 0xFFFFFFFF) + bytes(INPUT)),
    "length_says_more": raw(header(wire.Msg.INFO, 9, 5)),
    "zero_length_frame": wire.cobs_encode(b"") + b"\0",
    "shorter_than_header": wire.cobs_encode(b"\x01\x01\x05\x00\x00") + b"\0",
    "truncated_cobs_block": frame(wire.Msg.INFO, 10)[:-4] + b"\0",
    "cobs_code_past_end": b"\x30\x01\x01\x0a\0",
    "bad_crc": frame(wire.Msg.INFO, 11)[:-2] + bytes([frame(wire.Msg.INFO, 11)[-2] ^ 0x80]) + b"\0",
    "wrong_version": frame(wire.Msg.INFO, 12, version=2),
    "version_zero": frame(wire.Msg.INFO, 13, version=0),
    "unknown_type": frame(0x42, 14),
    "reply_type_as_request": frame(wire.Msg.RESULT, 15, bytes(14)),
    "error_type_as_request": frame(wire.Msg.ERROR, 16, b"\x01\x00x"),
    "info_with_payload": frame(wire.Msg.INFO, 17, b"x"),
    "short_infer": frame(wire.Msg.INFER, 18, bytes(INPUT - 1)),
    "all_ff_run": b"\xff" * 2000 + b"\0",
    "garbage_no_delimiter": bytes(range(1, 256)) * 8,
    "two_frames_merged": frame(wire.Msg.INFO, 19)[:-1] + frame(wire.Msg.RESET, 20),
    "long_run_254_boundary": frame(wire.Msg.INFER, 21, b"\x05" * INPUT),
    "many_small_frames": b"".join(frame(wire.Msg.INFO, i) for i in range(40)),
}

WRAPPED = {
    "wrapped_info": chunk(7, header(wire.Msg.INFO, 1, 0)),
    "wrapped_infer": chunk(7, header(wire.Msg.INFER, 2, INPUT) + bytes(range(64)) * 5),
    "wrapped_bad_length": chunk(7, header(wire.Msg.INFER, 3, INPUT) + bytes(10)),
    "wrapped_no_crc": chunk(6, header(wire.Msg.INFO, 4, 0)),
    "wrapped_no_cobs": chunk(5, header(wire.Msg.RESET, 5, 0)),
    "wrapped_no_delimiter_then_info": chunk(3, header(wire.Msg.RESET, 6, 0))
    + chunk(7, header(wire.Msg.INFO, 7, 0)),
    "wrapped_huge_length": chunk(7, header(wire.Msg.RESET, 8, 0x7FFFFFFF)),
    "wrapped_mixed": chunk(7, header(wire.Msg.INFO, 9, 0)) + chunk(7, header(0x00, 10, 0))
    + chunk(7, header(wire.Msg.RESET, 11, 0, version=9)),
}


def main() -> None:
    for name, data in RAW.items():
        (HERE / name).write_bytes(b"\x00" + data)
    for name, data in WRAPPED.items():
        (HERE / name).write_bytes(b"\x01" + data)


if __name__ == "__main__":
    main()
