"""The host tool where it meets the world: a port that fails on the first write, a device that
prints a lot, QEMU's TCP port, device names (``qemu`` picks the board for the model), and the
helpers verify shares with report and the demo (SQNR, float-output layout, one BLAS thread)."""
from __future__ import annotations

import json
import math
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

import export
from firmware_host import devices
from firmware_host.link import Link, LinkError
from firmware_host.qemu import qemu_command
from runtime.errors import TinyconvError
from runtime.inputs import float_output_to_nhwc
from runtime.model import QuantModel, TensorSpec
from tinyconv.cli import main
from runtime.metrics import SqnrAccumulator, sqnr_db
from runtime.threads import one_blas_thread
from _tools import require_tool

import _host_device as hd


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    fixed = hd.export_small_cnn(root / "fixed")
    float_dir = export.from_onnx(hd.small_cnn(), hd.images(32, seed=99), requant="float",
                                 name="small_cnn_float").save(root / "float")
    data = hd.save_images(root / "images.npz", hd.images(20, seed=4))
    return {"fixed": fixed, "float": Path(float_dir)}, data


# -- the link ----------------------------------------------------------------------------------

def test_sync_on_a_port_that_fails_to_write_is_a_link_error():
    """A real pty whose other side is gone: the first write (sync's flushing 0x00) fails."""
    master, slave = os.openpty()
    link = Link(os.ttyname(slave), timeout=0.2)
    try:
        os.close(master)
        with pytest.raises(LinkError, match=r"writing to /dev/pts/\d+ failed"):
            link.sync()
    finally:
        link.close()
        os.close(slave)


# -- starting devices --------------------------------------------------------------------------

def test_a_device_that_prints_a_lot_after_its_first_line_is_not_blocked(tmp_path):
    """1 MiB after the port line: without anyone draining stdout, the device would block in
    write() once the 64 KiB pipe is full and never reach its next step (the marker file)."""
    marker = tmp_path / "printed-everything"
    script = tmp_path / "chatty-device"
    script.write_text(f"#!{sys.executable}\n"
                      "import sys, time\n"
                      "print('/dev/null-port', flush=True)\n"
                      "sys.stdout.write('x' * (1 << 20) + '\\n'); sys.stdout.flush()\n"
                      f"open({str(marker)!r}, 'w').close()\n"
                      "time.sleep(60)\n")
    script.chmod(0o755)
    with devices._host_device(script) as device:
        assert device.url == "/dev/null-port" and device.target == "host"
        assert hd.wait_until(marker.exists, 10), "the device blocked writing to stdout"


def test_qemu_command_takes_a_listening_socket_by_fd(tmp_path):
    cmd = " ".join(qemu_command("lm3s6965evb", tmp_path / "f.elf", fd=7))
    assert "-chardev socket,id=u0,fd=7,server=on,wait=off,nodelay=on" in cmd
    assert "port=" not in cmd and "-serial chardev:u0" in cmd
    with pytest.raises(ValueError):
        qemu_command("lm3s6965evb", tmp_path / "f.elf", 4321, fd=7)
    with pytest.raises(ValueError):
        qemu_command("lm3s6965evb", tmp_path / "f.elf")


def test_qemu_picks_the_board_for_the_model_and_other_names_pass_or_fail(exports):
    dirs, _ = exports
    assert devices.resolve_device("qemu", dirs["float"]) == "mps2-an386"  # has an FPU
    assert devices.resolve_device("qemu", dirs["fixed"]) == "lm3s6965evb"
    for name in ("host", "lm3s6965evb", "mps2-an386", "/dev/ttyACM0", "socket://h:1",
                 "rfc2217://h:2", "COM3"):
        assert devices.resolve_device(name, dirs["fixed"]) == name
    with pytest.raises(TinyconvError) as caught:
        devices.resolve_device("qemux", dirs["fixed"])
    assert str(caught.value) == (
        "unknown device 'qemux'; local devices: host, qemu, lm3s6965evb, mps2-an386, "
        "netduinoplus2, mps2-an500, microbit, mps3-an547 (or a serial port path / pyserial URL)")


