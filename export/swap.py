"""Replacing an export in place, so that a process killed at any instant loses nothing.

save() writes the new artifacts into a hidden folder, then swaps: the old artifacts move into a
hidden ``.tinyconv-old-*`` folder, the new ones move in, the manifest last (the commit point),
and the old folder is emptied. Each rename is atomic, but a process killed between two of them
(SIGKILL, the OOM killer, a power cut) leaves a half-swapped directory. So, before the first
move, a journal in the old folder names every move, and the next export into that directory
settles what it finds (``recover``): a swap whose manifest landed is finished (the old folder
emptied), any other is undone (the new artifacts back into their folder, the old ones back in
place), and leftover new-artifact folders are removed. Every step is a rename, or the removal
of a file that a journal or tinyconv's own folder names mark as tinyconv's, and every step may
be repeated, so recovery that is itself killed is recovered the same way.

A flock on the directories an export creates folders in keeps a second export from settling
the first one's swap while it still runs.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent exports are the user's to avoid
    fcntl = None

MANIFEST = ".tinyconv-export.json"  # the names of the artifacts export wrote into a directory
OLD_PREFIX = ".tinyconv-old-"
JOURNAL = ".tinyconv-swap.json"
_RANDOM = 8  # the length of tempfile.mkdtemp's random part


def new_prefix(target: Path) -> str:
    """The new artifacts' folder: inside ``target`` when it exists, else beside it."""
    return f".{target.name}.tmp-"


@contextmanager
def locked(*directories: Path):
    """Hold an exclusive flock on each of ``directories`` that exists, taken in the order
    given (ancestors first, so two exports never wait for each other in a cycle)."""
    with ExitStack() as stack:
        for directory in dict.fromkeys(directories) if fcntl is not None else ():
            try:
                fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            except OSError:  # missing (nothing of ours there yet) or unreadable
                continue
            stack.callback(os.close, fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # a file system without locks: as on Windows
                pass
        yield


def swap(new: Path, target: Path, names, owned: set[str]) -> None:
    """Move the ``owned`` artifacts of ``target`` aside and ``names`` in from ``new``, then
    settle it as ``recover`` settles a crashed one: completed when the manifest landed, else
    (an error on the way, Ctrl-C) undone."""
    old = Path(tempfile.mkdtemp(dir=target, prefix=OLD_PREFIX))
    journal = {"new": new.name,
               "out": [n for n in sorted(owned) if os.path.lexists(target / n)],
               "in": [n for n in names if n != MANIFEST] + [MANIFEST]}
    try:
        (old / JOURNAL).write_text(json.dumps(journal) + "\n")
        for name in journal["out"]:
            os.replace(target / name, old / name)
        for name in journal["in"]:
            os.replace(new / name, target / name)
    finally:
        _settle(target, old)


def recover(target: Path) -> None:
    """Settle what exports killed mid-way left in ``target`` (and beside it, for a first
    export into a new directory). Call it holding ``locked(target.parent, target)``."""
    if target.is_dir():
        for old in _ours(target, OLD_PREFIX):
            _settle(target, old)
    for place in (target, target.parent):
        for folder in _ours(place, new_prefix(target)):
            _clear(folder)


def _ours(place: Path, prefix: str) -> list[Path]:
    """The folders in ``place`` that tinyconv's tempfile.mkdtemp(prefix=...) named."""
    if not place.is_dir():
        return []
    return sorted(Path(e.path) for e in os.scandir(place)
                  if e.name.startswith(prefix) and len(e.name) == len(prefix) + _RANDOM
                  and e.is_dir(follow_symlinks=False))


def _settle(target: Path, old: Path) -> None:
    """Finish the swap that ``old`` journals if its manifest is in place, else undo it."""
    journal = _read_journal(old)
    if journal is None:  # a tinyconv before the journal (its swap too moved the manifest last)
        new, moved_in = None, []
        moved_out = sorted(e.name for e in os.scandir(old) if e.name != JOURNAL)
    else:
        new, moved_in, moved_out = target / journal["new"], journal["in"], journal["out"]
    done = os.path.lexists(target / MANIFEST) and not (
        new is not None and os.path.lexists(new / MANIFEST))
    if done:
        for name in moved_out:
            _remove_file(old / name)
    else:
        for name in moved_in:
            if not os.path.lexists(new / name) and os.path.lexists(target / name):
                new.mkdir(exist_ok=True)
                os.replace(target / name, new / name)
        for name in moved_out:  # without a journal, what moved in is not known: put over it
            if os.path.lexists(old / name) and (
                    journal is None or not os.path.lexists(target / name)):
                os.replace(old / name, target / name)
    _remove_file(old / JOURNAL)  # the journal goes before the new folder: it is the evidence
    _remove_dir(old)
    if new is not None and new.is_dir() and not new.is_symlink():
        _clear(new)


def _clear(folder: Path) -> None:
    for entry in os.scandir(folder):
        _remove_file(Path(entry.path))
    _remove_dir(folder)


def _read_journal(old: Path) -> dict | None:
    """The journal, or None when it is missing or damaged (then nothing had moved yet, or a
    tinyconv before the journal made the swap)."""
    try:
        journal = json.loads((old / JOURNAL).read_text())
        names = [journal["new"], *journal["in"], *journal["out"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not all(isinstance(n, str) and n == Path(n).name and n not in ("", ".", "..")
               for n in names) or not _is_new_folder(journal["new"]):
        return None
    return journal


def _is_new_folder(name: str) -> bool:
    """Named as ``new_prefix`` names one (for any directory name: it may have been renamed)."""
    return name.startswith(".") and name[-_RANDOM - 5:-_RANDOM] == ".tmp-"


def _remove_file(path: Path) -> None:
    """Remove a file (or symbolic link); a directory is never tinyconv's, so it stays."""
    if os.path.lexists(path) and not (path.is_dir() and not path.is_symlink()):
        os.unlink(path)


def _remove_dir(path: Path) -> None:
    try:
        os.rmdir(path)
    except OSError:  # gone, or not empty: what is left in it is not tinyconv's to remove
        pass
