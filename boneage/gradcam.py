"""Stage 5b, gradcam: signed Grad-CAM maps of each variant (:mod:`boneage.results.cam`), with figures.

Written per variant (``--out-dir``, file names below):

* ``<v>.png`` and ``<v>.npz``: the panel (test images across ages, girls and boys) and its maps
  (ids, signed maps at input size, the randomised model's maps, predictions, layer);
* ``<v>_sanity.png``: the sanity check of Adebayo et al. (NeurIPS 2018): Spearman correlation
  between the maps of the trained model and of a copy with re-initialised weights, per panel image.
  Maps that barely change (mean correlation above ``SANITY_MAX_RHO``) explain the architecture or
  the image, not what was learned, and the variant is flagged;
* ``<v>_population.png`` and ``.npz``: the mean map over the test split per sex and developmental
  stage, on the mean image of the group (crops are aligned by preprocessing: hand centred, long
  side filling the square);
* ``<v>_test.csv``: per test image, the share of the map's absolute mass inside the hand (the
  thresholded hand of the classical crop analysis) and the hand's share of the image;
* ``<v>.json``: the layer, the sanity check and the hand share, for the report. A variant whose
  maps put less of their mass on the hand than the hand's share of the image (no better than a
  uniform map) is flagged as looking at the background.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .files import (
    keep_freed_memory,
    read_table,
    run_main,
    save_npz,
    setup_logging,
    usable_threads,
    write_json,
    write_table,
)
from .learning.data import load_images, read_split, resize, subset_table
from .learning.inference import load_model
from .learning.store import open_rows
from .results.cam import (
    DIVERGING,
    SANITY_MAX_RHO,
    batched_maps,
    choose_layer,
    hand_masks,
    hand_shares,
    randomised,
    sanity,
    signed_cam,
    upsample,
)
from .results.figures import pyplot, save
from .results.metrics import STAGES, stage_of

log = logging.getLogger("boneage.gradcam")





















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




def _overlay(ax, grey: np.ndarray, cam: np.ndarray, peak: float = 1.0):
    """Grey image with the signed map on top, more opaque where the map is stronger."""
    ax.imshow(grey, cmap="gray", vmin=0, vmax=1)
    alpha = np.clip(np.abs(cam) / peak, 0, 1) * 0.75
    return ax.imshow(cam, cmap=DIVERGING, vmin=-peak, vmax=peak, alpha=alpha)


def _colorbar(fig, mappable, axes):
    bar = fig.colorbar(mappable, ax=list(axes), shrink=0.6, ticks=[-1, 0, 1])
    bar.ax.set_yticklabels(["lowers", "0", "raises"])
    bar.set_label("effect on the estimated age", fontsize=8)


def fig_panel(rows, grey, maps, months, title, out) -> list[str]:
    plt = pyplot()
    cols = 4
    n_rows = int(np.ceil(len(rows) / cols))
    fig, axes = plt.subplots(n_rows, cols, figsize=(cols * 2.3 + 0.8, n_rows * 2.7),
                             squeeze=False, layout="constrained")
    shown = None
    for ax in axes.flat:
        ax.axis("off")
    for k, row in enumerate(rows.itertuples()):
        shown = _overlay(axes.flat[k], grey[k], maps[k])
        axes.flat[k].set_title(f"{'boy' if row.male else 'girl'}, true {row.boneage:.0f} mo\n"
                               f"predicted {months[k]:.0f} mo", fontsize=8)
    fig.suptitle(title, fontsize=9)
    if shown is not None:
        _colorbar(fig, shown, axes.flat)
    return save(fig, out, dpi=120)


def fig_sanity(rows, grey, maps, random_maps, rho, title, out) -> list[str]:
    plt = pyplot()
    n = min(4, len(rows))
    fig, axes = plt.subplots(2, n, figsize=(n * 2.3 + 0.8, 5.2), squeeze=False,
                             layout="constrained")
    shown = None
    for k in range(n):
        for r, (m, label) in enumerate(((maps[k], "trained"), (random_maps[k], "random weights"))):
            ax = axes[r, k]
            ax.axis("off")
            shown = _overlay(ax, grey[k], m)
            ax.set_title(f"{label}" + (f", rho {rho[k]:.2f}" if r else f": {rows.iloc[k].boneage:.0f} mo"), fontsize=8)
    fig.suptitle(title, fontsize=9)
    _colorbar(fig, shown, axes.flat)
    return save(fig, out, dpi=120)


def fig_population(groups: dict, title: str, out) -> list[str]:
    """``groups``: ``<girls|boys>_<stage>`` -> (mean image, mean map, n)."""
    plt = pyplot()
    fig, axes = plt.subplots(2, len(STAGES), figsize=(len(STAGES) * 2.5 + 0.8, 5.6),
                             squeeze=False, layout="constrained")
    peak = max([np.abs(g[1]).max() for g in groups.values() if g[2]] + [1e-12])
    shown = None
    for r, sex in enumerate(("girls", "boys")):
        for c, stage in enumerate(STAGES):
            ax = axes[r, c]
            ax.axis("off")
            image, cam, n = groups[f"{sex}_{stage}"]
            if n:
                shown = _overlay(ax, image, cam, peak)
            else:
                ax.text(0.5, 0.5, "no test images", ha="center", va="center", fontsize=8, transform=ax.transAxes)
            ax.set_title(f"{sex}, {stage} (n={n})", fontsize=8)
    fig.suptitle(title, fontsize=9)
    if shown is not None:
        bar = fig.colorbar(shown, ax=list(axes.flat), shrink=0.6)
        bar.set_label("mean effect (blue lowers, red raises)", fontsize=8)
    return save(fig, out, dpi=120)


def group_keys(test: pd.DataFrame, thresholds) -> np.ndarray:
    """Each test image's population group, ``<girls|boys>_<stage>``."""
    stages = stage_of(test["boneage"].to_numpy(), thresholds)
    return np.array([f"{'boys' if m else 'girls'}_{s}" for m, s in zip(test["male"], stages)])


