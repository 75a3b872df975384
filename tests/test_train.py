"""The trainer: every configured variant trains; interrupted training resumes exactly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from boneage import download, evaluate, preprocess, split
from boneage.config import variant_spec
from boneage.imaging import demo
from boneage.learning.batches import load_subset
from boneage.learning.checkpoint import CheckpointError
from boneage.learning.data import Augment, augment
from boneage.learning.inference import autocast, channels_last, load_model, predict
from boneage.learning.models import build_model
from boneage.learning.spec import TrainSpec
from boneage.learning.torchfile import load_torch, save_torch
from boneage.learning.trainer import EMA, Trainer, seed_everything
from boneage.train import run

from .conftest import REPO

# Trains or sums floats: CI runs this module a second time on PyTorch's default kernels and one thread
# (the floating-point guard in .ci/run), so that a result hanging on the last bits shows on any machine.
pytestmark = pytest.mark.arith

TINY = {"epochs": 1, "batch_size": 4, "input_size": 48}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny preprocessed demo set: 24 images at 48 px, split."""
    root = tmp_path_factory.mktemp("train")
    demo.generate(root / "demo", 24, seed=1)
    download.run("local", root / "dataset.json", str(root / "demo"), root, 0, 0)
    preprocess.run(root / "dataset.json", root / "pre", preprocess.Settings(image_size=48, crop_method="none"))
    split.run(root / "pre" / "index.parquet", root / "split.csv", 0.25, 0.25, 120, seed=0)
    return root


def config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.mark.parametrize("name", sorted(config()["models"]))
def test_each_configured_variant_trains_one_tiny_epoch(data, tmp_path, name):
    spec = TrainSpec.from_dict({**variant_spec(config(), name), **TINY})
    summary = run(name, spec, data / "pre" / "index.parquet", data / "split.csv", tmp_path, "cpu", 2)
    assert summary["epochs_run"] == 1
    history = pd.read_csv(tmp_path / "history.csv")
    assert list(history["epoch"]) == [1] and history["val_mae"].notna().all()
    model, meta = load_model(tmp_path / "model.pt")
    assert meta["variant"] == name and meta["spec"]["arch"] == config()["models"][name]["arch"]


