"""Stage 7, report: metrics tables, error plots and a standalone HTML page.

Reads what the earlier stages wrote (metrics, predictions, training histories, Grad-CAM panels,
preprocessing QC, split, benchmarks) and writes ``index.html`` with ``figures/`` and ``tables/``
beside it, so the folder can be copied or archived as one piece. Tables are CSV and Markdown.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from .figures import grid, pyplot, save
from .files import read_json, setup_logging, write_table
from .metrics import STAGES, by_age_bin
from .provenance import git_commit, package_versions

log = logging.getLogger("boneage.report")

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


GRADCAM_FIGURES = ("", "_sanity", "_population")  # <variant><suffix>.png from the Grad-CAM stage


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


def stage_table(metrics: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for name, m in metrics.items():
        st = m["test"]["stage"]
        for s in STAGES:
            c = st["per_class"][s]
            rows.append({"model": name, "stage": s, "precision": c["precision"], "recall": c["recall"],
                         "support": c["support"]})
    return pd.DataFrame(rows)


def _test(pred: pd.DataFrame) -> pd.DataFrame:
    return pred[pred["subset"] == "test"]


def fig_comparison(metrics, out):
    plt = pyplot()
    names = list(metrics)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(names) + 2), 3.4))
    test = [metrics[n]["test"]["mae"] for n in names]
    val = [metrics[n]["val"]["mae"] for n in names]
    x = np.arange(len(names))
    ax.bar(x - 0.2, val, 0.4, label="validation", color="#9ecae1")
    ax.bar(x + 0.2, test, 0.4, label="test", color="#3182bd")
    base = next(iter(metrics.values()))["test"]["baseline_mae"]
    ax.axhline(base, color="#d62728", ls="--", lw=1, label=f"predict training mean ({base:.1f})")
    for xi, v in zip(x, test):
        ax.text(xi + 0.2, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel("mean absolute error (months)")
    ax.set_title("Variants compared (lower is better)")
    ax.legend(fontsize=7)
    return save(fig, out)


def fig_pred_vs_true(preds, metrics, out):
    fig, axes = grid(len(preds))
    for ax, (name, p) in zip(axes, preds.items()):
        t = _test(p)
        for male, color, label in ((False, "#e377c2", "girls"), (True, "#1f77b4", "boys")):
            s = t[t["male"] == male]
            ax.scatter(s["boneage"], s["pred"], s=8, alpha=0.6, color=color, label=label)
        ax.plot([0, 240], [0, 240], color="k", lw=0.8, label="identity")
        ax.set(xlim=(0, 240), ylim=(0, 240), xlabel="reference bone age (months)",
               ylabel="predicted bone age (months)",
               title=f"{name}\nMAE {metrics[name]['test']['mae']:.1f}, R² {metrics[name]['test']['r2']:.3f}")
        ax.legend(fontsize=7, loc="upper left")
    return save(fig, out)


def fig_bland_altman(preds, out):
    fig, axes = grid(len(preds))
    for ax, (name, p) in zip(axes, preds.items()):
        t = _test(p)
        mean = (t["pred"] + t["boneage"]) / 2
        diff = t["pred"] - t["boneage"]
        bias, sd = diff.mean(), diff.std()
        ax.scatter(mean, diff, s=8, alpha=0.6, color="#555555")
        ax.axhline(bias, color="#d62728", lw=1, label=f"bias {bias:+.1f}")
        for k in (-1.96, 1.96):
            ax.axhline(bias + k * sd, color="#d62728", lw=0.8, ls="--")
        ax.set(xlabel="mean of predicted and reference (months)",
               ylabel="predicted − reference (months)",
               title=f"{name}\nlimits of agreement ±{1.96 * sd:.1f}")
        ax.legend(fontsize=7)
    return save(fig, out)


def fig_error_by_age(preds, bin_months, out):
    fig, axes = grid(len(preds), width=4.2)
    for ax, (name, p) in zip(axes, preds.items()):
        t = _test(p).assign(err=lambda d: (d["pred"] - d["boneage"]).abs(),
                            age_bin=lambda d: (np.floor(d["boneage"] / bin_months) * bin_months).astype(int))
        bins = sorted(t["age_bin"].unique())
        for offset, male, color in ((-0.2, False, "#e377c2"), (0.2, True, "#1f77b4")):
            data = [t[(t["age_bin"] == b) & (t["male"] == male)]["err"].to_numpy() for b in bins]
            pos = [i + offset for i, d in enumerate(data) if len(d)]
            data = [d for d in data if len(d)]
            if data:
                bp = ax.boxplot(data, positions=pos, widths=0.35, patch_artist=True, showfliers=False)
                for box in bp["boxes"]:
                    box.set_facecolor(color)
                    box.set_alpha(0.6)
        ax.set_xticks(range(len(bins)), [f"{b}-{b + int(bin_months)}" for b in bins], rotation=45, fontsize=7)
        ax.set(xlabel="reference bone age bin (months)", ylabel="absolute error (months)",
               title=f"{name} (pink: girls, blue: boys)")
    return save(fig, out)


def fig_training(histories, out):
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, h in histories.items():
        a1.plot(h["epoch"], h["train_loss"], label=name)
        a2.plot(h["epoch"], h["val_mae"], label=name)
    a1.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    a2.set(xlabel="epoch", ylabel="validation MAE (months)", title="Validation MAE per epoch")
    a2.set_ylim(0, max(1.0, np.nanpercentile(np.concatenate([h["val_mae"].to_numpy() for h in histories.values()]), 95) * 1.2))
    a1.set_yscale("log")
    a2.legend(fontsize=7)
    return save(fig, out)


def fig_confusion(metrics, thresholds, out):
    fig, axes = grid(len(metrics), width=3.2, height=3.0)
    for ax, (name, m) in zip(axes, metrics.items()):
        cm = np.array(m["test"]["stage"]["confusion"])
        ax.imshow(cm, cmap="Blues")
        for i in range(3):
            for j in range(3):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center",
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
        ax.set_xticks(range(3), STAGES)
        ax.set_yticks(range(3), STAGES)
        ax.grid(False)
        ax.set(xlabel="predicted stage", ylabel="reference stage",
               title=f"{name}: accuracy {m['test']['stage']['accuracy']:.2f}")
    fig.suptitle(f"Stages: child < {thresholds[0]:g} ≤ adolescent < {thresholds[1]:g} ≤ adult (months)", fontsize=8)
    return save(fig, out)


def _md(df: pd.DataFrame) -> str:
    df = df.copy()
    for c in df.columns:
        if df[c].dtype.kind == "f":
            df[c] = df[c].map(lambda v: "" if pd.isna(v) else f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}")
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "| " + " | ".join("---" for _ in df.columns) + " |"
    body = ["| " + " | ".join(map(str, r)) + " |" for r in df.itertuples(index=False)]
    return "\n".join([header, sep, *body]) + "\n"


def _html_table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}",
                      border=0, classes="t", na_rep="")


def stage_times(benchmark_dir: Path | None) -> pd.DataFrame:
    rows = []
    if benchmark_dir and benchmark_dir.is_dir():
        for f in sorted(benchmark_dir.rglob("*.tsv")):
            if f.parent.name == "report":  # a previous run's report, not this one
                continue
            b = pd.read_csv(f, sep="\t")
            rows.append({"stage": str(f.relative_to(benchmark_dir).with_suffix("")), "seconds": float(b["s"].iloc[-1]),
                         "max RSS (MB)": float(b["max_rss"].iloc[-1]) if "max_rss" in b else np.nan})
    return pd.DataFrame(rows, columns=["stage", "seconds", "max RSS (MB)"])


PAGE_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table.t{border-collapse:collapse;font-size:.85em;margin:.5em 0}table.t td,table.t th{padding:.25em .6em;border-bottom:1px solid #eee;text-align:right}
table.t th{background:#f5f5f5}table.t td:first-child,table.t th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
.headline{font-size:1.15em;background:#f3f8fc;border-left:4px solid #3182bd;padding:.6em 1em}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.8em}.note{color:#666;font-size:.85em}
"""


