"""Reading radiographs as users have them: 8- and 16-bit PNG, JPEG, WebP and DICOM, as 8-bit grey."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

# Extensions looked for beside an id, in this order.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".dcm", ".dicom")


class ImageError(ValueError):
    """An image that cannot be used; the message is the reason written to the rejects table."""


def find_image(image_dir: str | os.PathLike, image_id: str) -> Path | None:
    """The file ``<image_dir>/<id>.<ext>`` for the first known extension that exists, else None."""
    image_dir = Path(image_dir)
    for ext in IMAGE_EXTENSIONS:
        for candidate in (image_dir / f"{image_id}{ext}", image_dir / f"{image_id}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def _read_dicom(data: bytes) -> np.ndarray:
    import io

    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for bad files
        raise ImageError(f"undecodable DICOM: {exc}") from exc
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        pixels = cv2.cvtColor(pixels.astype(np.uint8), cv2.COLOR_RGB2GRAY)
    elif pixels.ndim != 2:
        raise ImageError(f"DICOM has {pixels.ndim} dimensions (multi-frame?); expected one 2-D image")
    img = apply_modality_lut(pixels, ds).astype(np.float32)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        img = apply_voi_lut(img, ds).astype(np.float32)
    if getattr(ds, "PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        img = img.max() - img + img.min()  # MONOCHROME1: high values are dark
    return img


def read_grey(path: str | os.PathLike, data: bytes | None = None) -> np.ndarray:
    """Decode an image file (or its bytes, already read) to a 2-D array.

    Returns uint8 or uint16 for PNG/JPEG/WebP, float32 for DICOM (modality LUT and windowing
    applied, MONOCHROME1 inverted). Raises ImageError with a reason a user can act on.
    """
    path = Path(path)
    if data is None:
        data = path.read_bytes()
    if len(data) == 0:
        raise ImageError("empty file (0 bytes)")
    if path.suffix.lower() in (".dcm", ".dicom"):
        return _read_dicom(data)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageError(f"undecodable image data ({path.suffix or 'no extension'})")
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = img[:, :, :3]
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return img


def to_uint8(img: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """Map an image to uint8. 8-bit data is kept as is; deeper data is windowed on its percentiles.

    16-bit radiographs often use 10-12 of their bits; a percentile window maps the range that holds
    the anatomy to 0-255 instead of leaving it in a few dark grey levels.
    """
    if img.dtype == np.uint8:
        return img
    img = img.astype(np.float32)
    lo, hi = np.percentile(img, [low_pct, high_pct])
    if hi <= lo:
        lo, hi = float(img.min()), float(img.max())
    if hi <= lo:
        return np.zeros(img.shape, np.uint8)
    out = (img - lo) * (255.0 / (hi - lo))
    return np.clip(out, 0, 255).astype(np.uint8)


def check_usable(img: np.ndarray, min_side: int = 32) -> None:
    """Raise ImageError for images that carry no picture: zero-size, tiny or one grey value."""
    if img.size == 0 or min(img.shape[:2]) == 0:
        raise ImageError("zero-size image")
    if min(img.shape[:2]) < min_side:
        raise ImageError(f"image too small ({img.shape[1]}x{img.shape[0]} px, need {min_side})")
    lo, hi = int(img.min()), int(img.max())
    if lo == hi:
        raise ImageError(f"one-colour image (every pixel is {lo})")
