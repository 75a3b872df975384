"""The image store: every preprocessed image in one raw uint8 file, read whole or per batch.

Layout of ``images.u8``: the index's images in index order, each S x S bytes, row-major, no
header; ``images.json`` beside it records the format, N, S, the ids' sha256 (in order) and the
data file's sha256. Written once at the end of preprocessing (an output of rule ``preprocess``);
training and evaluation read it instead of decoding N PNGs. Where the images stay (``data.resident``):

- ``gpu``: the whole set on the GPU (the fastest; needs the memory);
- ``host``: the whole set in host memory, batches copied to the device (pinned, asynchronous);
- ``disk``: nothing held: each batch is read from the file with one ``pread`` per image, so the
  memory a process holds does not grow with N (the page cache may keep the file, but that memory
  is the kernel's to give back);
- ``auto``: ``gpu`` when the set takes at most half the free GPU memory, else ``host`` when it takes
  at most half the available host memory, else ``disk``; the log says which and why.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from ..files import atomic_path, read_json, sha256_file, write_json

log = logging.getLogger("boneage.learning.store")

STORE_FORMAT = "boneage-store-v1"
RESIDENT = ("auto", "gpu", "host", "disk")


class StoreError(ValueError):
    """A store that does not match the index it is read with; the message says how to rebuild it."""


def ids_sha256(ids) -> str:
    return hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()


def write_store(index: pd.DataFrame, root: Path, path: Path) -> dict:
    """Every image of ``index`` (PNG paths relative to ``root``) into ``path``, one at a time."""
    def images():
        for name in index["image"]:
            img = cv2.imread(str(root / name), cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise StoreError(f"{root / name}: unreadable; re-run preprocess")
            yield img
    return write_images(index["id"], images(), path)


def write_images(ids, images, path: Path) -> dict:
    """The square uint8 arrays ``images`` (one per id of ``ids``, in order) into the store ``path``
    and its ``images.json``."""
    size, n, ids = None, 0, list(ids)
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        for img in images:
            if img.ndim != 2 or img.shape[0] != img.shape[1] or (size is not None and img.shape[0] != size):
                name = ids[n] if n < len(ids) else n
                raise StoreError(f"{path}: image of id {name} is {img.shape}, not of the set's square size {size}; "
                                 "re-run preprocess")
            size, n = img.shape[0], n + 1
            out.write(np.ascontiguousarray(img, np.uint8).tobytes())
    if n != len(ids):
        raise StoreError(f"{path}: {n} images for {len(ids)} ids")
    meta = {"format": STORE_FORMAT, "n": n, "size": int(size or 0),
            "ids_sha256": ids_sha256(ids), "sha256": sha256_file(path),
            "layout": "uint8 (N, S, S), C order, the index's row order, no header"}
    write_json(path.with_suffix(".json"), meta)
    return meta


class DiskImages:
    """Rows of a store as a read-only (n, 1, S, S) uint8 source, read on demand.

    Supports what the trainer and ``inference.predict`` do to an image tensor: ``shape``, ``len``,
    slicing and indexing with an index tensor or array (each returns a uint8 tensor), ``cpu()``.
    """

    device = torch.device("cpu")
    dtype = torch.uint8

    def __init__(self, path: Path, rows: np.ndarray, size: int):
        self.path, self.rows, self.size = Path(path), np.asarray(rows, np.int64), int(size)
        self.fd = os.open(self.path, os.O_RDONLY)
        self.shape = torch.Size((len(self.rows), 1, self.size, self.size))

    def __len__(self) -> int:
        return len(self.rows)

    def __del__(self):
        fd = getattr(self, "fd", None)
        if fd is not None:
            os.close(fd)

    def __getstate__(self):  # a worker process opens its own descriptor
        return {"path": self.path, "rows": self.rows, "size": self.size}

    def __setstate__(self, state):
        self.__init__(state["path"], state["rows"], state["size"])

    def cpu(self) -> "DiskImages":
        return self

    def numel(self) -> int:
        return len(self.rows) * self.size * self.size

    def read_into(self, positions, out: torch.Tensor) -> torch.Tensor:
        """The images at ``positions`` (of this subset) into the uint8 tensor ``out`` (k, 1, S, S)."""
        per = self.size * self.size
        view = out.numpy().reshape(len(out), per)
        for k, row in enumerate(self.rows[positions]):
            got = os.preadv(self.fd, [memoryview(view[k])], int(row) * per)
            if got != per:
                raise StoreError(f"{self.path}: short read at image {row}; the store is truncated, re-run "
                                 "preprocessing (snakemake --forcerun preprocess)")
        return out

    def _positions(self, item) -> np.ndarray:
        if isinstance(item, slice):
            return np.arange(len(self.rows))[item]
        positions = np.atleast_1d(item.cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item))
        return np.flatnonzero(positions) if positions.dtype == bool else positions.astype(np.int64)

    def __getitem__(self, item) -> torch.Tensor:
        positions = self._positions(item)
        return self.read_into(positions, torch.empty((len(positions), 1, self.size, self.size), dtype=torch.uint8))

    def take(self, item) -> "DiskImages":
        """The rows ``item`` selects (slice, positions or mask) as another on-demand source."""
        return DiskImages(self.path, self.rows[self._positions(item)], self.size)

    def load(self, chunk: int = 1024) -> torch.Tensor:
        """All rows as one uint8 tensor in memory (``host``), read in chunks."""
        out = torch.empty(tuple(self.shape), dtype=torch.uint8)
        for start in range(0, len(self), chunk):
            self.read_into(np.arange(start, min(len(self), start + chunk)), out[start:start + chunk])
        return out


def subset(images, mask):
    """``images[mask]``: a tensor's rows, or a store's rows left on disk."""
    return images.take(mask) if isinstance(images, DiskImages) else images[torch.as_tensor(mask)]


_VERIFIED: set = set()


def verify(store: Path, sha256: str) -> None:
    """Refuse a store whose bytes differ from the sha256 its ``images.json`` recorded (a bit flip, a
    damaged copy); read once per process and file version (about 1 s per GB)."""
    st = store.stat()
    key = (str(store), st.st_ino, st.st_size, st.st_mtime_ns, sha256)
    if key in _VERIFIED:
        return
    if sha256_file(store) != sha256:
        raise StoreError(f"{store}: its bytes differ from the sha256 in {store.with_suffix('.json').name} (a bit "
                         "flip or a damaged copy); re-run: snakemake --forcerun preprocess")
    _VERIFIED.add(key)


def open_rows(store: Path, index: pd.DataFrame, rows: pd.DataFrame) -> DiskImages:
    """The images of ``rows`` (a subset of ``index``, in their order) from the store of ``index``."""
    meta = read_json(store.with_suffix(".json"))
    if meta.get("format") != STORE_FORMAT or meta["n"] != len(index) or meta["ids_sha256"] != ids_sha256(index["id"]):
        raise StoreError(f"{store} was not written from this index (re-run: snakemake --forcerun preprocess)")
    if store.stat().st_size != meta["n"] * meta["size"] ** 2:
        raise StoreError(f"{store}: {store.stat().st_size} bytes, expected {meta['n'] * meta['size'] ** 2}; "
                         "re-run: snakemake --forcerun preprocess")
    verify(store, meta["sha256"])
    position = pd.Series(np.arange(len(index)), index=index["id"].astype(str))
    return DiskImages(store, position.loc[rows["id"].astype(str)].to_numpy(), meta["size"])


def hold(images, resident: str, device: torch.device):
    """``images`` (a tensor, or rows of the store) where ``resident`` resolves to (:func:`choose`): left
    on disk, or read into host memory (also for ``gpu``: the caller moves them); and that place."""
    where = choose(resident, images.numel(), device)
    if where == "disk":
        if not isinstance(images, DiskImages):
            raise ValueError("data.resident: disk needs the image store (train --store; the store rule)")
        return images, where
    return (images.load() if isinstance(images, DiskImages) else images), where


def available_host_bytes() -> int:
    """Memory the kernel says is available (MemAvailable), or 0 where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def choose(resident: str, nbytes: int, device: torch.device) -> str:
    """``data.resident`` resolved: where a set of ``nbytes`` stays (module docstring)."""
    if resident != "auto":
        if resident == "gpu" and device.type != "cuda":
            raise ValueError("data.resident: gpu, but training runs on the CPU (device); use auto, host or disk")
        return resident
    if device.type == "cuda" and nbytes <= 0.5 * torch.cuda.mem_get_info(device)[0]:
        why, where = "fit in half the free GPU memory", "gpu"
    elif nbytes <= 0.5 * available_host_bytes():
        why, where = "fit in half the available host memory", "host"
    else:
        why, where = "are larger than half the available host memory", "disk"
    log.info("data.resident auto -> %s: the images (%.2f GB) %s", where, nbytes / 1e9, why)
    return where
