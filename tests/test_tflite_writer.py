"""export/tflite_writer.py: a fixed-mode QuantModel written as a .tflite that TFLite Micro runs.

The oracle is the real TFLM interpreter (tflite-micro) on the written file: runtime/ must
equal it on every element of every tensor (export/tflite_reference.compare, by the writer's
tensor-index map). Each op gets a small hand-built model whose constants come from runtime/'s
constant functions, as export makes them; TFLM derives its own from the scales in the file.
"""
from __future__ import annotations

import numpy as np
import pytest

from export import tables
from export.plan import plan_arena
from export.tflite_import import activation_range
from export.tflite_reference import compare
from export.tflite_writer import Unwritable, write
from runtime import kernels
from runtime.model import Layer, QuantModel, TensorSpec
from runtime.requant import Requant

pytest.importorskip("tflite_micro")

FULL = {"act_min": -128, "act_max": 127}


class Net:
    """A model under construction: tensors by name, layers in order."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.tensors: dict[str, TensorSpec] = {}
        self.layers: list[Layer] = []

    def tensor(self, name, shape, scale, zp) -> TensorSpec:
        self.tensors[name] = TensorSpec(name, tuple(shape), float(np.float32(scale)), zp)
        return self.tensors[name]

    def act(self, name: str, kind: str) -> dict:
        y = self.tensors[name]
        low, high = activation_range(kind, y.scale, y.zero_point)
        return {"act_min": low, "act_max": high}

    def weighted(self, src, dst, w, w_scales) -> dict:
        x, y = self.tensors[src], self.tensors[dst]
        rq = Requant.from_scales(x.scale, w_scales, y.scale, "fixed")
        bias = self.rng.integers(-3000, 3000, w.shape[0]).astype(np.int32)
        return {"weights": w, "bias": bias, "multiplier": rq.multiplier, "shift": rq.shift}

    def conv(self, name, src, dst, m, k, *, groups=1, stride=1, padding=(0, 0, 0, 0),
             dilation=1, act="NONE"):
        c = self.tensors[src].shape[2]
        w = self.rng.integers(-127, 128, (m, k, k, c // groups)).astype(np.int8)
        scales = np.exp(self.rng.uniform(-6, -4, m)).astype(np.float32)
        params = {"stride": [stride] * 2, "padding": list(padding), "dilation": [dilation] * 2,
                  "groups": groups, **self.act(dst, act)}
        self.layers.append(Layer("conv2d", name, [src], dst, params,
                                 self.weighted(src, dst, w, scales)))

    def fc(self, name, src, dst, act="NONE"):
        k, m = self.tensors[src].size, self.tensors[dst].size
        w = self.rng.integers(-127, 128, (m, k)).astype(np.int8)
        scales = np.exp(self.rng.uniform(-7, -5, m)).astype(np.float32)
        self.layers.append(Layer("fully_connected", name, [src], dst, self.act(dst, act),
                                 self.weighted(src, dst, w, scales)))

    def add_layer(self, op, name, inputs, output, params=None, arrays=None):
        self.layers.append(Layer(op, name, list(inputs), output, dict(params or FULL),
                                 arrays or {}))

    def model(self, inp: str, out: str) -> QuantModel:
        model = QuantModel("net", "fixed", self.tensors, self.layers, inp, out)
        model.validate()
        plan_arena(model)
        model.validate()
        return model


def _equal_to_tflm(model: QuantModel, count: int = 12, seed: int = 1, tensors: int = None):
    """Write ``model``, run the file in TFLM, assert every tensor equals runtime/'s."""
    written = write(model)
    x = np.random.default_rng(seed).integers(-128, 128, (count, *model.input_spec.shape))
    result = compare(model, written.data, x.astype(np.int8), litert=False,
                     indices=written.tensor_index)
    assert result.first is None, result.summary()
    assert result.tensors == (tensors or len(model.layers) + 1)
    return written


def _ops(written) -> list[str]:
    """The builtin operators of the written file, in order (read with the tflite package)."""
    import tflite

    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    fb = tflite.Model.GetRootAsModel(written.data, 0)
    graph = fb.Subgraphs(0)
    return [names[fb.OperatorCodes(graph.Operators(i).OpcodeIndex()).BuiltinCode()]
            for i in range(graph.OperatorsLength())]


def _binary_constants(net, fn, a, b, y):
    ta, tb, ty = (net.tensors[n] for n in (a, b, y))
    return fn(ta.scale, ta.zero_point, tb.scale, tb.zero_point, ty.scale, ty.zero_point, "fixed")


