"""New films through a model bundle: read, describe (sex and age from a csv or DICOM), preprocess as
the bundle's training images were, estimate (both sexes where sex is unknown), and the table of
``boneage.predict`` (and ``boneage.calibrate``, which predicts its local films with the parent).

Sex comes from the csv, else from DICOM PatientSex (0010,0040). Where neither gives it and the
bundle needs it (a sex input, or a calibration per sex), both estimates are written
(``boneage_if_female_months``, ``boneage_if_male_months``) and the row says so; the main estimate
stays empty: no silent guess. Chronological age comes from the csv, else from DICOM
PatientBirthDate and StudyDate (or AcquisitionDate), else PatientAge. File names from the inputs
never become output paths.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..files import keep_freed_memory, usable_threads, write_json, write_table
from ..imaging.ingest import parse_sex
from ..imaging.layout import IMAGE_EXTENSIONS
from ..imaging.radiograph import BOX, Settings, run_images, view_tensor
from ..learning.data import load_images
from ..learning.inference import resolve_device
from .bundle import Bundle, Views
from .intervals import coverage
from .metrics import confidence, regression
from .stability import Retakes, estimates, spread, summarise
from .uncertainty import Bootstrap

log = logging.getLogger("boneage.results.estimates")

STAGE_THRESHOLDS = (120.0, 216.0)  # config evaluate.stage_thresholds_months' default (months)

COLUMNS = ["id", "source_file", "sex", "sex_from", "boneage_months", "boneage_years", "interval_low_months",
           "interval_high_months", "boneage_if_female_months", "boneage_if_male_months",
           "chronological_age_months", "boneage_minus_chronological_months", "retest_sd_months",
           "retest_range_months", "crop_method", "warnings", "error"]
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


MAX_AGE_MONTHS = 130 * 12  # older in a DICOM header: taken as unknown


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
    if not age <= MAX_AGE_MONTHS:  # '999Y' is valid DICOM, and no age: unknown rather than absurd
        age = np.nan
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


def films(bundle: Bundle, rows: pd.DataFrame, out_dir: Path, settings: Settings, threads: int = 1):
    """The preprocessed rows' model inputs: the written PNGs (column ``image``, the bundle's own
    region); with the bundle's box views (:attr:`Bundle.box_shift`), the 9 boxes of each film cut from
    its source (columns ``source_file`` and ``BOX``); for an ensemble whose members see other parts of
    the hand as well, :class:`Views` with those parts cut from the same hand boxes."""
    shift = bundle.box_shift
    by_region = {} if shift > 0 else {bundle.regions[0]: load_images(rows, out_dir)}
    for name in bundle.regions:
        if name not in by_region:
            by_region[name] = view_tensor(rows, replace(settings, region=name), threads, shift)
    return by_region[bundle.regions[0]] if len(by_region) == 1 else Views(by_region)


def estimate(bundle: Bundle, rows: pd.DataFrame, images, device, retakes: Retakes = Retakes(0)) -> pd.DataFrame:
    """Bone age for the preprocessed rows and their ``images`` (:func:`films`); both sexes where sex
    is unknown; with ``retakes``, each film's test-retest spread (of the larger of its two estimates'
    where sex is unknown)."""
    rows = rows.copy()
    unknown = rows["male"].isna().to_numpy() & bundle.needs_sex
    as_given = torch.tensor(rows["male"].fillna(0.0).to_numpy(np.float32))
    rows["boneage_months"] = bundle.predict(images, as_given, device)
    retaken = estimates(lambda k, x: bundle.predict(x, as_given[k], device), images, retakes)
    rows["retest_sd_months"], rows["retest_range_months"] = spread(rows["boneage_months"].to_numpy(), retaken)
    if unknown.any():
        # as given, an unknown sex is 0: those estimates (and their retakes) are the girl's already
        rows.loc[unknown, "boneage_if_female_months"] = rows.loc[unknown, "boneage_months"]
        boy, films = torch.ones(int(unknown.sum())), images[unknown]
        rows.loc[unknown, "boneage_if_male_months"] = bundle.predict(films, boy, device)
        if retakes.views:
            sd, span = spread(rows.loc[unknown, "boneage_if_male_months"].to_numpy(),
                              estimates(lambda k, x: bundle.predict(x, boy[k], device), films, retakes))
            rows.loc[unknown, "retest_sd_months"] = np.fmax(rows.loc[unknown, "retest_sd_months"], sd)
            rows.loc[unknown, "retest_range_months"] = np.fmax(rows.loc[unknown, "retest_range_months"], span)
        rows.loc[unknown, "boneage_months"] = np.nan
    return rows


def predict_files(inputs: list[str], csv: Path | None, bundle_dir: Path, out_dir: Path, device_name: str = "auto",
                  threads: int = 1, thresholds=STAGE_THRESHOLDS, bootstrap: Bootstrap = Bootstrap(),
                  retakes: Retakes = Retakes(0)) -> tuple[pd.DataFrame, Bundle]:
    """Every file through the bundle: the table (one row per file) and the loaded bundle; writes
    ``predictions.csv``/``.parquet``, ``summary.json`` and the model inputs under ``images/``."""
    device = resolve_device(device_name)
    threads = usable_threads(threads)
    torch.set_num_threads(threads)
    keep_freed_memory()
    bundle = Bundle.load(bundle_dir, device)
    settings = Settings.of(bundle.spec["preprocess"])
    files = gather(inputs)
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(map(str, inputs))}")
    table = describe(files, read_csv(csv))
    results = preprocess(files, settings, out_dir, threads)
    table["image"] = [results[k].get("image") for k in range(len(files))]
    table["crop_method"] = [results[k].get("crop_method", "") for k in range(len(files))]
    table["error"] = [results[k].get("reject", "") for k in range(len(files))]
    for box in BOX:  # the hand box found, for the other parts an ensemble's members may see
        table[box] = [results[k].get(box, -1) for k in range(len(files))]
    for k, path in enumerate(files):
        if not path.is_file():
            table.loc[k, "error"] = f"file not found: {path}"
    ok = table["error"] == ""
    if ok.any():
        images = films(bundle, table[ok], out_dir, settings, threads)
        table = pd.concat([estimate(bundle, table[ok], images, device, retakes), table[~ok]]).sort_index()
    table = finish(table, bundle)
    write_table(table[COLUMNS], out_dir / "predictions.csv")
    write_table(table[COLUMNS], out_dir / "predictions.parquet")
    write_json(out_dir / "summary.json", summary(table, bundle, thresholds, bootstrap, retakes))
    return table, bundle


def finish(table: pd.DataFrame, bundle: Bundle) -> pd.DataFrame:
    """Years, interval, age difference, sex label and warnings, from the estimates."""
    for col in ("boneage_months", "boneage_if_female_months", "boneage_if_male_months", "retest_sd_months",
                "retest_range_months"):
        if col not in table:
            table[col] = np.nan
    q = bundle.halfwidth
    table["boneage_years"] = table["boneage_months"] / 12
    table["interval_low_months"] = table["boneage_months"] - q
    table["interval_high_months"] = table["boneage_months"] + q
    table["boneage_minus_chronological_months"] = table["boneage_months"] - table["chronological_age_months"]
    table["sex"] = table["male"].map(lambda m: "unknown" if pd.isna(m) else "M" if m else "F")
    warnings, own = [], bundle.spec["preprocess"].get("crop_method", "auto")
    for r in table.itertuples():
        w = []
        if r.error:
            w.append("image unusable")
        elif r.crop_method == "classical" and own in ("auto", "mediapipe"):  # not when thresholding is its crop
            w.append("crop fell back to thresholding")
        elif r.crop_method == "full" and own != "none":
            w.append("crop fell back to the whole image")
        if r.sex == "unknown" and bundle.needs_sex and not r.error:
            w.append("sex missing: estimated for both sexes")
        warnings.append("; ".join(w))
    table["warnings"] = warnings
    return table


def summary(table: pd.DataFrame, bundle: Bundle, thresholds=STAGE_THRESHOLDS, bootstrap: Bootstrap = Bootstrap(),
            retakes: Retakes = Retakes(0)) -> dict:
    labelled = table.dropna(subset=["boneage_true", "boneage_months"])
    out = {"bundle": str(bundle.path), "variant": bundle.spec["variant"], "files": int(len(table)),
           "predicted": int((table["error"] == "").sum()), "failed": int((table["error"] != "").sum()),
           "interval": bundle.spec["interval"]}
    if retakes.views:
        out["stability"] = summarise(table["retest_sd_months"].to_numpy(float),
                                     table["retest_range_months"].to_numpy(float), retakes)
    if len(labelled):
        true, pred = labelled["boneage_true"].to_numpy(), labelled["boneage_months"].to_numpy()
        out["labelled"] = {**regression(true, pred),
                           "interval_coverage": coverage(true, pred, bundle.halfwidth)["coverage"],
                           "ci95": confidence(true, pred, labelled["male"].astype(float), thresholds, bootstrap)}
    return out
