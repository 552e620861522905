"""Start a local device for the duration of a ``with`` block and always stop it.

    with start_device("host", "build/digits") as device:
        link = Link(device.url, connect_timeout=device.connect_timeout)

``host`` runs the POSIX build of the firmware, which prints its pseudo-terminal path on its
first stdout line. The boards of firmware_host/boards.py (``lm3s6965evb``, ``mps2-an386``,
...) run the ARM build under qemu-system-arm with the UART on a TCP port of 127.0.0.1; ``qemu``
picks the board that suits the model (the Cortex-M4F mps2-an386 for float requantization, the
Cortex-M3 lm3s6965evb for fixed). Whatever
happens in the block (an error, Ctrl-C), the process is stopped on the way out. A path or
pyserial URL is taken as a device someone else runs; ``labgrid:PLACE`` is a board of a labgrid
farm, acquired and released around the block (firmware_host/farm.py); any other name is a
mistake.
"""
from __future__ import annotations

import os
import re
import select
import shutil
import socket
import signal
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from firmware_host.boards import TARGETS
from runtime.errors import TinyconvError

LOCAL_TARGETS = TARGETS
LOCAL_DEVICES = ("host", "qemu", *TARGETS[1:])  # what --device may name
QEMU_BOARD_FOR_MODE = {"float": "mps2-an386", "fixed": "lm3s6965evb"}
STARTUP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Device:
    url: str  # what pyserial opens
    target: str | None  # None: a device we did not start
    connect_timeout: float = 0.0  # how long the link should keep trying to open url


def _listening_socket() -> socket.socket:
    """A TCP server socket on 127.0.0.1 already listening on a port the OS picked. QEMU gets
    the socket itself, so no other process can take the port between choosing and using it."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
    except OSError:
        server.close()
        raise
    return server


def resolve_device(device: str, export_dir: str | os.PathLike | None) -> str:
    """The local target ``device`` names (``qemu`` becomes the board for the model's
    requantization mode), or ``device`` itself when it is a path or pyserial URL."""
    if device == "qemu":
        if export_dir is None:
            raise TinyconvError("--device qemu needs an export directory to build from")
        import runtime

        return QEMU_BOARD_FOR_MODE[runtime.load(export_dir).requant_mode]
    if device in LOCAL_TARGETS or "/" in device or "://" in device or \
            device.startswith("labgrid:") or \
            re.fullmatch(r"COM\d+", device) or os.path.exists(device):
        return device
    raise TinyconvError(f"unknown device {device!r}; local devices: {', '.join(LOCAL_DEVICES)} "
                        "(or a serial port path / pyserial URL)")


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
    first, rest = line.split(b"\n", 1)
    if rest:
        os.write(log.fileno(), rest)
    return first.decode().strip()


def _drain(stream, log) -> None:
    """Copy the rest of the device's stdout into ``log`` until it closes. Nobody reads it after
    the first line, and a device that printed more than a pipe holds (64 KiB) would block in
    write() and look silent to the link."""
    fd = stream.fileno()
    try:
        while chunk := os.read(fd, 65536):
            os.write(log.fileno(), chunk)
    except OSError:
        pass


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
            if process.stdout is not None:
                process.stdout.close()


@contextmanager
def _host_device(executable: Path) -> Iterator[Device]:
    """The POSIX device: its first stdout line is the pty path; the rest goes to the log."""
    what = f"host device {executable}"
    with _running([str(executable)], what, stdout=subprocess.PIPE) as (process, log):
        url = _first_line(process, log, what)
        drain = threading.Thread(target=_drain, args=(process.stdout, log), daemon=True,
                                 name="tinyconv-device-stdout")
        drain.start()
        try:
            yield Device(url, "host")
        finally:
            _stop(process)
            drain.join(timeout=2)


_next_cpu = iter(range(os.getpid(), 1 << 62))  # next() is atomic under the GIL; the pid
# spreads the devices of several verifying processes over the CPUs


def _on_one_cpu(command: list[str]) -> list[str]:
    """``command`` under ``taskset``, bound to one CPU (the next in turn of those this process
    may use). QEMU hands every UART byte between its I/O thread and its vCPU thread; on two
    CPUs each hand-off wakes the other one, and a lone mps2-an386 ran 16-19 images/s instead of
    43-47 bound to one (lm3s6965evb: unchanged). Devices of a sharded run take CPUs in turn."""
    taskset = shutil.which("taskset")
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if taskset is None or len(cpus) < 2:
        return command
    return [taskset, "-c", str(cpus[next(_next_cpu) % len(cpus)]), *command]


@contextmanager
def _qemu_device(board: str, executable: Path) -> Iterator[Device]:
    from firmware_host.qemu import qemu_command

    what = f"qemu-system-arm ({board})"
    try:
        server = _listening_socket()
    except OSError as exc:
        raise TinyconvError(f"cannot open a TCP port for {what}: {exc}") from None
    with server:
        port = server.getsockname()[1]
        command = _on_one_cpu(qemu_command(board, executable, fd=server.fileno()))
        with _running(command, what, stdout=subprocess.DEVNULL,
                      pass_fds=(server.fileno(),)) as (process, log):
            server.close()  # QEMU holds its own copy now
            time.sleep(0.05)
            if process.poll() is not None:
                raise TinyconvError(f"{what} exited at start: {_stderr_tail(log)}")
            yield Device(f"socket://127.0.0.1:{port}", board, connect_timeout=STARTUP_TIMEOUT)


@contextmanager
def start_device(device: str, export_dir: str | os.PathLike | None = None) -> Iterator[Device]:
    """``device``: ``host``, ``qemu``, a board of firmware_host/boards.py (built from
    ``export_dir`` when missing or stale, started, stopped afterwards) or a pyserial URL / path
    (used as is). Any other name raises TinyconvError naming the local devices."""
    target = resolve_device(device, export_dir)
    if target.startswith("labgrid:"):  # a board of a farm (firmware_host/farm.py)
        from firmware_host.farm import acquired_place

        with acquired_place(target) as url:
            yield Device(url, None, connect_timeout=STARTUP_TIMEOUT)
        return
    if target not in LOCAL_TARGETS:
        yield Device(target, None)
        return
    if export_dir is None:
        raise TinyconvError(f"--device {device} needs an export directory to build from")
    from firmware_host.build import build_firmware

    executable = Path(build_firmware(export_dir, target))
    runner = _host_device(executable) if target == "host" else _qemu_device(target, executable)
    with runner as started:
        yield started
