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
failed, with the error), the model inputs under ``images/``, and ``summary.json`` (counts, and MAE,
RMSE, R2 and interval coverage where the csv gives ``boneage``); with ``--gradcam``, a signed
Grad-CAM overlay per image under ``gradcam/`` and ``index.html`` listing every row. Nothing is written outside
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
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .bundle import Bundle, BundleError
from .data import load_images
from .files import keep_freed_memory, setup_logging, usable_threads, write_json, write_table
from .ingest import parse_sex
from .inference import resolve_device
from .intervals import coverage
from .layout import IMAGE_EXTENSIONS
from .metrics import confidence, regression
from .uncertainty import Bootstrap
from .radiograph import Settings, run_images

log = logging.getLogger("boneage.predict")

STAGE_THRESHOLDS = (120.0, 216.0)  # config evaluate.stage_thresholds_months' default (months)

COLUMNS = ["id", "source_file", "sex", "sex_from", "boneage_months", "boneage_years", "interval_low_months",
           "interval_high_months", "boneage_if_female_months", "boneage_if_male_months",
           "chronological_age_months", "boneage_minus_chronological_months", "crop_method", "warnings", "error"]
DICOM = (".dcm", ".dicom")


def gather(inputs: list[str]) -> list[Path]:
    """Image files named or found (recursively, sorted) in folders; a missing path stays in the
    list and becomes a row with its error."""
    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        else:
            files.append(item)
    return files


def _dicom_date(value) -> date | None:
    text = str(value or "").strip()
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8])) if len(text) >= 8 else None
    except ValueError:
        return None


def dicom_facts(path: Path) -> dict:
    """Sex (1.0/0.0/NaN) and chronological age in months (NaN if unknown) from a DICOM header."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # the image reader reports the file's error
        return {"male": np.nan, "age": np.nan}
    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    male = 1.0 if sex == "M" else 0.0 if sex == "F" else np.nan
    born = _dicom_date(ds.get("PatientBirthDate"))
    seen = _dicom_date(ds.get("StudyDate")) or _dicom_date(ds.get("AcquisitionDate"))
    age = np.nan
    if born and seen and seen >= born:
        age = (seen.year - born.year) * 12 + (seen.month - born.month) + (seen.day - born.day) / 30.4375
    else:
        text = str(ds.get("PatientAge", "") or "").strip().upper()  # e.g. 010Y, 006M, 020W, 100D
        per_unit = {"Y": 12.0, "M": 1.0, "W": 12 / 52.1775, "D": 12 / 365.25}
        if len(text) == 4 and text[:3].isdigit() and text[3] in per_unit:
            age = int(text[:3]) * per_unit[text[3]]
    return {"male": male, "age": age}


def read_csv(path: Path | None) -> pd.DataFrame:
    """The optional csv, indexed by id (str), with male (1/0/NaN), chronological age and boneage."""
    if path is None:
        return pd.DataFrame(columns=["male", "chronological_age_months", "boneage"])
    df = pd.read_csv(path, dtype={"id": str})
    if "id" not in df.columns:
        raise ValueError(f"{path}: no 'id' column (expected id,male[,chronological_age_months][,boneage])")
    df["male"] = df["male"].map(parse_sex) if "male" in df.columns else np.nan
    for col in ("chronological_age_months", "boneage"):
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else np.nan
    return df.drop_duplicates("id").set_index("id")[["male", "chronological_age_months", "boneage"]]


def describe(files: list[Path], table: pd.DataFrame) -> pd.DataFrame:
    """One row per file: id, source, and the sex and age known before predicting."""
    rows = []
    for path in files:
        known = table.loc[path.stem] if path.stem in table.index else None
        facts = dicom_facts(path) if path.suffix.lower() in DICOM and path.is_file() else {"male": np.nan, "age": np.nan}
        male, sex_from = np.nan, "unknown"
        if known is not None and not math.isnan(known["male"]):
            male, sex_from = known["male"], "csv"
        elif not math.isnan(facts["male"]):
            male, sex_from = facts["male"], "dicom"
        age = known["chronological_age_months"] if known is not None else np.nan
        rows.append({"id": path.stem, "source_file": str(path), "male": male, "sex_from": sex_from,
                     "chronological_age_months": facts["age"] if np.isnan(age) else age,
                     "boneage_true": known["boneage"] if known is not None else np.nan})
    return pd.DataFrame(rows)


def preprocess(files: list[Path], settings: Settings, out_dir: Path, threads: int) -> dict[int, dict]:
    """The bundle's preprocessing on each file: position -> result (``image`` or ``reject``)."""
    tasks = [(f"{k:06d}", str(p) if p.is_file() else None) for k, p in enumerate(files)]
    return {int(r["id"]): r for r in run_images(tasks, settings, out_dir, threads)}


