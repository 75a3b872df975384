"""Stage 4, train: one model variant on the train split, selected by validation MAE.

Built for the GPU and correct on the CPU: the training set is one uint8 tensor on the device,
augmentation runs there (``data.py``), bf16 autocast and channels_last on CUDA, optional
``torch.compile``; the loop synchronises with the host once per epoch.

Checkpoints ``checkpoints/last.pt`` and ``checkpoints/best.pt`` are written atomically after every
epoch. When the rule runs again after an interruption (even ``kill -9``), training continues from
the last finished epoch with the same optimiser, schedule, EMA and random-number state. A
checkpoint of another variant is refused; one from different settings is set aside and training
starts afresh.

Outputs: ``model.pt`` (best weights + spec + target statistics), ``history.csv`` (per epoch:
loss, train and validation MAE, learning rate, images/s), ``train_summary.json``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .data import Augment, augment, load_images
from .files import atomic_path, progress, setup_logging, sha256_file, usable_threads, write_json, write_table
from .inference import MODEL_FORMAT, autocast, channels_last, predict, resolve_device, use_bf16
from .models import build_model

log = logging.getLogger("boneage.train")

CHECKPOINT_FORMAT = "boneage-checkpoint-v1"


class CheckpointError(RuntimeError):
    pass


@dataclass
class TrainSpec:
    """Everything that defines a trained variant. Any change gives a different model."""

    arch: str
    sex_input: bool = False
    head_hidden: int = 0
    dropout: float = 0.0
    pretrained: str = "none"
    epochs: int = 30
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    loss: str = "l1"
    huber_delta_months: float = 6.0
    patience: int = 0
    input_size: int = 256
    low_res_size: int = 0  # progressive resizing: the first low_res_epochs train at this side
    low_res_epochs: int = 0
    augment: dict = field(default_factory=dict)
    ema_decay: float = 0.0
    grad_clip: float = 0.0
    compile: bool = False
    seed: int = 42

    @classmethod
    def from_dict(cls, d: dict) -> "TrainSpec":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training setting(s) {sorted(unknown)}; known: {sorted(known)}")
        spec = cls(**d)
        if spec.loss not in ("l1", "mse", "huber"):
            raise ValueError(f"loss {spec.loss!r}: use l1, mse or huber")
        if spec.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer {spec.optimizer!r}: use adam or adamw")
        Augment.from_dict(spec.augment)
        if (spec.low_res_size > 0) != (spec.low_res_epochs > 0):
            raise ValueError("low_res_size and low_res_epochs go together: set both, or both to 0")
        if spec.low_res_epochs >= spec.epochs:
            raise ValueError(f"low_res_epochs ({spec.low_res_epochs}) must be fewer than epochs ({spec.epochs}): "
                             "the last epochs train at input_size, the size the model is evaluated at")
        return spec

    def epoch_input_size(self, epoch: int) -> int:
        """Input side of training epoch ``epoch`` (0-based): low_res_size first, then input_size."""
        return self.low_res_size if epoch < self.low_res_epochs else self.input_size

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def loss_fn(spec: TrainSpec, pred_months: torch.Tensor, true_months: torch.Tensor) -> torch.Tensor:
    if spec.loss == "l1":
        return F.l1_loss(pred_months, true_months)
    if spec.loss == "mse":
        return F.mse_loss(pred_months, true_months)
    return F.huber_loss(pred_months, true_months, delta=spec.huber_delta_months)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1, then cosine to 0 at ``total`` steps."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress_ = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress_)))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


class EMA:
    """Exponential moving average of a model's parameters and buffers.

    The step count is a Python int and the update one ``_foreach_lerp_``: no host-device
    synchronisation per step (``torch.optim.swa_utils.AveragedModel`` tests its on-device counter
    twice per update).
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.n_averaged = 0

    @staticmethod
    def _tensors(model: torch.nn.Module) -> list[torch.Tensor]:
        return [t.detach() for t in (*model.parameters(), *model.buffers())]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        own, new = self._tensors(self.module), self._tensors(model)
        if self.n_averaged == 0:
            torch._foreach_copy_(own, new)
        else:
            floats = [(a, b) for a, b in zip(own, new) if a.is_floating_point()]
            torch._foreach_lerp_([a for a, _ in floats], [b for _, b in floats], 1.0 - self.decay)
            for a, b in zip(own, new):
                if not a.is_floating_point():  # BatchNorm's num_batches_tracked
                    a.copy_(b)
        self.n_averaged += 1


