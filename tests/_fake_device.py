"""A device on TCP that speaks the wire protocol but computes with runtime/ itself, so that a
test can make it wrong on purpose and watch the host tool catch it (no firmware build)."""
from __future__ import annotations

import socket
import threading
from typing import Callable

import numpy as np

import runtime
from firmware_host import wire


class FakeDevice(threading.Thread):
    """Serves one connection at ``url``; ``corrupt(payload, index, y)`` may change in place the
    output ``y`` of the ``index``-th inference request (0-based, input bytes ``payload``)."""

    def __init__(self, model, corrupt: Callable[[bytes, int, np.ndarray], None]):
        super().__init__(daemon=True)
        self.model, self.corrupt, self.count = model, corrupt, 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.server.getsockname()[1]}"
        self.start()

    def run(self) -> None:
        spec, out = self.model.input_spec, self.model.output_spec
        info = wire.DeviceInfo(1, self.model.requant_mode, self.model.hash, 0, 0, spec.scale,
                               spec.zero_point, out.scale, out.zero_point, spec.shape, out.shape,
                               self.model.name, "python")
        conn, _ = self.server.accept()
        splitter = wire.FrameSplitter(1 << 16)
        with conn:
            while data := conn.recv(4096):
                for raw in splitter.feed(data):
                    conn.sendall(wire.encode_frame(self._reply(wire.decode_frame(raw), info)))

    def _reply(self, req, info) -> wire.Frame:
        if req.type == wire.Msg.RESET:
            return wire.Frame(wire.Msg.RESET_REPLY, req.seq, bytes(12))
        if req.type == wire.Msg.INFO:
            return wire.Frame(wire.Msg.INFO_REPLY, req.seq, wire.info_payload(info))
        x = np.frombuffer(req.payload, np.int8).reshape((1,) + self.model.input_spec.shape)
        y = runtime.run(self.model, x)[0].copy()
        self.corrupt(req.payload, self.count, y)
        self.count += 1
        return wire.Frame(wire.Msg.RESULT, req.seq, (1).to_bytes(4, "little") + y.tobytes())
