"""onnx's own backend node tests for the ops the runtime covers, run through runtime.kernels.

The adapter below only changes representations; all arithmetic is the runtime's:
- uint8 tensors run shifted by -128, zero points too: ``x - zp`` is unchanged, so is every
  accumulator; outputs are shifted back by +128.
- a weight zero point is folded into the weights (``w - w_zp``, the same integer sums) when
  every difference fits int8; otherwise the case is skipped with the range printed. A matrix
  product may swap its operands (``Y.T = B.T @ A.T``) so the side whose differences fit int8
  becomes the weights and the other keeps its zero point as the kernel's input zero point.
- ConvInteger / MatMulInteger compare the runtime's int32 accumulators (``*_accumulate``).
- QLinearConv / QLinearMatMul run the runtime's ``float`` mode (onnxruntime's arithmetic). onnx's
  expected outputs come from its float64 reference; where the two round differently the case
  is listed as differing, by how much, and the runtime must then equal onnxruntime exactly.
- Float ops stay skipped, except where every float input is an integer in [-128, 127]: there
  MaxPool is the int8 max pool and Conv is the exact integer sum (below 2**24, so float32
  computes it without rounding), and the runtime's int8 kernels must reproduce onnx's outputs
  bit for bit. Those cases are counted apart from the integer-typed ones.
"""
import re
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from runtime import kernels
from runtime.requant import Requant

OPS = r"test_(conv|convinteger|qlinearconv|maxpool|averagepool|globalaveragepool|relu|gemm|" \
      r"matmulinteger|qlinearmatmul)(_|$)"
FLOAT_OP = "float op: runtime/ is int8"

# Measured with onnx 1.23.2 (see docs/ARITHMETIC.md, "onnx backend node tests").
MIN_PASSED = 8  # integer-typed cases equal to onnx's expected output
MIN_PASSED_ON_INTEGER_DATA = 9  # float ops whose data are int8 integers, equal bit for bit


class Skip(Exception):
    """The case cannot run through the int8 runtime; the message says why."""


@dataclass
class Outcome:
    status: str  # "pass", "pass on integer data", "differs", "skip"
    detail: str = ""


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
        return case.model, [np.asarray(a) for a in inputs], [np.asarray(a) for a in outputs]
    import glob
    model = onnx.load(f"{case.model_dir}/model.onnx")
    arrays = {}
    for path in sorted(glob.glob(f"{case.model_dir}/test_data_set_0/*.pb")):
        tensor = onnx.TensorProto()
        with open(path, "rb") as f:
            tensor.ParseFromString(f.read())
        arrays[path.rsplit("/", 1)[1]] = numpy_helper.to_array(tensor)
    inputs = [arrays[f"input_{i}.pb"] for i in range(len(model.graph.input))]
    outputs = [arrays[f"output_{i}.pb"] for i in range(len(model.graph.output))]
    return model, inputs, outputs


# -- representation changes (no arithmetic of the op) --------------------------------------------

def _int8(a):
    """uint8 -> int8 by -128 (values and zero points alike); int8 unchanged."""
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return (a.astype(np.int16) - 128).astype(np.int8)
    if a.dtype != np.int8:
        raise Skip(f"{a.dtype} tensor: the runtime takes int8 (or uint8 shifted)")
    return a


def _back(y, dtype):
    return (y.astype(np.int16) + 128).astype(np.uint8) if dtype == np.uint8 else y


def _scalar_zp(zp, name):
    """A per-tensor zero point as the kernel's int, shifted like its tensor."""
    values = np.unique(_int8(np.asarray(zp).ravel()))
    if values.size != 1:
        raise Skip(f"{name} varies along an axis: the kernel's input zero point is per tensor")
    return int(values[0])


def _centered(w, zp, axis, name="w"):
    """``w - zp`` (zp per tensor or per index along ``axis``) as int8 weights, or Skip."""
    zp = np.asarray(zp).astype(np.int32).ravel()
    shape = [1] * w.ndim
    if zp.size > 1:
        shape[axis] = -1
    diff = w.astype(np.int32) - zp.reshape(shape)
    if diff.min() < -128 or diff.max() > 127:
        raise Skip(f"{name} - {name}_zero_point spans [{diff.min()}, {diff.max()}]: outside int8")
    return diff.astype(np.int8)


