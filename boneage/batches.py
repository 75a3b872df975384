"""The training and validation sets as tensors, and the batches of an epoch.

A subset of the split is one uint8 tensor (N, 1, S, S) with its targets; :func:`place` puts it on the
GPU when it fits in half the free memory, else it stays on the host and :class:`Batches` streams it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .data import load_images

log = logging.getLogger("boneage.batches")


@dataclass
class Data:
    images: torch.Tensor  # uint8 (N, 1, S, S)
    boneage: torch.Tensor  # float32 months
    male: torch.Tensor  # float32 0/1
    ids: list


def load_subset(index: pd.DataFrame, split: pd.DataFrame, subset: str, root: Path, threads: int) -> Data:
    ids = set(split.loc[split["subset"] == subset, "id"].astype(str))
    rows = index[index["id"].astype(str).isin(ids)].sort_values("id", kind="stable")
    if rows.empty:
        raise ValueError(f"no '{subset}' images in the split")
    return Data(load_images(rows, root, threads), torch.tensor(rows["boneage"].to_numpy(np.float32)),
                torch.tensor(rows["male"].to_numpy(np.float32)), rows["id"].astype(str).tolist())


def place(data: Data, device: torch.device, fraction_of_free: float = 0.5) -> Data:
    """Move the images to the device when they take at most half its free memory, else keep them
    on the host (batches are then gathered into pinned memory, see :class:`Batches`)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if data.images.numel() <= fraction_of_free * free:
            return Data(data.images.to(device), data.boneage.to(device), data.male.to(device), data.ids)
        log.warning("images (%.2f GB) do not fit in half the free GPU memory; streaming from host memory",
                    data.images.numel() / 1e9)
        return Data(data.images, data.boneage.to(device), data.male.to(device), data.ids)
    return data


class Batches:
    """uint8 image batches on ``device`` for the indices of one epoch's permutation.

    When the images live on the device this is an index. Otherwise (the set is larger than half the
    GPU memory) each batch is gathered with ``index_select`` into one of two reused host buffers,
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
        torch.index_select(self.images, 0, self.host_perm[start:stop], out=out)
        batch = out.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            self.copied[k] = torch.cuda.Event()
            self.copied[k].record()
        return batch