def _train_cmd(data: Path, out: Path, spec: dict, variant: str = "resnet18") -> list[str]:
    plan = out.parent / f"{out.name}_spec.json"
    plan.write_text(json.dumps(spec))
    return [sys.executable, "-m", "boneage.train", "--variant", variant, "--spec", str(plan),
            "--index", str(data / "pre" / "index.parquet"), "--split", str(data / "split.csv"),
            "--out-dir", str(out), "--device", "cpu", "--threads", "1"]


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_kill_9_then_resume_matches_an_uninterrupted_run(data, tmp_path):
    spec = {"arch": "resnet18", "epochs": 8, "batch_size": 4, "input_size": 32, "ema_decay": 0.9,
            "bn_recalibrate": True}  # the recalibrated statistics are part of the state that resumes
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    reference = tmp_path / "reference"
    subprocess.run(_train_cmd(data, reference, spec), check=True, env=env, capture_output=True)

    out = tmp_path / "interrupted"
    proc = subprocess.Popen(_train_cmd(data, out, spec), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    last = out / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = torch.load(last, map_location="cpu", weights_only=True)
    if saved["complete"]:
        pytest.skip("training finished before it could be killed")
    assert not (out / "model.pt").exists()

    resumed = subprocess.run(_train_cmd(data, out, spec), check=True, env=env, capture_output=True, text=True)
    assert f"resuming resnet18 from epoch {saved['epoch']}" in resumed.stderr
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == list(range(1, 9))
    ref, got = _weights(reference / "model.pt"), _weights(out / "model.pt")
    assert all(torch.allclose(ref[k].float(), got[k].float(), atol=1e-5) for k in ref), \
        "resumed training diverged from the uninterrupted one (optimizer, EMA or RNG state not restored)"


def test_checkpoint_of_another_variant_is_refused(data, tmp_path):
    a = tmp_path / "a"
    run("resnet18", TrainSpec.from_dict({"arch": "resnet18", **TINY}), data / "pre" / "index.parquet",
        data / "split.csv", a, "cpu", 1)
    b = tmp_path / "b"
    shutil.copytree(a / "checkpoints", b / "checkpoints")
    with pytest.raises(CheckpointError, match=r"belongs to variant 'resnet18'.*not 'densenet121_sex'"):
        run("densenet121_sex", TrainSpec.from_dict({"arch": "densenet121", "sex_input": True, **TINY}),
            data / "pre" / "index.parquet", data / "split.csv", b, "cpu", 1)


def test_changed_settings_start_afresh(data, tmp_path):
    index, split_csv = data / "pre" / "index.parquet", data / "split.csv"
    run("resnet18", TrainSpec.from_dict({"arch": "resnet18", **TINY, "epochs": 2}), index, split_csv, tmp_path, "cpu", 1)
    ckpt = tmp_path / "checkpoints" / "last.pt"
    first = load_torch(ckpt)
    first["complete"] = False  # as if it had been interrupted
    save_torch(ckpt, first, digest=True)
    run("resnet18", TrainSpec.from_dict({"arch": "resnet18", **TINY, "epochs": 2, "lr": 3e-4}), index, split_csv,
        tmp_path, "cpu", 1)
    assert (tmp_path / "checkpoints" / "last.stale.pt").exists()
    assert len(pd.read_csv(tmp_path / "history.csv")) == 2  # both epochs ran again


def test_unknown_training_setting_is_named():
    with pytest.raises(ValueError, match=r"unknown training setting\(s\) \['lr_max'\]"):
        TrainSpec.from_dict({"arch": "resnet18", "lr_max": 1})


def _subsets(data: Path):
    index = pd.read_parquet(data / "pre" / "index.parquet")
    split_table = pd.read_csv(data / "split.csv", dtype={"id": str})
    root = data / "pre"
    return load_subset(index, split_table, "train", root, 1), load_subset(index, split_table, "val", root, 1)


def test_the_same_run_twice_gives_the_same_weights_and_test_metrics(data, tmp_path):
    index, split_csv = data / "pre" / "index.parquet", data / "split.csv"
    spec = TrainSpec.from_dict({"arch": "resnet18", "sex_input": True, **TINY, "epochs": 2})
    runs = []
    for name in ("first", "second"):
        out = tmp_path / name
        run("resnet18_sex", spec, index, split_csv, out, "cpu", 2)
        settings = evaluate.Settings(tta=False, bias_correction=True, stage_thresholds=(120, 216), interval_level=0.9)
        metrics = evaluate.run(out / "model.pt", index, split_csv, out / "predictions.parquet", out / "metrics.json",
                               settings, "cpu", 2)
        runs.append((_weights(out / "model.pt"), metrics["test"]))
    (w1, m1), (w2, m2) = runs
    # bit for bit: the promise holds on one machine with the same threads (another CPU or thread count
    # sums in another order: docs/reproducibility.md)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert json.dumps(m1, sort_keys=True) == json.dumps(m2, sort_keys=True)  # NaN-safe equality


# --- the CUDA code paths, forced on the CPU: bf16 autocast, channels_last, compile, streaming ------
@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0_sex", "efficientnet_lite2_sex"])
def test_bf16_autocast_path_trains_and_the_head_answers_in_fp32(data, tmp_path, name):
    spec = TrainSpec.from_dict({**variant_spec(config(), name), **TINY, "epochs": 2})
    train, val = _subsets(data)
    result = Trainer(name, spec, tmp_path, torch.device("cpu"), "h", bf16=True).fit(train, val)
    assert all(np.isfinite(row["val_mae"]) for row in result["history"])
    model = build_model(asdict(spec)).to(memory_format=torch.channels_last).eval()
    x = channels_last(torch.rand(3, 1, 48, 48))
    with torch.no_grad(), autocast(torch.device("cpu"), True):
        assert model.backbone(x).dtype == torch.bfloat16  # the backbone does run in bf16
        assert model(x, torch.ones(3)).dtype == torch.float32  # the estimate is not rounded to bf16


def test_compiled_bf16_channels_last_training_runs(data, tmp_path):
    """The GPU recipe's path (torch.compile + bf16 autocast + channels_last) on a tiny model."""
    spec = TrainSpec.from_dict({"arch": "resnet18", **TINY, "input_size": 32, "compile": True})
    train, val = _subsets(data)
    result = Trainer("resnet18", spec, tmp_path, torch.device("cpu"), "h", bf16=True).fit(train, val)
    assert np.isfinite(result["history"][0]["val_mae"])


def test_streaming_from_host_memory_gives_the_same_training(data, tmp_path):
    spec = TrainSpec.from_dict({"arch": "resnet18", **TINY, "epochs": 2, "ema_decay": 0.5})
    train, val = _subsets(data)
    for name, stream in (("resident", False), ("streamed", True)):
        Trainer("resnet18", spec, tmp_path / name, torch.device("cpu"), "h", stream=stream).fit(train, val)
    a, b = (torch.load(tmp_path / n / "checkpoints" / "last.pt", weights_only=True) for n in ("resident", "streamed"))
    # bit for bit (same process, same threads): the same bytes reach the same kernels in the same order
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])


