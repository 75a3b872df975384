"""Side markers and burnt-in labels: candidate letter pixels, their groups, and the boxes to paint.

Painted out with the grey around them, but only where they step sharply down to their surroundings
and lie clear of the hand: a saturated wrist looks like a lead letter to a threshold, and painting
over bone is worse than leaving a marker in. Which letter groups are painted, and with how much of
their holder, :class:`~boneage.imaging.crop.threshold.Analysis` decides (it knows where the hand is).
"""

from __future__ import annotations

import cv2
import numpy as np

# Burnt-in text stands this many grey levels above its surroundings (white top-hat).
TEXT_TOPHAT = 80


def _small_blobs(mask: np.ndarray, max_area_fraction: float) -> np.ndarray:
    """The components of a binary mask no larger than ``max_area_fraction`` of the image and
    shorter than a quarter of its long side (a film edge is a long thin blob, not a letter)."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    limit = max_area_fraction * mask.size
    w, h = stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]
    small = (stats[1:, cv2.CC_STAT_AREA] <= limit) & (w * h <= 4 * limit)
    short = np.maximum(w, h) <= max(mask.shape) / 4
    return np.isin(labels, np.flatnonzero(small & short) + 1)



def letter_pixels(img: np.ndarray, text_allowed: np.ndarray | None = None,
                  max_area_fraction: float = 0.02) -> np.ndarray:
    """Pixels that may belong to side markers and labels.

    Small near-white blobs (lead letters), and small blobs standing ``TEXT_TOPHAT`` grey levels above
    everything within ``side/40`` of them (burnt-in text of any grey; its thin strokes pass, a
    bone does not) where ``text_allowed`` (away from the hand). Saturated spots of bone pass the
    first test too; :func:`marker_boxes` tells the two apart.
    """
    bright = img >= max(200, int(np.percentile(img, 99.9)) - 25)
    k = max(3, round(max(img.shape) / 40)) | 1
    tophat = cv2.morphologyEx(img, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    text = tophat >= TEXT_TOPHAT
    if text_allowed is not None:
        text &= text_allowed
    return _small_blobs(bright | text, max_area_fraction)



def letter_contrast(img: np.ndarray, box, letters: np.ndarray) -> int:
    """Median grey of the letter pixels in ``box`` minus that of a thin halo around them.

    Lead letters are a plateau at the detector's maximum with a sharp step to their holder or the
    background, and burnt-in text is drawn on the background: 90-245 grey levels on RSNA films. A
    saturated spot of bone fades into the bone and soft tissue around it: at most about 60.
    """
    x0, y0, x1, y1 = box
    sub = img[y0:y1, x0:x1]
    inside = letters[y0:y1, x0:x1].astype(np.uint8)
    halo = cv2.dilate(inside, np.ones((7, 7), np.uint8)) > cv2.dilate(inside, np.ones((3, 3), np.uint8))
    if not inside.any() or not halo.any():
        return 0
    return int(np.median(sub[inside > 0])) - int(np.median(sub[halo]))



def group_boxes(letters: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Tight boxes around groups of letter pixels (the letters of one marker, a line of text)."""
    k = max(3, round(max(letters.shape) / 40)) | 1
    groups = cv2.dilate(letters.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    n, labels, _, _ = cv2.connectedComponentsWithStats(groups, connectivity=8)
    boxes = []
    for i in range(1, n):
        ys, xs = np.nonzero((labels == i) & letters)
        if xs.size:
            boxes.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    return boxes

