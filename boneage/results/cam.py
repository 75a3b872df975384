"""Signed Grad-CAM: the maps, the layer they are taken at, their sanity check and the hand's share.

The model's output is one number, the estimated age, so the map keeps Grad-CAM's sign: with
channel weights w_k (the gradient of the output with respect to feature map A_k, averaged over the
map), the map is sum_k w_k A_k without the usual ReLU. Red regions raise the estimate, blue ones
lower it; with the ReLU, an image whose features all lower the estimate (the youngest children)
would get a blank map, indistinguishable from a broken one. Each map is divided by its largest
absolute value, so colours compare regions within one image.

The layer is the deepest stage output whose map has at least ``MIN_CAM_SIDE`` cells a side at the
model's input size (ResNet-18 at 96 px: layer2, 12x12; at 299 px: layer3, 19x19), not the last
one, whose 3x3 or 4x4 grid makes blocks. Models with a sex input are explained with each image's
own sex. The sanity check is that of Adebayo et al. (NeurIPS 2018): maps of the trained model
against those of a copy with re-initialised weights. Used by the gradcam stage and by predict.
"""

from __future__ import annotations

import copy

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn

from ..imaging.crop import Analysis
from ..learning.data import resize

MIN_CAM_SIDE = 12
SANITY_MAX_RHO = 0.5
SANITY_SEED = 0
BATCH = 32
DIVERGING = "RdBu_r"  # blue lowers the estimate, red raises it


def choose_layer(model: nn.Module, size: int) -> tuple[str, tuple[int, int]]:
    """(name, (h, w)) of the deepest candidate layer with at least ``MIN_CAM_SIDE`` cells a side
    at input ``size``; the shallowest candidate where none has."""
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[int, int]] = {}
    names = model.gradcam_layers()
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[-2:])))
             for n in names]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, size, size), torch.zeros(1))
    finally:
        for h in hooks:
            h.remove()
    for name in names:
        if min(shapes[name]) >= MIN_CAM_SIDE:
            return name, shapes[name]
    return names[-1], shapes[names[-1]]


def signed_cam(model: nn.Module, layer: str, x: torch.Tensor, male: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(signed Grad-CAM maps (B, h, w) at the layer's resolution, outputs (B,) in standard units)."""
    store = {}

    def hook(module, inputs, output):
        store["a"] = output
        return output.clone()  # later in-place ops (DenseNet's final ReLU) must not touch it

    handle = dict(model.named_modules())[layer].register_forward_hook(hook)
    try:
        with torch.enable_grad():
            out = model(x, male)
            grads = torch.autograd.grad(out.sum(), store["a"])[0]  # eval mode: images independent
    finally:
        handle.remove()
    a = store["a"].detach().float()
    cams = (grads.float().mean(dim=(2, 3), keepdim=True) * a).sum(dim=1)
    return cams.numpy(), out.detach().float().numpy()


def batched_maps(model, layer: str, images_u8: torch.Tensor, male: torch.Tensor, size: int):
    """:func:`signed_cam` over uint8 images in batches of ``BATCH``: yields (index of the batch's first
    image, model inputs (B, 1, size, size), raw maps, outputs in standard units, maps at ``size``)."""
    for s in range(0, len(images_u8), BATCH):
        x = resize(images_u8[s:s + BATCH], size)
        raw, out = signed_cam(model, layer, x, male[s:s + BATCH])
        yield s, x, raw, out, upsample(raw, size)


def upsample(cams: np.ndarray, size: int) -> np.ndarray:
    """Maps to ``size`` x ``size`` (bilinear), each divided by its largest absolute value."""
    up = F.interpolate(torch.from_numpy(cams)[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    peak = up.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    return (up / peak).numpy()


def randomised(model: nn.Module, seed: int = SANITY_SEED) -> nn.Module:
    """A copy of ``model`` with every layer re-initialised (the global random state is kept)."""
    copy_ = copy.deepcopy(model)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for module in copy_.modules():
            if module is not copy_ and hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return copy_.eval()


def rank_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of |a_i| and |b_i| per map (0 where either map is constant)."""
    out = []
    for x, y in zip(a, b):
        x, y = np.abs(x).ravel(), np.abs(y).ravel()
        out.append(0.0 if x.std() == 0 or y.std() == 0 else float(spearmanr(x, y).statistic))
    return np.array(out)


def sanity(trained: np.ndarray, random: np.ndarray) -> dict:
    """The sanity check's verdict from the maps (same images, same layer) of the trained model and
    of its randomised copy."""
    rho = rank_correlations(trained, random)
    mean = float(np.mean(rho)) if len(rho) else 0.0
    return {"spearman_per_image": [round(float(r), 4) for r in rho], "spearman_mean": round(mean, 4),
            "threshold": SANITY_MAX_RHO, "trustworthy": bool(mean <= SANITY_MAX_RHO), "seed": SANITY_SEED}


def hand_masks(grey_u8: np.ndarray) -> np.ndarray:
    """(N, S, S) bool: the hand in each model input, as the classical crop analysis finds it
    (all False where it finds none)."""
    out = np.zeros(grey_u8.shape, bool)
    for k, img in enumerate(grey_u8):
        found = Analysis(img).hand
        if found is not None:
            grown = found[1].astype(np.uint8)
            out[k] = cv2.resize(grown, img.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
    return out


def hand_shares(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(share of each map's absolute mass inside the hand, hand's share of the image); NaN where
    no hand was found."""
    mass = np.abs(maps)
    found = masks.any(axis=(1, 2))
    inside = (mass * masks).sum(axis=(1, 2)) / np.maximum(mass.sum(axis=(1, 2)), 1e-12)
    area = masks.mean(axis=(1, 2))
    return np.where(found, inside, np.nan), np.where(found, area, np.nan)


def overlay_rgb(grey: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """uint8 RGB of a grey image in [0, 1] under a signed map in [-1, 1], as the panels draw it."""
    from matplotlib import colormaps

    alpha = (np.clip(np.abs(cam), 0, 1) * 0.75)[..., None]
    colour = colormaps[DIVERGING]((cam + 1) / 2)[..., :3]
    return (255 * ((1 - alpha) * grey[..., None] + alpha * colour)).round().astype(np.uint8)

