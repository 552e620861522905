"""Credit-based flow control (docs/PROTOCOL.md): a device states in INFO how many request bytes it
can buffer while it computes, and the host never has more than that in flight. Real firmware on
both QEMU boards with a ResNet-8-size input (32x32x3: a 3 KB INFER frame, larger than
lm3s6965evb's receive ring), and the native host device, whose buffer holds several requests.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import runtime
from _fake_device import FakeDevice
from _host_device import conv_pool_dense, export_small_cnn, images
from _tools import require_tool
from firmware_host import wire
from firmware_host.devices import start_device
from firmware_host.link import Link

SIDE = 32  # 32x32x3 int8: the MLPerf Tiny ResNet-8 input, 3,072 bytes


@pytest.fixture(scope="module")
def cifar_sized(tmp_path_factory) -> Path:
    import export

    model = conv_pool_dense("cifar_sized", (3, SIDE, SIDE), 8, 10, (0.3, 0.1, 0.3, 0.1), seed=5,
                            pool="GlobalAveragePool", strides=[2, 2])
    out = tmp_path_factory.mktemp("credit") / "cifar_sized"
    return export.from_onnx(model, images(16, 6, (3, SIDE, SIDE)), name="cifar_sized").save(out)


def _stream(export_dir: Path, device: str, count: int, window: int):
    """Stream ``count`` random int8 inputs with ``window`` requests asked in flight; returns the
    link's INFO, its counters and whether every output equals runtime/'s."""
    model = runtime.load(export_dir)
    x = np.random.default_rng(7).integers(-128, 128, (count,) + model.input_spec.shape,
                                          dtype=np.int8)
    expected = runtime.run(model, x)
    with start_device(device, export_dir) as dev:
        with Link(dev.url, timeout=20.0, window=window,
                  connect_timeout=dev.connect_timeout) as link:
            link.sync()
            info = link.info()
            outcomes = list(link.infer_many(x))
    got = np.stack([o.output for o in outcomes])
    np.testing.assert_array_equal(got.reshape(expected.shape), expected)
    return info, link.stats


# the board's TC_RX_RING_SIZE (its board.mk), and how many 3 KB requests it holds
@pytest.mark.parametrize("board, ring, requests", [("lm3s6965evb", 256, 1),
                                                   ("mps2-an386", 16384, 4)])
def test_large_input_streams_without_loss_on_qemu(cifar_sized, board, ring, requests):
    require_tool("qemu-system-arm")
    require_tool("arm-none-eabi-gcc")
    info, stats = _stream(cifar_sized, board, count=12, window=4)
    assert info.rx_capacity == ring
    assert stats.retries == 0 and stats.timeouts == 0 and stats.corrupt == 0
    frame = wire.max_frame_bytes(SIDE * SIDE * 3)
    assert -(-stats.max_bytes_in_flight // frame) == requests  # the window of 4, or the credit
    assert stats.max_bytes_in_flight <= max(ring, frame)


def test_host_device_keeps_several_requests_within_its_buffer(tmp_path):
    require_tool("gcc")
    export_dir = export_small_cnn(tmp_path / "small")
    info, stats = _stream(export_dir, "host", count=40, window=64)
    assert info.rx_capacity == 4096  # port_host.c's read buffer
    assert stats.retries == 0 and stats.timeouts == 0
    frame = wire.max_frame_bytes(info.input_size)
    # a 256-byte input: the credit, not the window, limits the requests in flight
    assert 1 < stats.max_bytes_in_flight // frame <= info.rx_capacity // frame
    assert stats.max_bytes_in_flight <= info.rx_capacity


def test_device_without_the_capacity_field_gets_one_request_at_a_time(tmp_path):
    model = runtime.load(export_small_cnn(tmp_path / "small"))
    device = FakeDevice(model, lambda payload, index, y: None)  # an INFO without the field
    x = np.random.default_rng(8).integers(-128, 128, (6,) + model.input_spec.shape,
                                          dtype=np.int8)
    with Link(device.url, window=4) as link:
        link.sync()
        assert link.info().rx_capacity == 0
        outcomes = list(link.infer_many(x))
    np.testing.assert_array_equal(np.stack([o.output for o in outcomes]).reshape(6, -1),
                                  runtime.run(model, x).reshape(6, -1))
    one = len(wire.encode_frame(wire.Frame(wire.Msg.INFER, 1, x[0].tobytes())))
    assert link.stats.max_bytes_in_flight <= one + 1  # one request (COBS may vary by a byte)
