"""Long work says what it does: tqdm bars counting images, stage lines in logs, --quiet, and
calibration streamed from an .npz so a large file is never held whole."""
import subprocess
import sys
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from _host_device import tinyconv
from export.calibrate import calibrate
from test_calibrate import conv_relu_model
from tiny_models import tiny_model


@pytest.fixture
def run_files(tmp_path):
    tiny_model().save(tmp_path / "m" / "model.tcm")
    x = np.random.default_rng(1).normal(0, 1, (10, 8, 8, 2)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    return tmp_path


def test_run_bar_counts_images_with_rate_and_eta(run_files):
    done = tinyconv("run", run_files / "m", "--input", run_files / "x.npz", "--output",
                    run_files / "y.npz", "--batch-size", "3", env={"FORCE_PROGRESS": "1"})
    assert done.returncode == 0, done.stderr
    last = done.stderr.split("\r")[-1]
    assert "10/10" in last and "img/s" in last and "<" in last  # count, rate, elapsed<ETA


def test_logs_get_one_line_per_stage_and_quiet_silences_it(run_files, tmp_path):
    args = ("run", run_files / "m", "--input", run_files / "x.npz", "--output",
            run_files / "y.npz")
    done = tinyconv(*args)
    assert done.returncode == 0 and "tinyconv run: 10 images ..." in done.stderr
    assert "\r" not in done.stderr  # no bar when stderr is not a terminal
    quiet = tinyconv(*args, "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""
    onnx.save(conv_relu_model(), tmp_path / "net.onnx")
    np.savez(tmp_path / "cal.npz", x=np.ones((40, 1, 8, 8), np.float32))
    export = tinyconv("export", tmp_path / "net.onnx", "--calibration", tmp_path / "cal.npz",
                      "--out", tmp_path / "out")
    assert export.returncode == 0, export.stderr
    assert "calibrating (minmax): 40 images ..." in export.stderr


def test_chunked_minmax_ranges_equal_one_pass_over_everything(tmp_path):
    model = conv_relu_model()
    x = np.random.default_rng(5).normal(0, 1, (700, 1, 8, 8)).astype(np.float32)
    x[613, 0, 3, 3] = 40.0  # the extreme sits in a late chunk
    np.savez(tmp_path / "cal.npz", x=x)
    ranges = calibrate(model, tmp_path / "cal.npz")
    z = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert ranges["z"] == (float(z.min()), float(z.max()))
    assert ranges["x"] == (float(x.min()), float(x.max()))


def _write_large_npz(path, count):
    """An .npz of ``count`` 1x64x64 float32 samples, written in pieces (the test must not
    hold it whole either)."""
    rng = np.random.default_rng(0)
    header = {"descr": "<f4", "fortran_order": False, "shape": (count, 1, 64, 64)}
    with zipfile.ZipFile(path, "w") as archive, \
            archive.open("x.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array_header_1_0(member, header)
        for start in range(0, count, 1000):
            rows = min(1000, count - start)
            member.write(rng.normal(0, 1, (rows, 1, 64, 64)).astype(np.float32).tobytes())


PEAK_SCRIPT = r"""
import resource, sys
import numpy as np
from onnx import TensorProto, helper, numpy_helper
from export.calibrate import calibrate
w = np.ones((2, 1, 3, 3), np.float32)
graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "g",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 64, 64])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 62, 62])],
    [numpy_helper.from_array(w, "w")])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
small = np.zeros((8, 1, 64, 64), np.float32)
calibrate(model, small)  # onnxruntime loaded and warm before the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ranges = calibrate(model, sys.argv[1])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) // 1024, ranges["x"][1] > 3)
"""


def test_a_large_calibration_file_is_streamed_in_bounded_memory(tmp_path):
    count = 12500  # 12500 x 16 KiB = 205 MB of float32
    _write_large_npz(tmp_path / "big.npz", count)
    assert (tmp_path / "big.npz").stat().st_size > 200e6
    done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path / "big.npz")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    grown_mib, plausible = done.stdout.split()
    assert plausible == "True"
    assert int(grown_mib) < 60, f"peak memory grew by {grown_mib} MiB for a 205 MB file"
