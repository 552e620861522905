"""What the model costs on the device: per-layer MACs and bytes, flash and RAM totals.

MACs are ``runtime.model.layer_macs``: multiply-accumulates by weights (conv2d and
fully_connected); pools and add count 0, exactly as the device's ``TC_TOTAL_MACS`` and so
verify's ticks per MAC. Flash is every constant array the device stores (weights, biases,
requantization and pool/add constants); RAM is the planned activation arena. ``tflm`` is
TFLite Micro's measured arena for the same model (export/tflm_arena.py), or why it is not known.
``report.json`` holds the same numbers the printed table shows.
"""
from __future__ import annotations

import numpy as np

from runtime.model import QuantModel, layer_macs


def build_report(model: QuantModel) -> dict:
    rows = []
    for layer in model.layers:
        rows.append({
            "name": layer.name, "op": layer.op,
            "input_shapes": [list(model.tensors[n].shape) for n in layer.inputs],
            "output_shape": list(model.tensors[layer.output].shape),
            "macs": layer_macs(model, layer),
            "weight_bytes": int(sum(np.asarray(a).nbytes for a in layer.arrays.values())),
            "activation_bytes": int(model.tensors[layer.output].size),
        })
    return {
        "name": model.name, "hash": model.hash, "requant_mode": model.requant_mode,
        "input": {"name": model.input, "shape": list(model.input_spec.shape),
                  "scale": model.input_spec.scale, "zero_point": model.input_spec.zero_point},
        "output": {"name": model.output, "shape": list(model.output_spec.shape),
                   "scale": model.output_spec.scale,
                   "zero_point": model.output_spec.zero_point},
        "layers": rows,
        "totals": {"macs": sum(r["macs"] for r in rows),
                   "flash_bytes": sum(r["weight_bytes"] for r in rows),
                   "ram_bytes": int(model.arena_size)},
        "warnings": list(model.metadata.get("warnings", [])),
    }


def format_report(report: dict) -> str:
    """The report as a fixed-width table for the terminal."""
    head = ("layer", "op", "output", "MACs", "weights B", "act B")
    rows = [(r["name"], r["op"], "x".join(map(str, r["output_shape"])), f"{r['macs']:,}",
             f"{r['weight_bytes']:,}", f"{r['activation_bytes']:,}") for r in report["layers"]]
    widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(len(head))]
    line = "  ".join("{:<%d}" % w if i < 3 else "{:>%d}" % w for i, w in enumerate(widths))
    t = report["totals"]
    out = [line.format(*head), line.format(*("-" * w for w in widths))]
    out += [line.format(*row) for row in rows]
    out.append(f"model {report['name']} ({report['requant_mode']} requantization, hash "
               f"{report['hash']}): {t['macs']:,} MACs, flash {t['flash_bytes']:,} B, "
               f"RAM (arena) {t['ram_bytes']:,} B")
    tflm = report.get("tflm")
    if tflm is not None:
        out.append(tflm_line(tflm, t["ram_bytes"]))
    out += [f"warning: {w}" for w in report["warnings"]]
    return "\n".join(out)


def tflm_line(tflm: dict, arena: int) -> str:
    """TFLite Micro's arena beside tinyconv's, or why it is not known (report.json "tflm")."""
    if tflm.get("arena_bytes") is None:
        return f"TFLite Micro arena: not measured ({tflm.get('reason', 'unknown')})"
    line = (f"TFLite Micro arena {tflm['arena_bytes']:,} B (head {tflm['head_bytes']:,} B: "
            f"activations and scratch) vs tinyconv's {arena:,} B")
    if not tflm.get("exact", True):
        line += "; TFLM computes some layers differently, no model.tflite written"
    return line
