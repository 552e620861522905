"""Time kernels.conv2d against onnxruntime's QLinearConv, one thread each, same inputs.

    python benchmarks/bench_runtime.py [--repeat 20]

Prints per-layer times and the ratio runtime/onnxruntime in both requantization modes, with the
geometric mean and the worst ratio of each (target: geometric mean <= 1.0, no layer > 3).
``float`` is onnxruntime's arithmetic and is checked == onnxruntime on the benchmark inputs;
``fixed`` (TFLite Micro's, the default) has no onnxruntime equivalent, so its ratio compares the
same layer's time against onnxruntime's QLinearConv. Then fixed / float, and the fixed-mode route
the plan proved (Float64Fixed, BoundedFixed, or Requant.apply when neither is proven). BLAS is
limited to one thread with threadpoolctl (or, without it, with the *_NUM_THREADS variables set
before numpy is imported); onnxruntime runs with
intra_op_num_threads=1. The weight preprocessing (kernels.plan_conv2d) is done once, outside
the timed loop, as the executor does; the timed call includes padding, im2col, GEMM and
requantization.
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout, not the installed one
import onnx_ops  # noqa: E402
from runtime import kernels  # noqa: E402
from runtime.requant import Requant  # noqa: E402

# name, batch, H, W, C, M, kernel, groups, stride: issue 2's layers, then two more depthwise
# shapes (stride 2, channel multiplier 2) that take other branches of the depthwise path
LAYERS = [
    ("28x28x1->8 3x3", 1, 28, 28, 1, 8, 3, 1, 1),
    ("32x32x3->16 3x3", 1, 32, 32, 3, 16, 3, 1, 1),
    ("32x32x16->32 3x3", 1, 32, 32, 16, 32, 3, 1, 1),
    ("16x16x32->64 3x3", 1, 16, 16, 32, 64, 3, 1, 1),
    ("16x16x64 dw 3x3", 1, 16, 16, 64, 64, 3, 64, 1),
    ("8x8x64->128 1x1", 1, 8, 8, 64, 128, 1, 1, 1),
    ("8 x 32x32x32->64 3x3", 8, 32, 32, 32, 64, 3, 1, 1),
    ("32x32x32 dw 3x3 s2", 1, 32, 32, 32, 32, 3, 32, 2),
    ("16x16x32 dw x2 3x3", 1, 16, 16, 32, 64, 3, 32, 1),
]


def best_time(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
        threadpool_limits(1)
        blas = ", ".join(f"{i['internal_api']} {i.get('architecture', '?')} "
                         f"threads={i['num_threads']}" for i in threadpool_info())
    except ImportError:
        blas = "threadpoolctl not installed; BLAS threads set by environment"
    print(f"numpy {np.__version__}; BLAS: {blas}; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    rng = np.random.default_rng(0)
    ratios = {"float": [], "fixed": []}
    print(f"{'layer':24s} {'ort ms':>8s} {'float ms':>9s} {'ratio':>6s} {'fixed ms':>9s} "
          f"{'ratio':>6s} {'fix/flt':>7s} route")
    for name, n, h, w, c, m, k, groups, stride in LAYERS:
        x = rng.integers(-128, 128, (n, h, w, c)).astype(np.int8)
        weights = rng.integers(-127, 128, (m, k, k, c // groups)).astype(np.int8)
        w_scales = np.exp(rng.uniform(-7, -5, m)).astype(np.float32)
        bias = rng.integers(-5000, 5000, m).astype(np.int32)
        pad = (k // 2,) * 4
        plan, fixed = (kernels.plan_conv2d(weights, bias,
                                           Requant.from_scales(0.05, w_scales, 0.1, mode),
                                           input_zero_point=-3, output_zero_point=2, padding=pad,
                                           stride=stride, groups=groups)
                       for mode in ("float", "fixed"))
        session, feed = onnx_ops.qlinear_conv_session(x, 0.05, -3, weights, w_scales, 0.1, 2,
                                                      bias, padding=pad, stride=(stride, stride),
                                                      groups=groups)
        assert np.array_equal(onnx_ops.nhwc(session.run(["y"], feed)[0]), plan(x)), name
        t_rt = best_time(lambda: plan(x), args.repeat)
        t_ort = best_time(lambda: session.run(["y"], feed), args.repeat)
        t_fixed = best_time(lambda: fixed(x), args.repeat)
        ratios["float"].append(t_rt / t_ort)
        ratios["fixed"].append(t_fixed / t_ort)
        print(f"{name:24s} {t_ort * 1e3:8.3f} {t_rt * 1e3:9.3f} {ratios['float'][-1]:6.2f} "
              f"{t_fixed * 1e3:9.3f} {ratios['fixed'][-1]:6.2f} {t_fixed / t_rt:7.2f} "
              f"{type(fixed.fixed).__name__ if fixed.fixed is not None else 'apply'}")
    for mode, values in ratios.items():
        geomean = math.exp(sum(math.log(r) for r in values) / len(values))
        print(f"{mode:5s}: geometric mean ratio {geomean:.2f} (target <= 1.0); "
              f"worst {max(values):.2f} (<= 3)")

if __name__ == "__main__":
    main()
