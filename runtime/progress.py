"""Progress of long work (calibration, run, verify, report) on stderr, through tqdm.

On a terminal a tqdm bar with count, rate and ETA appears once the work has lasted ``delay``
seconds (at once with the environment variable FORCE_PROGRESS set, wherever stderr goes). Elsewhere (a log, a pipe) a bar would
be noise, but silence for a minute looks like a hang, so one short line names each stage when it
starts. ``--quiet`` on every subcommand (``set_quiet``) turns both off. Counts are images.

    for batch in progress(batches, total=len(inputs), label="tinyconv run", size=len):
        ...
"""
from __future__ import annotations

import os
import sys

_quiet = False


def set_quiet(quiet: bool) -> None:
    """Silence every bar and stage line of this process (the CLI's ``--quiet``)."""
    global _quiet
    _quiet = bool(quiet)


def stage(text: str, stream=None) -> None:
    """One line on stderr about a step that has no count, unless quiet."""
    if not _quiet:
        stream = stream or sys.stderr
        stream.write(text + "\n")
        stream.flush()


class Progress:
    """Counts done items; a tqdm bar on a terminal, one stage line otherwise."""

    def __init__(self, total: int | None, label: str = "", delay: float = 1.0, stream=None,
                 unit: str = "img"):
        stream = stream or sys.stderr
        self.bar = None
        if _quiet:
            return
        forced = bool(os.environ.get("FORCE_PROGRESS"))
        if forced or _isatty(stream):
            from tqdm import tqdm

            delay = 0 if forced else delay
            self.bar = tqdm(total=total, desc=label, unit=unit, file=stream, delay=delay,
                            mininterval=0.1, dynamic_ncols=True, leave=True)
        else:
            units = "images" if unit == "img" else unit + "s"
            count = units if total is None else f"{total} {units}"
            stage(f"{label}: {count} ...", stream)

    def update(self, count: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(count)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def progress(iterable, total: int | None = None, label: str = "", delay: float = 1.0,
             size=None, unit: str = "img"):
    """Yield from ``iterable`` with a Progress; ``size(item)`` is how many images an item
    holds (``len`` for batches), 1 by default."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    bar = Progress(total, label, delay, unit=unit)
    try:
        for item in iterable:
            yield item
            bar.update(size(item) if size else 1)
    finally:
        bar.close()
