"""export/plan.py free_gap, the arena room a kernel may borrow at one step, against a
byte-map built from the planned tensors: the gap starts at the lowest aligned offset where the
bytes are free of every tensor alive at that step, runs to the next byte that is not (or the
arena's end), and is None exactly when no such offset exists."""
from __future__ import annotations

import numpy as np
import pytest
from _firmware_models import random_model

from export.plan import ALIGN, free_gap, lifetimes

SPEC = ((8, 8, 4), [
    dict(op="conv2d", out=16, kernel=(1, 1), relu=True),
    dict(op="max_pool2d", kernel=(2, 2)),
    dict(op="conv2d", out=16, kernel=(3, 3), groups=16, padding=(1, 1, 1, 1)),
    dict(op="conv2d", out=16, kernel=(1, 1)),
    dict(op="add", **{"with": 2}),  # tensor 2: the pool's output, alive across the step
])


def _free_bytes(model, step: int) -> np.ndarray:
    free = np.ones(model.arena_size, bool)
    for name, (first, last) in lifetimes(model).items():
        if first <= step <= last:
            t = model.tensors[name]
            free[t.offset:t.offset + t.size] = False
    return free


@pytest.mark.parametrize("size", [4, 96, 256, 700, 2000])
def test_free_gap_is_the_lowest_free_aligned_run(size):
    model = random_model(np.random.default_rng(0), *SPEC, "fixed")
    for step in range(len(model.layers)):
        free = _free_bytes(model, step)
        starts = [o for o in range(0, model.arena_size - size + 1, ALIGN)
                  if free[o:o + size].all()]
        expected = None
        if starts:
            busy = np.flatnonzero(~free[starts[0]:])
            expected = starts[0], int(busy[0]) if busy.size else model.arena_size - starts[0]
        assert free_gap(model, step, size) == expected, (step, size)
