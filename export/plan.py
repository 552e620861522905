"""The activation arena: one static buffer on the device, offsets planned here once.

A tensor lives from the layer that writes it (the input: from the start) to the last layer that
reads it (the output: to the end). Tensors are placed greedily, largest first, at the lowest
offset that does not overlap any tensor alive at the same time (the TFLite Micro greedy planner
idea). The result is never worse than the largest set of tensors alive at once rounded up to
alignment per tensor, which for a plain chain is the largest input+output pair.
"""
from __future__ import annotations

from runtime.model import QuantModel

ALIGN = 4  # bytes: lets a C kernel read int8 activations as words


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def lifetimes(model: QuantModel) -> dict[str, tuple[int, int]]:
    """tensor -> (first step, last step) in layer indices; the input is written at step -1."""
    last = len(model.layers)
    spans = {model.input: [-1, -1]}
    for step, layer in enumerate(model.layers):
        for name in layer.inputs:
            spans[name][1] = step
        spans[layer.output] = [step, step]
    spans[model.output][1] = last
    return {name: (a, b) for name, (a, b) in spans.items()}


def lower_bound(model: QuantModel) -> int:
    """The most bytes alive at any one step: no plan can use less."""
    spans = lifetimes(model)
    steps = range(-1, len(model.layers) + 1)
    return max(sum(_align(model.tensors[n].size) for n, (a, b) in spans.items() if a <= s <= b)
               for s in steps)


def plan_arena(model: QuantModel) -> QuantModel:
    """Fill every ``TensorSpec.offset`` and ``model.arena_size`` in place; return the model."""
    spans = lifetimes(model)
    order = sorted(spans, key=lambda n: (-model.tensors[n].size, spans[n][0]))
    placed: list[tuple[int, int, str]] = []  # (offset, end, name)
    for name in order:
        size, (start, stop) = _align(model.tensors[name].size), spans[name]
        busy = sorted((o, e) for o, e, other in placed
                      if not (spans[other][1] < start or stop < spans[other][0]))
        offset = 0
        for o, e in busy:
            if offset + size <= o:
                break
            offset = max(offset, e)
        placed.append((offset, offset + size, name))
        model.tensors[name].offset = offset
    model.arena_size = max(end for _, end, _ in placed)
    return model


def free_gap(model: QuantModel, step: int, size: int) -> tuple[int, int] | None:
    """The lowest run of the arena (offset, length; aligned) of at least ``size`` bytes that no
    tensor alive at ``step`` overlaps, in a planned model, or None: a kernel's working room
    that costs no RAM, as the arena is sized for its busiest step and most steps leave part of
    it unused."""
    spans = lifetimes(model)
    busy = sorted((model.tensors[n].offset, model.tensors[n].offset + _align(model.tensors[n].size))
                  for n, (a, b) in spans.items() if a <= step <= b)
    offset = 0
    for start, end in busy + [(model.arena_size, model.arena_size)]:
        if offset + size <= start:
            return offset, start - offset
        offset = max(offset, end)
    return None
