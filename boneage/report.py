"""Stage 7, report: metrics tables, error plots and a standalone HTML page.

Reads only the files named on its command line (the report rule's inputs: metrics, predictions,
training histories and summaries, Grad-CAM summaries and figures, preprocessing QC, split,
benchmarks, captions) and writes ``index.html`` with ``figures/`` and ``tables/`` beside it, so the
folder can be copied or archived as one piece. Tables are CSV and Markdown.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .files import copy_file, read_json, run_main, setup_logging, write_table, write_text
from .results.metrics import by_age_bin
from .results.page import GRADCAM_KINDS, gradcam_suffix, page
from .results.plots import FIGURES
from .results.provenance import git_commit, package_versions
from .results.tables import (
    abs_errors,
    ci_text,
    comparisons_table,
    external_table,
    folds_table,
    gradcam_table,
    markdown,
    metrics_table,
    ranking,
    seeds_table,
    stability_table,
    stage_table,
    stage_times,
)
from .results.uncertainty import Bootstrap

log = logging.getLogger("boneage.report")


@dataclass
class Inputs:
    """Every file the report reads. ``variants``: name -> (metrics.json, predictions.parquet,
    history.csv, train_summary.json); ``ensemble``: (metrics.json, predictions.parquet); ``combined``:
    a variant's fold or seed ensemble, ``<variant>_folds|_seeds`` -> (metrics.json, predictions.parquet);
    ``gradcams``: name -> (summary .json, panel, sanity, population .png); ``captions``: figure name
    -> its .rst; ``external``: each bundle's summary.json on the external test set,
    ``external_predictions``: bundle name -> its predictions.csv there, ``external_labels``: the
    external set's label csv (for the paired comparisons)."""

    variants: dict[str, tuple[Path, Path, Path, Path]]
    gradcams: dict[str, tuple[Path, Path, Path, Path]]
    preprocess_summary: Path
    crop_methods: Path
    rejects: Path
    contact_sheet: Path
    split_summary: Path
    dataset: Path
    captions: dict[str, Path]
    ensemble: tuple[Path, Path] | None = None
    combined: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    benchmarks: list[Path] = field(default_factory=list)
    external: list[Path] = field(default_factory=list)
    external_predictions: dict[str, Path] = field(default_factory=dict)
    external_labels: Path | None = None
    bootstrap: Bootstrap = Bootstrap()


def _load(inputs: Inputs):
    metrics, preds, histories, summaries = {}, {}, {}, {}
    for name, (metrics_json, predictions, history, summary) in inputs.variants.items():
        metrics[name] = read_json(metrics_json)
        preds[name] = pd.read_parquet(predictions)
        histories[name] = pd.read_csv(history)
        summaries[name] = read_json(summary)
    combined = {**inputs.combined, **({"ensemble": inputs.ensemble} if inputs.ensemble else {})}
    for name, (metrics_json, predictions) in combined.items():
        metrics[name] = read_json(metrics_json)
        preds[name] = pd.read_parquet(predictions)
    return metrics, preds, histories, summaries


def _figures(inputs: Inputs, figure_paths: list[Path], data: dict) -> None:
    """The plots to their declared paths (``<name>.png`` for each name of ``plots.FIGURES``), the
    Grad-CAM and QC figures copied beside them."""
    by_name = {p.stem: p for p in figure_paths}
    if set(by_name) != set(FIGURES):
        raise ValueError(f"report figures asked for {sorted(by_name)}, the report draws {sorted(FIGURES)}: "
                         "make REPORT_FIGURES in workflow/rules/report.smk name the same")
    cut = []
    for name, draw in FIGURES.items():
        cut += draw({**data, "out": by_name[name]})
    for title in cut:
        log.warning("figure title wider than its axes even when wrapped: %r", title)
    folder = figure_paths[0].parent
    for name, (_, *pngs) in inputs.gradcams.items():
        for kind, png in zip(GRADCAM_KINDS, pngs):
            copy_file(png, folder / f"gradcam_{name}{gradcam_suffix(kind)}.png")
    copy_file(inputs.contact_sheet, folder / "contact_sheet.png")