def estimate(bundle: Bundle, rows: pd.DataFrame, out_dir: Path, device) -> pd.DataFrame:
    """Bone age for the preprocessed rows (column ``image``); both sexes where sex is unknown."""
    images = load_images(rows, out_dir)
    male = torch.tensor(rows["male"].fillna(0.0).to_numpy(np.float32))
    rows = rows.copy()
    rows["boneage_months"] = bundle.predict(images, male, device)
    unknown = rows["male"].isna().to_numpy()
    if bundle.needs_sex and unknown.any():
        for name, value in (("boneage_if_female_months", 0.0), ("boneage_if_male_months", 1.0)):
            rows.loc[unknown, name] = bundle.predict(images[unknown], torch.full((int(unknown.sum()),), value), device)
        rows.loc[unknown, "boneage_months"] = np.nan
    return rows


def gradcam_page(bundle: Bundle, table: pd.DataFrame, out_dir: Path) -> Path:
    """A signed Grad-CAM overlay per predicted image (``gradcam/<n>.png``; of the first member for
    an ensemble) and ``index.html`` listing every row with its overlay."""
    import html

    import cv2

    from .cam import batched_maps, choose_layer, overlay_rgb

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
            cv2.imwrite(str(out_dir / name), cv2.cvtColor(overlay_rgb(x[k, 0].numpy(), maps[k]), cv2.COLOR_RGB2BGR))
            shown[index] = name
    cells = []
    for index, r in table.iterrows():
        estimate = "" if pd.isna(r["boneage_months"]) else (
            f"{r['boneage_months']:.1f} mo ({r['interval_low_months']:.0f}-{r['interval_high_months']:.0f})")
        image = f"<img src='{shown[index]}' width='160'>" if index in shown else ""
        cells.append(f"<tr><td>{html.escape(str(r['id']))}</td><td>{estimate}</td><td>{html.escape(r['sex'])}</td>"
                     f"<td>{html.escape(str(r['warnings']))} {html.escape(str(r['error']))}</td><td>{image}</td></tr>")
    page = out_dir / "index.html"
    page.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>Bone age predictions</title></head><body>"
        f"<h1>Bone age predictions: {html.escape(str(bundle.spec['variant']))}</h1>"
        f"<p>Signed Grad-CAM of {html.escape(str(member['variant']))} at {html.escape(layer)}: red raises the "
        "estimate, blue lowers it. Interval: the bundle's split-conformal interval. Research use only.</p>"
        "<table border='1' cellpadding='4'><tr><th>id</th><th>bone age (interval)</th><th>sex</th>"
        "<th>warnings</th><th>Grad-CAM</th></tr>" + "".join(cells) + "</table></body></html>")
    return page


