"""The RSNA layout on disk: where the label csv and the images are, and a signature of the images.

Pure Python (no third-party imports), so the Snakefile can use it when it builds the DAG: the image
folder's signature is a parameter of the download rule, so that an added, removed, replaced or
edited image re-runs the download stage and everything after it.

An RSNA-layout folder holds ``boneage-training-dataset.csv`` (``id,boneage,male``) beside
``boneage-training-dataset/`` with one image ``<id>.<ext>`` per row. The Kaggle download nests the
image folder once more (``boneage-training-dataset/boneage-training-dataset/``); both are accepted.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

LABELS_CSV = "boneage-training-dataset.csv"
IMAGE_DIR = "boneage-training-dataset"
# Extensions looked for beside an id, in this order.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".dcm", ".dicom")


class LayoutError(FileNotFoundError):
    """The folder is not in the RSNA layout; the message names what is missing."""


@dataclass(frozen=True)
class Layout:
    labels_csv: Path
    image_dir: Path


def resolve_layout(root: str | Path) -> Layout:
    """Find the label csv and image folder of an RSNA-layout folder, or raise LayoutError."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"data folder not found: {root}")
    csv = root / LABELS_CSV
    if not csv.is_file():
        found = sorted(p.name for p in root.glob("*.csv"))
        raise LayoutError(
            f"label file {csv} not found (RSNA layout: {LABELS_CSV} beside {IMAGE_DIR}/); "
            f"csv files there: {found or 'none'}"
        )
    image_dir = root / IMAGE_DIR
    if not image_dir.is_dir():
        raise LayoutError(f"image folder {image_dir} not found (RSNA layout: one <id>.png per row)")
    nested = image_dir / IMAGE_DIR
    if nested.is_dir() and not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in image_dir.iterdir()):
        image_dir = nested  # Kaggle's zip nests the folder once more
    return Layout(csv, image_dir)


def listing_sha256(image_dir: str | os.PathLike, mtimes: bool = False) -> tuple[str, int]:
    """Hash of the sorted names and sizes (and, with ``mtimes``, modification times) of the files in
    an image folder, and their number. Only ``stat`` is read: cheap enough for every start, even for
    14,000 films. Without ``mtimes`` the hash is the same for every copy of the same files (the model
    cards cite it); with them it also changes when an image is edited in place (the Snakefile uses it).
    """
    entries = []
    with os.scandir(image_dir) as it:
        for e in it:
            try:
                if e.is_file():
                    st = e.stat()
                    entries.append((e.name, st.st_size, st.st_mtime_ns if mtimes else 0))
            except OSError:  # a dangling or looping symlink: preprocess rejects its row by name
                entries.append((e.name, -1, -1))
    h = hashlib.sha256()
    for name, size, mtime in sorted(entries):
        h.update((f"{name}\t{size}\t{mtime}\n" if mtimes else f"{name}\t{size}\n").encode())
    return h.hexdigest(), len(entries)
