"""train.time_budget_minutes: the epochs that fit a walltime, chosen from measured speed."""

from __future__ import annotations

import json

import pytest
import torch

from boneage.learning.budget import SAFETY, epochs_within
from boneage.learning.spec import TrainSpec
from boneage.learning.torchfile import load_torch, save_torch
from boneage.train import run

from .conftest import REPO, snakemake
from .test_train import TINY, data  # noqa: F401 (data: the tiny preprocessed set, a fixture)

# Trains or sums floats: CI runs this module a second time on PyTorch's default kernels and one thread
# (the floating-point guard in .ci/run), so that a result hanging on the last bits shows on any machine.
pytestmark = pytest.mark.arith

SPEED = {"step_s": 0.1, "first_step_extra_s": 10.0, "validation_s": 5.0, "checkpoint_s": 1.0, "recalibrate_s": 0.0,
         "steps_per_epoch": 100}  # 17 s an epoch: 10 s of steps, 5 s validation, two checkpoint writes


def test_the_epochs_chosen_are_the_most_that_end_inside_the_budget():
    spec = TrainSpec.from_dict({"arch": "resnet18", "epochs": 100, "time_budget_minutes": 10})
    choice = epochs_within(spec, SPEED, spent_s=25.0)
    # 90 % of 600 s less 25 s spent: 515 s, 30 epochs of 17 s (the warm-up is not paid again)
    assert choice["epoch_s"] == 17.0 and choice["epochs"] == 30 == int((SAFETY * 600 - 25) // 17)
    assert choice["planned_training_s"] + 25 <= SAFETY * 600
    compiled = TrainSpec.from_dict({**spec.__dict__, "compile": True})  # the real model compiles again: 10 s
    assert epochs_within(compiled, SPEED, spent_s=25.0)["epochs"] == 29 == int((SAFETY * 600 - 25 - 10) // 17)
    assert epochs_within(TrainSpec.from_dict({**spec.__dict__, "epochs": 12}), SPEED, 20.0)["epochs"] == 12  # a cap
    assert epochs_within(spec, SPEED, spent_s=590.0)["epochs"] == 1  # less than one epoch left: one, over budget


def test_a_budgeted_training_is_the_plan_with_the_chosen_epochs_and_a_resumed_one_keeps_the_choice(data, tmp_path):  # noqa: F811
    index, split_csv = data / "pre" / "index.parquet", data / "split.csv"
    plan = {"arch": "resnet18", **TINY, "epochs": 40, "input_size": 32, "time_budget_minutes": 0.1}
    summary = run("resnet18", TrainSpec.from_dict(plan), index, split_csv, tmp_path / "budget", "cpu", 1)
    choice = json.loads((tmp_path / "budget" / "budget.json").read_text())
    n = choice["epochs"]
    assert 1 <= n <= 40 and summary["epochs_run"] == n == summary["time_budget"]["epochs"] == summary["spec"]["epochs"]
    assert choice["step_s"] > 0 and choice["validation_s"] > 0 and choice["max_epochs"] == 40
    if 1 < n < 40:  # the budget, not the cap, decided: the plan ends inside it
        # (budget.json rounds the plan to 0.1 s and the time spent to 0.01 s: CI once read 1.62 + 3.8 > 5.4)
        assert choice["spent_before_training_s"] + choice["planned_training_s"] <= SAFETY * 0.1 * 60 + 0.055
    # the whole schedule is that of a plan with n epochs: the same weights
    run("resnet18", TrainSpec.from_dict({**plan, "epochs": n, "time_budget_minutes": 0}), index, split_csv,
        tmp_path / "fixed", "cpu", 1)
    a, b = (torch.load(tmp_path / d / "model.pt", weights_only=True)["model"] for d in ("budget", "fixed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # interrupted after its first epoch and run again: the same choice, no new measurement
    last = tmp_path / "budget" / "checkpoints" / "last.pt"
    state = load_torch(last)
    state.update(complete=False, epoch=1, history=state["history"][:1])
    save_torch(last, state, digest=True)
    choice["step_s"] = 123.0  # a marker: a new measurement would overwrite it
    (tmp_path / "budget" / "budget.json").write_text(json.dumps(choice))
    again = run("resnet18", TrainSpec.from_dict(plan), index, split_csv, tmp_path / "budget", "cpu", 1)
    assert again["time_budget"]["step_s"] == 123.0 and again["epochs_run"] == n


def test_the_speed_probe_runs_on_the_gpu_code_path_forced_on_the_cpu(data, tmp_path):  # noqa: F811
    """bf16 autocast, streamed batches and EMA, as on a GPU: the probe times them and leaves no file."""
    from boneage.learning.budget import measure
    from boneage.learning.trainer import Trainer

    from .test_train import _subsets

    spec = TrainSpec.from_dict({"arch": "resnet18", **TINY, "epochs": 5, "ema_decay": 0.9, "time_budget_minutes": 1})
    speed = measure(Trainer("resnet18", spec, tmp_path, torch.device("cpu"), "h", bf16=True, stream=True),
                    *_subsets(data))
    assert speed["step_s"] > 0 and speed["validation_s"] > 0 and speed["checkpoint_s"] > 0
    assert not list((tmp_path / "checkpoints").iterdir())  # the probe's checkpoint is gone


def test_a_budget_with_cached_blocks_or_low_resolution_epochs_is_refused():
    for clash in ({"arch": "efficientnet_lite0", "cache_blocks": 3}, {"low_res_size": 32, "low_res_epochs": 2}):
        with pytest.raises(ValueError, match="time_budget_minutes .* does not go with cache_blocks or low_res_epochs"):
            TrainSpec.from_dict({"arch": "resnet18", "epochs": 5, "time_budget_minutes": 5, **clash})


def test_a_budgeted_training_job_asks_the_cluster_for_its_budget_and_room(tmp_path):
    proc = snakemake(tmp_path, "train", "-n", "--configfile", str(REPO / "configs" / "smoke.yaml"), "--config",
                     'train={"time_budget_minutes": 3}')
    text = proc.stdout + proc.stderr
    jobs = text.split("rule train_variant:")[1:]
    assert jobs and all("runtime=14," in job.split("rule ")[0] for job in jobs)  # ceil(1.25 x 3 + 10)


def test_the_gpu_recipe_runs_end_to_end_on_the_cpu_within_a_tiny_budget(tmp_path):
    """configs/rsna-gpu.yaml with the demo's films, device=cpu and a budget of seconds: every stage runs
    and the training picks its epochs from the budget."""
    overlay = tmp_path / "cpu.yaml"
    overlay.write_text("data_source: demo\ndemo: {n_images: 48}\nimage_size: 64\ndevice: cpu\n"
                       "split: {age_bin_months: 60}\nreport: {gradcam_images: 4}\n"
                       "train: {input_size: 64, batch_size: 8, time_budget_minutes: 0.1}\n")
    snakemake(tmp_path, "all", "--cores", "2", "--configfile", str(REPO / "configs" / "rsna-gpu.yaml"), str(overlay))
    model = tmp_path / "results" / "models" / "efficientnet_lite0_sex"
    summary = json.loads((model / "train_summary.json").read_text())
    assert summary["time_budget"]["budget_minutes"] == 0.1 and 1 <= summary["epochs_run"] <= 35
    assert summary["spec"]["ema_decay"] == 0.998 and summary["spec"]["pretrained"] == "imagenet"
    assert (tmp_path / "results" / "bundles" / "efficientnet_lite0_sex" / "bundle.json").is_file()
