"""The report's standalone HTML page (``index.html``), from the tables and figures the report wrote.

Figure captions are the texts of ``workflow/report/<name>.rst``, the captions of ``snakemake
--report`` too, so each is written once.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

PAGE_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table.t{border-collapse:collapse;font-size:.85em;margin:.5em 0;display:block;overflow-x:auto;max-width:100%}table.t td,table.t th{padding:.25em .6em;border-bottom:1px solid #eee;text-align:right}
table.t th{background:#f5f5f5}table.t td:first-child,table.t th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
.headline{font-size:1.15em;background:#f3f8fc;border-left:4px solid #3182bd;padding:.6em 1em}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.8em}.note{color:#666;font-size:.85em}
.ci{color:#777;font-size:.85em;white-space:nowrap}.warn{color:#a33}td{vertical-align:top}table.t td.l{text-align:left}
"""


def _number(v) -> str:
    return "" if pd.isna(v) else f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"


def html_table(df: pd.DataFrame) -> str:
    """A table; a figure with an interval column beside it (``X 95 % CI``) shows both in one cell. Text
    cells are escaped here (they hold file names and ids from the data set), the markup is ours."""
    df = df.copy()
    for column in df.columns:
        if df[column].dtype == object:
            df[column] = df[column].map(lambda v: html.escape(v) if isinstance(v, str) else v)
    df.columns = [html.escape(str(c)) for c in df.columns]
    for column in [c for c in df.columns if f"{c} 95 % CI" in df.columns]:
        df[column] = [f"{_number(v)}<br><span class='ci'>{ci}</span>" if ci else _number(v)
                      for v, ci in zip(df[column], df.pop(f"{column} 95 % CI"))]
        df = df.rename(columns={column: f"{column} [95 % CI]"})
    return df.to_html(index=False, float_format=_number, border=0, classes="t", na_rep="", escape=False)


def _figure(src: str, caption: str) -> str:
    return f'<figure><img src="{src}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def _doubts(pre: dict) -> str:
    """The preprocess summary's doubtful images (see boneage.imaging.handcheck) as a paragraph and table."""
    n = pre.get("hand_doubts", 0)
    if not n:
        return "<p>None.</p>"
    shown = pd.DataFrame(pre["hand_doubt_examples"])
    more = f" The first {len(shown)} are listed; " if n > len(shown) else " "
    return (f"<p>{n} images passed the hand check with a doubt and were trained on.{more}the "
            "<code>hand_doubt</code> column of the preprocess index has them all. Look at them; "
            "remove their rows where they are not hand radiographs.</p>" + html_table(shown))



GRADCAM_KINDS = ("panel", "sanity", "population")  # the Grad-CAM stage's figures of each variant


def gradcam_suffix(kind: str) -> str:
    """How a Grad-CAM figure kind is named: ``figures/gradcam_<variant><suffix>.png``, captioned by
    ``workflow/report/gradcam<suffix>.rst``."""
    return "" if kind == "panel" else f"_{kind}"


def caption(captions: dict[str, Path], name: str, variant: str = "") -> str:
    """The text of ``workflow/report/<name>.rst``, with the variant where it names one."""
    text = captions[name].read_text().strip()
    return text.replace("{{ snakemake.wildcards.variant }}", variant).replace("``", "")


def _names(names: list[str]) -> str:
    return ", ".join(f"<b>{html.escape(n)}</b>" for n in names)


def headline(metrics: dict, rank: dict, base: float) -> str:
    """The report's first sentence: the best model only where its advantage over every other model
    is outside the test images' sampling noise and the seeds' training noise; else who is tied."""
    best = rank["best"]
    m = metrics[best]["test"]
    ci = (m.get("ci95") or {}).get("mae")
    figure = (f"MAE <b>{m['mae']:.2f} months</b>" + (f" (95 % CI {ci[0]:.2f} to {ci[1]:.2f})" if ci else "") +
              f", RMSE {m['rmse']:.2f}, R² {m['r2']:.3f}, n = {m['n']}")
    if rank["sampling"] or rank["training"]:
        text = (f"Lowest test MAE: <b>{html.escape(best)}</b>, {figure}."
                + (f" The test images cannot tell it apart from {_names(rank['sampling'])}." if rank["sampling"] else "")
                + (f" Within the seeds' training noise of it: {_names(rank['training'])}." if rank["training"] else "")
                + " No model is best on this evidence: treat these as tied.")
    elif rank["unmeasured"]:
        text = (f"Lowest test MAE: <b>{html.escape(best)}</b>, {figure}; ahead of every other model outside the test "
                "images' sampling noise (paired bootstrap), but training noise is not measured for "
                f"{_names(rank['unmeasured'])}: set <code>repeats: 3</code> before calling it best.")
    elif len(metrics) > 1:
        text = (f"Best on the held-out test split: <b>{html.escape(best)}</b>, {figure}; its advantage over every "
                "other model is outside both the test images' sampling noise and the seeds' training noise.")
    else:
        text = f"Test split: <b>{html.escape(best)}</b>, {figure}."
    return (f"<p class='headline'>{text} Always predicting the training mean gives MAE {base:.2f} months.</p>")


