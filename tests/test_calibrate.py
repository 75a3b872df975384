"""Local calibration of a bundle: the fit against numbers whose answer is known, then a trained
bundle calibrated to demo films with a known shift, through the CLI code and the Snakemake target."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from boneage.calibrate import CalibrationError, Settings, calibrate, fit
from boneage.results.uncertainty import Bootstrap

from .conftest import SAME_MONTHS, planned_rules, snakemake

# A parent good enough for a 6-9 month shift to stand out of its errors: the smoke run's one-epoch
# models err by ~40 months (SD), against which 80 films know an offset only to +-5 months, and the
# calibration rightly keeps two thirds of it. This ResNet-18 (300 demo films, 64 px, 10 epochs)
# trains in about a minute on 2 cores.
CONFIG_TEXT = """
demo: {n_images: 300}
variants: [resnet18]
epochs: 10
split: {test_fraction: 0.15}
evaluate: {stability_views: 0}
"""


def _films(n: int, shift_female: float, shift_male: float, seed: int = 0) -> pd.DataFrame:
    """Estimates of a parent with a 9-month error SD, and local labels shifted per sex."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(20, 220, n)
    male = (np.arange(n) % 2).astype(float)
    parent = truth + rng.normal(0, 9, n)
    shift = np.where(male == 1, shift_male, shift_female)
    return pd.DataFrame({"id": [str(i) for i in range(n)], "male": male, "boneage_true": truth + shift,
                         "parent": parent})


def test_a_shift_many_standard_errors_wide_is_kept_and_no_shift_is_dropped():
    films = _films(200, 9.0, 0.0)
    girls, boys = films[films["male"] == 0], films[films["male"] == 1]
    shifted = fit(girls["parent"].to_numpy(), girls["boneage_true"].to_numpy())
    assert shifted["kept"]["offset"] > 0.9 and shifted["offset_at_mean_months"] == pytest.approx(9.0, abs=2.0)
    unshifted = fit(boys["parent"].to_numpy(), boys["boneage_true"].to_numpy())
    ls = unshifted["least_squares"]
    assert abs(ls["offset_at_mean_months"]) < 2 * ls["offset_se_months"]  # this draw: no shift to find
    assert unshifted["kept"]["offset"] < 0.75  # a change within two standard errors keeps at most 3/4
    assert abs(unshifted["offset_at_mean_months"]) < abs(ls["offset_at_mean_months"])


def test_an_unshifted_set_leaves_the_mae_inside_the_parents_interval():
    films = _films(200, 0.0, 0.0, seed=3)
    everyone = calibrate(films, Settings(), Bootstrap(), 0.9)["crossfit"]["all"]
    low, high = everyone["before"]["mae_ci95"]
    assert low <= everyone["after"]["mae"] <= high


def test_the_cross_fitted_figures_show_what_the_calibration_buys_per_sex():
    films = _films(240, 9.0, -6.0, seed=1)
    result = calibrate(films, Settings(), Bootstrap(), 0.9)
    for sex in ("female", "male"):
        s = result["crossfit"][sex]
        assert abs(s["after"]["bias"]) < 2 and abs(s["before"]["bias"]) > 5
        assert s["after"]["mae"] < s["before"]["mae"] and s["verdict"] == "lowers the MAE"
        assert s["mae_change"]["ci95"][0] <= s["mae_change"]["after_minus_before"] <= s["mae_change"]["ci95"][1]
    # the interval is refitted on residuals of films no calibration saw: about 90 % of them inside
    q = result["interval"]["halfwidth_months"]
    assert np.mean(np.abs(films["crossfit"] - films["boneage_true"]) <= q) >= 0.9


def test_a_sex_below_the_minimum_keeps_the_parents_estimates_and_neither_sex_refuses():
    films = _films(60, 9.0, -6.0)
    few_boys = films[(films["male"] == 0) | (films.index < 20)].reset_index(drop=True)  # 10 boys, 30 girls
    result = calibrate(few_boys, Settings(min_films_per_sex=20), Bootstrap(), 0.9)
    assert result["fits"]["male"] is None and result["fits"]["female"] is not None
    boys = few_boys["male"] == 1
    assert (few_boys.loc[boys, "refit"] == few_boys.loc[boys, "parent"]).all()
    assert any("male: 10 labelled films" in m for m in result["messages"])
    with pytest.raises(CalibrationError, match="too few labelled films"):
        calibrate(films.iloc[:30].reset_index(drop=True), Settings(min_films_per_sex=20), Bootstrap(), 0.9)


