"""Is this a hand radiograph? Cheap tests that turn pictures of something else into rejects.

A label table can point at any image: a blank or saturated exposure, a test pattern, a scanner's
noise, a colour photograph. Each passes decoding and the crop falls back to a box of the whole
image, so without a check it is trained on. Each test below names one way an image is not a hand
radiograph; the first that fails is the reject reason. The reject thresholds lie well outside what
the 12,611 RSNA training films show (their range is in each comment; ``bench/hand_check.py``
measures it and the catch rate on generated non-hands), since a false reject costs a training
image. One test is too close to real films to reject on: it flags a doubt instead, kept in the
index (``hand_doubt``) and listed in the log and the report.

Colour is refused earlier, by :func:`boneage.imaging.images.read_grey`, where the channels still exist.
What the tests cannot tell apart from a hand is an object with structure of its own (a test pattern,
a drawn disk, a grey photograph): that is what the contact sheet and the doubts are for.
"""

from __future__ import annotations

import cv2
import numpy as np

# 99 % of the pixels of the 8-bit image (after windowing) within fewer grey levels than this:
# nothing to see. RSNA films: 20-255.
MIN_SPREAD = 8
# Correlation of horizontally neighbouring pixels (at the classical crop's 512 px working size)
# below this: noise, not an X-ray, whose blur makes neighbours alike. RSNA: >= 0.76.
MIN_NEIGHBOUR_CORRELATION = 0.5
# Share of the image's spread left after removing what a blur of sigma side/32 keeps: a ramp or a
# vignette has none. RSNA: >= 0.14.
MIN_DETAIL = 0.1
# Fine detail (high-pass of sigma 2 px, relative to the spread) inside the thresholded object:
# bone has cortex and trabeculae, a smooth blob or a printed page little. Not a reject but a doubt:
# 3 of the 12,611 RSNA films (faint hands beside a bright marker) fall below it.
DOUBT_INNER_DETAIL = 0.005
# The object the classical analysis finds must cover this share of the image (RSNA: >= 0.09).
MIN_OBJECT_SHARE = 0.05


def spread(img: np.ndarray) -> float:
    """Grey levels between the 0.5th and 99.5th percentiles of an 8-bit image."""
    lo, hi = np.percentile(img, [0.5, 99.5])
    return float(hi - lo)


def neighbour_correlation(work: np.ndarray) -> float:
    a, b = work[:, :-1].ravel().astype(np.float32), work[:, 1:].ravel().astype(np.float32)
    if a.std() == 0 or b.std() == 0:
        return 1.0
    return float(np.corrcoef(a, b)[0, 1])


def detail(work: np.ndarray) -> float:
    """Standard deviation left after a broad blur, as a share of the image's own."""
    w = work.astype(np.float32)
    sd = float(w.std())
    if sd == 0:
        return 0.0
    return float((w - cv2.GaussianBlur(w, (0, 0), max(work.shape) / 32)).std() / sd)


def inner_detail(work: np.ndarray, solid: np.ndarray) -> float:
    """Fine detail inside an object mask (eroded, so that its outline does not count)."""
    inner = cv2.erode(solid.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    if inner.sum() < 50:
        return 0.0
    w = work.astype(np.float32)
    high = w - cv2.GaussianBlur(w, (0, 0), 2)
    return float(high[inner].std() / max(1.0, spread(work)))


def measures(img: np.ndarray, analysis) -> dict[str, float]:
    """Every quantity the tests use, for an 8-bit image and its classical analysis
    (:class:`boneage.imaging.crop.Analysis`)."""
    work = analysis.work
    found = analysis.hand
    share = 0.0 if found is None else (found[0][2] - found[0][0]) * (found[0][3] - found[0][1]) / work.size
    return {
        "spread": spread(img),
        "neighbour_correlation": neighbour_correlation(work),
        "detail": detail(work),
        "object_share": float(share),
        "inner_detail": 0.0 if found is None else inner_detail(work, found[2]),
    }


def verdict(m: dict[str, float]) -> tuple[str | None, str | None]:
    """(reject reason, doubt) for an image's :func:`measures`; both None for a plausible hand
    radiograph. A doubt keeps the image but flags it in the index, the log and the report."""
    if m["spread"] < MIN_SPREAD:
        return (f"not a hand radiograph: near-empty dynamic range (99 % of pixels within "
                f"{m['spread']:.0f} grey levels after windowing)"), None
    if m["neighbour_correlation"] < MIN_NEIGHBOUR_CORRELATION:
        return (f"not a hand radiograph: neighbouring pixels barely alike (correlation "
                f"{m['neighbour_correlation']:.2f}), like noise"), None
    if m["detail"] < MIN_DETAIL:
        return f"not a hand radiograph: no detail beyond a smooth ramp (detail {m['detail']:.3f})", None
    if m["object_share"] < MIN_OBJECT_SHARE:
        return "not a hand radiograph: no object stands out from the background", None
    if m["inner_detail"] < DOUBT_INNER_DETAIL:
        return None, f"object with little inner structure (detail {m['inner_detail']:.4f}), unlike most bone"
    return None, None


def check(img: np.ndarray, analysis) -> tuple[str | None, str | None]:
    """(reject reason, doubt) for an 8-bit image: see :func:`verdict`."""
    return verdict(measures(img, analysis))
