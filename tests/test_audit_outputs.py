"""An output never replaces what the command reads, nor a folder of the user's (audit).

Found by trying what a user types: `run --output` naming the --input dataset (or the export's
model.tcm) replaced it with the results, `verify --json` naming the dataset did the same after
the run, and `report --out` naming a folder that merely holds an index.html (a web site, notes
beside it) deleted everything in it. Each test failed before the fix. The real command line,
in process, on real files; nothing may be changed when the command refuses."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import _host_device as hd
from tinyconv.cli import main


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit_outputs")
    exp = hd.export_small_cnn(root / "exp")
    data = hd.save_images(root / "test.npz", hd.images(6), y=[0, 1, 2, 3, 4, 5])
    return exp, data


def snapshot(*paths: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in paths}


def refused(capsys, argv, *kept: Path, says: str) -> None:
    before = snapshot(*kept)
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and says in errors[0] and "Traceback" not in err, err
    assert snapshot(*kept) == before


def test_run_output_may_not_be_its_input(project, capsys):
    exp, data = project
    refused(capsys, ["run", exp, "--input", data, "--output", data], data, says="--input")


def test_run_output_may_not_be_a_link_to_its_input(project, tmp_path, capsys):
    exp, data = project
    (tmp_path / "alias.npz").symlink_to(data)
    os.link(data, tmp_path / "hard.npz")
    for alias in ("alias.npz", "hard.npz"):
        refused(capsys, ["run", exp, "--input", data, "--output", tmp_path / alias], data,
                says="--input")


@pytest.mark.parametrize("artifact", ["model.tcm", "model.q.onnx", "model_data.c"])
def test_run_output_may_not_replace_an_export_artifact(project, capsys, artifact):
    exp, data = project
    refused(capsys, ["run", exp, "--input", data, "--output", exp / artifact],
            exp / artifact, says=artifact)
    refused(capsys, ["run", exp / "model.tcm", "--input", data, "--output", exp / artifact],
            exp / artifact, says=artifact)


def test_run_output_beside_the_export_is_fine(project, capsys):
    exp, data = project
    assert main(["run", str(exp), "--input", str(data), "--output", str(exp / "y.npz")]) == 0
    assert (exp / "y.npz").is_file()
    (exp / "y.npz").unlink()


@pytest.mark.parametrize("which", ["input", "model.tcm", "manifest"])
def test_verify_json_may_not_replace_its_input_or_the_export(project, capsys, which):
    """Refused before any device is started: nothing to build, nothing to wait for."""
    exp, data = project
    target = {"input": data, "model.tcm": exp / "model.tcm",
              "manifest": exp / ".tinyconv-export.json"}[which]
    refused(capsys, ["verify", exp, "--input", data, "--json", target], target,
            says="elsewhere")


def test_report_out_may_not_wipe_a_folder_that_only_has_an_index_html(project, tmp_path,
                                                                        capsys):
    exp, data = project
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>my project</h1>\n")
    (site / "notes.txt").write_text("keep me\n")
    refused(capsys, ["report", exp, "--input", data, "--out", site, "--images", "1"],
            site / "index.html", site / "notes.txt", says="notes.txt")
    assert sorted(p.name for p in site.iterdir()) == ["index.html", "notes.txt"]


def test_an_output_through_a_symlink_writes_its_target_and_keeps_the_link(project, tmp_path,
                                                                            capsys):
    """`--output latest.npz` where latest.npz -> runs/today.npz: before, the link was replaced
    by a plain file and runs/today.npz kept its old contents."""
    exp, data = project
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "today.npz").write_bytes(b"old")
    (tmp_path / "latest.npz").symlink_to(Path("runs") / "today.npz")
    assert main(["run", str(exp), "--input", str(data), "--output",
                 str(tmp_path / "latest.npz"), "-q"]) == 0
    assert (tmp_path / "latest.npz").is_symlink()
    assert (tmp_path / "runs" / "today.npz").read_bytes()[:2] == b"PK"  # the .npz (a zip)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["today.npz"]


def test_report_out_through_a_symlink_is_refused_not_replaced(project, tmp_path, capsys):
    """Before, the link was moved aside and a real folder put in its place (the link lost, its
    target never written) after all the work; now one line naming the target, at once."""
    exp, data = project
    (tmp_path / "reports" / "today").mkdir(parents=True)
    (tmp_path / "latest").symlink_to(Path("reports") / "today")
    refused(capsys, ["report", exp, "--input", data, "--out", tmp_path / "latest"],
            says="symbolic link")
    assert (tmp_path / "latest").is_symlink()
