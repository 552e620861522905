"""``tinyconv report``: the tables' arithmetic, the pictures (decoded, sized as the documented
layout says), the HTML page, atomic writing, and the command line."""
from __future__ import annotations

import math
from html.parser import HTMLParser

import numpy as np
import pytest
from _tools import require_tool
from matplotlib.image import imread

from runtime import metrics
from runtime.errors import TinyconvError
from runtime.inputs import quantize_input
from tinyconv.cli import main
from tinyconv.demo import convnet, data, onnx_writer
from tinyconv.report import figures, make, page, quality

PICTURED = 3


@pytest.fixture(scope="session")
def small_export(tmp_path_factory):
    """A briefly trained digits ConvNet, exported per-channel/minmax/fixed, and 96 test
    images with labels."""
    import export

    digits = data.load_digits()
    net, _ = convnet.train(digits.x_train, digits.y_train, convnet.TrainConfig(epochs=3))
    root = tmp_path_factory.mktemp("report")
    onnx_path = onnx_writer.save_onnx(net, root / "net.onnx")
    export_dir = export.from_onnx(str(onnx_path), digits.x_train[:128]).save(root / "export")
    inputs = root / "test.npz"
    np.savez(inputs, x=digits.x_test[:96], y=digits.y_test[:96])
    calibration = root / "calibration.npz"
    np.savez(calibration, x=digits.x_train[:128])
    return net, export_dir, inputs, digits, calibration


@pytest.fixture(scope="session")
def rendered(small_export, tmp_path_factory):
    _, export_dir, inputs, _, calibration = small_export
    out = tmp_path_factory.mktemp("rendered") / "report"
    return make.make_report(export_dir, inputs, out, labels=True, calibration=calibration,
                            pictured=PICTURED, say=lambda _: None)


# -- SQNR by hand ------------------------------------------------------------------------------

def test_sqnr_hand_computed():
    ref = np.array([3.0, 4.0])  # signal power 25
    assert metrics.sqnr_db(ref, ref + np.array([0.0, 0.5])) == pytest.approx(
        10 * math.log10(25 / 0.25))  # 20 dB
    assert metrics.sqnr_db(ref, ref) == math.inf
    assert metrics.sqnr_db(np.zeros(3), np.ones(3)) == -math.inf


# -- the tables --------------------------------------------------------------------------------

def test_table_rows_and_float_accuracy(rendered, small_export):
    net, _, _, digits, _ = small_export
    labels = [r.label for r in rendered.results]
    assert labels[0].startswith("float") and labels[1].startswith("as exported")
    assert labels[2:] == [c.label for c in quality.CONFIGS]
    expected = float((net.predict(digits.x_test[:96]) == digits.y_test[:96]).mean())
    assert rendered.results[0].accuracy == pytest.approx(expected, abs=1e-12)
    # the directory's model was exported per-channel/minmax/fixed from the same calibration
    # data: re-exporting it that way gives the same integer model
    assert rendered.results[1].model_hash == rendered.results[2].model_hash
    assert rendered.results[1].accuracy == rendered.results[2].accuracy


def test_int8_results_are_close_to_float(rendered):
    float_row, *int8_rows = rendered.results
    for row in int8_rows:
        # entropy calibration clips the rare large activations on purpose (KL divergence over
        # a 2048-bin histogram), and SQNR is dominated by exactly those: it measures ~16 dB
        # here where minmax gives ~40, while top-1 agreement stays above 95 %
        floor = 12.0 if "entropy" in row.label else 20.0
        assert floor < row.output_sqnr < math.inf, row.label
        assert row.agreement >= 0.95, row.label
        assert row.accuracy >= float_row.accuracy - 0.05, row.label
        assert set(row.layer_sqnr) >= {"conv1_relu", "conv2_relu", "logits"}, row.label
        assert all(v > 10.0 for v in row.layer_sqnr.values()), row.label
    by_label = {r.label: r for r in rendered.results}
    assert (by_label["per-channel, minmax, fixed"].output_sqnr
            >= by_label["per-tensor, minmax, fixed"].output_sqnr)


def test_layer_sqnr_matches_an_independent_float_forward(rendered, small_export):
    """The conv1 SQNR recomputed from the numpy network's own float activations (not
    onnxruntime's) and runtime/'s int8 activations agrees with the table."""
    import runtime
    from runtime import kernels

    net, export_dir, _, digits, _ = small_export
    x = digits.x_test[:96]
    model = runtime.load(export_dir)
    p = {k: v.astype(np.float64) for k, v in net.params.items()}
    conv1, _ = convnet.conv_forward(x.astype(np.float64), p["conv1.weight"], p["conv1.bias"])
    reference = np.maximum(conv1, 0).transpose(0, 2, 3, 1)
    spec = model.input_spec
    x_q = kernels.quantize(x.transpose(0, 2, 3, 1), spec.scale, spec.zero_point)
    _, values = runtime.run(model, x_q, collect=True)
    t = model.tensors["conv1_relu"]
    got = kernels.dequantize(values["conv1_relu"], t.scale, t.zero_point).astype(np.float64)
    noise = np.sum((reference - got) ** 2)
    expected = 10 * np.log10(np.sum(reference ** 2) / noise)
    assert rendered.results[1].layer_sqnr["conv1_relu"] == pytest.approx(expected, abs=1e-3)


