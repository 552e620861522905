"""A dependency-free progress bar on stderr, shown only when it helps.

It appears once a loop has run for more than ``delay`` seconds (1 s) and only when stderr is a
terminal or the environment variable FORCE_PROGRESS is set, so logs and pipes stay clean.

    for batch in progress(batches, total=len(batches), label="run"):
        ...
"""
from __future__ import annotations

import os
import sys
import time


class Progress:
    """Count done items and redraw one stderr line at most ~10 times a second."""

    def __init__(self, total: int | None, label: str = "", delay: float = 1.0, stream=None):
        self.total, self.label, self.delay = total, label, delay
        self.stream = stream or sys.stderr
        self.enabled = bool(os.environ.get("FORCE_PROGRESS")) or self.stream.isatty()
        self.start = time.monotonic()
        self.done = 0
        self._last_draw = 0.0
        self._drawn = False

    def update(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if self.enabled and now - self.start >= self.delay and now - self._last_draw >= 0.1:
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total:
            fraction = min(self.done / self.total, 1.0)
            bar = "#" * int(fraction * 30)
            text = f"{self.label} [{bar:<30s}] {self.done}/{self.total} {rate:.1f}/s"
        else:
            text = f"{self.label} {self.done} {rate:.1f}/s"
        self.stream.write("\r" + text)
        self.stream.flush()
        self._last_draw, self._drawn = now, True

    def close(self) -> None:
        if self._drawn:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()


def progress(iterable, total: int | None = None, label: str = "", delay: float = 1.0):
    """Yield from ``iterable``, showing a bar after ``delay`` seconds (see the module doc)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    bar = Progress(total, label, delay)
    try:
        for item in iterable:
            yield item
            bar.update()
    finally:
        bar.close()
