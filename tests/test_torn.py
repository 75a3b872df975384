"""Torn files: ``kill -9`` at random points while the pipeline writes the files others read (checkpoints,
tables, bundles) leaves the old file or the new one, never part of one; and a file damaged after it was
written (cut short, a bit flipped) is refused with its name and the command that writes it again,
never read into a wrong number."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from boneage.files import TornFile, read_table
from boneage.learning.torchfile import load_torch, save_torch

from .conftest import REPO

WRITER = """
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from boneage.files import atomic_dir, write_table
from boneage.learning.torchfile import save_torch

out, k = Path(sys.argv[1]), 0
while True:
    v = k % 2
    save_torch(out / "last.pt", {"v": v, "w": torch.full((2_000_000,), float(v))}, digest=True)
    write_table(pd.DataFrame({"v": np.full(300_000, v)}), out / "predictions.parquet")
    with atomic_dir(out / "bundle") as tmp:
        for name in ("model.pt", "bundle.json"):
            (tmp / name).write_bytes(bytes([v]) * 3_000_000)
    k += 1
    print(k, flush=True)
"""


def _check(out) -> None:
    """Each file the writer makes is whole: one version throughout."""
    state = load_torch(out / "last.pt")
    assert (state["w"] == float(state["v"])).all()
    values = read_table(out / "predictions.parquet")["v"]
    assert len(values) == 300_000 and values.nunique() == 1
    versions = {(out / "bundle" / name).read_bytes() for name in ("model.pt", "bundle.json")}
    assert len(versions) == 1 and len(versions.pop()) == 3_000_000


def test_kill_9_at_random_points_of_writing_leaves_whole_files(tmp_path):
    rng = np.random.default_rng(0)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, env=env)
    assert writer.stdout.readline(), "the writer stopped before its first round"  # every file exists now
    for _ in range(12):
        time.sleep(rng.uniform(0.0, 0.15))  # one round of writes takes about 0.1 s
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        _check(tmp_path)
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, env=env)
        assert writer.stdout.readline(), "the writer stopped"  # past its imports, into the writes
    writer.kill()
    writer.wait()
    _check(tmp_path)


def test_bit_flips_in_a_checkpoint_or_model_file_are_refused_never_read(tmp_path):
    """PyTorch reads a bit-flipped tensor without complaint; the content digest written with the file
    turns every flip into an error naming it, or (a flip in bytes the reader never uses) the same content."""
    from boneage.learning.inference import load_model
    from boneage.learning.models import build_model

    state = {"format": "x", "epoch": 3, "model": build_model({"arch": "resnet18"}).state_dict(),
             "target_mean": 120.5}
    path = tmp_path / "last.pt"
    save_torch(path, state, digest=True)
    whole = path.read_bytes()
    rng = np.random.default_rng(1)
    refused = 0
    for position in rng.integers(0, len(whole), 40):
        flipped = bytearray(whole)
        flipped[position] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(flipped))
        try:
            got = load_torch(path)
        except TornFile as exc:
            assert str(path) in str(exc)
            refused += 1
            continue
        assert got["epoch"] == 3 and got["target_mean"] == 120.5
        assert all(torch.equal(got["model"][k], v) for k, v in state["model"].items())
    assert refused >= 30  # nearly all of the file is tensor data or its index

    path.write_bytes(whole[: len(whole) // 3])
    with pytest.raises(ValueError, match=f"{path} cannot be read .*--forcerun train_variant"):
        load_model(path)


def test_a_damaged_store_index_or_split_is_named_with_the_command_that_remakes_it(tmp_path):
    from boneage.learning.data import SplitError, read_split
    from boneage.learning.store import StoreError, open_rows, write_images

    ids = [f"f{i}" for i in range(6)]
    index = pd.DataFrame({"id": ids, "image": [f"{i}.png" for i in ids]})
    store = tmp_path / "images.u8"
    write_images(ids, (np.full((8, 8), i, np.uint8) for i in range(6)), store)
    assert open_rows(store, index, index)[:].sum() > 0
    data = bytearray(store.read_bytes())
    data[100] ^= 4  # one bit, the size unchanged
    store.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=f"{store}: its bytes differ .*--forcerun preprocess"):
        open_rows(store, index, index)

    parquet = tmp_path / "index.parquet"
    index.to_parquet(parquet)
    parquet.write_bytes(parquet.read_bytes()[:-40])
    with pytest.raises(TornFile, match=f"{parquet} cannot be read as a table .*--forcerun preprocess"):
        read_table(parquet, "snakemake --forcerun preprocess")

    split = tmp_path / "split.csv"
    split.write_text("id,subset\n" + "".join(f"{i},{s}\n" for i, s in zip(ids, ["train"] * 4 + ["val", "test"])))
    assert len(read_split(split, index)) == 6
    whole = split.read_text()
    split.write_text(whole[:-3])  # cut inside the last row's subset
    with pytest.raises(SplitError, match=f"{split}: unknown subset.*--forcerun split"):
        read_split(split, index)
    split.write_text(whole)
    (tmp_path / "split_summary.csv").write_text("subset,images\ntrain,4\nval,1\ntest,1\n")
    assert len(read_split(split, index)) == 6
    split.write_text(whole[: whole.rindex("f5,")])  # cut exactly at a line end: one test film fewer
    counts = "lists train 4, val 1, test 0 images, but .*split_summary.csv.* counts train 4, val 1, test 1"
    with pytest.raises(SplitError, match=f"{split} {counts}.*--forcerun split"):
        read_split(split, index)


# --- two at once: predict while the bundle is rewritten ----------------------------------------------------
REWRITER = """
import sys
from boneage.export import main

