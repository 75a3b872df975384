"""Split-conformal prediction intervals for bone age, calibrated on the validation split.

With n validation residuals r_i = |true_i - pred_i| of the final predictions (after TTA and bias
correction), the half-width is the ceil((n + 1) * level)-th smallest r_i. For a new image drawn
like the validation images, [pred - q, pred + q] then holds the true age with probability at least
``level`` (Vovk et al. 2005; Lei et al. 2018, "Distribution-free predictive inference for
regression"). The guarantee is marginal: over images, not for each age or sex. With too few
validation images for the level (n < 1 / (1 - level) - 1) the half-width is infinite, and said so.
"""

from __future__ import annotations

import math

import numpy as np


def halfwidth(residuals, level: float) -> float:
    """The conformal half-width in months for absolute ``residuals`` at coverage ``level``."""
    if not 0 < level < 1:
        raise ValueError(f"interval level {level} must lie between 0 and 1")
    r = np.sort(np.abs(np.asarray(residuals, float)))
    k = math.ceil((len(r) + 1) * level)
    return float(r[k - 1]) if k <= len(r) else math.inf


def coverage(true, pred, q: float) -> dict:
    """Empirical coverage and mean width of [pred - q, pred + q] on labelled images."""
    true, pred = np.asarray(true, float), np.asarray(pred, float)
    if not len(true):
        return {"coverage": None, "mean_width_months": None, "n": 0}
    return {"coverage": float(np.mean(np.abs(true - pred) <= q)),
            "mean_width_months": 2 * q if math.isfinite(q) else None, "n": int(len(true))}


def add_interval(pred, level: float) -> dict:
    """Fit the interval on the ``val`` rows of a predictions table (columns subset, boneage, pred),
    add ``pred_low`` and ``pred_high`` to every row, and return the interval with its coverage
    per subset. An infinite half-width (too few validation images) is stored as None."""
    val = pred["subset"] == "val"
    q = halfwidth(pred.loc[val, "boneage"] - pred.loc[val, "pred"], level)
    pred["pred_low"], pred["pred_high"] = pred["pred"] - q, pred["pred"] + q
    out = {"level": level, "halfwidth_months": q if math.isfinite(q) else None, "fitted_on": "val",
           "n_fit": int(val.sum()), "method": "split conformal on absolute residuals"}
    for subset, rows in pred.groupby("subset"):
        out[subset] = coverage(rows["boneage"], rows["pred"], q)
    return out
