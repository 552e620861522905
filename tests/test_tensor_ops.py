"""concat, pad, resize_nearest, mul and sub end to end (runtime/kernels/tensor_ops.py).

Oracles, each independent of the code under test:
- runtime/reference.py's slow loops for the kernels, both modes;
- onnxruntime for float mode: QLinearMul, QLinearConcat, DequantizeLinear + Sub +
  QuantizeLinear, int8 Pad, on every pair of int8 codes where the op has two operands; its float
  Resize (and the ONNX reference evaluator) for the nearest-neighbour index rule;
- TensorFlow Lite Micro's own interpreter for fixed mode, on .tflite files TensorFlow's
  converter makes: MUL, SUB, CONCATENATION (equal scales), PAD, RESIZE_NEAREST_NEIGHBOR;
- the C kernels against runtime/ through the native model runner; a small PyTorch and a small
  Keras (tf2onnx) model through export, model.q.onnx and the host device.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from _export_checks import (assert_fixed_within_one_lsb_of_float,
                            assert_float_mode_equals_onnxruntime, ort_float)
from _firmware_models import build_native_runner, compile_kernel_objects, run_native
from onnx import TensorProto, helper, numpy_helper
from onnx_ops import (pad_int8, qlinear_concat, qlinear_mul, quantized_sub,
                      resize_nearest_float)

import export
import runtime
from export.c_codegen import write_c_sources
from export.import_tensor_ops import nearest_indices
from runtime import kernels, reference
from runtime.errors import TinyconvError

MODES = ("fixed", "float")
CODES = np.arange(-128, 128, dtype=np.int8)


def _quant(rng, count):
    return [(float(np.float32(rng.uniform(0.005, 0.1))), int(rng.integers(-30, 31)))
            for _ in range(count)]


def _all_pairs():
    """a and b [1, 256, 256, 1] holding every pair of int8 codes."""
    a = np.broadcast_to(CODES[:, None], (256, 256)).reshape(1, 256, 256, 1).copy()
    b = np.broadcast_to(CODES[None, :], (256, 256)).reshape(1, 256, 256, 1).copy()
    return a, b


# -- kernels against the slow reference ----------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_kernels_equal_the_slow_reference(mode):
    rng = np.random.default_rng(1)
    for trial in range(3):
        (sa, za), (sb, zb), (sy, zy) = _quant(rng, 3)
        a = rng.integers(-128, 128, (2, 3, 4, 5), dtype=np.int8)
        b = rng.integers(-128, 128, (2, 3, 4, 5), dtype=np.int8)
        act = (int(rng.integers(-128, zy + 1)), 127)
        for b_shape in ((2, 3, 4, 5), (2, 1, 1, 5), (2, 1, 1, 1)):
            bb = b[:, :b_shape[1], :b_shape[2], :b_shape[3]]
            consts = kernels.mul_constants(sa, za, sb, zb, sy, zy, mode)
            np.testing.assert_array_equal(kernels.mul(a, bb, consts, act_range=act),
                                          reference.mul(a, bb, consts, act_range=act))
        consts = kernels.sub_constants(sa, za, sb, zb, sy, zy, mode)
        np.testing.assert_array_equal(kernels.sub(a, b, consts, act_range=act),
                                      reference.sub(a, b, consts, act_range=act))
        xs = [a, b[..., :2], a[..., :1]]
        specs = [(sa, za), (sb, zb), (sy, zy)]
        y_spec = (sy, zy) if trial else (sa, za)
        consts = kernels.concat_constants(specs, *y_spec, mode)
        np.testing.assert_array_equal(kernels.concat(xs, consts),
                                      reference.concat(xs, specs, y_spec, mode))
        pads = tuple(int(p) for p in rng.integers(0, 3, 4))
        for pad_mode in kernels.tensor_ops.PAD_MODES:
            np.testing.assert_array_equal(kernels.pad(a, pads, zy, pad_mode),
                                          reference.pad(a, pads, zy, pad_mode))


def test_equal_quantization_is_a_plain_copy():
    for mode in MODES:
        np.testing.assert_array_equal(kernels.requantize_table(0.05, 3, 0.05, 3, mode), CODES)


# -- float mode against onnxruntime ----------------------------------------------------------------

@pytest.mark.parametrize("op, oracle, seed", [("mul", qlinear_mul, 2), ("sub", quantized_sub, 4)])
def test_float_mul_and_sub_equal_onnxruntime_on_every_pair_of_codes(op, oracle, seed):
    """QLinearMul; DequantizeLinear + Sub + QuantizeLinear (onnxruntime has no QLinearSub)."""
    rng = np.random.default_rng(seed)
    a, b = _all_pairs()
    for (sa, za), (sb, zb), (sy, zy) in [_quant(rng, 3) for _ in range(3)]:
        consts = getattr(kernels, f"{op}_constants")(sa, za, sb, zb, sy, zy, "float")
        np.testing.assert_array_equal(getattr(kernels, op)(a, b, consts),
                                      oracle(a, sa, za, b, sb, zb, sy, zy))


def test_float_mul_per_channel_broadcast_equals_qlinear_mul():
    """Squeeze-and-excite: [N, H, W, C] * [N, 1, 1, C] (onnxruntime's scalar-B path)."""
    rng = np.random.default_rng(3)
    (sa, za), (sb, zb), (sy, zy) = _quant(rng, 3)
    a = rng.integers(-128, 128, (3, 5, 7, 6), dtype=np.int8)
    for b_shape in ((3, 1, 1, 6), (3, 1, 1, 1)):
        b = rng.integers(-128, 128, b_shape, dtype=np.int8)
        consts = kernels.mul_constants(sa, za, sb, zb, sy, zy, "float")
        np.testing.assert_array_equal(kernels.mul(a, b, consts),
                                      qlinear_mul(a, sa, za, b, sb, zb, sy, zy))


def test_float_concat_equals_qlinear_concat_on_every_code():
    rng = np.random.default_rng(5)
    x = CODES.reshape(1, 16, 16, 1)
    for trial in range(3):
        specs = _quant(rng, 3)
        y_scale, y_zp = specs[1] if trial == 0 else _quant(rng, 1)[0]  # one input: a copy
        xs = [x, np.concatenate([x, x[:, ::-1]], axis=-1), x[:, :, ::-1]]
        consts = kernels.concat_constants(specs, y_scale, y_zp, "float")
        np.testing.assert_array_equal(kernels.concat(xs, consts),
                                      qlinear_concat(xs, specs, y_scale, y_zp))


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_equals_onnxruntime(mode):
    x = np.random.default_rng(6).integers(-128, 128, (2, 4, 5, 3), dtype=np.int8)
    for pads, value in (((1, 2, 0, 3), -7), ((0, 0, 3, 1), 0)):
        np.testing.assert_array_equal(kernels.pad(x, pads, value, mode),
                                      pad_int8(x, pads, value, mode))


@pytest.mark.parametrize("coordinate", ["asymmetric", "half_pixel", "pytorch_half_pixel",
                                        "align_corners", "tf_half_pixel_for_nn"])
@pytest.mark.parametrize("nearest", ["floor", "ceil", "round_prefer_floor",
                                     "round_prefer_ceil"])
def test_resize_indices_equal_onnxruntime_and_the_reference_evaluator(coordinate, nearest):
    from onnx.reference import ReferenceEvaluator
    h, w = 3, 5
    x = np.arange(h * w, dtype=np.float32).reshape(1, 1, h, w)  # each pixel its own index
    for scales in ((1, 1, 2, 2), (1, 1, 3, 2), (1, 1, 2, 4)):
        out_h, out_w = h * scales[2], w * scales[3]
        rows = nearest_indices(h, out_h, float(scales[2]), coordinate, nearest)
        cols = nearest_indices(w, out_w, float(scales[3]), coordinate, nearest)
        expected = rows[:, None] * w + cols[None, :]
        got = resize_nearest_float(x, scales, coordinate, nearest)[0, 0]
        np.testing.assert_array_equal(got, expected)
        if coordinate == "tf_half_pixel_for_nn":
            continue  # deprecated; the reference evaluator does not know it
        node = helper.make_node("Resize", ["x", "roi", "sc"], ["y"], mode="nearest",
                                coordinate_transformation_mode=coordinate, nearest_mode=nearest)
        evaluated = ReferenceEvaluator(node).run(None, {
            "x": x, "roi": np.zeros(0, np.float32), "sc": np.asarray(scales, np.float32)})[0]
        np.testing.assert_array_equal(evaluated[0, 0], expected)
        q = np.random.default_rng(7).integers(-128, 128, (2, h, w, 3), dtype=np.int8)
        np.testing.assert_array_equal(kernels.resize_nearest(q, rows, cols),
                                      q[:, rows][:, :, cols])


# -- fixed mode against TensorFlow Lite Micro ---------------------------------------------------

@pytest.fixture(scope="module")
def tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return pytest.importorskip("tensorflow", reason="pip install -e '.[keras]'")


def _tflm(tf, fn, shapes, ranges):
    """Convert ``fn`` (float inputs of ``shapes``, calibrated on uniform ``ranges``) to an int8
    .tflite; returns its builtin ops, a TFLM interpreter, the inputs' and the output's
    (scale, zero point)."""
    from tflite_micro.python.tflite_micro import runtime as tflm
    concrete = tf.function(fn, input_signature=[tf.TensorSpec(s, tf.float32) for s in shapes])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [concrete.get_concrete_function()], concrete)
    rng = np.random.default_rng(8)

    def representative():
        for _ in range(16):
            yield [rng.uniform(lo, hi, s).astype(np.float32) for s, (lo, hi) in
                   zip(shapes, ranges)]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    flat = converter.convert()
    ops = {op.builtin_code for op in _tflite_operator_codes(flat)}
    interpreter = tflm.Interpreter.from_bytes(flat, arena_size=1 << 20)

    def qparams(details):
        q = details["quantization_parameters"]
        return float(q["scales"][0]), int(q["zero_points"][0])

    quant = [qparams(interpreter.get_input_details(k)) for k in range(len(shapes))]
    return ops, interpreter, quant, qparams(interpreter.get_output_details(0))