def _metrics_section(metrics, tables, rank, base, facts, thresholds, captions) -> list[str]:
    return [
        headline(metrics, rank, base),
        "<p class='note'>Research use only; not a medical device. Data source: "
        f"{html.escape(str(facts['data source']))}.</p>",
        "<h2>Metrics on the test split</h2>", html_table(tables["metrics_test"]),
        "<p class='note'>Months. Beside each figure its 95 % confidence interval: percentile bootstrap over the "
        "images scored (boneage/results/uncertainty.py), the uncertainty that comes from which images happened to be in "
        "the split; training noise (another seed, another CPU) comes on top, see the seeds table where "
        "<code>repeats</code> is set. 'MAE without TTA/correction' is the plain prediction before test-time "
        "augmentation and the validation-fitted bias correction. The interval is split-conformal, fitted "
        "on the validation residuals: coverage is the share of test images whose reference age lies "
        "inside it (empty width: too few validation images for the level). Stage accuracy uses the thresholds "
        f"child &lt; {thresholds[0]:g} ≤ adolescent &lt; {thresholds[1]:g} ≤ adult (months).</p>",
        *([] if tables["external_test"].empty else [
            "<h2>Metrics on the external test set</h2>",
            "<p class='note'>Labelled films kept apart from training (config key external_test), predicted "
            "through each model bundle with its preprocessing, corrections and interval; rows that could not "
            "be used are counted as failed (results/external/&lt;model&gt;/predictions.csv).</p>",
            html_table(tables["external_test"])]),
        "<h2>Metrics on the validation split</h2>", html_table(tables["metrics_val"]),
        *([] if tables["folds"].empty else [
            "<h2>Cross-validation</h2>",
            "<p class='note'>Each fold model is trained on the other folds of the train+val pool and scored on "
            "its held-out fold and on the test split (which no fold saw). &lt;variant&gt;_folds: out-of-fold "
            "predictions on the whole pool (its 'validation' rows above) and the mean of the fold models on "
            "the test split.</p>",
            html_table(tables["folds"])]),
        *_comparisons(tables["comparisons"]),
        *([] if tables["seeds"].empty else [
            "<h2>Training noise: seeds</h2>",
            "<p class='note'>Each model trained again with other seeds (config <code>repeats</code>), as separate "
            "jobs on the same split: the spread of their test MAE is the training noise, which the bootstrap "
            "intervals do not contain. The seed ensemble (&lt;variant&gt;_seeds) averages the seeds' predictions; "
            "it is a model of its own in the tables above, with a bundle.</p>",
            html_table(tables["seeds"])]),
        *([] if tables["stability"].empty else [
            "<h2>Test-retest stability</h2>",
            "<p class='note'>How far one estimate moves when the same hand is imaged again: each test film "
            "re-positioned and re-exposed as a fixed set of retakes (rotation ±10°, shift ±5 %, zoom 0.93-1.07, "
            "gamma 0.8-1.25 of the preprocessed image; boneage/results/stability.py), each estimated like the film. Per "
            "film the SD and the max - min of its estimates (months); median and 95th percentile over the films. "
            "The crop's own variation between two films is not included: a lower bound where the crop is "
            "unstable.</p>",
            html_table(tables["stability"])]),
        *(_figure(f"figures/{n}.png", caption(captions, n))
          for n in ("variant_comparison", "pred_vs_true", "bland_altman", "error_by_age")),
        "<h2>Per age bin and sex (test)</h2>", html_table(tables["age_bins_test"]),
        "<h2>Developmental stages (test)</h2>",
        _figure("figures/confusion.png", caption(captions, "confusion")),
        html_table(tables["stages_test"]),
        "<h2>Training</h2>", html_table(tables["training"]),
        _figure("figures/training_curves.png", caption(captions, "training_curves")),
    ]


