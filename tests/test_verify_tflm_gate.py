"""verify on a fixed-mode ONNX model: TFLM gates beside onnxruntime when export wrote model.tflite.

Export writes model.tflite for a fixed-mode model only when TFLite Micro computes it exactly
(export/tflm_arena.py), so TFLM, the outside oracle of fixed mode, can gate the verdict of an
ONNX model too: runtime/ == TFLM on every element of the images it checks (LAYER_SAMPLE a
batch, the ones onnxruntime checks layer by layer), or FAIL. A model.tflite that
export did not list in its manifest (the user's own file) is not an oracle and is ignored.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from _host_device import export_small_cnn, images, save_images

import runtime
from firmware_host.references import LAYER_SAMPLE

pytest.importorskip("tflite_micro")

COUNT = 12


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from _tools import require_tool

    require_tool("gcc")
    out = export_small_cnn(tmp_path_factory.mktemp("gate") / "small_cnn")
    assert (out / "model.tflite").is_file(), json.loads((out / "report.json").read_text())["tflm"]
    data = save_images(tmp_path_factory.mktemp("data") / "x.npz", images(COUNT, seed=5))
    return out, data


def _verify(out, data, report):
    from tinyconv.cli import main

    return main(["verify", str(out), "--input", str(data), "--json", str(report), "--quiet"])


def test_tflm_and_onnxruntime_both_gate(exported, tmp_path, capsys):
    out, data = exported
    status = _verify(out, data, tmp_path / "r.json")
    text = capsys.readouterr().out
    assert status == 0, text
    sampled = min(COUNT, LAYER_SAMPLE)  # one batch
    assert f"{sampled}/{sampled} images, max diff 0 LSB" in text
    gates = next(line for line in text.splitlines() if "verdict gated by" in line)
    assert f"TFLM (model.tflite) on every element of {sampled} sampled images" in gates
    assert "onnxruntime" in gates
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["tflm_images"] == sampled == report["tflm_equal_images"]


def test_a_model_tflite_that_disagrees_fails(exported, tmp_path, capsys):
    """model.tcm untouched (device == runtime/), model.tflite written from weights changed by
    hand: only TFLM can tell, and the verdict must be FAIL."""
    import shutil

    from export.tflite_writer import write

    out = tmp_path / "tampered"
    shutil.copytree(exported[0], out)
    model = runtime.load(out)
    layer = next(layer for layer in model.layers if layer.op == "conv2d")
    weights = layer.arrays["weights"].astype(np.int32)
    weights.reshape(-1)[::2] = np.clip(weights.reshape(-1)[::2] + 40, -127, 127)
    layer.arrays = dict(layer.arrays, weights=weights.astype(np.int8))
    (out / "model.tflite").write_bytes(write(model).data)
    status = _verify(out, exported[1], tmp_path / "r.json")
    text = capsys.readouterr().out
    assert status == 1, text
    assert "runtime/ != TFLM" in text
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["device_equal_images"] == COUNT and report["tflm_equal_images"] < COUNT


def test_a_model_tflite_export_did_not_write_is_ignored(exported, tmp_path, capsys):
    import shutil

    out = tmp_path / "users"
    shutil.copytree(exported[0], out)
    manifest = out / ".tinyconv-export.json"
    names = json.loads(manifest.read_text())["artifacts"]
    manifest.write_text(json.dumps({"artifacts": [n for n in names if n != "model.tflite"]}))
    status = _verify(out, exported[1], tmp_path / "r.json")
    text = capsys.readouterr().out
    assert status == 0, text
    assert "TFLM" not in next(line for line in text.splitlines() if "verdict gated by" in line)
    assert json.loads((tmp_path / "r.json").read_text())["tflm_images"] is None
