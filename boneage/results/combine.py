"""The weighted mean of several models' predictions on the films they share: what the ensemble stage
writes and what ``python -m boneage.compare`` reports for models of different runs.

Weights: ``equal``, ``inverse_val_mae`` (each member by 1 / its validation MAE, normalised), or ``fit``
(non-negative least squares on the validation films, normalised to sum to one); always chosen on
validation films, never on test films.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .stability import columns as retake_columns
from .stability import mean_of as retakes_mean

WEIGHTINGS = ("equal", "inverse_val_mae", "fit")


def nnls_weights(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative weights minimising ||X w - y||^2, normalised to sum to one."""
    from scipy.optimize import nnls

    w, _ = nnls(X, y)
    return w / w.sum() if w.sum() > 0 else np.full(X.shape[1], 1.0 / X.shape[1])


def combine(tables: dict[str, pd.DataFrame], weighting: str) -> tuple[pd.DataFrame, dict]:
    names = list(tables)
    base = tables[names[0]][["id", "subset", "boneage", "male"]]
    merged = base.copy()
    for name in names:
        t = tables[name][["id", "subset", "pred"]].rename(columns={"pred": name})
        merged = merged.merge(t, on=["id", "subset"], how="inner")
    # Validation rows: those every member predicted (a fold ensemble's out-of-fold rows cover the whole
    # train+val pool, a variant's only its val split); the test rows must be the same for all.
    tests = [set(t.loc[t["subset"] == "test", "id"]) for t in tables.values()]
    val = merged["subset"] == "val"
    if any(ids != tests[0] for ids in tests) or (merged["subset"] == "test").sum() != len(tests[0]) or not val.any():
        raise ValueError("the members' predictions cover different test images or share no validation "
                         "image; re-run evaluate")
    retakes = [merged[["id", "subset"]].merge(tables[n][["id", "subset", *retake_columns(tables[n])]],
                                              on=["id", "subset"], how="left") for n in names]
    X = merged[names].to_numpy(float)
    if weighting == "equal":
        w = np.full(len(names), 1.0 / len(names))
    elif weighting == "inverse_val_mae":
        mae = np.abs(X[val] - merged.loc[val, "boneage"].to_numpy()[:, None]).mean(axis=0)
        w = (1 / mae) / (1 / mae).sum()
    elif weighting == "fit":
        w = nnls_weights(X[val], merged.loc[val, "boneage"].to_numpy(float))
    else:
        raise ValueError(f"weighting {weighting!r}: use one of {WEIGHTINGS}")
    merged["pred_raw"] = X @ w
    # each retake through the same weights; run corrects them as it corrects pred_raw
    return merged.assign(**retakes_mean(retakes, w)), dict(zip(names, map(float, w)))
