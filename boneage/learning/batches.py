"""The training and validation sets, and the batches of an epoch.

A subset of the split is its uint8 images (N, 1, S, S) with its targets. The images come from the
image store (:mod:`boneage.learning.store`) or, without one, from the PNGs; :func:`place` keeps them where
``data.resident`` says: on the GPU, in host memory (:class:`Batches` streams them to the device), or
on disk (each batch read from the store).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .data import load_images
from .store import DiskImages, hold, open_rows

log = logging.getLogger("boneage.learning.batches")


@dataclass
class Data:
    images: torch.Tensor | DiskImages  # uint8 (N, 1, S, S)
    boneage: torch.Tensor  # float32 months
    male: torch.Tensor  # float32 0/1
    ids: list


def load_subset(index: pd.DataFrame, split: pd.DataFrame, subset: str, root: Path, threads: int,
                store: Path | None = None) -> Data:
    """A subset's targets, and its images: from the PNGs, or left in ``store`` to be placed."""
    ids = set(split.loc[split["subset"] == subset, "id"].astype(str))
    rows = index[index["id"].astype(str).isin(ids)].sort_values("id", kind="stable")
    if rows.empty:
        raise ValueError(f"no '{subset}' images in the split")
    images = open_rows(store, index, rows) if store is not None else load_images(rows, root, threads)
    return Data(images, torch.tensor(rows["boneage"].to_numpy(np.float32)),
                torch.tensor(rows["male"].to_numpy(np.float32)), rows["id"].astype(str).tolist())


def place(data: Data, device: torch.device, resident: str = "auto") -> Data:
    """The images where ``resident`` (``data.resident``, resolved by :func:`boneage.learning.store.choose`)
    says; targets on the device."""
    images, where = hold(data.images, resident, device)
    if where == "gpu":
        images = images.to(device)
    return Data(images, data.boneage.to(device), data.male.to(device), data.ids)


class Batches:
    """uint8 image batches on ``device`` for the indices of one epoch's permutation.

    When the images live on the device this is an index. Otherwise (in host memory, or on disk:
    ``data.resident``) each batch is gathered (read from the store) with ``index_select`` into one of two reused host buffers,
    pinned on CUDA, and copied asynchronously; before a buffer is refilled the host waits for its
    previous copy only (a CUDA event), not for the GPU's work. The permutation is copied to the host
    once per epoch, not every step. ``stream=True`` takes this path on a CPU-only machine too (the
    tests use it).
    """

    def __init__(self, images: torch.Tensor, device: torch.device, batch_size: int, stream: bool | None = None):
        self.images, self.device = images, device
        self.streaming = images.device.type != device.type if stream is None else stream
        self.host_perm = None
        if self.streaming:
            self.images = images.cpu()
            self.buffers = [torch.empty((batch_size, *images.shape[1:]), dtype=images.dtype,
                                        pin_memory=device.type == "cuda") for _ in range(2)]
            self.copied = [None, None]  # CUDA events: the last copy out of each buffer
            self.turn = 0

    def epoch(self, perm: torch.Tensor) -> None:
        if self.streaming:
            self.host_perm = perm.cpu()

    def __call__(self, start: int, stop: int, idx: torch.Tensor) -> torch.Tensor:
        if not self.streaming:
            return self.images[idx]
        k, self.turn = self.turn, 1 - self.turn
        if self.copied[k] is not None:
            self.copied[k].synchronize()
        out = self.buffers[k][:stop - start]
        if isinstance(self.images, DiskImages):
            self.images.read_into(self.host_perm[start:stop].numpy(), out)
        else:
            torch.index_select(self.images, 0, self.host_perm[start:stop], out=out)
        batch = out.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            self.copied[k] = torch.cuda.Event()
            self.copied[k].record()
        return batch

