"""Each local QEMU device runs bound to one CPU, and a second device takes another.

QEMU hands every UART byte between its I/O thread and its vCPU thread; spread over two CPUs
each hand-off wakes the other one (a lone mps2-an386 verified 16-19 images/s, 43-47 bound to
one CPU). Read from the kernel: every thread's allowed CPUs in /proc.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from _host_device import child_processes, export_small_cnn
from _tools import require_tool

from firmware_host.devices import start_device


def _allowed_cpus(pid: int) -> set[str]:
    """The Cpus_allowed_list of every thread of ``pid``."""
    lists = set()
    for task in (Path("/proc") / str(pid) / "task").iterdir():
        status = (task / "status").read_text()
        lists.add(next(line.split(":", 1)[1].strip() for line in status.splitlines()
                       if line.startswith("Cpus_allowed_list")))
    return lists


def test_qemu_devices_are_bound_to_one_cpu_each(tmp_path):
    require_tool("qemu-system-arm")
    require_tool("arm-none-eabi-gcc")
    if len(os.sched_getaffinity(0)) < 2 or shutil.which("taskset") is None:
        pytest.skip("one CPU (or no taskset): nothing to bind")
    qemu = Path(os.path.realpath(shutil.which("qemu-system-arm")))
    out = export_small_cnn(tmp_path / "m")
    with start_device("lm3s6965evb", out), start_device("lm3s6965evb", out):
        pids = child_processes(os.getpid(), qemu)
        assert len(pids) == 2
        cpus = [_allowed_cpus(pid) for pid in pids]
    for each in cpus:
        assert len(each) == 1 and next(iter(each)).isdigit()  # all threads: one CPU
    assert cpus[0] != cpus[1]
