"""``tinyconv report``: quantization accuracy tables and pictures of what the filters see."""
from __future__ import annotations


def register(subparsers) -> None:
    """Added once the report command is complete (see tinyconv/report/)."""