def _invoke(interpreter, feeds):
    for k, codes in enumerate(feeds):
        interpreter.set_input(codes, k)
    interpreter.invoke()
    return interpreter.get_output(0)


def _tflite_operator_codes(flat: bytes):
    import tflite
    model = tflite.Model.GetRootAsModel(flat, 0)
    return [_Code(model.OperatorCodes(i)) for i in range(model.OperatorCodesLength())]


class _Code:
    def __init__(self, code):
        self.builtin_code = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())


def _builtin(name: str) -> int:
    import tflite
    return getattr(tflite.BuiltinOperator, name)


def _feed_order(quant, scales_wanted):
    """TFLite may reorder inputs: find each by its (distinct) calibrated range."""
    return [min(range(len(quant)), key=lambda k: abs(quant[k][0] - s)) for s in scales_wanted]


def test_fixed_mul_equals_tflm(tf):
    rng = np.random.default_rng(9)
    for b_shape in ((1, 16, 16, 3), (1, 1, 1, 3)):
        a = rng.integers(-128, 128, (1, 16, 16, 3), dtype=np.int8)
        b = rng.integers(-128, 128, b_shape, dtype=np.int8)
        ops, interpreter, quant, (sy, zy) = _tflm(
            tf, lambda x, y: x * y, [a.shape, b.shape], [(-2.0, 3.0), (-0.3, 0.5)])
        assert ops == {_builtin("MUL")}
        order = _feed_order(quant, [5.0 / 255, 0.8 / 255])
        got = _invoke(interpreter, [(a, b)[k] for k in np.argsort(order)])
        (sa, za), (sb, zb) = (quant[k] for k in order)
        consts = kernels.mul_constants(sa, za, sb, zb, sy, zy, "fixed")
        np.testing.assert_array_equal(kernels.mul(a, b, consts), got)


