"""Stopping verify from outside: no report that says PASS, no device left running (audit).

Found by interrupting real runs: Ctrl-C during `verify --devices 2 --json R` (exit 130) left a
report R with "exit_status": 0 and "aborted": null after 3,584 of 20,000 images (a single
device's run writes none); SIGTERM (timeout(1), a cancelled CI job) killed verify outright and
left its qemu-system-arm running, in its own session, with nobody to stop it. Both tests failed
before the fix. The real command in a child process, real devices, real signals."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import _host_device as hd
from _tools import require_tool


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return hd.export_small_cnn(tmp_path_factory.mktemp("audit_signals") / "exp")


def start_verify(export_dir, data, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tinyconv.cli", "verify", str(export_dir), "--input", str(data),
         "-q", *map(str, args)],
        cwd=hd.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen, children: int, executable: Path, sig: int):
    """Wait for ``children`` devices running ``executable``, let them work, send ``sig``;
    returns (exit status, stderr, the device pids)."""
    try:
        assert hd.wait_until(lambda: len(hd.child_processes(proc.pid, executable)) == children,
                             60), "verify started no device"
        pids = hd.child_processes(proc.pid, executable)
        time.sleep(1.5)  # well into the stream
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err, pids


def test_ctrl_c_in_a_shared_run_writes_no_passing_report(exported, tmp_path):
    exe = hd.build_host_device(exported)
    data = hd.save_images(tmp_path / "many.npz", hd.images(30_000, seed=3))
    report = tmp_path / "report.json"
    proc = start_verify(exported, data, "--device", "host", "--devices", 2, "--json", report)
    status, err, pids = stop(proc, 2, exe, signal.SIGINT)
    assert status == 130 and "interrupted" in err and "Traceback" not in err, err
    assert not report.exists(), report.read_text()[:300]
    assert hd.wait_until(lambda: not any(hd.alive(p) for p in pids), 5)


def test_sigterm_stops_the_qemu_board_it_started(exported, tmp_path):
    require_tool("arm-none-eabi-gcc")
    qemu = Path(os.path.realpath(require_tool("qemu-system-arm")))
    from firmware_host.build import build_firmware

    build_firmware(exported, "lm3s6965evb")
    data = hd.save_images(tmp_path / "many.npz", hd.images(3_000, seed=4))
    proc = start_verify(exported, data, "--device", "lm3s6965evb")
    status, err, (qemu_pid,) = stop(proc, 1, qemu, signal.SIGTERM)
    try:
        assert status == 128 + signal.SIGTERM, err
        assert "terminated" in err and "Traceback" not in err, err
        assert hd.wait_until(lambda: not hd.alive(qemu_pid), 5), "QEMU outlived verify"
    finally:
        if hd.alive(qemu_pid):
            os.kill(qemu_pid, signal.SIGKILL)


def test_ctrl_c_while_the_subcommands_load_is_one_line():
    """A Ctrl-C in the first second of a command, while numpy and onnx load, printed a
    KeyboardInterrupt traceback (failed before the fix). The child imports tinyconv.cli (the
    standard library only), arms a real SIGINT 20 ms ahead and builds the command line."""
    child = ("import os, signal, sys, threading\n"
             "from tinyconv.cli import main\n"
             "threading.Timer(0.02, os.kill, (os.getpid(), signal.SIGINT)).start()\n"
             "sys.exit(main(['export', '--help']))\n")
    done = subprocess.run([sys.executable, "-c", child], cwd=hd.ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 128 + signal.SIGINT, done.stderr
    assert done.stderr.strip() == "tinyconv: interrupted"
