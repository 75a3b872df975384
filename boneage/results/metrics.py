"""Metrics of bone age predictions: errors in months, per sex and age bin, developmental stages.

Developmental stages are bone-age bands (``child`` < first threshold <= ``adolescent`` < second
threshold <= ``adult``); a prediction's stage is compared with the reference's stage.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .uncertainty import Bootstrap, intervals

STAGES = ("child", "adolescent", "adult")


def stage_of(months, thresholds: tuple[float, float]) -> np.ndarray:
    """Stage name for each bone age: child < t0 <= adolescent < t1 <= adult."""
    months = np.asarray(months, dtype=float)
    t0, t1 = thresholds
    return np.where(months < t0, STAGES[0], np.where(months < t1, STAGES[1], STAGES[2]))


def regression(true, pred) -> dict:
    true, pred = np.asarray(true, float), np.asarray(pred, float)
    err = pred - true
    n = len(true)
    if n == 0:
        return {"n": 0}
    ss_res = float(np.sum(err**2))
    ss_tot = float(np.sum((true - true.mean()) ** 2))
    return {
        "n": n,
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "r2": 1 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        "median_ae": float(np.median(np.abs(err))),
        "bias": float(np.mean(err)),
        "within_6": float(np.mean(np.abs(err) <= 6)),
        "within_12": float(np.mean(np.abs(err) <= 12)),
    }


def confusion(true_stage, pred_stage) -> pd.DataFrame:
    """Counts with the reference stage as rows and the predicted stage as columns."""
    table = pd.crosstab(pd.Categorical(true_stage, STAGES), pd.Categorical(pred_stage, STAGES),
                        dropna=False)
    table.index.name, table.columns.name = "true", "predicted"
    return table.reindex(index=list(STAGES), columns=list(STAGES), fill_value=0)


def stage_metrics(true, pred, thresholds) -> dict:
    t, p = stage_of(true, thresholds), stage_of(pred, thresholds)
    cm = confusion(t, p)
    out = {"accuracy": float(np.mean(t == p)) if len(t) else float("nan"), "per_class": {}}
    for s in STAGES:
        tp = int(cm.loc[s, s])
        predicted, actual = int(cm[s].sum()), int(cm.loc[s].sum())
        out["per_class"][s] = {
            "precision": tp / predicted if predicted else float("nan"),
            "recall": tp / actual if actual else float("nan"),
            "support": actual,
        }
    out["confusion"] = cm.values.tolist()
    return out


def by_age_bin(df: pd.DataFrame, bin_months: float, pred_col: str = "pred") -> pd.DataFrame:
    """MAE, bias and count per reference bone-age bin and sex."""
    d = df.assign(err=df[pred_col] - df["boneage"],
                  age_bin=(np.floor(df["boneage"] / bin_months) * bin_months).astype(int),
                  sex=np.where(df["male"], "M", "F"))
    g = d.groupby(["age_bin", "sex"])
    return pd.DataFrame({
        "n": g.size(),
        "mae": g["err"].apply(lambda e: e.abs().mean()),
        "bias": g["err"].mean(),
    }).reset_index()


def summarise(df: pd.DataFrame, thresholds, pred_col: str = "pred") -> dict:
    """All metrics of one prediction table (columns boneage, male, and ``pred_col``)."""
    out = regression(df["boneage"], df[pred_col])
    for sex, mask in (("male", df["male"].astype(bool)), ("female", ~df["male"].astype(bool))):
        sub = df[mask]
        out[f"mae_{sex}"] = float(np.mean(np.abs(sub[pred_col] - sub["boneage"]))) if len(sub) else float("nan")
        out[f"n_{sex}"] = int(len(sub))
    out["stage"] = stage_metrics(df["boneage"], df[pred_col], thresholds)
    return out


def fit_bias_correction(true, pred) -> tuple[float, float]:
    """Least-squares ``true ~ a * pred + b`` (on validation data), against regression to the mean."""
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    if len(pred) < 3 or np.std(pred) == 0:
        return 1.0, 0.0
    a, b = np.polyfit(pred, true, 1)
    return float(a), float(b)


def corrected(pred, correction: dict | None):
    """Predictions after a fitted bias correction (``slope``, ``intercept``); as they are without one."""
    return pred if not correction else pred * correction["slope"] + correction["intercept"]


def apply_bias_correction(pred: pd.DataFrame, column: str) -> tuple[pd.Series, dict]:
    """Fit on the validation rows, apply to all rows."""
    val = pred["subset"] == "val"
    a, b = fit_bias_correction(pred.loc[val, "boneage"], pred.loc[val, column])
    correction = {"slope": a, "intercept": b, "fitted_on": "val", "n": int(val.sum())}
    return corrected(pred[column], correction), correction


def add_scoring_arguments(parser) -> None:
    """The options of every stage that joins scored predictions into a model (crossval, seeds,
    ensemble): its two output files, the stage thresholds, the interval level and the bootstrap."""
    parser.add_argument("--predictions", required=True, help="predictions.parquet to write")
    parser.add_argument("--metrics", required=True, help="metrics.json to write")
    parser.add_argument("--stage-thresholds", type=float, nargs=2, required=True)
    parser.add_argument("--interval-level", type=float, required=True)
    Bootstrap.add_arguments(parser)


def confidence(true, pred, male, thresholds, bootstrap: Bootstrap) -> dict:
    """95 % bootstrap intervals of the figures of :func:`summarise` (``uncertainty.intervals``)."""
    stage_ok = stage_of(true, thresholds) == stage_of(pred, thresholds)
    return intervals(true, pred, male, stage_ok, bootstrap)


def score(pred: pd.DataFrame, baseline_months: float, thresholds, extra: dict | None = None,
          bootstrap: Bootstrap = Bootstrap()) -> dict:
    """Metrics per subset for the final ``pred`` (with their 95 % intervals, ``ci95``) and, for
    reference, ``pred_raw``."""
    out = {"baseline_train_mean_months": baseline_months, **(extra or {})}
    for subset, rows in pred.groupby("subset"):
        out[subset] = summarise(rows, thresholds, "pred")
        out[subset]["ci95"] = confidence(rows["boneage"], rows["pred"], rows["male"].astype(float), thresholds,
                                         bootstrap)
        out[subset]["baseline_mae"] = float(np.mean(np.abs(rows["boneage"] - baseline_months)))
        if "pred_raw" in rows:
            out[subset]["mae_raw"] = float(np.mean(np.abs(rows["pred_raw"] - rows["boneage"])))
    return out
