"""A variant's training plan: every setting that defines a trained model, as one validated object.

The plan of each variant is written to ``results/models/<variant>/spec.json`` by the ``plan`` rule
and read by the trainer, so what a model was trained with is a file beside it (as in nnU-Net).
The defaults here equal those of ``workflow/schemas/config.schema.yaml`` (a test holds them).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .data import Augment
from .lite import check_antialias

LOSSES = ("l1", "mse", "huber")
SELECT_EPOCHS = ("best", "last")
OPTIMIZERS = ("adam", "adamw")


@dataclass
class TrainSpec:
    """Everything that defines a trained variant. Any change gives a different model."""

    arch: str
    sex_input: bool = False
    head_hidden: int = 0
    dropout: float = 0.0
    antialias: bool = False  # EfficientNet-Lite: stride-2 convolutions as stride 1 + a blur pool
    pretrained: str = "none"
    epochs: int = 10
    batch_size: int = 16
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    loss: str = "l1"
    huber_delta_months: float = 6.0
    patience: int = 0
    input_size: int = 96
    low_res_size: int = 0  # progressive resizing: the first low_res_epochs train at this side
    low_res_epochs: int = 0
    freeze_blocks: int = 0  # the stem and the first N backbone blocks get no gradients
    cache_blocks: int = 0  # EfficientNet-Lite: the frozen stem and first N blocks computed once (frozen.py)
    cache_views: int = 4  # augmented views of each training film in that cache
    augment: dict = field(default_factory=dict)
    ema_decay: float = 0.0
    consistency: float = 0.0  # > 0: two views per film a step, their estimates' mean |difference| x this added
    bn_recalibrate: bool = False  # BatchNorm statistics recomputed on the un-augmented training set each epoch
    select_epoch: str = "best"  # the weights kept: best (lowest validation MAE) or last epoch
    grad_clip: float = 0.0
    compile: bool = False
    time_budget_minutes: float = 0.0  # > 0: epochs (then a maximum) set to fit this wall time (budget.py)
    seed: int = 42

    @classmethod
    def from_dict(cls, d: dict) -> "TrainSpec":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training setting(s) {sorted(unknown)}; known: {sorted(known)}")
        spec = cls(**d)
        if spec.loss not in LOSSES:
            raise ValueError(f"loss {spec.loss!r}: use one of {', '.join(LOSSES)}")
        if spec.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {spec.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        if spec.select_epoch not in SELECT_EPOCHS:
            raise ValueError(f"select_epoch {spec.select_epoch!r}: use one of {', '.join(SELECT_EPOCHS)}")
        if spec.select_epoch == "last" and spec.patience:
            raise ValueError("select_epoch last keeps the final epoch: early stopping (patience) does not go with it")
        Augment.from_dict(spec.augment)
        if (spec.low_res_size > 0) != (spec.low_res_epochs > 0):
            raise ValueError("low_res_size and low_res_epochs go together: set both, or both to 0")
        if spec.low_res_epochs >= spec.epochs:
            raise ValueError(f"low_res_epochs ({spec.low_res_epochs}) must be fewer than epochs ({spec.epochs}): "
                             "the last epochs train at input_size, the size the model is evaluated at")
        if spec.time_budget_minutes < 0:
            raise ValueError(f"time_budget_minutes {spec.time_budget_minutes}: use 0 (off) or a positive number")
        if spec.time_budget_minutes and (spec.cache_blocks or spec.low_res_epochs):
            raise ValueError("time_budget_minutes measures the speed of plain training steps: it does not go with "
                             "cache_blocks or low_res_epochs (set them to 0, or set epochs instead of a budget)")
        if spec.antialias:
            check_antialias(spec.arch)
        if spec.consistency < 0:
            raise ValueError(f"consistency {spec.consistency}: use 0 (off) or a positive weight")
        if spec.cache_blocks:
            clash = [name for name, on in (("bn_recalibrate", spec.bn_recalibrate), ("compile", spec.compile),
                                           ("low_res_epochs", spec.low_res_epochs),
                                           ("consistency", spec.consistency)) if on]
            if not spec.arch.startswith("efficientnet_lite"):
                raise ValueError(f"cache_blocks: {spec.arch} has no cached path; it is built for efficientnet_lite0|1|2")
            if clash:
                raise ValueError(f"cache_blocks does not go with {', '.join(clash)}: set them off (0/false)")
        return spec

    @property
    def keeps_best(self) -> bool:
        """Whether training writes ``best.pt``, the epoch of lowest validation MAE (``select_epoch: best``);
        with ``last`` the kept epoch's weights are ``last.pt``, written every epoch anyway."""
        return self.select_epoch == "best"

    @classmethod
    def read(cls, path: str | Path) -> "TrainSpec":
        """A plan from its ``spec.json``; the message names the file when it is not a valid plan."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def epoch_input_size(self, epoch: int) -> int:
        """Input side of training epoch ``epoch`` (0-based): low_res_size first, then input_size."""
        return self.low_res_size if epoch < self.low_res_epochs else self.input_size
