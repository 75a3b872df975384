"""Quality control pictures of preprocessing: what the crop kept, film by film (the preprocess and
views stages)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pandas as pd

from ..files import atomic_path
from .crop import region_box
from .images import read_grey, to_uint8

THUMBNAIL_PX = 400  # long side of the contact sheet's source images


def contact_sheet(index: pd.DataFrame, model_input: Callable, path: Path, n: int, seed: int = 0,
                  region: str = "hand") -> None:
    """Before/after pairs of ``n`` random rows of ``index``: the source film with its hand box, crop
    method and the part kept (``region``, where not the whole hand), then the model input
    (``model_input(row)``, a row of ``index.itertuples()``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sample = index.sample(n=min(n, len(index)), random_state=seed).sort_values("boneage")
    cols = 4
    rows = max(1, int(np.ceil(len(sample) / cols)))
    fig, axes = plt.subplots(rows, cols * 2, figsize=(cols * 2 * 1.6, rows * 1.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, row in enumerate(sample.itertuples()):
        r, c = divmod(k, cols)
        before = to_uint8(read_grey(row.source_file))
        scale = min(1.0, THUMBNAIL_PX / max(before.shape))  # draw a thumbnail, not the full film
        before = cv2.resize(before, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else before
        ax = axes[r, 2 * c]
        ax.imshow(before, cmap="gray", vmin=0, vmax=255)
        hand = (row.crop_x0, row.crop_y0, row.crop_x1, row.crop_y1)
        boxes = [(hand, "#ff7f0e")]
        if region != "hand":
            boxes.append((region_box(hand, region, row.width_before, row.height_before), "#1f9bff"))
        for (x0, y0, x1, y1), colour in boxes:
            ax.add_patch(matplotlib.patches.Rectangle((x0 * scale, y0 * scale), (x1 - x0) * scale, (y1 - y0) * scale,
                                                      fill=False, edgecolor=colour, linewidth=1.2))
        ax.set_title(f"{row.id}: {row.crop_method}", fontsize=6)
        after = model_input(row)
        ax = axes[r, 2 * c + 1]
        ax.imshow(after, cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{row.boneage:.0f} mo, {'M' if row.male else 'F'}", fontsize=6)
    kept = "" if region == "hand" else f" and the {region} kept (blue)"
    fig.suptitle(f"Crops: source with hand box (orange){kept} (left), model input (right)", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, format=Path(path).suffix[1:])
    plt.close(fig)
