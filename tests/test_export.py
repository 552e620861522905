"""export/: a PyTorch-shaped CNN built with onnx.helper, exported in both requantization modes.

Oracles are independent of the code under test: onnxruntime running the source float model and
the written model.q.onnx, runtime/'s executor, and hand-computed figures.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import export
import runtime
from export.qonnx import run_qonnx
from runtime import kernels
from _export_checks import assert_fixed_within_one_lsb_of_float, ort_float
from _tools import require_tool

SEED = 1234
N_CALIB, N_TEST = 24, 12


def _init(rng, name, *shape, scale=0.3):
    return numpy_helper.from_array((rng.normal(size=shape) * scale).astype(np.float32), name)


def _bn(rng, prefix, c):
    return [numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), prefix + "_g"),
            numpy_helper.from_array(rng.normal(0, 0.1, c).astype(np.float32), prefix + "_b"),
            numpy_helper.from_array(rng.normal(0, 0.1, c).astype(np.float32), prefix + "_m"),
            numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), prefix + "_v")]


def cnn(head: str = "reducemean", layout: str = "NCHW") -> onnx.ModelProto:
    """conv+BN+relu, depthwise+relu6, 1x1, strided conv, maxpool, avgpool, residual add,
    global pool (ReduceMean or GlobalAveragePool), Flatten+Gemm or Reshape+MatMul+Add."""
    rng = np.random.default_rng(SEED)
    mk = helper.make_node
    nodes, inits = [], []
    x_in = "input"
    if layout == "NHWC":  # tf2onnx / Keras
        nodes.append(mk("Transpose", ["input"], ["input_nchw"], perm=[0, 3, 1, 2]))
        x_in = "input_nchw"
    nodes += [
        mk("Conv", [x_in, "c1_w"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        mk("BatchNormalization", ["c1", "bn1_g", "bn1_b", "bn1_m", "bn1_v"], ["bn1"], name="bn1"),
        mk("Relu", ["bn1"], ["r1"], name="relu1"),
        mk("Conv", ["r1", "dw_w", "dw_b"], ["dw"], name="dwconv", group=8, pads=[1, 1, 1, 1]),
        mk("Clip", ["dw", "zero", "six"], ["r2"], name="relu6"),
        mk("Identity", ["r2"], ["r2i"], name="ident"),
        mk("Conv", ["r2i", "pw_w", "pw_b"], ["pw"], name="pwconv"),
        mk("Relu", ["pw"], ["r3"], name="relu3"),
        mk("Conv", ["r3", "s2_w", "s2_b"], ["s2"], name="strided", strides=[2, 2],
           auto_pad="SAME_UPPER"),
        mk("Relu", ["s2"], ["r4"], name="relu4"),
        mk("Dropout", ["r4"], ["r4d"], name="drop"),
        mk("MaxPool", ["r4d"], ["mp"], name="maxpool", kernel_shape=[2, 2], strides=[2, 2]),
        mk("AveragePool", ["mp"], ["ap"], name="avgpool", kernel_shape=[3, 3],
           pads=[1, 1, 1, 1], count_include_pad=0),
        mk("Conv", ["ap", "res_w", "res_b"], ["res"], name="resconv", dilations=[2, 2],
           pads=[2, 2, 2, 2]),
        mk("Add", ["ap", "res"], ["sum"], name="add"),
        mk("Relu", ["sum"], ["r5"], name="relu5"),
    ]
    inits += [_init(rng, "c1_w", 8, 3, 3, 3), *_bn(rng, "bn1", 8),
              _init(rng, "dw_w", 8, 1, 3, 3, scale=0.5), _init(rng, "dw_b", 8, scale=0.1),
              numpy_helper.from_array(np.array(0, np.float32), "zero"),
              numpy_helper.from_array(np.array(6, np.float32), "six"),
              _init(rng, "pw_w", 16, 8, 1, 1), _init(rng, "pw_b", 16, scale=0.1),
              _init(rng, "s2_w", 16, 16, 3, 3, scale=0.15), _init(rng, "s2_b", 16, scale=0.1),
              _init(rng, "res_w", 16, 16, 3, 3, scale=0.1), _init(rng, "res_b", 16, scale=0.1)]
    if head == "reducemean":
        nodes += [mk("ReduceMean", ["r5", "axes"], ["gap"], name="gap", keepdims=1),
                  mk("Flatten", ["gap"], ["flat"], name="flatten"),
                  mk("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1)]
        inits += [numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
                  _init(rng, "fc_w", 10, 16), _init(rng, "fc_b", 10, scale=0.1)]
    elif head == "gap_gemm":  # what onnxruntime quantizes to QLinear ops end to end
        nodes += [mk("GlobalAveragePool", ["r5"], ["gap"], name="gap"),
                  mk("Flatten", ["gap"], ["flat"], name="flatten"),
                  mk("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1)]
        inits += [_init(rng, "fc_w", 10, 16), _init(rng, "fc_b", 10, scale=0.1)]
    else:  # GlobalAveragePool, Reshape, MatMul + Add, with a Constant node for the shape
        nodes += [mk("GlobalAveragePool", ["r5"], ["gap"], name="gap"),
                  mk("Constant", [], ["shape"], name="shape_const",
                     value=numpy_helper.from_array(np.array([-1, 16], np.int64))),
                  mk("Reshape", ["gap", "shape"], ["flat"], name="reshape"),
                  mk("MatMul", ["flat", "fc_w"], ["mm"], name="fc"),
                  mk("Add", ["mm", "fc_b"], ["logits"], name="fc_bias")]
        inits += [_init(rng, "fc_w", 16, 10), _init(rng, "fc_b", 10, scale=0.1)]
    shape = ["N", 16, 16, 3] if layout == "NHWC" else ["N", 3, 16, 16]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info(
        "input", TensorProto.FLOAT, shape)], [helper.make_tensor_value_info(
            "logits", TensorProto.FLOAT, ["N", 10])], inits)
    opset = 18 if head == "reducemean" else 13  # ReduceMean takes axes as an input from 18
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def images(count: int, layout: str = "NCHW", seed: int = 7) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(count, 3, 16, 16)).astype(np.float32)
    return x.transpose(0, 2, 3, 1).copy() if layout == "NHWC" else x


def to_nhwc(x: np.ndarray, layout: str) -> np.ndarray:
    return x if layout == "NHWC" else x.transpose(0, 2, 3, 1)


CASES = [("reducemean", "NCHW"), ("globalpool", "NCHW"), ("reducemean", "NHWC")]


@pytest.fixture(scope="module")
def exports():
    """(head, layout, mode) -> ExportResult, built once per test module (process)."""
    results = {}
    for head, layout in CASES:
        for mode in ("float", "fixed"):
            results[head, layout, mode] = export.from_onnx(
                cnn(head, layout), images(N_CALIB, layout, seed=1), requant=mode)
    return results


@pytest.mark.parametrize("head,layout", CASES)
def test_float_mode_equals_onnxruntime_on_every_tensor(exports, head, layout):
    result = exports[head, layout, "float"]
    x = images(N_TEST, layout)
    expected = run_qonnx(result.quant_onnx, result.model, x, collect=True)
    # the input quantization is onnxruntime's QuantizeLinear, and runtime's quantize agrees
    spec = result.model.input_spec
    x_q = kernels.quantize(to_nhwc(x, layout), spec.scale, spec.zero_point)
    assert np.array_equal(x_q, expected[result.model.input])
    y, got = runtime.run(result.model, x_q, collect=True)
    assert set(got) == set(expected)
    for name in result.model.tensors:  # per layer, so a mismatch names its layer
        assert np.array_equal(got[name], expected[name]), f"tensor {name} differs"
    assert np.array_equal(y, expected[result.model.output])


@pytest.mark.parametrize("head,layout", CASES)
def test_fixed_mode_within_one_lsb_of_float_per_layer(exports, head, layout):
    results = {mode: exports[head, layout, mode] for mode in ("float", "fixed")}
    differing, compared = assert_fixed_within_one_lsb_of_float(
        results, to_nhwc(images(N_TEST, layout), layout))
    assert differing < 0.05 * compared


@pytest.mark.parametrize("head,layout", CASES)
def test_model_onnx_is_valid_and_computes_the_source_model(exports, head, layout):
    result = exports[head, layout, "float"]
    onnx.checker.check_model(result.float_model, full_check=True)
    ops = {n.op_type for n in result.float_model.graph.node}
    assert not ops & {"BatchNormalization", "Identity", "Dropout", "Constant"}
    x = images(N_TEST, layout)
    source = ort_float(cnn(head, layout), x)
    np.testing.assert_allclose(ort_float(result.float_model, x), source, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("head,layout", CASES)
def test_quantized_model_tracks_the_float_model(exports, head, layout):
    """Quantization is sane: the int8 model's dequantized logits follow the float logits."""
    result = exports[head, layout, "fixed"]
    x = images(N_TEST, layout)
    reference = ort_float(cnn(head, layout), x)
    quantized = ort_float(result.quant_onnx, x)
    assert quantized.shape == reference.shape and quantized.dtype == np.float32
    cosine = (reference * quantized).sum() / np.linalg.norm(reference) / np.linalg.norm(quantized)
    assert cosine > 0.98
    spec = result.model.input_spec
    y = runtime.run(result.model, kernels.quantize(to_nhwc(x, layout), spec.scale,
                                                   spec.zero_point))
    out = result.model.output_spec
    np.testing.assert_allclose(kernels.dequantize(y, out.scale, out.zero_point), reference,
                               atol=0.15 * np.abs(reference).max())


