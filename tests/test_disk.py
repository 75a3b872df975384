"""A full disk: results/ on a small real filesystem (a tmpfs, mounted as root). A stage that cannot write
stops with one line naming the file and the space left, keeps no half output that a rerun would take
as complete, and after space is freed the same command finishes. And torn files: named, never read."""

from __future__ import annotations

import os
import shutil
import subprocess

import pandas as pd
import pytest

from .conftest import planned_rules, snakemake

DEMO = ["--config", "demo={n_images: 60}", "image_size=64"]


@pytest.fixture
def small_results(tmp_path):
    """A work folder whose results/ is a 1 MB tmpfs (about a dozen demo films)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    results = tmp_path / "run" / "results"
    results.mkdir(parents=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(results)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    yield results
    subprocess.run(["umount", "-l", str(results)], check=False)


def _resize(folder, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True)


def test_a_full_disk_stops_download_and_preprocess_with_the_file_named_and_the_rerun_finishes(small_results):
    workdir = small_results.parent
    proc = snakemake(workdir, "preprocess", "--cores", "2", *DEMO, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "could not write results/data/demo/boneage-training-dataset/" in out
    assert "No space left on device; 0.0 MB free" in out and "The filesystem of" in out  # and what to do
    assert not (small_results / "download" / "dataset.json").exists()  # nothing a rerun takes as done

    _resize(small_results, "64m")  # the demo's films fit; then fill the disk again for preprocess
    snakemake(workdir, "download", "--cores", "1", *DEMO)
    free = shutil.disk_usage(small_results).free
    filler = small_results / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * (free - 200_000))
    proc = snakemake(workdir, "preprocess", "--cores", "2", *DEMO, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "could not write" in out and "No space left on device" in out
    assert "rejected" not in out  # a full disk is no reason to reject a film
    assert not (small_results / "preprocess" / "index.parquet").exists()

    filler.unlink()
    snakemake(workdir, "preprocess", "--cores", "2", *DEMO)
    assert len(pd.read_parquet(small_results / "preprocess" / "index.parquet")) == 60  # every film, none lost
    assert not planned_rules(snakemake(workdir, "preprocess", "-n", *DEMO))


def test_a_torn_model_file_is_named_with_how_to_write_it_again(tmp_path):
    import torch

    from boneage.learning.inference import load_model
    from boneage.learning.models import build_model

    path = tmp_path / "model.pt"
    torch.save({"format": "x", "model": build_model({"arch": "resnet18"}).state_dict()}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a copy cut short
    with pytest.raises(ValueError, match=f"{path} cannot be read .*torn.*--forcerun train_variant"):
        load_model(path)


def test_a_torn_bundle_json_is_named_not_read(tmp_path):
    from boneage.results.bundle import Bundle, BundleError

    (tmp_path / "bundle.json").write_text('{"format": "boneage-bundle')  # cut short
    with pytest.raises(BundleError, match=f"{tmp_path / 'bundle.json'} is not readable JSON .*copy the bundle again"):
        Bundle.read_spec(tmp_path)
    (tmp_path / "bundle.json").write_text("[1, 2]")
    with pytest.raises(BundleError, match="format 'list'"):
        Bundle.read_spec(tmp_path)


def test_a_second_run_in_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    """Snakemake's lock: the second `snakemake all` in one folder stops and says what to do."""
    import sys
    import time

    from .conftest import REPO

    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "all", "--cores", "1", "--configfile", str(REPO / "configs" / "smoke.yaml")]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        locks = tmp_path / ".snakemake" / "locks"
        deadline = time.time() + 120
        while not (locks.is_dir() and any(locks.iterdir())) and time.time() < deadline and first.poll() is None:
            time.sleep(0.2)
        assert first.poll() is None, "the first run ended before the second could start"
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        out = second.stdout + second.stderr
        assert second.returncode != 0 and "Directory cannot be locked" in out and "--unlock" in out
    finally:
        first.kill()
        first.wait()


# --- a full disk in every later stage ----------------------------------------------------------------------
LATER = """\
demo: {n_images: 48}
image_size: 64
epochs: 6
variants: [resnet18]
split: {age_bin_months: 60}
train: {batch_size: 8}
evaluate: {stability_views: 0}
report: {gradcam_images: 2}
predict: {inputs: [results/data/demo/boneage-training-dataset]}
calibrate: {images: [results/data/demo/boneage-training-dataset], csv: results/data/demo/boneage-training-dataset.csv,
            min_films_per_sex: 5, folds: 3}
"""


def _fill(folder, leave: int = 0):
    """Take the free space of ``folder``'s filesystem but ``leave`` bytes; the filler file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY | os.O_APPEND)
    try:
        for block in (1 << 20, 1 << 12):
            while shutil.disk_usage(folder).free - block >= leave:
                try:
                    os.write(fd, b"\0" * block)
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler


def _logs(results) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted((results / "logs").rglob("*.log")))


def test_a_full_disk_in_train_evaluate_bundle_report_predict_and_calibrate_stops_and_the_rerun_resumes(
        small_results, tmp_path):
    """Each stage on a full results/ fails with the file named and leaves nothing a rerun takes as done;
    after space is freed the same command finishes, training from its last complete checkpoint, and the
    test predictions equal those of a run that always had room (same machine and threads)."""
    import time

    config = tmp_path / "later.yaml"
    config.write_text(LATER)
    args = ("--cores", "2", "--configfile", str(config))
    reference = tmp_path / "reference"
    snakemake(reference, "evaluate", *args)

    workdir = small_results.parent
    _resize(small_results, "1g")  # a ResNet-18 checkpoint is 134 MB (weights and optimiser), best.pt and last.pt
    snakemake(workdir, "split", *args)

    # training: the disk fills once the first checkpoint is written
    import sys

    from .conftest import REPO
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "train", *args]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = small_results / "models" / "resnet18" / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not last.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    filler = _fill(small_results, leave=16 << 10)
    out = first.communicate(timeout=600)[0] + _logs(small_results)
    assert first.returncode != 0, "training finished before the disk filled"
    assert "could not write results/models/resnet18/" in out and "No space left on device" in out
    assert "Traceback" not in _logs(small_results)
    assert not (small_results / "models" / "resnet18" / "model.pt").exists()
    filler.unlink()
    snakemake(workdir, "train", *args)
    assert "resuming resnet18 from epoch" in (small_results / "logs" / "train" / "resnet18.log").read_text()

    # each later target: full disk -> named failure, nothing left that counts as done; room -> finishes
    for target in ("evaluate", "bundles", "all", "predict", "calibrate"):
        filler = _fill(small_results, leave=16 << 10)
        proc = snakemake(workdir, target, *args, check=False)
        out = proc.stdout + proc.stderr + _logs(small_results)
        assert proc.returncode != 0, f"{target} ran on a full disk"
        assert "could not write results/" in out and "No space left on device" in out, (target, out[-3000:])
        assert "Traceback" not in _logs(small_results), target
        assert planned_rules(snakemake(workdir, target, "-n", *args)), f"{target}: a failed job counts as done"
        filler.unlink()
        snakemake(workdir, target, *args)
        assert not planned_rules(snakemake(workdir, target, "-n", *args))

    for name in ("predictions.parquet", "metrics.json"):
        assert (small_results / "evaluate" / "resnet18" / name).exists()
    pd.testing.assert_frame_equal(pd.read_parquet(small_results / "evaluate" / "resnet18" / "predictions.parquet"),
                                  pd.read_parquet(reference / "results" / "evaluate" / "resnet18" / "predictions.parquet"))