GROUPS = [f"{sex}_{stage}" for sex in ("girls", "boys") for stage in STAGES]


def maps_of_test_split(model, layer: str, images_u8: torch.Tensor, male: torch.Tensor, size: int, keys: np.ndarray):
    """Maps of every test image, batch by batch so that memory stays small: (raw maps at the
    layer's resolution, outputs in standard units, hand mass share, hand area share,
    {group: [sum of images, sum of maps, n]}). The per-image results go into arrays allocated once:
    appending each batch's small arrays between the large transient ones pinned the top of the heap
    and grew the peak memory with the number of test images (3.5 GB for 15,000 at 144 px)."""
    n = len(images_u8)
    sums = {g: [np.zeros((size, size)), np.zeros((size, size)), 0] for g in GROUPS}
    outs, inside, area = np.empty(n, np.float32), np.empty(n), np.empty(n)
    raws = None
    for s, x, raw, out, maps in batched_maps(model, layer, images_u8, male, size):
        grey = x[:, 0].numpy()
        e = s + len(x)
        if raws is None:
            raws = np.empty((n, *raw.shape[1:]), np.float32)
        inside[s:e], area[s:e] = hand_shares(maps, hand_masks((grey * 255).round().astype(np.uint8)))
        raws[s:e], outs[s:e] = raw, out
        for k, key in enumerate(keys[s:e]):
            sums[key][0] += grey[k]
            sums[key][1] += maps[k]
            sums[key][2] += 1
    return raws, outs, inside, area, sums


