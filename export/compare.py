"""Per-layer comparison: runtime/ against onnxruntime running model.q.onnx, tensor by tensor.

Both sides name tensors by their ONNX names (the QuantModel keeps them), so the first layer
whose output differs is the one to look at; everything after it inherits the difference.
"""
from __future__ import annotations

import numpy as np
import onnx

import runtime
from export.qonnx import run_qonnx
from runtime.model import QuantModel


def compare_layers(model: QuantModel, q_onnx: onnx.ModelProto, x: np.ndarray) -> list[dict]:
    """One row per layer: its output tensor, the largest |difference| in int8 steps and how
    many values differ, for float input ``x`` in the ONNX model's own layout."""
    expected = run_qonnx(q_onnx, model, x, collect=True)
    x_q = expected[model.input]  # onnxruntime's QuantizeLinear, so both sides start equal
    _, got = runtime.run(model, x_q, collect=True)
    rows = []
    for layer in model.layers:
        a = got[layer.output].astype(np.int16)
        b = expected[layer.output].astype(np.int16)
        diff = np.abs(a - b)
        rows.append({"layer": layer.name, "op": layer.op, "tensor": layer.output,
                     "max_lsb": int(diff.max()) if diff.size else 0,
                     "mismatches": int(np.count_nonzero(diff)), "values": int(diff.size)})
    return rows


def first_mismatch(rows: list[dict]) -> dict | None:
    return next((row for row in rows if row["mismatches"]), None)


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'layer':<20} {'op':<16} {'max LSB':>7} {'differ':>12}"]
    for r in rows:
        lines.append(f"{r['layer']:<20} {r['op']:<16} {r['max_lsb']:>7} "
                     f"{r['mismatches']:>6}/{r['values']:<6}")
    return "\n".join(lines)


__all__ = ["compare_layers", "first_mismatch", "format_rows"]