def test_q_onnx_is_a_drop_in_for_model_onnx(exports):
    result = exports["reducemean", "NHWC", "float"]
    for a, b in ((result.float_model.graph.input[0], result.quant_onnx.graph.input[0]),
                 (result.float_model.graph.output[0], result.quant_onnx.graph.output[0])):
        assert a.SerializeToString() == b.SerializeToString()
    ops = {n.op_type for n in result.quant_onnx.graph.node}
    assert {"QLinearConv", "QLinearAdd", "QLinearAveragePool", "QLinearGlobalAveragePool",
            "MaxPool", "QuantizeLinear", "DequantizeLinear"} <= ops
    assert not ops & {"Conv", "Gemm", "MatMul", "Add"}


def test_stored_weights_are_the_quant_model_values(exports):
    result = exports["reducemean", "NCHW", "float"]
    inits = {i.name: numpy_helper.to_array(i) for i in result.quant_onnx.graph.initializer}
    for layer in result.model.layers:
        if layer.op == "conv2d":
            assert np.array_equal(inits[layer.name + "_W"],
                                  layer.arrays["weights"].transpose(0, 3, 1, 2))
            assert np.array_equal(inits[layer.name + "_B"], layer.arrays["bias"])
            w = layer.arrays["weights"]
            assert w.dtype == np.int8 and w.min() >= -127


