"""export/ on models written by PyTorch's own ONNX exporters: TorchScript and dynamo.

One small CNN (conv+BN+ReLU, depthwise conv+ReLU6, 1x1 conv, strided conv, max pool, avg pool,
residual add, a global average head, linear) is exported four ways, each with what that
exporter really writes:

- ``torchscript13``: opset 13, no constant folding (BatchNormalization stays in the graph),
  dynamic batch, ``adaptive_avg_pool2d(1)`` + ``x.view(x.size(0), -1)`` (GlobalAveragePool, then
  Shape/Gather/Unsqueeze/Concat computing the Reshape target);
- ``torchscript17``: opset 17, the exporter's defaults (so the batch is fixed at the example's
  2), a 4x4 feature map flattened by ``x.view(x.size(0), -1)``, which the exporter folds into a
  Reshape to [2, -1] (tinyconv frees the batch; the linear layer's columns are permuted from
  NCHW to NHWC order);
- ``dynamo18``: ``dynamo=True``, opset 18, weights in an external ``.onnx.data`` file,
  ``adaptive_avg_pool2d(1)`` + ``torch.flatten`` (ReduceMean + Reshape);
- ``dynamo20_raw``: ``dynamo=True, optimize=False``, opset 20, external data, ``x.mean((2, 3))``
  (BatchNormalization, a zero bias built by Shape/CastLike/Expand, ReduceMean with keepdims=0).

Oracles: torch itself for the float model, onnxruntime running the written ``model.q.onnx`` for
the int8 model (``float`` mode: equal, ``==``), and runtime/ layer by layer for ``fixed`` mode.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest

import export
import runtime
from _export_checks import (assert_fixed_within_one_lsb_of_float,
                            assert_float_mode_equals_onnxruntime, assert_int8_tracks, ort_float)
from tinyconv.cli import main

if os.environ.get("CI") == "true":
    import torch  # under CI a missing torch is a failure, never a skip
else:
    torch = pytest.importorskip("torch", reason="torch is not installed: pip install -e '.[torch]'")

SEED = 2024
N_CALIB, N_TEST = 15, 24  # 15: not a multiple of the torchscript17 model's fixed batch
IMAGE = (3, 16, 16)


class TinyNet(torch.nn.Module):
    """A PyTorch-shaped CNN; ``head`` picks how the feature map reaches the linear layer."""

    def __init__(self, head: str):
        super().__init__()
        nn = torch.nn
        self.head = head
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.relu6 = nn.ReLU6()
        self.pointwise = nn.Conv2d(8, 16, 1)
        self.strided = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.maxpool = nn.MaxPool2d(2)
        self.avgpool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.residual = nn.Conv2d(16, 16, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16 * 4 * 4 if head == "map_view" else 16, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.relu6(self.depthwise(x))
        x = torch.relu(self.pointwise(x))
        x = torch.relu(self.strided(x))
        x = self.avgpool(self.maxpool(x))
        x = torch.relu(x + self.residual(x))
        if self.head == "gap_view":
            x = self.gap(x)
            x = x.view(x.size(0), -1)
        elif self.head == "mean":
            x = x.mean((2, 3))
        elif self.head == "gap_flatten":
            x = torch.flatten(self.gap(x), 1)
        else:  # map_view
            x = x.view(x.size(0), -1)
        return self.fc(x)


def make_net(head: str) -> TinyNet:
    torch.manual_seed(SEED)
    net = TinyNet(head)
    with torch.no_grad():  # batch norm statistics that are not the identity
        net.bn1.running_mean.uniform_(-0.3, 0.3)
        net.bn1.running_var.uniform_(0.5, 2.0)
        net.bn1.weight.uniform_(0.5, 1.5)
        net.bn1.bias.uniform_(-0.2, 0.2)
    return net.eval()


# flavour -> (head, exporter options, ops the exporter must have written: the test's premise)
FLAVOURS = {
    "torchscript13": ("gap_view", dict(dynamo=False, opset_version=13, do_constant_folding=False,
                                       dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}),
                      {"BatchNormalization", "GlobalAveragePool", "Shape", "Gather", "Concat",
                       "Reshape", "Gemm", "Clip"}),
    "torchscript17": ("map_view", dict(dynamo=False, opset_version=17), {"Reshape", "Gemm"}),
    "dynamo18": ("gap_flatten", dict(dynamo=True, opset_version=18), {"ReduceMean", "Reshape"}),
    "dynamo20_raw": ("mean", dict(dynamo=True, opset_version=20, optimize=False),
                     {"BatchNormalization", "Shape", "CastLike", "Expand", "ReduceMean"}),
}


def images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, *IMAGE)).astype(np.float32)


def export_with_torch(net, flavour: str, path: Path) -> Path:
    _, options, _ = FLAVOURS[flavour]
    options = dict(options)
    dynamo = options.pop("dynamo")
    example = (torch.from_numpy(images(2, seed=0)),)
    names = dict(input_names=["input"], output_names=["logits"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        if not dynamo:
            torch.onnx.export(net, example, str(path), dynamo=False, **names, **options)
            return path
        batch = {"x": {0: torch.export.Dim("N")}}
        program = torch.onnx.export(net, example, dynamo=True, dynamic_shapes=batch,
                                    verbose=False, **names, **options)
    program.save(str(path), external_data=True)  # weights in path.data
    return path


@dataclass
class Exported:
    flavour: str
    net: TinyNet
    path: Path  # the exporter's file
    calibration: np.ndarray
    results: dict  # requant mode -> export.ExportResult


@pytest.fixture(scope="session", params=sorted(FLAVOURS))
def exported(request, tmp_path_factory) -> Exported:
    flavour = request.param
    net = make_net(FLAVOURS[flavour][0])
    path = export_with_torch(net, flavour, tmp_path_factory.mktemp(flavour) / "net.onnx")
    calibration = images(N_CALIB, seed=1)
    results = {mode: export.from_onnx(path, calibration, requant=mode)
               for mode in ("float", "fixed")}
    return Exported(flavour, net, path, calibration, results)


def torch_float(net, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


def test_the_exporter_wrote_what_this_test_is_about(exported):
    source = onnx.load(str(exported.path), load_external_data=False)
    ops = {node.op_type for node in source.graph.node}
    _, options, expected_ops = FLAVOURS[exported.flavour]
    assert expected_ops <= ops
    assert {e.version for e in source.opset_import if e.domain in ("", "ai.onnx")} == \
        {options["opset_version"]}
    external = [t.name for t in source.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    if options["dynamo"]:
        assert external and Path(str(exported.path) + ".data").is_file()
    else:
        assert not external
    batch = source.graph.input[0].type.tensor_type.shape.dim[0]
    if exported.flavour == "torchscript17":  # batch fixed, and baked into the Reshape target
        assert batch.dim_value == 2 and "Shape" not in ops
        reshape = next(n for n in source.graph.node if n.op_type == "Reshape")
        constants = {t.name: t for t in source.graph.initializer}
        constants.update({n.output[0]: n.attribute[0].t for n in source.graph.node
                          if n.op_type == "Constant"})
        assert onnx.numpy_helper.to_array(constants[reshape.input[1]])[0] == 2
    else:
        assert batch.dim_param


def test_model_onnx_reproduces_torch(exported):
    result = exported.results["float"]
    onnx.checker.check_model(result.float_model, full_check=True)
    ops = {node.op_type for node in result.float_model.graph.node}
    assert ops <= {"Conv", "Relu", "Clip", "MaxPool", "AveragePool", "Add", "GlobalAveragePool",
                   "ReduceMean", "Flatten", "Reshape", "Gemm"}, ops
    assert all(t.data_location == onnx.TensorProto.DEFAULT
               for t in result.float_model.graph.initializer)
    for model in (result.float_model, result.quant_onnx):  # any batch size, like the device
        for value in (model.graph.input[0], model.graph.output[0]):
            assert value.type.tensor_type.shape.dim[0].dim_param, value.name
    x = images(N_TEST, seed=5)
    np.testing.assert_allclose(ort_float(result.float_model, x), torch_float(exported.net, x),
                               rtol=1e-4, atol=1e-4)


def test_float_mode_int8_equals_onnxruntime_on_every_image(exported):
    x = images(N_TEST, seed=5)
    y = assert_float_mode_equals_onnxruntime(exported.results["float"], x, x.transpose(0, 2, 3, 1))
    assert y.shape == (N_TEST, 10)


def test_fixed_mode_within_one_lsb_per_layer_of_float(exported):
    assert_fixed_within_one_lsb_of_float(exported.results,
                                         images(N_TEST, seed=5).transpose(0, 2, 3, 1))


def test_int8_model_tracks_torch(exported):
    x = images(N_TEST, seed=5)
    assert_int8_tracks(torch_float(exported.net, x), exported.results, x)


def test_cli_exports_from_the_exporters_file(exported, tmp_path, capsys):
    """`tinyconv export` on the file as torch wrote it (with its .onnx.data for dynamo)."""
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=exported.calibration)
    out = tmp_path / "build"
    code = main(["export", str(exported.path), "--calibration", str(calib), "--out", str(out),
                 "--requant", "float"])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        ".tinyconv-export.json", "model.onnx", "model.q.onnx", "model.tcm", "model_data.c",
        "model_data.h", "report.json"]
    written = onnx.load(str(out / "model.onnx"))  # self-contained: no .data file beside it
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in written.graph.initializer)
    assert runtime.load(out).hash == exported.results["float"].model.hash
    x = images(4, seed=9)
    np.testing.assert_allclose(ort_float(written, x), torch_float(exported.net, x),
                               rtol=1e-4, atol=1e-4)
