"""The demo pipeline on a real one-node SLURM cluster, through profiles/slurm.

Needs root and Debian's slurm-wlm and munge; .ci/run installs them and sets BONEAGE_SLURM=1, which
makes this test start the cluster (tests/slurm/cluster.sh), run, and stop it. Without that variable
the test is skipped, so a developer's own machine is never reconfigured by accident.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest

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


def test_demo_pipeline_runs_through_slurm(cluster, tmp_path):
    t0 = time.time()
    proc = snakemake(
        tmp_path, "all", "--workflow-profile", str(REPO / "profiles" / "slurm"),
        "--configfile", str(REPO / "configs" / "smoke.yaml"), "--config", "device=cpu",
        "--max-threads", str(os.cpu_count()), "--slurm-init-seconds-before-status-checks", "2",
        "--seconds-between-status-checks", "2",
    )
    print(f"SLURM demo pipeline: {time.time() - t0:.0f} s")
    out = proc.stdout + proc.stderr
    assert (tmp_path / "results" / "report" / "index.html").is_file()
    submitted = out.count("has been submitted with SLURM jobid")
    assert submitted == 11, out[-3000:]  # every job but the local target rule
    # the controller's own record: every job ran on the cluster and completed
    with open(f"{cluster}/jobcomp.txt") as f:
        records = f.read().splitlines()
    completed = [r for r in records if "JobState=COMPLETED" in r and f"WorkDir={tmp_path}" in r]
    assert len(completed) == submitted
    rules = set(re.findall(r"submitted with SLURM jobid \d+ \(log: \S+/rule_(\w+)/", out))
    assert rules == {"download", "preprocess", "split", "train_variant", "evaluate_variant", "ensemble",
                     "gradcam", "report"}
