"""Training that fits a walltime: ``train.time_budget_minutes`` sets the epoch count from measured speed.

Before training, a throwaway copy of the model takes two warm-up steps (compilation, cuDNN's
autotuning and lazy loading happen there) and then a few steps of the real batch size, augmentation
and EMA, timed one by one (their median: on an H200 the mean of eight steps after a single warm-up
step once came out 22 times the real step time); the second of two validation passes, one checkpoint
write and, with ``bn_recalibrate``, a share of the recalibration pass are timed too. The number of
epochs is then the most that fit into :data:`SAFETY` of the time left (the budget less what the job
has spent: loading and this probe; with ``compile`` also the compilation once more for the real
model), capped at the plan's ``epochs``, and at least one. The
whole schedule (warm-up, cosine to zero, EMA) is then that of a plan with those epochs, so it ends
inside the budget instead of being cut by a walltime: a run with a budget trains exactly as the
same plan with ``epochs`` set to the chosen count.

The choice is written to ``budget.json`` beside the model (with the plan's digest and the data's
hash): a training that is interrupted and run again keeps it, so it resumes the same schedule.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..files import read_json, write_json
from .batches import Batches, Data
from .inference import synchronize
from .spec import TrainSpec

log = logging.getLogger("boneage.train")

SAFETY = 0.9  # plan to end within 90 % of the time left: epochs vary by a few % in speed
WARMUP_STEPS = 2  # untimed: compilation, cuDNN's autotuning, CUDA's lazy loading
PROBE_STEPS = 8  # timed steps, one at a time (their median)


def measure(trainer, train: Data, val: Data) -> dict:
    """Seconds per training step, of the first step's one-time costs, of a validation pass, a
    checkpoint write and a BatchNorm recalibration pass, on a throwaway model."""
    from .trainer import recalibrate_bn

    device, spec = trainer.device, trainer.spec
    model, ema, opt, gen, (steps_per_epoch, bs, total, warmup) = trainer.components(train)
    steps, warm = min(PROBE_STEPS, steps_per_epoch), min(WARMUP_STEPS, steps_per_epoch)
    step_model = torch.compile(model) if spec.compile else model
    batches = Batches(train.images, device, bs, trainer.stream)
    model.train()
    t0 = time.perf_counter()
    trainer._train_epoch(step_model, model, ema, opt, gen, train, batches, 0, (warm, bs, total, warmup))
    synchronize(device)
    t1 = time.perf_counter()
    steps_s = []  # one at a time: the median is blind to a step that still pays a one-time cost
    for _ in range(steps):
        start = time.perf_counter()
        trainer._train_epoch(step_model, model, ema, opt, gen, train, batches, 0, (1, bs, total, warmup))
        synchronize(device)
        steps_s.append(time.perf_counter() - start)
    passes = []  # the first validation pass pays the evaluation path's one-time costs; the second is timed
    for _ in range(2):
        start = time.perf_counter()
        trainer._validate(model, ema, val)
        synchronize(device)
        passes.append(time.perf_counter() - start)
    t3 = time.perf_counter()
    probe = trainer.checkpoints.folder / ".budget_probe.pt"
    trainer.checkpoints.save(trainer.checkpoints.state(0, model, ema, opt, gen, {}, [], (0.0, 1.0)), probe.name)
    probe.unlink()
    t4 = time.perf_counter()
    recalibrate_s = 0.0
    if spec.bn_recalibrate:
        n = min(train.images.shape[0], steps * bs)
        share = Data(train.images[:n], train.boneage[:n], train.male[:n], train.ids[:n])
        recalibrate_bn(ema.module if ema is not None else model, share, spec.input_size, bs, device, trainer.bf16)
        synchronize(device)
        recalibrate_s = (time.perf_counter() - t4) * train.images.shape[0] / n
    del model, ema, opt, step_model, batches
    if device.type == "cuda":
        torch.cuda.empty_cache()
    step_s = statistics.median(steps_s)
    return {"step_s": step_s, "first_step_extra_s": max(0.0, (t1 - t0) - warm * step_s), "validation_s": passes[1],
            "checkpoint_s": t4 - t3, "recalibrate_s": recalibrate_s, "steps_per_epoch": steps_per_epoch}


def epochs_within(spec: TrainSpec, speed: dict, spent_s: float) -> dict:
    """The most epochs that end within :data:`SAFETY` of the budget left after ``spent_s``."""
    budget_s = spec.time_budget_minutes * 60
    saves = 2 if spec.keeps_best else 1  # last.pt every epoch, best.pt when it improved
    epoch_s = (speed["steps_per_epoch"] * speed["step_s"] + speed["validation_s"] + saves * speed["checkpoint_s"]
               + speed["recalibrate_s"])
    # compilation is paid again by the real model; cuDNN's autotuning and CUDA's lazy loading are not
    # (measured on an H200: the probe's first step 45 s, the real first epoch as fast as the others)
    again_s = speed["first_step_extra_s"] if spec.compile else 0.0
    left_s = SAFETY * budget_s - spent_s - again_s
    fit = math.floor(left_s / epoch_s) if epoch_s > 0 else spec.epochs
    epochs = max(1, min(spec.epochs, fit))
    if fit < 1:
        log.warning("time budget: %.2f min leave %.0f s for training, less than one epoch (%.0f s); "
                    "training 1 epoch, over the budget", spec.time_budget_minutes, max(0.0, left_s), epoch_s)
    return {**{k: round(v, 4) for k, v in speed.items()}, "budget_minutes": spec.time_budget_minutes,
            "spent_before_training_s": round(spent_s, 2), "epoch_s": round(epoch_s, 3), "max_epochs": spec.epochs,
            "epochs": epochs, "planned_training_s": round(epochs * epoch_s + again_s, 1)}


def fit_to_budget(spec: TrainSpec, out_dir: Path, data_hash: str, make_trainer, train: Data, val: Data,
                  started: float) -> tuple[TrainSpec, dict]:
    """The plan with its epochs set to fit ``spec.time_budget_minutes`` (the job started at
    ``started``, a ``time.perf_counter()``), and the measurements behind the choice. An earlier
    choice for the same plan and data (``budget.json``) is kept, so a resumed training continues
    the schedule it started."""
    file = out_dir / "budget.json"
    key = {"plan_digest": spec.digest(), "data_hash": data_hash}
    if file.is_file():
        earlier = read_json(file)
        if {k: earlier.get(k) for k in key} == key:
            log.info("time budget: keeping the earlier choice of %d epochs (%s)", earlier["epochs"], file)
            return replace(spec, epochs=int(earlier["epochs"])), earlier
    speed = measure(make_trainer(spec), train, val)
    choice = {**key, **epochs_within(spec, speed, time.perf_counter() - started)}
    write_json(file, choice)
    log.info("time budget %.2f min: %.3f s per step, %.1f s per epoch with validation and checkpoints; "
             "%d of at most %d epochs planned to take %.0f s after %.0f s of loading and measuring",
             spec.time_budget_minutes, choice["step_s"], choice["epoch_s"], choice["epochs"], spec.epochs,
             choice["planned_training_s"], choice["spent_before_training_s"])
    return replace(spec, epochs=choice["epochs"]), choice
