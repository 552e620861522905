"""The Python side of the wire (firmware_host/wire.py, firmware_host/link.py).

COBS is checked against the worked examples of the COBS literature, the CRC against the
standard CRC-32 check value, the frame layout against docs/PROTOCOL.md's tables built here
with struct, and the link's retry logic against a scripted fake device on a local TCP socket.
"""
from __future__ import annotations

import socket
import struct
import threading
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_host import wire
from firmware_host.link import Link, LinkError

# (decoded, encoded without delimiter): the examples of Cheshire & Baker's COBS as usually
# tabulated (e.g. the Wikipedia article's table).
_RUN = bytes(range(1, 255))
COBS_EXAMPLES = [
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (_RUN, b"\xff" + _RUN),
    (b"\x00" + _RUN, b"\x01\xff" + _RUN),
    (_RUN + b"\xff", b"\xff" + _RUN + b"\x02\xff"),
    (bytes(range(2, 256)) + b"\x00", b"\xff" + bytes(range(2, 256)) + b"\x01\x01"),
    (bytes(range(3, 256)) + b"\x00\x01", b"\xfe" + bytes(range(3, 256)) + b"\x02\x01"),
    (b"", b"\x01"),
]


@pytest.mark.parametrize("decoded, encoded", COBS_EXAMPLES)
def test_cobs_matches_published_examples(decoded, encoded):
    assert wire.cobs_encode(decoded) == encoded
    assert wire.cobs_decode(encoded) == decoded


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_cobs_round_trip_has_no_zero_and_bounded_overhead(data):
    encoded = wire.cobs_encode(data)
    assert 0 not in encoded
    assert len(encoded) <= len(data) + len(data) // 254 + 1
    assert wire.cobs_decode(encoded) == data


@pytest.mark.parametrize("bad", [b"\x03\x11", b"\x05\x11\x00\x22\x33", b"\x00"])
def test_cobs_decode_rejects_broken_blocks(bad):
    with pytest.raises(wire.FrameError):
        wire.cobs_decode(bad)


def test_frame_layout_follows_protocol_doc():
    payload = bytes([1, 2, 0, 3])
    frame = wire.Frame(wire.Msg.INFER, 0x1234, payload)
    body = struct.pack("<BBHI", 1, 0x02, 0x1234, 4) + payload
    expected = body + struct.pack("<I", zlib.crc32(body))
    assert wire.frame_bytes(frame) == expected
    assert zlib.crc32(b"123456789") == 0xCBF43926  # the CRC-32 check value: zlib is IEEE 802.3
    encoded = wire.encode_frame(frame)
    assert encoded.endswith(b"\x00") and encoded.count(0) == 1
    assert wire.decode_frame(encoded[:-1]) == frame


