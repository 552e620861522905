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


def _equal_to_tflm(model: QuantModel, count: int = 12, seed: int = 1, tensors: int = None,
                   x: np.ndarray = None):
    """Write ``model``, run the file in TFLM, assert every tensor equals runtime/'s."""
    written = write(model)
    if x is None:
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


@pytest.mark.parametrize("shape,kernel,stride,padding", [
    ((6, 6, 3), (3, 3), (2, 2), (0, 0, 1, 1)),  # SAME, padding at the end only
    ((7, 5, 9), (3, 3), (1, 1), (1, 1, 1, 1)),  # SAME, every border window partial
    ((8, 8, 4), (2, 2), (2, 2), (0, 0, 0, 0)),  # VALID
    ((9, 7, 2), (5, 3), (2, 1), (2, 1, 2, 1)),  # SAME, a non-square kernel
    ((8, 8, 5), (8, 8), (1, 1), (0, 0, 0, 0)),  # the whole image: AVERAGE_POOL_2D, no MEAN
], ids=["same-end", "same-3x3", "valid", "same-5x3", "whole"])
def test_average_pool_at_the_input_quantization(shape, kernel, stride, padding):
    """Fixed-mode export keeps an average pool's output at its input's quantization, so
    runtime/'s rounding division by the taps inside the image is TFLM's AVERAGE_POOL_2D."""
    net = Net()
    net.tensor("x", shape, 0.04, -7)
    oh = (shape[0] + padding[0] + padding[2] - kernel[0]) // stride[0] + 1
    ow = (shape[1] + padding[1] + padding[3] - kernel[1]) // stride[1] + 1
    net.tensor("y", (oh, ow, shape[2]), 0.04, -7)
    arrays = kernels.avg_pool_constants(0.04, -7, 0.04, -7, kernel, "fixed")
    net.add_layer("avg_pool2d", "pool", ["x"], "y",
                  {"kernel": list(kernel), "stride": list(stride), "padding": list(padding),
                   "count_include_pad": False, **FULL}, arrays)
    assert _ops(_equal_to_tflm(net.model("x", "y"), x=_near_ties(net, 24))) == \
        ["AVERAGE_POOL_2D"]


def _near_ties(net: Net, count: int) -> np.ndarray:
    """Inputs whose windows hold few distinct values around a per-image level, so that sums
    land on and next to the rounding ties (uniform noise averages towards the zero point)."""
    shape = net.tensors["x"].shape
    rng = np.random.default_rng(7)
    level = rng.integers(-128, 128, (count, 1, 1, shape[2]))
    noise = rng.integers(-2, 3, (count, *shape)) * rng.integers(0, 40, (count, 1, 1, 1))
    return np.clip(level + noise, -128, 127).astype(np.int8)


@pytest.mark.parametrize("shape,xq,yq", [
    ((1, 1, 1), (0.04, -7), (0.02, 5)),
    ((4, 4, 3), (0.04, -7), (0.02, 5)),  # runtime/'s old rescale-then-divide differed here
    ((7, 7, 300), (0.05, 3), (0.01, -20)),
    ((8, 8, 64), (0.02, -128), (0.02, -128)),  # the same quantization
    ((5, 3, 17), (0.1, 0), (0.003, 10)),  # a large ratio: a left shift
    ((6, 6, 8), (0.01, 2), (0.08, -1)),  # a small ratio
    ((8, 8, 2), (0.5, -128), (1e-9, 0)),  # a ratio past int32: saturates at the clamp
], ids=["1x1", "4x4", "7x7x300", "8x8-same", "5x3-ratio33", "6x6-ratio1/8", "saturating"])
def test_global_average_pool_is_tflm_mean(shape, xq, yq):
    """runtime/'s fixed global_avg_pool folds the count into the multiplier as TFLM's MEAN
    does: equal on every output, for any size, channel count and scale ratio."""
    net = Net()
    net.tensor("x", shape, *xq)
    net.tensor("y", (1, 1, shape[2]), *yq)
    try:
        arrays = kernels.global_avg_pool_constants(*xq, *yq, shape[:2], "fixed")
    except ValueError:
        pytest.fail(f"{xq} -> {yq}: no constants")
    net.add_layer("global_avg_pool", "gap", ["x"], "y", FULL, arrays)
    model = net.model("x", "y")
    assert _ops(_equal_to_tflm(model, x=_near_ties(net, 32))) == ["MEAN"]
    _equal_to_tflm(model, count=16)

def test_an_average_pool_that_rescales_is_refused():
    """A pool quantized unlike its input (a pre-quantized model's, an older model.tcm's) has no
    TFLM operator: TFLM's AVERAGE_POOL_2D refuses to rescale."""
    net = Net()
    net.tensor("x", (6, 6, 3), 0.04, -7)
    net.tensor("y", (2, 2, 3), 0.03, 2)
    arrays = kernels.avg_pool_constants(0.04, -7, 0.03, 2, (3, 3), "fixed")
    net.add_layer("avg_pool2d", "pool", ["x"], "y",
                  {"kernel": [3, 3], "stride": [3, 3], "padding": [0, 0, 0, 0],
                   "count_include_pad": False, **FULL}, arrays)
    with pytest.raises(Unwritable, match=r"layer 'pool' \(avg_pool2d\): .*does not rescale"):
        write(net.model("x", "y"))


def test_onnx_average_pools_export_exact_for_tflm(tmp_path):
    """A PyTorch model with a padded AvgPool2d and a global average (ONNX AveragePool with pads,
    GlobalAveragePool) exported in fixed mode: report.json says exact, model.tflite is written,
    and every tensor equals TFLM."""
    torch = pytest.importorskip("torch")
    import export
    import mlperf_tiny as mt

    class Net(torch.nn.Module):
        input_shape = (5, 10, 9)

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(5, 24, 3, padding=1)
            self.pool = torch.nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
            self.fc = torch.nn.Linear(24, 4)

        def forward(self, x):
            x = self.pool(torch.relu(self.conv(x)))
            return self.fc(torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))

    path = mt.torch_to_onnx(Net().eval(), tmp_path / "net.onnx", dynamo=False)
    calibration = np.random.default_rng(1).normal(size=(8, 5, 10, 9)).astype(np.float32)
    result = export.from_onnx(path, calibration, requant="fixed")
    ops = [layer.op for layer in result.model.layers]
    assert ops == ["conv2d", "avg_pool2d", "global_avg_pool", "fully_connected"]
    assert result.report["tflm"]["exact"] and result.tflite is not None
    assert _ops(_equal_to_tflm(result.model, count=8)) == \
        ["CONV_2D", "AVERAGE_POOL_2D", "MEAN", "FULLY_CONNECTED"]


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
def test_mlperf_tiny_models_equal_tflm_on_every_tensor(mlperf, name):
    """Every layer of the four fixed-mode ONNX exports equals TFLM, average pools included
    (their output keeps the input's quantization, as the TFLite converter keeps it): export
    writes model.tflite and report.json says exact."""
    result, _ = mlperf[name]
    model = result.model
    entry = result.report["tflm"]
    assert entry["arena_bytes"] > entry["head_bytes"] >= model.arena_size // 2
    assert entry["exact"] and result.tflite is not None
    for layer in model.layers:
        if layer.op == "avg_pool2d":
            assert not layer.arrays["rescale"][0]
    _equal_to_tflm(model, count=3)
    pools = [layer.op for layer in model.layers if layer.op == "avg_pool2d"]
    assert len(pools) == (0 if name == "autoencoder" else 1)