def test_fixed_sub_equals_tflm_on_every_pair_of_codes(tf):
    a, b = _all_pairs()
    ops, interpreter, quant, (sy, zy) = _tflm(tf, lambda x, y: x - y, [a.shape, b.shape],
                                              [(-2.0, 3.0), (-0.3, 0.5)])
    assert ops == {_builtin("SUB")}
    order = _feed_order(quant, [5.0 / 255, 0.8 / 255])
    got = _invoke(interpreter, [(a, b)[k] for k in np.argsort(order)])
    (sa, za), (sb, zb) = (quant[k] for k in order)
    consts = kernels.sub_constants(sa, za, sb, zb, sy, zy, "fixed")
    expected = kernels.sub(a, b, consts)
    np.testing.assert_array_equal(expected, got)
    # a - rq(b) is not rq(-b): the test would notice the other rounding
    negated = kernels.add(a, (-b.astype(np.int16) + 2 * zb).clip(-128, 127).astype(np.int8),
                          kernels.add_constants(sa, za, sb, zb, sy, zy, "fixed"))
    assert not np.array_equal(negated, got)


def test_fixed_concat_pad_resize_equal_tflm(tf):
    rng = np.random.default_rng(10)
    x = rng.integers(-128, 128, (1, 5, 6, 3), dtype=np.int8)
    y = rng.integers(-128, 128, (1, 5, 6, 2), dtype=np.int8)
    ops, interpreter, quant, (sy, zy) = _tflm(tf, lambda p, q: tf.concat([p, q], axis=-1),
                                              [x.shape, y.shape], [(-1, 1), (-1, 1)])
    got = _invoke(interpreter, [x, y])
    assert ops == {_builtin("CONCATENATION")} and quant[0] == quant[1] == (sy, zy)
    consts = kernels.concat_constants(quant, sy, zy, "fixed")
    np.testing.assert_array_equal(kernels.concat([x, y], consts), got)

    pads = (1, 2, 2, 0)
    ops, interpreter, quant, (sy, zy) = _tflm(
        tf, lambda p: tf.pad(p, [[0, 0], [pads[0], pads[2]], [pads[1], pads[3]], [0, 0]]),
        [x.shape], [(-1.0, 2.0)])
    got = _invoke(interpreter, [x])
    assert ops == {_builtin("PAD")} and quant[0] == (sy, zy)
    value = kernels.quantize(np.float32(0.0), sy, zy)
    np.testing.assert_array_equal(kernels.pad(x, pads, value), got)

    for size in ((10, 12), (15, 18)):  # TF's half_pixel_centers: tf_half_pixel_for_nn, floor
        ops, interpreter, quant, (sy, zy) = _tflm(
            tf, lambda p: tf.image.resize(p, size, method="nearest"), [x.shape], [(-1.0, 2.0)])
        got = _invoke(interpreter, [x])
        assert ops == {_builtin("RESIZE_NEAREST_NEIGHBOR")} and quant[0] == (sy, zy)
        rows = nearest_indices(5, size[0], size[0] / 5, "tf_half_pixel_for_nn", "floor")
        cols = nearest_indices(6, size[1], size[1] / 6, "tf_half_pixel_for_nn", "floor")
        np.testing.assert_array_equal(kernels.resize_nearest(x, rows, cols), got)


