"""Grad-CAM panels: where a variant looks when it estimates bone age.

Uses pytorch-grad-cam (PyPI package grad-cam) on the last convolutional feature map. The target is
the scalar regression output, so a map shows the regions whose features raise the predicted age.
Models with a sex input are wrapped so that each image is explained with its own sex bound. Each
map is normalised to its own maximum: colours compare regions within one image, not across images.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .data import load_images, resize
from .evaluate import subset_table
from .files import setup_logging, usable_threads
from .inference import load_model

log = logging.getLogger("boneage.gradcam")


class SexBound(nn.Module):
    """The model with the sex input fixed, returning (B, 1) as Grad-CAM expects."""

    def __init__(self, model: nn.Module, male: torch.Tensor):
        super().__init__()
        self.model, self.male = model, male

    def forward(self, x):
        return self.model(x, self.male).unsqueeze(1)


class RegressionTarget:
    """Grad-CAM target: the predicted value itself (one scalar output per image)."""

    def __call__(self, output):
        return output[..., 0] if output.ndim else output


def pick_examples(rows: pd.DataFrame, n: int) -> pd.DataFrame:
    """``n`` test images spread over the age range, alternating girls and boys."""
    rows = rows.sort_values("boneage").reset_index(drop=True)
    chosen = []
    for k, q in enumerate(np.linspace(0.02, 0.98, n)):
        male = k % 2 == 1
        pool = rows[(rows["male"] == male) & ~rows.index.isin(chosen)]
        if pool.empty:
            pool = rows[~rows.index.isin(chosen)]
        if pool.empty:
            break
        target = rows["boneage"].quantile(q)
        chosen.append(int((pool["boneage"] - target).abs().idxmin()))
    return rows.loc[chosen]


def cam_maps(model, meta: dict, images_u8: torch.Tensor, male: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grey images in [0, 1], CAM maps in [0, 1], predictions in months) at the model's input size."""
    from pytorch_grad_cam import GradCAM

    size = meta["spec"]["input_size"]
    x = resize(images_u8, size)
    wrapped = SexBound(model.float().eval(), male.float())
    with GradCAM(model=wrapped, target_layers=[model.gradcam_layer()]) as cam:
        maps = cam(input_tensor=x, targets=[RegressionTarget()] * x.shape[0])
        pred = cam.outputs.detach().float().squeeze(1).numpy()
    months = pred * meta["target_std"] + meta["target_mean"]
    return x[:, 0].numpy(), maps, months


def panel(index_path: Path, split_path: Path, model_path: Path, out: Path, n_images: int = 8,
          cols: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pytorch_grad_cam.utils.image import show_cam_on_image

    model, meta = load_model(model_path, "cpu")
    index = pd.read_parquet(index_path)
    split = pd.read_csv(split_path, dtype={"id": str})
    rows = pick_examples(subset_table(index, split, ("test",)), n_images)
    images = load_images(rows, index_path.parent, threads=2)
    male = torch.tensor(rows["male"].to_numpy(np.float32))
    grey, maps, months = cam_maps(model, meta, images, male)

    n_rows = int(np.ceil(len(rows) / cols))
    fig, axes = plt.subplots(n_rows, cols, figsize=(cols * 2.3, n_rows * 2.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, row in enumerate(rows.itertuples()):
        rgb = np.repeat(grey[k][:, :, None], 3, axis=2).astype(np.float32)
        overlay = show_cam_on_image(rgb, maps[k], use_rgb=True, image_weight=0.6)
        ax = axes.flat[k]
        ax.imshow(overlay)
        ax.set_title(f"{'boy' if row.male else 'girl'}: true {row.boneage:.0f} mo\n"
                     f"predicted {months[k]:.0f} mo", fontsize=8)
    fig.suptitle(f"Grad-CAM, {meta['variant']} (test images; each map normalised on its own)", fontsize=9)
    fig.tight_layout(h_pad=1.2)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    log.info("wrote %s", out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--index", required=True)
    parser.add_argument("--split", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--n-images", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    setup_logging()
    torch.set_num_threads(usable_threads(args.threads))
    panel(Path(args.index), Path(args.split), Path(args.model), Path(args.out), args.n_images)


if __name__ == "__main__":
    main()
