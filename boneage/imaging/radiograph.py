"""One radiograph through preprocessing, and a pool of worker processes over many.

Per image: decode (8/16-bit PNG, JPEG, WebP, DICOM) -> window to 8 bit -> hand check (images that
are not hand radiographs are refused, :mod:`boneage.imaging.handcheck`) -> hand crop (MediaPipe, classical
fallback) -> side markers painted out -> aspect-kept resize -> CLAHE -> pad to a square. Used by
the preprocess stage and by predict, so that new films go through exactly what the training
films went through. The defaults of :class:`Settings` equal the config schema's (a test holds them).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..files import WriteError, progress, sha256_bytes
from . import handcheck
from .crop import RENDERINGS, Analysis, HandCropper, region_box, remove_markers
from .images import ImageError, check_usable, inside, read_grey, to_uint8, write_png

STEPS = ("read", "decode", "check", "crop", "resize", "clahe", "encode")
BOX = ("crop_x0", "crop_y0", "crop_x1", "crop_y1")  # the hand box found, as the index records it


@dataclass(frozen=True)
class Settings:
    image_size: int = 96
    crop_method: str = "auto"
    crop_margin: float = 0.05
    remove_markers: bool = True
    clahe_clip_limit: float = 2.0
    clahe_tile_grid: int = 8
    hand_model: str | None = None
    mediapipe_renderings: tuple[str, ...] = RENDERINGS
    hand_check: bool = True
    region: str = "hand"  # hand | wrist | fingers: the part of the hand box kept (boneage.imaging.crop.boxes.region_box)

    @classmethod
    def of(cls, made: dict) -> "Settings":
        """The settings a stage or bundle recorded (``asdict`` of one; JSON gives lists for tuples)."""
        return cls(**{**made, "mediapipe_renderings": tuple(made["mediapipe_renderings"])})


def resize_pad(img: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Resize keeping the aspect ratio so the long side is ``size``; returns image and (h, w)."""
    h, w = img.shape[:2]
    scale = size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(img, (new_w, new_h), interpolation=interp), (new_h, new_w)


def pad_square(img: np.ndarray, size: int) -> np.ndarray:
    """Centre ``img`` on a black ``size`` x ``size`` canvas."""
    h, w = img.shape[:2]
    top, left = (size - h) // 2, (size - w) // 2
    return cv2.copyMakeBorder(img, top, size - h - top, left, size - w - left, cv2.BORDER_CONSTANT, value=0)


