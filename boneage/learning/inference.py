"""The model file ``model.pt`` (written and read here only) and predicting bone age in months.

``model.pt`` holds the selected weights (the EMA's when EMA is on), the training spec, the target
mean and standard deviation and the data hash; nothing else writes or parses it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..files import TornFile
from .data import resize, tta_views
from .models import BoneAgeNet, build_model
from .torchfile import load_torch, save_torch

MODEL_FORMAT = "boneage-model-v1"


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU. ``cuda`` without a GPU is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was asked for, but torch sees no CUDA GPU; use device=auto or cpu")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU. Timings end here."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def use_bf16(device: torch.device, force: bool | None = None) -> bool:
    """bf16 autocast by default on CUDA only (on most CPUs bf16 is slower than fp32).

    ``force`` turns it on or off on any device: the tests run the CUDA code path on the CPU with it.
    """
    return device.type == "cuda" if force is None else force


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on ``device`` when ``enabled`` (see :func:`use_bf16`)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """Images in channels_last layout, as the model's weights are kept (see ``train.py``).

    Faster on the GPU and on the CPU alike: measured model-only on 2 CPU cores, EfficientNet-Lite0
    trains 1.3-1.4x faster and ResNet-18 1.1x (docs/benchmarks.md).
    """
    return x.contiguous(memory_format=torch.channels_last)


def save_model(path: str | Path, variant: str, checkpoint: dict) -> None:
    """Write ``model.pt`` from the training checkpoint of the selected epoch (``checkpoint/best.pt``)."""
    blob = {
        "format": MODEL_FORMAT,
        "variant": variant,
        "spec": checkpoint["spec"],
        "spec_digest": checkpoint["spec_digest"],
        "data_hash": checkpoint["data_hash"],
        "epoch": checkpoint["epoch"],
        "best_val_mae": checkpoint["best"]["val_mae"],
        "target_mean": checkpoint["target"]["mean"],
        "target_std": checkpoint["target"]["std"],
        "model": checkpoint["ema"] if checkpoint["ema"] is not None else checkpoint["model"],
    }
    save_torch(path, blob, digest=True)


def _read(path: str | Path, data: bytes | None = None) -> dict:
    """The model file at ``path`` (or its bytes ``data``, already read from there)."""
    try:
        blob = load_torch(path, data)
    except TornFile as exc:
        raise ValueError(f"{exc}: as a model file it is torn, damaged or not a model; write it again "
                         "(results/models/...: snakemake --forcerun train_variant; a bundle: copy it again or "
                         "snakemake --forcerun bundles)") from exc
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not a boneage model file (format "
                         f"{blob.get('format') if isinstance(blob, dict) else type(blob).__name__!r})")
    return blob


def model_meta(path: str | Path) -> dict:
    """What ``model.pt`` says of its model (variant, spec, target statistics, ...), without weights."""
    return {k: v for k, v in _read(path).items() if k != "model"}


def load_model(path: str | Path, device: torch.device | str = "cpu", data: bytes | None = None
               ) -> tuple[BoneAgeNet, dict]:
    """A trained model from ``model.pt`` (or its bytes ``data``) and its metadata (spec, target mean/std, ...)."""
    blob = _read(path, data)
    spec = dict(blob["spec"], pretrained="none")  # the weights below replace any pretrained ones
    model = build_model(spec)
    model.load_state_dict(blob["model"])
    model.to(device, memory_format=torch.channels_last).eval()
    meta = {k: v for k, v in blob.items() if k != "model"}
    return model, meta


def cpu_batch(input_size: int) -> int:
    """Images per inference batch on the CPU: as many as hold the activations of 16 at 144 px, 16 to 128."""
    return max(16, min(128, 16 * 144 * 144 // (input_size * input_size)))


@torch.no_grad()
def predict(model: BoneAgeNet, images_u8: torch.Tensor, male: torch.Tensor, input_size: int,
            target_mean: float, target_std: float, device: torch.device, batch_size: int | None = None,
            tta: bool = False, hflip: bool = False, bf16: bool | None = None) -> np.ndarray:
    """Predicted bone age in months for uint8 images (N, K, S, S) and sex (N,): K = 1, or K box
    views of each film (``imaging.radiograph.view_tensor``; config ``evaluate.box_shift``), each a
    model input of its own, the estimate then the mean over them (and over the TTA views).

    ``batch_size`` defaults to 128 on a GPU and on the CPU to the batch whose activations are those
    of 16 images at 144 px (16 at 144 px and above, 81 at 64 px): a larger batch's activations pass
    the mmap threshold of ``files.keep_freed_memory`` and are mapped and unmapped on every layer
    (EfficientNet-Lite0 at 144 px on 2 cores, 1,892 images: 3.8 s at 16, 3.9-4.2 s at 32, 8.5-10.0 s
    at 128), a smaller one leaves the cores idle between small layers (ResNet-18 at 64 px on 2 cores:
    310 images/s at 81 against 239 at 16; bench/cpu_kernels.py).
    """
    if batch_size is None:
        batch_size = 128 if device.type == "cuda" else cpu_batch(input_size)
    model.eval()
    bf16 = use_bf16(device, bf16)
    out = []
    for start in range(0, images_u8.shape[0], batch_size):
        xb = images_u8[start:start + batch_size].to(device, non_blocking=True)
        mb = male[start:start + batch_size].to(device, non_blocking=True).float()
        views = tta_views(xb, input_size, hflip) if tta else [resize(xb, input_size)]
        preds = []
        for view in views:
            for box in range(view.shape[1]):
                with autocast(device, bf16):
                    preds.append(model(channels_last(view[:, box:box + 1]), mb).float())
        out.append(torch.stack(preds).mean(0))
    z = torch.cat(out).cpu().numpy() if out else np.zeros(0, np.float32)
    return z.astype(np.float64) * target_std + target_mean