def test_images_read_from_the_store_on_disk_give_the_same_training_as_in_memory(data, tmp_path):
    """data.resident: disk reads each batch from images.u8 (the store the preprocess stage wrote): the
    same bytes as the PNGs, so the same weights, streamed (the GPU path) or indexed (the CPU path)."""
    from boneage.learning.batches import place
    from boneage.learning.store import DiskImages, StoreError, open_rows

    index = pd.read_parquet(data / "pre" / "index.parquet")
    split_table = pd.read_csv(data / "split.csv", dtype={"id": str})
    train, val = _subsets(data)
    store = data / "pre" / "images.u8"
    disk = [load_subset(index, split_table, s, data / "pre", 1, store) for s in ("train", "val")]
    assert isinstance(disk[0].images, DiskImages) and torch.equal(disk[0].images[:], train.images)
    assert torch.equal(disk[1].images[torch.tensor([2, 0])], val.images[[2, 0]])
    assert torch.equal(place(disk[0], torch.device("cpu"), "host").images, train.images)
    assert isinstance(place(disk[0], torch.device("cpu"), "disk").images, DiskImages)
    with pytest.raises(ValueError, match="needs the image store"):
        place(train, torch.device("cpu"), "disk")
    spec = TrainSpec.from_dict({"arch": "resnet18", **TINY, "epochs": 2, "bn_recalibrate": True})
    runs = {"memory": (train, val, False), "disk": (*disk, False), "disk streamed": (*disk, True)}
    for name, (t, v, stream) in runs.items():
        Trainer("resnet18", spec, tmp_path / name, torch.device("cpu"), "h", stream=stream).fit(t, v)
    weights = [torch.load(tmp_path / n / "checkpoints" / "last.pt", weights_only=True)["model"] for n in runs]
    # bit for bit (same process, same threads): host and disk promise identical training
    assert all(torch.equal(weights[0][k], w[k]) for w in weights[1:] for k in weights[0])
    with pytest.raises(StoreError, match="not written from this index"):
        open_rows(store, index.iloc[1:], index.iloc[1:3])
    # evaluation (TTA, retakes) from the store on disk predicts what it predicts from the PNGs
    settings = evaluate.Settings(tta=True, bias_correction=True, stage_thresholds=(120, 216), interval_level=0.9)
    model = tmp_path / "model.pt"
    Trainer("resnet18", spec, tmp_path / "memory", torch.device("cpu"), "h").export(model)
    tables = []
    for name, store_path in (("pngs", None), ("disk", store)):
        evaluate.run(model, data / "pre" / "index.parquet", data / "split.csv", tmp_path / f"{name}.parquet",
                     tmp_path / f"{name}.json", settings, "cpu", 1, store_path, "disk" if store_path else "auto")
        tables.append(pd.read_parquet(tmp_path / f"{name}.parquet"))
    assert tables[0].equals(tables[1]) and "retake_8" in tables[0]