def render(img: np.ndarray, box, settings: Settings, t: dict | None = None) -> tuple[np.ndarray, int]:
    """The model input of an 8-bit film ``img`` whose hand box is ``box``: the part ``settings.region``
    names -> side markers painted out -> aspect-kept resize -> CLAHE -> pad to a square. Returns the
    image and the markers painted out; adds seconds per step to ``t``. The preprocess stage and the
    views stage (other parts of the same hand boxes) both make their images here."""
    t = {} if t is None else t
    t0 = time.perf_counter()
    rx0, ry0, rx1, ry1 = region_box(box, settings.region, img.shape[1], img.shape[0])
    cut = img[ry0:ry1, rx0:rx1]
    markers = 0
    if settings.remove_markers:
        cut, markers = remove_markers(cut)
    t["crop"] = t.get("crop", 0.0) + time.perf_counter() - t0
    t0 = time.perf_counter()
    small, _ = resize_pad(cut, settings.image_size)
    t["resize"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    clahe = cv2.createCLAHE(clipLimit=settings.clahe_clip_limit,
                            tileGridSize=(settings.clahe_tile_grid, settings.clahe_tile_grid))
    out = pad_square(clahe.apply(small), settings.image_size)
    t["clahe"] = time.perf_counter() - t0
    return out, markers


def process_image(path: Path, settings: Settings, cropper: HandCropper) -> tuple[np.ndarray, dict, dict]:
    """One radiograph to its model input. Returns (png image, index fields, seconds per step).

    Raises ImageError for an image that cannot be used.
    """
    t = {}
    t0 = time.perf_counter()
    data = path.read_bytes()
    t["read"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    raw = read_grey(path, data)
    check_usable(raw)
    img = to_uint8(raw)
    t["decode"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    analysis, doubt = None, None
    if settings.hand_check:
        analysis = Analysis(img)  # the crop reuses it
        reason, doubt = handcheck.check(img, analysis)
        if reason:
            raise ImageError(reason)
    t["check"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    crop = cropper(img, analysis)
    x0, y0, x1, y1 = crop.box
    t["crop"] = time.perf_counter() - t0
    out, markers = render(img, crop.box, settings, t)

    fields = {
        "source_file": str(path),
        "source_sha256": sha256_bytes(data),
        "source_dtype": str(raw.dtype),
        "height_before": int(raw.shape[0]),
        "width_before": int(raw.shape[1]),
        "crop_method": crop.method,
        "crop_x0": x0, "crop_y0": y0, "crop_x1": x1, "crop_y1": y1,
        "landmarks": int(crop.landmarks),
        "mediapipe_refused": int(crop.refused),
        "markers_removed": int(markers),
        "hand_doubt": doubt or "",
        "height_after": int(out.shape[0]),
        "width_after": int(out.shape[1]),
    }
    return out, fields, t


# --- worker processes: one HandCropper (and MediaPipe graph) per process --------------------------
_worker: dict = {}


def _init_worker(settings: Settings, out_dir: str) -> None:
    cv2.setNumThreads(1)
    _worker["settings"] = settings
    _worker["out_dir"] = Path(out_dir)
    _worker["cropper"] = HandCropper(settings.crop_method, settings.crop_margin, settings.hand_model,
                                     settings.mediapipe_renderings)


def _work(task: tuple[str, str | None]) -> dict:
    image_id, path = task
    if path is None:
        return {"id": image_id, "reject": "image file not found"}
    try:
        out, fields, t = process_image(Path(path), _worker["settings"], _worker["cropper"])
        t0 = time.perf_counter()
        rel = f"images/{image_id}.png"
        write_png(inside(_worker["out_dir"] / "images", f"{image_id}.png"), out, (cv2.IMWRITE_PNG_COMPRESSION, 1))
        t["encode"] = time.perf_counter() - t0
        return {"id": image_id, "image": rel, **fields, "timing": t}
    except WriteError as exc:  # the disk, not the film: the stage stops (it is no reject)
        return {"id": image_id, "fatal": str(exc)}
    except ImageError as exc:
        return {"id": image_id, "file": path, "reject": str(exc)}
    except Exception as exc:  # a broken file must not stop the other 14,000
        return {"id": image_id, "file": path, "reject": f"{type(exc).__name__}: {exc}"}


def run_images(tasks: list[tuple[str, str | None]], settings: Settings, out_dir: Path, threads: int):
    """Process images in ``threads`` processes with a progress bar; yields result dicts. A write that
    failed (a full disk) raises :class:`boneage.files.WriteError`: no image is a reject for it."""
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    chunk = max(1, min(32, len(tasks) // (threads * 8) or 1))
    if threads <= 1:
        _init_worker(settings, str(out_dir))
        try:
            yield from _stop_at_fatal(progress(map(_work, tasks), total=len(tasks), desc="preprocess", unit="img"))
        finally:
            _worker["cropper"].close()
        return
    ctx = mp.get_context("spawn")  # MediaPipe and OpenCV threads do not survive fork well
    with ctx.Pool(threads, initializer=_init_worker, initargs=(settings, str(out_dir))) as pool:
        results = pool.imap_unordered(_work, tasks, chunksize=chunk)
        yield from _stop_at_fatal(progress(results, total=len(tasks), desc="preprocess", unit="img"))


def _stop_at_fatal(results):
    for res in results:
        if "fatal" in res:
            raise WriteError(res["fatal"])
        yield res


# --- other parts of hands already found: the views stage, and predict for ensembles of regions ---
def _render_view(task: tuple[str, tuple[int, int, int, int], Settings]) -> np.ndarray:
    source, box, settings = task
    return render(to_uint8(read_grey(source)), box, settings)[0]


def _init_view() -> None:
    cv2.setNumThreads(1)


def view_images(index, settings: Settings, threads: int = 1):
    """For each row of the table ``index``, in order, the model input of its film (``source_file``) for
    ``settings`` (its region), cut from the hand box the row records (:data:`BOX`): another part of
    hands already found, without finding them again (the views stage; predict for ensembles of regions)."""
    tasks = ((source, tuple(map(int, box)), settings)
             for source, *box in zip(index["source_file"], *(index[c] for c in BOX)))
    bar = dict(total=len(index), desc=f"view {settings.region}", unit="img")
    if threads <= 1:
        yield from progress(map(_render_view, tasks), **bar)
        return
    with mp.get_context("spawn").Pool(threads, initializer=_init_view) as pool:
        yield from progress(pool.imap(_render_view, tasks, chunksize=32), **bar)
