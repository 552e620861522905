"""A fault-injecting relay: put a bad cable between the host tool and a device, on purpose.

The relay listens on 127.0.0.1 (``relay.url`` is a ``socket://`` URL any pyserial user opens)
and forwards each byte to the real device (a ``socket://`` URL or a pty/tty path) and back,
damaging the stream as a seeded ``FaultPlan`` says: single-bit flips at a byte error rate,
dropped and duplicated bytes, stalls longer than the host's timeout, and device resets at given
points of the run. Every decision is drawn per byte from a seeded generator per direction, so a
failing run can be replayed; every fault is counted in ``relay.counts``.

    with FaultRelay("socket://127.0.0.1:4444", FaultPlan(seed=1, bit_error_rate=1e-3)) as relay:
        verify("build/net", "test.npz", device=relay.url)

From a shell (the relay runs until Ctrl-C and prints its counts):

    python -m firmware_host.faults socket://127.0.0.1:4444 --bit-error-rate 1e-3 --seed 1

Why a relay and not a mock: the host tool, the wire format and the firmware all run unchanged,
so what the tests show is what a flaky USB cable would do to a real run.
"""
from __future__ import annotations

import argparse
import os
import selectors
import socket
import termios
import threading
import time
import tty
from collections import deque
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from runtime.errors import TinyconvError

UP, DOWN = "up", "down"  # host -> device, device -> host


@dataclass(frozen=True)
class FaultPlan:
    """What the relay does to the bytes. Rates are per byte, in each direction.

    ``clean_frames``: how many 0x00-delimited frames pass untouched at the start of each
    direction (up, down), e.g. to let a handshake through and damage only the data.
    ``reset_at``: host->device byte counts at which the device is reset (needs ``restart``)."""

    seed: int = 0
    bit_error_rate: float = 0.0
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    stall_rate: float = 0.0
    stall_seconds: float = 0.0
    reset_at: tuple[int, ...] = ()
    clean_frames: tuple[int, int] = (0, 0)


@dataclass
class FaultCounts:
    bytes_up: int = 0
    bytes_down: int = 0
    flipped: int = 0
    dropped: int = 0
    duplicated: int = 0
    stalls: int = 0
    resets: int = 0
    clients: int = 0
    frames_up: int = 0    # non-empty 0x00-delimited frames received from the host
    frames_down: int = 0  # ... and delivered to it
    max_in_flight: int = 0  # most host frames ahead of the replies delivered (fault-free runs)

    @property
    def injected(self) -> int:
        return self.flipped + self.dropped + self.duplicated + self.stalls + self.resets

    def as_dict(self) -> dict:
        return dict(asdict(self), injected=self.injected)


