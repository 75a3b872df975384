"""Training throughput per variant: the model-only ceiling against the real trainer, in one run.

For each variant of a config (the recipe's input size, batch size, EMA and compile settings), on
the current device (CUDA or CPU):

* model-only: forward + backward + optimiser step on tensors already in memory, with the trainer's
  own optimiser, loss and kernels (channels_last; bf16 autocast on CUDA): the ceiling;
* trainer: ``boneage.learning.trainer.Trainer.fit`` on a synthetic uint8 training set at the config's
  ``image_size``, held where the trainer holds it, end to end: augmentation, EMA, the validation
  pass (the recipe's val/train ratio) and the checkpoint writes of every epoch, as images trained
  per second of epoch wall time; the median over the epochs after the first (warm-up);
* the trainer's rate over its training steps alone (validation and checkpoints left out: a short
  epoch weighs them more than a real run's does), its ratio too, and the peak GPU memory.

Every model starts from random weights here (``pretrained: none``, whatever the config says): the
speed does not depend on them, and a GPU node without internet cannot fetch ImageNet's.

    .venv/bin/python bench/train_throughput.py --config configs/rsna-299.yaml           # on a GPU
    .venv/bin/python bench/train_throughput.py --config configs/rsna-cpu.yaml --n-images 512
    .venv/bin/python bench/train_throughput.py --variants resnet18 --n-images 64 --steps 3 --epochs 4  # smoke
    .venv/bin/python bench/train_throughput.py --config configs/rsna-gpu.yaml --set compile=true batch_size=256 lr=0.004
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from boneage.config import merged, model_list, variant_spec  # noqa: E402
from boneage.files import keep_freed_memory, usable_threads  # noqa: E402
from boneage.learning.batches import Data  # noqa: E402
from boneage.learning.inference import autocast, channels_last, resolve_device, synchronize, use_bf16  # noqa: E402
from boneage.learning.spec import TrainSpec  # noqa: E402
from boneage.learning.trainer import Trainer, loss_fn  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def load_config(paths: list[str]) -> dict:
    """config.yaml with the overlays applied in order, as ``snakemake --configfile`` merges them."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for path in paths:
        config = merged(config, yaml.safe_load(Path(path).read_text()) or {})
    return config


def model_only(name: str, spec: TrainSpec, device, steps: int) -> float:
    """Images/s of forward + backward + step on one batch already in memory."""
    trainer = Trainer(name, spec, Path(tempfile.gettempdir()), device, "bench")
    model = trainer.make_model()
    opt = trainer.make_optimizer(model)
    step_model = torch.compile(model) if spec.compile else model
    b, s = spec.batch_size, spec.input_size
    x = channels_last(torch.rand(b, 1, s, s, device=device))
    y = torch.rand(b, device=device) * 228
    male = (torch.rand(b, device=device) > 0.5).float()
    bf16 = use_bf16(device)

    def step():
        with autocast(device, bf16):
            z = step_model(x, male)
        loss = loss_fn(spec, z.float() * 40 + 120, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(max(3, steps // 4)):
        step()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return steps * b / (time.perf_counter() - t0)


def trainer_rate(name: str, spec: TrainSpec, device, n_images: int, n_val: int, epochs: int,
                 source_size: int) -> tuple[float, float]:
    """Images/s of the trainer, median over epochs 2..: (images trained / epoch wall time, validation
    and checkpoints included; images trained / time of the training steps alone). Short epochs
    weigh the per-epoch costs more than a real run's do; the second rate is free of them."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_images + n_val, 1, source_size, source_size), dtype=torch.uint8, generator=gen)
    boneage = torch.rand(n_images + n_val, generator=gen) * 228
    male = (torch.rand(n_images + n_val, generator=gen) > 0.5).float()
    # placed as train.run places it (see batches.place): on the GPU when there is one
    train = Data(images[:n_images].to(device), boneage[:n_images].to(device), male[:n_images].to(device),
                 list(range(n_images)))
    val = Data(images[n_images:].to(device), boneage[n_images:].to(device), male[n_images:].to(device),
               list(range(n_val)))
    spec = TrainSpec.from_dict({**asdict(spec), "epochs": epochs, "patience": 0})
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(name, spec, Path(tmp), device, "bench")
        history = trainer.fit(train, val)["history"]
    bs = min(spec.batch_size, n_images)
    trained = (n_images // bs) * bs
    return (statistics.median(trained / s for s in trainer.epoch_wall_s[1:]),
            statistics.median(row["images_per_s"] for row in history[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="*", default=[], help="overlays on config.yaml (the recipe)")
    parser.add_argument("--variants", default=None, help="comma list; default: the config's variants")
    parser.add_argument("--steps", type=int, default=30, help="timed steps of the model-only loop")
    parser.add_argument("--n-images", type=int, default=4096, help="synthetic training images for the trainer")
    parser.add_argument("--epochs", type=int, default=4, help="trainer epochs; the first is warm-up, the "
                        "median of the others is reported")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="training settings for every row, e.g. compile=true batch_size=256 lr=0.004")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=8, help="CPU threads, capped at the usable cores")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first is warm-up)")
    logging.basicConfig(level=logging.WARNING)
    device = resolve_device(args.device)
    torch.set_num_threads(usable_threads(args.threads))
    keep_freed_memory()  # as the train stage does: no page faults per batch on the CPU
    config = load_config(args.config)
    names = args.variants.split(",") if args.variants else model_list(config, "variants")
    split = config["split"]
    val_ratio = split["val_fraction"] / max(1e-9, 1 - split["val_fraction"] - split["test_fraction"])
    n_val = max(1, round(args.n_images * val_ratio))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {where}; torch {torch.__version__}; config {' + '.join(['config.yaml', *args.config])}; "
          f"{'bf16 autocast, ' if use_bf16(device) else 'fp32, '}channels_last; trainer on {args.n_images} "
          f"images at {config['image_size']} px with {n_val} validation images, median of epochs 2-{args.epochs}")
    print("| variant | input px | batch | EMA | compiled | model-only img/s | trainer img/s (epoch wall) | ratio "
          "| trainer img/s (steps alone) | ratio | peak GPU GB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    rows = []
    for name in names:
        # the starting weights do not change the speed; "none" needs no download (a GPU node offline)
        full = TrainSpec.from_dict({**variant_spec(config, name), **overrides, "pretrained": "none",
                                    "time_budget_minutes": 0})
        # a progressive-resizing recipe trains at two sizes: one row for each phase
        sizes = [full.low_res_size, full.input_size] if full.low_res_epochs else [full.input_size]
        rows += [(name, TrainSpec.from_dict({**asdict(full), "input_size": size, "low_res_size": 0,
                                             "low_res_epochs": 0})) for size in sizes]
    for name, spec in rows:
        if spec.compile:
            torch._dynamo.reset()  # every row compiles its own model from scratch
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        ceiling = model_only(name, spec, device, args.steps)
        if spec.compile:
            torch._dynamo.reset()
        rate, steps = trainer_rate(name, spec, device, args.n_images, n_val, args.epochs, config["image_size"])
        peak = f"{torch.cuda.max_memory_allocated(device) / 1e9:.1f}" if device.type == "cuda" else "-"
        print(f"| {name} | {spec.input_size} | {spec.batch_size} | {spec.ema_decay or 'off'} | "
              f"{'yes' if spec.compile else 'no'} | {ceiling:.1f} | {rate:.1f} | {rate / ceiling:.2f} | "
              f"{steps:.1f} | {steps / ceiling:.2f} | {peak} |", flush=True)


if __name__ == "__main__":
    main()
