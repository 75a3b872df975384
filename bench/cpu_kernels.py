"""The CPU figures behind three defaults: the fused optimiser step, the CPU inference batch, and one
thread per model job when the models' jobs run side by side (issue 50, docs/benchmarks.md).

Prints, on this machine's cores (run it alone):

* the AdamW step of ResNet-18 (11.7 M weights) as PyTorch's CPU default (a loop over tensors),
  ``foreach`` and ``fused`` (what the trainer uses);
* inference images/s of :func:`boneage.learning.inference.predict` at batch 16 (the old CPU default)
  and at :func:`~boneage.learning.inference.cpu_batch` of the input size;
* training images/s of ResNet-18 at 64 px, batch 32, with 2 threads and with 1: two jobs of one
  thread each do ``2 x (1 thread)`` against one job of two threads.

    .venv/bin/python bench/cpu_kernels.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from boneage.files import keep_freed_memory  # noqa: E402
from boneage.learning.inference import cpu_batch, predict  # noqa: E402
from boneage.learning.models import build_model  # noqa: E402


def net(arch: str, size: int) -> torch.nn.Module:
    spec = {"arch": arch, "input_size": size, "sex_input": False, "pretrained": "none", "augment": {}}
    return build_model(spec).to(memory_format=torch.channels_last)


def optimiser_steps() -> None:
    torch.set_num_threads(2)
    model = net("resnet18", 64)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    for kind in ({"foreach": False}, {"foreach": True}, {"fused": True}):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4, **kind)
        opt.step()
        t0 = time.perf_counter()
        for _ in range(20):
            opt.step()
        print(f"AdamW step, ResNet-18, 2 threads, {kind}: {(time.perf_counter() - t0) / 20 * 1000:.1f} ms", flush=True)


def inference() -> None:
    keep_freed_memory()
    for arch, size in (("resnet18", 64), ("efficientnet_lite0", 144)):
        model = net(arch, size).eval()
        x, male = torch.randint(0, 256, (384, 1, size, size), dtype=torch.uint8), torch.zeros(384)
        for threads in (2, 1):
            torch.set_num_threads(threads)
            for batch in sorted({16, cpu_batch(size)}):
                predict(model, x[:64], male[:64], size, 0.0, 1.0, torch.device("cpu"), batch_size=batch)
                t0 = time.perf_counter()
                predict(model, x, male, size, 0.0, 1.0, torch.device("cpu"), batch_size=batch)
                rate = len(x) / (time.perf_counter() - t0)
                print(f"predict {arch} {size} px, {threads} thread(s), batch {batch}: {rate:.0f} images/s", flush=True)


def training() -> None:
    rates = {}
    for threads in (2, 1):
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = net("resnet18", 64).train()
        x = torch.randn(32, 1, 64, 64).contiguous(memory_format=torch.channels_last)
        male, y = torch.zeros(32), torch.randn(32)
        opt = torch.optim.AdamW(model.parameters(), fused=True)
        for step in range(13):
            if step == 3:
                t0 = time.perf_counter()
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x, male), y).backward()
            opt.step()
        rates[threads] = 32 * 10 / (time.perf_counter() - t0)
        print(f"train ResNet-18 64 px, batch 32, {threads} thread(s): {rates[threads]:.0f} images/s", flush=True)
    print(f"two 1-thread jobs against one 2-thread job: {2 * rates[1] / rates[2]:.2f}x the images/s")


if __name__ == "__main__":
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads available")
    optimiser_steps()
    inference()
    training()
