"""One thread for BLAS and OpenMP pools, where running on many cores only makes things slower.

tinyconv's numpy work is small matrices next to other busy threads (the device link, a demo's
training loop on a shared two-core machine): pools spreading over every core fight each other
and, for training, change the summation order from run to run.
"""
from __future__ import annotations

import contextlib


def one_blas_thread():
    """A context manager limiting every native thread pool to one thread while it is open; a
    no-op when threadpoolctl (which comes with scikit-learn) is not installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)
