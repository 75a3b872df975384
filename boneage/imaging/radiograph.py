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
from .intensity import for_resize, rank_levels

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
    placement: str = "rounded"  # rounded | exact: how the box goes onto the square (render)
    intensity: str = "minmax"  # minmax | rank: the grey levels of the cut before CLAHE (render, rank_levels)

    def cropper(self) -> HandCropper:
        """The hand crop these settings name (close it after use, or use it as a context manager)."""
        return HandCropper(self.crop_method, self.crop_margin, self.hand_model, self.mediapipe_renderings)

    @classmethod
    def of(cls, made: dict) -> "Settings":
        """The settings a stage or bundle recorded (``asdict`` of one; JSON gives lists for tuples)."""
        # a bundle or summary from before ``placement`` or ``intensity`` existed was made with rounded, minmax
        return cls(**{"placement": "rounded", "intensity": "minmax", **made,
                      "mediapipe_renderings": tuple(made["mediapipe_renderings"])})


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


PLACEMENTS = ("rounded", "exact")


def render(img: np.ndarray, box, settings: Settings, t: dict | None = None) -> tuple[np.ndarray, int]:
    """The model input of an 8-bit film ``img`` whose hand box is ``box``: the part ``settings.region``
    names -> side markers painted out -> aspect-kept resize -> CLAHE -> pad to a square. Returns the
    image and the markers painted out; adds seconds per step to ``t``. The preprocess stage and the
    views stage (other parts of the same hand boxes) both make their images here.

    ``settings.placement``: ``rounded`` resizes the cut to whole pixels, applies CLAHE to that and
    centres it by whole pixels; a box 1 px wider can then make the resized side a pixel longer, which
    shifts the image by a pixel and changes CLAHE's tiles (OpenCV pads a side to a multiple of the
    tile grid), and an estimate can move by months. ``exact`` (:func:`place_exact`) keeps the model
    input continuous in the box.

    ``settings.intensity``: ``minmax`` keeps the film's grey levels as :func:`to_uint8` mapped them
    (its own range); ``rank`` replaces them by their ranks inside the hand box (:func:`rank_levels`)
    before CLAHE, so that the film's contrast curve does not reach the model."""
    t = {} if t is None else t
    t0 = time.perf_counter()
    rx0, ry0, rx1, ry1 = region_box(box, settings.region, img.shape[1], img.shape[0])
    cut = img[ry0:ry1, rx0:rx1]
    markers = 0
    if settings.remove_markers:
        cut, markers = remove_markers(cut)
    t["crop"] = t.get("crop", 0.0) + time.perf_counter() - t0
    clahe = cv2.createCLAHE(clipLimit=settings.clahe_clip_limit,
                            tileGridSize=(settings.clahe_tile_grid, settings.clahe_tile_grid))
    if settings.placement == "exact":
        return place_exact(img, cut, (rx0, ry0, rx1, ry1), settings, clahe, t), markers
    if settings.placement != "rounded":
        raise ValueError(f"placement {settings.placement!r} unknown; use one of {PLACEMENTS}")
    t0 = time.perf_counter()
    small, _ = resize_pad(for_resize(cut, settings.intensity), settings.image_size)
    if settings.intensity == "rank":
        small = rank_levels(small)
    t["resize"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = pad_square(clahe.apply(small), settings.image_size)
    t["clahe"] = time.perf_counter() - t0
    return out, markers


def place_exact(img: np.ndarray, cut: np.ndarray, box, settings: Settings, clahe, t: dict) -> np.ndarray:
    """The box ``box`` of ``img`` (its pixels ``cut``, markers painted out) on a ``size`` square by the
    box's exact scale and centre, not rounded to whole pixels: the film is scaled (the whole film by
    area averaging where the box is larger than the square; only the film around the box, cubic,
    where it is smaller, so that a small box on a large film cannot take memory), shifted so that the
    box's centre is the square's, CLAHE runs on the full square with the film around the box as
    context (its tiles then never depend on the box), and all outside the box is set to 0, edge
    pixels by the share of them the box covers. With ``rank`` intensities the grey levels are ranked
    among the pixels inside the box (:func:`rank_levels`), the context beyond held at the ends."""
    t0 = time.perf_counter()
    size = settings.image_size
    x0, y0, x1, y1 = box
    film = for_resize(img, settings.intensity)
    film[y0:y1, x0:x1] = cut
    scale = size / max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if scale >= 1:  # a box smaller than the square: enlarge only the film around it, never the whole film
        reach = max(x1 - x0, y1 - y0) / 2 + 2
        wx0, wy0 = max(0, int(np.floor(cx - reach))), max(0, int(np.floor(cy - reach)))
        film = film[wy0:int(np.ceil(cy + reach)), wx0:int(np.ceil(cx + reach))]
        cx, cy = cx - wx0, cy - wy0
    scaled = cv2.resize(film, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    shift = np.float32([[1, 0, size / 2 - scale * cx], [0, 1, size / 2 - scale * cy]])
    square = cv2.warpAffine(scaled, shift, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    t["resize"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    edges = np.arange(size, dtype=np.float64)

    def covered(extent: float) -> np.ndarray:  # share of each pixel inside the centred extent
        lo, hi = size / 2 - extent / 2, size / 2 + extent / 2
        return np.clip(np.minimum(edges + 1, hi) - np.maximum(edges, lo), 0, 1)

    inside = np.outer(covered(scale * (y1 - y0)), covered(scale * (x1 - x0)))
    if settings.intensity == "rank":
        square = rank_levels(square, inside >= 0.5)
    out = np.rint(clahe.apply(square) * inside).astype(np.uint8)
    t["clahe"] = time.perf_counter() - t0
    return out


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
    _worker["cropper"] = settings.cropper()


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
MAX_BOX_SHIFT = 0.05  # the largest box view shift, a share of the box's long side (config evaluate.box_shift)


def moved_boxes(box, shift: float, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """The hand box ``box`` and, where ``shift`` > 0, its 8 copies moved by ``shift`` of its long side
    (whole pixels, at least 1) along x, y and both, each clipped to the ``width`` x ``height`` film:
    the box views whose estimates are averaged (config ``evaluate.box_shift``). The found box comes first."""
    x0, y0, x1, y1 = map(int, box)
    if shift <= 0:
        return [(x0, y0, x1, y1)]
    step = max(1, round(shift * max(x1 - x0, y1 - y0)))
    out = []
    for dx in (0, -step, step):
        for dy in (0, -step, step):
            out.append((min(max(x0 + dx, 0), width), min(max(y0 + dy, 0), height),
                        min(max(x1 + dx, 0), width), min(max(y1 + dy, 0), height)))
    return out


def side_moves(box, step: int, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """The 8 copies of the hand box ``box`` with one side moved by ``step`` px (each side, each way),
    clipped to the ``width`` x ``height`` film: how far a box a pixel off moves an estimate
    (bench/encodings.py, bench/site_shift.py)."""
    out = []
    for side in range(4):
        for sign in (-1, 1):
            cut = list(map(int, box))
            cut[side] = min(max(cut[side] + sign * step, 0), width if side % 2 == 0 else height)
            out.append(tuple(cut))
    return out


def render_boxes(img: np.ndarray, box, settings: Settings, shift: float = 0.0) -> np.ndarray:
    """The model inputs (K, S, S) of the 8-bit film ``img`` for each of its :func:`moved_boxes`."""
    return np.stack([render(img, b, settings)[0] for b in moved_boxes(box, shift, img.shape[1], img.shape[0])])


def _render_view(task: tuple[str, tuple[int, int, int, int], Settings, float]) -> np.ndarray:
    source, box, settings, shift = task
    return render_boxes(to_uint8(read_grey(source)), box, settings, shift)


def _init_view() -> None:
    cv2.setNumThreads(1)


def view_images(index, settings: Settings, threads: int = 1, shift: float = 0.0):
    """For each row of the table ``index``, in order, the model inputs (K, S, S) of its film
    (``source_file``) for ``settings`` (its region), cut from the hand box the row records
    (:data:`BOX`), K = 1, or 9 with a box ``shift`` (:func:`moved_boxes`): another part of hands
    already found, or moved copies of their boxes, without finding them again (the views stage;
    evaluation and predict with box views; predict for ensembles of regions)."""
    tasks = ((source, tuple(map(int, box)), settings, shift)
             for source, *box in zip(index["source_file"], *(index[c] for c in BOX)))
    bar = dict(total=len(index), desc=f"view {settings.region}" + (", 9 boxes" if shift > 0 else ""), unit="img")
    if threads <= 1:
        yield from progress(map(_render_view, tasks), **bar)
        return
    with mp.get_context("spawn").Pool(threads, initializer=_init_view) as pool:
        yield from progress(pool.imap(_render_view, tasks, chunksize=32), **bar)


def view_tensor(index, settings: Settings, threads: int = 1, shift: float = 0.0):
    """:func:`view_images` of every row as one uint8 tensor (N, K, S, S): what ``inference.predict``
    takes, the mean over the K box views being its estimate."""
    import torch

    out = torch.empty((0, 1, settings.image_size, settings.image_size), dtype=torch.uint8)
    for row, images in enumerate(view_images(index, settings, threads, shift)):
        if row == 0:
            out = torch.empty((len(index), *images.shape), dtype=torch.uint8)
        out[row] = torch.from_numpy(images)
    return out
