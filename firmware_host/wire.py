"""The wire format (docs/PROTOCOL.md), the one Python implementation of it.

A frame is ``version, type, seq, length, payload, CRC-32`` (little-endian), COBS-encoded and
ended by one ``0x00``. COBS makes ``0x00`` a byte that only ever ends a frame, so after any
loss the reader resynchronises at the next delimiter; the CRC (zlib's, the same as the
firmware's tc_crc32.c) makes a corrupted frame detectable instead of plausible.
"""
from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

PROTOCOL_VERSION = 1
HEADER = struct.Struct("<BBHI")  # version, type, seq, payload length
CRC = struct.Struct("<I")
FRAME_OVERHEAD = HEADER.size + CRC.size
# The shortest reply on the wire: an ERROR with only its code, one COBS byte, the delimiter.
# A reader may wait for this many bytes of a frame it has begun without delaying any reply.
MIN_REPLY_BYTES = FRAME_OVERHEAD + 2 + 2


class Msg(IntEnum):
    INFO = 0x01
    INFER = 0x02
    RESET = 0x03
    INFO_REPLY = 0x81
    RESULT = 0x82
    RESET_REPLY = 0x83
    ERROR = 0xFF


class ErrorCode(IntEnum):
    CORRUPT = 1
    TOO_LONG = 2
    BAD_VERSION = 3
    BAD_TYPE = 4
    BAD_LENGTH = 5
    MODEL = 6


class FrameError(ValueError):
    """A frame that cannot be trusted: broken COBS, too short, CRC or length mismatch."""


def cobs_encode(data: bytes) -> bytes:
    """COBS without the delimiter, canonical as in the COBS paper (and byte for byte what the
    firmware's encoder sends): runs of 254 non-zero bytes become a 0xFF block, and data that
    ends right after such a block gets no empty final block.

    Works on the zero-free pieces between zeros (bytes.split runs in C), not byte by byte."""
    out = bytearray()
    pieces = bytes(data).split(b"\0")
    last = len(pieces) - 1
    for i, piece in enumerate(pieces):
        full, rest = divmod(len(piece), 254)
        for k in range(full):
            out.append(0xFF)
            out += piece[254 * k:254 * (k + 1)]
        if i == last and full and not rest:
            break  # ends right after a full block: no empty final block
        out.append(rest + 1)
        out += piece[254 * full:]
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of ``cobs_encode`` (delimiter already removed); raises FrameError."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise FrameError("zero byte inside a COBS frame")
        end = i + code
        if end > n:
            raise FrameError("COBS block runs past the end of the frame")
        block = data[i + 1:end]
        if 0 in block:
            raise FrameError("zero byte inside a COBS frame")
        out += block
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes = b""
    version: int = PROTOCOL_VERSION


def frame_bytes(frame: Frame) -> bytes:
    """The decoded frame: header, payload, CRC (what the CRC and COBS operate on)."""
    body = HEADER.pack(frame.version, frame.type, frame.seq & 0xFFFF, len(frame.payload))
    body += bytes(frame.payload)
    return body + CRC.pack(zlib.crc32(body))


def encode_frame(frame: Frame) -> bytes:
    """What goes on the wire: COBS of ``frame_bytes`` plus the 0x00 delimiter."""
    return cobs_encode(frame_bytes(frame)) + b"\0"


def parse_frame(raw: bytes) -> Frame:
    """A decoded (un-COBSed) frame -> Frame; raises FrameError unless CRC and length agree."""
    if len(raw) < FRAME_OVERHEAD:
        raise FrameError(f"frame of {len(raw)} bytes is shorter than header + CRC")
    (crc,) = CRC.unpack_from(raw, len(raw) - CRC.size)
    if zlib.crc32(raw[:-CRC.size]) != crc:
        raise FrameError("CRC-32 mismatch")
    version, type_, seq, length = HEADER.unpack_from(raw)
    if length != len(raw) - FRAME_OVERHEAD:
        raise FrameError(f"length field says {length} payload bytes, frame has "
                         f"{len(raw) - FRAME_OVERHEAD}")
    return Frame(type_, seq, bytes(raw[HEADER.size:-CRC.size]), version)


def decode_frame(encoded: bytes) -> Frame:
    """One wire frame without its delimiter -> Frame; raises FrameError."""
    return parse_frame(cobs_decode(encoded))


class FrameSplitter:
    """Cuts a byte stream into frames at 0x00 delimiters.

    Holds at most ``max_frame`` bytes of an unfinished frame: anything longer is dropped up to
    the next delimiter (and counted), so a stream of garbage costs bounded memory."""

    def __init__(self, max_frame: int):
        self.max_frame = max_frame
        self._partial = bytearray()
        self._discarding = False
        self.oversized = 0

    @property
    def pending(self) -> int:
        """Bytes of the unfinished frame held so far."""
        return len(self._partial)

    def feed(self, data: bytes) -> list[bytes]:
        frames = []
        parts = bytes(data).split(b"\0")
        for i, part in enumerate(parts):
            if not self._discarding:
                self._partial += part
                if len(self._partial) > self.max_frame:
                    self._partial.clear()
                    self._discarding = True
                    self.oversized += 1
            if i < len(parts) - 1:  # a delimiter follows this part
                if self._partial and not self._discarding:
                    frames.append(bytes(self._partial))
                self._partial.clear()
                self._discarding = False
        return frames


