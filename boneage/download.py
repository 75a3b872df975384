"""Stage 1, download: make the dataset available and write ``dataset.json`` pointing at it.

Sources:

* ``demo``: generate the embedded synthetic dataset (no network, deterministic from a seed);
* ``local``: an RSNA-layout folder the user already has (nothing is copied);
* ``kaggle``: the RSNA Pediatric Bone Age dataset from Kaggle through the ``kaggle`` package.

``dataset.json`` records where the label csv and image folder are, plus hashes of the label file
and of the image listing (names and sizes), so that later stages and the model cards can say
exactly which data they saw.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .files import WriteError, run_main, setup_logging, sha256_file, write_json
from .imaging import demo
from .imaging.ingest import LabelsError, read_labels
from .imaging.layout import LayoutError, listing_sha256, resolve_layout

log = logging.getLogger("boneage.download")

KAGGLE_DATASET = "kmader/rsna-bone-age"


class CredentialsError(RuntimeError):
    pass


class DownloadError(RuntimeError):
    pass


def kaggle_credential_source() -> str | None:
    """Where the Kaggle client would find credentials, or None. Looks only, asks no server."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "environment variable KAGGLE_API_TOKEN"
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "environment variables KAGGLE_USERNAME and KAGGLE_KEY"
    for path in kaggle_credential_files():
        if path.is_file():
            return str(path)
    return None


def kaggle_credential_files() -> list[Path]:
    home = Path.home()
    dirs = [Path(os.environ["KAGGLE_CONFIG_DIR"])] if os.environ.get("KAGGLE_CONFIG_DIR") else []
    dirs += [home / ".kaggle", Path(os.environ.get("XDG_CONFIG_HOME", home / ".config")) / "kaggle"]
    return [d / name for d in dirs for name in ("access_token", "kaggle.json")]


def download_kaggle(out_dir: Path, dataset: str = KAGGLE_DATASET) -> Path:
    """Download and unzip the Kaggle dataset into ``out_dir`` (skipped when already there)."""
    try:
        resolve_layout(out_dir)
        log.info("Kaggle data already present in %s; not downloading again", out_dir)
        return out_dir
    except LayoutError:
        pass
    source = kaggle_credential_source()
    if source is None:
        places = ", ".join(str(p) for p in kaggle_credential_files())
        raise CredentialsError(
            "data_source=kaggle needs Kaggle API credentials, and none were found. Set "
            "KAGGLE_API_TOKEN (or KAGGLE_USERNAME and KAGGLE_KEY), or save a token to one of: "
            f"{places}. Create one at https://www.kaggle.com/settings/api. Or download "
            f"'{dataset}' yourself and use data_source=local data_dir=PATH."
        )
    log.info("Kaggle credentials from %s; downloading %s to %s", source, dataset, out_dir)
    from kaggle.api.kaggle_api_extended import KaggleApi

    api = KaggleApi()
    api.authenticate()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        api.dataset_download_files(dataset, path=str(out_dir), unzip=True, quiet=False)
    except Exception as exc:  # no network, proxy, HTTP 401/403/404, disk full, bad zip, ...
        raise DownloadError(
            f"could not download '{dataset}' from Kaggle ({type(exc).__name__}: {exc}). Check the "
            "network and that your account accepted the dataset's terms on kaggle.com; or download it "
            "yourself and use data_source=local data_dir=PATH") from exc
    return out_dir


def describe(root: Path, source: str) -> dict:
    """Resolve the layout of ``root``, check the label columns, and describe the dataset."""
    layout = resolve_layout(root)
    labels, rejects = read_labels(layout.labels_csv)  # raises LabelsError on missing columns
    listing, n_files = listing_sha256(layout.image_dir)
    return {
        "source": source,
        "root": str(root.resolve()),
        "labels_csv": str(layout.labels_csv.resolve()),
        "image_dir": str(layout.image_dir.resolve()),
        "n_label_rows": int(len(labels) + len(rejects)),
        "n_label_rows_bad": int(len(rejects)),
        "n_image_files": n_files,
        "labels_sha256": sha256_file(layout.labels_csv),
        "image_listing_sha256": listing,
    }


def run(source: str, out: Path, data_dir: str | None, work_dir: Path, demo_n: int, demo_seed: int,
        kaggle_dataset: str = KAGGLE_DATASET) -> dict:
    if source == "demo":
        root = work_dir / "demo"
        demo.generate(root, demo_n, demo_seed)
    elif source == "local":
        if not data_dir:
            raise LayoutError("data_source=local needs data_dir=PATH (an RSNA-layout folder)")
        root = Path(data_dir)
    elif source == "kaggle":
        root = download_kaggle(work_dir / "kaggle", kaggle_dataset)
    else:
        raise ValueError(f"unknown data_source {source!r}; use demo, local or kaggle")
    info = describe(root, source)
    if source == "demo":
        info["demo"] = {"n_images": demo_n, "seed": demo_seed}
    write_json(out, info)
    log.info("dataset: %s", info)
    return info


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["demo", "local", "kaggle"], required=True)
    parser.add_argument("--out", required=True, help="dataset.json to write")
    parser.add_argument("--data-dir", default=None, help="RSNA-layout folder (source=local)")
    parser.add_argument("--work-dir", default="results/data", help="where demo/kaggle data go")
    parser.add_argument("--demo-n-images", type=int, required=True)
    parser.add_argument("--demo-seed", type=int, required=True)
    parser.add_argument("--kaggle-dataset", required=True)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        run(args.source, Path(args.out), args.data_dir, Path(args.work_dir), args.demo_n_images,
            args.demo_seed, args.kaggle_dataset)
    except (LayoutError, LabelsError, CredentialsError, DownloadError, WriteError) as exc:
        log.error("%s", exc)
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