def test_an_unknown_device_name_is_exit_2_with_the_list(exports, tmp_path, capsys):
    dirs, data = exports
    report = tmp_path / "r.json"
    code = main(["verify", str(dirs["fixed"]), "--input", str(data), "--device", "qemu-arm",
                 "--json", str(report)])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == (
        "tinyconv verify: error: unknown device 'qemu-arm'; local devices: host, qemu, "
        "lm3s6965evb, mps2-an386, netduinoplus2, mps2-an500, microbit, mps3-an547 "
        "(or a serial port path / pyserial URL)")
    assert not report.exists()


def test_verify_device_qemu_runs_the_fixed_model_on_the_cortex_m3(exports, tmp_path, capsys):
    """End to end through the fd-passed TCP socket; QEMU owns the port from its first moment."""
    require_tool("qemu-system-arm")
    require_tool("arm-none-eabi-gcc")
    dirs, data = exports
    report = tmp_path / "r.json"
    code = main(["verify", str(dirs["fixed"]), "--input", str(data), "--device", "qemu",
                 "--json", str(report)])
    out = capsys.readouterr().out
    assert code == 0, out
    saved = json.loads(report.read_text())
    assert saved["device"] == "qemu" and saved["target"] == "lm3s6965evb"
    assert saved["images"] == saved["device_equal_images"] == 20


def test_the_qemu_port_is_listening_before_qemu_is_asked_to_use_it(exports, monkeypatch):
    """The listening socket exists before the command line is made: no free-port-then-bind
    gap. Checked by connecting to it at the moment qemu_command is called."""
    dirs, _ = exports
    seen = {}
    real = devices._listening_socket

    def spy():
        server = real()
        seen["port"] = server.getsockname()[1]
        return server

    def fake_command(board, elf, port=None, *, fd=None):
        with socket.create_connection(("127.0.0.1", seen["port"]), timeout=1):
            seen["connected"] = fd is not None and port is None
        return [sys.executable, "-c", "import time; time.sleep(30)"]

    monkeypatch.setattr(devices, "_listening_socket", spy)
    monkeypatch.setattr("firmware_host.qemu.qemu_command", fake_command)
    monkeypatch.setattr("firmware_host.build.build_firmware", lambda d, t: Path("/bin/true"))
    with devices.start_device("lm3s6965evb", dirs["fixed"]) as device:
        assert seen["connected"] is True
        assert device.url == f"socket://127.0.0.1:{seen['port']}"


# -- helpers shared with report and the demo --------------------------------------------------

def test_streaming_sqnr_equals_the_whole_and_the_hand_computed_value():
    ref = np.array([3.0, 4.0])  # signal 25; noise 0.25: 20 dB
    acc = SqnrAccumulator().add(ref[:1], ref[:1]).add(ref[1:], ref[1:] + 0.5)
    assert acc.db == pytest.approx(20.0) == sqnr_db(ref, ref + np.array([0.0, 0.5]))
    assert SqnrAccumulator().add(ref, ref).db == math.inf
    assert SqnrAccumulator().add(np.zeros(2), np.ones(2)).db == -math.inf


def _model_with_output(shape):
    spec = TensorSpec("y", shape, 0.1, 0)
    return QuantModel("m", "fixed", {"y": spec}, [], "y", "y")


def test_float_outputs_come_to_runtimes_layout():
    y = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # NCHW, C=3 H=4 W=5
    nhwc = float_output_to_nhwc(_model_with_output((4, 5, 3)), y)
    assert nhwc.shape == (2, 4, 5, 3) and nhwc[1, 2, 3, 0] == y[1, 0, 2, 3]
    vec = np.arange(20, dtype=np.float32).reshape(2, 10)
    assert np.array_equal(float_output_to_nhwc(_model_with_output((10,)), vec), vec)
    with pytest.raises(TinyconvError, match=r"shape \(4, 5, 3\) per sample"):
        float_output_to_nhwc(_model_with_output((4, 5, 3)), y.transpose(0, 2, 3, 1))


def test_one_blas_thread_limits_every_pool_while_open():
    import threadpoolctl  # installed with scikit-learn, a dependency of the demo

    with one_blas_thread():
        pools = threadpoolctl.threadpool_info()
        assert pools and all(p["num_threads"] == 1 for p in pools)
