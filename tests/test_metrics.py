"""Metrics on hand-made predictions whose values are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from boneage.results.combine import combine, nnls_weights
from boneage.results.metrics import (
    by_age_bin,
    confusion,
    fit_bias_correction,
    regression,
    stage_metrics,
    stage_of,
    summarise,
)

# Trains or sums floats: CI runs this module a second time on PyTorch's default kernels and one thread
# (the floating-point guard in .ci/run), so that a result hanging on the last bits shows on any machine.
pytestmark = pytest.mark.arith

TRUE = np.array([10.0, 50.0, 100.0, 130.0, 200.0, 220.0])
PRED = np.array([14.0, 44.0, 100.0, 150.0, 190.0, 210.0])  # errors +4 -6 0 +20 -10 -10


def test_regression_metrics_by_hand():
    m = regression(TRUE, PRED)
    assert m["mae"] == pytest.approx(50 / 6)
    assert m["rmse"] == pytest.approx(np.sqrt((16 + 36 + 0 + 400 + 100 + 100) / 6))
    ss_tot = np.sum((TRUE - TRUE.mean()) ** 2)
    assert m["r2"] == pytest.approx(1 - 652 / ss_tot)
    assert m["median_ae"] == pytest.approx(8.0)
    assert m["bias"] == pytest.approx(-2 / 6)
    assert m["within_6"] == pytest.approx(3 / 6) and m["within_12"] == pytest.approx(5 / 6)


def test_stages_and_confusion_by_hand():
    thresholds = (120, 216)
    assert list(stage_of([0, 119.9, 120, 215, 216, 228], thresholds)) == [
        "child", "child", "adolescent", "adolescent", "adult", "adult"]
    # true stages: c c c a a ad ; predicted: c c c a a a
    s = stage_metrics(TRUE, PRED, thresholds)
    assert s["confusion"] == [[3, 0, 0], [0, 2, 0], [0, 1, 0]]
    assert s["accuracy"] == pytest.approx(5 / 6)
    assert s["per_class"]["adolescent"]["precision"] == pytest.approx(2 / 3)
    assert s["per_class"]["adolescent"]["recall"] == pytest.approx(1.0)
    assert s["per_class"]["adult"]["recall"] == 0.0 and np.isnan(s["per_class"]["adult"]["precision"])
    cm = confusion(["child"], ["adult"])
    assert cm.loc["child", "adult"] == 1 and cm.values.sum() == 1


def test_per_sex_and_age_bins():
    df = pd.DataFrame({"boneage": TRUE, "pred": PRED, "male": [True, False, True, False, True, False]})
    s = summarise(df, (120, 216))
    assert s["mae_male"] == pytest.approx((4 + 0 + 10) / 3)
    assert s["mae_female"] == pytest.approx((6 + 20 + 10) / 3)
    bins = by_age_bin(df, 100).set_index(["age_bin", "sex"])
    assert bins.loc[(0, "M"), "mae"] == 4 and bins.loc[(0, "F"), "bias"] == -6
    assert bins.loc[(100, "F"), "n"] == 1 and bins.loc[(200, "M"), "mae"] == 10


def test_bias_correction_recovers_a_linear_distortion():
    true = np.linspace(0, 228, 50)
    pred = 0.8 * true + 20  # regression toward the mean
    a, b = fit_bias_correction(true, pred)
    assert a * pred + b == pytest.approx(true)


def test_ensemble_weights():
    rng = np.random.default_rng(0)
    n = 40
    truth = rng.uniform(0, 200, n)
    good, bad = truth + rng.normal(0, 2, n), truth + rng.normal(0, 20, n)
    tables = {}
    for name, pred in (("good", good), ("bad", bad)):
        tables[name] = pd.DataFrame({"id": [str(i) for i in range(n)], "subset": ["val"] * 20 + ["test"] * 20,
                                     "boneage": truth, "male": True, "pred": pred})
    merged, w = combine(tables, "equal")
    assert w == {"good": 0.5, "bad": 0.5} and merged["pred_raw"].to_numpy() == pytest.approx((good + bad) / 2)
    _, w = combine(tables, "inverse_val_mae")
    assert w["good"] > 0.8 and sum(w.values()) == pytest.approx(1)
    _, w = combine(tables, "fit")
    assert w["good"] > w["bad"] and sum(w.values()) == pytest.approx(1)
    x = np.column_stack([truth, truth * 0])
    assert nnls_weights(x, truth) == pytest.approx([1.0, 0.0], abs=1e-3)


def test_conformal_intervals_cover_at_their_level_on_exchangeable_data():
    from boneage.results.intervals import add_interval, halfwidth

    rng = np.random.default_rng(0)
    n_val, n_test = 300, 5000
    true = rng.uniform(10, 220, n_val + n_test)
    pred = pd.DataFrame({"subset": ["val"] * n_val + ["test"] * n_test, "boneage": true,
                         "pred": true + rng.standard_t(4, n_val + n_test) * 8})
    interval = add_interval(pred, 0.9)
    assert abs(interval["test"]["coverage"] - 0.9) < 0.03
    assert interval["halfwidth_months"] == pytest.approx(halfwidth(pred["boneage"][:n_val] - pred["pred"][:n_val], 0.9))
    assert (pred["pred_high"] - pred["pred_low"]).round(9).nunique() == 1
    assert halfwidth([1.0, 2.0, 3.0], 0.9) == float("inf")  # 3 residuals cannot give 90 %
