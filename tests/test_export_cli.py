"""`tinyconv export` from the command line: success, and every bad input -> exit 2, nothing written."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import runtime
from runtime.errors import TinyconvError
from tinyconv.cli import main


def small_model(op: str = "Relu", spatial=(8, 8), drop_init: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(11)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node(op, ["c"], ["y"], name="act")]
    inits = [numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b")]
    if drop_init:
        inits = inits[:1]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                       ["N", 1, *spatial])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture()
def calib(tmp_path):
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.random.default_rng(2).normal(size=(10, 1, 8, 8)).astype(np.float32))
    return path


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_export_writes_directory_and_table(tmp_path, calib, capsys):
    onnx.save(small_model(), tmp_path / "net.onnx")
    out = tmp_path / "build" / "net"
    code, stdout, err = run_cli(["export", tmp_path / "net.onnx", "--calibration", calib,
                                 "--out", out, "--requant", "float", "--per-tensor",
                                 "--calibration-method", "percentile", "--name", "tiny"],
                                capsys)
    assert code == 0, err
    assert "conv2d" in stdout and "RAM (arena)" in stdout
    model = runtime.load(out)
    assert model.name == "tiny" and model.requant_mode == "float"
    assert model.metadata["calibration_method"] == "percentile"
    report = json.loads((out / "report.json").read_text())
    assert report["hash"] == model.hash
    assert report["totals"]["ram_bytes"] == model.arena_size == 8 * 8 * 1 + 8 * 8 * 4


def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["export", "--help"])
    assert exc.value.code == 0
    assert "tinyconv export net.onnx --calibration" in capsys.readouterr().out


@pytest.mark.parametrize("case,expected", [
    ("unsupported", "node 'act' has op Erf"),
    ("dynamic", "dynamic dimension 2"),
    ("missing_init", "reads 'b', which no initializer"),
    ("truncated", "not a readable ONNX model"),
    ("no_file", "no such ONNX model file"),
    ("bad_calibration", "calibration data has shape"),
    ("calibration_key", "has no array 'x'"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, calib, capsys, case, expected):
    model_path = tmp_path / "net.onnx"
    if case == "unsupported":
        onnx.save(small_model("Erf"), model_path)
    elif case == "dynamic":
        onnx.save(small_model(spatial=("H", 8)), model_path)
    elif case == "missing_init":
        onnx.save(small_model(drop_init=True), model_path)
    elif case == "truncated":
        data = small_model().SerializeToString()
        model_path.write_bytes(data[: len(data) // 2])
    elif case != "no_file":
        onnx.save(small_model(), model_path)
    if case == "bad_calibration":
        np.savez(calib, x=np.zeros((4, 1, 9, 9), np.float32))
    if case == "calibration_key":
        np.savez(calib, images=np.zeros((4, 1, 8, 8), np.float32))
    out = tmp_path / "out"
    code, stdout, err = run_cli(["export", model_path, "--calibration", calib, "--out", out],
                                capsys)
    assert code == 2
    assert expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_unsupported_op_message_lists_supported_ops(tmp_path, calib, capsys):
    onnx.save(small_model("Erf"), tmp_path / "net.onnx")
    code, _, err = run_cli(["export", tmp_path / "net.onnx", "--calibration", calib, "--out",
                            tmp_path / "o"], capsys)
    assert code == 2 and "supported ops: Conv" in err and "MaxPool" in err


def test_failed_export_leaves_previous_directory_untouched(tmp_path, calib, capsys):
    onnx.save(small_model(), tmp_path / "good.onnx")
    onnx.save(small_model("Erf"), tmp_path / "bad.onnx")
    out = tmp_path / "out"
    assert run_cli(["export", tmp_path / "good.onnx", "--calibration", calib, "--out", out],
                   capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert run_cli(["export", tmp_path / "bad.onnx", "--calibration", calib, "--out", out],
                   capsys)[0] == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_failure_while_saving_rolls_back(tmp_path, calib, monkeypatch):
    import export
    import export.api

    result = export.from_onnx(small_model(), calib)
    out = result.save(tmp_path / "out")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(model, directory):
        (directory / "model_data.c").write_text("half")
        raise OSError("disk full")

    monkeypatch.setattr(export.api, "write_c_sources", broken)
    with pytest.raises(TinyconvError, match="disk full"):
        export.from_onnx(small_model(), calib, requant="float").save(out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.npz", "out"]


def test_corrupt_tcm_is_refused(tmp_path, calib):
    import export

    out = export.from_onnx(small_model(), calib).save(tmp_path / "out")
    data = bytearray((out / "model.tcm").read_bytes())
    data[40] ^= 0xFF
    (out / "model.tcm").write_bytes(bytes(data))
    with pytest.raises(runtime.ModelFileError, match="CRC-32"):
        runtime.load(out)
    (out / "model.tcm").write_bytes(bytes(data[:30]))
    with pytest.raises(runtime.ModelFileError):
        runtime.load(out)


def test_nan_weights_are_refused(calib):
    import export

    model = small_model()
    w = numpy_helper.to_array(model.graph.initializer[0]).copy()
    w[0, 0, 0, 0] = np.nan
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "w"))
    with pytest.raises(TinyconvError, match="NaN"):
        export.from_onnx(model, calib)


def test_accumulator_overflow_is_refused(tmp_path):
    import export

    # 1x1 conv over 40000 channels: 40000 * 127 * 255 > 2**31 - 1
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="wide")], "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 70000, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones((1, 70000, 1, 1), np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = rng.normal(size=(2, 70000, 1, 1)).astype(np.float32)
    with pytest.raises(TinyconvError, match="layer 'wide'.*overflow int32"):
        export.from_onnx(model, x)


def test_all_zero_activation_gets_documented_fallback():
    import export

    # Relu(-x*x - 1) is always 0: a dead layer on every calibration input
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
         helper.make_node("Relu", ["c"], ["y"], name="relu")], "dead",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.zeros((2, 1, 1, 1), np.float32), "w"),
         numpy_helper.from_array(np.full(2, -1.0, np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = np.random.default_rng(0).normal(size=(4, 1, 4, 4)).astype(np.float32)
    result = export.from_onnx(model, x)
    y = result.model.output_spec
    assert y.scale == pytest.approx(2 / 255) and y.zero_point == 0
    assert any("all zeros" in w for w in result.report["warnings"])


def test_float_model_without_calibration_exits_2(tmp_path, capsys):
    onnx.save(small_model(), tmp_path / "net.onnx")
    code, _, err = run_cli(["export", tmp_path / "net.onnx", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "calibration data is required" in err
    assert not (tmp_path / "o").exists()


def test_cycle_is_refused_naming_a_node(calib):
    import export

    model = small_model()
    model.graph.node[0].input[0] = "y"  # conv reads the relu's output, which reads the conv
    with pytest.raises(TinyconvError, match="cycle through node 'conv'"):
        export.from_onnx(model, calib)


def test_a_directory_that_is_not_an_export_is_refused_not_emptied(tmp_path, calib, capsys):
    project = tmp_path / "project"
    project.mkdir()
    (project / "main.c").write_text("int main(void) { return 0; }\n")
    onnx.save(small_model(), tmp_path / "net.onnx")
    code = main(["export", str(tmp_path / "net.onnx"), "--calibration", str(calib),
                 "--out", str(project)])
    assert code == 2 and "no tinyconv export" in capsys.readouterr().err
    assert sorted(p.name for p in project.iterdir()) == ["main.c"]


def test_artifacts_get_ordinary_permissions_and_failed_saves_create_no_parents(
        tmp_path, calib, monkeypatch):
    import os

    import export
    import export.api

    result = export.from_onnx(small_model(), calib)
    out = result.save(tmp_path / "out")
    umask = os.umask(0)
    os.umask(umask)
    assert (out.stat().st_mode & 0o777) == 0o777 & ~umask
    assert all((p.stat().st_mode & 0o777) == 0o666 & ~umask for p in out.iterdir() if p.is_file())

    def broken(model, directory):
        raise OSError("disk full")

    monkeypatch.setattr(export.api, "write_c_sources", broken)
    with pytest.raises(TinyconvError, match="disk full"):
        result.save(tmp_path / "a" / "b" / "out")
    assert not (tmp_path / "a").exists()