# --- a trained bundle ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("calibrate")
    (workdir / "parent.yaml").write_text(CONFIG_TEXT)
    snakemake(workdir, "bundles", "--cores", "2", "--configfile", str(workdir / "parent.yaml"))
    return workdir


def _local_set(folder, n: int, shift_female: float, shift_male: float):
    """Demo films the bundle never saw (another seed) as a hospital's labelled set, labels shifted per
    sex: the films and the csv."""
    from boneage.imaging.demo import generate

    labels = generate(folder, n, seed=11)
    labels["boneage"] = labels["boneage"] + labels["male"].astype(bool).map({True: shift_male, False: shift_female})
    labels[["id", "male", "boneage"]].to_csv(folder / "local.csv", index=False)
    return folder / "boneage-training-dataset", folder / "local.csv"


def test_a_calibration_removes_a_local_shift_and_leaves_an_unshifted_set_alone(trained, tmp_path):
    from boneage.calibrate import run as calibrate
    from boneage.files import sha256_file
    from boneage.predict import run as predict

    parent = trained / "results" / "bundles" / "resnet18"
    before = {p.name: sha256_file(p) for p in parent.iterdir() if p.is_file()}
    images, csv = _local_set(tmp_path / "local", 160, +9.0, -6.0)
    report = calibrate(parent, [str(images)], csv, tmp_path / "shifted", threads=2)
    for sex in ("female", "male"):
        assert abs(report["crossfit"][sex]["after"]["bias"]) <= 2, report["crossfit"][sex]
    assert report["crossfit"]["all"]["after"]["mae"] < report["crossfit"]["all"]["before"]["mae"]
    new = json.loads((tmp_path / "shifted" / "bundle" / "bundle.json").read_text())
    assert new["parent"]["bundle_json_sha256"] == before["bundle.json"]
    assert new["local_set"]["n"] == report["local_set"]["n"] and sum(new["local_set"]["n"].values()) == 160
    assert {p.name: sha256_file(p) for p in parent.iterdir() if p.is_file()} == before  # the parent untouched
    # the calibrated bundle through predict gives the refit of calibration.json, film by film
    table = predict([str(images)], csv, tmp_path / "shifted" / "bundle", tmp_path / "predicted")
    refit = pd.DataFrame(report["films"]).merge(table[["id", "boneage_months"]], on="id")
    assert len(refit) == 160 and (refit["refit"] - refit["boneage_months"]).abs().max() < SAME_MONTHS
    assert "Local calibration of resnet18" in (tmp_path / "shifted" / "calibration.html").read_text()

    images, csv = _local_set(tmp_path / "plain", 160, 0.0, 0.0)
    everyone = calibrate(parent, [str(images)], csv, tmp_path / "unshifted", threads=2)["crossfit"]["all"]
    low, high = everyone["before"]["mae_ci95"]
    assert low <= everyone["after"]["mae"] <= high, everyone


def test_the_calibrate_target_writes_a_bundle_and_reruns_only_on_its_own_keys(trained, tmp_path):
    images, csv = _local_set(tmp_path / "local", 60, +9.0, -6.0)
    config = str(trained / "parent.yaml")
    overlay = tmp_path / "calibrate.yaml"
    overlay.write_text(f"calibrate:\n  images: [{images}]\n  csv: {csv}\n  bundle: resnet18\n")
    snakemake(trained, "calibrate", "--cores", "2", "--configfile", config, str(overlay))
    out = trained / "results" / "calibrate" / "resnet18"
    assert (out / "bundle" / "bundle.json").is_file() and (out / "calibration.html").is_file()
    assert not planned_rules(snakemake(trained, "-n", "calibrate", "--configfile", config, str(overlay)))
    edited = tmp_path / "edited.yaml"
    edited.write_text(overlay.read_text() + "  folds: 5\n")
    assert planned_rules(snakemake(trained, "-n", "calibrate", "--configfile", config, str(edited))) == {
        "calibrate_bundle", "calibrate"}
    missing = snakemake(trained, "-n", "calibrate", "--configfile", config, check=False)
    assert missing.returncode != 0 and "calibrate.images" in missing.stdout + missing.stderr
