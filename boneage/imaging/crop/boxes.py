"""Boxes (x0, y0, x1, y1; x1, y1 exclusive) and masks: the small geometry the crop steps share."""

from __future__ import annotations

import cv2
import numpy as np


def resize_long_side(img: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    scale = side / max(img.shape[:2])
    if scale >= 1:
        return img, 1.0
    size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA), scale



def clip_box(x0, y0, x1, y1, w, h) -> tuple[int, int, int, int]:
    x0, y0 = int(max(0, np.floor(x0))), int(max(0, np.floor(y0)))
    x1, y1 = int(min(w, np.ceil(x1))), int(min(h, np.ceil(y1)))
    return x0, y0, x1, y1



def widen(box, margin: float):
    """``box`` grown on each side by ``margin`` times its width (left, right) or height (top,
    bottom); floats, not clipped."""
    x0, y0, x1, y1 = box
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    return x0 - mx, y0 - my, x1 + mx, y1 + my



def pad(box, fraction: float, w: int, h: int):
    x0, y0, x1, y1 = box
    pad = max(2, round(fraction * np.sqrt((x1 - x0) * (y1 - y0))))
    return clip_box(x0 - pad, y0 - pad, x1 + pad, y1 + pad, w, h)



def area(box) -> int:
    return int((box[2] - box[0]) * (box[3] - box[1]))



def box_mask(shape, boxes) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask



# The views of the hand a model can be trained on (config ``preprocess.region``): the whole hand box,
# or a square part of it, kept at the film's own resolution where the hand view shrinks it. Each part:
# (side as a share of the box's height, the edge it rests on), centred across the box. In films
# taken fingers up, as RSNA's are: the wrist (distal radius and ulna, carpal bones, metacarpal
# bases) rests on the lower edge; the fingers (phalanges of the middle three fingers, metacarpal
# heads) on the upper one.
PARTS = {"wrist": (0.5, "bottom"), "fingers": (0.6, "top")}
REGIONS = ("hand", *PARTS)


def region_box(box, region: str, w: int, h: int) -> tuple[int, int, int, int]:
    """The part of the hand box ``box`` (in a ``w`` x ``h`` image) that ``region`` names."""
    if region == "hand":
        return box
    if region not in PARTS:
        raise ValueError(f"region {region!r} unknown; use one of {REGIONS}")
    share, edge = PARTS[region]
    x0, y0, x1, y1 = box
    side = share * (y1 - y0)
    centre = (x0 + x1) / 2
    top = y1 - side if edge == "bottom" else y0
    return clip_box(centre - side / 2, top, centre + side / 2, top + side, w, h)
