"""The demo pipeline on a real one-node SLURM cluster, through profiles/slurm.

Needs root and Debian's slurm-wlm and munge; .ci/run installs them and sets BONEAGE_SLURM=1, which
makes this test start the cluster (tests/slurm/cluster.sh), run, and stop it. Without that variable
the test is skipped, so a developer's own machine is never reconfigured by accident.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

import pandas as pd
import pytest

from boneage.learning.inference import load_model

from .conftest import REPO, snakemake

CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
SLURM_DIR = "/tmp/boneage-slurm"

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(os.environ.get("BONEAGE_SLURM") != "1",
                       reason="set BONEAGE_SLURM=1 (as .ci/run does) to run the SLURM test"),
]


@pytest.fixture(scope="module")
def cluster():
    assert shutil.which("slurmctld") and shutil.which("munged"), "install slurm-wlm and munge first"
    subprocess.run([str(CLUSTER), "start"], check=True, env={**os.environ, "SLURM_DIR": SLURM_DIR})
    yield SLURM_DIR
    subprocess.run([str(CLUSTER), "stop"], check=False, env={**os.environ, "SLURM_DIR": SLURM_DIR})


def _jobcomp(cluster: str, workdir) -> dict[int, dict]:
    """The controller's completion records of the jobs run in ``workdir``, by job id."""
    records = {}
    with open(f"{cluster}/jobcomp.txt") as f:
        for line in f:
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            if fields.get("WorkDir") == str(workdir):
                records[int(fields["JobId"])] = fields
    return records


def _job_ids(out: str, rule: str) -> list[int]:
    return [int(i) for i in re.findall(rf"submitted with SLURM jobid (\d+) \(log: \S+/rule_{rule}/", out)]


def test_demo_pipeline_runs_through_slurm_with_gpu_jobs_side_by_side(cluster, tmp_path):
    """Every job through SLURM, preprocessing as two shard jobs and their gather; training and
    evaluation ask for a GPU (device=auto), as on a GPU cluster. The test node has two count-only
    GPUs (the work inside runs on the CPU), so the two
    variants' trainings run at the same time: the controller's records show it."""
    t0 = time.time()
    proc = snakemake(
        tmp_path, "all", "--workflow-profile", str(REPO / "profiles" / "slurm"),
        "--configfile", str(REPO / "configs" / "smoke.yaml"), "--config", "device=auto", "epochs=3",
        'preprocess={"shards": 2}',
        "--max-threads", str(os.cpu_count()), "--set-threads", "train_variant=1", "evaluate_variant=1",
        "--set-resources", "train_variant:mem_mb=2000", "evaluate_variant:mem_mb=2000",
        "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2",
    )
    print(f"SLURM demo pipeline: {time.time() - t0:.0f} s")
    out = proc.stdout + proc.stderr
    assert (tmp_path / "results" / "report" / "index.html").is_file()
    submitted = out.count("has been submitted with SLURM jobid")
    assert submitted == 13, out[-3000:]  # every job but the local ones (plan, bundles, targets)
    records = _jobcomp(cluster, tmp_path)
    assert len(records) == submitted and all(r["JobState"] == "COMPLETED" for r in records.values())
    rules = set(re.findall(r"submitted with SLURM jobid \d+ \(log: \S+/rule_(\w+)/", out))
    assert rules == {"download", "preprocess_shard", "preprocess", "split", "train_variant", "evaluate_variant",
                     "ensemble", "gradcam", "report"}
    assert len(set(_job_ids(out, "preprocess_shard"))) == 2  # the two shards: two cluster jobs
    trainings = _job_ids(out, "train_variant")
    for job in trainings + _job_ids(out, "evaluate_variant"):
        shown = subprocess.run(["scontrol", "show", "job", str(job)], capture_output=True, text=True).stdout
        assert re.search(r"gres[:/]gpu[:=]1", shown), shown  # what SLURM allocated: one GPU
    (s1, e1), (s2, e2) = [(records[j]["StartTime"], records[j]["EndTime"]) for j in trainings]
    assert s1 < e2 and s2 < e1, f"the two trainings did not overlap: {s1}-{e1} and {s2}-{e2}"


WALLTIME_EPOCHS = 80  # about 150 s of training on 2 AMD EPYC cores: longer than its first 1-minute time limit


def test_a_training_killed_at_its_time_limit_resumes_on_the_retry(cluster, tmp_path):
    """First attempt: 1 minute, killed by SLURM mid-training; each retry asks attempt x 1 minute,
    resumes from checkpoints/last.pt and the last one completes the schedule, every epoch once. That
    a resumed training ends with the weights of an uninterrupted one is tests/test_train.py's
    kill -9 test (the same checkpoints); this test does not train the reference a second time."""
    # The demo's data volume this test was timed with (config.yaml's demo has 600 images since issue 28).
    volume = tmp_path / "volume.yaml"
    volume.write_text("demo:\n  n_images: 300\nsplit:\n  test_fraction: 0.15\n")
    config = ["--configfile", str(volume), "--config", "device=cpu",
              "variants=efficientnet_lite0_sex", "image_size=128", f"epochs={WALLTIME_EPOCHS}",
              "train_runtime_minutes=1"]
    killed = tmp_path / "killed"
    t0 = time.time()
    proc = snakemake(killed, "train", "--workflow-profile", str(REPO / "profiles" / "slurm"), *config,
                     "--retries", "4", "--max-threads", str(os.cpu_count()), "--set-threads", "train_variant=2",
                     "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2")
    print(f"SLURM walltime run: {time.time() - t0:.0f} s")
    out = proc.stdout + proc.stderr
    attempts = [_jobcomp(cluster, killed)[j] for j in _job_ids(out, "train_variant")]
    assert attempts[0]["JobState"] == "TIMEOUT" and attempts[0]["TimeLimit"] == "1", attempts[0]
    assert attempts[-1]["JobState"] == "COMPLETED" and int(attempts[-1]["TimeLimit"]) == len(attempts)
    model = killed / "results" / "models" / "efficientnet_lite0_sex"
    log = (killed / "results" / "logs" / "train" / "efficientnet_lite0_sex.log").read_text()
    assert re.search(r"resuming efficientnet_lite0_sex from epoch [1-9]", log), log[-2000:]
    history = pd.read_csv(model / "history.csv")
    assert list(history["epoch"]) == list(range(1, WALLTIME_EPOCHS + 1))  # the whole schedule, each epoch once
    summary = json.loads((model / "train_summary.json").read_text())
    assert summary["epochs_run"] == WALLTIME_EPOCHS and summary["best_epoch"] == WALLTIME_EPOCHS  # select_epoch: last
    assert load_model(model / "model.pt")[1]["epoch"] == WALLTIME_EPOCHS
