"""The whole DAG through Snakemake on a tiny demo, re-runs after config edits, and clear errors."""

from __future__ import annotations

import json
import os
import re

import pandas as pd
import pytest

from .conftest import REPO, SAME_MONTHS, planned_jobs, planned_rules, snakemake, write_rsna

SMOKE = str(REPO / "configs" / "smoke.yaml")
DOWNSTREAM_OF_TRAIN = {"plan", "train_variant", "evaluate_variant", "ensemble", "gradcam", "report", "bundle_variant",
                       "bundle_ensemble", "all"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pipeline")
    snakemake(workdir, "all", "--cores", "2", "--configfile", SMOKE)
    return workdir


def test_all_outputs_are_there(run_dir):
    r = run_dir / "results"
    dataset = json.loads((r / "download" / "dataset.json").read_text())
    assert dataset["source"] == "demo" and dataset["n_label_rows"] == 48
    index = pd.read_parquet(r / "preprocess" / "index.parquet")
    assert len(index) == 48 and (r / "preprocess" / "images").is_dir()
    assert {"crop_method", "crop_x0", "crop_y1", "landmarks", "mediapipe_refused", "source_sha256",
            "height_before", "height_after"} <= set(index.columns)
    split = pd.read_csv(r / "split" / "split.csv")
    assert set(split["subset"]) == {"train", "val", "test"} and len(split) == 48
    for variant in ("resnet18", "efficientnet_lite0_sex"):
        metrics = json.loads((r / "evaluate" / variant / "metrics.json").read_text())
        assert {"mae", "rmse", "r2", "mae_male", "mae_female", "stage"} <= set(metrics["test"])
        for subset in ("val", "test"):  # 95 % bootstrap intervals that hold their figures
            s, ci = metrics[subset], metrics[subset]["ci95"]
            assert ci["resamples"] == 2000 and ci["n"] == s["n"]
            for key in ("mae", "rmse", "r2", "mae_male", "mae_female"):
                assert ci[key][0] <= s[key] <= ci[key][1], (variant, subset, key)
            assert ci["stage_accuracy"][0] <= s["stage"]["accuracy"] <= ci["stage_accuracy"][1]
        stable = metrics["stability"]  # test-retest spread of every test film over its 2 retakes (smoke.yaml)
        assert stable["views"] == 2 and stable["n"] == metrics["test"]["n"]
        assert 0 < stable["sd_median_months"] <= stable["sd_p95_months"] <= stable["range_p95_months"]
        bundle = json.loads((r / "bundles" / variant / "bundle.json").read_text())
        assert bundle["stability"] == stable
        card = json.loads((r / "models" / variant / "model_card.json").read_text())
        assert card["variant"] == variant and card["output"]["boneage"] == "months"
        assert card["data"]["split_sha256"] and card["data"]["labels_sha256"] == dataset["labels_sha256"]
        assert card["versions"]["torch"] and "git_commit" in card and card["metrics"]["test"]["mae"] > 0
    ensemble = json.loads((r / "evaluate" / "ensemble" / "metrics.json").read_text())
    assert ensemble["weights"] == {"resnet18": 0.5, "efficientnet_lite0_sex": 0.5}
    for log in ("download/download.log", "preprocess/preprocess.log", "train/resnet18.log", "report/report.log"):
        assert (r / "logs" / log).stat().st_size > 0


def test_report_names_only_files_that_exist(run_dir):
    report = run_dir / "results" / "report"
    page = (report / "index.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) >= 9  # 6 evaluation figures, 2 Grad-CAM panels, the contact sheet
    for src in images:
        assert (report / src).is_file(), src
    for table in ("metrics_test", "metrics_val", "stages_test", "age_bins_test", "training", "crop_methods",
                  "rejects", "split", "stage_times", "comparisons"):
        assert (report / "tables" / f"{table}.csv").is_file() and (report / "tables" / f"{table}.md").is_file()
    assert "MAE" in page and "training mean" in page and "MAE [95 % CI]" in page and "Paired comparisons" in page
    assert "Test-retest stability" in page
    pairs = pd.read_csv(report / "tables" / "comparisons.csv")  # 3 models, 2 subsets: 3 pairs each
    assert list(pairs.columns[:9]) == ["subset", "model_a", "model_b", "n", "mae_a", "mae_b", "mae_diff", "ci_low",
                                       "ci_high"] and len(pairs) == 6
    assert (pairs["ci_low"] <= pairs["mae_diff"]).all() and (pairs["mae_diff"] <= pairs["ci_high"]).all()
    summary = (report / "summary.txt").read_text()  # printed at the end of every successful run
    assert re.search(r"resnet18 +[0-9.]+ \[[0-9.]+, [0-9.]+\]", summary)  # test MAE with its interval
    assert "Rejected: 0 rows, each with its reason in results/preprocess/rejects.csv" in summary
    assert "train/resnet18 " in summary and "preprocess/preprocess " in summary  # seconds per job


def test_snakemake_report(run_dir):
    snakemake(run_dir, "all", "--configfile", SMOKE, "--report", "report.html")
    html = (run_dir / "report.html").read_text()
    assert len(html) > 100_000 and "bland_altman" in html


def test_nothing_to_do_after_all(run_dir):
    proc = snakemake(run_dir, "all", "-n", "--configfile", SMOKE)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_sharded_preprocessing_writes_what_one_job_writes(run_dir, tmp_path):
    overlay = tmp_path / "shards.yaml"
    overlay.write_text("preprocess:\n  shards: 3\n")
    workdir = tmp_path / "sharded"
    # nested keys on the command line arrive as strings; the schema's types are restored
    planned = planned_jobs(snakemake(workdir, "-n", "preprocess", "--configfile", SMOKE, "--config",
                                     'preprocess={"shards": 3}'))
    assert planned["preprocess_shard"] == 3 and planned["preprocess"] == 1
    snakemake(workdir, "preprocess", "--cores", "2", "--configfile", SMOKE, str(overlay))
    # byte for byte: both runs on this machine (preprocessing is per image; another CPU's OpenCV kernels
    # could differ in a grey level, which is why the comparison is within one machine)
    one, many = run_dir / "results" / "preprocess", workdir / "results" / "preprocess"
    for name in ("index.parquet", "rejects.csv", "qc/crop_methods.csv"):
        if name == "index.parquet":  # the source paths name each workdir's own copy of the demo set
            a, b = (pd.read_parquet(d / name) for d in (one, many))
            assert a.drop(columns="source_file").equals(b.drop(columns="source_file")), name
        else:
            assert (one / name).read_bytes() == (many / name).read_bytes(), name
    images = sorted(p.name for p in (one / "images").glob("*.png"))
    assert images == sorted(p.name for p in (many / "images").glob("*.png")) and len(images) == 48
    assert all((one / "images" / n).read_bytes() == (many / "images" / n).read_bytes() for n in images)
    assert not (many / "shards").exists() or not any((many / "shards").iterdir())  # temporary, removed
    assert not planned_rules(snakemake(workdir, "-n", "preprocess", "--configfile", SMOKE, str(overlay)))


def test_changing_epochs_reruns_only_training_and_after(run_dir):
    rules = planned_rules(snakemake(run_dir, "all", "-n", "--configfile", SMOKE, "--config", "epochs=2"))
    assert {"plan", "train_variant", "evaluate_variant", "report"} <= rules <= DOWNSTREAM_OF_TRAIN


def test_changing_one_models_setting_rewrites_its_plan_and_retrains_it_alone(run_dir, tmp_path):
    overlay = tmp_path / "lr.yaml"
    overlay.write_text("models:\n  resnet18:\n    arch: resnet18\n    lr: 0.0005\n")
    proc = snakemake(run_dir, "all", "-n", "--configfile", SMOKE, str(overlay))
    assert planned_rules(proc) <= DOWNSTREAM_OF_TRAIN
    text = proc.stdout + proc.stderr
    assert "results/models/resnet18/spec.json" in text and "results/models/efficientnet_lite0_sex/model.pt" not in text


def test_changing_a_preprocessing_value_reruns_preprocess_and_after(run_dir, tmp_path):
    overlay = tmp_path / "clip.yaml"
    overlay.write_text("preprocess:\n  clahe_clip_limit: 3.0\n")
    rules = planned_rules(snakemake(run_dir, "all", "-n", "--configfile", SMOKE, str(overlay)))
    assert {"preprocess", "split"} | (DOWNSTREAM_OF_TRAIN - {"plan"}) <= rules and "download" not in rules


def test_changing_an_evaluation_value_reruns_evaluation_and_after(run_dir, tmp_path):
    overlay = tmp_path / "eval.yaml"
    overlay.write_text("evaluate:\n  bias_correction: false\n")
    rules = planned_rules(snakemake(run_dir, "all", "-n", "--configfile", SMOKE, str(overlay)))
    assert {"evaluate_variant", "ensemble", "report"} <= rules and "train_variant" not in rules


@pytest.mark.parametrize("args, message", [
    (["--config", "epoch=3"], "'epoch' was unexpected"),
    (["--config", "epochs=abc"], "config key 'epochs': 'abc' is not of type 'integer'"),
    (["--config", "variants=resnet18,resnet19"], "config key 'variants': unknown model 'resnet19'"),
    (["--config", "data_source=local"], "config key 'data_dir' is required"),
    (["--config", "data_source=local", "data_dir=/no/such/folder"], "folder not found: /no/such/folder"),
])
def test_bad_config_is_named(tmp_path, args, message):
    proc = snakemake(tmp_path, "all", "-n", *args, check=False)
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr
    assert message in "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-4:])  # not buried


def test_csv_without_required_columns_is_named(tmp_path):
    data = write_rsna(tmp_path / "data", "id,age,sex\n1,100,True\n", {})
    proc = snakemake(tmp_path, "download", "--cores", "1", "--config", "data_source=local",
                     f"data_dir={data}", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"label file {data / 'boneage-training-dataset.csv'} lacks required column(s) ['boneage', 'male']" in out


def test_device_cuda_without_a_gpu_stops_before_any_job(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = snakemake(tmp_path, "all", "--cores", "1", "--config", "device=cuda", check=False)
    assert proc.returncode != 0
    assert "config key 'device': cuda was asked for, but torch sees no CUDA GPU" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()  # no job ran, not even the download
    # a dry run plans a GPU run on any machine (a cluster's login node has no GPU either)
    assert {"train_variant", "evaluate_variant"} <= planned_rules(snakemake(tmp_path, "all", "-n", "--config",
                                                                          "device=cuda"))


def test_without_a_gpu_the_models_jobs_share_the_cores_and_run_side_by_side(tmp_path):
    """The demo's two models on a CPU-only machine: each training, evaluation and Grad-CAM job gets its
    share of the cores (one of two), so the two models' jobs run at once; device=cuda keeps all."""
    from boneage.config import local_gpu, thread_share

    if local_gpu():
        pytest.skip("this machine has a GPU")
    cores = min(8, len(os.sched_getaffinity(0)))
    for device, share in (("auto", thread_share(8, cores, 2)), ("cuda", 8)):
        proc = snakemake(tmp_path, "all", "-n", "-p", "--cores", "8", "--config", f"device={device}")
        text = proc.stdout + proc.stderr
        for stage, most in (("train", 8), ("evaluate", 4), ("gradcam", 2)):
            threads = re.findall(rf"python -m boneage\.{stage} .*?--threads (\d+)", text)
            assert threads == [str(min(share, most))] * 2, (device, stage, threads)
    assert thread_share(8, 2, 2) == 1 and thread_share(8, 16, 2) == 8 and thread_share(4, 16, 3) == 4
    assert thread_share(8, 2, 3) == 1  # never none


def test_gradcam_maps_are_never_blank_and_the_report_shows_every_figure(run_dir):
    import numpy as np

    r = run_dir / "results"
    page = (r / "report" / "index.html").read_text()
    for variant in ("resnet18", "efficientnet_lite0_sex"):
        maps = np.load(r / "report" / "gradcam" / f"{variant}.npz")
        assert len(maps["ids"]) == 4 and maps["maps"].shape == (4, 64, 64)
        assert (maps["maps"].reshape(4, -1).std(axis=1) > 0).all()  # no blank map
        assert np.abs(maps["maps"]).max() == pytest.approx(1.0, abs=1e-5)
        summary = json.loads((r / "report" / "gradcam" / f"{variant}.json").read_text())
        assert min(summary["cells"]) >= 8 and summary["hand"]["images"] > 0
        test = pd.read_csv(r / "report" / "gradcam" / f"{variant}_test.csv")
        assert test["hand_mass_share"].between(0, 1).all() and len(test) == sum(summary["population"].values())
        for suffix in ("", "_sanity", "_population"):
            assert f'src="figures/gradcam_{variant}{suffix}.png"' in page
    table = pd.read_csv(r / "report" / "tables" / "gradcam.csv")
    assert list(table["model"]) == ["resnet18", "efficientnet_lite0_sex"]
    assert {"rank corr. with random weights", "map mass on the hand", "flag"} <= set(table.columns)


def test_gradcam_reads_the_store_per_batch_and_draws_what_it_draws_from_the_pngs(run_dir, tmp_path):
    """The rule reads the test images from images.u8 batch by batch (memory flat in N); the PNGs
    give the same maps, estimates and shares."""
    import numpy as np

    from boneage import gradcam

    r = run_dir / "results"
    gradcam.run(r / "preprocess" / "index.parquet", r / "split" / "split.csv", r / "models" / "resnet18" / "model.pt",
                tmp_path, 4, (120, 216), threads=2)
    store, pngs = np.load(r / "report" / "gradcam" / "resnet18.npz"), np.load(tmp_path / "resnet18.npz")
    assert list(store["ids"]) == list(pngs["ids"])
    for key in ("maps", "random_maps", "predicted_months"):
        assert np.allclose(store[key], pngs[key], atol=1e-5), key
    a, b = (pd.read_csv(d / "resnet18_test.csv") for d in (r / "report" / "gradcam", tmp_path))
    pd.testing.assert_frame_equal(a, b, atol=1e-3)


def test_the_sanity_check_tells_trained_weights_from_random_ones_and_the_report_flags_a_failure(run_dir):
    import torch

    from boneage.learning.data import load_images, resize, subset_table
    from boneage.learning.inference import load_model
    from boneage.results.cam import SANITY_MAX_RHO, choose_layer, randomised, sanity, signed_cam
    from boneage.results.tables import gradcam_table

    r = run_dir / "results"
    model, meta = load_model(r / "models" / "resnet18" / "model.pt")
    model = model.float()
    test = subset_table(pd.read_parquet(r / "preprocess" / "index.parquet"),
                        pd.read_csv(r / "split" / "split.csv", dtype={"id": str}), ("test",))
    x = resize(load_images(test, r / "preprocess"), meta["spec"]["input_size"])
    male = torch.tensor(test["male"].to_numpy("float32"))
    layer, _ = choose_layer(model, x.shape[-1])
    trained, _ = signed_cam(model, layer, x, male)
    random_, _ = signed_cam(randomised(model), layer, x, male)
    assert sanity(trained, random_)["spearman_mean"] < SANITY_MAX_RHO
    # maps that do not change when the weights do (here: the same model twice) fail the check
    failed = sanity(trained, signed_cam(model, layer, x, male)[0])
    assert failed["spearman_mean"] > 0.99 and not failed["trustworthy"]
    summary = json.loads((r / "report" / "gradcam" / "resnet18.json").read_text())
    flag = gradcam_table({"resnet18": {**summary, "sanity": failed}})["flag"].iloc[0]
    assert flag.startswith("maps barely depend on the weights")


# --- bundles and predict -----------------------------------------------------------------------
def _test_ids(run_dir) -> list[str]:
    split = pd.read_csv(run_dir / "results" / "split" / "split.csv", dtype={"id": str})
    return split.loc[split["subset"] == "test", "id"].tolist()


def test_a_copied_bundle_predicts_what_evaluation_predicted(run_dir, tmp_path):
    import shutil

    import numpy as np

    from boneage.predict import run as predict

    demo = run_dir / "results" / "data" / "demo" / "boneage-training-dataset"
    labels = pd.read_csv(run_dir / "results" / "data" / "demo" / "boneage-training-dataset.csv", dtype={"id": str})
    labels[["id", "male"]].to_csv(tmp_path / "sex.csv", index=False)  # the ensemble has a member with sex input
    for kind in ("ensemble", "resnet18"):
        bundle = tmp_path / "elsewhere" / kind
        shutil.copytree(run_dir / "results" / "bundles" / kind, bundle)  # members included
        # evaluation averaged over box views (smoke.yaml); the bundle says so, and predict does the same
        assert json.loads((bundle / "bundle.json").read_text())["box_shift"] == 0.004
        table = predict([str(demo / f"{i}.png") for i in _test_ids(run_dir)], tmp_path / "sex.csv", bundle,
                        tmp_path / f"out_{kind}")
        evaluated = pd.read_parquet(run_dir / "results" / "evaluate" / kind / "predictions.parquet")
        both = table.merge(evaluated[evaluated["subset"] == "test"], on="id")
        assert len(both) == len(_test_ids(run_dir)) > 0
        assert (both["boneage_months"] - both["pred"]).abs().max() < SAME_MONTHS
        # the smoke set has too few validation images for a 90 % interval: infinite on both sides
        assert np.allclose(both["interval_high_months"], both["pred_high"], atol=SAME_MONTHS)
        assert (tmp_path / f"out_{kind}" / "predictions.parquet").is_file()


def test_predict_reads_sex_and_age_from_dicom_and_keeps_bad_files_as_rows(run_dir, tmp_path):
    import subprocess
    import sys

    import cv2
    import numpy as np

    from boneage.imaging.images import read_grey, to_uint8

    from .conftest import dicom_bytes

    image = read_grey(run_dir / "results" / "data" / "demo" / "boneage-training-dataset" / f"{_test_ids(run_dir)[0]}.png")
    film = image.astype(np.uint16) * 16  # 12-bit
    inputs = tmp_path / "in"
    inputs.mkdir()
    cv2.imwrite(str(inputs / "twin.png"), to_uint8(film.astype(np.float32)))  # what a DICOM reads as
    (inputs / "girl.dcm").write_bytes(dicom_bytes(tmp_path, film, PatientSex="F", PatientBirthDate="20100115",
                                                  StudyDate="20200115"))
    inverted = int(film.max()) + int(film.min()) - film.astype(np.int32)
    (inputs / "boy.dcm").write_bytes(dicom_bytes(tmp_path, inverted, "MONOCHROME1", PatientSex="M", PatientAge="008Y"))
    (inputs / "corrupt.dcm").write_bytes(b"DICM" + bytes(200))
    (inputs / "notes.png").write_text("not an image")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "boneage.predict", str(inputs), str(tmp_path / "missing.jpg"),
                           "--bundle", str(run_dir / "results" / "bundles" / "efficientnet_lite0_sex"),
                           "--out-dir", str(out), "--threads", "1", "--gradcam", "--stability", "3"], cwd=REPO,
                          capture_output=True,
                          text=True)
    assert proc.returncode == 3, proc.stderr[-3000:]  # three files failed
    rows = pd.read_csv(out / "predictions.csv", dtype={"id": str}).set_index("id")
    assert set(rows.index) == {"twin", "girl", "boy", "corrupt", "notes", "missing"}
    assert rows.loc["girl", "sex"] == "F" and rows.loc["girl", "sex_from"] == "dicom"
    assert rows.loc["boy", "sex"] == "M" and rows.loc["twin", "sex"] == "unknown"
    assert rows.loc["girl", "chronological_age_months"] == pytest.approx(120.0)
    assert rows.loc["boy", "chronological_age_months"] == pytest.approx(96.0)
    # the same picture: the same estimate whatever the format, for the sex each file gives
    for file, sex in (("girl", "female"), ("boy", "male")):
        assert rows.loc[file, "boneage_months"] == pytest.approx(rows.loc["twin", f"boneage_if_{sex}_months"],
                                                                 abs=SAME_MONTHS)
    assert pd.isna(rows.loc["twin", "boneage_months"]) and "sex missing" in rows.loc["twin", "warnings"]
    assert (rows.loc[["twin", "girl", "boy"], "retest_range_months"] > 0).all()
    assert rows.loc[["corrupt", "notes"], "retest_sd_months"].isna().all()
    assert rows.loc["girl", "boneage_minus_chronological_months"] == pytest.approx(
        rows.loc["girl", "boneage_months"] - 120.0)
    assert rows.loc["corrupt", "error"].startswith("undecodable DICOM")
    assert rows.loc["notes", "error"].startswith("undecodable image data")
    assert rows.loc["missing", "error"].startswith("file not found")
    assert len(list((out / "gradcam").glob("*.png"))) == 3  # one overlay per predicted image
    page = (out / "index.html").read_text()
    assert page.count("<tr>") == 7  # header + every file
    assert "if a girl: " in page and "if a boy: " in page  # both estimates for the film of unknown sex
    assert "120.0 mo (10 y 0 mo)" in page and "<style>" in page  # chronological age; the report's look
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in", "out"] + [p.name for p in tmp_path.glob("tmp*.dcm")])


def test_a_classical_crop_is_called_a_fallback_only_by_a_bundle_that_looks_for_the_hand_first(run_dir):
    import numpy as np

    from boneage.results.bundle import Bundle
    from boneage.results.estimates import finish

    bundle = Bundle.load(run_dir / "results" / "bundles" / "resnet18")
    crops = ["mediapipe:plain", "classical", "full"]
    expected = {"auto": ["", "crop fell back to thresholding", "crop fell back to the whole image"],
                "mediapipe": ["", "crop fell back to thresholding", "crop fell back to the whole image"],
                "classical": ["", "", "crop fell back to the whole image"],  # thresholding is its own crop
                "none": ["", "", ""]}  # the whole image is what it asked for
    for own, warnings in expected.items():
        bundle.spec["preprocess"]["crop_method"] = own
        table = pd.DataFrame({"crop_method": crops, "error": "", "male": 1.0, "boneage_months": 100.0,
                              "chronological_age_months": np.nan})
        assert list(finish(table, bundle)["warnings"]) == warnings, own


def test_the_predict_target_runs_on_the_configured_inputs(run_dir, tmp_path):
    demo = run_dir / "results" / "data" / "demo" / "boneage-training-dataset"
    overlay = tmp_path / "predict.yaml"
    ids = _test_ids(run_dir)[:3]
    labels = pd.read_csv(run_dir / "results" / "data" / "demo" / "boneage-training-dataset.csv", dtype={"id": str})
    labels[labels["id"].isin(ids)].to_csv(tmp_path / "labels.csv", index=False)
    overlay.write_text("predict:\n  inputs: [" + ", ".join(str(demo / f"{i}.png") for i in ids) + "]\n"
                       f"  csv: {tmp_path / 'labels.csv'}\n  bundle: resnet18\n")
    snakemake(run_dir, "predict", "--cores", "2", "--configfile", SMOKE, str(overlay))
    rows = pd.read_csv(run_dir / "results" / "predict" / "predictions.csv", dtype={"id": str})
    assert sorted(rows["id"]) == sorted(ids) and rows["boneage_months"].notna().all()
    summary = json.loads((run_dir / "results" / "predict" / "summary.json").read_text())
    assert summary["labelled"]["n"] == 3 and summary["variant"] == "resnet18"


def test_an_external_test_set_goes_through_every_bundle_into_the_report(run_dir, tmp_path):
    demo = run_dir / "results" / "data" / "demo"
    labels = pd.read_csv(demo / "boneage-training-dataset.csv", dtype={"id": str})
    ids = _test_ids(run_dir)[:5]
    images = {f"{i}.png": (demo / "boneage-training-dataset" / f"{i}.png").read_bytes() for i in ids}
    images["broken.png"] = b"not a png"
    external = write_rsna(tmp_path / "external", pd.concat([labels[labels["id"].isin(ids)], pd.DataFrame(
        {"id": ["broken"], "boneage": [100.0], "male": [True]})]), images)
    overlay = tmp_path / "external.yaml"
    overlay.write_text(f"external_test: {external}\n")
    snakemake(run_dir, "all", "--cores", "2", "--configfile", SMOKE, str(overlay))
    table = pd.read_csv(run_dir / "results" / "report" / "tables" / "external_test.csv")
    assert sorted(table["model"]) == ["efficientnet_lite0_sex", "ensemble", "resnet18"]
    assert (table["files"] == 6).all() and (table["failed"] == 1).all() and (table["n scored"] == 5).all()
    evaluated = pd.read_parquet(run_dir / "results" / "evaluate" / "resnet18" / "predictions.parquet")
    predicted = pd.read_csv(run_dir / "results" / "external" / "resnet18" / "predictions.csv", dtype={"id": str})
    both = predicted.merge(evaluated, on="id")
    assert len(both) == 5 and (both["boneage_months"] - both["pred"]).abs().max() < SAME_MONTHS  # the same bundle
    assert "Metrics on the external test set" in (run_dir / "results" / "report" / "index.html").read_text()
    assert "External test set, resnet18: MAE" in (run_dir / "results" / "report" / "summary.txt").read_text()
    scored = json.loads((run_dir / "results" / "external" / "resnet18" / "summary.json").read_text())["labelled"]
    assert scored["ci95"]["n"] == 5 and scored["ci95"]["mae"][0] <= scored["mae"] <= scored["ci95"]["mae"][1]
    pairs = pd.read_csv(run_dir / "results" / "report" / "tables" / "comparisons.csv")
    external = pairs[pairs["subset"] == "external"]  # the bundles paired on the external films they scored
    assert len(external) == 3 and (external["n"] == 5).all()
    assert ((external["ci_low"] <= external["mae_diff"]) & (external["mae_diff"] <= external["ci_high"])).all()


def test_the_cluster_profile_does_not_load_the_local_one_gpu_limit(tmp_path):
    proc = snakemake(tmp_path, "-n", "all", "--workflow-profile", str(REPO / "profiles" / "slurm"),
                     "--configfile", SMOKE)
    out = proc.stdout + proc.stderr
    assert "profiles/slurm" in out and "profiles/default" not in out


@pytest.mark.parametrize("read", ["preprocess/rejects.csv", "preprocess/qc/crop_methods.csv",
                                  "evaluate/resnet18/predictions.parquet", "models/resnet18/train_summary.json",
                                  "report/gradcam/resnet18_sanity.png", "benchmarks/train/resnet18.tsv"])
def test_touching_a_file_the_report_reads_schedules_the_report(run_dir, read):
    path = run_dir / "results" / read
    before = path.stat()
    try:
        os.utime(path, (before.st_atime, before.st_mtime + 3600))
        plan = planned_rules(snakemake(run_dir, "-n", "all", "--configfile", SMOKE))
        assert "report" in plan and "train_variant" not in plan, plan
    finally:
        os.utime(path, (before.st_atime, before.st_mtime))


def test_models_of_one_run_see_other_parts_of_the_hand_and_their_ensemble_predicts_as_evaluated(run_dir, tmp_path):
    import shutil

    from boneage import preprocess, views
    from boneage.imaging.radiograph import Settings
    from boneage.predict import run as predict

    overlay = tmp_path / "wrist.yaml"
    overlay.write_text("models:\n  resnet18:\n    arch: resnet18\n    region: wrist\n")
    proc = snakemake(run_dir, "all", "-n", "--configfile", SMOKE, str(overlay))
    jobs, text = planned_jobs(proc), proc.stdout + proc.stderr
    # the view is cut from the boxes preprocess found: no new hand detection, no new split
    assert jobs["preprocess_view"] == 1 and not {"download", "preprocess", "split"} & set(jobs)
    assert "results/preprocess/views/wrist/images.u8" in text and jobs["bundle_ensemble"] == 1
    assert "results/models/efficientnet_lite0_sex/model.pt" not in text  # the other model keeps its hand images

    # the view's images are, byte for byte, those of a preprocess run with that region
    made = run_dir / "results" / "preprocess"
    summary = views.run(made, "wrist", tmp_path / "view")
    settings = json.loads((made / "preprocess_summary.json").read_text())["settings"]
    wrist = Settings(**{**settings, "region": "wrist", "mediapipe_renderings": tuple(settings["mediapipe_renderings"])})
    assert summary["settings"] == {**settings, "region": "wrist", "mediapipe_renderings": wrist.mediapipe_renderings}
    preprocess.run(run_dir / "results" / "download" / "dataset.json", tmp_path / "direct", wrist, contact_sheet_n=0)
    view, direct = ((d / "images.u8").read_bytes() for d in (tmp_path / "view", tmp_path / "direct"))
    assert view == direct and view != (made / "images.u8").read_bytes()
    assert (tmp_path / "view" / "contact_sheet.png").stat().st_size > 0  # QC: the part kept, film by film

    # the whole run with a wrist model beside a hand model: the ensemble's bundle, copied elsewhere,
    # finds each film's hand once, cuts both parts and predicts what evaluation predicted
    workdir = tmp_path / "run"
    shutil.copytree(run_dir, workdir, symlinks=True)
    snakemake(workdir, "all", "--cores", "2", "--configfile", SMOKE, str(overlay))
    bundle = tmp_path / "elsewhere"
    shutil.copytree(workdir / "results" / "bundles" / "ensemble", bundle)
    regions = {json.loads(f.read_text())["preprocess"]["region"] for f in bundle.glob("members/*/bundle.json")}
    assert regions == {"hand", "wrist"}
    demo = run_dir / "results" / "data" / "demo"
    labels = pd.read_csv(demo / "boneage-training-dataset.csv", dtype={"id": str})
    labels[["id", "male"]].to_csv(tmp_path / "sex.csv", index=False)
    ids = _test_ids(run_dir)
    table = predict([str(demo / "boneage-training-dataset" / f"{i}.png") for i in ids], tmp_path / "sex.csv", bundle,
                    tmp_path / "out")
    evaluated = pd.read_parquet(workdir / "results" / "evaluate" / "ensemble" / "predictions.parquet")
    both = table.merge(evaluated[evaluated["subset"] == "test"], on="id")
    assert len(both) == len(ids) > 0 and (both["boneage_months"] - both["pred"]).abs().max() < SAME_MONTHS
