"""verify's onnxruntime check decides the verdict (issue 11, item 3): a model.q.onnx whose
weights were changed after export is an error before anything runs; unstamped (an older
export), it fails the run: exactly in float mode, layer by layer beyond 1 LSB in fixed mode.

The real `tinyconv verify` in a child process against the host device on a pseudo-terminal."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import _host_device as hd
import export
from test_verify_host import small_cnn


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    x = hd.images(40, 5, (1, 12, 12))
    dirs = {mode: export.from_onnx(small_cnn(1), x, requant=mode, name=f"g_{mode}")
            .save(root / mode) for mode in ("fixed", "float")}
    dirs["other"] = export.from_onnx(small_cnn(2), x, name="g_other").save(root / "other")
    return dirs, hd.save_images(root / "data.npz", x)


def verify_cli(export_dir, data, *args):
    return hd.tinyconv("verify", export_dir, "--input", data, *args)


def tampered_copy(source: Path, dest: Path, keep_stamp: bool) -> Path:
    """The export with the first conv's weights half zeroed in model.q.onnx only."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("firmware", ".build.lock"))
    q = onnx.load(str(dest / "model.q.onnx"))
    (w,) = [i for i in q.graph.initializer if i.name.endswith("_W")][:1]
    values = numpy_helper.to_array(w).copy()
    values[: len(values) // 2] = 0
    w.CopyFrom(numpy_helper.from_array(values, w.name))
    if not keep_stamp:
        del q.metadata_props[:]
    onnx.save(q, str(dest / "model.q.onnx"))
    return dest


def test_untouched_exports_pass_and_say_what_gates_the_verdict(exported):
    dirs, data = exported
    for mode, gate in (("fixed", "layer by layer"), ("float", "device == onnxruntime")):
        done = verify_cli(dirs[mode], data)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "PASS" in done.stdout and gate in done.stdout


@pytest.mark.parametrize("mode", ["fixed", "float"])
def test_an_edited_model_q_onnx_is_an_error_before_anything_runs(exported, mode, tmp_path):
    dirs, data = exported
    bad = tampered_copy(dirs[mode], tmp_path / "bad", keep_stamp=True)
    done = verify_cli(bad, data, "--json", tmp_path / "r.json")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "changed since it was exported" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r.json").exists() and not (bad / "firmware").exists()


def test_a_model_q_onnx_of_another_model_is_an_error(exported, tmp_path):
    dirs, data = exported
    shutil.copytree(dirs["fixed"], tmp_path / "mixed",
                    ignore=shutil.ignore_patterns("firmware", ".build.lock"))
    shutil.copy(dirs["other"] / "model.q.onnx", tmp_path / "mixed" / "model.q.onnx")
    done = verify_cli(tmp_path / "mixed", data)
    assert done.returncode == 2 and "was exported from model" in done.stderr


@pytest.mark.parametrize("mode", ["fixed", "float"])
def test_an_unstamped_wrong_model_q_onnx_fails_the_run(exported, mode, tmp_path):
    dirs, data = exported
    bad = tampered_copy(dirs[mode], tmp_path / "bad", keep_stamp=False)
    done = verify_cli(bad, data, "--json", tmp_path / "r.json")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL" in done.stdout and "does not name the model.tcm" in done.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["exit_status"] == 1
    assert report["device_equal_images"] == report["images"] == 40  # the device is fine
    if mode == "fixed":
        assert report["ort_layer_images"] == 8 and report["failed_layers"]
        assert "Conv_0" in report["failed_layers"] and "layer Conv_0" in done.stdout
    else:
        assert report["ort_failed_images"] > 0 and "differ from onnxruntime" in done.stdout


def test_every_op_is_within_one_lsb_per_layer_and_an_edit_names_its_layer():
    """The fixed-mode gate on a model with every op family (depthwise, strided, pools, residual
    add, global pool, dense): onnxruntime fed runtime/'s layer inputs stays within 1 LSB on
    every layer; a changed output zero point of the residual add shows on that layer only."""
    import runtime
    from export.qonnx_check import LayerRunner
    from runtime.inputs import quantize_input
    from test_export import cnn, images

    result = export.from_onnx(cnn("reducemean"), images(64, seed=3))
    model = result.model
    _, values = runtime.run(model, quantize_input(model, images(64, seed=11) * 1.5),
                            collect=True)
    diffs = LayerRunner(result.quant_onnx, model).max_lsb(values)
    assert set(diffs) == {layer.name for layer in model.layers} and max(diffs.values()) <= 1
    q = onnx.ModelProto()
    q.CopyFrom(result.quant_onnx)
    add = next(layer for layer in model.layers if layer.op == "add")
    (zp,) = [i for i in q.graph.initializer if i.name == add.output + "_zero_point"]
    zp.CopyFrom(numpy_helper.from_array(
        np.int8(model.tensors[add.output].zero_point + 5), zp.name))
    edited = LayerRunner(q, model).max_lsb(values)
    assert edited[add.name] >= 4
    assert all(edited[k] == v for k, v in diffs.items() if k != add.name)