# -- the pictures and the page -----------------------------------------------------------------

# Sizes from the documented layout (tinyconv/report/figures.py): a 96 px label column, a 40 px
# title band, 72 px filter cells, 56 px feature cells, 320x240 px output panels.
EXPECTED_SIZES = {  # name: (height, width)
    "filters.png": (40 + 2 * 72, 96 + 8 * 72),  # rows: float, int8; 8 filters
    "outputs.png": (40 + 240, PICTURED * 320),
}
for _i in range(PICTURED):  # rows: input, conv1 float/int8, conv2 float/int8; 16 channels
    EXPECTED_SIZES[f"features_{_i}.png"] = (40 + 5 * 56, 96 + 16 * 56)


def test_pngs_decode_with_the_expected_sizes(rendered):
    assert sorted(rendered.files) == sorted([*EXPECTED_SIZES, "index.html"])
    for name, (height, width) in EXPECTED_SIZES.items():
        pixels = imread(rendered.out_dir / name)
        assert pixels.shape[:2] == (height, width), name
        assert pixels[..., :3].std() > 0.05, f"{name} looks blank"


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def test_html_references_every_picture_and_holds_the_tables(rendered):
    text = (rendered.out_dir / "index.html").read_text()
    parser = _Images()
    parser.feed(text)
    assert sorted(parser.sources) == sorted(EXPECTED_SIZES)
    for row in rendered.results:
        assert row.label in text
    float_accuracy = f"{100 * rendered.results[0].accuracy:.2f}%"
    assert float_accuracy in text
    for tensor in ("conv1_relu", "conv2_relu", "logits"):  # rows of the per-layer table
        assert f"<code>{tensor}</code>" in text


def test_the_page_shows_tflms_arena_beside_tinyconvs(rendered, small_export):
    """report.json's tflm entry, written by export (tests/test_tflite_writer.py checks the
    figure against TFLM itself), on the page beside the model's own arena."""
    import json

    import runtime

    pytest.importorskip("tflite_micro")
    export_dir = small_export[1]
    tflm = json.loads((export_dir / "report.json").read_text())["tflm"]
    arena = runtime.load(export_dir).arena_size
    text = (rendered.out_dir / "index.html").read_text()
    assert (f"TFLite Micro arena {tflm['arena_bytes']:,} B (head {tflm['head_bytes']:,} B: "
            f"activations and scratch) vs tinyconv&#x27;s {arena:,} B") in text


def test_device_outputs_are_drawn_when_given(small_export, tmp_path):
    import runtime

    _, export_dir, inputs, digits, _ = small_export
    model = runtime.load(export_dir)
    device = runtime.run(model, quantize_input(model, digits.x_test[:2]))
    without = figures.outputs_png(np.ones((2, 10)), np.ones((2, 10)), None, [1, 2])
    with_device = figures.outputs_png(np.ones((2, 10)), np.ones((2, 10)), 2 * np.ones((2, 10)),
                                      [1, 2])
    assert without != with_device
    report = make.make_report(export_dir, inputs, tmp_path / "r", pictured=2,
                              device_outputs=device, say=lambda _: None)
    assert imread(report.out_dir / "outputs.png").shape[:2] == (40 + 240, 2 * 320)


def test_device_outputs_from_the_host_device_equal_runtime(small_export, tmp_path):
    import runtime

    require_tool("gcc")
    _, export_dir, inputs, digits, _ = small_export
    report = make.make_report(export_dir, inputs, tmp_path / "r", pictured=2, device="host",
                              say=lambda _: None)
    model = runtime.load(export_dir)
    expected = runtime.run(model, quantize_input(model, digits.x_test[:2]))
    assert np.array_equal(report.device_outputs, expected)
    assert "device outputs</td><td>host" in (report.out_dir / "index.html").read_text()


def test_a_configuration_that_cannot_be_exported_is_shown_not_fatal(small_export, tmp_path,
                                                                      monkeypatch):
    import export

    _, export_dir, inputs, _, calibration = small_export
    real = export.from_onnx

    def picky(*args, method="minmax", **kwargs):
        if method == "entropy":
            raise TinyconvError("calibration failed: entropy says no")
        return real(*args, method=method, **kwargs)

    monkeypatch.setattr(export, "from_onnx", picky)
    report = make.make_report(export_dir, inputs, tmp_path / "r", calibration=calibration,
                              pictured=1, say=lambda _: None)
    by_label = {r.label: r for r in report.results}
    assert by_label["per-channel, entropy, fixed"].error.endswith("entropy says no")
    assert by_label["per-channel, percentile, fixed"].error is None
    assert "export failed: calibration failed: entropy says no" in make.format_table(
        report.results)
    assert "entropy says no" in (report.out_dir / "index.html").read_text()


