"""Matplotlib set-up and saving shared by the stages that draw figures (report, Grad-CAM).

Every figure is saved through :func:`save`, which first shrinks, then wraps, any title wider than
its axes (or a figure title wider than the figure), so that no title is cut off in the report.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from ..files import atomic_path

MIN_TITLE_PT = 6.0


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 110})
    return plt


def grid(n: int, width: float = 3.4, height: float = 3.2, max_cols: int = 3):
    """A figure with ``n`` axes in rows of ``max_cols``; the spare axes are hidden."""
    plt = pyplot()
    cols = min(n, max_cols)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes.flat


def _titles(fig):
    """(text artist, width in pixels it must fit) for each axes title and the figure title."""
    out = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        width = ax.get_window_extent().width
        titles = (ax.title, getattr(ax, "_left_title", None), getattr(ax, "_right_title", None))
        out += [(t, width) for t in titles if t is not None and t.get_text()]
    suptitle = getattr(fig, "_suptitle", None)
    if suptitle is not None and suptitle.get_text():
        out.append((suptitle, fig.bbox.width))
    return out


def overflowing_titles(fig) -> list[str]:
    """Titles wider than their axes (the figure title: than the figure), as drawn now."""
    renderer = fig.canvas.get_renderer()
    return [t.get_text() for t, width in _titles(fig) if t.get_window_extent(renderer).width > width + 0.5]


def fit_titles(fig) -> None:
    """Shrink each title that overflows, down to ``MIN_TITLE_PT``, then wrap it onto more lines."""
    renderer = fig.canvas.get_renderer()
    for text, width in _titles(fig):
        while text.get_window_extent(renderer).width > width and text.get_fontsize() > MIN_TITLE_PT:
            text.set_fontsize(max(MIN_TITLE_PT, text.get_fontsize() - 0.5))
        words = text.get_text()
        chars = max(len(line) for line in words.splitlines())
        while text.get_window_extent(renderer).width > width and chars > 8:
            chars = int(chars * 0.85)
            text.set_text("\n".join(textwrap.fill(line, chars) for line in words.splitlines()))


def save(fig, out: Path, dpi: float | None = None) -> list[str]:
    """Lay out, fit titles, write ``out`` and close; returns titles that still overflow (none
    unless a single word is wider than its axes)."""
    plt = pyplot()
    # constrained figures lay themselves out when drawn; the others need tight_layout
    lay_out = fig.tight_layout if fig.get_layout_engine() is None else fig.canvas.draw
    lay_out()
    fit_titles(fig)
    lay_out()
    left = overflowing_titles(fig)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format=Path(out).suffix[1:])
    plt.close(fig)
    return left
