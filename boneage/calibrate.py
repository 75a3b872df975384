"""Calibrate: a bundle adapted to a local labelled set of films (another population, scanner, readers).

A model trained on RSNA films can be off by a few months elsewhere: the open tool Deeplasia
overestimated 260 Georgian children by +2.85 months (girls) and +5.35 (boys), and a linear
calibration per sex fitted on 121 local films brought the bias to -0.03 / +0.58 (Deeplasia-GE,
Scientific Reports 2025). This stage does the same for a bundle of this project:

1. predict the local films with the parent bundle (its own preprocessing, TTA, corrections);
2. per sex, fit ``true = intercept + slope * estimate`` by least squares in the centred form
   ``true - estimate = a + b * (estimate - mean)`` and shrink each change toward none: ``a`` and
   ``b`` are multiplied by ``max(0, 1 - (SE / estimate)^2)``, the posterior mean under a normal
   prior centred on no change whose variance is estimated from the data (positive-part empirical
   Bayes; Efron and Morris 1973). A change many standard errors away from zero (a real shift, or a
   large set) is kept almost whole; one within its standard error (a small set, or a parent that
   already fits) is dropped to nothing, so an unshifted set leaves the bundle nearly unchanged;
3. score what that buys honestly: each film is estimated by a calibration fitted without it
   (``folds``-fold cross-fitting within each sex), and MAE and signed bias before and after, per sex,
   get 95 % bootstrap intervals, with the paired interval of the MAE change and a verdict;
4. refit the split-conformal interval on the cross-fitted residuals (each residual is one of a film
   the calibration did not see, so the interval keeps its coverage on new local films);
5. write a new bundle (a copy of the parent whose bundle.json adds the calibration, the interval,
   the local set's size per sex and hash, and the parent's hash) that ``predict`` uses unchanged.

A sex with fewer than ``min_films_per_sex`` labelled films keeps the parent's estimates (said so);
with neither sex there, nothing is written. Why 20: the residual SD of the RSNA recipe is about 10
months, so the mean offset of 20 films is known to +-2.2 months (SE) and a shift has to pass about
4.5 months to be told from chance; with fewer films the fit is mostly noise.

Outputs in ``--out-dir``: ``bundle/`` (the calibrated bundle, nothing of the local films in it but
their count and hash), ``calibration.json`` (the fit, the cross-fitted figures, and every film's
parent, cross-fitted and refitted estimate), ``calibration.html`` and ``parent/`` (the parent's
predictions of the local films, their preprocessed images). Exit status 1 with a message when the
set is too small or a file is unusable.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import logging
import math
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .files import atomic_dir, read_json, run_main, setup_logging, sha256_file, write_json, write_text
from .results.bundle import SEXES, Bundle, BundleError, calibrated
from .results.estimates import predict_files
from .results.intervals import coverage, halfwidth
from .results.page import PAGE_CSS, html_table
from .results.uncertainty import Bootstrap, mean_interval, paired_difference

log = logging.getLogger("boneage.calibrate")


class CalibrationError(ValueError):
    """A local set the calibration cannot use; the message says why and what would do."""


@dataclass(frozen=True)
class Settings:
    """How the calibration is fitted (config ``calibrate``)."""

    min_films_per_sex: int = 20
    folds: int = 10
    seed: int = 0


def write_calibrated(parent: Path, out_dir: Path, record: dict) -> dict:
    """A copy of the bundle ``parent`` in ``out_dir`` whose bundle.json carries ``record``
    (``calibration``, ``interval``, ``local_set``, ``parent``); the parent is only read."""
    with atomic_dir(out_dir) as tmp:
        shutil.copytree(parent, tmp, dirs_exist_ok=True)
        spec = read_json(tmp / "bundle.json")
        if spec.get("stability"):
            spec["stability"] = {**spec["stability"], "measured_on": "the parent's internal test split, before the "
                                 "calibration (a slope s scales each sex's spread by s)"}
        spec.update(record)
        write_json(tmp / "bundle.json", spec)
    return spec


def _keep(estimate: float, se: float) -> float:
    """Empirical-Bayes share of a fitted change kept: ``max(0, 1 - (se / estimate)^2)``."""
    return max(0.0, 1.0 - (se / estimate) ** 2) if estimate and math.isfinite(se) else 0.0


def fit(estimate: np.ndarray, true: np.ndarray) -> dict:
    """``true ~ intercept + slope * estimate``, each change from (0, 1) shrunk toward no change by
    its empirical-Bayes share (:func:`_keep`; module docstring)."""
    n = len(estimate)
    centre = float(estimate.mean())
    x, d = estimate - centre, true - estimate
    spread = float((x ** 2).sum())
    a = float(d.mean())
    b = float((x * (d - a)).sum() / spread) if spread > 0 else 0.0
    sigma = math.sqrt(float(((d - a - b * x) ** 2).sum()) / (n - 2)) if n > 2 else math.inf
    se_a = sigma / math.sqrt(n)
    se_b = sigma / math.sqrt(spread) if spread > 0 else math.inf
    keep_a, keep_b = _keep(a, se_a), _keep(b, se_b)
    a_kept, b_kept = keep_a * a, keep_b * b
    return {"intercept": a_kept - b_kept * centre, "slope": 1.0 + b_kept, "n": int(n),
            "offset_at_mean_months": a_kept, "mean_estimate_months": centre,
            "kept": {"offset": keep_a, "slope": keep_b},
            "least_squares": {"offset_at_mean_months": a, "offset_se_months": se_a, "slope": 1.0 + b,
                              "slope_se": se_b, "residual_sd_months": sigma}}


def cross_fit(estimate: np.ndarray, true: np.ndarray, settings: Settings) -> np.ndarray:
    """Each film's estimate under a calibration fitted on the other folds (one sex's films)."""
    n = len(estimate)
    folds = np.random.default_rng(settings.seed).permutation(n) % min(settings.folds, n)
    out = np.empty(n)
    for k in np.unique(folds):
        held = folds == k
        c = fit(estimate[~held], true[~held])
        out[held] = c["intercept"] + c["slope"] * estimate[held]
    return out


def local_hash(films: pd.DataFrame) -> str:
    """sha256 of the films used (sorted by id): each file's sha256, its sex and its label."""
    digest = hashlib.sha256()
    for r in films.sort_values("id").itertuples():
        digest.update(f"{r.id}\t{sha256_file(r.source_file)}\t{int(r.male)}\t{float(r.boneage_true)!r}\n".encode())
    return digest.hexdigest()


