"""Stage 2, preprocess: every radiograph to a hand-cropped, CLAHE-equalised, square 8-bit PNG.

Per image: decode (8/16-bit PNG, JPEG, WebP, DICOM) -> window to 8 bit -> hand check (images that
are not hand radiographs become rejects, :mod:`boneage.handcheck`) -> hand crop (MediaPipe,
classical fallback) -> side markers painted out -> aspect-kept resize -> CLAHE -> pad to a square
-> PNG. The parquet index lists every written image with its label, crop method, crop box, source
hash and sizes. Bad rows and images go to ``rejects.csv`` with the reason; the stage fails only when
their share passes ``max_reject_fraction``. QC: crop methods table, contact sheet, step timings.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from . import handcheck
from .crop import CROP_METHODS, RENDERINGS, Analysis, HandCropper, remove_markers
from .files import progress, read_json, setup_logging, sha256_bytes, usable_threads, write_json, write_table
from .images import ImageError, check_usable, find_image, inside, read_grey, to_uint8
from .ingest import REJECT_COLUMNS, read_labels

log = logging.getLogger("boneage.preprocess")

STEPS = ("read", "decode", "check", "crop", "resize", "clahe", "encode")
THUMBNAIL_PX = 400  # long side of the contact sheet's source images
DOUBTS_LISTED = 100  # doubtful images named in the summary and the report


@dataclass(frozen=True)
class Settings:
    image_size: int = 256
    crop_method: str = "auto"
    crop_margin: float = 0.05
    remove_markers: bool = True
    clahe_clip_limit: float = 2.0
    clahe_tile_grid: int = 8
    hand_model: str | None = None
    mediapipe_renderings: tuple[str, ...] = RENDERINGS
    hand_check: bool = True


class RejectedShareError(RuntimeError):
    pass


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
    cut = img[y0:y1, x0:x1]
    markers = 0
    if settings.remove_markers:
        cut, markers = remove_markers(cut)
    t["crop"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    small, _ = resize_pad(cut, settings.image_size)
    t["resize"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    clahe = cv2.createCLAHE(clipLimit=settings.clahe_clip_limit,
                            tileGridSize=(settings.clahe_tile_grid, settings.clahe_tile_grid))
    out = pad_square(clahe.apply(small), settings.image_size)
    t["clahe"] = time.perf_counter() - t0

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
        target = inside(_worker["out_dir"] / "images", f"{image_id}.png")
        ok = cv2.imwrite(str(target), out, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise OSError(f"could not write {_worker['out_dir'] / rel}")
        t["encode"] = time.perf_counter() - t0
        return {"id": image_id, "image": rel, **fields, "timing": t}
    except ImageError as exc:
        return {"id": image_id, "file": path, "reject": str(exc)}
    except Exception as exc:  # a broken file must not stop the other 14,000
        return {"id": image_id, "file": path, "reject": f"{type(exc).__name__}: {exc}"}


def run_images(tasks: list[tuple[str, str | None]], settings: Settings, out_dir: Path, threads: int):
    """Process images in ``threads`` processes with a progress bar; yields result dicts."""
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    chunk = max(1, min(32, len(tasks) // (threads * 8) or 1))
    if threads <= 1:
        _init_worker(settings, str(out_dir))
        try:
            yield from progress(map(_work, tasks), total=len(tasks), desc="preprocess", unit="img")
        finally:
            _worker["cropper"].close()
        return
    ctx = mp.get_context("spawn")  # MediaPipe and OpenCV threads do not survive fork well
    with ctx.Pool(threads, initializer=_init_worker, initargs=(settings, str(out_dir))) as pool:
        results = pool.imap_unordered(_work, tasks, chunksize=chunk)
        yield from progress(results, total=len(tasks), desc="preprocess", unit="img")


def contact_sheet(index: pd.DataFrame, out_dir: Path, path: Path, n: int, seed: int = 0) -> None:
    """Before/after pairs of random images: source with crop box and method, then the PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sample = index.sample(n=min(n, len(index)), random_state=seed).sort_values("boneage")
    cols = 4
    rows = max(1, int(np.ceil(len(sample) / cols)))
    fig, axes = plt.subplots(rows, cols * 2, figsize=(cols * 2 * 1.6, rows * 1.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, row in enumerate(sample.itertuples()):
        r, c = divmod(k, cols)
        before = to_uint8(read_grey(row.source_file))
        scale = min(1.0, THUMBNAIL_PX / max(before.shape))  # draw a thumbnail, not the full film
        before = cv2.resize(before, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else before
        ax = axes[r, 2 * c]
        ax.imshow(before, cmap="gray", vmin=0, vmax=255)
        ax.add_patch(matplotlib.patches.Rectangle(
            (row.crop_x0 * scale, row.crop_y0 * scale), (row.crop_x1 - row.crop_x0) * scale,
            (row.crop_y1 - row.crop_y0) * scale, fill=False, edgecolor="#ff7f0e", linewidth=1.2))
        ax.set_title(f"{row.id}: {row.crop_method}", fontsize=6)
        after = cv2.imread(str(out_dir / row.image), cv2.IMREAD_GRAYSCALE)
        ax = axes[r, 2 * c + 1]
        ax.imshow(after, cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{row.boneage:.0f} mo, {'M' if row.male else 'F'}", fontsize=6)
    fig.suptitle("Crops: source with crop box (left), model input (right)", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def summarise_timing(timings: list[dict], wall_s: float, threads: int) -> dict:
    totals = {s: float(sum(t.get(s, 0.0) for t in timings)) for s in STEPS}
    busy = sum(totals.values()) or 1.0
    n = len(timings)
    return {
        "images": n,
        "threads": threads,
        "wall_s": round(wall_s, 3),
        "images_per_s": round(n / wall_s, 2) if wall_s else None,
        "images_per_s_per_core": round(n / wall_s / threads, 2) if wall_s else None,
        "seconds_per_step": {s: round(v, 3) for s, v in totals.items()},
        "share_per_step": {s: round(v / busy, 4) for s, v in totals.items()},
    }


def run(dataset_json: Path, out_dir: Path, settings: Settings, threads: int = 1,
        max_reject_fraction: float = 0.05, contact_sheet_n: int = 24,
        kept_rejects: Path | None = None) -> pd.DataFrame:
    """Preprocess every labelled image; returns the index.

    ``kept_rejects``: where the reject list is also written when the reject share stops the stage
    (Snakemake removes a failed job's outputs, ``rejects.csv`` among them; the rule points this into
    its log folder, which it keeps).
    """
    dataset = read_json(dataset_json)
    labels, label_rejects = read_labels(dataset["labels_csv"])
    image_dir = Path(dataset["image_dir"])
    tasks = []
    for image_id in labels["id"]:
        found = find_image(image_dir, image_id)
        tasks.append((image_id, None if found is None else str(found)))
    in_csv = set(labels["id"]) | set(label_rejects["id"])  # rows rejected for other reasons have a row
    unlabelled = [p.name for p in image_dir.iterdir() if p.is_file() and p.stem not in in_csv]
    if unlabelled:
        log.warning("%d files in %s have no row in the label csv (ignored), e.g. %s",
                    len(unlabelled), image_dir, unlabelled[:5])

    threads = usable_threads(threads)  # more processes than cores only adds MediaPipe start-ups
    log.info("preprocessing %d images with %d processes: %s", len(tasks), threads, settings)
    t0 = time.perf_counter()
    records, bad, timings = [], [], []
    for res in run_images(tasks, settings, out_dir, threads):
        if "reject" in res:
            bad.append({"id": res["id"], "file": res.get("file") or "", "reason": res["reject"]})
        else:
            timings.append(res.pop("timing"))
            records.append(res)
    wall = time.perf_counter() - t0

    image_rejects = pd.DataFrame(bad, columns=REJECT_COLUMNS)
    for r in image_rejects.itertuples():
        if not r.file:
            image_rejects.loc[r.Index, "file"] = str(image_dir / f"{r.id}.*")
    rejects = pd.concat([label_rejects, image_rejects], ignore_index=True)
    write_table(rejects, out_dir / "rejects.csv")

    index = pd.DataFrame(records)
    if index.empty:
        index = pd.DataFrame(columns=["id", "image"])
    index = labels[["id", "boneage", "male"]].merge(index, on="id", how="inner")
    write_table(index, out_dir / "index.parquet")

    total = len(labels) + len(label_rejects)  # every csv row
    share = len(rejects) / max(1, total)
    for r in rejects.itertuples():
        log.warning("rejected id=%s file=%s: %s", r.id, r.file, r.reason)
    log.info("%d images written, %d rejected (%.1f %%)", len(index), len(rejects), 100 * share)

    qc = out_dir / "qc"
    method_table = (
        index.assign(refused=index["mediapipe_refused"] > 0, doubt=index["hand_doubt"] != "")
        .groupby("crop_method")
        .agg(images=("id", "size"), mediapipe_hand_refused=("refused", "sum"), hand_doubt=("doubt", "sum"))
        .reset_index()
        if len(index)
        else pd.DataFrame(columns=["crop_method", "images", "mediapipe_hand_refused", "hand_doubt"])
    )
    method_table.insert(2, "share", (method_table["images"].astype(float) / max(1, len(index))).round(4))
    write_table(method_table, qc / "crop_methods.csv")
    doubts = index[index["hand_doubt"] != ""] if len(index) else index
    for r in doubts.itertuples():
        log.warning("kept but doubtful id=%s file=%s: %s", r.id, r.source_file, r.hand_doubt)
    summary = {
        "settings": asdict(settings),
        "images_written": int(len(index)),
        "rows_rejected": int(len(rejects)),
        "hand_doubts": int(len(doubts)),
        # the first ones, for the report; the index's hand_doubt column holds them all
        "hand_doubt_examples": [{"id": r.id, "file": r.source_file, "doubt": r.hand_doubt}
                                for r in doubts.head(DOUBTS_LISTED).itertuples()],
        "timing": summarise_timing(timings, wall, threads),
    }
    write_json(out_dir / "preprocess_summary.json", summary)
    log.info("summary: %s", summary)
    if len(index):
        contact_sheet(index, out_dir, qc / "contact_sheet.png", contact_sheet_n)

    if share > max_reject_fraction or index.empty:
        listed = out_dir / "rejects.csv"
        if kept_rejects is not None:
            write_table(rejects, kept_rejects)
            listed = kept_rejects
        first = "; ".join(f"{r.file}: {r.reason}" for r in rejects.head(5).itertuples())
        raise RejectedShareError(
            f"{len(rejects)} of {total} rows rejected ({100 * share:.1f} % > max_reject_fraction "
            f"{100 * max_reject_fraction:.1f} %). First: {first}. Every rejected row with its reason: "
            f"{listed}. Fix or remove those rows, or raise preprocess.max_reject_fraction."
        )
    return index


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="dataset.json from the download stage")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--image-size", type=int, default=Settings.image_size)
    parser.add_argument("--crop-method", default=Settings.crop_method, choices=CROP_METHODS)
    parser.add_argument("--mediapipe-renderings", nargs="+", default=list(RENDERINGS), choices=RENDERINGS,
                        help="how images are shown to MediaPipe, in the order tried")
    parser.add_argument("--crop-margin", type=float, default=Settings.crop_margin)
    parser.add_argument("--keep-markers", action="store_true", help="do not paint out side markers")
    parser.add_argument("--clahe-clip-limit", type=float, default=Settings.clahe_clip_limit)
    parser.add_argument("--clahe-tile-grid", type=int, default=Settings.clahe_tile_grid)
    parser.add_argument("--no-hand-check", action="store_true",
                        help="keep images that do not look like hand radiographs")
    parser.add_argument("--hand-model", default=None, help="hand_landmarker.task (default: packaged)")
    parser.add_argument("--max-reject-fraction", type=float, default=0.05)
    parser.add_argument("--contact-sheet-n", type=int, default=24)
    parser.add_argument("--kept-rejects", default=None,
                        help="also write the reject list here when the reject share stops the stage")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    setup_logging()
    settings = Settings(args.image_size, args.crop_method, args.crop_margin, not args.keep_markers,
                        args.clahe_clip_limit, args.clahe_tile_grid, args.hand_model,
                        tuple(args.mediapipe_renderings), not args.no_hand_check)
    try:
        run(Path(args.dataset), Path(args.out_dir), settings, args.threads,
            args.max_reject_fraction, args.contact_sheet_n,
            Path(args.kept_rejects) if args.kept_rejects else None)
    except RejectedShareError as exc:
        log.error("%s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
