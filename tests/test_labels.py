"""Labels 'y' get one validation (runtime/dataset.py) and so one behaviour in `tinyconv run`,
`verify` and `report` (issue 11, item 5): one-hot rows are converted and said to be; strings,
fractional or float labels and labels outside the class range are refused in one line.
The real command line on real .npz files (verify talks to the host device over a pty)."""
from __future__ import annotations

import re
import subprocess
import numpy as np
import pytest

import export
import runtime
from runtime import kernels
from test_verify_host import small_cnn
from tinyconv.cli import main

N = 30


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("labels")
    x = np.random.default_rng(5).random((N, 1, 12, 12)).astype(np.float32)
    y = np.random.default_rng(6).integers(0, 10, N)
    export_dir = export.from_onnx(small_cnn(1), x, name="labels").save(root / "exp")
    model = runtime.load(export_dir)
    spec = model.input_spec
    top1 = runtime.run(model, kernels.quantize(x.transpose(0, 2, 3, 1), spec.scale,
                                               spec.zero_point)).argmax(axis=1)
    return root, export_dir, x, y, float(np.mean(top1 == y))


def tinyconv(command, export_dir, data, tmp_path, capsys):
    """The command line in this process (so the many cases share one import of everything)."""
    args = {"run": ["--output", tmp_path / "out.npz"], "verify": [],
            "report": ["--out", tmp_path / "report"]}[command]
    capsys.readouterr()
    code = main([command, str(export_dir), "--input", str(data), "--labels", *map(str, args)])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess([], code, out, err)


def accuracy(command, stdout) -> float:
    if command == "run":
        return float(re.search(r"top-1 accuracy: ([0-9.]+)", stdout).group(1))
    return float(re.search(r"accuracy float/runtime/device\s+\S+ % / ([0-9.]+) %",
                           stdout).group(1)) / 100


BAD = {
    "strings": (lambda y: y.astype(str), "are strings; give integer class indices 0..9"),
    "fractional floats": (lambda y: y + 0.5, "are float64"),
    "whole floats": (lambda y: y.astype(np.float32), "are float32"),
    "outside the classes": (lambda y: np.where(np.arange(N) == 7, 10, y),
                            "label 10 of input 7 is outside the model's 10 classes"),
    "negative": (lambda y: np.where(np.arange(N) == 3, -1, y), "label -1 of input 3"),
    "not one-hot": (lambda y: np.eye(10)[y] * 2, "are not one-hot rows"),
    "too few": (lambda y: y[:-1], "29 labels for 30 inputs"),
}


@pytest.mark.parametrize("command", ["run", "verify", "report"])
@pytest.mark.parametrize("case", list(BAD))
def test_bad_labels_are_refused_the_same_way_everywhere(setup, tmp_path, command, case,
                                                       capsys):
    root, export_dir, x, y, _ = setup
    make, message = BAD[case]
    np.savez(tmp_path / "data.npz", x=x, y=make(y))
    done = tinyconv(command, export_dir, tmp_path / "data.npz", tmp_path, capsys)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "out.npz").exists() and not (tmp_path / "report").exists()


@pytest.mark.parametrize("command", ["run", "verify"])
def test_one_hot_labels_are_converted_and_said_to_be(setup, tmp_path, command, capsys):
    root, export_dir, x, y, want = setup
    np.savez(tmp_path / "data.npz", x=x, y=np.eye(10, dtype=np.float32)[y])
    done = tinyconv(command, export_dir, tmp_path / "data.npz", tmp_path, capsys)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "one-hot [30, 10]" in done.stdout + done.stderr
    assert accuracy(command, done.stdout) == pytest.approx(want, abs=1e-4)
    np.savez(tmp_path / "plain.npz", x=x, y=y.reshape(-1, 1))  # a column of indices is fine
    plain = tinyconv(command, export_dir, tmp_path / "plain.npz", tmp_path, capsys)
    assert plain.returncode == 0 and accuracy(command, plain.stdout) == accuracy(command,
                                                                                done.stdout)
