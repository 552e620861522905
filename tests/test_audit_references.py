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
    assert len(err.strip().splitlines()) == 1 and says in err, err
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
