"""onnx's own backend node tests for the ops the runtime covers, run through runtime.kernels.

The runtime is int8-only: uint8 cases run shifted by -128 (zero points too), which leaves
``x - zp`` and so the arithmetic unchanged, and the output is shifted back. Float-only cases
(Conv, Gemm, Relu, pools on float) and integer-output ops (ConvInteger, MatMulInteger) are not
int8 kernels and are skipped with that reason; the counts are printed and a minimum asserted.
"""
import re
import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from runtime import kernels
from runtime.requant import Requant

OPS = r"test_(conv|convinteger|qlinearconv|maxpool|averagepool|globalaveragepool|relu|gemm|" \
      r"matmulinteger|qlinearmatmul)(_|$)"


def _cases():
    from onnx.backend.test.loader import load_model_tests
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [t for t in load_model_tests(kind="node") if re.match(OPS, t.name)]


def _load(case):
    """The case's model and first data set, in memory (the loader builds them from onnx's
    case definitions) or from its directory."""
    if case.model is not None and case.data_sets:
        inputs, outputs = case.data_sets[0]
        return case.model, [np.asarray(a) for a in inputs], np.asarray(outputs[0])
    import glob
    model = onnx.load(f"{case.model_dir}/model.onnx")
    arrays = {}
    for path in sorted(glob.glob(f"{case.model_dir}/test_data_set_0/*.pb")):
        tensor = onnx.TensorProto()
        with open(path, "rb") as f:
            tensor.ParseFromString(f.read())
        arrays[path.rsplit("/", 1)[1]] = numpy_helper.to_array(tensor)
    inputs = [arrays[f"input_{i}.pb"] for i in range(len(model.graph.input))]
    return model, inputs, arrays["output_0.pb"]


def _to_int8(a):
    return (a.astype(np.int16) - 128).astype(np.int8) if a.dtype == np.uint8 else a


def _back(y, like):
    return (y.astype(np.int16) + 128).astype(np.uint8) if like.dtype == np.uint8 else y


def _run(case):
    """Returns (expected, got) or a skip reason string."""
    model, inputs, expected = _load(case)
    node = model.graph.node[0]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    args = inputs + [inits[n] for n in node.input[len(inputs):]]
    if node.op_type == "QLinearConv":
        x, xs, xz, w, ws, wz, ys, yz = args[:8]
        if np.any(wz != 0) and w.dtype == np.int8:
            return "non-zero weight zero point"
        w8 = _to_int8(w).astype(np.int16) - (_to_int8(wz).astype(np.int16) if w.dtype == np.uint8 else 0)
        if w8.min() < -128 or w8.max() > 127:
            return "uint8 weights with zero point do not fit int8"
        bias = args[8].astype(np.int32) if len(args) > 8 else None
        pads = attrs.get("pads", [0, 0, 0, 0])
        got = kernels.conv2d(
            _to_int8(x).transpose(0, 2, 3, 1), w8.astype(np.int8).transpose(0, 2, 3, 1), bias,
            Requant.from_scales(xs, np.atleast_1d(ws), ys, "float"),
            input_zero_point=int(_to_int8(np.atleast_1d(xz))[0]),
            output_zero_point=int(_to_int8(np.atleast_1d(yz))[0]),
            stride=attrs.get("strides", (1, 1)), padding=(pads[0], pads[1], pads[2], pads[3]),
            dilation=attrs.get("dilations", (1, 1)), groups=attrs.get("group", 1))
        return expected, _back(got.transpose(0, 3, 1, 2), expected)
    if node.op_type == "QLinearMatMul":
        a, as_, az, b, bs, bz, ys, yz = args
        if a.ndim != 2 or ys.dtype != np.float32:
            return f"{a.ndim}-D batched or {ys.dtype} scales: fully_connected is 2-D float32"
        if np.any(bz != 0) and b.dtype == np.int8:
            return "non-zero weight zero point"
        w = _to_int8(b).astype(np.int16) - (_to_int8(bz).astype(np.int16) if b.dtype == np.uint8 else 0)
        if w.min() < -128 or w.max() > 127:
            return "weights with zero point do not fit int8"
        got = kernels.fully_connected(
            _to_int8(a), np.ascontiguousarray(w.T.astype(np.int8)), None,
            Requant.from_scales(as_, np.atleast_1d(bs), ys, "float"),
            input_zero_point=int(_to_int8(np.atleast_1d(az))[0]),
            output_zero_point=int(_to_int8(np.atleast_1d(yz))[0]))
        return expected, _back(got, expected)
    if node.op_type == "MaxPool" and inputs[0].dtype in (np.int8, np.uint8):
        if len(model.graph.output) > 1 or inputs[0].ndim != 4:
            return "indices output or not 2-D"
        pads = attrs.get("pads", [0, 0, 0, 0])
        got = kernels.max_pool2d(_to_int8(inputs[0]).transpose(0, 2, 3, 1), attrs["kernel_shape"],
                                 stride=attrs.get("strides", (1, 1)), padding=pads)
        return expected, _back(got.transpose(0, 3, 1, 2), expected)
    return f"{node.op_type} on {inputs[0].dtype}: not an int8-in/int8-out kernel"


def test_onnx_backend_node_tests():
    passed, skipped = [], {}
    for case in _cases():
        result = _run(case)
        if isinstance(result, str):
            skipped[case.name] = result
            continue
        expected, got = result
        np.testing.assert_array_equal(got, expected, err_msg=case.name)
        passed.append(case.name)
    print(f"\nonnx backend node tests: {len(passed)} passed, {len(skipped)} skipped")
    print("passed: " + ", ".join(passed))
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    assert len(passed) >= 1  # today: maxpool_2d_uint8; the QLinear* cases use weight zero points