# -- payloads ----------------------------------------------------------------------------------

_INFO_FIXED = struct.Struct("<HBBQIQIiIiBBBB")


@dataclass(frozen=True)
class DeviceInfo:
    protocol_version: int
    requant_mode: str
    model_hash: str  # 16 hex digits, as QuantModel.hash
    arena_size: int
    total_macs: int
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    model_name: str
    target: str
    # Request bytes the device buffers while it computes (its receive ring): the host's credit.
    # 0 when the device does not say (an older firmware): one request at a time.
    rx_capacity: int = 0

    @property
    def input_size(self) -> int:
        return math.prod(self.input_shape)  # per image: no numpy call

    @property
    def output_size(self) -> int:
        return math.prod(self.output_shape)


def _f32(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def _f32_bits(value: float) -> int:
    return struct.unpack("<I", struct.pack("<f", value))[0]


def parse_info(payload: bytes) -> DeviceInfo:
    if len(payload) < _INFO_FIXED.size:
        raise FrameError(f"INFO reply of {len(payload)} bytes is too short")
    (version, mode, _, model_hash, arena, macs, in_scale, in_zp, out_scale, out_zp,
     in_rank, out_rank, name_len, target_len) = _INFO_FIXED.unpack_from(payload)
    need = _INFO_FIXED.size + 4 * (in_rank + out_rank) + name_len + target_len
    if len(payload) not in (need, need + 4):  # the receive capacity is optional, last
        raise FrameError(f"INFO reply has {len(payload)} bytes, its fields need {need} "
                         f"or {need + 4}")
    pos = _INFO_FIXED.size
    dims = struct.unpack_from(f"<{in_rank + out_rank}I", payload, pos)
    pos += 4 * (in_rank + out_rank)
    name = payload[pos:pos + name_len].decode("ascii", "replace")
    pos += name_len
    target = payload[pos:pos + target_len].decode("ascii", "replace")
    (capacity,) = struct.unpack_from("<I", payload, need) if len(payload) > need else (0,)
    return DeviceInfo(version, "float" if mode == 1 else "fixed", f"{model_hash:016x}", arena,
                      macs, _f32(in_scale), in_zp, _f32(out_scale), out_zp,
                      tuple(dims[:in_rank]), tuple(dims[in_rank:]), name, target, capacity)


def info_payload(info: DeviceInfo) -> bytes:
    """The INFO reply a device with ``info`` sends (for tests and simulated devices); without
    the receive capacity field when ``rx_capacity`` is 0, as older firmware sends it."""
    name, target = info.model_name.encode(), info.target.encode()
    return _INFO_FIXED.pack(
        info.protocol_version, 1 if info.requant_mode == "float" else 0, 0,
        int(info.model_hash, 16), info.arena_size, info.total_macs,
        _f32_bits(info.input_scale), info.input_zero_point, _f32_bits(info.output_scale),
        info.output_zero_point, len(info.input_shape), len(info.output_shape), len(name),
        len(target)) + struct.pack(f"<{len(info.input_shape) + len(info.output_shape)}I",
                                   *info.input_shape, *info.output_shape) + name + target \
        + (struct.pack("<I", info.rx_capacity) if info.rx_capacity else b"")


def max_frame_bytes(payload_len: int) -> int:
    """The most bytes a frame with ``payload_len`` payload bytes takes on the wire: COBS adds
    at most one byte per 254 (and one), the delimiter one more. What the host counts against
    a device's receive capacity before it has encoded the frame."""
    body = FRAME_OVERHEAD + payload_len
    return body + body // 254 + 2


def parse_result(payload: bytes, output_size: int) -> tuple[int, np.ndarray]:
    """RESULT payload -> (ticks, int8 output values)."""
    if len(payload) != 4 + output_size:
        raise FrameError(f"RESULT has {len(payload) - 4} output bytes, expected {output_size}")
    (ticks,) = struct.unpack_from("<I", payload)
    return ticks, np.frombuffer(payload, dtype=np.int8, offset=4).copy()


def parse_error(payload: bytes) -> tuple[int, str]:
    if len(payload) < 2:
        raise FrameError("ERROR reply without a code")
    (code,) = struct.unpack_from("<H", payload)
    return code, payload[2:].decode("ascii", "replace")


def parse_reset(payload: bytes) -> tuple[int, int, int]:
    """RESET reply -> device counters (frames accepted, corrupt, oversized) before the reset."""
    if len(payload) != 12:
        raise FrameError(f"RESET reply of {len(payload)} bytes, expected 12")
    return struct.unpack("<III", payload)
