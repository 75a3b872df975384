"""Bootstrap intervals and paired comparisons against cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from boneage import compare
from boneage.results.metrics import score
from boneage.results.page import headline
from boneage.results.tables import comparisons_table, ranking
from boneage.results.uncertainty import Bootstrap, intervals, paired_difference

# Trains or sums floats: CI runs this module a second time on PyTorch's default kernels and one thread
# (the floating-point guard in .ci/run), so that a result hanging on the last bits shows on any machine.
pytestmark = pytest.mark.arith

THRESHOLDS = (120.0, 216.0)


def test_a_fixed_error_has_an_interval_of_width_zero():
    true = np.linspace(10, 220, 50)
    male = np.arange(50) % 2
    ci = intervals(true, true + 3.0, male, np.ones(50, bool))
    for key in ("mae", "rmse", "mae_male", "mae_female"):
        assert ci[key] == pytest.approx([3.0, 3.0], abs=1e-12), key
    assert ci["stage_accuracy"] == [1.0, 1.0]
    assert ci["resamples"] == 2000 and ci["n"] == 50


def test_the_mae_interval_matches_the_normal_approximation_of_a_known_error_distribution():
    # |error| is 0 or 2 months, half each: MAE 1, standard error sd/sqrt(n) = 1/sqrt(400) = 0.05.
    err = np.where(np.arange(400) % 2 == 0, 0.0, 2.0)
    ci = intervals(np.full(400, 100.0) + np.arange(400) % 7, np.full(400, 100.0) + np.arange(400) % 7 + err,
                   np.ones(400), None, Bootstrap(4000, 1))
    low, high = ci["mae"]
    assert low == pytest.approx(1 - 1.96 * 0.05, abs=0.015) and high == pytest.approx(1 + 1.96 * 0.05, abs=0.015)
    assert ci["mae_female"] is None and ci["stage_accuracy"] is None  # no girl; no stage given


def test_intervals_are_a_function_of_the_seed():
    rng = np.random.default_rng(0)
    true, pred, male = rng.uniform(0, 228, 60), rng.uniform(0, 228, 60), rng.integers(0, 2, 60)
    a, b = intervals(true, pred, male, None, Bootstrap(2000, 5)), intervals(true, pred, male, None, Bootstrap(2000, 5))
    assert a == b and a != intervals(true, pred, male, None, Bootstrap(2000, 6))


def test_score_gives_every_subset_an_interval_that_holds_its_figures():
    rng = np.random.default_rng(3)
    n = 80
    pred = pd.DataFrame({"id": [str(i) for i in range(n)], "subset": ["val", "test"] * (n // 2),
                         "boneage": rng.uniform(5, 225, n), "male": rng.integers(0, 2, n).astype(bool)})
    pred["pred"] = pred["boneage"] + rng.normal(0, 8, n)
    metrics = score(pred, 120.0, THRESHOLDS)
    for subset in ("val", "test"):
        s, ci = metrics[subset], metrics[subset]["ci95"]
        for key, value in (("mae", s["mae"]), ("rmse", s["rmse"]), ("r2", s["r2"]), ("mae_male", s["mae_male"]),
                           ("mae_female", s["mae_female"]), ("stage_accuracy", s["stage"]["accuracy"])):
            assert ci[key][0] <= value <= ci[key][1], (subset, key)


def test_a_clearly_better_model_is_named_and_a_copy_cannot_be_told_apart():
    rng = np.random.default_rng(1)
    a = np.abs(rng.normal(0, 8, 200))
    diff, low, high = paired_difference(a, a + 1.0 + rng.normal(0, 0.5, 200))
    assert diff < 0 and high < 0
    diff, low, high = paired_difference(a, a)
    assert diff == low == high == 0.0


def test_the_paired_interval_covers_the_true_difference_about_95_times_in_100():
    # Model b's absolute error is model a's plus 0.5 months plus noise: the true difference is -0.5.
    rng = np.random.default_rng(2)
    hits = 0
    for _ in range(200):
        a = np.abs(rng.normal(0, 8, 150))
        _, low, high = paired_difference(a, a + 0.5 + rng.normal(0, 3, 150), Bootstrap(2000, int(rng.integers(1e9))))
        hits += low <= -0.5 <= high
    assert 0.90 <= hits / 200 <= 0.99


def _preds(errors: dict[str, np.ndarray], ids=None) -> dict[str, dict[str, pd.Series]]:
    ids = ids or [str(i) for i in range(len(next(iter(errors.values()))))]
    return {"test": {name: pd.Series(e, index=ids) for name, e in errors.items()}}


def test_the_comparison_table_pairs_models_on_their_shared_images_and_the_headline_names_only_a_clear_winner():
    rng = np.random.default_rng(4)
    good = np.abs(rng.normal(0, 5, 300))
    errors = _preds({"good": good, "twin": good + rng.normal(0, 0.01, 300), "bad": good + 4})
    errors["test"]["bad"] = errors["test"]["bad"].iloc[:200]  # scored on fewer images
    table = comparisons_table(errors, Bootstrap())
    assert list(table.columns[:9]) == ["subset", "model_a", "model_b", "n", "mae_a", "mae_b", "mae_diff", "ci_low",
                                       "ci_high"]
    assert ((table["ci_low"] <= table["mae_diff"]) & (table["mae_diff"] <= table["ci_high"])).all()
    row = table.set_index(["model_a", "model_b"]).loc[("good", "bad")]
    assert row["n"] == 200 and row["verdict"] == "good lower"
    metrics = {name: {"test": {"mae": float(e.mean()), "rmse": 1.0, "r2": 0.9, "n": len(e)}}
               for name, e in errors["test"].items()}
    rank = ranking(metrics, table)
    tied = rank["sampling"]
    assert rank["best"] in ("good", "twin") and tied == [({"good", "twin"} - {rank["best"]}).pop()]
    assert "cannot tell it apart" in headline(metrics, rank, 30.0) and "No model is best" in headline(metrics, rank, 30.0)
    clear = {"good": metrics["good"], "bad": metrics["bad"]}
    rank = ranking(clear, table)
    assert rank == {"best": "good", "sampling": [], "training": [], "unmeasured": ["bad"]}
    assert "training noise is not measured" in headline(clear, rank, 30.0)
    # with seeds measured and an advantage far outside their spread, the model is named best
    clear["good_seeds"] = {"test": {"mae": 9.9, "rmse": 1.0, "r2": 0.9, "n": 200},
                           "seed_spread": {"test_mae_sd": 0.1, "n_seeds": 3}}
    clear["bad"]["seed_spread"] = {"test_mae_sd": 0.1, "n_seeds": 3}
    rank = ranking({"good": clear["good"], "bad": clear["bad"], "good_seeds": clear["good_seeds"]}, table)
    assert rank["best"] == "good" and not rank["sampling"] and not rank["training"]


def test_report_tables_put_each_interval_beside_its_figure_and_escape_the_data_sets_text():
    from boneage.results.page import html_table

    table = html_table(pd.DataFrame({"id": ["<script>alert(1)</script>"], "MAE": [8.064], "MAE 95 % CI": ["[7.75, 8.39]"]}))
    assert "<script>" not in table and "&lt;script&gt;" in table
    assert "MAE [95 % CI]" in table and "8.064<br><span class='ci'>[7.75, 8.39]</span>" in table


def _predictions(ids, truth, pred, subset):
    return pd.DataFrame({"id": ids, "subset": subset, "boneage": truth, "male": np.arange(len(ids)) % 2 == 0,
                         "pred": pred, "pred_raw": pred})


def test_compare_sets_runs_side_by_side_by_film_id_and_refuses_runs_of_another_split(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 300
    ids = [str(10000 + k) for k in range(n)]
    subset = np.where(np.arange(n) < 100, "val", "test")
    truth = rng.uniform(20, 220, n)
    a_err, b_noise = rng.normal(0, 8, n), rng.normal(0, 8, n)
    b_err = 0.5 * a_err + b_noise  # errors that correlate at about 0.45
    a = _predictions(ids, truth, truth + a_err, subset)
    b = _predictions(ids, truth, truth + b_err, subset).iloc[::-1]  # another row order: matched by id
    paths = {}
    for name, t in (("a", a), ("b", b)):
        paths[name] = tmp_path / name / "predictions.parquet"
        paths[name].parent.mkdir()
        t.to_parquet(paths[name])
    compare.main(["--run", "hand", str(paths["a"]), "--run", "wrist", str(paths["b"]), "--out", str(tmp_path / "cmp"),
                  "--bootstrap-resamples", "500"])
    test = subset == "test"
    pairs = pd.read_csv(tmp_path / "cmp" / "pairs.csv").set_index("subset")
    assert pairs.loc["test", "n"] == 200
    assert pairs.loc["test", "mae_diff"] == pytest.approx(np.abs(a_err[test]).mean() - np.abs(b_err[test]).mean())
    assert pairs.loc["test", "ci_low"] < pairs.loc["test", "mae_diff"] < pairs.loc["test", "ci_high"]
    corr = pd.read_csv(tmp_path / "cmp" / "correlation.csv").set_index("model")
    assert corr.loc["hand", "wrist"] == pytest.approx(np.corrcoef(a_err[test], b_err[test])[0, 1], abs=1e-3)
    mean = pd.read_csv(tmp_path / "cmp" / "mean.csv").set_index("weighting")
    assert mean.loc["equal", "test_mae"] == pytest.approx(np.abs((a_err[test] + b_err[test]) / 2).mean())
    assert mean.loc["equal", "test_mae"] < min(np.abs(a_err[test]).mean(), np.abs(b_err[test]).mean())
    assert mean.loc["fit", ["w_hand", "w_wrist"]].sum() == pytest.approx(1.0, abs=2e-3)
    best = "hand" if np.abs(a_err[~test]).mean() < np.abs(b_err[~test]).mean() else "wrist"  # by validation
    best_err = {"hand": a_err, "wrist": b_err}[best][test]
    assert mean.loc["equal", "against"] == best
    assert mean.loc["equal", "diff"] == pytest.approx(np.abs((a_err[test] + b_err[test]) / 2).mean()
                                                      - np.abs(best_err).mean())
    assert mean.loc["equal", "diff_high"] < 0  # errors this weakly correlated: the mean is clearly better
    printed = capsys.readouterr().out
    assert "## mean" in printed and "hold no training noise" in printed
    # a run whose test films differ (another split) is refused, not silently matched on a few films
    other = _predictions([str(20000 + k) for k in range(n)], truth, truth, subset)
    other.to_parquet(tmp_path / "other.parquet")
    with pytest.raises(SystemExit) as stop:
        compare.main(["--run", "hand", str(paths["a"]), "--run", "other", str(tmp_path / "other.parquet")])
    assert stop.value.code == 1
    assert "hand and other were scored on different test films (0 shared" in capsys.readouterr().err
    (tmp_path / "plain.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="plain.parquet"):
        compare.read_predictions(tmp_path / "plain.parquet")
