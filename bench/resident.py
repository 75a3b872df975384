"""Where the training images stay (``data.resident``): peak memory and seconds per epoch against N.

Trains a model for ``--epochs`` on N films of a preprocessed folder (its ``index.parquet`` and image
store ``images.u8``; ``--store`` builds the store first where the folder predates it), each N with
``--resident host`` and/or ``disk``, and prints per run the peak RSS of the training process
(``/usr/bin/time``), the seconds per epoch and the validation MAE. The films are the first N of a
seeded permutation of the split's train and val rows, so every N keeps the split's proportions.

    .venv/bin/python bench/resident.py --preprocess results/preprocess --split results/split/split.csv \\
        --spec results/models/efficientnet_lite0_sex/spec.json --films 1200 12611 --modes disk host
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from boneage.store import write_store  # noqa: E402


def train(args, store: Path, split: Path, resident: str, out: Path) -> dict:
    spec = json.loads(Path(args.spec).read_text())
    spec["epochs"] = args.epochs
    (out / "spec.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(spec))
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "boneage.train", "--variant", "bench", "--spec",
           str(out / "spec.json"), "--index", str(Path(args.preprocess) / "index.parquet"), "--store", str(store),
           "--resident", resident, "--split", str(split), "--out-dir", str(out / "model"), "--device", "cpu",
           "--threads", str(args.threads)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    history = pd.read_csv(out / "model" / "history.csv")
    return {"peak_rss_gb": rss_kb / 1e6, "epoch_s": float(history["epoch_s"].mean()),
            "val_mae": float(history["val_mae"].iloc[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preprocess", required=True, help="a preprocess folder (index.parquet, images/)")
    parser.add_argument("--split", required=True)
    parser.add_argument("--spec", required=True, help="a spec.json (results/models/<variant>/spec.json)")
    parser.add_argument("--films", type=int, nargs="+", default=[1200])
    parser.add_argument("--modes", nargs="+", default=["disk", "host"], choices=["host", "disk"])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--store", default=None, help="write the store here first (for an older preprocess folder)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    pre = Path(args.preprocess)
    index = pd.read_parquet(pre / "index.parquet")
    store = Path(args.store) if args.store else pre / "images.u8"
    if args.store:
        write_store(index, pre, store)
    split = pd.read_csv(args.split, dtype={"id": str})
    pool = split[split["subset"].isin(["train", "val"])]
    order = np.random.default_rng(0).permutation(len(pool))
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.films:
            part = pool.iloc[np.sort(order[:n])]
            path = Path(tmp) / f"split_{n}.csv"
            part.to_csv(path, index=False)
            for mode in args.modes:
                got = train(args, store, path, mode, Path(tmp) / f"{n}_{mode}")
                print(f"{n:7d} films ({(part['subset'] == 'train').sum()} train)  {mode:5s}  peak RSS "
                      f"{got['peak_rss_gb']:.2f} GB  {got['epoch_s']:.1f} s/epoch  val MAE {got['val_mae']:.3f}",
                      flush=True)


if __name__ == "__main__":
    main()
