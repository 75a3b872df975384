"""Stage 3, split: a seeded train/val/test split stratified by age bin x sex, written as data.

Within each stratum (age bin of ``age_bin_months`` x sex) the ids are sorted, shuffled with the
seed, and cut into test, val and train by the fractions, so every subset spans all ages and both
sexes in the same proportions. The result ``split.csv`` (id, subset, stratum) is the only source of
the split for later stages; to fix a split by hand, edit a copy and point ``split.file`` at it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .files import setup_logging, write_table

log = logging.getLogger("boneage.split")

SUBSETS = ("train", "val", "test")


class SplitError(ValueError):
    pass


def stratified_split(index: pd.DataFrame, val_fraction: float, test_fraction: float,
                     age_bin_months: float, seed: int) -> pd.DataFrame:
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise SplitError(f"val_fraction {val_fraction} + test_fraction {test_fraction} must be < 1")
    df = index[["id", "boneage", "male"]].copy()
    df["id"] = df["id"].astype(str)
    age_bin = np.floor(df["boneage"].to_numpy() / age_bin_months).astype(int)
    df["stratum"] = [f"{'M' if m else 'F'}{int(b * age_bin_months)}" for m, b in zip(df["male"], age_bin)]
    rng = np.random.default_rng(seed)
    parts = []
    for stratum in sorted(df["stratum"].unique()):
        ids = np.sort(df.loc[df["stratum"] == stratum, "id"].to_numpy())
        ids = ids[rng.permutation(len(ids))]
        n_test = int(round(len(ids) * test_fraction))
        n_val = int(round(len(ids) * val_fraction))
        subset = np.array(["test"] * n_test + ["val"] * n_val + ["train"] * (len(ids) - n_test - n_val))
        parts.append(pd.DataFrame({"id": ids, "subset": subset, "stratum": stratum}))
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values("id", kind="stable").reset_index(drop=True)


def check_split(split: pd.DataFrame, index: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check a split table against the index: known subsets, no unknown or duplicated ids."""
    missing = {"id", "subset"} - set(split.columns)
    if missing:
        raise SplitError(f"split file {source} lacks column(s) {sorted(missing)}")
    split = split.copy()
    split["id"] = split["id"].astype(str)
    bad = sorted(set(split["subset"]) - set(SUBSETS))
    if bad:
        raise SplitError(f"split file {source}: unknown subset(s) {bad}; use {SUBSETS}")
    dup = split["id"][split["id"].duplicated()].tolist()
    if dup:
        raise SplitError(f"split file {source}: ids listed twice, e.g. {dup[:5]}")
    unknown = sorted(set(split["id"]) - set(index["id"].astype(str)))
    if unknown:
        raise SplitError(f"split file {source}: {len(unknown)} ids not in the index, e.g. {unknown[:5]}")
    for subset in ("train", "val"):
        if not (split["subset"] == subset).any():
            why = ""
            if "stratum" in split.columns:  # made here: say why the strata gave none
                why = (f": {len(split)} images in {split['stratum'].nunique()} strata (age bin x sex), and "
                       f"each stratum's share rounds to 0 images. Use more images, a wider "
                       f"split.age_bin_months or a larger split.{subset}_fraction")
            raise SplitError(f"split from {source} has no '{subset}' images{why}")
    if "stratum" not in split.columns:
        split["stratum"] = ""
    return split


def summary(split: pd.DataFrame, index: pd.DataFrame) -> pd.DataFrame:
    merged = split.merge(index[["id", "boneage", "male"]].astype({"id": str}), on="id")
    return merged.groupby("subset").agg(
        images=("id", "size"),
        male_share=("male", "mean"),
        boneage_mean=("boneage", "mean"),
        boneage_median=("boneage", "median"),
        boneage_min=("boneage", "min"),
        boneage_max=("boneage", "max"),
    ).reindex([s for s in SUBSETS if s in set(split["subset"])]).reset_index().round(3)


def run(index_path: Path, out: Path, val_fraction: float, test_fraction: float,
        age_bin_months: float, seed: int, split_file: str | None = None) -> pd.DataFrame:
    index = pd.read_parquet(index_path)
    index["id"] = index["id"].astype(str)
    if split_file:
        split = check_split(pd.read_csv(split_file, dtype={"id": str}), index, split_file)
        not_listed = len(set(index["id"]) - set(split["id"]))
        if not_listed:
            log.warning("%d indexed images are not in %s and are left out", not_listed, split_file)
        log.info("using the split from %s", split_file)
    else:
        split = check_split(stratified_split(index, val_fraction, test_fraction, age_bin_months, seed),
                            index, "stratified split")
    write_table(split, out)
    table = summary(split, index)
    write_table(table, out.with_name("split_summary.csv"))
    log.info("split:\n%s", table.to_string(index=False))
    return split


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", required=True)
    parser.add_argument("--out", required=True, help="split.csv to write")
    parser.add_argument("--val-fraction", type=float, required=True)
    parser.add_argument("--test-fraction", type=float, required=True)
    parser.add_argument("--age-bin-months", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--split-file", default=None, help="use this split.csv instead")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        run(Path(args.index), Path(args.out), args.val_fraction, args.test_fraction,
            args.age_bin_months, args.seed, args.split_file)
    except SplitError as exc:
        log.error("%s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
