"""Preprocessed images as one uint8 tensor, and augmentation that runs where the tensor lives.

The whole training set is held as uint8 (12,611 images at 299 px are 1.1 GB), on the GPU when it
fits, so a training step is: index a batch, one ``grid_sample`` for the random affine and the
resize to the model's input size, a few element-wise ops for intensity. No loader processes, no
host-to-device copies in the loop.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..files import TornFile, read_table


@dataclass(frozen=True)
class Augment:
    rotate_deg: float = 15.0
    scale_min: float = 0.85
    scale_max: float = 1.15
    translate: float = 0.06  # fraction of the image side
    hflip: bool = False
    brightness: float = 0.08  # additive, in [0, 1] intensity units
    contrast: float = 0.15  # log-uniform factor range
    gamma: float = 0.15  # log-uniform exponent range
    noise: float = 0.0  # largest SD of per-pixel Gaussian noise, [0, 1] intensity units; 0 = none
    blur: float = 0.0  # largest SD of a Gaussian blur, in model-input pixels; 0 = none
    overexpose: float = 0.0  # largest share of the grey range clipped white (a clipped highlight end); 0 = none
    lift: float = 0.0  # largest black level the range is compressed onto (a washed-out film); 0 = none

    @classmethod
    def from_dict(cls, d: dict | None) -> "Augment":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown augmentation key(s) {sorted(unknown)}")
        return cls(**d)


SUBSETS = ("train", "val", "test")


class SplitError(ValueError):
    """A split table that does not fit the index; the message names the file and what is wrong."""


def check_split(split: pd.DataFrame, index: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check a split table against the index: known subsets, no unknown or duplicated ids."""
    missing = {"id", "subset"} - set(split.columns)
    if missing:
        raise SplitError(f"split file {source} lacks column(s) {sorted(missing)}")
    split = split.copy()
    split["id"] = split["id"].astype(str)
    bad = sorted(set(split["subset"]) - set(SUBSETS))
    if bad:
        raise SplitError(f"split file {source}: unknown subset(s) {bad}; use {SUBSETS}")
    dup = split["id"][split["id"].duplicated()].tolist()
    if dup:
        raise SplitError(f"split file {source}: ids listed twice, e.g. {dup[:5]}")
    unknown = sorted(set(split["id"]) - set(index["id"].astype(str)))
    if unknown:
        raise SplitError(f"split file {source}: {len(unknown)} ids not in the index, e.g. {unknown[:5]}")
    for subset in ("train", "val"):
        if not (split["subset"] == subset).any():
            why = ""
            if "stratum" in split.columns:  # made here: say why the strata gave none
                why = (f": {len(split)} images in {split['stratum'].nunique()} strata (age bin x sex), and "
                       f"each stratum's share rounds to 0 images. Use more images, a wider "
                       f"split.age_bin_months or a larger split.{subset}_fraction")
            raise SplitError(f"split from {source} has no '{subset}' images{why}")
    if "stratum" not in split.columns:
        split["stratum"] = ""
    return split


def summary_path(split_path: Path) -> Path:
    """``split_summary.csv`` beside a split file: the images per subset the split stage wrote with it."""
    return Path(split_path).with_name("split_summary.csv")


def read_split(path: Path, index: pd.DataFrame) -> pd.DataFrame:
    """The split stage's ``split.csv``, checked against the index (:func:`check_split`) and against
    the images per subset that ``split_summary.csv`` beside it counts (the split stage writes both;
    a fold's split file has none): a torn or damaged copy, also one cut exactly at a line end, is
    named with the command that writes it again, never read as fewer films."""
    try:
        split = check_split(read_table(path, dtype={"id": str}), index, str(path))
        summary = summary_path(path)
        if summary.is_file():
            counted = read_table(summary).set_index("subset")["images"].to_dict()
            listed = split["subset"].value_counts().to_dict()
            if listed != {s: n for s, n in counted.items() if n}:
                def per_subset(counts):
                    return ", ".join(f"{s} {counts.get(s, 0)}" for s in SUBSETS if s in {**counted, **listed})

                raise SplitError(f"split file {path} lists {per_subset(listed)} images, but {summary}, "
                                 f"written with it, counts {per_subset(counted)}: the file was cut short or changed")
        return split
    except (SplitError, TornFile) as exc:
        raise SplitError(f"{exc}; write it again: snakemake --forcerun split") from exc


