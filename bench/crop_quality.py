"""Crop quality against hands read by eye: does each crop hold the whole hand, how much more than
the hand does it keep, how many markers does the painting take out of it.

The annotation csv gives, per image id, the box the hand occupies in percent of the image's width
and height (``id,x0,y0,x1,y1``; ``#`` lines are comments), e.g. ``tests/data/raw_sample_hands.csv``.

    .venv/bin/python bench/crop_quality.py ../shared/data/rsna-raw-sample tests/data/raw_sample_hands.csv
    .venv/bin/python bench/crop_quality.py ../shared/data/rsna-train-299 tests/data/train299_hands.csv
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from boneage.imaging.crop import CROP_METHODS, HandCropper, remove_markers  # noqa: E402
from boneage.imaging.images import find_image, read_grey, to_uint8  # noqa: E402
from boneage.imaging.ingest import resolve_layout  # noqa: E402


def _area(box) -> float:
    return float((box[2] - box[0]) * (box[3] - box[1]))


def crops_against_hands(image_dir: Path, hands_csv: Path, method: str = "auto") -> pd.DataFrame:
    """One row per annotated image: crop method and box, the hand's box in pixels, whether the crop
    holds it, crop area over hand area, the markers painted inside the crop and the MediaPipe hands
    refused on the way."""
    hands = pd.read_csv(hands_csv, comment="#", dtype={"id": str})
    rows = []
    with HandCropper(method) as cropper:
        for row in hands.itertuples():
            path = find_image(image_dir, row.id)
            if path is None:
                raise FileNotFoundError(f"{hands_csv}: no image for id {row.id} in {image_dir}")
            img = to_uint8(read_grey(path))  # as the preprocess stage reads it
            h, w = img.shape
            hand = (row.x0 * w / 100, row.y0 * h / 100, row.x1 * w / 100, row.y1 * h / 100)
            crop = cropper(img)
            x0, y0, x1, y1 = crop.box
            _, markers = remove_markers(img[y0:y1, x0:x1])
            rows.append({
                "id": row.id, "method": crop.method, "box": crop.box, "hand": tuple(round(v) for v in hand),
                "holds_hand": bool(x0 <= hand[0] and y0 <= hand[1] and x1 >= hand[2] and y1 >= hand[3]),
                "area_over_hand": _area(crop.box) / _area(hand), "image_over_hand": h * w / _area(hand),
                "markers_painted": markers, "mediapipe_refused": crop.refused,
            })
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="RSNA-layout folder, or a folder of images named <id>.<ext>")
    parser.add_argument("hands_csv", help="id,x0,y0,x1,y1 in percent of width and height")
    parser.add_argument("--method", default="auto", choices=CROP_METHODS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data_dir = Path(args.data_dir)
    image_dir = resolve_layout(data_dir).image_dir if (data_dir / "boneage-training-dataset").is_dir() else data_dir

    table = crops_against_hands(image_dir, Path(args.hands_csv), args.method)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.round(2).to_string(index=False))
    worst = table.loc[table["area_over_hand"].idxmax()]
    print(f"\nfolder: {data_dir}, crop method: {args.method}")
    print(f"crops holding the whole hand: {table['holds_hand'].sum()} of {len(table)}")
    print(f"crop area / hand area: median {np.median(table['area_over_hand']):.2f}, "
          f"max {worst['area_over_hand']:.2f} ({worst['id']}); whole image / hand area: median "
          f"{np.median(table['image_over_hand']):.2f}")
    print(f"crops with markers painted out: {(table['markers_painted'] > 0).sum()}; "
          f"methods: {table['method'].value_counts().to_dict()}")


if __name__ == "__main__":
    main()
