"""The four MLPerf Tiny v1.0 reference models (tests/mlperf_tiny.py) through export -> run ->
build -> verify on QEMU, as Keras models converted by tf2onnx and as PyTorch exports.

What each source really writes is part of the premise (checked first): tf2onnx writes DS-CNN's
one-channel NHWC -> NCHW change as a Reshape to [-1, 1, 49, 10] (and keeps that Reshape, now
doing nothing, with ``inputs_as_nchw``), and every Keras Dense +
BatchNormalization of the autoencoder as MatMul, Add, Mul, Add on a rank-2 [N, 640] input; the
TorchScript exporter leaves the autoencoder's BatchNormalization on [N, 128] in the graph.

Oracles: the framework itself for model.onnx, onnxruntime on model.q.onnx for the int8 model
(float mode: every tensor ``==``), runtime/ layer by layer for fixed mode (within 1 LSB), and
runtime/ for the device under QEMU (every output ``==``). The classifiers keep their published
heads: Dense + Softmax.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from _export_checks import (assert_fixed_within_one_lsb_of_float,
                            assert_float_mode_equals_onnxruntime, assert_int8_tracks, ort_float)

import export
import mlperf_tiny as mt

if os.environ.get("CI") == "true":
    import tensorflow  # noqa: F401  (under CI a missing framework is a failure, never a skip)
    import tf2onnx  # noqa: F401
    import torch  # noqa: F401
else:
    pytest.importorskip("tensorflow", reason="pip install -e '.[keras]'")
    pytest.importorskip("tf2onnx", reason="pip install -e '.[keras]'")
    pytest.importorskip("torch", reason="pip install -e '.[torch]'")

SOFTMAX = True  # the published heads
N_CALIB, N_TEST = 8, 6
MODELS = ("resnet8", "dscnn", "mobilenet", "autoencoder")
# every model from Keras and from the TorchScript exporter; the dynamo exporter (10 s a model)
# for DS-CNN (its flatten is a Reshape) and the autoencoder (it folds the batch norms itself)
CASES = [(m, s) for m in MODELS for s in ("keras", "torchscript")] + \
    [("dscnn", "dynamo"), ("autoencoder", "dynamo"), ("dscnn", "keras_nchw")]
# ops each source must have written: the premise of what the export is tested on
PREMISE = {("dscnn", "keras"): {"Reshape", "Conv", "Mul", "Add", "MatMul"},
           ("dscnn", "keras_nchw"): {"Reshape", "Conv", "Mul", "Add", "MatMul"},
           ("autoencoder", "keras"): {"MatMul", "Add", "Mul", "Relu"},
           ("autoencoder", "torchscript"): {"Gemm", "BatchNormalization", "Relu"}}
# (model, source, requant mode, board): the device runs, on lm3s6965evb (256 KB flash, 64 KB
# RAM) where the model fits; the autoencoder's 270 KB of weights do not
DEVICE_RUNS = [("resnet8", "keras", "fixed", "lm3s6965evb"),
               ("resnet8", "torchscript", "float", "mps2-an386"),
               ("dscnn", "keras", "fixed", "lm3s6965evb"),
               ("dscnn", "keras", "float", "mps2-an386"),
               ("mobilenet", "keras", "fixed", "netduinoplus2"),  # 128 KB of RAM
               ("mobilenet", "torchscript", "float", "mps2-an386"),
               ("autoencoder", "keras", "fixed", "mps2-an386"),
               ("autoencoder", "torchscript", "float", "mps2-an386")]
DEVICE_IMAGES = {"mobilenet": 1}  # 27 KB per image over the emulated UART


def _layout(source: str) -> str:
    """The input layout of the ONNX file: NHWC as Keras (``keras``) or NCHW (``torch``)."""
    return "keras" if source == "keras" else "torch"


@dataclass
class Exported:
    name: str
    source: str
    framework: object  # the Keras model or torch module
    onnx_path: Path  # as the converter wrote it
    results: dict  # requant mode -> export.ExportResult

    def inputs(self, count: int, seed: int) -> np.ndarray:
        return mt.inputs(self.name, count, seed, _layout(self.source))

    def nhwc(self, count: int, seed: int) -> np.ndarray:
        return mt.inputs(self.name, count, seed, "keras")

    def reference(self, x: np.ndarray) -> np.ndarray:
        if self.source == "keras":
            return mt.keras_float(self.framework, x)
        if self.source == "keras_nchw":
            return mt.keras_float(self.framework, np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
        return mt.torch_float(self.framework, x)


def _build(name: str, source: str):
    if source.startswith("keras"):
        builder = getattr(mt, f"keras_{name}")
    else:
        builder = getattr(mt, f"torch_{name}")
    return builder() if name == "autoencoder" else builder(softmax=SOFTMAX)


_CACHE: dict = {}


@pytest.fixture(scope="module", params=CASES, ids=[f"{m}-{s}" for m, s in CASES])
def exported(request, tmp_path_factory) -> Exported:
    return _exported(*request.param, tmp_path_factory)


def _exported(name: str, source: str, tmp_path_factory) -> Exported:
    """Each model and source converted and exported once for the module (both modes)."""
    if (name, source) not in _CACHE:
        framework = _build(name, source)
        path = tmp_path_factory.mktemp(f"{name}_{source}") / "source.onnx"
        if source.startswith("keras"):
            mt.to_onnx(framework, path, nchw=source == "keras_nchw")
        else:
            mt.torch_to_onnx(framework, path, dynamo=source == "dynamo")
        calibration = mt.inputs(name, N_CALIB, seed=1, layout=_layout(source))
        results = {mode: export.from_onnx(path, calibration, requant=mode)
                   for mode in ("float", "fixed")}
        _CACHE[name, source] = Exported(name, source, framework, path, results)
    return _CACHE[name, source]


def test_the_converter_wrote_what_this_test_is_about(exported):
    source = onnx.load(str(exported.onnx_path), load_external_data=False)
    ops = {node.op_type for node in source.graph.node}
    assert PREMISE.get((exported.name, exported.source), set()) <= ops
    rank = len(source.graph.input[0].type.tensor_type.shape.dim)
    assert rank == (2 if exported.name == "autoencoder" else 4)
    if exported.name == "dscnn" and exported.source.startswith("keras"):
        reshape = source.graph.node[0]  # NHWC [N, 49, 10, 1] or, inputs_as_nchw, [N, 1, 49, 10]
        target = next(t for t in source.graph.initializer if t.name == reshape.input[1])
        assert reshape.op_type == "Reshape" and reshape.input[0] == source.graph.input[0].name
        assert list(onnx.numpy_helper.to_array(target)) == [-1, 1, 49, 10]


def test_model_onnx_reproduces_the_framework(exported):
    """The folds (batch norm into Dense, the one-channel Reshape) keep the float function."""
    result = exported.results["float"]
    onnx.checker.check_model(result.float_model, full_check=True)
    ops = {node.op_type for node in result.float_model.graph.node}
    assert not ops & {"Mul", "BatchNormalization"}, ops
    x = exported.inputs(N_TEST, seed=5)
    want = exported.reference(x)
    np.testing.assert_allclose(ort_float(result.float_model, x), want,
                               rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


def test_float_mode_equals_onnxruntime_on_every_tensor(exported):
    y = assert_float_mode_equals_onnxruntime(exported.results["float"],
                                             exported.inputs(N_TEST, seed=5),
                                             exported.nhwc(N_TEST, seed=5))
    assert y.shape == (N_TEST, mt.SHAPES[exported.name][2])


def test_fixed_mode_within_one_lsb_per_layer(exported):
    assert_fixed_within_one_lsb_of_float(exported.results, exported.nhwc(N_TEST, seed=5))


def test_int8_model_tracks_the_framework(exported):
    x = exported.inputs(N_TEST, seed=5)
    assert_int8_tracks(exported.reference(x), exported.results, x)


@pytest.mark.parametrize("name,source,mode,board", DEVICE_RUNS,
                         ids=["-".join(run) for run in DEVICE_RUNS])
def test_on_qemu_device_equals_runtime(name, source, mode, board, arm_tools, tmp_path,
                                       tmp_path_factory):
    from firmware_host.verify import verify
    case = _exported(name, source, tmp_path_factory)
    result = case.results[mode]
    directory = result.save(tmp_path / "export")
    count = DEVICE_IMAGES.get(name, 3)
    run = verify(directory, case.inputs(count, seed=8), device=board, progress=False)
    assert run.exit_status == 0
    assert run.device_equal_images == run.images == count
    if mode == "float":
        assert run.ort_equal_images == count


def test_a_model_too_big_for_the_board_is_refused_in_one_line(arm_tools, tmp_path,
                                                               tmp_path_factory):
    from firmware_host.build import build_firmware
    from runtime.errors import TinyconvError
    directory = _exported("autoencoder", "keras", tmp_path_factory).results["fixed"].save(
        tmp_path / "export")
    with pytest.raises(TinyconvError, match=r"^model needs [\d,]+ B flash, [\d,]+ B RAM \(arena "
                       r".*lm3s6965evb has 262,144 / 65,536: does not fit, flash over by [\d,]+ B$"
                       ) as refused:
        build_firmware(directory, "lm3s6965evb")
    assert "\n" not in str(refused.value)


def test_cli_on_the_fully_connected_autoencoder(tmp_path, tmp_path_factory, capsys):
    """A rank-2 [N, 640] model through the command line: export, run, verify on the host
    device, and the report (tables and the output picture; no conv layer to draw)."""
    import runtime
    from runtime import kernels
    from tinyconv.cli import main
    case = _exported("autoencoder", "torchscript", tmp_path_factory)
    np.savez(tmp_path / "calib.npz", x=case.inputs(N_CALIB, seed=1))
    np.savez(tmp_path / "test.npz", x=case.inputs(4, seed=3))
    out = tmp_path / "build"
    assert main(["export", str(case.onnx_path), "--calibration", str(tmp_path / "calib.npz"),
                 "--out", str(out), "--requant", "fixed"]) == 0
    assert runtime.load(out).hash == case.results["fixed"].model.hash
    assert main(["run", str(out), "--input", str(tmp_path / "test.npz"),
                 "--output", str(tmp_path / "y.npz")]) == 0
    model = case.results["fixed"].model
    spec = model.input_spec
    want = runtime.run(model, kernels.quantize(case.inputs(4, seed=3), spec.scale,
                                               spec.zero_point))
    with np.load(tmp_path / "y.npz") as y:
        np.testing.assert_array_equal(y["y_q"], want)
        assert y["y_q"].shape == (4, 640)
    assert main(["verify", str(out), "--input", str(tmp_path / "test.npz"),
                 "--device", "host"]) == 0
    assert "PASS" in capsys.readouterr().out
    assert main(["report", str(out), "--input", str(tmp_path / "test.npz"), "--images", "1",
                 "--out", str(tmp_path / "report")]) == 0
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == \
        ["index.html", "outputs.png"]
