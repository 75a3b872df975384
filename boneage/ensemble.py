"""Stage 6, ensemble: a weighted mean of several variants' final predictions.

Members are variants or a variant's fold ensemble (``<variant>_folds``, stage crossval). Weights: ``equal``, ``inverse_val_mae`` (each variant by 1 / its validation MAE, normalised), or
``fit`` (non-negative least squares on the validation split, normalised to sum to one). Weights are
always chosen on validation data; the test split is only scored. Optionally a second linear bias
correction is fitted on the validation predictions of the ensemble.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .files import read_json, run_main, setup_logging, write_json, write_table
from .results.combine import WEIGHTINGS, combine
from .results.intervals import add_interval
from .results.metrics import add_scoring_arguments, apply_bias_correction, corrected, score
from .results.stability import columns as retake_columns
from .results.stability import seed_of, summary_of
from .results.uncertainty import Bootstrap

log = logging.getLogger("boneage.ensemble")

def run(prediction_files: dict[str, Path], metrics_files: dict[str, Path], predictions_path: Path, metrics_path: Path,
        weighting: str, bias_correction: bool, thresholds, interval_level: float,
        bootstrap: Bootstrap = Bootstrap()) -> dict:
    tables = {name: pd.read_parquet(path) for name, path in prediction_files.items()}
    merged, weights = combine(tables, weighting)
    extra = {"variant": "ensemble", "members": list(tables), "weighting": weighting, "weights": weights,
             "bias_correction": None}
    if bias_correction:
        merged["pred"], extra["bias_correction"] = apply_bias_correction(merged, "pred_raw")
    else:
        merged["pred"] = merged["pred_raw"]
    for column in retake_columns(merged):  # the retakes, corrected as the films
        merged[column] = corrected(merged[column], extra["bias_correction"])
    extra["interval"] = add_interval(merged, interval_level)
    first = read_json(next(iter(metrics_files.values())))
    extra["stability"] = summary_of(merged, seed_of(first))
    baseline = first["baseline_train_mean_months"]
    metrics = score(merged, baseline, thresholds, extra, bootstrap)
    errors = merged[list(tables)].to_numpy(float) - merged["boneage"].to_numpy(float)[:, None]
    corr = np.corrcoef(errors.T) if len(tables) > 1 else np.ones((1, 1))
    metrics["error_correlation"] = {"members": list(tables), "matrix": corr.round(4).tolist()}
    write_table(merged.drop(columns=list(tables)), predictions_path)
    write_json(metrics_path, metrics)
    log.info("ensemble of %s (%s weights %s): test MAE %.2f months", list(tables), weighting,
             {k: round(v, 3) for k, v in weights.items()}, metrics["test"]["mae"])
    return metrics


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--member", nargs=3, action="append", required=True,
                        metavar=("NAME", "PREDICTIONS", "METRICS"), help="one per ensemble member")
    add_scoring_arguments(parser)
    parser.add_argument("--weighting", choices=WEIGHTINGS, required=True)
    parser.add_argument("--bias-correction", action="store_true")
    args = parser.parse_args(argv)
    setup_logging()
    run({m[0]: Path(m[1]) for m in args.member}, {m[0]: Path(m[2]) for m in args.member},
        Path(args.predictions), Path(args.metrics), args.weighting, args.bias_correction, tuple(args.stage_thresholds),
        args.interval_level, Bootstrap.from_args(args))


if __name__ == "__main__":
    run_main(main)
