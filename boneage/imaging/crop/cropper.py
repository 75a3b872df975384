"""The cropper: MediaPipe HandLandmarker first, the classical crop when it finds no hand, else the
whole image. Every image's winning method, box and landmark count are recorded in its :class:`Crop`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .boxes import area, resize_long_side
from .handmodel import HandModelError, resolve_hand_model
from .landmarks import check_landmark_box, landmark_box
from .threshold import Analysis, classical_box

CROP_METHODS = ("auto", "mediapipe", "classical", "none")

# How a radiograph is shown to MediaPipe, in the order tried: as is, contrast-equalised, inverted, both.
RENDERINGS = ("raw", "clahe", "inverted", "clahe_inverted")

MEDIAPIPE_WORK_SIDE = 640



@dataclass(frozen=True)
class Crop:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in source pixels, x1/y1 exclusive
    method: str  # mediapipe:<rendering> | classical | full
    landmarks: int = 0
    refused: int = 0  # MediaPipe hands refused before this crop (see check_landmark_box)



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

        work, scale = resize_long_side(img, MEDIAPIPE_WORK_SIDE)
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
                if area(crop.box) >= 0.05 * w * h:
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

