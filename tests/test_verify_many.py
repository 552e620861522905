"""``verify`` across several devices (firmware_host/shard.py): real host devices (pseudo-terminal
and TCP builds of the firmware), real QEMU boards, a device killed with SIGKILL mid-run, and
Python devices that answer one chosen image wrongly, so "image for image the same result as a
single-device run" is checked on a record that can differ.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import runtime
from _fake_device import FakeDevice
from _host_device import HostDevice, build_host_device, export_small_cnn, images, wait_until
from firmware_host.link import LinkError
from firmware_host.shard import DevicesDisagree
from firmware_host.verify import verify
from runtime.errors import TinyconvError

COUNT = 400
VOLATILE = ("device", "target", "link", "seconds", "images_per_s", "devices", "notes",
            "ticks_total", "ticks_count", "ticks_per_inference", "ticks_per_mac", "retried")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("many")
    fixed = export_small_cnn(root / "fixed")
    import export
    from _host_device import small_cnn

    other = export.from_onnx(small_cnn(seed=7), images(32, seed=99),
                             name="small_other").save(root / "other")
    x = images(COUNT, seed=3)
    labels = np.random.default_rng(4).integers(0, 10, COUNT)
    data = root / "data.npz"
    np.savez(data, x=x, y=labels)
    return fixed, other, x, data


def _same(a, b) -> None:
    """Every figure that does not depend on which device did what or how fast."""
    da, db = a.as_dict(), b.as_dict()
    for key in VOLATILE:
        da.pop(key), db.pop(key)
    assert da == db


def test_two_host_devices_give_the_single_device_result(setup, tmp_path):
    fixed, _, _, data = setup
    one = verify(fixed, data, labels=True, device="host", progress=False)
    report = tmp_path / "r.json"
    two = verify(fixed, data, labels=True, devices=["host", "host"], progress=False,
                 json_path=report)
    assert one.exit_status == two.exit_status == 0
    assert two.images == two.device_equal_images == COUNT
    _same(one, two)
    saved = json.loads(report.read_text())
    shares = [d["images"] for d in saved["devices"]]
    assert [d["device"] for d in saved["devices"]] == ["host#1", "host#2"]
    assert sum(shares) == COUNT and min(shares) > 0  # both worked, nothing counted twice
    assert saved["link"]["frames_sent"] == sum(d["link"]["frames_sent"]
                                               for d in saved["devices"])


def content_liar(model, bad: bytes) -> FakeDevice:
    """A device wrong in one output value for the input whose bytes are ``bad`` (whichever
    position it has in this device's share)."""
    def corrupt(payload: bytes, index: int, y: np.ndarray) -> None:
        if payload == bad:
            y.flat[3] = np.int8(int(y.flat[3]) ^ 1)
    return FakeDevice(model, corrupt)


def test_a_wrong_image_is_reported_the_same_sharded_or_not(setup):
    fixed, _, x, _ = setup
    model = runtime.load(fixed)
    from runtime.inputs import quantize_input

    bad = quantize_input(model, x[37:38])[0].tobytes()
    single = verify(fixed, x[:120], device=content_liar(model, bad).url, progress=False)
    sharded = verify(fixed, x[:120], devices=[content_liar(model, bad).url,
                                              content_liar(model, bad).url], progress=False)
    assert single.exit_status == sharded.exit_status == 1
    assert [m["index"] for m in sharded.mismatches] == [37]
    assert sharded.mismatches[0].pop("answered_by") in sharded.device.split(", ")
    _same(single, sharded)


def _kill_after(device: HostDevice, read_bytes: int) -> threading.Thread:
    """SIGKILL the device's process once it has read ``read_bytes`` (its requests)."""
    pid = device.process.pid

    def read() -> int:
        try:
            text = Path(f"/proc/{pid}/io").read_text()
        except OSError:
            return 1 << 62
        return int(text.split("rchar:")[1].split()[0])

    def watch():
        if wait_until(lambda: read() >= read_bytes, 60):
            os.kill(pid, signal.SIGKILL)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_device_killed_mid_run_loses_no_image(setup, tmp_path):
    fixed, _, _, data = setup
    executable = build_host_device(fixed)
    with HostDevice(executable) as doomed, HostDevice(executable) as survivor:
        watcher = _kill_after(doomed, 60 * 256)  # about 60 requests of 256 bytes
        report = tmp_path / "r.json"
        result = verify(fixed, data, labels=True, devices=[doomed.url, survivor.url],
                        progress=False, json_path=report)
        watcher.join(1)
    assert doomed.process.returncode == -signal.SIGKILL
    assert result.exit_status == 0
    assert result.images == result.device_equal_images == COUNT
    dead, alive = json.loads(report.read_text())["devices"]
    assert dead["died"] and alive["died"] is None
    assert 0 < dead["images"] < COUNT and dead["images"] + alive["images"] == COUNT
    assert any(f"device {doomed.url} stopped after {dead['images']} images" in note
               for note in result.notes)
    _same(verify(fixed, data, labels=True, device="host", progress=False), result)


def test_every_device_dead_aborts_with_the_work_done_on_record(setup, tmp_path):
    fixed, _, _, data = setup
    executable = build_host_device(fixed)
    with HostDevice(executable) as a, HostDevice(executable) as b:
        watchers = [_kill_after(a, 40 * 256), _kill_after(b, 80 * 256)]
        with pytest.raises(LinkError, match="every device stopped answering") as caught:
            verify(fixed, data, devices=[a.url, b.url], progress=False,
                   json_path=tmp_path / "r.json")
        for w in watchers:
            w.join(1)
    result = caught.value.result
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["exit_status"] == 2 and saved["aborted"]
    assert result.device_equal_images == result.images > 0
    # every input is either verified (in input order from 0) or listed as unfinished
    assert [u["index"] for u in result.unfinished] == list(range(result.images, COUNT))


def test_devices_running_another_model_are_refused_in_one_line(setup, tmp_path):
    fixed, other, _, data = setup
    executable = build_host_device(other)
    with HostDevice(executable) as stranger:
        with pytest.raises(DevicesDisagree) as caught:
            verify(fixed, data, devices=["host", stranger.url], progress=False)
        message = str(caught.value)
        assert "\n" not in message and stranger.url in message
        assert runtime.load(fixed).hash in message and runtime.load(other).hash in message
        stranger.restart()  # the TCP device serves one connection
        cli = _cli(fixed, "--input", data, "--device", "host", "--device", stranger.url,
                   "--json", tmp_path / "r.json")
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert len(cli.stderr.strip().splitlines()) == 1 and runtime.load(other).hash in cli.stderr
    assert not (tmp_path / "r.json").exists()


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinyconv.cli", "verify", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_cli_devices_n_and_its_mistakes(setup):
    fixed, _, _, data = setup
    ok = _cli(fixed, "--input", data, "--labels", "--devices", 2)
    assert ok.returncode == 0, ok.stderr
    assert "host#1" in ok.stdout and "host#2" in ok.stdout and f"{COUNT}/{COUNT}" in ok.stdout
    for bad, why in (((["--devices", 0]), "at least 1"),
                     (["--device", "socket://127.0.0.1:9", "--devices", 2], "one device"),
                     (["--device", "labgrid:board", "--devices", 2], "one device"),
                     (["--device", "hots", "--devices", 2], "unknown device"),
                     (["--device", "host", "--device", "qemu", "--devices", 2], "at most one"),
                     (["--device", "host", "--device", "hots"], "unknown device")):
        run = _cli(fixed, "--input", data, *bad)
        assert run.returncode == 2 and why in run.stderr and "Traceback" not in run.stderr


def test_two_qemu_boards_give_the_single_board_result(setup, arm_tools):
    fixed, _, x, _ = setup
    one = verify(fixed, x[:160], device="lm3s6965evb", progress=False)
    two = verify(fixed, x[:160], devices=["lm3s6965evb"] * 2, progress=False)
    assert one.exit_status == two.exit_status == 0 and two.images == 160
    _same(one, two)
    assert all(d["images"] > 0 for d in two.devices)
    # every image's ticks are on record, per board; not compared with the single run's: they
    # include the UART interrupts that land during an inference, which vary with host timing
    assert two.ticks_count == 160 == sum(
        d["images"] for d in two.devices if d["ticks_per_inference"] is not None)
    assert {d["ticks_unit"] for d in two.devices} == {"instructions"}


def test_an_unknown_device_fails_before_anything_starts(setup):
    fixed, _, x, _ = setup
    with pytest.raises(TinyconvError, match="unknown device 'nope'"):
        verify(fixed, x[:4], devices=["host", "nope"], progress=False)
