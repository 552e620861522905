"""ONNX Concat, Pad, Resize/Upsample, Mul and Sub of activations -> the device's tensor ops.

Kept apart from export/onnx_import.py's ``_Mapper`` (which calls these with itself as
``mapper``) because each needs a few lines of ONNX attribute reading that say what the op
means in NHWC. Every refusal names the node and op in one line.
"""
from __future__ import annotations

import numpy as np

from export.onnx_common import _attrs, _shape

_COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                     "tf_half_pixel_for_nn")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional_const(mapper, node, index: int):
    if index < len(node.input) and node.input[index]:
        return mapper.const(node, index)
    return None


def _activations(mapper, node) -> list[str]:
    if any(name in mapper.params for name in node.input):
        raise mapper.unsupported(node, " with a constant operand (only of activations)")
    return list(node.input)


def map_concat(mapper, node) -> None:
    inputs = _activations(mapper, node)
    rank = len(_shape(mapper.model, node.output[0]))
    if rank != 4 or _attrs(node).get("axis") % 4 != 1:
        raise mapper.unsupported(node, f" on axis {_attrs(node).get('axis')} of a rank-{rank} "
                                       "tensor (only the channel axis of an NCHW map)")
    mapper.emit(node, "concat", inputs, node.output[0], fuse=False)


def map_pad(mapper, node) -> None:
    a = _attrs(node)
    mode = _text(a.get("mode", "constant"))
    if mode not in ("constant", "reflect", "edge"):
        raise mapper.unsupported(node, f" in mode {mode!r} (only constant, reflect, edge)")
    pads = _optional_const(mapper, node, 1)
    pads = np.asarray(a.get("pads", []) if pads is None else pads, np.int64).reshape(-1)
    value = _optional_const(mapper, node, 2)
    value = float(np.asarray(value).reshape(-1)[0]) if value is not None and np.size(value) \
        else float(a.get("value", 0.0))
    axes = _optional_const(mapper, node, 3)
    rank = len(_shape(mapper.model, node.input[0]))
    axes = list(range(rank)) if axes is None else [int(x) % rank for x in axes]
    full = np.zeros(2 * rank, np.int64)
    for k, axis in enumerate(axes):
        full[axis], full[rank + axis] = pads[k], pads[len(axes) + k]
    if rank != 4 or full[[0, 1, 4, 5]].any() or (full < 0).any():
        raise mapper.unsupported(node, f" with pads {full.tolist()} (only non-negative "
                                       "padding of H and W of an NCHW map)")
    pads = [int(full[2]), int(full[3]), int(full[6]), int(full[7])]
    conv = mapper.only_consumer(node.output[0])
    if mode == "constant" and value == 0.0 and conv is not None and conv.op_type == "Conv" and \
            conv.input[0] == node.output[0]:
        # padding with real 0 is the Conv's own padding (its input zero point): fold it
        mapper.alias[node.output[0]] = mapper.src(node.input[0])
        mapper.folded_pads[node.output[0]] = pads
        return
    mapper.emit(node, "pad", [node.input[0]], node.output[0], fuse=False,
                params={"pads": pads, "value": value, "mode": mode})


def nearest_indices(in_size: int, out_size: int, scale: float, coordinate: str,
                    nearest: str) -> np.ndarray:
    """ONNX Resize (mode nearest) along one axis: the input index each output index reads."""
    x = np.arange(out_size, dtype=np.float64)
    if coordinate == "half_pixel":
        orig = (x + 0.5) / scale - 0.5
    elif coordinate == "pytorch_half_pixel":
        orig = (x + 0.5) / scale - 0.5 if out_size > 1 else np.zeros_like(x)
    elif coordinate == "align_corners":
        orig = x * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros_like(x)
    elif coordinate == "asymmetric":
        orig = x / scale
    else:  # tf_half_pixel_for_nn
        orig = (x + 0.5) / scale
    if nearest == "floor":
        index = np.floor(orig)
    elif nearest == "ceil":
        index = np.ceil(orig)
    elif nearest == "round_prefer_ceil":
        index = np.floor(orig + 0.5)
    else:  # round_prefer_floor
        index = np.ceil(orig - 0.5)
    return np.clip(index, 0, in_size - 1).astype(np.int32)


def map_resize(mapper, node) -> None:
    a = _attrs(node)
    mode, coordinate, nearest = (_text(a.get(k, d)) for k, d in (
        ("mode", "nearest"), ("coordinate_transformation_mode", "half_pixel"),
        ("nearest_mode", "round_prefer_floor")))
    if mode != "nearest" or coordinate not in _COORDINATE_MODES or nearest not in \
            _NEAREST_MODES or a.get("antialias", 0) or a.get("axes") is not None:
        raise mapper.unsupported(node, f" in mode {mode!r} ({coordinate}, {nearest}); only "
                                       "nearest without antialias or axes")
    in_shape, out_shape = _shape(mapper.model, node.input[0]), _shape(mapper.model, node.output[0])
    scales = _optional_const(mapper, node, 1 if node.op_type == "Upsample" else 2)
    if len(in_shape) != 4 or len(out_shape) != 4 or in_shape[1] != out_shape[1]:
        raise mapper.unsupported(node, f" from {in_shape} to {out_shape} (only H and W)")
    if scales is None or np.size(scales) == 0:
        scales = [o / i for o, i in zip(out_shape, in_shape)]
    rows, cols = (nearest_indices(in_shape[k], out_shape[k], float(np.float32(scales[k])),
                                  coordinate, nearest) for k in (2, 3))
    mapper.emit(node, "resize_nearest", [node.input[0]], node.output[0], fuse=False,
                params={"rows": rows.tolist(), "cols": cols.tolist()})


def map_mul(mapper, node) -> None:
    """Mul of two activations; the one broadcast over H, W (and C) comes second."""
    a, b = _activations(mapper, node)
    sa, sb = _shape(mapper.model, a), _shape(mapper.model, b)
    if len(sa) == 4 and len(sb) == 4 and sa != sb and sb[2:] != [1, 1]:
        a, b, sa, sb = b, a, sb, sa
    if not (len(sa) == 4 and len(sb) == 4 and (sb == sa or (sb[2:] == [1, 1] and sb[1] in
                                                             (1, sa[1])))):
        raise mapper.unsupported(node, f" of shapes {sa} and {sb} (only equal NCHW shapes or "
                                       "a second operand of one value per channel, [N, C, 1, 1])")
    mapper.emit(node, "mul", [a, b], node.output[0])


def map_sub(mapper, node) -> None:
    a, b = _activations(mapper, node)
    if _shape(mapper.model, a) != _shape(mapper.model, b):
        raise mapper.unsupported(node, " with broadcasting")
    mapper.emit(node, "sub", [a, b], node.output[0])


def is_view(mapper, node) -> bool:
    """A Reshape between two NCHW maps that keeps the NHWC byte order (the same shape, or one
    value per channel either way, as tf2onnx writes for keepdims): an alias, no layer."""
    src, dst = _shape(mapper.model, node.input[0]), _shape(mapper.model, node.output[0])
    if len(src) != 4 or len(dst) != 4:
        return False
    if src[1:] != dst[1:] and not (src[2:] == dst[2:] == [1, 1] and src[1] == dst[1]):
        return False
    mapper.alias[node.output[0]] = mapper.src(node.input[0])
    return True
