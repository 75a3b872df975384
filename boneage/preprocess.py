"""Stage 2, preprocess: every radiograph to a hand-cropped, CLAHE-equalised, square 8-bit PNG.

Per image: decode (8/16-bit PNG, JPEG, WebP, DICOM) -> window to 8 bit -> hand check (images that
are not hand radiographs become rejects, :mod:`boneage.imaging.handcheck`) -> hand crop (MediaPipe,
classical fallback) -> side markers painted out -> aspect-kept resize -> CLAHE -> pad to a square
-> PNG. The parquet index lists every written image with its label, crop method, crop box, source
hash and sizes; ``images.u8`` holds every written image in index order (:mod:`boneage.learning.store`). Bad rows and images go to ``rejects.csv`` with the reason; the stage fails only when
their share passes ``max_reject_fraction``. QC: crop methods table, contact sheet, step timings.

Sharded (config ``preprocess.shards``): ``--shard K/N`` processes the K-th of N contiguous shares of
the labelled rows into its own folder (images, rows, rejects, timings); ``--gather SHARD_DIR ...``
moves the shards' images into ``--out-dir`` and writes the same index, reject list and QC as one
unsharded run (rows in label-csv order, rejects in row order), so a cluster can spread the work over
many nodes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import pandas as pd

from .files import WriteError, read_json, run_main, setup_logging, usable_threads, write_json, write_table
from .imaging.crop import CROP_METHODS, REGIONS, RENDERINGS
from .imaging.images import find_image
from .imaging.ingest import REJECT_COLUMNS, read_labels
from .imaging.intensity import INTENSITIES
from .imaging.qc import contact_sheet
from .imaging.radiograph import PLACEMENTS, STEPS, Settings, run_images
from .learning.store import write_store

log = logging.getLogger("boneage.preprocess")

DOUBTS_LISTED = 100  # doubtful images named in the summary and the report


class RejectedShareError(RuntimeError):
    pass


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


def _tasks(dataset: dict) -> tuple[list[tuple[str, str | None]], pd.DataFrame, pd.DataFrame]:
    """(id, image path or None) per labelled row, the labels and the label rows rejected; warns of
    image files without a row."""
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
    return tasks, labels, label_rejects


def _collect(results, image_dir: Path) -> tuple[list[dict], pd.DataFrame, list[dict]]:
    """Written images' index rows, rejected images (id, file, reason) and step timings."""
    records, bad, timings = [], [], []
    for res in results:
        if "reject" in res:
            bad.append({"id": res["id"], "file": res.get("file") or str(image_dir / f"{res['id']}.*"),
                        "reason": res["reject"]})
        else:
            timings.append(res.pop("timing"))
            records.append(res)
    return records, pd.DataFrame(bad, columns=REJECT_COLUMNS), timings


def crop_method_table(index: pd.DataFrame) -> pd.DataFrame:
    """Images per winning crop method, with MediaPipe hands refused and hand doubts among them."""
    if not len(index):
        table = pd.DataFrame(columns=["crop_method", "images", "mediapipe_hand_refused", "hand_doubt"])
    else:
        table = (index.assign(refused=index["mediapipe_refused"] > 0, doubt=index["hand_doubt"] != "")
                 .groupby("crop_method")
                 .agg(images=("id", "size"), mediapipe_hand_refused=("refused", "sum"), hand_doubt=("doubt", "sum"))
                 .reset_index())
    table.insert(2, "share", (table["images"].astype(float) / max(1, len(index))).round(4))
    return table


def _check_share(rejects: pd.DataFrame, total: int, max_fraction: float, written: int, listed: Path,
                 kept_rejects: Path | None) -> None:
    share = len(rejects) / max(1, total)
    if share <= max_fraction and written:
        return
    if kept_rejects is not None:
        write_table(rejects, kept_rejects)
        listed = kept_rejects
    first = "; ".join(f"{r.file}: {r.reason}" for r in rejects.head(5).itertuples())
    raise RejectedShareError(
        f"{len(rejects)} of {total} rows rejected ({100 * share:.1f} % > max_reject_fraction "
        f"{100 * max_fraction:.1f} %). First: {first}. Every rejected row with its reason: "
        f"{listed}. Fix or remove those rows, or raise preprocess.max_reject_fraction."
    )


