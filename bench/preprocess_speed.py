"""Preprocessing speed: images per second per core and the share of time per step.

Runs the real preprocess stage (boneage.preprocess.run) on an RSNA-layout folder and prints the
throughput, the time per step (read, decode, crop, resize, CLAHE, encode) and how long 14,000 images
of that kind would take on 8 cores at the measured per-core rate.

    .venv/bin/python bench/preprocess_speed.py ../shared/data/rsna-train-299 --threads 2
    .venv/bin/python bench/preprocess_speed.py ../shared/data/rsna-raw-sample --threads 2 --repeat 5
    .venv/bin/python bench/preprocess_speed.py ../shared/data/rsna-train-299 --mediapipe-renderings raw clahe
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from boneage.download import describe  # noqa: E402
from boneage.files import write_json  # noqa: E402
from boneage.imaging.crop import CROP_METHODS, RENDERINGS  # noqa: E402
from boneage.preprocess import STEPS, Settings, run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="RSNA-layout folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--crop-method", default="auto", choices=CROP_METHODS)
    parser.add_argument("--mediapipe-renderings", nargs="+", default=list(RENDERINGS), choices=RENDERINGS)
    parser.add_argument("--repeat", type=int, default=1, help="process the folder this many times (small folders)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    settings = Settings(image_size=args.image_size, crop_method=args.crop_method,
                        mediapipe_renderings=tuple(args.mediapipe_renderings))
    totals = {s: 0.0 for s in STEPS}
    images, wall, methods = 0, 0.0, {}
    with tempfile.TemporaryDirectory() as tmp:
        dataset = Path(tmp) / "dataset.json"
        write_json(dataset, describe(Path(args.data_dir), "local"))
        for k in range(args.repeat):
            out = Path(tmp) / f"pre{k}"
            index = run(dataset, out, settings, args.threads, max_reject_fraction=1.0, contact_sheet_n=1)
            summary = json.loads((out / "preprocess_summary.json").read_text())
            t = summary["timing"]
            images += t["images"]
            wall += t["wall_s"]
            for s in STEPS:
                totals[s] += t["seconds_per_step"][s]
            for m, n in index["crop_method"].value_counts().items():
                methods[m] = methods.get(m, 0) + int(n)
    busy = sum(totals.values())
    per_core = images / wall / args.threads
    print(f"folder: {args.data_dir}")
    print(f"images: {images} in {wall:.1f} s on {args.threads} processes "
          f"-> {images / wall:.1f} images/s, {per_core:.1f} images/s per core")
    print("share of time per step: " + ", ".join(f"{s} {100 * totals[s] / busy:.1f} %" for s in STEPS))
    print("ms per image per step:  " + ", ".join(f"{s} {1000 * totals[s] / images:.1f}" for s in STEPS))
    print("crop methods: " + ", ".join(f"{m} {n}" for m, n in sorted(methods.items())))
    minutes = 14000 / (per_core * 8) / 60
    print(f"14,000 images of this kind on 8 cores at this per-core rate: {minutes:.1f} min (goal: under 10)")


if __name__ == "__main__":
    main()
