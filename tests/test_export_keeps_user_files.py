"""Re-exporting into a directory replaces only what tinyconv wrote there (issue 11, items 1-2).

Each test runs the real command line in a child process on real files, as a user would."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest

import export
import runtime
from _host_device import tinyconv
from runtime.errors import TinyconvError
from tests.test_export_cli import small_model

def user_project(tmp_path: Path, exp: Path) -> dict[str, bytes]:
    """An export folder as a user keeps it after a first export: the model (with external
    data), calibration data, notes and a report folder moved in beside tinyconv's artifacts;
    returns every user file's bytes by relative path."""
    src = tmp_path / "src"
    src.mkdir()
    onnx.save(small_model(), src / "net.onnx", save_as_external_data=True,
              all_tensors_to_one_file=True, location="net.onnx.data", size_threshold=0)
    np.savez(src / "calib.npz",
             x=np.random.default_rng(2).normal(size=(10, 1, 8, 8)).astype(np.float32))
    export.from_onnx(str(src / "net.onnx"), src / "calib.npz").save(exp)  # the first export
    for p in src.iterdir():
        os.replace(p, exp / p.name)
    (exp / "notes.txt").write_text("lr 0.01, 12 epochs\n")
    (exp / "report").mkdir()
    (exp / "report" / "index.html").write_text("<h1>mine</h1>\n")
    return {k: v for k, v in snapshot(exp).items()
            if k in ("net.onnx", "net.onnx.data", "calib.npz", "notes.txt", "report/index.html")}


def snapshot(root: Path, skip=()) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip}


def test_reexport_keeps_the_users_files(tmp_path):
    exp = tmp_path / "proj" / "exp"
    mine = user_project(tmp_path, exp)
    assert len(mine) == 5
    args = ["export", exp / "net.onnx", "--calibration", exp / "calib.npz", "--out", exp]
    hash_fixed = runtime.load(exp).hash
    second = tinyconv(*args, "--requant", "float")
    assert second.returncode == 0, second.stderr
    after = snapshot(exp)
    for name, data in mine.items():
        assert after[name] == data, name
    assert runtime.load(exp).requant_mode == "float" and runtime.load(exp).hash != hash_fixed
    assert not [p for p in exp.iterdir() if p.name.startswith(".") and p.is_dir()]


def test_failed_reexport_leaves_the_previous_export_and_no_partial_files(tmp_path):
    exp = tmp_path / "exp"
    user_project(tmp_path, exp)
    before = snapshot(exp)
    onnx.save(small_model("Erf"), tmp_path / "bad.onnx")  # an op tinyconv refuses
    bad = tinyconv("export", tmp_path / "bad.onnx", "--calibration", exp / "calib.npz",
                   "--out", exp)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert snapshot(exp) == before
    assert sorted(p.name for p in exp.iterdir()) == sorted(
        {Path(n).parts[0] for n in before} | {"report"})


def test_failure_while_moving_artifacts_in_restores_the_old_ones(tmp_path, monkeypatch):
    import export
    import export.api

    exp = tmp_path / "exp"
    user_project(tmp_path, exp)
    x = np.load(exp / "calib.npz")["x"]
    before = snapshot(exp)
    real_replace = os.replace
    calls = []

    def failing_replace(src, dst):  # the disk fills while the new artifacts move in
        calls.append(src)
        if ".tmp-" in str(src) and Path(src).name == "model.tcm":
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(export.api.os, "replace", failing_replace)
    with pytest.raises(TinyconvError, match="No space left"):
        export.from_onnx(small_model(), x, requant="float").save(exp)
    assert calls and snapshot(exp) == before
    assert sorted(p.name for p in exp.iterdir()) == sorted(
        {Path(n).parts[0] for n in before} | {"report"})


def test_an_artifact_name_taken_by_a_user_file_is_refused(tmp_path):
    exp = tmp_path / "exp"
    user_project(tmp_path, exp)
    (exp / ".tinyconv-export.json").write_text('{"artifacts": ["model.tcm"]}\n')
    before = snapshot(exp)
    done = tinyconv("export", exp / "net.onnx", "--calibration", exp / "calib.npz",
                    "--out", exp, "--quiet")
    assert done.returncode == 2 and "was not written by tinyconv" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and snapshot(exp) == before


def test_a_symlinked_out_is_written_through(tmp_path):
    exp = tmp_path / "exp"
    user_project(tmp_path, exp)
    real = tmp_path / "disk" / "exports"
    real.mkdir(parents=True)
    link = tmp_path / "out"
    link.symlink_to(real, target_is_directory=True)
    for mode in ("fixed", "float"):  # a first export and a re-export through the link
        done = tinyconv("export", exp / "net.onnx", "--calibration", exp / "calib.npz",
                        "--out", link, "--requant", mode)
        assert done.returncode == 0, done.stderr
        assert link.is_symlink() and os.readlink(link) == str(real)
        assert runtime.load(real).requant_mode == mode
        (real / "keep.txt").write_text("hello\n")
    assert (real / "keep.txt").read_text() == "hello\n"


def test_a_dangling_symlinked_out_creates_its_target(tmp_path):
    exp = tmp_path / "exp"
    user_project(tmp_path, exp)
    real = tmp_path / "disk" / "exports"
    link = tmp_path / "out"
    link.symlink_to(real, target_is_directory=True)
    done = tinyconv("export", exp / "net.onnx", "--calibration", exp / "calib.npz",
                    "--out", link)
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and (real / "model.tcm").is_file()


def test_a_manifest_naming_a_folder_never_removes_it(tmp_path):
    exp = tmp_path / "exp"
    user_project(tmp_path, exp)
    (exp / ".tinyconv-export.json").write_text(
        '{"artifacts": ["model.onnx", "model.q.onnx", "model.tcm", "report.json", '
        '"model_data.c", "model_data.h", "model.tflite", "report", ".."]}\n')
    done = tinyconv("export", exp / "net.onnx", "--calibration", exp / "calib.npz",
                    "--out", exp)
    assert done.returncode == 0, done.stderr
    assert (exp / "report" / "index.html").read_text() == "<h1>mine</h1>\n"
    assert (tmp_path / "src").is_dir()
