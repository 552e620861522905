"""ONNX Conv, pooling, Flatten/Reshape/Squeeze, Gemm and MatMul -> the device's compute layers.

Kept apart from export/onnx_import.py's ``_Mapper`` (which calls these with itself as
``mapper``), as export.import_tensor_ops is: each turns an ONNX op's attributes (auto_pad,
ceil_mode, transB, NCHW flattening order) into the device's NHWC parameters and weight layout,
and that reading is most of their lines.
"""
from __future__ import annotations

import numpy as np

from export import import_tensor_ops as tensor_ops
from export.onnx_common import _attrs, _shape
from runtime.errors import TinyconvError


def _auto_pad(attrs) -> str:
    auto = attrs.get("auto_pad", b"NOTSET")
    return auto.decode() if isinstance(auto, bytes) else auto


def _pads(node, attrs, in_hw, kernel, stride, dilation, out_hw) -> list[int]:
    """Explicit [top, left, bottom, right] padding, whatever auto_pad/ceil_mode said."""
    auto = _auto_pad(attrs)
    pads = [0, 0, 0, 0]
    if auto == "NOTSET":
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
    for axis in range(2):
        need = (out_hw[axis] - 1) * stride[axis] + (kernel[axis] - 1) * dilation[axis] + 1
        total = max(0, need - in_hw[axis])
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            small = total // 2
            begin = small if auto == "SAME_UPPER" else total - small
            pads[axis], pads[axis + 2] = begin, total - begin
        elif auto == "NOTSET" and pads[axis] + pads[axis + 2] < total:
            pads[axis + 2] = total - pads[axis]  # ceil_mode: one more window at the end
        elif auto not in ("NOTSET", "VALID"):
            raise TinyconvError(f"node {node.name!r} ({node.op_type}): unknown auto_pad {auto!r}")
    return [int(p) for p in pads]


def _check_ceil_windows(node, in_hw, kernel, stride, padding, out_hw) -> None:
    """onnxruntime drops a ceil_mode window that would start in the end padding; ONNX shape
    inference may still count it, and then the graph's shapes are not what runs."""
    for axis in range(2):
        last_start = (out_hw[axis] - 1) * stride[axis]
        if last_start >= in_hw[axis] + padding[axis]:
            raise TinyconvError(
                f"node {node.name!r} ({node.op_type}): with ceil_mode=1 its last window along "
                f"{'HW'[axis]} starts in the padding; onnxruntime drops that window but the "
                f"model's shape {out_hw} counts it (pad the input instead of using ceil_mode)")


def map_conv(mapper, node):
    attrs = _attrs(node)
    weight = mapper.const(node, 1).astype(np.float32)
    if weight.ndim != 4:
        raise mapper.unsupported(node, f" with a {weight.ndim - 2}-D kernel")
    bias = (mapper.const(node, 2).astype(np.float32) if len(node.input) > 2 and node.input[2]
            else np.zeros(weight.shape[0], np.float32))
    stride = list(attrs.get("strides", [1, 1]))
    dilation = list(attrs.get("dilations", [1, 1]))
    kernel = list(weight.shape[2:])
    in_hw = _shape(mapper.model, node.input[0])[2:]
    out_hw = _shape(mapper.model, node.output[0])[2:]
    pads = _pads(node, attrs, in_hw, kernel, stride, dilation, out_hw)
    pads = [p + q for p, q in zip(pads, mapper.folded_pads.get(node.input[0], [0] * 4))]
    mapper.emit(node, "conv2d", [node.input[0]], node.output[0],
                params={"stride": stride, "padding": pads, "dilation": dilation,
                        "groups": int(attrs.get("group", 1))},
                weights=np.ascontiguousarray(weight.transpose(0, 2, 3, 1)), bias=bias,
                **integers(mapper, node, lambda w: w.transpose(0, 2, 3, 1), weight.shape[0]))


def integers(mapper, node, to_device_layout, channels: int) -> dict:
    """Integer weights and bias of an already-quantized source, in the device layout."""
    if node.input[1] not in mapper.ints:
        return {}
    w_q, w_scales, w_zp = mapper.ints[node.input[1]]
    if np.any(w_zp != 0):
        raise TinyconvError(f"node {node.name!r} ({node.op_type}): weights with a non-zero "
                            "zero point; tinyconv needs symmetric weights")
    bias = node.input[2] if len(node.input) > 2 else ""
    bias_q = mapper.ints[bias][0] if bias in mapper.ints else np.zeros(channels, np.int32)
    return {"weights_q": np.ascontiguousarray(to_device_layout(w_q)).astype(np.int8),
            "weight_scales": w_scales.astype(np.float32),
            "bias_q": np.broadcast_to(bias_q.reshape(-1), (channels,)).astype(np.int32)}


