"""Synthetic hand radiographs in the RSNA layout: the embedded demo dataset.

Every picture is drawn from a seed, so the dataset is the same on every machine. Each one shows a
left hand, PA view, on a dark noisy background: radius and ulna with their distal epiphyses, the
carpal bones, five metacarpals and the phalanges, under a soft-tissue shadow, plus a side marker,
small rotations and varied framing. What changes with age is what a radiologist reads:

* bones grow longer and wider;
* carpal bones appear one by one, in their clinical order (capitate and hamate first, pisiform last);
* epiphyses start as small ossification centres, widen to the width of the shaft, and the growth
  plate between them narrows and closes in late adolescence;
* girls mature earlier: at the same age their skeleton is drawn more mature.

So a model can learn age from the pixels, and a model that also sees the sex can learn more.
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ..files import progress, setup_logging, write_table
from .images import write_png
from .ingest import IMAGE_DIR, LABELS_CSV

log = logging.getLogger("boneage.imaging.demo")

# Carpal bones in order of appearance: (name, x, y, radius x, radius y, maturity when it appears).
# Coordinates are in hand units: origin at the wrist, +y towards the fingers, +x towards the thumb.
CARPALS = [
    ("capitate", 0.00, 0.085, 0.034, 0.045, 0.02),
    ("hamate", -0.058, 0.080, 0.030, 0.040, 0.05),
    ("triquetrum", -0.085, 0.035, 0.026, 0.026, 0.18),
    ("lunate", -0.025, 0.030, 0.028, 0.026, 0.27),
    ("trapezium", 0.085, 0.070, 0.026, 0.030, 0.36),
    ("trapezoid", 0.050, 0.095, 0.022, 0.026, 0.40),
    ("scaphoid", 0.050, 0.030, 0.030, 0.024, 0.42),
    ("pisiform", -0.100, 0.070, 0.016, 0.016, 0.62),
]

# Rays: (metacarpal base x, base y, angle in degrees towards the thumb, [bone lengths, base to tip]).
# Thumb: metacarpal, proximal and distal phalanx; fingers: metacarpal and three phalanges.
RAYS = [
    (0.105, 0.085, 38.0, [0.17, 0.13, 0.10]),  # thumb
    (0.060, 0.135, 9.0, [0.28, 0.17, 0.10, 0.075]),  # index
    (0.018, 0.140, 1.0, [0.27, 0.185, 0.115, 0.08]),  # middle
    (-0.025, 0.135, -7.0, [0.25, 0.17, 0.105, 0.075]),  # ring
    (-0.068, 0.120, -15.0, [0.21, 0.135, 0.08, 0.07]),  # little
]
RAY_WIDTHS = [0.040, 0.036, 0.037, 0.034, 0.030]
JOINT_GAP = 0.012


def maturity(age_months: float, male: bool) -> float:
    """Skeletal maturity in [0, 1]: 1 = fully fused. Girls reach it about 1.5 years earlier."""
    full = 222.0 if male else 204.0
    return float(np.clip(age_months / full, 0.0, 1.0))


def _smoothstep(a: float, b: float, x: float) -> float:
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return float(t * t * (3 - 2 * t))


@dataclass
class Canvas:
    """Draws in hand units onto an image through a similarity transform (scale, rotation, shift)."""

    img: np.ndarray
    scale: float  # pixels per hand unit
    angle: float  # radians
    origin: tuple[float, float]  # pixel position of the wrist

    def px(self, x: float, y: float) -> tuple[float, float]:
        c, s = math.cos(self.angle), math.sin(self.angle)
        xr, yr = c * x - s * y, s * x + c * y
        return self.origin[0] + self.scale * xr, self.origin[1] - self.scale * yr

    def bar(self, p0, p1, w0: float, w1: float, value: float) -> None:
        """A bone shaft from p0 to p1 (hand units), width w0 at p0 and w1 at p1, waisted mid-shaft."""
        (x0, y0), (x1, y1) = p0, p1
        dx, dy = x1 - x0, y1 - y0
        n = math.hypot(dx, dy) or 1.0
        nx, ny = -dy / n, dx / n
        waist = 0.78 * (w0 + w1) / 2
        pts = []
        for t, w in ((0.0, w0), (0.5, waist), (1.0, w1)):
            pts.append((x0 + t * dx + nx * w / 2, y0 + t * dy + ny * w / 2))
        for t, w in ((1.0, w1), (0.5, waist), (0.0, w0)):
            pts.append((x0 + t * dx - nx * w / 2, y0 + t * dy - ny * w / 2))
        poly = np.array([self.px(*p) for p in pts], np.float32)
        cv2.fillPoly(self.img, [np.round(poly * 16).astype(np.int32)], float(value), cv2.LINE_AA, 4)

    def blob(self, x: float, y: float, rx: float, ry: float, angle_deg: float, value: float) -> None:
        cx, cy = self.px(x, y)
        axes = (max(1, int(round(rx * self.scale * 16))), max(1, int(round(ry * self.scale * 16))))
        rot = -math.degrees(self.angle) - angle_deg
        center = (int(round(cx * 16)), int(round(cy * 16)))
        cv2.ellipse(self.img, center, axes, rot, 0, 360, float(value), -1, cv2.LINE_AA, 4)

    def line(self, p0, p1, width: float, value: float) -> None:
        a = tuple(int(round(v * 16)) for v in self.px(*p0))
        b = tuple(int(round(v * 16)) for v in self.px(*p1))
        thickness = max(1, int(round(width * self.scale)))
        cv2.line(self.img, a, b, float(value), thickness, cv2.LINE_AA, 4)


def _ray_bones(ray_index: int, m: float, growth: float, spread_deg: float = 0.0):
    """Yield (start, end, width, epiphysis_at, direction) for each bone of a ray, base to tip;
    epiphysis_at is 'base' or 'head'. ``spread_deg`` turns the ray away from its usual angle."""
    bx, by, angle, lengths = RAYS[ray_index]
    a = math.radians(angle + spread_deg)
    ux, uy = math.sin(a), math.cos(a)
    width = RAY_WIDTHS[ray_index] * (0.75 + 0.25 * growth)
    x, y = bx, by
    for j, length in enumerate(lengths):
        length *= growth
        start = (x, y)
        end = (x + ux * length, y + uy * length)
        is_metacarpal = j == 0
        # Metacarpals 2-5 ossify at the head; the thumb metacarpal and all phalanges at the base.
        epiphysis_at = "head" if (is_metacarpal and ray_index > 0) else "base"
        w = width * (1.0 if is_metacarpal else 0.9 - 0.12 * (j - 1))
        yield start, end, w, epiphysis_at, (ux, uy)
        x, y = end[0] + ux * JOINT_GAP, end[1] + uy * JOINT_GAP


def draw_hand(canvas: Canvas, m: float, soft: float, bone: float, rng: np.random.Generator) -> None:
    """Draw soft tissue, then bones, of a hand of maturity m onto the canvas."""
    growth = 0.55 + 0.45 * m**0.8  # bone lengths relative to an adult hand
    plate = 0.022 * (1.0 - _smoothstep(0.80, 0.95, m))  # growth-plate gap, closes late
    epi_width = 0.35 + 0.65 * _smoothstep(0.05, 0.65, m)  # epiphysis width relative to the shaft
    epi_on = m > 0.06
    spread = rng.normal(0, 2.5, size=len(RAYS))  # fingers spread a little differently each time

    # Soft tissue: forearm, palm and fingers as thick strokes.
    canvas.line((0.0, -0.6), (0.0, 0.02), 0.30 * (0.8 + 0.2 * growth), soft)
    canvas.blob(0.0, 0.12 * growth + 0.04, 0.17 * (0.8 + 0.2 * growth), 0.16 * growth, 0, soft)
    for r in range(len(RAYS)):
        bones = list(_ray_bones(r, m, growth, spread[r]))
        tip = bones[-1][1]
        canvas.line(bones[0][0], tip, RAY_WIDTHS[r] * 2.4, soft)

    # Radius (thumb side) and ulna with distal epiphyses.
    for x, w, top in ((0.065, 0.105, -0.035), (-0.075, 0.075, -0.055)):
        w *= 0.75 + 0.25 * growth
        canvas.bar((x, -0.75), (x, top - plate), w * 0.9, w * 1.15, bone)
        if epi_on:
            h = 0.018 + 0.014 * m
            canvas.blob(x, top + h / 2, w * 0.55 * epi_width, h / 2, 0, bone)

    # Carpals appear in order and grow.
    for _, cx, cy, rx, ry, appear in CARPALS:
        if m <= appear:
            continue
        size = 0.35 + 0.65 * _smoothstep(appear, appear + 0.35, m)
        canvas.blob(cx, cy * (0.8 + 0.2 * growth), rx * size, ry * size, rng.normal(0, 8), bone)

    # Metacarpals and phalanges with their epiphyses.
    for r in range(len(RAYS)):
        for start, end, w, at, (ux, uy) in _ray_bones(r, m, growth, spread[r]):
            length = math.hypot(end[0] - start[0], end[1] - start[1])
            h = min(0.25 * length, 0.016 + 0.012 * m)
            angle = math.degrees(math.atan2(ux, uy))
            if at == "base":
                shaft_start = (start[0] + ux * (h + plate), start[1] + uy * (h + plate))
                canvas.bar(shaft_start, end, w * 1.05, w * 0.9, bone)
                if epi_on:
                    ex, ey = start[0] + ux * h / 2, start[1] + uy * h / 2
                    canvas.blob(ex, ey, w * 0.55 * epi_width, h / 2, angle, bone)
            else:
                shaft_end = (end[0] - ux * (h + plate), end[1] - uy * (h + plate))
                canvas.bar(start, shaft_end, w * 0.95, w * 1.1, bone)
                if epi_on:
                    ex, ey = end[0] - ux * h / 2, end[1] - uy * h / 2
                    canvas.blob(ex, ey, w * 0.6 * epi_width, h / 2, angle, bone)


def draw_marker(img: np.ndarray, rng: np.random.Generator) -> None:
    """A side marker ('L') with technologist initials in a box at a random corner."""
    h, w = img.shape
    size = int(rng.uniform(0.05, 0.08) * h)
    corner_x = int(rng.uniform(0.04, 0.1) * w) if rng.random() < 0.5 else int(w - rng.uniform(0.12, 0.2) * w)
    corner_y = int(rng.uniform(0.04, 0.5) * h)
    cv2.rectangle(img, (corner_x, corner_y), (corner_x + size, corner_y + int(size * 1.6)), 70, -1)
    font_scale = size / 30.0
    cv2.putText(img, "L", (corner_x + size // 6, corner_y + int(size * 0.95)), cv2.FONT_HERSHEY_SIMPLEX,
                font_scale, 250, max(1, size // 8), cv2.LINE_AA)
    initials = "".join(chr(int(c)) for c in rng.integers(65, 91, size=2))
    cv2.putText(img, initials, (corner_x + 2, corner_y + int(size * 1.45)), cv2.FONT_HERSHEY_PLAIN,
                font_scale * 0.9, 230, 1, cv2.LINE_AA)


def render(age_months: float, male: bool, rng: np.random.Generator) -> np.ndarray:
    """One synthetic radiograph (uint8, portrait, about 400x330 px)."""
    height = int(rng.integers(360, 440))
    width = int(height * rng.uniform(0.74, 0.9))
    background = rng.uniform(8, 35)
    img = np.full((height, width), background, np.float32)
    m = maturity(age_months, male)
    soft = background + rng.uniform(30, 50)
    bone = soft + rng.uniform(70, 95) * (0.85 + 0.15 * m)
    scale = height * rng.uniform(0.66, 0.78)
    origin = (width * rng.uniform(0.42, 0.56), height * rng.uniform(0.70, 0.80))
    canvas = Canvas(img, scale, math.radians(rng.normal(0, 6)), origin)
    draw_hand(canvas, m, soft, bone, rng)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.6, 1.2))
    # Low-frequency exposure gradient and quantum noise.
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img += rng.uniform(-12, 12) * (xx / width - 0.5) + rng.uniform(-12, 12) * (yy / height - 0.5)
    img += rng.normal(0, rng.uniform(3, 7), img.shape).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    draw_marker(img, rng)
    return img


def non_hands(seed: int = 0, size: tuple[int, int] = (600, 480)) -> dict[str, np.ndarray]:
    """Images that are not hand radiographs, by name, for the hand check's tests and benchmark:
    ramps, noise, a colour picture, blank films, a test pattern, a printed page, a drawn disk."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = {
        "gradient": (xx / w * 255).astype(np.uint8),
        "gradient_diagonal": ((xx / w + yy / h) * 127.5).astype(np.uint8),
        "vignette": (255 * (1 - np.hypot(xx - w / 2, yy - h / 2) / np.hypot(w / 2, h / 2))).astype(np.uint8),
        "noise_gaussian": np.clip(rng.normal(128, 40, size), 0, 255).astype(np.uint8),
        "noise_uniform": rng.integers(0, 256, size, dtype=np.uint8),
        "noise_smooth": cv2.normalize(cv2.GaussianBlur(rng.normal(0, 1, size).astype(np.float32), (0, 0), 12),
                                      None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8),
    }
    photo = np.empty((h, w, 3), np.uint8)
    photo[:] = (200, 120, 40)
    cv2.circle(photo, (w // 3, h // 3), min(h, w) // 6, (20, 200, 240), -1)
    cv2.rectangle(photo, (w // 2, h // 2), (w - 40, h - 40), (60, 30, 220), -1)
    out["colour_photo"] = cv2.add(photo, rng.integers(0, 30, photo.shape, dtype=np.uint8))
    film16 = np.full(size, 1200, np.uint16)  # a blank 16-bit film with one odd pixel
    film16[h // 2, w // 2] = 4000
    out["film16_one_pixel"] = film16
    blank = np.full(size, 90, np.uint8)
    blank[10:14, 10:14] = 200
    out["blank_with_dot"] = blank
    out["checkerboard"] = ((yy // 40 + xx // 40) % 2 * 200 + 20).astype(np.uint8)
    page = np.full(size, 235, np.uint8)
    for i, y in enumerate(range(40, h - 40, 28)):
        cv2.putText(page, f"Lorem ipsum dolor sit amet {i}", (30, y), cv2.FONT_HERSHEY_SIMPLEX, 0.7, 20, 2)
    out["text_page"] = page
    disk = np.zeros(size, np.uint8)
    cv2.circle(disk, (w // 2, h // 2), min(h, w) // 3, 200, -1)
    out["disk"] = cv2.GaussianBlur(disk, (0, 0), 3)
    return out


def sample_labels(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Ages like RSNA's (median about 11 years, 1-228 months) and 54 % boys."""
    ages = np.clip(np.round(rng.normal(128, 45, n)), 6, 228)
    male = rng.random(n) < 0.54
    ids = np.arange(1, n + 1) + 100000
    return pd.DataFrame({"id": ids, "boneage": ages.astype(float), "male": male})


def generate(out_dir: str | Path, n_images: int, seed: int) -> pd.DataFrame:
    """Write ``n_images`` synthetic radiographs plus the label csv in the RSNA layout."""
    out_dir = Path(out_dir)
    (out_dir / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    for old in (out_dir / IMAGE_DIR).glob("*.png"):  # a smaller set must not keep the old images
        old.unlink()
    labels = sample_labels(n_images, np.random.default_rng(seed))
    for row in progress(labels.itertuples(), total=len(labels), desc="demo images", unit="img"):
        # One generator per image, derived from the seed and the id: any image can be re-made alone.
        rng = np.random.default_rng([seed, int(row.id)])
        img = render(row.boneage, bool(row.male), rng)
        write_png(out_dir / IMAGE_DIR / f"{row.id}.png", img)  # a full disk stops here, naming the file
    write_table(labels, out_dir / LABELS_CSV)
    log.info("wrote %d demo radiographs to %s", len(labels), out_dir)
    return labels


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", required=True, help="folder to write the RSNA-layout dataset to")
    parser.add_argument("--n-images", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    setup_logging()
    generate(args.out_dir, args.n_images, args.seed)


if __name__ == "__main__":
    main()
