"""runtime.run executes a QuantModel layer by layer exactly as the reference kernels do."""
import numpy as np
import pytest

import runtime
from runtime import reference
from tiny_models import tiny_model


def reference_run(model, x):
    """The same graph, evaluated with the slow reference loops."""
    values = {model.input: x}
    for layer in model.layers:
        p, a = layer.params, layer.arrays
        act = (p["act_min"], p["act_max"])
        src = values[layer.inputs[0]]
        zps = dict(input_zero_point=model.tensors[layer.inputs[0]].zero_point,
                   output_zero_point=model.tensors[layer.output].zero_point, act_range=act)
        if layer.op == "conv2d":
            out = reference.conv2d(src, a["weights"], a["bias"], layer.requant(),
                                   stride=p["stride"], padding=p["padding"],
                                   dilation=p["dilation"], groups=p["groups"], **zps)
        elif layer.op == "fully_connected":
            out = reference.fully_connected(src, a["weights"], a["bias"], layer.requant(), **zps)
        elif layer.op == "max_pool2d":
            out = reference.max_pool2d(src, p["kernel"], stride=p["stride"],
                                       padding=p["padding"], act_range=act)
        elif layer.op == "avg_pool2d":
            out = reference.avg_pool2d(src, p["kernel"], a, stride=p["stride"],
                                       padding=p["padding"],
                                       count_include_pad=p["count_include_pad"], act_range=act)
        elif layer.op == "global_avg_pool":
            out = reference.global_avg_pool(src, a, act_range=act)
        elif layer.op == "lookup":
            out = reference.lookup(src, a["table"], act_range=act)
        elif layer.op == "softmax":
            out = reference.softmax(src, a)
        elif layer.op in ("mul", "sub"):
            out = getattr(reference, layer.op)(src, values[layer.inputs[1]], a, act_range=act)
        elif layer.op == "concat":
            specs = [(model.tensors[n].scale, model.tensors[n].zero_point) for n in layer.inputs]
            y = model.tensors[layer.output]
            out = reference.concat([values[n] for n in layer.inputs], specs,
                                   (y.scale, y.zero_point), model.requant_mode)
        elif layer.op == "pad":
            out = reference.pad(src, p["pads"], int(a["value"][0]))
        elif layer.op == "resize_nearest":
            out = src[:, a["rows"]][:, :, a["cols"]]
        else:
            out = reference.add(src, values[layer.inputs[1]], a, act_range=act)
        values[layer.output] = out.reshape((x.shape[0],) + model.tensors[layer.output].shape)
    return values


@pytest.mark.parametrize("mode", ["fixed", "float"])
def test_run_matches_reference_layer_by_layer(mode):
    model = tiny_model(mode)
    x = np.random.default_rng(1).integers(-128, 128, (3, 8, 8, 2)).astype(np.int8)
    y, values = runtime.run(model, x, collect=True)
    expected = reference_run(model, x)
    assert set(values) == set(expected)
    for name in expected:
        np.testing.assert_array_equal(values[name], expected[name], err_msg=name)
    np.testing.assert_array_equal(runtime.run(model, x), y)
    assert y.shape == (3, 3) and y.dtype == np.int8
    assert len(np.unique(values["c1"])) > 20  # the activations are not degenerate


def test_batches_are_independent():
    model = tiny_model("fixed")
    x = np.random.default_rng(2).integers(-128, 128, (5, 8, 8, 2)).astype(np.int8)
    whole = runtime.run(model, x)
    parts = np.concatenate([runtime.run(model, x[i:i + 2]) for i in range(0, 5, 2)])
    np.testing.assert_array_equal(whole, parts)


def test_in_place_edit_after_a_run_raises_and_changes_nothing():
    """A model is immutable once run: its arrays are read-only, so a cached plan can't go
    stale behind the executor's back."""
    model = tiny_model("fixed")
    x = np.random.default_rng(3).integers(-128, 128, (2, 8, 8, 2)).astype(np.int8)
    before = runtime.run(model, x)
    for key in ("weights", "bias", "multiplier", "shift"):
        with pytest.raises(ValueError, match="read-only"):
            model.layers[0].arrays[key][...] = 0
    np.testing.assert_array_equal(runtime.run(model, x), before)


def test_a_loaded_model_is_read_only(tmp_path):
    tiny_model().save(tmp_path / "m.tcm")
    loaded = runtime.load(tmp_path / "m.tcm")
    with pytest.raises(ValueError, match="read-only"):
        loaded.layers[-1].arrays["weights"][0, 0] = 1


@pytest.mark.parametrize("mode", ["fixed", "float"])
def test_replaced_arrays_params_and_zero_points_are_replanned(mode):
    """After a run, replace what the cached plans were made from, one thing at a time; each
    run must equal the slow reference loops on the edited model."""
    model = tiny_model(mode)
    x = np.random.default_rng(4).integers(-128, 128, (2, 8, 8, 2)).astype(np.int8)
    conv, fc = model.layers[0], model.layers[-1]
    rq_key = "multiplier" if mode == "fixed" else "scale"
    edits = [
        lambda: conv.arrays.__setitem__("bias", conv.arrays["bias"] + 1000),
        lambda: conv.arrays.__setitem__("weights", -conv.arrays["weights"]),
        lambda: conv.arrays.__setitem__(rq_key, conv.arrays[rq_key] // 2 if mode == "fixed"
                                        else conv.arrays[rq_key] * np.float32(0.5)),
        lambda: conv.params.__setitem__("act_max", -120),
        lambda: setattr(model.tensors["c1"], "zero_point", 17),
        lambda: fc.arrays.__setitem__("bias", fc.arrays["bias"] - 3000),
    ]
    previous = runtime.run(model, x, collect=True)[1]
    for edit in edits:
        edit()
        y, values = runtime.run(model, x, collect=True)
        expected = reference_run(model, x)
        for name in expected:
            np.testing.assert_array_equal(values[name], expected[name], err_msg=name)
        assert not np.array_equal(values["c1"], previous["c1"]) or \
            not np.array_equal(y, previous["fc"]), edits.index(edit)
        previous = values


def test_bad_input_is_named():
    model = tiny_model("fixed")
    with pytest.raises(ValueError, match="x_int8 must be int8"):
        runtime.run(model, np.zeros((1, 8, 8, 2), np.float32))
    with pytest.raises(ValueError, match=r"x_int8 must be \[N, 8, 8, 2\]"):
        runtime.run(model, np.zeros((1, 8, 2, 8), np.int8))