def run(index_path: Path, split_path: Path, model_path: Path, out_dir: Path, n_images: int,
        thresholds: tuple[float, float], threads: int = 2, store: Path | None = None) -> dict:
    """Every output of the module docstring for one variant; returns the summary. With ``store``
    (preprocess's images.u8) the test images are read batch by batch from it, so the memory this
    takes does not grow with the test split; without, the PNGs are read into memory first."""
    model, meta = load_model(model_path, "cpu")
    model = model.float().to(memory_format=torch.contiguous_format)
    variant, size = meta["variant"], meta["spec"]["input_size"]
    layer, cells = choose_layer(model, size)
    index = read_table(index_path, "snakemake --forcerun preprocess")
    test = subset_table(index, read_split(split_path, index), ("test",))
    images = open_rows(store, index, test) if store else load_images(test, index_path.parent, threads=threads)
    male = torch.tensor(test["male"].to_numpy(np.float32))
    log.info("%s: Grad-CAM at %s (%dx%d cells) on %d test images", variant, layer, *cells, len(test))
    keys = group_keys(test, thresholds)
    raw_all, out, inside, area, sums = maps_of_test_split(model, layer, images, male, size, keys)
    months = out * meta["target_std"] + meta["target_mean"]
    write_table(test[["id", "male", "boneage"]].assign(
        group=keys, predicted=months.round(2), hand_mass_share=inside.round(4), hand_area_share=area.round(4)),
        out_dir / f"{variant}_test.csv")
    groups = {g: (v[0] / max(1, v[2]), v[1] / max(1, v[2]), v[2]) for g, v in sums.items()}
    save_npz(out_dir / f"{variant}_population.npz", **{g: v[1].astype(np.float32) for g, v in groups.items()},
             **{f"{g}_n": v[2] for g, v in groups.items()})

    rows = pick_examples(test, n_images)
    at = torch.as_tensor(test.set_index("id").index.get_indexer(rows["id"]))
    x = resize(images[at], size)
    raw = raw_all[at.numpy()]  # the trained model's maps, from the pass over the test split
    random_raw, _ = signed_cam(randomised(model), layer, x, male[at])
    check = sanity(raw, random_raw)
    maps, random_maps, grey = upsample(raw, size), upsample(random_raw, size), x[:, 0].numpy()
    save_npz(out_dir / f"{variant}.npz", ids=rows["id"].to_numpy(str), maps=maps.astype(np.float32),
             random_maps=random_maps.astype(np.float32), predicted_months=months[at.numpy()], layer=layer)

    where = f"{layer.removeprefix('backbone.')}, {cells[0]}x{cells[1]} cells"
    verdict = ("maps depend on the learned weights" if check["trustworthy"]
               else "UNTRUSTWORTHY: maps barely depend on the weights")
    cut = fig_panel(rows, grey, maps, months[at.numpy()],
                    f"Grad-CAM, {variant} ({where}); red raises the estimate, blue lowers it", out_dir / f"{variant}.png")
    cut += fig_sanity(rows, grey, maps, random_maps, check["spearman_per_image"],
                      f"Sanity check, {variant}: mean rank correlation with random weights "
                      f"{check['spearman_mean']:.2f} (threshold {SANITY_MAX_RHO}): {verdict}",
                      out_dir / f"{variant}_sanity.png")
    cut += fig_population(groups, f"Mean Grad-CAM of {variant} on {len(test)} test images, by sex and stage",
                          out_dir / f"{variant}_population.png")
    for title in cut:
        log.warning("figure title wider than its axes even when wrapped: %r", title)
    mass, hand = float(np.nanmean(inside)), float(np.nanmean(area))
    summary = {
        "variant": variant, "layer": layer, "cells": list(cells), "input_size": size,
        "panel_ids": rows["id"].tolist(), "sanity": check,
        "hand": {"images": int(np.isfinite(inside).sum()), "mass_share_mean": round(mass, 4),
                 "area_share_mean": round(hand, 4), "looks_at_background": bool(mass < hand)},
        "population": {g: v[2] for g, v in groups.items()},
    }
    write_json(out_dir / f"{variant}.json", summary)
    log.info("%s: sanity rho %.2f (%s), hand mass %.2f vs hand area %.2f", variant, check["spearman_mean"],
             "ok" if check["trustworthy"] else "FLAGGED", mass, hand)
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--index", required=True)
    parser.add_argument("--split", required=True)
    parser.add_argument("--out-dir", required=True, help="folder for <variant>.png, .npz, .json, ...")
    parser.add_argument("--n-images", type=int, required=True)
    parser.add_argument("--stage-thresholds", type=float, nargs=2, required=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--store", default=None, help="the image store (images.u8 of preprocess), read per batch; "
                        "default: read the PNGs")
    args = parser.parse_args(argv)
    setup_logging()
    threads = usable_threads(args.threads)
    torch.set_num_threads(threads)
    keep_freed_memory()
    run(Path(args.index), Path(args.split), Path(args.model), Path(args.out_dir), args.n_images,
        tuple(args.stage_thresholds), threads, Path(args.store) if args.store else None)


if __name__ == "__main__":
    run_main(main)