def _errors(inputs: Inputs, preds: dict[str, pd.DataFrame]) -> dict[str, dict[str, pd.Series]]:
    """Absolute errors per subset (val, test, external) and model, indexed by image id."""
    out = abs_errors(preds)
    if inputs.external_labels is not None:
        labels = pd.read_csv(inputs.external_labels, dtype={"id": str}, usecols=["id", "boneage"])
        labels["boneage"] = pd.to_numeric(labels["boneage"], errors="coerce")  # unusable labels: not scored
        for name, path in inputs.external_predictions.items():
            p = pd.read_csv(path, dtype={"id": str}, usecols=["id", "boneage_months"])
            p = p.drop_duplicates("id").merge(labels.drop_duplicates("id"), on="id")
            p = p.dropna(subset=["boneage_months", "boneage"])
            out.setdefault("external", {})[name] = (p["boneage_months"] - p["boneage"]).abs().set_axis(p["id"])
    return out


def _tables(inputs: Inputs, metrics, preds, summaries, cams, bin_months) -> dict[str, pd.DataFrame]:
    return {
        "comparisons": comparisons_table(_errors(inputs, preds), inputs.bootstrap),
        "seeds": seeds_table(metrics),
        "stability": stability_table(metrics),
        "metrics_test": metrics_table(metrics, "test"),
        "metrics_val": metrics_table(metrics, "val"),
        "stages_test": stage_table(metrics),
        "age_bins_test": pd.concat([by_age_bin(p[p["subset"] == "test"], bin_months).assign(model=n)
                                    for n, p in preds.items()], ignore_index=True)[
            ["model", "age_bin", "sex", "n", "mae", "bias"]],
        "training": pd.DataFrame([{
            "model": n, "epochs": s["epochs_run"], "kept epoch": s["best_epoch"],
            "its val MAE": s["best_val_mae"], "train images": s["train_images"], "device": s["device_name"],
            "training time (s)": s["train_s_total"], "images/s (median)": s["images_per_s_median"],
        } for n, s in summaries.items()]),
        "crop_methods": pd.read_csv(inputs.crop_methods),
        "rejects": pd.read_csv(inputs.rejects, dtype=str),
        "split": pd.read_csv(inputs.split_summary),
        "gradcam": gradcam_table(cams),
        "folds": folds_table(metrics),
        "external_test": external_table([read_json(p) for p in inputs.external], metrics),
        "stage_times": stage_times(inputs.benchmarks),
    }


def _summary(metrics, tables, best, base, pre, inputs: Inputs, page_path: Path) -> list[str]:
    """The lines of ``summary.txt`` (also printed at the end of a run)."""
    lines = [f"Test MAE (months) on {metrics[best]['test']['n']} held-out images, with its 95 % bootstrap "
             f"interval; always predicting the training mean: {base:.2f}"]
    lines += [f"  {name:<28} {m['test']['mae']:6.2f} {ci_text(m['test'].get('ci95'), 'mae', 2)}"
              for name, m in metrics.items()]
    apart = tables["comparisons"]
    apart = apart[(apart["subset"] == "test") & (apart["verdict"] == "cannot tell apart")]
    if len(apart):
        lines.append("Test MAE differences the test images cannot tell from chance (paired bootstrap; "
                     "tables/comparisons.csv): " + ", ".join(f"{r.model_a} vs {r.model_b}" for r in apart.itertuples()))
    times = tables["stage_times"]
    if len(times):
        lines.append(f"Time per job (s; results/benchmarks/), {times['seconds'].sum():.0f} s in all before this report:")
        lines += [f"  {row.stage:<32} {row.seconds:6.1f}" for row in times.itertuples()]
    lines.append(f"Rejected: {len(tables['rejects'])} rows, each with its reason in {inputs.rejects}")
    if pre.get("hand_doubts"):
        lines.append(f"Kept with a doubt (perhaps not a hand radiograph): {pre['hand_doubts']} images, "
                     "listed in the report")
    for row in tables["external_test"].to_dict("records"):
        scored = pd.notna(row["MAE"])
        lines.append(f"External test set, {row['model']}: " + (
            f"MAE {row['MAE']:.2f} months on {row['n scored']} films ({row['failed']} failed)" if scored
            else "nothing scored"))
    lines += [f"Grad-CAM of {row.model} flagged: {row.flag}" for row in tables["gradcam"].itertuples()
              if row.flag != "none"]
    return lines + [f"Report: {page_path}"]


