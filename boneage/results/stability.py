"""Test-retest stability: how far one estimate moves when the same hand is imaged again.

A second acquisition of the same hand differs from the first by how the hand lies on the detector
and by the exposure; after the crop stage has found the hand again, what is left of that is a small
rotation, shift and change of scale of the hand inside the crop, and a different grey-level curve.
Each film is re-made as a fixed, seeded set of such *retakes* of its preprocessed image, every
retake goes through the model exactly as the film did (TTA, bias correction, a bundle's
calibration), and the spread of the estimates (the film's own and its retakes') is its stability:
standard deviation and max - min, in months.

Ranges (uniform; zoom and gamma log-uniform), what a second film of a cooperating child gives:

- rotation +-10 degrees: hands are positioned flat, fingers spread, by eye; the crop keeps the
  hand's orientation, so any rotation of the re-placed hand stays;
- shift +-5 % of the side: the crop re-centres the hand box, but the box depends on the fingers'
  spread and the margin (``crop_margin``), so the hand moves a few per cent inside it;
- zoom 0.93-1.07: the crop normalises the hand's size up to the same box changes;
- gamma 0.8-1.25: a different exposure, detector and look-up table change the grey-level curve;
  CLAHE evens much of it out, the rest is a gamma of this order.

The views are computed on the preprocessed image, not on a re-acquired raw film: the crop's own
variation between two films is not in them (a lower bound of the real retest spread where the crop
is unstable). Views are the same for every film (drawn once from the seed), so a film's spread does
not depend on which other films are scored with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..learning.data import affine_sample, affine_theta
from .bundle import Views

RETAKE = "retake_"  # prediction columns of the retakes in predictions.parquet
RANGES = {"rotate_deg": 10.0, "translate": 0.05, "zoom": 1.07, "gamma": 1.25}


@dataclass(frozen=True)
class Retakes:
    """``views`` retakes per film drawn from ``seed`` (0 views: stability not measured)."""

    views: int = 8
    seed: int = 0

    def params(self) -> list[dict]:
        """The retakes' rotation (degrees), shift (fractions of the side), zoom and gamma."""
        rng = np.random.default_rng(self.seed)
        out = []
        for _ in range(self.views):
            out.append({
                "rotate_deg": float(rng.uniform(-1, 1) * RANGES["rotate_deg"]),
                "shift_x": float(rng.uniform(-1, 1) * RANGES["translate"]),
                "shift_y": float(rng.uniform(-1, 1) * RANGES["translate"]),
                "zoom": float(math.exp(rng.uniform(-1, 1) * math.log(RANGES["zoom"]))),
                "gamma": float(math.exp(rng.uniform(-1, 1) * math.log(RANGES["gamma"]))),
            })
        return out

    @classmethod
    def add_arguments(cls, parser, default_views: int = 8) -> None:
        parser.add_argument("--stability-views", type=int, default=default_views,
                            help="retakes per film for the test-retest spread; 0 = off (default %(default)s)")
        parser.add_argument("--stability-seed", type=int, default=cls.seed, help="seed of the retakes")

    @classmethod
    def from_args(cls, args) -> "Retakes":
        if args.stability_views < 0:
            raise ValueError(f"--stability-views {args.stability_views}: must be 0 (off) or more")
        return cls(args.stability_views, args.stability_seed)


def retake(images_u8: torch.Tensor, view: dict) -> torch.Tensor:
    """One retake of uint8 images (N, 1, S, S), uint8 at the same size, as a second film would be
    stored: re-positioned (affine, zeros outside) and re-exposed (gamma)."""
    n, size = images_u8.shape[0], images_u8.shape[-1]
    x = images_u8.float().div_(255)
    full = torch.ones(n)
    # grid units span [-1, 1]: a shift of a fraction f of the side is 2 f
    theta = affine_theta(n, full * math.radians(view["rotate_deg"]), full * view["zoom"], full * 2 * view["shift_x"],
                         full * 2 * view["shift_y"], torch.zeros(n, dtype=torch.bool))
    x = affine_sample(x, theta, size).clamp_(0, 1).pow_(view["gamma"])
    return x.mul_(255).round_().to(torch.uint8)


