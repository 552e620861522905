"""qemu-system-arm command lines for the Cortex-M boards tinyconv runs on (firmware_host/boards.py).

Facts that shaped them (QEMU 7.2): the UART is a TCP server socket (QEMU 7.2 accepts an
already listening socket as ``fd=N``, which devices.py uses) with ``nodelay=on``
(without it every reply waits ~40 ms for Nagle), ``wait=off`` so QEMU starts before the host
connects; ``-icount shift=3`` makes the guest run exactly one instruction per 8 ns of virtual
time, so the ports' SysTick tick counter counts instructions; semihosting lets a self-test
image print and end QEMU with an exit code. Semihosting output goes to QEMU's stderr.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from firmware_host.boards import BOARDS
from runtime.errors import TinyconvError

QEMU = "qemu-system-arm"
_COMMON = ("-nographic", "-monitor", "none", "-icount", "shift=3",
           "-semihosting-config", "enable=on,target=native")


def _machine(target: str) -> str:
    if target not in BOARDS:
        raise TinyconvError(f"no QEMU board for target {target!r}; use one of {', '.join(BOARDS)}")
    return BOARDS[target].name


def qemu_command(target: str, elf: str | os.PathLike, port: int | None = None, *,
                 fd: int | None = None) -> list[str]:
    """Run ``elf`` on ``target`` with UART0 on a TCP server: at 127.0.0.1:``port``, or on the
    listening socket ``fd`` that the caller created and passes to QEMU (``pass_fds``), which
    leaves no moment in which another process could take the port."""
    if (port is None) == (fd is None):
        raise ValueError("give qemu_command a port or a listening socket's fd, not both")
    where = f"host=127.0.0.1,port={int(port)}" if fd is None else f"fd={int(fd)}"
    return [QEMU, "-M", _machine(target), *_COMMON, "-kernel", str(elf),
            "-chardev", f"socket,id=u0,{where},server=on,wait=off,nodelay=on",
            "-serial", "chardev:u0"]


@dataclass(frozen=True)
class SemihostedRun:
    exit_code: int
    output: str  # what the guest wrote over semihosting (plus any QEMU warnings)


def run_semihosted(target: str, elf: str | os.PathLike, timeout: float = 60.0) -> SemihostedRun:
    """Run a self-contained image (no UART traffic) until it exits through semihosting."""
    if shutil.which(QEMU) is None:
        raise TinyconvError(f"{QEMU} is not installed (apt-get install qemu-system-arm)")
    command = [QEMU, "-M", _machine(target), *_COMMON, "-serial", "null", "-kernel", str(elf)]
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TinyconvError(f"{Path(elf).name} on {target} did not exit within {timeout:g} s")
    return SemihostedRun(done.returncode, (done.stderr + done.stdout).decode(errors="replace"))
