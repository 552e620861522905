"""The demo's data: scikit-learn's handwritten digits, split the same way on every run.

The 1797 images ship inside scikit-learn (no download). They are 8x8 with 17 grey levels; we
scale them to [0, 1] and upsample them to 16x16 by bilinear interpolation, so the feature maps
in the report are big enough to look at and the network still trains in seconds.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.errors import TinyconvError

SIDE = 16  # the network's input is 1 x SIDE x SIDE (NCHW)
SPLIT_SEED = 0
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Digits:
    """Float32 NCHW images in [0, 1] and int64 labels, split into train and test."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def upsample_bilinear(images: np.ndarray, side: int) -> np.ndarray:
    """Resize ``[N, h, w]`` images to ``[N, side, side]`` with corner-aligned bilinear
    interpolation (each output pixel mixes its four nearest input pixels)."""
    images = np.asarray(images, dtype=np.float64)
    _, h, w = images.shape

    def weights(n_in: int) -> np.ndarray:
        pos = np.linspace(0.0, n_in - 1, side)
        lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
        frac = pos - lo
        matrix = np.zeros((side, n_in))
        matrix[np.arange(side), lo] = 1.0 - frac
        matrix[np.arange(side), lo + 1] = frac
        return matrix

    rows, cols = weights(h), weights(w)
    return np.einsum("yh,nhw,xw->nyx", rows, images, cols)


def load_digits(side: int = SIDE) -> Digits:
    """The fixed, stratified 80/20 split of scikit-learn's digits, as ``[N, 1, side, side]``."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
        from sklearn.model_selection import train_test_split
    except ModuleNotFoundError:
        raise TinyconvError("the demo needs scikit-learn: pip install 'tinyconv[demo]'") from None
    bunch = sklearn_digits()
    images = bunch.images / 16.0
    if side != images.shape[1]:
        images = upsample_bilinear(images, side)
    x = images[:, None, :, :].astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)
    return Digits(x_train, y_train, x_test, y_test)
