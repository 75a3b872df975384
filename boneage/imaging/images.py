"""Reading radiographs as users have them: 8- and 16-bit PNG, JPEG, WebP and DICOM, as 8-bit grey."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..files import write_bytes
from .layout import IMAGE_EXTENSIONS

# Largest image decoded, in pixels (10,000 x 10,000). Checked from the file's header before any
# pixel is decoded, so a tiny file that declares a huge image cannot claim memory. RSNA films are
# about 2,000 x 2,500 (5 million pixels).
MAX_PIXELS = 100_000_000


class ImageError(ValueError):
    """An image that cannot be used; the message is the reason written to the rejects table."""


def header_size(data: bytes, dicom: bool) -> tuple[int, int, int]:
    """(width, height, samples per pixel x frames) read from the header alone, without decoding."""
    import io

    if dicom:
        import pydicom

        try:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            return (int(ds.get("Columns", 0) or 0), int(ds.get("Rows", 0) or 0),
                    int(ds.get("SamplesPerPixel", 1) or 1) * int(ds.get("NumberOfFrames", 1) or 1))
        except Exception as exc:  # pydicom raises many types for bad headers
            raise ImageError(f"undecodable DICOM: {exc}") from exc
    from PIL import Image

    bomb_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the size is checked below
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            return img.width, img.height, 1
    except Exception:
        return 0, 0, 1  # not a format Pillow knows: OpenCV decides below
    finally:
        Image.MAX_IMAGE_PIXELS = bomb_limit


def write_png(path: str | os.PathLike, img: np.ndarray, params: tuple[int, ...] = ()) -> None:
    """``img`` as a PNG at ``path``: encoded in memory and written atomically, so that a full disk is
    an error naming the file (:class:`boneage.files.WriteError`), never a missing or truncated image
    (``cv2.imwrite`` only returns False)."""
    ok, buf = cv2.imencode(".png", img, list(params))
    if not ok:
        raise ImageError(f"could not encode {path} as PNG")
    write_bytes(path, buf.tobytes())


def check_size(data: bytes, dicom: bool) -> None:
    width, height, planes = header_size(data, dicom)
    if width * height * planes > MAX_PIXELS:
        raise ImageError(f"image too large: {width}x{height} px{f' x {planes}' if planes > 1 else ''} "
                         f"declared in its header, over the limit of {MAX_PIXELS:,} pixels")


def inside(folder: str | os.PathLike, name: str) -> Path:
    """``folder / name``, refused unless it is a file name directly inside ``folder``.

    Ids come from label tables; every path built from one goes through here (see ingest.ID_PATTERN).
    """
    folder = Path(folder)
    path = folder / name
    if Path(name).name != name or name in (".", "..") or path.parent != folder:
        raise ValueError(f"{name!r} is not a plain file name inside {folder}")
    return path


def find_image(image_dir: str | os.PathLike, image_id: str) -> Path | None:
    """The file ``<image_dir>/<id>.<ext>`` for the first known extension that exists, else None."""
    image_dir = Path(image_dir)
    inside(image_dir, image_id)
    for ext in IMAGE_EXTENSIONS:
        for candidate in (image_dir / f"{image_id}{ext}", image_dir / f"{image_id}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    return None


# A colour image whose channels are not all (nearly) one linear function of its grey: a photograph,
# not a radiograph. Grey and tinted scans (sepia, blue film) have R^2 of about 1 in every channel.
MIN_CHANNEL_R2 = 0.9


def grey_or_refuse(img: np.ndarray, rgb: bool = False) -> np.ndarray:
    """A 3-channel image (BGR, or RGB where ``rgb``; alpha already dropped) as grey; ImageError
    where the channels carry colour. A grey or tinted image stored as colour passes."""
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY if rgb else cv2.COLOR_BGR2GRAY)
    step = max(1, int(np.sqrt(grey.size / 250_000)))  # about 250,000 pixels decide
    g = grey[::step, ::step].ravel().astype(np.float64)
    if g.std() > 0:
        for c in range(3):
            ch = img[::step, ::step, c].ravel().astype(np.float64)
            r2 = np.corrcoef(g, ch)[0, 1] ** 2 if ch.std() > 0 else 0.0
            if r2 < MIN_CHANNEL_R2:
                raise ImageError(f"not a hand radiograph: a colour image (a channel follows the grey "
                                 f"with R^2 {r2:.2f} < {MIN_CHANNEL_R2})")
    return grey


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
        pixels = grey_or_refuse(pixels[:, :, :3].astype(np.uint8), rgb=True)
    elif pixels.ndim != 2:
        raise ImageError(f"DICOM has {pixels.ndim} dimensions (multi-frame?); expected one 2-D image")
    try:
        img = apply_modality_lut(pixels, ds).astype(np.float32)
    except Exception as exc:  # a RescaleSlope of 'abc': the pixels' scale is unknown
        raise ImageError(f"DICOM rescale (RescaleSlope/RescaleIntercept) unusable: {exc}") from exc
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        try:
            img = apply_voi_lut(img, ds).astype(np.float32)
        except Exception:  # a window of width 0 or 'x': to_uint8's min-max window applies alone
            pass
    if getattr(ds, "PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        img = img.max() - img + img.min()  # MONOCHROME1: high values are dark
    return img


def read_grey(path: str | os.PathLike, data: bytes | None = None) -> np.ndarray:
    """Decode an image file (or its bytes, already read) to a 2-D array.

    Returns uint8 or uint16 for PNG/JPEG/WebP, float32 for DICOM (modality LUT and windowing
    applied, MONOCHROME1 inverted). Raises ImageError with a reason a user can act on, also for a
    colour image (see :func:`grey_or_refuse`).
    """
    path = Path(path)
    if data is None:
        data = path.read_bytes()
    if len(data) == 0:
        raise ImageError("empty file (0 bytes)")
    dicom = path.suffix.lower() in (".dcm", ".dicom")
    check_size(data, dicom)
    if dicom:
        return _read_dicom(data)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageError(f"undecodable image data ({path.suffix or 'no extension'})")
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = img[:, :, :3]
        img = grey_or_refuse(img)
    return img


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Map an image to uint8 by its own range: its minimum to 0, its maximum to 255, whatever its bit depth.

    The same film as 8-bit PNG, 16-bit PNG, 12- or 16-bit DICOM (MONOCHROME1 already inverted,
    rescaled, windowed) thus gives the same pixels, and an 8-bit film that spans 0-255 stays as it
    is (docs/bad_inputs.md, "One film, every encoding"). A film using 10-12 of 16 bits is stretched
    to the full range.
    """
    lo, hi = float(img.min()), float(img.max())
    if hi <= lo:
        return np.zeros(img.shape, np.uint8)
    if img.dtype in (np.uint8, np.uint16):  # a table of every value: no float copy of a large film
        return _scaled(np.arange(int(hi) + 1, dtype=np.float32), lo, hi)[img]
    return _scaled(img.astype(np.float32), lo, hi)


def _scaled(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``x`` (float32, changed in place) from [lo, hi] to 0-255. Dividing (x - lo) by (hi - lo) first
    makes a scaled copy of integer data give the same quotient, so the same uint8 value, bit for bit."""
    x -= np.float32(lo)
    x /= np.float32(hi - lo)
    x *= np.float32(255.0)
    return np.rint(x, out=x).astype(np.uint8)


def check_usable(img: np.ndarray, min_side: int = 32) -> None:
    """Raise ImageError for images that carry no picture: zero-size, tiny or one grey value."""
    if img.size == 0 or min(img.shape[:2]) == 0:
        raise ImageError("zero-size image")
    if min(img.shape[:2]) < min_side:
        raise ImageError(f"image too small ({img.shape[1]}x{img.shape[0]} px, need {min_side})")
    lo, hi = int(img.min()), int(img.max())
    if lo == hi:
        raise ImageError(f"one-colour image (every pixel is {lo})")