def test_quantization_choices_by_hand(exports):
    result = exports["reducemean", "NCHW", "fixed"]
    model, graph = result.model, result.graph
    conv = model.layers[0]
    float_w = graph.layers[0].weights  # OHWI, BN folded
    scales = np.abs(float_w).reshape(8, -1).max(axis=1) / 127
    expected = np.clip(np.round(float_w / scales[:, None, None, None]), -127, 127)
    assert np.array_equal(conv.arrays["weights"], expected.astype(np.int8))
    assert np.abs(conv.arrays["weights"]).reshape(8, -1).max(axis=1).tolist() == [127] * 8
    # relu6 on the depthwise conv: the clamp sits inside the calibrated range
    dw = model.layers[1]
    y = model.tensors[dw.output]
    assert dw.params["act_min"] == max(-128, y.zero_point)
    assert dw.params["act_max"] == min(127, y.zero_point + round(6 / y.scale))
    # max pool keeps its input's quantization
    mp = next(layer for layer in model.layers if layer.op == "max_pool2d")
    a, b = model.tensors[mp.inputs[0]], model.tensors[mp.output]
    assert (a.scale, a.zero_point) == (b.scale, b.zero_point)
    # report: conv1 does 16*16 outputs * 8 channels * 3*3*3 taps
    row = result.report["layers"][0]
    assert row["macs"] == 16 * 16 * 8 * 27
    assert row["weight_bytes"] == 8 * 27 + 8 * 4 + 8 * 4 + 8 * 4
    assert result.report["totals"]["ram_bytes"] == model.arena_size


