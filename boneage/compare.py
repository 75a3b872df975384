"""Compare the predictions of models from different runs on the same split: paired MAE differences,
error correlation, and what their mean would score.

The report's comparisons table (``results/report/tables/comparisons.csv``) pairs the models of one
run. Models of different runs (another input size, crop region, network, or commit) can only be set
side by side from their written ``predictions.parquet`` files: the seeded split gives every run of
one data set the same validation and test films, and the films are matched by id. Per subset, for
every two models: the MAE difference with its 95 % paired-bootstrap interval
(:func:`boneage.results.tables.comparisons_table`); the correlation of their signed errors on the test
films (two seeds of one setting correlate at 0.93-0.95 on RSNA, docs/accuracy.md); and the test MAE
of all models averaged, with equal weights and with non-negative weights fitted on the validation
films (:func:`boneage.results.combine.combine`), each with its bootstrap interval and its paired difference
from the member with the lowest validation MAE (the one a user would keep alone). A diagnostic on
files already written, not a trained recipe.

The intervals resample the films, not the training (``SEED_NOTE``, printed under the pairs table;
docs/accuracy.md, "Every film to 8 bit by its own range").

    python -m boneage.compare --run hand results/evaluate/efficientnet_lite0_sex/predictions.parquet \\
        --run wrist ../other-run/results/evaluate/efficientnet_lite0_sex/predictions.parquet --out compare/
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from .files import run_main, setup_logging, write_table
from .results.combine import combine
from .results.tables import abs_errors, comparisons_table, markdown
from .results.uncertainty import Bootstrap, mean_interval, paired_difference

log = logging.getLogger("boneage.compare")

COLUMNS = ["id", "subset", "boneage", "male", "pred"]
SEED_NOTE = ("The intervals resample the films and hold no training noise: two seeds of one setting can differ "
             "beyond them (0.16 months on RSNA, docs/accuracy.md). Between single runs, call a difference only "
             "where it exceeds the seed spread (config repeats).")


def read_predictions(path: Path) -> pd.DataFrame:
    """One model's predictions.parquet (of the evaluate or ensemble stage), checked for the columns used."""
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable predictions.parquet ({exc})") from exc
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: no column {', '.join(missing)}; expected a predictions.parquet of the "
                         "evaluate or ensemble stage")
    table = table[COLUMNS].copy()
    table["id"] = table["id"].astype(str)
    if table.duplicated(["id", "subset"]).any():
        raise ValueError(f"{path}: an image id appears twice in one subset")
    return table


def compare(tables: dict[str, pd.DataFrame], bootstrap: Bootstrap = Bootstrap()) -> dict[str, pd.DataFrame]:
    """``tables``: model name -> its predictions. Returns the tables ``pairs`` (paired MAE differences
    per subset), ``correlation`` (signed test errors) and ``mean`` (test MAE of the models averaged,
    and its paired difference from the member with the lowest validation MAE)."""
    if len(tables) < 2:
        raise ValueError("compare needs the predictions of two models or more")
    first, *rest = tables
    tests = {n: set(t.loc[t["subset"] == "test", "id"]) for n, t in tables.items()}
    for name in rest:
        if tests[name] != tests[first]:
            raise ValueError(f"{first} and {name} were scored on different test films ({len(tests[first] & tests[name])} "
                             f"shared of {len(tests[first])} and {len(tests[name])}): compare runs of one split")
    errors = abs_errors(tables)
    pairs = comparisons_table(errors, bootstrap)
    # the mean against the member a user would keep alone: the lowest validation MAE, not test
    val = errors.get("val", {})
    best = min(val, key=lambda n: val[n].mean()) if len(val) == len(tables) else None
    rows = []
    for weighting in ("equal", "fit"):
        merged, weights = combine(tables, weighting)
        test = merged[merged["subset"] == "test"]  # each member's pred in a column of its name
        if weighting == "equal":
            signed = pd.DataFrame({n: test[n] - test["boneage"] for n in tables})
            correlation = signed.corr().round(3).rename_axis("model").reset_index()
        err = (test["pred_raw"] - test["boneage"]).abs()
        mae, low, high = mean_interval(err, bootstrap)
        row = {"weighting": weighting, **{f"w_{n}": round(w, 3) for n, w in weights.items()},
               "n": len(test), "test_mae": mae, "ci_low": low, "ci_high": high}
        if best:
            diff = paired_difference(err, (test[best] - test["boneage"]).abs(), bootstrap)
            row.update({"against": best, "diff": diff[0], "diff_low": diff[1], "diff_high": diff[2]})
        rows.append(row)
    return {"pairs": pairs, "correlation": correlation, "mean": pd.DataFrame(rows)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs=2, action="append", required=True, metavar=("NAME", "PREDICTIONS"),
                        help="a model's name and its predictions.parquet; two or more")
    parser.add_argument("--out", default=None, help="also write pairs.csv, correlation.csv, mean.csv here")
    Bootstrap.add_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()
    names = [name for name, _ in args.run]
    if len(set(names)) != len(names):
        parser.error(f"model names repeat: {names}")
    try:
        tables = {name: read_predictions(Path(path)) for name, path in args.run}
        out = compare(tables, Bootstrap.from_args(args))
    except ValueError as exc:
        log.error("%s", exc)
        sys.exit(1)
    for name, table in out.items():
        print(f"\n## {name}\n\n{markdown(table)}")
        if name == "pairs":
            print(f"\n{SEED_NOTE}")
        if args.out:
            write_table(table, Path(args.out) / f"{name}.csv")


if __name__ == "__main__":
    run_main(main)