# -- convolutions and fully connected ------------------------------------------------------------

@pytest.mark.parametrize("padding,stride,dilation,act,ops", [
    ((1, 1, 1, 1), 1, 1, "RELU", ["CONV_2D"]),  # SAME
    ((0, 0, 0, 0), 2, 1, "RELU6", ["CONV_2D"]),  # VALID
    ((2, 0, 0, 1), 1, 2, "NONE", ["PAD", "CONV_2D"]),  # neither: PAD (zero point), VALID
], ids=["same-relu", "valid-stride2-relu6", "explicit-pad-dilated"])
def test_conv2d(padding, stride, dilation, act, ops):
    net = Net()
    net.tensor("x", (9, 9, 3), 0.03, -5)
    h = (9 + padding[0] + padding[2] - dilation * 2 - 1) // stride + 1
    w = (9 + padding[1] + padding[3] - dilation * 2 - 1) // stride + 1
    net.tensor("y", (h, w, 5), 0.05, -20)
    net.conv("conv", "x", "y", 5, 3, stride=stride, padding=padding, dilation=dilation,
             act=act)
    assert _ops(_equal_to_tflm(net.model("x", "y"))) == ops


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_conv2d(multiplier):
    net = Net(seed=multiplier)
    net.tensor("x", (8, 8, 4), 0.02, 10)
    net.tensor("y", (4, 4, 4 * multiplier), 0.04, -3)
    net.conv("dw", "x", "y", 4 * multiplier, 3, groups=4, stride=2, padding=(0, 0, 1, 1),
             act="RELU6")
    assert _ops(_equal_to_tflm(net.model("x", "y"))) == ["DEPTHWISE_CONV_2D"]


def test_fully_connected_per_channel_from_a_feature_map_and_a_vector():
    net = Net()
    net.tensor("x", (3, 3, 4), 0.05, 3)
    net.tensor("h", (10,), 0.1, -7)
    net.tensor("y", (4,), 0.08, 2)
    net.fc("fc1", "x", "h", act="RELU")
    net.fc("fc2", "h", "y")
    _equal_to_tflm(net.model("x", "y"))


def test_fully_connected_into_a_feature_map_gets_a_reshape():
    net = Net()
    net.tensor("x", (6,), 0.05, 0)
    net.tensor("y", (1, 1, 8), 0.07, -1)
    net.fc("fc", "x", "y")
    assert _ops(_equal_to_tflm(net.model("x", "y"))) == ["FULLY_CONNECTED", "RESHAPE"]


# -- pools ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("padding,ops", [((0, 0, 1, 1), ["MAX_POOL_2D"]),
                                         ((1, 1, 0, 0), ["PADV2", "MAX_POOL_2D"])],
                         ids=["same", "explicit"])
def test_max_pool(padding, ops):
    net = Net()
    net.tensor("x", (7, 7, 3), 0.04, -100)
    net.tensor("y", (4, 4, 3), 0.04, -100)
    net.add_layer("max_pool2d", "pool", ["x"], "y",
                  {"kernel": [2, 2], "stride": [2, 2], "padding": list(padding),
                   **net.act("y", "RELU")})
    assert _ops(_equal_to_tflm(net.model("x", "y"))) == ops


def test_average_pool_at_the_input_quantization():
    net = Net()
    net.tensor("x", (6, 6, 3), 0.04, -7)
    net.tensor("y", (3, 3, 3), 0.04, -7)
    arrays = kernels.avg_pool_constants(0.04, -7, 0.04, -7, (3, 3), "fixed")
    net.add_layer("avg_pool2d", "pool", ["x"], "y",
                  {"kernel": [3, 3], "stride": [2, 2], "padding": [0, 0, 1, 1],
                   "count_include_pad": False, **FULL}, arrays)
    _equal_to_tflm(net.model("x", "y"))


def _global_pool_net():
    net = Net()
    net.tensor("x", (4, 4, 3), 0.04, -7)
    net.tensor("y", (1, 1, 3), 0.02, 5)
    net.add_layer("global_avg_pool", "gap", ["x"], "y", FULL,
                  kernels.global_avg_pool_constants(0.04, -7, 0.02, 5, (4, 4), "fixed"))
    return net.model("x", "y")