def _figures(films: pd.DataFrame, bootstrap: Bootstrap) -> dict:
    """MAE and signed bias (estimate - true) before and after, with intervals, and the MAE change."""
    out, absolute = {"n": int(len(films))}, {}
    for when, column in (("before", "parent"), ("after", "crossfit")):
        err = films[column].to_numpy() - films["boneage_true"].to_numpy()
        absolute[when] = np.abs(err)
        mae, *mae_ci = mean_interval(absolute[when], bootstrap)
        bias, *bias_ci = mean_interval(err, bootstrap)
        out[when] = {"mae": mae, "mae_ci95": mae_ci, "bias": bias, "bias_ci95": bias_ci}
    change, low, high = paired_difference(absolute["after"], absolute["before"], bootstrap)
    out["mae_change"] = {"after_minus_before": change, "ci95": [low, high]}
    out["verdict"] = ("lowers the MAE" if high < 0 else "raises the MAE" if low > 0
                      else "does not change the MAE outside the noise")
    return out


def calibrate(films: pd.DataFrame, settings: Settings, bootstrap: Bootstrap, level: float) -> dict:
    """The fit per sex, the cross-fitted figures and the local interval for labelled ``films``
    (columns id, male, boneage_true, parent); adds columns ``crossfit`` and ``refit``."""
    fits, messages = {}, []
    counts = {sex: int((films["male"] == value).sum()) for sex, value in SEXES.items()}
    films["crossfit"] = films["parent"].astype(float)
    for sex, value in SEXES.items():
        rows, n = films["male"] == value, counts[sex]
        if n < settings.min_films_per_sex:
            fits[sex] = None
            if n:
                messages.append(f"{sex}: {n} labelled films, fewer than min_films_per_sex "
                                f"({settings.min_films_per_sex}): not calibrated, the parent's estimates stay")
            continue
        est, true = films.loc[rows, "parent"].to_numpy(float), films.loc[rows, "boneage_true"].to_numpy(float)
        fits[sex] = fit(est, true)
        films.loc[rows, "crossfit"] = cross_fit(est, true, settings)
    if not any(fits.values()):
        raise CalibrationError(f"too few labelled films of known sex to calibrate: {counts}; at least "
                               f"{settings.min_films_per_sex} of one sex are needed (calibrate.min_films_per_sex)")
    films["refit"] = calibrated(films["parent"], films["male"], fits)
    scored = {"all": _figures(films, bootstrap)}
    for sex, value in SEXES.items():
        if fits[sex]:
            scored[sex] = _figures(films[films["male"] == value], bootstrap)
            if scored[sex]["verdict"] != "lowers the MAE":
                messages.append(f"{sex}: weak fit, the calibration {scored[sex]['verdict']} (cross-fitted MAE change "
                                f"{scored[sex]['mae_change']['after_minus_before']:+.2f} months, 95 % CI "
                                f"[{scored[sex]['mae_change']['ci95'][0]:+.2f}, {scored[sex]['mae_change']['ci95'][1]:+.2f}])")
    q = halfwidth(films["crossfit"] - films["boneage_true"], level)
    interval = {"level": level, "halfwidth_months": q if math.isfinite(q) else None,
                "fitted_on": "cross-fitted residuals of the local films", "n_fit": int(len(films)),
                "method": "split conformal on absolute residuals"}
    return {"fits": fits, "n": counts, "crossfit": scored, "interval": interval, "messages": messages}


