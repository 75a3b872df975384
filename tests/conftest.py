"""Shared helpers: paths, small RSNA-layout folders made on the fly, running Snakemake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BONEAGE_SHARED_DATA", REPO.parent / "shared" / "data"))
RAW_SAMPLE = SHARED_DATA / "rsna-raw-sample"
TRAIN_299 = SHARED_DATA / "rsna-train-299"
# A bundle's estimate for the same pixels through two paths agrees to float32 rounding, not bit for
# bit, and the smoke run's bias correction magnifies that rounding. Evaluation runs with 2 threads on
# validation and test images in one batch; predict runs with 1 thread (its default) on the test images
# alone, and EfficientNet-Lite0's output then differs in its last bits. The correction, fitted on 8
# validation predictions of a barely trained model, has slopes of about 98 (EfficientNet) and 14
# (ResNet-18), so those bits become 2.0e-4 months for the member and 1.0e-4 for the ensemble
# (measured on one machine; 0.0 with 2 threads). 1e-3 months (44 minutes of age) keeps a margin over
# that and stays far below any real mismatch (preprocessing, TTA or the correction itself move
# estimates by tenths of months).
SAME_MONTHS = 1e-3


def needs_shared(path: Path):
    return pytest.mark.skipif(not path.is_dir(), reason=f"shared data not found at {path}")


def write_rsna(root: Path, labels: pd.DataFrame | str, images: dict[str, np.ndarray | bytes]) -> Path:
    """An RSNA-layout folder: label csv (a frame, or raw csv text) plus images named <id>.<ext>."""
    (root / "boneage-training-dataset").mkdir(parents=True, exist_ok=True)
    csv = root / "boneage-training-dataset.csv"
    if isinstance(labels, str):
        csv.write_text(labels)
    else:
        labels.to_csv(csv, index=False)
    for name, img in images.items():
        path = root / "boneage-training-dataset" / name
        if isinstance(img, bytes):
            path.write_bytes(img)
        else:
            ok, buf = cv2.imencode(Path(name).suffix, img)
            assert ok
            path.write_bytes(buf.tobytes())
    return root


def dicom_bytes(tmp_path, pixels: np.ndarray, photometric="MONOCHROME2", slope=1.0, intercept=0.0,
                window=None, declared_shape: tuple[int, int] | None = None, **attributes) -> bytes:
    """A 12-bit DICOM of ``pixels`` (:func:`boneage.imaging.encodings.dicom_bytes`), rescale always written."""
    from boneage.imaging.encodings import dicom_bytes as encode

    return encode(pixels, photometric, 12, slope, intercept, window, declared_shape, **attributes)


def untrained_model(path: Path, seed: int = 0) -> None:
    """``model.pt`` of an untrained ResNet-18 at 32 px (weights from ``seed``), as training writes one."""
    import torch

    from boneage.learning.inference import save_model
    from boneage.learning.models import build_model

    torch.manual_seed(seed)
    spec = {"arch": "resnet18", "input_size": 32, "sex_input": False, "pretrained": "none", "augment": {}}
    save_model(path, "resnet18", {"spec": spec, "spec_digest": "d", "data_hash": "h", "epoch": 1,
                                  "best": {"val_mae": 1.0}, "target": {"mean": 100.0, "std": 40.0},
                                  "ema": None, "model": build_model(spec).state_dict()})


def export_args(root: Path, out_dir: Path) -> list[str]:
    """The other files ``python -m boneage.export variant`` reads beside a model (metrics, preprocessing,
    card), written into ``root``; its arguments but ``--model``."""
    from boneage.files import write_json

    write_json(root / "metrics.json", {"variant": "resnet18", "tta": False, "bias_correction": None, "interval": {},
                                       "test": {}})
    write_json(root / "preprocess.json", {"settings": {"image_size": 32}})
    write_json(root / "card.json", {})
    return ["--metrics", str(root / "metrics.json"), "--preprocess-summary", str(root / "preprocess.json"),
            "--model-card", str(root / "card.json"), "--out-dir", str(out_dir)]


def hand_like(seed: int = 0, size=(160, 128)) -> np.ndarray:
    """A small synthetic radiograph from the demo generator."""
    from boneage.imaging.demo import render

    img = render(120.0, True, np.random.default_rng(seed))
    return cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 1800) -> subprocess.CompletedProcess:
    """Run the project's Snakefile with ``workdir`` as working directory (outputs go there)."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc


def planned_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule name -> number of jobs a dry run would execute (from its job-stats table)."""
    text = proc.stdout + proc.stderr
    jobs, in_table = {}, False
    for line in text.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if not parts or parts[0].startswith("-"):
                continue
            if parts[0] == "total":
                break
            jobs[parts[0]] = int(parts[1])
    return jobs


def planned_rules(proc: subprocess.CompletedProcess) -> set[str]:
    """Rule names of the jobs a dry run would execute."""
    return set(planned_jobs(proc))
