"""Set-up installs what each command needs (issue 11, item 16): the demo trains in numpy, so
scripts/demo.sh asks for the ``demo`` extra only (no TensorFlow, no PyTorch: 2.8 GB less);
scripts/test.sh asks for every extra pyproject.toml defines; CI runs scripts/test.sh. The real
scripts run in a child bash in dry-run mode (they print their plan and stop), so nothing is
installed by the test."""
from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def plan(script: str, tmp_path: Path) -> set[str]:
    """The extras ``script`` would install into a fresh venv."""
    done = subprocess.run(["bash", str(ROOT / "scripts" / script), "--device", "host"],
                          env={**os.environ, "TINYCONV_SETUP_DRY_RUN": "1",
                               "TINYCONV_VENV": str(tmp_path / "venv")},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = re.search(r"pip install -e .*\[([\w,]*)\]", done.stderr)
    assert found, done.stderr
    assert not (tmp_path / "venv").exists()  # a dry run creates nothing
    return set(found.group(1).split(","))


def extras() -> set[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(pyproject["project"]["optional-dependencies"])


def test_the_demo_installs_only_the_demo_extra(tmp_path):
    assert plan("demo.sh", tmp_path) == {"demo"}
    heavy = tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "project"]["optional-dependencies"]["demo"]
    assert not any(name.startswith(("torch", "tensorflow")) for name in heavy)


def test_the_tests_install_every_extra(tmp_path):
    assert plan("test.sh", tmp_path) == extras()


def test_ci_runs_the_test_script():
    assert "exec bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
