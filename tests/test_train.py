"""The trainer: every configured variant trains; interrupted training resumes exactly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from boneage import demo, download, preprocess, split
from boneage.config import variant_spec
from boneage.inference import load_model
from boneage.train import CheckpointError, TrainSpec, run

from .conftest import REPO

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
    return [sys.executable, "-m", "boneage.train", "--variant", variant, "--spec", json.dumps(spec),
            "--index", str(data / "pre" / "index.parquet"), "--split", str(data / "split.csv"),
            "--out-dir", str(out), "--device", "cpu", "--threads", "1"]


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_kill_9_then_resume_matches_an_uninterrupted_run(data, tmp_path):
    spec = {"arch": "resnet18", "epochs": 8, "batch_size": 4, "input_size": 32, "ema_decay": 0.9}
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
    first = torch.load(ckpt, map_location="cpu", weights_only=True)
    first["complete"] = False  # as if it had been interrupted
    torch.save(first, ckpt)
    run("resnet18", TrainSpec.from_dict({"arch": "resnet18", **TINY, "epochs": 2, "lr": 3e-4}), index, split_csv,
        tmp_path, "cpu", 1)
    assert (tmp_path / "checkpoints" / "last.stale.pt").exists()
    assert len(pd.read_csv(tmp_path / "history.csv")) == 2  # both epochs ran again


def test_unknown_training_setting_is_named():
    with pytest.raises(ValueError, match=r"unknown training setting\(s\) \['lr_max'\]"):
        TrainSpec.from_dict({"arch": "resnet18", "lr_max": 1})
