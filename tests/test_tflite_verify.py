"""tinyconv verify on a model exported from a .tflite file: TFLM gates, LiteRT is reported.

The references of a TFLite model are TFLM on its model.tflite (runtime/ == TFLM on every
element of every verified image, or exit 1) and LiteRT (reported); onnxruntime on model.q.onnx
uses float requantization, not TFLM's arithmetic, so it is reported and does not gate. A
model.tcm whose weights no longer match the .tflite file (built and loaded consistently, so
device == runtime) must FAIL on the TFLM check alone.
"""
from __future__ import annotations

import numpy as np
import pytest

import export
from export.qonnx_check import MODEL_HASH
import tflite_models

pytest.importorskip("tflite_micro")
pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def tflite_bytes() -> bytes:
    return tflite_models.convert(tflite_models.elementwise(), samples=24)


def _data(tmp_path, model, count: int = 12):
    x = np.random.default_rng(4).uniform(-1.4, 1.4, (count, *model.input_spec.shape))
    path = tmp_path / "data.npz"
    np.savez(path, x=x.astype(np.float32))
    return path


def test_tflite_export_stamps_model_q_onnx(tflite_bytes):
    result = export.from_tflite(tflite_bytes, name="e")
    props = {p.key: p.value for p in result.quant_onnx.metadata_props}
    assert props[MODEL_HASH] == result.model.hash


def test_verify_passes_against_tflm_and_reports_litert(tflite_bytes, tmp_path, capsys):
    from _tools import require_tool
    from tinyconv.cli import main

    require_tool("gcc")
    result = export.from_tflite(tflite_bytes, name="e")
    out = result.save(tmp_path / "e")
    status = main(["verify", str(out), "--input", str(_data(tmp_path, result.model)),
                   "--json", str(tmp_path / "r.json")])
    text = capsys.readouterr().out
    assert status == 0, text
    assert "runtime == TFLM  " in text or "runtime == TFLM " in text
    assert "12/12 images, max diff 0 LSB" in text
    assert "device vs LiteRT" in text and "informational" in text
    assert "not TFLM's: informational" in text  # onnxruntime is reported, not gating
    gates = next(line for line in text.splitlines() if "verdict gated by" in line)
    assert "TFLM" in gates and "onnxruntime" not in gates
    assert "PASS" in text and "TFLM agrees" in text
    import json

    report = json.loads((tmp_path / "r.json").read_text())
    assert report["tflm_images"] == 12 == report["tflm_equal_images"]
    assert report["litert_images"] == 12 and report["exit_status"] == 0


def test_tampered_weights_fail_on_tflm(tflite_bytes, tmp_path, capsys):
    """Weights changed after import, exported consistently: device == runtime, runtime != TFLM:
    FAIL, exit 1."""
    from _tools import require_tool
    from export.qonnx_check import stamp
    from export.plan import plan_arena
    from tinyconv.cli import main

    require_tool("gcc")
    result = export.from_tflite(tflite_bytes, name="e")
    layer = next(l for l in result.model.layers if l.op == "conv2d")
    weights = layer.arrays["weights"].copy()
    weights.reshape(-1)[::3] = np.clip(weights.reshape(-1)[::3].astype(int) + 9, -127, 127)
    layer.arrays = dict(layer.arrays, weights=weights.astype(np.int8))
    plan_arena(result.model)
    result.quant_onnx = stamp(result.quant_onnx, result.model)
    out = result.save(tmp_path / "bad")
    status = main(["verify", str(out), "--input", str(_data(tmp_path, result.model))])
    text = capsys.readouterr().out
    assert status == 1, text
    assert "12/12 images (100.00 %)" in text  # device == runtime
    assert "FAIL" in text and "runtime/ != TFLM" in text
