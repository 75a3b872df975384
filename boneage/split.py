"""Stage 3, split: a seeded train/val/test split stratified by age bin x sex, written as data.

Within each stratum (age bin of ``age_bin_months`` x sex) the ids are sorted, shuffled with the
seed, and cut into test, val and train by the fractions, so every subset spans all ages and both
sexes in the same proportions. The result ``split.csv`` (id, subset, stratum) is the only source of
the split for later stages; to fix a split by hand, edit a copy and point ``split.file`` at it.

With ``--folds K`` (K >= 2) the train+val pool is also cut into K folds for cross-validation, in the
same way (stratum by stratum, seeded; fold sizes differ by at most one image per stratum):
``folds.csv`` (id, fold, stratum) is the fold table, again editable data (``split.folds_file``),
and ``folds/fold<k>.csv`` the split file of fold k's model, in the format of ``split.csv``: fold k is
its ``val``, the other folds its ``train``, the test split stays ``test`` and unseen by every fold.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .files import read_table, run_main, setup_logging, write_table
from .learning.data import SUBSETS, SplitError, check_split, summary_path

log = logging.getLogger("boneage.split")


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


def stratified_folds(split: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    """Fold 0..k-1 of every train+val id, dealt round-robin within each stratum after a seeded shuffle."""
    pool = split.loc[split["subset"] != "test", ["id", "stratum"]]
    rng = np.random.default_rng([seed, k])  # a fold table of its own, not a continuation of the split's
    parts = []
    for stratum, ids in pool.groupby("stratum", sort=True)["id"]:
        ids = np.sort(ids.to_numpy())[rng.permutation(len(ids))]
        parts.append(pd.DataFrame({"id": ids, "fold": np.arange(len(ids)) % k, "stratum": stratum}))
    return pd.concat(parts, ignore_index=True).sort_values("id", kind="stable").reset_index(drop=True)


def check_folds(folds: pd.DataFrame, split: pd.DataFrame, k: int, source: str) -> pd.DataFrame:
    """A fold table must give each train+val id of the split one fold in 0..k-1 and leave no fold empty."""
    missing = {"id", "fold"} - set(folds.columns)
    if missing:
        raise SplitError(f"folds file {source} lacks column(s) {sorted(missing)}")
    folds = folds.copy()
    folds["id"] = folds["id"].astype(str)
    if folds["id"].duplicated().any():
        raise SplitError(f"folds file {source}: ids listed twice, e.g. {folds['id'][folds['id'].duplicated()].tolist()[:5]}")
    pool = set(split.loc[split["subset"] != "test", "id"])
    extra, lacking = sorted(set(folds["id"]) - pool), sorted(pool - set(folds["id"]))
    if extra or lacking:
        raise SplitError(f"folds file {source} must list exactly the split's train and val ids: "
                         f"{len(extra)} others (e.g. {extra[:3]}; test ids stay out of every fold), "
                         f"{len(lacking)} missing (e.g. {lacking[:3]})")
    fold = pd.to_numeric(folds["fold"], errors="coerce")
    if fold.isna().any() or not fold.isin(range(k)).all():
        raise SplitError(f"folds file {source}: fold values must be integers 0..{k - 1} (split.folds = {k})")
    empty = sorted(set(range(k)) - set(fold.astype(int)))
    if empty:
        raise SplitError(f"folds file {source}: fold(s) {empty} have no images")
    folds["fold"] = fold.astype(int)
    return folds


def fold_split(split: pd.DataFrame, folds: pd.DataFrame, fold: int) -> pd.DataFrame:
    """The split file of one fold's model: that fold is ``val``, the other folds ``train``."""
    out = split[["id", "subset", "stratum"]].copy()
    held_out = out["id"].isin(folds.loc[folds["fold"] == fold, "id"])
    pool = out["subset"] != "test"
    out.loc[pool, "subset"] = np.where(held_out[pool], "val", "train")
    return out


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


def write_folds(split: pd.DataFrame, folds_path: Path, k: int, seed: int, folds_file: str | None) -> None:
    """``folds.csv`` beside the split, and ``folds/fold<k>.csv``: each fold model's split file."""
    if folds_file:
        folds = check_folds(pd.read_csv(folds_file, dtype={"id": str}), split, k, folds_file)
        log.info("using the folds from %s", folds_file)
    else:
        folds = check_folds(stratified_folds(split, k, seed), split, k, "stratified folds")
    write_table(folds, folds_path)
    counts = folds["fold"].value_counts().sort_index()
    log.info("%d folds of the %d train+val images: %s", k, len(folds), counts.to_dict())
    for fold in range(k):
        write_table(fold_split(split, folds, fold), folds_path.parent / "folds" / f"fold{fold}.csv")


def run(index_path: Path, out: Path, val_fraction: float, test_fraction: float,
        age_bin_months: float, seed: int, split_file: str | None = None, folds: int = 0,
        folds_file: str | None = None) -> pd.DataFrame:
    index = read_table(index_path, "snakemake --forcerun preprocess")
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
    write_table(table, summary_path(out))
    log.info("split:\n%s", table.to_string(index=False))
    if folds:
        write_folds(split, out.with_name("folds.csv"), folds, seed, folds_file)
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
    parser.add_argument("--folds", type=int, required=True,
                        help="cross-validation folds of the train+val pool (folds.csv beside --out); 0: none")
    parser.add_argument("--folds-file", default=None, help="use this folds.csv (id,fold) instead")
    args = parser.parse_args(argv)
    if args.folds == 1 or args.folds < 0:
        parser.error(f"--folds {args.folds}: use 0 (no cross-validation) or 2 or more")
    setup_logging()
    try:
        run(Path(args.index), Path(args.out), args.val_fraction, args.test_fraction,
            args.age_bin_months, args.seed, args.split_file, args.folds, args.folds_file)
    except SplitError as exc:
        log.error("%s", exc)
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