def test_a_global_average_pool_is_refused_because_tflm_rounds_it_otherwise():
    """runtime/'s global average rescales, then divides; TFLM's MEAN folds the division into
    its multiplier. The writer refuses; and the file it writes without the check shows, in
    TFLM itself, that the two differ."""
    model = _global_pool_net()
    with pytest.raises(Unwritable, match=r"layer 'gap' \(global_avg_pool\): .*MEAN"):
        write(model)
    written = write(model, check=False)
    assert len(written.differences) == 1
    x = np.random.default_rng(0).integers(-128, 128, (64, 4, 4, 3)).astype(np.int8)
    result = compare(model, written.data, x, litert=False, indices=written.tensor_index)
    assert result.first is not None and result.first.tensor == "y"


# -- elementwise ---------------------------------------------------------------------------------

def _two_inputs(net, shape_b=(4, 4, 6)):
    """One model input split by two convolutions: two activations at their own scales."""
    net.tensor("x", (4, 4, 3), 0.03, -5)
    net.tensor("a", (4, 4, 6), 0.05, 4)
    net.tensor("b", shape_b, 0.07, -9)
    net.conv("ca", "x", "a", 6, 1)
    if shape_b == (4, 4, 6):
        net.conv("cb", "x", "b", 6, 1)
    else:
        net.conv("cb", "x", "b", shape_b[2], 4 if shape_b[0] == 1 else 1)


@pytest.mark.parametrize("op", ["add", "sub", "mul"])
def test_add_sub_mul(op):
    net = Net()
    _two_inputs(net)
    net.tensor("y", (4, 4, 6), 0.09, 3)
    fn = {"add": kernels.add_constants, "sub": kernels.sub_constants,
          "mul": kernels.mul_constants}[op]
    net.add_layer(op, op, ["a", "b"], "y", net.act("y", "RELU"),
                  _binary_constants(net, fn, "a", "b", "y"))
    _equal_to_tflm(net.model("x", "y"))


@pytest.mark.parametrize("channels", [6, 1])
def test_mul_broadcast_over_h_and_w(channels):
    net = Net()
    _two_inputs(net, (1, 1, channels))
    net.tensor("y", (4, 4, 6), 0.06, -2)
    net.add_layer("mul", "mul", ["a", "b"], "y", FULL,
                  _binary_constants(net, kernels.mul_constants, "a", "b", "y"))
    _equal_to_tflm(net.model("x", "y"))


# -- tensor ops ----------------------------------------------------------------------------------

def test_concat_requantizes_an_input_with_quantize():
    net = Net()
    _two_inputs(net)
    net.tensors["y"] = TensorSpec("y", (4, 4, 12), net.tensors["b"].scale, -9)
    net.add_layer("concat", "cat", ["a", "b"], "y", {}, kernels.concat_constants(
        [(net.tensors["a"].scale, 4), (net.tensors["b"].scale, -9)],
        net.tensors["b"].scale, -9, "fixed"))
    assert _ops(_equal_to_tflm(net.model("x", "y")))[2:] == ["QUANTIZE", "CONCATENATION"]


@pytest.mark.parametrize("value,op", [(-5, "PAD"), (17, "PADV2")])
def test_pad(value, op):
    net = Net()
    net.tensor("x", (3, 4, 2), 0.03, -5)
    net.tensor("y", (5, 7, 2), 0.03, -5)
    net.add_layer("pad", "pad", ["x"], "y", {"pads": [1, 2, 1, 1]},
                  {"value": np.array([value], np.int8)})
    assert _ops(_equal_to_tflm(net.model("x", "y"))) == [op]


def test_resize_nearest_twice_as_large():
    net = Net()
    net.tensor("x", (3, 2, 2), 0.03, -5)
    net.tensor("y", (6, 4, 2), 0.03, -5)
    net.add_layer("resize_nearest", "up", ["x"], "y", {},  # floor(i / 2), by hand
                  {"rows": np.array([0, 0, 1, 1, 2, 2], np.int32),
                   "cols": np.array([0, 0, 1, 1], np.int32)})
    _equal_to_tflm(net.model("x", "y"))


# -- softmax and tables --------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(10,), (2, 2, 5)])
def test_softmax(shape):
    net = Net()
    net.tensor("x", shape, 0.1, 3)
    net.tensor("y", shape, 1 / 256, -128)
    net.add_layer("softmax", "softmax", ["x"], "y", {},
                  kernels.softmax_constants(0.1, shape[-1], "fixed"))
    _equal_to_tflm(net.model("x", "y"))


@pytest.mark.parametrize("function,attrs,y_q", [
    ("Sigmoid", {}, (1 / 256, -128)), ("Tanh", {}, (1 / 128, 0)),
    ("HardSwish", {}, (0.03, -100)), ("LeakyRelu", {"alpha": 0.1}, (0.04, 30))])
