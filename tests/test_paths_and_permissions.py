"""Paths and permissions a user really has (issue 11, items 9 and 10).

A folder with a space and non-ASCII letters in its name exports, builds (host and an ARM board)
and verifies like any other; an export in a folder the user cannot write builds in the cache
instead, and a command that must write there ends in one line and exit 2. Every command is the
real CLI in a child process; the read-only case runs it as the unprivileged user ``nobody``
(via setpriv) on root-owned files, since root ignores file permissions.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import export
from test_verify_host import small_cnn

ROOT = Path(__file__).resolve().parents[1]


def tinyconv(*args, user: str | None = None, env: dict | None = None,
             timeout: float = 180) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tinyconv.cli", *map(str, args)]
    if user == "nobody":
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def one_line_error(done: subprocess.CompletedProcess, command: str) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith(f"tinyconv {command}:")]
    assert len(errors) == 1, done.stderr
    return errors[0]


@pytest.fixture(scope="module")
def spaced(tmp_path_factory):
    """An export and its inputs in ".../my models/ünïcødé exp", made by the real CLI."""
    root = tmp_path_factory.mktemp("paths") / "my models"
    root.mkdir()
    x = np.random.default_rng(5).random((12, 1, 12, 12)).astype(np.float32)
    np.savez(root / "data à.npz", x=x)
    import onnx

    onnx.save(small_cnn(1), root / "net 1.onnx")
    out = root / "ünïcødé exp"
    done = tinyconv("export", root / "net 1.onnx", "--calibration", root / "data à.npz",
                    "--out", out)
    assert done.returncode == 0, done.stderr
    return out, root / "data à.npz"


def test_a_path_with_spaces_and_unicode_builds_for_the_host_and_verifies(spaced):
    out, data = spaced
    built = tinyconv("build", out)
    assert built.returncode == 0, built.stderr
    assert (out / "firmware" / "host" / "tinyconv-device").is_file()
    checked = tinyconv("verify", out, "--input", data)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "PASS" in checked.stdout and "12 " in checked.stdout


def test_a_path_with_spaces_and_unicode_builds_for_an_arm_board_and_verifies(spaced, arm_tools):
    out, data = spaced
    built = tinyconv("build", out, "--target", "lm3s6965evb")
    assert built.returncode == 0, built.stderr
    assert (out / "firmware" / "lm3s6965evb" / "firmware.elf").is_file()
    assert "flash" in built.stdout
    checked = tinyconv("verify", out, "--input", data, "--device", "lm3s6965evb")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "PASS" in checked.stdout


@pytest.fixture(scope="module")
def read_only():
    """An export and its inputs that ``nobody`` can read but not write (root owns them)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the CLI as an unprivileged user")
    root = Path(tempfile.mkdtemp(prefix="tinyconv-ro-", dir="/tmp"))
    try:
        x = np.random.default_rng(6).random((10, 1, 12, 12)).astype(np.float32)
        np.savez(root / "data.npz", x=x)
        out = export.from_onnx(small_cnn(2), x, name="ro").save(root / "exp")
        cache = root / "cache"
        cache.mkdir()
        os.chown(cache, 65534, 65534)
        for path in [root, *root.rglob("*")]:
            mode = path.stat().st_mode
            path.chmod(mode | stat.S_IRGRP | stat.S_IROTH
                       | (stat.S_IXGRP | stat.S_IXOTH if path.is_dir() else 0))
        probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                "touch", str(out / "probe")], capture_output=True)
        assert probe.returncode != 0, "nobody can write the export: the test proves nothing"
        yield out, root / "data.npz", {"HOME": "/nonexistent", "TINYCONV_CACHE": str(cache),
                                       "MPLCONFIGDIR": str(cache / "mpl")}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_read_only_export_builds_in_the_cache_and_verifies(read_only):
    out, data, env = read_only
    built = tinyconv("build", out, user="nobody", env=env)
    assert built.returncode == 0, built.stderr
    binary = Path(built.stdout.split(": ", 1)[1].strip())
    assert binary.is_file() and str(binary).startswith(env["TINYCONV_CACHE"])
    assert not (out / "firmware").exists()
    assert tinyconv("build", out).returncode == 0  # its owner builds it there: still read-only
    checked = tinyconv("verify", out, "--input", data, user="nobody", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "PASS" in checked.stdout


def test_writing_into_a_read_only_folder_is_one_line_and_exit_2(read_only):
    out, data, env = read_only
    line = one_line_error(tinyconv("export", out / "model.onnx", "--calibration", data,
                                   "--out", out / "again", user="nobody", env=env), "export")
    assert "Permission denied" in line and str(out) in line
    line = one_line_error(tinyconv("verify", out, "--input", data, "--json",
                                   out / "verify.json", user="nobody", env=env), "verify")
    assert "verify.json" in line and ("Permission denied" in line or "not a writable" in line)