def test_ema_is_the_exponential_average_of_the_weights():
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.9)
    first = model.weight.detach().clone()
    ema.update(model)
    assert torch.equal(ema.module.weight, first) and ema.n_averaged == 1
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.module.weight, first + 0.1) and ema.n_averaged == 2


def test_a_checkpoint_from_another_device_type_resumes_with_a_warning(data, tmp_path, caplog):
    index, split_csv = data / "pre" / "index.parquet", data / "split.csv"
    spec = TrainSpec.from_dict({"arch": "resnet18", **TINY, "epochs": 2})
    run("resnet18", spec, index, split_csv, tmp_path, "cpu", 1)
    last = tmp_path / "checkpoints" / "last.pt"
    state = load_torch(last)
    # as written by an interrupted GPU job: a CUDA generator state is 16 bytes, a CPU one 5056
    state.update(complete=False, epoch=1, history=state["history"][:1], device_type="cuda",
                 generator=torch.zeros(16, dtype=torch.uint8), cuda_rng=torch.zeros(16, dtype=torch.uint8))
    save_torch(last, state, digest=True)
    with caplog.at_level("WARNING", logger="boneage.train"):
        run("resnet18", spec, index, split_csv, tmp_path, "cpu", 1)
    assert "checkpoint was written on cuda, resuming on cpu" in caplog.text
    assert list(pd.read_csv(tmp_path / "history.csv")["epoch"]) == [1, 2]


def test_progressive_resizing_trains_small_first_and_validates_at_the_final_size(data, tmp_path):
    spec = TrainSpec.from_dict({"arch": "resnet18", **TINY, "epochs": 3, "low_res_size": 32, "low_res_epochs": 2})
    train, val = _subsets(data)
    seen = []  # (training?, input side) of every top-level forward pass

    def record(module, args):
        if isinstance(args[0], torch.Tensor) and args[0].dim() == 4 and module.__class__.__name__ == "BoneAgeNet":
            seen.append((module.training, args[0].shape[-1]))

    hook = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        result = Trainer("resnet18", spec, tmp_path, torch.device("cpu"), "h").fit(train, val)
    finally:
        hook.remove()
    steps = len(train.ids) // spec.batch_size
    trained = [size for training, size in seen if training]
    assert trained == [32] * (2 * steps) + [48] * steps
    assert {size for training, size in seen if not training} == {48}
    assert [row["input_px"] for row in result["history"]] == [32, 32, 48]


@pytest.mark.parametrize("bad", [{"low_res_size": 32}, {"low_res_epochs": 1},
                                 {"low_res_size": 32, "low_res_epochs": 3}])
def test_an_incomplete_or_too_long_low_res_phase_is_refused(bad):
    with pytest.raises(ValueError, match="low_res"):
        TrainSpec.from_dict({"arch": "resnet18", **TINY, "epochs": 3, **bad})


