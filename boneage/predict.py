"""Predict: bone age of new radiographs through a model bundle, with prediction intervals.

Inputs are files and folders (searched recursively) of PNG (8/16-bit), JPEG, WebP and DICOM, and
optionally a csv ``id,male[,chronological_age_months][,boneage]`` whose ids are the file names
without extension. Each image goes through the bundle's own preprocessing (crop, markers, CLAHE,
size: the settings its training images had), then the bundle's models, TTA and bias correction.

Sex comes from the csv, else from DICOM PatientSex (0010,0040). Where neither gives it and the
bundle has a sex input, both estimates are written (``boneage_if_female_months``,
``boneage_if_male_months``) and the row says so; the main estimate stays empty: no silent guess.
Chronological age comes from the csv, else from DICOM PatientBirthDate and StudyDate (or
AcquisitionDate), else PatientAge.

Writes ``predictions.csv`` and ``predictions.parquet`` (one row per input file, also for files that
failed, with the error), the model inputs under ``images/``, ``summary.json`` (counts, and MAE,
RMSE, R2 and interval coverage where the csv gives ``boneage``) and ``index.html``, a page listing
every row (estimate and interval, both estimates where sex is unknown, chronological age and the
difference, warnings and errors); with ``--gradcam`` a signed Grad-CAM overlay per image under
``gradcam/`` on that page, with ``--stability`` each film's test-retest spread over retakes
(:mod:`boneage.results.stability`). Nothing is written outside
``--out-dir``; file names from the inputs never become output paths. The exit status is the number
of files that failed (at most 100; 0 with ``--keep-going``, as the Snakemake rule runs it) and 101
when nothing could be predicted (a bad bundle or csv).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .files import run_main, setup_logging, write_text
from .imaging.layout import IMAGE_EXTENSIONS
from .learning.data import load_images
from .results.bundle import Bundle, BundleError
from .results.estimates import STAGE_THRESHOLDS, predict_files
from .results.page import PAGE_CSS
from .results.stability import Retakes
from .results.uncertainty import Bootstrap

log = logging.getLogger("boneage.predict")


def gradcam_overlays(bundle: Bundle, table: pd.DataFrame, out_dir: Path) -> tuple[dict, str]:
    """A signed Grad-CAM overlay per predicted image (``gradcam/<n>.png``; of the first member for an
    ensemble): row index -> overlay path, and a sentence saying what the maps are."""
    import cv2

    from .imaging.images import write_png
    from .results.cam import batched_maps, choose_layer, overlay_rgb

    model, _, _, member = bundle.models[0]
    model = model.float().cpu()
    size = member["input_size"]
    layer, _ = choose_layer(model, size)
    rows = table[table["image"].notna()]
    (out_dir / "gradcam").mkdir(parents=True, exist_ok=True)
    images = load_images(rows, out_dir)
    male = torch.tensor(rows["male"].fillna(0.0).to_numpy(np.float32))
    shown = {}
    for s, x, _, _, maps in batched_maps(model, layer, images, male, size):
        for k, index in enumerate(rows.index[s:s + len(x)]):
            name = f"gradcam/{Path(rows.loc[index, 'image']).stem}.png"
            write_png(out_dir / name, cv2.cvtColor(overlay_rgb(x[k, 0].numpy(), maps[k]), cv2.COLOR_RGB2BGR))
            shown[index] = name
    return shown, (f"Signed Grad-CAM of {member['variant']} at {layer}: red raises the estimate, blue lowers it"
                   + (" (girls' and boys' estimates alike: the map of the first)." if bundle.needs_sex else "."))


def _months(value: float) -> str:
    """Months with years and months, as a clinician reads an age: ``126.0 mo (10 y 6 mo)``."""
    if pd.isna(value):
        return ""
    whole = int(round(abs(value)))
    return f"{value:.1f} mo ({'-' if value < 0 else ''}{whole // 12} y {whole % 12} mo)"


def _estimate_cell(value: float, halfwidth: float, label: str = "") -> str:
    if pd.isna(value):
        return ""
    interval = "" if not math.isfinite(halfwidth) else (
        f"<br><span class='ci'>interval {value - halfwidth:.0f}-{value + halfwidth:.0f} mo</span>")
    return f"{label}{_months(value)}{interval}"


def write_page(bundle: Bundle, table: pd.DataFrame, out_dir: Path, gradcam: bool = False) -> Path:
    """``index.html``: every row with its estimate and interval (both estimates where sex is unknown),
    chronological age and the difference, the retest spread when measured, warnings and errors, and
    with ``gradcam`` an overlay per image. Every text from the inputs is escaped."""
    import html

    shown, cam_note = gradcam_overlays(bundle, table, out_dir) if gradcam else ({}, "")
    q = bundle.halfwidth
    level = bundle.spec["interval"].get("level")
    stability = table["retest_sd_months"].notna().any()
    head = ["file", "sex", "bone age", "chronological age", "bone age - chronological", *(
        ["retest SD / max-min"] if stability else []), "crop", "warnings and errors", *(["Grad-CAM"] if gradcam else [])]
    rows = []
    for index, r in table.iterrows():
        if pd.isna(r["boneage_months"]) and pd.notna(r["boneage_if_female_months"]):
            estimate = (_estimate_cell(r["boneage_if_female_months"], q, "if a girl: ") + "<br>"
                        + _estimate_cell(r["boneage_if_male_months"], q, "if a boy: "))
        else:
            estimate = _estimate_cell(r["boneage_months"], q)
        diff = r["boneage_minus_chronological_months"]
        problems = "; ".join(html.escape(str(t)) for t in (r["warnings"], r["error"]) if t)
        cells = [f"{html.escape(str(r['id']))}<br><span class='ci'>{html.escape(Path(r['source_file']).name)}</span>",
                 f"{html.escape(r['sex'])}<br><span class='ci'>{html.escape(r['sex_from'])}</span>", estimate,
                 _months(r["chronological_age_months"]), "" if pd.isna(diff) else f"{diff:+.1f} mo",
                 *([] if not stability else [
                     "" if pd.isna(r["retest_sd_months"]) else
                     f"{r['retest_sd_months']:.1f} / {r['retest_range_months']:.1f} mo"]),
                 html.escape(str(r["crop_method"] or "")), f"<span class='warn'>{problems}</span>",
                 *([f"<img src='{shown[index]}' width='160' alt='Grad-CAM'>" if index in shown else ""]
                   if gradcam else [])]
        left = {0, len(cells) - 1 - gradcam}  # file and warnings read as text
        rows.append("<tr>" + "".join(f"<td class='l'>{c}</td>" if k in left else f"<td>{c}</td>"
                                     for k, c in enumerate(cells)) + "</tr>")
    interval = (f"the bundle's {level:.0%} prediction interval (split conformal, ±{q:.1f} months)"
                if math.isfinite(q) and level else "no interval (too few images to fit one)")
    calibration = bundle.spec.get("calibration")
    page = out_dir / "index.html"
    write_text(page,
        "<!doctype html><html><head><meta charset='utf-8'><title>Bone age predictions</title>"
        f"<style>{PAGE_CSS}</style></head><body>"
        f"<h1>Bone age predictions: {html.escape(str(bundle.spec['variant']))}</h1>"
        f"<p class='headline'>{int((table['error'] == '').sum())} of {len(table)} files predicted. Research use "
        "only; not a medical device.</p>"
        f"<p class='note'>Bone age in months (years and months); beneath it {interval}. Where the sex is unknown "
        "and the model needs it, both estimates are given and neither is chosen. Chronological age from the csv "
        "or the DICOM header (birth and study dates, else PatientAge)."
        + (f" The estimates are calibrated to a local set of {sum(calibration['n'].values())} films "
           f"({html.escape(str(calibration.get('parent_variant', '')))} refitted per sex)." if calibration else "")
        + (" Retest: SD and max - min of the estimates over re-positioned, re-exposed retakes of the film "
           "(boneage.results.stability)." if stability else "")
        + (f" {html.escape(cam_note)}" if gradcam else "") + "</p>"
        "<table class='t'><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows)
        + "</table></body></html>")
    return page


def run(inputs: list[str], csv: Path | None, bundle_dir: Path, out_dir: Path, device_name: str = "auto",
        threads: int = 1, gradcam: bool = False, thresholds=STAGE_THRESHOLDS,
        bootstrap: Bootstrap = Bootstrap(), retakes: Retakes = Retakes(0)) -> pd.DataFrame:
    """Predict ``inputs`` (:func:`boneage.results.estimates.predict_files`) and write the page."""
    table, bundle = predict_files(inputs, csv, bundle_dir, out_dir, device_name, threads, thresholds, bootstrap,
                                  retakes)
    log.info("page: %s", write_page(bundle, table, out_dir, gradcam))
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="Reads PNG (8- and 16-bit), JPEG, WebP and DICOM (.dcm, "
        ".dicom; MONOCHROME1 and 2, 8-16 bit, rescale and window from the header; sex from PatientSex, age from "
        "PatientBirthDate and StudyDate or PatientAge). Writes predictions.csv/.parquet, summary.json and "
        "index.html in --out-dir.")
    parser.add_argument("inputs", nargs="*", help="image files and/or folders (searched recursively): "
                        f"{', '.join(sorted(IMAGE_EXTENSIONS))}")
    parser.add_argument("--bundle", required=True, help="a bundle folder (results/bundles/<variant>)")
    parser.add_argument("--csv", default=None, help="id,male[,chronological_age_months][,boneage]")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--gradcam", action="store_true",
                        help="also a signed Grad-CAM overlay per image, shown on index.html")
    parser.add_argument("--stability", type=int, nargs="?", const=Retakes.views, default=0, metavar="VIEWS",
                        help="each film's test-retest spread (SD, max - min in months) over VIEWS re-positioned, "
                        f"re-exposed retakes (default {Retakes.views}; boneage.results.stability)")
    parser.add_argument("--stage-thresholds", type=float, nargs=2, default=STAGE_THRESHOLDS,
                        metavar=("ADOLESCENT", "ADULT"), help="stage boundaries in months, for the stage accuracy "
                        "where the csv gives boneage (default %(default)s)")
    Bootstrap.add_arguments(parser)
    parser.add_argument("--keep-going", action="store_true",
                        help="exit 0 when some files failed (their rows hold the error); the Snakemake rule")
    args = parser.parse_args(argv)
    setup_logging()
    if not args.inputs:
        log.error("nothing to predict: name image files or folders (in the pipeline: config key predict.inputs, "
                  "for example --config 'predict={\"inputs\": [\"/data/new_films\"]}')")
        sys.exit(101)
    try:
        table = run(args.inputs, Path(args.csv) if args.csv else None, Path(args.bundle), Path(args.out_dir),
                    args.device, args.threads, args.gradcam, tuple(args.stage_thresholds),
                    Bootstrap.from_args(args), Retakes(max(0, args.stability)))
    except (BundleError, ValueError, RuntimeError) as exc:
        log.error("%s", exc)
        sys.exit(101)
    failed = int((table["error"] != "").sum())
    log.info("%d of %d files predicted; %d failed (rows with their error in %s)", len(table) - failed, len(table),
             failed, Path(args.out_dir) / "predictions.csv")
    sys.exit(0 if args.keep_going else min(failed, 100))


if __name__ == "__main__":
    run_main(main)
