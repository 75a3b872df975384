"""Stage 5b, cross-validation: one variant's K fold models as out-of-fold predictions and a fold ensemble.

Each fold model was trained on the other folds of the train+val pool and evaluated (stage evaluate,
with its own TTA and validation-fitted bias correction) on its held-out fold, its ``val``, and on the
test split. This stage joins them: the ``val`` rows of the result are the out-of-fold predictions,
every train+val image predicted once by the one model that never saw it (column ``fold``); the
``test`` rows are the mean of the K models' predictions on the untouched test split. The conformal
interval is fitted on the out-of-fold residuals. ``metrics.json`` has the usual metrics per subset
(``val``: out-of-fold, on the whole pool) and ``folds``: each fold model's own figures.

The result has the layout of a variant's evaluation, so it can be an ensemble member
(``<variant>_folds`` in ``ensemble.variants``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .files import read_json, run_main, setup_logging, write_json, write_table
from .results.intervals import add_interval
from .results.metrics import add_scoring_arguments, score
from .results.stability import mean_of as retakes_mean
from .results.stability import seed_of, summary_of
from .results.uncertainty import Bootstrap

log = logging.getLogger("boneage.crossval")

COLUMNS = ["id", "subset", "boneage", "male", "pred_raw", "pred"]


class CrossValError(ValueError):
    pass


def combine_folds(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """Out-of-fold ``val`` rows (each fold's held-out images) and the fold-mean ``test`` rows."""
    oof = pd.concat([t.loc[t["subset"] == "val", COLUMNS].assign(fold=k) for k, t in enumerate(tables)],
                    ignore_index=True)
    twice = oof["id"][oof["id"].duplicated()].tolist()
    if twice:
        raise CrossValError(f"{len(twice)} images are held out by more than one fold, e.g. {twice[:3]}: "
                            "the fold models were not trained on one fold table; re-run split and after")
    tests = [t.loc[t["subset"] == "test"].sort_values("id").reset_index(drop=True) for t in tables]
    if any(not t["id"].equals(tests[0]["id"]) for t in tests):
        raise CrossValError("the fold models were evaluated on different test images; re-run evaluate")
    test = tests[0][["id", "subset", "boneage", "male"]].copy()
    for column in ("pred_raw", "pred"):
        test[column] = np.mean([t[column].to_numpy(float) for t in tests], axis=0)
    test = test.assign(**retakes_mean(tests), fold=-1)  # -1: every fold
    return pd.concat([oof, test], ignore_index=True)


def fold_rows(fold_metrics: list[dict]) -> list[dict]:
    """Each fold model's MAE, RMSE and R2 on its held-out fold and on the test split."""
    return [{"fold": k, **{f"{subset}_{key}": m[subset][key] for subset in ("val", "test")
                           for key in ("n", "mae", "rmse", "r2")}}
            for k, m in enumerate(fold_metrics)]


def run(variant: str, prediction_files: list[Path], metrics_files: list[Path], predictions_path: Path,
        metrics_path: Path, thresholds, interval_level: float, bootstrap: Bootstrap = Bootstrap()) -> dict:
    pred = combine_folds([pd.read_parquet(p) for p in prediction_files])
    fold_metrics = [read_json(p) for p in metrics_files]
    extra = {"variant": f"{variant}_folds", "folds": fold_rows(fold_metrics),
             "val_is": "out-of-fold predictions on the train+val pool",
             "test_is": f"mean of the {len(fold_metrics)} fold models"}
    extra["interval"] = add_interval(pred, interval_level)
    extra["stability"] = summary_of(pred, seed_of(fold_metrics[0]))
    # Each fold has its own training mean; the baseline is their mean (they differ by a fraction of a month).
    baseline = float(np.mean([m["baseline_train_mean_months"] for m in fold_metrics]))
    metrics = score(pred, baseline, thresholds, extra, bootstrap)
    write_table(pred, predictions_path)
    write_json(metrics_path, metrics)
    log.info("%s, %d folds: out-of-fold MAE %.2f months on %d images; fold-mean test MAE %.2f (folds alone: %s)",
             variant, len(fold_metrics), metrics["val"]["mae"], metrics["val"]["n"], metrics["test"]["mae"],
             ", ".join(f"{m['test']['mae']:.2f}" for m in fold_metrics))
    return metrics


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True, help="the variant whose fold models these are")
    parser.add_argument("--fold", nargs=2, action="append", required=True, metavar=("PREDICTIONS", "METRICS"),
                        help="one per fold, in fold order")
    add_scoring_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        run(args.variant, [Path(f[0]) for f in args.fold], [Path(f[1]) for f in args.fold], Path(args.predictions),
            Path(args.metrics), tuple(args.stage_thresholds), args.interval_level, Bootstrap.from_args(args))
    except CrossValError as exc:
        log.error("%s", exc)
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
