"""MediaPipe landmarks to a crop box: widened down the forearm, checked against the thresholded hand.

The distal radius and ulna (the most informative growth plates) lie beyond MediaPipe's wrist point,
and its finger tips are often short, so the landmark box is widened towards the forearm and to hold
all of the thresholded hand.
"""

from __future__ import annotations

import numpy as np

from .boxes import clip_box, widen
from .threshold import Analysis

# The crop reaches this many palm lengths beyond MediaPipe's wrist point, down the forearm.
FOREARM_PALMS = 0.75

# Share of the thresholded hand (fingers' side) a MediaPipe box must hold to be believed.
MEDIAPIPE_COVERAGE = 0.9



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
    return clip_box(*widen((*pts.min(axis=0), *pts.max(axis=0)), 0.10 + margin), width, height)



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
    hx0, hy0, hx1, hy1 = widen((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), margin)
    h, w = shape[:2]
    return clip_box(min(x0, hx0) / s, min(y0, hy0) / s, max(x1, hx1) / s, max(y1, hy1) / s, w, h)