def test_per_tensor_weights_use_one_scale():
    x = images(N_CALIB, seed=1)
    result = export.from_onnx(cnn(), x, per_channel=False, requant="float")
    conv = result.model.layers[0]
    assert np.abs(conv.arrays["weights"]).max() == 127
    assert len(set(conv.arrays["scale"].tolist())) == 1
    y = run_qonnx(result.quant_onnx, result.model, images(4))
    spec = result.model.input_spec
    x_q = kernels.quantize(images(4).transpose(0, 2, 3, 1), spec.scale, spec.zero_point)
    assert np.array_equal(runtime.run(result.model, x_q), y)


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_other_calibration_methods(method):
    result = export.from_onnx(cnn("globalpool"), images(N_CALIB, seed=1), method=method,
                              requant="float")
    x = images(4)
    spec = result.model.input_spec
    x_q = kernels.quantize(x.transpose(0, 2, 3, 1), spec.scale, spec.zero_point)
    assert np.array_equal(runtime.run(result.model, x_q),
                          run_qonnx(result.quant_onnx, result.model, x))


def test_arena_plan_never_overlaps_live_tensors(exports):
    for result in exports.values():
        model = result.model
        born = {model.input: -1}
        dies = {model.input: -1}
        for step, layer in enumerate(model.layers):
            born[layer.output] = dies[layer.output] = step
            for name in layer.inputs:
                dies[name] = step
        dies[model.output] = len(model.layers)
        peak = 0
        for step in range(-1, len(model.layers) + 1):
            alive = [t for t in model.tensors.values() if born[t.name] <= step <= dies[t.name]]
            peak = max(peak, sum(t.size for t in alive))
            for i, a in enumerate(alive):
                assert a.offset % 4 == 0 and a.offset + a.size <= model.arena_size
                for b in alive[i + 1:]:
                    assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset, \
                        f"{a.name} and {b.name} overlap at step {step}"
        assert peak <= model.arena_size <= peak + 4 * len(model.tensors)


def test_from_filters_eight_3x3_filters(tmp_path):
    rng = np.random.default_rng(3)
    filters = rng.normal(size=(8, 3, 3)).astype(np.float32)
    bias = rng.normal(size=8).astype(np.float32)
    calib = rng.normal(size=(16, 12, 12)).astype(np.float32)
    result = export.from_filters(filters, bias, (12, 12), calib, relu=True, requant="float")
    model = result.model
    assert [layer.op for layer in model.layers] == ["conv2d"]
    assert model.input_spec.shape == (12, 12, 1) and model.output_spec.shape == (12, 12, 8)
    # the float model is the plain convolution (checked against a direct loop)
    x = calib[:2, None]
    y = ort_float(result.float_model, x)
    xp = np.pad(x[:, 0], ((0, 0), (1, 1), (1, 1)))
    direct = np.zeros((2, 8, 12, 12), np.float64)
    for m in range(8):
        for i in range(3):
            for j in range(3):
                direct[:, m] += filters[m, i, j] * xp[:, i:i + 12, j:j + 12]
    np.testing.assert_allclose(y, np.maximum(direct + bias[None, :, None, None], 0),
                               rtol=1e-4, atol=1e-4)
    spec = model.input_spec
    x_q = kernels.quantize(x.transpose(0, 2, 3, 1), spec.scale, spec.zero_point)
    assert np.array_equal(runtime.run(model, x_q), run_qonnx(result.quant_onnx, model, x))
    out = result.save(tmp_path / "filters")
    assert runtime.load(out).hash == model.hash