class Trainer:
    def __init__(self, variant: str, spec: TrainSpec, out_dir: Path, device: torch.device,
                 data_hash: str, threads: int = 1, bf16: bool | None = None, stream: bool | None = None):
        """``bf16`` (default: on CUDA only) and ``stream`` (default: when the images stayed on the host)
        force those code paths on any device, so that the tests run them where there is no GPU."""
        self.variant, self.spec, self.out_dir, self.device = variant, spec, out_dir, device
        self.data_hash = data_hash
        self.threads = threads
        self.bf16 = use_bf16(device, bf16)
        self.stream = stream
        self.ckpt_dir = out_dir / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)

    # -- checkpoints ----------------------------------------------------------------------------
    def _state(self, epoch, model, ema, opt, gen, best, history, complete=False) -> dict:
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
            "target": {"mean": self.target_mean, "std": self.target_std},
            "complete": complete,
        }

    def save(self, state: dict, name: str) -> None:
        with atomic_path(self.ckpt_dir / name) as tmp:
            torch.save(state, tmp)

    def resumable(self) -> dict | None:
        """The last checkpoint if training can continue from it; refuse another variant's."""
        path = self.ckpt_dir / "last.pt"
        if not path.exists():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            log.warning("checkpoint %s is unreadable (%s); starting afresh", path, exc)
            return None
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path} is not a boneage training checkpoint; remove it")
        if state.get("variant") != self.variant or state.get("arch") != self.spec.arch:
            raise CheckpointError(
                f"checkpoint {path} belongs to variant '{state.get('variant')}' (arch "
                f"{state.get('arch')}), not '{self.variant}' (arch {self.spec.arch}). Remove "
                f"{self.ckpt_dir} or move the checkpoint to its own variant's folder.")
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

    # -- the loop -------------------------------------------------------------------------------
    def make_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        spec = self.spec
        decay, no_decay = [], []
        for p in model.parameters():  # no weight decay on norms and biases
            (no_decay if p.ndim <= 1 else decay).append(p)
        groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        opt_cls = torch.optim.AdamW if spec.optimizer == "adamw" else torch.optim.Adam
        if spec.optimizer == "adam":
            groups[0]["weight_decay"] = spec.weight_decay  # Adam: L2 penalty in the gradient
        return opt_cls(groups, lr=spec.lr, **({"fused": True} if self.device.type == "cuda" else {}))

    def _resume(self, model, ema, opt, gen) -> tuple[int, list, dict] | None:
        """Restore the last checkpoint into the live objects; (epoch, history, best) or None."""
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

    def _train_epoch(self, step_model, model, ema, opt, gen, train: Data, batches: Batches, epoch: int,
                     schedule: tuple[int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass over the training set; (summed loss, summed absolute error), still on the device."""
        spec, device = self.spec, self.device
        steps_per_epoch, bs, total_steps, warmup = schedule
        aug = Augment.from_dict(spec.augment)
        size = spec.epoch_input_size(epoch)
        perm = torch.randperm(train.images.shape[0], device=device, generator=gen)
        batches.epoch(perm)
        loss_sum = torch.zeros((), device=device)
        err_sum = torch.zeros((), device=device)
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            for g in opt.param_groups:
                g["lr"] = spec.lr * lr_factor(step, total_steps, warmup)
            idx = perm[i * bs:(i + 1) * bs]
            xb = channels_last(augment(batches(i * bs, (i + 1) * bs, idx), size, aug, gen))
            yb, mb = train.boneage[idx], train.male[idx]
            with autocast(device, self.bf16):
                z = step_model(xb, mb)
            pred = z.float() * self.target_std + self.target_mean
            loss = loss_fn(spec, pred, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if spec.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
            opt.step()
            if ema is not None:
                ema.update(model)
            loss_sum += loss.detach()
            err_sum += (pred.detach() - yb).abs().sum()
        return loss_sum, err_sum

    def fit(self, train: Data, val: Data) -> dict:
        spec, device = self.spec, self.device
        seed_everything(spec.seed)
        self.target_mean = float(train.boneage.mean())
        self.target_std = float(train.boneage.std()) or 1.0

        model = build_model(asdict(spec)).to(device, memory_format=torch.channels_last)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        opt = self.make_optimizer(model)
        ema = EMA(model, spec.ema_decay) if spec.ema_decay > 0 else None
        gen = torch.Generator(device=device)
        gen.manual_seed(spec.seed)

        n = train.images.shape[0]
        bs = min(spec.batch_size, n)
        steps_per_epoch = max(1, n // bs)
        schedule = (steps_per_epoch, bs, spec.epochs * steps_per_epoch,
                    int(round(spec.warmup_epochs * steps_per_epoch)))
        start_epoch, history = 0, []
        best = {"val_mae": float("inf"), "epoch": -1}
        resumed = self._resume(model, ema, opt, gen)
        if resumed is not None:
            start_epoch, history, best = resumed

        step_model = torch.compile(model) if spec.compile else model
        batches = Batches(train.images, device, bs, self.stream)
        patience_left = spec.patience
        self.epoch_wall_s = []
        bar = progress(range(start_epoch, spec.epochs), total=spec.epochs - start_epoch,
                       desc=f"train {self.variant}", unit="epoch")
        for epoch in bar:
            model.train()
            t0 = time.perf_counter()
            loss_sum, err_sum = self._train_epoch(step_model, model, ema, opt, gen, train, batches, epoch,
                                                  schedule)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_s = time.perf_counter() - t0
            eval_model = ema.module if ema is not None else model
            val_pred = predict(eval_model, val.images, val.male, spec.input_size, self.target_mean,
                               self.target_std, device, bf16=self.bf16)
            val_mae = float(np.abs(val_pred - val.boneage.cpu().numpy()).mean())
            row = {
                "epoch": epoch + 1,
                "input_px": spec.epoch_input_size(epoch),
                "train_loss": float(loss_sum) / steps_per_epoch,
                "train_mae": float(err_sum) / (steps_per_epoch * bs),
                "val_mae": val_mae,
                "lr": opt.param_groups[0]["lr"],
                "images_per_s": steps_per_epoch * bs / train_s,
                "epoch_s": time.perf_counter() - t0,
            }
            history.append(row)
            improved = val_mae < best["val_mae"]
            if improved:
                best = {"val_mae": val_mae, "epoch": epoch + 1}
                patience_left = spec.patience
            else:
                patience_left -= 1
            done = epoch + 1 == spec.epochs or (spec.patience > 0 and patience_left <= 0)
            state = self._state(epoch + 1, model, ema, opt, gen, best, history, complete=done)
            if improved:
                self.save(state, "best.pt")
            self.save(state, "last.pt")
            self.epoch_wall_s.append(time.perf_counter() - t0)  # training, validation and checkpoints
            log.info("epoch %d/%d loss %.3f train MAE %.2f val MAE %.2f lr %.2e %.0f img/s%s",
                     epoch + 1, spec.epochs, row["train_loss"], row["train_mae"], val_mae, row["lr"],
                     row["images_per_s"], " *" if improved else "")
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(val_mae=f"{val_mae:.2f}", best=f"{best['val_mae']:.2f}")
            if done and epoch + 1 < spec.epochs:
                log.info("early stop: no improvement for %d epochs", spec.patience)
                break
        return {"history": history, "best": best}

    def export(self, path: Path) -> None:
        """Write the best weights (EMA weights when EMA is on) with what is needed to use them."""
        best = torch.load(self.ckpt_dir / "best.pt", map_location="cpu", weights_only=True)
        weights = best["ema"] if best["ema"] is not None else best["model"]
        blob = {
            "format": MODEL_FORMAT,
            "variant": self.variant,
            "spec": best["spec"],
            "spec_digest": best["spec_digest"],
            "data_hash": best["data_hash"],
            "epoch": best["epoch"],
            "best_val_mae": best["best"]["val_mae"],
            "target_mean": best["target"]["mean"],
            "target_std": best["target"]["std"],
            "model": weights,
        }
        with atomic_path(path) as tmp:
            torch.save(blob, tmp)


def data_hash(index_path: Path, split_path: Path) -> str:
    return hashlib.sha256((sha256_file(index_path) + sha256_file(split_path)).encode()).hexdigest()[:16]


def run(variant: str, spec: TrainSpec, index_path: Path, split_path: Path, out_dir: Path,
        device_name: str = "auto", threads: int = 1) -> dict:
    device = resolve_device(device_name)
    torch.set_num_threads(usable_threads(threads))
    index = pd.read_parquet(index_path)
    split = pd.read_csv(split_path, dtype={"id": str})
    root = index_path.parent
    t0 = time.perf_counter()
    train = place(load_subset(index, split, "train", root, threads), device)
    val = place(load_subset(index, split, "val", root, threads), device)
    load_s = time.perf_counter() - t0
    log.info("variant %s on %s: %d train, %d val images of %s px; spec %s", variant, device,
             len(train.ids), len(val.ids), tuple(train.images.shape[-2:]), asdict(spec))
    trainer = Trainer(variant, spec, out_dir, device, data_hash(index_path, split_path), threads)
    t1 = time.perf_counter()
    result = trainer.fit(train, val)
    fit_s = time.perf_counter() - t1
    trainer.export(out_dir / "model.pt")
    write_table(pd.DataFrame(result["history"]), out_dir / "history.csv")
    hist = result["history"]
    summary = {
        "variant": variant,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "epochs_run": len(hist),
        "best_epoch": result["best"]["epoch"],
        "best_val_mae": result["best"]["val_mae"],
        "train_images": len(train.ids),
        "val_images": len(val.ids),
        "load_s": round(load_s, 2),
        "fit_s_this_run": round(fit_s, 2),
        "train_s_total": round(sum(r["epoch_s"] for r in hist), 2),
        "images_per_s_median": float(np.median([r["images_per_s"] for r in hist])) if hist else None,
        "peak_gpu_mem_gb": round(torch.cuda.max_memory_allocated(device) / 1e9, 3) if device.type == "cuda" else None,
        "spec": asdict(spec),
        "torch": torch.__version__,
    }
    write_json(out_dir / "train_summary.json", summary)
    log.info("done: best val MAE %.2f months at epoch %d", summary["best_val_mae"], summary["best_epoch"])
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True, help="variant name (config key under models)")
    parser.add_argument("--spec", required=True, help="variant settings as JSON, or @file.json")
    parser.add_argument("--index", required=True, help="index.parquet from preprocess")
    parser.add_argument("--split", required=True, help="split.csv from split")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    setup_logging()
    text = Path(args.spec[1:]).read_text() if args.spec.startswith("@") else args.spec
    try:
        spec = TrainSpec.from_dict(json.loads(text))
        run(args.variant, spec, Path(args.index), Path(args.split), Path(args.out_dir), args.device, args.threads)
    except (CheckpointError, ValueError, RuntimeError, FileNotFoundError) as exc:
        log.error("%s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
