"""verify never drops a check silently, and a broken reference file is one line (audit).

Found by editing an export after it was written, as users do by accident: with model.q.onnx
deleted, verify skipped onnxruntime (a note among the figures) and said PASS, although the
export's manifest lists the file and onnxruntime gates the verdict; with model.tflite truncated
or overwritten, verify and `run --per-layer --against tflm` ended in a struct.error traceback
from the flatbuffer reader. Each test failed before the fix. The real command line, in process;
the refusals come before any device is started."""
from __future__ import annotations

import shutil

import pytest

import _host_device as hd
from tinyconv.cli import main


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit_refs")
    exp = hd.export_small_cnn(root / "exp")
    assert (exp / "model.tflite").is_file() and (exp / "model.q.onnx").is_file()
    return exp, hd.save_images(root / "test.npz", hd.images(4))


def broken_copy(exp, tmp_path, name, data: bytes | None):
    """The export with ``name`` deleted (``data`` None) or replaced by ``data``."""
    copy = tmp_path / "exp"
    shutil.copytree(exp, copy, ignore=shutil.ignore_patterns("firmware", ".build.lock"))
    if data is None:
        (copy / name).unlink()
    else:
        (copy / name).write_bytes(data)
    return copy


def one_error(capsys, argv, says: str) -> str:
    assert main([str(a) for a in argv] + ["-q"]) == 2
    out, err = capsys.readouterr()
    assert "PASS" not in out
    errors = [line for line in err.splitlines() if "error" in line]  # beside warnings
    assert len(errors) == 1 and says in errors[0] and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("name", ["model.q.onnx", "model.tflite"])
def test_a_deleted_gating_reference_is_an_error_not_a_pass(project, tmp_path, capsys, name):
    exp, data = project
    copy = broken_copy(exp, tmp_path, name, None)
    err = one_error(capsys, ["verify", copy, "--input", data], f"{name} is missing")
    assert "exported from a .tflite" not in err  # an ONNX export: say what is true of it


def cut(exp) -> dict[str, bytes]:
    whole = (exp / "model.tflite").read_bytes()
    return {"truncated": whole[: len(whole) // 2], "empty": b"",
            "junk": bytes(range(256)) * 8}


@pytest.mark.parametrize("how", ["truncated", "empty", "junk"])
def test_a_broken_model_tflite_is_one_line(project, tmp_path, capsys, how):
    exp, data = project
    copy = broken_copy(exp, tmp_path, "model.tflite", cut(exp)[how])
    one_error(capsys, ["verify", copy, "--input", data], "model.tflite")
    one_error(capsys, ["run", copy, "--input", data, "--output", tmp_path / "y.npz",
                       "--per-layer", "--against", "tflm"], "model.tflite")


@pytest.fixture(scope="module")
def other_models(tmp_path_factory):
    """Two float models that are not the export's: another input size, another output size."""
    import onnx

    root = tmp_path_factory.mktemp("audit_other")
    shapes = {"input": ((1, 12, 12), 10), "output": ((1, hd.SIDE, hd.SIDE), 7)}
    for what, (image, classes) in shapes.items():
        onnx.save(hd.conv_pool_dense(what, image, 4, classes, (0.5, 0.1, 0.1, 0.1),
                                     pads=[1, 1, 1, 1]), root / f"{what}.onnx")
    (root / "junk.onnx").write_bytes(b"not a model")
    return root


@pytest.mark.parametrize("which", ["input", "output", "junk"])
def test_a_replaced_model_onnx_is_one_line_in_verify_and_report(project, other_models,
                                                                tmp_path, capsys, which):
    """model.onnx carries no stamp; before, verify ended in onnxruntime's traceback after the
    device had started, and report in onnx's or onnxruntime's (another output size was one
    line already: that case is a guard)."""
    exp, data = project
    copy = broken_copy(exp, tmp_path, "model.onnx", (other_models / f"{which}.onnx").read_bytes())
    if which != "junk":  # verify cannot load a junk model.onnx: one line already before
        one_error(capsys, ["verify", copy, "--input", data], "model.onnx")
    one_error(capsys, ["report", copy, "--input", data, "--out", tmp_path / "r"], "model.onnx")
    assert not (tmp_path / "r").exists()


def test_verify_given_the_tcm_file_keeps_every_gate(project, capsys):
    """`run` takes DIR or DIR/model.tcm; so does verify, but with the file and a device URL it
    looked for model.q.onnx and model.tflite under "model.tcm/", found none and said PASS on
    device == runtime alone (failed before)."""
    exp, data = project
    device = hd.HostDevice(hd.build_host_device(exp))
    try:
        for given in (exp, exp / "model.tcm"):
            assert main(["verify", str(given), "--input", str(data), "--device",
                         device.restart(), "-q"]) == 0
            gates = [line for line in capsys.readouterr().out.splitlines()
                     if "verdict gated by" in line]
            assert len(gates) == 1 and "TFLM" in gates[0] and "onnxruntime" in gates[0], gates
    finally:
        device.stop()
