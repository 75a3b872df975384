"""The report's tables, as data frames: metrics, stages, Grad-CAM checks, external test, stage times;
and their Markdown form."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..config import SEEDS_SUFFIX
from .metrics import STAGES
from .uncertainty import Bootstrap, paired_difference, verdict

CI_FIGURES = {"MAE": "mae", "RMSE": "rmse", "R2": "r2", "MAE male": "mae_male", "MAE female": "mae_female",
              "stage accuracy": "stage_accuracy"}  # report column -> key of a subset's ci95


def external_table(summaries: list[dict], metrics: dict[str, dict]) -> pd.DataFrame:
    """Metrics of each bundle on the external test set, beside its internal test MAE."""
    rows = []
    for s in summaries:
        got = s.get("labelled", {})
        rows.append({"model": s["variant"], "files": s["files"], "failed": s["failed"], "n scored": got.get("n", 0),
                     **_with_ci({"MAE": got.get("mae"), "RMSE": got.get("rmse"), "R2": got.get("r2")},
                                got.get("ci95")),
                     "interval coverage": got.get("interval_coverage"),
                     "internal test MAE": metrics.get(s["variant"], {}).get("test", {}).get("mae")})
    return pd.DataFrame(rows, columns=["model", "files", "failed", "n scored", "MAE", "MAE 95 % CI", "RMSE",
                                       "RMSE 95 % CI", "R2", "R2 95 % CI", "interval coverage", "internal test MAE"])



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



def ci_text(ci: dict | None, key: str, digits: int | None = None) -> str:
    """A 95 % interval as text, ``[low, high]``, with ``digits`` decimals (default: those the report's
    tables give a figure of that size)."""
    got = (ci or {}).get(key)
    if not got:
        return ""
    if digits is None:
        digits = 3 if max(abs(v) for v in got) < 10 else 2
    return f"[{got[0]:.{digits}f}, {got[1]:.{digits}f}]"


def _with_ci(figures: dict, ci: dict | None) -> dict:
    """``figures`` with each figure's 95 % interval in a column beside it."""
    out = {}
    for column, value in figures.items():
        out[column] = value
        if column in CI_FIGURES:
            out[f"{column} 95 % CI"] = ci_text(ci, CI_FIGURES[column])
    return out


def metrics_table(metrics: dict[str, dict], subset: str) -> pd.DataFrame:
    rows = []
    for name, m in metrics.items():
        s = m[subset]
        rows.append({"model": name, "n": s["n"], **_with_ci({
            "MAE": s["mae"], "RMSE": s["rmse"], "R2": s["r2"], "median AE": s["median_ae"], "bias": s["bias"],
            "MAE male": s["mae_male"], "MAE female": s["mae_female"], "within 6 mo": s["within_6"],
            "within 12 mo": s["within_12"], "stage accuracy": s["stage"]["accuracy"]}, s.get("ci95")),
            "MAE without TTA/correction": s.get("mae_raw"), "baseline MAE (train mean)": s["baseline_mae"],
            **_interval_columns(m.get("interval"), subset),
        })
    return pd.DataFrame(rows)


def seeds_table(metrics: dict[str, dict]) -> pd.DataFrame:
    """Training noise: each seed model of a variant (config repeats), the mean and SD across the
    seeds, and the seed ensemble (its test MAE with the 95 % interval). Formatted text."""
    rows = []
    for name, m in metrics.items():
        if "seeds" not in m:
            continue
        for r in m["seeds"]:
            rows.append({"model": name, "seed": str(r["seed"]), "val MAE": f"{r['val_mae']:.2f}",
                         "test MAE": f"{r['test_mae']:.2f}", "test RMSE": f"{r['test_rmse']:.2f}",
                         "test R2": f"{r['test_r2']:.3f}"})
        sp = m["seed_spread"]
        rows.append({"model": name, "seed": f"mean ± SD of {sp['n_seeds']} seeds", "val MAE": _mean_sd(sp, "val_mae"),
                     "test MAE": _mean_sd(sp, "test_mae"), "test RMSE": _mean_sd(sp, "test_rmse"),
                     "test R2": _mean_sd(sp, "test_r2", 3)})
        rows.append({"model": name, "seed": "seed ensemble (mean of the seeds' predictions)",
                     "val MAE": f"{m['val']['mae']:.2f}",
                     "test MAE": f"{m['test']['mae']:.2f} {ci_text(m['test'].get('ci95'), 'mae', 2)}",
                     "test RMSE": f"{m['test']['rmse']:.2f}", "test R2": f"{m['test']['r2']:.3f}"})
    return pd.DataFrame(rows, columns=["model", "seed", "val MAE", "test MAE", "test RMSE", "test R2"])


