"""Two verifies on one device (issue 11, item 8): the port is taken exclusively, so the second
gets "device busy" in one line and exit 2 while the first goes on undisturbed. The host device
on a real pseudo-terminal, the second verify a real child process."""
from __future__ import annotations

import numpy as np
import pytest

import _host_device as hd
import export
from firmware_host.devices import start_device
from firmware_host.link import DeviceBusy, Link
from test_verify_host import small_cnn


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("busy")
    x = hd.images(20, 5, (1, 12, 12))
    return (export.from_onnx(small_cnn(1), x, name="busy").save(root / "exp"),
            hd.save_images(root / "data.npz", x))


def test_a_second_verify_on_a_busy_device_exits_2_and_the_first_is_undisturbed(setup):
    export_dir, data = setup
    with start_device("host", export_dir) as device:
        with Link(device.url) as first:  # the first user, mid-run
            first.sync()
            info = first.info()
            busy = hd.tinyconv("verify", export_dir, "--input", data, "--device", device.url,
                               timeout=120)
            assert busy.returncode == 2, busy.stdout + busy.stderr
            assert "device busy" in busy.stderr and "Traceback" not in busy.stderr
            assert len(busy.stderr.strip().splitlines()) == 1 and busy.stdout == ""
            with pytest.raises(DeviceBusy):
                Link(device.url, connect_timeout=1.0)
            x = np.zeros((3,) + tuple(info.input_shape), np.int8)
            assert all(o.ok and o.attempts == 1 for o in first.infer_many(x))
            assert first.stats.as_dict()["corrupt"] == 0
