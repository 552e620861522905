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


# -- labels --------------------------------------------------------------------------------------
# run, verify and report score top-1 against labels 'y'; they read them through these two
# functions so that the same file gets the same answer (or the same refusal) everywhere.

def label_classes(model) -> int:
    """How many classes the model's output scores; only a vector output has top-1 labels."""
    shape = tuple(model.output_spec.shape)
    if len(shape) != 1:
        raise TinyconvError(f"--labels needs a model with a vector output; this one outputs "
                            f"{'x'.join(map(str, shape))}")
    return shape[0]


def class_labels(y, count: int, classes: int, source: str = "labels"
                 ) -> tuple[np.ndarray, str | None]:
    """``y`` as int64 class indices ``[count]`` and a note when it was converted.

    Accepted: integer indices ``[N]`` (or ``[N, 1]``) in ``0..classes-1``, and one-hot rows
    ``[N, classes]`` (any numeric type, exactly one 1 per row), which become their argmax and
    are said to. Strings, fractional or out-of-range labels are refused: scored as they are,
    they would give a silent 0 % (or a misleading figure)."""
    y = np.asarray(y)
    what = f"{source}: labels 'y'"
    if y.dtype.kind not in "biuf":
        kind = {"U": "strings", "S": "bytes", "O": "objects"}.get(y.dtype.kind, str(y.dtype))
        raise TinyconvError(f"{what} are {kind}; give integer class indices 0..{classes - 1}")
    note = None
    if y.ndim == 2 and y.shape[1] == classes and classes > 1:
        rows_ok = np.isin(y, (0, 1)).all() and bool((y.sum(axis=1) == 1).all())
        if not rows_ok:
            raise TinyconvError(f"{what} have shape {list(y.shape)} but are not one-hot rows "
                                "(exactly one 1 per row); give class indices [N]")
        y = y.argmax(axis=1)
        note = f"{what} are one-hot [{count}, {classes}]: scored against each row's 1"
    elif y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise TinyconvError(f"{what} have shape {list(y.shape)}; give class indices [N] "
                            f"(or one-hot [N, {classes}])")
    if len(y) != count:
        raise TinyconvError(f"{what}: {len(y)} labels for {count} inputs")
    if y.dtype.kind in "bf" and note is None:
        raise TinyconvError(f"{what} are {y.dtype}; give integer class indices "
                            f"0..{classes - 1} (e.g. y.astype(int) if they are whole numbers)")
    y = y.astype(np.int64)
    outside = np.flatnonzero((y < 0) | (y >= classes))
    if len(outside):
        i = int(outside[0])
        raise TinyconvError(f"{what}: label {y[i]} of input {i} is outside the model's "
                            f"{classes} classes (0..{classes - 1}); {len(outside)} such labels")
    return y, note


def read_labels(path, count: int, classes: int) -> tuple[np.ndarray, str | None]:
    """``class_labels`` of array ``y`` of the .npz at ``path`` (labels are small: read whole)."""
    ys = NpzArray(path, "y")
    parts = list(ys.batches(1 << 16))
    y = np.concatenate(parts) if parts else np.zeros((0,) + ys.shape[1:], ys.dtype)
    return class_labels(y, count, classes, str(path))
