"""The TFLite import's softmax, table and tensor ops: runtime/ == TFLM on every tensor.

Two small Keras models (tests/tflite_models.py) converted by TensorFlow's full-integer
converter hold SOFTMAX, LOGISTIC, TANH, HARD_SWISH, LEAKY_RELU, PRELU, CONCATENATION, PAD,
PADV2, MUL (same shape and broadcast over H and W), SUB and RESIZE_NEAREST_NEIGHBOR (align
corners, half-pixel centers). The oracle is the real TFLM interpreter (tflite-micro), tensor by
tensor; the constants are computed by the import from the file's own scales and zero points.
"""
from __future__ import annotations

import numpy as np
import pytest

import export
from export import tflite_import
from export.tflite_reference import compare
from runtime.errors import TinyconvError
import tflite_models

pytest.importorskip("tflite_micro")
pytest.importorskip("tensorflow")

OPS = {"SOFTMAX", "LOGISTIC", "TANH", "HARD_SWISH", "LEAKY_RELU", "PRELU", "CONCATENATION",
       "PAD", "PADV2", "MUL", "SUB", "RESIZE_NEAREST_NEIGHBOR"}
CASES = [("elementwise", False, False), ("elementwise", True, True),
         ("tensor_ops", False, True), ("tensor_ops", True, False)]


@pytest.fixture(scope="module")
def converted() -> dict:
    return {case: tflite_models.convert(tflite_models.BUILDERS[case[0]](), int8_io=case[1],
                                        per_tensor=case[2], samples=24) for case in CASES}


def _inputs(model, count: int = 24, seed: int = 5) -> np.ndarray:
    shape = model.input_spec.shape
    return np.random.default_rng(seed).uniform(-1.5, 1.5, (count, *shape)).astype(np.float32)


def test_the_models_hold_every_op(converted):
    from test_tflite_import import _builtin_ops

    seen = {op for data in converted.values() for op in _builtin_ops(data)}
    assert OPS <= seen, OPS - seen


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{'int8' if c[1] else 'float'}"
                         f"io-{'tensor' if c[2] else 'channel'}")
def test_every_tensor_equals_tflm(converted, case):
    data = converted[case]
    model = tflite_import.read(data, name="m").model
    model.validate()
    ops = {layer.op for layer in model.layers}
    expect = ({"softmax", "lookup", "concat", "mul", "sub"} if case[0] == "elementwise"
              else {"pad", "resize_nearest", "mul", "lookup"})
    assert expect <= ops
    result = compare(model, data, _inputs(model), litert=False)
    assert result.first is None, result.summary()
    assert result.tensors == len(model.layers) + 1


def test_a_broken_table_is_named(converted):
    """The comparison is able to fail: one table entry off names that lookup layer."""
    data = converted[("elementwise", False, False)]
    model = tflite_import.read(data, name="m").model
    layer = next(l for l in model.layers if l.op == "lookup")
    table = layer.arrays["table"].copy()
    table[100:160] = np.clip(table[100:160].astype(int) + 1, -128, 127)
    layer.arrays = dict(layer.arrays, table=table.astype(np.int8))
    result = compare(model, data, _inputs(model), litert=False)
    assert result.first is not None and result.first.tensor == layer.output


def test_host_device_equals_runtime(converted, tmp_path):
    """Softmax, tables, concat, mul, sub built for the host device: device == runtime."""
    from _tools import require_tool
    from firmware_host.verify import verify

    require_tool("gcc")
    result = export.from_tflite(converted[("elementwise", True, True)], name="elementwise")
    out = result.save(tmp_path / "e")
    np.savez(tmp_path / "data.npz", x=_inputs(result.model, 16, seed=9))
    verdict = verify(out, tmp_path / "data.npz", device="host", progress=False)
    assert verdict.exit_status == 0 and verdict.device_equal_images == 16


def test_unsupported_forms_are_refused_in_one_line():
    import tensorflow as tf

    L = tf.keras.layers
    x = tf.keras.Input((4, 4, 3), batch_size=1)
    h = L.Conv2D(4, 1)(x)
    model = tf.keras.Model(x, L.Lambda(lambda t: tf.pad(t, [[1, 0], [0, 0], [0, 0],
                                                            [0, 0]]))(h))
    with pytest.raises(TinyconvError, match=r"operator \d+ \(PAD\): paddings"):
        tflite_import.read(tflite_models.convert(model))
    model = tf.keras.Model(x, L.Concatenate(axis=1)([h, L.Conv2D(4, 1)(x)]))
    with pytest.raises(TinyconvError, match=r"\(CONCATENATION\): concatenation along axis 1"):
        tflite_import.read(tflite_models.convert(model))