def test_wire_efficiency_of_a_28x28_image_is_at_least_97_percent():
    image = np.random.default_rng(1).integers(-128, 128, 784, dtype=np.int8).tobytes()
    on_wire = len(wire.encode_frame(wire.Frame(wire.Msg.INFER, 7, image)))
    assert 784 / on_wire >= 0.97, on_wire


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 0xFFFF), st.data())
def test_no_corrupted_frame_is_ever_accepted(payload, seq, data):
    """Flip one bit anywhere on the wire: whatever the splitter and decoder make of it, a frame
    they accept is the frame that was sent."""
    frame = wire.Frame(wire.Msg.RESULT, seq, payload)
    encoded = bytearray(wire.encode_frame(frame))
    bit = data.draw(st.integers(0, 8 * (len(encoded) - 1) - 1))
    encoded[bit // 8] ^= 1 << (bit % 8)
    splitter = wire.FrameSplitter(max_frame=4096)
    for raw in splitter.feed(bytes(encoded) + b"\x00"):
        try:
            got = wire.decode_frame(raw)
        except wire.FrameError:
            continue
        assert got == frame


def test_splitter_drops_oversized_frames_and_resynchronises():
    splitter = wire.FrameSplitter(max_frame=16)
    good = wire.encode_frame(wire.Frame(wire.Msg.INFO, 1))
    stream = b"\x7f" * 40 + b"\x00" + good
    frames = []
    for i in range(0, len(stream), 5):  # arrives in pieces
        frames += splitter.feed(stream[i:i + 5])
    assert splitter.oversized == 1
    assert [wire.decode_frame(f) for f in frames] == [wire.Frame(wire.Msg.INFO, 1)]


INFO = wire.DeviceInfo(1, "float", "0123456789abcdef", 4096, 123456, 0.0078125, -128, 0.0625,
                       3, (28, 28, 1), (10,), "digits", "host")


def test_info_reply_layout_follows_protocol_doc():
    expected = (struct.pack("<HBBQIQ", 1, 1, 0, 0x0123456789ABCDEF, 4096, 123456)
                + struct.pack("<fifi", 0.0078125, -128, 0.0625, 3)
                + bytes([3, 1, 6, 4]) + struct.pack("<4I", 28, 28, 1, 10) + b"digits" + b"host")
    assert wire.info_payload(INFO) == expected
    assert wire.parse_info(expected) == INFO
    with pytest.raises(wire.FrameError):
        wire.parse_info(expected[:-1])


def test_result_error_and_reset_payloads():
    ticks, out = wire.parse_result(struct.pack("<I", 99) + bytes([0xFF, 1, 0x80]), 3)
    assert ticks == 99 and out.tolist() == [-1, 1, -128] and out.dtype == np.int8
    with pytest.raises(wire.FrameError):
        wire.parse_result(struct.pack("<I", 99) + b"\x01", 3)
    assert wire.parse_error(struct.pack("<H", 5) + b"bad length") == (5, "bad length")
    assert wire.parse_reset(struct.pack("<III", 4, 2, 1)) == (4, 2, 1)


# -- the link against a scripted device -------------------------------------------------------

class FakeDevice(threading.Thread):
    """A device speaking the protocol over TCP. Its model: output = first 3 input bytes + 1.

    ``script(n, frame)`` decides what happens to the n-th INFER request (0-based): "ok",
    "drop" (no reply), "corrupt" (a reply with one bit flipped), "error" (ERROR CORRUPT),
    "model" (ERROR MODEL)."""

    def __init__(self, script):
        super().__init__(daemon=True)
        self.script = script
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.server.getsockname()[1]}"
        self.infers = 0

    def reply(self, conn, frame: wire.Frame, flip: bool = False) -> None:
        data = bytearray(wire.encode_frame(frame))
        if flip:
            data[len(data) // 2] ^= 0x10
        conn.sendall(bytes(data))

    def run(self) -> None:
        conn, _ = self.server.accept()
        splitter = wire.FrameSplitter(1 << 16)
        with conn:
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                for raw in splitter.feed(data):
                    req = wire.decode_frame(raw)
                    if req.type == wire.Msg.RESET:
                        self.reply(conn, wire.Frame(wire.Msg.RESET_REPLY, req.seq, bytes(12)))
                    elif req.type == wire.Msg.INFO:
                        info = wire.DeviceInfo(**{**INFO.__dict__, "input_shape": (4,),
                                                  "output_shape": (3,)})
                        self.reply(conn, wire.Frame(wire.Msg.INFO_REPLY, req.seq,
                                                    wire.info_payload(info)))
                    else:
                        action = self.script(self.infers, req)
                        self.infers += 1
                        out = bytes((b + 1) & 0xFF for b in req.payload[:3])
                        result = wire.Frame(wire.Msg.RESULT, req.seq, struct.pack("<I", 5) + out)
                        if action == "ok":
                            self.reply(conn, result)
                        elif action == "corrupt":
                            self.reply(conn, result, flip=True)
                        elif action in ("error", "model"):
                            code = wire.ErrorCode.CORRUPT if action == "error" else \
                                wire.ErrorCode.MODEL
                            self.reply(conn, wire.Frame(wire.Msg.ERROR, req.seq,
                                                        struct.pack("<H", code) + b"x"))


def _inputs(n):
    return [np.array([i, 2 * i, -i, 7], dtype=np.int8) for i in range(n)]


def test_link_retries_lost_corrupt_and_refused_requests():
    faults = {2: "drop", 5: "corrupt", 8: "error"}
    device = FakeDevice(lambda n, req: faults.get(n, "ok"))
    device.start()
    with Link(device.url, timeout=0.5, window=3, retries=2) as link:
        link.sync()
        outcomes = list(link.infer_many(_inputs(12)))
    assert [o.index for o in outcomes] == list(range(12))
    for o, x in zip(outcomes, _inputs(12)):
        assert o.ok and o.ticks == 5
        assert o.output.tolist() == [int(np.int8(v + 1)) for v in x[:3].tolist()]
    assert sum(o.attempts - 1 for o in outcomes) == 3 == link.stats.retries
    assert link.stats.corrupt == 1 and link.stats.device_errors == 1


def test_link_gives_up_after_bounded_retries_and_never_hangs():
    def script(n, req):
        if req.payload[0] == 3:
            return "drop"
        return "model" if req.payload[0] == 5 else "ok"
    device = FakeDevice(script)
    device.start()
    with Link(device.url, timeout=0.3, window=2, retries=2) as link:
        outcomes = list(link.infer_many(_inputs(8)))
    failed = {o.index: o for o in outcomes if not o.ok}
    assert sorted(failed) == [3, 5]
    assert failed[3].attempts == 3 and len(failed[3].failures) == 3
    assert failed[5].attempts == 1  # a model error is not retried
    assert all(o.ok for o in outcomes if o.index not in failed)


def test_link_open_failure_is_a_clear_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(LinkError, match="cannot open device"):
        Link(f"socket://127.0.0.1:{port}")


def test_link_times_out_on_a_device_that_babbles_without_delimiters():
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def babble():
        conn, _ = server.accept()
        with conn:
            try:
                while not stop.is_set():
                    conn.sendall(b"\x55" * 512)
            except OSError:
                pass  # the link hung up

    threading.Thread(target=babble, daemon=True).start()
    try:
        with Link(f"socket://127.0.0.1:{server.getsockname()[1]}", timeout=0.3,
                  retries=1) as link:
            # either verdict is right for a babbler, whichever limit comes first
            with pytest.raises(LinkError, match="did not answer INFO|sends bytes that are not "
                                                "tinyconv frames"):
                link.info()
            assert link.stats.corrupt >= 1  # the endless "frame" was dropped, not stored
    finally:
        stop.set()
