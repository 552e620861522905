"""The report's pictures, drawn with matplotlib's object API on the Agg canvas (no pyplot state,
no display needed, safe in parallel test workers).

Every picture is a grid with a fixed pixel layout, so its size is known before it is drawn:
``width = LABEL_PX + columns * cell``, ``height = TITLE_PX + rows * cell`` (see ``grid_size``).
Wide layers shrink the cell (down to ``MIN_CELL_PX``) so a picture stays within
``MAX_WIDTH_PX``, the width a page shows without scrolling; output panels narrow likewise.
- ``filters.png``: the first conv layer's filters as heatmaps, one column per filter, one row per
  (input channel, float / int8) pair; cell ``FILTER_CELL_PX``.
- ``features_<i>.png``: input ``i`` and, for each conv layer, its feature maps (one column per
  channel), float next to int8 (dequantized) on the same colour scale; cell ``FEATURE_CELL_PX``.
- ``outputs.png``: the model output of each pictured input as grouped bars, float next to int8
  next to the device when there is one; one ``OUTPUT_PANEL_PX`` panel per input, at most
  six to a row.
"""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np

LABEL_PX = 96
TITLE_PX = 40
FILTER_CELL_PX = 72
FEATURE_CELL_PX = 56
OUTPUT_PANEL_PX = (320, 240)
MAX_WIDTH_PX = 1200
MIN_CELL_PX = 16
_DPI = 100
_PAD = 0.06  # blank fraction around each cell


def grid_size(rows: int, columns: int, cell: int) -> tuple[int, int]:
    """(width, height) in pixels of a grid picture."""
    return LABEL_PX + columns * cell, TITLE_PX + rows * cell


