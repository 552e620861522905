"""End to end: a small CNN exported with export/, the host device built from it, and
``tinyconv verify`` streaming images over a real pseudo-terminal (and over TCP to the ARM
builds under qemu-system-arm, started and stopped by verify itself).

The verdict of verify() is cross-checked here by talking to the device directly and comparing
with runtime.run; exit status 1 is provoked by a Python device that answers one image wrongly.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import export
import runtime
from _fake_device import FakeDevice
from _host_device import tinyconv
from firmware_host.devices import start_device
from firmware_host.link import Link
from firmware_host.verify import verify
from runtime import kernels
from runtime.errors import TinyconvError
from _tools import require_tool

IMAGES = 300


def small_cnn(seed: int) -> onnx.ModelProto:
    """conv3x3+relu, maxpool, conv3x3+relu, global average pool, dense: 12x12x1 -> 10."""
    rng = np.random.default_rng(seed)

    def init(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32),
                                       name)
    inits = [init("w1", 6, 1, 3, 3), init("b1", 6, scale=0.1), init("w2", 8, 6, 3, 3, scale=0.15),
             init("b2", 8, scale=0.1), init("wf", 10, 8), init("bf", 10, scale=0.1)]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Export directories (fixed, float, and fixed from other weights) plus a dataset."""
    root = tmp_path_factory.mktemp("verify")
    rng = np.random.default_rng(5)
    x = rng.random((IMAGES, 1, 12, 12)).astype(np.float32)
    y = rng.integers(0, 10, IMAGES)
    data = root / "data.npz"
    np.savez(data, x=x, y=y)
    dirs = {}
    for key, seed, mode in (("fixed", 1, "fixed"), ("float", 1, "float"), ("other", 2, "fixed")):
        result = export.from_onnx(small_cnn(seed), x[:64], requant=mode, name=f"small_{key}")
        dirs[key] = result.save(root / key)
    return dirs, data, x, y


@pytest.mark.parametrize("mode", ["fixed", "float"])
def test_verify_over_pty_every_image_equal(exported, mode, tmp_path):
    dirs, data, x, y = exported
    report = tmp_path / "report.json"
    result = verify(dirs[mode], data, labels=True, device="host", json_path=report,
                    progress=False)
    assert result.exit_status == 0
    assert result.images == IMAGES == result.device_equal_images
    assert result.device_equal_elements == result.elements == IMAGES * 10
    assert result.failed_images == 0 and result.target == "host"
    assert result.ort_images == IMAGES
    if mode == "float":
        assert result.ort_equal_images == IMAGES and result.ort_max_lsb == 0
    else:
        assert result.ort_max_lsb <= 1
    assert result.labelled_images == IMAGES and result.correct_runtime == result.correct_device
    assert result.sqnr_db > 20 and result.cosine > 0.99
    assert result.ticks_count == IMAGES and result.images_per_s > 0
    saved = json.loads(report.read_text())
    assert saved["exit_status"] == 0 and saved["images"] == IMAGES and saved["mismatches"] == []
    assert saved["link"]["frames_sent"] >= IMAGES


@pytest.mark.parametrize("board, mode", [("lm3s6965evb", "fixed"), ("mps2-an386", "float")])
def test_verify_under_qemu_every_image_equal(exported, board, mode):
    require_tool("qemu-system-arm")
    require_tool("arm-none-eabi-gcc")
    dirs, data, _, _ = exported
    result = verify(dirs[mode], data, labels=True, device=board, progress=False)
    assert result.exit_status == 0 and result.target == board
    assert result.images == IMAGES == result.device_equal_images
    if mode == "float":
        assert result.ort_equal_images == IMAGES
    assert result.ticks_unit == "instructions" and result.ticks_per_mac > 0


def test_device_outputs_equal_runtime_independently_of_verify(exported):
    """The same comparison verify() makes, done by hand for int8 inputs."""
    dirs, _, x, _ = exported
    model = runtime.load(dirs["fixed"])
    spec = model.input_spec
    x_q = kernels.quantize(x[:40].transpose(0, 2, 3, 1), spec.scale, spec.zero_point)
    with start_device("host", dirs["fixed"]) as device, Link(device.url) as link:
        info = link.info()
        assert info.model_hash == model.hash and info.target == "host"
        assert info.input_shape == (12, 12, 1) and info.output_shape == (10,)
        assert info.input_zero_point == spec.zero_point
        assert np.float32(info.input_scale) == np.float32(spec.scale)
        got = np.stack([o.output for o in link.infer_many(x_q)])
    assert np.array_equal(got, runtime.run(model, x_q))
    # int8 NHWC inputs given to verify() directly take the same path.
    assert verify(dirs["fixed"], x_q, device="host", progress=False).exit_status == 0


