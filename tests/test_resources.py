"""Resources: the host tool keeps a bounded number of frames in flight and a bounded number of
inputs in memory, and stops the device it started, also when the user presses Ctrl-C.

Peak memory for 10k vs 100k images is measured by benchmarks/bench_memory.py, not here.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from firmware_host.faults import FaultPlan, FaultRelay
from firmware_host.link import Link
from firmware_host.verify import verify

import _host_device as hd


@pytest.fixture(scope="module")
def device_build(tmp_path_factory):
    return hd.built_small_cnn(tmp_path_factory.mktemp("resources"))


@pytest.mark.parametrize("window", [1, 3, 8])
def test_frames_in_flight_never_exceed_the_window(device_build, window):
    export_dir, exe = device_build
    images = 40
    # Short stalls (far below the 2 s timeout) hold frames back so the host fills its window.
    plan = FaultPlan(seed=window, stall_rate=0.002, stall_seconds=0.1)
    with hd.HostDevice(exe) as device, FaultRelay(device.url, plan) as relay:
        result = verify(export_dir, hd.images(images), device=relay.url, window=window,
                        progress=False)
        assert hd.wait_until(lambda: relay.counts.frames_down == images + 2, 5)
        counts = relay.counts
    assert result.exit_status == 0 and result.link["retries"] == 0 and counts.stalls > 0
    # Seen on the wire, between host and device: RESET, INFO, then one INFER per image.
    assert counts.frames_up == images + 2 and counts.frames_down == images + 2
    assert counts.max_in_flight == window  # reached, never exceeded


def test_inputs_are_pulled_only_as_the_window_allows(device_build):
    _, exe = device_build
    window, count = 4, 300
    pulled = 0
    ahead = []

    def inputs():
        nonlocal pulled
        rng = np.random.default_rng(0)
        for _ in range(count):
            pulled += 1
            yield rng.integers(-128, 128, (hd.SIDE, hd.SIDE, 1), dtype=np.int8)

    with hd.HostDevice(exe) as device, Link(device.url, window=window) as link:
        link.sync()
        seen = []
        for outcome in link.infer_many(inputs()):
            ahead.append(pulled - len(seen))
            seen.append(outcome.index)
    assert seen == list(range(count))  # each input once, in order
    assert max(ahead) <= window + 1 and pulled == count


def test_ctrl_c_stops_the_device_and_writes_no_report(device_build, tmp_path):
    export_dir, exe = device_build
    data = hd.save_images(tmp_path / "many.npz", hd.images(200_000 // 4, seed=3))  # ~20 s of work
    report = tmp_path / "report.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinyconv.cli", "verify", str(export_dir), "--input", str(data),
         "--device", "host", "--json", str(report)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert hd.wait_until(lambda: hd.child_processes(proc.pid, exe), 60), "verify started no device"
        (device_pid,) = hd.child_processes(proc.pid, exe)
        time.sleep(1.5)  # well into the stream
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert hd.wait_until(lambda: not hd.alive(device_pid), 5), "the device outlived verify"
    assert not report.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["many.npz"]
