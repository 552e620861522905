"""User mistakes on the command line are refused before anything is written, and a user's
file is never rewritten (audit).

Found by trying them: `tinyconv demo --out .` in a project folder replaced the project's own
test.npz with the digits test split; `tinyconv export ... --target nosuch` wrote the whole export
and only then named the unknown board (exit 2 with the files left behind). Each test failed
before the fix. The real command line, in process, on real files."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import _host_device as hd
from _tools import require_tool
from tinyconv.cli import main


def test_demo_out_never_replaces_a_users_file(tmp_path, capsys):
    project = tmp_path / "project"
    project.mkdir()
    np.savez(project / "test.npz", x=np.ones((2, 3), np.float32))
    (project / "notes.txt").write_text("keep me\n")
    before = {p.name: p.read_bytes() for p in project.iterdir()}
    assert main(["demo", "--out", str(project), "-q"]) == 2
    err = capsys.readouterr().err
    assert "test.npz" in err and len(err.strip().splitlines()) == 1, err
    assert {p.name: p.read_bytes() for p in project.iterdir()} == before


def test_demo_negative_seed_is_one_line_and_writes_nothing(tmp_path, capsys):
    """numpy's "expected non-negative integer" traceback, after --out was created (failed
    before)."""
    assert main(["demo", "--seed", "-1", "--out", str(tmp_path / "demo"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "--seed" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "demo").exists()


def test_export_names_an_unknown_board_before_writing(tmp_path, capsys):
    import onnx

    onnx.save(hd.small_cnn(), tmp_path / "net.onnx")
    hd.save_images(tmp_path / "calib.npz", hd.images(8))
    out = tmp_path / "out"
    assert main(["export", str(tmp_path / "net.onnx"), "--calibration",
                 str(tmp_path / "calib.npz"), "--out", str(out), "--target", "nosuch",
                 "-q"]) == 2
    err = capsys.readouterr().err
    assert "unknown board 'nosuch'" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.npz", "net.onnx"]


def test_bench_bad_options_are_one_line(tmp_path):
    """`bench runtime --repeat 0` ended in "min() arg is an empty sequence" and `bench
    arm-kernels --boards nosuch` in a TinyconvError traceback; both failed before the fix."""
    for args, says in ((("runtime", "--repeat", "0"), "--repeat must be at least 1"),
                       (("arm-kernels", "--boards", "nosuch"), "unknown board(s) nosuch")):
        done = hd.tinyconv("bench", *args, timeout=120)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert says in done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("theirs", ['[1, 2]\n', '{"experiment": 7}\n'])
def test_build_leaves_a_users_report_json_alone(tmp_path, capsys, theirs):
    """build accepts a hand-made directory holding a model.tcm; it recorded the firmware size
    into any report.json there: a user's list ended in an AttributeError traceback, a user's
    object was rewritten with a "firmware" entry (both failed before)."""
    require_tool("arm-none-eabi-gcc")
    exp = hd.export_small_cnn(tmp_path / "exp")
    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copy(exp / "model.tcm", mine / "model.tcm")
    (mine / "report.json").write_text(theirs)
    assert main(["build", str(mine), "--target", "lm3s6965evb", "-q"]) == 0, \
        capsys.readouterr().err
    assert (mine / "report.json").read_text() == theirs
    assert main(["build", str(exp), "--target", "lm3s6965evb", "-q"]) == 0  # an export's own
    assert "lm3s6965evb" in json.loads((exp / "report.json").read_text())["firmware"]


@pytest.mark.parametrize("option", ["--timeout", "--silence"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_verify_waits_are_finite(tmp_path, capsys, option, value):
    """`--timeout nan` compared False with every wait, so a device that died was waited for
    forever (inf likewise); refused before anything starts (failed before: the value was
    accepted)."""
    np.savez(tmp_path / "data.npz", x=hd.images(2))
    assert main(["verify", str(tmp_path / "no-export"), "--input", str(tmp_path / "data.npz"),
                 option, value, "-q"]) == 2
    err = capsys.readouterr().err
    assert "(finite)" in err and len(err.strip().splitlines()) == 1, err


def test_export_refuses_a_name_the_device_cannot_carry(tmp_path, capsys):
    """`--name` of 5,000 characters: export wrote everything, then every build failed on C99's
    4,095-byte string limit (and past 255 bytes INFO cuts the name short): failed before."""
    import onnx

    onnx.save(hd.small_cnn(), tmp_path / "net.onnx")
    hd.save_images(tmp_path / "calib.npz", hd.images(8))
    for name, ok in (("n" * 5000, False), ("é" * 128, False), ("é" * 127, True)):
        out = tmp_path / f"out{len(name)}"
        status = main(["export", str(tmp_path / "net.onnx"), "--calibration",
                       str(tmp_path / "calib.npz"), "--out", str(out), "--name", name, "-q"])
        err = capsys.readouterr().err
        assert (status, out.exists()) == ((0, True) if ok else (2, False)), err
        assert ok or "255 bytes" in err


def test_one_port_named_twice_is_refused(tmp_path, capsys):
    """Two links on one port (a ser2net port that takes several connections) would read each
    other's replies, whose sequence numbers both count from 1; before, the second connection
    was tried (here: refused by the port, another error)."""
    np.savez(tmp_path / "data.npz", x=hd.images(2))
    exp = hd.export_small_cnn(tmp_path / "exp")
    capsys.readouterr()
    url = "socket://127.0.0.1:9"
    assert main(["verify", str(exp), "--input", str(tmp_path / "data.npz"), "--device", url,
                 "--device", url, "-q"]) == 2
    err = capsys.readouterr().err
    assert "given twice" in err and len(err.strip().splitlines()) == 1, err
