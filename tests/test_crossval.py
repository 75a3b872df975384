"""K-fold cross-validation (split.folds): the fold table, fold models as jobs, the fold ensemble."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from boneage.split import SplitError, check_folds, fold_split, stratified_folds, stratified_split

from .conftest import REPO, SAME_MONTHS, planned_jobs, planned_rules, snakemake

SMOKE = str(REPO / "configs" / "smoke.yaml")


def _split(n=400, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    index = pd.DataFrame({"id": [str(1000 + i) for i in range(n)], "boneage": rng.uniform(1, 228, n),
                          "male": rng.integers(0, 2, n).astype(bool)})
    return stratified_split(index, 0.15, 0.15, 24, 42)


def test_folds_cover_the_train_val_pool_once_stratified_and_seeded():
    split = _split()
    folds = stratified_folds(split, 5, 42)
    pool = split.loc[split["subset"] != "test"]
    assert sorted(folds["id"]) == sorted(pool["id"])  # every train+val image once, no test image
    counts = folds.groupby(["stratum", "fold"]).size().unstack(fill_value=0)
    assert (counts.max(axis=1) - counts.min(axis=1)).max() <= 1  # each stratum dealt evenly over the folds
    assert folds.equals(stratified_folds(split, 5, 42)) and not folds.equals(stratified_folds(split, 5, 43))
    for k in range(5):
        one = fold_split(split, folds, k)
        held_out = set(folds.loc[folds["fold"] == k, "id"])
        assert set(one.loc[one["subset"] == "val", "id"]) == held_out
        assert set(one.loc[one["subset"] == "test", "id"]) == set(split.loc[split["subset"] == "test", "id"])
        assert set(one.loc[one["subset"] == "train", "id"]) == set(pool["id"]) - held_out


@pytest.mark.parametrize("edit, message", [
    (lambda f, s: pd.concat([f, s[s["subset"] == "test"].head(1).assign(fold=0)]), "test ids stay out"),
    (lambda f, s: f.iloc[1:], "1 missing"),
    (lambda f, s: f.assign(fold=f["fold"].where(f.index > 0, 7)), "integers 0..2"),
    (lambda f, s: f.assign(fold=f["fold"].replace(2, 1)), "fold(s) [2] have no images"),
])
def test_a_hand_edited_fold_table_is_checked(edit, message):
    split = _split()
    folds = stratified_folds(split, 3, 42)
    with pytest.raises(SplitError, match=re.escape(message)):
        check_folds(edit(folds, split), split, 3, "my_folds.csv")


@pytest.fixture(scope="module")
def folds_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("folds")
    overlay = workdir / "folds.yaml"
    # one box per film (the smoke config's 9 box views go through bundles in test_pipeline): 9x fewer
    # estimates in each of the 8 evaluation and 3 bundle jobs
    overlay.write_text("variants: [resnet18]\nrepeats: 2\nsplit:\n  folds: 3\n"
                       "ensemble:\n  variants: [resnet18, resnet18_folds]\nevaluate:\n  box_shift: 0\n")
    args = ("--configfile", SMOKE, str(overlay))
    snakemake(workdir, "all", "--cores", "2", *args)
    return workdir, args


def test_three_folds_give_three_fold_models_out_of_fold_metrics_and_a_fold_ensemble(folds_run):
    workdir, _ = folds_run
    r = workdir / "results"
    folds = pd.read_csv(r / "split" / "folds.csv", dtype={"id": str})
    for k in range(3):
        assert (r / "models" / "resnet18" / f"fold{k}" / "model.pt").is_file()
        summary = json.loads((r / "models" / "resnet18" / f"fold{k}" / "train_summary.json").read_text())
        assert summary["train_images"] == (folds["fold"] != k).sum()  # trained on the other folds only
    pred = pd.read_parquet(r / "evaluate" / "resnet18_folds" / "predictions.parquet")
    oof = pred[pred["subset"] == "val"]
    assert sorted(oof["id"]) == sorted(folds["id"])  # each pool image predicted once, out of fold
    assert (oof.merge(folds, on="id").eval("fold_x == fold_y")).all()  # by the model that held it out
    tests = [pd.read_parquet(r / "evaluate" / "resnet18" / f"fold{k}" / "predictions.parquet").query("subset == 'test'")
             .set_index("id")["pred"] for k in range(3)]
    mean = pred[pred["subset"] == "test"].set_index("id")["pred"]
    assert np.allclose(mean.sort_index(), sum(tests).sort_index() / 3)  # test: the folds' mean
    ensemble = json.loads((r / "evaluate" / "ensemble" / "metrics.json").read_text())
    assert set(ensemble["weights"]) == {"resnet18", "resnet18_folds"}
    for name in ("resnet18_folds", "ensemble"):  # combined models' test-retest spread, from their members'
        stable = json.loads((r / "evaluate" / name / "metrics.json").read_text())["stability"]
        assert stable["views"] == 2 and stable["n"] == ensemble["test"]["n"] and stable["sd_median_months"] > 0
    table = pd.read_csv(r / "report" / "tables" / "folds.csv")
    assert list(table["fold"].astype(str))[:3] == ["0", "1", "2"] and len(table) == 4
    assert "Cross-validation" in (r / "report" / "index.html").read_text()
    members = json.loads((r / "bundles" / "ensemble" / "bundle.json").read_text())["members"]
    assert [m["name"] for m in members] == ["resnet18", "resnet18_folds/fold0", "resnet18_folds/fold1",
                                            "resnet18_folds/fold2"]
    assert abs(sum(m["weight"] for m in members) - 1) < 1e-9


def test_repeats_train_seed_models_as_jobs_with_their_spread_and_a_seed_ensemble(folds_run):
    workdir, _ = folds_run
    r = workdir / "results"
    seeds = [json.loads((r / "models" / m / "train_summary.json").read_text())["spec"]["seed"]
             for m in ("resnet18", "resnet18/seed1")]
    assert seeds == [42, 43]  # the variant is seed 0; seed1 trains with the variant's seed + 1
    assert (r / "logs" / "train" / "resnet18" / "seed1.log").stat().st_size > 0  # a job of its own
    assert (r / "benchmarks" / "evaluate" / "resnet18" / "seed1.tsv").is_file()
    members = [r / "evaluate" / m for m in ("resnet18", "resnet18/seed1")]
    maes = [json.loads((p / "metrics.json").read_text())["test"]["mae"] for p in members]
    metrics = json.loads((r / "evaluate" / "resnet18_seeds" / "metrics.json").read_text())
    assert [s["seed"] for s in metrics["seeds"]] == [42, 43] and [s["test_mae"] for s in metrics["seeds"]] == maes
    assert metrics["seed_spread"]["test_mae_mean"] == pytest.approx(np.mean(maes))
    assert metrics["seed_spread"]["test_mae_sd"] == pytest.approx(np.std(maes, ddof=1))
    pred = pd.read_parquet(r / "evaluate" / "resnet18_seeds" / "predictions.parquet").set_index(["subset", "id"])
    mean = sum(pd.read_parquet(p / "predictions.parquet").set_index(["subset", "id"])["pred"] for p in members) / 2
    assert np.allclose(pred["pred"], mean.loc[pred.index])  # the seed ensemble: the seeds' mean, val and test
    for column in ("retake_1", "retake_2"):  # its retakes too, so its test-retest spread is its own
        retaken = sum(pd.read_parquet(p / "predictions.parquet").set_index(["subset", "id"])[column] for p in members)
        assert np.allclose(pred[column], retaken.loc[pred.index] / 2, equal_nan=True)
    assert metrics["stability"]["views"] == 2 and metrics["stability"]["n"] == metrics["test"]["n"]
    assert json.loads((r / "bundles" / "resnet18_seeds" / "bundle.json").read_text())["stability"] == metrics["stability"]
    assert metrics["test"]["ci95"]["mae"][0] <= metrics["test"]["mae"] <= metrics["test"]["ci95"]["mae"][1]
    table = pd.read_csv(r / "report" / "tables" / "seeds.csv", dtype=str)
    assert list(table["seed"])[:2] == ["42", "43"] and len(table) == 4
    assert "Training noise: seeds" in (r / "report" / "index.html").read_text()


@pytest.mark.parametrize("name", ["resnet18_folds", "resnet18_seeds"])
def test_a_fold_or_seed_ensemble_bundle_predicts_what_its_stage_predicted(folds_run, tmp_path, name):
    from boneage.predict import run as predict

    workdir, _ = folds_run
    r = workdir / "results"
    labels = pd.read_csv(r / "data" / "demo" / "boneage-training-dataset.csv", dtype={"id": str})
    labels[["id", "male"]].to_csv(tmp_path / "sex.csv", index=False)
    evaluated = pd.read_parquet(r / "evaluate" / name / "predictions.parquet").query("subset == 'test'")
    bundle = tmp_path / "elsewhere"
    shutil.copytree(r / "bundles" / name, bundle)
    images = [str(r / "data" / "demo" / "boneage-training-dataset" / f"{i}.png") for i in evaluated["id"]]
    both = predict(images, tmp_path / "sex.csv", bundle, tmp_path / "out").merge(evaluated, on="id")
    assert len(both) == len(evaluated) > 0 and (both["boneage_months"] - both["pred"]).abs().max() < SAME_MONTHS


def test_after_a_fold_run_nothing_is_left_and_changing_the_folds_reruns_split_onward(folds_run, tmp_path):
    workdir, args = folds_run
    proc = snakemake(workdir, "all", "-n", *args)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    overlay = tmp_path / "four.yaml"
    overlay.write_text("split:\n  folds: 4\n")
    rules = planned_rules(snakemake(workdir, "all", "-n", *args, str(overlay)))
    assert {"split", "train_variant", "evaluate_variant", "crossval", "ensemble", "report"} <= rules
    assert not rules & {"download", "preprocess"}
    overlay.write_text("repeats: 3\n")  # one more seed: its train and evaluate jobs, then the seed stage on
    jobs = planned_jobs(snakemake(workdir, "all", "-n", *args, str(overlay)))
    assert jobs["train_variant"] == jobs["evaluate_variant"] == 1 and jobs["seeds"] == 1
    assert not set(jobs) & {"split", "crossval", "gradcam"}
