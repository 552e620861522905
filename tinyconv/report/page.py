"""The report's HTML page (one self-contained file next to its PNGs) and the atomic write of the
whole report directory."""
from __future__ import annotations

import html
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from runtime.errors import TinyconvError
from tinyconv.report.quality import Result

_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 80em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.worst { background: #fde2e2; }
img { display: block; margin: 0.5em 0 1.5em 0; max-width: 100%; height: auto; }
span.worst { background: #fde2e2; padding: 0 0.4em; border: 1px solid #ccc; }
p.warning { color: #8a4b00; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


def decibels(value: float) -> str:
    if math.isnan(value):
        return "—"
    if math.isinf(value):
        return "exact" if value > 0 else "-inf"
    return f"{value:.1f}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def accuracy_table(results: Sequence[Result]) -> str:
    rows = ["<tr><th>model</th><th>top-1 accuracy</th><th>top-1 = float</th>"
            "<th>output SQNR (dB)</th></tr>"]
    for r in results:
        if r.error:
            rows.append(f"<tr><td>{html.escape(r.label)}</td><td colspan=\"3\">export failed: "
                        f"{html.escape(r.error)}</td></tr>")
            continue
        rows.append(f"<tr><td>{html.escape(r.label)}</td><td>{percent(r.accuracy)}</td>"
                    f"<td>{percent(r.agreement)}</td><td>{decibels(r.output_sqnr)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def layer_table(results: Sequence[Result], layers: Sequence[tuple[str, str]]) -> str:
    """Rows: the int8 model's layers (op, output tensor); columns: the int8 configurations. The
    lowest SQNR of each column is shaded: that is the layer losing the most."""
    int8 = [r for r in results if r.layer_sqnr]
    head = "".join(f"<th>{html.escape(r.label)}</th>" for r in int8)
    rows = [f"<tr><th>layer (op &rarr; tensor)</th>{head}</tr>"]
    worst = {id(r): min(r.layer_sqnr.values()) for r in int8}
    for op, tensor in layers:
        cells = []
        for r in int8:
            value = r.layer_sqnr.get(tensor)
            if value is None:
                cells.append("<td>—</td>")
            else:
                shade = ' class="worst"' if value == worst[id(r)] else ""
                cells.append(f"<td{shade}>{decibels(value)}</td>")
        rows.append(f"<tr><td>{html.escape(op)} &rarr; <code>{html.escape(tensor)}</code></td>"
                    + "".join(cells) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


LEGEND = ('<p class="legend"><span class="worst">shaded</span> the layer with the lowest SQNR '
          'of its column: where that configuration loses the most.</p>')


def _rows(pairs: Sequence[tuple[str, str]]) -> str:
    return "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                   for k, v in pairs)


def render(title: str, facts: Sequence[tuple[str, str]], results: Sequence[Result],
           layers: Sequence[tuple[str, str]], images: Sequence[tuple[str, str]],
           verification: Sequence[tuple[str, str]] = (), warnings: Sequence[str] = ()) -> str:
    """The page: facts about the run, warnings, the device verification (rows from
    verified.verify_rows, if given), the two tables, then each ``(file, caption)`` image."""
    fact_rows = _rows(facts)
    notes = "".join(f'<p class="warning">{html.escape(w)}</p>' for w in warnings)
    verified = ("<h2>Device verification</h2><table>" + _rows(verification) + "</table>"
                if verification else "")
    figures = "".join(f"<h3>{html.escape(caption)}</h3><img src=\"{html.escape(name)}\" "
                      f"alt=\"{html.escape(caption)}\">" for name, caption in images)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<table>{fact_rows}</table>
{notes}{verified}
<h2>Accuracy and output SQNR</h2>
<p>Each int8 row re-exports <code>model.onnx</code> in that configuration and runs it in the
bit-exact runtime (what the device computes). SQNR compares the dequantized int8 output with the
float output of onnxruntime: higher is better, every 6 dB is one more bit.</p>
{accuracy_table(results)}
<h2>SQNR per layer (dB)</h2>
<p>Each int8 activation against the float activation of the same tensor.</p>
{layer_table(results, layers)}
{LEGEND}
<h2>Pictures</h2>
{figures}
</body></html>
"""


def write_dir_atomic(path: Path, files: dict[str, bytes]) -> None:
    """Create ``path`` holding exactly ``files``: written into a temporary sibling first, then
    swapped in, so an interrupted run leaves either the old report or the new one. An existing
    ``path`` is replaced only when it is empty or a previous report: an index.html and
    nothing but plain .png files beside it (a folder with anything else is the user's)."""
    path = Path(path)
    check_out_dir(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    staging.chmod(0o755)
    old = None
    try:
        for name, data in files.items():
            (staging / name).write_bytes(data)
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / "report")
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and not path.exists():
            os.replace(old / "report", path)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def check_out_dir(path: Path) -> None:
    """Refuse a ``path`` that write_dir_atomic must not replace (see there)."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if path.is_symlink():
        raise TinyconvError(f"{path} is a symbolic link, which the report would replace: give "
                            f"its target ({os.path.realpath(path)}) as --out")
    if not path.is_dir():
        raise TinyconvError(f"{path} exists and is not a tinyconv report directory; "
                            "choose another --out")
    entries = sorted(path.iterdir())
    if not entries:
        return
    if not (path / "index.html").is_file():
        raise TinyconvError(f"{path} exists and is not a tinyconv report directory (no "
                            "index.html); choose another --out")
    for entry in entries:
        if entry.is_symlink() or not entry.is_file() or not (
                entry.name == "index.html" or entry.suffix == ".png"):
            raise TinyconvError(f"{path} holds {entry.name}, which a tinyconv report does not "
                                "write; replacing the report would delete it: move it or "
                                "choose another --out")
