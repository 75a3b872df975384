"""Where the training images stay (``data.resident``): peak memory and seconds per epoch against N.

Trains a model for ``--epochs`` on N films of a preprocessed folder (its ``index.parquet`` and image
store ``images.u8``; ``--store`` builds the store first where the folder predates it), each N with
``--resident host`` and/or ``disk``, and prints per run the peak RSS of the training process
(``/usr/bin/time``), the seconds per epoch and the validation MAE. The films are the first N of a
seeded permutation of the split's train and val rows, so every N keeps the split's proportions.

More films than the folder holds: film ``k`` beyond the pool's M is pool film ``k mod M`` under the id
``<id>x<k // M>``; ``--store`` (required then) receives a store of all of them, the pool repeated
(100,000 films at 256 px: 6.6 GB). ``--seconds T`` stops each training after T seconds (an epoch of
100,000 films at 256 px is an hour on 2 cores) and reports the steps it made, the measured seconds
per step and the training part of an epoch at that rate (no validation pass, no full epoch: said so).

    .venv/bin/python bench/resident.py --preprocess results/preprocess --split results/split/split.csv \
        --spec results/models/efficientnet_lite0_sex/spec.json --films 1200 12611 --modes disk host
    .venv/bin/python bench/resident.py --preprocess <256 px preprocess> --split <its split.csv> --spec <spec.json> \
        --input-size 256 --films 1200 100000 --modes disk --store /tmp/images100k.u8 --seconds 420
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

from bench.scaling import repeated_ids  # noqa: E402
from boneage.learning.store import write_store  # noqa: E402

STEP_LINE = re.compile(r"epoch 1: .*?(\d+)/(\d+) \[(?:(\d+):)?(\d+):(\d+)<")


def train(args, store: Path, index: Path, split: Path, resident: str, out: Path) -> dict:
    spec = json.loads(Path(args.spec).read_text())
    spec["epochs"] = args.epochs
    if args.input_size:
        spec["input_size"] = args.input_size
    (out / "spec.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(spec))
    stop = ["timeout", "--signal=INT", str(args.seconds)] if args.seconds else []
    cmd = ["/usr/bin/time", "-v", *stop, sys.executable, "-m", "boneage.train", "--variant", "bench", "--spec",
           str(out / "spec.json"), "--index", str(index), "--store", str(store),
           "--resident", resident, "--split", str(split), "--out-dir", str(out / "model"), "--device", "cpu",
           "--threads", str(args.threads)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    stopped = bool(args.seconds) and proc.returncode == 124
    if proc.returncode and not stopped:
        raise SystemExit(proc.stderr[-3000:])
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    if not stopped:
        history = pd.read_csv(out / "model" / "history.csv")
        return {"peak_rss_gb": rss_kb / 1e6, "epoch_s": float(history["epoch_s"].mean()),
                "val_mae": float(history["val_mae"].iloc[-1]), "steps": None}
    lines = STEP_LINE.findall(proc.stderr.replace("\r", "\n"))
    if not lines:
        raise SystemExit(f"stopped after {args.seconds} s before the first progress line; give more --seconds")
    done, total, hours, minutes, seconds = lines[-1]
    elapsed = 3600 * int(hours or 0) + 60 * int(minutes) + int(seconds)
    step_s = elapsed / int(done)
    return {"peak_rss_gb": rss_kb / 1e6, "epoch_s": step_s * int(total), "val_mae": float("nan"),
            "steps": f"{done}/{total} steps in {elapsed} s ({step_s:.2f} s/step)"}


def repeated(index: pd.DataFrame, pool: pd.DataFrame, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``n`` films (the pool's, then copies under ids ``<id>x<k>``): their index rows and split rows."""
    at, ids = repeated_ids(pool["id"], n)
    rows = index.set_index(index["id"].astype(str)).loc[pool["id"].to_numpy()[at]]
    return rows.assign(id=ids).reset_index(drop=True), pool.iloc[at].assign(id=ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preprocess", required=True, help="a preprocess folder (index.parquet, images/)")
    parser.add_argument("--split", required=True)
    parser.add_argument("--spec", required=True, help="a spec.json (results/models/<variant>/spec.json)")
    parser.add_argument("--films", type=int, nargs="+", default=[1200])
    parser.add_argument("--modes", nargs="+", default=["disk", "host"], choices=["host", "disk"])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--input-size", type=int, default=None, help="the spec's input_size (default: the spec's)")
    parser.add_argument("--seconds", type=int, default=None, help="stop each training after this many seconds")
    parser.add_argument("--store", default=None, help="write the store here first (for an older preprocess folder, "
                        "or for more films than the folder holds)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    pre = Path(args.preprocess)
    index = pd.read_parquet(pre / "index.parquet")
    split = pd.read_csv(args.split, dtype={"id": str})
    pool = split[split["subset"].isin(["train", "val"])]
    pool = pool.iloc[np.random.default_rng(0).permutation(len(pool))]
    with tempfile.TemporaryDirectory() as tmp:
        index_path, store = pre / "index.parquet", pre / "images.u8"
        if max(args.films) > len(pool):
            if not args.store:
                raise SystemExit(f"{max(args.films)} films is more than the {len(pool)} of the split's train and "
                                 "val: give --store, where the repeated films' store is written")
            index, pool = repeated(index, pool, max(args.films))
            index_path = Path(tmp) / "index.parquet"
            index.to_parquet(index_path)
        if args.store:
            store = Path(args.store)
            write_store(index, pre, store)
        for n in args.films:
            part = pool.iloc[:n]
            path = Path(tmp) / f"split_{n}.csv"
            part.to_csv(path, index=False)
            for mode in args.modes:
                got = train(args, store, index_path, path, mode, Path(tmp) / f"{n}_{mode}")
                print(f"{n:7d} films ({(part['subset'] == 'train').sum()} train)  {mode:5s}  peak RSS "
                      f"{got['peak_rss_gb']:.2f} GB  {got['epoch_s']:.1f} s/epoch"
                      + (f" (training part, from {got['steps']})" if got["steps"] else
                         f"  val MAE {got['val_mae']:.3f}"), flush=True)


if __name__ == "__main__":
    main()