def _gradcam_section(tables, gradcams, captions) -> list[str]:
    parts = [
        "<h2>Grad-CAM</h2>",
        "<p class='note'>Signed Grad-CAM: red regions raise the estimated age, blue regions lower it "
        "(each map divided by its own largest absolute value). Sanity check (Adebayo et al., 2018): the "
        "Spearman correlation between the trained model's maps and those of a copy with random weights; "
        "above the threshold the maps do not show what was learned. 'Map mass on the hand': the share of "
        "each test map's absolute mass inside the thresholded hand, against the hand's share of the image "
        "(what a uniform map would score); below it the model looks at the background.</p>",
        html_table(tables["gradcam"]),
    ]
    for name in gradcams:
        parts.append(f"<h3>{html.escape(name)}</h3>")
        parts += [_figure(f"figures/gradcam_{name}{gradcam_suffix(kind)}.png",
                          caption(captions, f"gradcam{gradcam_suffix(kind)}", name)) for kind in GRADCAM_KINDS]
    return parts


def _qc_section(tables, facts, config, pre, captions) -> list[str]:
    rej, times = tables["rejects"], tables["stage_times"]
    return [
        "<h2>Preprocessing QC</h2>",
        f"<p>{pre['images_written']} images written, {pre['rows_rejected']} rows rejected. "
        f"Throughput {pre['timing']['images_per_s']} images/s on {pre['timing']['threads']} processes.</p>",
        html_table(tables["crop_methods"]),
        _figure("figures/contact_sheet.png", caption(captions, "contact_sheet")),
        "<h3>Rejected rows and images</h3>",
        html_table(rej) if len(rej) else "<p>None.</p>",
        "<h3>Kept, but perhaps not hand radiographs</h3>",
        _doubts(pre),
        "<h2>Data split</h2>", html_table(tables["split"]),
        "<h2>Run facts</h2>", html_table(pd.DataFrame({"fact": list(facts), "value": list(map(str, facts.values()))})),
        "<h3>Time per stage</h3>", html_table(times) if len(times) else "<p>No benchmark files.</p>",
        "<h3>Configuration</h3>", f"<pre>{html.escape(json.dumps(config, indent=2, sort_keys=True))}</pre>",
    ]


def _comparisons(table: pd.DataFrame) -> list[str]:
    """The paired comparisons (tables/comparisons.csv), and in words what the data cannot tell apart."""
    if table.empty:
        return []
    parts = ["<h2>Paired comparisons</h2>",
             "<p class='note'>Every two models scored on the same images: mae_diff = MAE of model_a minus MAE of "
             "model_b (months; negative: model_a has the lower error), with the 95 % interval of a paired "
             "bootstrap (the same images drawn for both). Where the interval holds 0 these images cannot tell "
             "the two models apart.</p>"]
    for subset, rows in table.groupby("subset", sort=False):
        tied = rows[rows["verdict"] == "cannot tell apart"]
        said = ("every difference is outside the sampling noise" if tied.empty else
                "cannot tell apart: " + "; ".join(f"{html.escape(r.model_a)} and {html.escape(r.model_b)} "
                                                  f"({r.mae_diff:+.2f}, CI {r.ci_low:+.2f} to {r.ci_high:+.2f})"
                                                  for r in tied.itertuples()))
        parts.append(f"<p><b>{html.escape(str(subset))}</b> ({int(rows['n'].max())} images at most): {said}.</p>")
    return parts + [html_table(table)]


def page(metrics, tables, rank, base, facts, config, pre, gradcams, thresholds, captions) -> str:
    """The whole page; ``captions``: figure name -> its ``.rst`` caption file."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Bone age report</title>",
        f"<style>{PAGE_CSS}</style></head><body>",
        "<h1>Bone age assessment: evaluation report</h1>",
        *_metrics_section(metrics, tables, rank, base, facts, thresholds, captions),
        *_gradcam_section(tables, gradcams, captions),
        *_qc_section(tables, facts, config, pre, captions),
        "</body></html>",
    ]
    return "\n".join(parts)