def run(inputs: Inputs, html_path: Path, summary_path: Path, figure_paths: list[Path], config: dict,
        thresholds, bin_months: float) -> None:
    """Write the page ``html_path`` with ``tables/`` beside it, ``summary_path`` and the figures."""
    tables_dir = html_path.parent / "tables"
    tables_dir.mkdir(parents=True, exist_ok=True)
    figure_paths[0].parent.mkdir(parents=True, exist_ok=True)
    metrics, preds, histories, summaries = _load(inputs)
    _figures(inputs, figure_paths, {"metrics": metrics, "preds": preds, "histories": histories,
                                    "bin_months": bin_months, "thresholds": thresholds})
    cams = {name: read_json(files[0]) for name, files in inputs.gradcams.items()}
    tables = _tables(inputs, metrics, preds, summaries, cams, bin_months)
    for name, df in tables.items():
        write_table(df, tables_dir / f"{name}.csv")
        write_text(tables_dir / f"{name}.md", markdown(df))
    dataset, pre = read_json(inputs.dataset), read_json(inputs.preprocess_summary)
    rank = ranking(metrics, tables["comparisons"])
    best = rank["best"]
    base = metrics[best]["test"]["baseline_mae"]
    facts = {
        "data source": dataset["source"], "label file sha256": dataset["labels_sha256"],
        "image listing sha256": dataset["image_listing_sha256"], "git commit": git_commit(),
        **{f"version {k}": v for k, v in package_versions().items()},
    }
    write_text(html_path, page(metrics, tables, rank, base, facts, config, pre, cams, thresholds, inputs.captions))
    write_text(summary_path, "\n".join(_summary(metrics, tables, best, base, pre, inputs, html_path)) + "\n")
    log.info("report: %s (best test MAE %.2f months, %s)", html_path, metrics[best]["test"]["mae"], best)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", nargs=5, action="append", required=True,
                        metavar=("NAME", "METRICS", "PREDICTIONS", "HISTORY", "TRAIN_SUMMARY"))
    parser.add_argument("--ensemble", nargs=2, default=None, metavar=("METRICS", "PREDICTIONS"))
    parser.add_argument("--combined", nargs=3, action="append", default=[],
                        metavar=("NAME", "METRICS", "PREDICTIONS"),
                        help="a variant's fold or seed ensemble (stages crossval, seeds), repeatable")
    parser.add_argument("--gradcam", nargs=5, action="append", default=[],
                        metavar=("NAME", "SUMMARY_JSON", "PANEL", "SANITY", "POPULATION"))
    for name in ("preprocess-summary", "crop-methods", "rejects", "contact-sheet", "split-summary", "dataset"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--benchmarks", nargs="*", default=[], help="Snakemake benchmark files of the jobs")
    parser.add_argument("--captions", nargs="+", required=True, help="workflow/report/<figure>.rst files")
    parser.add_argument("--external", action="append", default=[], metavar="SUMMARY_JSON",
                        help="a bundle's summary.json on the external test set (repeatable)")
    parser.add_argument("--external-predictions", nargs=2, action="append", default=[], metavar=("NAME", "CSV"),
                        help="a bundle's predictions.csv on the external test set (repeatable)")
    parser.add_argument("--external-labels", default=None, help="the external test set's label csv")
    Bootstrap.add_arguments(parser)
    parser.add_argument("--config-json", default="{}", help="the run's configuration, shown in the report")
    parser.add_argument("--stage-thresholds", type=float, nargs=2, required=True)
    parser.add_argument("--age-bin-months", type=float, required=True)
    parser.add_argument("--html", required=True)
    parser.add_argument("--summary", required=True)
    parser.add_argument("--figures", nargs="+", required=True, help="the figure files to draw, <name>.png")
    return parser


def main(argv=None) -> None:
    args = _parser().parse_args(argv)
    setup_logging()
    inputs = Inputs(
        variants={v[0]: tuple(map(Path, v[1:])) for v in args.variant},
        gradcams={g[0]: tuple(map(Path, g[1:])) for g in args.gradcam},
        preprocess_summary=Path(args.preprocess_summary), crop_methods=Path(args.crop_methods),
        rejects=Path(args.rejects), contact_sheet=Path(args.contact_sheet), split_summary=Path(args.split_summary),
        dataset=Path(args.dataset), captions={Path(c).stem: Path(c) for c in args.captions},
        ensemble=tuple(map(Path, args.ensemble)) if args.ensemble else None,
        combined={f[0]: (Path(f[1]), Path(f[2])) for f in args.combined},
        benchmarks=[Path(b) for b in args.benchmarks], external=[Path(p) for p in args.external],
        external_predictions={n: Path(p) for n, p in args.external_predictions},
        external_labels=Path(args.external_labels) if args.external_labels else None,
        bootstrap=Bootstrap.from_args(args))
    run(inputs, Path(args.html), Path(args.summary), [Path(f) for f in args.figures], json.loads(args.config_json),
        tuple(args.stage_thresholds), args.age_bin_months)


if __name__ == "__main__":
    run_main(main)