# -- atomic output and user mistakes -----------------------------------------------------------

def test_refuses_to_replace_a_directory_that_is_not_a_report(tmp_path):
    victim = tmp_path / "precious"
    victim.mkdir()
    (victim / "thesis.tex").write_text("keep me")
    with pytest.raises(TinyconvError, match="precious"):
        page.write_dir_atomic(victim, {"index.html": b"x"})
    assert (victim / "thesis.tex").read_text() == "keep me"


def test_a_failed_report_leaves_nothing_behind(small_export, tmp_path, monkeypatch):
    _, export_dir, inputs, _, _ = small_export

    def broken(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(figures, "outputs_png", broken)
    with pytest.raises(RuntimeError):
        make.make_report(export_dir, inputs, tmp_path / "r", pictured=1, say=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_replacing_a_previous_report(tmp_path):
    out = tmp_path / "r"
    page.write_dir_atomic(out, {"index.html": b"one", "a.png": b"1"})
    page.write_dir_atomic(out, {"index.html": b"two"})
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]
    assert (out / "index.html").read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_cli_writes_the_report(small_export, tmp_path, capsys):
    _, export_dir, inputs, _, _ = small_export
    status = main(["report", str(export_dir), "--input", str(inputs), "--labels",
                   "--images", "1", "--out", str(tmp_path / "r")])
    assert status == 0
    out = capsys.readouterr().out
    assert "per-tensor, minmax, fixed" in out and "index.html" in out
    assert imread(tmp_path / "r" / "features_0.png").shape[:2] == (40 + 5 * 56, 96 + 16 * 56)


@pytest.mark.parametrize("arrays, flags, message", [
    ({"images": np.zeros((2, 1, 16, 16), np.float32)}, [], "no array 'x'"),
    ({"x": np.zeros((2, 1, 16, 16), np.float32)}, ["--labels"], "no array 'y'"),
])
def test_cli_user_mistakes_exit_2_with_one_line(small_export, tmp_path, capsys, arrays, flags,
                                                 message):
    _, export_dir, _, _, _ = small_export
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    status = main(["report", str(export_dir), "--input", str(bad), "--out",
                   str(tmp_path / "r"), *flags])
    err = capsys.readouterr().err
    assert status == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_cli_missing_export_dir(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", x=np.zeros((1, 1, 16, 16), np.float32))
    status = main(["report", str(tmp_path / "nope"), "--input", str(tmp_path / "d.npz"),
                   "--out", str(tmp_path / "r")])
    assert status == 2
    assert "nope" in capsys.readouterr().err


# -- fitting the page, the legend, verify results, calibration source (issue 11 item 15) -------

def test_wide_layers_are_drawn_within_the_page_width():
    rng = np.random.default_rng(0)
    maps = [("wide", rng.normal(size=(8, 8, 64)), rng.normal(size=(8, 8, 64)))]
    png = figures.features_png(rng.normal(size=(8, 8)), maps, "64 channels")
    outputs = figures.outputs_png(rng.normal(size=(10, 4)), rng.normal(size=(10, 4)), None,
                                  [None] * 10)
    for data in (png, outputs):
        import io

        width = imread(io.BytesIO(data)).shape[1]
        assert width <= figures.MAX_WIDTH_PX, width
    assert "max-width: 100%" in page._STYLE.split("img {")[1].split("}")[0]


def test_verify_json_joins_the_page_and_test_set_calibration_is_said(small_export, tmp_path,
                                                                    capsys):
    import json

    from firmware_host.verify import verify

    _, export_dir, inputs, _, _ = small_export
    require_tool("gcc")
    result = verify(export_dir, inputs, labels=True, device="host", limit=8,
                    json_path=tmp_path / "r.json", progress=False)
    assert result.exit_status == 0
    saved = json.loads((tmp_path / "r.json").read_text())
    status = main(["report", str(export_dir), "--input", str(inputs), "--out",
                   str(tmp_path / "rep"), "--images", "1", "--verify", str(tmp_path / "r.json")])
    assert status == 0
    err = capsys.readouterr().err
    assert "calibrated on the test inputs" in err
    text = (tmp_path / "rep" / "index.html").read_text()
    assert "<h2>Device verification</h2>" in text and "PASS" in text
    assert f"{saved['device_equal_images']}/{saved['images']} images" in text
    assert saved["images"] == 8
    assert "calibrated on the test inputs" in text and "(the test inputs themselves)" in text
    assert 'class="legend"><span class="worst">' in text
    saved["model_hash"] = "0" * 16
    (tmp_path / "other.json").write_text(json.dumps(saved))
    assert main(["report", str(export_dir), "--input", str(inputs), "--out",
                 str(tmp_path / "rep2"), "--verify", str(tmp_path / "other.json")]) == 2
    assert "but the export is model" in capsys.readouterr().err
    assert not (tmp_path / "rep2").exists()