args = sys.argv[1:]
k = 0
while True:
    main(["variant", "--model", args[k % 2], *args[2:]])
    k += 1
    print(k, flush=True)
"""


def test_predict_while_the_bundle_is_rewritten_gets_the_old_or_the_new_estimates(tmp_path):
    """`snakemake bundles` (a training finished) rewrites a bundle while `boneage.predict` reads it: every
    load gives the estimates of one whole bundle, the old or the new, never weights of one with the
    settings of the other, and never an error."""
    from boneage.results.bundle import Bundle

    from .conftest import export_args, untrained_model

    for k in (0, 1):
        untrained_model(tmp_path / f"model{k}.pt", seed=k)
    bundle = tmp_path / "bundles" / "resnet18"
    rest = export_args(tmp_path, bundle)
    images = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    male = torch.zeros(4)
    from boneage.export import main
    expected = []
    for k in (0, 1):
        main(["variant", "--model", str(tmp_path / f"model{k}.pt"), *rest])
        expected.append(Bundle.load(bundle).predict(images, male))
    assert not np.array_equal(*expected)

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen([sys.executable, "-c", REWRITER, str(tmp_path / "model0.pt"),
                               str(tmp_path / "model1.pt"), *rest], stdout=subprocess.PIPE, env=env)
    try:
        writer.stdout.readline()
        seen = set()
        # at least 20 loads, and on until both bundles were read: a busy 2-core machine can export once
        # (a ResNet-18 bundle, hashed and written) in the time 20 loads take; the cap only ends a hang
        for loads in range(1, 2001):
            got = Bundle.load(bundle).predict(images, male)
            match = [k for k in (0, 1) if np.array_equal(got, expected[k])]
            assert match, f"estimates of neither bundle: {got}"
            seen.add(match[0])
            if loads >= 20 and seen == {0, 1}:
                break
        assert writer.poll() is None
    finally:
        writer.kill()
        writer.wait()
    assert seen == {0, 1}  # the rewrites did happen while it read


def test_two_runs_with_other_configs_in_two_folders_share_a_read_only_data_folder(tmp_path):
    """Two pipelines at once, each in its own folder with its own settings, reading one data folder that
    neither may write (as ../shared is): both finish, each with its own settings' images, and the data
    folder is byte for byte as before."""
    from boneage.files import sha256_file
    from boneage.imaging.demo import generate

    data = tmp_path / "shared"
    generate(data, 40, seed=4)
    before = {p: sha256_file(p) for p in data.rglob("*") if p.is_file()}
    for p in [data, *data.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "preprocess", "--cores", "1",
           "--config", "data_source=local", f"data_dir={data}"]
    runs = {size: subprocess.Popen([*cmd, f"image_size={size}", "--directory", str(tmp_path / f"run{size}")],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for size in (48, 64)}
    try:
        for size, run in runs.items():
            out = run.communicate(timeout=600)[0]
            assert run.returncode == 0, out[-3000:]
            index = read_table(tmp_path / f"run{size}" / "results" / "preprocess" / "index.parquet")
            assert len(index) == 40 and (index["height_after"] == size).all()
    finally:
        for p in [data, *data.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert {p: sha256_file(p) for p in data.rglob("*") if p.is_file()} == before