def test_lookup_functions(function, attrs, y_q):
    net = Net()
    net.tensor("x", (3, 3, 4), 0.05, 6)
    net.tensor("y", (3, 3, 4), *y_q)
    table = tables.table(function, attrs, (net.tensors["x"].scale, 6),
                         (net.tensors["y"].scale, y_q[1]), "fixed")
    net.add_layer("lookup", "act", ["x"], "y", {"function": function, "attributes": attrs,
                                                **FULL}, {"table": table})
    _equal_to_tflm(net.model("x", "y"))


# -- refusals ------------------------------------------------------------------------------------

def test_a_lookup_with_no_tflite_operator_is_refused_in_one_line():
    net = Net()
    net.tensor("x", (2, 2, 2), 0.05, 0)
    net.tensor("y", (2, 2, 2), 0.05, 0)
    table = np.arange(-128, 128).astype(np.int8)
    net.add_layer("lookup", "soft", ["x"], "y",
                  {"function": "Softsign", "attributes": {}, **FULL}, {"table": table})
    with pytest.raises(Unwritable) as info:
        write(net.model("x", "y"))
    assert str(info.value) == "layer 'soft' (lookup): Softsign has no TFLite operator"


def test_grouped_convolution_and_float_mode_are_refused():
    net = Net()
    net.tensor("x", (4, 4, 4), 0.05, 0)
    net.tensor("y", (4, 4, 4), 0.05, 0)
    net.conv("grouped", "x", "y", 4, 1, groups=2)
    model = net.model("x", "y")
    with pytest.raises(Unwritable, match=r"^layer 'grouped' \(conv2d\): grouped convolution"):
        write(model)
    model.requant_mode = "float"
    with pytest.raises(Unwritable, match="float requantization"):
        write(model)


def test_a_clamp_no_fused_activation_gives_is_refused():
    net = Net()
    net.tensor("x", (4, 4, 2), 0.05, 0)
    net.tensor("y", (4, 4, 2), 0.05, 0)
    net.conv("conv", "x", "y", 2, 1)
    net.layers[0].params.update(act_min=-50, act_max=60)
    with pytest.raises(Unwritable, match=r"clamp \[-50, 60\] is no TFLite fused activation"):
        write(net.model("x", "y"))


# -- whole models: the demo and the MLPerf Tiny models from ONNX, fixed mode ---------------------

_TFLM_CHILD = """
import re, sys
from tflite_micro.python.tflite_micro import runtime as tflm
interpreter = tflm.Interpreter.from_bytes(open(sys.argv[1], "rb").read())
sys.stdout.flush()
interpreter.print_allocations()
"""


def _tflm_arena_in_a_child(path) -> tuple[int, int]:
    """TFLM's (total, head) arena for the file at ``path``, measured as
    benchmarks/bench_footprint.py does: the package's public interpreter in its own process."""
    import re
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _TFLM_CHILD, str(path)], capture_output=True,
                          text=True, check=True)
    found = dict(re.findall(r"Arena allocation (total|head) (\d+) bytes",
                            done.stdout + done.stderr))
    return int(found["total"]), int(found["head"])


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo's ConvNet (one epoch on the digits), exported in fixed mode and saved."""
    import export
    from tinyconv.demo import convnet, data, onnx_writer

    digits = data.load_digits()
    net, _ = convnet.train(digits.x_train, digits.y_train, convnet.TrainConfig(epochs=1))
    root = tmp_path_factory.mktemp("demo")
    path = onnx_writer.save_onnx(net, root / "digits.onnx")
    result = export.from_onnx(str(path), digits.x_train[:64], requant="fixed", name="digits")
    result.save(root / "export")
    return result, root / "export", digits.x_test[:48]


def test_the_demo_model_equals_tflm_on_every_tensor(demo):
    import runtime

    result, out, x = demo
    written = write(result.model)
    assert _ops(written) == ["CONV_2D", "MAX_POOL_2D", "CONV_2D", "MAX_POOL_2D",
                             "FULLY_CONNECTED"]
    comparison = compare(result.model, written.data, x.transpose(0, 2, 3, 1), litert=False,
                         indices=written.tensor_index)
    assert comparison.first is None, comparison.summary()
    assert (out / "model.tflite").read_bytes() == written.data  # the same file, saved
    assert runtime.load(out).hash == result.model.hash