class _Endpoint:
    """The device side: a TCP socket or a terminal (pty, tty) opened raw, as a plain fd."""

    def __init__(self, url: str):
        self.url = url
        self.sock = None
        if url.startswith("socket://"):
            host, _, port = url[len("socket://"):].rstrip("/").rpartition(":")
            try:
                self.sock = socket.create_connection((host, int(port)), timeout=5)
            except (OSError, ValueError) as exc:
                raise TinyconvError(f"relay cannot reach device {url}: {exc}") from None
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.setblocking(False)
            self.fd = self.sock.fileno()
        else:
            try:
                self.fd = os.open(url, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            except OSError as exc:
                raise TinyconvError(f"relay cannot open device {url}: {exc}") from None
            try:
                tty.setraw(self.fd, termios.TCSANOW)
            except termios.error:
                pass  # not a terminal (a FIFO in a test): bytes pass as they are

    def read(self) -> bytes | None:
        """Whatever is there: None when nothing is, b"" when the device side hung up."""
        try:
            return os.read(self.fd, 65536)
        except BlockingIOError:
            return None
        except OSError:  # EIO: the pty's other side is gone
            return b""

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + 5
        while view:
            try:
                n = os.write(self.fd, view)
                view = view[n:]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return  # a device that stopped reading: the bytes are lost, as on a wire
                time.sleep(0.001)
            except OSError:
                return

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        else:
            os.close(self.fd)


def _count_frames(data: bytes, frames: int, in_frame: bool) -> tuple[int, bool]:
    """Non-empty 0x00-delimited frames in a stream, carried across chunks."""
    for byte in data:
        if byte == 0:
            frames += in_frame
        in_frame = byte != 0
    return frames, in_frame


class _Direction:
    """One direction's damage: per-byte decisions from its own generator, and a release queue
    so a stall holds back this direction only."""

    def __init__(self, plan: FaultPlan, seed: int, counts: FaultCounts, clean_frames: int):
        self.plan, self.counts = plan, counts
        self.rng = np.random.default_rng(seed)
        self.clean_frames = clean_frames
        self.queue: deque[tuple[float, bytes]] = deque()
        self.hold_until = 0.0
        self.frames = 0
        self._in_frame = False
        self.frames_out = 0
        self._out_in_frame = False

    def damage(self, data: bytes) -> bytes:
        p = self.plan
        out = bytearray()
        for byte in data:
            if self.clean_frames > 0:
                out.append(byte)
                self.clean_frames -= byte == 0
                continue
            draw = self.rng.random(4)
            if draw[0] < p.stall_rate:
                self.counts.stalls += 1
                self._flush(out)
                out = bytearray()
                self.hold_until = time.monotonic() + p.stall_seconds
            if draw[1] < p.drop_rate:
                self.counts.dropped += 1
                continue
            if draw[2] < p.bit_error_rate:
                self.counts.flipped += 1
                byte ^= 1 << int(self.rng.integers(0, 8))
            out.append(byte)
            if draw[3] < p.duplicate_rate:
                self.counts.duplicated += 1
                out.append(byte)
        return bytes(out)

    def push(self, data: bytes) -> None:
        self.frames, self._in_frame = _count_frames(data, self.frames, self._in_frame)
        self._flush(bytearray(self.damage(data)))

    def _flush(self, out: bytearray) -> None:
        if out:
            self.queue.append((max(self.hold_until, 0.0), bytes(out)))

    def due(self, now: float) -> bytes:
        ready = bytearray()
        while self.queue and self.queue[0][0] <= now:
            ready += self.queue.popleft()[1]
        self.frames_out, self._out_in_frame = _count_frames(ready, self.frames_out,
                                                            self._out_in_frame)
        return bytes(ready)

    def next_release(self) -> float | None:
        return self.queue[0][0] if self.queue else None


class FaultRelay:
    """Relay one client at a time between ``relay.url`` and the device at ``device_url``.

    ``restart``: called for a device reset (``FaultPlan.reset_at``); it must restart the device
    and return its (possibly new) URL. Without it a reset only reconnects to ``device_url``."""

    def __init__(self, device_url: str, plan: FaultPlan = FaultPlan(),
                 restart: Callable[[], str] | None = None):
        self.device_url, self.plan, self.restart = device_url, plan, restart
        self.counts = FaultCounts()
        self.events: list[tuple[float, str]] = []  # (time, what) for resets and client changes
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self.url = f"socket://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="fault-relay", daemon=True)
        self.error: BaseException | None = None
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=10)
        self._listener.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> "FaultRelay":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                sel = selectors.DefaultSelector()
                sel.register(self._listener, selectors.EVENT_READ)
                sel.register(self._wake_r, selectors.EVENT_READ)
                ready = sel.select()
                sel.close()
                if self._stop.is_set():
                    return
                if any(key.fileobj is self._listener for key, _ in ready):
                    client, _ = self._listener.accept()
                    self.counts.clients += 1
                    self.events.append((time.monotonic(), "client connected"))
                    try:
                        self._relay(client)
                    finally:
                        client.close()
                        self.events.append((time.monotonic(), "client gone"))
        except BaseException as exc:  # noqa: BLE001 - kept for the owner to inspect
            self.error = exc

    def _relay(self, client: socket.socket) -> None:
        plan = self.plan
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.setblocking(False)
        device = _Endpoint(self.device_url)
        up = _Direction(plan, plan.seed * 2 + 1, self.counts, plan.clean_frames[0])
        down = _Direction(plan, plan.seed * 2 + 2, self.counts, plan.clean_frames[1])
        resets = deque(sorted(plan.reset_at))
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                releases = [t for t in (up.next_release(), down.next_release()) if t is not None]
                timeout = max(0.0, min(releases) - now) if releases else 0.5
                sel = selectors.DefaultSelector()
                sel.register(client, selectors.EVENT_READ, UP)
                sel.register(device.fd, selectors.EVENT_READ, DOWN)
                sel.register(self._wake_r, selectors.EVENT_READ, None)
                ready = sel.select(timeout)
                sel.close()
                for key, _ in ready:
                    if key.data == UP:
                        try:
                            data = client.recv(65536)
                        except BlockingIOError:
                            continue
                        if not data:
                            return  # the host closed the port
                        while resets and self.counts.bytes_up + len(data) > resets[0]:
                            cut = resets.popleft() - self.counts.bytes_up
                            self.counts.bytes_up += cut
                            up.push(data[:cut])
                            self._pump(up, client, device)
                            device = self._reset(device)
                            data = data[cut:]
                        self.counts.bytes_up += len(data)
                        up.push(data)
                        self.counts.frames_up = up.frames
                        self.counts.max_in_flight = max(self.counts.max_in_flight,
                                                        up.frames - down.frames_out)
                    elif key.data == DOWN:
                        data = device.read()
                        if data is None:
                            continue
                        if not data:
                            if self.restart is None:
                                return  # the device is gone: so is the host's port
                            device = self._reset(device, reason="device hung up")
                            continue
                        self.counts.bytes_down += len(data)
                        down.push(data)
                self._pump(up, client, device, down)
        finally:
            device.close()

    def _pump(self, up: _Direction, client: socket.socket, device: _Endpoint,
              down: _Direction | None = None) -> None:
        now = time.monotonic()
        data = up.due(now)
        if data:
            device.write(data)
        if down is not None:
            data = down.due(now)
            self.counts.frames_down = down.frames_out
            if data:
                try:
                    client.sendall(data)
                except BlockingIOError:
                    client.setblocking(True)
                    client.sendall(data)
                    client.setblocking(False)

    def _reset(self, device: _Endpoint, reason: str = "reset") -> _Endpoint:
        """The device loses power: its state and whatever it was saying are gone."""
        device.close()
        if reason == "reset":
            self.counts.resets += 1
        self.events.append((time.monotonic(), reason))
        url = self.restart() if self.restart is not None else self.device_url
        self.device_url = url
        deadline = time.monotonic() + 10
        while True:
            try:
                return _Endpoint(url)
            except TinyconvError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m firmware_host.faults", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("device", help="the real device: socket://HOST:PORT or a pty/tty path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bit-error-rate", type=float, default=1e-3)
    parser.add_argument("--drop-rate", type=float, default=0.0)
    parser.add_argument("--duplicate-rate", type=float, default=0.0)
    parser.add_argument("--stall-rate", type=float, default=0.0)
    parser.add_argument("--stall-seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    plan = FaultPlan(args.seed, args.bit_error_rate, args.drop_rate, args.duplicate_rate,
                     args.stall_rate, args.stall_seconds)
    with FaultRelay(args.device, plan) as relay:
        print(relay.url, flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            print(relay.counts.as_dict())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
