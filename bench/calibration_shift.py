"""Local calibration where the answer is known: a bundle's own test films as another hospital's set.

Draws N films at random (``--seed``) from the test split of the run that made the bundle (films it
was never trained on), writes their labels shifted by ``--shift-girls`` / ``--shift-boys`` months
(default +9 / -6, the size of shift Deeplasia-GE met) and unshifted, runs ``python -m
boneage.calibrate`` on each, and prints the cross-fitted MAE and signed bias before and after, per
sex, with their 95 % intervals, the fit and the interval's coverage (docs/accuracy.md, "Local
calibration").

    .venv/bin/python bench/calibration_shift.py --bundle results/bundles/efficientnet_lite0_sex \\
        --split results/split/split.csv --data ../shared/data/rsna-train-299 --films 60 240 1000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from boneage.imaging.ingest import parse_sex  # noqa: E402
from boneage.imaging.layout import resolve_layout  # noqa: E402


def _ci(pair) -> str:
    return f"[{pair[0]:+.2f}, {pair[1]:+.2f}]"


def show(name: str, report: dict) -> None:
    for group, s in report["crossfit"].items():
        print(f"{name:16s} {group:6s} n={s['n']:4d}  MAE {s['before']['mae']:.2f} -> {s['after']['mae']:.2f}  "
              f"change {s['mae_change']['after_minus_before']:+.2f} {_ci(s['mae_change']['ci95'])}  bias "
              f"{s['before']['bias']:+.2f} -> {s['after']['bias']:+.2f} {_ci(s['after']['bias_ci95'])}  {s['verdict']}")
    for sex in ("female", "male"):
        f = report["calibration"][sex]
        if f:
            ls = f["least_squares"]
            print(f"{'':16s} {sex}: intercept {f['intercept']:+.2f} slope {f['slope']:.3f}; least-squares offset "
                  f"{ls['offset_at_mean_months']:+.2f} +- {ls['offset_se_months']:.2f} (kept {f['kept']['offset']:.2f}), "
                  f"slope {ls['slope']:.3f} (kept {f['kept']['slope']:.2f})")
    cover = report["coverage"]
    print(f"{'':16s} local interval +-{report['interval']['halfwidth_months']:.1f}: cross-fitted coverage "
          f"{cover['local_interval_crossfitted']['coverage']:.3f}; the parent's interval covered "
          f"{cover['parent_interval_on_local']['coverage']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--split", required=True, help="split.csv of the run that trained the bundle")
    parser.add_argument("--data", required=True, help="RSNA-layout folder of the films")
    parser.add_argument("--films", type=int, nargs="+", default=[60, 240])
    parser.add_argument("--shift-girls", type=float, default=9.0)
    parser.add_argument("--shift-boys", type=float, default=-6.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="calibration_shift")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    layout = resolve_layout(args.data)
    split = pd.read_csv(args.split, dtype={"id": str})
    labels = pd.read_csv(layout.labels_csv, dtype={"id": str})
    labels["male"] = labels["male"].map(parse_sex)
    test = labels[labels["id"].isin(split.loc[split["subset"] == "test", "id"])]
    files = {p.stem: p for p in layout.image_dir.iterdir()}
    for n in args.films:
        films = test.sample(n, random_state=args.seed)
        for name, girls, boys in (("shifted", args.shift_girls, args.shift_boys), ("unshifted", 0.0, 0.0)):
            out = Path(args.out).resolve() / f"{name}_{n}"
            out.mkdir(parents=True, exist_ok=True)
            local = films.assign(boneage=films["boneage"] + films["male"].map({1.0: boys, 0.0: girls}))
            local[["id", "male", "boneage"]].to_csv(out / "local.csv", index=False)
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "boneage.calibrate", "--bundle", str(Path(args.bundle).resolve()), "--images",
                            *(str(files[i]) for i in films["id"]), "--csv", str(out / "local.csv"), "--out-dir",
                            str(out / "calibrated"), "--threads", str(args.threads)], check=True, cwd=REPO,
                           capture_output=True)
            print(f"{name} {n} films: {time.perf_counter() - start:.1f} s")
            show(f"{name} {n}", json.loads((out / "calibrated" / "calibration.json").read_text()))


if __name__ == "__main__":
    main()
