"""Signal-to-quantization-noise ratio: how far int8 results are from their float reference.

It lives at the bottom of the house because both the quantization report (tinyconv/report) and
the host tool's summary (firmware_host) score results with it.
"""
from __future__ import annotations

import math

import numpy as np


class SqnrAccumulator:
    """SQNR over a stream of batches: the sums of ``sqnr_db`` kept across calls to ``add``, so
    ``tinyconv verify`` can score a million images without holding them."""

    def __init__(self) -> None:
        self.signal = 0.0
        self.noise = 0.0

    def add(self, reference: np.ndarray, test: np.ndarray) -> "SqnrAccumulator":
        reference = np.asarray(reference, dtype=np.float64)
        self.signal += float(np.sum(reference ** 2))
        self.noise += float(np.sum((reference - np.asarray(test, dtype=np.float64)) ** 2))
        return self

    @property
    def db(self) -> float:
        """``10 log10(signal / noise)``; infinite when every test value equalled its
        reference, minus infinity when the reference was all zeros and the test was not."""
        if self.noise == 0.0:
            return math.inf
        if self.signal == 0.0:
            return -math.inf
        return 10.0 * math.log10(self.signal / self.noise)


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio, ``10 log10(sum(ref^2) / sum((ref - test)^2))``;
    infinite when the two are equal."""
    return SqnrAccumulator().add(reference, test).db
