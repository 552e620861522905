"""A device that is connected but says nothing ends the run with exit status 2 within a bounded
time (the silence limit, by default ``(retries + 1) * timeout``), while a stall shorter than the
limit is still retried and recovered from; and the link refills its window as soon as a slot
frees, so it never waits for the device with fewer requests in flight than it may have.

The silent peers are real: a TCP server that accepts and never answers, and the host device
stopped with SIGSTOP in the middle of a run.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from firmware_host import link as link_module
from firmware_host import wire
from firmware_host.faults import FaultRelay
from firmware_host.link import Link
from tinyconv.cli import main

import _host_device as hd


@pytest.fixture(scope="module")
def device_build(tmp_path_factory):
    return hd.built_small_cnn(tmp_path_factory.mktemp("silence"))


def dataset(tmp_path: Path, count: int, seed: int = 11) -> Path:
    return hd.save_images(tmp_path / "images.npz", hd.images(count, seed))


def verify_args(export_dir, data, url, report, *extra) -> list[str]:
    return ["verify", str(export_dir), "--input", str(data), "--device", url,
            "--json", str(report), *extra]


def test_a_peer_that_accepts_and_never_answers_exits_2(device_build, tmp_path, capsys):
    export_dir, _ = device_build
    data = dataset(tmp_path, 50)
    server = socket.create_server(("127.0.0.1", 0))
    url = f"socket://127.0.0.1:{server.getsockname()[1]}"
    received = bytearray()

    def swallow():
        conn, _ = server.accept()
        with conn:
            while chunk := conn.recv(4096):
                received.extend(chunk)

    peer = threading.Thread(target=swallow, daemon=True)
    peer.start()
    report = tmp_path / "report.json"
    timeout, retries = 0.2, 2
    started = time.monotonic()
    try:
        code = main(verify_args(export_dir, data, url, report, "--timeout", str(timeout),
                                "--retries", str(retries)))
    finally:
        server.close()
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 2
    line, = err.strip().splitlines()  # one line, no traceback
    assert line.startswith(f"tinyconv verify: error: device {url} did not answer RESET"), line
    silent = float(re.search(r"no valid frame for the last ([\d.]+) s", line).group(1))
    assert (retries + 1) * timeout - 0.05 <= silent < (retries + 1) * timeout + 1
    assert elapsed < (retries + 1) * timeout + 10  # + loading the model and onnxruntime
    peer.join(5)
    assert received.count(b"\0") >= retries + 1  # it really was asked, and resent to
    # Silent from the first request: no device identified itself, there is nothing to report.
    assert not report.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["images.npz"]


def _read_syscalls(pid: int) -> int:
    try:
        for line in (Path("/proc") / str(pid) / "io").read_text().splitlines():
            if line.startswith("syscr:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def test_a_host_device_stopped_mid_run_ends_verify_with_exit_2_and_an_aborted_report(
        device_build, tmp_path):
    export_dir, exe = device_build
    data = dataset(tmp_path, 5000)  # several seconds of work: it is stopped well before the end
    report = tmp_path / "report.json"
    timeout, retries = 0.3, 3
    silence = (retries + 1) * timeout
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinyconv.cli",
         *verify_args(export_dir, data, "host", report, "--timeout", str(timeout), "--quiet")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    device_pid = None
    try:
        assert hd.wait_until(lambda: hd.child_processes(proc.pid, exe), 60), \
            "verify started no device"
        (device_pid,) = hd.child_processes(proc.pid, exe)
        # Mid-run: the device has read a few hundred requests' worth of bytes.
        assert hd.wait_until(lambda: _read_syscalls(device_pid) > 300, 30), proc.communicate()
        os.kill(device_pid, signal.SIGSTOP)
        stopped = time.monotonic()
        out, err = proc.communicate(timeout=silence + 20)
        ended = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if device_pid is not None and hd.alive(device_pid):
            os.kill(device_pid, signal.SIGKILL)
    assert proc.returncode == 2, err
    line, = err.strip().splitlines()
    assert re.fullmatch(r"tinyconv verify: error: device /dev/pts/\d+ sent no valid frame for "
                        r"[\d.]+ s while \d requests waited \(silence limit 1.2 s\): it is "
                        r"connected but not answering", line), line
    silent = float(re.search(r"for ([\d.]+) s", line).group(1))
    assert silence <= silent < silence + 1
    # The silence limit, then stopping the stopped device (terminate, at worst kill after 2 s).
    assert ended < silence + 5, ended
    assert not hd.alive(device_pid), "the stopped device outlived verify"
    # The report of the images verified before the stop, marked aborted with the message.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.npz", "report.json"]
    result = json.loads(report.read_text())
    assert result["aborted"] == line.removeprefix("tinyconv verify: error: ")
    assert 0 < result["images"] == result["device_equal_images"] < result["inputs"] == 5000
    assert 1 <= len(result["unfinished"]) <= 4  # the window: requests the device never answered
    assert result["link"]["frames_sent"] == 2 + result["images"] + len(result["unfinished"]) + \
        result["link"]["retries"]
    assert f"ABORTED after {result['images']} of 5000 images" in out


def test_a_stall_past_the_timeout_but_within_the_silence_limit_is_recovered(device_build,
                                                                           tmp_path):
    export_dir, exe = device_build
    images, timeout, retries = 400, 0.25, 3  # silence limit: 1 s
    stall = 0.6
    data = dataset(tmp_path, images)
    report = tmp_path / "report.json"
    with hd.HostDevice(exe) as device, FaultRelay(device.url) as relay:
        def stall_midway():
            hd.wait_until(lambda: relay.counts.frames_down > 100, 30)
            os.kill(device.process.pid, signal.SIGSTOP)
            time.sleep(stall)
            os.kill(device.process.pid, signal.SIGCONT)

        staller = threading.Thread(target=stall_midway)
        staller.start()
        code = main(verify_args(export_dir, data, relay.url, report, "--timeout", str(timeout),
                                "--retries", str(retries)))
        staller.join()
    assert code == 0
    result = json.loads(report.read_text())
    assert result["images"] == result["device_equal_images"] == images
    link = result["link"]
    assert link["timeouts"] >= 2 and link["retries"] >= 2  # the stall was seen and retried
    # the silence clock starts when a request waits, a moment after the device was stopped
    assert 0.9 * stall <= link["longest_silence"] < (retries + 1) * timeout
    assert all(r["ok"] and r["attempts"] <= retries + 1 for r in result["retried"])


class CountingPort:
    """A stand-in for the serial port whose device answers one INFER each time the link waits
    for it with nothing left to read, and records how many INFERs were outstanding then.

    The model echoes the first 3 input bytes; RESET and INFO are answered at once."""

    def __init__(self, info: wire.DeviceInfo):
        self.info = info
        self.splitter = wire.FrameSplitter(1 << 16)
        self.pending: list[wire.Frame] = []  # INFERs not answered yet, oldest first
        self.buffer = bytearray()
        self.waits: list[tuple[int, int]] = []  # (INFERs answered so far, outstanding)
        self.answered = 0

    def write(self, data: bytes) -> int:
        for raw in self.splitter.feed(data):
            frame = wire.decode_frame(raw)
            if frame.type == wire.Msg.INFER:
                self.pending.append(frame)
            elif frame.type == wire.Msg.RESET:
                self.buffer += wire.encode_frame(wire.Frame(wire.Msg.RESET_REPLY, frame.seq,
                                                            bytes(12)))
            else:
                self.buffer += wire.encode_frame(wire.Frame(wire.Msg.INFO_REPLY, frame.seq,
                                                            wire.info_payload(self.info)))
        return len(data)

    @property
    def in_waiting(self) -> int:
        return len(self.buffer)

    def read(self, size: int) -> bytes:
        if not self.buffer and self.pending:
            self.waits.append((self.answered, len(self.pending)))
            frame = self.pending.pop(0)
            self.answered += 1
            self.buffer += wire.encode_frame(wire.Frame(
                wire.Msg.RESULT, frame.seq, struct.pack("<I", 1) + frame.payload[:3]))
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def close(self) -> None:
        pass


@pytest.mark.parametrize("window", [1, 2, 4, 7])
def test_the_link_waits_for_the_device_only_with_a_full_window(monkeypatch, window):
    info = wire.DeviceInfo(wire.PROTOCOL_VERSION, "fixed", "0123456789abcdef", 64, 12, 1.0, 0,
                           1.0, 0, (4,), (3,), "echo", "test", rx_capacity=4096)
    port = CountingPort(info)  # a buffer for more than 7 requests: the window limits
    monkeypatch.setattr(link_module.serial, "serial_for_url", lambda *a, **k: port)
    count = 50
    inputs = [np.array([i, -i, 2 * i, 9], dtype=np.int8) for i in range(count)]
    with Link("fake://", window=window) as link:
        link.sync()
        outcomes = list(link.infer_many(inputs))
    assert [o.index for o in outcomes] == list(range(count))
    assert all(o.output.tolist() == x[:3].tolist() for o, x in zip(outcomes, inputs))
    assert link.stats.retries == 0 and port.answered == count
    # Every time the link waited, as many requests were out as the window and the inputs allow.
    assert port.waits == [(k, min(window, count - k)) for k in range(count)]
