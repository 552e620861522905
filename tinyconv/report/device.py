"""The device's outputs for the report's pictured inputs, fetched over the serial link with
firmware_host's own device launcher and link (nothing about the wire is repeated here)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.errors import TinyconvError
from runtime.model import QuantModel


def device_outputs(export_dir: Path, model: QuantModel, device: str,
                   x_q: np.ndarray) -> np.ndarray:
    """int8 outputs ``[N, *output_shape]`` of ``device`` (a local target name, built and started
    here, or a pyserial URL) for the int8 inputs ``x_q``; the device must run ``model``."""
    from firmware_host.devices import start_device
    from firmware_host.link import Link

    with start_device(device, export_dir) as dev, \
            Link(dev.url, timeout=2.0 if device == "host" else 10.0,
                 connect_timeout=dev.connect_timeout) as link:
        link.sync()
        info = link.info()
        if info.model_hash != model.hash:
            raise TinyconvError(f"device {device} runs model {info.model_hash}, not "
                                f"{model.hash} from {export_dir}")
        outputs = []
        for outcome in link.infer_many(list(x_q)):
            if not outcome.ok:
                raise TinyconvError(f"device {device} gave no valid reply for input "
                                    f"{outcome.index}: {'; '.join(outcome.failures)}")
            outputs.append(np.asarray(outcome.output, np.int8))
    return np.stack(outputs).reshape((len(x_q),) + tuple(model.output_spec.shape))