@pytest.mark.parametrize("arch,n", [("efficientnet_lite0", 5), ("resnet18", 1), ("densenet121", 2)])
def test_frozen_blocks_keep_their_starting_weights_and_the_rest_trains(data, tmp_path, arch, n):
    spec = TrainSpec.from_dict({"arch": arch, **TINY, "epochs": 2, "lr": 0.01, "freeze_blocks": n})
    seed_everything(spec.seed)  # as the trainer does before it builds the model
    start = build_model(asdict(spec))
    stem, blocks = start._stem_and_blocks()
    frozen_names = {name for name, p in start.named_parameters()
                    if any(p is q for m in stem + blocks[:n] for q in m.parameters())}
    assert frozen_names
    Trainer(arch, spec, tmp_path, torch.device("cpu"), "h").fit(*_subsets(data))
    trained = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["model"]
    initial = start.state_dict()
    for name, _ in start.named_parameters():
        same = torch.equal(trained[name], initial[name])
        assert same == (name in frozen_names), name
    with pytest.raises(ValueError, match=f"freeze_blocks .*{arch}"):
        build_model(asdict(spec)).freeze(len(blocks))


def test_predictions_do_not_depend_on_the_inference_batch_size():
    """The CPU predicts in batches of 16 by default (faster there than 128); a result must not
    depend on how the images were chunked, with or without TTA."""
    torch.manual_seed(0)
    model = build_model({"arch": "efficientnet_lite0", "sex_input": True, "head_hidden": 16}).eval()
    images = torch.randint(0, 256, (37, 1, 48, 48), dtype=torch.uint8)
    male = (torch.rand(37) > 0.5).float()
    cpu = torch.device("cpu")
    for tta in (False, True):
        default = predict(model, images, male, 48, 120.0, 40.0, cpu, tta=tta)
        whole = predict(model, images, male, 48, 120.0, 40.0, cpu, batch_size=128, tta=tta)
        assert default.shape == (37,)
        np.testing.assert_allclose(default, whole, rtol=0, atol=1e-4)


def test_an_estimate_over_box_views_is_the_mean_of_each_views_estimate():
    """Images (N, K, S, S) are K box views of each film (evaluate.box_shift): each goes through the
    model alone, and the film's estimate is their mean (with TTA, over every TTA view of each)."""
    torch.manual_seed(0)
    model = build_model({"arch": "efficientnet_lite0", "sex_input": True, "head_hidden": 16}).eval()
    with torch.no_grad():  # a fresh head answers every image alike; weights that read the pixels
        for weight in model.parameters():
            weight.add_(torch.randn_like(weight) * 0.05)
    images = torch.randint(0, 256, (5, 3, 48, 48), dtype=torch.uint8)
    male = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0])
    cpu = torch.device("cpu")
    for tta in (False, True):
        each = [predict(model, images[:, k:k + 1], male, 40, 120.0, 40.0, cpu, tta=tta) for k in range(3)]
        np.testing.assert_allclose(predict(model, images, male, 40, 120.0, 40.0, cpu, tta=tta), np.mean(each, axis=0),
                                   rtol=0, atol=1e-4)
        assert np.ptp(each, axis=0).min() > 0  # the views differ: the mean is no copy of one of them


def test_noise_augmentation_adds_pixel_noise_up_to_the_sd_asked_and_none_by_default():
    flat = torch.full((256, 1, 16, 16), 128, dtype=torch.uint8)
    still = dict(rotate_deg=0, scale_min=1, scale_max=1, translate=0, brightness=0, contrast=0, gamma=0)
    plain = augment(flat.clone(), 16, Augment(**still), torch.Generator().manual_seed(0))
    assert torch.allclose(plain, torch.full_like(plain, 128 / 255), atol=1e-6)  # the default adds no noise
    noisy = augment(flat.clone(), 16, Augment(**still, noise=0.04), torch.Generator().manual_seed(0))
    sd = (noisy - plain).flatten(1).std(dim=1)  # each image's own noise SD, drawn uniformly in [0, 0.04]
    assert sd.min() < 0.01 and 0.03 < sd.max() < 0.048
    assert abs(float(sd.mean()) - 0.02) < 0.004


