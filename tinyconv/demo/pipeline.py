"""The demo's steps, in order: data, training (cached), ONNX, export, device verification.

Everything lands in one output directory, so each step can be inspected or rerun by hand:

    OUT/convnet-<key>.npz   trained weights, reused when the training settings are the same
    OUT/digits_convnet.onnx float model written from the numpy network
    OUT/calibration.npz     x: training images used to calibrate the int8 ranges
    OUT/test.npz            x, y: the whole test split (what is streamed to the device)
    OUT/export/             tinyconv export's output (model.onnx, model.q.onnx, model.tcm, C)
    OUT/verify.json         tinyconv verify's full report
"""
from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from runtime.errors import TinyconvError
from runtime.model import write_atomic
from tinyconv.demo.convnet import ConvNet, TrainConfig, train
from tinyconv.demo.data import Digits, load_digits
from tinyconv.demo.onnx_writer import onnxruntime_logits, save_onnx

CALIBRATION_IMAGES = 256  # training images (never test images) that set the activation ranges


def _say(text: str) -> None:
    print(text, flush=True)


def save_npz(path: Path, **arrays) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(path, buffer.getvalue())


def trained_network(out_dir: Path, digits: Digits, config: TrainConfig, retrain: bool = False,
                    say: Callable[[str], None] = _say) -> ConvNet:
    """Train, or reuse the weights cached in ``out_dir`` for exactly these settings."""
    cache = out_dir / f"convnet-{config.key()}.npz"
    if cache.exists() and not retrain:
        net, _ = ConvNet.load(cache)
        say(f"training: reusing {cache} (delete it or pass --retrain to train again)")
        return net
    from runtime.progress import Progress

    started = time.perf_counter()
    bar = Progress(config.epochs, "training (epochs)")
    try:
        net, log = train(digits.x_train, digits.y_train, config, lambda *_: bar.update())
    finally:
        bar.close()
    say(f"training: {config.epochs} epochs of SGD on {len(digits.x_train)} images in "
        f"{time.perf_counter() - started:.1f} s, final loss {log.losses[-1]:.4f}")
    net.save(cache, config=config.key())
    return net


DEMO_FILES = ("digits_convnet.onnx", "calibration.npz", "test.npz", "verify.json")


def _check_out_dir(out_dir: Path) -> None:
    """The demo rewrites its own files in a folder it wrote before (it has the ONNX model);
    elsewhere a file of the same name is the user's (``--out .`` in a project holding a
    test.npz): refused, before anything is trained or written."""
    if (out_dir / DEMO_FILES[0]).is_file():
        return
    taken = [name for name in DEMO_FILES if os.path.lexists(out_dir / name)]
    if taken:
        raise TinyconvError(f"{out_dir / taken[0]} exists and the demo would replace it, but "
                            f"{out_dir} holds no earlier demo: choose another --out")


@dataclass
class Prepared:
    """What the steps before the device produced."""

    digits: Digits
    net: ConvNet
    onnx_path: Path
    calibration_path: Path
    test_path: Path
    float_accuracy: float  # numpy network on the test split


def prepare(out_dir: Path, config: TrainConfig = TrainConfig(), retrain: bool = False,
            say: Callable[[str], None] = _say) -> Prepared:
    """Data, training, the float ONNX model and the .npz files, checked against each other."""
    _check_out_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    say(f"data: scikit-learn digits upsampled to {digits.x_test.shape[-1]}x"
        f"{digits.x_test.shape[-1]}, {len(digits.x_train)} train / {len(digits.x_test)} test")
    net = trained_network(out_dir, digits, config, retrain, say)
    onnx_path = save_onnx(net, out_dir / "digits_convnet.onnx", side=digits.x_test.shape[-1])
    numpy_logits = net.forward(digits.x_test)
    ort_logits = onnxruntime_logits(onnx_path, digits.x_test)
    worst = float(np.abs(ort_logits - numpy_logits).max())
    say(f"onnx: wrote {onnx_path}; onnxruntime vs numpy logits: max |diff| {worst:.2e}")
    calibration_path = out_dir / "calibration.npz"
    save_npz(calibration_path, x=digits.x_train[:CALIBRATION_IMAGES])
    test_path = out_dir / "test.npz"
    save_npz(test_path, x=digits.x_test, y=digits.y_test)
    accuracy = float((numpy_logits.argmax(axis=1) == digits.y_test).mean())
    say(f"float accuracy (numpy network, test split): {100 * accuracy:.2f}%")
    return Prepared(digits, net, onnx_path, calibration_path, test_path, accuracy)


def export_model(prepared: Prepared, export_dir: Path, requant: str,
                 say: Callable[[str], None] = _say):
    """Calibrate on training images, quantize (per-channel, minmax) and write ``export_dir``."""
    import export

    calibration = prepared.digits.x_train[:CALIBRATION_IMAGES]
    result = export.from_onnx(str(prepared.onnx_path), calibration, requant=requant,
                              name="digits")
    result.save(export_dir)
    say(f"export: int8 per-channel, {requant} requantization -> {export_dir}")
    return result


def run(out_dir: Path, device: str = "host", requant: str = "fixed",
        config: TrainConfig = TrainConfig(), retrain: bool = False) -> int:
    """The whole demo; returns the verify step's exit status."""
    from firmware_host.verify import verify

    started = time.perf_counter()
    prepared = prepare(out_dir, config, retrain)
    export_dir = out_dir / "export"
    export_model(prepared, export_dir, requant)
    _say(f"device: {device}, streaming {len(prepared.digits.x_test)} test images over serial")
    result = verify(export_dir, prepared.digits.x_test, labels=prepared.digits.y_test,
                    device=device, json_path=out_dir / "verify.json", progress=True)
    result.print_summary()
    _say(f"demo finished in {time.perf_counter() - started:.1f} s. Pictures and accuracy "
         f"tables:\n  tinyconv report {export_dir} --input {prepared.test_path} --labels "
         f"--calibration {prepared.calibration_path} --out {out_dir / 'report'}")
    return result.exit_status
