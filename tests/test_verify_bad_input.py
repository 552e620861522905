"""One NaN in image 400 ends verify without throwing away the 400 images before it (issue 11,
item 6): the real `tinyconv verify` in a child process, the host device on a pseudo-terminal."""
from __future__ import annotations

import json

import numpy as np
import pytest

import _host_device as hd
import export
import runtime
from runtime import kernels
from test_verify_host import small_cnn


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("nan")
    x = hd.images(600, 5, (1, 12, 12))
    return export.from_onnx(small_cnn(1), x[:64], name="nan").save(root / "exp"), x


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_a_nan_image_is_named_and_the_images_before_it_are_reported(exported, tmp_path,
                                                                    bad_value):
    export_dir, x = exported
    x = x.copy()
    x[400, 0, 5, 7] = bad_value
    y = np.random.default_rng(1).integers(0, 10, len(x))
    data = hd.save_images(tmp_path / "data.npz", x, y=y)
    done = hd.tinyconv("verify", export_dir, "--input", data, "--labels",
                       "--json", tmp_path / "r.json")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "ABORTED after 400 of 600 images" in done.stdout
    assert "input 400 holds NaN or infinity" in done.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["images"] == report["device_equal_images"] == 400
    assert report["aborted"] == "input 400 holds NaN or infinity"
    assert report["exit_status"] == 2 and report["labelled_images"] == 400
    model = runtime.load(export_dir)  # the 400 are the real ones, scored against runtime/
    spec = model.input_spec
    want = runtime.run(model, kernels.quantize(x[:400].transpose(0, 2, 3, 1), spec.scale,
                                               spec.zero_point))
    assert report["correct_runtime"] == int(np.sum(want.argmax(axis=1) == y[:400]))


def test_a_nan_in_the_first_image_verifies_nothing_and_says_so(exported, tmp_path):
    from firmware_host.verify import verify

    export_dir, x = exported
    x = x[:10].copy()
    x[0, 0, 0, 0] = np.nan
    result = verify(export_dir, x, device="host", progress=False, json_path=tmp_path / "r.json")
    assert result.exit_status == 2 and result.images == 0
    assert result.aborted == "input 0 holds NaN or infinity"
    assert json.loads((tmp_path / "r.json").read_text())["aborted"] == result.aborted