def test_recalibrated_batchnorm_holds_the_statistics_of_the_unaugmented_training_images(data):
    from boneage.learning.data import resize
    from boneage.learning.trainer import recalibrate_bn

    train, _ = _subsets(data)
    model = build_model({"arch": "resnet18"}).to(memory_format=torch.channels_last)
    weights = {k: v.clone() for k, v in model.named_parameters()}
    first_bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    inputs, seen = [], []
    hooks = [model.register_forward_pre_hook(lambda m, args: inputs.append(args[0].clone())),
             first_bn.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))]
    try:
        recalibrate_bn(model, train, 48, 5, torch.device("cpu"), bf16=False)
    finally:
        for hook in hooks:
            hook.remove()
    n = len(train.ids) // 5  # whole batches of the training batch size, no augmentation
    assert len(inputs) == n
    for k, x in enumerate(inputs):
        assert torch.equal(x, channels_last(resize(train.images[5 * k:5 * (k + 1)], 48)))
    means = torch.stack([x.mean((0, 2, 3)) for x in seen])
    variances = torch.stack([x.transpose(0, 1).flatten(1).var(1, unbiased=True) for x in seen])
    assert torch.allclose(first_bn.running_mean, means.mean(0), atol=1e-5)  # the average over the pass
    assert torch.allclose(first_bn.running_var, variances.mean(0), rtol=1e-4)
    assert first_bn.momentum == 0.1 and all(torch.equal(weights[k], v) for k, v in model.named_parameters())


def test_select_epoch_last_keeps_the_final_epoch_and_refuses_early_stopping(data, tmp_path):
    spec = TrainSpec.from_dict({"arch": "resnet18", **TINY, "epochs": 3, "select_epoch": "last",
                                "bn_recalibrate": True})
    summary = run("resnet18", spec, data / "pre" / "index.parquet", data / "split.csv", tmp_path, "cpu", 2)
    _, meta = load_model(tmp_path / "model.pt")
    # history.csv holds each float as its shortest round-trip text, so the file and the summary agree
    # to the last bit; pandas' default CSV float parser is not exact (one unit in the last place off
    # for some values, so on some CPUs' results), hence the round-trip parser here.
    history = pd.read_csv(tmp_path / "history.csv", float_precision="round_trip")
    assert meta["epoch"] == summary["best_epoch"] == 3 and summary["best_val_mae"] == history["val_mae"].iloc[-1]
    assert not (tmp_path / "checkpoints" / "best.pt").exists()  # last.pt is the kept epoch's: no second copy
    with pytest.raises(ValueError, match="patience"):
        TrainSpec.from_dict({"arch": "resnet18", **TINY, "select_epoch": "last", "patience": 2})


def test_blur_augmentation_spreads_a_point_by_at_most_the_sd_asked_and_keeps_its_grey_level_sum():
    point = torch.zeros((64, 1, 33, 33), dtype=torch.uint8)
    point[:, :, 16, 16] = 255
    still = dict(rotate_deg=0, scale_min=1, scale_max=1, translate=0, brightness=0, contrast=0, gamma=0)
    plain = augment(point.clone(), 33, Augment(**still), torch.Generator().manual_seed(0))
    blurred = augment(point.clone(), 33, Augment(**still, blur=1.5), torch.Generator().manual_seed(0))
    assert torch.allclose(blurred.sum(dim=(1, 2, 3)), plain.sum(dim=(1, 2, 3)), atol=1e-4)
    cols = torch.arange(33, dtype=torch.float32) - 16
    spread = blurred[:, 0] - plain[:, 0].amin()  # less the floor every image is clamped to (1e-6)
    sd = (spread.sum(dim=1) * cols ** 2).sum(dim=1).div(spread.sum(dim=(1, 2))).sqrt()
    assert sd.max() <= 1.5 + 1e-3 and sd.min() < 0.5 and sd.max() > 1.2  # SDs drawn over [0, 1.5]


