"""Start a local device for the duration of a ``with`` block and always stop it.

    with start_device("host", "build/digits") as device:
        link = Link(device.url, connect_timeout=device.connect_timeout)

``host`` runs the POSIX build of the firmware, which prints its pseudo-terminal path on its
first stdout line. ``lm3s6965evb`` and ``mps2-an386`` run the ARM build under qemu-system-arm
with the UART on a TCP port of 127.0.0.1. Whatever happens in the block (an error, Ctrl-C),
the process is stopped on the way out. Anything else given as ``device`` is taken as a pyserial
URL or path of a device someone else runs.
"""
from __future__ import annotations

import os
import select
import socket
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from runtime.errors import TinyconvError

LOCAL_TARGETS = ("host", "lm3s6965evb", "mps2-an386")
STARTUP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Device:
    url: str  # what pyserial opens
    target: str | None  # None: a device we did not start
    connect_timeout: float = 0.0  # how long the link should keep trying to open url


def free_tcp_port() -> int:
    """A port nobody listens on right now (the OS picks it; a small race is possible)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    """Terminate, then kill. SIGCONT lets a stopped (SIGSTOPped, hung) device act on SIGTERM."""
    if process.poll() is None:
        process.terminate()
        process.send_signal(signal.SIGCONT)
        try:
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _stderr_tail(log) -> str:
    log.seek(0)
    text = log.read().decode(errors="replace").strip().splitlines()
    return text[-1] if text else "no message"


def _first_line(process: subprocess.Popen, log, what: str) -> str:
    """The device's first stdout line, waiting at most STARTUP_TIMEOUT."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    line = b""
    fd = process.stdout.fileno()
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TinyconvError(f"{what} printed no port within {STARTUP_TIMEOUT:g} s")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 256)
            if not chunk:
                raise TinyconvError(f"{what} exited at start: {_stderr_tail(log)}")
            line += chunk
    return line.decode().strip()


@contextmanager
def _running(command: list[str], what: str, **popen) -> Iterator[tuple[subprocess.Popen, object]]:
    with tempfile.TemporaryFile() as log:
        try:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=log,
                                       start_new_session=True, **popen)
        except OSError as exc:
            raise TinyconvError(f"cannot start {what}: {exc}") from None
        try:
            yield process, log
        finally:
            _stop(process)


@contextmanager
def start_device(device: str, export_dir: str | os.PathLike | None = None) -> Iterator[Device]:
    """``device``: ``host``, ``lm3s6965evb``, ``mps2-an386`` (built from ``export_dir`` when
    missing or stale, started, stopped afterwards) or any pyserial URL / path (used as is)."""
    if device not in LOCAL_TARGETS:
        yield Device(device, None)
        return
    if export_dir is None:
        raise TinyconvError(f"--device {device} needs an export directory to build from")
    from firmware_host.build import build_firmware

    executable = Path(build_firmware(export_dir, device))
    if device == "host":
        what = f"host device {executable}"
        with _running([str(executable)], what, stdout=subprocess.PIPE) as (process, log):
            yield Device(_first_line(process, log, what), "host")
        return

    from firmware_host.qemu import qemu_command

    port = free_tcp_port()
    what = f"qemu-system-arm ({device})"
    with _running(qemu_command(device, executable, port), what,
                  stdout=subprocess.DEVNULL) as (process, log):
        time.sleep(0.05)
        if process.poll() is not None:
            raise TinyconvError(f"{what} exited at start: {_stderr_tail(log)}")
        yield Device(f"socket://127.0.0.1:{port}", device, connect_timeout=STARTUP_TIMEOUT)
