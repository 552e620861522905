"""Tiny one-node ONNX graphs run by onnxruntime: the independent oracle for ``float`` mode.

Each function takes NHWC int8 tensors like ``runtime.kernels`` does, builds the equivalent
onnxruntime graph (NCHW), runs it on one thread and returns NHWC int8 again.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

MS = "com.microsoft"


def _tensor(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _qparams(name, scale, zp):
    """The scalar scale and zero point of tensor ``name``: initializers ``<name>s``, ``<name>z``."""
    return [_tensor(f"{name}s", np.float32(scale)), _tensor(f"{name}z", np.int8(zp))]


def _session(node, inputs: dict, initializers: list, out_type=TensorProto.INT8, opset=13):
    """``node``: one node, or a list of them (a small graph)."""
    graph_inputs = [helper.make_tensor_value_info(
        name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)
        for name, value in inputs.items()]
    graph = helper.make_graph(node if isinstance(node, list) else [node], "g", graph_inputs,
                              [helper.make_tensor_value_info("y", out_type, None)],
                              initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid(MS, 1)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # shape inference keeps ceil_mode windows onnxruntime drops
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _run(node, inputs: dict, initializers: list, **kwargs):
    return _session(node, inputs, initializers, **kwargs).run(["y"], inputs)[0]


def nchw(x):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def qlinear_conv(x, *args, **kwargs):
    """``w`` OHWI int8, ``w_scales`` float32 [M] or scalar."""
    session, feed = qlinear_conv_session(x, *args, **kwargs)
    return nhwc(session.run(["y"], feed)[0])


def qlinear_conv_session(x, x_scale, x_zp, w, w_scales, y_scale, y_zp, bias=None, *,
                         stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """The onnxruntime session and its NCHW feed, for timing."""
    w_oihw = np.ascontiguousarray(w.transpose(0, 3, 1, 2))
    w_scales = np.asarray(w_scales, np.float32)
    inits = [*_qparams("x", x_scale, x_zp), _tensor("w", w_oihw), _tensor("ws", w_scales),
             _tensor("wz", np.zeros(w_scales.shape, np.int8)), *_qparams("y", y_scale, y_zp)]
    names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
    if bias is not None:
        inits.append(_tensor("b", np.asarray(bias, np.int32)))
        names.append("b")
    node = helper.make_node("QLinearConv", names, ["y"], strides=list(stride),
                            pads=list(padding), dilations=list(dilation), group=groups,
                            kernel_shape=list(w.shape[1:3]))
    feed = {"x": nchw(x)}
    return _session(node, feed, inits), feed


def qlinear_matmul(x, x_scale, x_zp, w, w_scales, y_scale, y_zp):
    """``x`` int8 [N, K], ``w`` int8 [M, K] (our layout); y int8 [N, M]. No bias."""
    w_scales = np.asarray(w_scales, np.float32)
    inits = [*_qparams("x", x_scale, x_zp), _tensor("w", np.ascontiguousarray(w.T)),
             _tensor("ws", w_scales), _tensor("wz", np.zeros(w_scales.shape, np.int8)),
             *_qparams("y", y_scale, y_zp)]
    node = helper.make_node("QLinearMatMul", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])
    return _run(node, {"x": x}, inits)


def _binary_qparams(a_scale, a_zp, b_scale, b_zp, y_scale, y_zp):
    return [*_qparams("a", a_scale, a_zp), *_qparams("b", b_scale, b_zp),
            *_qparams("y", y_scale, y_zp)]


def _qlinear_binary(op, a, b, *qparams):
    """com.microsoft QLinearAdd / QLinearMul; ``qparams``: a, b and y scale and zero point."""
    node = helper.make_node(op, ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"], domain=MS)
    return _run(node, {"a": a, "b": b}, _binary_qparams(*qparams))


def qlinear_add(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp):
    return _qlinear_binary("QLinearAdd", a, b, a_scale, a_zp, b_scale, b_zp, y_scale, y_zp)


def qlinear_average_pool(x, x_scale, x_zp, y_scale, y_zp, kernel, *, stride, padding,
                         count_include_pad, ceil_mode=False):
    inits = [*_qparams("x", x_scale, x_zp), *_qparams("y", y_scale, y_zp)]
    node = helper.make_node("QLinearAveragePool", ["x", "xs", "xz", "ys", "yz"], ["y"],
                            domain=MS, kernel_shape=list(kernel), strides=list(stride),
                            pads=list(padding), count_include_pad=int(count_include_pad),
                            ceil_mode=int(ceil_mode))
    return nhwc(_run(node, {"x": nchw(x)}, inits))


def average_pool(x, kernel, *, stride, padding, count_include_pad, ceil_mode=False):
    """Float AveragePool on an NHWC array (any float input), NHWC float32 out."""
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=list(kernel),
                            strides=list(stride), pads=list(padding),
                            count_include_pad=int(count_include_pad), ceil_mode=int(ceil_mode))
    return nhwc(_run(node, {"x": nchw(x.astype(np.float32))}, [], out_type=TensorProto.FLOAT,
                     opset=19))


def qlinear_global_average_pool(x, x_scale, x_zp, y_scale, y_zp):
    inits = [*_qparams("x", x_scale, x_zp), *_qparams("y", y_scale, y_zp)]
    node = helper.make_node("QLinearGlobalAveragePool", ["x", "xs", "xz", "ys", "yz"], ["y"],
                            domain=MS, channels_last=0)
    return nhwc(_run(node, {"x": nchw(x)}, inits))


def max_pool(x, kernel, *, stride, padding):
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=list(kernel),
                            strides=list(stride), pads=list(padding))
    return nhwc(_run(node, {"x": nchw(x)}, []))


def quantize_linear(x, scale, zp):
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    return _run(node, {"x": np.asarray(x, np.float32)},
                [_tensor("s", np.float32(scale)), _tensor("z", np.int8(zp))])


def dequantize_linear(q, scale, zp):
    node = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])
    return _run(node, {"q": q}, [_tensor("s", np.float32(scale)), _tensor("z", np.int8(zp))],
                out_type=TensorProto.FLOAT)


__all__ = ["onnx", "qlinear_conv", "qlinear_matmul", "qlinear_add", "qlinear_average_pool",
           "qlinear_global_average_pool", "max_pool", "quantize_linear", "dequantize_linear",
           "qlinear_conv_session", "nchw", "nhwc"]


def qlinear_mul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp):
    """com.microsoft QLinearMul on NHWC int8 arrays (``b`` may broadcast as NHWC does)."""
    return nhwc(_qlinear_binary("QLinearMul", nchw(a), nchw(b), a_scale, a_zp, b_scale, b_zp,
                                y_scale, y_zp))


def qlinear_concat(xs, specs, y_scale, y_zp):
    """com.microsoft QLinearConcat of NHWC int8 arrays along channels; ``specs`` (scale, zp)."""
    inits = _qparams("y", y_scale, y_zp)
    names, feed = ["ys", "yz"], {}
    for k, (x, (scale, zp)) in enumerate(zip(xs, specs)):
        inits += _qparams(f"x{k}", scale, zp)
        names += [f"x{k}", f"x{k}s", f"x{k}z"]
        feed[f"x{k}"] = nchw(x)
    node = helper.make_node("QLinearConcat", names, ["y"], domain=MS, axis=1)
    return nhwc(_run(node, feed, inits))


def quantized_sub(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp):
    """DequantizeLinear, Sub, QuantizeLinear: what onnxruntime runs for a quantized Sub."""
    nodes = [helper.make_node("DequantizeLinear", ["a", "as", "az"], ["fa"]),
             helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["fb"]),
             helper.make_node("Sub", ["fa", "fb"], ["d"]),
             helper.make_node("QuantizeLinear", ["d", "ys", "yz"], ["y"])]
    return _run(nodes, {"a": a, "b": b},
                _binary_qparams(a_scale, a_zp, b_scale, b_zp, y_scale, y_zp))


def pad_int8(x, pads, value, mode="constant"):
    """ONNX Pad of H and W of an NHWC int8 array; ``pads`` top, left, bottom, right."""
    top, left, bottom, right = pads
    inits = [_tensor("p", np.array([0, 0, top, left, 0, 0, bottom, right], np.int64)),
             _tensor("v", np.int8(value))]
    node = helper.make_node("Pad", ["x", "p", "v"], ["y"], mode=mode)
    return nhwc(_run(node, {"x": nchw(x)}, inits))


def resize_nearest_float(x_nchw, scales, coordinate, nearest, opset=13):
    """ONNX float Resize (mode nearest) of an NCHW float32 array by per-axis ``scales``."""
    inits = [_tensor("roi", np.zeros(0, np.float32)),
             _tensor("sc", np.asarray(scales, np.float32))]
    node = helper.make_node("Resize", ["x", "roi", "sc"], ["y"], mode="nearest",
                            coordinate_transformation_mode=coordinate, nearest_mode=nearest)
    return _run(node, {"x": x_nchw}, inits, out_type=TensorProto.FLOAT, opset=opset)