def test_device_is_stopped_after_use_and_on_errors(exported):
    dirs = exported[0]
    with start_device("host", dirs["fixed"]) as device:
        assert Path(device.url).exists()
    assert not Path(device.url).exists()  # the pty vanished with its process
    for interruption in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(interruption)):
            with start_device("host", dirs["fixed"]) as device:
                raise interruption
        assert not Path(device.url).exists()


def _cli(*args) -> subprocess.CompletedProcess:
    return tinyconv("verify", *args, timeout=120)


def test_cli_exit_codes_and_wrong_model_hash(exported, tmp_path):
    dirs, data, _, _ = exported
    ok = _cli(dirs["fixed"], "--input", data, "--labels", "--limit", 50, "--json",
              tmp_path / "r.json")
    assert ok.returncode == 0, ok.stderr
    assert "PASS" in ok.stdout and "50/50 images" in ok.stdout
    assert json.loads((tmp_path / "r.json").read_text())["images"] == 50

    missing = _cli(dirs["fixed"], "--input", tmp_path / "nope.npz")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "nope.npz" in missing.stderr

    with start_device("host", dirs["other"]) as device:
        wrong = _cli(dirs["fixed"], "--input", data, "--device", device.url,
                     "--json", tmp_path / "wrong.json")
    other, fixed = runtime.load(dirs["other"]).hash, runtime.load(dirs["fixed"]).hash
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert other in wrong.stderr and fixed in wrong.stderr
    assert not (tmp_path / "wrong.json").exists()

    unreachable = _cli(dirs["fixed"], "--input", data, "--device", tmp_path / "no-such-tty")
    assert unreachable.returncode == 2 and "cannot open device" in unreachable.stderr


def lying_device(model, bad: int) -> FakeDevice:
    """A device that adds 1 to one output of image ``bad``."""
    def corrupt(payload: bytes, index: int, y: np.ndarray) -> None:
        if index == bad:
            y.flat[3] = np.int8(int(y.flat[3]) + 1 if y.flat[3] < 127 else 0)
    return FakeDevice(model, corrupt)


def test_a_wrong_device_output_fails_the_run_with_a_record(exported, tmp_path):
    dirs, data, _, y = exported
    device = lying_device(runtime.load(dirs["fixed"]), bad=17)
    report = tmp_path / "r.json"
    result = verify(dirs["fixed"], data, labels=True, device=device.url, json_path=report,
                    progress=False, limit=60)
    assert result.exit_status == 1
    assert result.images == 60 and result.device_equal_images == 59
    assert result.device_equal_elements == 599
    (record,) = json.loads(report.read_text())["mismatches"]
    assert record["index"] == 17 and record["label"] == int(y[17])
    assert record["problems"] == ["device != runtime"]
    diff = np.array(record["device"]) - np.array(record["runtime"])
    assert np.count_nonzero(diff) == 1 and diff[3] != 0


def test_inputs_of_the_wrong_shape_are_a_clear_error(exported):
    dirs = exported[0]
    with pytest.raises(TinyconvError, match="shape"):
        verify(dirs["fixed"], np.zeros((3, 1, 10, 10), np.float32), device="host",
               progress=False)


def test_sqnr_and_cosine_over_batches_equal_the_whole_computed_by_hand(exported):
    """verify accumulates SQNR batch by batch (BATCH is 256, so 300 images are two batches);
    the same figures straight from onnxruntime on model.onnx and runtime/ on all images."""
    import onnxruntime as ort

    dirs, _, x, _ = exported
    model = runtime.load(dirs["float"])
    result = verify(dirs["float"], x, device="host", progress=False)
    session = ort.InferenceSession(str(dirs["float"] / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: x})[0].astype(np.float64)
    spec, out = model.input_spec, model.output_spec
    x_q = kernels.quantize(x.transpose(0, 2, 3, 1), spec.scale, spec.zero_point)
    got = kernels.dequantize(runtime.run(model, x_q), out.scale, out.zero_point).astype(np.float64)
    sqnr = 10 * np.log10(np.sum(want ** 2) / np.sum((want - got) ** 2))
    cosine = np.mean(np.sum(want * got, axis=1) /
                     (np.linalg.norm(want, axis=1) * np.linalg.norm(got, axis=1)))
    assert result.float_images == IMAGES
    assert result.sqnr_db == pytest.approx(sqnr, rel=1e-9)
    assert result.cosine == pytest.approx(cosine, rel=1e-9)