def run(variant_dirs: dict[str, tuple[Path, Path]], ensemble: tuple[Path, Path] | None,
        gradcams: dict[str, Path], preprocess_dir: Path, split_dir: Path, dataset_json: Path,
        out_dir: Path, config: dict, thresholds, bin_months: float, benchmark_dir: Path | None = None,
        external: list[Path] | None = None) -> None:
    """``variant_dirs``: name -> (evaluate dir, model dir); ``ensemble``: (evaluate dir, None);
    ``external``: the predict stage's summary.json of each bundle on the external test set."""
    figs, tabs = out_dir / "figures", out_dir / "tables"
    figs.mkdir(parents=True, exist_ok=True)
    tabs.mkdir(parents=True, exist_ok=True)
    metrics, preds, histories, summaries = {}, {}, {}, {}
    for name, (eval_dir, model_dir) in variant_dirs.items():
        metrics[name] = read_json(eval_dir / "metrics.json")
        preds[name] = pd.read_parquet(eval_dir / "predictions.parquet")
        histories[name] = pd.read_csv(model_dir / "history.csv")
        summaries[name] = read_json(model_dir / "train_summary.json")
    if ensemble is not None:
        metrics["ensemble"] = read_json(ensemble[0] / "metrics.json")
        preds["ensemble"] = pd.read_parquet(ensemble[0] / "predictions.parquet")

    cut = fig_comparison(metrics, figs / "variant_comparison.png")
    cut += fig_pred_vs_true(preds, metrics, figs / "pred_vs_true.png")
    cut += fig_bland_altman(preds, figs / "bland_altman.png")
    cut += fig_error_by_age(preds, bin_months, figs / "error_by_age.png")
    cut += fig_training(histories, figs / "training_curves.png")
    cut += fig_confusion(metrics, thresholds, figs / "confusion.png")
    for title in cut:
        log.warning("figure title wider than its axes even when wrapped: %r", title)
    cams = {}
    for name, folder in gradcams.items():
        cams[name] = read_json(folder / f"{name}.json")
        for suffix in GRADCAM_FIGURES:
            shutil.copyfile(folder / f"{name}{suffix}.png", figs / f"gradcam_{name}{suffix}.png")
    contact = preprocess_dir / "qc" / "contact_sheet.png"
    if contact.exists():
        shutil.copyfile(contact, figs / "contact_sheet.png")

    tables = {
        "metrics_test": metrics_table(metrics, "test"),
        "metrics_val": metrics_table(metrics, "val"),
        "stages_test": stage_table(metrics),
        "age_bins_test": pd.concat([by_age_bin(_test(p), bin_months).assign(model=n) for n, p in preds.items()],
                                   ignore_index=True)[["model", "age_bin", "sex", "n", "mae", "bias"]],
        "training": pd.DataFrame([{
            "model": n, "epochs": s["epochs_run"], "best epoch": s["best_epoch"],
            "best val MAE": s["best_val_mae"], "train images": s["train_images"], "device": s["device_name"],
            "training time (s)": s["train_s_total"], "images/s (median)": s["images_per_s_median"],
        } for n, s in summaries.items()]),
        "crop_methods": pd.read_csv(preprocess_dir / "qc" / "crop_methods.csv"),
        "rejects": pd.read_csv(preprocess_dir / "rejects.csv", dtype=str),
        "split": pd.read_csv(split_dir / "split_summary.csv"),
        "gradcam": gradcam_table(cams),
        "external_test": external_table([read_json(p) for p in external or []], metrics),
        "stage_times": stage_times(benchmark_dir),
    }
    for name, df in tables.items():
        write_table(df, tabs / f"{name}.csv")
        (tabs / f"{name}.md").write_text(_md(df))

    dataset = read_json(dataset_json)
    pre = read_json(preprocess_dir / "preprocess_summary.json")
    best = min((n for n in metrics), key=lambda n: metrics[n]["test"]["mae"])
    base = metrics[best]["test"]["baseline_mae"]
    facts = {
        "data source": dataset["source"], "label file sha256": dataset["labels_sha256"],
        "image listing sha256": dataset["image_listing_sha256"], "git commit": git_commit(),
        **{f"version {k}": v for k, v in package_versions().items()},
    }
    html_page = _page(metrics, tables, best, base, facts, config, pre, gradcams, thresholds)
    (out_dir / "index.html").write_text(html_page)
    lines = [f"Test MAE (months) on {metrics[best]['test']['n']} held-out images; always predicting the "
             f"training mean: {base:.2f}"]
    lines += [f"  {name:<28} {m['test']['mae']:6.2f}" for name, m in metrics.items()]
    times = tables["stage_times"]
    if len(times):
        lines.append(f"Time per job (s; results/benchmarks/), {times['seconds'].sum():.0f} s in all before this report:")
        lines += [f"  {row.stage:<28} {row.seconds:6.1f}" for row in times.itertuples()]
    lines.append(f"Rejected: {len(tables['rejects'])} rows, each with its reason in "
                 f"{preprocess_dir / 'rejects.csv'}")
    if pre.get("hand_doubts"):
        lines.append(f"Kept with a doubt (perhaps not a hand radiograph): {pre['hand_doubts']} images, "
                     "listed in the report")
    for row in tables["external_test"].to_dict("records"):
        scored = pd.notna(row["MAE"])
        lines.append(f"External test set, {row['model']}: " + (
            f"MAE {row['MAE']:.2f} months on {row['n scored']} films ({row['failed']} failed)" if scored
            else "nothing scored"))
    for row in tables["gradcam"].itertuples():
        if row.flag != "none":
            lines.append(f"Grad-CAM of {row.model} flagged: {row.flag}")
    lines.append(f"Report: {out_dir / 'index.html'}")
    (out_dir / "summary.txt").write_text("\n".join(lines) + "\n")
    log.info("report: %s (best test MAE %.2f months, %s)", out_dir / "index.html", metrics[best]["test"]["mae"], best)


