"""Training checkpoints: ``checkpoints/last.pt`` and, when the best epoch is kept (``select_epoch:
best``), ``best.pt`` of one variant, written atomically.

A checkpoint holds the weights, the optimiser, the EMA, the random-number state and the history, so
that training interrupted at any point (even ``kill -9``) continues from the last finished epoch as
if it had not stopped. One of another variant is refused; one from other settings or data is set
aside (``last.stale.pt``) and training starts afresh.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from pathlib import Path

import torch

from .spec import TrainSpec
from .torchfile import load_torch, save_torch

log = logging.getLogger("boneage.train")

CHECKPOINT_FORMAT = "boneage-checkpoint-v1"


class CheckpointError(RuntimeError):
    pass


class Checkpoints:
    """The checkpoint folder of one variant trained with ``spec`` on the data of ``data_hash``."""

    def __init__(self, folder: Path, variant: str, spec: TrainSpec, data_hash: str, device: torch.device):
        self.folder, self.variant, self.spec, self.data_hash, self.device = folder, variant, spec, data_hash, device
        folder.mkdir(parents=True, exist_ok=True)

    def state(self, epoch, model, ema, opt, gen, best, history, target, complete=False) -> dict:
        """Everything needed to continue after ``epoch`` epochs; ``target``: (mean, std) in months."""
        return {
            "format": CHECKPOINT_FORMAT,
            "variant": self.variant,
            "arch": self.spec.arch,
            "spec": asdict(self.spec),
            "spec_digest": self.spec.digest(),
            "data_hash": self.data_hash,
            "epoch": epoch,
            "model": model.state_dict(),
            "ema": ema.module.state_dict() if ema is not None else None,
            "ema_n_averaged": ema.n_averaged if ema is not None else 0,
            "optimizer": opt.state_dict(),
            "device_type": self.device.type,
            "generator": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "best": best,
            "history": history,
            "target": {"mean": target[0], "std": target[1]},
            "complete": complete,
        }

    def save(self, state: dict, name: str) -> None:
        save_torch(self.folder / name, state, digest=True)

    def kept(self) -> str:
        """The checkpoint of the epoch the model keeps: ``best.pt``, or ``last.pt`` with ``select_epoch: last``
        (written every epoch; a second copy of 134 MB for ResNet-18 would cost a tenth of the demo's training)."""
        return "best.pt" if self.spec.keeps_best else "last.pt"

    def load(self, name: str) -> dict:
        return load_torch(self.folder / name)

    def resumable(self) -> dict | None:
        """The last checkpoint if training can continue from it; refuse another variant's."""
        path = self.folder / "last.pt"
        if not path.exists():
            return None
        try:
            state = self.load("last.pt")
        except Exception as exc:
            log.warning("checkpoint %s is unreadable (%s); starting afresh", path, exc)
            return None
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path} is not a boneage training checkpoint; remove it")
        if state.get("variant") != self.variant or state.get("arch") != self.spec.arch:
            raise CheckpointError(
                f"checkpoint {path} belongs to variant '{state.get('variant')}' (arch "
                f"{state.get('arch')}), not '{self.variant}' (arch {self.spec.arch}). Remove "
                f"{self.folder} or move the checkpoint to its own variant's folder.")
        why = None
        if state.get("complete"):
            why = "it is from a finished training"
        elif state.get("spec_digest") != self.spec.digest():
            why = "the variant's settings changed"
        elif state.get("data_hash") != self.data_hash:
            why = "the training data or split changed"
        if why:
            stale = path.with_suffix(".stale.pt")
            os.replace(path, stale)
            log.info("not resuming from %s: %s (kept as %s); starting afresh", path, why, stale.name)
            return None
        return state

    def restore(self, model, ema, opt, gen) -> tuple[int, list, dict] | None:
        """Load the last checkpoint into the live objects; (epoch, history, best) or None."""
        state = self.resumable()
        if state is None:
            return None
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if ema is not None and state["ema"] is not None:
            ema.module.load_state_dict(state["ema"])
            ema.n_averaged = int(state["ema_n_averaged"])
        saved_on = state.get("device_type", "cpu")
        if saved_on == self.device.type:
            gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            if state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        else:  # a CUDA generator state cannot be loaded into a CPU generator, nor the reverse
            gen.manual_seed(self.spec.seed + state["epoch"])
            log.warning("checkpoint was written on %s, resuming on %s: weights, optimiser and EMA are "
                        "restored, the augmentation and batch-order random streams are re-seeded from "
                        "seed + epoch, so the result will not equal an uninterrupted run bit for bit",
                        saved_on, self.device.type)
        log.info("resuming %s from epoch %d (best val MAE %.2f at epoch %d)",
                 self.variant, state["epoch"], state["best"]["val_mae"], state["best"]["epoch"])
        return state["epoch"], state["history"], state["best"]