def estimates(estimate: Callable[[slice, torch.Tensor], np.ndarray], images_u8: torch.Tensor, retakes: Retakes,
              chunk: int = 512) -> np.ndarray:
    """``(views, N)``: ``estimate(rows, images) -> months`` on every retake of every film (``rows``:
    the films' slice, for their sex; the function holds the model, TTA and corrections). Films go
    through in chunks, so memory does not grow with their number. ``images_u8`` may be
    :class:`~boneage.results.bundle.Views` (a film in several parts of the hand): each part is retaken alike."""
    n, views = len(images_u8), retakes.params()
    out = np.full((len(views), n), np.nan)
    for start in range(0, n, chunk):
        block = slice(start, min(n, start + chunk))
        for k, view in enumerate(views):
            films = images_u8[block]
            taken = films.map(lambda x: retake(x, view)) if isinstance(films, Views) else retake(films, view)
            out[k, block] = estimate(block, taken)
    return out


def spread(original: np.ndarray, retaken: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per film, the SD (ddof 1) and max - min in months of its estimate and its retakes' (NaN
    without retakes)."""
    if not len(retaken):
        return np.full(len(original), np.nan), np.full(len(original), np.nan)
    got = np.vstack([original, retaken])
    return got.std(axis=0, ddof=1), got.max(axis=0) - got.min(axis=0)


def columns(table: pd.DataFrame) -> list[str]:
    """The retake columns of a predictions table (``retake_1`` ...), in order."""
    return sorted((c for c in table.columns if c.startswith(RETAKE)), key=lambda c: int(c[len(RETAKE):]))


def add_spread(table: pd.DataFrame) -> None:
    """``retest_sd`` and ``retest_range`` of a predictions table from its ``pred`` and retake columns."""
    table["retest_sd"], table["retest_range"] = spread(table["pred"].to_numpy(float),
                                                       table[columns(table)].to_numpy(float).T)


def summary_of(table: pd.DataFrame, seed: int) -> dict:
    """The stability of a predictions table's test rows (:func:`summarise`), its ``retest_sd`` and
    ``retest_range`` added; the views counted from its retake columns, made with ``seed``."""
    add_spread(table)
    test = (table["subset"] == "test").to_numpy()
    return summarise(table.loc[test, "retest_sd"].to_numpy(float), table.loc[test, "retest_range"].to_numpy(float),
                     Retakes(len(columns(table)), seed))


def seed_of(metrics: dict) -> int | None:
    """The retakes' seed a member model's metrics.json records (None when it measured none)."""
    return (metrics.get("stability") or {}).get("seed")


def mean_of(tables: list[pd.DataFrame], weights=None) -> dict[str, np.ndarray]:
    """The weighted mean (equal by default) of the retake columns all ``tables`` have, row by row
    (the tables aligned): a combined model's estimates of the retakes, as of the films."""
    names = [c for c in columns(tables[0]) if all(c in t.columns for t in tables)]
    w = np.full(len(tables), 1 / len(tables)) if weights is None else np.asarray(weights, float)
    return {c: sum(wk * t[c].to_numpy(float) for wk, t in zip(w, tables)) for c in names}


def summarise(sd: np.ndarray, span: np.ndarray, retakes: Retakes) -> dict:
    """Median and 95th percentile of the per-film spread, with how it was measured."""
    ok = ~np.isnan(sd)
    out = {"views": retakes.views, "seed": retakes.seed, "ranges": dict(RANGES), "n": int(ok.sum()),
           "method": "estimates of each film and its retakes (rotation, shift, zoom, gamma of the preprocessed "
                     "image; boneage.results.stability)"}
    if not ok.any():
        return {**out, "sd_median_months": None, "sd_p95_months": None, "range_median_months": None,
                "range_p95_months": None}
    return {**out, "sd_median_months": float(np.median(sd[ok])), "sd_p95_months": float(np.percentile(sd[ok], 95)),
            "range_median_months": float(np.median(span[ok])),
            "range_p95_months": float(np.percentile(span[ok], 95))}

