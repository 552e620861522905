"""CMSIS-NN's kernel scratch for a conv layer: the independent reference for tinyconv's.

The rules of CMSIS-NN's buffer-size functions (ARM-software/CMSIS-NN,
Source/ConvolutionFunctions/arm_convolve_get_buffer_sizes_s8.c and
arm_depthwise_conv_get_buffer_sizes_s8.c), restated for the DSP build (Cortex-M4/M7/M55
without MVE; the M3/M0 build asks the same for convolutions and 0 for depthwise):

- arm_convolve_wrapper_s8: a 1x1 filter with no padding and no dilation runs
  arm_convolve_1x1_s8_fast (stride 1) or arm_convolve_1x1_s8 (strided): 0 bytes. A layer with
  input height 1, filter height 1, no horizontal dilation and stride_w * channels a multiple of
  four runs arm_convolve_1_x_n_s8, which asks what arm_convolve_s8 asks. Everything else runs
  arm_convolve_s8: two im2col columns of int16, each kh * kw * c values rounded up to a
  multiple of four: 2 * 2 * align4(kh * kw * c) bytes.
- arm_depthwise_conv_wrapper_s8: channel multiplier 1 and no dilation: a 3x3 filter with
  padding <= 1 runs arm_depthwise_conv_3x3_s8 (0 bytes), others arm_depthwise_conv_s8_opt,
  c * kh * kw int16 (DSP build). Any other depthwise layer: arm_depthwise_conv_s8, 0 bytes.
CMSIS-NN has no grouped convolution: c is the channels per group here.
"""
from __future__ import annotations


def convolve_s8(kh: int, kw: int, c: int) -> int:
    """arm_convolve_s8_get_buffer_size (non-MVE)."""
    return 2 * 2 * (-(-(kh * kw * c) // 4) * 4)


def conv_wrapper_dsp(kh: int, kw: int, c: int, in_h: int, stride_w: int, padding,
                     dilation=(1, 1)) -> int:
    """arm_convolve_wrapper_s8_get_buffer_size for the DSP build; padding (top, left, bottom,
    right), dilation (h, w)."""
    if kh == kw == 1 and not any(padding) and tuple(dilation) == (1, 1):
        return 0
    return convolve_s8(kh, kw, c)  # arm_convolve_1_x_n_s8 asks the same


def depthwise_wrapper_dsp(kh: int, kw: int, c: int, multiplier: int, padding,
                          dilation=(1, 1)) -> int:
    """arm_depthwise_conv_wrapper_s8_get_buffer_size for the DSP build."""
    if multiplier != 1 or tuple(dilation) != (1, 1):
        return 0
    if kh == kw == 3 and max(padding) <= 1:
        return 0
    return c * kh * kw * 2


def layer_size(model, layer) -> tuple[str, int]:
    """(CMSIS-NN kernel, its buffer bytes) for a conv2d layer of a QuantModel."""
    m, kh, kw, cg = layer.arrays["weights"].shape
    p = layer.params
    in_h, _, in_c = model.tensors[layer.inputs[0]].shape
    groups = int(p.get("groups", 1))
    padding = [int(v) for v in p.get("padding", [0, 0, 0, 0])]
    dilation = [int(v) for v in p.get("dilation", [1, 1])]
    stride_w = int(p.get("stride", [1, 1])[1])
    if groups == in_c and cg == 1 and groups > 1:
        kernel = "depthwise_conv_3x3" if kh == kw == 3 and max(padding) <= 1 and \
            m == in_c and dilation == [1, 1] else "depthwise_conv_s8(_opt)"
        return kernel, depthwise_wrapper_dsp(kh, kw, in_c, m // in_c, padding, dilation)
    size = conv_wrapper_dsp(kh, kw, cg, in_h, stride_w, padding, dilation)
    return ("convolve_1x1_s8(_fast)" if size == 0 else "convolve_s8"), size