# -- an ONNX graph using every op: export, model.q.onnx, C ---------------------------------------

def _conv(name, x, y, cin, cout, rng, k=3):
    w = rng.normal(0, 0.3, (cout, cin, k, k)).astype(np.float32)
    b = rng.normal(0, 0.1, cout).astype(np.float32)
    return ([helper.make_node("Conv", [x, name + "_w", name + "_b"], [y], name=name,
                              pads=[k // 2] * 4)],
            [numpy_helper.from_array(w, name + "_w"), numpy_helper.from_array(b, name + "_b")])


def onnx_graph(pad_mode="constant", resize_mode="nearest") -> onnx.ModelProto:
    rng = np.random.default_rng(11)
    nodes, inits = [], []
    for n, i in (_conv("c1", "x", "a", 3, 4, rng), _conv("c2", "x", "b", 3, 4, rng)):
        nodes += n
        inits += i
    nodes.append(helper.make_node("Relu", ["a"], ["ar"], name="relu"))
    nodes.append(helper.make_node("Concat", ["ar", "b", "x"], ["cat"], name="cat", axis=1))
    inits += [numpy_helper.from_array(np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "pads"),
              numpy_helper.from_array(np.array(0.25, np.float32), "pad_value"),
              numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    nodes.append(helper.make_node("Pad", ["cat", "pads", "pad_value"], ["padded"], name="pad",
                                  mode=pad_mode))
    nodes.append(helper.make_node("Resize", ["padded", "", "scales"], ["up"], name="up",
                                  mode=resize_mode, coordinate_transformation_mode="asymmetric",
                                  nearest_mode="floor"))
    for n, i in (_conv("c3", "up", "t", 11, 6, rng, k=1),):
        nodes += n
        inits += i
    nodes.append(helper.make_node("GlobalAveragePool", ["t"], ["g"], name="squeeze"))
    for n, i in (_conv("c4", "g", "s", 6, 6, rng, k=1),):
        nodes += n
        inits += i
    nodes.append(helper.make_node("Mul", ["s", "t"], ["m"], name="excite"))
    nodes.append(helper.make_node("Sub", ["t", "m"], ["d"], name="sub"))
    nodes.append(helper.make_node("Relu", ["d"], ["y"], name="relu_out"))
    graph = helper.make_graph(
        nodes, "tensor_ops", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                            ["N", 3, 6, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _images(count, seed, shape=(3, 6, 5)):
    return np.random.default_rng(seed).normal(0, 1, (count, *shape)).astype(np.float32)


@pytest.fixture(scope="module")
def exported():
    model = onnx_graph()
    return {mode: export.from_onnx(model, _images(16, 1), requant=mode) for mode in MODES}


def test_onnx_graph_maps_onto_the_tensor_ops(exported):
    ops = [layer.op for layer in exported["float"].model.layers]
    assert {"concat", "pad", "resize_nearest", "mul", "sub"} <= set(ops)
    tables = exported["float"].model.layers[ops.index("concat")].arrays["tables"]
    assert not np.array_equal(tables[0], CODES)  # the inputs' quantizations differ


def test_onnx_graph_float_mode_equals_onnxruntime_on_every_tensor(exported):
    x = _images(12, 5)
    assert_float_mode_equals_onnxruntime(exported["float"], x, x.transpose(0, 2, 3, 1))


def test_onnx_graph_fixed_within_one_lsb_per_layer(exported):
    assert_fixed_within_one_lsb_of_float(exported, _images(12, 5).transpose(0, 2, 3, 1))


@pytest.mark.parametrize("mode", MODES)
def test_c_model_equals_runtime(exported, mode, tmp_path):
    model = exported[mode].model
    objects = compile_kernel_objects(tmp_path / "obj", mode == "float")
    write_c_sources(model, tmp_path)
    exe = build_native_runner(tmp_path, objects, mode == "float")
    x = np.random.default_rng(12).integers(-128, 128, (8, *model.input_spec.shape),
                                           dtype=np.int8)
    np.testing.assert_array_equal(run_native(exe, model, x), runtime.run(model, x))


@pytest.mark.parametrize("pad_mode, mode", [("reflect", "fixed"), ("edge", "float")])
def test_reflect_and_edge_pad_through_export_and_c(pad_mode, mode, tmp_path):
    result = export.from_onnx(onnx_graph(pad_mode=pad_mode), _images(16, 1), requant=mode)
    [layer] = [layer for layer in result.model.layers if layer.op == "pad"]
    assert layer.params["mode"] == pad_mode
    x = _images(6, 2)
    if mode == "float":
        assert_float_mode_equals_onnxruntime(result, x, x.transpose(0, 2, 3, 1))
    model = result.model
    objects = compile_kernel_objects(tmp_path / "obj", mode == "float")
    write_c_sources(model, tmp_path)
    exe = build_native_runner(tmp_path, objects, mode == "float")
    q = np.random.default_rng(14).integers(-128, 128, (4, *model.input_spec.shape), dtype=np.int8)
    np.testing.assert_array_equal(run_native(exe, model, q), runtime.run(model, q))


def test_zero_pad_before_a_conv_is_the_convs_padding():
    rng = np.random.default_rng(13)
    nodes, inits = _conv("c", "padded", "y", 3, 4, rng)
    nodes.insert(0, helper.make_node("Pad", ["x", "pads"], ["padded"], name="pad"))
    inits.append(numpy_helper.from_array(np.array([0, 0, 2, 0, 0, 0, 1, 3], np.int64), "pads"))
    graph = helper.make_graph(
        nodes, "padded_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             ["N", 3, 6, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    result = export.from_onnx(model, _images(8, 1), requant="float")
    [layer] = result.model.layers
    assert layer.op == "conv2d" and layer.params["padding"] == [3, 1, 2, 4]
    x = _images(6, 2)
    assert_float_mode_equals_onnxruntime(result, x, x.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("perms, folded", [([[0, 2, 3, 1], [0, 3, 1, 2]], True),
                                           ([[0, 1, 3, 2], [0, 1, 2, 3]], False)])
def test_movement_chains_that_are_views_vanish_and_others_are_refused(perms, folded):
    """A Transpose pair that cancels is evaluated to a view; one that swaps H and W is not a
    view or a nearest resize and stays, refused by name."""
    rng = np.random.default_rng(15)
    first, inits = _conv("c1", "x", "a", 3, 4, rng)
    second, more = _conv("c2", "t1", "y", 4, 4, rng)
    nodes = first + [helper.make_node("Transpose", ["a"], ["t0"], name="t0", perm=perms[0]),
                     helper.make_node("Transpose", ["t0"], ["t1"], name="t1",
                                      perm=perms[1])] + second
    graph = helper.make_graph(
        nodes, "views", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits + more)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    if not folded:
        with pytest.raises(TinyconvError, match="node 't0' has op Transpose"):
            export.from_onnx(model, _images(4, 1, (3, 6, 6)))
        return
    result = export.from_onnx(model, _images(8, 1, (3, 6, 6)), requant="float")
    assert [layer.op for layer in result.model.layers] == ["conv2d", "conv2d"]
    x = _images(4, 2, (3, 6, 6))
    assert_float_mode_equals_onnxruntime(result, x, x.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("change, words", [
    (dict(pad_mode="wrap"), ("'pad'", "Pad", "wrap")),
    (dict(resize_mode="linear"), ("'up'", "Resize", "linear")),
])
def test_refusals_name_node_and_op_in_one_line(change, words):
    with pytest.raises(TinyconvError) as info:
        export.from_onnx(onnx_graph(**change), _images(4, 1))
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message


# -- a PyTorch and a Keras (tf2onnx) model using these ops ------------------------------------

def _torch_model():
    torch = pytest.importorskip("torch", reason="pip install -e '.[torch]'")
    nn, F = torch.nn, torch.nn.functional

    class Net(nn.Module):
        """Concat of two branches, a Pad the pool cannot absorb, Upsample, squeeze-and-excite
        Mul, Sub, mean over H, W."""

        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 3, padding=1)
            self.c3, self.c4 = nn.Conv2d(16, 8, 1), nn.Conv2d(8, 8, 1)
            self.up, self.fc = nn.Upsample(scale_factor=2, mode="nearest"), nn.Linear(8, 10)

        def forward(self, x):
            c = torch.cat([F.relu(self.c1(x)), self.c2(x)], 1)
            t = self.c3(self.up(F.max_pool2d(F.pad(c, (1, 1, 1, 1), value=0.25), 2)))
            s = F.relu(self.c4(F.adaptive_avg_pool2d(t, 1)))
            return self.fc((t - t * s).mean((2, 3)))

    torch.manual_seed(SEED)
    net = Net().eval()
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"tensor_ops_{os.getpid()}.onnx"
    torch.onnx.export(net, torch.randn(2, 3, 12, 12), str(path), dynamo=False, opset_version=13,
                      input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    source = onnx.load(str(path))
    path.unlink()
    return (lambda x: net(torch.from_numpy(x)).detach().numpy()), source, (3, 12, 12)


def _keras_model(tf):
    tf2onnx = pytest.importorskip("tf2onnx", reason="pip install -e '.[keras]'")
    layers = tf.keras.layers
    tf.keras.utils.set_random_seed(SEED)
    image = tf.keras.Input((12, 12, 3), name="image")
    c = layers.Concatenate()([layers.Conv2D(8, 3, padding="same", activation="relu")(image),
                              layers.Conv2D(8, 3, padding="same")(image)])
    p = layers.MaxPooling2D()(layers.ZeroPadding2D(1)(c))
    t = layers.Conv2D(8, 1)(layers.Resizing(14, 14, interpolation="nearest")(p))
    pooled = layers.GlobalAveragePooling2D(keepdims=True)(t)
    s = layers.Conv2D(8, 1, activation="relu")(pooled)
    d = layers.Subtract()([t, layers.Multiply()([t, s])])
    u = layers.UpSampling2D((2, 3))(d)  # tf2onnx: Unsqueeze/Tile/Transpose/Reshape chains
    keras = tf.keras.Model(image, layers.Dense(10)(layers.GlobalAveragePooling2D()(u)))
    signature = (tf.TensorSpec((None, 12, 12, 3), tf.float32, name="image"),)
    source, _ = tf2onnx.convert.from_keras(keras, input_signature=signature, opset=17)
    return (lambda x: np.asarray(keras(x, training=False))), source, (12, 12, 3)


SEED = 2026
FRAMEWORK_OPS = {"Concat", "Pad", "Resize", "Mul", "Sub"}


@pytest.fixture(scope="module", params=["torch", "keras"])
def framework(request, tf):
    forward, source, shape = _torch_model() if request.param == "torch" else _keras_model(tf)
    assert FRAMEWORK_OPS <= {node.op_type for node in source.graph.node}
    calibration = _images(16, 1, shape)
    results = {mode: export.from_onnx(source, calibration, requant=mode) for mode in MODES}
    return request.param, forward, shape, results


def test_framework_model_float_equals_onnxruntime_and_fixed_within_one_lsb(framework):
    name, forward, shape, results = framework
    x = _images(12, 5, shape)
    nhwc = x if name == "keras" else x.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(ort_float(results["float"].float_model, x), forward(x),
                               rtol=1e-4, atol=1e-4)
    assert_float_mode_equals_onnxruntime(results["float"], x, nhwc)
    assert_fixed_within_one_lsb_of_float(results, nhwc)
    ops = [layer.op for layer in results["fixed"].model.layers]
    assert {"concat", "pad", "resize_nearest", "mul", "sub"} <= set(ops)
    assert ops.count("resize_nearest") == (2 if name == "keras" else 1)


def test_framework_model_on_the_host_device(framework, tmp_path):
    """Every device output equals runtime/'s (and onnxruntime's in float mode)."""
    from firmware_host.verify import verify
    _, forward, shape, results = framework
    x = _images(20, 8, shape)
    data = tmp_path / "data.npz"
    np.savez(data, x=x, y=np.argmax(forward(x), axis=1))
    for mode, result in results.items():
        run = verify(result.save(tmp_path / mode), data, labels=True, device="host",
                     progress=False)
        assert run.exit_status == 0 and run.device_equal_images == run.images == 20
        if mode == "float":
            assert run.ort_equal_images == 20
