"""The training loop of one variant, selected by validation MAE.

Built for the GPU and correct on the CPU: the training set is one uint8 tensor on the device,
augmentation runs there (``data.py``), bf16 autocast and channels_last on CUDA, optional
``torch.compile``; the loop synchronises with the host once per epoch. After every epoch the
checkpoints are written (``checkpoint.py``), so an interrupted training continues where it stopped.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..files import progress
from .batches import Batches, Data
from .checkpoint import Checkpoints
from .data import Augment, augment, augment_pair, resize
from .frozen import CachedBatches, compute, predict_cached
from .inference import autocast, channels_last, predict, save_model, synchronize, use_bf16
from .models import build_model
from .spec import TrainSpec

log = logging.getLogger("boneage.train")


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


@torch.no_grad()
def recalibrate_bn(model: torch.nn.Module, data: Data, input_size: int, batch_size: int, device: torch.device,
                   bf16: bool) -> None:
    """BatchNorm statistics recomputed on the un-augmented training images ("precise BN").

    The running statistics that training leaves behind average the last few dozen augmented batches
    with momentum 0.1; on a small training set they lag and jitter, and the evaluated model moves by
    months from one epoch to the next while the weights hardly change. Here they are reset and
    averaged over one pass of the training images as evaluation sees them (no augmentation, at
    ``input_size``, in the training batches' size); the weights are not touched.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
    was_training = model.training
    model.train()
    n = data.images.shape[0]
    for start in range(0, max(1, n // batch_size) * batch_size, batch_size):  # whole batches, as in training
        xb = data.images[start:start + batch_size].to(device, non_blocking=True)
        with autocast(device, bf16):
            model(channels_last(resize(xb, input_size)), data.male[start:start + batch_size].to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


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
        self.threads = threads
        self.bf16 = use_bf16(device, bf16)
        self.stream = stream
        self.checkpoints = Checkpoints(out_dir / "checkpoints", variant, spec, data_hash, device)

    def make_model(self) -> torch.nn.Module:
        """The variant's network on the device, channels_last, its first blocks frozen as the spec says."""
        model = build_model(asdict(self.spec)).to(self.device, memory_format=torch.channels_last)
        model.freeze(max(self.spec.freeze_blocks, self.spec.cache_blocks))
        return model

    def make_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        spec = self.spec
        decay, no_decay = [], []
        for p in model.parameters():  # no weight decay on norms and biases; frozen ones stay out
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 else decay).append(p)
        groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        opt_cls = torch.optim.AdamW if spec.optimizer == "adamw" else torch.optim.Adam
        if spec.optimizer == "adam":
            groups[0]["weight_decay"] = spec.weight_decay  # Adam: L2 penalty in the gradient
        # fused: one kernel for all tensors, on the CPU too (ResNet-18 on 2 cores: 18 ms a step against 69 for
        # the per-tensor loop, torch's CPU default; bench/cpu_kernels.py)
        return opt_cls(groups, lr=spec.lr, fused=True)

    def _train_epoch(self, step_model, model, ema, opt, gen, train: Data, batches: Batches | CachedBatches,
                     epoch: int, schedule: tuple[int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass over the training set; (summed loss, summed absolute error), still on the device.
        With ``train.cache_blocks`` the batches are the frozen blocks' outputs, and ``step_model`` the rest."""
        spec, device = self.spec, self.device
        steps_per_epoch, bs, total_steps, warmup = schedule
        size = spec.epoch_input_size(epoch)
        perm = torch.randperm(train.images.shape[0], device=device, generator=gen)
        batches.epoch(perm)
        loss_sum = torch.zeros((), device=device)
        err_sum = torch.zeros((), device=device)
        # Steps within the epoch have their own bar: an epoch of 100,000 films takes an hour on a CPU.
        for i in progress(range(steps_per_epoch), desc=f"epoch {epoch + 1}", unit="step", leave=False):
            step = epoch * steps_per_epoch + i
            for g in opt.param_groups:
                g["lr"] = spec.lr * lr_factor(step, total_steps, warmup)
            idx = perm[i * bs:(i + 1) * bs]
            yb, mb = train.boneage[idx], train.male[idx]
            if isinstance(batches, CachedBatches):
                xb = batches(i * bs, (i + 1) * bs)
            elif spec.consistency:
                xb = channels_last(augment_pair(batches(i * bs, (i + 1) * bs, idx), size, self.augment, gen))
                mb = torch.cat([mb, mb])
            else:
                xb = channels_last(augment(batches(i * bs, (i + 1) * bs, idx), size, self.augment, gen))
            with autocast(device, self.bf16):
                z = step_model(xb, mb)
            pred = z.float() * self.target_std + self.target_mean
            if spec.consistency:  # both views to the label, and to each other (months)
                first, second = pred.chunk(2)
                loss = (loss_fn(spec, first, yb) + loss_fn(spec, second, yb)) / 2 \
                    + spec.consistency * (first - second).abs().mean()
                pred = first
            else:
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

    def _setup(self, train: Data):
        """Model, EMA, optimiser, random generator and step schedule, restored from the last
        checkpoint when there is one to continue; plus (start epoch, history, best)."""
        model, ema, opt, gen, schedule = self.components(train)
        progress_ = self.checkpoints.restore(model, ema, opt, gen) or (0, [], {"val_mae": float("inf"), "epoch": -1})
        return model, ema, opt, gen, schedule, progress_

    def components(self, train: Data):
        """A fresh model, EMA, optimiser, random generator and step schedule (steps per epoch, batch
        size, total steps, warm-up steps), seeded from the spec."""
        spec, device = self.spec, self.device
        seed_everything(spec.seed)
        self.target_mean = float(train.boneage.mean())
        self.target_std = float(train.boneage.std()) or 1.0
        self.augment = Augment.from_dict(spec.augment)
        model = self.make_model()
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
        return model, ema, opt, gen, schedule

    def _validate(self, model, ema, val: Data, frozen_val=None) -> float:
        eval_model = ema.module if ema is not None else model
        if frozen_val is not None:
            val_pred = predict_cached(eval_model, frozen_val, val.male, self.spec.cache_blocks, self.target_mean,
                                      self.target_std, self.device, self.bf16)
        else:
            val_pred = predict(eval_model, val.images, val.male, self.spec.input_size, self.target_mean,
                               self.target_std, self.device, bf16=self.bf16)
        return float(np.abs(val_pred - val.boneage.cpu().numpy()).mean())

    def _frozen(self, model, train: Data, val: Data):
        """The frozen blocks' outputs (``train.cache_blocks``): views of the training films, drawn with
        their own seeded generator so that a continued training recomputes the same ones, and the
        validation films as evaluated."""
        spec, n = self.spec, self.spec.cache_blocks
        views_gen = torch.Generator(device=self.device)
        views_gen.manual_seed(spec.seed + 1)
        folder = self.checkpoints.folder
        train_out = compute(model, train, n, spec.input_size, spec.cache_views, self.augment, views_gen, self.device,
                            self.bf16, folder / "frozen_train.npy")
        val_out = compute(model, val, n, spec.input_size, 1, None, None, self.device, self.bf16,
                          folder / "frozen_val.npy", dtype=np.float32)
        return train_out, val_out

    def fit(self, train: Data, val: Data) -> dict:
        spec = self.spec
        model, ema, opt, gen, schedule, (start_epoch, history, best) = self._setup(train)
        frozen = self._frozen(model, train, val) if spec.cache_blocks and start_epoch < spec.epochs else None
        try:
            return self._fit(model, ema, opt, gen, schedule, start_epoch, history, best, train, val, frozen)
        finally:
            for outputs in frozen or ():
                outputs.close()

    def _fit(self, model, ema, opt, gen, schedule, start_epoch, history, best, train, val, frozen) -> dict:
        spec = self.spec
        steps_per_epoch, bs = schedule[:2]
        if frozen:
            batches = CachedBatches(frozen[0], self.device, gen)
            step_model = lambda h, male: model.from_trunk(h, male, spec.cache_blocks)  # noqa: E731
        else:
            batches = Batches(train.images, self.device, bs, self.stream)
            step_model = torch.compile(model) if spec.compile else model
        patience_left = spec.patience
        self.epoch_wall_s = []
        bar = progress(range(start_epoch, spec.epochs), total=spec.epochs - start_epoch,
                       desc=f"train {self.variant}", unit="epoch")
        for epoch in bar:
            model.train()
            t0 = time.perf_counter()
            loss_sum, err_sum = self._train_epoch(step_model, model, ema, opt, gen, train, batches, epoch, schedule)
            synchronize(self.device)
            train_s = time.perf_counter() - t0
            if spec.bn_recalibrate:
                recalibrate_bn(ema.module if ema is not None else model, train, spec.input_size, bs, self.device,
                               self.bf16)
            val_mae = self._validate(model, ema, val, frozen[1] if frozen else None)
            row = {"epoch": epoch + 1, "input_px": spec.epoch_input_size(epoch),
                   "train_loss": float(loss_sum) / steps_per_epoch,
                   "train_mae": float(err_sum) / (steps_per_epoch * bs), "val_mae": val_mae,
                   "lr": opt.param_groups[0]["lr"], "images_per_s": steps_per_epoch * bs / train_s,
                   "epoch_s": time.perf_counter() - t0}
            history.append(row)
            improved = val_mae < best["val_mae"]
            kept = improved or not spec.keeps_best  # with best.pt (below), the epoch the model keeps
            if kept:
                best = {"val_mae": val_mae, "epoch": epoch + 1}
            patience_left = spec.patience if improved else patience_left - 1
            done = epoch + 1 == spec.epochs or (spec.patience > 0 and patience_left <= 0)
            state = self.checkpoints.state(epoch + 1, model, ema, opt, gen, best, history,
                                           (self.target_mean, self.target_std), complete=done)
            if kept and spec.keeps_best:  # else last.pt is the kept epoch's
                self.checkpoints.save(state, "best.pt")
            self.checkpoints.save(state, "last.pt")
            self.epoch_wall_s.append(time.perf_counter() - t0)  # training, validation and checkpoints
            self._report(bar, row, best, kept)
            if done and epoch + 1 < spec.epochs:
                log.info("early stop: no improvement for %d epochs", spec.patience)
                break
        return {"history": history, "best": best}

    def _report(self, bar, row: dict, best: dict, improved: bool) -> None:
        log.info("epoch %d/%d loss %.3f train MAE %.2f val MAE %.2f lr %.2e %.0f img/s%s",
                 row["epoch"], self.spec.epochs, row["train_loss"], row["train_mae"], row["val_mae"], row["lr"],
                 row["images_per_s"], " *" if improved else "")
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(val_mae=f"{row['val_mae']:.2f}", best=f"{best['val_mae']:.2f}")

    def export(self, path: Path) -> None:
        """Write ``model.pt``: the kept epoch's weights (EMA weights when EMA is on)."""
        save_model(path, self.variant, self.checkpoints.load(self.checkpoints.kept()))
