"""How the link reads replies from a ``socket://`` port (QEMU's UART is one): whole frames at
once when they are there, not byte by byte, and still right when bytes trickle in."""
from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np

from firmware_host import wire
from firmware_host.link import Link

INFO = wire.DeviceInfo(wire.PROTOCOL_VERSION, "fixed", "0123456789abcdef", 64, 12, 1.0, 0, 1.0,
                       0, (4,), (3,), "echo", "test", rx_capacity=4096)


class EchoDevice(threading.Thread):
    """A device on TCP whose model answers the first 3 input bytes negated; ``trickle`` sends
    each reply a byte at a time with a pause between, as QEMU's UART does."""

    def __init__(self, trickle: bool):
        super().__init__(daemon=True)
        self.trickle = trickle
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.server.getsockname()[1]}"
        self.start()

    def run(self) -> None:
        conn, _ = self.server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        splitter = wire.FrameSplitter(1 << 16)
        with conn:
            while data := conn.recv(4096):
                for raw in splitter.feed(data):
                    reply = wire.encode_frame(self._reply(wire.decode_frame(raw)))
                    if not self.trickle:
                        conn.sendall(reply)
                        continue
                    for i in range(len(reply)):
                        conn.sendall(reply[i:i + 1])
                        time.sleep(0.0002)

    @staticmethod
    def _reply(req: wire.Frame) -> wire.Frame:
        if req.type == wire.Msg.RESET:
            return wire.Frame(wire.Msg.RESET_REPLY, req.seq, bytes(12))
        if req.type == wire.Msg.INFO:
            return wire.Frame(wire.Msg.INFO_REPLY, req.seq, wire.info_payload(INFO))
        y = (-np.frombuffer(req.payload[:3], np.int8).astype(np.int16)).clip(-128, 127)
        return wire.Frame(wire.Msg.RESULT, req.seq,
                          struct.pack("<I", 7) + y.astype(np.int8).tobytes())


def _run(trickle: bool, count: int = 40):
    device = EchoDevice(trickle)
    inputs = [np.array([i, -i, 3 * i, 1], dtype=np.int8) for i in range(count)]
    with Link(device.url, window=2, timeout=5.0) as link:
        link.sync()
        link.info()
        reads = []
        read = link._port.read
        link._port.read = lambda size=1: reads.append(size) or read(size)
        outcomes = list(link.infer_many(inputs))
    expected = [(-x[:3].astype(np.int16)).clip(-128, 127).tolist() for x in inputs]
    assert [o.output.tolist() for o in outcomes] == expected
    assert all(o.ticks == 7 and o.attempts == 1 for o in outcomes)
    assert link.stats.corrupt == 0 and link.stats.retries == 0
    return reads, link.stats


def test_whole_replies_are_read_in_few_reads():
    reads, stats = _run(trickle=False)
    reply_bytes = stats.bytes_received / stats.frames_received
    assert reply_bytes >= 20  # a RESULT of 3 bytes: 21 bytes on the wire
    # byte by byte, as pyserial's socket in_waiting (0 or 1) made it, would be >= 20 per reply
    assert len(reads) <= 3 * stats.frames_received
    assert max(reads) >= wire.MIN_REPLY_BYTES


def test_trickled_replies_arrive_whole():
    _, stats = _run(trickle=True)
    assert stats.frames_received == 40 + 2  # RESET and INFO replies too


def test_shortest_reply_is_an_error_with_only_its_code():
    """MIN_REPLY_BYTES is what the link waits for at the start of a frame: no reply the
    protocol allows may be shorter, or the link would wait a read timeout for it."""
    error = wire.encode_frame(wire.Frame(wire.Msg.ERROR, 0xFFFF, struct.pack("<H", 6)))
    assert len(error) == wire.MIN_REPLY_BYTES
    assert wire.parse_error(wire.decode_frame(error[:-1]).payload) == (6, "")
    for payload in (bytes(12), struct.pack("<I", 0) + b"\x00", wire.info_payload(INFO)):
        assert len(wire.encode_frame(wire.Frame(wire.Msg.RESULT, 1, payload))) > len(error)
