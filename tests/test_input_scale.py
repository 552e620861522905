"""Inputs on the wrong scale (issue 11, item 4): the share of input values quantization clips
is in run's and verify's summaries, with a warning on stderr past 1 %; uint8 calibration data
and int8 input files are refused unless the user says what they hold. The real command line
on real files; verify talks to the host device over a pseudo-terminal."""
from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest

import export
import runtime
from runtime import kernels
from runtime.errors import TinyconvError
from test_verify_host import small_cnn
from tinyconv.cli import main

N = 24


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    x = np.random.default_rng(5).random((N, 1, 12, 12)).astype(np.float32)  # 0..1, as trained
    onnx.save(small_cnn(1), root / "net.onnx")
    export_dir = export.from_onnx(small_cnn(1), x, name="scale").save(root / "exp")
    return root, export_dir, x


def cli(capsys, *args):
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def clipped_by_round_trip(model, x) -> int:
    """Values that quantize -> dequantize moves by more than half a step: the clipped ones."""
    spec = model.input_spec
    back = kernels.dequantize(kernels.quantize(x, spec.scale, spec.zero_point), spec.scale,
                              spec.zero_point)
    return int(np.count_nonzero(np.abs(back - x) > spec.scale * 0.5001))


@pytest.mark.parametrize("command", ["run", "verify"])
def test_inputs_on_the_wrong_scale_are_measured_and_warned_about(setup, tmp_path, capsys,
                                                                 command):
    root, export_dir, x = setup
    model = runtime.load(export_dir)
    extra = {"run": ["--output", tmp_path / "o.npz"], "verify": ["--json", tmp_path / "r.json"]}
    for scale, warned in ((1.0, False), (255.0, True)):
        np.savez(tmp_path / "d.npz", x=x * scale)
        code, out, err = cli(capsys, command, export_dir, "--input", tmp_path / "d.npz",
                             *extra[command])
        assert code == 0, out + err
        want = clipped_by_round_trip(model, x * scale)
        assert (want > 0.5 * x.size) == warned
        match = re.search(r"input saturation:?\s+([0-9.]+) % of input values clipped "
                          r"\((\d+) of (\d+)\)", out)
        assert match and (int(match.group(2)), int(match.group(3))) == (want, x.size), out
        assert ("warning:" in err and "0..255" in err) == warned, err
        if command == "verify":
            report = json.loads((tmp_path / "r.json").read_text())
            assert report["input_clipped"] == want and report["input_values"] == x.size


def test_uint8_calibration_data_is_refused_unless_the_user_says_so(setup, tmp_path, capsys):
    root, _, x = setup
    np.savez(tmp_path / "cal.npz", x=(x * 255).astype(np.uint8))
    args = ["export", root / "net.onnx", "--calibration", tmp_path / "cal.npz",
            "--out", tmp_path / "out"]
    code, out, err = cli(capsys, *args)
    assert code == 2 and "is uint8" in err and "--uint8-calibration" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    code, out, err = cli(capsys, *args, "--uint8-calibration")
    assert code == 0, err
    assert runtime.load(tmp_path / "out").input_spec.scale > 0.5  # calibrated on 0..255
    with pytest.raises(TinyconvError, match="is uint8"):
        export.from_onnx(small_cnn(1), (x * 255).astype(np.uint8))


@pytest.mark.parametrize("command", ["run", "verify"])
def test_int8_inputs_need_the_user_to_say_they_are_codes(setup, tmp_path, capsys, command):
    root, export_dir, x = setup
    model = runtime.load(export_dir)
    spec = model.input_spec
    codes = kernels.quantize(x.transpose(0, 2, 3, 1), spec.scale, spec.zero_point)
    np.savez(tmp_path / "d.npz", x=codes)
    extra = ["--output", tmp_path / "o.npz"] if command == "run" else []
    code, out, err = cli(capsys, command, export_dir, "--input", tmp_path / "d.npz", *extra)
    assert code == 2 and "'x' is int8" in err and "--int8-codes" in err
    assert len(err.strip().splitlines()) == 1
    code, out, err = cli(capsys, command, export_dir, "--input", tmp_path / "d.npz", *extra,
                         "--int8-codes")
    assert code == 0, out + err
    assert "input saturation" not in out  # codes are not measured against a float range
    if command == "run":
        assert np.array_equal(np.load(tmp_path / "o.npz")["y_q"], runtime.run(model, codes))