def run(bundle_dir: Path, inputs: list[str], csv: Path, out_dir: Path, settings: Settings = Settings(),
        device_name: str = "auto", threads: int = 1, bootstrap: Bootstrap = Bootstrap()) -> dict:
    parent = Bundle.read_spec(bundle_dir)
    if parent.get("calibration"):
        raise CalibrationError(f"{bundle_dir} is already calibrated (its parent: {parent['parent']['variant']}); "
                               "calibrate the parent bundle instead")
    table, _ = predict_files(inputs, csv, bundle_dir, out_dir / "parent", device_name, threads, bootstrap=bootstrap)
    usable = (table["error"] == "") & table["male"].notna() & table["boneage_true"].notna()
    excluded = {"failed": int((table["error"] != "").sum()),
                "sex unknown": int(((table["error"] == "") & table["male"].isna()).sum()),
                "no label": int(((table["error"] == "") & table["male"].notna() & table["boneage_true"].isna()).sum())}
    films = table.loc[usable, ["id", "source_file", "male", "boneage_true", "boneage_months"]].rename(
        columns={"boneage_months": "parent"}).reset_index(drop=True)
    level = parent["interval"].get("level") or 0.9
    result = calibrate(films, settings, bootstrap, level)
    n = result["n"]
    record = {
        "variant": f"{parent['variant']}_calibrated",
        "calibration": {**result["fits"], "n": n, "parent_variant": parent["variant"],
                        "method": "per sex, true = intercept + slope * estimate, least squares with each change "
                                  "shrunk by max(0, 1 - (SE / change)^2) (boneage.calibrate)"},
        "interval": result["interval"],
        "local_set": {"n": n, "sha256": local_hash(films)},
        "parent": {"variant": parent["variant"], "bundle_json_sha256": sha256_file(bundle_dir / "bundle.json")},
    }
    write_calibrated(bundle_dir, out_dir / "bundle", record)
    parent_q = parent["interval"].get("halfwidth_months")
    q = result["interval"]["halfwidth_months"]
    report = {
        **record, "settings": asdict(settings), "bootstrap": bootstrap.describe(), "files": int(len(table)),
        "excluded": excluded, "crossfit": result["crossfit"], "messages": result["messages"],
        "coverage": {"parent_interval_on_local": coverage(films["boneage_true"], films["parent"],
                                                          math.inf if parent_q is None else parent_q),
                     "local_interval_crossfitted": coverage(films["boneage_true"], films["crossfit"],
                                                            math.inf if q is None else q)},
        "films": films.drop(columns=["source_file"]).rename(columns={"boneage_true": "boneage"}).to_dict("records"),
    }
    write_json(out_dir / "calibration.json", report)
    write_text(out_dir / "calibration.html", page(report))
    for line in result["messages"]:
        log.warning("%s", line)
    everyone = result["crossfit"]["all"]
    log.info("calibrated %s on %d films (%s): cross-fitted MAE %.2f -> %.2f months; bundle %s", parent["variant"],
             len(films), n, everyone["before"]["mae"], everyone["after"]["mae"], out_dir / "bundle")
    return report


def _ci(pair) -> str:
    return f"[{pair[0]:.2f}, {pair[1]:.2f}]"