def _figure(src: str, caption: str) -> str:
    return f'<figure><img src="{src}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def _doubts(pre: dict) -> str:
    """The preprocess summary's doubtful images (see boneage.handcheck) as a paragraph and table."""
    n = pre.get("hand_doubts", 0)
    if not n:
        return "<p>None.</p>"
    shown = pd.DataFrame(pre["hand_doubt_examples"])
    more = f" The first {len(shown)} are listed; " if n > len(shown) else " "
    return (f"<p>{n} images passed the hand check with a doubt and were trained on.{more}the "
            "<code>hand_doubt</code> column of the preprocess index has them all. Look at them; "
            "remove their rows where they are not hand radiographs.</p>" + _html_table(shown))


def _page(metrics, tables, best, base, facts, config, pre, gradcams, thresholds) -> str:
    m = metrics[best]["test"]
    rej = tables["rejects"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Bone age report</title>",
        f"<style>{PAGE_CSS}</style></head><body>",
        "<h1>Bone age assessment: evaluation report</h1>",
        f"<p class='headline'>Best on the held-out test split: <b>{html.escape(best)}</b>, "
        f"MAE <b>{m['mae']:.2f} months</b> (RMSE {m['rmse']:.2f}, R² {m['r2']:.3f}, n = {m['n']}); "
        f"always predicting the training mean gives MAE {base:.2f} months.</p>",
        "<p class='note'>Research use only; not a medical device. Data source: "
        f"{html.escape(str(facts['data source']))}.</p>",
        "<h2>Metrics on the test split</h2>", _html_table(tables["metrics_test"]),
        "<p class='note'>Months. 'MAE without TTA/correction' is the plain prediction before test-time "
        "augmentation and the validation-fitted bias correction. The interval is split-conformal, fitted "
        "on the validation residuals: coverage is the share of test images whose reference age lies "
        "inside it (empty width: too few validation images for the level). Stage accuracy uses the thresholds "
        f"child &lt; {thresholds[0]:g} ≤ adolescent &lt; {thresholds[1]:g} ≤ adult (months).</p>",
        *([] if tables["external_test"].empty else [
            "<h2>Metrics on the external test set</h2>",
            "<p class='note'>Labelled films kept apart from training (config key external_test), predicted "
            "through each model bundle with its preprocessing, corrections and interval; rows that could not "
            "be used are counted as failed (results/external/&lt;model&gt;/predictions.csv).</p>",
            _html_table(tables["external_test"])]),
        "<h2>Metrics on the validation split</h2>", _html_table(tables["metrics_val"]),
        _figure("figures/variant_comparison.png", "Test and validation MAE per variant; the dashed line is the MAE of always predicting the training mean."),
        _figure("figures/pred_vs_true.png", "Predicted against reference bone age on the test split; points on the black line are exact."),
        _figure("figures/bland_altman.png", "Bland-Altman: difference against mean of prediction and reference; solid line is the bias, dashed lines the 95 % limits of agreement."),
        _figure("figures/error_by_age.png", "Absolute error per reference bone-age bin, girls and boys apart (boxes: quartiles; whiskers: 1.5 IQR)."),
        "<h2>Per age bin and sex (test)</h2>", _html_table(tables["age_bins_test"]),
        "<h2>Developmental stages (test)</h2>",
        _figure("figures/confusion.png", "Confusion matrix of developmental stages derived from reference and predicted bone age."),
        _html_table(tables["stages_test"]),
        "<h2>Training</h2>", _html_table(tables["training"]),
        _figure("figures/training_curves.png", "Training loss and validation MAE per epoch."),
        "<h2>Grad-CAM</h2>",
    ]
    parts += [
        "<p class='note'>Signed Grad-CAM: red regions raise the estimated age, blue regions lower it "
        "(each map divided by its own largest absolute value). Sanity check (Adebayo et al., 2018): the "
        "Spearman correlation between the trained model's maps and those of a copy with random weights; "
        "above the threshold the maps do not show what was learned. 'Map mass on the hand': the share of "
        "each test map's absolute mass inside the thresholded hand, against the hand's share of the image "
        "(what a uniform map would score); below it the model looks at the background.</p>",
        _html_table(tables["gradcam"]),
    ]
    for name in gradcams:
        parts += [
            f"<h3>{html.escape(name)}</h3>",
            _figure(f"figures/gradcam_{name}.png",
                    f"Signed Grad-CAM of {name} on test images across ages and both sexes: red raises the "
                    "estimated age, blue lowers it. Each map is normalised on its own."),
            _figure(f"figures/gradcam_{name}_sanity.png",
                    f"Sanity check of {name}: trained maps (top) against maps with random weights (bottom), "
                    "with their rank correlation."),
            _figure(f"figures/gradcam_{name}_population.png",
                    f"Mean map of {name} over the test split by sex and developmental stage, on the mean "
                    "image of each group; one colour scale for all panels."),
        ]
    parts += [
        "<h2>Preprocessing QC</h2>",
        f"<p>{pre['images_written']} images written, {pre['rows_rejected']} rows rejected. "
        f"Throughput {pre['timing']['images_per_s']} images/s on {pre['timing']['threads']} processes.</p>",
        _html_table(tables["crop_methods"]),
        _figure("figures/contact_sheet.png", "Random crops: source with the crop box and winning method (left), model input (right)."),
        "<h3>Rejected rows and images</h3>",
        _html_table(rej) if len(rej) else "<p>None.</p>",
        "<h3>Kept, but perhaps not hand radiographs</h3>",
        _doubts(pre),
        "<h2>Data split</h2>", _html_table(tables["split"]),
        "<h2>Run facts</h2>", _html_table(pd.DataFrame({"fact": list(facts), "value": list(map(str, facts.values()))})),
        "<h3>Time per stage</h3>", _html_table(tables["stage_times"]) if len(tables["stage_times"]) else "<p>No benchmark files.</p>",
        "<h3>Configuration</h3>", f"<pre>{html.escape(json.dumps(config, indent=2, sort_keys=True))}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", nargs=3, action="append", required=True,
                        metavar=("NAME", "EVAL_DIR", "MODEL_DIR"))
    parser.add_argument("--ensemble-dir", default=None)
    parser.add_argument("--gradcam", nargs=2, action="append", default=[], metavar=("NAME", "DIR"),
                        help="a variant and the Grad-CAM stage's folder holding <NAME>.json and its figures")
    parser.add_argument("--preprocess-dir", required=True)
    parser.add_argument("--split-dir", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--benchmark-dir", default=None)
    parser.add_argument("--config-json", default="{}", help="the run's configuration, shown in the report")
    parser.add_argument("--stage-thresholds", type=float, nargs=2, default=(120.0, 216.0))
    parser.add_argument("--age-bin-months", type=float, default=24)
    parser.add_argument("--external", action="append", default=[], metavar="SUMMARY_JSON",
                        help="a bundle's summary.json on the external test set (repeatable)")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    setup_logging()
    run({v[0]: (Path(v[1]), Path(v[2])) for v in args.variant},
        (Path(args.ensemble_dir), None) if args.ensemble_dir else None,
        {g[0]: Path(g[1]) for g in args.gradcam}, Path(args.preprocess_dir), Path(args.split_dir),
        Path(args.dataset), Path(args.out_dir), json.loads(args.config_json), tuple(args.stage_thresholds),
        args.age_bin_months, Path(args.benchmark_dir) if args.benchmark_dir else None,
        [Path(p) for p in args.external])


if __name__ == "__main__":
    main()
