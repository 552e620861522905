"""A device that sends only junk (issue 11, item 12): a wrong baud rate or another program on
the board. verify says so on stderr within seconds, then ends with one clear line and exit 2 in
bounded time, instead of 40 s of silence. The device is a real TCP peer streaming random bytes
to a real ``tinyconv verify`` child process, whose stderr lines are timed as they arrive; and a
device that prints a console banner before answering properly still verifies.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import _host_device as hd


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("junk")
    return hd.export_small_cnn(root / "small_cnn"), hd.save_images(root / "x.npz", hd.images(6, 3))


def junk_peer(stop: threading.Event) -> tuple[socket.socket, str]:
    """A TCP device that drains whatever it is sent and streams random bytes back."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(30)

    def talk():
        conn, _ = server.accept()
        conn.settimeout(0.05)
        rng = np.random.default_rng(0)
        with conn:
            while not stop.is_set():
                try:
                    conn.recv(4096)
                except TimeoutError:
                    pass
                except OSError:
                    return
                try:
                    conn.sendall(rng.integers(1, 256, 64, dtype=np.uint8).tobytes())
                except OSError:
                    return

    threading.Thread(target=talk, daemon=True).start()
    return server, f"socket://127.0.0.1:{server.getsockname()[1]}"


def test_a_device_sending_junk_is_named_early_and_ends_with_exit_2(exported):
    export_dir, data = exported
    stop = threading.Event()
    server, url = junk_peer(stop)
    process = subprocess.Popen([sys.executable, "-m", "tinyconv.cli", "verify", str(export_dir),
                                "--input", str(data), "--device", url], cwd=hd.ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    lines = []
    try:
        for line in process.stderr:
            lines.append((time.monotonic() - started, line.rstrip()))
        process.wait(timeout=60)
    finally:
        stop.set()
        server.close()
        if process.poll() is None:
            process.kill()
    ended = time.monotonic() - started
    assert process.returncode == 2, lines
    text = [line for _, line in lines]
    notice = [t for t, line in lines if "sends bytes that are not tinyconv frames" in line
              and "waiting" in line]
    error = [line for line in text if line.startswith("tinyconv verify: error:")]
    assert len(notice) == 1 and len(error) == 1, text
    assert "not tinyconv frames" in error[0] and "--baud" in error[0], error[0]
    assert "Traceback" not in "\n".join(text)
    # told well before the end, and the end comes in bounded time (the default silence limit
    # of verify is 40 s; junk is given up on after 5 s, plus the child's start-up)
    assert notice[0] < ended - 3, (notice, ended)
    assert ended < 20, ended


def banner_then_relay(device_url: str, banner_seconds: float) -> tuple[socket.socket, str]:
    """A board that prints junk for ``banner_seconds`` (a boot console; what the host sends
    meanwhile is lost) and then speaks the protocol: a relay to the real host device."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(30)
    host, port = device_url.removeprefix("socket://").rsplit(":", 1)

    def serve():
        client, _ = server.accept()
        client.settimeout(0.05)
        until = time.monotonic() + banner_seconds
        while time.monotonic() < until:
            try:
                client.recv(4096)
            except TimeoutError:
                pass
            client.sendall(b"U-Boot 2026.01 booting, clocks 80 MHz ........................\r\n")
        client.settimeout(None)
        device = socket.create_connection((host, int(port)))

        def pipe(a, b):
            try:
                while data := a.recv(4096):
                    b.sendall(data)
            except OSError:
                pass
            for s_ in (a, b):
                try:
                    s_.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=pipe, args=(device, client), daemon=True).start()
        pipe(client, device)

    threading.Thread(target=serve, daemon=True).start()
    return server, f"socket://127.0.0.1:{server.getsockname()[1]}"


def test_a_boot_banner_before_the_protocol_is_named_but_the_run_passes(exported):
    export_dir, data = exported
    with hd.HostDevice(hd.build_host_device(export_dir)) as device:
        server, url = banner_then_relay(device.url, 2.0)
        try:
            done = hd.tinyconv("verify", export_dir, "--input", data, "--device", url,
                               "--timeout", 2, timeout=120)
        finally:
            server.close()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS" in done.stdout
    assert "not tinyconv frames" in done.stderr  # it was said while it happened