def run(inputs: list[str], csv: Path | None, bundle_dir: Path, out_dir: Path, device_name: str = "auto",
        threads: int = 1, gradcam: bool = False, thresholds=STAGE_THRESHOLDS,
        bootstrap: Bootstrap = Bootstrap()) -> pd.DataFrame:
    device = resolve_device(device_name)
    threads = usable_threads(threads)
    torch.set_num_threads(threads)
    keep_freed_memory()
    bundle = Bundle.load(bundle_dir, device)
    settings = Settings(**{**bundle.spec["preprocess"],
                           "mediapipe_renderings": tuple(bundle.spec["preprocess"]["mediapipe_renderings"])})
    files = gather(inputs)
    table = describe(files, read_csv(csv))
    results = preprocess(files, settings, out_dir, threads)
    table["image"] = [results[k].get("image") for k in range(len(files))]
    table["crop_method"] = [results[k].get("crop_method", "") for k in range(len(files))]
    table["error"] = [results[k].get("reject", "") for k in range(len(files))]
    for k, path in enumerate(files):
        if not path.is_file():
            table.loc[k, "error"] = f"file not found: {path}"
    ok = table["error"] == ""
    if ok.any():
        table = pd.concat([estimate(bundle, table[ok], out_dir, device), table[~ok]]).sort_index()
    table = finish(table, bundle)
    write_table(table[COLUMNS], out_dir / "predictions.csv")
    write_table(table[COLUMNS], out_dir / "predictions.parquet")
    write_json(out_dir / "summary.json", summarise(table, bundle, thresholds, bootstrap))
    if gradcam:
        log.info("Grad-CAM page: %s", gradcam_page(bundle, table, out_dir))
    return table


def finish(table: pd.DataFrame, bundle: Bundle) -> pd.DataFrame:
    """Years, interval, age difference, sex label and warnings, from the estimates."""
    for col in ("boneage_months", "boneage_if_female_months", "boneage_if_male_months"):
        if col not in table:
            table[col] = np.nan
    q = bundle.halfwidth
    table["boneage_years"] = table["boneage_months"] / 12
    table["interval_low_months"] = table["boneage_months"] - q
    table["interval_high_months"] = table["boneage_months"] + q
    table["boneage_minus_chronological_months"] = table["boneage_months"] - table["chronological_age_months"]
    table["sex"] = table["male"].map(lambda m: "unknown" if pd.isna(m) else "M" if m else "F")
    warnings = []
    for r in table.itertuples():
        w = []
        if r.error:
            w.append("image unusable")
        elif r.crop_method in ("classical", "full"):
            w.append("crop fell back to " + ("thresholding" if r.crop_method == "classical" else "the whole image"))
        if r.sex == "unknown" and bundle.needs_sex and not r.error:
            w.append("sex missing: estimated for both sexes")
        warnings.append("; ".join(w))
    table["warnings"] = warnings
    return table


def summarise(table: pd.DataFrame, bundle: Bundle, thresholds=STAGE_THRESHOLDS,
              bootstrap: Bootstrap = Bootstrap()) -> dict:
    labelled = table.dropna(subset=["boneage_true", "boneage_months"])
    out = {"bundle": str(bundle.path), "variant": bundle.spec["variant"], "files": int(len(table)),
           "predicted": int((table["error"] == "").sum()), "failed": int((table["error"] != "").sum()),
           "interval": bundle.spec["interval"]}
    if len(labelled):
        true, pred = labelled["boneage_true"].to_numpy(), labelled["boneage_months"].to_numpy()
        out["labelled"] = {**regression(true, pred),
                           "interval_coverage": coverage(true, pred, bundle.halfwidth)["coverage"],
                           "ci95": confidence(true, pred, labelled["male"].astype(float), thresholds, bootstrap)}
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="*", help="image files and/or folders (searched recursively)")
    parser.add_argument("--bundle", required=True, help="a bundle folder (results/bundles/<variant>)")
    parser.add_argument("--csv", default=None, help="id,male[,chronological_age_months][,boneage]")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--gradcam", action="store_true",
                        help="also a signed Grad-CAM overlay per image and index.html listing them all")
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
                    Bootstrap.from_args(args))
    except (BundleError, ValueError, RuntimeError) as exc:
        log.error("%s", exc)
        sys.exit(101)
    failed = int((table["error"] != "").sum())
    log.info("%d of %d files predicted; %d failed (rows with their error in %s)", len(table) - failed, len(table),
             failed, Path(args.out_dir) / "predictions.csv")
    sys.exit(0 if args.keep_going else min(failed, 100))


if __name__ == "__main__":
    main()
