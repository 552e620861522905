"""The device verification a report shows: the JSON ``tinyconv verify --json`` wrote, read back
as rows of (what, result), so the page says whether the device matched bit for bit."""
from __future__ import annotations

import json
from pathlib import Path

from runtime.errors import TinyconvError


def verify_rows(path: Path, model_hash: str) -> list[tuple[str, str]]:
    """Rows for the page; a report about another model than the one verified is refused."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise TinyconvError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise TinyconvError(f"{path}: not a JSON file ({exc})") from None
    if not isinstance(data, dict) or "device_equal_images" not in data:
        raise TinyconvError(f"{path}: not a report of `tinyconv verify --json`")
    if data.get("model_hash") != model_hash:
        raise TinyconvError(f"{path}: verifies model {data.get('model_hash')}, but the export "
                            f"is model {model_hash}")
    images, equal = data.get("images", 0), data["device_equal_images"]
    verdict = {0: "PASS: the device's outputs equal runtime/'s bit for bit",
               1: "FAIL: some device outputs differ or got no reply",
               2: f"ABORTED: {data.get('aborted')}"}.get(data.get("exit_status"), "unknown")
    rows = [("verdict", verdict),
            ("device", f"{data.get('device')} (target {data.get('target')})"),
            ("device == runtime", f"{equal}/{images} images, {data.get('device_equal_elements')}"
                                  f"/{data.get('elements')} elements"),
            ("checked", "; ".join(data.get("gates") or []))]
    accuracy = data.get("accuracy") or {}
    if accuracy.get("device") is not None:
        rows.append(("top-1 float / runtime / device", " / ".join(
            f"{100 * accuracy[k]:.2f}%" for k in ("float", "runtime", "device"))))
    if data.get("ticks_per_inference") is not None:
        rows.append(("device time", f"{data['ticks_per_inference']:.0f} "
                                    f"{data.get('ticks_unit', '')} per inference"))
    rows.append(("verify report", str(path)))
    return rows
