"""``lookup``: an int8 -> int8 elementwise op as a 256-entry table (export/tables.py builds it).

``table`` is int8[256], or int8[C, 256] with one row per channel (the last axis of NHWC);
either way ``y = table[x + 128]``. Whatever the op was (sigmoid, leaky relu, ...) and whichever
requantization mode made the table, executing it is this one gather, on every executor.
"""
from __future__ import annotations

import numpy as np


def lookup(x: np.ndarray, table: np.ndarray, act_range=(-128, 127)) -> np.ndarray:
    """``table[x + 128]`` elementwise, then clamped to ``act_range`` (export already clamps
    the table, so this only matters for hand-made models); a 2-D table indexes its row by the
    channel (last axis)."""
    index = np.asarray(x, np.int8).astype(np.intp) + 128
    if table.ndim == 2:
        index += np.arange(table.shape[0], dtype=np.intp) * 256
    y = table.reshape(-1)[index]
    if tuple(act_range) != (-128, 127):
        y = np.clip(y, act_range[0], act_range[1]).astype(np.int8)
    return y
