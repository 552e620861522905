"""The int8 kernels: bit-exact, vectorized, and the arithmetic every other executor must match.

Activations are int8 NHWC ``[N, H, W, C]``, conv weights int8 OHWI ``[M, KH, KW, C // groups]``.
Each op exists in two requantization modes (see runtime/requant.py and docs/ARITHMETIC.md):
``fixed`` follows TensorFlow Lite Micro's int8 reference kernels, ``float`` follows
onnxruntime's CPU kernels. The slow loop versions in runtime/reference.py are the oracle for
the code here.

Ops whose constants are not a plain per-channel requantization (average pool, global average
pool, add, and tensor_ops' mul, sub, concat) take a ``consts`` dict made once by
``avg_pool_constants``, ``global_avg_pool_constants``, ``add_constants``, ``mul_constants``,
``sub_constants`` or ``concat_constants``. That dict is exactly what export/ stores in
``Layer.arrays`` and what the C generator copies: its keys are documented in docs/ARITHMETIC.md.

Speed: integer products summed in float32 are exact while every partial sum stays below 2**24,
so convolutions run as float32 GEMMs (BLAS) whenever a bound computed from the weights proves
it, and split the reduction into exact chunks when it cannot. Depthwise convolutions have no
reduction for a GEMM to exploit; they run as einsums along whole output rows instead, over an
input padded straight into one plane per column phase of the stride, so only kept columns are
computed. Small layers are dominated by per-pass costs, so a plan keeps its padded input buffer
and its row-tiled constants, and float requantization works in place
(benchmarks/bench_runtime.py, docs/PERFORMANCE.md).
"""
from runtime.kernels.common import (ADD_LEFT_SHIFT, INT8_MAX, INT8_MIN, output_size,
                                    worst_case_accumulator)
from runtime.kernels.conv import (ConvPlan, conv2d, conv2d_accumulate, fully_connected,
                                  fully_connected_accumulate, plan_conv2d, plan_fully_connected)
from runtime.kernels.elementwise import add, add_constants, dequantize, fma_f32, quantize
from runtime.kernels.lookup import lookup
from runtime.kernels.pool import (avg_pool2d, avg_pool_constants, global_avg_pool,
                                  global_avg_pool_constants, max_pool2d)
from runtime.kernels.softmax import softmax, softmax_constants
from runtime.kernels.tensor_ops import (concat, concat_constants, mul, mul_constants, pad,
                                        requantize_table, resize_nearest, sub, sub_constants)
from runtime.requant import Requant

__all__ = [
    "Requant", "ConvPlan", "plan_conv2d", "conv2d", "conv2d_accumulate", "fully_connected",
    "fully_connected_accumulate", "max_pool2d",
    "avg_pool2d", "avg_pool_constants", "global_avg_pool", "global_avg_pool_constants", "add",
    "add_constants", "lookup", "softmax", "softmax_constants", "quantize", "dequantize",
    "output_size", "worst_case_accumulator", "concat", "concat_constants", "requantize_table",
    "pad", "resize_nearest", "mul", "mul_constants", "sub", "sub_constants",
]