def fit_cell(columns: int, cell: int) -> int:
    """``cell``, or smaller so that ``columns`` cells fit within MAX_WIDTH_PX."""
    return max(MIN_CELL_PX, min(cell, (MAX_WIDTH_PX - LABEL_PX) // max(columns, 1)))


def _figure(width: int, height: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


class _Grid:
    """Places cells and labels on a figure by pixel position."""

    def __init__(self, rows: int, columns: int, cell: int, title: str):
        cell = fit_cell(columns, cell)
        self.rows, self.columns, self.cell = rows, columns, cell
        self.width, self.height = grid_size(rows, columns, cell)
        self.figure = _figure(self.width, self.height)
        self.figure.text(0.5, 1 - 12 / self.height, title, ha="center", va="center",
                         fontsize=10)

    def axes(self, row: int, column: int):
        c = self.cell
        left = (LABEL_PX + column * c + _PAD * c) / self.width
        bottom = (self.height - TITLE_PX - (row + 1) * c + _PAD * c) / self.height
        ax = self.figure.add_axes((left, bottom, c * (1 - 2 * _PAD) / self.width,
                                   c * (1 - 2 * _PAD) / self.height))
        ax.set_xticks([])
        ax.set_yticks([])
        return ax

    def row_label(self, row: int, text: str) -> None:
        y = (self.height - TITLE_PX - (row + 0.5) * self.cell) / self.height
        self.figure.text(4 / self.width, y, text, ha="left", va="center", fontsize=7)

    def column_label(self, column: int, text: str) -> None:
        x = (LABEL_PX + (column + 0.5) * self.cell) / self.width
        self.figure.text(x, 1 - (TITLE_PX - 2) / self.height, text, ha="center", va="bottom",
                         fontsize=6)


def filters_png(float_weights: np.ndarray, int8_weights: np.ndarray | None,
                title: str = "learned first-layer filters") -> bytes:
    """Heatmaps of ``[M, C, KH, KW]`` filters (float, and the int8 codes when given), red for
    positive and blue for negative weights. Each filter of each version gets its own symmetric
    colour scale: int8 weights are the float ones times a positive per-filter factor, so the two
    rows differ only where rounding to 255 levels shows."""
    m, c = float_weights.shape[:2]
    versions = [("float", float_weights)]
    if int8_weights is not None:
        versions.append(("int8", int8_weights))
    grid = _Grid(c * len(versions), m, FILTER_CELL_PX, title)
    for f in range(m):
        grid.column_label(f, f"filter {f}")
        for ci in range(c):
            for v, (label, weights) in enumerate(versions):
                row = ci * len(versions) + v
                limit = float(np.abs(weights[f]).max()) or 1.0
                grid.axes(row, f).imshow(weights[f, ci], cmap="RdBu_r", vmin=-limit, vmax=limit,
                                         interpolation="nearest")
                if f == 0:
                    grid.row_label(row, f"{label}" + (f" ch {ci}" if c > 1 else ""))
    return _png(grid.figure)


def features_png(image: np.ndarray, layers: Sequence[tuple[str, np.ndarray, np.ndarray]],
                 title: str) -> bytes:
    """``image`` ``[H, W]`` in the first row, then for each ``(name, float_map, int8_map)``
    (``[H, W, C]`` each, int8 already dequantized) a float row and an int8 row; each channel's
    pair shares one colour scale so differences are differences in the data."""
    columns = max([1] + [fmap.shape[-1] for _, fmap, _ in layers])
    grid = _Grid(1 + 2 * len(layers), columns, FEATURE_CELL_PX, title)
    grid.axes(0, 0).imshow(image, cmap="gray_r", interpolation="nearest")
    grid.row_label(0, "input")
    for i, (name, float_map, int8_map) in enumerate(layers):
        float_row, int8_row = 1 + 2 * i, 2 + 2 * i
        grid.row_label(float_row, f"{name}\nfloat")
        grid.row_label(int8_row, f"{name}\nint8")
        for ch in range(float_map.shape[-1]):
            pair = (float_map[..., ch], int8_map[..., ch])
            low = min(float(p.min()) for p in pair)
            high = max(float(p.max()) for p in pair)
            for row, data in zip((float_row, int8_row), pair):
                grid.axes(row, ch).imshow(data, cmap="viridis", vmin=low,
                                          vmax=high if high > low else low + 1.0,
                                          interpolation="nearest")
    return _png(grid.figure)


def outputs_png(float_out: np.ndarray, int8_out: np.ndarray, device_out: np.ndarray | None,
                labels: Sequence[int | None], title: str = "model outputs") -> bytes:
    """Grouped bars of each input's outputs ``[K, classes]``: float, int8 (dequantized) and the
    device's (dequantized) when given."""
    series = [("float", float_out, "#4c72b0"), ("int8 runtime", int8_out, "#dd8452")]
    if device_out is not None:
        series.append(("device", device_out, "#55a868"))
    k, classes = float_out.shape
    columns = min(k, max(1, MAX_WIDTH_PX // 200))  # more inputs wrap onto further rows
    rows = -(-k // columns)
    panel_w, panel_h = min(OUTPUT_PANEL_PX[0], MAX_WIDTH_PX // columns), OUTPUT_PANEL_PX[1]
    width, height = columns * panel_w, TITLE_PX + rows * panel_h
    figure = _figure(width, height)
    figure.text(0.5, 1 - 12 / height, title, ha="center", va="center", fontsize=10)
    bar = 0.8 / len(series)
    x = np.arange(classes)
    for i in range(k):
        column, row = i % columns, i // columns
        ax = figure.add_axes(((column * panel_w + 40) / width,
                              ((rows - 1 - row) * panel_h + 30) / height,
                              (panel_w - 52) / width, (panel_h - 52) / height))
        for s, (name, values, colour) in enumerate(series):
            ax.bar(x + (s - (len(series) - 1) / 2) * bar, values[i], bar, label=name,
                   color=colour)
        ax.set_xticks(x)
        ax.tick_params(labelsize=6)
        label = labels[i]
        ax.set_title(f"input {i}" + ("" if label is None else f" (label {label})"), fontsize=8)
        if i == 0:
            ax.legend(fontsize=6, loc="best")
    return _png(figure)
