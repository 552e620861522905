"""Read an array of a ``.npz`` file in batches, never holding more than one batch.

``np.load`` reads a whole member at once; a million images would not fit. A ``.npz`` is a zip
of ``.npy`` files, and an ``.npy`` is a small header followed by the rows in C order, so the
rows can be streamed out of the (possibly compressed) zip member.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from runtime.errors import TinyconvError


class NpzArray:
    """One member of a ``.npz``: ``shape`` and ``dtype`` at once, rows on demand."""

    def __init__(self, path: str | Path, key: str):
        self.path, self.key = Path(path), key
        try:
            with zipfile.ZipFile(self.path) as archive:
                names = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
                if key not in names:
                    raise TinyconvError(f"{self.path}: no array {key!r} (it has "
                                        f"{', '.join(names) or 'none'})")
                with archive.open(key + ".npy") as member:
                    self.shape, self.fortran_order, self.dtype = _read_header(member)
        except (OSError, zipfile.BadZipFile, ValueError) as exc:
            raise TinyconvError(f"cannot read {self.path}: {exc}") from None
        if self.dtype.hasobject:
            raise TinyconvError(f"{self.path}: array {key!r} holds Python objects")
        if not self.shape:
            raise TinyconvError(f"{self.path}: array {key!r} is a scalar, not a batch")

    def __len__(self) -> int:
        return self.shape[0]

    def batches(self, batch: int, limit: int | None = None) -> Iterator[np.ndarray]:
        count = len(self) if limit is None else min(limit, len(self))
        if self.fortran_order:  # rare; column-major rows are not contiguous, so read it whole
            with np.load(self.path, allow_pickle=False) as data:
                whole = data[self.key]
            for start in range(0, count, batch):
                yield np.ascontiguousarray(whole[start:min(start + batch, count)])
            return
        row = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        try:
            with zipfile.ZipFile(self.path) as archive, archive.open(self.key + ".npy") as member:
                _read_header(member)
                for start in range(0, count, batch):
                    rows = min(batch, count - start)
                    data = member.read(rows * row)
                    if len(data) != rows * row:
                        raise TinyconvError(f"{self.path}: array {self.key!r} is truncated")
                    yield np.frombuffer(data, dtype=self.dtype).reshape((rows,) + self.shape[1:])
        except (OSError, zipfile.BadZipFile) as exc:
            raise TinyconvError(f"cannot read {self.path}: {exc}") from None


def _read_header(member):
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(member)
    return np.lib.format.read_array_header_2_0(member)