def subset_table(index: pd.DataFrame, split: pd.DataFrame, subsets=("val", "test")) -> pd.DataFrame:
    """The index rows of the split's ``subsets``, with a ``subset`` column, sorted by subset and id."""
    merged = index.astype({"id": str}).merge(split[["id", "subset"]].astype({"id": str}), on="id")
    return merged[merged["subset"].isin(subsets)].sort_values(["subset", "id"]).reset_index(drop=True)


def load_images(index: pd.DataFrame, root: str | Path, threads: int = 8) -> torch.Tensor:
    """Read the index's PNGs into one (N, 1, S, S) uint8 tensor, in index order."""
    root = Path(root)
    paths = [str(root / p) for p in index["image"]]

    def read(path: str) -> np.ndarray:
        img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise FileNotFoundError(f"cannot read preprocessed image {path}: the preprocess stage's images "
                                    "changed since it ran; re-run it: snakemake --forcerun preprocess")
        return img

    with ThreadPoolExecutor(max(1, threads)) as pool:
        images = list(pool.map(read, paths))
    sizes = {img.shape for img in images}
    if len(sizes) > 1:
        raise ValueError(f"preprocessed images differ in size {sorted(sizes)[:3]}; re-run preprocess")
    return torch.from_numpy(np.stack(images)[:, None])


