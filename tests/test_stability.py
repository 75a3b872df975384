"""Test-retest retakes: fixed, seeded views that change the pixels as a second film would."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from boneage.results.stability import Retakes, estimates, retake, spread, summarise

from .conftest import hand_like

# Trains or sums floats: CI runs this module a second time on PyTorch's default kernels and one thread
# (the floating-point guard in .ci/run), so that a result hanging on the last bits shows on any machine.
pytestmark = pytest.mark.arith


def _films(n: int = 4) -> torch.Tensor:
    return torch.from_numpy(np.stack([hand_like(seed, (64, 64)) for seed in range(n)])[:, None])


def test_a_retake_without_change_is_the_film_and_the_views_are_a_function_of_the_seed():
    films = _films()
    same = {"rotate_deg": 0.0, "shift_x": 0.0, "shift_y": 0.0, "zoom": 1.0, "gamma": 1.0}
    assert torch.equal(retake(films, same), films)
    assert Retakes(8, 3).params() == Retakes(8, 3).params() != Retakes(8, 4).params()
    for view in Retakes(50, 0).params():
        assert abs(view["rotate_deg"]) <= 10 and 1 / 1.07 <= view["zoom"] <= 1.07 and 0.8 <= view["gamma"] <= 1.25


def test_an_estimate_that_ignores_the_pixels_is_perfectly_stable_and_one_that_reads_them_is_not():
    films = _films(6)
    constant = spread(np.full(6, 120.0), estimates(lambda rows, x: np.full(len(x), 120.0), films, Retakes(8, 0)))
    assert np.all(constant[0] == 0) and np.all(constant[1] == 0)

    def brightness(rows, x):
        return x.float().mean(dim=(1, 2, 3)).numpy()

    retaken = estimates(brightness, films, Retakes(8, 0), chunk=4)  # two chunks: the same as one
    # to float32 rounding: a chunk changes the batch each film's mean of 4,096 pixels is summed in,
    # and how a reduction is split over threads and vector lanes may follow the batch's shape
    assert retaken.shape == (8, 6)
    np.testing.assert_allclose(retaken, estimates(brightness, films, Retakes(8, 0)), rtol=1e-6)
    sd, span = spread(brightness(slice(None), films), retaken)
    assert np.all(sd > 0) and np.all(span >= sd)
    summary = summarise(sd, span, Retakes(8, 0))
    assert summary["n"] == 6 and summary["sd_median_months"] <= summary["sd_p95_months"]
    assert np.isnan(spread(np.zeros(6), estimates(brightness, films, Retakes(0)))[0]).all()  # 0 views: off
