"""report takes the inputs run and verify take, and refuses the others in one line (audit).

Found by giving `tinyconv report` the files run and verify were given: a wrong image size,
NHWC images for an NCHW model (which run and verify accept) and an empty file ended in
tracebacks (onnxruntime's INVALID_ARGUMENT, an AssertionError in runtime/), and int32 or
uint8 values were taken as floats where run and verify refuse them. Each test failed before the
fix. The real command line, in process, on real files; nothing is written when it refuses."""
from __future__ import annotations

import numpy as np
import pytest

import _host_device as hd
from tinyconv.cli import main


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return hd.export_small_cnn(tmp_path_factory.mktemp("audit_report") / "exp")


BAD = {
    "wrong size": (np.zeros((3, 1, hd.SIDE, hd.SIDE - 1), np.float32), "per sample"),
    "empty": (np.zeros((0, 1, hd.SIDE, hd.SIDE), np.float32), "no inputs"),
    "int32": (np.zeros((3, 1, hd.SIDE, hd.SIDE), np.int32), "int32"),
    "uint8 pixels": (np.full((3, 1, hd.SIDE, hd.SIDE), 200, np.uint8), "uint8"),
    "NaN": (np.full((3, 1, hd.SIDE, hd.SIDE), np.nan, np.float32), "NaN"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_inputs_are_one_line_and_write_nothing(exported, tmp_path, capsys, case):
    x, says = BAD[case]
    np.savez(tmp_path / "data.npz", x=x)
    out = tmp_path / "report"
    assert main(["report", str(exported), "--input", str(tmp_path / "data.npz"),
                 "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and says in err, err
    assert not out.exists()


def test_nhwc_images_are_pictured_like_the_same_images_in_nchw(exported, tmp_path, capsys):
    """run and verify take NHWC images for an NCHW model; so does report, with the same
    figures as for the NCHW file."""
    x = hd.images(4, seed=7)
    np.savez(tmp_path / "nchw.npz", x=x)
    np.savez(tmp_path / "nhwc.npz", x=x.transpose(0, 2, 3, 1))
    pages = {}
    for layout in ("nchw", "nhwc"):
        out = tmp_path / f"r_{layout}"
        assert main(["report", str(exported), "--input", str(tmp_path / f"{layout}.npz"),
                     "--out", str(out), "--images", "1", "-q"]) == 0
        pages[layout] = {p.name: p.read_bytes() for p in out.glob("*.png")}
    assert pages["nchw"] and pages["nchw"] == pages["nhwc"]


def test_bad_calibration_is_one_line_before_any_re_export(exported, tmp_path, capsys):
    """Before, a calibration file of the wrong image size made every re-export fail, each said
    in the table, and the report was written with exit 0."""
    np.savez(tmp_path / "data.npz", x=hd.images(4))
    np.savez(tmp_path / "cal.npz", x=BAD["wrong size"][0])
    out = tmp_path / "report"
    assert main(["report", str(exported), "--input", str(tmp_path / "data.npz"),
                 "--calibration", str(tmp_path / "cal.npz"), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "cal.npz" in err and "per sample" in err, err
    assert not out.exists()


@pytest.mark.parametrize("damage", ["truncated", "bad crc"])
def test_a_damaged_npz_is_one_line_as_in_run_and_verify(exported, tmp_path, capsys, damage):
    """zipfile.BadZipFile escaped report's reader as a traceback (failed before)."""
    np.savez(tmp_path / "good.npz", x=hd.images(4))
    data = bytearray((tmp_path / "good.npz").read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2: len(data) // 2 + 64] = b"\xff" * 64
    (tmp_path / "data.npz").write_bytes(bytes(data))
    for argv in (["report", str(exported), "--out", str(tmp_path / "r")],
                 ["run", str(exported), "--output", str(tmp_path / "y.npz")]):
        assert main([*argv, "--input", str(tmp_path / "data.npz"), "-q"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "cannot read" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz", "good.npz"]


def test_an_unknown_device_is_named_before_the_re_exports(exported, tmp_path, capsys):
    """`--device nosuch` was named only after every re-export had run (minutes on a real
    model); the stage lines show whether any work came first (failed before)."""
    np.savez(tmp_path / "data.npz", x=hd.images(4))
    assert main(["report", str(exported), "--input", str(tmp_path / "data.npz"),
                 "--out", str(tmp_path / "r"), "--device", "nosuch"]) == 2
    out, err = capsys.readouterr()
    assert "unknown device 'nosuch'" in err and "calibrating" not in err + out, err
    assert not (tmp_path / "r").exists()
