"""The command line: every subcommand of the design is there, and each --help shows an example."""
import subprocess
import sys

import pytest

from tinyconv.cli import main

SUBCOMMANDS = ("export", "run", "build", "verify", "demo", "bench", "report")


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help_with_an_example(name, capsys):
    with pytest.raises(SystemExit) as stop:
        main([name, "--help"])
    assert stop.value.code == 0
    assert "example" in capsys.readouterr().out.lower()


def test_no_subcommand_prints_help_and_fails(capsys):
    assert main([]) == 2
    listing = capsys.readouterr().out
    assert all(name in listing for name in SUBCOMMANDS)


def test_console_script_reports_user_errors_without_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tinyconv.cli", "run", str(tmp_path / "none"),
                           "--input", str(tmp_path / "x.npz"), "--output", str(tmp_path / "y.npz")],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "y.npz").exists()


def test_bench_refuses_an_unknown_benchmark(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["bench", "nonsense"])
    assert stop.value.code == 2


def test_version_is_the_packages():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml")
                              .read_text())
    done = subprocess.run([sys.executable, "-m", "tinyconv.cli", "--version"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"tinyconv {pyproject['project']['version']}"


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_help_is_written_for_users_with_a_real_command(name, capsys):
    """The description says what the command does for the user, not how the code is laid out,
    and the help shows the command as it is typed."""
    with pytest.raises(SystemExit):
        main([name, "--help"])
    text = capsys.readouterr().out
    description = text.split("\n\n", 1)[1].split("positional arguments:")[0].split("options:")[0]
    for developer_words in ("``", "module", ".py", "the show", "importable"):
        assert developer_words not in description, (developer_words, description)
    assert f"tinyconv {name} " in text


def test_export_warnings_go_to_stderr(tmp_path):
    """A warning is for the person or the CI log, not mixed into the table a script parses."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    graph = helper.make_graph(  # a conv without bias fed zeros: every tensor is all zeros
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "zeros",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]),
              tmp_path / "net.onnx")
    np.savez(tmp_path / "calib.npz", x=np.zeros((4, 1, 6, 6), np.float32))
    done = subprocess.run([sys.executable, "-m", "tinyconv.cli", "export",
                           str(tmp_path / "net.onnx"), "--calibration",
                           str(tmp_path / "calib.npz"), "--out", str(tmp_path / "exp")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "warning:" not in done.stdout, done.stdout
    assert "tinyconv export: warning: tensor" in done.stderr, done.stderr
