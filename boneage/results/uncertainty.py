"""How sure each figure is: bootstrap confidence intervals and paired comparisons of two models.

Percentile bootstrap over images (Efron and Tibshirani 1993, ch. 13): ``resamples`` draws of the n
scored images with replacement, from a generator seeded with ``seed``; every figure is recomputed on
each draw and its 95 % interval is the 2.5th to 97.5th percentile of the recomputed values. The
interval is the sampling uncertainty of the images that were scored, for this one trained model;
training noise (another seed, another CPU's rounding) comes on top and is measured by ``repeats``.

A paired comparison draws the images both models scored and uses the same draw for both: what they
share (hard films, label noise) cancels, so the interval of the MAE difference is narrower than the
two MAE intervals side by side, and a difference whose interval holds 0 is one these images cannot
tell from chance.

Memory is bounded whatever the number of images: the draws are made in chunks of at most
``CHUNK_CELLS`` indices.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
CHUNK_CELLS = 1 << 20  # images x resamples per chunk (8 MB per array of float64)
FIGURES = ("mae", "rmse", "r2", "mae_male", "mae_female", "stage_accuracy")


@dataclass(frozen=True)
class Bootstrap:
    """How intervals are drawn (config ``evaluate.bootstrap_resamples`` and ``bootstrap_seed``)."""

    resamples: int = 2000
    seed: int = 0

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--bootstrap-resamples", type=int, default=Bootstrap.resamples,
                            help="resamples of the 95 %% bootstrap intervals (default %(default)s)")
        parser.add_argument("--bootstrap-seed", type=int, default=Bootstrap.seed,
                            help="seed of the bootstrap draws (default %(default)s)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Bootstrap":
        if args.bootstrap_resamples < 1:
            raise SystemExit(f"--bootstrap-resamples {args.bootstrap_resamples}: give at least 1")
        return cls(args.bootstrap_resamples, args.bootstrap_seed)

    def draws(self, n: int):
        """Index arrays (chunk, n) of the resamples, in a fixed order for a given seed and n."""
        rng = np.random.default_rng(self.seed)
        chunk = max(1, min(self.resamples, CHUNK_CELLS // max(n, 1)))
        for start in range(0, self.resamples, chunk):
            yield rng.integers(0, n, size=(min(chunk, self.resamples - start), n))

    def describe(self) -> dict:
        return {"resamples": self.resamples, "seed": self.seed, "level": LEVEL,
                "method": "percentile bootstrap, images resampled with replacement"}


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _figures(idx: np.ndarray, true: np.ndarray, err: np.ndarray, male: np.ndarray, female: np.ndarray,
             stage_ok: np.ndarray | None) -> dict[str, np.ndarray]:
    """Every figure of ``FIGURES`` on each resample (rows of ``idx``)."""
    e, t, m, f = err[idx], true[idx], male[idx], female[idx]
    ae, se = np.abs(e), e * e
    ss_tot = ((t - t.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    out = {"mae": ae.mean(axis=1), "rmse": np.sqrt(se.mean(axis=1)),
           "r2": 1 - _ratio(se.sum(axis=1), ss_tot),
           "mae_male": _ratio((ae * m).sum(axis=1), m.sum(axis=1)),
           "mae_female": _ratio((ae * f).sum(axis=1), f.sum(axis=1))}
    if stage_ok is not None:
        out["stage_accuracy"] = stage_ok[idx].mean(axis=1)
    return out


def _percentiles(values: np.ndarray) -> list[float] | None:
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    low, high = np.percentile(values, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return [float(low), float(high)]


def intervals(true, pred, male, stage_ok=None, bootstrap: Bootstrap = Bootstrap()) -> dict:
    """95 % intervals of MAE, RMSE, R2, MAE per sex and (with ``stage_ok``, one bool per image:
    predicted stage right) the stage accuracy; ``None`` for a figure no resample can compute (no
    image of that sex, no spread of the reference ages). ``male``: 1, 0, or NaN where unknown."""
    true, pred = np.asarray(true, float), np.asarray(pred, float)
    sex = np.asarray(male, float)
    male, female = sex == 1, sex == 0
    out: dict = {**bootstrap.describe(), "n": int(len(true))}
    if not len(true):
        return {**out, **{k: None for k in FIGURES}}
    err = pred - true
    stage = None if stage_ok is None else np.asarray(stage_ok, float)
    chunks = [_figures(idx, true, err, male, female, stage) for idx in bootstrap.draws(len(true))]
    for name in FIGURES:
        out[name] = _percentiles(np.concatenate([c[name] for c in chunks])) if name in chunks[0] else None
    return out


def mean_interval(values, bootstrap: Bootstrap = Bootstrap()) -> tuple[float, float, float]:
    """The mean of one value per image (an error, a signed residual) and its 95 % bootstrap interval."""
    d = np.asarray(values, float)
    if not len(d):
        return float("nan"), float("nan"), float("nan")
    means = np.concatenate([d[idx].mean(axis=1) for idx in bootstrap.draws(len(d))])
    low, high = _percentiles(means)
    return float(d.mean()), low, high


def paired_difference(abs_err_a, abs_err_b, bootstrap: Bootstrap = Bootstrap()) -> tuple[float, float, float]:
    """MAE of model a minus MAE of model b on the same images (row i of both is image i), and the
    95 % paired-bootstrap interval of that difference."""
    return mean_interval(np.asarray(abs_err_a, float) - np.asarray(abs_err_b, float), bootstrap)


def verdict(name_a: str, name_b: str, low: float, high: float) -> str:
    """In words: which model has the lower MAE, or that these images cannot tell them apart."""
    if not (np.isfinite(low) and np.isfinite(high)) or low <= 0 <= high:
        return "cannot tell apart"
    return f"{name_a} lower" if high < 0 else f"{name_b} lower"
