"""Frozen first blocks computed once (``train.cache_blocks``).

With the stem and the first N blocks of an EfficientNet-Lite kept at their pretrained weights and
their BatchNorm in inference mode, their output for an image depends on the image alone. It is
computed once: for ``cache_views`` augmented views of every training film (float16) and for every
validation film as evaluation sees it (float32, so that validation scores exactly what
``evaluate`` will). The epochs then run only the blocks after them, forward and backward; the
saved model is the whole network, so evaluation, Grad-CAM and export do not know about the cache.

The outputs live in files beside the checkpoints, memory-mapped: the page cache holds them, and
when they exceed the memory they are read from disk rather than failing. They are removed when the
training ends and recomputed (identically: the views have their own seeded generator) when an
interrupted training continues.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from ..files import progress
from .batches import Data
from .data import Augment, augment, resize
from .inference import autocast, channels_last

log = logging.getLogger("boneage.learning.frozen")



def chunk(device: torch.device) -> int:
    """Films per forward pass: as ``inference.predict`` (16 on the CPU keeps activations off mmap)."""
    return 128 if device.type == "cuda" else 16


class FrozenOutputs:
    """The frozen blocks' outputs of one subset: ``views`` rows per film, film-major, memory-mapped."""

    def __init__(self, path: Path, dtype: np.dtype, n_films: int, views: int, shape: tuple[int, ...]):
        self.path, self.views, self.n_films = path, views, n_films
        need = n_films * views * int(np.prod(shape)) * np.dtype(dtype).itemsize
        free = shutil.disk_usage(path.parent).free
        if need > free:  # a memory-mapped file on a full disk ends in SIGBUS, not in an error
            raise OSError(f"train.cache_blocks needs {need / 1e9:.1f} GB in {path.parent} for the frozen blocks' "
                          f"outputs ({n_films} films x {views} views x {shape}); {free / 1e9:.1f} GB are free. "
                          "Lower train.cache_views or the input size, or free disk space")
        self.rows = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n_films * views, *shape))

    def __getitem__(self, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.rows[rows]))

    def close(self) -> None:
        del self.rows
        self.path.unlink(missing_ok=True)


@torch.no_grad()
def compute(model, data: Data, n_blocks: int, size: int, views: int, aug: Augment | None,
            generator: torch.Generator | None, device: torch.device, bf16: bool, path: Path,
            dtype=np.float16) -> FrozenOutputs:
    """``model.trunk`` of every film of ``data``: ``views`` augmented views each (``aug`` with
    ``generator``), or the plain image resized to ``size`` when ``aug`` is None."""
    was_training = model.training
    model.eval()
    n = data.images.shape[0]
    probe = model.trunk(resize(data.images[:1].to(device), size), n_blocks)
    out = FrozenOutputs(path, dtype, n, views, tuple(probe.shape[1:]))
    log.info("frozen blocks: %d films x %d view(s) of %s, %.2f GB in %s", n, views, tuple(probe.shape[1:]),
             out.rows.nbytes / 1e9, path)
    step = chunk(device)
    for start in progress(range(0, n, step), desc="frozen blocks", unit="chunk", leave=False):
        xb = data.images[start:start + step].to(device)
        for v in range(views):
            x = resize(xb, size) if aug is None else augment(xb, size, aug, generator)
            with autocast(device, bf16):
                h = model.trunk(channels_last(x), n_blocks)
            out.rows[np.arange(start, start + xb.shape[0]) * views + v] = h.float().cpu().numpy()
    out.rows.flush()
    model.train(was_training)
    return out


class CachedBatches:
    """One epoch's inputs to the trained blocks: for each film of the permutation, one of its views
    drawn at random, read from the cache and moved to the device as float32."""

    def __init__(self, outputs: FrozenOutputs, device: torch.device, generator: torch.Generator):
        self.outputs, self.device, self.generator = outputs, device, generator
        self.rows = np.zeros(0, dtype=np.int64)

    def epoch(self, perm: torch.Tensor) -> None:
        view = torch.randint(self.outputs.views, (perm.shape[0],), device=perm.device, generator=self.generator)
        self.rows = (perm * self.outputs.views + view).cpu().numpy()

    def __call__(self, start: int, stop: int) -> torch.Tensor:
        return channels_last(self.outputs[self.rows[start:stop]].to(self.device).float())


@torch.no_grad()
def predict_cached(model, outputs: FrozenOutputs, male: torch.Tensor, n_blocks: int, target_mean: float,
                   target_std: float, device: torch.device, bf16: bool) -> np.ndarray:
    """Estimates in months of the films whose frozen outputs (one view each) are ``outputs``."""
    model.eval()
    preds = np.empty(outputs.n_films, dtype=np.float32)
    step = chunk(device)
    for start in range(0, outputs.n_films, step):
        rows = np.arange(start, min(start + step, outputs.n_films))
        h = channels_last(outputs[rows].to(device))
        with autocast(device, bf16):
            z = model.from_trunk(h, male[start:start + len(rows)].to(device), n_blocks)
        preds[rows] = (z.float() * target_std + target_mean).cpu().numpy()
    return preds
