"""Whole models: runtime.run against onnxruntime on model.q.onnx, one thread each, same process.

    python benchmarks/bench_models.py [--repeat 100] [--source torch|keras] [--models a,b]

The four MLPerf Tiny models (tests/mlperf_tiny.py: ResNet-8, DS-CNN, MobileNetV1 0.25 and the
FC autoencoder; the classifiers with their published softmax heads) are exported in ``float``
mode, where runtime/ computes exactly what onnxruntime computes on model.q.onnx. Both sides start
from the same float batch: runtime/'s time includes quantizing it (``runtime.inputs
.quantize_input``, what the tools do), onnxruntime's includes its QuantizeLinear and the final
DequantizeLinear. Before timing, each batch's output is checked: runtime/'s int8 output ==
model.q.onnx's int8 output, and its dequantized output == onnxruntime's float output. Then both
are timed in alternating rounds of five back-to-back calls (``best_times``) and the best of
``--repeat`` calls is kept; the table gives ms per batch at batch 1 and 32 and the ratio
runtime / onnxruntime (target: every ratio <= 1.0). BLAS is limited to one thread with
threadpoolctl (and the *_NUM_THREADS variables, set before numpy is imported); onnxruntime runs
with intra_op_num_threads=1 and inter_op_num_threads=1.
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's packages, and the builders

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

import export  # noqa: E402
import mlperf_tiny  # noqa: E402
import runtime  # noqa: E402
from export.qonnx import run_qonnx  # noqa: E402
from runtime import kernels  # noqa: E402
from runtime.inputs import float_output_to_nhwc, quantize_input  # noqa: E402

MODELS = ("resnet8", "dscnn", "mobilenet", "autoencoder")
BATCHES = (1, 32)


def limit_threads() -> str:
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return "threadpoolctl not installed; BLAS threads set by environment"
    threadpool_limits(1)
    return ", ".join(f"{i['internal_api']} {i.get('architecture', '?')} "
                     f"threads={i['num_threads']}" for i in threadpool_info())


def onnx_file(name: str, source: str, directory: Path) -> Path:
    """The float model as its framework exports it, the classifiers' softmax included."""
    path = directory / f"{name}.onnx"
    if source == "torch":
        net = getattr(mlperf_tiny, f"torch_{name}")()
        return mlperf_tiny.torch_to_onnx(net, path, dynamo=False)
    mlperf_tiny.to_onnx(getattr(mlperf_tiny, f"keras_{name}")(), path)
    return path


def session(q_onnx) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(q_onnx.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def check(result, sess, x) -> None:
    """runtime/ == onnxruntime on this batch, int8 and float, or stop."""
    model = result.model
    y = runtime.run(model, quantize_input(model, x))
    expected = run_qonnx(result.quant_onnx, model, x)
    spec = model.output_spec
    if not np.array_equal(y, expected.reshape(y.shape)):
        raise SystemExit(f"{model.name}: runtime/ int8 output differs from model.q.onnx's")
    got = kernels.dequantize(y, spec.scale, spec.zero_point)
    ort_y = float_output_to_nhwc(model, sess.run(None, {sess.get_inputs()[0].name: x})[0])
    if not np.array_equal(got, ort_y.reshape(got.shape)):
        raise SystemExit(f"{model.name}: dequantized output differs from onnxruntime's")


def best_times(fns, repeat: int, per_round: int = 5) -> list[float]:
    """The best of ``repeat`` calls of each function, in rounds that call every function in
    turn ``per_round`` times in a row after one untimed call: each side runs with its own data
    in cache, as in a loop over a dataset, and short rounds spread the machine's load over
    both alike."""
    best = [float("inf")] * len(fns)
    for _ in range(max(1, repeat // per_round)):
        for i, fn in enumerate(fns):
            fn()
            for _ in range(per_round):
                start = time.perf_counter()
                fn()
                best[i] = min(best[i], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--source", choices=("torch", "keras"), default="torch",
                        help="which builders of tests/mlperf_tiny.py (default torch)")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated subset of {','.join(MODELS)}")
    args = parser.parse_args()
    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    print(f"numpy {np.__version__}; onnxruntime {ort.__version__}; BLAS: {limit_threads()}; "
          f"source: {args.source}; best of {args.repeat}")
    print(f"{'model':12s} {'batch':>5s} {'runtime ms':>11s} {'ort ms':>8s} {'ratio':>6s}")
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            layout = "torch" if args.source == "torch" else "keras"
            calibration = mlperf_tiny.inputs(name, 32, seed=1, layout=layout)
            result = export.from_onnx(onnx_file(name, args.source, Path(tmp)), calibration,
                                      requant="float", name=name)
            sess = session(result.quant_onnx)
            feed_name = sess.get_inputs()[0].name
            model = result.model
            for batch in BATCHES:
                x = mlperf_tiny.inputs(name, batch, seed=2, layout=layout)
                check(result, sess, x)
                t_rt, t_ort = best_times(
                    [lambda: runtime.run(model, quantize_input(model, x)),
                     lambda: sess.run(None, {feed_name: x})], args.repeat)
                ratios.append(t_rt / t_ort)
                print(f"{name:12s} {batch:5d} {t_rt * 1e3:11.3f} {t_ort * 1e3:8.3f} "
                      f"{ratios[-1]:6.2f}", flush=True)
    print(f"worst ratio {max(ratios):.2f} (target <= 1.0)")


if __name__ == "__main__":
    main()
