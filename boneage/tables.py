"""The report's tables, as data frames: metrics, stages, Grad-CAM checks, external test, stage times;
and their Markdown form."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import STAGES


def external_table(summaries: list[dict], metrics: dict[str, dict]) -> pd.DataFrame:
    """Metrics of each bundle on the external test set, beside its internal test MAE."""
    rows = []
    for s in summaries:
        got = s.get("labelled", {})
        rows.append({"model": s["variant"], "files": s["files"], "failed": s["failed"], "n scored": got.get("n", 0),
                     "MAE": got.get("mae"), "RMSE": got.get("rmse"), "R2": got.get("r2"),
                     "interval coverage": got.get("interval_coverage"),
                     "internal test MAE": metrics.get(s["variant"], {}).get("test", {}).get("mae")})
    return pd.DataFrame(rows, columns=["model", "files", "failed", "n scored", "MAE", "RMSE", "R2",
                                       "interval coverage", "internal test MAE"])



def gradcam_table(cams: dict[str, dict]) -> pd.DataFrame:
    """One row per variant: layer, sanity check and the maps' share on the hand, with flags."""
    rows = []
    for name, c in cams.items():
        s, h = c["sanity"], c["hand"]
        flags = ([] if s["trustworthy"] else ["maps barely depend on the weights"]) + \
            (["looks at the background"] if h["looks_at_background"] else [])
        rows.append({
            "model": name, "layer": f"{c['layer'].removeprefix('backbone.')} ({c['cells'][0]}x{c['cells'][1]})",
            "rank corr. with random weights": s["spearman_mean"], "sanity threshold": s["threshold"],
            "map mass on the hand": h["mass_share_mean"], "hand share of image": h["area_share_mean"],
            "flag": "; ".join(flags) or "none",
        })
    return pd.DataFrame(rows, columns=["model", "layer", "rank corr. with random weights", "sanity threshold",
                                       "map mass on the hand", "hand share of image", "flag"])



def metrics_table(metrics: dict[str, dict], subset: str) -> pd.DataFrame:
    rows = []
    for name, m in metrics.items():
        s = m[subset]
        rows.append({
            "model": name, "n": s["n"], "MAE": s["mae"], "RMSE": s["rmse"], "R2": s["r2"],
            "median AE": s["median_ae"], "bias": s["bias"], "MAE male": s["mae_male"],
            "MAE female": s["mae_female"], "within 6 mo": s["within_6"], "within 12 mo": s["within_12"],
            "stage accuracy": s["stage"]["accuracy"], "MAE without TTA/correction": s.get("mae_raw"),
            "baseline MAE (train mean)": s["baseline_mae"],
            **_interval_columns(m.get("interval"), subset),
        })
    return pd.DataFrame(rows)



def _interval_columns(interval: dict | None, subset: str) -> dict:
    """Coverage and width of the conformal interval on ``subset`` (empty where not fitted)."""
    if not interval:
        return {}
    level = f"{100 * interval['level']:g} %"
    got = interval.get(subset) or {}
    return {f"{level} interval coverage": got.get("coverage"),
            f"{level} interval width (mo)": got.get("mean_width_months")}



def folds_table(metrics: dict[str, dict]) -> pd.DataFrame:
    """Cross-validation: each fold model on its held-out fold and on the test split, then the fold
    ensemble (out-of-fold on the whole train+val pool; the folds' mean on test)."""
    rows = []
    for name, m in metrics.items():
        if "folds" not in m:
            continue
        for f in m["folds"]:
            rows.append({"model": name, "fold": str(f["fold"]), "held-out n": f["val_n"],
                         "held-out MAE": f["val_mae"], "held-out R2": f["val_r2"], "test MAE": f["test_mae"],
                         "test RMSE": f["test_rmse"], "test R2": f["test_r2"]})
        rows.append({"model": name, "fold": "all (out-of-fold; test: mean of the folds)",
                     "held-out n": m["val"]["n"], "held-out MAE": m["val"]["mae"], "held-out R2": m["val"]["r2"],
                     "test MAE": m["test"]["mae"], "test RMSE": m["test"]["rmse"], "test R2": m["test"]["r2"]})
    return pd.DataFrame(rows, columns=["model", "fold", "held-out n", "held-out MAE", "held-out R2", "test MAE",
                                       "test RMSE", "test R2"])


def stage_table(metrics: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for name, m in metrics.items():
        st = m["test"]["stage"]
        for s in STAGES:
            c = st["per_class"][s]
            rows.append({"model": name, "stage": s, "precision": c["precision"], "recall": c["recall"],
                         "support": c["support"]})
    return pd.DataFrame(rows)



def markdown(df: pd.DataFrame) -> str:
    df = df.copy()
    for c in df.columns:
        if df[c].dtype.kind == "f":
            df[c] = df[c].map(lambda v: "" if pd.isna(v) else f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}")
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "| " + " | ".join("---" for _ in df.columns) + " |"
    body = ["| " + " | ".join(map(str, r)) + " |" for r in df.itertuples(index=False)]
    return "\n".join([header, sep, *body]) + "\n"



def stage_times(benchmarks: list[Path]) -> pd.DataFrame:
    """Wall time and peak memory of each job from its Snakemake benchmark file
    (``results/benchmarks/<rule>/<name>.tsv``; the stage is named ``<rule>/<name>``)."""
    rows = []
    for f in sorted(benchmarks):
        b = pd.read_csv(f, sep="\t")
        parts = f.with_suffix("").parts  # <rule>/<name> or, for a fold model, <rule>/<variant>/fold<k>
        top = max((k for k, part in enumerate(parts) if part == "benchmarks"), default=len(parts) - 3)
        rows.append({"stage": "/".join(parts[top + 1:]), "seconds": float(b["s"].iloc[-1]),
                     "max RSS (MB)": float(b["max_rss"].iloc[-1]) if "max_rss" in b else np.nan})
    return pd.DataFrame(rows, columns=["stage", "seconds", "max RSS (MB)"])
