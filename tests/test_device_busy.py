"""Two verifies on one device (issue 11, item 8): the port is taken exclusively, so the second
gets "device busy" in one line and exit 2 while the first goes on undisturbed. The host device
on a real pseudo-terminal, the second verify a real child process."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import export
from firmware_host.devices import start_device
from firmware_host.link import DeviceBusy, Link
from test_verify_host import small_cnn

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("busy")
    x = np.random.default_rng(5).random((20, 1, 12, 12)).astype(np.float32)
    np.savez(root / "data.npz", x=x)
    return export.from_onnx(small_cnn(1), x, name="busy").save(root / "exp"), root / "data.npz"


def verify_cli(export_dir, data, url) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinyconv.cli", "verify", str(export_dir),
                           "--input", str(data), "--device", url], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_a_second_verify_on_a_busy_device_exits_2_and_the_first_is_undisturbed(setup):
    export_dir, data = setup
    with start_device("host", export_dir) as device:
        with Link(device.url) as first:  # the first user, mid-run
            first.sync()
            info = first.info()
            busy = verify_cli(export_dir, data, device.url)
            assert busy.returncode == 2, busy.stdout + busy.stderr
            assert "device busy" in busy.stderr and "Traceback" not in busy.stderr
            assert len(busy.stderr.strip().splitlines()) == 1 and busy.stdout == ""
            with pytest.raises(DeviceBusy):
                Link(device.url, connect_timeout=1.0)
            x = np.zeros((3,) + tuple(info.input_shape), np.int8)
            assert all(o.ok and o.attempts == 1 for o in first.infer_many(x))
            assert first.stats.as_dict()["corrupt"] == 0
