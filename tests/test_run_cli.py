"""``tinyconv run`` end to end on a small model file, and the progress bar."""
import io

import numpy as np

import runtime
from runtime import kernels
from tinyconv.cli import main
from runtime.progress import Progress
from tiny_models import tiny_model


def test_run_float_nchw_inputs_with_labels(tmp_path, capsys):
    model = tiny_model("fixed")
    model.save(tmp_path / "m" / "model.tcm")
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, (10, 2, 8, 8)).astype(np.float32)  # NCHW floats
    expected = runtime.run(model, kernels.quantize(x.transpose(0, 2, 3, 1), 0.03, -5))
    labels = expected.argmax(axis=1)
    labels[:5] = (labels[:5] + 1) % 3  # half right
    np.savez(tmp_path / "data.npz", x=x, y=labels)
    status = main(["run", str(tmp_path / "m"), "--input", str(tmp_path / "data.npz"),
                   "--output", str(tmp_path / "out.npz"), "--labels", "--per-layer",
                   "--batch-size", "3"])
    assert status == 0
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_array_equal(out["y_q"], expected)
        np.testing.assert_array_equal(out["y"], kernels.dequantize(expected, model.output_spec.scale, 7))
        assert out["layer/c1"].shape == (10, 8, 8, 6)
    assert "top-1 accuracy: 0.5000" in capsys.readouterr().out


def test_user_mistakes_exit_2_without_output(tmp_path, capsys):
    tiny_model().save(tmp_path / "model.tcm")
    np.savez(tmp_path / "bad.npz", x=np.zeros((2, 5, 5, 2), np.float32))
    status = main(["run", str(tmp_path), "--input", str(tmp_path / "bad.npz"),
                   "--output", str(tmp_path / "out.npz")])
    assert status == 2
    assert "the model takes (8, 8, 2)" in capsys.readouterr().err
    assert not (tmp_path / "out.npz").exists()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.tcm").write_bytes(b"TINYCONV" + b"\0" * 20)
    assert main(["run", str(tmp_path / "broken"), "--input", str(tmp_path / "bad.npz"),
                 "--output", str(tmp_path / "out.npz")]) == 2


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_after_delay(monkeypatch):
    monkeypatch.delenv("FORCE_PROGRESS", raising=False)
    stream = _Terminal()
    quick = Progress(10, "x", delay=60, stream=stream)
    quick.update(10)
    quick.close()
    assert stream.getvalue() == ""
    slow = Progress(4, "work", delay=0, stream=stream)
    slow.update(2)
    slow.close()
    assert "work:" in stream.getvalue() and "2/4" in stream.getvalue()


def test_mistakes_are_found_before_any_work(tmp_path, capsys):
    model = tiny_model()
    model.save(tmp_path / "model.tcm")
    x = np.zeros((3, 8, 8, 2), np.float32)
    np.savez(tmp_path / "empty.npz", x=x[:0])
    np.savez(tmp_path / "ok.npz", x=x, y=np.zeros(3, np.int64))
    (tmp_path / "out_is_a_dir").mkdir()
    cases = [
        (["--input", str(tmp_path / "empty.npz"), "--output", str(tmp_path / "o.npz")],
         "holds no inputs"),
        (["--input", str(tmp_path / "ok.npz"), "--output", str(tmp_path / "out_is_a_dir")],
         "is a directory"),
        (["--input", str(tmp_path / "missing.npz"), "--output", str(tmp_path / "o.npz")],
         "cannot read"),
    ]
    for options, message in cases:
        assert main(["run", str(tmp_path), *options]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o.npz").exists()


def test_labels_need_a_vector_output(tmp_path, capsys):
    from runtime.model import QuantModel

    full = tiny_model()
    first = full.layers[0]
    feature_map = QuantModel("maps", full.requant_mode, {n: full.tensors[n] for n in
                             (full.input, first.output)}, [first], full.input, first.output)
    feature_map.save(tmp_path / "model.tcm")
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 8, 8, 2), np.float32), y=np.zeros(2))
    assert main(["run", str(tmp_path), "--input", str(tmp_path / "d.npz"), "--output",
                 str(tmp_path / "o.npz"), "--labels"]) == 2
    assert "vector output" in capsys.readouterr().err