def map_pool(mapper, node, op):
    attrs = _attrs(node)
    kernel = list(attrs["kernel_shape"])
    stride = list(attrs.get("strides", [1, 1]))
    if list(attrs.get("dilations", [1, 1])) != [1, 1]:
        raise mapper.unsupported(node, " with dilations")
    in_hw = _shape(mapper.model, node.input[0])[2:]
    out_hw = _shape(mapper.model, node.output[0])[2:]
    params = {"kernel": kernel, "stride": stride}
    padding = _pads(node, attrs, in_hw, kernel, stride, [1, 1], out_hw)
    if attrs.get("ceil_mode", 0):
        _check_ceil_windows(node, in_hw, kernel, stride, padding, out_hw)
    if op == "avg_pool2d":
        params["count_include_pad"] = bool(attrs.get("count_include_pad", 0))
        declared = list(attrs.get("pads", [0, 0, 0, 0]))
        ceil_pad = [padding[2] - declared[2], padding[3] - declared[3]]
        if attrs.get("ceil_mode", 0) and _auto_pad(attrs) == "NOTSET" and any(ceil_pad):
            params["ceil_pad"] = ceil_pad
    params["padding"] = padding
    if len(node.output) > 1 and node.output[1]:
        raise mapper.unsupported(node, " with an Indices output")
    mapper.emit(node, op, [node.input[0]], node.output[0], params=params)


def map_global_average_pool(mapper, node):
    mapper.emit(node, "global_avg_pool", [node.input[0]], node.output[0])


def map_reduce_mean(mapper, node):
    attrs = _attrs(node)
    axes = (list(mapper.const(node, 1)) if len(node.input) > 1 and node.input[1]
            else list(attrs.get("axes", [])))
    rank = len(_shape(mapper.model, node.input[0]))
    spatial = [1, 2] if node.input[0] in mapper.nhwc_order else [2, 3]  # NHWC: tf2onnx
    if spatial == [1, 2] and attrs.get("keepdims", 1):
        raise mapper.unsupported(node, " with keepdims=1 on an NHWC tensor")
    if rank != 4 or sorted(int(a) % 4 for a in axes) != spatial:
        raise mapper.unsupported(node, f" over axes {axes} (only H, W: a global average pool)")
    mapper.emit(node, "global_avg_pool", [node.input[0]], node.output[0])
    if not attrs.get("keepdims", 1):
        output = mapper.layers[-1].output
        mapper.shapes[output] = (1, 1, mapper.shapes[output][0])


def _flatten(mapper, node):
    out = _shape(mapper.model, node.output[0])
    if len(out) != 2:
        raise mapper.unsupported(node, f" to shape {out} (only [N, K] before a Gemm/MatMul)")
    mapper.alias[node.output[0]] = mapper.src(node.input[0])
    if node.input[0] in mapper.nhwc_order:
        mapper.nhwc_order.add(node.output[0])


def map_flatten(mapper, node):
    if _attrs(node).get("axis", 1) != 1:
        raise mapper.unsupported(node, " with axis != 1")
    _flatten(mapper, node)


def map_reshape(mapper, node):
    if tensor_ops.is_view(mapper, node):
        return
    _flatten(mapper, node)


def map_squeeze(mapper, node):
    _flatten(mapper, node)


def _fully_connected(mapper, node, weight_km: np.ndarray, bias: np.ndarray, output: str,
                     transposed: bool = False):
    source = mapper.src(node.input[0])
    shape = mapper.shapes[source]
    k = int(np.prod(shape))
    if weight_km.shape[0] != k:
        raise TinyconvError(f"node {node.name!r} ({node.op_type}): weight has "
                            f"{weight_km.shape[0]} rows for {k} inputs")

    def to_device_layout(w_km):  # [M, K], K in the NHWC order the device reads
        w = w_km.T
        if len(shape) == 3 and node.input[0] not in mapper.nhwc_order:
            h, wd, c = shape
            w = w.reshape(-1, c, h, wd).transpose(0, 2, 3, 1).reshape(-1, k)
        return w

    weight = to_device_layout(weight_km).astype(np.float32)
    m = weight.shape[0]
    ints = integers(mapper, node, lambda w: to_device_layout(w.T if transposed else w), m)
    mapper.emit(node, "fully_connected", [node.input[0]], output,
                weights=np.ascontiguousarray(weight),
                bias=np.broadcast_to(bias.astype(np.float32).reshape(-1), (m,)).copy(), **ints)


def map_gemm(mapper, node):
    attrs = _attrs(node)
    if attrs.get("transA", 0):
        raise mapper.unsupported(node, " with transA=1")
    b = mapper.const(node, 1).astype(np.float64)
    b = b.T if attrs.get("transB", 0) else b  # [K, M]
    c = (mapper.const(node, 2).astype(np.float64) if len(node.input) > 2 and node.input[2]
         else np.zeros(b.shape[1]))
    _fully_connected(mapper, node, b * attrs.get("alpha", 1.0), c * attrs.get("beta", 1.0),
                     node.output[0], transposed=bool(attrs.get("transB", 0)))


def map_matmul(mapper, node):
    b = mapper.const(node, 1)
    add = mapper.only_consumer(node.output[0])
    bias, output = np.zeros(b.shape[-1], np.float32), node.output[0]
    if add is not None and add.op_type == "Add" and not mapper.prequantized:
        other = 1 if add.input[0] == node.output[0] else 0
        if add.input[other] in mapper.params:
            bias = mapper.const(add, other)
            output = add.output[0]
            mapper.fused.add(add.name)
    if b.ndim != 2 or bias.size != b.shape[1]:
        raise mapper.unsupported(node, " that is not a [N, K] x [K, M] (+ [M]) linear layer")
    _fully_connected(mapper, node, b, bias, output)
