"""Hand check: false-reject rate on real radiographs and catch rate on images that are not hands.

Runs the preprocess stage's own checks (:func:`boneage.imaging.images.read_grey`, :func:`to_uint8`, the
classical analysis and :func:`boneage.imaging.handcheck.verdict`) on every image of an RSNA-layout folder,
prints how many it would reject or flag, with their reasons, the range of each measure next to its
threshold, then the verdict on each generated non-hand (:func:`boneage.imaging.demo.non_hands`).

    .venv/bin/python bench/hand_check.py                                   # 12,611 RSNA films
    .venv/bin/python bench/hand_check.py --data ../shared/data/rsna-raw-sample
"""

from __future__ import annotations

import argparse
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from boneage.imaging import handcheck  # noqa: E402
from boneage.imaging.crop import Analysis  # noqa: E402
from boneage.imaging.demo import non_hands  # noqa: E402
from boneage.imaging.images import ImageError, read_grey, to_uint8  # noqa: E402
from boneage.imaging.layout import IMAGE_EXTENSIONS, resolve_layout  # noqa: E402

THRESHOLDS = {
    "spread": handcheck.MIN_SPREAD,
    "neighbour_correlation": handcheck.MIN_NEIGHBOUR_CORRELATION,
    "detail": handcheck.MIN_DETAIL,
    "object_share": handcheck.MIN_OBJECT_SHARE,
    "inner_detail": handcheck.DOUBT_INNER_DETAIL,
}


def judge(img: np.ndarray) -> dict:
    img = to_uint8(img)
    m = handcheck.measures(img, Analysis(img))
    reason, doubt = handcheck.verdict(m)
    return {**m, "reason": reason or "", "doubt": doubt or ""}


def judge_file(path: Path) -> dict:
    cv2.setNumThreads(1)
    try:
        row = judge(read_grey(path))
    except ImageError as exc:
        row = {"reason": str(exc), "doubt": ""}
    return {"file": path.name, **row}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/rsna-train-299", help="RSNA-layout folder")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--csv", default=None, help="write every image's measures here")
    args = parser.parse_args(argv)

    image_dir = resolve_layout(Path(args.data)).image_dir
    files = sorted(p for p in Path(image_dir).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    t0 = time.perf_counter()
    with get_context("spawn").Pool(args.processes) as pool:  # no fork after OpenCV's threads
        rows = pool.map(judge_file, files, chunksize=64)
    wall = time.perf_counter() - t0
    table = pd.DataFrame(rows)
    if args.csv:
        table.to_csv(args.csv, index=False)
    rejected = table[table["reason"] != ""]
    print(f"{args.data}: {len(table)} images in {wall:.1f} s ({args.processes} processes)")
    print(f"false rejects: {len(rejected)} of {len(table)} = {100 * len(rejected) / max(1, len(table)):.3f} %")
    for r in rejected.itertuples():
        print(f"  {r.file}: {r.reason}")
    doubtful = table[table["doubt"] != ""]
    print(f"kept with a doubt: {len(doubtful)} of {len(table)} = {100 * len(doubtful) / max(1, len(table)):.3f} %")
    for r in doubtful.itertuples():
        print(f"  {r.file}: {r.doubt}")
    print("measure                 threshold      min    0.1 %    1 %     median")
    for name, limit in THRESHOLDS.items():
        q = table[name].quantile([0, 0.001, 0.01, 0.5]).to_numpy()
        print(f"{name:22s} {limit:>9g} " + " ".join(f"{v:8.4f}" for v in q))

    caught = flagged = 0
    print("\ngenerated non-hands (boneage.imaging.demo.non_hands):")
    for name, img in non_hands().items():
        try:
            grey = read_grey(Path(f"{name}.png"), cv2.imencode(".png", img)[1].tobytes())
            row = judge(grey)
            reason, doubt = row["reason"], row["doubt"]
        except ImageError as exc:
            reason, doubt = str(exc), ""
        caught += bool(reason)
        flagged += bool(doubt)
        print(f"  {name:18s} {reason or (f'kept, flagged: {doubt}' if doubt else 'PASSED as a hand')}")
    total = len(non_hands())
    print(f"rejected: {caught} of {total} = {100 * caught / total:.0f} %; "
          f"flagged: {flagged}; rejected or flagged: {100 * (caught + flagged) / total:.0f} %")


if __name__ == "__main__":
    main()
