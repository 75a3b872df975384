"""The RSNA layout and its label table: find the files, check every row, keep the bad ones visible.

An RSNA-layout folder holds ``boneage-training-dataset.csv`` (``id,boneage,male``; bone age in
months, sex as True/False) beside ``boneage-training-dataset/`` with one image ``<id>.<ext>`` per row.
The Kaggle download nests the image folder once more (``boneage-training-dataset/boneage-training-
dataset/``); both are accepted.

A bad row never vanishes: :func:`read_labels` returns it in a rejects table with the reason.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..files import first_line
from .layout import IMAGE_DIR, LABELS_CSV, Layout, LayoutError, resolve_layout  # noqa: F401

REQUIRED_COLUMNS = ("id", "boneage", "male")
BONEAGE_RANGE_MONTHS = (0.0, 240.0)
REJECT_COLUMNS = ["id", "file", "reason"]
# An id names files (<id>.<ext> in, <id>.png out), so it must be a plain file name: letters, digits,
# '.', '_' and '-', starting with a letter or digit, at most 128 characters. Anything else ('../x',
# '/abs', 'a/b', '') is a reject: a label table is data from elsewhere and never steers a path.
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"

_TRUE = {"true", "1", "1.0", "m", "male", "t", "yes"}
_FALSE = {"false", "0", "0.0", "f", "female", "no"}


class LabelsError(ValueError):
    """The label csv cannot be used at all (unreadable, required columns missing)."""


def parse_sex(value) -> float:
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return 1.0
    if text in _FALSE:
        return 0.0
    return np.nan


def read_labels(csv: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read and check the label csv.

    Returns ``(labels, rejects)``: ``labels`` has columns id (str), boneage (float, months),
    male (bool), row (1-based line in the csv after the header); ``rejects`` has id, file, reason.
    Raises LabelsError naming the file when it cannot be read or lacks a required column.
    """
    csv = Path(csv)
    try:
        with warnings.catch_warnings():  # a row longer than the header: an error, not a silent index column
            warnings.simplefilter("error", pd.errors.ParserWarning)
            raw = pd.read_csv(csv, dtype=str, keep_default_na=False, index_col=False)
    except Exception as exc:
        raise LabelsError(f"cannot read label file {csv}: {first_line(exc)}") from exc
    raw.columns = [c.strip() for c in raw.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise LabelsError(
            f"label file {csv} lacks required column(s) {missing}; it has {list(raw.columns)}. "
            f"Expected columns: {', '.join(REQUIRED_COLUMNS)}"
        )
    if raw.empty:
        raise LabelsError(f"label file {csv} has a header but no rows: nothing to train on")
    df = pd.DataFrame({"id": raw["id"].str.strip(), "boneage_text": raw["boneage"].str.strip(),
                       "male_text": raw["male"].str.strip(), "row": np.arange(1, len(raw) + 1)})
    df["boneage"] = pd.to_numeric(df["boneage_text"], errors="coerce")
    df["male_value"] = df["male_text"].map(parse_sex)

    reasons = pd.Series("", index=df.index, dtype=object)

    def flag(mask, reason):
        # keep the first reason found for each row
        sel = mask & (reasons == "")
        reasons[sel] = reason if isinstance(reason, str) else reason[sel]

    flag(df["id"] == "", "empty id")
    flag(~df["id"].str.fullmatch(ID_PATTERN),
         "id '" + df["id"].str.slice(0, 80) + "' is not a plain name (letters, digits, '.', '_', '-', "
         "starting with a letter or digit, at most 128 characters)")
    lo, hi = BONEAGE_RANGE_MONTHS
    flag(df["boneage"].isna(), "boneage '" + df["boneage_text"] + "' is not a number")
    flag(
        (df["boneage"] < lo) | (df["boneage"] > hi),
        "boneage " + df["boneage_text"] + f" months outside {lo:g}-{hi:g}",
    )
    flag(df["male_value"].isna(), "sex value '" + df["male_text"] + "' not understood (use True/False)")
    dup = df["id"].duplicated(keep=False) & (df["id"] != "")
    if dup.any():
        rows_of = df[dup].groupby("id")["row"].apply(lambda r: ", ".join(map(str, r)))
        flag(dup, "duplicate id (csv rows " + df["id"].map(rows_of).fillna("") + ")")

    bad = reasons != ""
    rejects = pd.DataFrame({"id": df.loc[bad, "id"], "file": str(csv), "reason": reasons[bad]})
    labels = df.loc[~bad, ["id", "boneage", "male_value", "row"]].rename(columns={"male_value": "male"})
    labels["male"] = labels["male"].astype(bool)
    labels["boneage"] = labels["boneage"].astype(float)
    return labels.reset_index(drop=True), rejects.reset_index(drop=True)