def _integer_valued(a):
    """A float tensor whose values are all integers in [-128, 127], as int8, or Skip."""
    a = np.asarray(a)
    if a.dtype.kind != "f" or not np.array_equal(a, np.round(a)) or a.min() < -128 \
            or a.max() > 127:
        raise Skip(FLOAT_OP)
    return a.astype(np.int8)


def _nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _nchw(y):
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2))


def _window(attrs, x_shape, kernel):
    """ONNX's pads / auto_pad / ceil_mode for a 2-D window as the kernel's explicit
    (top, left, bottom, right) padding, with strides and dilations."""
    if len(x_shape) != 4:
        raise Skip(f"{len(x_shape) - 2}-D: the runtime's kernels are 2-D")
    strides = tuple(attrs.get("strides", (1, 1)))
    dilations = tuple(attrs.get("dilations", (1, 1)))
    auto_pad = attrs.get("auto_pad", b"NOTSET").decode()
    before, after = [0, 0], [0, 0]
    for axis in range(2):
        size, k, s, d = x_shape[2 + axis], kernel[axis], strides[axis], dilations[axis]
        span = (k - 1) * d + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            total = max((-(-size // s) - 1) * s + span - size, 0)
            small, large = total // 2, total - total // 2
            upper = auto_pad == "SAME_UPPER"  # the odd one goes after
            before[axis], after[axis] = (small, large) if upper else (large, small)
        elif auto_pad in ("NOTSET", ""):
            pads = attrs.get("pads", (0, 0, 0, 0))
            before[axis], after[axis] = pads[axis], pads[2 + axis]
        if attrs.get("ceil_mode", 0):  # extra padding after, but no window may start in it
            out = -(-(size + before[axis] + after[axis] - span) // s) + 1
            if (out - 1) * s >= size + before[axis]:
                out -= 1
            after[axis] = max(after[axis], (out - 1) * s + span - size - before[axis])
    return (before[0], before[1], after[0], after[1]), strides, dilations


# -- the ops -------------------------------------------------------------------------------------

def _max_pool(node, attrs, inputs):
    if len(node.output) > 1:
        raise Skip("indices output: the runtime's max pool returns values only")
    x = inputs[0]
    kind = "pass" if x.dtype in (np.int8, np.uint8) else "pass on integer data"
    x8 = _int8(x) if kind == "pass" else _integer_valued(x)
    padding, strides, dilations = _window(attrs, x.shape, attrs["kernel_shape"])
    if dilations != (1, 1):
        raise Skip("dilations: kernels.max_pool2d has none")
    y = kernels.max_pool2d(_nhwc(x8), attrs["kernel_shape"], stride=strides, padding=padding)
    y = _nchw(y)
    return kind, (_back(y, x.dtype) if kind == "pass" else y.astype(x.dtype))


def _conv_args(attrs, x, w):
    padding, strides, dilations = _window(attrs, x.shape, w.shape[2:])
    return dict(stride=strides, padding=padding, dilation=dilations,
                groups=attrs.get("group", 1))


def _conv(node, attrs, inputs):
    """Float Conv on integer data: the exact integer sums are the runtime's accumulators."""
    x, w = inputs[:2]
    x8, w8 = _integer_valued(x), _integer_valued(w)
    bias = _integer_valued(inputs[2]).astype(np.int32) if len(inputs) > 2 else None
    bound = 128 * np.abs(w8.astype(np.int32)).reshape(len(w8), -1).sum(axis=1).max()
    if bound + (0 if bias is None else np.abs(bias).max()) >= 2**24:
        raise Skip(FLOAT_OP + " (partial sums could pass 2**24 and round in float32)")
    acc = kernels.conv2d_accumulate(_nhwc(x8), _nhwc(w8), bias, input_zero_point=0,
                                    **_conv_args(attrs, x, w))
    return "pass on integer data", _nchw(acc).astype(x.dtype)


def _conv_integer(node, attrs, inputs):
    x, w = inputs[:2]
    x_zp = inputs[2] if len(inputs) > 2 else np.zeros((), x.dtype)
    w_zp = inputs[3] if len(inputs) > 3 else np.zeros((), w.dtype)
    acc = kernels.conv2d_accumulate(
        _nhwc(_int8(x)), _nhwc(_centered(w, w_zp, 0)), None,
        input_zero_point=_scalar_zp(x_zp, "x_zero_point"), **_conv_args(attrs, x, w))
    return "pass", _nchw(acc)


def _qlinear_conv(node, attrs, inputs):
    x, xs, xz, w, ws, wz, ys, yz = inputs[:8]
    bias = inputs[8].astype(np.int32) if len(inputs) > 8 else None
    y = kernels.conv2d(
        _nhwc(_int8(x)), _nhwc(_centered(w, wz, 0)), bias,
        Requant.from_scales(_scalar(xs), np.ravel(ws), _scalar(ys), "float"),
        input_zero_point=_scalar_zp(xz, "x_zero_point"),
        output_zero_point=_scalar_zp(yz, "y_zero_point"), **_conv_args(attrs, x, w))
    return "pass", _back(_nchw(y), np.asarray(yz).dtype)


def _scalar(scale):
    return np.asarray(scale).reshape(-1)[0]


def _matmul(a, az, b, bz, run):
    """``(a - az) @ (b - bz)`` through a fully connected kernel ``run(x, x_zp, w)`` that
    returns ``[N, M]`` for ``x [N, K]`` and int8 weights ``w [M, K]``. Leading batch axes loop.
    The side whose centered values fit int8 becomes the weights."""
    if a.ndim > 2 or b.ndim > 2:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        a, b = np.broadcast_to(a, batch + a.shape[-2:]), np.broadcast_to(b, batch + b.shape[-2:])
        return np.stack([_matmul(a[i], az, b[i], bz, run) for i in np.ndindex(batch)]).reshape(
            batch + (a.shape[-2], b.shape[-1]))
    try:
        return run(_int8(a), _scalar_zp(az, "a_zero_point"), _centered(b, bz, 1, "b").T)
    except Skip as b_fails:
        try:
            return run(_int8(b.T), _scalar_zp(bz, "b_zero_point"), _centered(a, az, 0, "a")).T
        except Skip as a_fails:
            raise Skip(f"{b_fails}; {a_fails}")


def _matmul_integer(node, attrs, inputs):
    a, b = inputs[:2]
    az = inputs[2] if len(inputs) > 2 else np.zeros((), a.dtype)
    bz = inputs[3] if len(inputs) > 3 else np.zeros((), b.dtype)

    def accumulate(x, x_zp, w):
        return kernels.fully_connected_accumulate(x, np.ascontiguousarray(w), None,
                                                  input_zero_point=x_zp)
    return "pass", _matmul(a, az, b, bz, accumulate)


def _qlinear_matmul(node, attrs, inputs):
    a, as_, az, b, bs, bz, ys, yz = inputs

    def requantized(x, x_zp, w):
        # the scale product commutes exactly in float32, so swapped operands requantize alike
        rq = Requant.from_scales(_scalar(as_), np.ravel(bs), _scalar(ys), "float")
        return kernels.fully_connected(x, np.ascontiguousarray(w), None, rq,
                                       input_zero_point=x_zp,
                                       output_zero_point=_scalar_zp(yz, "y_zero_point"))
    if np.size(bs) > 1:
        raise Skip("per-column b_scale: not handled by this adapter")
    return "pass", _back(_matmul(a, az, b, bz, requantized), np.asarray(yz).dtype)


RUNNERS = {"MaxPool": _max_pool, "Conv": _conv, "ConvInteger": _conv_integer,
           "QLinearConv": _qlinear_conv, "MatMulInteger": _matmul_integer,
           "QLinearMatMul": _qlinear_matmul}
ROUNDED_BY_ONNX_REFERENCE = {"QLinearConv", "QLinearMatMul"}


def _onnxruntime(model, inputs):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, dict(zip(names, inputs)))[0]


def _run(case) -> Outcome:
    model, inputs, outputs = _load(case)
    nodes = model.graph.node
    if len(nodes) != 1 or nodes[0].op_type not in RUNNERS:
        op = "/".join(n.op_type for n in nodes)
        if inputs[0].dtype.kind == "f":
            return Outcome("skip", FLOAT_OP)
        return Outcome("skip", f"{op}: no such runtime kernel")
    node = nodes[0]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    args = inputs + [inits[n] for n in node.input[len(inputs):] if n]
    try:
        kind, got = RUNNERS[node.op_type](node, attrs, args)
    except Skip as reason:
        return Outcome("skip", str(reason))
    expected = outputs[0]
    assert got.dtype == expected.dtype and got.shape == expected.shape, case.name
    if np.array_equal(got, expected):
        return Outcome(kind)
    if node.op_type not in ROUNDED_BY_ONNX_REFERENCE:
        raise AssertionError(f"{case.name}: runtime differs from onnx's expected output\n"
                             f"got {got.ravel()}\nexpected {expected.ravel()}")
    lsb = np.abs(got.astype(np.int32) - expected.astype(np.int32))
    onnxruntime = _onnxruntime(model, inputs)
    np.testing.assert_array_equal(got, onnxruntime, err_msg=f"{case.name}: runtime != onnxruntime")
    return Outcome("differs", f"differs from onnx's float64 reference by {lsb.max()} LSB on "
                              f"{np.count_nonzero(lsb)} of {lsb.size} elements; equals onnxruntime")


def test_onnx_backend_node_tests():
    outcomes = {case.name: _run(case) for case in _cases()}
    width = max(map(len, outcomes))
    print(f"\n{'case':<{width}}  status")
    for name, outcome in outcomes.items():
        print(f"{name:<{width}}  {outcome.status}{': ' + outcome.detail if outcome.detail else ''}")
    counts = {s: sum(o.status == s for o in outcomes.values())
              for s in ("pass", "pass on integer data", "differs", "skip")}
    print("onnx backend node tests: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    assert counts["pass"] >= MIN_PASSED, counts
    assert counts["pass on integer data"] >= MIN_PASSED_ON_INTEGER_DATA, counts


def test_a_float64_rounding_difference_is_reported_and_must_equal_onnxruntime():
    """The "differs" route on a case built to need it: with y_scale 10 the scale is
    float32(0.1), slightly above 0.1, so acc = 5 gives 0.50000000745 in onnx's float64 (rounds
    to 1) but exactly 0.5 in float32 (rounds half to even: 0), as onnxruntime computes. Of the
    twelve products 5, 10, 15, 30, 25, 50, -5, -10, 3, 6, 7, 14 the ties 5, 25 and -5 differ by
    one; 15 (1.5) rounds to 2 either way."""
    from types import SimpleNamespace

    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator
    names = ["a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point", "y_scale",
             "y_zero_point"]
    inputs = [np.array([[5], [15], [25], [-5], [3], [7]], np.int8), np.float32(1), np.int8(0),
              np.array([[1, 2]], np.int8), np.float32(1), np.int8(0), np.float32(10), np.int8(0)]
    inputs = [np.asarray(i) for i in inputs]
    graph = helper.make_graph(
        [helper.make_node("QLinearMatMul", names, ["y"])], "rounding",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(i.dtype), i.shape)
         for n, i in zip(names, inputs)],
        [helper.make_tensor_value_info("y", TensorProto.INT8, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    expected = ReferenceEvaluator(model).run(None, dict(zip(names, inputs)))[0]
    case = SimpleNamespace(name="synthetic_qlinearmatmul", model=model,
                           data_sets=[(inputs, [expected])])
    outcome = _run(case)
    assert outcome.status == "differs", outcome
    assert outcome.detail.startswith("differs from onnx's float64 reference by 1 LSB on 3 of 12")
