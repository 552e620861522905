"""A re-export killed with SIGKILL at any step of replacing the previous export loses nothing.

Before, a kill between moving the old artifacts aside and removing the aside folder left a
hidden `.tinyconv-old-*` folder in the user's directory, and a kill mid-swap left the old
artifacts only there: the directory held half an export, and nothing ever put it back.

Each case runs `tinyconv export` (the command line's main) in a forked child, which SIGKILLs
itself just before the k-th step of one phase (a rename inside the new-artifacts folder, a
move out of or into the export directory, a removal in the aside folder): the real code,
killed by the real signal, leaves exactly the state it leaves. The test then checks the damage
is there, and that (a) recovery, which the next export runs first, restores the previous
export when the swap had not committed (its manifest not in place) or completes it when it
had, and (b) re-running the export succeeds; both leave the user's files, decoys named like
tinyconv's folders among them, byte for byte, and no hidden folder of tinyconv's."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from _host_device import tinyconv
from export.swap import MANIFEST, locked, recover
from tests.test_export_cli import small_model
from tinyconv.cli import main

NAME = "exp"


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The model and calibration data, and each mode's export as a clean run writes it."""
    src = tmp_path_factory.mktemp("src")
    onnx.save(small_model(), src / "net.onnx")
    np.savez(src / "calib.npz",
             x=np.random.default_rng(2).normal(size=(10, 1, 8, 8)).astype(np.float32))
    main(["export", str(src / "net.onnx"), "--calibration", str(src / "calib.npz"), "--out",
          str(src / "warm"), "--quiet"])  # imports and warms what every forked child uses
    clean = {}
    for mode in ("fixed", "float"):
        assert run_export(src, src / mode, mode) is False
        clean[mode] = snapshot(src / mode)
    assert "model.tflite" in clean["fixed"] and "model.tflite" not in clean["float"]
    return src, clean


def run_export(src: Path, out: Path, mode: str, phase: str | None = None, k: int = 0) -> bool:
    """`tinyconv export --requant MODE --out OUT` in a forked child that SIGKILLs itself just
    before its k-th step of ``phase``: "write" (a rename inside the new-artifacts folder),
    "first" (that folder renamed to OUT), "swap" (a rename into or out of OUT), "clean" (a
    removal in an aside folder). True when it was killed, False when it exited 0."""
    target = Path(os.path.realpath(out))
    fd, log = tempfile.mkstemp(prefix="tinyconv-child-", suffix=".log")
    os.close(fd)
    log = Path(log)
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 97
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = sys.stderr = open(fd, "w", buffering=1, closefd=False)
            real_replace, real_unlink, seen = os.replace, os.unlink, [0]

            def step(kind):
                if kind == phase:
                    seen[0] += 1
                    if seen[0] == k:
                        os.kill(os.getpid(), signal.SIGKILL)

            def replace(a, b, **kw):
                a, b = Path(a), Path(b)
                if b == target:
                    step("first")
                elif target in (a.parent, b.parent):
                    step("swap")
                elif b.parent.name.startswith(f".{target.name}.tmp-"):
                    step("write")
                return real_replace(a, b, **kw)

            def unlink(path, **kw):
                if Path(path).parent.name.startswith(".tinyconv-old-"):
                    step("clean")
                return real_unlink(path, **kw)

            os.replace, os.unlink = replace, unlink
            code = main(["export", str(src / "net.onnx"), "--calibration",
                         str(src / "calib.npz"), "--out", str(out), "--requant", mode,
                         "--quiet"])
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code if isinstance(code, int) else 98)
    _, status = os.waitpid(pid, 0)
    output = log.read_text()
    log.unlink()
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL, output
        return True
    assert os.WEXITSTATUS(status) == 0, output
    return False


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder (None) under ``root``, hidden ones included."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
            for p in sorted(root.rglob("*"))}