def affine_sample(x: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    grid = F.affine_grid(theta, [x.shape[0], 1, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def resize(batch_u8: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, 1, S, S) -> float (B, 1, size, size) in [0, 1], no augmentation.

    Uses the same sampler as :func:`augment`, so train and test images are interpolated alike.
    """
    x = batch_u8.float().div_(255)
    if x.shape[-1] == size:
        return x
    theta = torch.eye(2, 3, device=x.device, dtype=x.dtype).expand(x.shape[0], 2, 3)
    return affine_sample(x, theta, size)


def affine_theta(n: int, rotate_rad: torch.Tensor, scale: torch.Tensor, tx: torch.Tensor,
                 ty: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Sampling matrices (output -> input coordinates) for rotation, zoom, shift and flip."""
    cos, sin = torch.cos(rotate_rad) / scale, torch.sin(rotate_rad) / scale
    fx = torch.where(flip, -1.0, 1.0).to(cos.dtype)
    theta = torch.stack([
        torch.stack([cos * fx, -sin, tx], dim=1),
        torch.stack([sin * fx, cos, ty], dim=1),
    ], dim=1)
    return theta


# A consistency pair's second view (train.consistency): the first view's geometry moved by up to this
# many model-input pixels each way and zoomed by up to this log-factor, as a retake or a hand box a
# pixel or 2 % away moves it; its grey levels, blur and noise are drawn anew.
PAIR_SHIFT_PX = 1.0
PAIR_ZOOM = 0.02


def _uniform(n: int, lo: float, hi: float, dev, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, device=dev, generator=generator) * (hi - lo) + lo


def _geometry(n: int, aug: Augment, dev, generator: torch.Generator):
    """Random rotation (rad), zoom, shift (grid units) and flip of ``n`` images."""
    rot = _uniform(n, -1, 1, dev, generator) * math.radians(aug.rotate_deg)
    scale = torch.exp(_uniform(n, math.log(aug.scale_min), math.log(aug.scale_max), dev, generator))
    tx = _uniform(n, -2, 2, dev, generator) * aug.translate  # grid spans [-1, 1]
    ty = _uniform(n, -2, 2, dev, generator) * aug.translate
    flip = (torch.rand(n, device=dev, generator=generator) < 0.5) if aug.hflip else torch.zeros(n, dtype=torch.bool, device=dev)
    return rot, scale, tx, ty, flip


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Each image of (B, 1, H, W) blurred by its own Gaussian of SD ``sigma`` (B,) px; edges replicated."""
    b, _, h, w = x.shape
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma.clamp_min(1e-3).view(-1, 1)) ** 2)
    k = k / k.sum(1, keepdim=True)
    y = F.pad(x.reshape(1, b, h, w), (radius, radius, 0, 0), mode="replicate")
    y = F.conv2d(y, k.view(b, 1, 1, -1), groups=b)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), k.view(b, 1, -1, 1), groups=b)
    return y.reshape(b, 1, h, w)


def _intensity(x: torch.Tensor, aug: Augment, generator: torch.Generator) -> torch.Tensor:
    """A film's own grey-level curve as another site makes it (each only when asked for, so that
    runs without it keep their random stream): a clipped highlight end, the grey levels above
    ``1 - t`` white and the rest stretched to the range again (t drawn up to ``overexpose``, as the
    film's own range or ranks stretch an over-exposed film), and a washed-out film, the range
    compressed onto a black level drawn up to ``lift``; then gamma, contrast and brightness, blur
    and noise (each when asked for); clamped to [0, 1]."""
    n, dev = x.shape[0], x.device
    gamma = torch.exp(_uniform(n, -aug.gamma, aug.gamma, dev, generator)).view(n, 1, 1, 1)
    contrast = torch.exp(_uniform(n, -aug.contrast, aug.contrast, dev, generator)).view(n, 1, 1, 1)
    bright = _uniform(n, -aug.brightness, aug.brightness, dev, generator).view(n, 1, 1, 1)
    if aug.overexpose:
        white = 1 - _uniform(n, 0, aug.overexpose, dev, generator).view(n, 1, 1, 1)
        x = torch.minimum(x / white, torch.ones((), device=dev))
    if aug.lift:
        black = _uniform(n, 0, aug.lift, dev, generator).view(n, 1, 1, 1)
        x = black + (1 - black) * x
    x = x.clamp_(1e-6, 1).pow_(gamma)
    x = (x - 0.5) * contrast + 0.5 + bright
    if aug.blur:
        x = gaussian_blur(x, _uniform(n, 0, aug.blur, dev, generator), math.ceil(3 * aug.blur))
    if aug.noise:
        sd = _uniform(n, 0, aug.noise, dev, generator).view(n, 1, 1, 1)
        x = x + torch.randn(x.shape, device=dev, generator=generator) * sd
    return x.clamp_(0, 1)


def augment(batch_u8: torch.Tensor, size: int, aug: Augment, generator: torch.Generator) -> torch.Tensor:
    """Random affine + intensity augmentation of a uint8 batch, resized to ``size``; float in [0, 1]."""
    x = batch_u8.float().div_(255)
    theta = affine_theta(x.shape[0], *_geometry(x.shape[0], aug, x.device, generator))
    return _intensity(affine_sample(x, theta, size), aug, generator)


def augment_pair(batch_u8: torch.Tensor, size: int, aug: Augment, generator: torch.Generator) -> torch.Tensor:
    """Two views of each image of a uint8 batch, (2B, 1, size, size): the first as :func:`augment` draws
    it, the second (rows B..2B-1) the same geometry moved by up to :data:`PAIR_SHIFT_PX` model-input
    pixels and zoomed by up to :data:`PAIR_ZOOM`, with grey levels, blur and noise of its own: what a
    consistency term holds together (stability training, Zheng et al. 2016)."""
    x = batch_u8.float().div_(255)
    n, dev = x.shape[0], x.device
    rot, scale, tx, ty, flip = _geometry(n, aug, dev, generator)
    step = 2.0 * PAIR_SHIFT_PX / size  # one model-input pixel is 2 / size grid units
    moved = (rot, scale * torch.exp(_uniform(n, -PAIR_ZOOM, PAIR_ZOOM, dev, generator)),
             tx + _uniform(n, -step, step, dev, generator), ty + _uniform(n, -step, step, dev, generator), flip)
    views = [_intensity(affine_sample(x, affine_theta(n, *g), size), aug, generator)
             for g in ((rot, scale, tx, ty, flip), moved)]
    return torch.cat(views)


def tta_views(batch_u8: torch.Tensor, size: int, hflip: bool) -> list[torch.Tensor]:
    """Deterministic test-time views: identity, +-5 degrees, zoom in and out; mirrored if trained so."""
    n, dev = batch_u8.shape[0], batch_u8.device
    x = batch_u8.float().div_(255)
    zeros = torch.zeros(n, device=dev)
    views = []
    settings = [(0.0, 1.0), (5.0, 1.0), (-5.0, 1.0), (0.0, 1.08), (0.0, 0.93)]
    flips = (False, True) if hflip else (False,)
    for flip in flips:
        for deg, zoom in settings:
            theta = affine_theta(n, zeros + math.radians(deg), zeros + zoom, zeros, zeros,
                                 torch.full((n,), flip, device=dev))
            views.append(affine_sample(x, theta, size))
    return views
