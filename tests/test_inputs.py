"""One meaning of "the same input" for run, verify and report: layouts and quantization."""
import numpy as np
import pytest

from runtime import kernels
from runtime.errors import TinyconvError
from runtime.inputs import float_input, quantize_input, to_nhwc
from runtime.model import QuantModel, TensorSpec


def model_taking(shape, layout="NCHW"):
    spec = TensorSpec("x", shape, 0.05, -3)
    return QuantModel("m", "fixed", {"x": spec}, [], "x", "x", metadata={"input_layout": layout})


def test_nchw_images_are_transposed_and_quantized_like_quantize_linear():
    x = np.random.default_rng(0).normal(size=(4, 3, 5, 6)).astype(np.float32)
    model = model_taking((5, 6, 3))
    q = quantize_input(model, x)
    by_hand = np.clip(np.rint(x.transpose(0, 2, 3, 1) / np.float32(0.05)) - 3, -128, 127)
    assert q.dtype == np.int8 and np.array_equal(q, by_hand.astype(np.int8))


def test_int8_inputs_are_taken_as_they_are_and_grey_images_get_a_channel():
    x = np.arange(-32, 32, dtype=np.int8).reshape(1, 8, 8)
    q = quantize_input(model_taking((8, 8, 1)), x)
    assert np.array_equal(q[..., 0], x)


def test_an_ambiguous_shape_follows_the_onnx_layout():
    x = np.random.default_rng(1).normal(size=(2, 4, 4, 4)).astype(np.float32)
    assert np.array_equal(to_nhwc(model_taking((4, 4, 4), "NCHW"), x), x.transpose(0, 2, 3, 1))
    assert np.array_equal(to_nhwc(model_taking((4, 4, 4), "NHWC"), x), x)


def test_float_input_is_in_model_onnx_layout():
    model = model_taking((5, 6, 3))
    x = np.arange(90, dtype=np.int8).reshape(1, 5, 6, 3)
    expected = kernels.dequantize(x, 0.05, -3).transpose(0, 3, 1, 2)
    assert np.array_equal(float_input(model, x), expected)


@pytest.mark.parametrize("bad", [np.zeros((1, 7, 7, 3), np.float32),
                                 np.full((1, 5, 6, 3), np.nan, np.float32),
                                 np.zeros((1, 5, 6, 3), np.int32)])
def test_wrong_shapes_dtypes_and_nan_are_user_errors(bad):
    with pytest.raises(TinyconvError):
        quantize_input(model_taking((5, 6, 3)), bad)
