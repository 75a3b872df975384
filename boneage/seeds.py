"""Stage 5c, seeds: one variant trained with several seeds (config ``repeats``), as training noise
and as a seed ensemble.

Each seed model was trained on the same split with the variant's settings and its own seed (train
seed + k) and evaluated like the variant (its own TTA and validation-fitted correction). What the
seeds disagree on is training noise: on a CPU, a change of arithmetic (another instruction set,
another thread count) moves a model as much as another seed does. This stage writes, for the
variant ``<variant>_seeds``:

- ``metrics.json``: ``seeds``, each seed model's figures, and ``seed_spread``: mean and SD across the
  seeds of the validation and test MAE, RMSE and R2; plus the usual metrics of the seed ensemble;
- ``predictions.parquet``: the seed ensemble, the mean of the seed models' final predictions on the
  validation and test images (with a conformal interval fitted on its validation residuals).

The result has the layout of a variant's evaluation: it is a model in the report and has a bundle.
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

log = logging.getLogger("boneage.seeds")

KEYS = ("mae", "rmse", "r2")


class SeedsError(ValueError):
    pass


def combine_seeds(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """The mean of the seed models' ``pred_raw``, ``pred`` and retake estimates per image; all scored the
    same images."""
    tables = [t.sort_values(["subset", "id"]).reset_index(drop=True) for t in tables]
    for t in tables[1:]:
        if not t[["id", "subset"]].equals(tables[0][["id", "subset"]]):
            raise SeedsError("the seed models were evaluated on different images; re-run evaluate")
    out = tables[0][["id", "subset", "boneage", "male"]].copy()
    for column in ("pred_raw", "pred"):
        out[column] = np.mean([t[column].to_numpy(float) for t in tables], axis=0)
    return out.assign(**retakes_mean(tables))


def spread(seeds: list[int], metrics: list[dict]) -> tuple[list[dict], dict]:
    """Each seed model's figures, and their mean and SD (ddof 1) across the seeds."""
    rows = [{"seed": s, **{f"{subset}_{k}": m[subset][k] for subset in ("val", "test") for k in ("n", *KEYS)}}
            for s, m in zip(seeds, metrics)]
    summary = {"n_seeds": len(rows)}
    for subset in ("val", "test"):
        for k in KEYS:
            values = np.array([r[f"{subset}_{k}"] for r in rows], float)
            summary[f"{subset}_{k}_mean"] = float(values.mean())
            summary[f"{subset}_{k}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else None
    return rows, summary


def run(variant: str, members: list[tuple[int, Path, Path]], predictions_path: Path, metrics_path: Path,
        thresholds, interval_level: float, bootstrap: Bootstrap = Bootstrap()) -> dict:
    """``members``: (seed, predictions.parquet, metrics.json) of each seed model."""
    pred = combine_seeds([pd.read_parquet(p) for _, p, _ in members])
    member_metrics = [read_json(m) for _, _, m in members]
    rows, summary = spread([s for s, _, _ in members], member_metrics)
    extra = {"variant": f"{variant}_seeds", "seeds": rows, "seed_spread": summary,
             "test_is": f"mean of the {len(members)} seed models' predictions"}
    extra["interval"] = add_interval(pred, interval_level)
    extra["stability"] = summary_of(pred, seed_of(member_metrics[0]))
    metrics = score(pred, member_metrics[0]["baseline_train_mean_months"], thresholds, extra, bootstrap)
    write_table(pred, predictions_path)
    write_json(metrics_path, metrics)
    log.info("%s, %d seeds: test MAE %.2f +- %.2f (mean +- SD of the seeds); seed ensemble %.2f", variant,
             len(members), summary["test_mae_mean"], summary["test_mae_sd"] or 0.0, metrics["test"]["mae"])
    return metrics


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True, help="the variant whose seed models these are")
    parser.add_argument("--member", nargs=3, action="append", required=True,
                        metavar=("SEED", "PREDICTIONS", "METRICS"), help="one per seed model")
    add_scoring_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        run(args.variant, [(int(s), Path(p), Path(m)) for s, p, m in args.member], Path(args.predictions),
            Path(args.metrics), tuple(args.stage_thresholds), args.interval_level, Bootstrap.from_args(args))
    except SeedsError as exc:
        log.error("%s", exc)
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
