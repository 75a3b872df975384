"""Stage 5, evaluate: predictions of one variant on the validation and test splits, and metrics.

Options: test-time augmentation (mean over a few deterministic views), box views (each estimate the
mean over the hand box and 8 copies moved by ``box_shift`` of its long side, every one cut and made
from the source film as preprocess made the film's image: :func:`boneage.imaging.radiograph.moved_boxes`;
an estimate then no longer jumps when the box found moves by a pixel) and a linear bias correction
fitted on the validation split (``true ~ a * pred + b``) and applied to both splits, against the
regression toward the mean that every regressor shows at the age extremes.

Each prediction gets a split-conformal interval fitted on the validation split
(:mod:`boneage.results.intervals`). Test-retest stability: the spread of each test film's final estimate over
a fixed set of retakes (:mod:`boneage.results.stability`), in ``metrics.json`` under ``stability`` and per
film in the predictions (``retest_sd``, ``retest_range``).

Writes ``predictions.parquet`` (id, subset, boneage, male, pred_raw, pred_tta, pred, pred_low,
pred_high, retake_1..retake_V on test rows, retest_sd, retest_range), ``metrics.json`` (with ``interval``: level, half-width, coverage per subset),
(MAE, RMSE, R2, median error, per sex, within 6/12 months, stage accuracy and confusion, by
subset, with the MAE of always predicting the training mean as the baseline; ``ci95``: 95 % bootstrap
intervals, :mod:`boneage.results.uncertainty`) and the model card.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .files import (keep_freed_memory, read_json, read_table, run_main, setup_logging, sha256_file, usable_threads,
                    write_json, write_table)
from .imaging.radiograph import MAX_BOX_SHIFT, Settings as Preprocessing, view_tensor
from .learning.data import load_images, read_split, subset_table
from .learning.inference import load_model, model_meta, predict, resolve_device
from .learning.store import RESIDENT, hold, open_rows, subset
from .results.intervals import add_interval
from .results.metrics import apply_bias_correction, corrected, score
from .results.provenance import model_card
from .results.stability import RETAKE, Retakes, estimates, summary_of
from .results.tables import ci_text
from .results.uncertainty import Bootstrap

log = logging.getLogger("boneage.evaluate")


def train_mean(index: pd.DataFrame, split: pd.DataFrame) -> float:
    ids = set(split.loc[split["subset"] == "train", "id"].astype(str))
    return float(index.loc[index["id"].astype(str).isin(ids), "boneage"].mean())


@dataclass(frozen=True)
class Settings:
    """How predictions are made and scored (config ``evaluate``)."""

    tta: bool
    bias_correction: bool
    stage_thresholds: tuple[float, float]
    interval_level: float
    bootstrap: Bootstrap = Bootstrap()
    retakes: Retakes = Retakes()
    box_shift: float = 0.0  # box views: 0 = the box found alone


def model_inputs(index: pd.DataFrame, rows: pd.DataFrame, root: Path, box_shift: float, preprocess_summary: Path | None,
                 store: Path | None, resident: str, device: torch.device, threads: int):
    """The model inputs of ``rows``: with box views (``box_shift`` > 0) their 9 boxes cut from the
    source films with the settings of ``preprocess_summary`` (N, 9, S, S); else from ``store`` (kept
    where ``resident`` says) or the PNGs under ``root``."""
    if box_shift > 0:
        if preprocess_summary is None:
            raise ValueError("box views (--box-shift) need the model's --preprocess-summary (its settings)")
        made = Preprocessing.of(read_json(preprocess_summary)["settings"])
        log.info("box views: each film's %s box and 8 moved by %.4f of its long side, from the source films",
                 made.region, box_shift)
        return view_tensor(rows, made, usable_threads(threads), box_shift)
    if store is None:
        return load_images(rows, root, threads)
    return hold(open_rows(store, index, rows), resident, device)[0]  # predict moves each batch


def run(model_path: Path, index_path: Path, split_path: Path, predictions_path: Path, metrics_path: Path,
        settings: Settings, device_name: str = "auto", threads: int = 1, store: Path | None = None,
        resident: str = "auto", preprocess_summary: Path | None = None) -> dict:
    """Predict the validation and test splits, correct, add intervals, score; writes the predictions
    (parquet) and metrics (JSON) and returns the metrics. Box views (``settings.box_shift``) are cut
    from the films ``index`` lists with the settings of ``preprocess_summary`` (the model's images')."""
    device = resolve_device(device_name)
    torch.set_num_threads(usable_threads(threads))
    keep_freed_memory()
    model, meta = load_model(model_path, device)
    spec = meta["spec"]
    index = read_table(index_path, "snakemake --forcerun preprocess")
    split = read_split(split_path, index)
    rows = subset_table(index, split)
    images = model_inputs(index, rows, index_path.parent, settings.box_shift, preprocess_summary, store, resident,
                          device, threads)
    male = torch.tensor(rows["male"].to_numpy(np.float32))
    hflip = bool(spec.get("augment", {}).get("hflip", False))
    args = (model, images, male, spec["input_size"], meta["target_mean"], meta["target_std"], device)
    pred = rows[["id", "subset", "boneage", "male"]].copy()
    pred["pred_raw"] = predict(*args)
    column = "pred_raw"
    if settings.tta:
        pred["pred_tta"] = predict(*args, tta=True, hflip=hflip)
        column = "pred_tta"
    extra = {"variant": meta["variant"], "tta": settings.tta, "box_shift": settings.box_shift,
             "bias_correction": None}
    if settings.bias_correction:
        pred["pred"], extra["bias_correction"] = apply_bias_correction(pred, column)
    else:
        pred["pred"] = pred[column]
    extra["interval"] = add_interval(pred, settings.interval_level)
    test = (pred["subset"] == "test").to_numpy()
    test_images, test_male = subset(images, test), male[test]

    def final(rows: slice, x: torch.Tensor):
        months = predict(model, x, test_male[rows], spec["input_size"], meta["target_mean"], meta["target_std"],
                         device, tta=settings.tta, hflip=hflip)
        return corrected(months, extra["bias_correction"])

    for k, months in enumerate(estimates(final, test_images, settings.retakes), start=1):
        pred[f"{RETAKE}{k}"] = np.nan
        pred.loc[test, f"{RETAKE}{k}"] = months
    extra["stability"] = summary_of(pred, settings.retakes.seed)
    write_table(pred, predictions_path)
    metrics = score(pred, train_mean(index, split), settings.stage_thresholds, extra, settings.bootstrap)
    write_json(metrics_path, metrics)
    scored, stable = metrics["test"], metrics["stability"]
    log.info("%s test: MAE %.2f months (95 %% CI %s; raw %.2f, baseline %.2f), R2 %.3f", meta["variant"],
             scored["mae"], ci_text(scored["ci95"], "mae", 2), scored["mae_raw"], scored["baseline_mae"], scored["r2"])
    if stable["n"]:
        log.info("test-retest over %d retakes: SD median %.2f, 95th percentile %.2f months", stable["views"],
                 stable["sd_median_months"], stable["sd_p95_months"])
    return metrics


def write_card(card_path: Path, model_path: Path, metrics: dict, index_path: Path, split_path: Path,
               dataset_json: Path, preprocess_json: Path, train_summary: Path) -> None:
    """The model card (``provenance.model_card``) of the evaluated model."""
    meta = model_meta(model_path)
    card = model_card(
        meta["variant"], meta, read_json(preprocess_json), read_json(dataset_json),
        sha256_file(split_path), sha256_file(index_path),
        {k: metrics[k] for k in ("val", "test", "tta", "box_shift", "bias_correction", "interval") if k in metrics},
        read_json(train_summary))
    write_json(card_path, card)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--index", required=True)
    parser.add_argument("--split", required=True)
    parser.add_argument("--predictions", required=True, help="predictions.parquet to write")
    parser.add_argument("--metrics", required=True, help="metrics.json to write")
    parser.add_argument("--model-card", required=True, help="model_card.json to write")
    parser.add_argument("--dataset", required=True, help="dataset.json (for the model card)")
    parser.add_argument("--preprocess-summary", required=True, help="preprocess_summary.json (model card)")
    parser.add_argument("--train-summary", required=True, help="train_summary.json (model card)")
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--bias-correction", action="store_true")
    parser.add_argument("--stage-thresholds", type=float, nargs=2, required=True,
                        metavar=("ADOLESCENT", "ADULT"), help="stage boundaries in months")
    parser.add_argument("--interval-level", type=float, required=True,
                        help="coverage of the conformal prediction interval fitted on validation")
    parser.add_argument("--box-shift", type=float, default=0.0,
                        help="box views: each estimate the mean over the hand box and 8 copies moved by this share "
                             "of its long side (at least 1 px); 0 = the box alone (default)")
    Bootstrap.add_arguments(parser)
    Retakes.add_arguments(parser)
    parser.add_argument("--store", default=None, help="the image store (images.u8 of preprocess); default: read the PNGs")
    parser.add_argument("--resident", default="auto", choices=RESIDENT,
                        help="host: the validation and test images in memory; disk: read per batch (needs --store)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        if not 0 <= args.box_shift <= MAX_BOX_SHIFT:
            raise ValueError(f"--box-shift {args.box_shift}: must be 0 (off) to {MAX_BOX_SHIFT} of the box's long side")
        settings = Settings(args.tta, args.bias_correction, tuple(args.stage_thresholds), args.interval_level,
                            Bootstrap.from_args(args), Retakes.from_args(args), args.box_shift)
        metrics = run(Path(args.model), Path(args.index), Path(args.split), Path(args.predictions), Path(args.metrics),
                      settings, args.device, args.threads, Path(args.store) if args.store else None, args.resident,
                      Path(args.preprocess_summary))
        write_card(Path(args.model_card), Path(args.model), metrics, Path(args.index), Path(args.split),
                   Path(args.dataset), Path(args.preprocess_summary), Path(args.train_summary))
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        log.error("%s", exc)
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
