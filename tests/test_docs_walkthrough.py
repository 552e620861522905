"""The README's "bring your own model" walkthrough runs as written, and docs/PORTING.md covers
the port a real board must provide (issue 11, item 17).

The walkthrough's commands are taken from README.md itself and run, in order, as child
processes on a user's files: an ONNX model and a .npz with x_train/y_train/x_test/y_test.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx

from test_verify_host import small_cnn

ROOT = Path(__file__).resolve().parents[1]


def walkthrough() -> list[list[str]]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Bring your own model", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\n(.*?)```", section, re.S).group(1)
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words:
            commands.append(words)
    return commands


def test_the_readme_walkthrough_runs_as_written(tmp_path, arm_tools):
    commands = walkthrough()
    assert [c[:2] for c in commands] == [["python", "-c"], ["tinyconv", "export"],
                                          ["tinyconv", "run"], ["tinyconv", "build"],
                                          ["tinyconv", "verify"], ["tinyconv", "report"]]
    rng = np.random.default_rng(8)
    onnx.save(small_cnn(3), tmp_path / "net.onnx")
    np.savez(tmp_path / "mine.npz", x_train=rng.random((40, 1, 12, 12)),
             y_train=rng.integers(0, 10, 40), x_test=rng.random((16, 1, 12, 12)),
             y_test=rng.integers(0, 10, 16))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for words in commands:
        program = [sys.executable] + (["-m", "tinyconv.cli"] if words[0] == "tinyconv" else [])
        done = subprocess.run(program + words[1:], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, (words, done.stdout[-2000:], done.stderr[-2000:])
        if words[1] == "verify":
            assert "PASS" in done.stdout
    assert (tmp_path / "build" / "net" / "report" / "index.html").is_file()


def test_porting_guide_names_every_port_function_and_the_steps():
    guide = (ROOT / "docs" / "PORTING.md").read_text()
    header = (ROOT / "firmware" / "src" / "tc_port.h").read_text()
    declared = re.findall(r"\b(tc_port_\w+)\s*[\(\[]", header)
    assert len(declared) == 5, declared
    for name in declared:
        assert f"`{name}" in guide or f" {name}" in guide, name
    for needed in ("board.mk", "firmware_host/boards.py", "pyocd flash", "openocd",
                   "verify build/net --input test.npz", "/dev/ttyACM0", "baud"):
        assert needed in guide, needed
    assert "docs/PORTING.md" in (ROOT / "README.md").read_text()
