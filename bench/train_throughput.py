"""Training throughput per variant: the model-only ceiling against the real trainer.

For each variant and input size, on the current device:

* model-only: forward + backward + optimizer step on random tensors already on the device, with
  the trainer's settings (bf16 autocast and channels_last on CUDA), i.e. the ceiling;
* trainer: ``boneage.train.Trainer.fit`` on a synthetic uint8 training set held on the device,
  augmentation included (the images/s it logs per epoch, first epoch excluded as warm-up);
* their ratio, the peak GPU memory, and the wall time of a full RSNA-size training estimated from
  the trainer's throughput (8,828 training images = 70 % of 12,611, ``--full-epochs`` epochs).

    .venv/bin/python bench/train_throughput.py                       # GPU: all variants, 256 and 299 px
    .venv/bin/python bench/train_throughput.py --sizes 64 --n-images 64 --batch-size 16 --steps 3  # CPU smoke
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from boneage.config import variant_spec  # noqa: E402
from boneage.inference import autocast, resolve_device  # noqa: E402
from boneage.models import build_model  # noqa: E402
from boneage.train import Data, Trainer, TrainSpec, loss_fn  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RSNA_TRAIN_IMAGES = 8828


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_only(spec: TrainSpec, device, steps: int) -> float:
    model = build_model(asdict(spec)).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if device.type == "cuda" else {}))
    step_model = torch.compile(model) if spec.compile else model
    b, s = spec.batch_size, spec.input_size
    x = torch.rand(b, 1, s, s, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.rand(b, device=device) * 200
    male = (torch.rand(b, device=device) > 0.5).float()

    def step():
        with autocast(device):
            z = step_model(x, male)
        loss = loss_fn(spec, z.float() * 40 + 120, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(max(3, steps // 4)):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * b / (time.perf_counter() - t0)


def trainer(name: str, spec: TrainSpec, device, n_images: int, epochs: int, source_size: int) -> float:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_images, 1, source_size, source_size), dtype=torch.uint8, generator=gen)
    boneage = torch.rand(n_images, generator=gen) * 228
    male = (torch.rand(n_images, generator=gen) > 0.5).float()
    train = Data(images.to(device), boneage.to(device), male.to(device), list(range(n_images)))
    nv = min(256, n_images)
    val = Data(images[:nv].to(device), boneage[:nv].to(device), male[:nv].to(device), list(range(nv)))
    spec = TrainSpec.from_dict({**asdict(spec), "epochs": epochs, "ema_decay": 0.0})
    with tempfile.TemporaryDirectory() as tmp:
        result = Trainer(name, spec, Path(tmp), device, "bench").fit(train, val)
    rates = [row["images_per_s"] for row in result["history"][1:]] or [result["history"][0]["images_per_s"]]
    return sorted(rates)[len(rates) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "config.yaml"))
    parser.add_argument("--variants", default=None, help="comma list; default: every model in the config")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 299])
    parser.add_argument("--source-size", type=int, default=299, help="side of the stored uint8 images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="timed steps of the model-only loop")
    parser.add_argument("--n-images", type=int, default=4096, help="synthetic training images for the trainer")
    parser.add_argument("--epochs", type=int, default=3, help="trainer epochs (the first is warm-up)")
    parser.add_argument("--full-epochs", type=int, default=60, help="epochs of the full-training estimate")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = resolve_device(args.device)
    config = yaml.safe_load(Path(args.config).read_text())
    names = args.variants.split(",") if args.variants else list(config["models"])
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {gpu}; torch {torch.__version__}; batch {args.batch_size}; "
          f"{'bf16 autocast, channels_last' if device.type == 'cuda' else 'fp32'}{', compiled' if args.compile else ''}")
    print("| variant | px | model-only img/s | trainer img/s | ratio | peak GPU GB | full training (est.) |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        for size in args.sizes:
            spec = TrainSpec.from_dict({**variant_spec(config, name), "input_size": size,
                                        "batch_size": args.batch_size, "compile": args.compile})
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            ceiling = model_only(spec, device, args.steps)
            rate = trainer(name, spec, device, args.n_images, args.epochs, args.source_size)
            peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")
            full_min = args.full_epochs * RSNA_TRAIN_IMAGES / rate / 60
            print(f"| {name} | {size} | {ceiling:.0f} | {rate:.0f} | {rate / ceiling:.2f} | {peak:.1f} | "
                  f"{full_min:.1f} min for {args.full_epochs} epochs |", flush=True)


if __name__ == "__main__":
    main()