def test_save_writes_every_artifact_and_they_reload(exports, tmp_path):
    result = exports["globalpool", "NCHW", "fixed"]
    out = result.save(tmp_path / "net")
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "model.q.onnx", "model.tcm", "report.json"} <= names
    loaded = runtime.load(out / "model.tcm")
    assert loaded.hash == result.model.hash and loaded.arena_size == result.model.arena_size
    onnx.checker.check_model(onnx.load(out / "model.onnx"))
    x = images(3)
    np.testing.assert_array_equal(ort_float(onnx.load(out / "model.q.onnx"), x),
                                  ort_float(result.quant_onnx, x))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_external_data_model_is_read(tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save(cnn(), path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)
    assert (tmp_path / "ext.onnx.data").stat().st_size > 1000
    x = images(N_CALIB, seed=1)
    from_file = export.from_onnx(path, x, name="cnn")
    in_memory = export.from_onnx(cnn(), x, name="cnn")
    assert from_file.model.hash == in_memory.model.hash


def test_local_functions_are_inlined():
    mk = helper.make_node
    block = helper.make_function(
        "local", "ConvRelu", ["x", "w"], ["y"],
        [mk("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), mk("Relu", ["c"], ["y"])],
        [helper.make_opsetid("", 17)])
    rng = np.random.default_rng(5)
    graph = helper.make_graph(
        [mk("ConvRelu", ["input", "w"], ["out"], domain="local", name="block")], "fn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4, 6, 6])],
        [_init(rng, "w", 4, 2, 3, 3)])
    model = helper.make_model(graph, functions=[block], opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    x = rng.normal(size=(8, 2, 6, 6)).astype(np.float32)
    result = export.from_onnx(model, x, requant="float")
    assert [layer.op for layer in result.model.layers] == ["conv2d"]
    assert result.model.layers[0].params["act_min"] == result.model.output_spec.zero_point
    np.testing.assert_allclose(ort_float(result.float_model, x), ort_float(model, x), rtol=1e-5)


@pytest.mark.parametrize("compiler", ["gcc", "arm-none-eabi-gcc"])
def test_every_generated_model_data_c_compiles(exports, tmp_path, compiler):
    import subprocess
    from pathlib import Path

    cc = require_tool(compiler)
    firmware_src = Path(__file__).resolve().parent.parent / "firmware" / "src"
    for index, result in enumerate(exports.values()):
        out = result.save(tmp_path / f"m{index}")
        assert (out / "model_data.h").exists() and (out / "model_data.c").exists()
        done = subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic",
                               "-I", str(out), "-I", str(firmware_src), "-c",
                               str(out / "model_data.c"), "-o", str(out / "model_data.o")],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_per_layer_comparison_points_at_the_broken_layer(exports):
    import copy

    from export.compare import compare_layers, first_mismatch

    result = exports["globalpool", "NCHW", "float"]
    x = images(4)
    rows = compare_layers(result.model, result.quant_onnx, x)
    assert len(rows) == len(result.model.layers) and first_mismatch(rows) is None
    broken = copy.deepcopy(result.model)
    target = broken.layers[2]  # the 1x1 conv
    target.arrays["bias"] = target.arrays["bias"] + 5000
    row = first_mismatch(compare_layers(broken, result.quant_onnx, x))
    assert row is not None and row["layer"] == target.name and row["max_lsb"] > 0


def test_clamp_after_max_pool_becomes_an_int8_clip():
    """Max pool keeps its input's quantization, so a Relu after it is a real clamp: model.q.onnx
    needs a Clip on int8, and onnxruntime must still agree with runtime/ exactly."""
    mk = helper.make_node
    rng = np.random.default_rng(9)
    graph = helper.make_graph(
        [mk("Conv", ["input", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         mk("MaxPool", ["c"], ["mp"], name="pool", kernel_shape=[3, 3], strides=[2, 2],
            pads=[1, 1, 1, 1]),
         mk("Clip", ["mp", "lo", "hi"], ["out"], name="clip")], "clamp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 2, 9, 9])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4, 5, 5])],
        [_init(rng, "w", 4, 2, 3, 3), _init(rng, "b", 4),
         numpy_helper.from_array(np.array(-0.2, np.float32), "lo"),
         numpy_helper.from_array(np.array(0.3, np.float32), "hi")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = rng.normal(size=(16, 2, 9, 9)).astype(np.float32)
    result = export.from_onnx(model, x, requant="float")
    pool = result.model.layers[1]
    spec = result.model.tensors[pool.output]
    assert pool.params["act_min"] == spec.zero_point + round(-0.2 / spec.scale) > -128
    assert pool.params["act_max"] == spec.zero_point + round(0.3 / spec.scale) < 127
    assert "Clip" in {n.op_type for n in result.quant_onnx.graph.node}
    x_q = kernels.quantize(x.transpose(0, 2, 3, 1), result.model.input_spec.scale,
                           result.model.input_spec.zero_point)
    y = runtime.run(result.model, x_q)
    assert np.array_equal(y, run_qonnx(result.quant_onnx, result.model, x))
    assert y.min() == pool.params["act_min"] and y.max() == pool.params["act_max"]