def project(src: Path, root: Path, mode: str) -> Path:
    """``root/exp``: an export in ``mode``, and the user's files beside it, among them a folder
    and a file named almost or exactly like tinyconv's temporary folders."""
    exp = root / NAME
    assert run_export(src, exp, mode) is False
    (exp / "notes.txt").write_text("lr 0.01\n")
    (exp / "report").mkdir()
    (exp / "report" / "index.html").write_text("<h1>mine</h1>\n")
    (exp / f".{NAME}.tmp-mine").mkdir()  # not mkdtemp's name: the user's
    (exp / f".{NAME}.tmp-mine" / "keep.txt").write_text("keep\n")
    (exp / ".tinyconv-old-12345678").write_text("a file, not a folder of tinyconv's\n")
    (root / "beside.txt").write_text("beside\n")
    return exp


def expected(before: dict, clean: dict) -> dict:
    """``before`` (a project's snapshot) with its export replaced by the clean export."""
    kept = {k: v for k, v in before.items()
            if not (k.startswith(f"{NAME}/") and k[len(NAME) + 1:] in artifact_names(before))}
    return {**kept, **{f"{NAME}/{k}": v for k, v in clean.items()}}


def artifact_names(state: dict) -> set[str]:
    return {*json.loads(state[f"{NAME}/{MANIFEST}"])["artifacts"], MANIFEST}


def hidden_folders(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*")
                  if p.is_dir() and p.name != f".{NAME}.tmp-mine")


def settle(target: Path) -> None:
    """What every export does first."""
    with locked(target.parent, target):
        recover(target)


@pytest.mark.parametrize("before,after", [("float", "fixed"), ("fixed", "float")])
def test_a_reexport_killed_at_any_step_is_settled(sources, tmp_path, before, after):
    """Killed before each step; settled by recovery, and by running the export again."""
    src, clean = sources
    home = tmp_path / "home"
    project(src, home, before)
    pristine = snapshot(home)
    done = expected(pristine, clean[after])
    moves_out = len(artifact_names(pristine))
    moves = moves_out + len(clean[after])
    points = [("write", 1), ("write", 2)] + [("swap", k) for k in range(1, moves + 1)] \
        + [("clean", k) for k in range(1, moves_out + 1)]
    for phase, k in points:
        crashed = tmp_path / f"{phase}{k}"
        shutil.copytree(home, crashed, symlinks=True)
        assert run_export(src, crashed / NAME, after, phase, k), (phase, k)
        state = snapshot(crashed)
        assert hidden_folders(crashed), (phase, k)  # the crash left a folder of tinyconv's
        if phase == "swap" and k > 1:  # some of the previous export is only aside
            assert any(state.get(f"{NAME}/{n}") != pristine[f"{NAME}/{n}"]
                       for n in artifact_names(pristine)), (phase, k)
        again = tmp_path / f"{phase}{k}-again"
        shutil.copytree(crashed, again, symlinks=True)

        settle(crashed / NAME)
        assert snapshot(crashed) == (done if phase == "clean" else pristine), (phase, k)
        assert run_export(src, again / NAME, after) is False  # the user runs it again
        assert snapshot(again) == done, (phase, k)


def test_recovery_killed_at_any_step_is_settled(sources, tmp_path):
    """The next export, killed while it undoes a half swap, leaves a state the one after it
    undoes just the same."""
    src, clean = sources
    home = tmp_path / "home"
    project(src, home, "float")
    pristine = snapshot(home)
    moves_out = len(artifact_names(pristine))
    assert run_export(src, home / NAME, "fixed", "swap", moves_out + 3)  # 2 moved in
    crashed = snapshot(home)
    for k in range(1, 2 + moves_out + 2):  # every undo step, and one into the new swap
        work = tmp_path / f"undo{k}"
        shutil.copytree(home, work, symlinks=True)
        assert snapshot(work) == crashed
        assert run_export(src, work / NAME, "float", "swap", k), k
        settle(work / NAME)
        assert snapshot(work) == pristine, k