def test_report_json_holds_tflms_arena_as_tflm_itself_reports_it(demo):
    import json

    _, out, _ = demo
    entry = json.loads((out / "report.json").read_text())["tflm"]
    total, head = _tflm_arena_in_a_child(out / "model.tflite")
    assert (entry["arena_bytes"], entry["head_bytes"]) == (total, head)
    assert entry["exact"] is True and entry["head_bytes"] > 0
    assert ".tinyconv-export.json" in {p.name for p in out.iterdir()}
    assert "model.tflite" in json.loads((out / ".tinyconv-export.json").read_text())[
        "artifacts"]


def test_cli_run_against_tflm_on_the_written_file(demo, tmp_path, capsys):
    from tinyconv.cli import main

    _, out, x = demo
    np.savez(tmp_path / "x.npz", x=x[:8])
    status = main(["run", str(out), "--input", str(tmp_path / "x.npz"), "--output",
                   str(tmp_path / "y.npz"), "--per-layer", "--against", "tflm"])
    printed = capsys.readouterr().out
    assert status == 0 and "runtime == TFLM: every element of 6 tensors on 8 inputs" in printed


def test_the_written_file_imports_back_and_its_report_measures_the_source(demo):
    """export.from_tflite on the written file: TFLite's own constants again (the import), the
    same integers, and the arena measured from that source file."""
    import export
    import runtime
    from runtime.inputs import quantize_input

    result, out, x = demo
    again = export.from_tflite((out / "model.tflite").read_bytes(), name="digits")
    assert again.report["tflm"]["model"] == "the source model.tflite"
    assert again.report["tflm"]["arena_bytes"] == result.report["tflm"]["arena_bytes"]
    x_q = quantize_input(result.model, x.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(runtime.run(again.model, x_q), runtime.run(result.model, x_q))


def test_report_says_why_there_is_no_tflm_arena(demo, monkeypatch):
    import sys

    from export.report import format_report
    from export.tflm_arena import tflm_entry

    result = demo[0]
    float_model = QuantModel("f", "float", result.model.tensors, [], result.model.input,
                             result.model.input)
    assert tflm_entry(float_model)[0] == {
        "arena_bytes": None,
        "reason": "float requantization: TFLite Micro computes fixed mode only"}
    monkeypatch.setitem(sys.modules, "tflite_micro", None)  # as if not installed
    entry, artifact = tflm_entry(result.model)
    assert artifact is None and entry["reason"] == "the tflite-micro package is not installed"
    report = dict(result.report, tflm=entry)
    assert format_report(report).splitlines()[-1] == (
        "TFLite Micro arena: not measured (the tflite-micro package is not installed)")


MLPERF = ("resnet8", "dscnn", "mobilenet", "autoencoder")


@pytest.fixture(scope="module")
def mlperf(tmp_path_factory):
    """The four MLPerf Tiny models (tests/mlperf_tiny.py, PyTorch), exported in fixed mode."""
    import export
    import mlperf_tiny as mt

    out = {}
    for name in MLPERF:
        builder = getattr(mt, f"torch_{name}")
        net = builder() if name == "autoencoder" else builder(softmax=True)
        path = mt.torch_to_onnx(net, tmp_path_factory.mktemp(name) / "net.onnx", dynamo=False)
        calibration = mt.inputs(name, 8, seed=1, layout="torch")
        out[name] = (export.from_onnx(path, calibration, requant="fixed"),
                     mt.inputs(name, 3, seed=2, layout="keras"))
    return out


@pytest.mark.parametrize("name", MLPERF)
def test_mlperf_tiny_models_equal_tflm_up_to_the_average_pool(mlperf, name):
    """Every conv, depthwise conv, add, fully connected and softmax equals TFLM. The average
    pools are the exception: export's fixed mode rescales the sum, then divides (TFLite's
    integer Mean), which no TFLM operator computes; the writer refuses them, and TFLM on the
    nearest operator (MEAN / AVERAGE_POOL_2D + QUANTIZE) shows the difference lies there."""
    result, x = mlperf[name]
    model = result.model
    pools = [layer for layer in model.layers if layer.op == "avg_pool2d"]
    entry = result.report["tflm"]
    assert entry["arena_bytes"] > entry["head_bytes"] >= model.arena_size // 2
    if not pools:
        assert entry["exact"] and result.tflite is not None
        _equal_to_tflm(model, count=3)
        return
    assert not entry["exact"] and result.tflite is None
    with pytest.raises(Unwritable, match=rf"^layer '{pools[0].name}' \(avg_pool2d\): "):
        write(model)
    written = write(model, check=False)
    comparison = compare(model, written.data, x, litert=False, indices=written.tensor_index)
    assert comparison.first is not None and comparison.first.tensor == pools[0].output
    assert comparison.first.largest == 1