def test_overexposure_and_lift_draw_a_clipped_white_end_and_a_raised_black_level_up_to_the_share_asked():
    size = 64
    ramp = torch.arange(size, dtype=torch.float32).mul(255 / (size - 1)).round().to(torch.uint8)
    films = ramp.view(1, 1, 1, size).expand(256, 1, size, size).contiguous()
    still = dict(rotate_deg=0, scale_min=1, scale_max=1, translate=0, brightness=0, contrast=0, gamma=0)
    plain = augment(films.clone(), size, Augment(**still), torch.Generator().manual_seed(0))[:, 0, 0]
    clipped = augment(films.clone(), size, Augment(**still, overexpose=0.3), torch.Generator().manual_seed(0))[:, 0, 0]
    white = (clipped >= 1 - 1e-6).float().mean(1) - (plain >= 1 - 1e-6).float().mean(1)  # share gone white
    assert white.max() <= 0.3 + 1 / size and white.max() > 0.25 and white.min() < 0.03  # drawn over [0, 0.3]
    below = clipped < 1 - 1e-6  # the rest stretched, still in order and starting at black
    assert (clipped >= plain - 1e-6).all() and torch.all(clipped.diff(dim=1) >= -1e-6) and (clipped[:, 0] < 1e-5).all()
    stretch = (clipped / plain.clamp_min(1e-6))[below & (plain > 0.1)].max()  # 1 / (1 - t) at the largest t drawn
    assert torch.allclose(stretch, torch.tensor(1 / 0.7), atol=0.02)
    lifted = augment(films.clone(), size, Augment(**still, lift=0.15), torch.Generator().manual_seed(0))[:, 0, 0]
    black = lifted[:, 0]
    assert black.max() <= 0.15 + 1e-6 and black.max() > 0.12 and black.min() < 0.01  # drawn over [0, 0.15]
    assert torch.allclose(lifted[:, -1], torch.ones(256)) and torch.all(lifted.diff(dim=1) > 0)  # white stays white


def test_a_consistency_pair_is_the_same_view_moved_by_at_most_a_pixel_with_its_own_grey_levels():
    from boneage.learning.data import PAIR_SHIFT_PX, PAIR_ZOOM, augment_pair

    size = 64
    ramp = torch.arange(size, dtype=torch.float32).mul(255 / (size - 1)).round().to(torch.uint8)
    films = ramp.view(1, 1, 1, size).expand(32, 1, size, size).contiguous()
    # zoomed in enough that no view reaches past the film (its zero padding would move with the view)
    still = dict(rotate_deg=5, scale_min=1.1, scale_max=1.15, translate=0.01, brightness=0, contrast=0, gamma=0)
    pair = augment_pair(films, size, Augment(**still), torch.Generator().manual_seed(0))
    first, second = pair.chunk(2)
    inside = (slice(None), 0, slice(8, -8), slice(8, -8))  # away from the zero padding at the borders
    moved = (first - second)[inside].abs().amax(dim=(1, 2)) * (size - 1)  # in ramp steps = film pixels
    assert moved.max() <= PAIR_SHIFT_PX * 2 ** 0.5 + PAIR_ZOOM * size / 2 + 0.5 and moved.max() > 0.5
    lit = augment_pair(films, size, Augment(**{**still, "gamma": 0.3}), torch.Generator().manual_seed(0)).chunk(2)
    assert (lit[0] - lit[1])[inside].abs().amax() > 0.05  # the second view's grey levels are its own draw


def test_consistency_training_sees_two_views_per_film_and_is_refused_with_cached_blocks(data, tmp_path):
    spec = TrainSpec.from_dict({"arch": "resnet18", "sex_input": True, **TINY, "consistency": 1.0})
    summary = run("resnet18", spec, data / "pre" / "index.parquet", data / "split.csv", tmp_path, "cpu", 2)
    assert summary["epochs_run"] == 1 and np.isfinite(pd.read_csv(tmp_path / "history.csv")["train_loss"]).all()
    with pytest.raises(ValueError, match="consistency"):
        TrainSpec.from_dict({"arch": "efficientnet_lite0", "cache_blocks": 5, "consistency": 1.0})