def page(report: dict) -> str:
    """``calibration.html``: what the calibration buys, in the report's style."""
    rows = []
    for group, s in report["crossfit"].items():
        rows.append({"films": group, "n": s["n"], "MAE before": s["before"]["mae"],
                     "MAE before 95 % CI": _ci(s["before"]["mae_ci95"]), "MAE after": s["after"]["mae"],
                     "MAE after 95 % CI": _ci(s["after"]["mae_ci95"]), "bias before": s["before"]["bias"],
                     "bias before 95 % CI": _ci(s["before"]["bias_ci95"]), "bias after": s["after"]["bias"],
                     "bias after 95 % CI": _ci(s["after"]["bias_ci95"]),
                     "MAE change": s["mae_change"]["after_minus_before"],
                     "MAE change 95 % CI": _ci(s["mae_change"]["ci95"]), "verdict": s["verdict"]})
    fits = [{"sex": sex, "films": f["n"], "intercept": f["intercept"], "slope": f["slope"],
             "offset at the mean estimate": f["offset_at_mean_months"],
             "least-squares offset": f["least_squares"]["offset_at_mean_months"],
             "its SE": f["least_squares"]["offset_se_months"], "share kept": f["kept"]["offset"],
             "least-squares slope": f["least_squares"]["slope"], "slope SE": f["least_squares"]["slope_se"],
             "slope share kept": f["kept"]["slope"]}
            for sex in SEXES if (f := report["calibration"][sex])]
    everyone = report["crossfit"]["all"]
    interval = report["interval"]
    cover = report["coverage"]
    messages = "".join(f"<li>{html.escape(m)}</li>" for m in report["messages"])
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Local calibration</title>"
        f"<style>{PAGE_CSS}</style></head><body>"
        f"<h1>Local calibration of {html.escape(report['parent']['variant'])}</h1>"
        f"<p class='headline'>On {everyone['n']} local films, each estimated by a calibration fitted without it, "
        f"the calibration {everyone['verdict']}: MAE {everyone['before']['mae']:.2f} → {everyone['after']['mae']:.2f} "
        f"months (change {everyone['mae_change']['after_minus_before']:+.2f}, 95 % CI "
        f"{_ci(everyone['mae_change']['ci95'])}).</p>"
        + (f"<ul class='warn'>{messages}</ul>" if messages else "")
        + "<h2>Before and after, cross-fitted</h2>" + html_table(pd.DataFrame(rows))
        + "<p class='note'>Months. Before: the parent bundle's estimates. After: each film's estimate under the "
        f"calibration fitted on the other folds of its sex ({report['settings']['folds']}-fold cross-fitting), "
        "so the figures are those a new local film can expect. Bias: mean of estimate - reference. Intervals: "
        "95 % percentile bootstrap over the films; the MAE change is paired.</p>"
        "<h2>The fit</h2>" + html_table(pd.DataFrame(fits))
        + "<p class='note'>Per sex, reference = intercept + slope × estimate, fitted on all local films of that sex: "
        "the least-squares change of offset and of slope, each shrunk toward no change by the share kept, "
        "max(0, 1 - (SE / change)²): a change within its standard error is dropped. "
        "Files left out: " + ", ".join(f"{n} {html.escape(why)}" for why, n in report["excluded"].items()) + ".</p>"
        "<h2>Prediction interval</h2>"
        f"<p>{interval['level']:.0%} split-conformal interval refitted on the cross-fitted local residuals: ±"
        + (f"{interval['halfwidth_months']:.1f}" if interval["halfwidth_months"] is not None else "∞")
        + f" months (cross-fitted coverage {cover['local_interval_crossfitted']['coverage']:.2f}); the parent's "
        f"interval covered {cover['parent_interval_on_local']['coverage']:.2f} of these films.</p>"
        f"<p class='note'>New bundle: bundle/ (parent bundle.json sha256 "
        f"{html.escape(report['parent']['bundle_json_sha256'][:16])}…, local set sha256 "
        f"{html.escape(report['local_set']['sha256'][:16])}…). Research use only.</p></body></html>")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="the parent bundle folder (results/bundles/<name>)")
    parser.add_argument("--images", nargs="+", required=True, help="the local films: files and/or folders "
                        "(PNG, JPEG, WebP, DICOM; as boneage.predict reads them)")
    parser.add_argument("--csv", required=True, help="id,male,boneage[,chronological_age_months] of the local "
                        "films (id: file name without extension; sex may come from DICOM PatientSex instead)")
    parser.add_argument("--out-dir", required=True, help="writes bundle/, calibration.json, calibration.html, parent/")
    parser.add_argument("--min-films-per-sex", type=int, default=Settings.min_films_per_sex,
                        help="fewer labelled films of a sex: that sex is not calibrated (default %(default)s)")
    parser.add_argument("--folds", type=int, default=Settings.folds, help="cross-fitting folds (default %(default)s)")
    parser.add_argument("--seed", type=int, default=Settings.seed, help="seed of the cross-fitting folds")
    Bootstrap.add_arguments(parser)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    setup_logging()
    if args.min_films_per_sex < 3 or args.folds < 2:
        parser.error("--min-films-per-sex must be >= 3 and --folds >= 2")
    settings = Settings(args.min_films_per_sex, args.folds, args.seed)
    try:
        run(Path(args.bundle), args.images, Path(args.csv), Path(args.out_dir), settings, args.device, args.threads,
            Bootstrap.from_args(args))
    except (CalibrationError, BundleError, ValueError, RuntimeError, FileNotFoundError) as exc:
        log.error("%s", exc)
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
