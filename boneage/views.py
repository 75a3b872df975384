"""Stage 2b, views: another part of every preprocessed hand (``models.<name>.region``) as an image store.

A model may be trained on a part of the hand (wrist, fingers) while others of the same run see the
whole hand. The hand boxes are found once, by the preprocess stage (MediaPipe or the classical
crop, the slow part); this stage reads each kept film again, cuts the part of its recorded box that
the region names and makes the model input exactly as preprocess makes it
(:func:`boneage.imaging.radiograph.view_images`, :func:`~boneage.imaging.radiograph.render`): same films, same
order, same settings but the region. So every view's store lines up with ``index.parquet`` and the
one split, and a view model's images equal those of a run with ``preprocess.region`` set to its
region (a test holds it).

Outputs in ``--out-dir``: ``images.u8`` + ``images.json`` (:mod:`boneage.learning.store`) and
``preprocess_summary.json``: the preprocess settings with this region (what a bundle records, so that
``predict`` cuts the same part), the images written and the stage's time; ``contact_sheet.png``:
source films with the hand box and the part kept beside the model input (QC).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from .files import read_json, run_main, setup_logging, usable_threads, write_json
from .imaging.crop import REGIONS
from .imaging.qc import contact_sheet
from .imaging.radiograph import Settings, view_images
from .learning.store import open_rows, write_images

log = logging.getLogger("boneage.views")


def run(preprocess_dir: Path, region: str, out_dir: Path, threads: int = 1, contact_sheet_n: int = 24) -> dict:
    """The ``region`` view of the preprocess stage's films in ``preprocess_dir`` into ``out_dir``, with
    a contact sheet of ``contact_sheet_n`` films; returns its summary."""
    if region not in REGIONS:
        raise ValueError(f"region {region!r} unknown; use one of {REGIONS}")
    index = pd.read_parquet(preprocess_dir / "index.parquet")
    made = read_json(preprocess_dir / "preprocess_summary.json")["settings"]
    settings = replace(Settings.of(made), region=region)
    threads = usable_threads(threads)
    log.info("%s view of %d films (%s) with %d processes", region, len(index), preprocess_dir, threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    meta = write_images(index["id"], (one[0] for one in view_images(index, settings, threads)), out_dir / "images.u8")
    wall = time.perf_counter() - t0
    summary = {"settings": asdict(settings), "images_written": meta["n"], "from": str(preprocess_dir),
               "timing": {"images": meta["n"], "threads": threads, "wall_s": round(wall, 3),
                          "images_per_s": round(meta["n"] / wall, 2) if wall else None}}
    write_json(out_dir / "preprocess_summary.json", summary)
    log.info("summary: %s", summary)
    if len(index):
        images = open_rows(out_dir / "images.u8", index, index)
        contact_sheet(index.reset_index(drop=True), lambda row: images[[row.Index]][0, 0].numpy(),
                      out_dir / "contact_sheet.png", contact_sheet_n, region=region)
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preprocess-dir", required=True,
                        help="the preprocess stage's folder (index.parquet, preprocess_summary.json)")
    parser.add_argument("--region", required=True, choices=REGIONS, help="the part of each hand box kept")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--contact-sheet-n", type=int, default=24, help="films on its contact sheet")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    setup_logging()
    run(Path(args.preprocess_dir), args.region, Path(args.out_dir), args.threads, args.contact_sheet_n)


if __name__ == "__main__":
    run_main(main)
