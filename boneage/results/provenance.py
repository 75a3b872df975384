"""Provenance: package versions, git commit and the model card written beside each model."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

from .. import __version__

PACKAGES = ("torch", "torchvision", "numpy", "pandas", "opencv-contrib-python", "opencv-python",
            "mediapipe", "snakemake", "pydicom", "pyarrow")


def package_versions(names=PACKAGES) -> dict:
    out = {"python": platform.python_version(), "boneage": __version__}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit of the checkout that holds this package (with '-dirty' for local changes)."""
    path = Path(path or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def model_card(variant: str, model_meta: dict, preprocess: dict, dataset: dict, split_sha256: str,
               index_sha256: str, metrics: dict, train_summary: dict) -> dict:
    """A MONAI-bundle-like description of a trained model: what goes in, what comes out, from what."""
    spec = model_meta["spec"]
    settings = preprocess["settings"]
    return {
        "name": f"boneage-{variant}",
        "variant": variant,
        "task": "regression of bone age (months) from a left-hand PA radiograph",
        "model_file": "model.pt",
        "input": {
            "image": {
                "channels": 1,
                "preprocessing": "hand crop, side markers painted out, aspect-kept resize with black "
                                 "padding to a square, CLAHE",
                "preprocessed_size_px": settings["image_size"],
                "model_input_size_px": spec["input_size"],
                "intensity": "8-bit PNG scaled to [0, 1]; the model normalises internally",
                "crop_method": settings["crop_method"],
                "region": settings.get("region", "hand"),  # the part of the hand box (boneage.imaging.crop.region_box)
                "clahe": {"clip_limit": settings["clahe_clip_limit"], "tile_grid": settings["clahe_tile_grid"]},
            },
            "sex": "male = 1, female = 0" if spec.get("sex_input") else "not used",
        },
        "output": {"boneage": "months", "normalisation": {
            "mean_months": model_meta["target_mean"], "std_months": model_meta["target_std"]}},
        "architecture": {k: spec[k] for k in ("arch", "sex_input", "head_hidden", "dropout", "pretrained")},
        "training": {
            "settings": spec,
            "spec_digest": model_meta.get("spec_digest"),
            "best_epoch": model_meta.get("epoch"),
            "best_val_mae_months": model_meta.get("best_val_mae"),
            "summary": train_summary,
        },
        "data": {
            "source": dataset.get("source"),
            "labels_sha256": dataset.get("labels_sha256"),
            "image_listing_sha256": dataset.get("image_listing_sha256"),
            "index_sha256": index_sha256,
            "split_sha256": split_sha256,
            "description": "RSNA Pediatric Bone Age Challenge 2017 training set (Halabi et al., "
                           "Radiology 2019) or the embedded synthetic demo, split by this pipeline",
        },
        "metrics": metrics,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "intended_use": "research only; not a medical device and not for clinical decisions",
    }
