"""The classical crop: the hand found by thresholding a working copy (long side 512 px).

Otsu after CLAHE, film edges and cassette lines dropped, side markers and labels left out, the large
components kept. Where that takes a whole exposed field (a collimated rectangle, a dim hand on a
grey field), the hand is looked for inside it as what stands above the field's own background.
"""

from __future__ import annotations

import cv2
import numpy as np

from .boxes import area, box_mask, clip_box, pad, resize_long_side, widen
from .markers import group_boxes, letter_contrast, letter_pixels

CLASSICAL_WORK_SIDE = 512

# A thresholded hand (fingers spread, grown so they join the palm) covers 0.3-0.65 of its bounding
# box on RSNA films; a component filling more is a rectangular exposed field with the hand inside.
FIELD_FILL = 0.7

# Lead letters step down to their holder by 90-245 grey levels, saturated bone by at most ~60.
MARKER_CONTRAST = 80

# A lead marker's plastic holder reaches about this share of the letters' extent beyond them.
HOLDER_PAD = 0.15

# How far beyond its letters (share of their size) a holder is looked for.
HOLDER_REACH = 0.8

# The largest holder to paint whole, as a share of the image (a holder beside a tight crop: ~6 %).
HOLDER_MAX_AREA = 0.12



def components_box(fg: np.ndarray, kernel: np.ndarray, min_share: float = 0.2):
    """The large components of a binary mask (each at least ``min_share`` of the largest, and not
    a thin frame) after an opening that cuts thin bridges to labels: (box, grown mask, solid mask),
    or None when empty.

    Bones of one hand lie close together, so components are grown before they are counted, which
    joins the fingers to the palm; the grown mask covers the gaps, the solid one only the hand.
    """
    solid = cv2.morphologyEx(fg, cv2.MORPH_OPEN, kernel)
    grow = max(3, round(max(fg.shape) / 25)) | 1
    grown = cv2.dilate(solid, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
    if n <= 1:
        return None
    areas = stats[1:, cv2.CC_STAT_AREA]
    # a film edge left over (an L of two thin lines) covers little of its box; hand parts do not
    fill = areas / (stats[1:, cv2.CC_STAT_WIDTH] * stats[1:, cv2.CC_STAT_HEIGHT])
    keep = np.flatnonzero((areas >= min_share * areas.max()) & ((fill >= 0.2) | (areas == areas.max()))) + 1
    x0 = stats[keep, cv2.CC_STAT_LEFT].min()
    y0 = stats[keep, cv2.CC_STAT_TOP].min()
    x1 = (stats[keep, cv2.CC_STAT_LEFT] + stats[keep, cv2.CC_STAT_WIDTH]).max()
    y1 = (stats[keep, cv2.CC_STAT_TOP] + stats[keep, cv2.CC_STAT_HEIGHT]).max()
    kept = np.isin(labels, keep)
    return (int(x0), int(y0), int(x1), int(y1)), kept, kept & solid.astype(bool)



def drop_lines(fg: np.ndarray) -> np.ndarray:
    """``fg`` without film edges, collimator and cassette borders.

    Such a structure touching the hand would join it and stretch its box to the whole film. Two
    kinds go. Bands along the image border: from each edge inwards (at most 6 % of the side), the
    rows or columns at least 70 % foreground (a forearm at the edge never is). Thin lines anywhere:
    pixels thinner than a finger (gone after an opening by ``side/40``, the image edge counted as
    background) that lie on a horizontal or vertical run of at least ``side/4`` (edges tilted by a
    few degrees still do; a finger is shorter). Slivers cut from the hand's own straight edges may
    go too; its box hardly changes.
    """
    fg = fg.copy()
    h, w = fg.shape
    depth = max(2, round(0.06 * max(h, w)))
    for along_rows, share in ((True, fg.mean(axis=1)), (False, fg.mean(axis=0))):
        n = len(share)
        for edge in (range(min(depth, n)), range(n - 1, max(-1, n - 1 - depth), -1)):
            for i in edge:
                if share[i] < 0.7:
                    break
                if along_rows:
                    fg[i, :] = 0
                else:
                    fg[:, i] = 0
    side = max(h, w)
    k = max(3, round(side / 40)) | 1
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    opened = cv2.morphologyEx(fg, cv2.MORPH_OPEN, disk, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    thin = cv2.subtract(fg, opened)
    run = max(8, side // 4)
    lines = cv2.morphologyEx(thin, cv2.MORPH_OPEN, np.ones((1, run), np.uint8))
    lines |= cv2.morphologyEx(thin, cv2.MORPH_OPEN, np.ones((run, 1), np.uint8))
    if not lines.any():
        return fg
    lines = cv2.dilate(lines, np.ones((3, 3), np.uint8))
    return fg & (1 - lines)



def _background_sigma(hist: np.ndarray, mode: int) -> float:
    """Spread of the background peak of a smoothed histogram, from its half width below the mode
    (immune to a second, darker population such as film borders, unlike a percentile)."""
    half = hist[mode] / 2
    lo = mode
    while lo > 0 and hist[lo] > half:
        lo -= 1
    return max(1.0, (mode - lo) / 1.1774)  # HWHM of a Gaussian is 1.1774 sigma



class Analysis:
    """A radiograph at working size (long side ``CLASSICAL_WORK_SIDE``): its threshold mask, marker
    candidates, the markers safe to paint and the hand found without them."""

    def __init__(self, img: np.ndarray):
        self.work, self.scale = resize_long_side(img, CLASSICAL_WORK_SIDE)
        self.plain = cv2.GaussianBlur(self.work, (7, 7), 0)
        equalised = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)).apply(self.plain)
        _, self.fg = cv2.threshold(equalised, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        k = max(3, round(max(self.work.shape) / 100)) | 1
        self.kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        nothing = np.zeros(self.work.shape, bool)
        first = self.find_hand(nothing)
        self.letters = letter_pixels(self.work, text_allowed=None if first is None else ~first[1])
        self.markers = self._markers(group_boxes(self.letters)) if self.letters.any() else []
        self.hand = self.find_hand(box_mask(self.work.shape, self.markers)) if self.markers else first

    def find_hand(self, excluded: np.ndarray):
        """(box, grown mask, solid mask) of the hand in ``fg`` outside ``excluded``, or None."""
        found = components_box(drop_lines(self.fg & ~excluded), self.kernel)
        if found is None:
            return None
        box, grown, _ = found
        if grown.sum() > FIELD_FILL * area(box):
            # Otsu took an exposed field (a collimated rectangle, a dim hand on a grey field inside
            # black borders), not a hand: look inside it for what is brighter than its background.
            values = self.plain[grown & ~excluded]
            hist = np.bincount(values, minlength=256).astype(np.float32).reshape(1, -1)
            hist = cv2.GaussianBlur(hist, (9, 1), 0).ravel()
            mode = int(np.argmax(hist))
            above = grown & ~excluded & (self.plain > mode + 3 * _background_sigma(hist, mode))
            inner = components_box(drop_lines(above.astype(np.uint8)), self.kernel, 0.5)
            # accept only a hand-sized result; a faint hand's few bright bones would cut fingers off
            if inner is not None and area(inner[0]) >= 0.4 * area(box):
                return inner
        return found

    def _markers(self, groups):
        """Boxes to paint: the letter groups that look like lead letters or text, clear of the hand.

        Two tests, since leaving a marker in costs less than painting over bone: the letters must
        step sharply down to their surroundings (:func:`letter_contrast`), and the box must keep
        clear of the hand, found with every candidate left out so that a saturated wrist cannot
        vouch for itself (this also spares a marker laid on the hand and a bright film edge by the
        fingertips). The box takes in the plastic holder of lead letters where it can
        (:meth:`_holder`), else a pad of ``HOLDER_PAD``, else less.
        """
        groups = [b for b in groups if letter_contrast(self.work, b, self.letters) >= MARKER_CONTRAST]
        h, w = self.work.shape
        # only the letters' own boxes are left out: around them the hand must still show
        hand = self.find_hand(box_mask(self.work.shape, groups)) if groups else None
        if hand is None:
            return []
        solid = hand[2]
        r = max(2, round(max(h, w) / 128))
        markers = []
        for box in groups:
            holder = self._holder(box)
            tries = [pad(holder, 0.0, w, h)] if area(holder) <= HOLDER_MAX_AREA * h * w else []
            tries += [pad(box, f, w, h) for f in (HOLDER_PAD, HOLDER_PAD / 2, 0.0)]
            for x0, y0, x1, y1 in tries:
                if not solid[max(0, y0 - r):y1 + r, max(0, x0 - r):x1 + r].any():
                    markers.append((x0, y0, x1, y1))
                    break
        return markers

    def _holder(self, box):
        """Box of what the letters in ``box`` sit on: the plastic holder of lead letters, a label.

        The holder's grey is read between the letters, the background's off the rim of a window
        reaching ``HOLDER_REACH`` beyond them; where the two differ, whatever is nearer the holder's
        grey and joined to the letters is the holder. Beside the hand that takes in the hand too,
        and the box then fails the hand test.
        """
        h, w = self.work.shape
        wx0, wy0, wx1, wy1 = pad(box, HOLDER_REACH, w, h)
        window = self.plain[wy0:wy1, wx0:wx1]
        x0, y0, x1, y1 = box[0] - wx0, box[1] - wy0, box[2] - wx0, box[3] - wy0
        letters = cv2.dilate(self.letters[wy0:wy1, wx0:wx1].astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        between = window[y0:y1, x0:x1][~letters[y0:y1, x0:x1]]
        rim = np.concatenate([window[0], window[-1], window[:, 0], window[:, -1]])
        if not between.size:
            return box
        # the rim's commonest grey: part of the rim may cross the hand or another holder
        holder, background = float(np.median(between)), float(np.bincount(rim).argmax())
        if holder - background < 5:
            return box
        _, labels, stats, _ = cv2.connectedComponentsWithStats(
            ((window > (holder + background) / 2) | letters).astype(np.uint8), connectivity=8)
        ids = np.unique(labels[y0:y1, x0:x1])
        ids = ids[ids > 0]
        left, top = stats[ids, cv2.CC_STAT_LEFT], stats[ids, cv2.CC_STAT_TOP]
        right = left + stats[ids, cv2.CC_STAT_WIDTH]
        bottom = top + stats[ids, cv2.CC_STAT_HEIGHT]
        return (int(wx0 + min(x0, left.min())), int(wy0 + min(y0, top.min())),
                int(wx0 + max(x1, right.max())), int(wy0 + max(y1, bottom.max())))



def marker_boxes(img: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes (in ``img`` pixels) of side markers and labels that lie clear of the hand."""
    found = Analysis(img)
    h, w = img.shape[:2]
    s = found.scale
    return [clip_box(x0 / s, y0 / s, x1 / s, y1 / s, w, h) for x0, y0, x1, y1 in found.markers]



def remove_markers(img: np.ndarray) -> tuple[np.ndarray, int]:
    """Paint markers out with the grey just outside each; returns the image and the marker count.

    Only markers clear of the hand are painted (see :func:`marker_boxes`); anatomy is never.
    """
    boxes = marker_boxes(img)
    out = img.copy()
    h, w = img.shape[:2]
    for x0, y0, x1, y1 in boxes:
        fx0, fy0, fx1, fy1 = clip_box(x0 - 4, y0 - 4, x1 + 4, y1 + 4, w, h)
        frame = np.ones((fy1 - fy0, fx1 - fx0), bool)
        frame[y0 - fy0:y1 - fy0, x0 - fx0:x1 - fx0] = False
        surround = img[fy0:fy1, fx0:fx1][frame]
        out[y0:y1, x0:x1] = int(np.median(surround)) if surround.size else 0
    return out, len(boxes)



def classical_box(img: np.ndarray, margin: float, analysis: Analysis | None = None):
    """Box around the hand by thresholding, or None when nothing plausible is found."""
    found = analysis or Analysis(img)
    if found.hand is None or area(found.hand[0]) < 0.05 * found.work.size:
        return None
    h, w = img.shape[:2]
    return clip_box(*(v / found.scale for v in widen(found.hand[0], margin)), w, h)

