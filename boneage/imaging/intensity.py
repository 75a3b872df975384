"""The grey levels a model sees (config ``preprocess.intensity``).

``minmax``: the film as :func:`boneage.imaging.images.to_uint8` mapped it, by its own range, whose
ends its borders and markers set. ``rank``: each pixel's rank among the hand's pixels
(:func:`rank_levels`), which no increasing grey-level curve of the film changes: another scanner's
contrast, black level, gamma or look-up table gives the same model input (tests/test_site_shift.py;
bench/site_shift.py measures the estimates). CLAHE runs after either (:func:`boneage.imaging.radiograph.render`).
"""

from __future__ import annotations

import cv2
import numpy as np

INTENSITIES = ("minmax", "rank")


def _mid_ranks(ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``ref`` and the share of ``ref`` below each, ties counted half (the
    mid-rank), the lowest value at 0 and the highest at 1."""
    values, counts = np.unique(ref, return_counts=True)
    mid = np.cumsum(counts) - counts / 2.0
    return values, (mid - mid[0]) / max(mid[-1] - mid[0], 1e-12)


def rank_levels(img: np.ndarray, within: np.ndarray | None = None) -> np.ndarray:
    """uint8 grey levels of ``img`` (any dtype) by rank within the hand: of the reference pixels
    (those ``within`` marks, else all), the hand is those whose rank (mid-rank, 0-255) lies above
    Otsu's threshold of the ranks, and each pixel's grey level is the mid-rank of its value among the
    hand's pixels, the lowest to 0 and the highest to 255; values beyond them are held at the ends, so
    the background and its noise go to 0. On evenly spread ranks the threshold falls near the median
    (a hand takes about half of its box); a large group of tied pixels (a flat or clipped background)
    moves it. Ranks, and a threshold chosen on ranks, stay as they are under any increasing grey-level
    curve of the film (contrast, black level, gamma, a clipped highlight end, up to the levels it
    merges): what the scanner and its look-up table did to the film does not reach the model
    (preprocess.intensity rank; bench/site_shift.py measures what is left). Measured alternatives
    (docs/accuracy.md, "Site shift"): ranking the whole box gave its background noise half the grey
    levels, and a copy whose dark end merged levels (gamma 1.6) then differed by up to 28 grey levels
    on average; the pixels above the median as the hand, up to 10."""
    ref = img[within] if within is not None else img.ravel()
    values, mid = _mid_ranks(ref)
    if len(values) < 2:
        return np.zeros(img.shape, np.uint8)
    ranks = np.rint(np.interp(ref, values, mid) * 255).astype(np.uint8)
    threshold, _ = cv2.threshold(ranks.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    hand = ref[ranks > threshold]
    if hand.size and hand.min() < hand.max():  # else (two grey levels) the ranks of the whole box
        values, mid = _mid_ranks(hand)
    return np.rint(np.interp(img, values, mid) * 255).astype(np.uint8)


def for_resize(img: np.ndarray, intensity: str) -> np.ndarray:
    """A copy of the 8-bit ``img`` as the resize takes it for ``intensity``: uint8 for ``minmax``,
    float32 for ``rank``, so that the area average keeps grey levels between whole numbers (fewer
    ties to rank)."""
    if intensity not in INTENSITIES:
        raise ValueError(f"intensity {intensity!r} unknown; use one of {INTENSITIES}")
    return img.astype(np.float32 if intensity == "rank" else np.uint8)
