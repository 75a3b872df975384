"""Stage 4, train: one model variant on the train split, selected by validation MAE.

Reads the variant's plan (``spec.json``, written by the ``plan`` rule), the preprocessed index and
images and the split; the loop itself is :class:`boneage.learning.trainer.Trainer`. When the rule runs again
after an interruption (even ``kill -9``), training continues from the last finished epoch.

Outputs: ``model.pt`` (best weights + spec + target statistics), ``history.csv`` (per epoch:
input size, loss, train and validation MAE, learning rate, images/s), ``train_summary.json``; with
``train.time_budget_minutes``, ``budget.json`` (the epochs chosen to fit it and the speeds measured).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .files import (
    keep_freed_memory,
    read_table,
    run_main,
    setup_logging,
    sha256_file,
    usable_threads,
    write_json,
    write_table,
)
from .learning.batches import load_subset, place
from .learning.budget import fit_to_budget
from .learning.checkpoint import CheckpointError
from .learning.data import read_split
from .learning.inference import resolve_device
from .learning.spec import TrainSpec
from .learning.store import RESIDENT
from .learning.trainer import Trainer

log = logging.getLogger("boneage.train")


def data_hash(index_path: Path, split_path: Path) -> str:
    return hashlib.sha256((sha256_file(index_path) + sha256_file(split_path)).encode()).hexdigest()[:16]


def run(variant: str, spec: TrainSpec, index_path: Path, split_path: Path, out_dir: Path,
        device_name: str = "auto", threads: int = 1, store: Path | None = None, resident: str = "auto") -> dict:
    started = time.perf_counter()
    device = resolve_device(device_name)
    torch.set_num_threads(usable_threads(threads))
    keep_freed_memory()
    index = read_table(index_path, "snakemake --forcerun preprocess")
    split = read_split(split_path, index)
    root = index_path.parent
    t0 = time.perf_counter()
    train = place(load_subset(index, split, "train", root, threads, store), device, resident)
    val = place(load_subset(index, split, "val", root, threads, store), device, resident)
    load_s = time.perf_counter() - t0
    log.info("variant %s on %s: %d train, %d val images of %s px; spec %s", variant, device,
             len(train.ids), len(val.ids), tuple(train.images.shape[-2:]), asdict(spec))
    digest = data_hash(index_path, split_path)
    budget = None
    if spec.time_budget_minutes:
        spec, budget = fit_to_budget(spec, out_dir, digest,
                                     lambda s: Trainer(variant, s, out_dir, device, digest, threads), train, val, started)
    trainer = Trainer(variant, spec, out_dir, device, digest, threads)
    t1 = time.perf_counter()
    result = trainer.fit(train, val)
    fit_s = time.perf_counter() - t1
    trainer.export(out_dir / "model.pt")
    write_table(pd.DataFrame(result["history"]), out_dir / "history.csv")
    hist = result["history"]
    summary = {
        "variant": variant,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "epochs_run": len(hist),
        "best_epoch": result["best"]["epoch"],
        "best_val_mae": result["best"]["val_mae"],
        "train_images": len(train.ids),
        "val_images": len(val.ids),
        "load_s": round(load_s, 2),
        "fit_s_this_run": round(fit_s, 2),
        "train_s_total": round(sum(r["epoch_s"] for r in hist), 2),
        "images_per_s_median": float(np.median([r["images_per_s"] for r in hist])) if hist else None,
        "peak_gpu_mem_gb": round(torch.cuda.max_memory_allocated(device) / 1e9, 3) if device.type == "cuda" else None,
        "spec": asdict(spec),
        "time_budget": budget,
        "torch": torch.__version__,
    }
    write_json(out_dir / "train_summary.json", summary)
    log.info("done: best val MAE %.2f months at epoch %d", summary["best_val_mae"], summary["best_epoch"])
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True, help="variant name (config key under models)")
    parser.add_argument("--spec", required=True, help="the variant's spec.json (from the plan rule)")
    parser.add_argument("--index", required=True, help="index.parquet from preprocess")
    parser.add_argument("--split", required=True, help="split.csv from split")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--seed-offset", type=int, default=0,
                        help="train with the plan's seed + this (a seed model of config repeats)")
    parser.add_argument("--store", default=None, help="the image store (images.u8 of preprocess); "
                        "default: read the PNGs")
    parser.add_argument("--resident", default="auto", choices=RESIDENT,
                        help="where the images stay: gpu, host memory, or disk (read per batch; needs --store)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        spec = TrainSpec.read(args.spec)
        spec = replace(spec, seed=spec.seed + args.seed_offset)
        run(args.variant, spec, Path(args.index), Path(args.split), Path(args.out_dir), args.device, args.threads,
            Path(args.store) if args.store else None, args.resident)
    except (CheckpointError, ValueError, RuntimeError, FileNotFoundError) as exc:
        log.error("%s", exc)
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