def stability_table(metrics: dict[str, dict]) -> pd.DataFrame:
    """Test-retest stability per model (metrics.json ``stability``, boneage/results/stability.py): the spread
    of each test film's estimate over its retakes, median and 95th percentile over the films."""
    rows = [{"model": name, "films": s["n"], "retakes": s["views"], "SD median": s["sd_median_months"],
             "SD 95th pct": s["sd_p95_months"], "max-min median": s["range_median_months"],
             "max-min 95th pct": s["range_p95_months"]}
            for name, m in metrics.items() if (s := m.get("stability")) and s.get("n")]
    return pd.DataFrame(rows, columns=["model", "films", "retakes", "SD median", "SD 95th pct", "max-min median",
                                       "max-min 95th pct"])


def _mean_sd(spread: dict, key: str, digits: int = 2) -> str:
    mean, sd = spread[f"{key}_mean"], spread[f"{key}_sd"]
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if sd is not None else f"{mean:.{digits}f}"


def abs_errors(preds: dict[str, pd.DataFrame]) -> dict[str, dict[str, pd.Series]]:
    """Absolute errors per subset and model, indexed by image id; ``preds``: model -> its predictions
    (columns id, subset, boneage, pred). The input of :func:`comparisons_table`."""
    out: dict[str, dict[str, pd.Series]] = {}
    for name, p in preds.items():
        for subset, rows in p.groupby("subset"):
            out.setdefault(subset, {})[name] = (rows["pred"] - rows["boneage"]).abs().set_axis(rows["id"].astype(str))
    return out


def comparisons_table(errors: dict[str, dict[str, pd.Series]], bootstrap: Bootstrap) -> pd.DataFrame:
    """Every two models scored on the same images, per subset: the difference of their MAE (a - b)
    with its 95 % paired-bootstrap interval, and in words whether these images can tell them apart.
    ``errors``: subset -> model -> absolute errors indexed by image id."""
    rows = []
    for subset, by_model in errors.items():
        names = list(by_model)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                ids = by_model[a].index.intersection(by_model[b].index).sort_values()
                if not len(ids):
                    continue
                ea, eb = by_model[a].loc[ids].to_numpy(float), by_model[b].loc[ids].to_numpy(float)
                diff, low, high = paired_difference(ea, eb, bootstrap)
                rows.append({"subset": subset, "model_a": a, "model_b": b, "n": len(ids), "mae_a": ea.mean(),
                             "mae_b": eb.mean(), "mae_diff": diff, "ci_low": low, "ci_high": high,
                             "verdict": verdict(a, b, low, high)})
    return pd.DataFrame(rows, columns=["subset", "model_a", "model_b", "n", "mae_a", "mae_b", "mae_diff", "ci_low",
                                       "ci_high", "verdict"])



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


Z95 = 1.959964  # two-sided 95 % quantile of the normal distribution


def training_sd(metrics: dict[str, dict], name: str) -> float | None:
    """SD of a model's test MAE across seeds (config repeats), where measured: a variant's from its
    seed ensemble's spread; for the seed ensemble itself that SD / sqrt(seeds), the SD of a mean."""
    own = metrics[name].get("seed_spread")
    if own and own["test_mae_sd"] is not None:
        return own["test_mae_sd"] / np.sqrt(own["n_seeds"])
    spread = metrics.get(f"{name}{SEEDS_SUFFIX}", {}).get("seed_spread")
    return spread["test_mae_sd"] if spread else None


def ranking(metrics: dict[str, dict], comparisons: pd.DataFrame) -> dict:
    """The model with the lowest test MAE and those it cannot be told apart from: by the images
    (``sampling``: the paired 95 % interval of the difference holds 0) or by training noise
    (``training``: the difference is within 1.96 x sqrt(SD_a^2 + SD_b^2) of the seeds' test MAE);
    ``unmeasured``: models separated from it by the images, but whose training noise is not known."""
    best = min(metrics, key=lambda n: metrics[n]["test"]["mae"])
    test = comparisons[comparisons["subset"] == "test"]
    out = {"best": best, "sampling": [], "training": [], "unmeasured": []}
    for name in metrics:
        pair = test[((test["model_a"] == best) & (test["model_b"] == name)) |
                    ((test["model_a"] == name) & (test["model_b"] == best))]
        if name == best or pair.empty:
            continue
        row = pair.iloc[0]
        sds = training_sd(metrics, best), training_sd(metrics, name)
        if row["ci_low"] <= 0 <= row["ci_high"]:
            out["sampling"].append(name)
        elif None in sds:
            out["unmeasured"].append(name)
        elif abs(row["mae_diff"]) <= Z95 * np.hypot(*sds):
            out["training"].append(name)
    return out