def test_a_first_export_killed_leaves_nothing_the_next_keeps(sources, tmp_path):
    """Into a new directory the new-artifacts folder is beside it until it is renamed."""
    src, clean = sources
    (tmp_path / "beside.txt").write_text("beside\n")
    for phase in ("write", "first"):
        out = tmp_path / phase / "deep" / NAME
        assert run_export(src, out, "float", phase, 1)
        assert not out.exists() and hidden_folders(tmp_path / phase)
        assert run_export(src, out, "float") is False
        assert snapshot(out) == clean["float"] and not hidden_folders(tmp_path / phase)
    assert (tmp_path / "beside.txt").read_text() == "beside\n"


def test_an_aside_folder_without_journal_is_settled(sources, tmp_path):
    """An aside folder an older tinyconv left (no journal): put back while the directory
    lacks a manifest, emptied when the manifest is in place."""
    src, clean = sources
    home = tmp_path / "home"
    project(src, home, "fixed")
    pristine = snapshot(home)
    for phase, k, want in (("swap", 4, pristine),
                           ("clean", 2, expected(pristine, clean["float"]))):
        work = tmp_path / f"{phase}{k}"
        shutil.copytree(home, work, symlinks=True)
        assert run_export(src, work / NAME, "float", phase, k)
        journals = list(work.glob(f"{NAME}/.tinyconv-old-*/.tinyconv-swap.json"))
        assert len(journals) == 1
        journals[0].unlink()
        shutil.rmtree(next(work.glob(f"{NAME}/.{NAME}.tmp-????????")))  # its copy too
        settle(work / NAME)
        assert snapshot(work) == want, phase


def test_the_command_line_settles_a_killed_reexport(sources, tmp_path):
    """`tinyconv export` in its own process, over directories killed mid-way out and mid-way
    in: exit 0, the new export, the user's files, nothing hidden left."""
    src, clean = sources
    home = tmp_path / "home"
    project(src, home, "fixed")
    pristine = snapshot(home)
    moves_out = len(artifact_names(pristine))
    for k in (3, moves_out + 4):
        work = tmp_path / f"swap{k}"
        shutil.copytree(home, work, symlinks=True)
        assert run_export(src, work / NAME, "float", "swap", k)
        done = tinyconv("export", src / "net.onnx", "--calibration", src / "calib.npz",
                        "--out", work / NAME, "--requant", "float", "--quiet")
        assert done.returncode == 0, done.stderr
        assert snapshot(work) == expected(pristine, clean["float"]), k


def test_a_running_export_is_not_settled_by_another(sources, tmp_path):
    """Two exports into one directory: the second waits for the first's lock instead of
    undoing the first one's swap under it."""
    src, clean = sources
    home = tmp_path / "home"
    project(src, home, "fixed")
    pristine = snapshot(home)
    first = os.fork()
    if first == 0:  # stops itself mid-swap, holding the lock
        real_replace, stops = os.replace, [1]

        def replace(a, b, **kw):
            if stops and Path(b).parent.name.startswith(".tinyconv-old-") and stops.pop():
                os.kill(os.getpid(), signal.SIGSTOP)
            return real_replace(a, b, **kw)

        os.replace, code = replace, 98
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            code = main(["export", str(src / "net.onnx"), "--calibration",
                         str(src / "calib.npz"), "--out", str(home / NAME),
                         "--requant", "float", "--quiet"])
        finally:
            os._exit(code)
    try:
        assert os.WIFSTOPPED(os.waitpid(first, os.WUNTRACED)[1]) and hidden_folders(home)
        stopped = snapshot(home)
        second = os.fork()
        if second == 0:
            os._exit(0 if run_export(src, home / NAME, "fixed") is False else 1)
        time.sleep(1.0)
        assert os.waitpid(second, os.WNOHANG) == (0, 0)  # still waiting for the lock
        assert snapshot(home) == stopped
    finally:
        os.kill(first, signal.SIGCONT)
    assert os.waitstatus_to_exitcode(os.waitpid(first, 0)[1]) == 0
    assert os.waitstatus_to_exitcode(os.waitpid(second, 0)[1]) == 0
    assert snapshot(home) == pristine  # the second export (fixed) replaced the first (float)
