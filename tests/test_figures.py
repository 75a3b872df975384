"""Figures whose titles fit: no title wider than its axes in any saved figure."""

from __future__ import annotations

import numpy as np

from boneage.results.figures import grid, overflowing_titles, save
from boneage.results.plots import fig_confusion


def test_a_title_too_wide_for_its_axes_is_shrunk_or_wrapped(tmp_path):
    fig, axes = grid(3, width=2.0, height=2.0)
    axes[0].set_title("efficientnet_lite0_sex: accuracy 0.83 on the held-out test split of this run")
    fig.suptitle("a figure title that is much longer than the figure is wide, " * 3)
    fig.tight_layout()
    assert overflowing_titles(fig)  # as drawn, it is cut
    assert save(fig, tmp_path / "f.png") == []
    assert (tmp_path / "f.png").stat().st_size > 0


def test_the_confusion_figure_titles_fit(tmp_path):
    stage = {"confusion": np.diag([5, 7, 2]).tolist(), "accuracy": 0.8333}
    metrics = {name: {"test": {"stage": stage}} for name in
               ("efficientnet_lite0_sex", "resnet34_cbam_sex_long_name", "ensemble")}
    assert fig_confusion(metrics, (120, 216), tmp_path / "confusion.png") == []
