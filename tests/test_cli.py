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