def shard_tasks(tasks: list, shard: tuple[int, int]) -> list:
    """The K-th of N contiguous shares of ``tasks`` (``shard`` = (K, N), K from 0)."""
    k, n = shard
    return tasks[len(tasks) * k // n:len(tasks) * (k + 1) // n]


def process(tasks, settings: Settings, out_dir: Path, image_dir: Path, threads: int):
    """Every task through :func:`run_images` into ``out_dir``: index rows, rejects in task order,
    step timings and the wall time."""
    t0 = time.perf_counter()
    records, rejects, timings = _collect(run_images(tasks, settings, out_dir, threads), image_dir)
    order = {task_id: k for k, (task_id, _) in enumerate(tasks)}
    rejects = rejects.sort_values("id", key=lambda ids: ids.map(order), kind="stable").reset_index(drop=True)
    return records, rejects, timings, time.perf_counter() - t0


def run_shard(dataset_json: Path, out_dir: Path, settings: Settings, shard: tuple[int, int], threads: int = 1) -> None:
    """One shard's images into ``out_dir``/images, with ``records.parquet``, ``rejects.csv`` and
    ``timing.json`` for :func:`gather`."""
    dataset = read_json(dataset_json)
    tasks, _, _ = _tasks(dataset)
    mine = shard_tasks(tasks, shard)
    threads = usable_threads(threads)
    log.info("shard %d of %d: %d of %d images with %d processes", shard[0], shard[1], len(mine), len(tasks), threads)
    records, rejects, timings, wall = process(mine, settings, out_dir, Path(dataset["image_dir"]), threads)
    write_table(pd.DataFrame(records, columns=None if records else ["id", "image"]), out_dir / "records.parquet")
    write_table(rejects, out_dir / "rejects.csv")
    write_json(out_dir / "timing.json", {"timings": timings, "wall_s": wall, "threads": threads})


def gather(dataset_json: Path, shard_dirs: list[Path], out_dir: Path, settings: Settings,
           max_reject_fraction: float = 0.05, contact_sheet_n: int = 24, kept_rejects: Path | None = None) -> pd.DataFrame:
    """The shards' images moved into ``out_dir``/images and the outputs of one unsharded run."""
    dataset = read_json(dataset_json)
    _, labels, label_rejects = _tasks(dataset)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    records, rejects, timings, wall, threads = [], [], [], 0.0, 0
    for folder in shard_dirs:
        rows = pd.read_parquet(folder / "records.parquet")
        for image in rows["image"]:
            os.replace(folder / image, out_dir / image)  # names the preprocess stage made: images/<n>.png
        records += rows.to_dict("records")
        rejects.append(pd.read_csv(folder / "rejects.csv", dtype=str, keep_default_na=False))
        timing = read_json(folder / "timing.json")
        timings += timing["timings"]
        wall, threads = wall + timing["wall_s"], max(threads, timing["threads"])
    return finish(out_dir, settings, labels, label_rejects, (records, pd.concat(rejects, ignore_index=True),
                                                              timings, wall), threads, max_reject_fraction,
                  contact_sheet_n, kept_rejects)


def run(dataset_json: Path, out_dir: Path, settings: Settings, threads: int = 1,
        max_reject_fraction: float = 0.05, contact_sheet_n: int = 24,
        kept_rejects: Path | None = None) -> pd.DataFrame:
    """Preprocess every labelled image; returns the index.

    ``kept_rejects``: where the reject list is also written when the reject share stops the stage
    (Snakemake removes a failed job's outputs, ``rejects.csv`` among them; the rule points this into
    its log folder, which it keeps).
    """
    dataset = read_json(dataset_json)
    tasks, labels, label_rejects = _tasks(dataset)
    threads = usable_threads(threads)  # more processes than cores only adds MediaPipe start-ups
    log.info("preprocessing %d images with %d processes: %s", len(tasks), threads, settings)
    done = process(tasks, settings, out_dir, Path(dataset["image_dir"]), threads)
    return finish(out_dir, settings, labels, label_rejects, done, threads, max_reject_fraction, contact_sheet_n,
                  kept_rejects)


def finish(out_dir: Path, settings: Settings, labels: pd.DataFrame, label_rejects: pd.DataFrame, done: tuple,
           threads: int, max_reject_fraction: float, contact_sheet_n: int, kept_rejects: Path | None) -> pd.DataFrame:
    """Index, reject list, QC and summary from the processed images ``done`` (records, rejects,
    timings, wall time); fails when the reject share passes ``max_reject_fraction``."""
    records, image_rejects, timings, wall = done
    rejects = pd.concat([label_rejects, image_rejects], ignore_index=True)
    write_table(rejects, out_dir / "rejects.csv")
    index = pd.DataFrame(records) if records else pd.DataFrame(columns=["id", "image"])
    index = labels[["id", "boneage", "male"]].merge(index, on="id", how="inner")
    write_table(index, out_dir / "index.parquet")
    write_store(index, out_dir, out_dir / "images.u8")  # the images in one file, for training and evaluation
    total = len(labels) + len(label_rejects)  # every csv row
    for r in rejects.itertuples():
        log.warning("rejected id=%s file=%s: %s", r.id, r.file, r.reason)
    log.info("%d images written, %d rejected (%.1f %%)", len(index), len(rejects), 100 * len(rejects) / max(1, total))
    qc = out_dir / "qc"
    write_table(crop_method_table(index), qc / "crop_methods.csv")
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
        contact_sheet(index, lambda row: cv2.imread(str(out_dir / row.image), cv2.IMREAD_GRAYSCALE),
                      qc / "contact_sheet.png", contact_sheet_n, region=settings.region)
    _check_share(rejects, total, max_reject_fraction, len(index), out_dir / "rejects.csv", kept_rejects)
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
    parser.add_argument("--region", default=Settings.region, choices=REGIONS,
                        help="the part of the hand box kept: the whole hand, the wrist or the fingers")
    parser.add_argument("--placement", default=Settings.placement, choices=PLACEMENTS,
                        help="how the hand box goes onto the square: rounded to whole pixels, or exact")
    parser.add_argument("--intensity", default=Settings.intensity, choices=INTENSITIES,
                        help="the grey levels before CLAHE: the film's own range (minmax), or ranks inside the hand box")
    parser.add_argument("--no-hand-check", action="store_true",
                        help="keep images that do not look like hand radiographs")
    parser.add_argument("--hand-model", default=None, help="hand_landmarker.task (default: packaged)")
    parser.add_argument("--max-reject-fraction", type=float, required=True)
    parser.add_argument("--contact-sheet-n", type=int, required=True)
    parser.add_argument("--kept-rejects", default=None,
                        help="also write the reject list here when the reject share stops the stage")
    parser.add_argument("--shard", default=None, metavar="K/N",
                        help="process only the K-th (from 0) of N contiguous shares of the rows into --out-dir")
    parser.add_argument("--gather", nargs="+", default=None, metavar="SHARD_DIR",
                        help="join shard folders (made by --shard) into the outputs of one run in --out-dir")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    setup_logging()
    settings = Settings(args.image_size, args.crop_method, args.crop_margin, not args.keep_markers,
                        args.clahe_clip_limit, args.clahe_tile_grid, args.hand_model,
                        tuple(args.mediapipe_renderings), not args.no_hand_check, args.region, args.placement,
                        args.intensity)
    kept = Path(args.kept_rejects) if args.kept_rejects else None
    try:
        if args.shard:
            k, n = (int(v) for v in args.shard.split("/"))
            if not 0 <= k < n:
                parser.error(f"--shard {args.shard}: K must lie in 0..N-1")
            run_shard(Path(args.dataset), Path(args.out_dir), settings, (k, n), args.threads)
        elif args.gather:
            gather(Path(args.dataset), [Path(d) for d in args.gather], Path(args.out_dir), settings,
                   args.max_reject_fraction, args.contact_sheet_n, kept)
        else:
            run(Path(args.dataset), Path(args.out_dir), settings, args.threads, args.max_reject_fraction,
                args.contact_sheet_n, kept)
    except (RejectedShareError, WriteError) as exc:
        log.error("%s", exc)
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
